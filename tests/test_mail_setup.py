"""Where mail goes, by the settings, through the real command line: to a real SMTP server
(aiosmtpd), logged in, on a new connection after MAIL_MAX_EMAILS.
"""

from __future__ import annotations

import email
from collections import Counter
from datetime import timedelta
from email import policy

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import POLICY, T0, serve_smtp

from twoyes.engagements import start_engagement
from twoyes.sessions import record_session_done


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
        assert [row[1:3] for row in mails(db)] == [("sent", 2)] * 2 + [("queued", 2)] * 2
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
