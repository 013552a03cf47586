"""What cron runs: the work `tick` and `close-undecided` do, as plain functions with a summary.

The command line only calls these and prints; delivery, the last step of
`tick`, is the mail wing's (the command calls it after `do_due_work`). Each
step is safe when two runs overlap: every item is checked again under the
write lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import sqlite_utils

from twoyes.db import transaction
from twoyes.engagements import end_idle_engagements
from twoyes.retention import anonymise_expired, purge_delivered_mail
from twoyes.rounds import open_due_rounds, send_reminders, sweep_overdue_rounds
from twoyes.settings import Settings


class Rollback(Exception):
    """Raised inside a transaction to undo it on purpose (a dry run)."""


def close_undecided(
    db: sqlite_utils.Database, now: datetime, settings: Settings, *, dry_run: bool = False
) -> Iterator[list[dict]]:
    """R4 and R6: close every overdue round and end every idle engagement; yields what ended.

    Each batch is yielded as soon as it committed, so a sweep of a million
    rounds shows its progress and keeps one batch in memory. With `dry_run`,
    the same work happens in one transaction that is rolled back once the
    last batch was yielded, so what it would end is exactly what a real run
    would. Nothing happens until the caller iterates.
    """
    if not dry_run:
        yield from _close_undecided(db, now, settings)
        return
    try:
        with transaction(db):
            yield from _close_undecided(db, now, settings)
            raise Rollback
    except Rollback:
        pass


def _close_undecided(db, now, settings: Settings) -> Iterator[list[dict]]:
    yield from sweep_overdue_rounds(db, now, settings.sweep_batch)
    idle = end_idle_engagements(db, now, settings.policy)
    if idle:
        yield idle


def do_due_work(db: sqlite_utils.Database, now: datetime, settings: Settings) -> dict[str, int]:
    """R1, R9, R4, R6 and retention, in that order: what `tick` does before delivery.

    Returns how many of each happened.
    """
    summary = {
        "rounds_opened": len(open_due_rounds(db, now, settings.policy)),
        # Counted batch by batch: tick may meet a million overdue rounds after a long outage.
        "rounds_closed": sum(
            len(closed) for closed in sweep_overdue_rounds(db, now, settings.sweep_batch)
        ),
        "idle_ended": len(end_idle_engagements(db, now, settings.policy)),
        "reminders": send_reminders(db, now),
    }
    summary |= anonymise_expired(db, now, settings.retention_days)
    summary["mail_bodies_purged"] = purge_delivered_mail(db, now)
    return summary
