"""No token reaches a log line: not from gunicorn with the shipped gunicorn.conf.py, not
from the development server, not from Flask's own error log."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from support import POLICY, ROOT, T0, deliver, free_port, links_in, token_of

from twoyes.logs import hide_tokens
from twoyes.sessions import record_session_done
from twoyes.web import create_app


def wait_for(url: str, process: subprocess.Popen, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server stopped: {process.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def visit(base: str, tokens: list[str], spellings=None) -> None:
    for token in tokens:
        for path in spellings(token) if spellings else plain_paths(token):
            try:
                urllib.request.urlopen(base + path, timeout=5).read()
            except urllib.error.HTTPError:
                pass  # a 404 for the welcome-back path of a decision token is fine


def plain_paths(token: str) -> list[str]:
    return [f"/d/{token}", f"/d/{token}/continue", f"/b/{token}"]


def encoded(text: str) -> str:
    return "".join(f"%{ord(character):02X}" for character in text)


def spelled_paths(token: str) -> list[str]:
    """Every way a client may write a link's path that a server still reads as that link (or
    nearly), each keeping the token, or its tail, in the request line."""
    return [
        f"/d/{encoded(token)}",  # all of it percent-encoded: the page opens
        f"/d/{token[:20]}{encoded(token[20])}{token[21:]}",  # one %7A-like escape in the middle
        f"/d/{encoded(token).lower()}/continue",
        f"/%64/{token}",
        f"/d%2F{token}",
        f"/d%2f{token}/stop",
        f"/%2564/{token}",  # encoded twice
        f"//d/{token}",
        f"/d//{token}",
        f"/D/{token}",
        f"/d/./{token}",
        f"/b/{token};x",
        f"/c/{token}/rounds/7",
    ]


def server_env(settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOYES_")}
    env.update({f"TWOYES_{key}": str(value) for key, value in settings.items()})
    return env


def real_tokens(app, db, engagement, smtp) -> list[str]:
    record_session_done(db, engagement, T0, POLICY)
    deliver(app, db)
    return [token_of(link) for m in smtp.messages for link in links_in(m)[:1]]


def run_server(command, settings, tokens, port, spellings=None):
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=server_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", process)
        visit(f"http://127.0.0.1:{port}", tokens, spellings)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    return output


@pytest.mark.slow
def test_gunicorn_with_the_shipped_config_logs_paths_without_tokens(
    app, db, engagement, smtp, settings
):
    tokens = real_tokens(app, db, engagement, smtp)
    port = free_port()
    gunicorn = ROOT / ".venv/bin/gunicorn"
    command = [str(gunicorn) if gunicorn.exists() else "gunicorn"]
    log = run_server(
        command + ["-b", f"127.0.0.1:{port}", "app:create_app()"], settings, tokens, port
    )
    assert '"GET /d/… HTTP/1.1" 200' in log, log  # the access log is there, tokenless
    assert '"GET /d/…/continue HTTP/1.1" 200' in log
    for token in tokens:
        assert token not in log


def test_the_development_server_logs_paths_without_tokens(app, db, engagement, smtp, settings):
    tokens = real_tokens(app, db, engagement, smtp)
    port = free_port()
    log = run_server(
        [sys.executable, "cli.py", "serve", "--port", str(port)], settings, tokens, port
    )
    assert "GET /d/… HTTP/1.1" in log, log
    for token in tokens:
        assert token not in log


def test_flasks_error_log_leaves_the_token_out(
    app, db, engagement, smtp, settings, caplog, tmp_path
):
    """A request that fails is logged with its path; the token is taken out first."""
    tokens = real_tokens(app, db, engagement, smtp)
    # The database cannot be opened (a folder stands in its place): Flask logs the failure.
    broken_app = create_app(settings | {"DATABASE": str(tmp_path)})
    broken_app.testing = False  # let the error handler log, as in production
    broken = broken_app.test_client()
    with caplog.at_level(logging.ERROR, logger=broken_app.logger.name):
        answer = broken.get(f"/d/{tokens[0]}")
    assert answer.status_code == 500
    assert any("/d/…" in record.getMessage() for record in caplog.records), caplog.text
    assert tokens[0] not in caplog.text


def leaks(log: str, token: str) -> list[str]:
    """What of a token a log line still shows: the token, or any 12 of its characters in a row
    however they are escaped."""
    readable = log
    for _ in range(3):  # percent-escapes, even escaped again, read as what they stand for
        readable = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), readable)
    return [token[i : i + 12] for i in range(len(token) - 11) if token[i : i + 12] in readable]


@pytest.mark.parametrize("spell", range(len(spelled_paths("A" * 43))))
def test_no_spelling_of_a_link_leaves_its_token_in_a_log_line(spell):
    token = "7QsCzF3kq9Lr0X_bT-eWm4Hn2Yp8Dv6Ja1Ug5Ki0Ox3"
    path = spelled_paths(token)[spell]
    line = f'127.0.0.1 [03/Dec/2026:10:00:00 +0000] "GET {path} HTTP/1.1" 200 512 3ms'

    hidden = hide_tokens(line)

    assert leaks(hidden, token) == [], hidden
    assert hidden.endswith('HTTP/1.1" 200 512 3ms')
    assert "\n" not in hidden


@pytest.mark.slow
def test_gunicorn_logs_no_token_however_the_link_is_spelled(app, db, engagement, smtp, settings):
    tokens = real_tokens(app, db, engagement, smtp)
    port = free_port()
    gunicorn = ROOT / ".venv/bin/gunicorn"
    command = [str(gunicorn) if gunicorn.exists() else "gunicorn"]
    log = run_server(
        command + ["-b", f"127.0.0.1:{port}", "app:create_app()"],
        settings,
        tokens,
        port,
        spelled_paths,
    )
    assert log.count('HTTP/1.1" 200') >= 2 * len(tokens), log  # the encoded links opened
    for token in tokens:
        assert leaks(log, token) == [], log
