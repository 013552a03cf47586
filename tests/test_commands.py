"""The command line says the right thing: slips are caught with a sentence that says what to do,
and what people read names sessions by number and times on the practice's clock.

Through the real `python cli.py` commands (Click's runner) on a real database;
refusals change nothing (test_cli.refused compares the whole database).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from support import NEXT_YEAR, T0, decision_id, ok, refused, session_done, show, start

from twoyes.rounds import close_overdue_rounds, record_decision

AMSTERDAM = ZoneInfo("Europe/Amsterdam")


def test_a_session_in_the_past_is_refused_with_the_command_for_one_that_took_place(
    run, db, engagement
):
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d %H:%M")

    line = refused(run, db, "session", "add", engagement, "--at", yesterday)

    assert line == (
        f"Error: {yesterday} is in the past; for a session that took place, use "
        f"`python cli.py session done {engagement}`."
    )


def test_a_second_active_engagement_with_the_same_people_needs_again(run, db, people):
    first = start(run, "bob@example.org", "anna@example.org", extra=["--title", "Career"])

    line = refused(
        run, db, "engagement", "start", "--coach", "bob@example.org", "--client", "Anna@example.org"
    )

    assert line == (
        f"Error: The same coach and clients already have an active engagement {first} (Career); "
        f"plan its next session with `python cli.py session add {first} --at ...`, or add "
        "--again to start another one."
    )
    # Other people, or --again, start one as before.
    start(run, "bob@example.org", "anna@example.org", "carl@example.org")
    again = start(run, "bob@example.org", "anna@example.org", extra=["--again"])
    assert again != first


def test_a_late_answer_hears_that_the_round_closed_at_its_deadline(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    close_overdue_rounds(db, datetime.now(UTC) + timedelta(days=8))

    line = refused(run, db, "decide", round_id, "--choice", "continue")

    assert line == (
        "Error: This round closed at its deadline, so an answer after it could not be counted."
    )


def test_a_round_closed_by_an_answer_says_so_not_the_deadline(run, db, engagement):
    round_id = session_done(run, engagement)["round_id"]
    ok(run, "decide", round_id, "--choice", "stop")

    line = refused(run, db, "decide", round_id, "--choice", "stop")

    assert "your answer was not needed any more" in line


def test_a_mistyped_address_is_met_with_the_nearest_one_not_an_add_command(run, db, people):
    line = refused(
        run, db, "engagement", "start", "--coach", "bob@exmaple.org", "--client", "anna@example.org"
    )

    assert line == (
        "Error: There is no coach with the address bob@exmaple.org; did you mean bob@example.org?"
    )
    assert "coach add" not in line


def test_a_taken_address_is_named_as_it_is_stored(run, db, people):
    line = refused(run, db, "client", "add", "Anna Again", "ANNA@Example.org")

    assert (
        line
        == "Error: There is already a client with the address anna@example.org (Anna de Vries)."
    )


def continued_by_both(run, db, engagement: int, now: datetime) -> dict:
    """A session held at `now`, and its round closed with everyone's continue."""
    done = session_done(run, engagement, "--now", now.isoformat())
    ok(run, "decide", done["round_id"], "--choice", "continue", "--now", now.isoformat())
    anna = decision_id(db, done["round_id"], "anna@example.org")
    record_decision(db, anna, now + timedelta(minutes=1), choice="continue")
    return done


def test_engagement_show_numbers_sessions_and_reads_like_the_practice_s_clock(run, db, people):
    engagement = start(run, "bob@example.org", "anna@example.org", extra=["--title", "Career"])
    first = continued_by_both(run, db, engagement, T0)
    second = session_done(run, engagement, "--now", (T0 + timedelta(days=1)).isoformat())
    ok(
        run,
        "decide",
        second["round_id"],
        "--choice",
        "stop",
        "--reason",
        "cannot_help",
        "--now",
        (T0 + timedelta(days=1, hours=1)).isoformat(),
    )

    lines = ok(run, "engagement", "show", engagement).stdout.splitlines()

    assert lines[1] == "  individual, ended (coach stopped)"
    sessions = [line for line in lines if line.startswith("  session ")]
    assert [line.split(":")[0] for line in sessions] == ["  session 1", "  session 2"]
    data = show(run, engagement)
    assert [s["id"] for s in data["sessions"]] == [first["session_id"], second["session_id"]]
    # The practice's clock (Amsterdam), not the stored UTC; --json keeps ISO and codes.
    held = datetime.fromisoformat(data["sessions"][1]["at"]).astimezone(AMSTERDAM)
    assert f"{held.day} {held:%b %Y %H:%M}" in sessions[1]
    assert "+00:00" not in "\n".join(lines)
    assert "      coach: stop (my approach does not fit this question)" in lines
    assert data["end_reason"] == "coach_stopped"
    assert data["sessions"][1]["round"]["decisions"][0]["reason"] == "cannot_help"


def test_session_done_and_add_name_the_session_by_its_number(run, db, people):
    engagement = start(run, "bob@example.org", "anna@example.org", extra=["--title", "Career"])
    continued_by_both(run, db, engagement, T0)

    said = ok(run, "session", "add", engagement, "--at", f"{NEXT_YEAR}-01-05 10:00").stdout
    assert said.startswith(f"Planned session 2 of engagement {engagement} (Career) at ")
    said = ok(run, "session", "done", engagement).stdout
    assert said.startswith(f"Recorded session 2 of engagement {engagement} (Career) and opened")
