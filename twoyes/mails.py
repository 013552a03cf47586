"""What each mail says, as data: who gets it, in which language, with which facts and links.

Each function queues one kind of mail in the caller's transaction. The words
themselves live in templates/mail/<kind>.txt and .html and are rendered at
delivery (delivery.py), so queueing stays cheap and a mail is written in the
reader's language and the practice's time zone. A mail's links are kept as the
nonces of their token rows (tokens.py): the tokens themselves are made at
delivery and never stored.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlite_utils

from twoyes.outbox import queue_mail
from twoyes.rules import LOW_USEFULNESS
from twoyes.threads import remember_thread
from twoyes.times import to_db
from twoyes.tokens import (
    new_coach_view_link,
    new_coach_view_links,
    new_decision_link,
    new_welcome_back_links,
)


def queue_decision_mail(
    db: sqlite_utils.Database, party: dict, now: datetime, kind: str = "decision"
) -> int:
    """R1/R9: a party's mail with its own Continue and Stop links (fresh ones each time);
    a reply to it answers for that party (threads.py)."""
    facts = {
        "title": party["title"],
        "first_session": party["earlier_rounds"] == 0,
        "client_names": party["client_names"] if party["role"] == "coach" else None,
        "session_at": party["session_at"],
        "deadline_at": party["deadline_at"],
        "decide_nonce": new_decision_link(db, party["id"], now),
    }
    mail_id = queue_party_mail(
        db, kind, party, now, facts | _overview_link(db, party, now), reply_to=_reply_to(party)
    )
    remember_thread(db, mail_id, party["id"], now)
    return mail_id


def queue_party_mail(
    db: sqlite_utils.Database,
    kind: str,
    party: dict,
    now: datetime,
    facts: dict,
    *,
    reply_to: tuple[str, str],
) -> int:
    """A mail to a party of a round (a round_parties row), in their language: who they are
    and who their coach is, and the mail's own `facts`."""
    return queue_mail(
        db,
        kind,
        now,
        to=(party["name"], party["email"]),
        reply_to=reply_to,
        lang=party["lang"],
        engagement_id=party["engagement_id"],
        context={
            "role": party["role"],
            "name": party["name"],
            "call_name": party["call_name"],
            "coach_name": party["coach_name"],
            "group": party["kind"] == "group",
        }
        | facts,
    )


def queue_outcome_mails(db: sqlite_utils.Database, now: datetime) -> None:
    """R8: one mail to every party of what `endings.end_engagements` put in `temp.ending`.

    The parties are the closing round's (or, without a round, the coach and
    the active members). Each client whose engagement ends, or who left a
    group that goes on, gets a welcome-back link valid for a year. A client's
    mail never carries other clients' names, choices or notes.

    The mails are built and written by SQL, however many: one statement for
    endings with a round and one for those without. Only the links' rows are
    made here (in Python, for their random nonces).
    """
    db.conn.execute(CREATE_LINKS)
    # Each coach's outcome mail links to their overview (and, after a continue, to planning),
    # each with a link of its own, so that a mail that fails for good takes only its own
    # (outbox.py). Their rows are written in nonce order, at the end of the table's key.
    db.conn.execute(CREATE_COACH_LINKS)
    coach_of = dict(
        db.conn.execute(
            "SELECT ending.engagement_id, engagements.coach_id FROM temp.ending"
            " CROSS JOIN engagements ON engagements.id = ending.engagement_id"
        ).fetchall()
    )
    db.conn.execute("DELETE FROM temp.coach_links")
    db.conn.executemany(
        "INSERT INTO temp.coach_links VALUES (?, ?)",
        new_coach_view_links(db, coach_of, now).items(),
    )
    # One random key a call, shared by its mails' Message-IDs: a sweep's batch then writes one
    # place of their unique index, not 10,000 random ones (at 1M rounds, issue 19).
    at = {"at": to_db(now), "low": LOW_USEFULNESS, "key": secrets.token_hex(8)}
    for parties in (ROUND_PARTIES, ROUNDLESS_PARTIES):
        leaving = [row[0] for row in db.conn.execute(parties + LEAVING)]
        db.conn.execute("DELETE FROM temp.links")
        db.conn.executemany(
            "INSERT INTO temp.links VALUES (?, ?)",
            new_welcome_back_links(db, leaving, now).items(),
        )
        db.conn.execute(INSERT_OUTBOX + parties + OUTCOME_MAILS, at)
    db.conn.execute("DELETE FROM temp.links")
    db.conn.execute("DELETE FROM temp.coach_links")


# The overview links (their nonces) of one call's coach mails, on their way into the outbox.
CREATE_COACH_LINKS = (
    "CREATE TEMP TABLE IF NOT EXISTS coach_links"
    " (engagement_id INTEGER PRIMARY KEY, nonce TEXT NOT NULL)"
)

# The welcome-back links (their nonces) of one call, on their way into the outbox.
CREATE_LINKS = (
    "CREATE TEMP TABLE IF NOT EXISTS links (member_id INTEGER PRIMARY KEY, nonce TEXT NOT NULL)"
)

# Every party of what is ending, with what its mail needs, from the few rows in temp.ending
# outwards, never through a scan of a whole table. Two statements, for endings with a round
# and without: as one UNION ALL, the sweep's mails took a tenth longer (on the 10,000
# overdue rounds of bench/).
PARTIES_FACTS = """
facts AS (
    SELECT parties.*,
           role = 'client' AND (outcome = 'stop' OR member_status = 'left') AS leaves
    FROM parties
)
"""

# A closing round's parties, through decisions' round index (the view's own joins are by key).
ROUND_PARTIES_CTE = """
WITH parties AS (
    SELECT ending.*, round_parties.id AS decision_id, role, client_id, choice, reason,
           title, kind, coach_name, coach_email, name, call_name, email, lang, member_id,
           member_status, session_at
    FROM round_parties JOIN temp.ending ON ending.round_id = round_parties.round_id
    WHERE round_parties.round_id IN (SELECT round_id FROM temp.ending)
),"""
# Constant SQL joined with constant SQL: nothing from outside is in it.
ROUND_PARTIES = ROUND_PARTIES_CTE + PARTIES_FACTS  # nosec B608

# An engagement that ends without a round (idle): its coach and its active members, through
# each CROSS JOIN in its order.
ROUNDLESS_PARTIES_CTE = """
WITH parties AS (
    SELECT ending.*, NULL AS decision_id, 'coach' AS role, NULL AS client_id, NULL AS choice,
           NULL AS reason, engagements.title, engagements.kind, coaches.name AS coach_name,
           coaches.email AS coach_email, coaches.name AS name, coaches.call_name AS call_name,
           coaches.email AS email, coaches.lang AS lang, NULL AS member_id,
           NULL AS member_status, NULL AS session_at
    FROM temp.ending
    CROSS JOIN engagements ON engagements.id = ending.engagement_id
    CROSS JOIN coaches ON coaches.id = engagements.coach_id
    WHERE ending.round_id IS NULL
    UNION ALL
    SELECT ending.*, NULL, 'client', members.client_id, NULL, NULL, engagements.title,
           engagements.kind, coaches.name, coaches.email, clients.name, clients.call_name,
           clients.email, clients.lang, members.id, members.status, NULL
    FROM temp.ending
    CROSS JOIN members ON members.engagement_id = ending.engagement_id
    CROSS JOIN engagements ON engagements.id = ending.engagement_id
    CROSS JOIN coaches ON coaches.id = engagements.coach_id
    CROSS JOIN clients ON clients.id = members.client_id
    WHERE ending.round_id IS NULL AND members.status = 'active'
),"""
ROUNDLESS_PARTIES = ROUNDLESS_PARTIES_CTE + PARTIES_FACTS  # nosec B608

LEAVING = "SELECT member_id FROM facts WHERE leaves"

INSERT_OUTBOX = """
INSERT INTO outbox (kind, engagement_id, to_name, to_email, reply_to_name, reply_to_email,
                    lang, context, message_id, next_attempt_at, created_at)
"""

# What each party's outcome mail says (templates/mail/outcome.*), as JSON.
OUTCOME_MAILS = """,
said AS (
    -- Each closed round once: the coach's choice, and what only its coach hears (the
    -- counts, who said what, and whose rating was low).
    SELECT round_id,
           max(CASE WHEN role = 'coach' THEN choice END) AS coach_choice,
           max(CASE WHEN role = 'coach' THEN reason END) AS coach_reason,
           count(client_id) AS members_total,
           count(CASE WHEN client_id AND choice = 'continue' THEN 1 END) AS members_continuing,
           count(CASE WHEN client_id AND choice = 'stop' THEN 1 END) AS members_stopped,
           count(CASE WHEN client_id AND choice IS NULL THEN 1 END) AS members_silent,
           group_concat(name, ', ') AS client_names,
           json_group_array(json_object('name', name, 'usefulness', usefulness))
               FILTER (WHERE client_id AND usefulness <= :low) AS low_usefulness,
           json_group_array(json_object('name', name, 'choice', choice, 'reason', reason,
                                        'usefulness', usefulness, 'note', note))
               FILTER (WHERE client_id) AS client_choices
    -- Fed in decision order, which is the members' order. SQLite keeps the order rows are fed
    -- in through json_group_array and group_concat without promising it (an ORDER BY inside
    -- the aggregate needs 3.44); test_groups checks it.
    FROM (SELECT decisions.*, clients.name
          FROM temp.ending CROSS JOIN decisions ON decisions.round_id = ending.round_id
          LEFT JOIN clients ON clients.id = decisions.client_id
          ORDER BY decisions.round_id, decisions.id)
    GROUP BY round_id
),
mails AS (
    SELECT facts.*, said.coach_choice, said.coach_reason, said.members_total,
           said.members_continuing, said.members_stopped, said.members_silent, said.client_names,
           said.low_usefulness, said.client_choices,
           -- Not `ON ... AND facts.leaves`: an ON term on the left side alone made SQLite 3.40
           -- drop the coach's row when `parties` was a UNION ALL with a LEFT JOIN in it.
           CASE WHEN facts.leaves THEN links.nonce END AS welcome_back_nonce,
           CASE WHEN facts.role = 'coach' THEN coach_links.nonce END AS coach_view_nonce
    FROM facts
    LEFT JOIN said ON said.round_id = facts.round_id
    LEFT JOIN temp.links ON links.member_id = facts.member_id
    LEFT JOIN temp.coach_links ON coach_links.engagement_id = facts.engagement_id
)
SELECT 'outcome', engagement_id, name, email, coach_name, coach_email, lang,
       json_object(
           'role', role, 'name', name, 'call_name', call_name, 'coach_name', coach_name,
           'title', title,
           'group', json(iif(kind = 'group', 'true', 'false')),
           'outcome', outcome, 'end_reason', end_reason, 'session_at', session_at,
           'you_left', json(iif(leaves AND outcome = 'continue', 'true', 'false')),
           'my_choice', choice, 'my_reason', reason,
           'coach_choice', coach_choice,
           -- Only which sentence a client reads after the coach's stop depends on it.
           'coach_reason', coach_reason,
           -- Only the coach hears how many chose what: to a member of a group of two, a
           -- count is the other member's choice.
           'members_total', iif(role = 'coach', coalesce(members_total, 0), NULL),
           'members_continuing', iif(role = 'coach', coalesce(members_continuing, 0), NULL),
           'members_stopped', iif(role = 'coach', coalesce(members_stopped, 0), NULL),
           'members_silent', iif(role = 'coach', coalesce(members_silent, 0), NULL),
           -- Only the coach hears whom it was with, who said what, and whose rating was low.
           'client_names', CASE WHEN role = 'coach' THEN coalesce(
               client_names,
               (SELECT group_concat(name, ', ') FROM (
                    SELECT named.name FROM members AS others
                      JOIN clients AS named ON named.id = others.client_id
                     WHERE others.engagement_id = mails.engagement_id
                       AND others.status = 'active' AND mails.round_id IS NULL
                     ORDER BY others.id))) END,
           'low_usefulness', json(CASE WHEN role = 'coach' THEN low_usefulness END),
           'client_choices', json(CASE WHEN role = 'coach' THEN client_choices END),
           'welcome_back_nonce', welcome_back_nonce,
           -- A client of an individual engagement that goes on picks the next session's
           -- time on the coach's booking page, when the coach has one.
           'booking_url', CASE WHEN role = 'client' AND outcome = 'continue' AND NOT leaves
                                    AND kind = 'individual' THEN (
               SELECT coaches.booking_url FROM engagements
               CROSS JOIN coaches ON coaches.id = engagements.coach_id
               WHERE engagements.id = mails.engagement_id) END,
           'engagement_id', engagement_id, 'coach_view_nonce', coach_view_nonce
       ),
       -- A Message-ID in time order, then the call's key: new ones go side by side.
       strftime('%Y%m%d%H%M%S.', :at) || :key || lower(hex(randomblob(8))), :at, :at
FROM mails
ORDER BY engagement_id, role = 'client', decision_id, member_id
"""


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
            "call_name": member["coach_call_name"],
            "client_name": member["client_name"],
            "client_email": member["client_email"],
            "title": member["title"],
            "engagement_id": member["engagement_id"],
            "message": message,
            "coach_view_nonce": _new_overview_link(db, member["engagement_id"], now),
        },
    )


def _overview_link(db: sqlite_utils.Database, party: dict, now: datetime) -> dict:
    """A coach's mail carries a link to their overview of its own; a client's none."""
    if party["role"] != "coach":
        return {}
    return {"coach_view_nonce": _new_overview_link(db, party["engagement_id"], now)}


def _new_overview_link(db: sqlite_utils.Database, engagement_id: int, now: datetime) -> str:
    (coach_id,) = db.conn.execute(
        "SELECT coach_id FROM engagements WHERE id = ?", [engagement_id]
    ).fetchone()
    return new_coach_view_link(db, coach_id, now)


def _reply_to(party: dict) -> tuple[str, str]:
    """A reply to any mail about an engagement reaches its coach, never the practice's robot."""
    return (party["coach_name"], party["coach_email"])


def queue_sign_in_mail(
    db: sqlite_utils.Database, coach: dict, nonce: str, expires_at: str, now: datetime
) -> int:
    """A coach asked at /c for their overview: the link (`nonce`, tokens.new_coach_view_link)
    goes to their own address only."""
    return queue_mail(
        db,
        "sign_in",
        now,
        to=(coach["name"], coach["email"]),
        lang=coach["lang"],
        context={
            "role": "coach",
            "name": coach["name"],
            "expires_at": expires_at,
            "coach_view_nonce": nonce,
        },
    )


def queue_welcome_mails(
    db: sqlite_utils.Database,
    engagement_id: int,
    now: datetime,
    *,
    client_ids: list[int] | None = None,
    welcome_clients: bool = True,
    confirm: bool = True,
) -> None:
    """An engagement starts: each client hears how it works (every session can be the last),
    in their own language, and the coach gets the same sentences as a confirmation.

    `client_ids` narrows the welcome to those clients (a member who joins later); without
    `welcome_clients` only the coach is mailed (an engagement moved in from before). No
    decision links: there is nothing to decide yet.
    """
    engagement, coach = _engagement_and_coach(db, engagement_id)
    members = _active_members(db, engagement_id)
    facts = {
        "coach_name": coach["name"],
        "title": engagement["title"],
        "group": engagement["kind"] == "group",
        "min_members": engagement["min_members"],
        "members_total": len(members),
        "engagement_id": engagement_id,
    }
    for member in members if welcome_clients else ():
        if client_ids is None or member["client_id"] in client_ids:
            _queue_to(db, "welcome", now, engagement_id, member, facts, reply_to=coach)
    if confirm:
        facts |= {
            "client_names": ", ".join(member["name"] for member in members),
            "clients_welcomed": welcome_clients,
            "coach_view_nonce": _new_overview_link(db, engagement_id, now),
        }
        _queue_to(db, "welcome", now, engagement_id, coach, facts)


# What a change does to the session in people's calendars: the method of its invitation.
CALENDAR_METHODS = {
    "planned": "REQUEST",
    "moved": "REQUEST",
    "cancelled": "CANCEL",
    "ended": "CANCEL",
    "joined": "REQUEST",
    "left": "CANCEL",
}


def queue_invitation_mails(
    db: sqlite_utils.Database,
    session: dict,
    change: str,
    now: datetime,
    *,
    client_id: int | None = None,
) -> None:
    """A session was planned, moved or cancelled (or its engagement ended): the coach and
    each active member get a mail with its invitation for their calendar. With
    `client_id`, only that member does: they joined the group (`joined`) or left it
    (`left`) while the session was planned.

    `session` is the row as it is now (as it was, for a cancellation). A cancellation
    raises the sequence once more, past the last invitation people have. The coach's
    invitation names every member; a member's names only the coach and themselves.
    """
    engagement_id = session["engagement_id"]
    engagement, coach = _engagement_and_coach(db, engagement_id)
    members = _active_members(db, engagement_id, client_id)
    method = CALENDAR_METHODS[change]
    facts = {
        "change": change,
        "method": method,
        "uid": session["uid"],
        "sequence": session["sequence"] + (method == "CANCEL"),
        "starts_at": session["starts_at"],
        "ends_at": session["ends_at"],
        "minutes": session["minutes"],
        "was": session.get("was"),
        "stamp": to_db(now),
        "title": engagement["title"],
        "group": engagement["kind"] == "group",
        "coach_name": coach["name"],
        "coach_email": coach["email"],
    }
    # One member joining or leaving leaves the coach's calendar as it is.
    if client_id is None:
        everyone = {
            "client_names": ", ".join(member["name"] for member in members),
            "attendees": [_attendee(member) for member in members],
        }
        _queue_to(db, "invitation", now, engagement_id, coach, facts | everyone)
    for member in members:
        context = facts | {"attendees": [_attendee(member)]}
        _queue_to(db, "invitation", now, engagement_id, member, context, reply_to=coach)


def _queue_to(
    db: sqlite_utils.Database,
    kind: str,
    now: datetime,
    engagement_id: int,
    person: dict,
    context: dict,
    reply_to: dict | None = None,
) -> None:
    """One mail about an engagement to one person (a coach, or a client with reply_to their
    coach), in their language and greeting them by their name."""
    queue_mail(
        db,
        kind,
        now,
        to=(person["name"], person["email"]),
        reply_to=(reply_to["name"], reply_to["email"]) if reply_to else None,
        lang=person["lang"],
        engagement_id=engagement_id,
        context=context
        | {"role": person["role"], "name": person["name"], "call_name": person["call_name"]},
    )


def _engagement_and_coach(db: sqlite_utils.Database, engagement_id: int) -> tuple[dict, dict]:
    row = db.conn.execute(
        "SELECT engagements.title, engagements.kind, engagements.min_members, coaches.name,"
        " coaches.call_name, coaches.email, coaches.lang"
        " FROM engagements JOIN coaches ON coaches.id = engagements.coach_id"
        " WHERE engagements.id = ?",
        [engagement_id],
    ).fetchone()
    coach = {key: row[key] for key in ("name", "call_name", "email", "lang")}
    return dict(row), coach | {"role": "coach"}


def _attendee(member: dict) -> dict:
    return {"name": member["name"], "email": member["email"]}


def _active_members(
    db: sqlite_utils.Database, engagement_id: int, client_id: int | None = None
) -> list[dict]:
    """The clients taking part now, in the order they joined; with `client_id`, that one
    client, taking part or not."""
    return [
        dict(row)
        for row in db.conn.execute(
            "SELECT members.client_id, clients.name, clients.call_name, clients.email,"
            " clients.lang, 'client' AS role"
            " FROM members JOIN clients ON clients.id = members.client_id"
            " WHERE members.engagement_id = :engagement"
            " AND (members.status = 'active' AND :client IS NULL OR members.client_id = :client)"
            " ORDER BY members.id",
            {"engagement": engagement_id, "client": client_id},
        )
    ]
