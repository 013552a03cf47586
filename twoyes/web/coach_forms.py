"""Reading the coach's forms: a session's date, time and length, new clients, an engagement.

Like forms.DecisionForm, each reader only turns what was posted into values
and names what cannot be read, in sentences for the coach (msgids, with their
values); the domain functions check the rules again when the change is made.
A problem is a msgid, or a msgid with the values of its placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from werkzeug.datastructures import MultiDict

from twoyes.errors import N_, Invalid
from twoyes.people import normalise_email
from twoyes.rules import LANGUAGES, clean_free_text
from twoyes.sessions import SESSION_LENGTH
from twoyes.web.forms import GARBLED

Problem = str | tuple[str, dict]

TITLE_MAX = 200
NEW_ROWS_MAX = 20
NOT_AN_ADDRESS = N_("“%(address)s” is not an e-mail address we can send to; please check it.")


@dataclass
class SessionTime:
    """When a session starts and how long it lasts; `starts` is None when not given."""

    starts: datetime | None = None
    minutes: int | None = None  # None: not given (a new session lasts 60, a moved one keeps its)
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def read(cls, data: MultiDict, zone: ZoneInfo, *, required: bool = True) -> SessionTime:
        """The native date and time inputs, read on the practice's wall clock."""
        read = cls()
        read.minutes = read_minutes(data, read.problems)
        day, clock = (data.get("date") or "").strip(), (data.get("time") or "").strip()
        if not day and not clock and not required:
            return read
        if not day:
            read.problems.append(N_("Please fill in the date of the session."))
        if not clock:
            read.problems.append(N_("Please fill in the time the session starts."))
        if day and clock:
            try:
                moment = datetime.fromisoformat(f"{day}T{clock}")
            except ValueError:
                read.problems.append(
                    N_("Please give the date as YYYY-MM-DD and the time as HH:MM, such as 10:00.")
                )
            else:
                read.starts = moment.replace(tzinfo=zone)
        return read


def read_minutes(data: MultiDict, problems: list[Problem]) -> int | None:
    """A session's length in minutes; None when left empty."""
    raw = (data.get("minutes") or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 1440:
        problems.append(SESSION_LENGTH)
        return None
    return int(raw)


def read_new_client(data: MultiDict, prefix: str, problems: list[Problem]) -> dict | None:
    """One new client's name, address and language; None when the row was left empty."""
    name = (data.get(f"{prefix}name") or "").strip()
    email = (data.get(f"{prefix}email") or "").strip()
    lang = data.get(f"{prefix}lang") or LANGUAGES[0]
    if not name and not email:
        return None
    if not email:
        problems.append((N_("Please fill in the e-mail address of %(name)s."), {"name": name}))
        return None
    if not name:
        problems.append((N_("Please fill in the name of %(email)s."), {"email": email}))
        return None
    try:
        normalise_email(email)
    except Invalid:
        problems.append((NOT_AN_ADDRESS, {"address": email}))
        return None
    if lang not in LANGUAGES:
        problems.append(GARBLED)
        return None
    return {"name": name, "email": email, "lang": lang}


@dataclass
class EngagementForm:
    """A new engagement: the coach's own clients chosen, new ones typed in, a title and the
    minimum number of members who must continue (groups)."""

    client_ids: list[int] = field(default_factory=list)
    new_clients: list[dict] = field(default_factory=list)
    title: str | None = None
    min_members: int = 1
    rows: int = 1
    welcome: bool = True
    problems: list[Problem] = field(default_factory=list)

    @classmethod
    def read(cls, data: MultiDict) -> EngagementForm:
        form = cls(rows=new_rows(data))
        chosen = data.getlist("client")
        if not all(value.isdigit() for value in chosen):
            form.problems.append(GARBLED)
            return form
        form.client_ids = [int(value) for value in chosen]
        for row in range(1, form.rows + 1):
            client = read_new_client(data, f"new-{row}-", form.problems)
            if client:
                form.new_clients.append(client)
        count = len(set(form.client_ids)) + len(form.new_clients)
        if count == 0 and not form.problems:
            form.problems.append(N_("Please choose a client, or fill in a new one."))
        form.welcome = not data.get("no_welcome")
        form.title = clean_free_text(data.get("title"))
        if form.title and len(form.title) > TITLE_MAX:
            form.problems.append(
                (N_("A title can be at most %(most)s characters long."), {"most": TITLE_MAX})
            )
        raw = (data.get("min_members") or "1").strip()
        if not raw.isdigit() or not 1 <= int(raw) <= max(count, 1):
            form.problems.append(
                (
                    N_(
                        "The number of members who must continue is between 1 and the "
                        "number of clients (%(count)s)."
                    ),
                    {"count": count},
                )
            )
        else:
            form.min_members = int(raw)
        return form


def new_rows(data: MultiDict) -> int:
    """How many rows for new clients the start form shows (its "one more" button adds one)."""
    raw = data.get("rows") or "1"
    rows = int(raw) if raw.isdigit() else 1
    if data.get("more"):
        rows += 1
    return max(1, min(rows, NEW_ROWS_MAX))
