"""The command line of SPEC section 5, through the real Click group.

Every command runs in-process with `run(...)` against a real SQLite file and the
real SMTP server of the fixtures; `python cli.py --help` also runs once as a real
process. A refused command must change nothing (the database dump is the same
before and after) and say why on stderr without a traceback: one line for
exit status 1, Click's usage message with one `Error:` line for exit status 2.
"""

from __future__ import annotations

import email
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import click
import pytest
from support import (
    LINK,
    NEXT_YEAR,
    OLD_SCHEMA,
    ROOT,
    T0,
    as_json,
    decide,
    dump,
    free_port,
    iso,
    ok,
    outbox_rows,
    refused,
    session_done,
    show,
    start,
)

from twoyes.cli import cli
from twoyes.db import SCHEMA_VERSION

TABLES = {
    "coaches",
    "clients",
    "engagements",
    "members",
    "sessions",
    "rounds",
    "decisions",
    "tokens",
    "outbox",
    "events",
}


# Sessions are planned in the future: next year's dates stay in the future whenever this runs.


# -- helpers ------------------------------------------------------------------------------


def ended_engagement(run, engagement_id) -> int:
    """End an engagement the way a coach does: a session, then stop. Returns the round id."""
    round_id = session_done(run, engagement_id)["round_id"]
    ok(run, "decide", round_id, "--choice", "stop", "--reason", "cannot_help")
    return round_id


def file_dump(path) -> str:
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


def shape_of(path) -> dict[str, list[str]]:
    """Each table of a database file with its column names."""
    connection = sqlite3.connect(path)
    try:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: [column[1] for column in connection.execute(f"PRAGMA table_info({table})")]
            for table in tables
        }
    finally:
        connection.close()


def user_version(path) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("PRAGMA user_version").fetchone()[0]
    finally:
        connection.close()


# -- init ---------------------------------------------------------------------------------


def test_init_creates_the_database_and_is_safe_to_repeat(run, monkeypatch, tmp_path):
    path = tmp_path / "fresh" / "twoyes.db"
    monkeypatch.setenv("TWOYES_DATABASE", str(path))

    first = ok(run, "init")
    assert first.stdout.startswith("Created the database")
    assert str(path) in first.stdout
    assert f"schema version {SCHEMA_VERSION}" in first.stdout
    assert TABLES <= set(shape_of(path))
    assert user_version(path) == SCHEMA_VERSION
    created = file_dump(path)

    second = ok(run, "init")
    assert "up to date" in second.stdout
    assert f"schema version {SCHEMA_VERSION}" in second.stdout
    third = ok(run, "init")
    assert third.stdout == second.stdout
    assert file_dump(path) == created


def test_init_keeps_what_is_in_an_up_to_date_database(run, db, engagement):
    before = dump(db)
    result = ok(run, "init")
    assert "up to date" in result.stdout
    assert dump(db) == before


@pytest.fixture
def old_database(monkeypatch, tmp_path, env):
    """A database from before schema versions: user_version 0, only two tables, with rows."""
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.executescript(OLD_SCHEMA)
    connection.close()
    monkeypatch.setenv("TWOYES_DATABASE", str(path))
    return path


def test_init_upgrades_an_older_database_without_losing_rows(run, settings, old_database):
    ok(run, "init")
    assert user_version(old_database) == SCHEMA_VERSION
    # The same tables and columns as a database made new (the `app` fixture's).
    assert shape_of(old_database) == shape_of(settings["DATABASE"])
    connection = sqlite3.connect(old_database)
    coaches = connection.execute("SELECT name, email, lang FROM coaches").fetchall()
    clients = connection.execute("SELECT name, email, lang FROM clients").fetchall()
    connection.close()
    assert coaches == [("Olga Old", "olga@example.org", "nl")]
    assert clients == [("Piet Early", "piet@example.org", "en")]
    # The old rows work with the new tables.
    engagement_id = start(run, "olga@example.org", "piet@example.org")
    assert show(run, engagement_id)["coach"]["name"] == "Olga Old"
    assert "up to date" in ok(run, "init").stdout


def test_init_does_not_say_it_created_a_database_that_held_data(run, old_database):
    result = ok(run, "init")
    # The practice's rows were there before; "Created the database" reads as if they were not.
    assert "Created" not in result.stdout
    assert f"to {SCHEMA_VERSION}" in result.stdout


def test_a_command_before_init_says_to_run_init(run, monkeypatch, tmp_path):
    path = tmp_path / "never-made.db"
    monkeypatch.setenv("TWOYES_DATABASE", str(path))
    result = run("engagement", "list")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert "init" in line
    assert not shape_of(path), "a refused command made tables"


# -- coach add, client add ----------------------------------------------------------------

ROLES = ("coach", "client")


@pytest.mark.parametrize("role", ROLES)
def test_add_person(run, db, role):
    result = ok(run, role, "add", "Dana Doe", "dana@example.org", "--lang", "nl")
    assert f"Added {role} Dana Doe <dana@example.org>" in result.stdout
    table = {"coach": "coaches", "client": "clients"}[role]
    rows = [tuple(row) for row in db.conn.execute(f"SELECT name, email, lang FROM {table}")]
    assert rows == [("Dana Doe", "dana@example.org", "nl")]


@pytest.mark.parametrize("role", ROLES)
def test_add_person_json_and_default_language(run, db, role):
    data = as_json(ok(run, role, "add", "Eve Example", "eve@example.org", "--json"))
    table = {"coach": "coaches", "client": "clients"}[role]
    row = db.conn.execute(
        f"SELECT id, lang FROM {table} WHERE email = ?", ["eve@example.org"]
    ).fetchone()
    assert data == {"id": row["id"]}
    assert row["lang"] == "en"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "address",
    ["not-an-address", "dana@", "@example.org", "dana example@example.org", "dana@@x.org"],
)
def test_add_person_with_a_malformed_address(run, db, role, address):
    line = refused(run, db, role, "add", "Dana Doe", address)
    assert address in line
    assert "not a valid e-mail address" in line


@pytest.mark.parametrize(
    ("role", "address"),
    [
        ("coach", "bob@example.org"),
        ("coach", "BOB@Example.ORG"),
        ("client", "anna@example.org"),
        ("client", "Anna@EXAMPLE.org"),
    ],
)
def test_add_person_with_a_taken_address(run, db, people, role, address):
    line = refused(run, db, role, "add", "Someone Else", address)
    assert "already" in line
    assert address.split("@")[0].lower() in line.lower()


def test_addresses_are_unique_per_role_only(run, db, people):
    # Bob coaches, and may be a client of a colleague too.
    ok(run, "client", "add", "Bob Coach", "bob@example.org")
    rows = db.conn.execute("SELECT name FROM clients WHERE email = ?", ["bob@example.org"])
    assert [row[0] for row in rows] == ["Bob Coach"]


@pytest.mark.parametrize("role", ROLES)
def test_add_person_with_an_unknown_language(run, db, role):
    line = refused(run, db, role, "add", "Dana Doe", "dana@example.org", "--lang", "xx", code=2)
    assert "--lang" in line


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("args", [(), ("Dana Doe",)])
def test_add_person_with_a_missing_argument(run, db, role, args):
    line = refused(run, db, role, "add", *args, code=2)
    assert "Missing argument" in line


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "name", ["Dana\x1b[2JDoe", "Dana\x07", "Dana\x00Doe", "Dana\x7fDoe", "Dana\u200bDoe"]
)
def test_add_person_with_control_characters_in_the_name(run, db, role, name):
    line = refused(run, db, role, "add", name, "dana@example.org")
    assert "control characters" in line


@pytest.mark.parametrize("name", ["Dana\nBcc: eve@example.org", "Dana\r\nDoe", "Dana\u2028Doe"])
def test_a_name_with_a_line_break_is_refused(run, db, name):
    """A line break could start a second mail header: refused, nothing stored."""
    line = refused(run, db, "client", "add", name, "dana@example.org")
    assert "one line" in line


def test_a_tab_in_a_name_is_folded_to_a_space(run, db):
    ok(run, "client", "add", "Dana\tDoe", "dana@example.org")
    (stored,) = db.conn.execute("SELECT name FROM clients").fetchone()
    assert stored == "Dana Doe"


@pytest.mark.parametrize("name", ["", "   "])
def test_add_person_with_an_empty_name(run, db, name):
    line = refused(run, db, "client", "add", name, "dana@example.org")
    assert "empty" in line


# -- engagement start ---------------------------------------------------------------------


def test_engagement_start_individual(run, db, people):
    result = ok(
        run, "engagement", "start", "--coach", "bob@example.org", "--client", "anna@example.org"
    )
    assert result.stdout.startswith("Started engagement 1.")
    data = show(run, 1)
    assert (data["kind"], data["status"], data["title"]) == ("individual", "active", None)
    assert [member["email"] for member in data["members"]] == ["anna@example.org"]


def test_engagement_start_group_json(run, db, people):
    result = ok(
        run,
        "engagement",
        "start",
        "--coach",
        "bob@example.org",
        "--client",
        "anna@example.org",
        "--client",
        "carl@example.org",
        "--title",
        "Team day",
        "--min-members",
        "2",
        "--json",
    )
    data = json.loads(result.stdout)
    assert list(data) == ["id"]
    (row,) = db.conn.execute("SELECT id, kind, title, min_members FROM engagements").fetchall()
    assert data["id"] == row["id"]
    assert tuple(row)[1:] == ("group", "Team day", 2)
    assert [member["email"] for member in show(run, data["id"])["members"]] == [
        "anna@example.org",
        "carl@example.org",
    ]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--coach", "nobody@example.org", "--client", "anna@example.org"], "nobody@example.org"),
        (["--coach", "bob@example.org", "--client", "nobody@example.org"], "nobody@example.org"),
        (
            ["--coach", "bob@example.org", "--client", "anna@example.org", "--client", "x@y.org"],
            "x@y.org",
        ),
        # A client's address is not a coach's.
        (["--coach", "anna@example.org", "--client", "carl@example.org"], "anna@example.org"),
    ],
)
def test_engagement_start_with_an_unknown_address(run, db, people, args, named):
    line = refused(run, db, "engagement", "start", *args)
    assert named in line


BOB_WITH_ANNA = ["--coach", "bob@example.org", "--client", "anna@example.org"]


@pytest.mark.parametrize(
    ("title", "said"),
    [
        ("x" * 201, "Error: A title can be at most 200 characters long."),
        ("x" * 100_000, "Error: A title can be at most 200 characters long."),
        ("Career\nBcc: eve@example.org", "Error: A title must fit on one line."),
        ("Career\r", "Error: A title must fit on one line."),
        ("\x1b[31mCareer\x1b[0m", "Error: A title cannot contain control characters."),
        ("Career\x00", "Error: A title cannot contain control characters."),
        ("Career \u202egnikool", "Error: A title cannot contain control characters."),
    ],
    ids=["201", "100000", "line-break", "carriage-return", "escape", "nul", "bidi-override"],
)
def test_engagement_start_with_a_title_that_is_not_one_short_line(run, db, people, title, said):
    """A title shows on pages, in mails and on the coach's terminal: checked like a name."""
    assert refused(run, db, "engagement", "start", *BOB_WITH_ANNA, "--title", title) == said


def test_engagement_start_with_a_title_of_200_characters(run, db, people):
    title = "Leadership " + "x" * 189
    ok(run, "engagement", "start", *BOB_WITH_ANNA, "--title", f"  {title}  ")
    (stored,) = db.conn.execute("SELECT title FROM engagements").fetchone()
    assert stored == title


def test_engagement_start_with_a_malformed_address(run, db, people):
    line = refused(
        run, db, "engagement", "start", "--coach", "bob@", "--client", "anna@example.org"
    )
    assert "bob@" in line


def test_engagement_start_with_the_same_client_twice(run, db, people):
    line = refused(
        run,
        db,
        "engagement",
        "start",
        "--coach",
        "bob@example.org",
        "--client",
        "anna@example.org",
        "--client",
        "ANNA@example.org",
    )
    assert "twice" in line


@pytest.mark.parametrize(
    ("clients", "min_members"),
    [(["anna@example.org"], 2), (["anna@example.org", "carl@example.org"], 3)],
)
def test_engagement_start_with_min_members_above_the_group(run, db, people, clients, min_members):
    args = ["engagement", "start", "--coach", "bob@example.org", "--min-members", min_members]
    for client in clients:
        args += ["--client", client]
    line = refused(run, db, *args)
    assert "--min-members" in line


@pytest.mark.parametrize(
    "args",
    [
        ["--coach", "bob@example.org"],
        ["--client", "anna@example.org"],
        ["--coach", "bob@example.org", "--client", "anna@example.org", "--min-members", "0"],
        ["--coach", "bob@example.org", "--client", "anna@example.org", "--min-members", "two"],
    ],
)
def test_engagement_start_with_a_malformed_command_line(run, db, people, args):
    refused(run, db, "engagement", "start", *args, code=2)


# -- engagement list ----------------------------------------------------------------------


def test_engagement_list_when_empty(run, db):
    assert ok(run, "engagement", "list").stdout == "No engagements yet.\n"
    assert ok(run, "engagement", "list", "--json").stdout.strip() == "[]"


def test_engagement_list(run, db, people):
    ended = start(run, "bob@example.org", "anna@example.org", extra=["--title", "Career"])
    ended_engagement(run, ended)
    active = start(run, "bob@example.org", "anna@example.org", "carl@example.org")

    lines = ok(run, "engagement", "list").stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == [str(active), "active"]
    assert "Anna de Vries, Carl Client" in lines[0]
    assert lines[1].split()[:4] == [str(ended), "ended", "(coach", "stopped)"]
    assert "'Career'" in lines[1]
    assert "1 session(s) held" in lines[1]

    (only_active,) = ok(run, "engagement", "list", "--status", "active").stdout.splitlines()
    assert only_active == lines[0]
    (only_ended,) = ok(run, "engagement", "list", "--status", "ended").stdout.splitlines()
    assert only_ended == lines[1]

    rows = as_json(ok(run, "engagement", "list", "--json"))
    assert [(row["id"], row["status"]) for row in rows] == [(active, "active"), (ended, "ended")]
    rows = as_json(ok(run, "engagement", "list", "--status", "ended", "--json"))
    assert [(row["id"], row["end_reason"]) for row in rows] == [(ended, "coach_stopped")]


def test_engagement_list_with_no_match(run, db, engagement):
    assert ok(run, "engagement", "list", "--status", "ended").stdout == "No ended engagements.\n"


def test_engagement_list_with_an_unknown_status(run, db, engagement):
    line = refused(run, db, "engagement", "list", "--status", "paused", code=2)
    assert "--status" in line


# -- engagement show ----------------------------------------------------------------------


@pytest.fixture
def history(run, db, people):
    """A group with one closed round (Anna stopped, Carl and Bob continued) and a planned
    session."""
    engagement_id = start(
        run, "bob@example.org", "anna@example.org", "carl@example.org", extra=["--title", "Team"]
    )
    done = session_done(run, engagement_id)
    ok(run, "decide", done["round_id"], "--choice", "continue", "--usefulness", "8")
    decide(
        db,
        done["round_id"],
        "anna@example.org",
        T0 + timedelta(minutes=5),
        choice="stop",
        reason="on_my_own",
        usefulness=9,
    )
    decide(db, done["round_id"], "carl@example.org", T0 + timedelta(minutes=6), choice="continue")
    planned = as_json(
        ok(run, "session", "add", engagement_id, "--at", f"{NEXT_YEAR}-06-01 10:00", "--json")
    )
    return {"engagement_id": engagement_id, **done, "planned_id": planned["session_id"]}


def test_engagement_show_json_values(run, db, history):
    data = show(run, history["engagement_id"])
    assert data["id"] == history["engagement_id"]
    assert (data["title"], data["kind"], data["status"], data["end_reason"]) == (
        "Team",
        "group",
        "active",
        None,
    )
    assert data["coach"] == {"name": "Bob Coach", "email": "bob@example.org"}
    assert data["members"] == [
        {"name": "Anna de Vries", "email": "anna@example.org", "status": "left"},
        {"name": "Carl Client", "email": "carl@example.org", "status": "active"},
    ]
    held, planned = data["sessions"]
    assert held["id"] == history["session_id"]
    assert planned["id"] == history["planned_id"]
    assert planned["at"] == f"{NEXT_YEAR}-06-01T08:00:00+00:00"
    assert planned["round"] is None
    round_ = held["round"]
    assert round_["id"] == history["round_id"]
    assert (round_["status"], round_["outcome"]) == ("closed", "continue")
    opened = datetime.fromisoformat(held["at"])
    assert datetime.fromisoformat(round_["deadline"]) > opened
    coach, anna, carl = round_["decisions"]
    assert [coach["party"], anna["party"], carl["party"]] == [
        "coach",
        "anna@example.org",
        "carl@example.org",
    ]
    assert (coach["choice"], coach["reason"], coach["usefulness"]) == ("continue", None, 8)
    assert (anna["choice"], anna["reason"], anna["usefulness"]) == ("stop", "on_my_own", 9)
    assert anna["decided_at"] == (T0 + timedelta(minutes=5)).isoformat()
    assert (carl["choice"], carl["reason"], carl["usefulness"]) == ("continue", None, None)
    for decision in round_["decisions"]:
        assert datetime.fromisoformat(decision["decided_at"]).tzinfo is not None


def test_engagement_show_json_has_exactly_the_spec_shape(run, db, history):
    data = show(run, history["engagement_id"])
    spec = {
        "engagement": {
            *("id", "title", "kind", "status", "end_reason"),
            *("coach", "members", "sessions"),
        },
        "coach": {"name", "email"},
        "member": {"name", "email", "status"},
        "session": {"id", "at", "round"},
        "round": {"id", "status", "deadline", "outcome", "decisions"},
        "decision": {"party", "choice", "reason", "usefulness", "decided_at"},
    }
    found = {"engagement": [data], "coach": [data["coach"]], "member": data["members"]}
    found["session"] = data["sessions"]
    found["round"] = [session["round"] for session in data["sessions"] if session["round"]]
    found["decision"] = [decision for round_ in found["round"] for decision in round_["decisions"]]
    assert all(found.values()), "the history should hold one of each"
    differences = {
        f"{what}: extra {sorted(set(item) - keys)}, missing {sorted(keys - set(item))}"
        for what, keys in spec.items()
        for item in found[what]
        if set(item) != keys
    }
    assert not differences, sorted(differences)


def test_engagement_show_an_undecided_round(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    (session,) = show(run, engagement)["sessions"]
    assert session["round"]["id"] == round_id
    assert (session["round"]["status"], session["round"]["outcome"]) == ("open", None)
    assert session["round"]["decisions"] == [
        {
            "party": party,
            "choice": None,
            "reason": None,
            "usefulness": None,
            "decided_at": None,
        }
        for party in ("coach", "anna@example.org")
    ]


def test_engagement_show_as_text(run, db, history):
    text = ok(run, "engagement", "show", history["engagement_id"]).stdout
    assert "Team" in text
    assert "group, active" in text
    assert "Bob Coach <bob@example.org>" in text
    assert "Anna de Vries <anna@example.org> (left)" in text
    assert f"round {history['round_id']}: closed" in text
    assert "anna@example.org: stop" in text


def test_engagement_show_an_unknown_id(run, db, engagement):
    line = refused(run, db, "engagement", "show", "99")
    assert "99" in line


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["engagement", "show", "{n}"], "There is no engagement {n}."),
        (["engagement", "reopen", "{n}"], "There is no engagement {n}."),
        (["engagement", "add-member", "{n}", "carl@example.org"], "There is no engagement {n}."),
        (["session", "done", "{n}"], "There is no engagement {n}."),
        (["session", "add", "{n}", "--at", "2027-01-05 10:00"], "There is no engagement {n}."),
        (["decide", "{n}", "--choice", "stop"], "There is no round {n}."),
        (["outbox", "retry", "{n}"], "There is no mail {n}."),
        (["outbox", "retry", "--", "-{n}"], "There is no mail -{n}."),
    ],
)
def test_a_number_beyond_sqlites_range_is_an_unknown_id(run, db, people, engagement, args, named):
    """No row can have an id beyond SQLite's 64-bit integers: one line and exit 1, as for an
    id that does not exist."""
    n = "99999999999999999999999"
    line = refused(run, db, *[arg.format(n=n) for arg in args])
    assert line == f"Error: {named.format(n=n)}"


def test_engagement_show_a_malformed_id(run, db, engagement):
    refused(run, db, "engagement", "show", "one", code=2)


# -- engagement reopen --------------------------------------------------------------------


def test_engagement_reopen(run, db, engagement):
    ended_engagement(run, engagement)
    assert show(run, engagement)["status"] == "ended"
    result = ok(run, "engagement", "reopen", engagement)
    assert f"Engagement {engagement} is active again" in result.stdout
    data = show(run, engagement)
    assert (data["status"], data["end_reason"]) == ("active", None)
    assert data["members"][0]["status"] == "active"
    # And a new session can be planned again.
    ok(run, "session", "add", engagement, "--at", f"{NEXT_YEAR}-01-05 10:00")


def test_engagement_reopen_an_active_one(run, db, engagement):
    line = refused(run, db, "engagement", "reopen", engagement)
    assert "active" in line


def test_engagement_reopen_an_unknown_one(run, db, engagement):
    line = refused(run, db, "engagement", "reopen", "42")
    assert "42" in line


# -- session add --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "minutes", "starts", "ends"),
    [
        # Summer time in Amsterdam is UTC+2, winter time UTC+1.
        (f"{NEXT_YEAR}-07-01 10:00", "60", f"{NEXT_YEAR}-07-01T08:00:00+00:00", "09:00"),
        (f"{NEXT_YEAR}-12-09 10:00", "90", f"{NEXT_YEAR}-12-09T09:00:00+00:00", "10:30"),
    ],
)
def test_session_add_reads_the_time_in_the_practice_zone(
    run, db, engagement, at, minutes, starts, ends
):
    ends = f"{starts[:11]}{ends}:00+00:00"
    result = ok(run, "session", "add", engagement, "--at", at, "--minutes", minutes)
    day = datetime.fromisoformat(at)
    when = f"{day:%a} {day.day} {day:%b %Y} 10:00"
    assert result.stdout == f"Planned session 1 of engagement {engagement} (Career) at {when}.\n"
    row = db.conn.execute("SELECT id, status, starts_at, ends_at FROM sessions").fetchone()
    assert tuple(row)[1:] == ("planned", starts, ends)
    (session,) = show(run, engagement)["sessions"]
    assert (session["id"], session["at"], session["round"]) == (row["id"], starts, None)


def test_session_add_json(run, db, engagement):
    data = as_json(
        ok(run, "session", "add", engagement, "--at", f"{NEXT_YEAR}-01-05 10:00", "--json")
    )
    (session_id,) = db.conn.execute("SELECT id FROM sessions").fetchone()
    assert data == {"session_id": session_id}


@pytest.mark.parametrize(
    "args",
    [
        ["--at", f"{NEXT_YEAR}-01-05"],
        ["--at", f"{NEXT_YEAR}-01-05T10:00"],
        ["--at", "05-01-2027 10:00"],
        ["--at", f"{NEXT_YEAR}-02-30 10:00"],
        ["--at", f"{NEXT_YEAR}-01-05 25:00"],
        ["--at", "tomorrow"],
        ["--at", ""],
        [],
        ["--at", f"{NEXT_YEAR}-01-05 10:00", "--minutes", "0"],
        ["--at", f"{NEXT_YEAR}-01-05 10:00", "--minutes", "1441"],
    ],
)
def test_session_add_with_a_malformed_command_line(run, db, engagement, args):
    refused(run, db, "session", "add", engagement, *args, code=2)


def test_session_add_to_an_ended_engagement(run, db, engagement):
    ended_engagement(run, engagement)
    line = refused(run, db, "session", "add", engagement, "--at", f"{NEXT_YEAR}-01-05 10:00")
    assert "ended" in line
    assert "reopen" in line


def test_session_add_while_a_round_is_open(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    line = refused(run, db, "session", "add", engagement, "--at", f"{NEXT_YEAR}-01-05 10:00")
    assert "still waiting for the decisions after session 1" in line
    assert f"`python cli.py decide {round_id} --choice continue` (or stop)" in line


def test_session_add_a_second_planned_session(run, db, engagement):
    ok(run, "session", "add", engagement, "--at", f"{NEXT_YEAR}-01-05 10:00")
    line = refused(run, db, "session", "add", engagement, "--at", f"{NEXT_YEAR}-01-12 10:00")
    assert "already has a planned session" in line


def test_session_add_to_an_unknown_engagement(run, db, engagement):
    line = refused(run, db, "session", "add", "77", "--at", f"{NEXT_YEAR}-01-05 10:00")
    assert "77" in line


# -- session done -------------------------------------------------------------------------


def test_session_done_json(run, db, engagement):
    data = session_done(run, engagement)
    assert set(data) == {"session_id", "round_id"}
    row = db.conn.execute("SELECT * FROM rounds WHERE id = ?", [data["round_id"]]).fetchone()
    assert (row["session_id"], row["status"]) == (data["session_id"], "open")
    session = db.conn.execute("SELECT status FROM sessions WHERE id = ?", [data["session_id"]])
    assert session.fetchone()[0] == "held"
    queued = [(mail["kind"], mail["to_email"], mail["status"]) for mail in outbox_rows(db)]
    assert sorted(queued) == [
        ("decision", "anna@example.org", "queued"),
        ("decision", "bob@example.org", "queued"),
    ]


def test_session_done_holds_the_planned_session(run, db, engagement):
    planned = as_json(
        ok(run, "session", "add", engagement, "--at", f"{NEXT_YEAR}-01-05 09:00", "--json")
    )
    result = ok(run, "session", "done", engagement)
    assert result.stdout.startswith(
        f"Recorded session 1 of engagement {engagement} (Career) and opened round"
    )
    assert db.conn.execute("SELECT id FROM sessions").fetchone()[0] == planned["session_id"]
    assert db.conn.execute("SELECT count(*), min(status) FROM sessions").fetchone()[:] == (
        1,
        "held",
    )


def test_session_done_twice(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    line = refused(run, db, "session", "done", engagement)
    # Decide that round first, with the command that does it; not "run close-undecided".
    assert "still waiting for the decisions after session 1" in line
    assert f"python cli.py decide {round_id}" in line
    assert "close-undecided" not in line


def test_session_done_on_an_ended_engagement(run, db, engagement):
    ended_engagement(run, engagement)
    line = refused(run, db, "session", "done", engagement)
    assert "ended" in line


def test_session_done_on_an_unknown_engagement(run, db, engagement):
    line = refused(run, db, "session", "done", "31")
    assert "31" in line


# -- decide -------------------------------------------------------------------------------


def test_decide_continue_keeps_the_round_open(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    result = ok(
        run, "decide", round_id, "--choice", "continue", "--usefulness", "7", "--note", "Good one"
    )
    assert f"Recorded your choice in round {round_id}: continue." in result.stdout
    assert "stays open" in result.stdout
    row = db.conn.execute(
        "SELECT choice, usefulness, note, decided_at FROM decisions"
        " WHERE round_id = ? AND role = 'coach'",
        [round_id],
    ).fetchone()
    assert tuple(row)[:3] == ("continue", 7, "Good one")
    assert row["decided_at"] is not None
    assert show(run, engagement)["sessions"][0]["round"]["status"] == "open"


def test_decide_keeps_a_notes_lines_and_takes_out_its_control_characters(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    ok(run, "decide", round_id, "--choice", "continue", "--note", "Good\r\none\x1b[2J\t\u202eok")
    (note,) = db.conn.execute(
        "SELECT note FROM decisions WHERE round_id = ? AND role = 'coach'", [round_id]
    ).fetchone()
    assert note == "Good\none[2J\tok"


def test_decide_stop_ends_the_engagement(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    result = ok(run, "decide", round_id, "--choice", "stop", "--reason", "values")
    assert "ended (coach stopped)" in result.stdout
    data = show(run, engagement)
    assert (data["status"], data["end_reason"]) == ("ended", "coach_stopped")
    (coach_decision, _) = data["sessions"][0]["round"]["decisions"]
    assert (coach_decision["choice"], coach_decision["reason"]) == ("stop", "values")


def test_decide_continue_may_become_stop(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    ok(run, "decide", round_id, "--choice", "continue")
    ok(run, "decide", round_id, "--choice", "stop")
    assert show(run, engagement)["end_reason"] == "coach_stopped"


def test_decide_an_unknown_round(run, db, engagement):
    line = refused(run, db, "decide", "404", "--choice", "continue")
    assert "404" in line


def test_decide_a_closed_round(run, db, engagement):
    round_id = ended_engagement(run, engagement)
    line = refused(run, db, "decide", round_id, "--choice", "continue")
    assert "closed" in line


def test_decide_with_a_too_long_note(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    line = refused(run, db, "decide", round_id, "--choice", "continue", "--note", "x" * 2001)
    assert "2,000" in line


@pytest.mark.parametrize(
    "args",
    [
        ["--choice", "maybe"],
        ["--choice", "stop", "--reason", "on_my_own"],
        ["--choice", "stop", "--reason", "bored"],
        [],
        ["--choice", "continue", "--usefulness", "11"],
        # Usefulness is written in ASCII digits: not another script's, not Python's spellings.
        ["--choice", "continue", "--usefulness", "٣"],
        ["--choice", "continue", "--usefulness", "５"],
        ["--choice", "continue", "--usefulness", "1_0"],
        ["--choice", "continue", "--usefulness", "+3"],
    ],
)
def test_decide_with_a_malformed_command_line(run, db, engagement, args):
    round_id = session_done(run, engagement)["round_id"]
    refused(run, db, "decide", round_id, *args, code=2)


def test_decide_a_malformed_round_id(run, db, engagement):
    refused(run, db, "decide", "three", "--choice", "continue", code=2)


# -- tick ---------------------------------------------------------------------------------


def test_tick_runs_a_round_from_planned_session_to_close(run, db, engagement, smtp):
    def tick(now: str):
        return ok(run, "tick", "--now", now)

    ok(run, "session", "add", engagement, "--at", "2030-01-10 10:00")  # 09:00 UTC to 10:00
    # The first tick delivers its invitations, for Anna's and Bob's calendars.
    assert "mails sent: 2" in tick("2030-01-10T09:00:00+00:00").stdout
    assert [m["Subject"] for m in smtp.messages] == [
        "Session planned: Thursday 10 January 2030 at 10:00"
    ] * 2
    smtp.clear()

    def kinds() -> list[tuple[str, str]]:
        return sorted((message["Subject"], message["To"]) for message in smtp.messages)

    def settled(now: str) -> None:
        """A second tick at the same moment does nothing more."""
        before, mails = dump(db), len(smtp.messages)
        assert tick(now).stdout == ""
        assert dump(db) == before
        assert len(smtp.messages) == mails

    # Before the session has ended: nothing.
    settled("2030-01-10T09:59:00+00:00")
    assert db.conn.execute("SELECT count(*) FROM rounds").fetchone()[0] == 0

    # R1: the first tick after its end opens the round and delivers the decision mails.
    result = tick("2030-01-10T10:00:00+00:00")
    assert "rounds opened: 1" in result.stdout
    assert "mails sent: 2" in result.stdout
    assert kinds() == [
        ("Another session?", "Anna de Vries <anna@example.org>"),
        ("Another session?", "Bob Coach <bob@example.org>"),
    ]
    settled("2030-01-10T10:00:00+00:00")
    (round_,) = show(run, engagement)["sessions"]
    assert round_["round"]["deadline"] == "2030-01-17T10:00:00+00:00"

    # R9: one reminder each, two days before the deadline.
    smtp.clear()
    result = tick("2030-01-15T10:00:00+00:00")
    assert "reminders: 2" in result.stdout
    assert kinds() == [
        ("A reminder: another session?", "Anna de Vries <anna@example.org>"),
        ("A reminder: another session?", "Bob Coach <bob@example.org>"),
    ]
    settled("2030-01-15T10:00:00+00:00")
    settled("2030-01-16T10:00:00+00:00")

    # R4: past the deadline the round closes, undecided, and everyone hears so.
    smtp.clear()
    result = tick("2030-01-17T10:00:00+00:00")
    assert "rounds closed: 1" in result.stdout
    assert sorted(message["To"] for message in smtp.messages) == [
        "Anna de Vries <anna@example.org>",
        "Bob Coach <bob@example.org>",
    ]
    settled("2030-01-17T10:00:00+00:00")
    data = show(run, engagement)
    assert (data["status"], data["end_reason"]) == ("ended", "undecided")
    assert all(mail["status"] == "sent" for mail in outbox_rows(db))


def test_tick_reads_a_now_without_offset_in_the_practice_zone(run, db, engagement, smtp):
    ok(run, "session", "add", engagement, "--at", "2030-01-10 10:00")  # ends 10:00 UTC
    ok(run, "tick", "--now", "2030-01-10T09:00")  # delivers its invitations
    before = dump(db)
    assert ok(run, "tick", "--now", "2030-01-10T10:59").stdout == ""  # 09:59 UTC
    assert dump(db) == before
    assert "rounds opened: 1" in ok(run, "tick", "--now", "2030-01-10T11:00").stdout


@pytest.mark.parametrize("minutes", ["0", "1441", "an hour"])
def test_session_done_with_malformed_minutes(run, db, engagement, minutes):
    refused(run, db, "session", "done", engagement, "--minutes", minutes, code=2)


def test_tick_json(run, db, engagement, smtp):
    session_done(run, engagement, "--now", iso(T0))
    summary = as_json(ok(run, "tick", "--now", iso(T0 + timedelta(minutes=1)), "--json"))
    assert summary["mails_sent"] == 2
    assert summary["mails_waiting"] == 0
    assert summary["rounds_opened"] == 0


# -- close-undecided ----------------------------------------------------------------------


@pytest.fixture
def overdue(run, db, people, engagement):
    """An overdue round (engagement 1), an idle engagement (2) and a planned one (3)."""
    round_id = session_done(run, engagement, "--now", iso(T0))["round_id"]
    idle = start(run, "bob@example.org", "carl@example.org")
    planned = start(run, "bob@example.org", "anna@example.org", "carl@example.org")
    ok(run, "session", "add", planned, "--at", "2030-06-01 10:00")
    return {
        "round_id": round_id,
        "overdue": engagement,
        "idle": idle,
        "planned": planned,
        "now": iso(datetime.now(UTC) + timedelta(days=61)),
    }


def json_lines(result) -> list[dict]:
    """close-undecided --json: one JSON object a line, written as each batch commits."""
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_close_undecided_dry_run_changes_nothing(run, db, overdue):
    before = dump(db)
    dry = ok(run, "close-undecided", "--now", overdue["now"], "--dry-run")
    assert dump(db) == before
    assert dry.stdout.splitlines() == [
        f"Would close round {overdue['round_id']}: engagement {overdue['overdue']} ends: "
        "no answer by the deadline",
        f"Would close engagement {overdue['idle']}: idle",
    ]
    dry_json = json_lines(
        ok(run, "close-undecided", "--now", overdue["now"], "--dry-run", "--json")
    )
    assert dump(db) == before

    real = ok(run, "close-undecided", "--now", overdue["now"])
    assert real.stdout == dry.stdout.replace("Would close", "Closed")
    assert dump(db) != before
    # Nothing left to end: no line at all, so a reader of the lines reads none.
    assert ok(run, "close-undecided", "--now", overdue["now"], "--json").stdout == ""
    assert dry_json == [
        {
            "engagement_id": overdue["overdue"],
            "round_id": overdue["round_id"],
            "outcome": "stop",
            "end_reason": "undecided",
        },
        {"engagement_id": overdue["idle"], "end_reason": "idle"},
    ]


def test_close_undecided_ends_what_is_undecided_and_idle(run, db, overdue, smtp):
    ok(run, "close-undecided", "--now", overdue["now"])
    assert show(run, overdue["overdue"])["end_reason"] == "undecided"
    assert show(run, overdue["idle"])["end_reason"] == "idle"
    assert show(run, overdue["planned"])["status"] == "active"
    outcomes = sorted(
        (mail["engagement_id"], mail["to_email"])
        for mail in outbox_rows(db)
        if mail["kind"] == "outcome"
    )
    assert outcomes == [
        (overdue["overdue"], "anna@example.org"),
        (overdue["overdue"], "bob@example.org"),
        (overdue["idle"], "bob@example.org"),
        (overdue["idle"], "carl@example.org"),
    ]
    assert smtp.messages == []  # close-undecided queues; send or tick delivers
    before = dump(db)
    again = ok(run, "close-undecided", "--now", overdue["now"])
    assert again.stdout == "Nothing is past its deadline or idle.\n"
    assert dump(db) == before


def test_close_undecided_before_any_deadline(run, db, overdue):
    before = dump(db)
    result = ok(run, "close-undecided", "--now", iso(T0 + timedelta(days=1)))
    assert result.stdout == "Nothing is past its deadline or idle.\n"
    assert dump(db) == before


# -- send ---------------------------------------------------------------------------------


def test_send_delivers_queued_mail(run, db, engagement, smtp):
    session_done(run, engagement, "--now", iso(T0))
    result = ok(run, "send", "--now", iso(T0 + timedelta(minutes=1)))
    assert result.stdout == "Delivered 2 mail(s).\n"
    assert result.stderr == ""
    assert sorted(message["To"] for message in smtp.messages) == [
        "Anna de Vries <anna@example.org>",
        "Bob Coach <bob@example.org>",
    ]
    assert [mail["status"] for mail in outbox_rows(db)] == ["sent", "sent"]
    before = dump(db)
    again = ok(run, "send", "--now", iso(T0 + timedelta(minutes=2)))
    assert again.stdout == ""
    assert len(smtp.messages) == 2
    assert dump(db) == before


def test_send_json(run, db, engagement, smtp):
    session_done(run, engagement, "--now", iso(T0))
    report = as_json(ok(run, "send", "--now", iso(T0 + timedelta(minutes=1)), "--json"))
    assert (report["sent"], report["waiting"], report["failed"]) == (2, 0, 0)


def test_send_with_the_mail_server_down_keeps_the_mail(run, db, engagement, smtp, monkeypatch):
    session_done(run, engagement, "--now", iso(T0))
    monkeypatch.setenv("TWOYES_MAIL_PORT", str(free_port()))  # nothing listens there
    result = ok(run, "send", "--now", iso(T0 + timedelta(minutes=1)))
    assert "Traceback" not in result.stderr
    assert "2 mail(s) wait for a later retry." in result.stderr.splitlines()
    assert "could not reach the mail server" in result.stderr
    assert [(mail["status"], mail["sent_at"]) for mail in outbox_rows(db)] == [
        ("queued", None),
        ("queued", None),
    ]
    assert smtp.messages == []

    # The server is back: a later run delivers the same mails, once.
    monkeypatch.setenv("TWOYES_MAIL_PORT", str(smtp.port))
    later = ok(run, "send", "--now", iso(T0 + timedelta(hours=1)))
    assert later.stdout == "Delivered 2 mail(s).\n"
    assert len(smtp.messages) == 2
    assert [mail["status"] for mail in outbox_rows(db)] == ["sent", "sent"]


@pytest.mark.parametrize("mail_server", [None, ""])
def test_send_without_a_mail_server_writes_eml_files(
    run, db, engagement, smtp, env, monkeypatch, mail_server
):
    monkeypatch.delenv("MAIL_SERVER", raising=False)
    monkeypatch.setenv("TWOYES_BASE_URL", "http://127.0.0.1:5000")  # .eml files: development only
    if mail_server is None:
        monkeypatch.delenv("TWOYES_MAIL_SERVER")
    else:
        monkeypatch.setenv("TWOYES_MAIL_SERVER", mail_server)
    session_done(run, engagement, "--now", iso(T0))
    result = ok(run, "send", "--now", iso(T0 + timedelta(minutes=1)))

    folder = Path(env["INSTANCE_PATH"]) / "mail"
    files = sorted(folder.glob("*.eml"))
    assert len(files) == 2
    messages = [email.message_from_bytes(eml.read_bytes(), policy=policy.default) for eml in files]
    assert sorted(message["To"] for message in messages) == [
        "Anna de Vries <anna@example.org>",
        "Bob Coach <bob@example.org>",
    ]
    for path, message in zip(files, messages, strict=True):
        assert str(path) in result.stdout
        links = LINK.findall(message.get_body(("plain",)).get_content())
        assert links
        for link in links:
            assert link in result.stdout
    assert smtp.messages == []
    assert [mail["status"] for mail in outbox_rows(db)] == ["sent", "sent"]


# -- outbox list, outbox retry ------------------------------------------------------------


def test_outbox_list(run, db, engagement):
    assert ok(run, "outbox", "list").stdout == "The outbox is empty.\n"
    session_done(run, engagement, "--now", iso(T0))
    lines = ok(run, "outbox", "list").stdout.splitlines()
    assert len(lines) == 2
    assert all(line.split()[1:3] == ["queued", "decision"] for line in lines)
    assert {line.split()[-1] for line in lines} == {"anna@example.org", "bob@example.org"}
    assert ok(run, "outbox", "list", "--status", "sent").stdout == "No sent mail.\n"
    rows = as_json(ok(run, "outbox", "list", "--json"))
    assert [(row["id"], row["status"]) for row in rows] == [
        (mail["id"], "queued") for mail in reversed(outbox_rows(db))
    ]


def test_outbox_list_with_an_unknown_status(run, db, engagement):
    refused(run, db, "outbox", "list", "--status", "lost", code=2)


def test_outbox_retry_a_failed_mail(run, db, engagement, smtp, monkeypatch):
    session_done(run, engagement, "--now", iso(T0))
    (first, second) = (mail["id"] for mail in outbox_rows(db))
    monkeypatch.setenv("TWOYES_MAIL_PORT", str(free_port()))
    # Eight attempts a day apart (the backoff is shorter); the last one gives up.
    for day in range(8):
        result = run("send", "--now", iso(T0 + timedelta(days=day, minutes=1)))
        assert "Traceback" not in result.output
    assert result.exit_code == 1
    assert "failed for good" in result.stderr
    assert [mail["status"] for mail in outbox_rows(db)] == ["failed", "failed"]

    failed = ok(run, "outbox", "list", "--status", "failed").stdout.splitlines()
    assert len(failed) == 2
    assert all("could not reach the mail server" in line for line in failed)

    result = ok(run, "outbox", "retry", first)
    assert result.stdout == f"Mail {first} is queued again.\n"
    statuses = {mail["id"]: (mail["status"], mail["attempts"]) for mail in outbox_rows(db)}
    assert statuses == {first: ("queued", 0), second: ("failed", 8)}

    line = refused(run, db, "outbox", "retry", first)
    assert "not failed" in line
    line = refused(run, db, "outbox", "retry", "999")
    assert "999" in line
    refused(run, db, "outbox", "retry", "first", code=2)

    monkeypatch.setenv("TWOYES_MAIL_PORT", str(smtp.port))
    assert ok(run, "send").stdout == "Delivered 1 mail(s).\n"
    assert len(smtp.messages) == 1
    statuses = {mail["id"]: mail["status"] for mail in outbox_rows(db)}
    assert statuses == {first: "sent", second: "failed"}


# -- serve, help, python cli.py -----------------------------------------------------------


def test_serve_help(run):
    result = ok(run, "serve", "--help")
    assert "--host" in result.stdout
    assert "--port" in result.stdout
    assert "Example:" in result.stdout


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


LEAVES = [path for path, command in command_paths(cli) if not isinstance(command, click.Group)]
GROUPS = [path for path, command in command_paths(cli) if isinstance(command, click.Group)]


def test_every_command_of_the_spec_exists():
    spec = {
        ("init",),
        ("coach", "add"),
        ("client", "add"),
        ("engagement", "start"),
        ("engagement", "list"),
        ("engagement", "show"),
        ("engagement", "reopen"),
        ("session", "add"),
        ("session", "done"),
        ("decide",),
        ("tick",),
        ("close-undecided",),
        ("send",),
        ("serve",),
        ("outbox", "list"),
        ("outbox", "retry"),
    }
    assert spec <= set(LEAVES)


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_has_help_with_an_example(run, path):
    result = ok(run, *path, "--help")
    assert result.stdout.startswith("Usage: ")
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert any(line.startswith("Example:") for line in lines), result.stdout


@pytest.mark.parametrize("path", [(), *GROUPS], ids=lambda path: " ".join(path) or "cli")
def test_every_group_has_help(run, path):
    result = ok(run, *path, "--help")
    assert "Commands:" in result.stdout
    summary = result.stdout.split("\n\n")[1].strip()
    assert summary and not summary.startswith("Options:")


@pytest.mark.slow
def test_python_cli_py_just_works():
    result = subprocess.run(
        [sys.executable, "cli.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: cli.py ")
    for name in ("init", "coach", "client", "engagement", "session", "decide", "tick", "send"):
        assert f"  {name} " in result.stdout
    assert result.stderr == ""


# -- configuration and the clock ----------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("DECISION_DAYS", "abc"),
        ("TIMEZONE", "Mars/Olympus"),
        ("REMINDER_DAYS", "9"),
        ("SWEEP_BATCH", "0"),
        ("SWEEP_BATCH", "many"),
        ("MAIL_DEFAULT_SENDER", '"Practice\nBcc: x@example.org" <p@example.org>'),
    ],
)
@pytest.mark.parametrize("command", [("tick",), ("engagement", "list"), ("init",)])
def test_broken_configuration_is_one_line_naming_the_setting(
    run, db, engagement, monkeypatch, setting, value, command
):
    monkeypatch.setenv(f"TWOYES_{setting}", value)
    line = refused(run, db, *command)
    assert setting in line


@pytest.mark.parametrize("now", ["yesterday", "2026-13-01T10:00", "2026-12-09 25:00", ""])
@pytest.mark.parametrize(
    "command",
    [
        ("tick",),
        ("close-undecided",),
        ("close-undecided", "--dry-run"),
        ("send",),
        ("session", "done", "1"),
        ("decide", "1", "--choice", "continue"),
    ],
)
def test_a_malformed_now(run, db, engagement, command, now):
    line = refused(run, db, *command, "--now", now, code=2)
    assert "--now" in line


def test_init_refuses_a_database_newer_than_this_twoyes(run, env, db):
    db.conn.execute("PRAGMA user_version = 99")
    before = dump(db)
    result = run("init")
    assert result.exit_code == 1
    assert "newer than this twoyes" in result.stderr
    assert "Traceback" not in result.stderr
    assert dump(db) == before
