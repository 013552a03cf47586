"""Coaches and clients: who they are, how they are reached, in which language.

Addresses are checked for shape (not deliverability: a practice may run
without DNS) and normalised by email-validator; they are unique per role.
Names may not hold control characters, so nothing a coach types can become
a second mail header.
"""

from __future__ import annotations

import difflib
import re
import sqlite3
import unicodedata
from datetime import datetime
from urllib.parse import urlsplit

import sqlite_utils
from email_validator import EmailNotValidError, validate_email

from twoyes.db import transaction
from twoyes.errors import N_, Conflict, Invalid, NotFound
from twoyes.events import log_event
from twoyes.rules import LANGUAGES
from twoyes.times import to_db

ROLES = {"coach": "coaches", "client": "clients"}


def normalise_email(address: str) -> str:
    """The address in its normal form, or Invalid with the validator's reason."""
    try:
        # No SMTPUTF8: a local part like zoë@ is refused, as not every server takes it.
        return validate_email(
            address.strip(), check_deliverability=False, allow_smtputf8=False
        ).normalized
    except EmailNotValidError as error:
        raise Invalid(f"{address!r} is not a valid e-mail address: {error}") from error


LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def ascii_address(address: str) -> str:
    """The address as SMTP carries it: an international domain in its xn-- form.

    (Python's own IDNA codec would turn straße.example into strasse.example.)
    """
    try:
        return validate_email(address, check_deliverability=False).ascii_email or address
    except EmailNotValidError:
        return address


def _say(what: str, about_a_name: str, otherwise: str) -> str:
    """A name's sentence as the msgid the pages translate; a title's or call name's as is."""
    return about_a_name if what == "name" else f"A {what} {otherwise}."


def clean_name(name: str, *, what: str = "name", most: int = 200) -> str:
    """The name (or an engagement's title: `what`) with its spaces tidied; one that could pass
    for a mail header, or print escape codes on a terminal, is refused."""
    if LINE_BREAKS.search(name):
        raise Invalid(_say(what, N_("A name must fit on one line."), "must fit on one line"))
    if "=?" in name:
        # A mail program would decode "=?utf-8?q?...?=" into words of someone else's choosing.
        raise Invalid(_say(what, N_("A name cannot contain '=?'."), "cannot contain '=?'"))
    name = " ".join(name.split())
    if not name:
        raise Invalid(_say(what, N_("A name cannot be empty."), "cannot be empty"))
    if len(name) > most:
        raise Invalid(
            N_("A name can be at most 200 characters long.")
            if (what, most) == ("name", 200)
            else f"A {what} can be at most {most} characters long."
        )
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise Invalid(
            _say(
                what,
                N_("A name cannot contain control characters."),
                "cannot contain control characters",
            )
        )
    return name


def clean_call_name(call_name: str | None, name: str) -> str:
    """The name mails greet a person with: as given, or else the first word of their name."""
    if call_name is None:
        return name.split()[0]
    return clean_name(call_name, what="call name", most=100)


BOOKING_URL = N_("A booking address must be a full https:// address, such as https://cal.com/anna.")


def clean_booking_url(url: str | None) -> str | None:
    """A coach's booking page as clients will open it: https only (the link sits in mail,
    and a plain http page can be changed on its way); empty means none."""
    url = (url or "").strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if (
        parts.scheme != "https"
        or not host
        or len(url) > 2000
        or any(char.isspace() or unicodedata.category(char).startswith("C") for char in url)
    ):
        raise Invalid(BOOKING_URL)
    return url


def add_person(
    db: sqlite_utils.Database,
    role: str,
    name: str,
    email: str,
    lang: str,
    now: datetime,
    call_name: str | None = None,
    booking_url: str | None = None,
) -> int:
    """Add a coach or a client; the address must be new for that role.

    `call_name` is what mails greet them with ("Hello Anna"); by default the
    first word of the name. A coach may have a `booking_url`, where clients
    pick a time for the next session.
    """
    table = ROLES[role]
    name, email = clean_name(name), normalise_email(email)
    call_name = clean_call_name(call_name, name)
    if lang not in LANGUAGES:
        raise Invalid(f"Language {lang!r} is not supported; choose one of {', '.join(LANGUAGES)}.")
    booking_url = clean_booking_url(booking_url)
    if booking_url and role != "coach":
        raise Invalid("Only a coach has a booking address.")
    with transaction(db):
        try:
            cursor = db.conn.execute(
                # The table name comes from ROLES, never from input.
                f"INSERT INTO {table} (name, call_name, email, lang, created_at)"  # nosec B608
                " VALUES (?, ?, ?, ?, ?)",
                [name, call_name, email, lang, to_db(now)],
            )
        except sqlite3.IntegrityError as error:
            # The address as it is stored, which may differ from the typed one in case.
            stored = db.conn.execute(
                f"SELECT name, email FROM {table} WHERE email = ?",  # nosec B608
                [email],
            ).fetchone()
            raise Conflict(
                f"There is already a {role} with the address {stored['email']} ({stored['name']})."
            ) from error
        if booking_url:
            db.conn.execute(
                "UPDATE coaches SET booking_url = ? WHERE id = ?", [booking_url, cursor.lastrowid]
            )
        log_event(db, f"{role}_added", now, **{f"{role}_id": cursor.lastrowid})
    return cursor.lastrowid


def set_booking_url(db: sqlite_utils.Database, email: str, url: str, now: datetime) -> dict:
    """Give a coach a booking page, another one, or (an empty `url`) none; returns the coach
    as stored. "We continue" mails to their clients carry it from then on."""
    booking_url = clean_booking_url(url)
    with transaction(db):
        coach = get_person_by_email(db, "coach", email)
        db.conn.execute(
            "UPDATE coaches SET booking_url = ? WHERE id = ?", [booking_url, coach["id"]]
        )
        log_event(db, "coach_changed", now, coach_id=coach["id"])
    return coach | {"booking_url": booking_url}


def set_call_name(
    db: sqlite_utils.Database, role: str, email: str, call_name: str, now: datetime
) -> dict:
    """Greet a coach or a client by another name from now on; returns the person as stored.

    An empty `call_name` goes back to the first word of their name.
    """
    with transaction(db):
        person = get_person_by_email(db, role, email)
        call_name = clean_call_name(call_name if call_name.strip() else None, person["name"])
        db.conn.execute(
            f"UPDATE {ROLES[role]} SET call_name = ? WHERE id = ?",  # nosec B608
            [call_name, person["id"]],
        )
        log_event(db, f"{role}_changed", now, **{f"{role}_id": person["id"]})
    return person | {"call_name": call_name}


def get_person_by_email(db: sqlite_utils.Database, role: str, email: str) -> dict:
    # The table name comes from ROLES, never from input.
    sql = f"SELECT * FROM {ROLES[role]} WHERE email = ?"  # nosec B608
    row = db.conn.execute(sql, [email.strip()]).fetchone()
    if row is None:
        row = db.conn.execute(sql, [normalise_email(email)]).fetchone()
    if row is not None and dict(row).get("forgotten_at"):
        row = None  # a forgotten client answers to no address, not even their placeholder
    if row is None:
        raise NotFound(unknown_address(db, role, email.strip()))
    return dict(row)


def unknown_address(db: sqlite_utils.Database, role: str, email: str) -> str:
    """Why an address finds nobody: most often a typo, so the stored address it is nearest to
    is offered; never a command that would add a person under the mistyped one."""
    local, _, domain = email.lower().rpartition("@")
    near = None
    # The table name comes from ROLES, never from input.
    for (known,) in db.conn.execute(f"SELECT email FROM {ROLES[role]}"):  # nosec B608
        known_local, _, known_domain = known.lower().rpartition("@")
        if known_domain.endswith(".invalid"):
            continue  # forgotten clients answer to no address
        # A slip in one half of the address, the other half the same.
        if (known_domain == domain and _alike(local, known_local)) or (
            known_local == local and _alike(domain, known_domain)
        ):
            near = known
            break
    if near:
        return f"There is no {role} with the address {email}; did you mean {near}?"
    return (
        f"There is no {role} with the address {email}; check it, or add the {role} first "
        f"with `python cli.py {role} add NAME EMAIL`."
    )


def _alike(typed: str, stored: str) -> bool:
    return difflib.SequenceMatcher(None, typed, stored).ratio() >= 0.7
