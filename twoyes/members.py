"""Members of a group joining and leaving between (and during) rounds.

A member who joins is a party from the next round on (R1 fixes the parties
when a round opens). A member who is removed leaves at once: their links in
an open round stop working and they are no longer counted in it, so the
round may close right then (R5).
"""

from __future__ import annotations

from datetime import datetime

import sqlite_utils

from twoyes.db import transaction
from twoyes.engagements import get_engagement
from twoyes.errors import Conflict, NotFound
from twoyes.events import log_event
from twoyes.mails import queue_invitation_mails, queue_welcome_mails
from twoyes.people import get_person_by_email
from twoyes.rounds import leave_group, settle_round
from twoyes.times import to_db


def add_member(
    db: sqlite_utils.Database,
    engagement_id: int,
    client_email: str,
    now: datetime,
    *,
    welcome: bool = False,
) -> dict:
    """A client joins a group; a party from the next round on.

    With `welcome`, they get the welcome mail the group got at its start.
    """
    with transaction(db):
        engagement, client, member = look_up_member(db, engagement_id, client_email)
        if engagement["status"] == "ended":
            raise Conflict(
                f"Engagement {engagement_id} has ended ({engagement['end_reason']}); "
                f"reopen it first with `python cli.py engagement reopen {engagement_id}`."
            )
        if member and member["status"] == "active":
            raise Conflict(f"{client['email']} is already a member of engagement {engagement_id}.")
        if member:
            db.conn.execute(
                "UPDATE members SET status = 'active', left_at = NULL, joined_at = ? WHERE id = ?",
                [to_db(now), member["id"]],
            )
            member_id = member["id"]
        else:
            member_id = db.conn.execute(
                "INSERT INTO members (engagement_id, client_id, joined_at) VALUES (?, ?, ?)",
                [engagement_id, client["id"], to_db(now)],
            ).lastrowid
        log_event(db, "member_added", now, engagement_id=engagement_id, member_id=member_id)
        if welcome:
            queue_welcome_mails(db, engagement_id, now, client_ids=[client["id"]], confirm=False)
            _tell_calendar(db, engagement_id, client["id"], "joined", now)
    return {"engagement_id": engagement_id, "member_id": member_id, "email": client["email"]}


def remove_member(
    db: sqlite_utils.Database,
    engagement_id: int,
    client_email: str,
    now: datetime,
    *,
    invite: bool = False,
) -> dict:
    """A member leaves now: out of any open round, their links there stop working. With
    `invite`, a planned session comes off their calendar."""
    with transaction(db):
        _, client, member = look_up_member(db, engagement_id, client_email)
        if member is None:
            raise NotFound(f"{client['email']} is not a member of engagement {engagement_id}.")
        if member["status"] == "left":
            raise Conflict(f"{client['email']} has left engagement {engagement_id} already.")
        leave_group(db, member["id"], engagement_id, now)
        if invite:
            _tell_calendar(db, engagement_id, client["id"], "left", now)
        open_round = db.conn.execute(
            "SELECT id FROM rounds WHERE engagement_id = ? AND status = 'open'", [engagement_id]
        ).fetchone()
        verdict = None
        if open_round:
            decision = db.conn.execute(
                "SELECT id FROM decisions WHERE round_id = ? AND client_id = ?",
                [open_round["id"], client["id"]],
            ).fetchone()
            # Mail not yet handed to SMTP would only carry links that no longer open.
            db.conn.execute(
                "DELETE FROM outbox WHERE engagement_id = ? AND to_email = ? AND status = 'queued'"
                " AND kind IN ('decision', 'reminder')",
                [engagement_id, client["email"]],
            )
            if decision:
                db.conn.execute("DELETE FROM tokens WHERE decision_id = ?", [decision["id"]])
                db.conn.execute("DELETE FROM decisions WHERE id = ?", [decision["id"]])
            verdict = settle_round(db, open_round["id"], now, deadline_passed=False)
        log_event(db, "member_removed", now, engagement_id=engagement_id, member_id=member["id"])
    return {
        "engagement_id": engagement_id,
        "email": client["email"],
        "round_closed": verdict is not None,
        "outcome": verdict.outcome if verdict else None,
        "end_reason": verdict.end_reason if verdict else None,
    }


def look_up_member(db: sqlite_utils.Database, engagement_id: int, client_email: str):
    """The group, the client and their member row (None if they never joined): what both
    adding and removing a member start from."""
    engagement = get_engagement(db, engagement_id)
    require_group(engagement)
    client = get_person_by_email(db, "client", client_email)
    member = db.conn.execute(
        "SELECT id, status FROM members WHERE engagement_id = ? AND client_id = ?",
        [engagement_id, client["id"]],
    ).fetchone()
    return engagement, client, member


def _tell_calendar(
    db: sqlite_utils.Database, engagement_id: int, client_id: int, change: str, now: datetime
) -> None:
    """A member who joins gets the planned session's invitation, one who leaves its
    cancellation; without a planned session there is nothing to tell."""
    planned = db.conn.execute(
        "SELECT * FROM sessions WHERE engagement_id = ? AND status = 'planned'", [engagement_id]
    ).fetchone()
    if planned:
        queue_invitation_mails(db, dict(planned), change, now, client_id=client_id)


def require_group(engagement: dict) -> None:
    if engagement["kind"] != "group":
        raise Conflict(
            f"Engagement {engagement['id']} is an individual engagement; members join and leave "
            "groups only (start a group with several --client options)."
        )
