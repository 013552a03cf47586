"""What each mail says, as data: who gets it, in which language, with which facts and links.

Each function queues one kind of mail in the caller's transaction. The words
themselves live in templates/mail/<kind>.txt and .html and are rendered at
delivery (delivery.py), so queueing stays cheap and a mail is written in the
reader's language and the practice's time zone. Links are kept as raw tokens
in the outbox only until delivery.
"""

from __future__ import annotations

from datetime import datetime

import sqlite_utils

from outbox import queue_mail
from tokens import new_decision_token, new_welcome_back_token


def queue_decision_mail(
    db: sqlite_utils.Database, party: dict, now: datetime, kind: str = "decision"
) -> int:
    """R1/R9: a party's mail with its own Continue and Stop links (fresh ones each time)."""
    return queue_mail(
        db,
        kind,
        now,
        to=(party["name"], party["email"]),
        reply_to=_reply_to(party),
        lang=party["lang"],
        engagement_id=party["engagement_id"],
        context={
            "role": party["role"],
            "name": party["name"],
            "coach_name": party["coach_name"],
            "title": party["title"],
            "group": party["kind"] == "group",
            "first_session": party["earlier_rounds"] == 0,
            "client_names": party["client_names"] if party["role"] == "coach" else None,
            "session_at": party["session_at"],
            "deadline_at": party["deadline_at"],
            "decide_token": new_decision_token(db, party["id"], now),
        },
    )


def queue_outcome_mail(
    db: sqlite_utils.Database,
    party: dict,
    now: datetime,
    *,
    outcome: str,
    end_reason: str | None,
    summary: dict,
) -> int:
    """R8: one mail per party when a round closes or an engagement ends.

    Each client whose engagement ends (or who left a group that goes on) gets
    a welcome-back link valid for a year.
    """
    member_leaves = party["role"] == "client" and (
        outcome == "stop" or party.get("member_status") == "left"
    )
    context = {
        "role": party["role"],
        "name": party["name"],
        "coach_name": party["coach_name"],
        "title": party["title"],
        "group": party["kind"] == "group",
        "outcome": outcome,
        "end_reason": end_reason,
        "session_at": party.get("session_at"),
        "you_left": member_leaves and outcome == "continue",
        "my_choice": party.get("choice"),
        "my_reason": party.get("reason"),
        "client_names": party.get("client_names") if party["role"] == "coach" else None,
        **summary,
    }
    if party["role"] != "coach":
        # A client's mail never carries other clients' names, choices or notes.
        context.pop("client_choices", None)
        context.pop("low_usefulness", None)
    if member_leaves:
        context["welcome_back_token"] = new_welcome_back_token(db, party["member_id"], now)
    return queue_mail(
        db,
        "outcome",
        now,
        to=(party["name"], party["email"]),
        reply_to=_reply_to(party),
        lang=party["lang"],
        engagement_id=party["engagement_id"],
        context=context,
    )


def queue_welcome_back_mail(
    db: sqlite_utils.Database, member: dict, message: str, now: datetime
) -> int:
    """A client used their welcome-back link: the coach hears of it (nothing reopens)."""
    return queue_mail(
        db,
        "welcome_back",
        now,
        to=(member["coach_name"], member["coach_email"]),
        reply_to=(member["client_name"], member["client_email"]),
        lang=member["coach_lang"],
        engagement_id=member["engagement_id"],
        context={
            "role": "coach",
            "name": member["coach_name"],
            "client_name": member["client_name"],
            "client_email": member["client_email"],
            "title": member["title"],
            "engagement_id": member["engagement_id"],
            "message": message,
        },
    )


def _reply_to(party: dict) -> tuple[str, str]:
    """A reply to any mail about an engagement reaches its coach, never the practice's robot."""
    return (party["coach_name"], party["coach_email"])
