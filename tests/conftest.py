"""Real parts for every test: a SQLite file in a temporary folder, an SMTP server on
127.0.0.1 (aiosmtpd), the real Flask app and the real command line. Nothing of
our own is mocked; the clock is moved by passing `now`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import settings as hypothesis_settings
from support import ROOT, SECRET, T0, Inbox, catalogue, serve_smtp

from twoyes import db as database
from twoyes.cli import cli
from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.web import create_app

# In CI the property tests draw the same examples every run, so a landing never depends on
# luck; on a developer's machine they keep exploring (and keep what they find in .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture
def smtp():
    """A real SMTP server on 127.0.0.1, on a free port, collecting what it accepts."""
    with serve_smtp(Inbox()) as inbox:
        yield inbox


@pytest.fixture(scope="module")
def inbox():
    """The same real SMTP server as `smtp`, kept for a whole module: for the browser tests,
    which serve one practice to Chromium for all their tests."""
    with serve_smtp(Inbox()) as inbox:
        yield inbox


@pytest.fixture
def settings(tmp_path, smtp):
    """The app's settings for one test: its own database file and the test SMTP server."""
    return {
        "DATABASE": str(tmp_path / "twoyes.db"),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "SECRET_KEY": SECRET,
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


@pytest.fixture(scope="session")
def fresh_database(tmp_path_factory) -> Path:
    """A database as `init` leaves it, made once: each test starts from a copy of it, which
    takes a millisecond where running schema.sql takes fifty."""
    path = tmp_path_factory.mktemp("fresh") / "twoyes.db"
    connection = database.connect(path)
    database.init_db(connection)
    connection.close()  # the last connection folds the WAL into the file
    return path


@pytest.fixture
def app(settings, fresh_database):
    app = create_app({"TESTING": True, **settings})
    shutil.copyfile(fresh_database, settings["DATABASE"])
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


@pytest.fixture(scope="session")
def extracted(tmp_path_factory):
    """Every sentence in the code and templates, as `make messages` gathers them."""
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    subprocess.run(
        [
            str(ROOT / ".venv/bin/pybabel") if (ROOT / ".venv/bin/pybabel").exists() else "pybabel",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "N_",
            "--no-location",
            "--ignore-dirs=.venv tests bench",
            "-o",
            str(pot),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return catalogue(pot)
