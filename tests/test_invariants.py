"""The rules hold whatever happens, in whatever order: random histories (hypothesis).

A state machine drives the domain functions (sessions done and planned, decisions by every
party, ticks, close-undecided, reminders, delivery over a real SMTP server, reopening,
members joining and leaving) on a real SQLite file, with a clock that only moves forward,
sometimes by a second and sometimes by weeks. After every step the database is read back
with SQL and must show what the practice promises:

- no engagement is active past a round's deadline unless every party of that round
  explicitly chose continue (in a group: or left it);
- every closed round has one outcome, closed once; every ended engagement exactly one end
  reason; a stop is never turned into a continue;
- every state change has its event, every party its decision mail and outcome mail, once;
- every mail marked sent reached the SMTP server exactly once.

`invariant_violations` and `assert_invariants` are shared with test_crash.py and
test_concurrency.py, which check the same promises after kills and overlapping processes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Inbox, dump, serve_smtp
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from twoyes import db as database
from twoyes.engagements import end_idle_engagements, reopen_engagement, start_engagement
from twoyes.errors import Conflict, Invalid, NotFound, TwoyesError
from twoyes.mail.delivery import deliver_due_mail
from twoyes.members import add_member, remove_member
from twoyes.people import add_person
from twoyes.rounds import close_overdue_rounds, open_due_rounds, record_decision, send_reminders
from twoyes.rules import REASONS, Policy
from twoyes.sessions import plan_session, record_session_done
from twoyes.times import to_db
from twoyes.web import create_app

pytestmark = pytest.mark.slow

SENDER_DOMAIN = "example.org"

# --- the invariants, read back from the database ------------------------------------------


def _rows(db, sql: str, *params) -> list[dict]:
    return [dict(row) for row in db.conn.execute(sql, params)]


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
        self.engagements = {row["id"]: row for row in _rows(db, "SELECT * FROM engagements")}
        self.rounds = {row["id"]: row for row in _rows(db, "SELECT * FROM rounds")}
        self.members = {row["id"]: row for row in _rows(db, "SELECT * FROM members")}
        self.sessions = _rows(db, "SELECT * FROM sessions")
        self.client_email = dict(db.conn.execute("SELECT id, email FROM clients").fetchall())
        self.coach_email = dict(
            db.conn.execute(
                "SELECT engagements.id, coaches.email FROM engagements"
                " JOIN coaches ON coaches.id = engagements.coach_id"
            ).fetchall()
        )
        self.parties: dict[int, list[dict]] = defaultdict(list)  # round id -> decisions
        for decision in _rows(
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
        self.outbox = _rows(
            db,
            "SELECT id, kind, engagement_id, to_email, created_at, status, context, message_id"
            " FROM outbox",
        )
        self.mails: dict[tuple, list[dict]] = defaultdict(list)  # (kind, engagement, at)
        for mail in self.outbox:
            self.mails[mail["kind"], mail["engagement_id"], mail["created_at"]].append(mail)
        self.events: dict[str, list[dict]] = defaultdict(list)  # kind -> events, in order
        self.of_engagement: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for event in _rows(db, "SELECT * FROM events ORDER BY id"):
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
                wanted = 2 if party["reminded_at"] else 1
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
            if any(key.endswith("token") for key in json.loads(mail["context"])):
                self.say(f"mail {mail['id']} was delivered but still holds its link")

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
    return ledger.problems


def assert_invariants(db, *, swept_at: datetime | None = None) -> None:
    problems = invariant_violations(db, swept_at=swept_at)
    assert not problems, "\n".join(problems[:20]) + (
        f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
    )


def message_id_of(mail_row: dict) -> str:
    return f"<{mail_row['message_id']}@{SENDER_DOMAIN}>"


# --- the state machine -----------------------------------------------------------------------

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
POLICY = Policy(decision_days=7, reminder_days=2, idle_days=60)
COACHES = ["bob@example.org", "eva@example.org"]
CLIENTS = [f"{name}@example.org" for name in ("anna", "carl", "dana", "emre", "fien")]
# Small steps mostly, so that parties decide within their deadlines; now and then weeks.
JUMPS = [
    timedelta(seconds=1),
    timedelta(minutes=59),
    timedelta(hours=1),
    timedelta(hours=20),
    timedelta(days=1),
    timedelta(days=2),
    timedelta(days=3),
    timedelta(days=5),
    timedelta(days=7),
    timedelta(days=30),
    timedelta(days=61),
]


class Practice(RuleBasedStateMachine):
    """A practice of two coaches and five clients, over weeks of random events."""

    def __init__(self, inbox: Inbox, app) -> None:
        super().__init__()
        self.inbox, self.app = inbox, app
        self.folder = Path(tempfile.mkdtemp(prefix="twoyes-invariants-"))
        self.db = database.connect(self.folder / "twoyes.db")
        database.init_db(self.db)
        self.now = START
        self.swept_at: datetime | None = None
        inbox.clear()

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- helpers

    def tick_clock(self) -> datetime:
        """Every step happens at its own second, so each change is told apart by its time."""
        self.now += timedelta(seconds=1)
        return self.now

    def ids(self, sql: str, *params) -> list[int]:
        return [row[0] for row in self.db.conn.execute(sql, params)]

    def engagement(self, engagement_id: int) -> dict:
        return dict(
            self.db.conn.execute(
                "SELECT * FROM engagements WHERE id = ?", [engagement_id]
            ).fetchone()
        )

    def has_open_round(self, engagement_id: int) -> bool:
        return bool(
            self.ids(
                "SELECT id FROM rounds WHERE engagement_id = ? AND status = 'open'", engagement_id
            )
        )

    def refused(self, call, expected: type[TwoyesError]) -> None:
        """The call must fail with `expected` and change nothing."""
        before = dump(self.db)
        with pytest.raises(expected):
            call()
        assert dump(self.db) == before

    def deliver(self) -> None:
        with self.app.app_context():
            report = deliver_due_mail(self.db, self.now, echo=lambda line: None)
        assert report.failed == 0 and report.retrying == 0, report.errors
        sent = _rows(self.db, "SELECT message_id FROM outbox WHERE status = 'sent'")
        arrived = Counter(message["Message-ID"] for message in self.inbox.messages)
        assert arrived == {message_id_of(row): 1 for row in sent}

    # -- rules

    @initialize()
    def people(self) -> None:
        for number, address in enumerate(COACHES):
            add_person(self.db, "coach", f"Coach {number}", address, "en", self.now)
        for address in CLIENTS:
            add_person(self.db, "client", address.split("@")[0].title(), address, "en", self.now)
        start_engagement(self.db, COACHES[0], CLIENTS[:1], self.now)
        start_engagement(self.db, COACHES[1], CLIENTS[1:4], self.now, min_members=2)

    @precondition(lambda self: len(self.ids("SELECT id FROM engagements")) < 4)
    @rule(data=st.data())
    def start(self, data) -> None:
        coach = data.draw(st.sampled_from(COACHES), label="coach")
        clients = data.draw(st.lists(st.sampled_from(CLIENTS), min_size=1, max_size=3, unique=True))
        least = data.draw(st.integers(1, len(clients)), label="min_members")
        start_engagement(self.db, coach, clients, self.tick_clock(), min_members=least)

    @precondition(lambda self: self.ids("SELECT id FROM engagements"))
    @rule(data=st.data())
    def session_done(self, data) -> None:
        engagement_id = data.draw(st.sampled_from(self.ids("SELECT id FROM engagements")))
        now = self.tick_clock()
        engagement = self.engagement(engagement_id)
        call = lambda: record_session_done(self.db, engagement_id, now, POLICY)  # noqa: E731
        if engagement["status"] == "ended" or self.has_open_round(engagement_id):
            self.refused(call, Conflict)
        else:
            call()

    @precondition(lambda self: self.ids("SELECT id FROM engagements"))
    @rule(
        data=st.data(),
        starts_in=st.sampled_from([-120, -61, 0, 30, 24 * 60, 3 * 24 * 60]),
        minutes=st.sampled_from([1, 60, 90]),
    )
    def plan(self, data, starts_in: int, minutes: int) -> None:
        engagement_id = data.draw(st.sampled_from(self.ids("SELECT id FROM engagements")))
        now = self.tick_clock()
        engagement = self.engagement(engagement_id)
        planned = self.ids(
            "SELECT id FROM sessions WHERE engagement_id = ? AND status = 'planned'", engagement_id
        )
        call = lambda: plan_session(  # noqa: E731
            self.db, engagement_id, now + timedelta(minutes=starts_in), minutes, now
        )
        if engagement["status"] == "ended" or self.has_open_round(engagement_id) or planned:
            self.refused(call, Conflict)
        else:
            call()

    @precondition(lambda self: self.ids("SELECT id FROM decisions"))
    @rule(
        data=st.data(),
        choice=st.sampled_from(["continue", "stop"]),
        usefulness=st.one_of(st.none(), st.integers(0, 10), st.sampled_from([-1, 11])),
        note=st.one_of(st.none(), st.text(max_size=20)),
    )
    def decide(self, data, choice: str, usefulness: int | None, note: str | None) -> None:
        # Mostly parties of open rounds; now and then a late or closed one.
        open_ones = self.ids(
            "SELECT decisions.id FROM decisions JOIN rounds ON rounds.id = decisions.round_id"
            " WHERE rounds.status = 'open'"
        )
        every = self.ids("SELECT id FROM decisions")
        decision_id = data.draw(
            st.sampled_from(open_ones)
            if open_ones and data.draw(st.integers(0, 4))
            else st.sampled_from(every),
            label="decision",
        )
        party = dict(
            self.db.conn.execute(
                "SELECT decisions.*, rounds.status AS round_status, rounds.deadline_at,"
                " members.status AS member_status FROM decisions"
                " JOIN rounds ON rounds.id = decisions.round_id"
                " LEFT JOIN members ON members.engagement_id = rounds.engagement_id"
                " AND members.client_id = decisions.client_id WHERE decisions.id = ?",
                [decision_id],
            ).fetchone()
        )
        reason = None
        if choice == "stop":
            reason = data.draw(st.one_of(st.none(), st.sampled_from(REASONS[party["role"]])))
        now = self.tick_clock()
        call = lambda: record_decision(  # noqa: E731
            self.db,
            decision_id,
            now,
            choice=choice,
            reason=reason,
            usefulness=usefulness,
            note=note,
        )
        if (
            party["round_status"] == "closed"
            or to_db(now) >= party["deadline_at"]
            or party["choice"] == "stop"
            or party["member_status"] == "left"
        ):
            self.refused(call, Conflict)
        elif usefulness is not None and not 0 <= usefulness <= 10:
            self.refused(call, Invalid)
        else:
            result = call()
            row = self.db.conn.execute(
                "SELECT choice FROM decisions WHERE id = ?", [decision_id]
            ).fetchone()
            assert row["choice"] == choice == result["choice"]

    @precondition(lambda self: self.ids("SELECT id FROM rounds WHERE status = 'open'"))
    @rule(data=st.data())
    def everyone_answers(self, data) -> None:
        """Every party of one open round answers in turn, mostly continue (R3, R5)."""
        round_id = data.draw(
            st.sampled_from(self.ids("SELECT id FROM rounds WHERE status = 'open'"))
        )
        order = data.draw(
            st.permutations(self.ids("SELECT id FROM decisions WHERE round_id = ?", round_id))
        )
        for decision_id in order:
            choice = data.draw(st.sampled_from(["continue"] * 4 + ["stop"]), label="choice")
            try:
                record_decision(self.db, decision_id, self.tick_clock(), choice=choice)
            except Conflict:
                pass  # closed by an earlier answer, past the deadline, or a stop already
        # Answered in time by everyone: the round is closed now, whatever the answers.
        round_ = self.db.conn.execute(
            "SELECT status, deadline_at FROM rounds WHERE id = ?", [round_id]
        ).fetchone()
        if to_db(self.now) < round_["deadline_at"]:
            assert round_["status"] == "closed"

    @precondition(lambda self: self.ids("SELECT id FROM engagements"))
    @rule(data=st.data())
    def reopen(self, data) -> None:
        engagement_id = data.draw(st.sampled_from(self.ids("SELECT id FROM engagements")))
        now = self.tick_clock()
        call = lambda: reopen_engagement(self.db, engagement_id, now)  # noqa: E731
        if self.engagement(engagement_id)["status"] == "ended":
            call()
            assert self.engagement(engagement_id)["status"] == "active"
        else:
            self.refused(call, Conflict)

    @precondition(lambda self: self.ids("SELECT id FROM engagements"))
    @rule(data=st.data(), joining=st.booleans())
    def membership(self, data, joining: bool) -> None:
        engagement_id = data.draw(st.sampled_from(self.ids("SELECT id FROM engagements")))
        client = data.draw(st.sampled_from(CLIENTS), label="client")
        now = self.tick_clock()
        engagement = self.engagement(engagement_id)
        status = self.db.conn.execute(
            "SELECT members.status FROM members JOIN clients ON clients.id = members.client_id"
            " WHERE members.engagement_id = ? AND clients.email = ?",
            [engagement_id, client],
        ).fetchone()
        status = status[0] if status else None
        if joining:
            call = lambda: add_member(self.db, engagement_id, client, now)  # noqa: E731
            ok = engagement["kind"] == "group" and engagement["status"] == "active"
            ok = ok and status != "active"
            expected = Conflict
        else:
            call = lambda: remove_member(self.db, engagement_id, client, now)  # noqa: E731
            ok = engagement["kind"] == "group" and status == "active"
            expected = NotFound if engagement["kind"] == "group" and status is None else Conflict
        if ok:
            call()
        else:
            self.refused(call, expected)

    @rule(jump=st.sampled_from(JUMPS))
    def time_passes(self, jump: timedelta) -> None:
        self.now += jump

    @rule()
    def tick(self) -> None:
        """What cron runs: afterwards nothing due is left undone."""
        now = self.tick_clock()
        open_due_rounds(self.db, now, POLICY)
        close_overdue_rounds(self.db, now)
        end_idle_engagements(self.db, now, POLICY)
        send_reminders(self.db, now)
        self.deliver()
        self.swept_at = now
        at = to_db(now)
        due = self.ids(
            "SELECT sessions.id FROM sessions JOIN engagements"
            " ON engagements.id = sessions.engagement_id WHERE sessions.status = 'planned'"
            " AND sessions.ends_at <= ? AND engagements.status = 'active'",
            at,
        )
        assert due == [], f"sessions {due} ended but their rounds did not open"
        unreminded = self.ids(
            "SELECT decisions.id FROM decisions JOIN rounds ON rounds.id = decisions.round_id"
            " LEFT JOIN members ON members.engagement_id = rounds.engagement_id"
            " AND members.client_id = decisions.client_id"
            " WHERE rounds.status = 'open' AND rounds.reminder_at <= :at"
            " AND :at < rounds.deadline_at"
            " AND decisions.choice IS NULL AND decisions.reminded_at IS NULL"
            " AND (members.id IS NULL OR members.status = 'active')",
            at,
        )
        assert unreminded == [], f"undecided parties {unreminded} got no reminder"
        cutoff = to_db(now - timedelta(days=POLICY.idle_days))
        idle = self.ids(
            "SELECT id FROM engagements WHERE status = 'active'"
            " AND NOT EXISTS (SELECT 1 FROM rounds WHERE engagement_id = engagements.id"
            "   AND status = 'open')"
            " AND NOT EXISTS (SELECT 1 FROM sessions WHERE engagement_id = engagements.id"
            "   AND status = 'planned')"
            " AND max(started_at, coalesce(reopened_at, ''), coalesce((SELECT max(closed_at)"
            "   FROM rounds WHERE engagement_id = engagements.id), '')) <= ?",
            cutoff,
        )
        assert idle == [], f"engagements {idle} are idle past IDLE_DAYS but still active"
        queued = self.ids(
            "SELECT id FROM outbox WHERE status != 'sent' AND next_attempt_at <= ?", at
        )
        assert queued == [], f"mails {queued} were due but not delivered"

    @rule()
    def close_undecided(self) -> None:
        now = self.tick_clock()
        close_overdue_rounds(self.db, now)
        end_idle_engagements(self.db, now, POLICY)
        self.swept_at = now

    @rule()
    def reminders(self) -> None:
        send_reminders(self.db, self.tick_clock())

    @rule()
    def open_due(self) -> None:
        open_due_rounds(self.db, self.tick_clock(), POLICY)

    @rule()
    def send(self) -> None:
        self.tick_clock()
        self.deliver()

    # -- after every step

    @invariant()
    def promises_hold(self) -> None:
        assert_invariants(self.db, swept_at=self.swept_at)


NO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]


@pytest.fixture(scope="module")
def mail_server():
    with serve_smtp(Inbox()) as inbox:
        yield inbox


def test_random_histories_keep_every_promise(mail_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("invariants-app")
    app = create_app(
        {
            "TESTING": True,
            "DATABASE": str(folder / "unused.db"),
            "INSTANCE_PATH": str(folder),
            "SECRET_KEY": "test-secret",
            "BASE_URL": "http://twoyes.test",
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": mail_server.port,
            "MAIL_DEFAULT_SENDER": f"Practice <practice@{SENDER_DOMAIN}>",
        }
    )
    run_state_machine_as_test(
        lambda: Practice(mail_server, app),
        settings=settings(
            max_examples=int(os.environ.get("INVARIANTS_EXAMPLES", 60)),
            stateful_step_count=40,
            deadline=None,
            database=None,
            # Shrinking a failing history takes this machine minutes; by default a failure
            # is reported at once with its whole history. INVARIANTS_SHRINK=1 shrinks it.
            phases=list(Phase) if os.environ.get("INVARIANTS_SHRINK") else NO_SHRINK,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# --- the checker itself must be able to fail ---------------------------------------------------


@pytest.fixture
def lived(db, people, engagement):
    """One engagement whose first round closed with both parties' continue."""
    start = datetime.now(UTC)
    record_session_done(db, engagement, start, POLICY)
    for decision_id in [row[0] for row in db.conn.execute("SELECT id FROM decisions")]:
        record_decision(db, decision_id, start + timedelta(minutes=1), choice="continue")
    assert invariant_violations(db) == []
    return engagement


@pytest.mark.parametrize(
    ("tampering", "words"),
    [
        ("UPDATE decisions SET choice = 'stop' WHERE role = 'client'", "continued although"),
        ("UPDATE rounds SET outcome = 'stop'", "outcome stop but its event"),
        (
            "DELETE FROM outbox WHERE kind = 'outcome' AND to_email = 'anna@example.org'",
            "did not get one outcome mail",
        ),
        (
            "DELETE FROM outbox WHERE kind = 'decision' AND to_email = 'bob@example.org'",
            "has 0 decision mails",
        ),
        (
            "UPDATE engagements SET status = 'ended', end_reason = 'idle', ended_at = started_at",
            "0 endings",
        ),
        ("DELETE FROM tokens", "has not 1 tokens"),
    ],
    ids=[
        "stop-into-continue",
        "outcome-without-event",
        "outcome-mail-lost",
        "decision-mail-lost",
        "end-without-event",
        "token-lost",
    ],
)
def test_the_checker_notices_a_broken_promise(db, lived, tampering, words):
    """Data changed behind the rules' back (as a bug would): the checker names it."""
    db.conn.execute("PRAGMA foreign_keys = OFF")
    db.conn.execute(tampering)
    problems = invariant_violations(db)
    assert any(words in problem for problem in problems), problems


# --- what the state machine found, as plain scenarios ------------------------------------------


def test_a_group_with_too_few_members_gets_no_round_that_cannot_go_on(db, people):
    """R5: a round closes as soon as too few members are left to reach min_members.

    Carl is taken out of a group of two that needs both between rounds; the next round
    can never go on, so nobody may be asked "Another session?" for it: the session is
    refused, or its round closes at once (members_left). Found by the state machine,
    also through `engagement reopen` of a group that ended with members_left.
    """
    start = datetime.now(UTC)
    group = start_engagement(
        db, people["coach"], [people["anna"], people["carl"]], start, min_members=2
    )
    remove_member(db, group, people["carl"], start + timedelta(minutes=1))
    before = dump(db)

    try:
        record_session_done(db, group, start + timedelta(days=1), POLICY)
    except TwoyesError:
        assert dump(db) == before
        return
    (round_,) = _rows(db, "SELECT * FROM rounds WHERE engagement_id = ?", group)
    assert (round_["status"], round_["outcome"]) == ("closed", "stop")
    assert _rows(db, "SELECT * FROM outbox WHERE kind = 'decision'") == []
    assert invariant_violations(db) == []
