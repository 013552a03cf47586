"""Nothing is kept longer than it is useful: `tick` anonymises what ended long ago.

An engagement that ended more than TWOYES_RETENTION_DAYS ago is anonymised
the way forgetting does it (privacy.py), a client whose engagements all did
is forgotten, and a delivered mail's names and notes are blanked after
MAIL_BODY_DAYS. The privacy page states these terms (`retention_terms`), and
development's .eml files go the same way (`find_spent_mail`).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlite_utils

from twoyes.db import transaction
from twoyes.events import log_event
from twoyes.privacy import erase_addresses_from_log, erase_client, erase_leftovers
from twoyes.times import to_db
from twoyes.tokens import DECISION_VIEW_DAYS, WELCOME_BACK_DAYS

MAIL_BODY_DAYS = 30  # a delivered mail's names and notes, kept this long for questions about it


EXPIRED_SQL = """
SELECT engagements.id, engagements.kind FROM engagements
WHERE engagements.status = 'ended' AND engagements.ended_at <= :cutoff
  AND NOT EXISTS (SELECT 1 FROM events WHERE events.engagement_id = engagements.id
                    AND events.kind = 'engagement_anonymised'
                    AND events.at >= engagements.ended_at)
"""

# Clients with nothing left inside retention: they had engagements, and every one
# expired. (A client never in an engagement is left to the practice to forget.)
STALE_CLIENTS_SQL = """
SELECT clients.* FROM clients
WHERE clients.forgotten_at IS NULL AND clients.created_at <= :cutoff
  AND EXISTS (SELECT 1 FROM members WHERE members.client_id = clients.id)
  AND NOT EXISTS (SELECT 1 FROM members JOIN engagements
                    ON engagements.id = members.engagement_id
                  WHERE members.client_id = clients.id
                    AND (engagements.status = 'active' OR engagements.ended_at > :cutoff))
"""


def anonymise_expired(
    db: sqlite_utils.Database, now: datetime, retention_days: float
) -> dict[str, int]:
    """Anonymise what ended more than `retention_days` ago, as forgetting does.

    An engagement that ended that long ago loses its notes, links, title
    (individual), mail bodies and the ip addresses of its answers; a client
    whose engagements all did is forgotten. An
    engagement reopened later is anonymised again once it has ended that
    long. Safe when two runs overlap: each item is checked again under the
    write lock.
    """
    cutoff = {"cutoff": to_db(now - timedelta(days=retention_days))}
    engagements = 0
    for engagement_id, kind in db.conn.execute(EXPIRED_SQL, cutoff).fetchall():
        with transaction(db):
            if not db.conn.execute(
                EXPIRED_SQL + " AND engagements.id = :id", cutoff | {"id": engagement_id}
            ).fetchone():
                continue
            _erase_engagement(db, engagement_id, kind, now)
        engagements += 1
    clients = 0
    for stale in db.conn.execute(STALE_CLIENTS_SQL, cutoff).fetchall():
        with transaction(db):
            client = db.conn.execute(
                STALE_CLIENTS_SQL + " AND clients.id = :id", cutoff | {"id": stale["id"]}
            ).fetchone()
            if client is None:
                continue
            erase_client(db, dict(client), now, why="retention")
        clients += 1
    if engagements or clients:
        erase_leftovers(db)
    return {"engagements_anonymised": engagements, "clients_anonymised": clients}


def _erase_engagement(
    db: sqlite_utils.Database, engagement_id: int, kind: str, now: datetime
) -> None:
    params = {"id": engagement_id}
    # A constant subquery built into the SQL below; the id goes in as a parameter (hence
    # Bandit's B608 silenced on those lines).
    rounds = "SELECT id FROM rounds WHERE engagement_id = :id"
    db.conn.execute(
        "DELETE FROM tokens WHERE decision_id IN"  # nosec B608
        f" (SELECT id FROM decisions WHERE round_id IN ({rounds}))"
        " OR member_id IN (SELECT id FROM members WHERE engagement_id = :id)",
        params,
    )
    db.conn.execute(
        f"UPDATE decisions SET note = NULL WHERE note IS NOT NULL AND round_id IN ({rounds})",  # nosec B608
        params,
    )
    if kind == "individual":
        db.conn.execute("UPDATE engagements SET title = NULL WHERE id = :id", params)
    # Mail still waiting this long after the end would only reach people being forgotten.
    db.conn.execute(
        "DELETE FROM outbox WHERE engagement_id = :id AND status IN ('queued', 'sending')", params
    )
    db.conn.execute(
        "UPDATE outbox SET context = '{}', last_error = NULL WHERE engagement_id = :id"
        " AND (context != '{}' OR last_error IS NOT NULL)",
        params,
    )
    erase_addresses_from_log(db, "engagement_id = :id", params)
    log_event(db, "engagement_anonymised", now, engagement_id=engagement_id)


def purge_delivered_mail(db: sqlite_utils.Database, now: datetime) -> int:
    """Blank what a mail said (names, notes) MAIL_BODY_DAYS after its delivery; returns how many.

    Who it went to, when, and what kind of mail it was stay.
    """
    with transaction(db):
        purged = db.conn.execute(
            "UPDATE outbox SET context = '{}' WHERE status = 'sent' AND sent_at <= ?"
            " AND context != '{}'",
            [to_db(now - timedelta(days=MAIL_BODY_DAYS))],
        ).rowcount
        if purged:
            log_event(db, "mail_purged", now, mails=purged)
    return purged


# Of the mails in json_each(:ids), those a file may still hold: delivered, not blanked, and
# not about a round that has closed since (a decision or reminder mail's round closes after
# it was written; an outcome mail, written as its round closed, waits for a later one).
KEPT_MAIL_SQL = """
SELECT outbox.id FROM outbox
WHERE outbox.id IN (SELECT value FROM json_each(:ids))
  AND outbox.status = 'sent' AND outbox.context != '{}'
  AND NOT EXISTS (SELECT 1 FROM rounds WHERE rounds.engagement_id = outbox.engagement_id
                    AND rounds.status = 'closed'
                    AND (rounds.closed_at > outbox.created_at
                         OR (rounds.closed_at = outbox.created_at
                             AND outbox.kind IN ('decision', 'reminder'))))
"""


def find_spent_mail(db: sqlite_utils.Database, mail_ids: list[int]) -> set[int]:
    """Of these mails, those whose words and links no file may keep any longer: gone from the
    outbox, blanked (MAIL_BODY_DAYS after delivery, or anonymised, or forgotten), or asking
    about a round that has closed since. Development's .eml files (delivery.py) go with them.
    """
    kept = db.conn.execute(KEPT_MAIL_SQL, {"ids": json.dumps(mail_ids)}).fetchall()
    return set(mail_ids) - {row[0] for row in kept}


def retention_terms(retention_days: float) -> dict[str, float]:
    """How long each kind of data is kept, in days, for the privacy page."""
    return {
        "retention_days": retention_days,
        "mail_body_days": MAIL_BODY_DAYS,
        "decision_view_days": DECISION_VIEW_DAYS,
        "welcome_back_days": min(WELCOME_BACK_DAYS, retention_days),
    }
