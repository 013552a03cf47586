"""The pure rules: judge_round (R3, R4, R5), check_decision and Policy, on plain values."""

import pytest

from twoyes.rules import NOTE_MAX, Policy, Verdict, check_decision, judge_round

ANNA, CARL, DORA = 1, 2, 3


def individual(coach, client, deadline_passed=False):
    return judge_round("individual", 1, coach, {ANNA: client}, deadline_passed)


def group(coach, members, min_members=1, deadline_passed=False):
    return judge_round("group", min_members, coach, members, deadline_passed)


# judge_round, individual (R3, R4)


@pytest.mark.parametrize("client", [None, "continue", "stop"])
def test_individual_coach_stop_ends_with_coach_stopped(client):
    """R3: the coach's stop closes the round at once, whatever the client chose."""
    assert individual("stop", client) == Verdict("stop", "coach_stopped")


@pytest.mark.parametrize("coach", [None, "continue"])
def test_individual_client_stop_ends_with_client_stopped(coach):
    """R3: the client's stop closes the round at once, whatever the coach chose so far."""
    assert individual(coach, "stop") == Verdict("stop", "client_stopped")


def test_individual_both_continue_goes_on():
    """R3: both chose continue: the round closes with continue and nobody leaves."""
    assert individual("continue", "continue") == Verdict("continue", None, ())


@pytest.mark.parametrize(
    ("coach", "client"), [(None, None), ("continue", None), (None, "continue")]
)
def test_individual_stays_open_while_someone_is_silent(coach, client):
    """R3: one continue is not enough; the round waits for the other party."""
    assert individual(coach, client) is None


@pytest.mark.parametrize(
    ("coach", "client"), [(None, None), ("continue", None), (None, "continue")]
)
def test_individual_silence_at_deadline_is_undecided(coach, client):
    """R4: at the deadline silence counts as stop, even when the other party said continue."""
    assert individual(coach, client, deadline_passed=True) == Verdict("stop", "undecided")


def test_individual_decided_round_keeps_its_outcome_at_deadline():
    """R3/R4: a round both parties decided is judged on their choices, not on the clock."""
    assert individual("continue", "continue", deadline_passed=True) == Verdict("continue")
    assert individual("continue", "stop", deadline_passed=True) == Verdict("stop", "client_stopped")


# judge_round, groups (R5)


def test_group_coach_stop_ends_the_group_at_once():
    """R5: the coach's stop ends the group, even with every member continuing."""
    verdict = group("stop", {ANNA: "continue", CARL: "continue"})
    assert verdict == Verdict("stop", "coach_stopped")


def test_group_coach_stop_at_deadline_is_still_coach_stopped():
    """R5: the coach's stop wins over the deadline."""
    verdict = group("stop", {ANNA: None, CARL: "continue"}, deadline_passed=True)
    assert verdict.end_reason == "coach_stopped"


def test_group_member_stop_leaves_the_round_open_for_the_others():
    """R5: one member stops, the others carry on deciding."""
    assert group(None, {ANNA: "stop", CARL: None}) is None
    assert group("continue", {ANNA: "stop", CARL: None}) is None


def test_group_everyone_decided_with_enough_members_continues():
    """R5: coach continue and at least min_members members continue: the group goes on."""
    verdict = group("continue", {ANNA: "stop", CARL: "continue", DORA: "continue"}, 2)
    assert verdict == Verdict("continue", None, ())


def test_group_waits_for_the_coach_when_all_members_decided():
    """R5: the round closes when every party decided; the coach is a party too."""
    assert group(None, {ANNA: "continue", CARL: "continue"}) is None


def test_group_waits_for_silent_members():
    """R5: coach and one member continue, one member silent: still open before the deadline."""
    assert group("continue", {ANNA: "continue", CARL: None}) is None


def test_group_too_few_members_left_closes_early_with_members_left():
    """R5: when stops make min_members unreachable, the round closes before the deadline."""
    verdict = group(None, {ANNA: "stop", CARL: None}, min_members=2)
    assert verdict == Verdict("stop", "members_left")


def test_group_every_member_stopped_is_members_left():
    """R5: all members stopped and the coach continued: the group ends, members_left."""
    verdict = group("continue", {ANNA: "stop", CARL: "stop"})
    assert verdict == Verdict("stop", "members_left")


def test_group_deadline_silent_members_leave_and_the_group_goes_on():
    """R5: at the deadline silent members leave; coach and enough members continue."""
    verdict = group("continue", {ANNA: "continue", CARL: None, DORA: None}, deadline_passed=True)
    assert verdict == Verdict("continue", None, (CARL, DORA))


def test_group_deadline_without_the_coach_is_undecided():
    """R5: a silent coach at the deadline ends the group as undecided; silent members leave."""
    verdict = group(None, {ANNA: "continue", CARL: None}, deadline_passed=True)
    assert verdict == Verdict("stop", "undecided", (CARL,))


def test_group_deadline_too_few_continuing_is_members_left():
    """R5: silence never counts as continue: too few yeses at the deadline ends the group."""
    verdict = group("continue", {ANNA: None, CARL: None}, deadline_passed=True)
    assert verdict == Verdict("stop", "members_left", (ANNA, CARL))


def test_group_deadline_respects_min_members():
    """R5: one yes is too few for min_members 2, even at the deadline."""
    verdict = group("continue", {ANNA: "continue", CARL: None}, 2, deadline_passed=True)
    assert verdict == Verdict("stop", "members_left", (CARL,))


# check_decision


@pytest.mark.parametrize(
    ("role", "choice", "reason", "usefulness", "note"),
    [
        ("client", "continue", None, None, None),
        ("client", "stop", "on_my_own", 10, "Thanks!"),
        ("client", "stop", "not_useful", 0, None),
        ("client", "stop", "other", None, "x" * NOTE_MAX),
        ("coach", "stop", "cannot_help", 5, None),
        ("coach", "stop", "values", None, None),
        ("coach", "stop", "other", None, None),
        ("coach", "continue", None, 7, "next time: goals"),
    ],
)
def test_check_decision_accepts_good_values(role, choice, reason, usefulness, note):
    """A well-formed decision has no problems."""
    assert check_decision(role, choice, reason, usefulness, note) == []


@pytest.mark.parametrize(
    ("role", "choice", "reason", "usefulness", "note", "words"),
    [
        ("client", "maybe", None, None, None, "Continue or Stop"),
        ("client", None, None, None, None, "Continue or Stop"),
        ("client", "stop", "bored", None, None, "one of the reasons in the list"),
        ("client", "stop", "cannot_help", None, None, "one of the reasons in the list"),
        ("coach", "stop", "on_my_own", None, None, "one of the reasons in the list"),
        ("client", "continue", None, 11, None, "0 to 10"),
        ("client", "continue", None, -1, None, "0 to 10"),
        ("client", "continue", None, None, "x" * (NOTE_MAX + 1), "at most 2,000"),
    ],
)
def test_check_decision_names_each_problem(role, choice, reason, usefulness, note, words):
    """A bad value gets exactly one sentence that says what is wrong."""
    problems = check_decision(role, choice, reason, usefulness, note)
    assert len(problems) == 1
    assert words in problems[0]


def test_check_decision_lists_every_problem_at_once():
    """All bad values are reported together, so the form can show them in one go."""
    problems = check_decision("client", "maybe", "values", 11, "x" * 2001)
    assert len(problems) == 4


# Policy


def test_policy_defaults_are_the_documented_ones():
    """DECISION_DAYS 7, REMINDER_DAYS 2, IDLE_DAYS 60 by default."""
    assert Policy() == Policy(decision_days=7, reminder_days=2, idle_days=60)


@pytest.mark.parametrize(
    ("decision_days", "reminder_days", "idle_days"),
    [(1, 0, 1), (0.5, 0.25, 0.1), (14, 13, 365)],
)
def test_policy_accepts_sensible_limits(decision_days, reminder_days, idle_days):
    """Any positive deadline with a reminder before it is allowed."""
    policy = Policy(decision_days, reminder_days, idle_days)
    assert (policy.decision_days, policy.reminder_days, policy.idle_days) == (
        decision_days,
        reminder_days,
        idle_days,
    )


@pytest.mark.parametrize(
    ("decision_days", "reminder_days", "idle_days"),
    [
        (0, 0, 60),
        (-1, 0, 60),
        (7, -1, 60),
        (7, 2, 0),
        (7, 2, -5),
        (7, 7, 60),
        (7, 8, 60),
    ],
)
def test_policy_refuses_impossible_limits(decision_days, reminder_days, idle_days):
    """A zero or negative limit, or a reminder not before the deadline, is a ValueError."""
    with pytest.raises(ValueError, match="DAYS"):
        Policy(decision_days, reminder_days, idle_days)


@pytest.mark.parametrize(
    "limits",
    [
        {"decision_days": float("nan")},
        {"reminder_days": float("nan")},
        {"idle_days": float("nan")},
        {"decision_days": float("inf")},
        {"idle_days": float("inf")},
    ],
)
def test_policy_refuses_limits_that_are_not_finite_numbers(limits):
    """TWOYES_DECISION_DAYS=NaN or =Infinity (json.loads reads both) is refused at start-up,
    not found out as a traceback when the first round opens or the first idle sweep runs."""
    with pytest.raises(ValueError, match="DAYS"):
        Policy(**limits)
