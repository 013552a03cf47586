"""The principle, said at the start: the welcome mail to each client and the coach's confirmation.

Started on the real command line (or the coach's page), delivered over the real SMTP server,
read as the client reads it: in their own language, without decision links, once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from support import (
    T0,
    Html,
    deliver,
    english_sentences,
    html_of,
    ok,
    outbox_rows,
    refused,
    start,
    submission,
    text_of,
)

from twoyes.coach_view import make_coach_link
from twoyes.engagements import start_engagement
from twoyes.people import add_person


@pytest.fixture
def dutch(db):
    add_person(db, "coach", "Bob Coach", "bob@example.org", "nl", T0)
    add_person(db, "client", "Daan de Boer", "daan@example.org", "nl", T0)
    add_person(db, "client", "Fleur Visser", "fleur@example.org", "nl", T0)
    add_person(db, "client", "Emma English", "emma@example.org", "en", T0)


def only(inbox, address):
    (message,) = inbox.to(address)
    return message


def test_an_individual_client_is_welcomed_in_english_and_the_coach_gets_the_same_words(
    run, app, db, smtp, people
):
    start(run, people["coach"], people["anna"], extra=["--title", "Career"])
    deliver(app, db)

    anna = only(smtp, "anna@example.org")
    assert anna["Subject"] == "Welcome: every session can be the last"
    assert "bob@example.org" in anna["Reply-To"]
    body = text_of(anna)
    assert body.startswith("Hello Anna,")
    assert "Welcome! Bob Coach is your coach for Career." in body
    assert "every session can be the last" in body
    assert "Please answer within 7 days; if we hear nothing by then, we stop" in body
    assert "come back later, you are always welcome" in body
    assert "/d/" not in body and "/d/" not in html_of(anna), "a welcome has no decision links"

    bob = only(smtp, "bob@example.org")
    assert bob["Subject"] == "Career has started"
    coach_body = text_of(bob)
    assert "Anna de Vries got a welcome mail with these words:" in coach_body
    # The same sentences, word for word, as the client read them.
    for paragraph in body.split("\n\n")[1:5]:
        assert f"> {paragraph.strip()}" in coach_body, paragraph
    assert "/c/" in coach_body, "a coach's mail links to their overview"
    assert len(smtp.messages) == 2


def test_a_group_hears_that_each_member_decides_and_what_the_minimum_means(
    run, app, db, smtp, people
):
    start(
        run,
        people["coach"],
        people["anna"],
        people["carl"],
        extra=["--title", "Team", "--min-members", "2"],
    )
    deliver(app, db)
    for address in ("anna@example.org", "carl@example.org"):
        body = text_of(only(smtp, address))
        assert "Welcome to Team, a group with Bob Coach as facilitator." in body
        assert "each member decides for themselves" in body
        assert "and Bob Coach decides too" in body
        assert "at least 2 members choose to continue" in body
        assert "when fewer than 2 want to go on, the group ends there" in body
        assert "we take it that you stop" in body
        # A member's welcome names no other member.
        other = "Carl" if address.startswith("anna") else "Anna"
        assert other not in body and other not in html_of(only(smtp, address))
    bob = text_of(only(smtp, "bob@example.org"))
    assert "Anna de Vries, Carl Client got a welcome mail" in bob
    assert len(smtp.messages) == 3


def test_dutch_welcomes_speak_dutch_with_no_english_left(app, db, run, smtp, dutch, extracted):
    start(run, "bob@example.org", "daan@example.org", extra=["--title", "Loopbaan"])
    start(
        run,
        "bob@example.org",
        "daan@example.org",
        "fleur@example.org",
        extra=["--title", "Team", "--min-members", "1"],
    )
    deliver(app, db)
    daan = smtp.to("daan@example.org")
    assert [m["Subject"] for m in daan] == ["Welkom: iedere sessie kan de laatste zijn"] * 2
    individual, group = (text_of(m) for m in daan)
    assert individual.startswith("Hoi Daan,")
    assert "Welkom! Bob Coach is je coach voor Loopbaan." in individual
    assert "iedere sessie kan de laatste zijn" in individual
    assert "Je bent altijd welkom terug." in individual
    assert "begeleider" in group and "deelnemer" in group
    bob = smtp.to("bob@example.org")
    assert {m["Subject"] for m in bob} == {"Loopbaan is gestart", "Team is gestart"}
    texts = [text_of(m) for m in smtp.messages] + [html_of(m) for m in smtp.messages]
    leaks = {s for s in english_sentences(extracted) for text in texts if s in text}
    assert not leaks, f"English in a Dutch welcome: {sorted(leaks)}"


def test_each_client_is_welcomed_in_their_own_language(app, db, run, smtp, dutch):
    start(run, "bob@example.org", "daan@example.org", "emma@example.org")
    deliver(app, db)
    assert only(smtp, "daan@example.org")["Subject"].startswith("Welkom")
    emma = only(smtp, "emma@example.org")
    assert emma["Subject"] == "Welcome: every session can be the last"
    assert "Welcome! You take part in a group with Bob Coach as facilitator." in text_of(emma)


def test_no_welcome_skips_the_clients_and_still_tells_the_coach(run, app, db, smtp, people):
    result = ok(
        run, "engagement", "start", "--coach", people["coach"], "--client", people["anna"],
        "--no-welcome",
    )  # fmt: skip
    assert "The clients get no welcome mail." in result.stdout
    deliver(app, db)
    assert smtp.to("anna@example.org") == []
    bob = text_of(only(smtp, "bob@example.org"))
    assert "As you asked, Anna de Vries got no welcome mail" in bob
    assert "> Welcome! Bob Coach is your coach." in bob


def test_a_member_added_later_gets_the_same_welcome_and_nobody_else_a_mail(
    run, app, db, smtp, people
):
    add_person(db, "client", "Dana Later", "dana@example.org", "en", T0)
    engagement_id = start(run, people["coach"], people["anna"], people["carl"])
    deliver(app, db)
    first = text_of(only(smtp, "anna@example.org"))
    smtp.clear()

    ok(run, "engagement", "add-member", engagement_id, "dana@example.org")
    deliver(app, db)
    (dana,) = smtp.messages
    assert "dana@example.org" in dana["To"]
    assert dana["Subject"] == "Welcome: every session can be the last"
    # The group's sentences (the greeting aside), as the others read them at the start.
    assert text_of(dana).split("\n", 1)[1] == first.split("\n", 1)[1]


def test_a_refused_start_sends_nothing(run, db, people):
    refused(run, db, "engagement", "start", "--coach", people["coach"], "--client", "x@nowhere")
    assert outbox_rows(db) == []


def test_an_engagement_set_up_without_mail_sends_none(db, people):
    """The domain function mails only when its caller says so (a script, a test's set-up)."""
    start_engagement(db, people["coach"], [people["anna"]], T0)
    assert outbox_rows(db) == []


def start_form(client, token: str) -> dict:
    page = client.get(f"/c/{token}/start")
    (form,) = [f for f in Html(page.text).forms if (f["action"] or "").endswith("/start")]
    return form


def test_the_coach_starts_from_the_overview_with_or_without_welcome(app, db, client, smtp, people):
    token = make_coach_link(db, people["coach"], datetime.now(UTC))["token"]
    form = start_form(client, token)
    assert "no_welcome" in [field["name"] for field in form["inputs"]]
    nina = {"new-1-name": "Nina New", "new-1-email": "nina@example.org", "new-1-lang": "en"}
    answer = client.post(form["action"], data=submission(form) | nina | {"no_welcome": "1"})
    assert answer.status_code == 303, answer.text
    deliver(app, db)
    assert smtp.to("nina@example.org") == []
    assert "got no welcome mail" in text_of(only(smtp, "bob@example.org"))
    smtp.clear()

    form = start_form(client, token)
    olaf = {"new-1-name": "Olaf Other", "new-1-email": "olaf@example.org", "new-1-lang": "en"}
    assert client.post(form["action"], data=submission(form) | olaf).status_code == 303
    deliver(app, db)
    assert "every session can be the last" in text_of(only(smtp, "olaf@example.org"))
    assert "Olaf Other got a welcome mail" in text_of(only(smtp, "bob@example.org"))
