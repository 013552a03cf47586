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
from twoyes.times import later, to_db
from twoyes.tokens import COACH_VIEW_HOURS, new_coach_view_token

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
        "expires_at": later(now, seconds=COACH_VIEW_HOURS * 3600),
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
        token = new_coach_view_token(db, coach["id"], now)
        expires_at = later(now, seconds=COACH_VIEW_HOURS * 3600)
        queue_sign_in_mail(db, coach, token, expires_at, now)
        log_event(db, "coach_link_mailed", now, coach_id=coach["id"])
    return True


def get_coach(db: sqlite_utils.Database, coach_id: int) -> dict:
    row = db.conn.execute(
        "SELECT id, name, email, lang FROM coaches WHERE id = ?", [coach_id]
    ).fetchone()
    if row is None:
        raise NotFound("This page does not exist.")
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
