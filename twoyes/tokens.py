"""Secret tokens in links: each acts for one party in one round, or one client's welcome back.

Contract: a token is 256 bits (43 characters of base64url), reveals no ids,
and never reaches the database: only its SHA-256 is stored, and lookups go by
that hash. A link in a mail is a row with a random, non-secret `nonce`; its
token is HMAC(SECRET_KEY, nonce), made when the mail is delivered
(`open_links`, which writes the hash then), so the outbox, the write-ahead log
and every backup hold nothing that opens a page. A link shown at once (`coach
link`, the decision page's "Open my overview") is a fresh random token whose
hash is written with its row.

A decision token decides while its round is open and still opens (read-only)
for DECISION_VIEW_DAYS after the round closed; a welcome-back token opens for
WELCOME_BACK_DAYS after it was made; a coach-view token opens one coach's
overview for COACH_VIEW_HOURS after it was made. A row without a hash (its
mail not delivered yet, or failed for good) opens nothing. Anything else is
"not found", whatever the reason, so a guess learns nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlite_utils

from twoyes.errors import NotFound
from twoyes.times import db_time_after, from_db, to_db

DECISION_VIEW_DAYS = 30
WELCOME_BACK_DAYS = 365
COACH_VIEW_HOURS = 24
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
# A mail's context names each link by its nonce: `decide_nonce` becomes `decide_token`.
NONCE = "_nonce"
TOKEN = "_token"  # noqa: S105  # nosec B105: a key's ending, not a secret


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("ascii")).hexdigest()


def link_token(secret_key: str, nonce: str) -> str:
    """The token of a mailed link: HMAC(SECRET_KEY, nonce), 256 bits in base64url."""
    digest = hmac.digest(secret_key.encode(), b"twoyes-link\0" + nonce.encode(), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# This process's nonces: a random key of its own (made again after a fork, so gunicorn's
# workers never share one), then counting up.
_sequence = {"pid": None, "key": "", "count": itertools.count()}


def new_nonce(now: datetime) -> str:
    """A row's id, unique (not secret: the token is an HMAC of it). The time, this process's
    key, then its count: a sweep's thousands of links go to one place at the end of the
    table's key and of the hash index, never to random places in them, so a sweep of a
    million rounds writes no more pages a link than one of a hundred thousand."""
    if _sequence["pid"] != os.getpid():
        _sequence.update(pid=os.getpid(), key=secrets.token_hex(8), count=itertools.count())
    return f"{now:%Y%m%d%H%M%S}{_sequence['key']}{next(_sequence['count']):012d}"


INSERT_INTO_TOKENS = (
    "INSERT INTO tokens (nonce, hash, purpose, decision_id, member_id, coach_id, created_at,"
    " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _token_row(now: datetime, purpose: str, **ids: int | str | None) -> tuple[str, tuple]:
    """A new link's nonce, and its row: without a hash until its mail is delivered."""
    nonce = new_nonce(now)
    row = (
        nonce,
        ids.get("hash"),
        purpose,
        ids.get("decision_id"),
        ids.get("member_id"),
        ids.get("coach_id"),
        to_db(now),
        ids.get("expires_at"),
    )
    return nonce, row


def _new(db: sqlite_utils.Database, now: datetime, purpose: str, **ids: int | str | None) -> str:
    nonce, row = _token_row(now, purpose, **ids)
    db.conn.execute(INSERT_INTO_TOKENS, row)
    return nonce


def new_decision_link(db: sqlite_utils.Database, decision_id: int, now: datetime) -> str:
    """A decision mail's link, as its nonce (the token is made at delivery)."""
    return _new(db, now, "decide", decision_id=decision_id)


def new_welcome_back_links(
    db: sqlite_utils.Database, member_ids: list[int], now: datetime
) -> dict[int, str]:
    """A welcome-back link (its nonce) for each member, written in one statement (a sweep
    ends thousands)."""
    expires_at = db_time_after(now, days=WELCOME_BACK_DAYS)
    made = {
        member_id: _token_row(now, "welcome_back", member_id=member_id, expires_at=expires_at)
        for member_id in member_ids
    }
    db.conn.executemany(INSERT_INTO_TOKENS, [row for _, row in made.values()])
    return {member_id: nonce for member_id, (nonce, _) in made.items()}


def new_coach_view_link(db: sqlite_utils.Database, coach_id: int, now: datetime) -> str:
    """An overview link for a mail to a coach, as its nonce; see new_coach_view_links."""
    return new_coach_view_links(db, {0: coach_id}, now)[0]


def new_coach_view_token(db: sqlite_utils.Database, coach_id: int, now: datetime) -> str:
    """A link to one coach's overview shown at once (not mailed), good for
    COACH_VIEW_HOURS: a random token, only its hash kept. That coach's expired links are
    cleared out on the way."""
    _clear_expired_coach_views(db, [coach_id], now)
    raw = secrets.token_urlsafe(32)
    expires_at = db_time_after(now, seconds=COACH_VIEW_HOURS * 3600)
    _new(db, now, "coach_view", coach_id=coach_id, expires_at=expires_at, hash=hash_token(raw))
    return raw


def _clear_expired_coach_views(db: sqlite_utils.Database, coach_ids, now: datetime) -> None:
    db.conn.executemany(
        "DELETE FROM tokens WHERE purpose = 'coach_view' AND coach_id = ? AND expires_at <= ?",
        [(coach_id, to_db(now)) for coach_id in set(coach_ids)],
    )


def new_coach_view_links(db: sqlite_utils.Database, coach_ids: dict, now: datetime) -> dict:
    """An overview link (its nonce) for each mail to a coach, keyed as given (a sweep's
    outcome mails, one per engagement), written in one statement like
    new_welcome_back_links; those coaches' expired links are cleared out on the way."""
    _clear_expired_coach_views(db, coach_ids.values(), now)
    expires_at = db_time_after(now, seconds=COACH_VIEW_HOURS * 3600)
    made = {
        key: _token_row(now, "coach_view", coach_id=coach_id, expires_at=expires_at)
        for key, coach_id in coach_ids.items()
    }
    db.conn.executemany(INSERT_INTO_TOKENS, [row for _, row in made.values()])
    return {key: nonce for key, (nonce, _) in made.items()}


# -- a mail's links on their way out -------------------------------------------------------


def nonces_of(context: dict) -> dict[str, str]:
    """The links a mail's context names, by their key (`decide_nonce`: its nonce)."""
    return {key: value for key, value in context.items() if key.endswith(NONCE) and value}


def open_links(db: sqlite_utils.Database, mails: Iterable[dict], secret_key: str) -> None:
    """Make the tokens of the mails' links and write their hashes, so the links open.

    Each mail gets `tokens` (`decide_token`: the raw token), for the mail's words only:
    they are never written anywhere. Run just before the mails are handed on; the same
    nonce and SECRET_KEY always give the same token, so a mail sent again carries the
    link it carried before. A link whose row is gone (its client forgotten) stays shut.
    """
    hashes = []
    for mail in mails:
        mail["tokens"] = {}
        for key, nonce in nonces_of(mail["context"]).items():
            raw = link_token(secret_key, nonce)
            mail["tokens"][key.removesuffix(NONCE) + TOKEN] = raw
            hashes.append({"hash": hash_token(raw), "nonce": nonce})
    db.conn.executemany(
        "UPDATE tokens SET hash = :hash WHERE nonce = :nonce AND hash IS NOT :hash", hashes
    )


def close_links(db: sqlite_utils.Database, context: dict) -> int:
    """A mail's links stop opening (its mail failed for good); returns how many did."""
    return db.conn.execute(
        "UPDATE tokens SET hash = NULL WHERE hash IS NOT NULL"
        " AND nonce IN (SELECT value FROM json_each(?))",
        [json.dumps(list(nonces_of(context).values()))],
    ).rowcount


def renew_links(db: sqlite_utils.Database, context: dict, now: datetime) -> dict:
    """The context with a fresh nonce for each link (`outbox retry`): the old tokens can
    never open again, and the new ones open once the mail is delivered."""
    renewed = dict(context)
    for key, nonce in nonces_of(context).items():
        renewed[key] = new_nonce(now)
        db.conn.execute(
            "UPDATE tokens SET nonce = ?, hash = NULL WHERE nonce = ?", [renewed[key], nonce]
        )
    return renewed


# -- lookups -------------------------------------------------------------------------------


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
