"""Real parts for every test: a SQLite file in a temporary folder, an SMTP server on
127.0.0.1 (aiosmtpd), the real Flask app and the real command line. Nothing of
our own is mocked; the clock is moved by passing `now`.
"""

from __future__ import annotations

import contextlib
import email
import os
import re
import socket
import sys
import threading
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from hypothesis import settings as hypothesis_settings

# In CI the property tests draw the same examples every run, so a landing never depends on
# luck; on a developer's machine they keep exploring (and keep what they find in .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twoyes import db as database  # noqa: E402
from twoyes.cli import cli  # noqa: E402
from twoyes.engagements import start_engagement  # noqa: E402
from twoyes.people import add_person  # noqa: E402
from twoyes.rules import Policy  # noqa: E402
from twoyes.web import create_app  # noqa: E402

# The tests start "now", so that the web app (which reads the real clock) and the
# domain calls (which take `now`) agree; later moments are T0 + timedelta(...).
T0 = datetime.now(UTC).replace(second=0, microsecond=0)
POLICY = Policy(decision_days=7, reminder_days=2, idle_days=60)
LINK = re.compile(r"https?://[^\s\"<>]+/(?:d|b)/[A-Za-z0-9_-]{43}(?:/continue|/stop)?")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """What the SMTP server accepted, parsed."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if address in m["To"]]

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.envelopes.clear()


def text_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message: email.message.EmailMessage) -> str:
    return message.get_body(("html",)).get_content()


def links_in(message: email.message.EmailMessage) -> list[str]:
    return LINK.findall(text_of(message))


def token_of(link: str) -> str:
    return re.search(r"/(?:d|b)/([A-Za-z0-9_-]{43})", link).group(1)


@contextlib.contextmanager
def serve_smtp(handler, **options):
    """Run an aiosmtpd handler as a real server on 127.0.0.1, on a free port (handler.port),
    for the length of the block; `options` go to aiosmtpd's Controller (TLS, for one)."""
    handler.port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port, **options)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture
def smtp():
    """A real SMTP server on 127.0.0.1, on a free port, collecting what it accepts."""
    with serve_smtp(Inbox()) as inbox:
        yield inbox


@pytest.fixture
def settings(tmp_path, smtp):
    """The app's settings for one test: its own database file and the test SMTP server."""
    return {
        "DATABASE": str(tmp_path / "twoyes.db"),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "SECRET_KEY": "test-secret",
        "BASE_URL": "http://twoyes.test",
        "MIN_DECISION_SECONDS": 0,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": smtp.port,
        "MAIL_DEFAULT_SENDER": "Practice <practice@example.org>",
        "TIMEZONE": "Europe/Amsterdam",
        # Tests open many links from one address; test_hostile checks the real limit.
        "TOKEN_RATE_LIMIT": "10000 per minute",
    }


@pytest.fixture
def env(settings, monkeypatch):
    """The same settings as TWOYES_ environment variables, for the command line."""
    for key, value in settings.items():
        monkeypatch.setenv(f"TWOYES_{key}", str(value))
    return settings


@pytest.fixture
def app(settings):
    app = create_app({"TESTING": True, **settings})
    with app.app_context():
        connection = database.connect(settings["DATABASE"])
        database.init_db(connection)
        connection.close()
    return app


@pytest.fixture
def db(app):
    connection = database.connect(app.config["DATABASE"])
    yield connection
    connection.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def run(env, app):
    """Run `python cli.py ...` in-process; returns Click's result (exit code, stdout, stderr)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, [str(arg) for arg in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def people(db):
    """A coach and two clients."""
    add_person(db, "coach", "Bob Coach", "bob@example.org", "en", T0)
    add_person(db, "client", "Anna de Vries", "anna@example.org", "en", T0)
    add_person(db, "client", "Carl Client", "carl@example.org", "en", T0)
    return {"coach": "bob@example.org", "anna": "anna@example.org", "carl": "carl@example.org"}


@pytest.fixture
def engagement(db, people):
    """An individual engagement of Bob with Anna, started at T0."""
    return start_engagement(db, people["coach"], [people["anna"]], T0, title="Career")


def deliver(app, db, now=None):
    """Deliver everything due over the real SMTP server."""
    from twoyes.mail.delivery import deliver_due_mail

    # Mail queued by the web app is stamped with the real clock, so "due" is never before it.
    when = now or max(T0, datetime.now(UTC)) + timedelta(minutes=1)
    with app.app_context():
        return deliver_due_mail(db, when, echo=lambda line: None)


def year_unless_now(year: int) -> str:
    """What follows a day and month people read: " 2027" in another year, nothing in this one
    (on the practice's wall clock in Amsterdam, as the tests set it)."""
    from zoneinfo import ZoneInfo

    return "" if year == datetime.now(ZoneInfo("Europe/Amsterdam")).year else f" {year}"


def dump(db) -> str:
    """The whole database as SQL, to compare before and after a refused request."""
    return "\n".join(db.conn.iterdump())
