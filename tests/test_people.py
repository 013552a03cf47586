"""People are greeted by the name they are called: `--call-name`, set at `add` or later.

By default a person is called by the first word of their name ("Hello Anna",
"Hoi Sanne"); `coach set` and `client set` change it, and an empty one goes
back to the first word. The greeting is read where people read it: in the
mails the real SMTP server accepted and on the welcome-back page.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from support import (
    OLD_SCHEMA,
    POLICY,
    T0,
    as_json,
    deliver,
    dump,
    links_in,
    ok,
    refused,
    text_of,
    token_of,
)

from twoyes.engagements import start_engagement
from twoyes.privacy import forget_client
from twoyes.rounds import record_decision
from twoyes.sessions import record_session_done

ROLES = {"coach": "coaches", "client": "clients"}


def call_name(db, role: str, email: str) -> str | None:
    sql = f"SELECT call_name FROM {ROLES[role]} WHERE email = ?"
    return db.conn.execute(sql, [email]).fetchone()[0]


@pytest.mark.parametrize("role", ROLES)
def test_a_person_is_called_by_the_first_word_of_their_name_unless_told(run, db, role):
    ok(run, role, "add", "Sanne de Bakker", "sanne@example.org", "--lang", "nl")
    ok(run, role, "add", "Johannes Visser", "jo@example.org", "--call-name", "  Jo ")

    assert call_name(db, role, "sanne@example.org") == "Sanne"
    assert call_name(db, role, "jo@example.org") == "Jo"


@pytest.mark.parametrize("role", ROLES)
def test_the_call_name_can_be_set_later_and_reset_to_the_first_word(run, db, role):
    ok(run, role, "add", "Johannes Visser", "jo@example.org")

    said = ok(run, role, "set", "jo@example.org", "--call-name", "Hans")
    assert said.stdout == "Mails greet Johannes Visser as Hans from now on.\n"
    assert call_name(db, role, "jo@example.org") == "Hans"
    data = as_json(ok(run, role, "set", "JO@example.org", "--call-name", "", "--json"))
    assert data["call_name"] == "Johannes"
    assert call_name(db, role, "jo@example.org") == "Johannes"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Jo\nBcc: x@example.org", "A call name must fit on one line."),
        ("J" * 101, "A call name can be at most 100 characters long."),
        ("Jo\x1b[2J", "A call name cannot contain control characters."),
    ],
)
def test_a_call_name_that_cannot_be_a_greeting_is_refused(run, db, role, value, says):
    ok(run, role, "add", "Johannes Visser", "jo@example.org")

    assert refused(run, db, role, "set", "jo@example.org", "--call-name", value) == f"Error: {says}"
    line = refused(run, db, role, "add", "Jan Jansen", "jan@example.org", "--call-name", value)
    assert line == f"Error: {says}"


@pytest.mark.parametrize("role", ROLES)
def test_setting_the_call_name_of_nobody_says_so(run, db, role):
    line = refused(run, db, role, "set", "nobody@example.org", "--call-name", "Jo")
    assert "nobody@example.org" in line


def test_mails_and_the_welcome_back_page_greet_by_the_call_name(app, db, client, smtp, run):
    ok(run, "coach", "add", "Robert de Coach", "bob@example.org", "--call-name", "Bob")
    ok(run, "client", "add", "Sanne de Bakker", "sanne@example.org", "--lang", "nl")
    engagement = start_engagement(db, "bob@example.org", ["sanne@example.org"], T0)
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    deliver(app, db)
    (to_sanne,) = smtp.to("sanne@example.org")
    (to_bob,) = smtp.to("bob@example.org")
    assert text_of(to_sanne).splitlines()[0] == "Hoi Sanne,"
    assert text_of(to_bob).splitlines()[0] == "Hello Bob,"

    smtp.clear()
    (decision_id,) = db.conn.execute(
        "SELECT id FROM decisions WHERE round_id = ? AND role = 'client'", [round_id]
    ).fetchone()
    record_decision(db, decision_id, T0 + timedelta(minutes=5), choice="stop")
    deliver(app, db, T0 + timedelta(minutes=6))
    (goodbye,) = smtp.to("sanne@example.org")
    assert text_of(goodbye).splitlines()[0] == "Hoi Sanne,"
    page = client.get(f"/b/{token_of(links_in(goodbye)[0])}")
    assert "Welkom terug, Sanne" in page.text


def test_forgetting_a_client_forgets_her_call_name(run, db, people):
    ok(run, "client", "set", "anna@example.org", "--call-name", "Annie")

    forget_client(db, "anna@example.org", T0)

    row = db.conn.execute("SELECT name, call_name FROM clients WHERE name LIKE 'Forgotten%'")
    assert [tuple(r) for r in row] == [("Forgotten client", None)]
    assert "Annie" not in dump(db)


def test_an_upgraded_database_calls_everyone_by_their_first_word(run, env, tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.executescript(OLD_SCHEMA)
    connection.close()
    monkeypatch.setenv("TWOYES_DATABASE", str(path))

    ok(run, "init")

    connection = sqlite3.connect(path)
    names = connection.execute(
        "SELECT call_name FROM coaches UNION ALL SELECT call_name FROM clients"
    ).fetchall()
    connection.close()
    assert names == [("Olga",), ("Piet",)]
