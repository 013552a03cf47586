"""Every planned session in people's calendars: the invitation each change mails, parsed back.

Sessions are planned, moved and cancelled on the real command line (and the coach's page),
the mail goes over the real SMTP server, and each invitation is read with `icalendar`, as a
calendar program reads it: its method, UID, SEQUENCE, times, organiser and attendees.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from support import (
    T0,
    Html,
    as_json,
    deliver,
    english_sentences,
    html_of,
    ok,
    outbox_rows,
    refused,
    rows,
    submission,
    text_of,
)

from twoyes.coach_view import make_coach_link
from twoyes.endings import Ending, end_engagements
from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.privacy import forget_client
from twoyes.sessions import plan_session

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
YEAR = T0.year + 2  # always to come


def invitation_of(message) -> tuple[Calendar, str]:
    """The calendar a mail carries, and its method; the inline part and the .ics attachment
    must be the same invitation."""
    assert message.get_content_type() == "multipart/mixed"
    (inline,) = [part for part in message.walk() if part.get_content_type() == "text/calendar"]
    (attached,) = list(message.iter_attachments())
    assert attached.get_filename() == "invite.ics"
    assert attached.get_content_type() == "application/ics"
    assert inline.get_content().encode() == attached.get_content()
    calendar = Calendar.from_ical(attached.get_content())
    return calendar, inline.get_param("method")


def event_of(calendar: Calendar):
    (event,) = calendar.walk("VEVENT")
    return event


def attendees_of(event) -> list[str]:
    found = event.get("attendee", [])
    return sorted(str(a) for a in (found if isinstance(found, list) else [found]))


def plan(run, engagement_id, at: str, *extra) -> int:
    return as_json(ok(run, "session", "add", engagement_id, "--at", at, "--json", *extra))[
        "session_id"
    ]


@pytest.mark.parametrize(
    ("day", "utc_hour"), [(f"{YEAR}-01-15", 9), (f"{YEAR}-07-15", 8)], ids=["winter", "summer"]
)
def test_a_planned_session_is_an_invitation_at_ten_in_amsterdam(
    run, app, db, smtp, engagement, day, utc_hour
):
    plan(run, engagement, f"{day} 10:00", "--minutes", "90")
    deliver(app, db)
    assert len(smtp.messages) == 2
    uids = set()
    for address in ("bob@example.org", "anna@example.org"):
        (message,) = smtp.to(address)
        assert message["Subject"].startswith("Session planned: ")
        assert "10:00" in message["Subject"]
        calendar, method = invitation_of(message)
        assert method == "REQUEST"
        assert str(calendar["method"]) == "REQUEST"
        event = event_of(calendar)
        start, end = event.decoded("dtstart"), event.decoded("dtend")
        assert start == datetime.fromisoformat(f"{day}T10:00").replace(tzinfo=AMSTERDAM)
        assert start.astimezone(UTC).hour == utc_hour
        assert end - start == timedelta(minutes=90)
        assert event["dtstart"].params["TZID"] == "Europe/Amsterdam"
        (zone,) = calendar.walk("VTIMEZONE")
        assert str(zone["tzid"]) == "Europe/Amsterdam"
        assert event["sequence"] == 0
        assert str(event["organizer"]) == "mailto:bob@example.org"
        assert event["organizer"].params["CN"] == "Bob Coach"
        assert attendees_of(event) == ["mailto:anna@example.org"]
        assert str(event["status"]) == "CONFIRMED"
        uids.add(str(event["uid"]))
        assert "The invitation for your calendar is attached." in text_of(message)
    assert len(uids) == 1, "the coach's and the client's invitation are one event"
    (anna,) = smtp.to("anna@example.org")
    assert str(event_of(invitation_of(anna)[0])["summary"]) == "Career: session with Bob Coach"
    (bob,) = smtp.to("bob@example.org")
    assert str(event_of(invitation_of(bob)[0])["summary"]) == "Career: session with Anna de Vries"


def test_a_moved_session_keeps_its_uid_and_raises_its_sequence(run, app, db, smtp, engagement):
    session_id = plan(run, engagement, f"{YEAR}-03-02 10:00")
    deliver(app, db)
    (first,) = smtp.to("anna@example.org")
    uid = str(event_of(invitation_of(first)[0])["uid"])

    for sequence, day in enumerate(("03-09", "03-30"), start=1):  # the second past summer time
        smtp.clear()
        ok(run, "session", "move", session_id, "--at", f"{YEAR}-{day} 10:00")
        deliver(app, db)
        assert len(smtp.messages) == 2
        for message in smtp.messages:
            assert message["Subject"].startswith("Session moved to ")
            calendar, method = invitation_of(message)
            event = event_of(calendar)
            assert method == "REQUEST"
            assert str(event["uid"]) == uid
            assert event["sequence"] == sequence
            assert event.decoded("dtstart") == datetime.fromisoformat(
                f"{YEAR}-{day}T10:00"
            ).replace(tzinfo=AMSTERDAM)
        assert "has moved to" in text_of(smtp.to("anna@example.org")[0])
    assert rows(db, "SELECT sequence FROM sessions WHERE id = ?", session_id) == [{"sequence": 2}]


def test_a_cancelled_session_is_cancelled_in_every_calendar(run, app, db, smtp, engagement):
    session_id = plan(run, engagement, f"{YEAR}-03-02 10:00")
    ok(run, "session", "move", session_id, "--at", f"{YEAR}-03-03 10:00")
    deliver(app, db)
    (moved,) = [m for m in smtp.to("anna@example.org") if "moved" in m["Subject"]]
    uid = str(event_of(invitation_of(moved)[0])["uid"])
    smtp.clear()

    ok(run, "session", "cancel", session_id)
    deliver(app, db)
    assert len(smtp.messages) == 2
    for message in smtp.messages:
        assert message["Subject"].startswith("Session cancelled: ")
        calendar, method = invitation_of(message)
        event = event_of(calendar)
        assert (method, str(calendar["method"])) == ("CANCEL", "CANCEL")
        assert str(event["uid"]) == uid
        assert event["sequence"] == 2, "past the moved invitation people have"
        assert str(event["status"]) == "CANCELLED"
    assert "The cancellation for your calendar is attached." in text_of(smtp.messages[0])

    # The next session is another event, whatever id its row gets.
    plan(run, engagement, f"{YEAR}-03-10 10:00")
    deliver(app, db)
    (new,) = [m for m in smtp.to("anna@example.org") if "planned" in m["Subject"]]
    assert str(event_of(invitation_of(new)[0])["uid"]) != uid


def test_in_a_group_each_member_sees_only_the_coach_and_themselves(run, app, db, smtp, people):
    add_person(db, "client", "Dana Derde", "dana@example.org", "en", T0)
    group = start_engagement(
        db, people["coach"], [people["anna"], people["carl"], "dana@example.org"], T0, title="Team"
    )
    plan(run, group, f"{YEAR}-02-05 10:00")
    deliver(app, db)
    assert len(smtp.messages) == 4
    everyone = ["anna@example.org", "carl@example.org", "dana@example.org"]
    (coach,) = smtp.to("bob@example.org")
    assert attendees_of(event_of(invitation_of(coach)[0])) == [f"mailto:{a}" for a in everyone]
    for address in everyone:
        (message,) = smtp.to(address)
        event = event_of(invitation_of(message)[0])
        assert attendees_of(event) == [f"mailto:{address}"]
        assert str(event["organizer"]) == "mailto:bob@example.org"
        whole = text_of(message) + html_of(message) + invitation_of(message)[0].to_ical().decode()
        for other in everyone:
            if other != address:
                assert other not in whole and other.split("@")[0] not in whole.lower()


def test_an_ending_cancels_the_planned_session_for_everyone(app, db, smtp, engagement):
    session_id = plan_session(
        db, engagement, datetime(YEAR, 3, 2, 9, tzinfo=UTC), 60, T0, invite=True
    )
    deliver(app, db)
    (planned,) = smtp.to("anna@example.org")
    uid = str(event_of(invitation_of(planned)[0])["uid"])
    smtp.clear()

    end_engagements(db, T0 + timedelta(minutes=5), [Ending(engagement, end_reason="idle")])
    assert rows(db, "SELECT id FROM sessions WHERE id = ?", session_id) == []
    cancelled = rows(db, "SELECT detail FROM events WHERE kind = 'session_cancelled'")
    assert len(cancelled) == 1
    deliver(app, db, T0 + timedelta(minutes=6))
    calendars = [m for m in smtp.messages if m.get_content_type() == "multipart/mixed"]
    assert sorted(m["To"] for m in calendars) == [
        "Anna de Vries <anna@example.org>",
        "Bob Coach <bob@example.org>",
    ]
    for message in calendars:
        calendar, method = invitation_of(message)
        assert method == "CANCEL"
        assert (str(event_of(calendar)["uid"]), event_of(calendar)["sequence"]) == (uid, 1)
        assert "as the engagement has ended" in text_of(message)


def test_a_forgotten_clients_planned_session_goes_without_a_mail(app, db, smtp, engagement):
    plan_session(db, engagement, datetime(YEAR, 3, 2, 9, tzinfo=UTC), 60, T0)
    forget_client(db, "anna@example.org", T0 + timedelta(minutes=5))
    assert rows(db, "SELECT id FROM sessions WHERE status = 'planned'") == []
    assert [row for row in outbox_rows(db) if row["kind"] == "invitation"] == []


def test_each_change_sends_its_mails_once(run, app, db, smtp, engagement):
    session_id = plan(run, engagement, f"{YEAR}-03-02 10:00")
    ok(run, "session", "move", session_id, "--at", f"{YEAR}-03-03 10:00")
    ok(run, "session", "cancel", session_id)
    refused(run, db, "session", "cancel", session_id)  # gone already: nothing more
    kinds = [(row["kind"], row["to_email"]) for row in outbox_rows(db)]
    assert kinds == [("invitation", "bob@example.org"), ("invitation", "anna@example.org")] * 3
    deliver(app, db)
    deliver(app, db)
    assert len(smtp.messages) == 6
    assert [m["Subject"].split(":")[0].split(" to ")[0] for m in smtp.messages] == [
        "Session planned",
        "Session planned",
        "Session moved",
        "Session moved",
        "Session cancelled",
        "Session cancelled",
    ]


def test_a_dutch_client_gets_a_dutch_invitation(run, app, db, smtp, extracted):
    add_person(db, "coach", "Bob Coach", "bob@example.org", "nl", T0)
    add_person(db, "client", "Daan de Boer", "daan@example.org", "nl", T0)
    engagement_id = start_engagement(db, "bob@example.org", ["daan@example.org"], T0)
    session_id = plan(run, engagement_id, f"{YEAR}-12-01 10:00")
    ok(run, "session", "move", session_id, "--at", f"{YEAR}-12-08 10:00")
    ok(run, "session", "cancel", session_id)
    deliver(app, db)
    subjects = [m["Subject"] for m in smtp.to("daan@example.org")]
    assert len(subjects) == 3
    for subject, start, day in zip(
        subjects,
        ("Sessie gepland: ", "Sessie verzet naar ", "Sessie afgezegd: "),
        ("1 december", "8 december", "8 december"),
        strict=True,
    ):
        assert subject.startswith(start) and f"{day} {YEAR} om 10:00" in subject, subject
    summary = event_of(invitation_of(smtp.to("daan@example.org")[0])[0])["summary"]
    assert str(summary) == "Sessie met Bob Coach"
    texts = [text_of(m) for m in smtp.messages] + [html_of(m) for m in smtp.messages]
    leaks = {s for s in english_sentences(extracted) for text in texts if s in text}
    assert not leaks, f"English in a Dutch invitation: {sorted(leaks)}"


def test_a_member_who_joins_or_leaves_gets_the_planned_session_or_its_cancellation(
    run, app, db, smtp, people
):
    add_person(db, "client", "Dana Derde", "dana@example.org", "en", T0)
    group = start_engagement(db, people["coach"], [people["anna"], people["carl"]], T0)
    plan(run, group, f"{YEAR}-02-05 10:00")
    deliver(app, db)
    uid = str(event_of(invitation_of(smtp.to("anna@example.org")[0])[0])["uid"])
    smtp.clear()

    ok(run, "engagement", "add-member", group, "dana@example.org")
    deliver(app, db)
    welcome, invitation = smtp.to("dana@example.org")
    assert welcome["Subject"] == "Welcome: every session can be the last"
    assert invitation["Subject"].startswith("Session planned: ")
    event = event_of(invitation_of(invitation)[0])
    assert (str(event["uid"]), attendees_of(event)) == (uid, ["mailto:dana@example.org"])
    assert len(smtp.messages) == 2, "nobody else hears of it"
    smtp.clear()

    ok(run, "engagement", "remove-member", group, people["carl"])
    deliver(app, db)
    (message,) = smtp.messages
    assert "carl@example.org" in message["To"]
    calendar, method = invitation_of(message)
    assert (method, str(event_of(calendar)["uid"])) == ("CANCEL", uid)
    assert "As you left the group" in text_of(message)


def test_the_coach_plans_moves_and_cancels_from_the_overview_with_the_same_invitations(
    app, db, client, smtp, engagement
):
    token = make_coach_link(db, "bob@example.org", datetime.now(UTC))["token"]
    base = f"/c/{token}/engagements/{engagement}"

    def press(page_path: str, action_end: str, **fields):
        page = client.get(page_path)
        (form,) = [f for f in Html(page.text).forms if (f["action"] or "").endswith(action_end)]
        answer = client.post(form["action"], data=submission(form) | fields)
        assert answer.status_code == 303, answer.text
        deliver(app, db)
        methods = [invitation_of(m)[1] for m in smtp.messages]
        subjects = [m["Subject"] for m in smtp.messages]
        smtp.clear()
        return methods, subjects

    methods, subjects = press(f"{base}/plan", "/plan", date=f"{YEAR}-04-07", time="10:00")
    assert methods == ["REQUEST", "REQUEST"] and subjects[0].startswith("Session planned")
    (session_id,) = [row["id"] for row in rows(db, "SELECT id FROM sessions")]
    methods, subjects = press(f"{base}/move", "/move", date=f"{YEAR}-04-08", time="10:00")
    assert methods == ["REQUEST", "REQUEST"] and subjects[0].startswith("Session moved")
    methods, subjects = press(base, f"/sessions/{session_id}/cancel")
    assert methods == ["CANCEL", "CANCEL"] and subjects[0].startswith("Session cancelled")
