"""Engagements: starting, ending, reopening, and how one looks from the outside.

An engagement is one coach with one client (individual) or several (group).
It ends for exactly one reason and may be reopened by the coach at any time.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlite_utils

from twoyes.db import transaction
from twoyes.endings import Ending, end_engagements
from twoyes.errors import Conflict, Invalid, NotFound
from twoyes.events import log_event
from twoyes.mails import queue_welcome_mails
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
    mail: bool = False,
    welcome: bool = True,
) -> int:
    """Start an engagement; two or more clients make a group.

    The principle is said at the start: with `mail`, each client gets a welcome
    mail (unless not `welcome`: an engagement moved in from before) and the coach
    its confirmation, with the same sentences. The command line and the coach's
    page mail; a script or a test that only sets up an engagement does not.
    """
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
        title = clean_name(title, what="title") if title and title.strip() else None
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
        if mail:
            queue_welcome_mails(db, engagement_id, now, welcome_clients=welcome)
    return engagement_id


def find_same_active_engagement(
    db: sqlite_utils.Database, coach_email: str, client_emails: list[str]
) -> dict | None:
    """An active engagement of this coach with exactly these clients, if there is one: starting
    a second is most often a slip (the command line asks for --again)."""
    coach = get_person_by_email(db, "coach", coach_email)
    ids = sorted({get_person_by_email(db, "client", email)["id"] for email in client_emails})
    row = db.conn.execute(
        "SELECT engagements.id, engagements.title FROM engagements"
        " WHERE coach_id = ? AND status = 'active'"
        " AND (SELECT json_group_array(client_id) FROM (SELECT client_id FROM members"
        "      WHERE engagement_id = engagements.id AND status = 'active' ORDER BY client_id))"
        "     = json(?)"
        " ORDER BY engagements.id LIMIT 1",
        [coach["id"], json.dumps(ids)],
    ).fetchone()
    return dict(row) if row else None


def session_number(db: sqlite_utils.Database, session_id: int) -> int:
    """A session's number within its engagement ("session 2 of Career"), in the order
    describe_engagement lists them: people count sessions, not database ids."""
    return db.conn.execute(
        "SELECT count(*) FROM sessions AS earlier JOIN sessions AS this ON this.id = ?"
        " WHERE earlier.engagement_id = this.engagement_id"
        " AND (earlier.starts_at, earlier.id) <= (this.starts_at, this.id)",
        [session_id],
    ).fetchone()[0]


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
        if engagement["coach_email"].endswith("@invalid"):  # privacy.forgotten_email
            raise Conflict(
                f"Engagement {engagement_id} cannot be reopened: its coach was forgotten; "
                "start a new engagement with the coach who takes it on."
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


# R6, over the view in schema.sql. The start and reopening are tested apart from
# last_activity, which holds them too: SQLite runs tests without a subquery before those
# with one, and most engagements started or were reopened recently.
IDLE_SQL = """
SELECT id FROM resting_engagements
WHERE started_at <= :cutoff AND coalesce(reopened_at, '') <= :cutoff
  AND last_activity <= :cutoff
"""


def end_idle_engagements(db: sqlite_utils.Database, now: datetime, policy: Policy) -> list[dict]:
    """R6: end each engagement with nothing held or planned for IDLE_DAYS; mail every party."""
    cutoff = to_db(now - timedelta(days=policy.idle_days))
    ended = []
    for (engagement_id,) in db.conn.execute(IDLE_SQL, {"cutoff": cutoff}).fetchall():
        with transaction(db):
            # Re-check inside the write lock: another run may have got here first.
            if not db.conn.execute(
                IDLE_SQL + " AND id = :id", {"cutoff": cutoff, "id": engagement_id}
            ).fetchone():
                continue
            end_engagements(db, now, [Ending(engagement_id, end_reason="idle")])
        ended.append({"engagement_id": engagement_id, "end_reason": "idle"})
    return ended
