"""The coach's overview: a link good for a day, what the page shows, and whose rounds it decides.

Coaches have no password, like clients: `python cli.py coach link EMAIL`
makes a link (tokens.py, purpose 'coach_view') to a read-only overview of
that coach's own engagements, never another coach's. From it the coach may
decide their own open rounds; that goes through rounds.record_decision like
a decision from a mail link or the command line.
"""

from __future__ import annotations

import itertools
from datetime import datetime

import sqlite_utils

from twoyes.db import transaction
from twoyes.errors import NotFound
from twoyes.events import log_event
from twoyes.mails import queue_sign_in_mail
from twoyes.parties import parties_of_rounds
from twoyes.people import get_person_by_email
from twoyes.times import db_time_after, to_db
from twoyes.tokens import COACH_VIEW_HOURS, new_coach_view_link, new_coach_view_token

# The overview shows engagements ended, and the report, over the last 12 months.
OVERVIEW_DAYS = 365


def make_coach_link(db: sqlite_utils.Database, coach_email: str, now: datetime) -> dict:
    """A new token for the coach's overview, valid COACH_VIEW_HOURS (NotFound for an
    unknown coach)."""
    coach = get_person_by_email(db, "coach", coach_email)
    with transaction(db):
        token = new_coach_view_token(db, coach["id"], now)
        log_event(db, "coach_link_made", now, coach_id=coach["id"])
    return {
        "token": token,
        "coach": {"name": coach["name"], "email": coach["email"]},
        "expires_at": db_time_after(now, seconds=COACH_VIEW_HOURS * 3600),
    }


def mail_coach_link(db: sqlite_utils.Database, address: str, now: datetime) -> bool:
    """Mail a fresh overview link (COACH_VIEW_HOURS) to the coach with this address; for any
    other address do nothing. True when a mail was queued.

    The page that asks answers the same either way, so nobody learns who is a coach; both
    ways look the address up inside one write transaction, so they take about as long.
    """
    with transaction(db):
        try:
            coach = get_person_by_email(db, "coach", address)
        except NotFound:
            return False
        nonce = new_coach_view_link(db, coach["id"], now)
        expires_at = db_time_after(now, seconds=COACH_VIEW_HOURS * 3600)
        queue_sign_in_mail(db, coach, nonce, expires_at, now)
        log_event(db, "coach_link_mailed", now, coach_id=coach["id"])
    return True


def coach_of_decision(db: sqlite_utils.Database, decision_id: int) -> int:
    """The coach whose own decision this is; NotFound for a client's decision."""
    row = db.conn.execute(
        "SELECT engagements.coach_id FROM decisions"
        " JOIN rounds ON rounds.id = decisions.round_id"
        " JOIN engagements ON engagements.id = rounds.engagement_id"
        " WHERE decisions.id = ? AND decisions.role = 'coach'",
        [decision_id],
    ).fetchone()
    if row is None:
        raise not_found()
    return row["coach_id"]


def open_coach_view(db: sqlite_utils.Database, decision_id: int, now: datetime) -> str:
    """A fresh overview link for the coach whose decision this is (the decision page's
    "Open my overview"); NotFound for a client's decision."""
    coach_id = coach_of_decision(db, decision_id)
    with transaction(db):
        token = new_coach_view_token(db, coach_id, now)
        log_event(db, "coach_link_made", now, coach_id=coach_id, via="decision_page")
    return token


def get_coach(db: sqlite_utils.Database, coach_id: int) -> dict:
    row = db.conn.execute(
        "SELECT id, name, email, lang FROM coaches WHERE id = ?", [coach_id]
    ).fetchone()
    if row is None:
        raise not_found()
    return dict(row)


def coach_overview(
    db: sqlite_utils.Database, coach_id: int, now: datetime, since: datetime
) -> dict:
    """What the coach's overview shows: their open rounds with every party's choice so far
    (a coach sees their clients' choices, as on the decision page), their active
    engagements, and those ended since `since`. Nothing of any other coach."""
    coach = get_coach(db, coach_id)
    open_ids = [
        row[0]
        for row in db.conn.execute(
            "SELECT rounds.id FROM rounds"
            " JOIN engagements ON engagements.id = rounds.engagement_id"
            " WHERE rounds.status = 'open' AND engagements.coach_id = ?"
            " ORDER BY rounds.deadline_at",
            [coach_id],
        )
    ]
    by_round = {
        round_id: list(parties)
        for round_id, parties in itertools.groupby(
            parties_of_rounds(db, open_ids), key=lambda party: party["round_id"]
        )
    }
    open_rounds = []
    for round_id in open_ids:
        parties = by_round[round_id]
        mine = next(party for party in parties if party["role"] == "coach")
        open_rounds.append(
            {
                "round_id": round_id,
                "engagement_id": mine["engagement_id"],
                "title": mine["title"],
                "kind": mine["kind"],
                "session_at": mine["session_at"],
                "deadline_at": mine["deadline_at"],
                "deadline_passed": to_db(now) >= mine["deadline_at"],
                "coach_decision_id": mine["id"],
                "coach_choice": mine["choice"],
                "clients": [
                    {
                        "name": party["name"],
                        "choice": party["choice"],
                        "left": party["member_status"] == "left",
                    }
                    for party in parties
                    if party["role"] == "client"
                ],
            }
        )
    engagements = [
        dict(row)
        for row in db.conn.execute(
            """
            SELECT engagements.id, engagements.title, engagements.kind, engagements.status,
                   engagements.end_reason, engagements.started_at, engagements.ended_at,
                   (SELECT group_concat(clients.name, ', ') FROM members
                      JOIN clients ON clients.id = members.client_id
                     WHERE members.engagement_id = engagements.id
                       AND (members.status = 'active' OR engagements.status = 'ended'))
                     AS clients,
                   (SELECT count(*) FROM sessions WHERE sessions.engagement_id = engagements.id
                       AND sessions.status = 'held') AS sessions_held,
                   (SELECT sessions.starts_at FROM sessions
                     WHERE sessions.engagement_id = engagements.id
                       AND sessions.status = 'planned') AS next_session_at
            FROM engagements
            WHERE engagements.coach_id = :coach
              AND (engagements.status = 'active' OR engagements.ended_at >= :since)
            ORDER BY coalesce(engagements.ended_at, engagements.started_at) DESC, engagements.id
            """,
            {"coach": coach_id, "since": to_db(since)},
        )
    ]
    return {
        "coach": coach,
        "open_rounds": open_rounds,
        "active": [e for e in engagements if e["status"] == "active"],
        "ended": [e for e in engagements if e["status"] == "ended"],
    }


def get_coach_decision_id(db: sqlite_utils.Database, coach_id: int, round_id: int) -> int:
    """The coach's own decision in a round of theirs; NotFound for anyone else's round."""
    row = db.conn.execute(
        "SELECT decisions.id FROM decisions JOIN rounds ON rounds.id = decisions.round_id"
        " JOIN engagements ON engagements.id = rounds.engagement_id"
        " WHERE decisions.round_id = ? AND decisions.role = 'coach' AND engagements.coach_id = ?",
        [round_id, coach_id],
    ).fetchone()
    if row is None:
        raise NotFound("This page does not exist.")
    return row[0]


# --- what the coach's own pages show and change -----------------------------------------------
# Every lookup carries the coach's id, so another coach's engagement, session or member is
# "not found", like a token that does not open: the page reveals nothing about it.


def not_found() -> NotFound:
    return NotFound("This page does not exist.")


def get_own_engagement(db: sqlite_utils.Database, coach_id: int, engagement_id: int) -> dict:
    row = db.conn.execute(
        "SELECT * FROM engagements WHERE id = ? AND coach_id = ?", [engagement_id, coach_id]
    ).fetchone()
    if row is None:
        raise not_found()
    return dict(row)


def get_own_session(db: sqlite_utils.Database, coach_id: int, session_id: int) -> dict:
    row = db.conn.execute(
        "SELECT sessions.* FROM sessions"
        " JOIN engagements ON engagements.id = sessions.engagement_id"
        " WHERE sessions.id = ? AND engagements.coach_id = ?",
        [session_id, coach_id],
    ).fetchone()
    if row is None:
        raise not_found()
    return dict(row)


def get_own_member(
    db: sqlite_utils.Database, coach_id: int, engagement_id: int, member_id: int
) -> dict:
    row = db.conn.execute(
        "SELECT members.*, clients.name, clients.email FROM members"
        " JOIN clients ON clients.id = members.client_id"
        " JOIN engagements ON engagements.id = members.engagement_id"
        " WHERE members.id = ? AND members.engagement_id = ? AND engagements.coach_id = ?",
        [member_id, engagement_id, coach_id],
    ).fetchone()
    if row is None:
        raise not_found()
    return dict(row)


def list_own_clients(db: sqlite_utils.Database, coach_id: int) -> list[dict]:
    """The clients this coach has worked with (never a forgotten one), by name: whom the
    coach may choose when starting an engagement or adding a member."""
    return [
        dict(row)
        for row in db.conn.execute(
            "SELECT DISTINCT clients.id, clients.name, clients.email FROM clients"
            " JOIN members ON members.client_id = clients.id"
            " JOIN engagements ON engagements.id = members.engagement_id"
            " WHERE engagements.coach_id = ? AND clients.forgotten_at IS NULL"
            " ORDER BY clients.name COLLATE NOCASE, clients.id",
            [coach_id],
        )
    ]


def list_come_back_requests(
    db: sqlite_utils.Database, coach_id: int, since: datetime, engagement_id: int | None = None
) -> list[dict]:
    """Who used their welcome-back link since `since`, and when, newest first (the
    `welcome_back_asked` events of this coach's engagements)."""
    return [
        dict(row)
        for row in db.conn.execute(
            """
            SELECT events.at, engagements.id AS engagement_id, engagements.title,
                   engagements.status, clients.name AS client_name, members.status AS member_status
            FROM events
            JOIN engagements ON engagements.id = events.engagement_id
            JOIN members ON members.id = json_extract(events.detail, '$.member_id')
            JOIN clients ON clients.id = members.client_id
            WHERE events.kind = 'welcome_back_asked' AND engagements.coach_id = :coach
              AND events.at >= :since AND (:engagement IS NULL OR engagements.id = :engagement)
              AND clients.forgotten_at IS NULL
            ORDER BY events.at DESC, events.id DESC
            """,
            {"coach": coach_id, "since": to_db(since), "engagement": engagement_id},
        )
    ]


def describe_own_engagement(
    db: sqlite_utils.Database, coach_id: int, engagement_id: int, since: datetime
) -> dict:
    """What the coach's page of one engagement shows: its members, its planned session, its
    open round, who asked to come back; and so which changes it offers."""
    engagement = get_own_engagement(db, coach_id, engagement_id)
    members = [
        dict(row)
        for row in db.conn.execute(
            "SELECT members.id, members.status, members.left_at, clients.name, clients.email,"
            " clients.forgotten_at IS NOT NULL AS forgotten FROM members"
            " JOIN clients ON clients.id = members.client_id"
            " WHERE members.engagement_id = ? ORDER BY members.id",
            [engagement_id],
        )
    ]
    held = db.conn.execute(
        "SELECT count(*), max(held_at) FROM sessions WHERE engagement_id = ? AND status = 'held'",
        [engagement_id],
    ).fetchone()
    open_round = db.conn.execute(
        "SELECT id, deadline_at FROM rounds WHERE engagement_id = ? AND status = 'open'",
        [engagement_id],
    ).fetchone()
    planned = db.conn.execute(
        "SELECT id, starts_at, minutes FROM sessions"
        " WHERE engagement_id = ? AND status = 'planned'",
        [engagement_id],
    ).fetchone()
    active = [member for member in members if member["status"] == "active"]
    return {
        "engagement": engagement,
        "name": engagement["title"] or ", ".join(member["name"] for member in active or members),
        "members": members,
        "sessions_held": held[0],
        "last_held_at": held[1],
        "open_round": dict(open_round) if open_round else None,
        "planned": dict(planned) if planned else None,
        "come_back": list_come_back_requests(db, coach_id, since, engagement_id),
        # What R7 allows now; the domain checks it again when the coach presses a button.
        "can_hold": engagement["status"] == "active" and not open_round,
        "can_plan": engagement["status"] == "active" and not open_round and not planned,
        "can_change_members": engagement["status"] == "active" and engagement["kind"] == "group",
    }
