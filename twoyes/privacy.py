"""People's data stays theirs: export and forget on request, forget at the end of retention.

Coaching notes and decisions are personal data (the GDPR; the AVG in the
Netherlands). A practice answers a client's access request with
`export_client` and an erasure request with `forget_client`, a coach's with
`export_coach` and `forget_coach`; retention.py uses the same erasure so that
nothing is kept longer than it is useful.

Forgetting keeps every row, so that counts and reports stay true, and erases
what says who the person was: the client becomes 'Forgotten client' with the
address forgotten-<id>@invalid (unique, and refused for any new client), the
notes go, their links are deleted, their mails blanked, and the ip addresses
and user agents of their answers leave the event log (the one update the log
allows). secure_delete overwrites what is removed, and a VACUUM plus a
truncating checkpoint leave no old copy in free pages or the write-ahead log.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlite_utils

from twoyes.db import transaction
from twoyes.endings import Ending, end_engagements
from twoyes.errors import Conflict, NotFound
from twoyes.events import log_event
from twoyes.members import remove_member
from twoyes.outbox import without_links
from twoyes.people import get_person_by_email
from twoyes.times import to_db

# SQL here is built only from this module's constant fragments (MINE, and the WHERE
# clauses its callers pass to erase_addresses_from_log); values always go in as
# parameters. Bandit's B608 is silenced on those lines.
FORGOTTEN_NAME = "Forgotten client"
FORGOTTEN_COACH = "Forgotten coach"


def forgotten_email(person_id: int, role: str = "client") -> str:
    """The placeholder address of a forgotten person: unique, and invalid for any new one."""
    return (
        f"forgotten-{person_id}@invalid"
        if role == "client"
        else f"forgotten-{role}-{person_id}@invalid"
    )


def get_client(db: sqlite_utils.Database, email: str) -> dict:
    """The client with this address; NotFound (or Invalid for a malformed address) otherwise."""
    return _get_person(db, "client", email)


def _get_person(db: sqlite_utils.Database, role: str, email: str) -> dict:
    try:
        return get_person_by_email(db, role, email)
    except NotFound as error:
        raise NotFound(
            f"There is no {role} with the address {email.strip()}; check the spelling "
            f"(a {role} who was forgotten cannot be found by any address)."
        ) from error


def _profile(person: dict) -> dict:
    return {key: person[key] for key in ("id", "name", "call_name", "email", "lang", "created_at")}


# -- access ------------------------------------------------------------------------------


def export_client(db: sqlite_utils.Database, email: str) -> dict:
    """Everything twoyes holds about one client, and nothing about anyone else.

    Their profile; each engagement with its coach, their membership, its
    sessions and rounds and their own decision in each (notes included); the
    mails sent to them (without links) and the welcome-back messages they
    sent; and the events about them, with the ip address and user agent of
    each answer. In an individual engagement the coach's notes are about
    them alone and are included (forgetting erases them too); other members,
    the coach's choices, and the coach's notes on a group are left out.
    """
    client = get_client(db, email)
    memberships = db.conn.execute(
        "SELECT engagements.*, coaches.name AS coach_name, coaches.email AS coach_email,"
        " members.id AS member_id, members.status AS member_status, members.joined_at,"
        " members.left_at FROM members"
        " JOIN engagements ON engagements.id = members.engagement_id"
        " JOIN coaches ON coaches.id = engagements.coach_id"
        " WHERE members.client_id = ? ORDER BY engagements.id",
        [client["id"]],
    ).fetchall()
    decision_ids = _ids(db, "SELECT id FROM decisions WHERE client_id = ?", client["id"])
    member_ids = [row["member_id"] for row in memberships]
    return {
        "client": _profile(client),
        "engagements": [
            {
                "id": row["id"],
                "title": row["title"],
                "kind": row["kind"],
                "status": row["status"],
                "end_reason": row["end_reason"],
                "started_at": row["started_at"],
                "reopened_at": row["reopened_at"],
                "ended_at": row["ended_at"],
                "coach": {"name": row["coach_name"], "email": row["coach_email"]},
                "membership": {
                    "status": row["member_status"],
                    "joined_at": row["joined_at"],
                    "left_at": row["left_at"],
                },
                "sessions": _sessions_of(db, row["id"], client["id"], row["kind"] == "individual"),
            }
            for row in memberships
        ],
        "mails": _mails_to(db, client["email"]),
        "welcome_back_requests": [
            {
                "id": row["id"],
                "engagement_id": row["engagement_id"],
                "created_at": row["created_at"],
                "status": row["status"],
                "message": json.loads(row["context"]).get("message"),
            }
            for row in db.conn.execute(
                "SELECT * FROM outbox WHERE kind = 'welcome_back'"
                " AND reply_to_email = ? COLLATE NOCASE ORDER BY id",
                [client["email"]],
            )
        ],
        "events": _events_about(
            db,
            "kind IN ('client_added', 'client_changed')"
            " AND json_extract(detail, '$.client_id') = :person",
            client["id"],
            decision_ids,
            member_ids,
        ),
    }


def export_coach(db: sqlite_utils.Database, email: str) -> dict:
    """Everything twoyes holds about one coach, and nothing about their clients.

    Their profile; each engagement they coach, with its sessions and rounds and their
    own decision in each (notes included), but not who the clients are or what they
    chose (nor an individual engagement's title, which is about its client); the mails
    sent to them, what and when but not their words (those were about their clients);
    and the events about them, with the ip address and user agent of each answer.
    """
    coach = _get_person(db, "coach", email)
    engagements = db.conn.execute(
        "SELECT * FROM engagements WHERE coach_id = ? ORDER BY id", [coach["id"]]
    ).fetchall()
    return {
        "coach": _profile(coach),
        "engagements": [
            {key: row[key] for key in ENGAGEMENT_KEYS}
            | {"title": row["title"] if row["kind"] == "group" else None}
            | {"sessions": _sessions_of(db, row["id"], None, False)}
            for row in engagements
        ],
        "mails": [
            {key: value for key, value in mail.items() if key != "content"}
            for mail in _mails_to(db, coach["email"])
        ],
        "events": _events_about(
            db,
            "json_extract(detail, '$.coach_id') = :person",
            coach["id"],
            _coach_decisions(db, coach["id"]),
            [],
        ),
    }


ENGAGEMENT_KEYS = (
    "id",
    "title",
    "kind",
    "status",
    "end_reason",
    "started_at",
    "reopened_at",
    "ended_at",
)


def _coach_decisions(db: sqlite_utils.Database, coach_id: int) -> list[int]:
    return _ids(
        db,
        "SELECT decisions.id FROM engagements JOIN rounds ON rounds.engagement_id = engagements.id"
        " JOIN decisions ON decisions.round_id = rounds.id"
        " WHERE engagements.coach_id = ? AND decisions.role = 'coach'",
        coach_id,
    )


def _mails_to(db: sqlite_utils.Database, address: str) -> list[dict]:
    """The mails sent to an address, without their links."""
    return [
        {
            "id": row["id"],
            "kind": row["kind"],
            "engagement_id": row["engagement_id"],
            "to": {"name": row["to_name"], "email": row["to_email"]},
            "status": row["status"],
            "created_at": row["created_at"],
            "sent_at": row["sent_at"],
            "content": without_links(json.loads(row["context"])),
        }
        for row in db.conn.execute(
            "SELECT * FROM outbox WHERE to_email = ? COLLATE NOCASE ORDER BY id", [address]
        )
    ]


def _events_about(
    db: sqlite_utils.Database,
    person_sql: str,
    person_id: int,
    decision_ids: list[int],
    member_ids: list[int],
) -> list[dict]:
    """The events about a person (`person_sql`, a constant, names them by :person), their
    decisions and memberships."""
    return [
        {key: row[key] for key in ("at", "kind", "engagement_id", "round_id")}
        | {"detail": json.loads(row["detail"])}
        for row in db.conn.execute(
            f"SELECT * FROM events WHERE ({person_sql})"  # nosec B608
            " OR json_extract(detail, '$.decision_id')"
            " IN (SELECT value FROM json_each(:decisions))"
            " OR json_extract(detail, '$.member_id') IN (SELECT value FROM json_each(:members))"
            " ORDER BY id",
            {
                "person": person_id,
                "decisions": json.dumps(decision_ids),
                "members": json.dumps(member_ids),
            },
        )
    ]


def _sessions_of(
    db: sqlite_utils.Database, engagement_id: int, client_id: int | None, with_coach_note: bool
) -> list[dict]:
    """The sessions of an engagement, each with its round and the decision of one party:
    a client (client_id), or the coach (None)."""
    rows = db.conn.execute(
        "SELECT sessions.id, sessions.status, sessions.starts_at, sessions.minutes,"
        " sessions.held_at, rounds.id AS round_id, rounds.status AS round_status,"
        " rounds.opened_at, rounds.deadline_at, rounds.closed_at, rounds.outcome,"
        " decisions.id AS decision_id, decisions.choice, decisions.reason,"
        " decisions.usefulness, decisions.note, decisions.decided_at, decisions.reminded_at,"
        " coach.note AS coach_note"
        " FROM sessions LEFT JOIN rounds ON rounds.session_id = sessions.id"
        " LEFT JOIN decisions ON decisions.round_id = rounds.id AND decisions.client_id IS ?"
        " LEFT JOIN decisions AS coach ON coach.round_id = rounds.id AND coach.role = 'coach'"
        " WHERE sessions.engagement_id = ? ORDER BY sessions.starts_at, sessions.id",
        [client_id, engagement_id],
    )
    decision_keys = ("choice", "reason", "usefulness", "note", "decided_at", "reminded_at")
    round_keys = ("status", "opened_at", "deadline_at", "closed_at", "outcome")
    sessions = []
    for row in rows:
        round_ = None
        if row["round_id"] is not None:
            round_ = {"id": row["round_id"]} | {key: row[key] for key in round_keys}
            round_["status"] = row["round_status"]
            round_["your_decision"] = (
                {key: row[key] for key in decision_keys} if row["decision_id"] else None
            )
            if with_coach_note:
                # About this one person, so theirs to see (and erased when they are forgotten).
                round_["coach_note"] = row["coach_note"]
        sessions.append(
            {key: row[key] for key in ("id", "status", "starts_at", "minutes", "held_at")}
            | {"round": round_}
        )
    return sessions


# -- erasure -----------------------------------------------------------------------------


def forget_client(db: sqlite_utils.Database, email: str, now: datetime) -> dict:
    """Erase a client's name, address, notes and mails for good; their links stop at once.

    Rows stay, as anonymous counts: engagements, sessions, rounds and the
    choices made. Where they are still taking part, they stop now: an
    individual engagement ends (client_stopped, an open round closes with
    stop); in a group they leave, as with remove-member. Nothing is mailed
    to them again, and nobody is told in their name.
    """
    with transaction(db):
        client = get_client(db, email)
        # Before leaving a group deletes their answer in its open round, and with it the
        # decision id that finds where the answer came from.
        _erase_answer_origins(db, client["id"])
        left = _end_participation(db, client, now)
        erased = erase_client(db, client, now, why="request")
    erase_leftovers(db)
    return {"client_id": client["id"], "engagements_left": left, **erased}


def _end_participation(db: sqlite_utils.Database, client: dict, now: datetime) -> list[int]:
    """The client stops taking part in every active engagement; returns their ids."""
    rows = db.conn.execute(
        "SELECT engagements.id, engagements.kind FROM members"
        " JOIN engagements ON engagements.id = members.engagement_id"
        " WHERE members.client_id = ? AND engagements.status = 'active'"
        " AND members.status = 'active' ORDER BY engagements.id",
        [client["id"]],
    ).fetchall()
    for engagement_id, kind in rows:
        if kind == "group":
            remove_member(db, engagement_id, client["email"], now)
            continue
        open_round = db.conn.execute(
            "SELECT id FROM rounds WHERE engagement_id = ? AND status = 'open'", [engagement_id]
        ).fetchone()
        if open_round:
            # The coach's question about a round that closes now would only confuse.
            db.conn.execute(
                "DELETE FROM outbox WHERE engagement_id = ? AND status = 'queued'"
                " AND kind IN ('decision', 'reminder')",
                [engagement_id],
            )
        # R3, as if they stopped: the open round closes with stop. Nobody is mailed in their name.
        round_id = open_round["id"] if open_round else None
        end_engagements(
            db, now, [Ending(engagement_id, round_id, "stop", "client_stopped")], mail=False
        )
    return [row[0] for row in rows]


def erase_client(db: sqlite_utils.Database, client: dict, now: datetime, why: str) -> dict:
    """Everything that names the client goes; the caller holds the write lock.

    Also erased: the coach's notes and the title of their individual
    engagements (both are about this one person), and their name in mail
    still waiting for the coach. In a group they are marked as left, so a
    reopened group does not mail them.
    """
    client_id, address = client["id"], client["email"]
    placeholder = (FORGOTTEN_NAME, forgotten_email(client_id))
    decision_ids = _ids(db, "SELECT id FROM decisions WHERE client_id = ?", client_id)
    member_ids = _ids(db, "SELECT id FROM members WHERE client_id = ?", client_id)
    engagement_ids = _ids(db, "SELECT engagement_id FROM members WHERE client_id = ?", client_id)
    individual_ids = _ids(
        db,
        "SELECT id FROM engagements WHERE kind = 'individual'"
        " AND id IN (SELECT value FROM json_each(?))",
        json.dumps(engagement_ids),
    )
    ids = {
        "client": client_id,
        "decisions": json.dumps(decision_ids),
        "members": json.dumps(member_ids),
        "engagements": json.dumps(engagement_ids),
        "individual": json.dumps(individual_ids),
        "address": address,
        "name": placeholder[0],
        "email": placeholder[1],
        "now": to_db(now),
    }
    links = db.conn.execute(
        "DELETE FROM tokens WHERE decision_id IN (SELECT value FROM json_each(:decisions))"
        " OR member_id IN (SELECT value FROM json_each(:members))",
        ids,
    ).rowcount
    notes = db.conn.execute(
        "UPDATE decisions SET note = NULL WHERE note IS NOT NULL AND (client_id = :client"
        " OR (role = 'coach' AND round_id IN (SELECT id FROM rounds WHERE engagement_id IN"
        " (SELECT value FROM json_each(:individual)))))",
        ids,
    ).rowcount
    db.conn.execute(
        "UPDATE engagements SET title = NULL"
        " WHERE id IN (SELECT value FROM json_each(:individual))",
        ids,
    )
    db.conn.execute(
        "UPDATE members SET status = 'left', left_at = coalesce(left_at, :now)"
        " WHERE client_id = :client AND status = 'active'"
        " AND engagement_id IN (SELECT id FROM engagements WHERE kind = 'group')",
        ids,
    )
    mails = _erase_mail(db, ids, client["name"])
    _erase_answer_origins(db, client_id)
    _replace_person(db, "clients", ids | {"person": client_id})
    log_event(db, "client_forgotten", now, client_id=client_id, why=why)
    return {"links_stopped": links, "notes_erased": notes, "mails_erased": mails}


def _replace_person(db: sqlite_utils.Database, table: str, ids: dict) -> None:
    """The person's row keeps only the placeholder name and address (`table` a constant)."""
    db.conn.execute(
        f"UPDATE {table} SET name = :name, call_name = NULL, email = :email,"  # nosec B608
        " forgotten_at = :now WHERE id = :person",
        ids,
    )


def forget_coach(db: sqlite_utils.Database, email: str, now: datetime) -> dict:
    """Erase a coach's name, address, notes and mails for good; their links stop at once.

    Only a coach whose engagements have all ended: an active one would go on without
    anyone to ask. Their engagements, sessions and rounds stay, as anonymous records of
    the practice, like a forgotten client's; their clients' own data is not touched.
    """
    with transaction(db):
        coach = _get_person(db, "coach", email)
        refuse_active_coach(db, coach)
        decision_ids = _coach_decisions(db, coach["id"])
        engagement_ids = _ids(db, "SELECT id FROM engagements WHERE coach_id = ?", coach["id"])
        ids = {
            "person": coach["id"],
            "decisions": json.dumps(decision_ids),
            "engagements": json.dumps(engagement_ids),
            "individual": "[]",
            "address": coach["email"],
            "name": FORGOTTEN_COACH,
            "email": forgotten_email(coach["id"], "coach"),
            "now": to_db(now),
        }
        links = db.conn.execute(
            "DELETE FROM tokens WHERE coach_id = :person"
            " OR decision_id IN (SELECT value FROM json_each(:decisions))",
            ids,
        ).rowcount
        notes = db.conn.execute(
            "UPDATE decisions SET note = NULL WHERE note IS NOT NULL"
            " AND id IN (SELECT value FROM json_each(:decisions))",
            ids,
        ).rowcount
        mails = _erase_mail(db, ids, coach["name"])
        erase_addresses_from_log(
            db,
            "json_extract(detail, '$.decision_id') IN (SELECT value FROM json_each(:decisions))",
            ids,
        )
        _replace_person(db, "coaches", ids)
        log_event(db, "coach_forgotten", now, coach_id=coach["id"], why="request")
    erase_leftovers(db)
    return {
        "coach_id": coach["id"],
        "links_stopped": links,
        "notes_erased": notes,
        "mails_erased": mails,
    }


def refuse_active_coach(db: sqlite_utils.Database, coach: dict) -> None:
    """Conflict while the coach has an active engagement: it needs them to go on or end."""
    active = _ids(
        db,
        "SELECT id FROM engagements WHERE coach_id = ? AND status = 'active' ORDER BY id",
        coach["id"],
    )
    if active:
        raise Conflict(
            f"{coach['name']} still coaches active engagement(s) {', '.join(map(str, active))};"
            " a coach can be forgotten once all of them have ended."
        )


MINE = "(to_email = :address COLLATE NOCASE OR reply_to_email = :address COLLATE NOCASE)"


def _erase_mail(db: sqlite_utils.Database, ids: dict, name: str) -> int:
    """Mail to or from the client is deleted (waiting) or blanked; mail about them redacted."""
    erased = db.conn.execute(
        f"DELETE FROM outbox WHERE {MINE} AND status IN ('queued', 'sending')",  # nosec B608
        ids,
    ).rowcount
    erased += db.conn.execute(
        "UPDATE outbox SET"  # nosec B608
        " to_name = CASE WHEN to_email = :address COLLATE NOCASE THEN :name ELSE to_name END,"
        " to_email = CASE WHEN to_email = :address COLLATE NOCASE THEN :email ELSE to_email END,"
        " reply_to_name = CASE WHEN reply_to_email = :address COLLATE NOCASE THEN :name"
        " ELSE reply_to_name END,"
        " reply_to_email = CASE WHEN reply_to_email = :address COLLATE NOCASE THEN :email"
        " ELSE reply_to_email END,"
        f" context = '{{}}', last_error = NULL WHERE {MINE}",
        ids,
    ).rowcount
    # Others' delivered mail about their engagements is only a record by now.
    db.conn.execute(
        "UPDATE outbox SET context = '{}' WHERE context != '{}' AND status IN ('sent', 'failed')"
        " AND engagement_id IN (SELECT value FROM json_each(:engagements))",
        ids,
    )
    # Mail still waiting for the coach or another member goes out, without them in it.
    individual = set(json.loads(ids["individual"]))
    for row in db.conn.execute(
        "SELECT id, engagement_id, context FROM outbox WHERE status IN ('queued', 'sending')"
        " AND engagement_id IN (SELECT value FROM json_each(:engagements))",
        ids,
    ).fetchall():
        context = redact(json.loads(row["context"]), name, row["engagement_id"] in individual)
        text = json.dumps(context, sort_keys=True)
        if ids["address"].lower() in text.lower():
            text = "{}"  # their address in a field we do not know of: not sent rather than leaked
        db.conn.execute("UPDATE outbox SET context = ? WHERE id = ?", [text, row["id"]])
    return erased


def redact(context: dict[str, Any], name: str, individual: bool) -> dict[str, Any]:
    """A waiting mail's facts with one client's name and notes taken out."""
    if context.get("client_names"):
        context["client_names"] = ", ".join(
            FORGOTTEN_NAME if each == name else each for each in context["client_names"].split(", ")
        )
    for choice in context.get("client_choices") or []:
        if choice.get("name") == name:
            choice.update(name=FORGOTTEN_NAME, note=None)
    for rating in context.get("low_usefulness") or []:
        if rating.get("name") == name:
            rating["name"] = FORGOTTEN_NAME
    if individual:
        context["title"] = None
    return context


def _erase_answer_origins(db: sqlite_utils.Database, client_id: int) -> None:
    """The ip address and user agent of each answer and welcome-back request of a client."""
    erase_addresses_from_log(
        db,
        "json_extract(detail, '$.decision_id') IN"
        " (SELECT id FROM decisions WHERE client_id = :client)"
        " OR json_extract(detail, '$.member_id') IN"
        " (SELECT id FROM members WHERE client_id = :client)",
        {"client": client_id},
    )


def erase_addresses_from_log(db: sqlite_utils.Database, where: str, params: dict) -> None:
    """Take `ip` and `user_agent` out of matching events: the one update the log allows."""
    db.conn.execute(
        "UPDATE events SET detail = json_remove(detail, '$.ip', '$.user_agent')"  # nosec B608
        " WHERE (json_type(detail, '$.ip') IS NOT NULL"
        " OR json_type(detail, '$.user_agent') IS NOT NULL)"
        f" AND ({where})",
        params,
    )


def erase_leftovers(db: sqlite_utils.Database) -> None:
    """Rewrite the file and empty the write-ahead log, so no erased byte survives anywhere.

    If a reader holds the log open the truncation waits up to the busy
    timeout; what it could not empty is overwritten by later checkpoints.
    """
    db.conn.execute("VACUUM")
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def _ids(db: sqlite_utils.Database, sql: str, *params: Any) -> list[int]:
    return [row[0] for row in db.conn.execute(sql, params)]
