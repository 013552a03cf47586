"""The coach's view: status today and the report over a period, checked against a scenario
whose answers are known by construction."""

from __future__ import annotations

from datetime import timedelta

import pytest
from support import POLICY, T0, decide, deliver, hold_session, text_of

from twoyes.engagements import end_idle_engagements, start_engagement
from twoyes.people import add_person
from twoyes.reports import decision_rows, practice_report, practice_status
from twoyes.rounds import close_overdue_rounds
from twoyes.sessions import plan_session, record_session_done


@pytest.fixture
def year(db):
    """Four engagements of Bob and one of Eve, with known endings:

    - anna: 3 sessions (usefulness 6, 8, 9), then stops on_my_own: client_on_my_own.
    - ben: 1 session (usefulness 3), stops not_useful: client_not_useful.
    - carl: 2 sessions (usefulness 7, 5), the second never answered: undecided.
    - dana: still active, one open round where nobody decided yet.
    - erik (coach Eve): 1 session, Eve stops: coach_stopped.
    """
    add_person(db, "coach", "Bob Coach", "bob@example.org", "en", T0)
    add_person(db, "coach", "Eve Coach", "eve@example.org", "en", T0)
    for name in ("anna", "ben", "carl", "dana", "erik"):
        add_person(db, "client", name.title(), f"{name}@example.org", "en", T0)
    ids = {
        name: start_engagement(
            db,
            "eve@example.org" if name == "erik" else "bob@example.org",
            [f"{name}@example.org"],
            T0,
        )  # fmt: skip
        for name in ("anna", "ben", "carl", "dana", "erik")
    }
    now = T0 + timedelta(days=1)

    def session(name, rating=None, choice="continue", coach="continue", **values):
        nonlocal now
        client = f"{name}@example.org"
        round_id = hold_session(
            db, ids[name], client, now, coach=coach, choice=choice, usefulness=rating, **values
        )
        now += timedelta(days=1)
        return round_id

    session("anna", 6)
    session("anna", 8)
    session("anna", 9, choice="stop", reason="on_my_own")
    session("ben", 3, choice="stop", reason="not_useful")
    session("carl", 7)
    session("carl", 5, choice=None)  # Carl rates nothing and never answers
    session("dana", choice=None, coach=None)
    session("erik", coach="stop", choice=None)
    return {"ids": ids, "now": now}


def test_report_counts_what_happened(db, year):
    ended_carl = year["now"] + timedelta(days=8)
    close_overdue_rounds(db, ended_carl)  # Carl's and Dana's rounds pass their deadline
    report = practice_report(db, T0)
    assert report["engagements_started"] == 5
    assert report["engagements_ended"] == 5  # anna, ben, carl, erik, and dana at the deadline
    assert report["end_reasons"] == {
        "client_on_my_own": 1,
        "client_not_useful": 1,
        "coach_stopped": 1,
        "undecided": 2,
    }
    assert report["sessions_per_ended_engagement"] == {1: 3, 2: 1, 3: 1}
    assert report["usefulness_by_session"] == {
        1: {"average": round((6 + 3 + 7) / 3, 2), "ratings": 3},
        2: {"average": 8.0, "ratings": 1},
        3: {"average": 9.0, "ratings": 1},
    }
    # Everyone who answered did so within hours, long before the reminder.
    assert report["decided_before_reminder"]["client"]["decided_before_reminder"] == 5
    assert report["decided_before_reminder"]["client"]["rounds"] == 8


def test_report_for_one_coach_leaves_out_the_others(db, year):
    coach = db.conn.execute("SELECT id FROM coaches WHERE email = 'eve@example.org'").fetchone()[0]
    report = practice_report(db, T0, coach)
    assert report["engagements_started"] == 1
    assert report["end_reasons"] == {"coach_stopped": 1}


def test_report_since_a_date_counts_only_that_period(db, year):
    report = practice_report(db, year["now"] + timedelta(days=1))
    assert report["engagements_started"] == 0
    assert report["engagements_ended"] == 0


def test_status_shows_who_still_has_to_decide(db, year):
    status = practice_status(db, year["now"], POLICY)
    carl, dana = status["open_rounds"]  # soonest deadline first
    assert carl["engagement_id"] == year["ids"]["carl"]
    assert carl["undecided"] == "Carl"
    assert dana["engagement_id"] == year["ids"]["dana"]
    assert dana["undecided"] == "coach, Dana"
    assert carl["overdue"] is dana["overdue"] is False
    later = practice_status(db, year["now"] + timedelta(days=4, hours=1), POLICY)
    assert [r["overdue"] for r in later["open_rounds"]] == [True, False]
    assert status["failed_mails"] == []


def test_status_shows_engagements_drifting_towards_the_idle_rule(db, people):
    engagement_id = start_engagement(db, people["coach"], [people["anna"]], T0)
    planned = start_engagement(db, people["coach"], [people["carl"]], T0)
    plan_session(db, planned, T0 + timedelta(days=30), 60, T0)
    status = practice_status(db, T0 + timedelta(days=25), POLICY)
    (drifting,) = status["drifting"]
    assert drifting["engagement_id"] == engagement_id
    assert drifting["idle_days"] == 25
    assert drifting["ends_at"].startswith((T0 + timedelta(days=60)).date().isoformat())
    end_idle_engagements(db, T0 + timedelta(days=61), POLICY)
    assert practice_status(db, T0 + timedelta(days=61), POLICY)["drifting"] == []


def test_export_has_one_row_per_decision_and_no_tokens(db, year):
    rows = list(decision_rows(db))
    count = db.conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
    assert len(rows) == count
    anna_stop = [r for r in rows if r["party"] == "anna@example.org" and r["choice"] == "stop"]
    assert anna_stop[0]["reason"] == "on_my_own" and anna_stop[0]["usefulness"] == 9
    assert not any("token" in key for key in rows[0])


@pytest.mark.parametrize("rating", [3, 5])
def test_a_low_rating_and_only_a_low_one_is_named_in_the_coachs_outcome_mail(
    app, db, smtp, engagement, rating
):
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    decide(db, round_id, "anna@example.org", T0, choice="continue", usefulness=rating)
    decide(db, round_id, "coach", T0, choice="continue")
    deliver(app, db)
    (to_bob,) = [m for m in smtp.to("bob@example.org") if m["Subject"] == "We continue"]
    named = f"Anna de Vries rated this session {rating} out of 10" in text_of(to_bob)
    assert named == (rating < 5)
    assert rating < 5 or "rated this session" not in text_of(to_bob)
    (to_anna,) = [m for m in smtp.to("anna@example.org") if m["Subject"] == "We continue"]
    assert "out of 10" not in text_of(to_anna)
