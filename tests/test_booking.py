"""A coach's booking page: set with `coach add --booking-url` or `coach set`, https only, and
carried by the "We continue" mail to the client as "Pick a time for the next session".
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from support import (
    POLICY,
    T0,
    as_json,
    decide,
    deliver,
    english_sentences,
    html_of,
    ok,
    refused,
    rows,
    text_of,
)

from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.sessions import record_session_done

PAGE = "https://cal.com/bob/next-session?duration=60"
PICK = "Pick a time for the next session"


def both_continue(app, db, smtp, engagement_id, clients):
    """A session, everyone continues, and the outcome mails are delivered."""
    _, round_id = record_session_done(db, engagement_id, T0, POLICY)
    deliver(app, db, T0 + timedelta(minutes=1))  # the questions
    later = T0 + timedelta(hours=1)
    for who in ("coach", *clients):
        decide(db, round_id, who, later, choice="continue")
    smtp.clear()
    deliver(app, db, T0 + timedelta(hours=2))


def booking_url_of(db, email: str) -> str | None:
    return rows(db, "SELECT booking_url FROM coaches WHERE email = ?", email)[0]["booking_url"]


def test_the_we_continue_mail_lets_the_client_pick_a_time(run, app, db, smtp):
    ok(run, "coach", "add", "Bob Coach", "bob@example.org", "--booking-url", f"  {PAGE} ")
    assert booking_url_of(db, "bob@example.org") == PAGE
    add_person(db, "client", "Anna de Vries", "anna@example.org", "en", T0)
    engagement_id = start_engagement(db, "bob@example.org", ["anna@example.org"], T0)
    both_continue(app, db, smtp, engagement_id, ["anna@example.org"])

    (anna,) = smtp.to("anna@example.org")
    assert anna["Subject"] == "We continue"
    assert f"{PICK}:\r\n{PAGE}" in text_of(anna)
    assert "Use the link below to choose a moment that suits you." in text_of(anna)
    assert "will be in touch to plan it" not in text_of(anna)
    assert f'href="{PAGE.replace("&", "&amp;")}"' in html_of(anna) and PICK in html_of(anna)
    (bob,) = smtp.to("bob@example.org")
    assert PAGE not in text_of(bob), "the coach plans in twoyes; the page is for the client"


def test_set_it_later_and_clear_it_again(run, app, db, smtp, engagement):
    said = ok(run, "coach", "set", "bob@example.org", "--booking-url", PAGE)
    assert said.stdout == f"Clients of Bob Coach pick the next session at {PAGE} from now on.\n"
    assert booking_url_of(db, "bob@example.org") == PAGE
    data = as_json(ok(run, "coach", "set", "bob@example.org", "--booking-url", "", "--json"))
    assert data["booking_url"] is None
    assert booking_url_of(db, "bob@example.org") is None
    both_continue(app, db, smtp, engagement, ["anna@example.org"])
    body = text_of(smtp.to("anna@example.org")[0])
    assert PICK not in body and "Bob Coach will be in touch to plan it." in body


@pytest.mark.parametrize(
    "url",
    [
        "http://cal.com/bob",
        "cal.com/bob",
        "https://",
        "javascript:alert(1)",
        "https://cal.com/bob dinsdag",
        "https://cal.com/\x1b[31m",
        "https://" + "a" * 2000 + ".example",
    ],
)
def test_anything_but_a_full_https_address_is_refused(run, db, people, url):
    says = "Error: A booking address must be a full https:// address, such as https://cal.com/anna."
    assert refused(run, db, "coach", "set", "bob@example.org", "--booking-url", url) == says
    assert refused(run, db, "coach", "add", "Eve", "eve@example.org", "--booking-url", url) == says
    # Nothing else of the same command changes either.
    line = refused(
        run, db, "coach", "set", "bob@example.org", "--call-name", "Robbie", "--booking-url", url
    )
    assert line == says


def test_set_without_anything_to_change_says_what_it_needs(run, db, people):
    line = refused(run, db, "coach", "set", "bob@example.org")
    assert line == "Error: Say what to change: --call-name NAME or --booking-url URL."


def test_a_client_has_no_booking_page(run, db, people):
    refused(run, db, "client", "add", "Zoe", "zoe@example.org", "--booking-url", PAGE, code=2)


def test_a_group_that_goes_on_hears_from_its_coach_instead(app, db, smtp, people):
    """A booking page is for one person's time: in a group the coach plans for everyone."""
    db.conn.execute("UPDATE coaches SET booking_url = ?", [PAGE])
    group = start_engagement(db, people["coach"], [people["anna"], people["carl"]], T0)
    both_continue(app, db, smtp, group, [people["anna"], people["carl"]])
    for address in (people["anna"], people["carl"]):
        (message,) = smtp.to(address)
        assert message["Subject"] == "We continue"
        assert PAGE not in text_of(message) and PICK not in html_of(message)


def test_a_dutch_client_picks_a_time_in_dutch(run, app, db, smtp, extracted):
    ok(run, "coach", "add", "Bob Coach", "bob@example.org", "--lang", "nl", "--booking-url", PAGE)
    add_person(db, "client", "Daan de Boer", "daan@example.org", "nl", T0)
    engagement_id = start_engagement(db, "bob@example.org", ["daan@example.org"], T0)
    both_continue(app, db, smtp, engagement_id, ["daan@example.org"])
    (daan,) = smtp.to("daan@example.org")
    assert f"Kies een moment voor de volgende sessie:\r\n{PAGE}" in text_of(daan)
    texts = [text_of(daan), html_of(daan)]
    leaks = {s for s in english_sentences(extracted) for text in texts if s in text}
    assert not leaks, leaks
