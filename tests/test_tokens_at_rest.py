"""No raw token in the database files, ever (issue 16): while a real server holds its
connection to the database, neither the file nor its write-ahead log (-wal) nor its index
(-shm) holds any token that `send` mailed, of any kind of link."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from support import POLICY, ROOT, T0, cli_env, free_port, iso

from twoyes.coach_view import mail_coach_link
from twoyes.rounds import close_overdue_rounds
from twoyes.sessions import record_session_done

# gunicorn and `cli.py send` as real processes.
pytestmark = pytest.mark.slow

TOKEN_IN_LINK = re.compile(r"https?://[^\s\"<>]+?/(?:d|b|c)/([A-Za-z0-9_-]{43})")


def serve(settings: dict, port: int) -> subprocess.Popen:
    """gunicorn with the shipped gunicorn.conf.py, answering once its /healthz does."""
    environment = cli_env(settings) | {"TWOYES_MIN_DECISION_SECONDS": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "app:create_app()"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn stopped"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise AssertionError("gunicorn did not answer")


def send(settings: dict, now) -> None:
    done = subprocess.run(
        [sys.executable, "cli.py", "send", "--now", iso(now)],
        cwd=ROOT,
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def open_links(smtp, port: int) -> set[str]:
    """Open every link of the mails that arrived since the last call on the running server
    (all answer 200, so the server holds its connection); returns their tokens."""
    texts = "\n".join(message.get_body(("plain",)).get_content() for message in smtp.messages)
    smtp.clear()
    for path in set(re.findall(r"/(?:d|b|c)/[A-Za-z0-9_-]{43}", texts)):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as page:
            assert page.status == 200, path
    return set(TOKEN_IN_LINK.findall(texts))


def test_no_mailed_token_lies_in_the_database_files_while_the_server_runs(
    db, settings, people, engagement, smtp
):
    record_session_done(db, engagement, T0, POLICY)  # decision links, the coach's overview
    mail_coach_link(db, people["coach"], T0)  # a sign-in link
    port = free_port()
    server = serve(settings, port)
    try:
        send(settings, T0 + timedelta(minutes=1))
        opened = open_links(smtp, port)
        # Silence past the deadline: outcome mails, Anna's with a welcome-back link.
        close_overdue_rounds(db, T0 + timedelta(days=7, minutes=1))
        send(settings, T0 + timedelta(days=7, minutes=2))
        tokens = open_links(smtp, port) | opened
        assert len(tokens) == 6, tokens
        files = [Path(settings["DATABASE"] + ending) for ending in ("", "-wal", "-shm")]
        assert all(path.exists() for path in files)
        assert files[1].stat().st_size > 0, "the write-ahead log is in use"
        stored = b"".join(path.read_bytes() for path in files)
        assert [token for token in tokens if token.encode() in stored] == []
    finally:
        server.terminate()
        server.wait(timeout=20)
