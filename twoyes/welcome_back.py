"""Welcome back: a client who stopped asks the coach for a new session (R8: nothing reopens).

A link lasts a year and may be used again, but it must not become a way to
fill the coach's inbox: it mails the coach at most once a day.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlite_utils

from twoyes.db import transaction
from twoyes.errors import Invalid
from twoyes.events import log_event
from twoyes.mails import queue_welcome_back_mail
from twoyes.rules import NUL_IN_TEXT, clean_free_text
from twoyes.times import from_db

ASK_EVERY = timedelta(days=1)


def find_last_ask(db: sqlite_utils.Database, member: dict) -> str | None:
    """When the member last asked through their link (as stored), or None; it also tells a
    page's form whether it was sent already (web/forms.FormStamp's state)."""
    (at,) = db.conn.execute(
        "SELECT max(at) FROM events WHERE engagement_id = ? AND kind = 'welcome_back_asked'"
        " AND detail ->> 'member_id' = ?",
        [member["engagement_id"], member["member_id"]],
    ).fetchone()
    return at


def ask_welcome_back(
    db: sqlite_utils.Database, member: dict, message: str, now: datetime, **origin: str | None
) -> bool:
    """Mail the coach that the client would like a new session; False, and nothing sent,
    when the same link asked within the last day (`origin`: the event's ip, user_agent).
    The message is free text (rules.clean_free_text): a NUL in it is Invalid."""
    message = clean_free_text(message) or ""
    if "\x00" in message:
        raise Invalid(NUL_IN_TEXT)
    with transaction(db):
        last = find_last_ask(db, member)
        if last is not None and now - from_db(last) < ASK_EVERY:
            return False
        queue_welcome_back_mail(db, member, message, now)
        log_event(
            db,
            "welcome_back_asked",
            now,
            engagement_id=member["engagement_id"],
            member_id=member["member_id"],
            **origin,
        )
    return True
