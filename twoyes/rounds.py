"""Rounds: opening one after a session, recording decisions, closing it once.

Each function takes the database and `now`; none reads the clock. Every
state change, its event and the mails it causes share one transaction.
Sweeps (due rounds, reminders, overdue rounds) re-check each item under the
write lock, so overlapping cron runs open, remind and close each thing once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import sqlite_utils

from twoyes.db import transaction
from twoyes.endings import Ending, end_engagements
from twoyes.engagements import get_engagement, session_number
from twoyes.errors import N_, Conflict, Invalid, NotFound
from twoyes.events import log_event
from twoyes.mails import queue_decision_mail
from twoyes.parties import parties_of_round
from twoyes.rules import Policy, Verdict, check_decision, clean_free_text, judge_round
from twoyes.times import db_time_after, to_db

# Overdue rounds closed per transaction (TWOYES_SWEEP_BATCH). Larger batches rewrite the
# random-keyed index pages (token hashes) fewer times; 5,000 holds the write lock for about
# half a second on a small machine, which a web request waits out (bench/, issue 7).
SWEEP_BATCH = 5_000
# Reminders are queued one party at a time: fewer per transaction.
REMINDER_BATCH = 500


def open_round(db: sqlite_utils.Database, session_id: int, now: datetime, policy: Policy) -> int:
    """R1: open the round after a held session; parties: the coach and every active member."""
    with transaction(db):
        session = db.conn.execute("SELECT * FROM sessions WHERE id = ?", [session_id]).fetchone()
        engagement = get_engagement(db, session["engagement_id"])
        require_open_for_sessions(db, engagement)
        deadline_days = policy.decision_days
        round_id = db.conn.execute(
            "INSERT INTO rounds (session_id, engagement_id, opened_at, deadline_at, reminder_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                session_id,
                engagement["id"],
                to_db(now),
                db_time_after(now, days=deadline_days),
                db_time_after(now, days=deadline_days - policy.reminder_days),
            ],
        ).lastrowid
        db.conn.execute("INSERT INTO decisions (round_id, role) VALUES (?, 'coach')", [round_id])
        db.conn.execute(
            "INSERT INTO decisions (round_id, role, client_id) SELECT ?, 'client', client_id"
            " FROM members WHERE engagement_id = ? AND status = 'active' ORDER BY id",
            [round_id, engagement["id"]],
        )
        log_event(db, "round_opened", now, engagement_id=engagement["id"], round_id=round_id)
        # R5: a group already too small to reach min_members closes at once, asking no one.
        if settle_round(db, round_id, now, deadline_passed=False) is None:
            for party in parties_of_round(db, round_id):
                queue_decision_mail(db, party, now)
    return round_id


def require_open_for_sessions(db: sqlite_utils.Database, engagement: dict) -> None:
    """R7: no session on an ended engagement, nor while a round waits for decisions."""
    if engagement["status"] == "ended":
        raise Conflict(
            f"Engagement {engagement['id']} has ended ({engagement['end_reason']}); "
            f"reopen it first with `python cli.py engagement reopen {engagement['id']}`."
        )
    open_round_ = db.conn.execute(
        "SELECT rounds.id, rounds.session_id FROM rounds"
        " WHERE engagement_id = ? AND status = 'open'",
        [engagement["id"]],
    ).fetchone()
    if open_round_:
        number = session_number(db, open_round_["session_id"])
        raise Conflict(
            f"Engagement {engagement['id']} is still waiting for the decisions after session "
            f"{number} (round {open_round_['id']}); decide that round first: "
            f"`python cli.py decide {open_round_['id']} --choice continue` (or stop)."
        )


def open_due_rounds(db: sqlite_utils.Database, now: datetime, policy: Policy) -> list[int]:
    """R1: every planned session that has ended is held now and gets its round."""
    due_sql = (
        "SELECT sessions.id FROM sessions JOIN engagements"
        " ON engagements.id = sessions.engagement_id"
        " WHERE sessions.status = 'planned' AND sessions.ends_at <= ?"
        " AND engagements.status = 'active'"
        " AND NOT EXISTS (SELECT 1 FROM rounds WHERE rounds.engagement_id = engagements.id"
        " AND rounds.status = 'open')"
    )
    opened = []
    for (session_id,) in db.conn.execute(due_sql, [to_db(now)]).fetchall():
        with transaction(db):
            held = db.conn.execute(
                "UPDATE sessions SET status = 'held', held_at = ? WHERE id = ?"
                " AND status = 'planned'",
                [to_db(now), session_id],
            ).rowcount
            if not held:
                continue  # another run took it
            engagement_id = db.conn.execute(
                "SELECT engagement_id FROM sessions WHERE id = ?", [session_id]
            ).fetchone()[0]
            log_event(db, "session_held", now, engagement_id=engagement_id, session_id=session_id)
            opened.append(open_round(db, session_id, now, policy))
    return opened


# What record_decision checks a decision against, read under the write lock.
DECIDING_PARTY = (
    "SELECT id, round_id, role, choice, round_status, engagement_id, deadline_at, closed_at,"
    " kind, min_members, member_id, member_status FROM round_parties WHERE id = ?"
)


def record_decision(
    db: sqlite_utils.Database,
    decision_id: int,
    now: datetime,
    *,
    choice: str,
    reason: str | None = None,
    usefulness: int | None = None,
    note: str | None = None,
    via: dict | None = None,
) -> dict:
    """R2: a party decides. A continue may become a stop while the round is open; a stop is final.

    Returns the decision as recorded and the round's verdict, if it closed.
    """
    note = clean_free_text(note)
    if choice == "continue":
        reason = None  # a reason is asked only of whoever stops
    with transaction(db):
        party = db.conn.execute(DECIDING_PARTY, [decision_id]).fetchone()
        if party["round_status"] == "closed" and party["closed_at"] >= party["deadline_at"]:
            # R4: closed by the sweep at the deadline; silence counted as stop.
            raise Conflict(
                N_("This round closed at its deadline, so an answer after it could not be counted.")
            )
        if party["round_status"] == "closed":
            raise Conflict(N_("This round is closed already; your answer was not needed any more."))
        if to_db(now) >= party["deadline_at"]:
            # R4: past the deadline silence has counted as stop, whenever cron comes by.
            raise Conflict(
                N_("The deadline for this round has passed, so your answer could not be counted.")
            )
        if party["choice"] == "stop":
            raise Conflict(N_("You chose to stop in this round already; a stop is final."))
        if party["member_status"] == "left":
            raise Conflict(N_("You are no longer part of this group."))
        problems = check_decision(party["role"], choice, reason, usefulness, note)
        if problems:
            raise Invalid(*problems)
        db.conn.execute(
            "UPDATE decisions SET choice = ?, reason = ?, usefulness = ?, note = ?,"
            " decided_at = ? WHERE id = ?",
            [choice, reason, usefulness, note, to_db(now), decision_id],
        )
        log_event(
            db,
            "decision_recorded",
            now,
            engagement_id=party["engagement_id"],
            round_id=party["round_id"],
            decision_id=decision_id,
            role=party["role"],
            choice=choice,
            changed_from=party["choice"],
            **(via or {}),
        )
        if choice == "stop" and party["role"] == "client" and party["kind"] == "group":
            leave_group(db, party["member_id"], party["engagement_id"], now)
        # The round as ROUND_FACTS would read it: the write lock has held since the SELECT.
        round_ = {
            "id": party["round_id"],
            "engagement_id": party["engagement_id"],
            "status": party["round_status"],
            "kind": party["kind"],
            "min_members": party["min_members"],
        }
        verdict = settle_rounds(db, [round_], now, deadline_passed=False).get(round_["id"])
    return {"choice": choice, "verdict": verdict}


def leave_group(db: sqlite_utils.Database, member_id: int, engagement_id: int, now: datetime):
    """R5: a member who stops leaves the group; the others carry on."""
    db.conn.execute(
        "UPDATE members SET status = 'left', left_at = ? WHERE id = ? AND status = 'active'",
        [to_db(now), member_id],
    )
    log_event(db, "member_left", now, engagement_id=engagement_id, member_id=member_id)


ROUND_FACTS = (
    "SELECT rounds.id, rounds.engagement_id, rounds.status, engagements.kind,"
    " engagements.min_members FROM rounds"
    " JOIN engagements ON engagements.id = rounds.engagement_id"
)
# R4: the next batch of open rounds past their deadline, oldest first.
OVERDUE_ROUNDS = (
    ROUND_FACTS + " WHERE rounds.status = 'open' AND rounds.deadline_at <= ?"
    " ORDER BY rounds.deadline_at LIMIT ?"
)
# Every choice so far in many rounds (a JSON list of their ids).
ROUND_CHOICES = (
    "SELECT round_id, role, client_id, choice FROM decisions"
    " WHERE round_id IN (SELECT value FROM json_each(?))"
)


def settle_round(
    db: sqlite_utils.Database, round_id: int, now: datetime, *, deadline_passed: bool
) -> Verdict | None:
    """Ask the rules whether the round closes now, and close it if so."""
    rounds = [
        dict(row) for row in db.conn.execute(ROUND_FACTS + " WHERE rounds.id = ?", [round_id])
    ]
    return settle_rounds(db, rounds, now, deadline_passed=deadline_passed).get(round_id)


def settle_rounds(
    db: sqlite_utils.Database, rounds: list[dict], now: datetime, *, deadline_passed: bool
) -> dict[int, Verdict]:
    """Judge many open rounds with one query for their decisions; close those with a verdict."""
    rounds = [round_ for round_ in rounds if round_["status"] == "open"]
    choices: dict[int, dict] = {round_["id"]: {"coach": None, "members": {}} for round_ in rounds}
    for decision in db.conn.execute(ROUND_CHOICES, [json.dumps(list(choices))]):
        if decision["role"] == "coach":
            choices[decision["round_id"]]["coach"] = decision["choice"]
        else:
            choices[decision["round_id"]]["members"][decision["client_id"]] = decision["choice"]
    verdicts = {}
    for round_ in rounds:
        mine = choices[round_["id"]]
        verdict = judge_round(
            round_["kind"], round_["min_members"], mine["coach"], mine["members"], deadline_passed
        )
        if verdict is not None:
            verdicts[round_["id"]] = verdict
    close_rounds(db, [r for r in rounds if r["id"] in verdicts], verdicts, now)
    return verdicts


def close_rounds(
    db: sqlite_utils.Database, rounds: list[dict], verdicts: dict[int, Verdict], now: datetime
) -> None:
    """Close each round once, carry out its verdict and mail every party its outcome (R8).

    The members a verdict lets go leave first, so that their mail says so.
    The caller holds the write lock and has just seen these rounds open.
    """
    endings = []
    for round_ in rounds:
        engagement_id, verdict = round_["engagement_id"], verdicts[round_["id"]]
        for client_id in verdict.leaving:
            member_id = db.conn.execute(
                "SELECT id FROM members WHERE engagement_id = ? AND client_id = ?",
                [engagement_id, client_id],
            ).fetchone()[0]
            leave_group(db, member_id, engagement_id, now)
        endings.append(Ending(engagement_id, round_["id"], verdict.outcome, verdict.end_reason))
    end_engagements(db, now, endings)


def close_overdue_rounds(
    db: sqlite_utils.Database, now: datetime, batch: int = SWEEP_BATCH
) -> list[dict]:
    """R4: close every open round past its deadline; silence counts as stop. What closed.

    The whole list is kept, so this is for a few rounds at a time; the
    commands, which may close a million, stream `sweep_overdue_rounds`.
    """
    return [
        closed for closed_batch in sweep_overdue_rounds(db, now, batch) for closed in closed_batch
    ]


def sweep_overdue_rounds(
    db: sqlite_utils.Database, now: datetime, batch: int = SWEEP_BATCH
) -> Iterator[list[dict]]:
    """R4: close every open round past its deadline, yielding each batch once it committed.

    Works in batches of `batch` rounds, each one immediate transaction, so a
    large sweep neither holds the lock long nor loses its work when
    interrupted; only one batch is ever in memory, however many rounds close.
    Nothing happens until the caller iterates.
    """
    while True:
        with transaction(db):
            rounds = [dict(row) for row in db.conn.execute(OVERDUE_ROUNDS, [to_db(now), batch])]
            verdicts = settle_rounds(db, rounds, now, deadline_passed=True)
        if not rounds:
            return
        yield [
            {
                "engagement_id": round_["engagement_id"],
                "round_id": round_["id"],
                "outcome": verdicts[round_["id"]].outcome,
                "end_reason": verdicts[round_["id"]].end_reason,
            }
            for round_ in rounds
        ]


# R9: the parties still asked and undecided in open rounds whose reminder time has come.
REMINDERS_DUE = """
SELECT id, round_id FROM round_parties
WHERE round_status = 'open' AND reminder_at <= :now AND deadline_at > :now
  AND choice IS NULL AND reminded_at IS NULL
  AND (member_id IS NULL OR member_status = 'active')
LIMIT :limit
"""


def send_reminders(db: sqlite_utils.Database, now: datetime) -> int:
    """R9: one reminder, with fresh links, to each party still undecided near the deadline."""
    sent = 0
    while True:
        due = db.conn.execute(
            REMINDERS_DUE, {"now": to_db(now), "limit": REMINDER_BATCH}
        ).fetchall()
        if not due:
            return sent
        with transaction(db):
            for decision_id, round_id in due:
                marked = db.conn.execute(
                    "UPDATE decisions SET reminded_at = ? WHERE id = ? AND reminded_at IS NULL"
                    " AND choice IS NULL",
                    [to_db(now), decision_id],
                ).rowcount
                if not marked:
                    continue
                party = next(p for p in parties_of_round(db, round_id) if p["id"] == decision_id)
                queue_decision_mail(db, party, now, kind="reminder")
                log_event(
                    db,
                    "reminder_queued",
                    now,
                    engagement_id=party["engagement_id"],
                    round_id=round_id,
                    decision_id=decision_id,
                )
                sent += 1


def get_coach_decision_id(db: sqlite_utils.Database, round_id: int) -> int:
    """The coach's decision in a round; NotFound, with where to look, for an unknown round."""
    row = db.conn.execute(
        "SELECT id FROM decisions WHERE round_id = ? AND role = 'coach'", [round_id]
    ).fetchone()
    if row is None:
        raise NotFound(
            f"There is no round {round_id}; `python cli.py engagement show ID` lists them."
        )
    return row[0]
