"""Rules R1-R9 as scenarios on a real SQLite file, without HTTP; the clock moves through `now`."""

import json
from collections import Counter
from datetime import timedelta

import pytest
from support import POLICY, T0, decide, decision_id, dump, open_mail, outbox_rows

from twoyes import errors, tokens
from twoyes.engagements import end_idle_engagements, reopen_engagement, start_engagement
from twoyes.privacy import forget_client
from twoyes.rounds import (
    close_overdue_rounds,
    open_due_rounds,
    send_reminders,
)
from twoyes.sessions import plan_session, record_session_done
from twoyes.times import from_db

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


# Small readers of the database, so each test says what it checks in the user's words.


def link_owner(db, token: str) -> str:
    """The address of the client a welcome-back link acts for (it opens for a year)."""
    member_id = tokens.get_member_id(db, token, T0 + 100 * DAY)
    return db.conn.execute(
        "SELECT clients.email FROM members JOIN clients ON clients.id = members.client_id"
        " WHERE members.id = ?",
        [member_id],
    ).fetchone()[0]


def mails(db, kind):
    """The queued mails of one kind, as (address, context)."""
    rows = db.conn.execute(
        "SELECT to_email, context FROM outbox WHERE kind = ? ORDER BY id", [kind]
    ).fetchall()
    return [(row["to_email"], open_mail(db, json.loads(row["context"]))) for row in rows]


def recipients(db, kind):
    return Counter(address for address, _ in mails(db, kind))


def event_kinds(db, **where):
    sql = "SELECT kind FROM events"
    if where:
        sql += " WHERE " + " AND ".join(f"{key} = ?" for key in where)
    return [row[0] for row in db.conn.execute(sql + " ORDER BY id", list(where.values()))]


def round_of(db, round_id):
    return dict(db.conn.execute("SELECT * FROM rounds WHERE id = ?", [round_id]).fetchone())


def engagement_of(db, engagement_id):
    sql = "SELECT * FROM engagements WHERE id = ?"
    return dict(db.conn.execute(sql, [engagement_id]).fetchone())


def member_status(db, engagement_id, address):
    sql = (
        "SELECT members.status FROM members JOIN clients ON clients.id = members.client_id"
        " WHERE engagement_id = ? AND clients.email = ?"
    )
    return db.conn.execute(sql, [engagement_id, address]).fetchone()[0]


def parties(db, round_id):
    """Who decides in a round: 'coach' and each client's address."""
    sql = (
        "SELECT coalesce(clients.email, 'coach') FROM decisions"
        " LEFT JOIN clients ON clients.id = decisions.client_id WHERE round_id = ?"
    )
    return sorted(row[0] for row in db.conn.execute(sql, [round_id]))


BOB, ANNA, CARL = "bob@example.org", "anna@example.org", "carl@example.org"


@pytest.fixture
def group(db, people):
    """A group of Bob with Anna and Carl (min_members 1), started at T0."""
    return start_engagement(db, BOB, [ANNA, CARL], T0, title="Team")


@pytest.fixture
def held(db, engagement):
    """The individual engagement's first session, done at T0: (engagement, round)."""
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    return engagement, round_id


# R1: a round opens when its session has ended


def test_round_opens_at_first_sweep_after_the_planned_end(db, engagement):
    """R1: no round before start + minutes; the first sweep after it opens one, 7 days to decide."""
    starts = T0 + DAY
    session_id = plan_session(db, engagement, starts, 90, T0)

    assert open_due_rounds(db, starts + timedelta(minutes=89), POLICY) == []
    assert db.conn.execute("SELECT count(*) FROM rounds").fetchone()[0] == 0

    opened_at = starts + timedelta(minutes=91)
    (round_id,) = open_due_rounds(db, opened_at, POLICY)
    round_ = round_of(db, round_id)
    assert round_["session_id"] == session_id
    assert round_["status"] == "open"
    assert from_db(round_["deadline_at"]) == opened_at + timedelta(days=7)
    assert parties(db, round_id) == [ANNA, "coach"]
    assert recipients(db, "decision") == {BOB: 1, ANNA: 1}
    assert open_due_rounds(db, opened_at + HOUR, POLICY) == []


def test_each_party_gets_its_own_links(db, held):
    """R1: each decision mail carries a token that acts for that party alone."""
    _, round_id = held
    found = {
        address: tokens.get_decision_id(db, context["decide_token"], T0)
        for address, context in mails(db, "decision")
    }
    assert found == {BOB: decision_id(db, round_id, "coach"), ANNA: decision_id(db, round_id, ANNA)}


def test_session_done_holds_the_planned_session_and_opens_at_once(db, engagement):
    """R1/R7: `session done` records the planned session (no second one) and opens its round."""
    planned = plan_session(db, engagement, T0 + DAY, 60, T0)
    now = T0 + DAY + timedelta(minutes=50)

    session_id, round_id = record_session_done(db, engagement, now, POLICY)

    assert session_id == planned
    assert db.conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
    status = db.conn.execute("SELECT status FROM sessions WHERE id = ?", [planned]).fetchone()[0]
    assert status == "held"
    assert from_db(round_of(db, round_id)["deadline_at"]) == now + timedelta(days=7)
    assert recipients(db, "decision") == {BOB: 1, ANNA: 1}
    # One round per session: the planned end passing later opens nothing more.
    assert open_due_rounds(db, T0 + 2 * DAY, POLICY) == []


def test_session_done_without_a_plan_records_a_session_and_opens(db, engagement):
    """R1: with nothing planned, `session done` records a session now and opens its round."""
    session_id, round_id = record_session_done(db, engagement, T0 + HOUR, POLICY)
    assert round_of(db, round_id)["session_id"] == session_id
    assert round_of(db, round_id)["status"] == "open"
    assert recipients(db, "decision") == {BOB: 1, ANNA: 1}


def test_group_parties_are_the_coach_and_members_active_at_opening(db, group):
    """R1/R5: a member who left in an earlier round is not a party of the next one."""
    _, first = record_session_done(db, group, T0, POLICY)
    decide(db, first, ANNA, T0 + HOUR, choice="stop")
    decide(db, first, CARL, T0 + HOUR, choice="continue")
    decide(db, first, "coach", T0 + HOUR, choice="continue")
    assert round_of(db, first)["outcome"] == "continue"
    earlier = len(mails(db, "decision"))

    _, second = record_session_done(db, group, T0 + 7 * DAY, POLICY)

    assert parties(db, second) == [CARL, "coach"]
    new_mails = mails(db, "decision")[earlier:]
    assert Counter(address for address, _ in new_mails) == {BOB: 1, CARL: 1}


# R2: a continue may become a stop; a stop is final


def test_client_continue_can_become_stop_while_open(db, held):
    """R2: the client first continues, then stops: the round closes as client_stopped."""
    engagement, round_id = held
    assert decide(db, round_id, ANNA, T0 + HOUR, choice="continue")["verdict"] is None

    result = decide(db, round_id, ANNA, T0 + 2 * HOUR, choice="stop", reason="on_my_own")

    assert result["verdict"].end_reason == "client_stopped"
    assert engagement_of(db, engagement)["end_reason"] == "client_stopped"
    (detail,) = [
        json.loads(row[0])
        for row in db.conn.execute(
            "SELECT detail FROM events WHERE kind = 'decision_recorded' AND round_id = ?"
            " AND json_extract(detail, '$.choice') = 'stop'",
            [round_id],
        )
    ]
    assert detail["changed_from"] == "continue"


def test_coach_continue_can_become_stop_while_open(db, held):
    """R2: the coach may change a continue into a stop too."""
    engagement, round_id = held
    decide(db, round_id, "coach", T0 + HOUR, choice="continue")
    decide(db, round_id, "coach", T0 + 2 * HOUR, choice="stop", reason="cannot_help")
    assert engagement_of(db, engagement)["end_reason"] == "coach_stopped"


def test_a_stop_is_final_in_a_group(db, group):
    """R2: a member who stopped cannot take it back while the round is still open."""
    _, round_id = record_session_done(db, group, T0, POLICY)
    decide(db, round_id, ANNA, T0 + HOUR, choice="stop")
    assert round_of(db, round_id)["status"] == "open"
    before = dump(db)

    with pytest.raises(errors.Conflict, match="stop is final"):
        decide(db, round_id, ANNA, T0 + 2 * HOUR, choice="continue")

    assert dump(db) == before


def test_a_decision_on_a_closed_round_is_a_conflict(db, held):
    """R2: once the client stopped, the round is closed; the coach's later answer is refused."""
    _, round_id = held
    decide(db, round_id, ANNA, T0 + HOUR, choice="stop")
    before = dump(db)

    with pytest.raises(errors.Conflict, match="closed"):
        decide(db, round_id, "coach", T0 + 2 * HOUR, choice="continue")
    with pytest.raises(errors.Conflict):
        decide(db, round_id, ANNA, T0 + 2 * HOUR, choice="continue")

    assert dump(db) == before


def test_a_decision_after_the_deadline_does_not_continue(db, held):
    """R4: once the deadline has passed, a late continue cannot keep the engagement going.

    Otherwise the outcome depends on whether cron already ran: with the sweep it
    is 'undecided', without it 'continue'. The page itself promises a change is
    possible only "until" the deadline.
    """
    engagement, round_id = held
    decide(db, round_id, "coach", T0 + HOUR, choice="continue")
    late = T0 + 7 * DAY + HOUR

    with pytest.raises(errors.Conflict):
        decide(db, round_id, ANNA, late, choice="continue")
    close_overdue_rounds(db, late)

    assert engagement_of(db, engagement)["end_reason"] == "undecided"


def test_the_deadline_second_itself_is_late_for_a_decision_and_due_for_the_sweep(db, held):
    """R4 at the boundary: the deadline is the first second in which silence counts as
    stop. A continue in the second before it counts; one in the deadline's own second is
    refused and changes nothing; and close-undecided run in that second ends the
    engagement `undecided`, while a run a second earlier leaves the round open."""
    engagement, round_id = held
    deadline = from_db(round_of(db, round_id)["deadline_at"])
    second = timedelta(seconds=1)
    decide(db, round_id, "coach", deadline - second, choice="continue")
    before = dump(db)

    with pytest.raises(errors.Conflict) as refused:
        decide(db, round_id, ANNA, deadline, choice="continue")
    assert "The deadline for this round has passed" in str(refused.value)
    assert dump(db) == before
    assert close_overdue_rounds(db, deadline - second) == []
    assert dump(db) == before

    closed = close_overdue_rounds(db, deadline)

    assert [(row["round_id"], row["outcome"], row["end_reason"]) for row in closed] == [
        (round_id, "stop", "undecided")
    ]
    row = engagement_of(db, engagement)
    assert (row["status"], row["end_reason"], row["ended_at"]) == (
        "ended",
        "undecided",
        round_of(db, round_id)["deadline_at"],
    )


# R3: individual rounds close on either stop or on two continues


@pytest.mark.parametrize(
    ("who", "reason", "end_reason"),
    [(ANNA, "not_useful", "client_stopped"), ("coach", "values", "coach_stopped")],
)
def test_either_stop_closes_and_ends_the_engagement(db, held, who, reason, end_reason):
    """R3: one stop closes the round; the engagement ends with the stopper's reason."""
    engagement, round_id = held
    result = decide(db, round_id, who, T0 + HOUR, choice="stop", reason=reason)

    assert result["verdict"].outcome == "stop"
    assert round_of(db, round_id)["status"] == "closed"
    assert round_of(db, round_id)["outcome"] == "stop"
    row = engagement_of(db, engagement)
    assert (row["status"], row["end_reason"]) == ("ended", end_reason)
    assert recipients(db, "outcome") == {BOB: 1, ANNA: 1}


def test_both_continue_closes_and_the_engagement_goes_on(db, held):
    """R3: two continues close the round with continue; the engagement stays active."""
    engagement, round_id = held
    assert decide(db, round_id, ANNA, T0 + HOUR, choice="continue")["verdict"] is None
    assert round_of(db, round_id)["status"] == "open"

    result = decide(db, round_id, "coach", T0 + 2 * HOUR, choice="continue", usefulness=8)

    assert result["verdict"].outcome == "continue"
    assert round_of(db, round_id)["outcome"] == "continue"
    row = engagement_of(db, engagement)
    assert (row["status"], row["end_reason"]) == ("active", None)
    outcome_mails = mails(db, "outcome")
    assert Counter(address for address, _ in outcome_mails) == {BOB: 1, ANNA: 1}
    assert all(context["outcome"] == "continue" for _, context in outcome_mails)
    assert not any(context["welcome_back_token"] for _, context in outcome_mails)


# R4: the deadline


@pytest.mark.parametrize("who", ["coach", ANNA])
def test_overdue_round_ends_undecided_even_after_one_continue(db, held, who):
    """R4: past the deadline the silent party counts as stop, whoever said continue."""
    engagement, round_id = held
    decide(db, round_id, who, T0 + HOUR, choice="continue")
    deadline = from_db(round_of(db, round_id)["deadline_at"])

    assert close_overdue_rounds(db, deadline - MINUTE) == []
    assert round_of(db, round_id)["status"] == "open"
    assert engagement_of(db, engagement)["status"] == "active"

    closed = close_overdue_rounds(db, deadline + MINUTE)

    assert closed == [
        {
            "engagement_id": engagement,
            "round_id": round_id,
            "outcome": "stop",
            "end_reason": "undecided",
        }
    ]
    row = engagement_of(db, engagement)
    assert (row["status"], row["end_reason"]) == ("ended", "undecided")
    assert round_of(db, round_id)["outcome"] == "stop"


def test_closing_overdue_rounds_twice_closes_once(db, held):
    """R4/R8: a second run finds nothing; outcome mails and events are not repeated."""
    _, round_id = held
    later = T0 + 8 * DAY
    assert len(close_overdue_rounds(db, later)) == 1
    assert close_overdue_rounds(db, later) == []
    assert close_overdue_rounds(db, later + HOUR) == []
    assert recipients(db, "outcome") == {BOB: 1, ANNA: 1}
    assert event_kinds(db, round_id=round_id).count("round_closed") == 1
    assert event_kinds(db).count("engagement_ended") == 1


def test_group_deadline_silent_members_leave_and_the_group_goes_on(db, group):
    """R5: at the deadline a silent member leaves; coach and one member continue the group."""
    _, round_id = record_session_done(db, group, T0, POLICY)
    decide(db, round_id, "coach", T0 + HOUR, choice="continue")
    decide(db, round_id, ANNA, T0 + HOUR, choice="continue")

    (closed,) = close_overdue_rounds(db, T0 + 8 * DAY)

    assert closed["outcome"] == "continue"
    assert engagement_of(db, group)["status"] == "active"
    assert member_status(db, group, CARL) == "left"
    assert member_status(db, group, ANNA) == "active"
    carl_mail = dict(mails(db, "outcome"))[CARL]
    assert carl_mail["you_left"] is True
    assert link_owner(db, carl_mail["welcome_back_token"]) == CARL


def test_group_deadline_without_the_coach_ends_undecided(db, group):
    """R5: the coach stayed silent: the group ends undecided, even with members continuing."""
    _, round_id = record_session_done(db, group, T0, POLICY)
    decide(db, round_id, ANNA, T0 + HOUR, choice="continue")
    decide(db, round_id, CARL, T0 + HOUR, choice="continue")
    assert round_of(db, round_id)["status"] == "open"

    close_overdue_rounds(db, T0 + 8 * DAY)

    assert engagement_of(db, group)["end_reason"] == "undecided"


# R5: groups


def test_group_member_stop_leaves_while_the_round_stays_open(db, group):
    """R5: Anna's stop makes her 'left'; Carl and the coach decide on and the group continues."""
    _, round_id = record_session_done(db, group, T0, POLICY)

    assert (
        decide(db, round_id, ANNA, T0 + HOUR, choice="stop", reason="on_my_own")["verdict"] is None
    )
    assert member_status(db, group, ANNA) == "left"
    assert member_status(db, group, CARL) == "active"
    assert round_of(db, round_id)["status"] == "open"
    assert "member_left" in event_kinds(db, engagement_id=group)

    decide(db, round_id, CARL, T0 + 2 * HOUR, choice="continue")
    result = decide(db, round_id, "coach", T0 + 3 * HOUR, choice="continue")

    assert result["verdict"].outcome == "continue"
    assert engagement_of(db, group)["status"] == "active"
    assert recipients(db, "outcome") == {BOB: 1, ANNA: 1, CARL: 1}
    outcome = dict(mails(db, "outcome"))
    assert outcome[ANNA]["you_left"] is True
    assert link_owner(db, outcome[ANNA]["welcome_back_token"]) == ANNA
    assert outcome[CARL]["welcome_back_token"] is None


def test_group_coach_stop_ends_the_group(db, group):
    """R5/R8: the coach's stop ends the group at once; every party gets one outcome mail."""
    _, round_id = record_session_done(db, group, T0, POLICY)
    decide(db, round_id, ANNA, T0 + HOUR, choice="continue")

    decide(db, round_id, "coach", T0 + 2 * HOUR, choice="stop", reason="values")

    assert engagement_of(db, group)["end_reason"] == "coach_stopped"
    assert round_of(db, round_id)["status"] == "closed"
    assert recipients(db, "outcome") == {BOB: 1, ANNA: 1, CARL: 1}
    outcome = dict(mails(db, "outcome"))
    assert link_owner(db, outcome[ANNA]["welcome_back_token"]) == ANNA
    assert link_owner(db, outcome[CARL]["welcome_back_token"]) == CARL


def test_group_too_few_members_left_ends_at_once(db, people):
    """R5: with min_members 2, one member's stop ends the group as members_left."""
    team = start_engagement(db, BOB, [ANNA, CARL], T0, min_members=2)
    _, round_id = record_session_done(db, team, T0, POLICY)

    decide(db, round_id, CARL, T0 + HOUR, choice="stop")

    assert round_of(db, round_id)["status"] == "closed"
    assert engagement_of(db, team)["end_reason"] == "members_left"


# R6: idle engagements


def test_idle_engagement_ends_after_idle_days(db, engagement):
    """R6: nothing held or planned 60 days after the start: the engagement ends 'idle'."""
    assert end_idle_engagements(db, T0 + 59 * DAY, POLICY) == []
    assert engagement_of(db, engagement)["status"] == "active"

    ended = end_idle_engagements(db, T0 + 60 * DAY + MINUTE, POLICY)

    assert ended == [{"engagement_id": engagement, "end_reason": "idle"}]
    row = engagement_of(db, engagement)
    assert (row["status"], row["end_reason"]) == ("ended", "idle")
    outcome = dict(mails(db, "outcome"))
    assert recipients(db, "outcome") == {BOB: 1, ANNA: 1}
    assert outcome[ANNA]["end_reason"] == "idle"
    assert link_owner(db, outcome[ANNA]["welcome_back_token"]) == ANNA
    assert outcome[BOB]["welcome_back_token"] is None
    assert "engagement_ended" in event_kinds(db, engagement_id=engagement)


def test_idle_sweep_twice_ends_and_mails_once(db, engagement):
    """R6/R8: a second sweep finds nothing more to end and queues no more mail."""
    end_idle_engagements(db, T0 + 61 * DAY, POLICY)
    assert end_idle_engagements(db, T0 + 61 * DAY + HOUR, POLICY) == []
    assert recipients(db, "outcome") == {BOB: 1, ANNA: 1}


def test_idle_counts_from_the_close_of_the_last_round(db, engagement):
    """R6: 60 days are counted from the last round's close, not from the start."""
    _, round_id = record_session_done(db, engagement, T0 + 9 * DAY, POLICY)
    decide(db, round_id, ANNA, T0 + 10 * DAY - HOUR, choice="continue")
    decide(db, round_id, "coach", T0 + 10 * DAY - HOUR, choice="continue")

    assert end_idle_engagements(db, T0 + 65 * DAY, POLICY) == []
    assert [e["engagement_id"] for e in end_idle_engagements(db, T0 + 71 * DAY, POLICY)] == [
        engagement
    ]


def test_no_idle_end_with_a_planned_session(db, engagement):
    """R6: a planned session keeps the engagement alive, however far away it is."""
    plan_session(db, engagement, T0 + 90 * DAY, 60, T0 + 30 * DAY)
    assert end_idle_engagements(db, T0 + 61 * DAY, POLICY) == []
    assert engagement_of(db, engagement)["status"] == "active"


def test_no_idle_end_with_an_open_round(db, engagement):
    """R6: a round waiting for decisions is not neglect."""
    record_session_done(db, engagement, T0 + 59 * DAY, POLICY)
    assert end_idle_engagements(db, T0 + 61 * DAY, POLICY) == []
    assert engagement_of(db, engagement)["status"] == "active"


def test_no_idle_end_soon_after_reopening(db, held):
    """R6: a reopened engagement gets another 60 days from its reopening."""
    engagement, round_id = held
    decide(db, round_id, ANNA, T0 + HOUR, choice="stop")
    reopen_engagement(db, engagement, T0 + 50 * DAY)

    assert end_idle_engagements(db, T0 + 70 * DAY, POLICY) == []
    assert engagement_of(db, engagement)["status"] == "active"
    assert len(end_idle_engagements(db, T0 + 111 * DAY, POLICY)) == 1


# R7: order of sessions and rounds


def test_no_session_on_an_ended_engagement(db, held):
    """R7: planning or recording a session on an ended engagement is a clear Conflict."""
    engagement, round_id = held
    decide(db, round_id, ANNA, T0 + HOUR, choice="stop")
    before = dump(db)

    with pytest.raises(errors.Conflict, match=f"Engagement {engagement} has ended"):
        plan_session(db, engagement, T0 + 7 * DAY, 60, T0 + DAY)
    with pytest.raises(errors.Conflict, match=f"Engagement {engagement} has ended"):
        record_session_done(db, engagement, T0 + DAY, POLICY)

    assert dump(db) == before


def test_no_session_while_a_round_is_open(db, held):
    """R7: while a round waits for decisions, no session can be planned or recorded."""
    engagement, _ = held
    before = dump(db)

    waiting = f"Engagement {engagement} is still waiting for the decisions after session 1"
    with pytest.raises(errors.Conflict, match=waiting):
        plan_session(db, engagement, T0 + 7 * DAY, 60, T0 + HOUR)
    with pytest.raises(errors.Conflict, match=waiting):
        record_session_done(db, engagement, T0 + HOUR, POLICY)

    assert dump(db) == before


def test_only_one_planned_session(db, engagement):
    """R7: a second planned session is refused with a message naming the first."""
    first = plan_session(db, engagement, T0 + DAY, 60, T0)
    before = dump(db)

    with pytest.raises(errors.Conflict, match=f"session {first}") as error:
        plan_session(db, engagement, T0 + 2 * DAY, 60, T0)

    assert f"Engagement {engagement}" in str(error.value)
    assert dump(db) == before


def test_reopen_makes_an_ended_engagement_active(db, held):
    """R7: `engagement reopen` makes it active again, and sessions can be planned again."""
    engagement, round_id = held
    decide(db, round_id, "coach", T0 + HOUR, choice="stop")

    reopen_engagement(db, engagement, T0 + 30 * DAY)

    row = engagement_of(db, engagement)
    assert (row["status"], row["end_reason"], row["ended_at"]) == ("active", None, None)
    assert member_status(db, engagement, ANNA) == "active"
    assert plan_session(db, engagement, T0 + 31 * DAY, 60, T0 + 30 * DAY)
    assert "engagement_reopened" in event_kinds(db, engagement_id=engagement)
    with pytest.raises(errors.Conflict, match="still active"):
        reopen_engagement(db, engagement, T0 + 30 * DAY)


@pytest.mark.parametrize("gone", ["stopped", "forgotten"])
def test_reopening_a_group_leaves_out_whoever_left_it(db, group, gone):
    """R5/R7: reopening a group brings the group back, not the members who left it. Carl
    stopped in the last round (or was forgotten after it ended): he stays `left`, and the
    next round neither makes him a party nor mails him, not even a reminder."""
    (carl,) = db.conn.execute("SELECT id FROM clients WHERE email = ?", [CARL]).fetchone()
    _, first = record_session_done(db, group, T0, POLICY)
    if gone == "stopped":
        decide(db, first, CARL, T0 + HOUR, choice="stop", reason="on_my_own")
    decide(db, first, "coach", T0 + 2 * HOUR, choice="stop", reason="values")
    if gone == "forgotten":
        forget_client(db, CARL, T0 + 3 * HOUR)
    earlier = len(outbox_rows(db))

    reopen_engagement(db, group, T0 + 30 * DAY)
    _, second = record_session_done(db, group, T0 + 31 * DAY, POLICY)
    reminder_at = from_db(round_of(db, second)["reminder_at"])
    assert send_reminders(db, reminder_at) == 2

    status = db.conn.execute(
        "SELECT status FROM members WHERE engagement_id = ? AND client_id = ?", [group, carl]
    ).fetchone()[0]
    assert status == "left"
    assert parties(db, second) == [ANNA, "coach"]
    mailed = Counter((row["kind"], row["to_email"]) for row in outbox_rows(db)[earlier:])
    assert mailed == {
        ("decision", BOB): 1,
        ("decision", ANNA): 1,
        ("reminder", BOB): 1,
        ("reminder", ANNA): 1,
    }


# R8: outcome mails and welcome-back links


@pytest.mark.parametrize(
    ("choices", "end_reason"),
    [
        ({ANNA: "stop"}, "client_stopped"),
        ({"coach": "stop"}, "coach_stopped"),
        ({ANNA: "continue"}, "undecided"),
    ],
)
def test_every_ending_mails_each_party_once(db, held, choices, end_reason):
    """R8: whatever the reason, each party gets one outcome mail; the client a welcome back."""
    engagement, round_id = held
    for who, choice in choices.items():
        decide(db, round_id, who, T0 + HOUR, choice=choice)
    close_overdue_rounds(db, T0 + 8 * DAY)

    assert engagement_of(db, engagement)["end_reason"] == end_reason
    assert recipients(db, "outcome") == {BOB: 1, ANNA: 1}
    outcome = dict(mails(db, "outcome"))
    assert outcome[ANNA]["end_reason"] == end_reason
    assert link_owner(db, outcome[ANNA]["welcome_back_token"]) == ANNA
    assert outcome[BOB]["welcome_back_token"] is None


def test_welcome_back_link_is_valid_for_365_days(db, held):
    """R8: the client's welcome-back link opens for a year after the ending, not longer."""
    engagement, round_id = held
    ended_at = T0 + HOUR
    decide(db, round_id, ANNA, ended_at, choice="stop", reason="on_my_own")
    token = dict(mails(db, "outcome"))[ANNA]["welcome_back_token"]
    member_id = db.conn.execute(
        "SELECT id FROM members WHERE engagement_id = ?", [engagement]
    ).fetchone()[0]

    assert tokens.get_member_id(db, token, ended_at + timedelta(days=364)) == member_id
    # It may be used again later: finding it changes nothing.
    assert tokens.get_member_id(db, token, ended_at + timedelta(days=364)) == member_id
    with pytest.raises(errors.NotFound):
        tokens.get_member_id(db, token, ended_at + timedelta(days=366))


# R9: reminders


def test_one_reminder_per_undecided_party_at_reminder_time(db, held):
    """R9: at deadline - 2 days each undecided party gets exactly one reminder; none twice."""
    _, round_id = held
    decide(db, round_id, "coach", T0 + HOUR, choice="continue")
    deadline = from_db(round_of(db, round_id)["deadline_at"])
    reminder_time = deadline - timedelta(days=2)

    assert send_reminders(db, reminder_time - MINUTE) == 0
    assert mails(db, "reminder") == []

    assert send_reminders(db, reminder_time) == 1
    assert recipients(db, "reminder") == {ANNA: 1}
    assert send_reminders(db, reminder_time + HOUR) == 0
    assert send_reminders(db, deadline - MINUTE) == 0
    assert recipients(db, "reminder") == {ANNA: 1}


def test_reminder_links_are_fresh_and_the_old_ones_keep_working(db, held):
    """R9: the reminder carries a new token; the decision mail's token still works."""
    _, round_id = held
    send_reminders(db, T0 + 5 * DAY)
    old = dict(mails(db, "decision"))[ANNA]["decide_token"]
    new = dict(mails(db, "reminder"))[ANNA]["decide_token"]
    anna = decision_id(db, round_id, ANNA)

    assert new != old
    assert tokens.get_decision_id(db, new, T0 + 5 * DAY) == anna
    assert tokens.get_decision_id(db, old, T0 + 5 * DAY) == anna
    assert recipients(db, "reminder") == {BOB: 1, ANNA: 1}


def test_no_reminder_after_the_deadline(db, held):
    """R9: once the deadline has passed, nobody is reminded any more."""
    _, round_id = held
    deadline = from_db(round_of(db, round_id)["deadline_at"])
    assert send_reminders(db, deadline + MINUTE) == 0
    assert mails(db, "reminder") == []


def test_no_reminder_for_a_member_who_left(db, group):
    """R9/R5: a member who stopped and left the group gets no reminder."""
    _, round_id = record_session_done(db, group, T0, POLICY)
    decide(db, round_id, ANNA, T0 + HOUR, choice="stop")
    send_reminders(db, T0 + 5 * DAY)
    assert recipients(db, "reminder") == {BOB: 1, CARL: 1}


# Every state change leaves an event


def test_a_round_from_opening_to_ending_leaves_its_events(db, held):
    """The event log shows the round opening, each decision, the close and the ending."""
    engagement, round_id = held
    decide(db, round_id, "coach", T0 + HOUR, choice="continue")
    decide(db, round_id, ANNA, T0 + 2 * HOUR, choice="stop", reason="on_my_own")

    assert event_kinds(db, round_id=round_id) == [
        "round_opened",
        "decision_recorded",
        "decision_recorded",
        "round_closed",
    ]
    ended = db.conn.execute(
        "SELECT detail FROM events WHERE kind = 'engagement_ended' AND engagement_id = ?",
        [engagement],
    ).fetchone()
    assert json.loads(ended[0])["reason"] == "client_stopped"


def test_the_deadline_sweep_leaves_its_events(db, held):
    """R4: closing an overdue round logs the close and the ending."""
    engagement, round_id = held
    close_overdue_rounds(db, T0 + 8 * DAY)
    assert "round_closed" in event_kinds(db, round_id=round_id)
    assert "engagement_ended" in event_kinds(db, engagement_id=engagement)


def test_a_session_held_by_the_sweep_is_logged_like_session_done(db, engagement):
    """R1: the session's change from planned to held is an event, whichever way it happens."""
    session_id = plan_session(db, engagement, T0 + DAY, 60, T0)
    open_due_rounds(db, T0 + DAY + 2 * HOUR, POLICY)
    logged = [
        json.loads(row[0])["session_id"]
        for row in db.conn.execute("SELECT detail FROM events WHERE kind = 'session_held'")
    ]
    assert logged == [session_id]


# Bad values change nothing


@pytest.mark.parametrize(
    ("who", "choice", "extra"),
    [
        (ANNA, "continue", {"usefulness": 11}),
        (ANNA, "continue", {"usefulness": -1}),
        (ANNA, "stop", {"note": "x" * 2001}),
        (ANNA, "stop", {"reason": "bored"}),
        (ANNA, "stop", {"reason": "cannot_help"}),
        ("coach", "stop", {"reason": "on_my_own"}),
        (ANNA, "maybe", {}),
    ],
)
def test_bad_decision_values_are_invalid_and_change_nothing(db, held, who, choice, extra):
    """A usefulness outside 0-10, a note over 2,000 characters or a wrong reason is refused."""
    _, round_id = held
    before = dump(db)

    with pytest.raises(errors.Invalid):
        decide(db, round_id, who, T0 + HOUR, choice=choice, **extra)

    assert dump(db) == before


def test_a_note_of_2000_characters_is_kept(db, held):
    """The limit is 2,000 characters: exactly that many is fine and stored whole."""
    _, round_id = held
    decide(db, round_id, ANNA, T0 + HOUR, choice="continue", note="x" * 2000, usefulness=10)
    row = db.conn.execute(
        "SELECT note, usefulness FROM decisions WHERE id = ?", [decision_id(db, round_id, ANNA)]
    ).fetchone()
    assert (len(row["note"]), row["usefulness"]) == (2000, 10)
