"""What the coach sees: who still has to decide today, and what the principle does over months.

Plain queries over the tables, so the figures can be checked against a
scenario with known answers. `status` is about now (open rounds, engagements
drifting towards the idle rule, mail that failed); `report` about a period
(how many sessions engagements take, why they end, how useful sessions were,
who decides before the reminder).
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime, timedelta

import sqlite_utils

from twoyes.people import get_person_by_email
from twoyes.rules import Policy
from twoyes.times import from_db, to_db


def get_coach_id(db: sqlite_utils.Database, coach_email: str | None) -> int | None:
    """The id of the coach with this address (NotFound when unknown), or None without one.

    None asks a report about the whole practice: each query's `:coach IS NULL`.
    """
    return get_person_by_email(db, "coach", coach_email)["id"] if coach_email else None


def practice_status(
    db: sqlite_utils.Database, now: datetime, policy: Policy, coach_id: int | None = None
) -> dict:
    """What needs attention now: open rounds and who has not decided, drifting engagements,
    failed mail."""
    open_rounds = []
    for row in db.conn.execute(
        """
        SELECT rounds.id AS round_id, rounds.engagement_id, rounds.deadline_at,
               rounds.reminder_at, engagements.title, coaches.name AS coach_name,
               coaches.email AS coach_email,
               (SELECT group_concat(CASE WHEN decisions.role = 'coach' THEN 'coach'
                                         ELSE clients.name END, ', ')
                  FROM decisions LEFT JOIN clients ON clients.id = decisions.client_id
                 WHERE decisions.round_id = rounds.id AND decisions.choice IS NULL)
                 AS undecided,
               (SELECT group_concat(clients.name, ', ') FROM members
                  JOIN clients ON clients.id = members.client_id
                 WHERE members.engagement_id = engagements.id AND members.status = 'active')
                 AS clients
        FROM rounds
        JOIN engagements ON engagements.id = rounds.engagement_id
        JOIN coaches ON coaches.id = engagements.coach_id
        WHERE rounds.status = 'open' AND (:coach IS NULL OR engagements.coach_id = :coach)
        ORDER BY rounds.deadline_at
        """,
        {"coach": coach_id},
    ):
        open_rounds.append(dict(row) | {"overdue": row["deadline_at"] <= to_db(now)})

    drifting = []
    for row in db.conn.execute(
        """
        SELECT resting.id AS engagement_id, resting.title, coaches.email AS coach_email,
               (SELECT group_concat(clients.name, ', ') FROM members
                  JOIN clients ON clients.id = members.client_id
                 WHERE members.engagement_id = resting.id AND members.status = 'active')
                 AS clients,
               resting.last_activity
        FROM resting_engagements AS resting JOIN coaches ON coaches.id = resting.coach_id
        WHERE :coach IS NULL OR resting.coach_id = :coach
        ORDER BY resting.last_activity
        """,
        {"coach": coach_id},
    ):
        idle_since = from_db(row["last_activity"])
        # Nothing planned for a third of IDLE_DAYS: worth a look before R6 ends it.
        if now - idle_since >= timedelta(days=policy.idle_days / 3):
            drifting.append(
                dict(row)
                | {
                    "idle_days": (now - idle_since).days,
                    "ends_at": to_db(idle_since + timedelta(days=policy.idle_days)),
                }
            )

    failed = [
        dict(row)
        for row in db.conn.execute(
            """
            SELECT outbox.id AS mail_id, outbox.kind, outbox.to_email, outbox.last_error,
                   outbox.engagement_id
            FROM outbox LEFT JOIN engagements ON engagements.id = outbox.engagement_id
            WHERE outbox.status = 'failed'
              AND (:coach IS NULL OR engagements.coach_id = :coach)
            ORDER BY outbox.id
            """,
            {"coach": coach_id},
        )
    ]
    return {"open_rounds": open_rounds, "drifting": drifting, "failed_mails": failed}


def practice_report(
    db: sqlite_utils.Database, since: datetime, coach_id: int | None = None
) -> dict:
    """The principle over a period: counts, sessions per ended engagement, end reasons,
    usefulness by session number, and who decides before the reminder."""
    params = {"since": to_db(since), "coach": coach_id}
    started = db.conn.execute(
        "SELECT count(*) FROM engagements WHERE started_at >= :since"
        " AND (:coach IS NULL OR engagements.coach_id = :coach)",
        params,
    ).fetchone()[0]
    ended = db.conn.execute(
        """
        SELECT engagements.id, engagements.end_reason,
               (SELECT count(*) FROM sessions WHERE sessions.engagement_id = engagements.id
                  AND sessions.status = 'held') AS sessions,
               (SELECT decisions.reason FROM decisions
                  JOIN rounds ON rounds.id = decisions.round_id
                 WHERE rounds.engagement_id = engagements.id AND decisions.role = 'client'
                   AND decisions.choice = 'stop'
                 ORDER BY decisions.decided_at DESC LIMIT 1) AS client_reason
        FROM engagements
        WHERE status = 'ended' AND ended_at >= :since
          AND (:coach IS NULL OR engagements.coach_id = :coach)
        """,
        params,
    ).fetchall()
    reasons: Counter[str] = Counter()
    for row in ended:
        if row["end_reason"] == "client_stopped":
            reasons[f"client_{row['client_reason'] or 'no_reason'}"] += 1
        else:
            reasons[row["end_reason"]] += 1
    sessions_per_engagement = Counter(row["sessions"] for row in ended)

    ratings: dict[int, list[int]] = {}
    for row in db.conn.execute(
        """
        SELECT usefulness,
               (SELECT count(*) FROM rounds AS earlier
                 WHERE earlier.engagement_id = round_parties.engagement_id
                   AND earlier.id <= round_parties.round_id) AS session_number
        FROM round_parties
        WHERE role = 'client' AND usefulness IS NOT NULL
          AND opened_at >= :since AND (:coach IS NULL OR coach_id = :coach)
        """,
        params,
    ):
        ratings.setdefault(row["session_number"], []).append(row["usefulness"])

    before_reminder = {}
    for role in ("coach", "client"):
        total, early = db.conn.execute(
            """
            SELECT count(*), sum(decided_at < reminder_at)
            FROM round_parties
            WHERE role = :role AND round_status = 'closed'
              AND opened_at >= :since AND (:coach IS NULL OR coach_id = :coach)
            """,
            params | {"role": role},
        ).fetchone()
        before_reminder[role] = {
            "rounds": total,
            "decided_before_reminder": early or 0,
            "share": round((early or 0) / total, 3) if total else None,
        }

    return {
        "since": to_db(since),
        "engagements_started": started,
        "engagements_ended": len(ended),
        "sessions_per_ended_engagement": dict(sorted(sessions_per_engagement.items())),
        "end_reasons": dict(sorted(reasons.items())),
        "usefulness_by_session": {
            number: {"average": round(statistics.fmean(values), 2), "ratings": len(values)}
            for number, values in sorted(ratings.items())
        },
        "decided_before_reminder": before_reminder,
    }


EXPORT_COLUMNS = (
    "engagement_id",
    "title",
    "coach",
    "session_id",
    "session_at",
    "round_id",
    "round_outcome",
    "party",
    "choice",
    "reason",
    "usefulness",
    "note",
    "decided_at",
)


def decision_rows(db: sqlite_utils.Database, coach_id: int | None = None):
    """Every decision, one row each, for a coach's own analysis (no tokens, no addresses
    of other coaches' clients)."""
    yield from (
        dict(row)
        for row in db.conn.execute(
            """
            SELECT engagement_id, title, coach_email AS coach, session_id, session_at,
                   round_id, outcome AS round_outcome, coalesce(client_email, 'coach') AS party,
                   choice, reason, usefulness, note, decided_at
            FROM round_parties
            WHERE :coach IS NULL OR coach_id = :coach
            ORDER BY round_id, role = 'client', id
            """,
            {"coach": coach_id},
        )
    )
