"""Clients' data stays theirs: export, forget, retention, backups and the privacy page.

Real parts only: the history is made through the real web pages (with an ip
address and a user agent), mails go over the real SMTP server of the
fixtures, commands run through the real Click group (and once in a real
terminal), the database is read as raw bytes from its files, and backups are
taken while another process keeps writing.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import (
    BEFORE_VERSION_7,
    POLICY,
    ROOT,
    T0,
    decide,
    deliver,
    dump,
    links_in,
    ok,
    refused,
    text_of,
    token_of,
)

from twoyes import db as database
from twoyes.db import SCHEMA_VERSION
from twoyes.engagements import start_engagement
from twoyes.retention import purge_delivered_mail
from twoyes.rounds import send_reminders
from twoyes.sessions import record_session_done
from twoyes.web import create_app

ANNA, BOB, CARL = "anna@example.org", "bob@example.org", "carl@example.org"
ANNA_IP, ANNA_AGENT = "203.0.113.7", "AnnaBrowser/1.0 (privacy test)"
CARL_IP, CARL_AGENT = "198.51.100.9", "CarlBrowser/2.0 (privacy test)"
# Everything that says who Anna is; none of it may survive her being forgotten.
ANNA_TRACES = [
    "Anna de Vries",
    ANNA,
    "ANNA-NOTE-ONE",
    "my manager Marit",
    "ANNA-NOTE-TWO",
    "ANNA-GROUP-NOTE",
    "ANNA-MESSAGE please call me in May",
    "BOB-NOTE-ABOUT-ANNA",
    "Career of Anna",
    ANNA_IP,
    ANNA_AGENT,
]
# What is Carl's or Bob's alone; an export of Anna's data holds none of it.
OTHERS = ["Carl Client", CARL, "CARL-NOTE-SECRET", CARL_IP, CARL_AGENT, "BOB-GROUP-NOTE"]


# -- helpers ------------------------------------------------------------------------------


def now_real() -> datetime:
    return datetime.now(UTC)


def deliver_now(app, db):
    """Deliver what the web queued: it queues at the real clock, not at T0."""
    return deliver(app, db, now_real() + timedelta(minutes=1))


# Where each client's answers come from: their address and their browser.
BROWSERS = {ANNA: (ANNA_IP, ANNA_AGENT), CARL: (CARL_IP, CARL_AGENT)}


def decide_on_the_web(client, smtp, who: str, **fields) -> None:
    """`who` opens their latest mail's link in their browser and sends the form."""
    token = latest_token(smtp, who)
    ip, agent = BROWSERS[who]
    page = client.get(f"/d/{token}")
    assert page.status_code == 200
    served = re.search(r'name="served" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        f"/d/{token}",
        data={"served": served, **{key: str(value) for key, value in fields.items()}},
        headers={"User-Agent": agent},
        environ_base={"REMOTE_ADDR": ip},
    )
    assert answer.status_code == 303, answer.text


def latest_token(smtp, address: str, kind: str = "d") -> str:
    """The token in the newest mail to `address` with a /d/ (or /b/) link."""
    for message in reversed(smtp.to(address)):
        links = [link for link in links_in(message) if f"/{kind}/" in link]
        if links:
            return token_of(links[0])
    raise AssertionError(f"no /{kind}/ link was mailed to {address}")


def tokens_mailed_to(smtp, address: str) -> set[str]:
    return {token_of(link) for message in smtp.to(address) for link in links_in(message)}


def raw_bytes(path: str | Path) -> bytes:
    """Every byte SQLite keeps for the database: the file, its write-ahead log, its index."""
    path = Path(path)
    return b"".join(
        file.read_bytes() for file in sorted(path.parent.glob(path.name + "*")) if file.is_file()
    )


def counts(db) -> dict[str, int]:
    tables = ("clients", "engagements", "members", "sessions", "rounds", "decisions", "outbox")
    return {
        table: db.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables
    }


def report(run) -> list:
    """What `engagement list` and `engagement show` count: the practice's reports."""
    engagements = json.loads(ok(run, "engagement", "list", "--json").stdout)
    shown = []
    for summary in engagements:
        data = json.loads(ok(run, "engagement", "show", summary["id"], "--json").stdout)
        shown.append(
            (
                summary["id"],
                summary["status"],
                summary["end_reason"],
                summary["sessions_held"],
                data["kind"],
                len(data["members"]),
                [
                    (
                        session["round"]["status"],
                        session["round"]["outcome"],
                        sorted(
                            (d["choice"] or "", d["reason"] or "", d["usefulness"] or -1)
                            for d in session["round"]["decisions"]
                        ),
                    )
                    for session in data["sessions"]
                    if session["round"]
                ],
            )
        )
    return shown


# -- a history with something to hide -----------------------------------------------------


@pytest.fixture
def history(app, db, client, smtp, people):
    """Anna with Bob alone (two rounds: continue, then stop; then welcome back) and in a
    group with Carl that the coach ended. Every mail delivered; answers given on the web."""
    solo = start_engagement(db, BOB, [ANNA], T0, title="Career of Anna")
    _, first = record_session_done(db, solo, T0, POLICY)
    deliver(app, db)
    decide_on_the_web(
        client,
        smtp,
        ANNA,
        choice="continue",
        usefulness=8,
        note="ANNA-NOTE-ONE about my manager Marit",
    )
    decide(db, first, "coach", now_real(), choice="continue", note="BOB-NOTE-ABOUT-ANNA")
    deliver_now(app, db)

    _, second = record_session_done(db, solo, now_real(), POLICY)
    deliver_now(app, db)
    decide_on_the_web(client, smtp, ANNA, choice="stop", reason="on_my_own", note="ANNA-NOTE-TWO")
    deliver_now(app, db)
    back = latest_token(smtp, ANNA, "b")
    page = client.get(f"/b/{back}")
    served = re.search(r'name="served" value="([^"]+)"', page.text).group(1)
    asked = client.post(
        f"/b/{back}",
        data={"served": served, "message": "ANNA-MESSAGE please call me in May"},
        headers={"User-Agent": ANNA_AGENT},
        environ_base={"REMOTE_ADDR": ANNA_IP},
    )
    assert asked.status_code == 303
    deliver_now(app, db)

    group = start_engagement(db, BOB, [ANNA, CARL], T0, title="Team days")
    _, third = record_session_done(db, group, now_real(), POLICY)
    deliver_now(app, db)
    decide_on_the_web(client, smtp, ANNA, choice="continue", note="ANNA-GROUP-NOTE")
    decide_on_the_web(client, smtp, CARL, choice="continue", note="CARL-NOTE-SECRET")
    decide(
        db,
        third,
        "coach",
        now_real(),
        choice="stop",
        reason="values",
        note="BOB-GROUP-NOTE",
    )
    deliver_now(app, db)
    assert db.conn.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone()[0] == 0
    return {"solo": solo, "group": group, "rounds": (first, second, third)}


# -- export -------------------------------------------------------------------------------


def test_export_holds_everything_about_the_client_and_nothing_of_anyone_else(
    run, db, history, smtp, tmp_path
):
    result = ok(run, "client", "export", ANNA)
    text = result.stdout
    data = json.loads(text)

    assert data["client"] | {"id": None} == {
        "id": None,
        "name": "Anna de Vries",
        "call_name": "Anna",
        "email": ANNA,
        "lang": "en",
        "created_at": data["client"]["created_at"],
    }
    solo, group = data["engagements"]
    assert (solo["id"], solo["title"], solo["kind"]) == (
        history["solo"],
        "Career of Anna",
        "individual",
    )
    assert (solo["status"], solo["end_reason"]) == ("ended", "client_stopped")
    assert solo["coach"] == {"name": "Bob Coach", "email": BOB}
    decisions = [session["round"]["your_decision"] for session in solo["sessions"]]
    assert [(d["choice"], d["reason"], d["usefulness"], d["note"]) for d in decisions] == [
        ("continue", None, 8, "ANNA-NOTE-ONE about my manager Marit"),
        ("stop", "on_my_own", None, "ANNA-NOTE-TWO"),
    ]
    assert [s["round"]["outcome"] for s in solo["sessions"]] == ["continue", "stop"]
    # The coach's notes in their engagement alone are about her; a group's are not.
    assert [s["round"]["coach_note"] for s in solo["sessions"]] == ["BOB-NOTE-ABOUT-ANNA", None]
    assert "coach_note" not in group["sessions"][0]["round"]
    assert (group["id"], group["kind"], group["end_reason"]) == (
        history["group"],
        "group",
        "coach_stopped",
    )
    assert group["sessions"][0]["round"]["your_decision"]["note"] == "ANNA-GROUP-NOTE"

    # Every mail she was sent, what it said, and no link.
    assert len(data["mails"]) == len(smtp.to(ANNA)) == 6
    assert {mail["kind"] for mail in data["mails"]} == {"decision", "outcome"}
    assert all(mail["to"]["email"] == ANNA and mail["status"] == "sent" for mail in data["mails"])
    for token in tokens_mailed_to(smtp, ANNA):
        assert token not in text
    assert "token" not in text
    (request,) = data["welcome_back_requests"]
    assert request["message"] == "ANNA-MESSAGE please call me in May"

    # The log of her answers, with where they came from.
    kinds = Counter(event["kind"] for event in data["events"])
    assert kinds["decision_recorded"] == 3
    assert kinds["welcome_back_asked"] == 1
    assert kinds["client_added"] == 1
    web = [event for event in data["events"] if event["detail"].get("via") == "web"]
    assert {(e["detail"]["ip"], e["detail"]["user_agent"]) for e in web} == {(ANNA_IP, ANNA_AGENT)}

    for trace in ANNA_TRACES:
        assert trace in text, trace
    for other in OTHERS:
        assert other not in text, other

    # --output: the same JSON, in a file only its owner can read.
    path = tmp_path / "anna.json"
    written = ok(run, "client", "export", ANNA.upper(), "--output", path)
    assert str(path) in written.stdout
    assert json.loads(path.read_text()) == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("nobody@example.org", "There is no client with the address nobody@example.org"),
        ("bob@example.org", "There is no client with the address bob@example.org"),
        ("not-an-address", "is not a valid e-mail address"),
    ],
)
@pytest.mark.parametrize("command", [("export",), ("forget", "--yes")])
def test_an_unknown_or_malformed_address_gets_one_clear_line(
    run, db, people, command, address, words
):
    line = refused(run, db, "client", command[0], address, *command[1:])
    assert words in line


# -- forget -------------------------------------------------------------------------------


def test_forget_leaves_no_trace_keeps_the_counts_and_stops_every_link(
    app, run, db, client, history, smtp
):
    anna_links = tokens_mailed_to(smtp, ANNA)
    carl_links = tokens_mailed_to(smtp, CARL)
    bob_links = tokens_mailed_to(smtp, BOB)
    rows, reports = counts(db), report(run)
    anna_id = db.conn.execute("SELECT id FROM clients WHERE email = ?", [ANNA]).fetchone()[0]
    assert all(trace.encode() in raw_bytes(app.config["DATABASE"]) for trace in ANNA_TRACES)

    result = ok(run, "client", "forget", ANNA, "--yes", "--json")

    outcome = json.loads(result.stdout)
    assert outcome["client_id"] == anna_id
    assert outcome["engagements_left"] == []  # both had ended already
    assert outcome["notes_erased"] == 4  # her three, and Bob's one in their engagement alone
    assert outcome["mails_erased"] == 7  # six to her, one from her to Bob

    # No trace in any byte of the database: not in free pages, not in the write-ahead log.
    raw = raw_bytes(app.config["DATABASE"])
    for trace in ANNA_TRACES:
        assert trace.encode() not in raw, trace
    assert b"anna" not in raw.lower()
    # ... while what is Carl's and Bob's is still there to be read.
    still_there = ("CARL-NOTE-SECRET", CARL, CARL_IP, CARL_AGENT, "Bob Coach", "Team days")
    for kept in still_there:
        assert kept.encode() in raw, kept

    # The reports count the same, with the same rows.
    assert counts(db) == rows
    assert report(run) == reports
    forgotten = db.conn.execute("SELECT * FROM clients WHERE id = ?", [anna_id]).fetchone()
    assert (forgotten["name"], forgotten["email"]) == (
        "Forgotten client",
        f"forgotten-{anna_id}@invalid",
    )
    assert forgotten["forgotten_at"] is not None

    # Every link of hers is a 404 at once; Carl's and Bob's still open.
    for token in anna_links:
        assert client.get(f"/d/{token}").status_code == 404
        assert client.get(f"/b/{token}").status_code == 404
    for token in carl_links | bob_links:
        pages = [client.get(f"/d/{token}").status_code, client.get(f"/b/{token}").status_code]
        assert 200 in pages
    coach_page = client.get(f"/d/{latest_token(smtp, BOB)}").text
    assert "Anna" not in coach_page

    # She cannot be found any more, not even by her placeholder.
    refused(run, db, "client", "export", ANNA)
    refused(run, db, "client", "forget", f"forgotten-{anna_id}@invalid", "--yes")
    refused(
        run, db, "engagement", "start", "--coach", BOB, "--client", f"forgotten-{anna_id}@invalid"
    )
    line = refused(run, db, "engagement", "reopen", history["solo"])
    assert "forgotten" in line
    # She is welcome back as a new client.
    ok(run, "client", "add", "Anna de Vries", ANNA)
    assert json.loads(ok(run, "client", "export", ANNA).stdout)["engagements"] == []


def test_forget_a_client_in_the_middle_of_things(app, run, db, client, smtp, people):
    solo = start_engagement(db, BOB, [ANNA], T0, title="Solo")
    group = start_engagement(db, BOB, [ANNA, CARL], T0, title="Group")
    _, solo_round = record_session_done(db, solo, T0, POLICY)
    _, group_round = record_session_done(db, group, T0, POLICY)
    deliver(app, db)
    anna_links = tokens_mailed_to(smtp, ANNA)
    carl_token = latest_token(smtp, CARL)
    decide_on_the_web(client, smtp, ANNA, choice="continue", note="ANNA-NOTE-ONE")
    # Reminders wait in the outbox, hers with fresh links, Bob's naming her.
    assert send_reminders(db, T0 + timedelta(days=5, minutes=1)) == 4
    waiting_for_her = db.conn.execute(
        "SELECT count(*) FROM outbox WHERE to_email = ? AND status = 'queued'", [ANNA]
    ).fetchone()[0]
    assert waiting_for_her == 1  # she decided in the solo round already

    ok(run, "client", "forget", ANNA, "--yes")

    ended = db.conn.execute("SELECT * FROM engagements WHERE id = ?", [solo]).fetchone()
    assert (ended["status"], ended["end_reason"]) == ("ended", "client_stopped")
    solo_state = db.conn.execute("SELECT * FROM rounds WHERE id = ?", [solo_round]).fetchone()
    assert (solo_state["status"], solo_state["outcome"]) == ("closed", "stop")
    # The group goes on without her; Carl's link still works.
    going_on = db.conn.execute("SELECT status FROM engagements WHERE id = ?", [group]).fetchone()
    assert going_on["status"] == "active"
    parties = db.conn.execute(
        "SELECT count(*) FROM decisions WHERE round_id = ? AND role = 'client'", [group_round]
    ).fetchone()[0]
    assert parties == 1
    assert client.get(f"/d/{carl_token}").status_code == 200
    for token in anna_links:
        assert client.get(f"/d/{token}").status_code == 404

    # Nothing goes out to her or about her: what was waiting is delivered without her name.
    smtp.clear()
    deliver(app, db, T0 + timedelta(days=5, minutes=2))
    # (Bob's reminder for the closed round of their own engagement is not sent at all.)
    assert sorted(message["To"] for message in smtp.messages) == [
        "Bob Coach <bob@example.org>",
        "Carl Client <carl@example.org>",
    ]
    for message in smtp.messages:
        assert "Anna" not in message.as_string()
        assert "forgotten-" not in message.as_string()
    smtp.clear()
    ok(run, "tick", "--now", (T0 + timedelta(days=8)).isoformat())
    assert smtp.messages and not [m for m in smtp.messages if "Anna" in m.as_string()]
    assert all("invalid" not in message["To"] for message in smtp.messages)
    raw = raw_bytes(app.config["DATABASE"])
    for trace in ("Anna de Vries", ANNA, "ANNA-NOTE-ONE", ANNA_IP, ANNA_AGENT):
        assert trace.encode() not in raw, trace


def test_forget_takes_her_low_rating_out_of_the_coachs_waiting_mail(
    app, run, db, client, smtp, people
):
    """The coach's outcome mail names each low rating; one still waiting when a client is
    forgotten must not name her."""
    group = start_engagement(db, BOB, [ANNA, CARL], T0, title="Group")
    _, round_id = record_session_done(db, group, T0, POLICY)
    deliver(app, db)
    for who in (ANNA, CARL):
        decide_on_the_web(client, smtp, who, choice="continue", usefulness=2)
    ok(run, "decide", str(round_id), "--choice", "continue")
    waiting = db.conn.execute(
        "SELECT context FROM outbox WHERE to_email = ? AND kind = 'outcome'", [BOB]
    ).fetchone()[0]
    assert "Anna de Vries" in waiting  # her rating of 2 is named, as it should be

    ok(run, "client", "forget", ANNA, "--yes")
    smtp.clear()
    # The waiting mail was queued on the real clock, which may be well past T0 by now.
    deliver(app, db, max(T0, datetime.now(UTC)) + timedelta(minutes=5))
    (coach_mail,) = smtp.to(BOB)
    text = coach_mail.as_string()
    assert "Anna" not in text
    assert "Carl Client rated this session 2 out of 10" in " ".join(text_of(coach_mail).split())
    assert b"Anna de Vries" not in raw_bytes(app.config["DATABASE"])


def test_forget_without_yes_and_without_a_terminal_is_refused(run, db, history):
    line = refused(run, db, "client", "forget", ANNA)
    assert "--yes" in line
    assert "cannot be undone" in line


def answer_in_a_terminal(answer: str) -> tuple[int, str]:
    """Run `python cli.py client forget` in a real pseudo-terminal and type `answer`."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "cli.py", "client", "forget", ANNA],
        cwd=ROOT,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    output, answered, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 1024)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"[y/N]" in output:
            os.write(controller, answer.encode() + b"\n")
            answered = True
    os.close(controller)
    return process.wait(timeout=60), output.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize(("answer", "forgotten"), [("n", False), ("y", True)])
def test_forget_asks_first_in_a_terminal(env, db, history, answer, forgotten):
    before = dump(db)
    code, output = answer_in_a_terminal(answer)
    assert "Forget Anna de Vries <anna@example.org>" in output
    assert "Traceback" not in output
    if forgotten:
        assert code == 0, output
        assert "Forgot client" in output
        assert (
            db.conn.execute("SELECT count(*) FROM clients WHERE email = ?", [ANNA]).fetchone()[0]
            == 0
        )
    else:
        assert code == 1, output
        assert "Aborted" in output
        assert dump(db) == before


# -- the event log ------------------------------------------------------------------------


def test_the_event_log_lets_go_of_an_ip_address_and_a_user_agent_only(db, history):
    event = db.conn.execute(
        "SELECT id, detail FROM events WHERE json_extract(detail, '$.ip') IS NOT NULL"
    ).fetchone()
    for change in (
        "kind = 'tampered'",
        "at = '2020-01-01T00:00:00+00:00'",
        "engagement_id = 999",
        "detail = '{}'",
        "detail = json_set(detail, '$.choice', 'stop')",
        "detail = json_remove(detail, '$.ip', '$.choice')",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.conn.execute(f"UPDATE events SET {change} WHERE id = ?", [event["id"]])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.conn.execute("DELETE FROM events WHERE id = ?", [event["id"]])
    db.conn.execute(
        "UPDATE events SET detail = json_remove(detail, '$.ip', '$.user_agent') WHERE id = ?",
        [event["id"]],
    )
    detail = json.loads(
        db.conn.execute("SELECT detail FROM events WHERE id = ?", [event["id"]]).fetchone()[0]
    )
    assert detail == {
        key: value
        for key, value in json.loads(event["detail"]).items()
        if key not in ("ip", "user_agent")
    }


# -- retention ----------------------------------------------------------------------------


def tick(run, moment: datetime) -> dict:
    return json.loads(ok(run, "tick", "--now", moment.isoformat(), "--json").stdout)


def test_retention_anonymises_what_ended_long_ago_on_a_clock_jump(app, run, db, people):
    anna = start_engagement(db, BOB, [ANNA], T0, title="Career of Anna")
    carl_old = start_engagement(db, BOB, [CARL], T0, title="Carl, first time")
    carl_new = start_engagement(db, BOB, [CARL], T0, title="Carl, again")
    for engagement, address in ((anna, ANNA), (carl_old, CARL)):
        _, round_id = record_session_done(db, engagement, T0, POLICY)
        decide(
            db,
            round_id,
            address,
            T0,
            choice="stop",
            reason="on_my_own",
            note=f"NOTE-OF-{address}",
            via={"via": "web", "ip": ANNA_IP, "user_agent": ANNA_AGENT},
        )
    deliver(app, db, T0 + timedelta(minutes=1))
    carl_id = db.conn.execute("SELECT id FROM clients WHERE email = ?", [CARL]).fetchone()[0]

    # Day 729: nothing has been over for 730 days yet. Carl's second engagement ends idle.
    summary = tick(run, T0 + timedelta(days=729))
    assert summary["engagements_anonymised"] == 0
    assert summary["clients_anonymised"] == 0
    assert summary["idle_ended"] == 1
    assert summary["mail_bodies_purged"] == 8  # the mails of day 0, 30 days after delivery
    assert f"NOTE-OF-{ANNA}".encode() in raw_bytes(app.config["DATABASE"])

    # Day 731: Anna's and Carl's first engagement are two years over; Anna has nothing else.
    summary = tick(run, T0 + timedelta(days=731))
    assert (summary["engagements_anonymised"], summary["clients_anonymised"]) == (2, 1)
    raw = raw_bytes(app.config["DATABASE"])
    for trace in ("Anna de Vries", ANNA, f"NOTE-OF-{ANNA}", f"NOTE-OF-{CARL}", "Career of Anna"):
        assert trace.encode() not in raw, trace
    assert ANNA_IP.encode() not in raw and ANNA_AGENT.encode() not in raw
    # Carl is still a client (his second engagement ended two days ago), and so is its title.
    assert db.conn.execute("SELECT name FROM clients WHERE id = ?", [carl_id]).fetchone()[0] == (
        "Carl Client"
    )
    titles = dict(db.conn.execute("SELECT id, title FROM engagements").fetchall())
    assert titles == {anna: None, carl_old: None, carl_new: "Carl, again"}
    # Carl's welcome back; a coach's overview links (no client's data) go when the next is made.
    left = "SELECT count(*) FROM tokens WHERE purpose != 'coach_view'"
    assert db.conn.execute(left).fetchone()[0] == 1
    # The counts stay: engagements, sessions, the choices made.
    assert (
        db.conn.execute("SELECT count(*) FROM decisions WHERE choice = 'stop'").fetchone()[0] == 2
    )

    # Again at the same moment: nothing more to do.
    summary = tick(run, T0 + timedelta(days=731))
    assert (summary["engagements_anonymised"], summary["clients_anonymised"]) == (0, 0)

    # Two years after Carl's last engagement ended, he is forgotten too.
    summary = tick(run, T0 + timedelta(days=729 + 731))
    assert (summary["engagements_anonymised"], summary["clients_anonymised"]) == (1, 1)
    assert b"Carl Client" not in raw_bytes(app.config["DATABASE"])
    assert (
        db.conn.execute("SELECT count(*) FROM clients WHERE forgotten_at IS NULL").fetchone()[0]
        == 0
    )


def test_mail_bodies_are_purged_30_days_after_delivery(app, db, engagement, smtp):
    record_session_done(db, engagement, T0, POLICY)
    deliver(app, db, T0 + timedelta(minutes=1))
    bodies = lambda: [  # noqa: E731
        json.loads(row[0]) for row in db.conn.execute("SELECT context FROM outbox ORDER BY id")
    ]
    assert all(body["name"] for body in bodies())
    assert purge_delivered_mail(db, T0 + timedelta(days=30)) == 0
    assert purge_delivered_mail(db, T0 + timedelta(days=30, minutes=1)) == 2
    assert bodies() == [{}, {}]
    kept = db.conn.execute("SELECT kind, to_email, status FROM outbox ORDER BY id").fetchall()
    assert [tuple(row) for row in kept] == [("decision", BOB, "sent"), ("decision", ANNA, "sent")]
    assert purge_delivered_mail(db, T0 + timedelta(days=90)) == 0


@pytest.mark.parametrize(("value", "words"), [("abc", "a number"), ("10", "at least 30")])
def test_a_retention_that_cannot_work_is_one_clear_line(run, monkeypatch, value, words):
    monkeypatch.setenv("TWOYES_RETENTION_DAYS", value)
    result = run("tick")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "TWOYES_RETENTION_DAYS" in line and words in line


# -- backups ------------------------------------------------------------------------------

WRITER = """
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from twoyes import db as database
from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.rules import Policy
from twoyes.sessions import record_session_done

connection = database.connect(sys.argv[2])
stop, done = Path(sys.argv[3]), Path(sys.argv[4])
policy = Policy(decision_days=7, reminder_days=2, idle_days=60)
number = 0
while not stop.exists():
    now = datetime.now(UTC)
    address = f"writer-{number}@example.org"
    add_person(connection, "client", f"Writer {number}", address, "en", now)
    engagement = start_engagement(connection, "bob@example.org", [address], now)
    record_session_done(connection, engagement, now, policy)
    number += 1
    Path(sys.argv[4] + ".tmp").write_text(str(number))
    Path(sys.argv[4] + ".tmp").replace(done)
    time.sleep(0.005)
"""


def engagements_in(path) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT count(*) FROM engagements").fetchone()[0]
    finally:
        connection.close()


def check_whole(path) -> dict[str, int]:
    """A backup is whole: intact pages, no dangling keys, every transaction all or nothing."""
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        # Each engagement came with its member, each round with two parties, two links and
        # two mails, in one transaction: a copy holds all of it or none.
        assert not connection.execute(
            "SELECT id FROM engagements WHERE (SELECT count(*) FROM members"
            " WHERE engagement_id = engagements.id) != 1"
        ).fetchall()
        assert not connection.execute(
            "SELECT id FROM rounds WHERE"
            " (SELECT count(*) FROM decisions WHERE round_id = rounds.id) != 2"
            " OR (SELECT count(*) FROM tokens JOIN decisions ON decisions.id = tokens.decision_id"
            "     WHERE decisions.round_id = rounds.id) != 2"
            " OR (SELECT count(*) FROM outbox WHERE engagement_id = rounds.engagement_id) != 2"
        ).fetchall()
        return {
            "engagements": connection.execute("SELECT count(*) FROM engagements").fetchone()[0],
            "rounds": connection.execute("SELECT count(*) FROM rounds").fetchone()[0],
        }
    finally:
        connection.close()


@pytest.mark.slow
def test_a_backup_taken_during_writes_restores_to_a_working_twoyes(
    app, run, db, people, tmp_path, monkeypatch
):
    stop, done = tmp_path / "stop", tmp_path / "done"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ROOT), app.config["DATABASE"], str(stop), str(done)],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (done.exists() and done.read_text() and int(done.read_text()) >= 5):
            assert writer.poll() is None, "the writer stopped early"
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.05)
        copies = []
        for number in range(3):
            written_before = int(done.read_text())
            path = tmp_path / "backups" / f"twoyes-{number}.db"
            result = json.loads(ok(run, "backup", path, "--json").stdout)
            assert result["integrity_check"] == "ok"
            assert result["path"] == str(path)
            copies.append(path)
            time.sleep(0.2)
        stop.write_text("stop")
        assert writer.wait(timeout=60) == 0
    finally:
        stop.write_text("stop")
        if writer.poll() is None:
            writer.kill()
    assert int(done.read_text()) > written_before, "the writes did not go on during the backups"
    live = engagements_in(app.config["DATABASE"])

    sizes = []
    for path in copies:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not list(path.parent.glob(path.name + "-*")), "a backup is one file"
        sizes.append(check_whole(path)["engagements"])
    assert sizes == sorted(sizes) and 5 <= sizes[0] and sizes[-1] <= live

    # Restore as the README says: the copy in place, no -wal or -shm beside it, then init.
    restored = tmp_path / "restored" / "twoyes.db"
    restored.parent.mkdir()
    shutil.copyfile(copies[1], restored)
    monkeypatch.setenv("TWOYES_DATABASE", str(restored))
    assert "up to date" in ok(run, "init").stdout
    listed = json.loads(ok(run, "engagement", "list", "--json").stdout)
    assert len(listed) == sizes[1]
    ok(run, "client", "add", "After Restore", "after@example.org")
    new = json.loads(
        ok(
            run, "engagement", "start", "--coach", BOB, "--client", "after@example.org", "--json"
        ).stdout
    )["id"]
    ok(run, "session", "done", new)
    summary = tick(run, now_real() + timedelta(minutes=5))
    assert summary["mails_sent"] >= 2
    connection = database.connect(restored)
    try:
        assert connection.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.conn.close()


def test_backup_refuses_a_path_that_exists_or_is_a_folder(run, db, people, tmp_path, app):
    existing = tmp_path / "existing.db"
    existing.write_text("keep me")
    line = refused(run, db, "backup", existing)
    assert "exists already" in line
    assert existing.read_text() == "keep me"
    line = refused(run, db, "backup", tmp_path)
    assert "is a folder" in line
    line = refused(run, db, "backup", app.config["DATABASE"])
    assert "exists already" in line
    assert not list(tmp_path.glob(".*partial"))


def test_backup_prints_what_it_wrote(run, db, people, tmp_path):
    path = tmp_path / "nightly" / "twoyes.db"
    result = ok(run, "backup", path)
    assert result.stdout.startswith(f"Backed up the database to {path} (")
    assert "integrity check ok" in result.stdout
    assert check_whole(path)["engagements"] == 0
    assert not list(path.parent.glob(".*partial"))


# -- schema upgrade -----------------------------------------------------------------------


def test_init_upgrades_a_version_1_database_and_forgetting_then_works(run, db, history, app):
    path = app.config["DATABASE"]
    fresh_shape = shape(path)
    # Back to the shape of version 1: no forgotten_at, an event log that allowed no update.
    db.conn.execute("DROP TRIGGER events_update_only_erases")
    db.conn.execute(
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
        " BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END"
    )
    db.conn.execute("ALTER TABLE clients DROP COLUMN forgotten_at")
    db.conn.execute("ALTER TABLE coaches DROP COLUMN forgotten_at")  # coaches since version 6
    db.conn.execute("DROP VIEW round_parties")  # it reads the column dropped next
    for table in ("coaches", "clients"):  # version 4 added the name people are called by
        db.conn.execute(f"ALTER TABLE {table} DROP COLUMN call_name")
    # Nor overview links (the coach's mails carry them since version 5).
    db.conn.execute("DELETE FROM tokens WHERE purpose = 'coach_view'")
    for statement in BEFORE_VERSION_7:
        db.conn.execute(statement)
    db.conn.execute("PRAGMA user_version = 1")
    rows = counts(db)

    result = ok(run, "init")
    assert f"from version 1 to {SCHEMA_VERSION}" in result.stdout
    assert shape(path) == fresh_shape
    assert counts(db) == rows
    assert "up to date" in ok(run, "init").stdout
    ok(run, "client", "forget", ANNA, "--yes")
    assert b"Anna de Vries" not in raw_bytes(path)


def shape(path) -> dict:
    connection = sqlite3.connect(path)
    try:
        return {
            "tables": {
                name: [column[1] for column in connection.execute(f"PRAGMA table_info({name})")]
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            },
            "triggers": sorted(
                row
                for row in connection.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type IN ('trigger', 'index')"
                )
            ),
        }
    finally:
        connection.close()


# -- coaches ------------------------------------------------------------------------------

BOB_TRACES = ["Bob Coach", BOB, "BOB-NOTE-ABOUT-ANNA", "BOB-GROUP-NOTE"]


def test_a_coach_export_holds_their_own_and_nothing_of_their_clients(run, db, history):
    data = json.loads(ok(run, "coach", "export", BOB).stdout)
    text = json.dumps(data, ensure_ascii=False)
    assert data["coach"]["email"] == BOB
    for theirs in BOB_TRACES + ["Team days"]:
        assert theirs in text, theirs
    assert {mail["kind"] for mail in data["mails"]} == {"decision", "outcome", "welcome_back"}
    for clients in OTHERS[:4] + ["Anna de Vries", ANNA, "ANNA-NOTE-ONE", "Career of Anna"]:
        assert clients not in text, clients
    assert "token" not in text and "nonce" not in text


def test_a_coach_with_an_active_engagement_is_not_forgotten(run, db, history):
    start_engagement(db, BOB, [CARL], T0, title="Still going")
    line = refused(run, db, "coach", "forget", BOB, "--yes")
    assert "Bob Coach still coaches active engagement(s)" in line


def test_forget_a_coach_leaves_no_trace_keeps_the_counts_and_stops_every_link(
    app, run, db, client, history, smtp
):
    bob_links = tokens_mailed_to(smtp, BOB)
    carl_links = tokens_mailed_to(smtp, CARL)
    rows, reports = counts(db), report(run)
    bob_id = db.conn.execute("SELECT id FROM coaches WHERE email = ?", [BOB]).fetchone()[0]
    assert all(trace.encode() in raw_bytes(app.config["DATABASE"]) for trace in BOB_TRACES)

    outcome = json.loads(ok(run, "coach", "forget", BOB, "--yes", "--json").stdout)

    assert outcome["coach_id"] == bob_id
    assert outcome["notes_erased"] == 2
    raw = raw_bytes(app.config["DATABASE"])
    for trace in BOB_TRACES:
        assert trace.encode() not in raw, trace
    for kept in ("CARL-NOTE-SECRET", CARL, "Carl Client", "Team days"):
        assert kept.encode() in raw, kept
    assert counts(db) == rows
    assert [shown[0] for shown in report(run)] == [shown[0] for shown in reports]
    forgotten = db.conn.execute("SELECT * FROM coaches WHERE id = ?", [bob_id]).fetchone()
    assert (forgotten["name"], forgotten["email"]) == (
        "Forgotten coach",
        f"forgotten-coach-{bob_id}@invalid",
    )
    for token in bob_links:
        assert client.get(f"/d/{token}").status_code == 404
        assert client.get(f"/c/{token}").status_code == 404
    assert any(client.get(f"/d/{token}").status_code == 200 for token in carl_links)
    refused(run, db, "coach", "export", BOB)
    refused(run, db, "coach", "link", BOB)
    assert "forgotten" in refused(run, db, "engagement", "reopen", history["solo"])
    ok(run, "coach", "add", "Bob Coach", BOB)  # welcome back as a new coach


# -- the privacy page ---------------------------------------------------------------------


def test_the_privacy_page_names_the_practice_its_contact_and_every_period(settings):
    app = create_app(
        {
            "TESTING": True,
            **settings,
            "PRACTICE_NAME": "Praktijk De Brug",
            "PRACTICE_CONTACT": "privacy@debrug.example",
            "RETENTION_DAYS": 400,
        }
    )
    page = app.test_client().get("/privacy")
    assert page.status_code == 200
    text = " ".join(page.text.split())
    assert "Praktijk De Brug is responsible for your data." in text
    assert 'href="mailto:privacy@debrug.example"' in text
    assert "30 days after it was sent" in text
    assert "until 30 days after the round it belongs to has closed" in text
    assert "A welcome-back link: 365 days" in text
    assert "400 days after your last engagement ended" in text
    assert page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_the_privacy_page_without_settings_still_says_whom_to_ask(client):
    text = " ".join(client.get("/privacy").text.split())
    assert "Your coaching practice is responsible for your data." in text
    assert "replying to any mail you got from your coach" in text
    assert "730 days after your last engagement ended" in text
