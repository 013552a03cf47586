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

SUBJECTS = {
    "decision": "Another session?",
    "reminder": "A reminder: another session?",
    "outcome_continue": "We continue",
    "outcome_stop": "Thank you, and welcome back any time",
    "welcome_back": "{client_name} would like a new session",
}


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


def subject_for(kind: str, context: dict) -> str:
    if kind == "outcome":
        kind = "outcome_stop" if context.get("you_left") else f"outcome_{context['outcome']}"
    return SUBJECTS[kind].format(**context)


def _reply_to(party: dict) -> tuple[str, str]:
    """A reply to any mail about an engagement reaches its coach, never the practice's robot."""
    return (party["coach_name"], party["coach_email"])


END_SENTENCES = {
    "client": {
        "client_stopped": "You chose to stop. Thank you for letting us know.",
        "coach_stopped": (
            "{coach_name} decided that another session is not the most useful next step for now. "
            "That is about the fit of the approach, not about you."
        ),
        "undecided": (
            "We did not hear from everyone by the deadline, and we never continue without a yes, "
            "so this was our last session for now."
        ),
        "idle": "It has been a while since our last session, so we close this engagement for now.",
        "members_left": "Too few members chose to continue, so the group ends here.",
    },
    "coach": {
        "client_stopped": "{client_names} chose to stop.",
        "coach_stopped": "You chose to stop.",
        "undecided": "Not everyone answered by the deadline, so the engagement has ended.",
        "idle": "Nothing was held or planned for a long while, so the engagement has ended.",
        "members_left": "Too few members chose to continue, so the group has ended.",
    },
}


def outcome_paragraphs(context: dict) -> list[str]:
    """The body of an outcome mail as plain sentences, shared by its text and HTML parts."""
    role, group = context["role"], context["group"]
    title = f" ({context['title']})" if context.get("title") else ""
    if context["outcome"] == "continue":
        if context.get("you_left"):
            first = (
                "You chose to stop. Thank you for letting us know, and for taking part."
                if context.get("my_choice") == "stop"
                else "We did not hear from you by the deadline, so we take it that the last "
                "session was your last one with this group. Thank you for taking part."
            )
            return [
                first,
                "The group goes on without you. If you would like to join again later, "
                "you are welcome back any time.",
            ]
        if role == "coach":
            who = "the group" if group else context.get("client_names") or "your client"
            lines = [f"You and {who} chose to continue{title}. Please plan the next session."]
            if group:
                lines.append(
                    f"{context['members_continuing']} of {context['members_total']} "
                    "members continue."
                )
            return lines
        if group:
            return [
                f"The group goes on{title}: {context['members_continuing']} of "
                f"{context['members_total']} members chose to continue, and so did "
                f"{context['coach_name']}.",
                f"{context['coach_name']} will let you know when the next session is.",
            ]
        return [
            f"You and {context['coach_name']} both chose to continue{title}, "
            "so there will be another session.",
            f"{context['coach_name']} will be in touch to plan it.",
        ]
    sentence = END_SENTENCES[role][context["end_reason"]].format(
        coach_name=context["coach_name"], client_names=context.get("client_names") or "Your client"
    )
    lines = [sentence]
    if role == "client":
        if context.get("my_reason") == "on_my_own":
            lines.append(
                "Going on by yourself is the best outcome coaching can have. We wish you well."
            )
        lines.append("You are welcome back any time: the link below lets your coach know.")
    else:
        lines.append("Each client got a mail with a link to come back whenever they like.")
    return lines
