"""What a coach changes from their own pages: engagements, sessions and group members.

Each function is the command line's domain function (engagements, sessions,
members), wrapped in one transaction with two things more: the engagement,
session or member must be the coach's own (else "not found", as for a token
that does not open), and what the rules refuse (R7) is said in the coach's
words, as msgids a page translates, checked under the same write lock as the
change itself.
"""

from __future__ import annotations

from datetime import datetime

import sqlite_utils

from twoyes.coach_view import (
    get_coach,
    get_own_engagement,
    get_own_member,
    get_own_session,
    list_own_clients,
    not_found,
)
from twoyes.db import transaction
from twoyes.engagements import reopen_engagement, start_engagement
from twoyes.errors import N_, Conflict, NotFound
from twoyes.members import add_member, remove_member
from twoyes.people import add_person, get_person_by_email, normalise_email
from twoyes.rules import Policy
from twoyes.sessions import (
    cancel_session,
    find_planned_session,
    move_session,
    plan_next_session,
    record_session_done,
)

ENDED = N_("This engagement has ended; reopen it first.")
ROUND_OPEN = N_(
    "A round is waiting for decisions; the next session can be planned once it has closed."
)
PLANNED_ALREADY = N_("A session is planned already; move it, or cancel it first.")
STILL_ACTIVE = N_("This engagement is active already; nothing needs reopening.")
CLIENT_FORGOTTEN = N_("This engagement cannot be reopened: its client's data was erased.")
NOT_A_GROUP = N_("Only a group has members who join and leave.")
MEMBER_ALREADY = N_("This client is a member of the group already.")
LEFT_ALREADY = N_("This member has left the group already.")


def start_own_engagement(
    db: sqlite_utils.Database,
    coach_id: int,
    client_ids: list[int],
    new_clients: list[dict],
    now: datetime,
    *,
    title: str | None = None,
    min_members: int = 1,
    welcome: bool = True,
) -> int:
    """Start an engagement with clients the coach worked with (theirs only) and new ones,
    added on the way. A new client whose address the practice knows already is that
    client (their name and language stay as they are). The coach gets the confirmation,
    and with `welcome` each client the welcome mail."""
    with transaction(db):
        coach = get_coach(db, coach_id)
        own = {client["id"]: client["email"] for client in list_own_clients(db, coach_id)}
        if any(client_id not in own for client_id in client_ids):
            raise not_found()
        emails = [own[client_id] for client_id in client_ids]
        emails += [_new_or_known_client(db, client, now) for client in new_clients]
        # The same person chosen and typed in as new is one member, not a mistake.
        emails = list(dict.fromkeys(email.lower() for email in emails))
        return start_engagement(
            db,
            coach["email"],
            emails,
            now,
            title=title,
            min_members=min_members,
            mail=True,
            welcome=welcome,
        )


def record_own_session(
    db: sqlite_utils.Database,
    coach_id: int,
    engagement_id: int,
    now: datetime,
    policy: Policy,
    minutes: int = 60,
) -> tuple[int, int]:
    """`session done` from the coach's page: the session is held now and its round opens."""
    with transaction(db):
        _require_sessions_allowed(db, get_own_engagement(db, coach_id, engagement_id))
        return record_session_done(db, engagement_id, now, policy, minutes)


def plan_own_session(
    db: sqlite_utils.Database,
    coach_id: int,
    engagement_id: int,
    starts: datetime,
    minutes: int,
    now: datetime,
) -> int:
    """Plan the next session (R7), never in the past."""
    with transaction(db):
        _require_sessions_allowed(db, get_own_engagement(db, coach_id, engagement_id))
        if find_planned_session(db, engagement_id):
            raise Conflict(PLANNED_ALREADY)
        return plan_next_session(db, engagement_id, starts, minutes, now, invite=True)


def move_own_session(
    db: sqlite_utils.Database,
    coach_id: int,
    session_id: int,
    starts: datetime,
    now: datetime,
    minutes: int | None = None,
) -> dict:
    with transaction(db):
        session = get_own_session(db, coach_id, session_id)
        if session["status"] == "planned":
            _require_sessions_allowed(
                db, get_own_engagement(db, coach_id, session["engagement_id"])
            )
        return move_session(db, session_id, starts, now, minutes, invite=True)


def cancel_own_session(
    db: sqlite_utils.Database, coach_id: int, session_id: int, now: datetime
) -> dict:
    with transaction(db):
        get_own_session(db, coach_id, session_id)
        return cancel_session(db, session_id, now, invite=True)


def reopen_own_engagement(
    db: sqlite_utils.Database,
    coach_id: int,
    engagement_id: int,
    now: datetime,
    starts: datetime | None = None,
    minutes: int = 60,
) -> int | None:
    """Reopen an ended engagement and, given a start, plan its next session: both or
    neither. Returns the planned session's id, if any."""
    with transaction(db):
        engagement = get_own_engagement(db, coach_id, engagement_id)
        if engagement["status"] == "active":
            raise Conflict(STILL_ACTIVE)
        if (
            engagement["kind"] == "individual"
            and db.conn.execute(
                "SELECT 1 FROM members JOIN clients ON clients.id = members.client_id"
                " WHERE members.engagement_id = ? AND clients.forgotten_at IS NOT NULL",
                [engagement_id],
            ).fetchone()
        ):
            raise Conflict(CLIENT_FORGOTTEN)
        reopen_engagement(db, engagement_id, now)
        if starts is None:
            return None
        return plan_next_session(db, engagement_id, starts, minutes, now, invite=True)


def add_own_member(
    db: sqlite_utils.Database,
    coach_id: int,
    engagement_id: int,
    now: datetime,
    *,
    client_id: int | None = None,
    new_client: dict | None = None,
) -> dict:
    """A client joins the coach's group: one they worked with, or a new one."""
    with transaction(db):
        engagement = get_own_engagement(db, coach_id, engagement_id)
        _require_group(engagement)
        if new_client is not None:
            email = _new_or_known_client(db, new_client, now)
        else:
            own = {client["id"]: client["email"] for client in list_own_clients(db, coach_id)}
            if client_id not in own:
                raise not_found()
            email = own[client_id]
        if db.conn.execute(
            "SELECT 1 FROM members JOIN clients ON clients.id = members.client_id"
            " WHERE members.engagement_id = ? AND clients.email = ? AND members.status = 'active'",
            [engagement_id, email],
        ).fetchone():
            raise Conflict(MEMBER_ALREADY)
        return add_member(db, engagement_id, email, now, welcome=True)


def remove_own_member(
    db: sqlite_utils.Database, coach_id: int, engagement_id: int, member_id: int, now: datetime
) -> dict:
    """A member leaves the coach's group now (members.remove_member)."""
    with transaction(db):
        _require_group(get_own_engagement(db, coach_id, engagement_id))
        member = get_own_member(db, coach_id, engagement_id, member_id)
        if member["status"] == "left":
            raise Conflict(LEFT_ALREADY)
        return remove_member(db, engagement_id, member["email"], now, invite=True)


def _require_sessions_allowed(db: sqlite_utils.Database, engagement: dict) -> None:
    """R7 in the coach's words (rounds.require_open_for_sessions says it for the command line)."""
    if engagement["status"] == "ended":
        raise Conflict(ENDED)
    if db.conn.execute(
        "SELECT 1 FROM rounds WHERE engagement_id = ? AND status = 'open'", [engagement["id"]]
    ).fetchone():
        raise Conflict(ROUND_OPEN)


def _require_group(engagement: dict) -> None:
    if engagement["status"] == "ended":
        raise Conflict(ENDED)
    if engagement["kind"] != "group":
        raise Conflict(NOT_A_GROUP)


def _new_or_known_client(db: sqlite_utils.Database, client: dict, now: datetime) -> str:
    """The address of the client with this address, added first when the practice has none."""
    email = normalise_email(client["email"])
    try:
        return get_person_by_email(db, "client", email)["email"]
    except NotFound:
        add_person(db, "client", client["name"], email, client["lang"], now)
        return email
