"""A mail the SMTP server did not accept waits for the retry with its links, and is not sent.

The server is a real aiosmtpd one on 127.0.0.1 that, for one run, answers a 4xx at MAIL,
RCPT or DATA, or hangs up there instead of answering; the next run it accepts. Whatever
the failure, until the server said 250 to the data there is no `mail_sent` event, the mail
is queued again with the same tokens, and the links of the retried mail open their page.
An attempt counts when a mail is handed to the server; a `send` killed while the server held
a mail leaves it to the next run at once; a mail refused for good loses its links, and
`outbox retry` mails new ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from support import (
    POLICY,
    ROOT,
    SECRET,
    T0,
    Inbox,
    cli_env,
    deliver,
    iso,
    links_in,
    outbox_rows,
    serve_smtp,
    token_of,
)

from twoyes.sessions import record_session_done
from twoyes.times import from_db
from twoyes.tokens import link_token
from twoyes.web import create_app

TRY_LATER = "451 4.3.0 Please try again later"


class Faltering(Inbox):
    """Accepts like Inbox, except while `fault` is set: then it answers TRY_LATER at
    `fault`'s stage ('MAIL', 'RCPT' or 'DATA') of every mail, or with `hang_up` it closes
    the connection at that stage without a word."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: str | None = None
        self.hang_up = False

    def falters(self, server, stage: str) -> str | None:
        """The answer at this stage: None to go on as usual."""
        if self.fault != stage:
            return None
        if self.hang_up:
            server.transport.close()
        return TRY_LATER

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        if answer := self.falters(server, "MAIL"):
            return answer
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if answer := self.falters(server, "RCPT"):
            return answer
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if answer := self.falters(server, "DATA"):
            return answer
        return await super().handle_DATA(server, session, envelope)


class Refusing(Inbox):
    """Reads each mail, then refuses it for good: the mailbox does not exist."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await super().handle_DATA(server, session, envelope)
        return "550 5.1.1 No such mailbox"


class Stalling(Inbox):
    """Takes a mail's data and then keeps the sender waiting for its answer (`arrived` is
    set then), until `released`."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Event()
        self.released = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.arrived.set()
        while not self.released.is_set():
            await asyncio.sleep(0.05)
        return "451 4.3.0 Too late"


@pytest.fixture
def smtp():
    """This module's SMTP server, for the app of the `settings` fixture."""
    with serve_smtp(Faltering()) as server:
        yield server


def mails_sent(db) -> list[int]:
    """The mail ids of the `mail_sent` events, in order."""
    rows = db.conn.execute("SELECT detail FROM events WHERE kind = 'mail_sent' ORDER BY id")
    return [json.loads(detail)["mail_id"] for (detail,) in rows]


@pytest.mark.parametrize(
    ("stage", "hang_up"),
    [("MAIL", False), ("RCPT", False), ("DATA", False), ("RCPT", True), ("DATA", True)],
    ids=["451-at-MAIL", "451-at-RCPT", "451-at-DATA", "hang-up-at-RCPT", "hang-up-at-DATA"],
)
def test_a_mail_the_server_did_not_accept_keeps_its_links_and_is_not_sent(
    app, db, client, engagement, smtp, stage, hang_up
):
    record_session_done(db, engagement, T0, POLICY)
    queued = {row["id"]: json.loads(row["context"]) for row in outbox_rows(db)}
    # The tokens its links will carry: made from SECRET_KEY and each link's nonce.
    tokens = {
        mail_id: link_token(SECRET, context["decide_nonce"]) for mail_id, context in queued.items()
    }
    assert len(tokens) == 2, "a decision mail for Bob and one for Anna"
    smtp.fault, smtp.hang_up = stage, hang_up
    tried_at = T0 + timedelta(minutes=1)

    report = deliver(app, db, now=tried_at)

    assert (report.sent, report.retrying, report.failed, report.waiting) == (0, 2, 0, 2)
    assert smtp.messages == []
    assert mails_sent(db) == []
    # An attempt counts when a mail was handed to the server: after a hang-up, the next
    # mail never was.
    handed = [1, 0] if hang_up else [1, 1]
    assert [row["attempts"] for row in outbox_rows(db)] == handed
    for row in outbox_rows(db):
        assert (row["status"], row["sent_at"]) == ("queued", None)
        assert from_db(row["next_attempt_at"]) > tried_at
        assert ("451" in row["last_error"]) != hang_up, row["last_error"]
        assert json.loads(row["context"]) == queued[row["id"]], "the links wait with the mail"
    for token in tokens.values():
        assert client.get(f"/d/{token}").status_code == 200

    smtp.fault = None
    retry_at = max(from_db(row["next_attempt_at"]) for row in outbox_rows(db))
    report = deliver(app, db, now=retry_at)

    assert (report.sent, report.retrying, report.waiting) == (2, 0, 0)
    assert sorted(mails_sent(db)) == sorted(tokens)
    mailed = {token_of(link) for message in smtp.messages for link in links_in(message)}
    assert mailed == set(tokens.values())
    for token in mailed:
        assert client.get(f"/d/{token}").status_code == 200
    assert [row["attempts"] for row in outbox_rows(db)] == [tries + 1 for tries in handed]
    for row in outbox_rows(db):
        assert row["status"] == "sent"
        assert "decide_nonce" not in json.loads(row["context"]), "wiped once delivered"


# --- attempts, and mail killed in flight (issue 16) -----------------------------------------


@pytest.mark.slow
def test_a_mail_killed_in_flight_is_tried_again_by_the_next_run_and_counts_only_if_handed(
    app, db, settings, engagement, smtp
):
    """`send` is killed while the server holds the first mail: that mail was handed on (one
    attempt), the second never was (none). The next run takes both over at once, not
    CLAIM_MINUTES later, and delivers them."""
    record_session_done(db, engagement, T0, POLICY)
    with serve_smtp(Stalling()) as stalling:
        environment = cli_env(settings | {"MAIL_PORT": stalling.port})
        sending = subprocess.Popen(
            [sys.executable, "cli.py", "send", "--now", iso(T0 + timedelta(minutes=1))],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert stalling.arrived.wait(timeout=60), "the first mail never reached the server"
            assert [row["status"] for row in outbox_rows(db)] == ["sending", "sending"]
            assert [row["attempts"] for row in outbox_rows(db)] == [1, 0]
        finally:
            os.kill(sending.pid, signal.SIGKILL)
            sending.wait(timeout=20)
            stalling.released.set()

    report = deliver(app, db, now=T0 + timedelta(minutes=2))

    assert (report.sent, report.waiting) == (2, 0)
    assert len(smtp.messages) == 2
    assert [(row["status"], row["attempts"]) for row in outbox_rows(db)] == [
        ("sent", 2),
        ("sent", 1),
    ]


# --- a mail that failed for good (issue 16) -------------------------------------------------


def test_a_mail_that_failed_for_good_loses_its_links_and_a_retry_mails_new_ones(
    app, db, client, run, settings, people, engagement, smtp
):
    record_session_done(db, engagement, T0, POLICY)
    with serve_smtp(Refusing()) as refusing:
        refused_by = create_app({"TESTING": True, **settings, "MAIL_PORT": refusing.port})
        report = deliver(refused_by, db, now=T0 + timedelta(minutes=1))
    assert report.failed == 2
    refused_links = {token_of(link) for message in refusing.messages for link in links_in(message)}
    assert len(refused_links) == 2
    for token in refused_links:
        assert client.get(f"/d/{token}").status_code == 404, "nobody got it: it opens nothing"

    anna = outbox_rows(db, to_email=people["anna"])[0]
    assert run("outbox", "retry", anna["id"]).exit_code == 0  # queued at the real clock
    report = deliver(app, db)
    assert report.sent == 1
    (mail,) = smtp.messages
    (fresh,) = {token_of(link) for link in links_in(mail)}
    assert fresh not in refused_links
    assert client.get(f"/d/{fresh}").status_code == 200
    for token in refused_links:
        assert client.get(f"/d/{token}").status_code == 404
