"""Words that fit each reader: what a client, a group member and a coach read after a round.

Every mail here went through the real SMTP server, every page through the real
app; the decisions are made through the rules' own functions at chosen moments.
"""

from __future__ import annotations

from datetime import timedelta
from email.utils import parseaddr

import pytest
from support import POLICY, T0, deliver, links_in, text_of, token_of

from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.rounds import close_overdue_rounds, record_decision, send_reminders
from twoyes.sessions import record_session_done
from twoyes.web import create_app

ANNA, BOB = "anna@example.org", "bob@example.org"


def plain(text: str) -> str:
    return " ".join(text.split())


def parties(db, round_id: int) -> dict[str, int]:
    """Each party's decision id, by address ("coach" for the coach)."""
    rows = db.conn.execute(
        "SELECT decisions.id, coalesce(clients.email, 'coach') FROM decisions"
        " LEFT JOIN clients ON clients.id = decisions.client_id WHERE round_id = ?",
        [round_id],
    )
    return {email: decision_id for decision_id, email in rows}


def close_at_the_deadline(app, db, smtp, round_id: int) -> None:
    smtp.clear()
    closed = close_overdue_rounds(db, T0 + timedelta(days=7, minutes=1))
    assert [c["round_id"] for c in closed] == [round_id]
    deliver(app, db, T0 + timedelta(days=7, minutes=2))


def test_a_client_who_said_yes_hears_it_was_the_coach_who_did_not_answer(
    app, db, client, smtp, engagement
):
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    deliver(app, db)
    (ask,) = smtp.to(ANNA)
    record_decision(db, parties(db, round_id)[ANNA], T0 + timedelta(hours=1), choice="continue")

    close_at_the_deadline(app, db, smtp, round_id)

    (outcome,) = smtp.to(ANNA)
    said = plain(text_of(outcome))
    assert (
        "You chose to continue, but the answer of Bob Coach did not come before the deadline"
        in (said)
    )
    assert "you can ask for a new session with the link below" in said
    assert "We did not hear from everyone" not in said
    assert [link.split("/")[3] for link in links_in(outcome)] == ["b"]
    page = plain(client.get(f"/d/{token_of(links_in(ask)[0])}").text)
    assert "the answer of Bob Coach did not come before the deadline" in page
    assert "Ask for a new session" in page


def test_a_silent_client_hears_that_their_own_answer_did_not_come(
    app, db, client, smtp, engagement
):
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    deliver(app, db)
    record_decision(db, parties(db, round_id)["coach"], T0 + timedelta(hours=1), choice="continue")

    close_at_the_deadline(app, db, smtp, round_id)

    (outcome,) = smtp.to(ANNA)
    assert "We did not hear from you by the deadline" in plain(text_of(outcome))


@pytest.mark.parametrize(
    ("reason", "fit_sentence"),
    [("cannot_help", True), ("values", False), ("other", False), (None, False)],
)
def test_only_the_approach_not_fitting_is_told_it_is_not_about_the_client(
    app, db, smtp, engagement, reason, fit_sentence
):
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    smtp.clear()
    coach = parties(db, round_id)["coach"]
    record_decision(db, coach, T0 + timedelta(hours=1), choice="stop", reason=reason)
    deliver(app, db, T0 + timedelta(hours=2))

    outcome = next(m for m in smtp.to(ANNA) if "session?" not in m["Subject"])
    said = plain(text_of(outcome))
    assert "Bob Coach decided that another session is not the most useful next step" in said
    assert ("That is about the fit of the approach, not about you." in said) is fit_sentence


def test_the_coach_s_mails_speak_to_a_coach(app, db, smtp, engagement):
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    assert send_reminders(db, T0 + timedelta(days=5, hours=1)) == 2
    deliver(app, db, T0 + timedelta(days=5, hours=2))
    record_decision(
        db, parties(db, round_id)[ANNA], T0 + timedelta(days=6), choice="stop", reason="on_my_own"
    )
    deliver(app, db, T0 + timedelta(days=6, minutes=1))

    ask, reminder, ending = smtp.to(BOB)
    assert [ask["Subject"], reminder["Subject"]] == [
        "Another session?",
        "A reminder: another session?",
    ]
    for mail in (ask, reminder):
        said = plain(text_of(mail))
        assert "welcome back" not in said.lower(), "a coach is not welcomed back to their own work"
        assert "that counts as a stop: nothing continues without your yes" in said
    assert ending["Subject"] == "Career has ended"
    assert "welcome back" not in ending["Subject"].lower()
    for mail in (ask, reminder, ending):
        assert text_of(mail).rstrip().endswith("Warm regards,\r\ntwoyes")


@pytest.fixture
def practice_app(settings):
    """The app of a practice that has a name."""
    return create_app({"TESTING": True, **settings, "PRACTICE_NAME": "Praktijk De Zon"})


def test_the_practice_s_name_heads_every_page_and_signs_every_mail(
    app, practice_app, db, smtp, engagement, settings
):
    del settings["MAIL_DEFAULT_SENDER"]  # the sender's name then comes from the practice
    unnamed_sender = create_app({"TESTING": True, **settings, "PRACTICE_NAME": "Praktijk De Zon"})
    record_session_done(db, engagement, T0, POLICY)
    deliver(unnamed_sender, db)

    (to_anna,) = smtp.to(ANNA)
    (to_bob,) = smtp.to(BOB)
    assert parseaddr(to_anna["From"])[0] == "Praktijk De Zon"
    assert text_of(to_anna).rstrip().endswith("Warm regards,\r\nBob Coach\r\nPraktijk De Zon")
    assert text_of(to_bob).rstrip().endswith("Warm regards,\r\nPraktijk De Zon")
    token = token_of(links_in(to_anna)[0])
    browser = practice_app.test_client()
    for path in (f"/d/{token}", "/", "/privacy", "/d/" + "Q" * 43):
        page = browser.get(path).text
        assert '<header class="brand"><p>Praktijk De Zon</p></header>' in page, path
        assert "Praktijk De Zon</title>" in page, path
        assert ": twoyes</title>" not in page, path


def test_a_group_member_reads_that_it_is_a_group(app, db, client, smtp, people):
    add_person(db, "client", "Sanne Smit", "sanne@example.org", "nl", T0)
    add_person(db, "client", "Daan Dekker", "daan@example.org", "nl", T0)
    group = start_engagement(
        db, BOB, ["sanne@example.org", "daan@example.org"], T0, title="Leiderschap"
    )
    _, round_id = record_session_done(db, group, T0, POLICY)
    deliver(app, db)
    (ask,) = smtp.to("sanne@example.org")
    assert "Dank je wel voor de groepssessie met Bob Coach (Leiderschap)" in plain(text_of(ask))
    token = token_of(links_in(ask)[0])
    # A group of two: no count of who decided (it would be the other's answer).
    assert "Elke deelnemer en Bob Coach kiezen ieder voor zich" in plain(
        client.get(f"/d/{token}").text
    )

    ids = parties(db, round_id)
    record_decision(db, ids["daan@example.org"], T0 + timedelta(hours=1), choice="stop")
    page = plain(client.get(f"/d/{token}").text)
    assert "van de 2" not in page and "gekozen hebben" not in page
    assert "cliënt" not in page.lower()
    record_decision(db, ids["sanne@example.org"], T0 + timedelta(hours=2), choice="continue")
    record_decision(db, ids["coach"], T0 + timedelta(hours=3), choice="continue")
    page = plain(client.get(f"/d/{token}").text)
    assert "De groep gaat door." in page and "van de 2" not in page
    assert "Everyone" not in page and "iedereen" not in page.lower()
