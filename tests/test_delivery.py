"""Delivery end to end: what arrives at a real SMTP server, what stays in the outbox and the
database file, and how delivery behaves when the server is down, refuses, or is shared by
overlapping runs of the command line (real processes).
"""

from __future__ import annotations

import email
import json
import re
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import policy
from email.header import decode_header, make_header
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

import pytest
from support import (
    LINK,
    POLICY,
    T0,
    cli_env,
    deliver,
    free_port,
    links_in,
    outbox_rows,
    run_at_once,
    serve_smtp,
    text_of,
    token_of,
    year_unless_now,
)

from twoyes import outbox
from twoyes.db import transaction
from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.rounds import close_overdue_rounds, send_reminders
from twoyes.sessions import record_session_done
from twoyes.times import from_db
from twoyes.tokens import hash_token
from twoyes.web import create_app

SENDER = "practice@example.org"


# --- helpers -------------------------------------------------------------------------------


def row_for(db, address: str) -> dict:
    (row,) = outbox_rows(db, to_email=address)
    return row


def html_links(message) -> list[str]:
    return LINK.findall(message.get_body(("html",)).get_content())


def header_values(message) -> list[str]:
    """Every header of the mail and of each of its parts, decoded."""
    return [str(value) for part in message.walk() for _, value in part.items()]


def message_id_of(row: dict) -> str:
    return f"<{row['message_id']}@example.org>"


def app_with(settings: dict, **changes):
    """Another app on the same database, with some settings changed (or removed, with None)."""
    config = {"TESTING": True, **settings, **changes}
    return create_app({key: value for key, value in config.items() if value is not None})


def down_app(settings):
    """The app pointed at a port where no SMTP server listens."""
    return app_with(settings, MAIL_PORT=free_port())


class Picky:
    """An SMTP server that refuses one recipient at one stage (RCPT or DATA), or nobody."""

    def __init__(self, stage: str = "", answer: str = "", refused: str = "") -> None:
        self.stage, self.answer, self.refused = stage, answer, refused
        self.messages: list[email.message.EmailMessage] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.stage == "RCPT" and address == self.refused:
            return self.answer
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.stage == "DATA" and self.refused in envelope.rcpt_tos:
            return self.answer
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def many_engagements(db, count: int) -> list[int]:
    """`count` individual engagements of Bob, each with its own client."""
    add_person(db, "coach", "Bob Coach", "bob@example.org", "en", T0)
    engagements = []
    for number in range(count):
        address = f"client{number}@example.org"
        add_person(db, "client", f"Client {number}", address, "en", T0)
        engagements.append(start_engagement(db, "bob@example.org", [address], T0))
    return engagements


# --- the decision mail's form ----------------------------------------------------------------


def test_decision_mail_is_text_and_html_from_the_practice_replying_to_the_coach(
    app, db, engagement, smtp
):
    record_session_done(db, engagement, T0, POLICY)
    before = datetime.now(UTC)
    assert deliver(app, db).sent == 2

    (message,) = smtp.to("anna@example.org")
    assert message.get_content_type() in ("multipart/alternative", "multipart/mixed")
    (alternative,) = [p for p in message.walk() if p.get_content_type() == "multipart/alternative"]
    parts = [part.get_content_type() for part in alternative.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert all(part.get_content_charset() == "utf-8" for part in alternative.iter_parts())

    assert message["Subject"] == "Another session?"
    assert parseaddr(message["From"]) == ("Practice", SENDER)
    assert parseaddr(message["Reply-To"]) == ("Bob Coach", "bob@example.org")
    assert parseaddr(message["To"]) == ("Anna de Vries", "anna@example.org")
    assert message["Message-ID"] == message_id_of(row_for(db, "anna@example.org"))
    sent_at = parsedate_to_datetime(message["Date"])
    assert before - timedelta(minutes=1) <= sent_at <= datetime.now(UTC) + timedelta(minutes=1)
    # The envelope agrees with the headers.
    assert (SENDER, ["anna@example.org"]) in smtp.envelopes

    # The coach's own mail also replies to the coach, and has its own Message-ID.
    (to_coach,) = smtp.to("bob@example.org")
    assert parseaddr(to_coach["Reply-To"])[1] == "bob@example.org"
    assert to_coach["Message-ID"] != message["Message-ID"]


def test_the_html_carries_its_styles_inline_and_a_hidden_preheader(app, db, engagement, smtp):
    """Gmail and Outlook drop <style>: what the mail looks like must be on its elements."""
    record_session_done(db, engagement, T0, POLICY)
    deliver(app, db)
    (message,) = smtp.to("anna@example.org")
    html = message.get_body(("html",)).get_content()
    assert "<style" not in html
    preheader = re.search(r'<span class="preheader" style="([^"]+)">([^<]+)</span>', html)
    assert "display: none" in preheader.group(1)
    assert preheader.group(2).startswith("Continue or stop: please let us know by ")
    (button,) = re.findall(r'<a class="button" href="[^"]+/continue" style="([^"]+)"', html)
    assert "background: #1d5c4d" in button and "color: #ffffff" in button
    assert re.search(r'<td class="body" style="[^"]*font-family: Arial', html)
    assert all("margin: 0 0 16px" in style for style in re.findall(r'<p style="([^"]*)"', html))


def test_mail_max_emails_hands_the_rest_of_the_run_to_a_new_connection(
    settings, db, people, engagement, smtp
):
    """Flask-Mail's MAIL_MAX_EMAILS: after that many mails, the connection is opened anew."""
    other = start_engagement(db, people["coach"], [people["carl"]], T0)
    record_session_done(db, engagement, T0, POLICY)
    record_session_done(db, other, T0, POLICY)
    peers = []

    class Counting:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            peers.append(session.peer)
            return "250 OK"

    with serve_smtp(Counting()) as server:
        port = server.port
        report = deliver(app_with(settings, MAIL_PORT=port, MAIL_MAX_EMAILS=3), db)
    assert (report.sent, len(peers)) == (4, 4)
    assert len(set(peers[:3])) == 1 and peers[3] != peers[0]
    assert {row["status"] for row in outbox_rows(db)} == {"sent"}


def addressee(message, header: str) -> tuple[str, str]:
    """A header's (name, address) as an RFC 2047 reader sees it.

    The standard library's modern parser puts a space between adjacent encoded words,
    which RFC 2047 says a reader must drop, so the raw header is decoded the strict way.
    """
    raw = dict(message.raw_items())[header]
    return parseaddr(str(make_header(decode_header(raw))))


@pytest.mark.parametrize(
    "name",
    ["Zoë Ångström", "Maria José Fernández-Ångström van den Berg-Østergaard Ølsen"],
    ids=["short", "long-enough-to-fold"],
)
def test_a_name_with_accents_arrives_intact(app, db, people, smtp, name):
    # Greeted by the whole name, so that the body carries every accent too.
    add_person(db, "client", name, "zoe@example.org", "en", T0, call_name=name)
    add_person(db, "coach", "Søren Ødegård", "soren@example.org", "en", T0)
    engagement_id = start_engagement(db, "soren@example.org", ["zoe@example.org"], T0)
    record_session_done(db, engagement_id, T0, POLICY)
    deliver(app, db)

    (to_client,) = smtp.to("zoe@example.org")
    assert addressee(to_client, "To") == (name, "zoe@example.org")
    assert addressee(to_client, "Reply-To") == ("Søren Ødegård", "soren@example.org")
    assert f"Hello {name}," in text_of(to_client)
    assert name in to_client.get_body(("html",)).get_content()
    assert "Søren Ødegård" in text_of(to_client)
    (to_coach,) = smtp.to("soren@example.org")
    assert name in text_of(to_coach)


def test_text_and_html_carry_the_same_links_and_no_header_carries_a_token(
    app, db, engagement, smtp
):
    """Decision, reminder and outcome mails alike."""
    record_session_done(db, engagement, T0, POLICY)
    deliver(app, db, now=T0 + timedelta(minutes=1))
    assert send_reminders(db, T0 + timedelta(days=5, hours=1)) == 2
    deliver(app, db, now=T0 + timedelta(days=5, hours=1))
    assert len(close_overdue_rounds(db, T0 + timedelta(days=7, minutes=1))) == 1
    deliver(app, db, now=T0 + timedelta(days=7, minutes=2))

    assert Counter(message["Subject"] for message in smtp.messages) == {
        "Another session?": 2,
        "A reminder: another session?": 2,
        "Thank you, and welcome back any time": 1,
        "Career has ended": 1,  # the coach's: a coach is not welcomed back
    }
    tokens_seen = set()
    for message in smtp.messages:
        in_text, in_html = links_in(message), html_links(message)
        assert sorted(set(in_text)) == sorted(set(in_html)), message["Subject"]
        tokens = {token_of(link) for link in in_text}
        tokens_seen |= tokens
        for value in header_values(message):
            assert not any(token in value for token in tokens), value
    # Decision and reminder mails carry Continue and Stop; Anna's outcome a welcome-back link.
    for message in smtp.to("anna@example.org"):
        endings = {link.rsplit("/", 1)[-1] for link in links_in(message)}
        if message["Subject"] == "Thank you, and welcome back any time":
            assert any("/b/" in link for link in links_in(message))
        else:
            assert {"continue", "stop"} <= endings
    # Each mail's links are its own: 2 decision + 2 reminder + Anna's welcome back.
    assert len(tokens_seen) == 5


def test_dutch_and_english_mails_in_one_batch_each_come_out_in_their_own_language(app, db, smtp):
    """A batch is written one language at a time, but each mail keeps its reader's language,
    and the mails still go out in the order they were queued."""
    add_person(db, "coach", "Bob Coach", "bob@example.org", "nl", T0)
    add_person(db, "coach", "Cora Coach", "cora@example.org", "en", T0)
    add_person(db, "client", "Daan de Boer", "daan@example.org", "nl", T0)
    add_person(db, "client", "Emma English", "emma@example.org", "en", T0)
    # Tuesday 1 December 2026, 10:00 in Amsterdam: the deadline is Tuesday 8 December.
    held = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    for coach, client in [("bob", "emma"), ("cora", "daan"), ("bob", "daan")]:
        engagement_id = start_engagement(db, f"{coach}@example.org", [f"{client}@example.org"], T0)
        record_session_done(db, engagement_id, held, POLICY)
    queued = outbox_rows(db)
    assert [row["lang"] for row in queued] == ["nl", "en", "en", "nl", "nl", "nl"]

    assert deliver(app, db, now=held + timedelta(minutes=1)).sent == 6
    assert [m["Message-ID"] for m in smtp.messages] == [message_id_of(row) for row in queued]
    for message, row in zip(smtp.messages, queued, strict=True):
        text, html = text_of(message), message.get_body(("html",)).get_content()
        if row["lang"] == "nl":
            assert message["Subject"] == "Nog een sessie?"
            assert text.startswith("Hoi ")
            assert f"dinsdag 8 december{year_unless_now(2026)} om 10:00" in text
            assert f"dinsdag 8 december{year_unless_now(2026)} om 10:00" in html
            assert '<html lang="nl">' in html
        else:
            assert message["Subject"] == "Another session?"
            assert text.startswith("Hello ")
            assert f"Tuesday 8 December{year_unless_now(2026)} at 10:00" in text
            assert f"Tuesday 8 December{year_unless_now(2026)} at 10:00" in html
            assert '<html lang="en">' in html


@pytest.mark.parametrize(
    ("closed_at", "deadline"),
    [
        # CET, UTC+1, and CEST, UTC+2; a date in another year than this one names it.
        (datetime(2026, 12, 1, 9, 0, tzinfo=UTC), f"Tuesday 8 December{year_unless_now(2026)}"),
        (datetime(2027, 7, 6, 8, 0, tzinfo=UTC), f"Tuesday 13 July{year_unless_now(2027)}"),
    ],
)
def test_deadline_is_written_in_the_practice_time_zone(
    app, db, engagement, smtp, closed_at, deadline
):
    record_session_done(db, engagement, closed_at, POLICY)
    deliver(app, db, now=closed_at + timedelta(minutes=1))
    assert len(smtp.messages) == 2
    for message in smtp.messages:
        html = " ".join(message.get_body(("html",)).get_content().split())
        if message["To"].startswith("Bob"):
            said = f"If we hear nothing from you by {deadline} at 10:00, that counts as a stop"
        else:
            said = f"If we hear nothing by {deadline} at 10:00,"
        assert said in " ".join(text_of(message).split())
        assert said in html


# --- Message-ID, outages, backoff ----------------------------------------------------------------


def test_message_id_is_stable_across_retries(app, db, settings, engagement, smtp):
    record_session_done(db, engagement, T0, POLICY)
    queued = {row["to_email"]: row["message_id"] for row in outbox_rows(db)}

    first = deliver(down_app(settings), db, now=T0 + timedelta(minutes=1))
    assert (first.sent, first.retrying) == (0, 2)
    assert smtp.messages == []
    assert {row["to_email"]: row["message_id"] for row in outbox_rows(db)} == queued

    assert deliver(app, db, now=T0 + timedelta(minutes=5)).sent == 2
    for address, message_id in queued.items():
        (message,) = smtp.to(address)
        assert message["Message-ID"] == f"<{message_id}@example.org>"
        assert row_for(db, address)["attempts"] == 2


def test_a_claim_left_by_a_crashed_run_is_delivered_once_after_claim_minutes(
    app, db, engagement, smtp
):
    record_session_done(db, engagement, T0, POLICY)
    claimed_at = T0 + timedelta(minutes=1)
    # A run claims the mail and dies before it can mark anything.
    assert len(outbox.claim_due_mail(db, claimed_at)) == 2

    assert deliver(app, db, now=claimed_at + timedelta(minutes=5)).sent == 0
    assert smtp.messages == []
    later = claimed_at + timedelta(minutes=outbox.CLAIM_MINUTES)
    assert deliver(app, db, now=later).sent == 2
    assert deliver(app, db, now=later + timedelta(minutes=30)).sent == 0
    assert sorted(m["Message-ID"] for m in smtp.messages) == sorted(
        message_id_of(row) for row in outbox_rows(db)
    )
    assert {row["status"] for row in outbox_rows(db)} == {"sent"}


def test_smtp_outage_keeps_mail_queued_and_delivers_it_once_when_due(
    app, db, settings, engagement, smtp
):
    record_session_done(db, engagement, T0, POLICY)
    down = down_app(settings)
    tried_at = T0 + timedelta(minutes=1)

    report = deliver(down, db, now=tried_at)
    assert (report.sent, report.retrying, report.failed, report.waiting) == (0, 2, 0, 2)
    for row in outbox_rows(db):
        assert (row["status"], row["attempts"]) == ("queued", 1)
        assert from_db(row["next_attempt_at"]) == tried_at + timedelta(minutes=2)
        assert "could not reach the mail server" in row["last_error"]
        assert "decide_nonce" in json.loads(row["context"])  # the link waits with the mail

    # The server is back, but the retry is not due yet: nothing goes out, nothing is counted.
    assert deliver(app, db, now=tried_at + timedelta(minutes=1)).sent == 0
    assert smtp.messages == []
    assert {row["attempts"] for row in outbox_rows(db)} == {1}

    report = deliver(app, db, now=tried_at + timedelta(minutes=2))
    assert (report.sent, report.waiting) == (2, 0)
    assert deliver(app, db, now=tried_at + timedelta(days=1)).sent == 0
    assert Counter(m["Message-ID"] for m in smtp.messages) == {
        message_id_of(row): 1 for row in outbox_rows(db)
    }
    for row in outbox_rows(db):
        assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 2, None)


def test_backoff_doubles_and_the_mail_fails_for_good_after_max_attempts(
    app, db, settings, engagement, smtp
):
    record_session_done(db, engagement, T0, POLICY)
    down = down_app(settings)
    when = T0 + timedelta(minutes=1)
    waits = []
    for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
        # One second early: not yet.
        if attempt > 1:
            deliver(down, db, now=when - timedelta(seconds=1))
            assert {row["attempts"] for row in outbox_rows(db)} == {attempt - 1}
        report = deliver(down, db, now=when)
        rows = outbox_rows(db)
        assert {row["attempts"] for row in rows} == {attempt}
        if attempt < outbox.MAX_ATTEMPTS:
            assert report.retrying == 2
            assert {row["status"] for row in rows} == {"queued"}
            (due,) = {from_db(row["next_attempt_at"]) for row in rows}
            waits.append(due - when)
            when = due
    assert waits == [timedelta(minutes=2 * 2**n) for n in range(outbox.MAX_ATTEMPTS - 1)]
    assert waits[:3] == [timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8)]
    assert report.failed == 2
    for row in outbox_rows(db):
        assert row["status"] == "failed"
        assert "could not reach the mail server" in row["last_error"]
    failed_events = db.conn.execute("SELECT count(*) FROM events WHERE kind = 'mail_failed'")
    assert failed_events.fetchone()[0] == 2

    # The server is back: a failed mail is not tried again by itself.
    assert deliver(app, db, now=when + timedelta(days=1)).sent == 0
    assert smtp.messages == []
    assert {(r["status"], r["attempts"]) for r in outbox_rows(db)} == {
        ("failed", outbox.MAX_ATTEMPTS)
    }


@pytest.mark.slow
def test_send_command_exits_0_and_says_so_when_mail_waits_for_a_retry(
    settings, db, engagement, tmp_path
):
    record_session_done(db, engagement, T0, POLICY)
    ((code, out, err),) = run_at_once(
        [["send"]], cli_env(settings, MAIL_PORT=str(free_port())), tmp_path
    )
    assert code == 0, err
    assert "2 mail(s) wait for a later retry." in err
    assert "will be retried" in err
    assert "Traceback" not in err
    assert {row["status"] for row in outbox_rows(db)} == {"queued"}


# --- refusals by the server ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "answer", "status", "words"),
    [
        ("RCPT", "550 no such user", "failed", "no such user"),
        ("RCPT", "451 try later", "queued", "try later"),
        ("DATA", "554 5.7.1 message rejected", "failed", "message rejected"),
        ("DATA", "452 4.3.1 mailbox full for now", "queued", "mailbox full"),
    ],
)
def test_a_refusal_fails_for_good_on_5xx_and_waits_on_4xx(
    app, db, settings, engagement, stage, answer, status, words
):
    record_session_done(db, engagement, T0, POLICY)
    handler = Picky(stage, answer, refused="anna@example.org")
    now = T0 + timedelta(minutes=1)
    with serve_smtp(handler) as server:
        port = server.port
        picky = app_with(settings, MAIL_PORT=port)
        report = deliver(picky, db, now=now)
        # The refusal of one recipient does not hold up the others in the same run.
        assert report.sent == 1
        assert [parseaddr(m["To"])[1] for m in handler.messages] == ["bob@example.org"]
        anna = row_for(db, "anna@example.org")
        assert (anna["status"], anna["attempts"]) == (status, 1)
        assert answer.split()[0] in anna["last_error"]
        assert words in anna["last_error"]
        assert row_for(db, "bob@example.org")["status"] == "sent"

        if status == "failed":
            assert (report.failed, report.retrying) == (1, 0)
            # Never tried again, not even much later.
            deliver(picky, db, now=now + timedelta(days=2))
            assert (row_for(db, "anna@example.org")["attempts"], len(handler.messages)) == (1, 1)
        else:
            assert (report.failed, report.retrying) == (0, 1)
            assert from_db(anna["next_attempt_at"]) == now + timedelta(minutes=2)

    if status == "queued":
        # The server accepts her mail later: delivered once, with the same Message-ID.
        accepting = Picky()
        with serve_smtp(accepting) as server:
            port = server.port
            later = app_with(settings, MAIL_PORT=port)
            assert deliver(later, db, now=now + timedelta(minutes=1)).sent == 0
            assert deliver(later, db, now=now + timedelta(minutes=2)).sent == 1
            assert deliver(later, db, now=now + timedelta(minutes=30)).sent == 0
        (message,) = accepting.messages
        anna = row_for(db, "anna@example.org")
        assert message["Message-ID"] == message_id_of(anna)
        assert (anna["status"], anna["attempts"]) == ("sent", 2)


# --- tokens at rest ------------------------------------------------------------------------------


def database_bytes(db, path: str) -> bytes:
    """The database file and its write-ahead log, as they lie on disk after a checkpoint."""
    busy, _, _ = db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    wal = Path(f"{path}-wal")
    return Path(path).read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_delivered_tokens_are_gone_from_the_outbox_and_the_database_file(
    app, db, settings, people, engagement, smtp
):
    # Another engagement's decision mails wait in the queue (due later), with their links as
    # nonces: nothing that opens a page.
    other = start_engagement(db, people["coach"], [people["carl"]], T0)
    record_session_done(db, other, T0 + timedelta(days=30), POLICY)
    waiting = {json.loads(row["context"])["decide_nonce"] for row in outbox_rows(db)}
    assert len(waiting) == 2

    record_session_done(db, engagement, T0, POLICY)
    assert deliver(app, db, now=T0 + timedelta(minutes=1)).sent == 2
    # Right after delivery, before any later write could tidy the pages up.
    raw = database_bytes(db, settings["DATABASE"])
    delivered = {token_of(link) for message in smtp.messages for link in links_in(message)}
    assert len(delivered) == 2
    assert [token for token in delivered if token.encode() in raw] == []
    # The search itself works: the queued mails' nonces are found in the same bytes.
    assert all(nonce.encode() in raw for nonce in waiting)

    # The outcome mails: Anna's welcome-back link goes the same way.
    close_overdue_rounds(db, T0 + timedelta(days=7, minutes=1))
    assert deliver(app, db, now=T0 + timedelta(days=7, minutes=2)).sent == 2
    raw = database_bytes(db, settings["DATABASE"])
    delivered = {token_of(link) for message in smtp.messages for link in links_in(message)}
    assert len(delivered) == 3
    assert [token for token in delivered if token.encode() in raw] == []
    assert all(nonce.encode() in raw for nonce in waiting)

    for row in outbox_rows(db, status="sent"):
        context = json.loads(row["context"])
        assert not [key for key in context if key.endswith("_token")], row["kind"]
    assert len(outbox_rows(db, status="queued")) == 2


def test_a_claim_reads_the_waiting_mail_not_the_outbox_history(app, db, engagement, smtp):
    """Every tick claims mail, and the outbox keeps every mail it ever sent: the work of a
    claim (counted in SQLite's virtual machine steps) must not grow with that history."""
    record_session_done(db, engagement, T0, POLICY)

    def steps_of_a_claim(now) -> tuple[int, int]:
        steps = []
        db.conn.set_progress_handler(lambda: steps.append(1), 100)
        try:
            claimed = outbox.claim_due_mail(db, now)
        finally:
            db.conn.set_progress_handler(None, 100)
        for mail in claimed:
            outbox.mark_failed_attempt(db, mail, now, "given back by the test")
        return len(claimed), len(steps)

    assert steps_of_a_claim(T0 - timedelta(days=1))[0] == 0  # nothing due yet
    _, before = steps_of_a_claim(T0 + timedelta(minutes=1))
    with transaction(db):
        db.conn.executemany(
            "INSERT INTO outbox (kind, to_name, to_email, lang, message_id, status,"
            " next_attempt_at, created_at, sent_at) VALUES ('decision', 'Old', 'old@example.org',"
            " 'en', ?, 'sent', ?, ?, ?)",
            [(f"old-{number}", *["2020-01-01"] * 3) for number in range(20_000)],
        )
    claimed, after = steps_of_a_claim(T0 + timedelta(hours=1))
    assert claimed == 2
    assert after <= before + 5, (before, after)


# --- overlapping runs, as real processes ---------------------------------------------------------


@pytest.mark.slow
def test_three_send_processes_at_once_deliver_every_mail_exactly_once(
    settings, app, db, smtp, tmp_path
):
    for engagement_id in many_engagements(db, 15):
        record_session_done(db, engagement_id, T0, POLICY)
    expected = {message_id_of(row) for row in outbox_rows(db)}
    assert len(expected) == 30

    results = run_at_once([["send"]] * 3, cli_env(settings), tmp_path)
    for code, _, err in results:
        assert code == 0, err
        assert "Traceback" not in err
    delivered = sum(
        int(match) for _, out, _ in results for match in re.findall(r"Delivered (\d+)", out)
    )
    assert delivered == 30

    counts = Counter(message["Message-ID"] for message in smtp.messages)
    assert set(counts) == expected
    assert set(counts.values()) == {1}
    assert {row["status"] for row in outbox_rows(db)} == {"sent"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "commands",
    [
        [["tick"], ["tick"]],
        [["tick"], ["close-undecided"], ["send"]],
    ],
    ids=["two-ticks", "tick-close-undecided-send"],
)
def test_overlapping_runs_close_each_round_once_and_send_each_outcome_once(
    settings, app, db, smtp, tmp_path, commands
):
    rounds = [
        record_session_done(db, engagement_id, T0, POLICY)[1]
        for engagement_id in many_engagements(db, 8)
    ]
    deliver(app, db, now=T0 + timedelta(minutes=1))
    assert len(smtp.messages) == 16
    smtp.clear()

    past_deadline = T0 + timedelta(days=POLICY.decision_days, hours=1)
    stamped = [[*command, "--now", past_deadline.isoformat()] for command in commands]
    for code, _, err in run_at_once(stamped, cli_env(settings), tmp_path):
        assert code == 0, err
        assert "Traceback" not in err
    if "close-undecided" in sum(commands, []):
        # close-undecided only queues; whatever it queued after the others delivered waits
        # for the next run.
        deliver(app, db, now=past_deadline + timedelta(minutes=1))

    closings = Counter(
        row[0] for row in db.conn.execute("SELECT round_id FROM events WHERE kind = 'round_closed'")
    )
    assert closings == dict.fromkeys(rounds, 1)
    statuses = db.conn.execute("SELECT DISTINCT status, outcome FROM rounds").fetchall()
    assert [tuple(row) for row in statuses] == [("closed", "stop")]

    outcomes = outbox_rows(db, kind="outcome")
    assert len(outcomes) == 16
    assert {row["status"] for row in outcomes} == {"sent"}
    counts = Counter(message["Message-ID"] for message in smtp.messages)
    assert counts == {message_id_of(row): 1 for row in outcomes}
    # Every party heard the outcome once: Bob once per engagement, each client once.
    recipients = Counter(parseaddr(message["To"])[1] for message in smtp.messages)
    assert recipients == {"bob@example.org": 8} | {f"client{n}@example.org": 1 for n in range(8)}


def test_mail_queued_before_version_6_goes_out_with_the_raw_links_it_holds(
    app, db, client, people, engagement, smtp
):
    """Before schema version 6 a waiting mail held its raw tokens; after the upgrade it is
    delivered with them, they open, and they are wiped once it is sent."""
    record_session_done(db, engagement, T0, POLICY)
    (mail,) = outbox_rows(db, to_email=people["anna"])
    context = json.loads(mail["context"])
    nonce = context.pop("decide_nonce")
    raw = secrets.token_urlsafe(32)
    with transaction(db):  # as version 5 left it: the token in the mail, its hash in tokens
        db.conn.execute("UPDATE tokens SET hash = ? WHERE nonce = ?", [hash_token(raw), nonce])
        context["decide_token"] = raw
        db.conn.execute(
            "UPDATE outbox SET context = ? WHERE id = ?", [json.dumps(context), mail["id"]]
        )

    assert deliver(app, db).sent == 2
    (message,) = smtp.to(people["anna"])
    assert {token_of(link) for link in links_in(message)} == {raw}
    assert client.get(f"/d/{raw}").status_code == 200
    assert "decide_token" not in outbox_rows(db, id=mail["id"])[0]["context"]
