"""Parties: who decides in a round, and what each of them may see.

A party is the coach or one member of the round's engagement: one decision
row, which the view round_parties (schema.sql) joins to its round, session,
engagement, coach and client. These queries give mails and pages the facts
they need; what a client may see of the others is decided here, in one place.
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlite_utils

from twoyes.errors import NotFound
from twoyes.times import to_db


def parties_of_round(db: sqlite_utils.Database, round_id: int) -> list[dict]:
    """Every party of a round with what a mail to them needs."""
    return parties_of_rounds(db, [round_id])


def parties_of_rounds(db: sqlite_utils.Database, round_ids: list[int]) -> list[dict]:
    """Every party of many rounds in one query (the deadline sweep closes hundreds at once)."""
    return [dict(row) for row in db.conn.execute(PARTIES_OF_ROUNDS, [json.dumps(round_ids)])]


# What a mail to each party says besides their own facts: the round's clients, and
# whether this is the engagement's first round.
PARTIES_OF_ROUNDS = """
SELECT id, round_id, role, client_id, choice, reason, usefulness, note, decided_at, reminded_at,
       engagement_id, deadline_at, opened_at, session_at, title, kind, coach_name, coach_email,
       coach_lang, name, call_name, email, lang, member_id, member_status,
       (SELECT group_concat(named.name, ', ') FROM decisions AS others
          JOIN clients AS named ON named.id = others.client_id
         WHERE others.round_id = round_parties.round_id) AS client_names,
       (SELECT count(*) FROM rounds AS earlier
         WHERE earlier.engagement_id = round_parties.engagement_id
           AND earlier.id < round_parties.round_id) AS earlier_rounds
FROM round_parties
WHERE round_id IN (SELECT value FROM json_each(?))
ORDER BY round_id, role = 'client', id
"""


def describe_party(
    db: sqlite_utils.Database, decision_id: int, now: datetime | None = None
) -> dict:
    """What a party's decision page shows.

    The coach sees every member's choice. A client sees their own decision
    and only how many others have decided: never another member's name,
    address, choice or note, and not the coach's choice before the round
    closes, not even whether the coach has decided: in an open round between
    two that could only be a continue (so that nobody answers to please the other).
    """
    parties = [dict(row) for row in db.conn.execute(PAGE_PARTIES, [decision_id])]
    me = next(party for party in parties if party["id"] == decision_id)
    others = [party for party in parties if party["id"] != decision_id]
    view = {
        "me": me,
        "round": {
            "status": me["round_status"],
            "outcome": me["outcome"],
            "closed_at": me["closed_at"],
            "end_reason": me["end_reason"],
            "engagement_status": me["engagement_status"],
        },
        "group": me["kind"] == "group",
        # Members only: counting the coach would tell the last member the coach's choice.
        "members_decided": sum(1 for p in parties if p["role"] == "client" and p["choice"]),
        "members_total": sum(1 for p in parties if p["role"] == "client"),
        "members_continuing": sum(
            1 for p in parties if p["role"] == "client" and p["choice"] == "continue"
        ),
        # Once closed, whether the coach's answer never came (R4): a client who said yes
        # is told so. While open this is not shown, like the coach's choice itself.
        "coach_silent": me["round_status"] == "closed"
        and any(p["role"] == "coach" and p["choice"] is None for p in parties),
        # Past the deadline the round only waits for cron to close it: no more answers.
        "deadline_passed": now is not None and to_db(now) >= me["deadline_at"],
        # R8: a client whose sessions ended with this round may ask to come back from its page,
        # as from the welcome-back link in the outcome mail.
        "welcome_back": me["role"] == "client"
        and me["round_status"] == "closed"
        and (me["outcome"] == "stop" or me["member_status"] == "left"),
    }
    if me["role"] == "coach":
        view["others"] = [
            {key: party[key] for key in ("name", "choice", "reason", "usefulness", "note")}
            for party in others
        ]
    return view


# Every party of one decision's round with what its page shows, in one query (a page
# is opened far more often than a mail is written, so none of parties_of_rounds'
# per-party subqueries for mails, and only the view's columns it uses: all of them made
# the query take half as long again).
PAGE_PARTIES = """
SELECT id, round_id, role, client_id, choice, reason, usefulness, note, decided_at, reminded_at,
       engagement_id, deadline_at, round_status, outcome, closed_at, session_at, title, kind,
       end_reason, engagement_status, coach_name, name, lang, member_id, member_status
FROM round_parties
WHERE round_id = (SELECT round_id FROM decisions WHERE id = ?)
ORDER BY role = 'client', id
"""


def get_welcome_back_member(db: sqlite_utils.Database, member_id: int) -> dict:
    """The client, coach and engagement behind a welcome-back link."""
    row = db.conn.execute(
        """
        SELECT members.id AS member_id, members.engagement_id, engagements.title,
               engagements.status AS engagement_status,
               clients.name AS client_name, clients.email AS client_email,
               clients.lang AS client_lang, clients.call_name AS client_call_name,
               coaches.name AS coach_name, coaches.email AS coach_email,
               coaches.lang AS coach_lang, coaches.call_name AS coach_call_name
        FROM members
        JOIN engagements ON engagements.id = members.engagement_id
        JOIN clients ON clients.id = members.client_id
        JOIN coaches ON coaches.id = engagements.coach_id
        WHERE members.id = ?
        """,
        [member_id],
    ).fetchone()
    if row is None:
        raise NotFound("This link does not open (any more).")
    return dict(row)


def round_status_of(db: sqlite_utils.Database, decision_id: int) -> str:
    """'open' or 'closed': the state of the round a decision belongs to."""
    return db.conn.execute(
        "SELECT rounds.status FROM decisions JOIN rounds ON rounds.id = decisions.round_id"
        " WHERE decisions.id = ?",
        [decision_id],
    ).fetchone()[0]
