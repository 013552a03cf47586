"""Sessions: planning the next one, and recording one that just took place.

R7: at most one planned session per engagement, none on an ended engagement
or while a round waits for decisions.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlite_utils

from twoyes.db import transaction
from twoyes.engagements import get_engagement, session_number
from twoyes.errors import Conflict, Invalid
from twoyes.events import log_event
from twoyes.rounds import open_round, require_open_for_sessions
from twoyes.rules import Policy
from twoyes.times import to_db


def plan_session(
    db: sqlite_utils.Database, engagement_id: int, starts: datetime, minutes: int, now: datetime
) -> int:
    """Plan the next session; its round opens at the first tick after it ends (R1)."""
    if not 1 <= minutes <= 1440:
        raise Invalid("A session lasts from 1 to 1440 minutes.")
    with transaction(db):
        engagement = get_engagement(db, engagement_id)
        require_open_for_sessions(db, engagement)
        planned = find_planned_session(db, engagement_id)
        if planned:
            raise Conflict(
                f"Engagement {engagement_id} already has a planned session "
                f"(session {session_number(db, planned['id'])}, at {planned['starts_at']}); "
                "an engagement plans one session at a time."
            )
        session_id = db.conn.execute(
            "INSERT INTO sessions (engagement_id, status, starts_at, minutes, ends_at, created_at)"
            " VALUES (?, 'planned', ?, ?, ?, ?)",
            [
                engagement_id,
                to_db(starts),
                minutes,
                to_db(starts + timedelta(minutes=minutes)),
                to_db(now),
            ],
        ).lastrowid
        log_event(db, "session_planned", now, engagement_id=engagement_id, session_id=session_id)
    return session_id


def record_session_done(
    db: sqlite_utils.Database,
    engagement_id: int,
    now: datetime,
    policy: Policy,
    minutes: int = 60,
) -> tuple[int, int]:
    """A session just took place: hold the planned one and open its round (R1).

    Without a planned session, one is recorded as having lasted `minutes` up to now.
    """
    with transaction(db):
        engagement = get_engagement(db, engagement_id)
        require_open_for_sessions(db, engagement)
        planned = find_planned_session(db, engagement_id)
        if planned:
            session_id = planned["id"]
            db.conn.execute(
                "UPDATE sessions SET status = 'held', held_at = ? WHERE id = ?",
                [to_db(now), session_id],
            )
        else:
            if not 1 <= minutes <= 1440:
                raise Invalid("A session lasts from 1 to 1440 minutes.")
            session_id = db.conn.execute(
                "INSERT INTO sessions (engagement_id, status, starts_at, minutes, ends_at,"
                " held_at, created_at) VALUES (?, 'held', ?, ?, ?, ?, ?)",
                [
                    engagement_id,
                    to_db(now - timedelta(minutes=minutes)),
                    minutes,
                    to_db(now),
                    to_db(now),
                    to_db(now),
                ],
            ).lastrowid
        log_event(db, "session_held", now, engagement_id=engagement_id, session_id=session_id)
        round_id = open_round(db, session_id, now, policy)
    return session_id, round_id


def find_planned_session(db: sqlite_utils.Database, engagement_id: int) -> dict | None:
    row = db.conn.execute(
        "SELECT * FROM sessions WHERE engagement_id = ? AND status = 'planned'", [engagement_id]
    ).fetchone()
    return dict(row) if row else None
