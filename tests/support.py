"""What the test modules share, apart from fixtures (those are in conftest.py): the clock and
policy the tests start from, a real SMTP server and what it received, the command line's
checks, deciding through the domain functions, real `python cli.py` processes, and the
promises every database must keep (the ledger read by test_invariants, test_crash and
test_concurrency).

Test modules import from here, never from each other or from conftest.
"""

from __future__ import annotations

import contextlib
import email
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from email import policy
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

from aiosmtpd.controller import Controller
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twoyes.rounds import record_decision  # noqa: E402
from twoyes.rules import Policy  # noqa: E402
from twoyes.sessions import record_session_done  # noqa: E402
from twoyes.times import to_db  # noqa: E402

# The tests start "now", so that the web app (which reads the real clock) and the
# domain calls (which take `now`) agree; later moments are T0 + timedelta(...).
T0 = datetime.now(UTC).replace(second=0, microsecond=0)
POLICY = Policy(decision_days=7, reminder_days=2, idle_days=60)
LINK = re.compile(r"https?://[^\s\"<>]+/(?:d|b)/[A-Za-z0-9_-]{43}(?:/continue|/stop)?")


def iso(moment: datetime) -> str:
    return moment.isoformat()


def dump(db) -> str:
    """The whole database as SQL, to compare before and after a refused request."""
    return "\n".join(db.conn.iterdump())


def rows(db, sql: str, *params) -> list[dict]:
    return [dict(row) for row in db.conn.execute(sql, params)]


def outbox_rows(db, **where) -> list[dict]:
    """The outbox in the order it was queued; `where` narrows it (to_email="...")."""
    sql = "SELECT * FROM outbox"
    if where:
        sql += " WHERE " + " AND ".join(f"{key} = ?" for key in where)
    return [dict(row) for row in db.conn.execute(sql + " ORDER BY id", list(where.values()))]


# --- mail ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """What the SMTP server accepted, parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if address in m["To"]]

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.envelopes.clear()


@contextlib.contextmanager
def serve_smtp(handler, **options):
    """Run an aiosmtpd handler as a real server on 127.0.0.1, on a free port (handler.port),
    for the length of the block; `options` go to aiosmtpd's Controller (TLS, for one)."""
    handler.port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port, **options)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def text_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("html",)).get_content()


def links_in(message: email.message.EmailMessage) -> list[str]:
    return LINK.findall(text_of(message))


def token_of(link: str) -> str:
    return re.search(r"/(?:d|b)/([A-Za-z0-9_-]{43})", link).group(1)


def deliver(app, db, now=None):
    """Deliver everything due over the real SMTP server."""
    from twoyes.mail.delivery import deliver_due_mail

    # Mail queued by the web app is stamped with the real clock, so "due" is never before it.
    when = now or max(T0, datetime.now(UTC)) + timedelta(minutes=1)
    with app.app_context():
        return deliver_due_mail(db, when, echo=lambda line: None)


# --- deciding through the domain functions ---------------------------------------------------


def decision_id(db, round_id: int, who: str) -> int:
    """The id of a party's decision in a round; `who` is 'coach' or a client's address."""
    if who == "coach":
        sql, args = "SELECT id FROM decisions WHERE round_id = ? AND role = 'coach'", [round_id]
    else:
        sql = (
            "SELECT decisions.id FROM decisions JOIN clients ON clients.id = decisions.client_id"
            " WHERE round_id = ? AND clients.email = ?"
        )
        args = [round_id, who]
    return db.conn.execute(sql, args).fetchone()[0]


def decide(db, round_id: int, who: str, now: datetime, **values) -> dict:
    """A party decides (`who` as for decision_id); `values` are record_decision's: choice=..."""
    return record_decision(db, decision_id(db, round_id, who), now, **values)


def hold_session(
    db, engagement: int, client: str, at: datetime, *, coach="continue", choice="continue", **more
) -> int:
    """A session held at `at`, and its round's answers: the coach's an hour later, the
    client's two hours later with `more` (a choice of None: they stay silent). The round's id."""
    _, round_id = record_session_done(db, engagement, at, POLICY)
    if coach:
        decide(db, round_id, "coach", at + timedelta(hours=1), choice=coach)
    if choice:
        decide(db, round_id, client, at + timedelta(hours=2), choice=choice, **more)
    return round_id


# --- the command line ------------------------------------------------------------------------


def ok(run, *args):
    """Run a command that must succeed; returns Click's result."""
    result = run(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    return result


def refused(run, db, *args, code: int = 1) -> str:
    """Run a command that must be refused with `code`, changing nothing; returns its error line."""
    before = dump(db)
    result = run(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    if code == 1:
        assert len(lines) == 1, lines
        assert lines[0].startswith("Error: ")
        error = lines[0]
    else:
        assert lines[0].startswith("Usage: ")
        errors = [line for line in lines if line.startswith("Error: ")]
        assert len(errors) == 1, lines
        error = errors[0]
    assert dump(db) == before, "a refused command changed the database"
    return error


def cli_env(settings: dict, **extra: str) -> dict[str, str]:
    """The environment of a `python cli.py` process using this test's database and server."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TWOYES")}
    for key in (
        "DATABASE",
        "INSTANCE_PATH",
        "SECRET_KEY",
        "BASE_URL",
        "MAIL_SERVER",
        "MAIL_PORT",
        "MAIL_DEFAULT_SENDER",
    ):
        environment[f"TWOYES_{key}"] = str(settings[key])
    environment.update({f"TWOYES_{key}": value for key, value in extra.items()})
    return environment


# Starts the real command line, but only once every process has imported it and is ready:
# Python's start-up takes longer than a whole run, so plain Popen calls would rarely overlap.
LAUNCH = """
import os, sys, time
sys.argv[0] = "cli.py"
from twoyes import cli
open(os.environ["DELIVERY_TEST_READY"], "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(os.environ["DELIVERY_TEST_GO"]) and time.monotonic() < deadline:
    time.sleep(0.001)
cli.cli()
"""


def run_at_once(commands: list[list[str]], environment: dict[str, str], folder: Path) -> list:
    """Run every `python cli.py ...` as its own process, all starting in the same instant."""
    go = folder / "go"
    processes = []
    for number, command in enumerate(commands):
        ready = folder / f"ready-{number}"
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", LAUNCH, *command],
                cwd=ROOT,
                env=environment | {"DELIVERY_TEST_READY": str(ready), "DELIVERY_TEST_GO": str(go)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    waited = 0.0
    while not all((folder / f"ready-{n}").exists() for n in range(len(commands))):
        assert waited < 60 and all(p.poll() is None for p in processes), "a process did not start"
        time.sleep(0.005)
        waited += 0.005
    go.touch()
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        results.append((process.returncode, out, err))
    return results


# --- the sentences of the code and templates -------------------------------------------------

PLACEHOLDER = re.compile(r"%\(\w+\)s")


def catalogue(path):
    with open(path, "rb") as file:
        return read_po(file)


def forms(text: str | tuple[str, ...]) -> tuple[str, ...]:
    """A message's text, or each of its plural forms (ngettext's singular and plural)."""
    return text if isinstance(text, tuple) else (text,)


def english_sentences(extracted) -> list[str]:
    """The longer English sentences, without placeholders: none may show in a Dutch mail."""
    sentences = []
    for message in extracted:
        for text in forms(message.id) if message.id else ():
            for piece in PLACEHOLDER.split(text):
                if len(piece.strip(' .,:;?()"')) >= 25:
                    sentences.append(piece.strip())
    return sentences


# --- the promises, read back from the database -----------------------------------------------
# Checked after random histories (test_invariants), kills (test_crash) and overlapping
# processes (test_concurrency); test_invariants lists them and shows the checker can fail.


class Ledger:
    """The whole database read once; each `check_` method tests one family of promises.

    Mails are matched to the change that caused them by engagement, recipient and instant
    (a change and its mails share one transaction, so one `now`). The practice's coaches
    and clients have distinct addresses here.
    """

    def __init__(self, db, swept_at: datetime | None) -> None:
        self.db = db
        self.swept_at = to_db(swept_at) if swept_at else None
        self.problems: list[str] = []
        self.engagements = {row["id"]: row for row in rows(db, "SELECT * FROM engagements")}
        self.rounds = {row["id"]: row for row in rows(db, "SELECT * FROM rounds")}
        self.members = {row["id"]: row for row in rows(db, "SELECT * FROM members")}
        self.sessions = rows(db, "SELECT * FROM sessions")
        self.client_email = dict(db.conn.execute("SELECT id, email FROM clients").fetchall())
        self.coach_email = dict(
            db.conn.execute(
                "SELECT engagements.id, coaches.email FROM engagements"
                " JOIN coaches ON coaches.id = engagements.coach_id"
            ).fetchall()
        )
        self.parties: dict[int, list[dict]] = defaultdict(list)  # round id -> decisions
        for decision in rows(
            db,
            "SELECT decisions.*, rounds.engagement_id, coalesce(clients.email, coaches.email)"
            " AS email, members.id AS member_id FROM decisions"
            " JOIN rounds ON rounds.id = decisions.round_id"
            " JOIN engagements ON engagements.id = rounds.engagement_id"
            " JOIN coaches ON coaches.id = engagements.coach_id"
            " LEFT JOIN clients ON clients.id = decisions.client_id"
            " LEFT JOIN members ON members.engagement_id = rounds.engagement_id"
            " AND members.client_id = decisions.client_id",
        ):
            self.parties[decision["round_id"]].append(decision)
        self.tokens = Counter(
            row[0]
            for row in db.conn.execute("SELECT decision_id FROM tokens WHERE purpose = 'decide'")
        )
        self.outbox = rows(
            db,
            "SELECT id, kind, engagement_id, to_email, created_at, status, context, message_id"
            " FROM outbox",
        )
        self.mails: dict[tuple, list[dict]] = defaultdict(list)  # (kind, engagement, at)
        for mail in self.outbox:
            self.mails[mail["kind"], mail["engagement_id"], mail["created_at"]].append(mail)
        self.events: dict[str, list[dict]] = defaultdict(list)  # kind -> events, in order
        self.of_engagement: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for event in rows(db, "SELECT * FROM events ORDER BY id"):
            event["detail"] = json.loads(event["detail"])
            self.events[event["kind"]].append(event)
            self.of_engagement[event["kind"], event["engagement_id"]].append(event)
        self.closings: dict[int, list[dict]] = defaultdict(list)
        for event in self.events["round_closed"]:
            self.closings[event["round_id"]].append(event)
        self.left_at = self._moments("member_left")
        self.removed_at = self._moments("member_removed")

    def _moments(self, kind: str) -> dict[int, list[str]]:
        """Member id -> when each event of this kind happened to them."""
        moments: dict[int, list[str]] = defaultdict(list)
        for event in self.events[kind]:
            moments[event["detail"]["member_id"]].append(event["at"])
        return moments

    def say(self, problem: str) -> None:
        self.problems.append(problem)

    def check_the_file(self) -> None:
        (integrity,) = self.db.conn.execute("PRAGMA integrity_check").fetchone()
        if integrity != "ok":
            self.say(f"PRAGMA integrity_check: {integrity}")
        if self.db.conn.execute("PRAGMA foreign_key_check").fetchall():
            self.say("PRAGMA foreign_key_check found rows pointing nowhere")

    def check_rounds_close_once(self) -> None:
        """Every round opened once, closed at most once, with one outcome when closed."""
        open_ones = Counter(
            r["engagement_id"] for r in self.rounds.values() if r["status"] == "open"
        )
        for engagement_id, number in open_ones.items():
            if number > 1:
                self.say(f"engagement {engagement_id} has {number} open rounds")
        opened = Counter(event["round_id"] for event in self.events["round_opened"])
        for round_id, round_ in self.rounds.items():
            if opened[round_id] != 1:
                self.say(f"round {round_id} has {opened[round_id]} round_opened events")
            closings = self.closings[round_id]
            if round_["status"] == "open":
                if round_["outcome"] or round_["closed_at"] or closings:
                    self.say(f"round {round_id} is open but has an outcome or a round_closed event")
                continue
            if round_["outcome"] not in ("continue", "stop") or not round_["closed_at"]:
                self.say(f"closed round {round_id} has no single outcome: {round_['outcome']!r}")
            if len(closings) != 1:
                self.say(f"round {round_id} was closed {len(closings)} times")
            elif closings[0]["detail"]["outcome"] != round_["outcome"]:
                self.say(
                    f"round {round_id}: outcome {round_['outcome']} but its event says otherwise"
                )

    def check_decisions(self) -> None:
        """Decided in time, each change with its event, and a stop is final (R2)."""
        history: dict[int, list[str]] = defaultdict(list)
        for event in self.events["decision_recorded"]:
            history[event["detail"]["decision_id"]].append(event["detail"]["choice"])
        for round_id, parties in self.parties.items():
            round_ = self.rounds[round_id]
            for decision in parties:
                choices = history[decision["id"]]
                if decision["choice"] is None:
                    if choices:
                        self.say(f"decision {decision['id']} has events but no choice")
                    continue
                if decision["decided_at"] >= round_["deadline_at"]:
                    self.say(f"decision {decision['id']} was recorded at or after the deadline")
                if round_["closed_at"] and decision["decided_at"] > round_["closed_at"]:
                    self.say(f"decision {decision['id']} was recorded after its round closed")
                if not choices or choices[-1] != decision["choice"]:
                    self.say(f"decision {decision['id']} ({decision['choice']}) has no event")
                if "stop" in choices[:-1]:
                    self.say(f"decision {decision['id']} was changed after a stop: {choices}")

    def check_outcomes(self) -> None:
        """Each round's outcome is what its decisions give (R3, R4, R5); none stays open
        when the rules close it."""
        for round_id, round_ in self.rounds.items():
            engagement = self.engagements[round_["engagement_id"]]
            group = engagement["kind"] == "group"
            coach = [party for party in self.parties[round_id] if party["role"] == "coach"]
            clients = [party for party in self.parties[round_id] if party["role"] == "client"]
            if len(coach) != 1:
                self.say(f"round {round_id} has {len(coach)} coach parties")
                continue
            coach_choice = coach[0]["choice"]
            continuing = [party for party in clients if party["choice"] == "continue"]
            stopped = [party for party in clients if party["choice"] == "stop"]
            silent = [party for party in clients if party["choice"] is None]
            if round_["status"] == "open":
                if coach_choice == "stop":
                    self.say(f"round {round_id} stays open after the coach stopped")
                if not group and stopped:
                    self.say(f"round {round_id} stays open after the client stopped")
                if coach_choice == "continue" and not silent and (group or continuing):
                    self.say(f"round {round_id} stays open although everyone decided")
                if group and len(continuing) + len(silent) < engagement["min_members"]:
                    self.say(f"round {round_id} stays open with too few members left to go on")
                continue
            (closing,) = self.closings[round_id] or [{"detail": {}}]
            end_reason = closing["detail"].get("end_reason")
            if coach_choice == "stop" and end_reason != "coach_stopped":
                self.say(f"round {round_id}: the coach stopped, but it ended as {end_reason}")
            if not group and stopped and coach_choice != "stop" and end_reason != "client_stopped":
                self.say(f"round {round_id}: the client stopped, but it ended as {end_reason}")
            if round_["outcome"] == "continue":
                self.check_everyone_said_continue(round_, group, coach_choice, clients, end_reason)
                continue
            endings = [
                event
                for event in self.of_engagement["engagement_ended", engagement["id"]]
                if event["at"] == round_["closed_at"]
            ]
            if len(endings) != 1 or endings[0]["detail"]["reason"] != end_reason:
                self.say(f"round {round_id} stopped but did not end its engagement once")
            if end_reason == "undecided" and round_["closed_at"] < round_["deadline_at"]:
                self.say(f"round {round_id} ended undecided before its deadline")
            if end_reason == "members_left" and not group:
                self.say(f"individual round {round_id} ended with members_left")

    def check_everyone_said_continue(self, round_, group, coach_choice, clients, end_reason):
        """The headline promise: a next session only on everyone's explicit continue; in a
        group, whoever did not continue has left it."""
        round_id = round_["id"]
        if coach_choice != "continue":
            self.say(f"round {round_id} continued without the coach's continue")
        for party in clients:
            if party["choice"] == "continue":
                continue
            gone = [at for at in self.left_at[party["member_id"]] if at <= round_["closed_at"]]
            if not group or not gone:
                self.say(
                    f"round {round_id} continued although {party['email']} chose "
                    f"{party['choice'] or 'nothing'} and stayed"
                )
        continuing = sum(party["choice"] == "continue" for party in clients)
        least = self.engagements[round_["engagement_id"]]["min_members"] if group else 1
        if continuing < least:
            self.say(f"round {round_id} continued with {continuing} members continuing")
        if not group and round_["closed_at"] >= round_["deadline_at"]:
            self.say(f"round {round_id} continued after its deadline")
        if end_reason is not None:
            self.say(f"round {round_id} continued with an end reason {end_reason}")

    def check_deadlines(self) -> None:
        """R4: past the last sweep no deadline is left open, and no engagement is active
        after a round that stopped it, unless it was reopened since."""
        for round_id, round_ in self.rounds.items():
            if (
                self.swept_at
                and round_["status"] == "open"
                and round_["deadline_at"] <= self.swept_at
            ):
                self.say(
                    f"round {round_id} is still open after close-undecided passed its deadline"
                )
        latest: dict[int, dict] = {}
        for round_ in sorted(self.rounds.values(), key=lambda r: r["id"]):
            if round_["status"] == "closed":
                latest[round_["engagement_id"]] = round_
        for engagement_id, engagement in self.engagements.items():
            last = latest.get(engagement_id)
            if engagement["status"] == "active" and last and last["outcome"] == "stop":
                if (engagement["reopened_at"] or "") < last["closed_at"]:
                    self.say(
                        f"engagement {engagement_id} is active after round {last['id']} stopped"
                    )

    def check_engagements(self) -> None:
        """One end reason while ended; an event for every start, ending and reopening."""
        for engagement_id, engagement in self.engagements.items():
            ended = engagement["status"] == "ended"
            if ended != (engagement["end_reason"] is not None) or ended != bool(
                engagement["ended_at"]
            ):
                self.say(
                    f"engagement {engagement_id} is {engagement['status']} with end reason "
                    f"{engagement['end_reason']!r}"
                )
            if len(self.of_engagement["engagement_started", engagement_id]) != 1:
                self.say(f"engagement {engagement_id} lacks its one engagement_started event")
            endings = self.of_engagement["engagement_ended", engagement_id]
            reopenings = len(self.of_engagement["engagement_reopened", engagement_id])
            if len(endings) != reopenings + ended:
                self.say(
                    f"engagement {engagement_id}: {len(endings)} endings, {reopenings} "
                    f"reopenings, now {engagement['status']}"
                )
            if (
                ended
                and endings
                and (endings[-1]["detail"]["reason"], endings[-1]["at"])
                != (
                    engagement["end_reason"],
                    engagement["ended_at"],
                )
            ):
                self.say(f"engagement {engagement_id}: its last engagement_ended event disagrees")

    def check_sessions_and_members(self) -> None:
        """Held sessions have their round and event; leaving is recorded (R1, R5, R7)."""
        with_round = {round_["session_id"] for round_ in self.rounds.values()}
        held = Counter(event["detail"]["session_id"] for event in self.events["session_held"])
        planned = Counter()
        for session in self.sessions:
            if session["status"] == "held":
                if session["id"] not in with_round or held[session["id"]] != 1:
                    self.say(f"session {session['id']} was held without one round and one event")
                continue
            planned[session["engagement_id"]] += 1
            if session["id"] in with_round:
                self.say(f"session {session['id']} is planned but has a round")
            if self.engagements[session["engagement_id"]]["status"] == "ended":
                self.say(f"ended engagement {session['engagement_id']} has a planned session")
        for engagement_id, number in planned.items():
            if number > 1:
                self.say(f"engagement {engagement_id} has {number} planned sessions")
        for member_id, member in self.members.items():
            if (member["status"] == "left") != bool(member["left_at"]):
                self.say(f"member {member_id} is {member['status']}, left_at {member['left_at']!r}")
            if member["status"] == "left" and not self.left_at[member_id]:
                self.say(f"member {member_id} left without a member_left event")
            if (
                member["status"] == "left"
                and self.engagements[member["engagement_id"]]["kind"] != "group"
            ):
                self.say(f"member {member_id} left an individual engagement")

    def check_mail(self) -> None:
        """Every party its decision mail (and reminder) and outcome mail, once; none to
        anyone else; delivered mail marked once and stripped of its links (R1, R8, R9)."""
        reminded = Counter(
            event["detail"]["decision_id"] for event in self.events["reminder_queued"]
        )
        # A reply that could not be read gave its party their links again (issue 18).
        asked_again = Counter(
            event["detail"]["decision_id"]
            for event in self.events["reply_handled"]
            if event["detail"]["outcome"] == "unclear"
        )
        accounted: set[int] = set()
        for round_id, round_ in self.rounds.items():
            engagement_id = round_["engagement_id"]
            # R5: a group already too small for min_members closes at once, asking no one.
            asked = not (round_["closed_at"] == round_["opened_at"] and round_["outcome"] == "stop")
            decision_mails = self.mails["decision", engagement_id, round_["opened_at"]]
            accounted.update(mail["id"] for mail in decision_mails)
            to = Counter(mail["to_email"] for mail in decision_mails)
            for party in self.parties[round_id] if asked else ():
                got = to.pop(party["email"], 0)
                if got != 1 and not (got == 0 and self.removed_since(party, round_["opened_at"])):
                    self.say(f"round {round_id}: {party['email']} has {got} decision mails")
                wanted = (2 if party["reminded_at"] else 1) + asked_again[party["id"]]
                if self.tokens[party["id"]] != wanted:
                    self.say(f"decision {party['id']} has not {wanted} tokens")
                if not party["reminded_at"]:
                    if reminded[party["id"]]:
                        self.say(f"decision {party['id']} has a reminder event but no reminded_at")
                    continue
                reminders = [
                    mail
                    for mail in self.mails["reminder", engagement_id, party["reminded_at"]]
                    if mail["to_email"] == party["email"]
                ]
                accounted.update(mail["id"] for mail in reminders)
                if len(reminders) != 1 and not (
                    not reminders and self.removed_since(party, party["reminded_at"])
                ):
                    self.say(f"decision {party['id']} was reminded with {len(reminders)} mails")
                if reminded[party["id"]] != 1:
                    self.say(f"decision {party['id']} has {reminded[party['id']]} reminder events")
            # A member removed from an open round had their decision (and links) withdrawn.
            withdrawn = {
                self.client_email[self.members[event["detail"]["member_id"]]["client_id"]]
                for event in self.of_engagement["member_removed", engagement_id]
                if event["at"] >= round_["opened_at"]
            }
            for address, number in to.items():
                if address not in withdrawn or number > 1:
                    self.say(f"round {round_id}: {number} decision mails to {address}, not a party")
            # A reminder already handed to SMTP stays sent when its member is removed later.
            accounted.update(
                mail["id"]
                for mail in self.outbox
                if mail["kind"] == "reminder"
                and mail["engagement_id"] == engagement_id
                and mail["to_email"] in withdrawn
                and mail["status"] == "sent"
                and mail["created_at"] >= round_["opened_at"]
                and (round_["closed_at"] is None or mail["created_at"] <= round_["closed_at"])
            )
            if round_["status"] == "closed":
                outcome_mails = self.mails["outcome", engagement_id, round_["closed_at"]]
                accounted.update(mail["id"] for mail in outcome_mails)
                to = Counter(mail["to_email"] for mail in outcome_mails)
                for party in self.parties[round_id]:
                    if to.pop(party["email"], 0) != 1:
                        self.say(f"round {round_id}: {party['email']} did not get one outcome mail")
                if to:
                    self.say(f"round {round_id}: outcome mails to non-parties {dict(to)}")
        for event in self.events["engagement_ended"]:
            if event["detail"]["reason"] != "idle":
                continue
            outcome_mails = self.mails["outcome", event["engagement_id"], event["at"]]
            accounted.update(mail["id"] for mail in outcome_mails)
            to = Counter(mail["to_email"] for mail in outcome_mails)
            if to.pop(self.coach_email[event["engagement_id"]], 0) != 1:
                self.say(
                    f"engagement {event['engagement_id']} ended idle without one mail to its coach"
                )
            if any(number != 1 for number in to.values()):
                self.say(
                    f"engagement {event['engagement_id']} ended idle with doubled mails {dict(to)}"
                )
        sent = Counter(event["detail"]["mail_id"] for event in self.events["mail_sent"])
        for mail in self.outbox:
            if mail["kind"] in ("decision", "reminder", "outcome") and mail["id"] not in accounted:
                self.say(
                    f"mail {mail['id']} ({mail['kind']} to {mail['to_email']}) belongs to no change"
                )
            if mail["status"] != "sent":
                if sent[mail["id"]]:
                    self.say(f"mail {mail['id']} is {mail['status']} but has a mail_sent event")
                continue
            if sent[mail["id"]] != 1:
                self.say(f"mail {mail['id']} was marked sent {sent[mail['id']]} times")
            if any(key.endswith(("token", "nonce")) for key in json.loads(mail["context"])):
                self.say(f"mail {mail['id']} was delivered but still holds its link")

    def check_welcome_and_invitation_mail(self) -> None:
        """Each welcome and calendar mail belongs to the change that caused it (an event of its
        engagement at its instant), reaches nobody twice for one change, and a session's
        invitations to one person never go back to an older SEQUENCE (issue 17)."""
        causes = {
            "welcome": ("engagement_started", "member_added"),
            "invitation": (
                "session_planned",
                "session_moved",
                "session_cancelled",
                "member_added",
                "member_removed",
            ),
        }
        seen: Counter = Counter()
        sequences: dict[tuple[str, str], int] = {}
        for mail in self.outbox:
            if mail["kind"] not in causes:
                continue
            engagement_id, at = mail["engagement_id"], mail["created_at"]
            if not any(
                event["at"] == at
                for kind in causes[mail["kind"]]
                for event in self.of_engagement[kind, engagement_id]
            ):
                self.say(f"mail {mail['id']} ({mail['kind']}) belongs to no change")
            seen[mail["kind"], engagement_id, at, mail["to_email"]] += 1
            if mail["kind"] == "invitation":
                context = json.loads(mail["context"])
                key = (context["uid"], mail["to_email"])
                if context["sequence"] < sequences.get(key, 0):
                    self.say(f"mail {mail['id']}: an invitation went back to an older SEQUENCE")
                sequences[key] = context["sequence"]
        for (kind, engagement_id, at, address), number in seen.items():
            if number > 1:
                self.say(f"engagement {engagement_id}: {number} {kind} mails to {address} at {at}")

    def removed_since(self, party: dict, moment: str) -> bool:
        return any(at >= moment for at in self.removed_at.get(party["member_id"], ()))


def invariant_violations(db, *, swept_at: datetime | None = None) -> list[str]:
    """Every broken promise in the database, one sentence each; empty when all hold.

    `swept_at`: the latest `now` at which close-undecided (or tick) ran; every round whose
    deadline had passed by then must be closed.
    """
    ledger = Ledger(db, swept_at)
    ledger.check_the_file()
    ledger.check_rounds_close_once()
    ledger.check_decisions()
    ledger.check_outcomes()
    ledger.check_deadlines()
    ledger.check_engagements()
    ledger.check_sessions_and_members()
    ledger.check_mail()
    ledger.check_welcome_and_invitation_mail()
    return ledger.problems


def assert_invariants(db, *, swept_at: datetime | None = None) -> None:
    problems = invariant_violations(db, swept_at=swept_at)
    assert not problems, "\n".join(problems[:20]) + (
        f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
    )


def year_unless_now(year: int) -> str:
    """What follows a day and month people read: " 2027" in another year, nothing in this one
    (on the practice's wall clock in Amsterdam, as the tests set it)."""
    from zoneinfo import ZoneInfo

    return "" if year == datetime.now(ZoneInfo("Europe/Amsterdam")).year else f" {year}"


# What takes a database made new back before version 7, for a test that upgrades it again.
BEFORE_VERSION_7 = (
    "DROP INDEX sessions_uid",
    "ALTER TABLE sessions DROP COLUMN uid",
    "ALTER TABLE sessions DROP COLUMN sequence",
    "ALTER TABLE coaches DROP COLUMN booking_url",
)


# --- the command line, as a coach types it ----------------------------------------------------

NEXT_YEAR = T0.year + 1  # sessions planned in the future, whatever today's date


def as_json(result):
    return json.loads(result.stdout)


def start(run, coach, *clients, extra=()):
    """Start an engagement on the command line; returns its id."""
    args = ["engagement", "start", "--coach", coach, "--json", *extra]
    for client in clients:
        args += ["--client", client]
    return as_json(ok(run, *args))["id"]


def show(run, engagement_id) -> dict:
    return as_json(ok(run, "engagement", "show", engagement_id, "--json"))


def session_done(run, engagement_id, *extra) -> dict:
    return as_json(ok(run, "session", "done", engagement_id, "--json", *extra))


OLD_SCHEMA = """
CREATE TABLE coaches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    lang TEXT NOT NULL DEFAULT 'en' CHECK (lang IN ('en', 'nl')),
    created_at TEXT NOT NULL
);
CREATE TABLE clients (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    lang TEXT NOT NULL DEFAULT 'en' CHECK (lang IN ('en', 'nl')),
    created_at TEXT NOT NULL
);
INSERT INTO coaches (name, email, lang, created_at)
    VALUES ('Olga Old', 'olga@example.org', 'nl', '2025-01-01T09:00:00+00:00');
INSERT INTO clients (name, email, lang, created_at)
    VALUES ('Piet Early', 'piet@example.org', 'en', '2025-01-02T09:00:00+00:00');
PRAGMA user_version = 0;
"""


# --- reading pages the way a browser does -------------------------------------------------

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


class Html(HTMLParser):
    """A page's visible text and its forms, with what each form would submit."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.parts: list[str] = []
        self._form: dict | None = None
        self._select: str | None = None
        self._textarea: str | None = None
        self._button = False
        self._skip = 0
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = {name: value if value is not None else "" for name, value in attrs}
        if tag in ("title", "style", "script"):
            self._skip += 1
        if tag == "form":
            self._form = {
                "method": attrs.get("method", "get").lower(),
                "action": attrs.get("action"),
                "inputs": [],
                "buttons": [],
                "selects": {},
                "textareas": {},
            }
            self.forms.append(self._form)
        if self._form is None:
            return
        if tag == "input":
            self._form["inputs"].append(attrs)
        elif tag == "button":
            self._form["buttons"].append(attrs | {"text": ""})
            self._button = True
        elif tag == "select":
            self._select = attrs["name"]
            self._form["selects"][self._select] = []
        elif tag == "option" and self._select:
            self._form["selects"][self._select].append(attrs)
        elif tag == "textarea":
            self._textarea = attrs["name"]
            self._form["textareas"][self._textarea] = {"attrs": attrs, "text": ""}

    def handle_endtag(self, tag):
        if tag in ("title", "style", "script"):
            self._skip -= 1
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "button":
            self._button = False

    def handle_data(self, data):
        if self._skip:
            return
        self.parts.append(data)
        if self._form is not None:
            if self._textarea:
                self._form["textareas"][self._textarea]["text"] += data
            elif self._button:
                self._form["buttons"][-1]["text"] += data

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())

    def form(self) -> dict:
        (form,) = self.forms
        return form


def submission(form: dict) -> dict[str, str]:
    """What the browser sends for this form when no button is pressed (form.submit())."""
    data = {}
    for attrs in form["inputs"]:
        if attrs.get("type") in ("radio", "checkbox"):
            if "checked" in attrs:
                data[attrs["name"]] = attrs.get("value", "on")
        elif attrs.get("name"):
            data[attrs["name"]] = attrs.get("value", "")
    for name, options in form["selects"].items():
        chosen = [o for o in options if "selected" in o] or options[:1]
        data[name] = chosen[0].get("value", "") if chosen else ""
    for name, area in form["textareas"].items():
        data[name] = area["text"]
    return data


# --- replies, written as mail programs write them ----------------------------------------------

INBOUND = "replies@example.org"


def decision_mail(app, db, smtp, address: str):
    """The last mail with links delivered to an address."""
    deliver(app, db, T0 + timedelta(minutes=1))
    return [mail for mail in smtp.to(address) if links_in(mail)][-1]


def reply(
    mail,
    text: str | None = None,
    *,
    html: str | None = None,
    sender: str = "Anna de Vries <anna@example.org>",
    subject: str | None = None,
    headers: dict | None = None,
    message_id: str | None = None,
) -> bytes:
    """A reply to `mail` as a mail program writes it: threaded by In-Reply-To and References,
    with its own Message-ID, in text, HTML, or both."""
    head = {
        "From": sender,
        "To": INBOUND,
        "Subject": subject if subject is not None else f"Re: {mail['Subject']}",
        "Date": format_datetime(T0 + timedelta(hours=1)),
        "Message-ID": message_id or f"<{secrets.token_hex(8)}@mail.example.net>",
        "In-Reply-To": mail["Message-ID"],
        "References": mail["Message-ID"],
        "MIME-Version": "1.0",
    } | (headers or {})
    lines = [f"{name}: {value}" for name, value in head.items()]
    if html is not None and text is not None:
        lines += [
            'Content-Type: multipart/alternative; boundary="b1"',
            "",
            "--b1",
            'Content-Type: text/plain; charset="utf-8"',
            "",
            text,
            "--b1",
            'Content-Type: text/html; charset="utf-8"',
            "",
            html,
            "--b1--",
        ]
    elif html is not None:
        lines += ['Content-Type: text/html; charset="utf-8"', "", html]
    else:
        lines += ['Content-Type: text/plain; charset="utf-8"', "", text or ""]
    return "\r\n".join(lines).encode("utf-8")


def choice_of(db, round_id: int, email: str) -> str | None:
    return db.conn.execute(
        "SELECT choice FROM round_parties WHERE round_id = ? AND email = ?", [round_id, email]
    ).fetchone()[0]


# --- a real IMAP server ----------------------------------------------------------------------

DOVECOT_CONF = """
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{folder}/cert.pem
ssl_key = <{folder}/key.pem
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = {uid}
mail_location = maildir:{mail}/%u/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {mail}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
"""


class Mailbox:
    """The test IMAP server's one mailbox: put messages in, see which folder holds them."""

    user = "replies"
    password = "a-test-password"  # noqa: S105 (a throwaway server's)

    def __init__(self, port: int, ca_file: Path, folder: Path) -> None:
        self.port, self.ca_file, self.folder = port, ca_file, folder

    def settings(self) -> dict:
        """The INBOUND_ settings that read this mailbox."""
        return {
            "INBOUND_IMAP_HOST": "127.0.0.1",
            "INBOUND_IMAP_PORT": self.port,
            "INBOUND_IMAP_USERNAME": self.user,
            "INBOUND_IMAP_PASSWORD": self.password,
            "INBOUND_IMAP_CA_FILE": str(self.ca_file),
        }

    def connect(self):
        import imaplib
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca_file))
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=10)
        imap.login(self.user, self.password)
        return imap

    def deliver(self, *messages: bytes, folder: str = "INBOX") -> None:
        imap = self.connect()
        try:
            for message in messages:
                status, data = imap.append(folder, None, None, message)
                assert status == "OK", data
        finally:
            imap.logout()

    def message_ids(self, folder: str) -> list[str]:
        """The Message-ID of every message in a folder ([] when there is no such folder)."""
        imap = self.connect()
        try:
            status, _ = imap.select(folder, readonly=True)
            if status != "OK":
                return []
            _, data = imap.uid("SEARCH", None, "ALL")
            found = []
            for uid in data[0].split():
                _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                header = email.message_from_bytes(parts[0][1], policy=policy.default)
                found.append(str(header["Message-ID"]).strip())
            return found
        finally:
            imap.logout()


@contextlib.contextmanager
def serve_imap(folder: Path):
    """Debian's dovecot on 127.0.0.1, on a free port, with its own configuration in `folder`:
    one user, maildir storage, and TLS with a certificate made here (the Mailbox's ca_file)."""
    import pwd
    import shutil
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    if os.getuid() == 0:
        # Dovecot runs no login process and no mailbox as root: its own users do, and they
        # cannot reach into pytest's private folders, so the mail and the password file live
        # in a folder of theirs.
        owner = pwd.getpwnam("dovecot")
        login_user, internal_user, internal_group = "dovenull", "dovecot", "dovecot"
    else:
        owner = pwd.getpwuid(os.getuid())
        login_user = internal_user = owner.pw_name
        internal_group = owner.pw_name if _group_exists(owner.pw_name) else str(owner.pw_gid)
    mail = Path(tempfile.mkdtemp(prefix="twoyes-imap-"))
    (mail / "passwd").write_text(f"{Mailbox.user}:{{PLAIN}}{Mailbox.password}::::::\n")
    for path in (mail, mail / "passwd"):
        os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    (folder / "dovecot.conf").write_text(
        DOVECOT_CONF.format(
            folder=folder,
            mail=mail,
            port=port,
            uid=owner.pw_uid,
            gid=owner.pw_gid,
            login_user=login_user,
            internal_user=internal_user,
            internal_group=internal_group,
        )
    )
    server = subprocess.Popen(
        ["/usr/sbin/dovecot", "-F", "-c", str(folder / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, server, folder / "dovecot.log")
        yield Mailbox(port, folder / "cert.pem", folder)
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stderr.close()
        shutil.rmtree(mail, ignore_errors=True)


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def wait_for_port(port: int, server: subprocess.Popen, log: Path, seconds: float = 15) -> None:
    """Until a server listens on 127.0.0.1:port; its log on failure."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    text = log.read_text() if log.exists() else ""
    said = server.stderr.read() if server.poll() is not None else b""
    raise AssertionError(f"the test server did not start: {said!r} {text}")


# --- links -----------------------------------------------------------------------------------

SECRET = "test-secret"  # the app's SECRET_KEY in the tests (conftest.settings)


def open_mail(db, context: dict, secret_key: str = SECRET) -> dict:
    """A queued mail's context with the raw token of each of its links (`decide_token`, or
    None where it has no such link), made and opened as delivery makes them."""
    from twoyes.db import transaction
    from twoyes.tokens import NONCE, TOKEN, open_links

    mail = {"context": context}
    with transaction(db):
        open_links(db, [mail], secret_key)
    names = {key.removesuffix(NONCE) + TOKEN: None for key in context if key.endswith(NONCE)}
    return context | names | mail["tokens"]
