"""Reading replies from a real IMAP server: Debian's dovecot on 127.0.0.1, with TLS that
must verify, started for each test with its own configuration (support.serve_imap).

`tick` and `inbound` read the mailbox, hand each message to the core and move it to
`processed` only after its transaction committed: nothing is lost, nothing handled twice,
also when the process is killed between the two.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
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
    reply,
    serve_imap,
    text_of,
)

from twoyes.cli import cli
from twoyes.sessions import record_session_done

# A real dovecot serves each test.
pytestmark = pytest.mark.slow


@pytest.fixture
def mailbox(tmp_path):
    with serve_imap(tmp_path / "imap") as box:
        yield box


@pytest.fixture
def settings(settings, mailbox):
    return settings | {"INBOUND_ADDRESS": INBOUND} | mailbox.settings()


@pytest.fixture
def held(db, engagement):
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    return round_id


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_tick_reads_the_mailbox_records_and_confirms_in_one_run(app, db, smtp, held, mailbox, env):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    answer = reply(mail, "Yes!\n\nOn Thu, 3 Dec 2026, Practice wrote:\n> Another session?")
    away = reply(mail, "I am away.", headers={"Auto-Submitted": "auto-replied"})
    stranger = reply(mail, "stop", sender="Carl Client <carl@example.org>")
    mailbox.deliver(answer, away, stranger)
    smtp.clear()

    result = invoke("tick", "--now", (T0 + timedelta(hours=1)).isoformat())

    assert result.exit_code == 0, result.output
    assert choice_of(db, held, "anna@example.org") == "continue"
    assert mailbox.message_ids("INBOX") == []
    assert len(mailbox.message_ids("processed")) == 3
    # The confirmation and the forward went out in the same tick.
    (confirmation,) = smtp.to("anna@example.org")
    assert "We recorded your answer: another session would be useful." in text_of(confirmation)
    (forward,) = smtp.to("practice@example.org")
    assert forward["Subject"] == "A reply from Carl Client"


def test_the_same_reply_delivered_twice_counts_once(app, db, smtp, held, mailbox, env):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    twice = reply(mail, "stop", message_id="<twice@mail.example.net>")
    mailbox.deliver(twice, twice)

    result = invoke("inbound", "--json", "--now", (T0 + timedelta(hours=1)).isoformat())

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["handled"] == {"duplicate": 1, "recorded": 1}
    assert choice_of(db, held, "anna@example.org") == "stop"
    assert mailbox.message_ids("processed") == ["<twice@mail.example.net>"] * 2
    recorded = db.conn.execute("SELECT count(*) FROM outbox WHERE kind = 'reply_recorded'")
    assert recorded.fetchone()[0] == 1


def test_a_certificate_that_does_not_verify_is_refused(
    app, db, smtp, held, mailbox, env, monkeypatch
):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    mailbox.deliver(reply(mail, "stop"))
    monkeypatch.setenv("TWOYES_INBOUND_IMAP_CA_FILE", "")  # the system's CAs know it not

    result = invoke("inbound")

    assert result.exit_code == 1
    assert "its certificate does not verify" in result.output
    assert "set INBOUND_IMAP_CA_FILE" in result.output
    assert choice_of(db, held, "anna@example.org") is None
    assert len(mailbox.message_ids("INBOX")) == 1


def test_a_refused_login_is_one_sentence_and_tick_still_delivers(
    app, db, smtp, held, mailbox, env, monkeypatch
):
    monkeypatch.setenv("TWOYES_INBOUND_IMAP_PASSWORD", "wrong")
    smtp.clear()

    result = invoke("tick", "--now", (T0 + timedelta(minutes=1)).isoformat())

    assert result.exit_code == 1
    assert "refused the login" in result.output
    assert "Traceback" not in result.output
    # Everything else tick does was done: the decision mails went out.
    assert smtp.to("anna@example.org")


class Gate:
    """A plain TCP relay in front of the IMAP server (TLS passes through it untouched) that
    stops passing the client's words on once the database holds a handled message: the
    client's next command, the move, never arrives, and the test kills the client there."""

    def __init__(self, target_port: int, database: str) -> None:
        self.target_port, self.database = target_port, database
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        self.sockets = [self.listener]
        self.threads = [threading.Thread(target=self.accept, daemon=True)]
        self.threads[0].start()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(10)

    def committed(self) -> bool:
        with contextlib.closing(sqlite3.connect(self.database)) as connection:
            return connection.execute("SELECT count(*) FROM inbound_messages").fetchone()[0] > 0

    def accept(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, server]
            back = threading.Thread(target=self.pipe, args=(server, client, False), daemon=True)
            self.threads.append(back)
            back.start()
            self.pipe(client, server, True)

    def pipe(self, source, target, gated: bool) -> None:
        # A killed client, or the gate closing at the end, ends the relay.
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if gated and self.committed():
                    self.closed.set()
                    return
                target.sendall(data)


@pytest.mark.slow
def test_killed_between_commit_and_move_the_next_run_has_no_second_effect(
    app, db, smtp, held, mailbox, settings
):
    mail = decision_mail(app, db, smtp, "anna@example.org")
    mailbox.deliver(reply(mail, "yes", message_id="<killed@mail.example.net>"))
    keys = {key: str(value) for key, value in settings.items() if key.startswith("INBOUND_")}
    with Gate(mailbox.port, settings["DATABASE"]) as gate:
        environment = cli_env(settings, **keys) | {"TWOYES_INBOUND_IMAP_PORT": str(gate.port)}
        run = subprocess.Popen(
            [sys.executable, "cli.py", "inbound"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert gate.closed.wait(60), run.communicate(timeout=5)
        os.kill(run.pid, signal.SIGKILL)
        run.communicate(timeout=10)

    # Killed after the commit, before the move: recorded, and still in the folder.
    assert choice_of(db, held, "anna@example.org") == "continue"
    assert mailbox.message_ids("INBOX") == ["<killed@mail.example.net>"]

    again = subprocess.run(
        [sys.executable, "cli.py", "inbound", "--json"],
        cwd=ROOT,
        env=cli_env(settings, **keys),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["handled"] == {"duplicate": 1}
    assert mailbox.message_ids("INBOX") == []
    assert mailbox.message_ids("processed") == ["<killed@mail.example.net>"]
    counts = db.conn.execute(
        "SELECT (SELECT count(*) FROM outbox WHERE kind = 'reply_recorded'),"
        " (SELECT count(*) FROM events WHERE kind = 'decision_recorded')"
    ).fetchone()
    assert tuple(counts) == (1, 1)


def test_check_tries_the_inbound_mailbox(app, db, mailbox, env, monkeypatch):
    trusted = invoke("check", "--json")
    monkeypatch.setenv("TWOYES_INBOUND_IMAP_CA_FILE", "")
    untrusted = invoke("check", "--json")

    def verdict(result) -> dict:
        return next(row for row in json.loads(result.output) if row["check"] == "inbound mailbox")

    assert verdict(trusted)["ok"], trusted.output
    assert "TLS verified, folder INBOX" in verdict(trusted)["message"]
    assert not verdict(untrusted)["ok"]
    assert "certificate does not verify" in verdict(untrusted)["message"]
    assert untrusted.exit_code == 1
