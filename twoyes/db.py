"""The database connection's life: how it is opened, how writes are grouped, how it is made.

Every connection runs in WAL mode with foreign keys on and a busy timeout, so
the web app, cron's `tick` and a coach's command can share one SQLite file.
Python's own implicit transactions are switched off (isolation_level=None):
each write happens inside `transaction(db)`, which takes the write lock up
front (BEGIN IMMEDIATE). A deferred transaction that reads and then writes
fails at once with "database is locked" when another process committed in
between, whatever the busy timeout; an immediate one waits its turn instead.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from twoyes.errors import Conflict

SCHEMA = Path(__file__).resolve().parent.parent / "schema.sql"
BUSY_TIMEOUT_MS = 30_000

# The outbox as of version 5, and its kinds since then.
OUTBOX_V5_KINDS = "'decision', 'reminder', 'outcome', 'welcome_back', 'sign_in'"
OUTBOX_V7_KINDS = OUTBOX_V5_KINDS + ", 'welcome', 'invitation'"
OUTBOX_V8_KINDS = (
    OUTBOX_V7_KINDS + ", 'reply_recorded', 'reply_unclear', 'reply_refused', 'reply_forward'"
)
OUTBOX = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ({kinds})),
    engagement_id INTEGER REFERENCES engagements (id),
    to_name TEXT NOT NULL,
    to_email TEXT NOT NULL,
    reply_to_name TEXT,
    reply_to_email TEXT,
    lang TEXT NOT NULL DEFAULT 'en',
    context TEXT NOT NULL DEFAULT '{{}}',
    message_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    claimed_at TEXT,
    claim TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
)"""
# Version 5's shape, as tests rebuild an older database with it.
OUTBOX_V5 = OUTBOX.replace("{kinds}", OUTBOX_V5_KINDS)
OUTBOX_COLUMNS = (
    "id, kind, engagement_id, to_name, to_email, reply_to_name, reply_to_email, lang, context,"
    " message_id, status, attempts, next_attempt_at, claimed_at, claim, last_error,"
    " created_at, sent_at"
)


def rebuild_outbox(kinds: str) -> list[str]:
    """The statements that give the outbox a new CHECK on its kinds, keeping every row."""
    return [
        OUTBOX_V5.format(name="IF NOT EXISTS outbox"),
        OUTBOX.format(name="outbox_new", kinds=kinds),
        # The column list is the constant above, never input.
        f"INSERT INTO outbox_new ({OUTBOX_COLUMNS}) SELECT {OUTBOX_COLUMNS} FROM outbox",  # nosec B608
        "DROP TABLE outbox",
        "ALTER TABLE outbox_new RENAME TO outbox",
    ]


# The tokens table as of version 6 (schema.sql holds the same shape).
TOKENS_V6 = """CREATE TABLE tokens_new (
    nonce TEXT PRIMARY KEY,
    hash TEXT UNIQUE,
    purpose TEXT NOT NULL CHECK (purpose IN ('decide', 'welcome_back', 'coach_view')),
    decision_id INTEGER REFERENCES decisions (id),
    member_id INTEGER REFERENCES members (id),
    coach_id INTEGER REFERENCES coaches (id),
    created_at TEXT NOT NULL,
    expires_at TEXT,
    CHECK ((purpose = 'decide') = (decision_id IS NOT NULL)),
    CHECK ((purpose = 'welcome_back') = (member_id IS NOT NULL AND expires_at IS NOT NULL)),
    CHECK ((purpose = 'coach_view') = (coach_id IS NOT NULL AND expires_at IS NOT NULL))
) WITHOUT ROWID"""

# Upgrades from one schema version to the next, run in order by init_db.
# schema.sql always describes the newest shape; an upgrade brings an older
# database there (ALTER TABLE ..., or data moved between tables).
UPGRADES: dict[int, list[str]] = {
    1: [],  # version 1: schema.sql as first written
    # version 2: clients can be forgotten; the event log lets go of ip addresses
    # and user agents (schema.sql then makes the trigger that allows only that).
    2: [
        "ALTER TABLE clients ADD COLUMN forgotten_at TEXT",
        "DROP TRIGGER IF EXISTS events_no_update",
    ],
    # version 3: a token may open a coach's overview (purpose 'coach_view', coach_id).
    # SQLite cannot change a CHECK constraint in place, so the table is rebuilt by hand:
    # sqlite-utils' table.transform() keeps the old CHECKs (it has no way to change one)
    # and would make the table a rowid one, losing WITHOUT ROWID.
    3: [
        # A database from before version 1 may have no tokens table at all.
        "CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, purpose TEXT NOT NULL,"
        " decision_id INTEGER, member_id INTEGER, created_at TEXT NOT NULL, expires_at TEXT)"
        " WITHOUT ROWID",
        """CREATE TABLE tokens_new (
    hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL CHECK (purpose IN ('decide', 'welcome_back', 'coach_view')),
    decision_id INTEGER REFERENCES decisions (id),
    member_id INTEGER REFERENCES members (id),
    coach_id INTEGER REFERENCES coaches (id),
    created_at TEXT NOT NULL,
    expires_at TEXT,
    CHECK ((purpose = 'decide') = (decision_id IS NOT NULL)),
    CHECK ((purpose = 'welcome_back') = (member_id IS NOT NULL AND expires_at IS NOT NULL)),
    CHECK ((purpose = 'coach_view') = (coach_id IS NOT NULL AND expires_at IS NOT NULL))
) WITHOUT ROWID""",
        "INSERT INTO tokens_new (hash, purpose, decision_id, member_id, created_at, expires_at)"
        " SELECT hash, purpose, decision_id, member_id, created_at, expires_at FROM tokens",
        "DROP TABLE tokens",
        "ALTER TABLE tokens_new RENAME TO tokens",
    ],
    # version 4: the name a person is called by, at first their name's first word.
    4: [
        "ALTER TABLE coaches ADD COLUMN call_name TEXT CHECK (length(call_name) BETWEEN 1 AND 100)",
        "ALTER TABLE clients ADD COLUMN call_name TEXT CHECK (length(call_name) BETWEEN 1 AND 100)",
        "UPDATE coaches SET call_name = substr(name, 1, instr(name || ' ', ' ') - 1)",
        "UPDATE clients SET call_name = substr(name, 1, instr(name || ' ', ' ') - 1)"
        " WHERE forgotten_at IS NULL",
    ],
    # version 5: the outbox may hold a coach's sign-in mail (kind 'sign_in'); the table is
    # rebuilt for its CHECK, as version 3 rebuilt tokens. A very old database gets it new.
    5: rebuild_outbox(OUTBOX_V5_KINDS),
    # version 6: a token row is keyed by a random nonce, and a mailed link's token is made
    # from it at delivery (tokens.py), so no raw token is ever written. Links made before
    # keep their hash and open as they did; mail still waiting with a raw token in it goes
    # out as it is (delivery.py reads both). The table is rebuilt, as version 3 did.
    # Coaches can be forgotten, like clients (privacy.py).
    6: [
        "ALTER TABLE coaches ADD COLUMN forgotten_at TEXT",
        TOKENS_V6,
        "INSERT INTO tokens_new (nonce, hash, purpose, decision_id, member_id, coach_id,"
        " created_at, expires_at) SELECT lower(hex(randomblob(16))), hash, purpose,"
        " decision_id, member_id, coach_id, created_at, expires_at FROM tokens",
        "DROP TABLE tokens",
        "ALTER TABLE tokens_new RENAME TO tokens",
    ],
    # version 7: a planned session is in calendars (a stable uid, a sequence raised on every
    # move); a coach may have a booking page; the outbox holds welcome mails and invitations
    # (rebuilt for its CHECK, as version 5 did).
    7: [
        # A database from before version 1 may have no sessions table yet: its old shape.
        "CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY,"
        " engagement_id INTEGER NOT NULL REFERENCES engagements (id),"
        " status TEXT NOT NULL CHECK (status IN ('planned', 'held')), starts_at TEXT NOT NULL,"
        " minutes INTEGER NOT NULL CHECK (minutes BETWEEN 1 AND 1440), ends_at TEXT NOT NULL,"
        " held_at TEXT, created_at TEXT NOT NULL)",
        "ALTER TABLE sessions ADD COLUMN uid TEXT",
        "ALTER TABLE sessions ADD COLUMN sequence INTEGER NOT NULL DEFAULT 0",
        "UPDATE sessions SET uid = lower(hex(randomblob(16)))",
        "ALTER TABLE coaches ADD COLUMN booking_url TEXT"
        " CHECK (booking_url LIKE 'https://%' AND length(booking_url) <= 2000)",
        *rebuild_outbox(OUTBOX_V7_KINDS),
    ],
    # version 8: the outbox holds the mails a reply causes (replies.py); rebuilt for its CHECK
    # as in version 5. The tables of reply threads and inbound messages are new (schema.sql).
    8: rebuild_outbox(OUTBOX_V8_KINDS),
}
SCHEMA_VERSION = max(UPGRADES)


def connect(path: str | Path) -> sqlite_utils.Database:
    """Open the database file with the settings every twoyes connection needs."""
    Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # Deleted rows (tokens, wiped links) are overwritten, not left in free pages.
    conn.execute("PRAGMA secure_delete = ON")
    # Up to 16 MB of pages, grown only as used: a deadline sweep rewrites thousands of
    # index pages per batch, and SQLite's 2 MB default spilled them to disk twice.
    conn.execute("PRAGMA cache_size = -16000")
    # Scratch tables (mails.py builds a sweep's mails in one) stay in memory.
    conn.execute("PRAGMA temp_store = MEMORY")
    return sqlite_utils.Database(conn, execute_plugins=False)


_held = threading.local()


def get_db(path: str | Path) -> sqlite_utils.Database:
    """The database at `path`, over one connection per thread, kept between requests and calls.

    Opening a connection per request cost more than the request itself: when
    the last connection to a WAL database closes, SQLite checkpoints and
    drops the write-ahead log, and the next one rebuilds it (see bench/). A
    forked worker or another path gets a connection of its own.
    """
    key = (os.getpid(), str(path))
    if getattr(_held, "key", None) != key:
        if getattr(_held, "db", None) is not None and _held.key[0] == os.getpid():
            _held.db.close()
        _held.key, _held.db = None, None
        _held.db = connect(path)
        _held.key = key
    return _held.db


def roll_back_unfinished(exception: BaseException | None = None) -> None:
    """End of a request or command: nothing may stay half-written on the kept connection.

    The connection itself stays open for the next request (see get_db).
    """
    db = getattr(_held, "db", None)
    if db is not None and db.conn.in_transaction:
        db.conn.execute("ROLLBACK")


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """Run the block as one immediate transaction: all of it lands, or none.

    Nested use joins the outer transaction, so a domain function can be
    called alone or as part of a larger unit of work.
    """
    if db.conn.in_transaction:
        yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def schema_version(db: sqlite_utils.Database) -> int:
    return db.conn.execute("PRAGMA user_version").fetchone()[0]


def init_db(db: sqlite_utils.Database) -> tuple[int, int, bool]:
    """Create the tables, or upgrade an older database; safe to repeat.

    Returns the schema version before and after, and whether the database was new.
    """
    before = schema_version(db)
    created = not [name for name in db.table_names() if not name.startswith("sqlite_")]
    if before > SCHEMA_VERSION:
        raise Conflict(
            f"The database has schema version {before}, newer than this twoyes "
            f"({SCHEMA_VERSION}); upgrade twoyes before using it."
        )
    upgrades = range(before + 1, SCHEMA_VERSION + 1) if not created else range(0)
    # SQLite's way to rebuild a table (sqlite.org/lang_altertable.html#otheralter): foreign
    # keys off while the upgrades run (outside the transaction, which would ignore the
    # pragma), and checked by hand before the commit. An upgrade may copy rows into a
    # table whose parents do not exist yet in a very old database: schema.sql makes them.
    db.conn.execute("PRAGMA foreign_keys = OFF")
    try:
        with transaction(db):
            # executescript would commit our transaction; run statement by statement.
            statements = split_statements(SCHEMA.read_text())
            # schema.sql's views go first (it makes them again at its end), so that none
            # stands in the way of an upgrade that rebuilds a table it reads: renaming
            # the new table into place checks every view in the schema.
            drops = [sql for sql in statements if sql.startswith("DROP VIEW IF EXISTS")]
            for statement in drops:
                db.conn.execute(statement)
            # A new database gets schema.sql alone; an older one its upgrades first.
            for version in upgrades:
                for statement in UPGRADES[version]:
                    db.conn.execute(statement)
            for statement in statements:
                if statement not in drops:
                    db.conn.execute(statement)
            if upgrades:
                broken = db.conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise Conflict(
                        f"Upgrading would leave {len(broken)} row(s) pointing at nothing "
                        f"(the first in table {broken[0][0]}); the database was not changed."
                    )
            db.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        db.conn.execute("PRAGMA foreign_keys = ON")
    return before, SCHEMA_VERSION, created


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (triggers hold inner semicolons)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
