"""Overlap: many processes and many people at once on one SQLite file.

First cron's commands: tick, send and close-undecided started in the same instant (real
processes, released together by a go-signal) over a database where every kind of work is
due at once. Then the web: the app served by gunicorn with four workers while fifty threads
post decisions, several on the same round and several for the same party (double clicks).
Each round must close exactly once with the outcome its decisions give, every mail must go
exactly once, and no person may see a 500 or a "database is locked".
"""

from __future__ import annotations

import http.client
import re
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from urllib.parse import urlencode

import pytest
from support import (
    POLICY,
    ROOT,
    assert_invariants,
    cli_env,
    deliver,
    free_port,
    invariant_violations,
    links_in,
    run_at_once,
    token_of,
)

from twoyes.db import transaction
from twoyes.engagements import start_engagement
from twoyes.outbox import claim_due_mail, mark_sent
from twoyes.people import add_person
from twoyes.rounds import record_decision
from twoyes.sessions import plan_session, record_session_done

pytestmark = pytest.mark.slow

# --- cron: tick, send and close-undecided at once ---------------------------------------------

NIGHT = datetime(2026, 2, 9, 2, 0, tzinfo=UTC)
WEEK_AGO = NIGHT - timedelta(days=POLICY.decision_days, hours=1)


def everything_due(db) -> dict[str, list[int]]:
    """Overdue rounds (individual and group), ended sessions, due reminders, idle engagements.

    The decision mails of the rounds opened earlier went out on their day.
    """
    made: dict[str, list[int]] = {"overdue": [], "group": [], "due": [], "remind": [], "idle": []}
    number = 0

    def clients(count: int) -> list[str]:
        nonlocal number
        addresses = []
        for _ in range(count):
            address = f"client{number}@example.org"
            add_person(db, "client", f"Client {number}", address, "en", WEEK_AGO)
            addresses.append(address)
            number += 1
        return addresses

    with transaction(db):
        for coach in range(4):
            add_person(db, "coach", f"Coach {coach}", f"coach{coach}@example.org", "en", WEEK_AGO)
        for n in range(60):
            coach = f"coach{n % 4}@example.org"
            engagement = start_engagement(db, coach, clients(1), WEEK_AGO)
            _, round_id = record_session_done(db, engagement, WEEK_AGO, POLICY)
            if n % 2:
                decide_all(db, round_id, WEEK_AGO + timedelta(hours=2), role="coach")
            made["overdue"].append(engagement)
        for n in range(6):
            engagement = start_engagement(
                db, "coach0@example.org", clients(3), WEEK_AGO, min_members=2
            )
            _, round_id = record_session_done(db, engagement, WEEK_AGO, POLICY)
            decide_all(db, round_id, WEEK_AGO + timedelta(hours=2), role="coach")
            if n % 2:
                decide_all(db, round_id, WEEK_AGO + timedelta(hours=3), role="client", limit=2)
            made["group"].append(engagement)
        for _ in range(30):
            engagement = start_engagement(db, "coach1@example.org", clients(1), WEEK_AGO)
            plan_session(db, engagement, NIGHT - timedelta(days=1), 60, WEEK_AGO)
            made["due"].append(engagement)
        for _ in range(30):
            engagement = start_engagement(db, "coach2@example.org", clients(1), WEEK_AGO)
            record_session_done(db, engagement, NIGHT - timedelta(days=5, hours=6), POLICY)
            made["remind"].append(engagement)
        for _ in range(20):
            idle_since = NIGHT - timedelta(days=POLICY.idle_days + 1)
            made["idle"].append(start_engagement(db, "coach3@example.org", clients(1), idle_since))
        while batch := claim_due_mail(db, NIGHT - timedelta(hours=1)):
            for mail in batch:
                mark_sent(db, mail, datetime.fromisoformat(mail["created_at"]))
    return made


def decide_all(db, round_id: int, now: datetime, *, role: str, limit: int = 99) -> None:
    rows = db.conn.execute(
        "SELECT id FROM decisions WHERE round_id = ? AND role = ? ORDER BY id LIMIT ?",
        [round_id, role, limit],
    ).fetchall()
    for (decision_id,) in rows:
        record_decision(db, decision_id, now, choice="continue")


def test_ticks_sends_and_close_undecided_at_once_do_everything_once(
    settings, app, db, smtp, tmp_path
):
    made = everything_due(db)
    sent_before = {row[0] for row in db.conn.execute("SELECT message_id FROM outbox")}
    commands = [["tick"], ["tick"], ["send"], ["send"], ["close-undecided"], ["close-undecided"]]
    at_night = [[*command, "--now", NIGHT.isoformat()] for command in commands]

    results = run_at_once(at_night, cli_env(settings), tmp_path)

    for (code, _, err), command in zip(results, commands, strict=True):
        assert code == 0, (command, err)
        assert "locked" not in err and "Traceback" not in err, (command, err)
    # What close-undecided queued after both sends finished goes with the next send.
    later = tmp_path / "later"
    later.mkdir()
    ((code, _, err),) = run_at_once(
        [["send", "--now", (NIGHT + timedelta(minutes=1)).isoformat()]], cli_env(settings), later
    )
    assert code == 0, err

    assert_invariants(db, swept_at=NIGHT)
    closings = Counter(
        row[0] for row in db.conn.execute("SELECT round_id FROM events WHERE kind = 'round_closed'")
    )
    assert set(closings.values()) == {1}
    ended = Counter(
        row[0]
        for row in db.conn.execute(
            "SELECT engagement_id FROM events WHERE kind = 'engagement_ended'"
        )
    )
    assert ended == dict.fromkeys(made["overdue"] + made["idle"], 1) | {
        engagement: 1
        for engagement in made["group"][::2]  # the coach alone continued
    }
    outcome = dict(
        db.conn.execute(
            "SELECT engagement_id, outcome FROM rounds WHERE engagement_id IN"
            " (SELECT value FROM json_each(?))",
            [str(made["group"])],
        ).fetchall()
    )
    assert outcome == {e: "stop" for e in made["group"][::2]} | {
        e: "continue" for e in made["group"][1::2]
    }
    opened = db.conn.execute(
        "SELECT count(*) FROM rounds WHERE status = 'open' AND engagement_id IN"
        " (SELECT value FROM json_each(?))",
        [str(made["due"] + made["remind"])],
    ).fetchone()[0]
    assert opened == 60
    reminders = Counter(
        row[0]
        for row in db.conn.execute("SELECT engagement_id FROM outbox WHERE kind = 'reminder'")
    )
    assert reminders == dict.fromkeys(made["remind"], 2)

    rows = db.conn.execute("SELECT message_id, status FROM outbox").fetchall()
    assert {status for _, status in rows} == {"sent"}
    tonight = Counter(f"<{mid}@example.org>" for mid, _ in rows if mid not in sent_before)
    # outcome mails of 60 rounds x 2 and 6 groups x 4; 30 rounds opened x 2 decision
    # mails; 30 rounds x 2 reminders; 20 idle endings x 2
    assert sum(tonight.values()) == 120 + 6 * 4 + 60 + 60 + 40
    assert Counter(message["Message-ID"] for message in smtp.messages) == tonight


# --- the web: gunicorn, four workers, fifty people at once ------------------------------------

STAMP = re.compile(r'name="served" value="([^"]+)"')


@pytest.fixture
def gunicorn(settings, app, db, tmp_path):
    """The app as production runs it: gunicorn with four workers on a free port."""
    port = free_port()
    # Behind a proxy, as in production: each person has their own address (the token
    # routes are rate limited per address).
    environment = cli_env(settings, MIN_DECISION_SECONDS="0", PROXIES="1")
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "--workers",
            "4",
            "--bind",
            f"127.0.0.1:{port}",
            "app:create_app()",
        ],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
        try:
            status, _ = request(port, "GET", "/healthz")
            if status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "gunicorn did not answer /healthz"
        time.sleep(0.1)
    yield port
    server.terminate()
    server.wait(timeout=30)
    log.close()


def request(
    port: int, method: str, path: str, body: dict | None = None, person: int = 0
) -> tuple[int, str]:
    """One request as the proxy passes it on, from the address of `person`."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"X-Forwarded-For": f"192.0.2.{person + 1}"}
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, urlencode(body) if body else None, headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode("utf-8", "replace")
    finally:
        connection.close()


def rounds_to_decide(app, db, smtp) -> dict:
    """Individual rounds and one group round, opened a minute ago; each party's token."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    add_person(db, "coach", "Bob Coach", "bob@example.org", "en", now)
    made = {"both_continue": [], "client_stops": [], "group": []}
    for number in range(14):
        address = f"client{number}@example.org"
        add_person(db, "client", f"Client {number}", address, "en", now)
    for kind, clients in [
        *[("both_continue", [n]) for n in range(4)],
        *[("client_stops", [n]) for n in range(4, 6)],
        ("group", list(range(6, 12))),
    ]:
        addresses = [f"client{n}@example.org" for n in clients]
        least = 3 if kind == "group" else 1
        engagement = start_engagement(db, "bob@example.org", addresses, now, min_members=least)
        _, round_id = record_session_done(db, engagement, now, POLICY)
        made[kind].append(round_id)
    deliver(app, db, now + timedelta(minutes=2))
    tokens: dict[str, list[str]] = {}  # address -> tokens, one per round
    for message in smtp.messages:
        ((_, address),) = getaddresses([message["To"]])
        tokens.setdefault(address, []).append(token_of(links_in(message)[0]))
    return {"rounds": made, "tokens": tokens}


def test_fifty_people_deciding_at_once_through_gunicorn_close_each_round_once(
    settings, app, db, smtp, gunicorn, tmp_path
):
    setup = rounds_to_decide(app, db, smtp)
    tokens = setup["tokens"]
    rounds = setup["rounds"]
    coach_token = dict(
        zip(
            sorted(rounds["both_continue"] + rounds["client_stops"] + rounds["group"]),
            tokens["bob@example.org"],
            strict=True,
        )
    )
    # Who presses what, and how often: 4 x 2 x 3 + 2 x 2 x 3 + (1 + 6) x 2 = 50 posts.
    posts: list[tuple[str, str]] = []
    for number, round_id in enumerate(rounds["both_continue"]):
        posts += [
            (coach_token[round_id], "continue"),
            (tokens[f"client{number}@example.org"][0], "continue"),
        ] * 3
    for number, round_id in enumerate(rounds["client_stops"], start=4):
        posts += [
            (coach_token[round_id], "continue"),
            (tokens[f"client{number}@example.org"][0], "stop"),
        ] * 3
    # The coach's side of the rounds a client stops: their continue may come too late.
    coach_stopped = {coach_token[round_id] for round_id in rounds["client_stops"]}
    (group_round,) = rounds["group"]
    posts += [(coach_token[group_round], "continue")] * 2
    for number in range(6, 12):
        choice = "continue" if number < 10 else "stop"
        posts += [(tokens[f"client{number}@example.org"][0], choice)] * 2
    assert len(posts) == 50

    # Each person opens their page first (the stamp), then all press at the same moment.
    stamps = []
    for person, (token, _) in enumerate(posts):
        status, page = request(gunicorn, "GET", f"/d/{token}", person=person)
        assert status == 200
        stamps.append(STAMP.search(page).group(1))
    before = db.conn.execute("SELECT count(*) FROM events").fetchone()[0]
    barrier = threading.Barrier(len(posts))
    answers: list[tuple[int, str] | Exception] = [None] * len(posts)

    def press(index: int) -> None:
        token, choice = posts[index]
        barrier.wait()
        try:
            answers[index] = request(
                gunicorn,
                "POST",
                f"/d/{token}",
                {"served": stamps[index], "website": "", "choice": choice, "note": ""},
                person=index,
            )
        except Exception as error:  # noqa: BLE001 (reported below, with the others)
            answers[index] = error

    threads = [threading.Thread(target=press, args=(n,)) for n in range(len(posts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not [answer for answer in answers if isinstance(answer, Exception)]
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {303, 409, 200}, statuses
    assert not [body for _, body in answers if "locked" in body.lower()]
    # Every press that could count was counted: each party of the rounds that go on, and the
    # client who stops. A coach's continue may come after that stop closed the round: a 409.
    answered: dict[str, set[int]] = {}
    for (token, _), (status, _) in zip(posts, answers, strict=True):
        answered.setdefault(token, set()).add(status)
    stoppers = [
        tokens[f"client{number}@example.org"][0]
        for number, _ in enumerate(rounds["client_stops"], start=4)
    ]
    going_on = [token for token, _ in posts if token not in stoppers and token not in coach_stopped]
    assert all(303 in answered[token] for token in going_on + stoppers), answered
    assert statuses[303] >= 8 + 2 + 7, statuses
    assert db.conn.execute("SELECT count(*) FROM events").fetchone()[0] > before

    def round_(round_id: int) -> dict:
        return dict(db.conn.execute("SELECT * FROM rounds WHERE id = ?", [round_id]).fetchone())

    def choices(round_id: int) -> list[str]:
        return sorted(
            row[0]
            for row in db.conn.execute(
                "SELECT choice FROM decisions WHERE round_id = ?", [round_id]
            )
        )

    for round_id in rounds["both_continue"]:
        # Both pressed continue in the same instant: both count, the round goes on.
        assert (round_(round_id)["status"], round_(round_id)["outcome"]) == ("closed", "continue")
        assert choices(round_id) == ["continue", "continue"]
    for round_id in rounds["client_stops"]:
        assert (round_(round_id)["status"], round_(round_id)["outcome"]) == ("closed", "stop")
        ((reason,),) = db.conn.execute(
            "SELECT end_reason FROM engagements WHERE id = ?", [round_(round_id)["engagement_id"]]
        ).fetchall()
        assert reason == "client_stopped"
    assert (round_(group_round)["status"], round_(group_round)["outcome"]) == ("closed", "continue")
    assert choices(group_round) == ["continue"] * 5 + ["stop"] * 2
    left = db.conn.execute("SELECT count(*) FROM members WHERE status = 'left'").fetchone()[0]
    assert left == 2

    every_round = rounds["both_continue"] + rounds["client_stops"] + rounds["group"]
    closings = Counter(
        row[0] for row in db.conn.execute("SELECT round_id FROM events WHERE kind = 'round_closed'")
    )
    assert closings == dict.fromkeys(every_round, 1)
    outcome_mails = Counter(
        (row[0], row[1])
        for row in db.conn.execute(
            "SELECT engagement_id, to_email FROM outbox WHERE kind = 'outcome'"
        )
    )
    assert set(outcome_mails.values()) == {1}
    assert len(outcome_mails) == 4 * 2 + 2 * 2 + 7
    assert invariant_violations(db) == []

    # Two sends at once deliver the outcome mails, each once.
    for code, _, err in run_at_once([["send"], ["send"]], cli_env(settings), tmp_path):
        assert code == 0, err
    rows = db.conn.execute("SELECT message_id, status FROM outbox").fetchall()
    assert {status for _, status in rows} == {"sent"}
    assert Counter(message["Message-ID"] for message in smtp.messages) == {
        f"<{message_id}@example.org>": 1 for message_id, _ in rows
    }
