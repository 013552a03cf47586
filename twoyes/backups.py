"""Backups: a consistent copy of the database, taken while the app and cron keep running.

SQLite's online backup API copies the pages under one read transaction;
in WAL mode writers are not held up meanwhile. The nightly timer keeps a
folder of dated copies, the newest few of them: a forgotten client must not
live on in old copies forever. Restoring is putting a copy in place and
running `python cli.py init` (README, "Run it for real").
"""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from twoyes.errors import Conflict, Invalid

# The name of a backup in a folder of them: the moment it was taken, in UTC, so that
# names sort as the moments do. Only files named so are ever removed by --keep.
BACKUP_NAME = "twoyes-{:%Y-%m-%dT%H%M%SZ}.db"
BACKUP_PATTERN = re.compile(r"twoyes-\d{4}-\d{2}-\d{2}T\d{6}Z\.db")


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


def backup_into(
    db: sqlite_utils.Database, folder: str | Path, now: datetime, keep: int | None = None
) -> dict:
    """Add a dated backup to a folder of them and, with `keep`, leave only the newest `keep`.

    What the nightly timer runs. Only regular files named as this function
    names them are counted and removed, so an operator's own files in the
    folder are safe; the copy just taken always stays, even when the clock
    was set back and older copies carry later names. Nothing is removed
    unless the new copy passed its integrity check.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise Conflict(f"{folder} is not a folder; name the folder the backups go to.")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise Invalid(f"Cannot make the folder {folder}: {error.strerror}.") from error
    target = folder / BACKUP_NAME.format(now.astimezone(UTC))
    if target.exists():
        raise Conflict(f"{target} was taken this very second; try again in a moment.")
    result = backup_database(db, target)
    removed = []
    if keep is not None:
        # The copy just taken is one of the `keep`; of the others the newest keep - 1 stay.
        others = sorted(find_backups(folder) - {target})
        for old in others[: max(0, len(others) - (keep - 1))]:
            try:
                old.unlink()
            except OSError as error:
                raise Invalid(
                    f"The backup {target} was written, but {old} could not be removed: "
                    f"{error.strerror}."
                ) from error
            removed.append(str(old))
    return result | {"removed": removed}


def find_backups(folder: Path) -> set[Path]:
    """The backups `backup_into` made in a folder: regular files with its names, no links."""
    found = set()
    for path in folder.iterdir():
        if BACKUP_PATTERN.fullmatch(path.name) and stat.S_ISREG(path.lstat().st_mode):
            found.add(path)
    return found
