"""Groups (R5), end to end: a facilitator and several members decide after each session.

Real parts only: a SQLite file, the SMTP server fixture, the Flask app and the command line.
Members decide through the pages the links in their real mails open, with the form's
'served' stamp; the clock moves by passing `now` to domain functions and `--now` to the CLI.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from support import POLICY, T0, deliver, dump, html_of, links_in, open_mail, text_of, token_of

from twoyes.engagements import describe_engagement, end_idle_engagements, start_engagement
from twoyes.members import remove_member
from twoyes.people import add_person
from twoyes.rounds import close_overdue_rounds, record_decision, send_reminders
from twoyes.sessions import record_session_done
from twoyes.tokens import get_decision_id, get_member_id

COACH = ("Fiona Facilitator", "fiona@example.org")
PEOPLE = {
    "anna": ("Anna Aalders", "anna@example.org"),
    "ben": ("Ben Bakker", "ben@example.org"),
    "chloe": ("Chloe Claes", "chloe@example.org"),
    "daan": ("Daan Dekker", "daan@example.org"),
    "eva": ("Eva Evers", "eva@example.org"),
    "femke": ("Femke Fokkens", "femke@example.org"),
    "gijs": ("Gijs Groen", "gijs@example.org"),
}
ASK = "Another session?"
REMINDER = "A reminder: another session?"
GOES_ON = "We continue"
GOODBYE = "Thank you, and welcome back any time"
WELCOME = "Welcome: every session can be the last"


def address(who: str) -> str:
    return COACH[1] if who == "coach" else PEOPLE[who][1]


def name(who: str) -> str:
    return COACH[0] if who == "coach" else PEOPLE[who][0]


@pytest.fixture
def crew(db):
    """Fiona the facilitator and seven clients, none of them in an engagement yet."""
    add_person(db, "coach", *COACH, "en", T0)
    for person_name, person_address in PEOPLE.values():
        add_person(db, "client", person_name, person_address, "en", T0)


def start_group(db, *who: str, min_members: int = 1, title: str = "Team days") -> int:
    return start_engagement(
        db, COACH[1], [address(w) for w in who], T0, title=title, min_members=min_members
    )


def send(app, db, now: datetime | None = None):
    """Deliver what is due; never earlier than the real clock, which the web app reads."""
    moment = max(now or T0, datetime.now(UTC)) + timedelta(minutes=1)
    return deliver(app, db, moment)


def mails(smtp, who: str, subject: str | None = None, since: int = 0) -> list:
    found = [m for m in smtp.messages[since:] if address(who) in m["To"]]
    return [m for m in found if subject is None or m["Subject"] == subject]


def only_mail(smtp, who: str, subject: str | None = None, since: int = 0):
    found = mails(smtp, who, subject, since)
    assert len(found) == 1, f"{who} got {[m['Subject'] for m in found]}, expected one {subject!r}"
    return found[0]


def token_in(message) -> str:
    return token_of(next(link for link in links_in(message) if "/d/" in link))


def welcome_back_link(message) -> str | None:
    return next((link for link in links_in(message) if "/b/" in link), None)


# The last 'served' stamp each token's page handed out: a page with no form (a stop is
# final, the round closed) has none, yet a person may still send the form they opened before.
STAMPS: dict[str, str] = {}
SERVED = re.compile(r'name="served" value="([^"]+)"')


def stamp_of(page, token: str) -> str:
    STAMPS[token] = SERVED.search(page.get_data(as_text=True)).group(1)
    return STAMPS[token]


def decide_by_mail(client, message, choice: str, **fields) -> str:
    """Open the mail's Continue or Stop link, press the button; the page that follows."""
    link = next(link for link in links_in(message) if link.endswith(f"/{choice}"))
    page = client.get(urlsplit(link).path)
    assert page.status_code == 200
    token = token_of(link)
    answer = client.post(
        f"/d/{token}", data={"choice": choice, "served": stamp_of(page, token), **fields}
    )
    assert answer.status_code == 303, answer.get_data(as_text=True)
    shown = client.get(f"/d/{token}")
    assert shown.status_code == 200
    return shown.get_data(as_text=True)


def page_of(client, message) -> str:
    token = token_in(message)
    response = client.get(f"/d/{token}")
    assert response.status_code == 200
    if 'name="served"' in response.get_data(as_text=True):
        stamp_of(response, token)
    return response.get_data(as_text=True)


def post_again(client, message, choice: str = "continue"):
    """A person's POST through the mail's token, with the stamp of a page opened earlier."""
    token = token_in(message)
    page = client.get(f"/d/{token}")
    if 'name="served"' in page.get_data(as_text=True):
        stamp_of(page, token)
    return client.post(f"/d/{token}", data={"choice": choice, "served": STAMPS[token]})


def open_pages(client, smtp, since: int = 0) -> None:
    """Everyone opens the page of each decision mail once (GET changes nothing)."""
    for message in smtp.messages[since:]:
        if message["Subject"] in (ASK, REMINDER):
            page_of(client, message)


def statuses(db, engagement_id: int) -> dict[str, str]:
    shown = describe_engagement(db, engagement_id)
    return {member["email"]: member["status"] for member in shown["members"]}


def plain(text: str) -> str:
    return " ".join(text.split())


def open_round_and_mail(app, db, client, smtp, engagement_id: int, now=T0) -> int:
    """Hold a session at `now`, open its round, deliver the decision mails; all look once."""
    mark = len(smtp.messages)
    _, round_id = record_session_done(db, engagement_id, now, POLICY)
    send(app, db, now)
    open_pages(client, smtp, mark)
    return round_id


# engagement start: groups and their bad input


def test_start_with_several_clients_makes_a_group(app, db, client, smtp, run, crew):
    result = run(
        "engagement", "start", "--coach", COACH[1],
        "--client", address("anna"), "--client", address("ben"), "--client", address("chloe"),
        "--title", "Team days", "--min-members", "2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    engagement_id = json.loads(result.stdout)["id"]

    shown = json.loads(run("engagement", "show", engagement_id, "--json").stdout)
    assert shown["kind"] == "group"
    assert shown["status"] == "active"
    assert shown["coach"] == {"name": COACH[0], "email": COACH[1]}
    assert shown["members"] == [
        {"name": name(who), "email": address(who), "status": "active"}
        for who in ("anna", "ben", "chloe")
    ]

    # --min-members 2 holds: with Anna and Ben gone, Chloe alone cannot carry the group.
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "stop")
    assert describe_engagement(db, engagement_id)["status"] == "active"
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "stop")
    shown = json.loads(run("engagement", "show", engagement_id, "--json").stdout)
    assert (shown["status"], shown["end_reason"]) == ("ended", "members_left")


def test_start_group_without_min_members_goes_on_with_one(app, db, client, smtp, run, crew):
    result = run(
        "engagement", "start", "--coach", COACH[1],
        "--client", address("anna"), "--client", address("ben"), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    engagement_id = json.loads(result.stdout)["id"]
    assert describe_engagement(db, engagement_id)["kind"] == "group"
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "stop")
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["sessions"][0]["round"]["outcome"]) == ("active", "continue")


@pytest.mark.parametrize(
    ("clients", "min_members", "message"),
    [
        (["anna", "ben"], "3", "--min-members must be between 1 and the number of clients (2)"),
        (["anna"], "2", "--min-members must be between 1 and the number of clients (1)"),
        (["anna", "ben", "anna"], "1", "The same client is named twice"),
        (["anna", "ANNA@example.org"], "1", "The same client is named twice"),
        (["anna", "nobody@example.org"], "1", "There is no client with the address"),
        (["anna", "not-an-address"], "1", "is not a valid e-mail address"),
    ],
)
def test_start_group_refuses_bad_input_and_creates_nothing(
    run, db, crew, clients, min_members, message
):
    before = dump(db)
    options = []
    for who in clients:
        options += ["--client", address(who) if who in PEOPLE else who]
    result = run("engagement", "start", "--coach", COACH[1], *options, "--min-members", min_members)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert dump(db) == before
    assert run("engagement", "list", "--json").stdout.strip() == "[]"


def test_start_group_refuses_min_members_zero_as_a_malformed_command(run, db, crew):
    before = dump(db)
    result = run(
        "engagement", "start", "--coach", COACH[1],
        "--client", address("anna"), "--client", address("ben"), "--min-members", "0",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--min-members" in result.stderr
    assert dump(db) == before


# R5, one branch at a time


def test_a_member_stops_and_the_rest_go_on(app, db, client, smtp, crew):
    engagement_id = start_group(db, "anna", "ben", "chloe")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    for who in ("coach", "anna", "ben", "chloe"):
        assert only_mail(smtp, who, ASK)

    page = decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    assert "1 of 3 members has decided" in page
    page = decide_by_mail(
        client,
        only_mail(smtp, "ben", ASK),
        "stop",
        reason="on_my_own",
        usefulness="9",
        note="I have what I need, thank you.",
    )
    assert "Recorded: you have what you need for now." in page
    assert "2 of 3 members have decided" in page
    assert "<form" not in page  # a stop is final

    # Ben has left at once; the others carry on and the round waits for them.
    assert statuses(db, engagement_id) == {
        address("anna"): "active",
        address("ben"): "left",
        address("chloe"): "active",
    }
    shown = describe_engagement(db, engagement_id)
    assert shown["status"] == "active"
    assert shown["sessions"][0]["round"]["status"] == "open"
    assert post_again(client, only_mail(smtp, "ben", ASK)).status_code == 409

    decide_by_mail(client, only_mail(smtp, "chloe", ASK), "continue")
    assert describe_engagement(db, engagement_id)["sessions"][0]["round"]["status"] == "open"
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")

    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["end_reason"]) == ("active", None)
    assert shown["sessions"][0]["round"]["status"] == "closed"
    assert shown["sessions"][0]["round"]["outcome"] == "continue"

    smtp.clear()
    send(app, db)
    for who in ("anna", "chloe"):
        message = only_mail(smtp, who)
        assert message["Subject"] == GOES_ON
        body = plain(text_of(message))
        assert "The group goes on." in body and "members chose" not in body
        assert welcome_back_link(message) is None

    goodbye = only_mail(smtp, "ben")
    body = plain(text_of(goodbye))
    assert "You chose to stop. Thank you for letting us know" in body
    assert "The group goes on without you" in body
    assert "welcome back any time" in body
    back = welcome_back_link(goodbye)
    assert back is not None
    page = client.get(urlsplit(back).path)
    assert page.status_code == 200
    assert "Welcome back, Ben" in page.get_data(as_text=True)

    coach = plain(text_of(only_mail(smtp, "coach")))
    assert "Team days goes on: you and the group chose to continue" in coach
    assert "welcome back" not in coach.lower(), "a coach is not welcomed back"
    assert "2 of 3 members continue" in coach
    assert "Anna Aalders: continue" in coach
    assert "Chloe Claes: continue" in coach
    assert "Ben Bakker: stop, usefulness 9/10" in coach
    assert "i can go on by myself for now" in coach.lower()
    assert '"I have what I need, thank you."' in coach


def test_a_member_who_left_gets_a_goodbye_subject_not_we_continue(app, db, client, smtp, crew):
    """The subject is what a member sees first: 'We continue' is not true for who left."""
    engagement_id = start_group(db, "anna", "ben")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "stop", reason="on_my_own")
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    smtp.clear()
    send(app, db)
    assert only_mail(smtp, "anna")["Subject"] == GOES_ON
    subject = only_mail(smtp, "ben")["Subject"]
    assert subject != GOES_ON
    assert "welcome back" in subject.lower()


def test_reason_labels_keep_their_capital_i_in_the_coach_mail_and_page(app, db, client, smtp, crew):
    """'I can go on by myself for now' is the client's own sentence; 'i can go...' is a typo."""
    engagement_id = start_group(db, "anna", "ben")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "stop", reason="on_my_own")
    coach_page = page_of(client, only_mail(smtp, "coach", ASK))
    assert "I can go on by myself for now" in coach_page
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    smtp.clear()
    send(app, db)
    coach = only_mail(smtp, "coach")
    assert "I can go on by myself for now" in text_of(coach)
    assert "I can go on by myself for now" in html_of(coach)


def test_the_page_of_a_member_who_left_does_not_promise_a_next_session(app, db, client, smtp, crew):
    """After the round closes, Ben's old link shows the outcome for him: he left."""
    engagement_id = start_group(db, "anna", "ben")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "stop")
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")

    anna = plain(page_of(client, only_mail(smtp, "anna", ASK)))
    # Not "1 of 2 members chose to continue": that would tell Anna what Ben chose.
    assert "The group goes on." in anna
    assert "1 of 2" not in anna and "members chose" not in anna
    ben = plain(page_of(client, only_mail(smtp, "ben", ASK)))
    assert "This round is closed" in ben
    assert "will be in touch to plan it" not in ben
    assert "there will be another session" not in ben
    assert "welcome back" in ben.lower()


def test_the_facilitator_stops_and_the_group_ends_at_once(app, db, client, smtp, crew):
    engagement_id = start_group(db, "anna", "ben", "chloe")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue", usefulness="7")
    decide_by_mail(
        client,
        only_mail(smtp, "coach", ASK),
        "stop",
        reason="cannot_help",
        note="Better with a specialist.",
    )

    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["end_reason"]) == ("ended", "coach_stopped")
    round_ = shown["sessions"][0]["round"]
    assert (round_["status"], round_["outcome"]) == ("closed", "stop")
    # Ben and Chloe had not answered yet; their answer is not needed any more.
    for who in ("ben", "chloe"):
        assert post_again(client, only_mail(smtp, who, ASK)).status_code == 409
        page = plain(page_of(client, only_mail(smtp, who, ASK)))
        assert "This round is closed" in page
        assert 'name="choice"' not in page  # no deciding; only the welcome-back button
        assert "Ask for a new session" in page

    smtp.clear()
    send(app, db)
    for who in ("anna", "ben", "chloe"):
        message = only_mail(smtp, who)
        assert message["Subject"] == GOODBYE
        body = plain(text_of(message))
        assert "Fiona Facilitator decided that another session is not the most useful" in body
        assert "not about you" in body
        assert client.get(urlsplit(welcome_back_link(message)).path).status_code == 200
    coach = plain(text_of(only_mail(smtp, "coach")))
    assert "You chose to stop." in coach
    assert "Anna Aalders: continue, usefulness 7/10" in coach
    assert "Ben Bakker: no answer" in coach
    assert "Chloe Claes: no answer" in coach


def test_silent_members_leave_at_the_deadline_and_the_group_goes_on(
    app, db, client, smtp, run, crew
):
    engagement_id = start_group(db, "anna", "ben", "chloe", "daan")
    round_id = open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")

    # R9: one reminder, to each silent member only, with fresh links.
    mark = len(smtp.messages)
    assert send_reminders(db, T0 + timedelta(days=5, minutes=1)) == 2
    assert send_reminders(db, T0 + timedelta(days=5, minutes=2)) == 0
    send(app, db, T0 + timedelta(days=5, minutes=2))
    open_pages(client, smtp, mark)
    assert {m["To"] for m in smtp.messages[mark:]} == {
        f"{name('chloe')} <{address('chloe')}>",
        f"{name('daan')} <{address('daan')}>",
    }
    reminder = only_mail(smtp, "chloe", REMINDER)
    assert token_in(reminder) != token_in(only_mail(smtp, "chloe", ASK))
    assert "2 of 4 members have decided" in page_of(client, reminder)
    assert "2 of 4 members have decided" in page_of(client, only_mail(smtp, "chloe", ASK))

    mark = len(smtp.messages)
    result = run("close-undecided", "--now", (T0 + timedelta(days=7, minutes=1)).isoformat())
    assert result.exit_code == 0, result.stderr
    assert f"Closed round {round_id}: engagement {engagement_id} continues" in result.stdout
    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["end_reason"]) == ("active", None)
    assert shown["sessions"][0]["round"]["outcome"] == "continue"
    assert statuses(db, engagement_id) == {
        address("anna"): "active",
        address("ben"): "active",
        address("chloe"): "left",
        address("daan"): "left",
    }

    send(app, db, T0 + timedelta(days=7, minutes=2))
    for who in ("chloe", "daan"):
        message = only_mail(smtp, who, since=mark)
        body = plain(text_of(message))
        assert "We did not hear from you by the deadline" in body
        assert "The group goes on without you" in body
        assert welcome_back_link(message) is not None
        # Their links still open, read-only: the round is closed, an answer is refused.
        assert post_again(client, only_mail(smtp, who, ASK)).status_code == 409
        assert post_again(client, only_mail(smtp, who, REMINDER)).status_code == 409
    for who in ("anna", "ben"):
        body = plain(text_of(only_mail(smtp, who, since=mark)))
        assert "The group goes on." in body and "of 4 members" not in body
    coach = plain(text_of(only_mail(smtp, "coach", since=mark)))
    assert "2 of 4 members continue" in coach
    assert "Chloe Claes: no answer" in coach
    assert "Daan Dekker: no answer" in coach


def test_between_the_deadline_and_cron_a_continuing_members_page_tells_the_truth(
    app, db, client, smtp, crew
):
    """R4 for groups: past the deadline Chloe, silent, is out; the group itself goes on.

    The round was opened eight days ago; Anna and the facilitator said continue in time,
    and cron has not come by yet. Their pages must not announce the end of the group.
    """
    engagement_id = start_group(db, "anna", "ben", "chloe")
    opened = datetime.now(UTC) - timedelta(days=8)
    record_session_done(db, engagement_id, opened, POLICY)
    send(app, db)
    for who in ("coach", "anna", "ben"):
        token = token_in(only_mail(smtp, who, ASK))
        record_decision(
            db, get_decision_id(db, token, opened), opened + timedelta(days=1), choice="continue"
        )

    # Chloe, silent, finds no form any more: her answer would come too late (R4).
    assert "<form" not in page_of(client, only_mail(smtp, "chloe", ASK))
    for who in ("anna", "coach"):
        page = plain(page_of(client, only_mail(smtp, who, ASK)))
        assert "closes without a next session" not in page, f"{who}'s page"

    closed = close_overdue_rounds(db, datetime.now(UTC))
    assert [(c["outcome"], c["end_reason"]) for c in closed] == [("continue", None)]
    assert statuses(db, engagement_id)[address("chloe")] == "left"
    anna = plain(page_of(client, only_mail(smtp, "anna", ASK)))
    assert "The group goes on." in anna and "members chose" not in anna


def test_a_silent_facilitator_at_the_deadline_ends_the_group_undecided(app, db, client, smtp, crew):
    engagement_id = start_group(db, "anna", "ben")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "continue")
    # Every member said continue; still nothing goes on without the facilitator's yes.
    assert describe_engagement(db, engagement_id)["sessions"][0]["round"]["status"] == "open"
    assert close_overdue_rounds(db, T0 + timedelta(days=7) - timedelta(minutes=1)) == []

    mark = len(smtp.messages)
    closed = close_overdue_rounds(db, T0 + timedelta(days=7, minutes=1))
    assert [(c["outcome"], c["end_reason"]) for c in closed] == [("stop", "undecided")]
    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["end_reason"]) == ("ended", "undecided")
    send(app, db, T0 + timedelta(days=7, minutes=2))
    for who in ("anna", "ben"):
        message = only_mail(smtp, who, since=mark)
        # Whose answer did not come, and that they may ask for a new session; no member named.
        said = plain(text_of(message))
        assert "You chose to continue, but the answer of Fiona Facilitator did not come" in said
        assert "you can ask for a new session with the link below" in said
        other = name("ben" if who == "anna" else "anna")
        assert other.split()[0] not in said
        assert welcome_back_link(message) is not None
        page = plain(page_of(client, only_mail(smtp, who, ASK)))
        assert "the answer of Fiona Facilitator did not come before the deadline" in page
    assert "Not everyone answered by the deadline" in text_of(only_mail(smtp, "coach", since=mark))


def test_fewer_than_min_members_can_continue_ends_the_group_at_once(app, db, client, smtp, crew):
    engagement_id = start_group(db, "anna", "ben", "chloe", "daan", min_members=3)
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "stop", reason="not_useful")
    # Anna continues, Chloe and Daan may still: three can still continue.
    assert describe_engagement(db, engagement_id)["status"] == "active"
    decide_by_mail(client, only_mail(smtp, "chloe", ASK), "stop")

    # Now at most two can continue, fewer than three: it ends without waiting for the rest.
    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["end_reason"]) == ("ended", "members_left")
    assert shown["sessions"][0]["round"]["outcome"] == "stop"
    assert post_again(client, only_mail(smtp, "daan", ASK)).status_code == 409
    assert post_again(client, only_mail(smtp, "coach", ASK)).status_code == 409

    smtp.clear()
    send(app, db)
    for who in ("anna", "ben", "chloe", "daan"):
        message = only_mail(smtp, who)
        assert message["Subject"] == GOODBYE
        assert "Too few members chose to continue" in text_of(message)
        assert welcome_back_link(message) is not None
    coach = plain(text_of(only_mail(smtp, "coach")))
    assert "Too few members chose to continue, so the group has ended." in coach
    assert "Ben Bakker: stop" in coach
    assert "Daan Dekker: no answer" in coach


def test_fewer_than_min_members_continue_by_the_deadline_ends_with_members_left(
    app, db, client, smtp, crew
):
    engagement_id = start_group(db, "anna", "ben", "chloe", min_members=2)
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    closed = close_overdue_rounds(db, T0 + timedelta(days=7, minutes=1))
    assert [(c["outcome"], c["end_reason"]) for c in closed] == [("stop", "members_left")]
    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["end_reason"]) == ("ended", "members_left")


def test_everyone_continues_and_the_round_closes_at_once(app, db, client, smtp, crew):
    engagement_id = start_group(db, "anna", "ben", "chloe")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    for who in ("coach", "anna", "ben"):
        decide_by_mail(client, only_mail(smtp, who, ASK), "continue")
    assert describe_engagement(db, engagement_id)["sessions"][0]["round"]["status"] == "open"
    page = plain(decide_by_mail(client, only_mail(smtp, "chloe", ASK), "continue"))

    # No deadline needed: the last answer closed it.
    assert "This round is closed" in page
    assert "The group goes on." in page and "members chose" not in page
    round_ = describe_engagement(db, engagement_id)["sessions"][0]["round"]
    assert (round_["status"], round_["outcome"]) == ("closed", "continue")
    assert [d["choice"] for d in round_["decisions"]] == ["continue"] * 4

    smtp.clear()
    send(app, db)
    assert len(smtp.messages) == 4
    for who in ("anna", "ben", "chloe"):
        message = only_mail(smtp, who)
        assert message["Subject"] == GOES_ON
        assert "The group goes on." in plain(text_of(message))
        assert "members chose" not in plain(text_of(message))
    assert "3 of 3 members continue" in plain(text_of(only_mail(smtp, "coach")))


def test_a_member_of_a_group_of_two_never_reads_what_or_whether_the_other_chose(
    app, db, client, smtp, crew
):
    """Issue 16: "1 of 2 members chose to continue" told Anna what Ben chose. A member reads
    how many decided, never what; in a group of two not even that. The coach sees all."""
    engagement_id = start_group(db, "anna", "ben")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "stop")
    anna = plain(page_of(client, only_mail(smtp, "anna", ASK)))
    assert "So far" in anna and "decided" not in anna and "1 of 2" not in anna
    coach_page = plain(page_of(client, only_mail(smtp, "coach", ASK)))
    assert f"{name('ben')}: stop" in coach_page

    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    closed_page = plain(page_of(client, only_mail(smtp, "anna", ASK)))
    coach_page = plain(page_of(client, only_mail(smtp, "coach", ASK)))
    assert "The group goes on: 1 of 2 members chose to continue." in coach_page
    smtp.clear()
    send(app, db)
    for told in (closed_page, plain(text_of(only_mail(smtp, "anna")))):
        assert "The group goes on." in told
        assert "1 of 2" not in told and "members chose" not in told and "decided" not in told
    assert "1 of 2 members continue" in plain(text_of(only_mail(smtp, "coach")))


def test_a_member_who_joins_mid_way_is_a_party_from_the_next_round(
    app, db, client, smtp, run, crew
):
    engagement_id = start_group(db, "anna", "ben")
    open_round_and_mail(app, db, client, smtp, engagement_id)

    result = run("engagement", "add-member", engagement_id, address("gijs"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == (
        f"{address('gijs')} joined engagement {engagement_id}; they decide from the next round on."
    )
    assert statuses(db, engagement_id)[address("gijs")] == "active"
    # Not a party of the open round: no mail, not on the coach's page, and it closes without him.
    coach_page = plain(page_of(client, only_mail(smtp, "coach", ASK)))
    assert f"{name('anna')}: not decided yet" in coach_page
    assert name("gijs") not in coach_page
    send(app, db)
    # His welcome, and nothing of the open round.
    assert [m["Subject"] for m in mails(smtp, "gijs")] == [WELCOME]
    for who in ("anna", "ben", "coach"):
        decide_by_mail(client, only_mail(smtp, who, ASK), "continue")
    round_ = describe_engagement(db, engagement_id)["sessions"][0]["round"]
    assert round_["outcome"] == "continue"
    assert [d["party"] for d in round_["decisions"]] == ["coach", address("anna"), address("ben")]
    send(app, db)
    assert [m["Subject"] for m in mails(smtp, "gijs")] == [WELCOME]

    smtp.clear()
    open_round_and_mail(app, db, client, smtp, engagement_id, now=T0 + timedelta(days=7))
    assert only_mail(smtp, "gijs", ASK)
    assert "0 of 3 members have decided" in page_of(client, only_mail(smtp, "gijs", ASK))
    round_ = describe_engagement(db, engagement_id)["sessions"][1]["round"]
    assert [d["party"] for d in round_["decisions"]] == [
        "coach",
        address("anna"),
        address("ben"),
        address("gijs"),
    ]


def test_a_member_who_left_comes_back_through_welcome_back_and_add_member(
    app, db, client, smtp, run, crew
):
    engagement_id = start_group(db, "anna", "ben")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "stop", reason="on_my_own")
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue")
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    send(app, db)

    # Ben asks to come back; Fiona hears of it and adds him again.
    back = urlsplit(welcome_back_link(mails(smtp, "ben")[-1])).path
    page = client.get(back)
    token = back.rsplit("/", 1)[1]
    answer = client.post(back, data={"served": stamp_of(page, token), "message": "Room for me?"})
    assert answer.status_code == 303
    mark = len(smtp.messages)
    send(app, db)
    assert "Ben Bakker would like a new session" in only_mail(smtp, "coach", since=mark)["Subject"]
    assert statuses(db, engagement_id)[address("ben")] == "left"

    assert run("engagement", "add-member", engagement_id, address("ben")).exit_code == 0
    assert statuses(db, engagement_id)[address("ben")] == "active"
    mark = len(smtp.messages)
    open_round_and_mail(app, db, client, smtp, engagement_id, now=T0 + timedelta(days=7))
    assert only_mail(smtp, "ben", ASK, since=mark)
    coach_page = plain(page_of(client, only_mail(smtp, "coach", ASK, since=mark)))
    assert f"{name('ben')}: not decided yet" in coach_page


def test_add_member_prints_json(run, db, crew):
    engagement_id = start_group(db, "anna", "ben")
    result = run("engagement", "add-member", engagement_id, address("gijs"), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["engagement_id"] == engagement_id
    assert data["email"] == address("gijs")


def test_a_removed_members_link_answers_404(app, db, client, smtp, run, crew):
    engagement_id = start_group(db, "anna", "ben", "chloe")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    ask = only_mail(smtp, "ben", ASK)
    token = token_in(ask)
    page = client.get(f"/d/{token}")
    assert page.status_code == 200
    stamp = stamp_of(page, token)

    result = run(
        "engagement", "remove-member", engagement_id, address("ben"),
        "--now", (T0 + timedelta(hours=1)).isoformat(),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"{address('ben')} left engagement {engagement_id}."

    for path in (f"/d/{token}", f"/d/{token}/continue", f"/d/{token}/stop"):
        response = client.get(path)
        assert response.status_code == 404
        assert "Ben" not in response.get_data(as_text=True)
    answer = client.post(f"/d/{token}", data={"choice": "continue", "served": stamp})
    assert answer.status_code == 404

    assert statuses(db, engagement_id)[address("ben")] == "left"
    round_ = describe_engagement(db, engagement_id)["sessions"][0]["round"]
    assert address("ben") not in [d["party"] for d in round_["decisions"]]
    assert name("ben") not in plain(page_of(client, only_mail(smtp, "coach", ASK)))

    # No reminder for Ben; the others' round goes on without him.
    mark = len(smtp.messages)
    send_reminders(db, T0 + timedelta(days=5, minutes=1))
    send(app, db, T0 + timedelta(days=5, minutes=2))
    assert mails(smtp, "ben", since=mark) == []
    assert only_mail(smtp, "anna", REMINDER, since=mark)


def test_removing_the_last_undecided_member_closes_the_round(app, db, client, smtp, run, crew):
    engagement_id = start_group(db, "anna", "ben", "chloe")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    for who in ("coach", "anna", "chloe"):
        decide_by_mail(client, only_mail(smtp, who, ASK), "continue")

    result = run("engagement", "remove-member", engagement_id, address("ben"), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["engagement_id"] == engagement_id
    assert data["email"] == address("ben")
    assert (data["round_closed"], data["outcome"]) == (True, "continue")
    round_ = describe_engagement(db, engagement_id)["sessions"][0]["round"]
    assert (round_["status"], round_["outcome"]) == ("closed", "continue")
    smtp.clear()
    send(app, db)
    assert mails(smtp, "ben") == []
    anna = plain(text_of(only_mail(smtp, "anna")))
    assert "The group goes on." in anna and "members chose" not in anna


def test_remove_member_says_so_when_too_few_are_left(app, db, client, smtp, run, crew):
    """Removing a member can end the group (members_left); the output must not hide that."""
    engagement_id = start_group(db, "anna", "ben", "chloe", min_members=3)
    open_round_and_mail(app, db, client, smtp, engagement_id)
    result = run("engagement", "remove-member", engagement_id, address("ben"))
    assert result.exit_code == 0, result.stderr
    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["end_reason"]) == ("ended", "members_left")
    assert "the group ended (too few group members continued)" in result.stdout
    assert "everyone had decided" not in result.stdout


def test_a_member_removed_before_the_mails_go_out_gets_no_dead_links(app, db, client, smtp, crew):
    """`session done`, then `remove-member` before the next send: Ben must not be asked."""
    engagement_id = start_group(db, "anna", "ben", "chloe")
    record_session_done(db, engagement_id, T0, POLICY)
    remove_member(db, engagement_id, address("ben"), T0 + timedelta(minutes=1))
    send(app, db)
    assert only_mail(smtp, "anna", ASK)
    for message in mails(smtp, "ben"):
        for link in links_in(message):
            assert client.get(urlsplit(link).path).status_code == 200, (
                f"{message['Subject']!r} to Ben carries a link that does not open: {link}"
            )


# engagement add-member / remove-member: bad input


@pytest.fixture
def groups(db, crew):
    """A group (Anna, Ben; Chloe left), an individual engagement, and an ended group."""
    group_id = start_group(db, "anna", "ben", "chloe")
    remove_member(db, group_id, address("chloe"), T0)
    individual_id = start_engagement(db, COACH[1], [address("daan")], T0)
    ended_id = start_group(db, "eva", "femke")
    record_session_done(db, ended_id, T0, POLICY)
    close_overdue_rounds(db, T0 + timedelta(days=8))
    assert describe_engagement(db, ended_id)["status"] == "ended"
    return {"group": group_id, "individual": individual_id, "ended": ended_id, "unknown": 999}


@pytest.mark.parametrize(
    ("command", "engagement", "who", "message"),
    [
        ("add-member", "unknown", "gijs", "There is no engagement 999"),
        ("add-member", "individual", "gijs", "is an individual engagement"),
        ("add-member", "group", "nobody@example.org", "There is no client with the address"),
        ("add-member", "group", "not-an-address", "is not a valid e-mail address"),
        ("add-member", "group", "anna", "is already a member of engagement"),
        ("add-member", "ended", "gijs", "has ended (undecided)"),
        ("remove-member", "unknown", "anna", "There is no engagement 999"),
        ("remove-member", "individual", "daan", "is an individual engagement"),
        ("remove-member", "group", "gijs", "is not a member of engagement"),
        ("remove-member", "group", "chloe", "has left engagement"),
        ("remove-member", "group", "nobody@example.org", "There is no client with the address"),
        ("remove-member", "group", "not-an-address", "is not a valid e-mail address"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_member_commands_refuse_bad_input_and_change_nothing(
    run, db, groups, command, engagement, who, message, as_json
):
    before = dump(db)
    target = address(who) if who in PEOPLE else who
    result = run(
        "engagement", command, groups[engagement], target, *(["--json"] if as_json else [])
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert message in lines[0]
    assert dump(db) == before


@pytest.mark.parametrize(
    "args",
    [
        ["add-member"],
        ["add-member", "1"],
        ["add-member", "one", "anna@example.org"],
        ["remove-member", "1"],
        ["remove-member", "one", "anna@example.org"],
        ["remove-member", "1", "anna@example.org", "--now", "yesterday"],
    ],
)
def test_member_commands_refuse_a_malformed_command_line(run, db, groups, args):
    before = dump(db)
    result = run("engagement", *args)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert dump(db) == before


def test_member_commands_are_documented(run):
    for command in ("add-member", "remove-member"):
        result = run("engagement", command, "--help")
        assert result.exit_code == 0
        assert "Example:" in result.stdout
        assert "--json" in result.stdout


# privacy: no member sees another member


def test_no_mail_or_page_of_one_member_shows_another_member(app, db, client, smtp, crew):
    members = ("anna", "ben", "chloe", "daan")
    engagement_id = start_group(db, *members)
    open_round_and_mail(app, db, client, smtp, engagement_id)
    pages: dict[str, list[str]] = {who: [] for who in members}
    notes = {who: f"A private note from {name(who)}." for who in members}

    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue", note=notes["anna"])
    decide_by_mail(client, only_mail(smtp, "ben", ASK), "continue", note=notes["ben"])
    pages["chloe"].append(
        decide_by_mail(
            client, only_mail(smtp, "chloe", ASK), "stop", reason="not_useful", note=notes["chloe"]
        )
    )
    # The member's page counts, and names nobody: "3 of 4 members have decided".
    for who in members:
        page = page_of(client, only_mail(smtp, who, ASK))
        assert "3 of 4 members have decided" in page
        pages[who].append(page)
    # The facilitator's page may show everything.
    coach_page = page_of(client, only_mail(smtp, "coach", ASK))
    for who in members:
        assert name(who) in coach_page
    for who in ("anna", "ben", "chloe"):
        assert notes[who] in coach_page

    send_reminders(db, T0 + timedelta(days=5, minutes=1))
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    send(app, db, T0 + timedelta(days=5, minutes=2))
    close_overdue_rounds(db, T0 + timedelta(days=7, minutes=1))
    send(app, db, T0 + timedelta(days=7, minutes=2))
    for who in members:
        pages[who].append(page_of(client, only_mail(smtp, who, ASK)))
        outcome = [m for m in mails(smtp, who) if m["Subject"] not in (ASK, REMINDER)]
        assert len(outcome) == 1
        back = welcome_back_link(outcome[0])
        if back:
            pages[who].append(client.get(urlsplit(back).path).get_data(as_text=True))
    assert only_mail(smtp, "daan", REMINDER)

    # Each mail went to one person alone: one envelope recipient, one To, no Cc or Bcc.
    for _sender, recipients in smtp.envelopes:
        assert len(recipients) == 1
    for message in smtp.messages:
        assert message["Cc"] is None and message["Bcc"] is None
        assert len(message["To"].addresses) == 1

    for who in members:
        others = [other for other in members if other != who]
        seen = [
            "\n".join(f"{key}: {value}" for key, value in m.items()) + text_of(m) + html_of(m)
            for m in mails(smtp, who)
        ] + pages[who]
        assert len(seen) >= 4
        for text in seen:
            for other in others:
                assert address(other) not in text, f"{who} sees {other}'s address"
                assert name(other) not in text, f"{who} sees {other}'s name"
                assert notes[other] not in text, f"{who} sees {other}'s note"


# R6 idle, for groups as for individuals


def test_an_idle_group_ends_and_every_active_member_hears_of_it(app, db, client, smtp, run, crew):
    engagement_id = start_group(db, "anna", "ben", "chloe")
    remove_member(db, engagement_id, address("chloe"), T0)
    result = run("close-undecided", "--now", (T0 + timedelta(days=59)).isoformat())
    assert "Nothing is past its deadline or idle." in result.stdout

    result = run("close-undecided", "--now", (T0 + timedelta(days=61)).isoformat())
    assert result.exit_code == 0, result.stderr
    assert f"Closed engagement {engagement_id}: idle" in result.stdout
    shown = describe_engagement(db, engagement_id)
    assert (shown["status"], shown["end_reason"]) == ("ended", "idle")

    send(app, db, T0 + timedelta(days=61, minutes=1))
    assert mails(smtp, "chloe") == []
    for who in ("anna", "ben"):
        message = only_mail(smtp, who)
        assert "It has been a while since our last session" in text_of(message)
        assert client.get(urlsplit(welcome_back_link(message)).path).status_code == 200
    assert "Nothing was held or planned for a long while" in text_of(only_mail(smtp, "coach"))


# The training: four sessions, six participants, people dropping out and one joining


def at(moment: datetime) -> str:
    return moment.isoformat()


def local(moment: datetime) -> str:
    return moment.astimezone(ZoneInfo("Europe/Amsterdam")).strftime("%Y-%m-%d %H:%M")


def cli_ok(run, *args) -> str:
    result = run(*args)
    assert result.exit_code == 0, f"{args}: {result.stderr}"
    return result.stdout


def test_a_four_session_training_with_six_participants(app, db, client, smtp, run):
    """Fiona runs a training for six; Femke stops after one session, Gijs joins, Eva is
    taken out, Daan falls silent, Anna changes her mind, and Fiona closes after session four.
    """
    six = ("anna", "ben", "chloe", "daan", "eva", "femke")
    cli_ok(run, "init")
    cli_ok(run, "coach", "add", *COACH)
    for who in (*six, "gijs"):
        cli_ok(run, "client", "add", name(who), address(who))
    clients = [option for who in six for option in ("--client", address(who))]
    out = cli_ok(
        run, "engagement", "start", "--coach", COACH[1], *clients,
        "--title", "Leadership training", "--min-members", "3", "--json",
    )  # fmt: skip
    training = json.loads(out)["id"]
    # Each participant is told how it works (every session can be the last); Fiona gets the
    # same words as her confirmation.
    assert "Delivered 7 mail(s)." in cli_ok(run, "send")
    assert [m["Subject"] for m in smtp.messages].count(WELCOME) == 6
    smtp.clear()

    def show() -> dict:
        return json.loads(cli_ok(run, "engagement", "show", training, "--json"))

    def member_status() -> dict[str, str]:
        return {m["email"]: m["status"] for m in show()["members"]}

    # Session 1: held now; seven mails, each to one person.
    t1 = T0
    round_1 = json.loads(cli_ok(run, "session", "done", training, "--now", at(t1), "--json"))[
        "round_id"
    ]
    assert "Delivered 7 mail(s)." in cli_ok(run, "send", "--now", at(t1 + timedelta(minutes=1)))
    mark_1 = 0
    open_pages(client, smtp)
    for who in ("coach", *six):
        ask = only_mail(smtp, who, ASK)
        assert ask["To"] == f"{name(who)} <{address(who)}>"
    coach_ask = plain(text_of(only_mail(smtp, "coach", ASK)))
    assert all(name(who) in coach_ask for who in six)
    member_ask = plain(text_of(only_mail(smtp, "anna", ASK)))
    assert "session with Fiona Facilitator (Leadership training)" in member_ask

    for count, who in enumerate(("anna", "ben", "chloe", "daan", "eva"), start=1):
        page = decide_by_mail(
            client, only_mail(smtp, who, ASK), "continue", usefulness=str(5 + count)
        )
        verb = "has" if count == 1 else "have"
        assert f"{count} of 6 members {verb} decided" in page
    decide_by_mail(
        client,
        only_mail(smtp, "femke", ASK),
        "stop",
        reason="on_my_own",
        note="I got what I came for.",
    )
    assert member_status()[address("femke")] == "left"
    coach_page = plain(page_of(client, only_mail(smtp, "coach", ASK)))
    assert "I got what I came for." in coach_page
    assert "Eva Evers: continue, usefulness 10/10" in coach_page
    decide_by_mail(client, only_mail(smtp, "coach", ASK), "continue")
    first = show()["sessions"][0]["round"]
    assert (first["id"], first["status"], first["outcome"]) == (round_1, "closed", "continue")

    mark = len(smtp.messages)
    cli_ok(run, "send", "--now", at(t1 + timedelta(days=1)))
    for who in ("anna", "ben", "chloe", "daan", "eva"):
        message = only_mail(smtp, who, since=mark)
        assert message["Subject"] == GOES_ON
        assert "The group goes on." in plain(text_of(message))
        assert "5 of 6" not in plain(text_of(message))
    femke = only_mail(smtp, "femke", since=mark)
    assert "The group goes on without you" in plain(text_of(femke))
    assert client.get(urlsplit(welcome_back_link(femke)).path).status_code == 200
    coach_outcome = plain(text_of(only_mail(smtp, "coach", since=mark)))
    assert "5 of 6 members continue" in coach_outcome
    assert "Femke Fokkens: stop" in coach_outcome
    assert '"I got what I came for."' in coach_outcome

    # Gijs joins between sessions.
    out = cli_ok(run, "engagement", "add-member", training, address("gijs"))
    assert "they decide from the next round on" in out
    assert member_status()[address("gijs")] == "active"

    # Session 2: planned, and its round opens at the first tick after it ended (R1).
    t2 = T0 + timedelta(days=7)
    cli_ok(run, "session", "add", training, "--at", local(t2), "--minutes", "120")
    # Gijs's welcome, and the session's invitation to Fiona and each member taking part.
    mark_invitations = len(smtp.messages)
    assert "Delivered 8 mail(s)." in cli_ok(run, "send")
    assert [m["Subject"] for m in mails(smtp, "gijs", since=mark_invitations)][0] == WELCOME
    assert len(mails(smtp, "gijs", since=mark_invitations)) == 2
    assert mails(smtp, "femke", since=mark_invitations) == []
    mark_2 = len(smtp.messages)
    ticked = json.loads(
        cli_ok(run, "tick", "--now", at(t2 + timedelta(hours=2, minutes=5)), "--json")
    )
    assert ticked["rounds_opened"] == 1
    assert ticked["mails_sent"] == 7
    open_pages(client, smtp, mark_2)
    second = show()["sessions"][1]["round"]
    assert [d["party"] for d in second["decisions"]] == [
        "coach",
        *(address(who) for who in ("anna", "ben", "chloe", "daan", "eva", "gijs")),
    ]
    assert mails(smtp, "femke", since=mark_2) == []
    assert only_mail(smtp, "gijs", ASK, since=mark_2)

    for who in ("anna", "ben", "gijs", "coach"):
        decide_by_mail(client, only_mail(smtp, who, ASK, since=mark_2), "continue")
    eva_ask = only_mail(smtp, "eva", ASK, since=mark_2)
    out = cli_ok(
        run, "engagement", "remove-member", training, address("eva"),
        "--now", at(t2 + timedelta(days=1)),
    )  # fmt: skip
    assert f"{address('eva')} left engagement {training}." in out
    assert client.get(f"/d/{token_in(eva_ask)}").status_code == 404
    assert member_status()[address("eva")] == "left"
    chloe_page = page_of(client, only_mail(smtp, "chloe", ASK, since=mark_2))
    assert "3 of 5 members have decided" in chloe_page

    # Chloe and Daan are silent: one reminder each at T-2 days, fresh links.
    opened_2 = t2 + timedelta(hours=2, minutes=5)
    mark = len(smtp.messages)
    ticked = json.loads(
        cli_ok(run, "tick", "--now", at(opened_2 + timedelta(days=5, minutes=1)), "--json")
    )
    assert ticked["reminders"] == 2
    assert sorted(m["To"] for m in smtp.messages[mark:]) == [
        f"{name('chloe')} <{address('chloe')}>",
        f"{name('daan')} <{address('daan')}>",
    ]
    decide_by_mail(client, only_mail(smtp, "chloe", REMINDER), "continue")

    # The deadline: Daan has not answered, so he leaves; the group goes on with four.
    mark = len(smtp.messages)
    ticked = json.loads(
        cli_ok(run, "tick", "--now", at(opened_2 + timedelta(days=7, minutes=1)), "--json")
    )
    assert ticked["rounds_closed"] == 1
    second = show()["sessions"][1]["round"]
    assert (second["status"], second["outcome"]) == ("closed", "continue")
    assert member_status()[address("daan")] == "left"
    daan = only_mail(smtp, "daan", since=mark)
    assert "We did not hear from you by the deadline" in plain(text_of(daan))
    assert welcome_back_link(daan) is not None
    assert mails(smtp, "eva", since=mark) == []
    for who in ("anna", "ben", "chloe", "gijs"):
        body = plain(text_of(only_mail(smtp, who, since=mark)))
        assert "The group goes on." in body and "of 5 members" not in body
    coach_outcome = plain(text_of(only_mail(smtp, "coach", since=mark)))
    assert "4 of 5 members continue" in coach_outcome
    assert "Daan Dekker: no answer" in coach_outcome
    assert "Eva Evers" not in coach_outcome

    # Session 3: Anna first says continue, then changes it into stop (R2).
    t3 = opened_2 + timedelta(days=8)
    mark_3 = len(smtp.messages)
    cli_ok(run, "session", "done", training, "--now", at(t3))
    cli_ok(run, "send", "--now", at(t3 + timedelta(minutes=1)))
    open_pages(client, smtp, mark_3)
    assert [m["To"] for m in smtp.messages[mark_3:]] == [
        f"{name(who)} <{address(who)}>" for who in ("coach", "anna", "ben", "chloe", "gijs")
    ]
    anna_ask = only_mail(smtp, "anna", ASK, since=mark_3)
    page = decide_by_mail(client, anna_ask, "continue")
    assert "You can still change this into stop" in page
    page = decide_by_mail(client, anna_ask, "stop", reason="not_useful", note="Not my format.")
    assert "Recorded: you have what you need for now." in page
    assert member_status()[address("anna")] == "left"
    for who in ("ben", "chloe", "gijs", "coach"):
        decide_by_mail(client, only_mail(smtp, who, ASK, since=mark_3), "continue")
    third = show()["sessions"][2]["round"]
    assert (third["status"], third["outcome"]) == ("closed", "continue")
    mark = len(smtp.messages)
    cli_ok(run, "send", "--now", at(t3 + timedelta(days=1)))
    anna = only_mail(smtp, "anna", since=mark)
    assert "You chose to stop" in text_of(anna)
    assert welcome_back_link(anna) is not None
    for who in ("ben", "chloe", "gijs"):
        body = plain(text_of(only_mail(smtp, who, since=mark)))
        assert "The group goes on." in body and "of 4 members" not in body
    assert '"Not my format."' in text_of(only_mail(smtp, "coach", since=mark))

    # Session 4, the last: the members say continue, Fiona closes the training (coach_stopped).
    t4 = t3 + timedelta(days=7)
    mark_4 = len(smtp.messages)
    round_4 = json.loads(cli_ok(run, "session", "done", training, "--now", at(t4), "--json"))[
        "round_id"
    ]
    cli_ok(run, "send", "--now", at(t4 + timedelta(minutes=1)))
    open_pages(client, smtp, mark_4)
    decide_by_mail(client, only_mail(smtp, "ben", ASK, since=mark_4), "continue")
    gijs_page = decide_by_mail(client, only_mail(smtp, "gijs", ASK, since=mark_4), "continue")
    assert "2 of 3 members have decided" in gijs_page
    out = cli_ok(
        run, "decide", round_4, "--choice", "stop", "--reason", "other",
        "--note", "The training is complete.", "--now", at(t4 + timedelta(hours=3)),
    )  # fmt: skip
    assert "The round closed and the engagement ended (coach stopped)." in out
    chloe_ask = only_mail(smtp, "chloe", ASK, since=mark_4)
    assert post_again(client, chloe_ask).status_code == 409
    mark = len(smtp.messages)
    cli_ok(run, "send", "--now", at(t4 + timedelta(hours=4)))
    for who in ("ben", "chloe", "gijs"):
        message = only_mail(smtp, who, since=mark)
        assert message["Subject"] == GOODBYE
        assert "Fiona Facilitator decided that another session" in plain(text_of(message))
        assert client.get(urlsplit(welcome_back_link(message)).path).status_code == 200
    assert mails(smtp, "anna", since=mark) == []
    assert "You chose to stop." in text_of(only_mail(smtp, "coach", since=mark))

    # engagement show tells the whole story.
    final = show()
    assert (final["status"], final["end_reason"]) == ("ended", "coach_stopped")
    assert member_status() == {
        address("anna"): "left",
        address("ben"): "active",
        address("chloe"): "active",
        address("daan"): "left",
        address("eva"): "left",
        address("femke"): "left",
        address("gijs"): "active",
    }
    assert [s["round"]["outcome"] for s in final["sessions"]] == [
        "continue",
        "continue",
        "continue",
        "stop",
    ]
    assert [len(s["round"]["decisions"]) for s in final["sessions"]] == [7, 6, 5, 4]
    text = cli_ok(run, "engagement", "show", training)
    assert "group, ended (coach stopped)" in text
    assert f"client: {name('daan')} <{address('daan')}> (left)" in text
    assert f"client: {name('gijs')} <{address('gijs')}> (active)" in text

    # Through all four sessions, every mail went to one person, and no member's mail
    # named another member.
    assert all(len(recipients) == 1 for _, recipients in smtp.envelopes)
    everyone = (*six, "gijs")
    for who in everyone:
        for message in mails(smtp, who, since=mark_1):
            body = text_of(message) + html_of(message) + str(message.items())
            for other in everyone:
                if other != who:
                    assert address(other) not in body and name(other) not in body


def test_the_coachs_outcome_mail_lists_members_in_the_order_they_joined(
    app, db, client, smtp, crew
):
    """The deadline sweep writes its mails with SQL: the coach's list keeps the members'
    order (not the order the clients were added to the practice), names each low rating,
    and tells no client what the others said."""
    engagement_id = start_group(db, "gijs", "anna", "eva", "ben")
    open_round_and_mail(app, db, client, smtp, engagement_id)
    decide_by_mail(client, only_mail(smtp, "gijs", ASK), "continue", usefulness="3")
    decide_by_mail(client, only_mail(smtp, "anna", ASK), "continue", usefulness="9")
    decide_by_mail(client, only_mail(smtp, "eva", ASK), "continue", usefulness="2")
    mark = len(smtp.messages)
    close_overdue_rounds(db, T0 + timedelta(days=7, minutes=1))
    send(app, db, T0 + timedelta(days=7, minutes=2))

    coach = plain(text_of(only_mail(smtp, "coach", since=mark)))
    said = [coach.index(f"- {name(who)}:") for who in ("gijs", "anna", "eva", "ben")]
    assert said == sorted(said), coach
    assert "Ben Bakker: no answer" in coach
    assert "Gijs Groen rated this session 3 out of 10" in coach
    assert "Eva Evers rated this session 2 out of 10" in coach
    assert "Anna Aalders rated" not in coach
    for who in ("gijs", "anna", "eva", "ben"):
        body = plain(text_of(only_mail(smtp, who, since=mark)))
        others = [name(other) for other in ("gijs", "anna", "eva", "ben") if other != who]
        assert not any(other in body for other in others), body


def test_an_idle_groups_coach_mail_names_the_members_in_the_order_they_joined(db, crew):
    """R6 through the same set-based statement: the coach's mail names whom the group was
    with, in the order they joined, and each member gets their own goodbye with a link."""
    engagement_id = start_group(db, "gijs", "anna")
    end_idle_engagements(db, T0 + timedelta(days=61), POLICY)
    told = {
        row[0]: open_mail(db, json.loads(row[1]))
        for row in db.conn.execute(
            "SELECT to_email, context FROM outbox WHERE kind = 'outcome' AND engagement_id = ?",
            [engagement_id],
        )
    }
    assert set(told) == {COACH[1], address("gijs"), address("anna")}
    assert told[COACH[1]]["client_names"] == f"{name('gijs')}, {name('anna')}"
    assert told[COACH[1]]["welcome_back_token"] is None
    for who in ("gijs", "anna"):
        assert told[address(who)]["end_reason"] == "idle"
        assert told[address(who)]["client_names"] is None
        member_id = db.conn.execute(
            "SELECT members.id FROM members JOIN clients ON clients.id = members.client_id"
            " WHERE members.engagement_id = ? AND clients.email = ?",
            [engagement_id, address(who)],
        ).fetchone()[0]
        link = told[address(who)]["welcome_back_token"]
        assert get_member_id(db, link, T0 + timedelta(days=62)) == member_id
