"""Backups: a consistent copy of the database, taken while the app and cron keep running.

SQLite's online backup API copies the pages under one read transaction;
in WAL mode writers are not held up meanwhile. Restoring is putting a copy
in place and running `python cli.py init` (README, "Your clients' data").
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlite_utils

from twoyes.errors import Conflict, Invalid


def backup_database(db: sqlite_utils.Database, path: str | Path) -> dict:
    """Copy the database to a new file with SQLite's online backup, while the app runs.

    The copy is one consistent moment (one read transaction: writers go on
    meanwhile), checked with PRAGMA integrity_check, a single self-contained
    file (rollback journal, not WAL), readable only by its owner, and appears
    under its name only when complete.
    """
    target = Path(path)
    if target.is_dir():
        raise Conflict(
            f"{target} is a folder; name a new file in it, such as {target / 'twoyes-DATE.db'}."
        )
    if target.exists():
        raise Conflict(f"{target} exists already; name a new file (with the date, say).")
    partial = target.with_name(f".{target.name}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    except OSError as error:
        raise Invalid(f"Cannot write a backup to {target}: {error.strerror}.") from error
    try:
        copy = sqlite3.connect(partial)
        try:
            db.conn.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
            integrity = copy.execute("PRAGMA integrity_check").fetchone()[0]
            version = copy.execute("PRAGMA user_version").fetchone()[0]
        finally:
            copy.close()
        if integrity != "ok":
            raise Conflict(
                f"The copy failed its integrity check ({integrity}); the database itself "
                "may be damaged. Nothing was written."
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return {
        "path": str(target),
        "bytes": target.stat().st_size,
        "schema_version": version,
        "integrity_check": integrity,
    }
