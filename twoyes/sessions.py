"""Sessions: planning the next one, and recording one that just took place.

R7: at most one planned session per engagement, none on an ended engagement
or while a round waits for decisions.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlite_utils

from twoyes.db import transaction
from twoyes.engagements import get_engagement, session_number
from twoyes.errors import N_, Conflict, Invalid, NotFound
from twoyes.events import log_event
from twoyes.invitations import new_uid
from twoyes.mails import queue_invitation_mails
from twoyes.rounds import open_round, require_open_for_sessions
from twoyes.rules import Policy
from twoyes.times import to_db


def plan_session(
    db: sqlite_utils.Database,
    engagement_id: int,
    starts: datetime,
    minutes: int,
    now: datetime,
    *,
    invite: bool = False,
) -> int:
    """Plan the next session; its round opens at the first tick after it ends (R1).

    With `invite`, the coach and each member get its invitation for their calendar
    (the command line and the coach's pages invite; a script that only records does not).
    """
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
            "INSERT INTO sessions (engagement_id, status, starts_at, minutes, ends_at,"
            " created_at, uid) VALUES (?, 'planned', ?, ?, ?, ?, ?)",
            [
                engagement_id,
                to_db(starts),
                minutes,
                to_db(starts + timedelta(minutes=minutes)),
                to_db(now),
                new_uid(),
            ],
        ).lastrowid
        log_event(db, "session_planned", now, engagement_id=engagement_id, session_id=session_id)
        if invite:
            queue_invitation_mails(db, get_planned_session(db, session_id), "planned", now)
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


# What a coach may change about the planned session, from the command line or the overview.
SESSION_LENGTH = N_("A session lasts from 1 to 1440 minutes.")
IN_THE_PAST = N_("That moment has passed; please choose a time still to come.")
NOT_PLANNED = N_(
    "This session is not planned any more (it took place, or was cancelled); "
    "only a planned session can be moved or cancelled."
)


def get_planned_session(db: sqlite_utils.Database, session_id: int) -> dict:
    """A session that is still planned; NotFound when there is none, Conflict once held."""
    row = db.conn.execute("SELECT * FROM sessions WHERE id = ?", [session_id]).fetchone()
    if row is None:
        raise NotFound(
            f"There is no session {session_id}; `python cli.py engagement show ID` lists them."
        )
    if row["status"] != "planned":
        raise Conflict(NOT_PLANNED)
    return dict(row)


def plan_next_session(
    db: sqlite_utils.Database,
    engagement_id: int,
    starts: datetime,
    minutes: int,
    now: datetime,
    *,
    invite: bool = False,
) -> int:
    """Plan a session from a coach's page: as plan_session (R7), and never in the past."""
    require_to_come(starts, minutes, now)
    return plan_session(db, engagement_id, starts, minutes, now, invite=invite)


def move_session(
    db: sqlite_utils.Database,
    session_id: int,
    starts: datetime,
    now: datetime,
    minutes: int | None = None,
    *,
    invite: bool = False,
) -> dict:
    """Give the planned session a new start (and length); its round still opens after it (R1).

    R7 holds: only a planned session moves, on an engagement that is active
    and has no open round. What it was and what it became are in the event.
    Its calendar sequence goes up by one, so calendars replace their copy;
    with `invite`, everyone gets the moved invitation.
    """
    with transaction(db):
        session = get_planned_session(db, session_id)
        minutes = session["minutes"] if minutes is None else minutes
        require_to_come(starts, minutes, now)
        require_open_for_sessions(db, get_engagement(db, session["engagement_id"]))
        db.conn.execute(
            "UPDATE sessions SET starts_at = ?, minutes = ?, ends_at = ?, sequence = sequence + 1"
            " WHERE id = ?",
            [to_db(starts), minutes, to_db(starts + timedelta(minutes=minutes)), session_id],
        )
        log_event(
            db,
            "session_moved",
            now,
            engagement_id=session["engagement_id"],
            session_id=session_id,
            was=session["starts_at"],
            starts_at=to_db(starts),
            minutes=minutes,
        )
        moved = get_planned_session(db, session_id) | {"was": session["starts_at"]}
        if invite:
            queue_invitation_mails(db, moved, "moved", now)
    return moved


def cancel_session(
    db: sqlite_utils.Database, session_id: int, now: datetime, *, invite: bool = False
) -> dict:
    """Take the planned session off the calendar; no round will follow it.

    The row goes (a session is planned or held, nothing in between); the event
    keeps when it was planned for. With nothing planned, R6 may end the
    engagement once it has been quiet for IDLE_DAYS. With `invite`, everyone
    gets the cancellation for their calendar.
    """
    with transaction(db):
        session = get_planned_session(db, session_id)
        if invite:
            queue_invitation_mails(db, session, "cancelled", now)
        db.conn.execute("DELETE FROM sessions WHERE id = ?", [session_id])
        log_event(
            db,
            "session_cancelled",
            now,
            engagement_id=session["engagement_id"],
            session_id=session_id,
            was=session["starts_at"],
        )
    return session


def require_to_come(starts: datetime, minutes: int, now: datetime) -> None:
    """A session planned by hand starts after `now` and lasts 1 to 1440 minutes."""
    if not 1 <= minutes <= 1440:
        raise Invalid(SESSION_LENGTH)
    if starts <= now:
        raise Invalid(IN_THE_PAST)
