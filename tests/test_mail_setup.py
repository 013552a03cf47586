"""Where mail goes, by the settings, through the real command line: to private .eml files only
in development (a loopback BASE_URL); to nobody, loudly and losing nothing, on a production
BASE_URL without a mail server; to a real SMTP server (aiosmtpd) once one is set, logged in, on
a new connection after MAIL_MAX_EMAILS. And what `status` says about mail that waits.
"""

from __future__ import annotations

import email
import json
import stat
from collections import Counter
from datetime import timedelta
from email import policy
from email.utils import parseaddr
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from support import LINK, POLICY, T0, free_port, html_of, links_in, serve_smtp, text_of

from twoyes.engagements import start_engagement
from twoyes.sessions import record_session_done

AMSTERDAM = ZoneInfo("Europe/Amsterdam")  # the test settings' TIMEZONE
LOOPBACK = "http://127.0.0.1:5000"
PRODUCTION = "https://coach.example.org"


def iso(moment) -> str:
    return moment.isoformat()


def mails(db) -> list[tuple]:
    """Each mail's kind, status, attempts, sent_at and last_error, in the order queued."""
    return [
        tuple(row)
        for row in db.conn.execute(
            "SELECT kind, status, attempts, sent_at, last_error FROM outbox ORDER BY id"
        )
    ]


def events_of(db, kind: str) -> int:
    return db.conn.execute("SELECT count(*) FROM events WHERE kind = ?", [kind]).fetchone()[0]


def status_text(run, *args: str) -> str:
    """`status` as one line: rich wraps long sentences at 100 columns."""
    result = run("status", *args)
    assert result.exit_code == 0, result.stderr
    return " ".join(result.stdout.split())


def without_mail_server(monkeypatch, base_url: str) -> None:
    monkeypatch.delenv("TWOYES_MAIL_SERVER")
    monkeypatch.setenv("TWOYES_BASE_URL", base_url)


# --- development: .eml files -----------------------------------------------------------------


def test_on_a_loopback_base_url_without_a_mail_server_send_writes_private_eml_files(
    run, db, engagement, smtp, env, monkeypatch
):
    without_mail_server(monkeypatch, LOOPBACK)
    folder = Path(env["INSTANCE_PATH"]) / "mail"
    folder.mkdir(parents=True)
    folder.chmod(0o755)  # made by someone else, open to every local user
    stale = folder / "000001-decision.eml"  # left by a database that was started afresh
    stale.write_text("an old mail")
    stale.chmod(0o644)
    record_session_done(db, engagement, T0, POLICY)

    result = run("send", "--now", iso(T0 + timedelta(minutes=1)))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    files = sorted(folder.iterdir())
    assert [path.name for path in files] == ["000001-decision.eml", "000002-decision.eml"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [stat.S_IMODE(path.stat().st_mode) for path in files] == [0o600, 0o600]

    recipients = set()
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        recipients.add(parseaddr(message["To"])[1])
        assert message["Subject"] == "Another session?"
        links = links_in(message)
        assert {link.rsplit("/", 1)[-1] for link in links} >= {"continue", "stop"}
        assert all(link.startswith(f"{LOOPBACK}/d/") for link in links)
        assert sorted(set(links)) == sorted(set(LINK.findall(html_of(message))))
        assert str(path) in result.stdout
        for link in links:
            assert link in result.stdout
    assert recipients == {"bob@example.org", "anna@example.org"}
    assert smtp.messages == []
    assert [row[:2] for row in mails(db)] == [("decision", "sent"), ("decision", "sent")]
    contexts = [json.loads(row[0]) for row in db.conn.execute("SELECT context FROM outbox")]
    assert not [context for context in contexts if "decide_nonce" in context]


def words_of(path: Path) -> str:
    """An .eml file's text and HTML, decoded."""
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    return text_of(message) + html_of(message)


def test_eml_files_hold_no_link_after_their_round_closed_and_go_with_their_mail(
    run, db, engagement, smtp, env, monkeypatch
):
    """Issue 16: a decision mail's file goes when its round closes, so no file holds its
    links; every file goes when its mail is blanked (retention), as the database forgets."""
    without_mail_server(monkeypatch, LOOPBACK)
    folder = Path(env["INSTANCE_PATH"]) / "mail"
    record_session_done(db, engagement, T0, POLICY)
    assert run("send", "--now", iso(T0 + timedelta(minutes=1))).exit_code == 0
    asked = sorted(folder.glob("*.eml"))
    assert [path.name for path in asked] == ["000001-decision.eml", "000002-decision.eml"]
    decision_links = {link for path in asked for link in LINK.findall(words_of(path))}
    tokens = {link.split("/")[4] for link in decision_links}
    assert len(tokens) == 2

    # Nobody answered: `tick` closes the round at the deadline and writes the outcome mails.
    closed_at = T0 + timedelta(days=7, minutes=1)
    assert run("tick", "--now", iso(closed_at)).exit_code == 0
    assert run("send", "--now", iso(closed_at)).exit_code == 0
    left = sorted(folder.glob("*.eml"))
    assert [path.name for path in left] == ["000003-outcome.eml", "000004-outcome.eml"]
    for path in left:
        assert not [token for token in tokens if token in words_of(path)]

    # Thirty days after delivery the outbox blanks the outcome mails; their files go too.
    assert run("tick", "--now", iso(closed_at + timedelta(days=31))).exit_code == 0
    assert list(folder.glob("*.eml")) == []
    folder.joinpath("notes.txt").write_text("mine")  # anything else there is the developer's
    assert run("tick", "--now", iso(closed_at + timedelta(days=32))).exit_code == 0
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]


# --- production without a mail server: nothing goes, nothing is lost, everybody hears ----------


def test_a_production_base_url_without_a_mail_server_keeps_every_mail_until_one_is_set(
    run, db, engagement, smtp, env, monkeypatch
):
    without_mail_server(monkeypatch, PRODUCTION)
    instance = Path(env["INSTANCE_PATH"])
    config = instance / "config.toml"
    record_session_done(db, engagement, T0, POLICY)
    past_deadline = T0 + timedelta(days=POLICY.decision_days, hours=1)

    # tick does all its other work: the round closes and the engagement ends (R4) ...
    result = run("tick", "--now", iso(past_deadline))
    assert result.exit_code == 1
    assert "rounds closed: 1" in result.stdout and "mails sent: 0" in result.stdout
    (round_,) = db.conn.execute("SELECT status, outcome FROM rounds").fetchall()
    assert tuple(round_) == ("closed", "stop")
    (ending,) = db.conn.execute("SELECT status, end_reason FROM engagements").fetchall()
    assert tuple(ending) == ("ended", "undecided")
    # ... and says, in one sentence, what is missing and where to set it.
    refusal = (
        f"No mail was sent: set MAIL_SERVER in {config} (or TWOYES_MAIL_SERVER); 4 mail(s) wait.\n"
    )
    assert result.stderr == refusal
    # Not one mail is marked sent, claimed or counted as tried.
    queued = [
        ("decision", "queued", 0, None, None),
        ("decision", "queued", 0, None, None),
        ("outcome", "queued", 0, None, None),
        ("outcome", "queued", 0, None, None),
    ]
    assert mails(db) == queued
    assert events_of(db, "mail_sent") == 0
    assert not (instance / "mail").exists()
    assert smtp.messages == []

    # send refuses the same way, and so does every later run.
    result = run("send", "--now", iso(past_deadline + timedelta(hours=1)))
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", refusal)
    assert mails(db) == queued

    # status tells the coach why the mail waits.
    text = status_text(run)
    assert (
        f"4 mail(s) wait because no mail server is set: set MAIL_SERVER in {config} "
        "(or TWOYES_MAIL_SERVER), and the next send or tick delivers them." in text
    )
    data = json.loads(run("status", "--json").stdout)
    assert data["waiting_mail"] == {
        "queued": 4,
        "retrying": 0,
        "sending": 0,
        "next_attempt_at": None,
        "last_error": None,
        "no_mail_server": True,
    }

    # The operator does what the sentence says; the next tick delivers each mail once.
    instance.mkdir(exist_ok=True)
    config.write_text('MAIL_SERVER = "127.0.0.1"\n')  # MAIL_PORT: the test server's, from env
    result = run("tick", "--now", iso(past_deadline + timedelta(hours=2)))
    assert (result.exit_code, result.stderr) == (0, "")
    assert "mails sent: 4" in result.stdout
    later = run("tick", "--now", iso(past_deadline + timedelta(days=1)))
    assert (later.exit_code, later.stdout, later.stderr) == (0, "", "")

    assert len(smtp.messages) == 4
    assert set(Counter(message["Message-ID"] for message in smtp.messages).values()) == {1}
    assert Counter(parseaddr(message["To"])[1] for message in smtp.messages) == {
        "anna@example.org": 2,
        "bob@example.org": 2,
    }
    assert all(link.startswith(f"{PRODUCTION}/") for m in smtp.messages for link in links_in(m))
    assert [row[1:3] for row in mails(db)] == [("sent", 1)] * 4
    assert events_of(db, "mail_sent") == 4
    assert "No mail is waiting." in status_text(run)


@pytest.mark.parametrize("command", ["send", "tick"])
def test_without_a_mail_server_in_production_an_empty_queue_still_exits_1(
    run, db, people, env, monkeypatch, command
):
    """Cron hears of the missing setting before the first client's mail has to wait for it."""
    without_mail_server(monkeypatch, PRODUCTION)
    result = run(command)
    config = Path(env["INSTANCE_PATH"]) / "config.toml"
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"No mail can be sent: set MAIL_SERVER in {config} (or TWOYES_MAIL_SERVER); "
        "none waits yet.\n"
    )


def test_tick_json_says_that_no_mail_server_is_set(run, db, engagement, monkeypatch):
    without_mail_server(monkeypatch, PRODUCTION)
    record_session_done(db, engagement, T0, POLICY)
    result = run("tick", "--json", "--now", iso(T0 + timedelta(minutes=1)))
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert (data["mails_sent"], data["mails_waiting"], data["no_mail_server"]) == (0, 2, True)
    assert result.stderr.startswith("No mail was sent: set MAIL_SERVER in ")


# --- status: how much mail waits, and why ----------------------------------------------------


def test_status_says_how_much_mail_waits_and_why(run, db, people, engagement, monkeypatch):
    assert "No mail is waiting." in status_text(run)
    record_session_done(db, engagement, T0, POLICY)
    assert "2 mail(s) are queued for the next send or tick." in status_text(run)

    monkeypatch.setenv("TWOYES_MAIL_PORT", str(free_port()))  # nothing listens there
    tried_at = T0 + timedelta(minutes=1)
    assert run("send", "--now", iso(tried_at)).exit_code == 0
    other = start_engagement(db, people["coach"], [people["carl"]], T0)
    record_session_done(db, other, T0, POLICY)

    text = status_text(run, "--now", iso(tried_at))
    retry = (tried_at + timedelta(minutes=2)).astimezone(AMSTERDAM)
    when = f"{retry:%a} {retry.day} {retry:%b} {retry.year} {retry:%H:%M}"
    assert (
        f"2 mail(s) could not be delivered yet and will be retried, the next at {when}; "
        "the last error: could not reach the mail server:" in text
    )
    assert "2 mail(s) are queued for the next send or tick." in text
    assert "no mail server is set" not in text
    waiting = json.loads(run("status", "--json").stdout)["waiting_mail"]
    assert (waiting["queued"], waiting["retrying"], waiting["sending"]) == (2, 2, 0)
    assert waiting["last_error"].startswith("could not reach the mail server:")
    assert waiting["no_mail_server"] is False


# --- a real SMTP server with a login -----------------------------------------------------------


class Logins:
    """An SMTP server that takes mail only after a login, and accepts `allowed` good logins."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.good: list[bool] = []
        self.messages: list[email.message.EmailMessage] = []
        self.peers: list[tuple] = []

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        good = auth_data == LoginPassword(b"practice", b"right")
        accepted = good and self.good.count(True) < self.allowed
        self.good.append(accepted)
        return AuthResult(success=accepted, handled=False)

    async def handle_MAIL(self, server, session, envelope, address, options):  # noqa: N802
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        self.peers.append(session.peer)
        return "250 OK"


def test_a_login_is_used_and_a_failed_reconnect_after_mail_max_emails_sends_nothing_twice(
    run, db, people, engagement, monkeypatch
):
    other = start_engagement(db, people["coach"], [people["carl"]], T0)
    record_session_done(db, engagement, T0, POLICY)
    record_session_done(db, other, T0, POLICY)
    server = Logins(allowed=1)
    options = {"authenticator": server, "auth_require_tls": False}
    with serve_smtp(server, **options):
        monkeypatch.setenv("TWOYES_MAIL_PORT", str(server.port))
        monkeypatch.setenv("TWOYES_MAIL_USERNAME", "practice")
        monkeypatch.setenv("TWOYES_MAIL_PASSWORD", "wrong")
        refused = run("send", "--now", iso(T0 + timedelta(minutes=1)))
        assert refused.exit_code == 0, refused.stderr
        assert "4 mail(s) wait for a later retry." in refused.stderr
        assert {row[1:3] for row in mails(db)} == {("queued", 1)}
        assert all("535" in row[4] for row in mails(db))
        assert server.messages == []

        # The right password; the server takes one login more, and MAIL_MAX_EMAILS is 2: the
        # third mail's new connection is refused after the second mail was accepted.
        monkeypatch.setenv("TWOYES_MAIL_PASSWORD", "right")
        monkeypatch.setenv("TWOYES_MAIL_MAX_EMAILS", "2")
        half = run("send", "--now", iso(T0 + timedelta(minutes=3)))
        assert half.exit_code == 0, half.stderr
        assert half.stdout == "Delivered 2 mail(s).\n"
        assert "2 mail(s) wait for a later retry." in half.stderr
        # An attempt counts when a mail is handed on: the fourth never was in this run.
        handed = [("sent", 2)] * 2 + [("queued", 2), ("queued", 1)]
        assert [row[1:3] for row in mails(db)] == handed
        assert server.good.count(True) == 1

        server.allowed = 3
        rest = run("send", "--now", iso(T0 + timedelta(minutes=10)))
        assert (rest.exit_code, rest.stdout) == (0, "Delivered 2 mail(s).\n")

    assert len(server.messages) == 4
    assert set(Counter(message["Message-ID"] for message in server.messages).values()) == {1}
    assert [row[1] for row in mails(db)] == ["sent"] * 4


@pytest.mark.parametrize("value", ["-1", "2.5", "many", "true"])
def test_a_mail_max_emails_that_cannot_work_is_one_sentence_and_changes_nothing(
    run, db, engagement, smtp, monkeypatch, value
):
    record_session_done(db, engagement, T0, POLICY)
    monkeypatch.setenv("TWOYES_MAIL_MAX_EMAILS", value)
    result = run("send")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: The configuration is not right: TWOYES_MAIL_MAX_EMAILS must be a whole number "
        "of 1 or more, like 100.\n"
    )
    assert {row[1:3] for row in mails(db)} == {("queued", 0)}
    assert smtp.messages == []
