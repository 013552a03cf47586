"""Secret tokens in links: each acts for one party in one round, or one client's welcome back.

Contract: a token is `secrets.token_urlsafe(32)` (256 random bits, 43
characters), reveals no ids, and only its SHA-256 is stored. A decision token
decides while its round is open and still opens (read-only) for
DECISION_VIEW_DAYS after the round closed; a welcome-back token opens for
WELCOME_BACK_DAYS after it was made; a coach-view token opens one coach's
overview for COACH_VIEW_HOURS after it was made. Anything else is "not
found", whatever the reason, so a guess learns nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

import sqlite_utils

from twoyes.errors import NotFound
from twoyes.times import db_time_after, from_db, to_db

DECISION_VIEW_DAYS = 30
WELCOME_BACK_DAYS = 365
COACH_VIEW_HOURS = 24
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("ascii")).hexdigest()


INSERT_INTO_TOKENS = (
    "INSERT INTO tokens (hash, purpose, decision_id, member_id, coach_id, created_at,"
    " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _new(db: sqlite_utils.Database, now: datetime, purpose: str, **ids: int | str | None) -> str:
    raw, row = _token_row(now, purpose, **ids)
    db.conn.execute(INSERT_INTO_TOKENS, row)
    return raw


def _token_row(now: datetime, purpose: str, **ids: int | str | None) -> tuple[str, tuple]:
    """A fresh raw token, and the row that stores only its hash."""
    raw = secrets.token_urlsafe(32)
    row = (
        hash_token(raw),
        purpose,
        ids.get("decision_id"),
        ids.get("member_id"),
        ids.get("coach_id"),
        to_db(now),
        ids.get("expires_at"),
    )
    return raw, row


def new_decision_token(db: sqlite_utils.Database, decision_id: int, now: datetime) -> str:
    return _new(db, now, "decide", decision_id=decision_id)


def new_welcome_back_tokens(
    db: sqlite_utils.Database, member_ids: list[int], now: datetime
) -> dict[int, str]:
    """A welcome-back link for each member, written in one statement (a sweep ends thousands)."""
    expires_at = db_time_after(now, days=WELCOME_BACK_DAYS)
    made = {
        member_id: _token_row(now, "welcome_back", member_id=member_id, expires_at=expires_at)
        for member_id in member_ids
    }
    db.conn.executemany(INSERT_INTO_TOKENS, [row for _, row in made.values()])
    return {member_id: raw for member_id, (raw, _) in made.items()}


def new_coach_view_token(db: sqlite_utils.Database, coach_id: int, now: datetime) -> str:
    """A link to one coach's overview, good for COACH_VIEW_HOURS; that coach's expired
    links are cleared out on the way."""
    db.conn.execute(
        "DELETE FROM tokens WHERE purpose = 'coach_view' AND coach_id = ? AND expires_at <= ?",
        [coach_id, to_db(now)],
    )
    return _new(
        db,
        now,
        "coach_view",
        coach_id=coach_id,
        expires_at=db_time_after(now, seconds=COACH_VIEW_HOURS * 3600),
    )


def get_decision_id(db: sqlite_utils.Database, raw: str, now: datetime) -> int:
    """The decision a token acts for; NotFound when unknown, malformed or expired."""
    return get_decision(db, raw, now)["decision_id"]


def get_decision(db: sqlite_utils.Database, raw: str, now: datetime) -> dict:
    """The decision a token acts for and its round's status ('open' or 'closed'), read in the
    one lookup; NotFound when unknown, malformed or expired."""
    row = _lookup(
        db,
        raw,
        "SELECT tokens.decision_id, rounds.status, rounds.closed_at FROM tokens"
        " JOIN decisions ON decisions.id = tokens.decision_id"
        " JOIN rounds ON rounds.id = decisions.round_id"
        " WHERE tokens.hash = ? AND tokens.purpose = 'decide'",
    )
    if (
        row["status"] == "closed"
        and from_db(row["closed_at"]) + timedelta(days=DECISION_VIEW_DAYS) <= now
    ):
        raise _not_found()
    return {"decision_id": row["decision_id"], "round_status": row["status"]}


def get_member_id(db: sqlite_utils.Database, raw: str, now: datetime) -> int:
    """The member a welcome-back token belongs to; NotFound when unknown or expired."""
    row = _lookup(db, raw, "SELECT * FROM tokens WHERE hash = ? AND purpose = 'welcome_back'")
    if from_db(row["expires_at"]) <= now:
        raise _not_found()
    return row["member_id"]


def get_coach_view(db: sqlite_utils.Database, raw: str, now: datetime) -> dict:
    """The coach whose overview a token opens, and until when; NotFound when unknown or
    expired."""
    row = _lookup(db, raw, "SELECT * FROM tokens WHERE hash = ? AND purpose = 'coach_view'")
    if from_db(row["expires_at"]) <= now:
        raise _not_found()
    return {"coach_id": row["coach_id"], "expires_at": row["expires_at"]}


def _lookup(db: sqlite_utils.Database, raw: str, sql: str):
    """The row `sql` finds for the token's hash (its one parameter); NotFound if none."""
    if not TOKEN_SHAPE.fullmatch(raw):
        raise _not_found()
    row = db.conn.execute(sql, [hash_token(raw)]).fetchone()
    if row is None:
        raise _not_found()
    return row


def _not_found() -> NotFound:
    return NotFound("This link does not open (any more). Please use the newest mail you got.")


def new_coach_view_tokens(
    db: sqlite_utils.Database, coach_ids: dict[int, int], now: datetime
) -> dict[int, str]:
    """An overview link for each mail to a coach, keyed as given (a sweep's outcome mails,
    one per engagement), written in one statement like new_welcome_back_tokens; those
    coaches' expired links are cleared out on the way, as by new_coach_view_token."""
    db.conn.executemany(
        "DELETE FROM tokens WHERE purpose = 'coach_view' AND coach_id = ? AND expires_at <= ?",
        [(coach_id, to_db(now)) for coach_id in set(coach_ids.values())],
    )
    expires_at = db_time_after(now, seconds=COACH_VIEW_HOURS * 3600)
    made = {
        key: _token_row(now, "coach_view", coach_id=coach_id, expires_at=expires_at)
        for key, coach_id in coach_ids.items()
    }
    db.conn.executemany(INSERT_INTO_TOKENS, [row for _, row in made.values()])
    return {key: raw for key, (raw, _) in made.items()}
