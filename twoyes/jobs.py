"""What cron runs: the work `tick` and `close-undecided` do, as plain functions with a summary.

The command line only calls these and prints; delivery, the last step of
`tick`, is the mail wing's (the command calls it after `do_due_work`). Each
step is safe when two runs overlap: every item is checked again under the
write lock.
"""

from __future__ import annotations

from datetime import datetime

import sqlite_utils

from twoyes.db import transaction
from twoyes.engagements import end_idle_engagements
from twoyes.retention import anonymise_expired, purge_delivered_mail
from twoyes.rounds import close_overdue_rounds, open_due_rounds, send_reminders
from twoyes.settings import Settings


class Rollback(Exception):
    """Raised inside a transaction to undo it on purpose (a dry run)."""


def close_undecided(
    db: sqlite_utils.Database, now: datetime, settings: Settings, *, dry_run: bool = False
) -> list[dict]:
    """R4 and R6: close every overdue round and end every idle engagement; what ended.

    With `dry_run`, the same work happens in one transaction that is rolled
    back, so what it would end is exactly what a real run would.
    """
    if not dry_run:
        return _close_undecided(db, now, settings)
    ended: list[dict] = []
    try:
        with transaction(db):
            ended = _close_undecided(db, now, settings)
            raise Rollback
    except Rollback:
        pass
    return ended


def _close_undecided(db, now, settings: Settings) -> list[dict]:
    return close_overdue_rounds(db, now, settings.sweep_batch) + end_idle_engagements(
        db, now, settings.policy
    )


def do_due_work(db: sqlite_utils.Database, now: datetime, settings: Settings) -> dict[str, int]:
    """R1, R9, R4, R6 and retention, in that order: what `tick` does before delivery.

    Returns how many of each happened.
    """
    summary = {
        "rounds_opened": len(open_due_rounds(db, now, settings.policy)),
        "rounds_closed": len(close_overdue_rounds(db, now, settings.sweep_batch)),
        "idle_ended": len(end_idle_engagements(db, now, settings.policy)),
        "reminders": send_reminders(db, now),
    }
    summary |= anonymise_expired(db, now, settings.retention_days)
    summary["mail_bodies_purged"] = purge_delivered_mail(db, now)
    return summary
