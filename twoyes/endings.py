"""Endings: closing rounds and ending engagements, one or thousands at once.

Whatever ends (a round that closes, an engagement that stops) is written to
the scratch table `temp.ending`, one row per engagement: the round that
closes (None when none does), its outcome and the engagement's end reason.
A few set-based statements then carry it all out, and mails.py reads the
same rows to mail every party. The deadline sweep ends thousands of
engagements per transaction this way, one statement each for the rounds,
the engagements, their events and their mails: that is what keeps it close
to bare SQL (bench/).

`end_engagements` is the table's one owner: it fills it, carries it out and
empties it again whatever happens, so no call ever sees another's rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import sqlite_utils

from twoyes.db import transaction
from twoyes.invitations import cancel_ending_sessions
from twoyes.mails import queue_outcome_mails
from twoyes.times import to_db

# Memory-only (connect() sets temp_store) and private to the connection.
CREATE_ENDING = (
    "CREATE TEMP TABLE IF NOT EXISTS ending (engagement_id INTEGER PRIMARY KEY,"
    " round_id INTEGER UNIQUE, outcome TEXT NOT NULL, end_reason TEXT)"
)

# Each statement starts from the few rows in temp.ending and reaches the rest by key:
# `id IN (SELECT ...)`, since an UPDATE ... FROM temp.ending scans the whole target table
# (tests/test_schema.py checks the plans).
CLOSE_ROUNDS = """
UPDATE rounds
SET status = 'closed', closed_at = :at,
    outcome = (SELECT outcome FROM temp.ending WHERE ending.round_id = rounds.id)
WHERE rounds.id IN (SELECT round_id FROM temp.ending) AND rounds.status = 'open'
"""

# R3, R4, R6: an ending whose outcome is stop ends an engagement that is still active.
# The caller holds the write lock, so what is active for the event is active for the update.
LOG_ENGAGEMENTS_ENDED = """
INSERT INTO events (at, kind, engagement_id, detail)
SELECT :at, 'engagement_ended', engagements.id, json_object('reason', ending.end_reason)
FROM temp.ending CROSS JOIN engagements ON engagements.id = ending.engagement_id
WHERE ending.outcome = 'stop' AND engagements.status = 'active'
ORDER BY engagements.id
"""

END_ENGAGEMENTS = """
UPDATE engagements
SET status = 'ended', ended_at = :at,
    end_reason = (SELECT end_reason FROM temp.ending
                   WHERE ending.engagement_id = engagements.id)
WHERE engagements.id IN (SELECT engagement_id FROM temp.ending WHERE outcome = 'stop')
  AND engagements.status = 'active'
"""

LOG_ROUNDS_CLOSED = """
INSERT INTO events (at, kind, engagement_id, round_id, detail)
SELECT :at, 'round_closed', engagement_id, round_id,
       json_object('end_reason', end_reason, 'outcome', outcome)
FROM temp.ending WHERE round_id IS NOT NULL ORDER BY round_id
"""


class Ending(NamedTuple):
    """What ends: an engagement, the round that closes (None when none does), the round's
    outcome, and the end reason the engagement gets if that outcome is stop."""

    engagement_id: int
    round_id: int | None = None
    outcome: str = "stop"
    end_reason: str | None = None


def end_engagements(
    db: sqlite_utils.Database, now: datetime, endings: list[Ending], *, mail: bool = True
) -> int:
    """Close each ending's round, end each engagement it stops, and mail every party (R8).

    Each round is closed with its outcome and gets its `round_closed` event;
    an engagement whose outcome is stop and that is still active ends with
    its end reason and an `engagement_ended` event. With `mail`, every party
    hears the outcome (mails.queue_outcome_mails); without it nobody does
    (a forgotten client's engagement ends in silence). Returns how many
    engagements ended.

    The caller holds the write lock and has just seen each round open; it
    does what an ending means for the members (leave_group) before this call.
    """
    if not endings:
        return 0
    at = {"at": to_db(now)}
    with transaction(db):
        db.conn.execute(CREATE_ENDING)
        try:
            db.conn.executemany("INSERT INTO temp.ending VALUES (?, ?, ?, ?)", endings)
            db.conn.execute(CLOSE_ROUNDS, at)
            db.conn.execute(LOG_ENGAGEMENTS_ENDED, at)
            ended = db.conn.execute(END_ENGAGEMENTS, at).rowcount
            if ended:
                cancel_ending_sessions(db, now, mail=mail)
            db.conn.execute(LOG_ROUNDS_CLOSED, at)
            if mail:
                queue_outcome_mails(db, now)
        finally:
            db.conn.execute("DELETE FROM temp.ending")
    return ended
