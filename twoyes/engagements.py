"""Engagements: starting, ending, reopening, and how one looks from the outside.

An engagement is one coach with one client (individual) or several (group).
It ends for exactly one reason and may be reopened by the coach at any time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlite_utils

from twoyes.db import transaction
from twoyes.errors import Conflict, Invalid, NotFound
from twoyes.events import log_event
from twoyes.mails import queue_outcome_mails
from twoyes.people import clean_name, get_person_by_email
from twoyes.rules import Policy
from twoyes.times import to_db


def start_engagement(
    db: sqlite_utils.Database,
    coach_email: str,
    client_emails: list[str],
    now: datetime,
    *,
    title: str | None = None,
    min_members: int = 1,
) -> int:
    """Start an engagement; two or more clients make a group."""
    if not client_emails:
        raise Invalid("An engagement needs at least one client (--client EMAIL).")
    with transaction(db):
        coach = get_person_by_email(db, "coach", coach_email)
        clients = [get_person_by_email(db, "client", email) for email in client_emails]
        ids = [client["id"] for client in clients]
        if len(set(ids)) != len(ids):
            raise Invalid("The same client is named twice; name each client once.")
        if min_members < 1 or min_members > len(clients):
            raise Invalid(
                f"--min-members must be between 1 and the number of clients ({len(clients)})."
            )
        kind = "group" if len(clients) > 1 else "individual"
        title = clean_name(title, "title") if title and title.strip() else None
        engagement_id = db.conn.execute(
            "INSERT INTO engagements (coach_id, title, kind, min_members, started_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [coach["id"], title, kind, min_members, to_db(now)],
        ).lastrowid
        db.conn.executemany(
            "INSERT INTO members (engagement_id, client_id, joined_at) VALUES (?, ?, ?)",
            [(engagement_id, client_id, to_db(now)) for client_id in ids],
        )
        log_event(db, "engagement_started", now, engagement_id=engagement_id, clients=ids)
    return engagement_id


def get_engagement(db: sqlite_utils.Database, engagement_id: int) -> dict:
    row = db.conn.execute(
        "SELECT engagements.*, coaches.name AS coach_name, coaches.email AS coach_email"
        " FROM engagements JOIN coaches ON coaches.id = engagements.coach_id"
        " WHERE engagements.id = ?",
        [engagement_id],
    ).fetchone()
    if row is None:
        raise NotFound(
            f"There is no engagement {engagement_id}; `python cli.py engagement list` shows them."
        )
    return dict(row)


def list_engagements(db: sqlite_utils.Database, status: str | None = None) -> list[dict]:
    """One summary per engagement, newest first."""
    rows = db.conn.execute(
        """
        SELECT engagements.id, engagements.title, engagements.kind, engagements.status,
               engagements.end_reason, coaches.name AS coach_name,
               coaches.email AS coach_email,
               (SELECT group_concat(clients.name, ', ') FROM members
                  JOIN clients ON clients.id = members.client_id
                 WHERE members.engagement_id = engagements.id
                   AND members.status = 'active') AS clients,
               (SELECT count(*) FROM sessions
                 WHERE sessions.engagement_id = engagements.id
                   AND sessions.status = 'held') AS sessions_held
        FROM engagements JOIN coaches ON coaches.id = engagements.coach_id
        WHERE ? IS NULL OR engagements.status = ?
        ORDER BY engagements.id DESC
        """,
        [status, status],
    )
    return [dict(row) for row in rows]


def describe_engagement(db: sqlite_utils.Database, engagement_id: int) -> dict:
    """Everything about one engagement, in the shape of `engagement show --json`."""
    engagement = get_engagement(db, engagement_id)
    members = db.conn.execute(
        "SELECT clients.name, clients.email, members.status FROM members"
        " JOIN clients ON clients.id = members.client_id"
        " WHERE members.engagement_id = ? ORDER BY members.id",
        [engagement_id],
    ).fetchall()
    sessions = []
    for session in db.conn.execute(
        "SELECT sessions.id, sessions.starts_at, sessions.status, rounds.id AS round_id,"
        " rounds.status AS round_status, rounds.deadline_at, rounds.outcome"
        " FROM sessions LEFT JOIN rounds ON rounds.session_id = sessions.id"
        " WHERE sessions.engagement_id = ? ORDER BY sessions.starts_at, sessions.id",
        [engagement_id],
    ):
        round_ = None
        if session["round_id"] is not None:
            decisions = db.conn.execute(
                "SELECT coalesce(clients.email, 'coach') AS party, decisions.choice,"
                " decisions.reason, decisions.usefulness, decisions.decided_at"
                " FROM decisions LEFT JOIN clients ON clients.id = decisions.client_id"
                " WHERE decisions.round_id = ? ORDER BY decisions.role = 'client', decisions.id",
                [session["round_id"]],
            ).fetchall()
            round_ = {
                "id": session["round_id"],
                "status": session["round_status"],
                "deadline": session["deadline_at"],
                "outcome": session["outcome"],
                "decisions": [dict(decision) for decision in decisions],
            }
        sessions.append(
            {
                "id": session["id"],
                "at": session["starts_at"],
                "round": round_,
            }
        )
    return {
        "id": engagement["id"],
        "title": engagement["title"],
        "kind": engagement["kind"],
        "status": engagement["status"],
        "end_reason": engagement["end_reason"],
        "coach": {"name": engagement["coach_name"], "email": engagement["coach_email"]},
        "members": [dict(member) for member in members],
        "sessions": sessions,
    }


def reopen_engagement(db: sqlite_utils.Database, engagement_id: int, now: datetime) -> None:
    """R7: an ended engagement becomes active again (its history stays)."""
    with transaction(db):
        engagement = get_engagement(db, engagement_id)
        if engagement["status"] != "ended":
            raise Conflict(
                f"Engagement {engagement_id} is still active; there is nothing to reopen."
            )
        if db.conn.execute(
            "SELECT 1 FROM members JOIN clients ON clients.id = members.client_id"
            " WHERE members.engagement_id = ? AND members.status = 'active'"
            " AND clients.forgotten_at IS NOT NULL",
            [engagement_id],
        ).fetchone():
            raise Conflict(
                f"Engagement {engagement_id} cannot be reopened: its client was forgotten; "
                "if they are back, add them again and start a new engagement."
            )
        db.conn.execute(
            "UPDATE engagements SET status = 'active', end_reason = NULL, ended_at = NULL,"
            " reopened_at = ? WHERE id = ?",
            [to_db(now), engagement_id],
        )
        if engagement["kind"] == "individual":
            # The one client is back; in a group, who left stays left.
            db.conn.execute(
                "UPDATE members SET status = 'active', left_at = NULL WHERE engagement_id = ?",
                [engagement_id],
            )
        log_event(db, "engagement_reopened", now, engagement_id=engagement_id)


def end_engagement(
    db: sqlite_utils.Database, engagement_id: int, reason: str, now: datetime
) -> bool:
    """Mark an active engagement ended; False when another run ended it first."""
    stage_endings(db, [stop_without_round(engagement_id, reason)])
    ended = end_staged_engagements(db, now)
    db.conn.execute("DELETE FROM temp.ending")  # no mails here: nothing staged stays behind
    return bool(ended)


def stop_without_round(engagement_id: int, reason: str) -> dict:
    """An ending for `stage_endings` that closes no round (idle, a client forgotten)."""
    return {
        "engagement_id": engagement_id,
        "round_id": None,
        "outcome": "stop",
        "end_reason": reason,
    }


def stage_endings(db: sqlite_utils.Database, endings: list[dict]) -> None:
    """Put what ends in this transaction in `temp.ending`, for set-based statements to carry out.

    Each ending has an `engagement_id`, the `round_id` that closes (None when
    no round does), its `outcome` and `end_reason`. The deadline sweep ends
    thousands of engagements at once: one statement each for the engagements,
    their events and their mails is what keeps it close to bare SQL (bench/).
    """
    db.conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS ending (engagement_id INTEGER PRIMARY KEY,"
        " round_id INTEGER UNIQUE, outcome TEXT NOT NULL, end_reason TEXT)"
    )
    db.conn.execute("DELETE FROM temp.ending")
    db.conn.executemany(
        "INSERT INTO temp.ending VALUES (:engagement_id, :round_id, :outcome, :end_reason)",
        endings,
    )


def end_staged_engagements(db: sqlite_utils.Database, now: datetime) -> int:
    """End each staged engagement whose outcome is stop and that is still active; how many.

    The caller holds the write lock, so what is active for the event is active for the update.
    """
    at = {"at": to_db(now)}
    db.conn.execute(
        """
        INSERT INTO events (at, kind, engagement_id, detail)
        SELECT :at, 'engagement_ended', engagements.id, json_object('reason', ending.end_reason)
        FROM temp.ending CROSS JOIN engagements ON engagements.id = ending.engagement_id
        WHERE ending.outcome = 'stop' AND engagements.status = 'active'
        ORDER BY engagements.id
        """,
        at,
    )
    return db.conn.execute(
        """
        UPDATE engagements SET status = 'ended', end_reason = ending.end_reason, ended_at = :at
        FROM temp.ending
        WHERE engagements.id = ending.engagement_id AND ending.outcome = 'stop'
          AND engagements.status = 'active'
        """,
        at,
    ).rowcount


IDLE_SQL = """
SELECT engagements.id FROM engagements
WHERE engagements.status = 'active'
  -- Cheap tests first: most engagements started or reopened recently, or have a round.
  AND engagements.started_at <= :cutoff
  AND coalesce(engagements.reopened_at, '') <= :cutoff
  AND NOT EXISTS (SELECT 1 FROM rounds WHERE rounds.engagement_id = engagements.id
                    AND rounds.status = 'open')
  AND NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.engagement_id = engagements.id
                    AND sessions.status = 'planned')
  AND max(engagements.started_at,
          coalesce(engagements.reopened_at, ''),
          coalesce((SELECT max(rounds.closed_at) FROM rounds
                     WHERE rounds.engagement_id = engagements.id), '')) <= :cutoff
"""


def end_idle_engagements(db: sqlite_utils.Database, now: datetime, policy: Policy) -> list[dict]:
    """R6: end each engagement with nothing held or planned for IDLE_DAYS; mail every party."""
    cutoff = to_db(now - timedelta(days=policy.idle_days))
    ended = []
    for (engagement_id,) in db.conn.execute(IDLE_SQL, {"cutoff": cutoff}).fetchall():
        with transaction(db):
            # Re-check inside the write lock: another run may have got here first.
            if not db.conn.execute(
                IDLE_SQL + " AND engagements.id = :id", {"cutoff": cutoff, "id": engagement_id}
            ).fetchone():
                continue
            stage_endings(db, [stop_without_round(engagement_id, "idle")])
            end_staged_engagements(db, now)
            queue_outcome_mails(db, now)
        ended.append({"engagement_id": engagement_id, "end_reason": "idle"})
    return ended
