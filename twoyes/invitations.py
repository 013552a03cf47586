"""A planned session in people's calendars: the iCalendar invitation each mail carries.

Every planned session has one `uid` (random, kept in sessions: a row id may
come back after a cancellation, and a calendar would then take a new session
for the cancelled one) and a `sequence`, raised on every move, so a calendar
replaces its copy instead of adding a second. The times are written on the
practice's wall clock with its VTIMEZONE, so a session at 10:00 in Amsterdam
stays at 10:00 across a change to or from summer time.

The invitation is built when its mail is written (mail/delivery.py), from the
facts mails.queue_invitation_mails put in the outbox; only the summary is in
the reader's words, handed in. When an engagement ends with a session still
planned, `cancel_ending_sessions` takes it off everyone's calendar.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlite_utils

from twoyes.events import log_event
from twoyes.mails import queue_invitation_mails
from twoyes.times import from_db

PRODID = "-//twoyes//every session can be the last//EN"


def new_uid() -> str:
    """A session's calendar identity: 128 random bits, never reused."""
    return secrets.token_hex(16)


def build_calendar(facts: dict, zone: ZoneInfo, summary: str) -> str:
    """The invitation (METHOD REQUEST) or cancellation (METHOD CANCEL) as iCalendar text.

    `facts` is an invitation mail's context: the session's uid, sequence,
    start and end, the coach (organiser) and the attendees this reader may
    see (a group member sees only the coach and themselves).
    """
    # Imported here, not at the top: icalendar takes 0.15 s or more to import, and every
    # command and every tick would pay it, though only a delivery with invitations needs it.
    from icalendar import Calendar, Event

    start = from_db(facts["starts_at"]).astimezone(zone)
    end = from_db(facts["ends_at"]).astimezone(zone)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", facts["method"])
    event = Event()
    event.add("uid", f"{facts['uid']}@twoyes")
    event.add("sequence", facts["sequence"])
    event.add("dtstamp", from_db(facts["stamp"]))
    event.add("dtstart", start)
    event.add("dtend", end)
    event.add("summary", summary)
    event.add("status", "CANCELLED" if facts["method"] == "CANCEL" else "CONFIRMED")
    event.add("organizer", _address(facts["coach_name"], facts["coach_email"]))
    for attendee in facts["attendees"]:
        event.add(
            "attendee",
            _address(attendee["name"], attendee["email"]),
            parameters={"ROLE": "REQ-PARTICIPANT", "PARTSTAT": "NEEDS-ACTION"},
        )
    calendar.add_component(event)
    # Only the years around the session: the whole zone since 1970 is 4 kB of rules.
    calendar.add_missing_timezones(
        first_date=date(start.year - 1, 1, 1), last_date=date(end.year + 2, 1, 1)
    )
    return calendar.to_ical().decode("utf-8")


def _address(name: str, email: str):
    from icalendar import vCalAddress  # see build_calendar

    address = vCalAddress(f"mailto:{email}")
    address.params["CN"] = name
    return address


def cancel_ending_sessions(db: sqlite_utils.Database, now: datetime, *, mail: bool) -> None:
    """An engagement that ends (in `temp.ending`, endings.py) keeps no planned session: it is
    cancelled, and with `mail` everyone who had the invitation gets its cancellation."""
    planned = [
        dict(row)
        for row in db.conn.execute(
            "SELECT sessions.* FROM temp.ending"
            " CROSS JOIN sessions ON sessions.engagement_id = ending.engagement_id"
            " JOIN engagements ON engagements.id = ending.engagement_id"
            " WHERE sessions.status = 'planned' AND engagements.status = 'ended'"
        )
    ]
    for session in planned:
        if mail:
            queue_invitation_mails(db, session, "ended", now)
        db.conn.execute("DELETE FROM sessions WHERE id = ?", [session["id"]])
        log_event(
            db,
            "session_cancelled",
            now,
            engagement_id=session["engagement_id"],
            session_id=session["id"],
            was=session["starts_at"],
        )
