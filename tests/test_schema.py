"""The schema's views, and the indexes the hot queries rely on.

The deadline sweep and the decision page are fast because SQLite reaches
their rows through an index. A rewrite that reads the same can make it scan
whole tables instead (an `UPDATE ... FROM` a scratch table does, and so can
a join over a view): nothing else would notice until a practice grew. These
tests read SQLite's own plan for each of those queries, on a database as
`init` makes it (no statistics: twoyes never runs ANALYZE).
"""

from __future__ import annotations

import re
import sqlite3

import pytest
from support import BEFORE_VERSION_7

from twoyes import db as database
from twoyes import endings, engagements, mails, parties, rounds

AT = "2026-12-09T10:00:00+00:00"


@pytest.fixture
def db(tmp_path):
    connection = database.connect(tmp_path / "twoyes.db")
    database.init_db(connection)
    # The scratch tables the sweep's statements read, as the sweep makes them.
    connection.conn.execute(endings.CREATE_ENDING)
    connection.conn.execute(mails.CREATE_LINKS)
    connection.conn.execute(mails.CREATE_COACH_LINKS)
    yield connection
    connection.close()


def plan_of(db, sql: str, params) -> list[str]:
    return [row["detail"] for row in db.conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


def scanned(db, plan: list[str]) -> set[str]:
    """The tables and views of the database that a plan reads from end to end."""
    names = set(db.table_names()) | set(db.view_names())
    return {
        match.group(1)
        for line in plan
        if (match := re.match(r"(?:SCAN|MATERIALIZE|CO-ROUTINE) (\w+)\b", line))
        and match.group(1) in names
    }


# Each query of the sweep (close-undecided, tick), with what it must search by.
SWEEP = {
    "overdue rounds": (
        rounds.OVERDUE_ROUNDS,
        [AT, 5000],
        "rounds USING INDEX rounds_open_deadline",
    ),
    "their choices": (rounds.ROUND_CHOICES, ["[1, 2]"], "decisions USING INDEX"),
    "rounds closed": (endings.CLOSE_ROUNDS, {"at": AT}, "rounds USING INTEGER PRIMARY KEY"),
    "engagements ended, events": (
        endings.LOG_ENGAGEMENTS_ENDED,
        {"at": AT},
        "engagements USING INTEGER PRIMARY KEY",
    ),
    "engagements ended": (
        endings.END_ENGAGEMENTS,
        {"at": AT},
        "engagements USING INTEGER PRIMARY KEY",
    ),
    "who leaves": (mails.ROUND_PARTIES + mails.LEAVING, {}, "decisions USING INDEX"),
    "outcome mails": (
        mails.INSERT_OUTBOX + mails.ROUND_PARTIES + mails.OUTCOME_MAILS,
        {"at": AT, "low": 3, "key": "0123456789abcdef"},
        "decisions USING INDEX",
    ),
    "who leaves, without a round": (
        mails.ROUNDLESS_PARTIES + mails.LEAVING,
        {},
        "members USING INDEX",
    ),
    "outcome mails, without a round": (
        mails.INSERT_OUTBOX + mails.ROUNDLESS_PARTIES + mails.OUTCOME_MAILS,
        {"at": AT, "low": 3, "key": "0123456789abcdef"},
        "members USING INDEX",
    ),
    "reminders due": (
        rounds.REMINDERS_DUE,
        {"now": AT, "limit": 500},
        "rounds USING INDEX rounds_open_reminder",
    ),
}

# Each query behind a decision page and a decision.
PAGES = {
    "decision page": (parties.PAGE_PARTIES, [1], "decisions USING INDEX"),
    "a decision's party": (rounds.DECIDING_PARTY, [1], "decisions USING INTEGER PRIMARY KEY"),
    "parties of rounds": (parties.PARTIES_OF_ROUNDS, ["[1, 2]"], "decisions USING INDEX"),
}


@pytest.mark.parametrize("name", [*SWEEP, *PAGES])
def test_a_hot_query_reads_through_its_indexes(db, name):
    sql, params, search = (SWEEP | PAGES)[name]
    plan = plan_of(db, sql, params)
    assert scanned(db, plan) == set(), plan
    assert any(line.startswith(f"SEARCH {search}") for line in plan), plan
    if "decisions USING INDEX" in search:
        assert any("(round_id=?)" in line for line in plan if "SEARCH decisions" in line), plan


def test_the_idle_sweep_scans_engagements_only(db):
    """R6 looks at every active engagement (status has no index), and at nothing else whole."""
    plan = plan_of(db, engagements.IDLE_SQL, {"cutoff": AT})
    assert scanned(db, plan) == {"engagements"}, plan
    for index in ("rounds_one_open", "sessions_one_planned", "rounds_engagement"):
        assert any(index in line for line in plan), plan


def test_a_sweep_statement_that_scans_is_caught(db):
    """The check above can fail: `UPDATE ... FROM temp.ending` reads every open round."""
    plan = plan_of(
        db,
        "UPDATE rounds SET status = 'closed', outcome = ending.outcome, closed_at = :at"
        " FROM temp.ending WHERE rounds.id = ending.round_id AND rounds.status = 'open'",
        {"at": AT},
    )
    assert scanned(db, plan) == {"rounds"}, plan


# -- init and the views --------------------------------------------------------------------


def views_of(db) -> dict[str, str]:
    return dict(db.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'"))


def test_init_replaces_a_view_an_older_twoyes_made(db):
    made = views_of(db)
    assert set(made) == {"round_parties", "resting_engagements"}
    db.conn.execute("DROP VIEW round_parties")
    db.conn.execute("CREATE VIEW round_parties AS SELECT id, round_id FROM decisions")
    # A view of the practice's own is theirs: init leaves it be.
    db.conn.execute("CREATE VIEW my_counts AS SELECT count(*) AS rounds FROM rounds")

    database.init_db(db)

    assert views_of(db) == made | {"my_counts": views_of(db)["my_counts"]}
    assert "coach_email" in db["round_parties"].columns_dict


def test_init_upgrades_a_table_that_an_old_view_reads(db):
    """Version 3 rebuilds tokens and renames the new table into place, which SQLite refuses
    while a view reads a table that is gone: init drops its views before the upgrades."""
    made = views_of(db)
    # Back to version 2 (a tokens table that knows no coach view), with a view of tokens.
    for statement in (
        "CREATE TABLE tokens_v2 (hash TEXT PRIMARY KEY, purpose TEXT NOT NULL"
        " CHECK (purpose IN ('decide', 'welcome_back')), decision_id INTEGER,"
        " member_id INTEGER, created_at TEXT NOT NULL, expires_at TEXT) WITHOUT ROWID",
        "DROP TABLE tokens",
        "ALTER TABLE tokens_v2 RENAME TO tokens",
        "DROP VIEW round_parties",
        "CREATE VIEW round_parties AS SELECT decisions.id, tokens.hash FROM decisions"
        " JOIN tokens ON tokens.decision_id = decisions.id",
        "ALTER TABLE coaches DROP COLUMN call_name",  # version 4 adds it
        "ALTER TABLE clients DROP COLUMN call_name",
        *BEFORE_VERSION_7,
        "ALTER TABLE coaches DROP COLUMN forgotten_at",  # version 6 adds it
        "PRAGMA user_version = 2",
    ):
        db.conn.execute(statement)
    with pytest.raises(sqlite3.OperationalError, match="error in view round_parties"):
        with database.transaction(db):
            for statement in database.UPGRADES[3]:
                db.conn.execute(statement)

    assert database.init_db(db) == (2, database.SCHEMA_VERSION, False)

    assert views_of(db) == made
    assert "coach_id" in db["tokens"].columns_dict
    assert "nonce" in db["tokens"].columns_dict  # version 6
