"""A large deadline sweep, as a real `python cli.py close-undecided` process (issue 19).

What a user watching a long sweep checks: its lines arrive batch by batch while it runs,
not all at its end; with --json each line is one JSON object; and every engagement ends
exactly once, with one event and one mail to each party.

The databases are written by bench/generate.py (the project's own generator, through
schema.sql): individual engagements, each with one round past its deadline.
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys

import pytest
from support import ROOT, cli_env

from twoyes import db as database

# Each test runs close-undecided as a process and reads it while it runs.
pytestmark = pytest.mark.slow

ROUNDS = 1_000
BATCH = 200


@pytest.fixture
def overdue_db(settings):
    """ROUNDS individual engagements, each with an open round a day past its deadline."""
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "generate.py"),
            settings["DATABASE"],
            "--engagements",
            str(ROUNDS),
            "--overdue",
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    db = database.connect(settings["DATABASE"])
    yield db
    db.close()


def sweep(settings, *options: str) -> subprocess.Popen:
    """close-undecided, its output into a pipe of a single page.

    A pipe that small fills with less than one batch's lines, so the process cannot
    get more than one batch ahead of what the test has read.
    """
    process = subprocess.Popen(
        [sys.executable, "cli.py", "close-undecided", *options],
        cwd=ROOT,
        env=cli_env(settings, SWEEP_BATCH=str(BATCH)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    return process


def sweep_to_end(settings, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "cli.py", "close-undecided", *options],
        cwd=ROOT,
        env=cli_env(settings, SWEEP_BATCH=str(BATCH)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def open_rounds(db) -> int:
    return db.conn.execute("SELECT count(*) FROM rounds WHERE status = 'open'").fetchone()[0]


@pytest.mark.parametrize("options", [(), ("--json",)], ids=["lines", "json"])
def test_a_sweeps_first_batch_shows_while_most_rounds_are_still_open(settings, overdue_db, options):
    with sweep(settings, *options) as process:
        first = process.stdout.readline()
        # Read beside the running sweep (WAL): it cannot have closed more than the batch
        # it showed and the one whose lines wait in the full pipe.
        still_open = open_rounds(overdue_db)
        running = process.poll() is None
        # The rest from the same reader: communicate() would skip what it buffered already.
        rest = process.stdout.read()
        errors = process.stderr.read()
    assert first, errors
    assert running, "the sweep ended before its first line was read"
    assert still_open >= ROUNDS - 2 * BATCH
    assert process.returncode == 0, errors
    lines = [first.rstrip("\n"), *rest.splitlines()]
    assert len(lines) == ROUNDS
    assert open_rounds(overdue_db) == 0
    if not options:
        assert lines[0].startswith("Closed round ")
        assert lines[0].endswith(": no answer by the deadline")


def test_json_lines_each_parse_and_every_engagement_ends_once(settings, overdue_db):
    result = sweep_to_end(settings, "--json")
    assert result.returncode == 0, result.stderr
    ended = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(item["engagement_id"] for item in ended) == list(range(1, ROUNDS + 1))
    assert {(item["outcome"], item["end_reason"]) for item in ended} == {("stop", "undecided")}
    assert {item["round_id"] for item in ended} == set(range(1, ROUNDS + 1))
    once = overdue_db.conn.execute(
        "SELECT (SELECT count(*) FROM engagements WHERE status = 'ended'),"
        " (SELECT count(DISTINCT engagement_id) FROM events WHERE kind = 'engagement_ended'),"
        " (SELECT count(*) FROM events WHERE kind = 'engagement_ended'),"
        " (SELECT count(*) FROM events WHERE kind = 'round_closed'),"
        " (SELECT count(*) FROM outbox WHERE kind = 'outcome')"
    ).fetchone()
    assert tuple(once) == (ROUNDS, ROUNDS, ROUNDS, ROUNDS, 2 * ROUNDS)
    again = sweep_to_end(settings, "--json")
    assert (again.returncode, again.stdout) == (0, "")


def test_a_sweep_whose_reader_goes_away_still_ends_everything_quietly(settings, overdue_db):
    # `close-undecided | head -1`: the reader takes one line and is gone.
    with sweep(settings) as process:
        first = process.stdout.readline()
        process.stdout.close()
        errors = process.stderr.read()
        process.wait(timeout=300)
    assert first.startswith("Closed round ")
    assert (process.returncode, errors) == (0, "")
    assert open_rounds(overdue_db) == 0
