"""Answering by reply (issue 18): replies written the way mail programs write them, handed to
the core as bytes (replies.handle_message) or piped to `python cli.py inbound --stdin`.

The decision mails are the real ones, delivered over the test SMTP server; each reply names
the Message-ID it answers, as a mail program does. tests/test_inbound.py reads the same
replies from a real IMAP server.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from datetime import timedelta

import pytest
from click.testing import CliRunner
from support import (
    INBOUND,
    POLICY,
    ROOT,
    T0,
    choice_of,
    cli_env,
    decision_mail,
    deliver,
    dump,
    html_of,
    links_in,
    outbox_rows,
    reply,
    rows,
    text_of,
)

from twoyes.cli import cli
from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.replies import handle_message, read_answer
from twoyes.rounds import close_overdue_rounds, send_reminders
from twoyes.sessions import record_session_done
from twoyes.settings import ConfigError, load_settings
from twoyes.web import create_app

DAY = timedelta(days=1)


@pytest.fixture
def settings(settings):
    """The practice reads replies: decision mails say so, and Reply-To is its mailbox."""
    return settings | {"INBOUND_ADDRESS": INBOUND}


@pytest.fixture
def held(db, engagement):
    """Bob and Anna's session was held: the round is open, its mails delivered."""
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    return round_id


def quoted(mail) -> str:
    """The decision mail's text as a reply quotes it."""
    return "\n".join(f"> {line}" for line in text_of(mail).splitlines())


def handle(app, db, raw: bytes, now=None) -> dict:
    return handle_message(db, raw, now or T0 + timedelta(hours=1), app.extensions["twoyes"])


def queued(db, kind: str) -> list[dict]:
    return [row | {"context": json.loads(row["context"])} for row in outbox_rows(db, kind=kind)]


# --- the decision mail ------------------------------------------------------------------------


def the_one_mail(app, db, smtp, address: str, at=T0 + timedelta(hours=2)):
    """The one mail the next delivery (at `at`) brings to `address`."""
    smtp.clear()
    deliver(app, db, at)
    (mail,) = smtp.to(address)
    return mail


def test_decision_mail_invites_a_reply_and_is_marked_as_a_machines(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")

    assert mail["Reply-To"].addresses[0].addr_spec == INBOUND
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "You can also reply to this mail with “continue” or “stop”." in text_of(mail)
    assert "reply to this mail with “continue” or “stop”" in mail.get_body(("html",)).get_content()
    # 128 random bits or more: as hard to guess as a link.
    local = re.fullmatch(r"<([0-9a-f]+)@example\.org>", mail["Message-ID"]).group(1)
    assert len(local) * 4 >= 128


def test_without_an_inbound_mailbox_replies_reach_the_coach(settings, db, smtp, held):
    plain = {key: value for key, value in settings.items() if key != "INBOUND_ADDRESS"}
    mail = decision_mail(create_app({"TESTING": True, **plain}), db, smtp, "anna@example.org")

    assert mail["Reply-To"].addresses[0].addr_spec == "bob@example.org"
    assert "reply to this mail" not in text_of(mail)
    assert mail["Auto-Submitted"] == "auto-generated"


def test_dutch_decision_mail_asks_for_doorgaan_or_stoppen(app, db, smtp):
    add_person(db, "coach", "Bea Coach", "bea@example.org", "nl", T0)
    add_person(db, "client", "Daan de Wit", "daan@example.org", "nl", T0)
    engagement = start_engagement(db, "bea@example.org", ["daan@example.org"], T0)
    record_session_done(db, engagement, T0, POLICY)
    mail = decision_mail(app, db, smtp, "daan@example.org")

    assert "Je kunt deze mail ook gewoon beantwoorden met „doorgaan” of „stoppen”." in text_of(mail)


# --- replies that record ----------------------------------------------------------------------


def test_gmail_yes_on_the_first_line_records_continue_and_confirms(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    gmail = (
        "Yes!\n\nOn Thu, 3 Dec 2026 at 10:00, Practice <practice@example.org> wrote:\n"
        + quoted(mail)
    )

    result = handle(app, db, reply(mail, gmail))

    assert result["outcome"] == "recorded"
    assert choice_of(db, held, "anna@example.org") == "continue"
    (event,) = rows(db, "SELECT detail FROM events WHERE kind = 'decision_recorded'")
    assert json.loads(event["detail"])["via"] == "reply"
    (confirmation,) = queued(db, "reply_recorded")
    assert confirmation["to_email"] == "anna@example.org"
    assert not queued(db, "reply_forward")  # "Yes!" says nothing more for the coach
    sent = the_one_mail(app, db, smtp, "anna@example.org")
    assert sent["Subject"] == "Your answer is recorded"
    assert "We recorded your answer: another session would be useful." in text_of(sent)


def test_outlook_stop_with_its_header_block_records_stop(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    outlook = (
        "Stop please\r\n\r\nKind regards,\r\nAnna\r\n\r\n"
        "________________________________\r\n"
        "From: Practice <practice@example.org>\r\n"
        "Sent: Thursday, December 3, 2026 10:00 AM\r\n"
        "To: Anna de Vries <anna@example.org>\r\n"
        f"Subject: {mail['Subject']}\r\n\r\n" + text_of(mail)
    )
    html = (
        '<html><body><div dir="ltr">Stop please</div><div>Kind regards,<br>Anna</div>'
        '<div id="appendonsend"></div><hr><div id="divRplyFwdMsg"><b>From:</b> Practice</div>'
        f"<div>{text_of(mail)}</div></body></html>"
    )

    assert handle(app, db, reply(mail, outlook, html=html))["outcome"] == "recorded"

    assert choice_of(db, held, "anna@example.org") == "stop"
    # An individual client's stop closes the round (R3): the outcome mails are queued too.
    assert rows(db, "SELECT status, outcome FROM rounds")[0] == {
        "status": "closed",
        "outcome": "stop",
    }
    assert [row["to_email"] for row in queued(db, "reply_recorded")] == ["anna@example.org"]
    assert not queued(db, "reply_forward")


def test_apple_mail_in_dutch_records_doorgaan(app, db, smtp):
    add_person(db, "coach", "Bea Coach", "bea@example.org", "nl", T0)
    add_person(db, "client", "Daan de Wit", "daan@example.org", "nl", T0)
    engagement = start_engagement(db, "bea@example.org", ["daan@example.org"], T0)
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    mail = decision_mail(app, db, smtp, "daan@example.org")
    apple = (
        "Doorgaan graag\n\nVerstuurd vanaf mijn iPhone\n\n"
        "> Op 3 dec 2026 om 10:00 heeft Practice <practice@example.org> het volgende "
        "geschreven:\n>\n" + quoted(mail)
    )

    result = handle(app, db, reply(mail, apple, sender="Daan de Wit <daan@example.org>"))

    assert result["outcome"] == "recorded"
    assert choice_of(db, round_id, "daan@example.org") == "continue"
    sent = the_one_mail(app, db, smtp, "daan@example.org")
    assert sent["Subject"] == "Je keuze is vastgelegd"
    assert "We hebben je keuze vastgelegd: nog een sessie is nuttig." in text_of(sent)


def test_html_only_gmail_reply_reads_above_the_quote(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    html = (
        '<div dir="ltr"><div>stop</div><div><br></div></div><br>'
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Thu, Dec 3, 2026 at '
        "10:00 AM Practice &lt;practice@example.org&gt; wrote:<br></div>"
        '<blockquote class="gmail_quote">Another session would be useful: continue</blockquote>'
        "</div>"
    )

    assert handle(app, db, reply(mail, html=html))["outcome"] == "recorded"

    assert choice_of(db, held, "anna@example.org") == "stop"


def test_a_signature_with_stop_in_it_does_not_count(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    signed = (
        "continue\n\n-- \nAnna de Vries\nStop by any time: Main Street 1, Utrecht\n\n"
        "On Thu, 3 Dec 2026 at 10:00, Practice <practice@example.org> wrote:\n" + quoted(mail)
    )

    assert handle(app, db, reply(mail, signed))["outcome"] == "recorded"

    assert choice_of(db, held, "anna@example.org") == "continue"


def test_an_answer_with_more_to_say_is_recorded_and_the_rest_reaches_the_coach(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    written = "Yes! See you Tuesday, I will bring the report.\n\nAnna"

    assert handle(app, db, reply(mail, written))["outcome"] == "recorded"

    assert choice_of(db, held, "anna@example.org") == "continue"
    forward = the_one_mail(app, db, smtp, "bob@example.org")
    assert "and their answer was recorded" in text_of(forward)
    assert "I will bring the report" in text_of(forward)
    assert forward["Reply-To"].addresses[0].addr_spec == "anna@example.org"


def test_the_coach_can_answer_by_reply(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "bob@example.org")

    result = handle(app, db, reply(mail, "Yes, continue.", sender="Bob Coach <bob@example.org>"))

    assert result["outcome"] == "recorded"
    assert choice_of(db, held, "bob@example.org") == "continue"


def test_a_reply_to_the_reminder_counts(app, db, smtp, held):
    decision_mail(app, db, smtp, "anna@example.org")
    reminder_at = T0 + 5 * DAY + timedelta(minutes=1)
    send_reminders(db, reminder_at)
    reminder = the_one_mail(app, db, smtp, "anna@example.org", reminder_at)
    assert reminder["Subject"] == "A reminder: another session?"

    result = handle(app, db, reply(reminder, "no"), reminder_at + timedelta(hours=1))

    assert result["outcome"] == "recorded"
    assert choice_of(db, held, "anna@example.org") == "stop"


# --- replies that record nothing --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Can we talk about it first?",
        "Yes, but maybe no. I need to think.",
        "I don't want to stop yet",
        "Dear Bob,\n\nThank you for the session. I thought about it a lot this week, and I am "
        "not sure what to say. Part of me wants to continue, another part wants to find my own "
        "way first. Could you call me on Monday, so that we can talk it through before I choose? "
        "Anna",
    ],
    ids=["a question", "both words", "a negation", "a long message"],
)
def test_an_unclear_reply_gets_the_links_again_and_reaches_the_coach(app, db, smtp, held, text):
    mail = decision_mail(app, db, smtp, "anna@example.org")

    written = f"{text}\n\nOn Thu, 3 Dec 2026 at 10:00, Practice wrote:\n{quoted(mail)}"
    result = handle(app, db, reply(mail, written))

    assert result["outcome"] == "unclear"
    assert choice_of(db, held, "anna@example.org") is None
    again = the_one_mail(app, db, smtp, "anna@example.org")
    assert again["Subject"] == "We could not read your answer"
    assert "nothing was recorded yet" in text_of(again)
    assert "We passed your message on to Bob Coach." in text_of(again)
    assert len(links_in(again)) == 2  # Continue and Stop, fresh
    assert again["Reply-To"].addresses[0].addr_spec == INBOUND
    (forward,) = smtp.to("bob@example.org")
    assert forward["Subject"] == "A reply from Anna de Vries"
    assert forward["Reply-To"].addresses[0].addr_spec == "anna@example.org"
    assert text.splitlines()[0] in text_of(forward)
    # The quoted mail's links act for Anna: they never reach her coach.
    assert "/d/" not in text_of(forward) and "/d/" not in html_of(forward)
    assert "Another session would be useful" in text_of(forward)

    # A clear reply to the second mail is read like one to the first.
    assert handle(app, db, reply(again, "stop"))["outcome"] == "recorded"
    assert choice_of(db, held, "anna@example.org") == "stop"


@pytest.mark.parametrize(
    "headers, subject, text",
    [
        ({"Auto-Submitted": "auto-replied"}, "Automatic reply: Another session?", "I am away."),
        ({}, "Out of Office: Another session?", "I am away until Monday. Yes, really."),
        ({"X-Autoreply": "yes"}, None, "Yes"),
        ({"Precedence": "bulk"}, None, "Yes"),
        ({"Auto-Submitted": "auto-generated"}, "Afwezig: Nog een sessie?", "Ik ben er niet."),
    ],
    ids=["auto-submitted", "out-of-office subject", "x-autoreply", "precedence", "dutch"],
)
def test_an_automatic_reply_is_set_aside_without_an_answer(
    app, db, smtp, held, headers, subject, text
):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    before = len(outbox_rows(db))

    result = handle(app, db, reply(mail, text, subject=subject, headers=headers))

    assert result["outcome"] == "machine"
    assert choice_of(db, held, "anna@example.org") is None
    assert len(outbox_rows(db)) == before


def test_a_bounce_is_set_aside(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    bounce = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        f"To: {INBOUND}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.example.net>\r\nAuto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message "
        "could not be delivered. stop\r\n"
        "--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net"
        "\r\n\r\nFinal-Recipient: rfc822; anna@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"--r\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {mail['Message-ID']}\r\n"
        "--r--\r\n"
    ).encode()

    assert handle(app, db, bounce)["outcome"] == "machine"
    assert choice_of(db, held, "anna@example.org") is None
    assert not queued(db, "reply_forward")


def test_a_reply_from_another_address_is_forwarded_to_the_practice(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")

    result = handle(app, db, reply(mail, "stop", sender="Carl Client <carl@example.org>"))

    assert result["outcome"] == "unmatched"
    assert choice_of(db, held, "anna@example.org") is None
    forward = the_one_mail(app, db, smtp, "practice@example.org")
    assert forward["Subject"] == "A reply from Carl Client"
    assert "A mail from carl@example.org reached the mailbox for replies" in text_of(forward)
    assert not smtp.to("carl@example.org")


def test_a_reply_to_no_mail_of_ours_is_forwarded_to_the_practice(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    headers = {"In-Reply-To": "<guess@example.org>", "References": "<guess@example.org>"}

    result = handle(app, db, reply(mail, "stop", headers=headers))

    assert result["outcome"] == "unmatched"
    assert choice_of(db, held, "anna@example.org") is None


def test_mail_from_the_practice_itself_is_set_aside(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")

    result = handle(app, db, reply(mail, "stop", sender="Practice <practice@example.org>"))

    assert result["outcome"] == "own"
    assert not queued(db, "reply_forward")


def test_a_reply_after_the_deadline_records_nothing_and_says_so(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    late = T0 + 7 * DAY + timedelta(minutes=5)

    result = handle(app, db, reply(mail, "yes"), late)

    assert result["outcome"] == "refused"
    assert choice_of(db, held, "anna@example.org") is None
    told = the_one_mail(app, db, smtp, "anna@example.org", late)
    assert "The deadline for this round has passed" in text_of(told)


def test_a_reply_to_a_closed_round_gets_the_outcome(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    swept = T0 + 7 * DAY + timedelta(minutes=5)
    close_overdue_rounds(db, swept)

    result = handle(app, db, reply(mail, "Can I still say yes?"), swept + DAY)

    assert result["outcome"] == "refused"
    smtp.clear()
    deliver(app, db, swept + DAY)
    told = [m for m in smtp.to("anna@example.org") if m["Subject"] == "About your reply"]
    assert len(told) == 1
    assert "The outcome of this round: this was the last session for now." in text_of(told[0])
    assert not queued(db, "reply_forward")


def test_the_same_reply_twice_is_handled_once(app, db, smtp, held):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    raw = reply(mail, "yes", message_id="<same@mail.example.net>")

    first = handle(app, db, raw)
    after_first = dump(db)
    second = handle(app, db, raw, T0 + timedelta(hours=3))

    assert (first["outcome"], second["outcome"]) == ("recorded", "duplicate")
    assert dump(db) == after_first
    assert len(queued(db, "reply_recorded")) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\xff\xfe not a mail at all",
        b"From: Anna <anna@example.org>\r\nReferences: " + b"<x@y> " * 5000 + b"\r\n\r\nstop",
        b"From: Anna <anna@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n%%% not base64 \xff\r\n",
        b"From: =?utf-8?b?broken?= <\r\nSubject: =?x-unknown?q?Re?=\r\n\r\nyes",
    ],
    ids=["garbage", "a huge References", "a broken body", "broken headers"],
)
def test_a_malformed_message_is_handled_without_an_error(app, db, smtp, held, raw):
    result = handle(app, db, raw)

    assert result["outcome"] in ("machine", "unmatched")
    assert choice_of(db, held, "anna@example.org") is None
    assert handle(app, db, raw)["outcome"] == "duplicate"


# --- reading the answer -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, choice",
    [
        ("Yes!", "continue"),
        ("ja", "continue"),
        ("Nog een sessie graag", "continue"),
        ("Another session, please.", "continue"),
        ("Stoppen", "stop"),
        ("nee, dank je", "stop"),
        ("No thanks", "stop"),
        ("Thanks!\nyes", None),  # not near the top
        ("stop or continue", None),
        ("", None),
        ("Nog niet stoppen", None),
    ],
)
def test_read_answer(text, choice):
    assert read_answer(text) == choice


# --- the command line -------------------------------------------------------------------------


def test_inbound_stdin_handles_one_piped_message(app, db, smtp, held, env):
    mail = decision_mail(app, db, smtp, "anna@example.org")

    result = CliRunner().invoke(cli, ["inbound", "--stdin"], input=reply(mail, "stop"))

    assert result.exit_code == 0, result.output
    assert "The answer was recorded, and its sender gets a confirmation." in result.output
    assert choice_of(db, held, "anna@example.org") == "stop"


def test_inbound_stdin_refuses_an_empty_message(app, db, env):
    before = dump(db)

    result = CliRunner().invoke(cli, ["inbound", "--stdin"], input=b"")

    assert result.exit_code == 1
    assert "No message came on standard input; nothing was done." in result.output
    assert dump(db) == before


def test_inbound_without_a_mailbox_says_what_to_set(app, env):
    result = CliRunner().invoke(cli, ["inbound"])

    assert result.exit_code == 1
    assert "No inbound mailbox is set: set INBOUND_IMAP_HOST" in result.output


def test_imap_settings_need_an_address_and_a_login(tmp_path):
    base = {
        "BASE_URL": "http://127.0.0.1:5000",
        "TOKEN_RATE_LIMIT": "30 per minute",
        "PROXIES": 0,
        "SWEEP_BATCH": 5000,
        "MAIL_DEFAULT_SENDER": "twoyes <a@b.org>",
        "TIMEZONE": "Europe/Amsterdam",
        "LANGUAGE": "en",
        "DECISION_DAYS": 7,
        "REMINDER_DAYS": 2,
        "IDLE_DAYS": 60,
        "MIN_DECISION_SECONDS": 2,
        "RETENTION_DAYS": 730,
        "MAIL_TIMEOUT": 30,
        "RATELIMIT_STORAGE_URI": "memory://",
        "SECRET_KEY": "x",
    }
    with pytest.raises(ConfigError, match="TWOYES_INBOUND_ADDRESS is not"):
        load_settings(base | {"INBOUND_IMAP_HOST": "imap.example.org"}, str(tmp_path))
    with pytest.raises(ConfigError, match="needs TWOYES_INBOUND_IMAP_USERNAME"):
        load_settings(
            base | {"INBOUND_IMAP_HOST": "imap.example.org", "INBOUND_ADDRESS": INBOUND},
            str(tmp_path),
        )
    with pytest.raises(ConfigError, match="must be one address"):
        load_settings(base | {"INBOUND_ADDRESS": "not an address"}, str(tmp_path))


@pytest.mark.slow
def test_a_tick_without_an_inbound_mailbox_loads_no_imap(settings):
    """An idle tick stays as light as before: without INBOUND_IMAP_HOST no IMAP code loads."""
    code = (
        "import sys\nfrom twoyes.cli import cli\n"
        "cli(['init'], standalone_mode=False)\ncli(['tick'], standalone_mode=False)\n"
        "print('imaplib' in sys.modules, 'twoyes.mail.inbound' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_init_upgrades_an_outbox_that_knows_no_reply_mail(run, app, db, smtp, held):
    from twoyes import db as database

    mail = decision_mail(app, db, smtp, "anna@example.org")
    kept = [tuple(row) for row in db.conn.execute("SELECT * FROM outbox ORDER BY id")]
    # Back to version 7: the outbox of version 5, which knows no mail about a reply.
    for statement in (
        database.OUTBOX_V5.format(name="outbox_v7"),
        "INSERT INTO outbox_v7 SELECT * FROM outbox",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_v7 RENAME TO outbox",
        "PRAGMA user_version = 7",
    ):
        db.conn.execute(statement)
    before = dump(db)
    with pytest.raises(sqlite3.IntegrityError):  # the old CHECK knows no confirmation
        handle(app, db, reply(mail, "yes"))
    assert dump(db) == before  # and the reply left nothing behind

    result = run("init")

    assert result.exit_code == 0, result.output
    assert f"from version 7 to {database.SCHEMA_VERSION}" in result.stdout
    assert [tuple(row) for row in db.conn.execute("SELECT * FROM outbox ORDER BY id")] == kept
    assert handle(app, db, reply(mail, "yes"))["outcome"] == "recorded"
