"""A night's work killed at random moments: nothing is lost, nothing doubled, the next run ends it.

The machine was off for a week: 2,000 rounds are past their deadline, sessions have ended
without their rounds, some engagements idled out and some parties are due a reminder. Then
`python cli.py tick` runs as a real process and is killed with SIGKILL at twenty random
moments (a seeded random, so a failure can be replayed). After every kill the database
file must pass PRAGMA integrity_check and keep every promise of test_invariants.py; at the
end one more tick must finish the work: every round closed once, every mail at the real
SMTP server once. The one copy SMTP cannot avoid is that of a mail the server accepted in
the very instant its run was killed (before the run could mark it sent); such a copy must
carry the same Message-ID, and it may only be the mail in flight at a kill.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import ROOT, assert_invariants, serve_smtp

from twoyes import db as database
from twoyes.db import transaction
from twoyes.engagements import start_engagement
from twoyes.outbox import CLAIM_MINUTES, claim_due_mail, mark_sent
from twoyes.people import add_person
from twoyes.rounds import record_decision
from twoyes.rules import Policy
from twoyes.sessions import plan_session, record_session_done

pytestmark = pytest.mark.slow

SEED = 20261127
KILLS = 20
OVERDUE = 2000
DUE_SESSIONS = 100
IDLE = 100
REMINDERS = 100
COACHES = 20
POLICY = Policy(decision_days=7, reminder_days=2, idle_days=60)

# The week the machine was off ends at NIGHT; the killed runs each start CLAIM_MINUTES + 1
# later than the one before (`--now`), so a claim left by a killed run may be taken over.
NIGHT = datetime(2026, 2, 9, 2, 0, tzinfo=UTC)
WEEK_AGO = NIGHT - timedelta(days=POLICY.decision_days, hours=1)
STEP = timedelta(minutes=CLAIM_MINUTES + 1)
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.MULTILINE | re.IGNORECASE)


class Recorder:
    """An SMTP server's handler that notes each accepted mail's Message-ID and when it came."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int, str]] = []  # (when, connection, Message-ID)
        self.connections = itertools.count()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        match = MESSAGE_ID.search(envelope.content)
        if not hasattr(session, "number"):  # one session per SMTP connection, so per run
            session.number = next(self.connections)
        message_id = match.group(1).decode() if match else "?"
        self.arrivals.append((time.monotonic(), session.number, message_id))
        return "250 OK"


@pytest.fixture
def recorder():
    with serve_smtp(Recorder()) as handler:
        yield handler


def build_the_week(db) -> None:
    """Everything a week without cron leaves behind, written through the domain functions."""
    with transaction(db):
        for number in range(COACHES):
            add_person(db, "coach", f"Coach {number}", f"coach{number}@example.org", "en", WEEK_AGO)

        def client(number: int) -> tuple[str, str]:
            address = f"client{number}@example.org"
            add_person(db, "client", f"Client {number}", address, "en", WEEK_AGO)
            return f"coach{number % COACHES}@example.org", address

        number = 0
        for _ in range(OVERDUE):  # rounds past their deadline, some half answered
            coach, address = client(number)
            engagement = start_engagement(db, coach, [address], WEEK_AGO)
            record_session_done(db, engagement, WEEK_AGO, POLICY)
            if number % 5 == 0:
                (decision_id,) = db.conn.execute(
                    "SELECT decisions.id FROM decisions JOIN rounds"
                    " ON rounds.id = decisions.round_id"
                    " WHERE rounds.engagement_id = ? AND decisions.role = 'coach'",
                    [engagement],
                ).fetchone()
                record_decision(db, decision_id, WEEK_AGO + timedelta(hours=1), choice="continue")
            number += 1
        for _ in range(DUE_SESSIONS):  # sessions that ended while the machine was off
            coach, address = client(number)
            engagement = start_engagement(db, coach, [address], WEEK_AGO)
            plan_session(db, engagement, NIGHT - timedelta(days=2), 60, WEEK_AGO)
            number += 1
        for _ in range(REMINDERS):  # rounds whose reminder fell due during the week
            coach, address = client(number)
            engagement = start_engagement(db, coach, [address], WEEK_AGO)
            record_session_done(db, engagement, NIGHT - timedelta(days=5, hours=12), POLICY)
            number += 1
        idle_since = NIGHT - timedelta(days=POLICY.idle_days + 1)
        for _ in range(IDLE):  # nothing held or planned for longer than IDLE_DAYS
            coach, address = client(number)
            start_engagement(db, coach, [address], idle_since)
            number += 1
        # The decision mails went out on the days their rounds opened.
        while batch := claim_due_mail(db, NIGHT - timedelta(days=1)):
            for mail in batch:
                mark_sent(db, mail, mail_sent_at(mail))


def mail_sent_at(mail: dict) -> datetime:
    return datetime.fromisoformat(mail["created_at"]) + timedelta(minutes=1)


def tick_process(recorder, folder, now: datetime) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TWOYES")}
    environment |= {
        "TWOYES_DATABASE": str(folder / "twoyes.db"),
        "TWOYES_INSTANCE_PATH": str(folder / "instance"),
        "TWOYES_SECRET_KEY": "test-secret",
        "TWOYES_BASE_URL": "http://twoyes.test",
        "TWOYES_MAIL_SERVER": "127.0.0.1",
        "TWOYES_MAIL_PORT": str(recorder.port),
        "TWOYES_MAIL_DEFAULT_SENDER": "Practice <practice@example.org>",
        # A batch a round: kills land between batches of the sweep too.
        "TWOYES_SWEEP_BATCH": "1",
    }
    return subprocess.Popen(
        [sys.executable, "cli.py", "tick", "--now", now.isoformat()],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def closed_rounds(path) -> int:
    """How many rounds are closed now, read beside a running tick (WAL lets both work)."""
    db = database.connect(path)
    try:
        return db.conn.execute("SELECT count(*) FROM rounds WHERE status = 'closed'").fetchone()[0]
    finally:
        db.close()


def footprint(path: Path) -> tuple:
    """The database file and its WAL as they stand: a tick's first touch of the database
    (opening it in WAL mode, or writing) changes this."""
    files = (path, path.with_name(f"{path.name}-wal"))
    return tuple(file.stat().st_mtime_ns if file.exists() else None for file in files)


def counts(db) -> dict:
    row = db.conn.execute(
        "SELECT (SELECT count(*) FROM rounds WHERE status = 'closed'),"
        " (SELECT count(*) FROM outbox WHERE status = 'sent'),"
        " (SELECT count(*) FROM outbox WHERE status != 'sent')"
    ).fetchone()
    return {"closed": row[0], "sent": row[1], "waiting": row[2]}


def test_tick_killed_twenty_times_loses_nothing_doubles_nothing_and_the_next_tick_ends_it(
    recorder, tmp_path
):
    path = tmp_path / "twoyes.db"
    db = database.connect(path)
    database.init_db(db)
    build_the_week(db)
    sent_before = {row[0] for row in db.conn.execute("SELECT message_id FROM outbox")}
    db.close()

    rng = random.Random(SEED)
    runs = []  # (started, killed or None, counts after)
    now = NIGHT
    for number in range(KILLS):
        process = tick_process(recorder, tmp_path, now)
        started = time.monotonic()
        if number == 0:
            # The first kill is aimed at the deadline sweep: once its first batches are in.
            while process.poll() is None and closed_rounds(path) == 0:
                time.sleep(0.005)
        else:
            # Within the night's work, once it has begun: Python's start alone can take
            # seconds on a busy 2-core machine, and a kill before it would test nothing.
            before = footprint(path)
            while process.poll() is None and footprint(path) == before:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.8))
        killed = None
        if process.poll() is None:
            process.kill()  # SIGKILL: no handler, no clean-up, no rollback of its own
            killed = time.monotonic()
        out, err = process.communicate()
        assert "Traceback" not in err, err
        db = database.connect(path)
        try:
            assert_invariants(db)
            runs.append((started, killed, counts(db)))
        finally:
            db.close()
        now += STEP
    assert sum(killed is not None for _, killed, _ in runs) >= KILLS - 2, "the runs ended too soon"
    progress = [after for _, _, after in runs]
    assert progress[0] != progress[-1], "the killed runs made no progress at all"
    assert any(0 < after["closed"] < OVERDUE for after in progress), "no kill between batches"

    # The next tick finishes the work, and the one after it has nothing left to do.
    final = tick_process(recorder, tmp_path, now)
    out, err = final.communicate(timeout=180)
    assert final.returncode == 0, err
    assert "locked" not in err and "Traceback" not in err, err
    runs.append((time.monotonic(), None, None))
    again = tick_process(recorder, tmp_path, now + STEP)
    out, err = again.communicate(timeout=60)
    assert (again.returncode, out.strip(), err.strip()) == (0, "", "")

    db = database.connect(path)
    assert_invariants(db, swept_at=now)
    rounds = dict(
        db.conn.execute(
            "SELECT status || '/' || coalesce(outcome, ''), count(*) FROM rounds GROUP BY 1"
        ).fetchall()
    )
    assert rounds == {"closed/stop": OVERDUE, "open/": DUE_SESSIONS + REMINDERS}
    ended = dict(
        db.conn.execute("SELECT end_reason, count(*) FROM engagements GROUP BY 1").fetchall()
    )
    assert ended == {"undecided": OVERDUE, "idle": IDLE, None: DUE_SESSIONS + REMINDERS}
    statuses = dict(db.conn.execute("SELECT status, count(*) FROM outbox GROUP BY 1").fetchall())
    expected_mails = (
        4 * OVERDUE  # decision mails on the day, outcome mails tonight
        + 2 * DUE_SESSIONS  # decision mails
        + 2 * REMINDERS  # decision mails on the day
        + 2 * REMINDERS  # reminders
        + 2 * IDLE  # outcome mails
    )
    assert statuses == {"sent": expected_mails}, "every mail went out, none failed or waits"

    # Each mail of tonight arrived; a second copy only of the mail in flight at a kill.
    tonight = {
        f"<{row[0]}@example.org>"
        for row in db.conn.execute("SELECT message_id FROM outbox")
        if row[0] not in sent_before
    }
    db.close()
    arrivals = sorted(recorder.arrivals)
    copies = Counter(message_id for _, _, message_id in arrivals)
    assert set(copies) == tonight
    # A mail can only come again if the server accepted it and its run died before marking
    # it sent: then it was the last thing that run's connection carried. (By connection, not
    # by clock: the server may log a killed run's last mail after the next run started.)
    last_of_connection = {connection: message_id for _, connection, message_id in arrivals}
    in_flight = Counter(last_of_connection.values())
    doubled = {message_id: number for message_id, number in copies.items() if number > 1}
    unexplained = {
        message_id: number
        for message_id, number in doubled.items()
        if number - 1 > in_flight[message_id]
    }
    assert unexplained == {}, f"sent more than once without a kill in flight: {unexplained}"
