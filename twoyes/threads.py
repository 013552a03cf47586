"""Which party a reply answers: the Message-ID of each mail with links, kept as a hash.

A decision, reminder or could-not-read mail carries 128 random bits in its
Message-ID (outbox.queue_mail), and a reply names it in In-Reply-To or
References. Knowing that id is as hard as knowing the mail's link, so, like
a token, only its SHA-256 is stored, with the decision it was written for.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

import sqlite_utils

from twoyes.times import to_db

# <local@domain> in In-Reply-To and References; the local part is ours, the domain is
# BASE_URL's or the sender's (delivery.Writer), so only the local part is compared.
MESSAGE_ID = re.compile(r"<([^<>@\s]{1,200})@[^<>\s]*>")


def hash_message_id(local_part: str) -> str:
    return hashlib.sha256(local_part.encode("utf-8", "replace")).hexdigest()


def remember_thread(db: sqlite_utils.Database, mail_id: int, decision_id: int, now: datetime):
    """Keep the hash of a queued mail's Message-ID, so that a reply to it finds its party."""
    (message_id,) = db.conn.execute(
        "SELECT message_id FROM outbox WHERE id = ?", [mail_id]
    ).fetchone()
    db.conn.execute(
        "INSERT INTO reply_threads (hash, decision_id, created_at) VALUES (?, ?, ?)",
        [hash_message_id(message_id), decision_id, to_db(now)],
    )


def thread_hashes(*headers: str | None) -> list[str]:
    """The hashes of every message id named in these headers (In-Reply-To, References)."""
    found: list[str] = []
    for value in headers:
        for local_part in MESSAGE_ID.findall(value or ""):
            digest = hash_message_id(local_part)
            if digest not in found:
                found.append(digest)
    return found[:50]  # a References header of a long thread names many; ours are recent
