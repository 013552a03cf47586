"""The outbox: mail waiting for delivery, claimed so that each goes exactly once.

A mail is queued in the transaction of the change that causes it. Delivery
claims a batch in a short immediate transaction (status 'sending', with a
claim id naming its host and process), hands each mail to SMTP outside any
transaction, and marks it sent only after the server accepted it. An attempt
is counted when the mail is handed to the server (`mark_handed`), or when the
server cannot be reached for it, never at the claim: a run killed before it
handed a mail on cost that mail nothing. A claim left behind by a process that
is gone is taken over by the next run on its host; any other after
CLAIM_MINUTES. Temporary failures wait with exponential backoff; after
MAX_ATTEMPTS, or on a permanent refusal, the mail is 'failed', stays visible,
and its links stop opening at once (`outbox retry` gives it new ones).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from twoyes.db import transaction
from twoyes.errors import Conflict, NotFound
from twoyes.events import log_event
from twoyes.times import db_time_after, to_db
from twoyes.tokens import NONCE, close_links, renew_links

MAX_ATTEMPTS = 8
BACKOFF_SECONDS = 120  # 2, 4, 8, ... 128 minutes: about four hours in all
CLAIM_MINUTES = 15
BATCH = 100


def queue_mail(
    db: sqlite_utils.Database,
    kind: str,
    now: datetime,
    *,
    to: tuple[str, str],
    lang: str,
    context: dict[str, Any],
    reply_to: tuple[str, str] | None = None,
    engagement_id: int | None = None,
) -> int:
    """Queue one mail; the caller's transaction decides whether it ever exists."""
    cursor = db.conn.execute(
        "INSERT INTO outbox (kind, engagement_id, to_name, to_email, reply_to_name,"
        " reply_to_email, lang, context, message_id, next_attempt_at, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            kind,
            engagement_id,
            to[0],
            to[1],
            reply_to[0] if reply_to else None,
            reply_to[1] if reply_to else None,
            lang,
            json.dumps(context, sort_keys=True),
            # Stable across retries, so a receiver can tell a resend from a new mail; 128 random
            # bits, since a reply naming it acts for the party it was sent to (replies.py).
            secrets.token_hex(16),
            to_db(now),
            to_db(now),
        ],
    )
    return cursor.lastrowid


# Mail a run claimed and left behind: long ago (:stale), or by a process that is gone (:left).
# A constant, joined into the claim's queries (hence Bandit's B608 silenced there).
LEFT_BEHIND = (
    " status = 'sending' AND (claimed_at <= :stale"
    " OR claim IN (SELECT value FROM json_each(:left)))"
)


def claim_due_mail(db: sqlite_utils.Database, now: datetime, limit: int = BATCH) -> list[dict]:
    """Claim up to `limit` mails that are due, for this run alone.

    Due: queued mail whose time came, and mail another run claimed and left behind: at
    once when that run's process is gone (on this host), else after CLAIM_MINUTES.
    """
    claim = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(6)}"
    stale = to_db(now - timedelta(minutes=CLAIM_MINUTES))
    # Every query states the condition of the partial index outbox_due, status IN ('queued',
    # 'sending'): SQLite uses such an index only then, and so reads only the mail that
    # waits, not the whole history of sent mail the outbox keeps.
    with transaction(db):
        held = db.conn.execute(
            "SELECT DISTINCT claim FROM outbox INDEXED BY outbox_due"
            " WHERE status IN ('queued', 'sending') AND status = 'sending'"
        ).fetchall()
        left = json.dumps([row[0] for row in held if _claimant_is_gone(row[0])])
        # A mail whose every run died while sending it will not be tried forever.
        for mail in db.conn.execute(
            "SELECT id, context FROM outbox INDEXED BY outbox_due"
            " WHERE status IN ('queued', 'sending') AND" + LEFT_BEHIND + " AND attempts >= :max",  # nosec B608
            {"stale": stale, "left": left, "max": MAX_ATTEMPTS},
        ).fetchall():
            db.conn.execute(
                "UPDATE outbox SET status = 'failed', claim = NULL,"
                " last_error = 'gave up: every attempt stopped before the server answered'"
                " WHERE id = ?",
                [mail["id"]],
            )
            close_links(db, json.loads(mail["context"]))
        ids = [
            row[0]
            for row in db.conn.execute(
                "SELECT id FROM outbox INDEXED BY outbox_due"
                " WHERE status IN ('queued', 'sending')"
                " AND ((status = 'queued' AND next_attempt_at <= :now) OR" + LEFT_BEHIND + ")"  # nosec B608
                " ORDER BY id LIMIT :limit",
                {"now": to_db(now), "stale": stale, "left": left, "limit": limit},
            )
        ]
        db.conn.executemany(
            "UPDATE outbox SET status = 'sending', claimed_at = ?, claim = ? WHERE id = ?",
            [(to_db(now), claim, id_) for id_ in ids],
        )
    if not ids:
        return []
    rows = db.conn.execute(
        "SELECT * FROM outbox WHERE claim = ? AND id IN (SELECT value FROM json_each(?))"
        " ORDER BY id",
        [claim, json.dumps(ids)],
    ).fetchall()
    return [dict(row) | {"context": json.loads(row["context"])} for row in rows]


def _claimant_is_gone(claim: str) -> bool:
    """Whether the process that made this claim has ended (known only on its own host)."""
    host, _, rest = claim.partition("/")
    pid = rest.partition("/")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: alive
        return False
    return False


def mark_handed(db: sqlite_utils.Database, mail: dict, now: datetime) -> None:
    """The mail is about to go to the server: this is an attempt, whatever comes of it."""
    with transaction(db):
        db.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, claimed_at = ? WHERE id = ? AND claim = ?",
            [to_db(now), mail["id"], mail["claim"]],
        )
    mail["attempts"] += 1


def mark_sent(db: sqlite_utils.Database, mail: dict, now: datetime) -> None:
    """The server accepted the mail: record it, and wipe the links it carried."""
    with transaction(db):
        db.conn.execute(
            "UPDATE outbox SET status = 'sent', sent_at = ?, last_error = NULL, context = ?"
            " WHERE id = ? AND claim = ?",
            [to_db(now), json.dumps(without_links(mail["context"])), mail["id"], mail["claim"]],
        )
        log_event(db, "mail_sent", now, engagement_id=mail["engagement_id"], mail_id=mail["id"])


def mark_failed_attempt(
    db: sqlite_utils.Database,
    mail: dict,
    now: datetime,
    error: str,
    *,
    permanent: bool = False,
    unreached: bool = False,
) -> str:
    """Record a failed delivery; returns 'queued' (retry later) or 'failed' (given up).

    `unreached`: the server could not be reached for this mail, which counts as an
    attempt though the mail was never handed on (see mark_handed). A mail given up
    loses its links at once: nobody got them, and nobody may use them.
    """
    if unreached:
        mail["attempts"] += 1
    given_up = permanent or mail["attempts"] >= MAX_ATTEMPTS
    status = "failed" if given_up else "queued"
    delay = BACKOFF_SECONDS * 2 ** (max(mail["attempts"], 1) - 1)
    with transaction(db):
        db.conn.execute(
            "UPDATE outbox SET status = ?, last_error = ?, next_attempt_at = ?, claim = NULL,"
            " attempts = ? WHERE id = ? AND claim = ?",
            [
                status,
                error[:500],
                db_time_after(now, seconds=delay),
                mail["attempts"],
                mail["id"],
                mail["claim"],
            ],
        )
        if given_up:
            close_links(db, mail["context"])
            log_event(
                db, "mail_failed", now, engagement_id=mail["engagement_id"], mail_id=mail["id"]
            )
    return status


def retry_mail(db: sqlite_utils.Database, mail_id: int, now: datetime) -> None:
    """Put a failed mail back in the queue for the next delivery run, with new links (its
    old ones stopped when it failed)."""
    with transaction(db):
        row = db.conn.execute(
            "SELECT status, context FROM outbox WHERE id = ?", [mail_id]
        ).fetchone()
        if row is None:
            raise NotFound(f"There is no mail {mail_id} in the outbox.")
        if row["status"] != "failed":
            raise Conflict(f"Mail {mail_id} is {row['status']}, not failed; nothing to retry.")
        context = renew_links(db, json.loads(row["context"]), now)
        db.conn.execute(
            "UPDATE outbox SET status = 'queued', attempts = 0, next_attempt_at = ?, context = ?"
            " WHERE id = ?",
            [to_db(now), json.dumps(context, sort_keys=True), mail_id],
        )
        log_event(db, "mail_retried", now, mail_id=mail_id)


def count_waiting(db: sqlite_utils.Database) -> int:
    return db.conn.execute(
        "SELECT count(*) FROM outbox WHERE status IN ('queued', 'sending')"
    ).fetchone()[0]


def summarise_waiting(db: sqlite_utils.Database, coach_id: int | None = None) -> dict[str, Any]:
    """The mail not delivered yet, by why it waits (for `status`); only one coach's with coach_id.

    `queued`: not tried yet (or queued again by `outbox retry`); `retrying`: an
    attempt failed, the next is due at `next_attempt_at`, `last_error` says why
    the latest failed; `sending`: a run holds it now, or held it when it stopped
    (the next run takes it over: at once on the same host, else after CLAIM_MINUTES).
    """
    # Like claim_due_mail, read through the partial index: the outbox keeps all it ever sent.
    waiting = """
        FROM outbox INDEXED BY outbox_due
        LEFT JOIN engagements ON engagements.id = outbox.engagement_id
        WHERE outbox.status IN ('queued', 'sending')
          AND (:coach IS NULL OR engagements.coach_id = :coach)
    """
    counts = db.conn.execute(
        "SELECT coalesce(sum(outbox.status = 'queued' AND outbox.attempts = 0), 0) AS queued,"
        " coalesce(sum(outbox.status = 'queued' AND outbox.attempts > 0), 0) AS retrying,"
        " coalesce(sum(outbox.status = 'sending'), 0) AS sending,"
        " min(CASE WHEN outbox.status = 'queued' AND outbox.attempts > 0"
        " THEN outbox.next_attempt_at END) AS next_attempt_at" + waiting,
        {"coach": coach_id},
    ).fetchone()
    latest = db.conn.execute(
        "SELECT outbox.last_error" + waiting + " AND outbox.status = 'queued'"
        " AND outbox.attempts > 0 ORDER BY outbox.claimed_at DESC LIMIT 1",
        {"coach": coach_id},
    ).fetchone()
    return dict(counts) | {"last_error": latest["last_error"] if latest else None}


def without_links(context: dict[str, Any]) -> dict[str, Any]:
    """The context minus every link (its nonce, or a raw token queued before version 6):
    what is kept of a delivered mail."""
    return {key: value for key, value in context.items() if not key.endswith((NONCE, "token"))}


def list_mail(db: sqlite_utils.Database, status: str | None = None) -> list[dict]:
    """The outbox, newest first; only mail of `status` when given."""
    return [
        dict(row)
        for row in db.conn.execute(
            "SELECT id, kind, to_email, status, attempts, next_attempt_at, sent_at, last_error"
            " FROM outbox WHERE ? IS NULL OR status = ? ORDER BY id DESC",
            [status, status],
        )
    ]
