"""English and Dutch: every sentence has its Dutch, and each reader gets their own language.

A Dutch reader's mails and pages are checked for English sentences that
slipped through untranslated (or unwrapped for translation), and dates are
written the Dutch way in the practice's time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support import (
    PLACEHOLDER,
    POLICY,
    ROOT,
    T0,
    catalogue,
    deliver,
    english_sentences,
    forms,
    html_of,
    links_in,
    text_of,
    token_of,
    year_unless_now,
)

from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.rounds import record_decision
from twoyes.sessions import record_session_done


def test_every_sentence_has_its_dutch(extracted):
    dutch = catalogue(ROOT / "translations/nl/LC_MESSAGES/messages.po")
    missing = [
        m.id for m in extracted if m.id and not (dutch.get(m.id) and all(forms(dutch[m.id].string)))
    ]
    assert not missing, f"no Dutch yet for: {missing}"
    fuzzy = [m.id for m in dutch if m.id and m.fuzzy]
    assert not fuzzy, f"fuzzy (unchecked) Dutch for: {fuzzy}"


def test_the_dutch_keeps_every_placeholder(extracted):
    dutch = catalogue(ROOT / "translations/nl/LC_MESSAGES/messages.po")
    for message in extracted:
        if message.id:
            wanted = sorted(set(PLACEHOLDER.findall(forms(message.id)[-1])))
            for translation in forms(dutch[message.id].string):
                assert sorted(set(PLACEHOLDER.findall(translation))) == wanted, message.id


@pytest.fixture
def dutch_engagement(db):
    add_person(db, "coach", "Bob Coach", "bob@example.org", "nl", T0)
    add_person(db, "client", "Daan de Boer", "daan@example.org", "nl", T0)
    add_person(db, "client", "Emma English", "emma@example.org", "en", T0)
    return start_engagement(db, "bob@example.org", ["daan@example.org"], T0, title="Loopbaan")


def test_a_dutch_client_gets_dutch_mail_with_a_dutch_date(app, db, smtp, dutch_engagement):
    # Tuesday 1 December 2026, 10:00 in Amsterdam: the deadline is Tuesday 8 December.
    held = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    record_session_done(db, dutch_engagement, held, POLICY)
    deliver(app, db, now=held + timedelta(minutes=1))
    (message,) = smtp.to("daan@example.org")
    assert message["Subject"] == "Nog een sessie?"
    body = text_of(message)
    assert "Hoi Daan," in body
    assert f"dinsdag 8 december{year_unless_now(2026)} om 10:00" in body
    assert f"dinsdag 1 december{year_unless_now(2026)}" in body
    assert f"dinsdag 8 december{year_unless_now(2026)} om 10:00" in html_of(message)


def test_an_english_client_of_a_dutch_coach_gets_english(app, db, smtp, dutch_engagement):
    engagement_id = start_engagement(db, "bob@example.org", ["emma@example.org"], T0)
    held = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    record_session_done(db, engagement_id, held, POLICY)
    deliver(app, db, now=held + timedelta(minutes=1))
    (to_emma,) = smtp.to("emma@example.org")
    (to_bob,) = smtp.to("bob@example.org")
    assert to_emma["Subject"] == "Another session?"
    assert f"Tuesday 8 December{year_unless_now(2026)} at 10:00" in text_of(to_emma)
    assert to_bob["Subject"] == "Nog een sessie?"


def test_the_page_speaks_the_language_of_the_token_owner(app, db, client, smtp, dutch_engagement):
    record_session_done(db, dutch_engagement, T0, POLICY)
    deliver(app, db)
    token = token_of(links_in(smtp.to("daan@example.org")[0])[0])
    page = client.get(f"/d/{token}/stop", headers={"Accept-Language": "en"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert '<html lang="nl">' in html
    assert "Nog een sessie?" in html
    assert "Je koos: ik heb voor nu wat ik nodig heb." in html
    assert ">Bevestigen</button>" in html


def test_a_page_without_a_token_follows_the_browser(client):
    dutch = client.get("/d/" + "x" * 43, headers={"Accept-Language": "nl-NL,nl;q=0.9"})
    english = client.get("/d/" + "x" * 43, headers={"Accept-Language": "en-GB"})
    assert dutch.status_code == english.status_code == 404
    assert "Deze link werkt niet" in dutch.get_data(as_text=True)
    assert "This link does not open" in english.get_data(as_text=True)


def test_no_english_sentence_reaches_a_dutch_reader(app, db, client, smtp, extracted):
    """Every mail kind and page a Dutch client and coach meet, rendered for real."""
    add_person(db, "coach", "Bob Coach", "bob@example.org", "nl", T0)
    add_person(db, "client", "Daan de Boer", "daan@example.org", "nl", T0)
    add_person(db, "client", "Fleur Visser", "fleur@example.org", "nl", T0)
    one = start_engagement(db, "bob@example.org", ["daan@example.org"], T0, title="Loopbaan")
    group = start_engagement(
        db, "bob@example.org", ["daan@example.org", "fleur@example.org"], T0, title="Team"
    )
    _, round_one = record_session_done(db, one, T0, POLICY)
    _, round_group = record_session_done(db, group, T0, POLICY)
    pages = []
    deliver(app, db)
    for message in list(smtp.messages):
        for link in links_in(message):
            pages.append(client.get(link.split("twoyes.test", 1)[1]).get_data(as_text=True))
    # Reminders, then outcomes: the individual one ends, the group goes on without Fleur.
    from twoyes.rounds import send_reminders

    send_reminders(db, T0 + timedelta(days=5, minutes=1))
    coach_one, daan_one = (
        row[0]
        for row in db.conn.execute(
            "SELECT id FROM decisions WHERE round_id = ? ORDER BY role = 'client'", [round_one]
        )
    )
    record_decision(db, daan_one, T0 + timedelta(days=5, hours=1), choice="stop", note="Dank")
    group_parties = [
        row[0]
        for row in db.conn.execute(
            "SELECT id FROM decisions WHERE round_id = ? ORDER BY role = 'client', id",
            [round_group],
        )
    ]
    now = T0 + timedelta(days=5, hours=2)
    record_decision(db, group_parties[0], now, choice="continue", usefulness=8)
    record_decision(db, group_parties[1], now, choice="continue")
    record_decision(db, group_parties[2], now, choice="stop", reason="on_my_own")
    deliver(app, db, now=T0 + timedelta(days=5, hours=3))
    for message in list(smtp.messages):
        for link in links_in(message):
            pages.append(client.get(link.split("twoyes.test", 1)[1]).get_data(as_text=True))
    kinds = {message["Subject"] for message in smtp.messages}
    assert {"Nog een sessie?", "Even een herinnering: nog een sessie?", "We gaan door"} <= kinds
    assert "Dank je wel, en je bent altijd welkom terug" in kinds
    texts = [text_of(m) for m in smtp.messages] + [html_of(m) for m in smtp.messages] + pages
    leaks = {
        sentence for sentence in english_sentences(extracted) for text in texts if sentence in text
    }
    assert not leaks, f"English in Dutch mail or pages: {sorted(leaks)}"


def test_the_privacy_page_follows_the_browser(client, extracted):
    dutch = client.get("/privacy", headers={"Accept-Language": "nl"}).get_data(as_text=True)
    assert "Je gegevens en je privacy" in dutch
    leaks = [sentence for sentence in english_sentences(extracted) if sentence in dutch]
    assert not leaks, leaks
    english = client.get("/privacy", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Your data and your privacy" in english


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_templates_bound_to_one_catalogue_say_what_flask_babel_says(app, lang):
    """Templates get gettext bound once per render (language.bound_gettext); the words,
    the escaping of placeholders and the `%` rules must be exactly Flask-Babel's own."""
    from flask import g, render_template_string

    source = (
        '{{ _("Another session?") }}|{{ gettext("Continue") }}|{{ _("100%% sure") }}|'
        "{% trans n=rating %}You rated this session {{ n }} out of 10.{% endtrans %}|"
        "{% trans coach=name %}{{ coach }} will be in touch to plan it.{% endtrans %}|"
        "{% trans count=2 %}one note{% pluralize %}{{ count }} notes{% endtrans %}"
    )
    values = {"rating": 7, "name": "<Bo & Co>"}
    with app.test_request_context("/"):
        g.lang = lang
        # Without the context processor the template reaches Flask-Babel's own callables.
        flask_babels = app.jinja_env.from_string(source).render(**values)
        bound = render_template_string(source, **values)
    assert bound == flask_babels
    assert "&lt;Bo &amp; Co&gt;" in bound and "100% sure" in bound
    assert ("Nog een sessie?" in bound) == (lang == "nl")
