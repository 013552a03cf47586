"""A coach who never opens a terminal: signing in by mail, the overview's forms, and the
links in the coach's own mails, driven the way a person (and a mail scanner) uses them.

Real parts only: every request goes through the real app (Flask's test client), every
link comes from a mail a real SMTP server accepted, and every form is sent with the
fields its page served (the signed stamp included). The web reads the real clock, so
where time has to pass (a deadline, an engagement going quiet) the sweeps are run at a
later `now`, as cron would.
"""

from __future__ import annotations

import json
import re
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta

import pytest
from support import (
    AMSTERDAM,
    BEFORE_VERSION_7,
    POLICY,
    T0,
    Html,
    deliver,
    dump,
    english_sentences,
    html_of,
    links_in,
    submission,
    text_of,
    token_of,
)
from support import ok as cli_ok
from support import refused as cli_refused

from twoyes.coach_view import make_coach_link
from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.rounds import record_decision
from twoyes.sessions import plan_session, record_session_done
from twoyes.times import to_db

COACH_LINK = re.compile(r"http://twoyes\.test(/c/[A-Za-z0-9_-]{43}(?:/[a-z0-9/-]+)?)")
SENT = "If this address belongs to a coach of this practice, a link to the overview is on its way."


def later_now() -> datetime:
    """A moment just after the web's own clock: mail it queued is due then."""
    return datetime.now(UTC) + timedelta(minutes=1)


def forms_of(response) -> list[dict]:
    return Html(response.text).forms


def form_for(response, action_end: str) -> dict:
    """The one form on the page whose action ends with `action_end`."""
    (form,) = [f for f in forms_of(response) if (f["action"] or "").endswith(action_end)]
    return form


def send(client, form: dict, /, **fields):
    """Press the form's button with what the page filled in, changed by `fields`."""
    data = submission(form) | {key: str(value) for key, value in fields.items()}
    return client.post(form["action"], data=data)


def text(response) -> str:
    return Html(response.text).text


def last_event(db) -> dict:
    return dict(db.conn.execute("SELECT * FROM events ORDER BY id DESC LIMIT 1").fetchone())


def mailed_links(message) -> list[str]:
    """The coach pages a mail links to, as paths."""
    return COACH_LINK.findall(text_of(message))


# --- signing in by mail ---------------------------------------------------------------------


def ask_for_link(client, address: str, **headers):
    page = client.get("/c", headers=headers)
    assert page.status_code == 200
    return send(client, form_for(page, "/c"), email=address)


def sign_in(app, db, client, smtp, address: str) -> str:
    """The overview's path, the way a coach gets it: asked for at /c, read from the mail."""
    smtp.clear()
    asked = ask_for_link(client, address)
    assert asked.status_code == 303
    deliver(app, db, later_now())
    (message,) = smtp.to(address)
    (path,) = mailed_links(message)
    return path


def test_the_sign_in_page_asks_for_one_address_and_changes_nothing(client, db, people):
    before = dump(db)
    page = client.get("/c")
    assert page.status_code == 200
    (form,) = forms_of(page)
    assert form["method"] == "post"
    visible = [
        i for i in form["inputs"] if i.get("type") not in ("hidden",) and i["name"] != "website"
    ]
    assert [(i["name"], i["type"]) for i in visible] == [("email", "email")]
    assert client.head("/c").status_code == 200
    assert dump(db) == before


def test_a_coach_gets_a_fresh_overview_link_by_mail(app, db, client, smtp, people):
    asked = ask_for_link(client, "Bob@Example.org ")
    assert asked.status_code == 303
    answer = client.get(asked.headers["Location"])
    assert SENT in text(answer)
    assert db.conn.execute("SELECT count(*) FROM outbox WHERE kind = 'sign_in'").fetchone()[0] == 1

    deliver(app, db, later_now())
    (message,) = smtp.to("bob@example.org")
    assert message["Subject"] == "Your link to your overview"
    (path,) = mailed_links(message)
    assert "Open my overview" in html_of(message)
    assert client.get(path).status_code == 200
    # Delivered: the outbox keeps no link, and only the token's hash is stored.
    token = path.rsplit("/", 1)[1]
    assert token not in dump(db)
    kinds = [row[0] for row in db.conn.execute("SELECT kind FROM events ORDER BY id")]
    assert "coach_link_mailed" in kinds


def test_an_address_that_is_no_coachs_gets_the_same_answer_and_no_mail(app, db, client, people):
    coach = ask_for_link(client, "bob@example.org")
    before = dump(db)
    other = ask_for_link(client, "anna@example.org")  # a client, not a coach
    nobody = ask_for_link(client, "nobody@example.org")
    assert coach.status_code == other.status_code == nobody.status_code == 303
    assert coach.headers["Location"] == other.headers["Location"] == nobody.headers["Location"]
    assert coach.text == other.text == nobody.text
    assert dump(db) == before  # nothing queued, nothing logged


def test_asking_takes_about_as_long_for_a_coach_as_for_anyone(client, db, people):
    """Whether an address is a coach's cannot be read from the time the answer takes."""
    for n in range(4):
        add_person(db, "coach", f"Coach {n}", f"coach{n}@example.org", "en", T0)
    form = form_for(client.get("/c"), "/c")
    timings = {"coach": [], "anyone": []}
    for _ in range(4):  # the address limit allows five an hour
        for n in range(4):
            for who, address in (
                ("coach", f"coach{n}@example.org"),
                ("anyone", f"x{n}@example.org"),
            ):
                started = time.perf_counter()
                assert send(client, form, email=address).status_code == 303
                timings[who].append(time.perf_counter() - started)
    coach, anyone = (statistics.median(taken) for taken in timings.values())
    assert abs(coach - anyone) < 0.005, (coach, anyone)


@pytest.mark.parametrize(
    ("typed", "sentence"),
    [
        ("", "Please fill in your e-mail address."),
        ("   ", "Please fill in your e-mail address."),
        ("bob-at-example.org", "That is not an e-mail address we can send to; please check it."),
        ("bob@", "That is not an e-mail address we can send to; please check it."),
    ],
)
def test_a_missing_or_malformed_address_is_a_400_that_keeps_it(client, db, people, typed, sentence):
    before = dump(db)
    answer = ask_for_link(client, typed)
    assert answer.status_code == 400
    assert sentence in text(answer)
    assert form_for(answer, "/c") and f'value="{typed.strip()}"' in answer.text
    assert dump(db) == before


def test_a_scanners_post_sends_nothing(client, db, people):
    page = client.get("/c")
    form = form_for(page, "/c")
    before = dump(db)
    no_stamp = {k: v for k, v in submission(form).items() if k != "served"}
    for data in (
        no_stamp | {"email": "bob@example.org"},
        submission(form) | {"email": "bob@example.org", "website": "x"},
    ):
        answer = client.post("/c", data=data)
        assert answer.status_code == 200
        assert "Please press the button once more to get your link." in text(answer)
    assert dump(db) == before


def test_asking_is_limited_per_address(client, db, people):
    for _ in range(5):
        assert ask_for_link(client, "bob@example.org").status_code == 303
    before = dump(db)
    assert ask_for_link(client, "BOB@example.org").status_code == 429
    assert dump(db) == before
    assert ask_for_link(client, "eve@example.org").status_code == 303  # another address


def test_asking_is_limited_per_client_address(app, settings, db, people):
    from twoyes.web import create_app

    strict = create_app({"TESTING": True, **settings, "TOKEN_RATE_LIMIT": "3 per minute"})
    client = strict.test_client()
    page = client.get("/c")  # showing the page counts nothing
    form = form_for(page, "/c")
    answers = [send(client, form, email=f"x{n}@example.org").status_code for n in range(4)]
    assert answers == [303, 303, 303, 429]
    other = client.post(
        "/c",
        data=submission(form) | {"email": "y@example.org"},
        environ_base={"REMOTE_ADDR": "10.0.0.9"},
    )
    assert other.status_code == 303


def test_a_dutch_coach_gets_the_link_in_dutch(app, db, client, smtp, people, extracted):  # noqa: F811
    add_person(db, "coach", "Eve Visser", "eve@example.org", "nl", T0)
    page = client.get("/c", headers={"Accept-Language": "nl"})
    assert "Je overzicht" in text(page)
    answer = send(client, form_for(page, "/c"), email="eve@example.org")
    shown = client.get(answer.headers["Location"], headers={"Accept-Language": "nl"})
    assert "Als dit adres van een coach van deze praktijk is" in text(shown)
    deliver(app, db, later_now())
    (message,) = smtp.to("eve@example.org")
    assert message["Subject"] == "Je link naar je overzicht"
    body = text_of(message)
    assert "Hoi Eve Visser" in body
    for sentence in english_sentences(extracted):
        assert sentence not in body


def test_init_upgrades_an_outbox_that_knows_no_sign_in_mail(run, app, db, client, engagement):
    from twoyes import db as database

    record_session_done(db, engagement, T0, POLICY)  # two decision mails
    deliver(app, db, T0 + timedelta(minutes=1))
    rows = [tuple(row) for row in db.conn.execute("SELECT * FROM outbox ORDER BY id")]
    assert rows
    # Back to version 4: an outbox whose CHECK knows no sign-in mail.
    for statement in (
        database.OUTBOX_V5.format(name="outbox_v4").replace(", 'sign_in'", ""),
        "INSERT INTO outbox_v4 SELECT * FROM outbox",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_v4 RENAME TO outbox",
        *BEFORE_VERSION_7,
        "ALTER TABLE coaches DROP COLUMN forgotten_at",  # version 6 adds it
        "PRAGMA user_version = 4",
    ):
        db.conn.execute(statement)
    with pytest.raises(sqlite3.IntegrityError):  # the old CHECK knows no sign-in mail
        ask_for_link(client, "bob@example.org")

    result = run("init")
    assert result.exit_code == 0, result.output
    assert f"from version 4 to {database.SCHEMA_VERSION}" in result.stdout
    assert [tuple(row) for row in db.conn.execute("SELECT * FROM outbox ORDER BY id")] == rows
    index = "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_due'"
    assert db.conn.execute(index).fetchone()[0] == 1
    assert ask_for_link(client, "bob@example.org").status_code == 303
    assert db.conn.execute("SELECT count(*) FROM outbox WHERE kind = 'sign_in'").fetchone()[0] == 1


# --- session move and cancel on the command line ----------------------------------------------


def local_text(moment: datetime) -> str:
    return moment.astimezone(AMSTERDAM).strftime("%Y-%m-%d %H:%M")


def planned(run, engagement_id, at: datetime, minutes=60) -> int:
    result = cli_ok(
        run, "session", "add", engagement_id, "--at", local_text(at), "--minutes", minutes, "--json"
    )
    return json.loads(result.stdout)["session_id"]


def test_session_move_on_the_command_line(run, db, engagement):
    session_id = planned(run, engagement, T0 + timedelta(days=7))
    to = (T0 + timedelta(days=9)).astimezone(AMSTERDAM).replace(hour=14, minute=30)
    result = cli_ok(run, "session", "move", session_id, "--at", local_text(to), "--minutes", 90)
    assert result.stdout == (
        f"Moved session {session_id} of engagement {engagement} to {local_text(to)} (90 minutes).\n"
    )
    row = db.conn.execute("SELECT * FROM sessions WHERE id = ?", [session_id]).fetchone()
    assert (row["status"], row["starts_at"], row["minutes"]) == ("planned", to_db(to), 90)
    assert row["ends_at"] == to_db(to + timedelta(minutes=90))
    event = last_event(db)
    assert (event["kind"], event["engagement_id"]) == ("session_moved", engagement)
    assert json.loads(event["detail"])["starts_at"] == to_db(to)

    again = cli_ok(run, "session", "move", session_id, "--at", local_text(to + timedelta(days=1)))
    assert "(90 minutes)" in again.stdout  # the length stays unless given


def test_session_move_json(run, db, engagement):
    session_id = planned(run, engagement, T0 + timedelta(days=7))
    to = T0 + timedelta(days=8)
    data = json.loads(
        cli_ok(run, "session", "move", session_id, "--at", local_text(to), "--json").stdout
    )
    assert data == {
        "id": session_id,
        "engagement_id": engagement,
        "starts_at": to_db(to),
        "minutes": 60,
    }


def test_session_cancel_on_the_command_line(run, db, engagement):
    at = T0 + timedelta(days=7)
    session_id = planned(run, engagement, at)
    result = cli_ok(run, "session", "cancel", session_id)
    assert result.stdout.startswith(f"Cancelled session {session_id} of engagement {engagement}")
    assert "session add" in result.stdout
    assert db.conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    event = last_event(db)
    assert (event["kind"], json.loads(event["detail"])["was"]) == ("session_cancelled", to_db(at))
    planned(run, engagement, at)  # R7: with none planned, another may be


@pytest.mark.parametrize(
    ("verb", "extra", "words"),
    [
        ("move", ["--at", "LATER"], "not planned any more"),
        ("cancel", [], "not planned any more"),
    ],
)
def test_a_held_session_neither_moves_nor_is_cancelled(run, db, engagement, verb, extra, words):
    data = json.loads(cli_ok(run, "session", "done", engagement, "--json").stdout)
    extra = [local_text(T0 + timedelta(days=9)) if arg == "LATER" else arg for arg in extra]
    line = cli_refused(run, db, "session", verb, data["session_id"], *extra)
    assert words in line


def test_a_session_is_not_moved_into_the_past(run, db, engagement):
    session_id = planned(run, engagement, T0 + timedelta(days=7))
    past = local_text(T0 - timedelta(hours=2))
    line = cli_refused(run, db, "session", "move", session_id, "--at", past)
    assert line == "Error: That moment has passed; please choose a time still to come."


@pytest.mark.parametrize("verb", ["move", "cancel"])
def test_an_unknown_session(run, db, engagement, verb):
    extra = ["--at", local_text(T0 + timedelta(days=3))] if verb == "move" else []
    line = cli_refused(run, db, "session", verb, "404", *extra)
    assert "There is no session 404" in line


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--at", "tomorrow"],
        ["--at", "2027-02-30 10:00"],
        ["--at", "2027-01-05 10:00", "--minutes", "0"],
        ["--at", "2027-01-05 10:00", "--minutes", "1441"],
    ],
)
def test_session_move_with_a_malformed_command_line(run, db, engagement, args):
    session_id = planned(run, engagement, T0 + timedelta(days=7))
    cli_refused(run, db, "session", "move", session_id, *args, code=2)


def test_the_session_commands_are_listed(run):
    listed = cli_ok(run, "session", "--help").stdout
    for command in ("add", "done", "move", "cancel"):
        assert f"  {command} " in listed


# --- the overview is where a coach works ------------------------------------------------------

ASK_AGAIN = "Please press the button once more; nothing was changed yet."


def overview_of(db, email: str) -> str:
    """A coach's overview path, made as `coach link` makes it."""
    return "/c/" + make_coach_link(db, email, datetime.now(UTC))["token"]


def future(days: int = 7, at: str = "10:00") -> dict[str, str]:
    """A date and time `days` from now, as the native inputs send them."""
    day = (datetime.now(UTC) + timedelta(days=days)).astimezone(AMSTERDAM).date()
    return {"date": day.isoformat(), "time": at}


def opened(client, path: str):
    page = client.get(path)
    assert page.status_code == 200, page.text
    return page


def press(client, path: str, action_end: str, /, **fields):
    """Open the page at `path` and send its form whose action ends with `action_end`."""
    return send(client, form_for(opened(client, path), action_end), **fields)


def refused(client, db, path, action_end, status, sentence, /, **fields):
    """A change that must be refused: its status, its sentence, and nothing changed."""
    before = dump(db)
    answer = press(client, path, action_end, **fields)
    assert answer.status_code == status, text(answer)
    assert sentence in text(answer)
    assert dump(db) == before
    return answer


def row(db, sql: str, *args):
    found = db.conn.execute(sql, args).fetchone()
    return tuple(found) if found else None


@pytest.fixture
def scene(db, people):
    """Bob's practice as his pages see it, and Eve (Dutch), another coach:

    - `planned`: Bob with Anna, a session planned a week from now;
    - `ended`: Bob with Carl, ended when Bob stopped after a session;
    - `group`: Bob with Anna and Carl, nothing planned yet;
    - `eve`: Eve with Dana.
    """
    now = datetime.now(UTC)
    add_person(db, "coach", "Eve Visser", "eve@example.org", "nl", T0)
    add_person(db, "client", "Dana Dekker", "dana@example.org", "nl", T0)
    planned_id = start_engagement(db, people["coach"], [people["anna"]], T0, title="Career")
    session_id = plan_session(db, planned_id, now + timedelta(days=7), 60, now)
    ended_id = start_engagement(db, people["coach"], [people["carl"]], T0, title="Ended one")
    _, round_id = record_session_done(db, ended_id, now - timedelta(hours=1), POLICY)
    coach_decision = row(
        db, "SELECT id FROM decisions WHERE round_id = ? AND role = 'coach'", round_id
    )
    record_decision(db, coach_decision[0], now, choice="stop", reason="cannot_help")
    group_id = start_engagement(
        db, people["coach"], [people["anna"], people["carl"]], T0, title="Team"
    )
    eve_id = start_engagement(db, "eve@example.org", ["dana@example.org"], T0, title="Eves")
    member_id = row(db, "SELECT id FROM members WHERE engagement_id = ? ORDER BY id", group_id)[0]
    bob = overview_of(db, people["coach"])
    return {
        "bob": bob,
        "eve": overview_of(db, "eve@example.org"),
        "planned": planned_id,
        "session": session_id,
        "ended": ended_id,
        "group": group_id,
        "member": member_id,
        "eves": eve_id,
    }


def test_a_coach_starts_an_engagement_with_a_new_client(client, db, scene):
    started = press(
        client,
        f"{scene['bob']}/start",
        "/start",
        **{"new-1-name": "Fleur Fransen", "new-1-email": "fleur@example.org", "new-1-lang": "nl"},
        title="Clarity",
    )
    assert started.status_code == 303
    engagement_id = row(db, "SELECT max(id) FROM engagements")[0]
    assert started.headers["Location"] == f"{scene['bob']}/engagements/{engagement_id}"
    assert row(db, "SELECT name, lang FROM clients WHERE email = 'fleur@example.org'") == (
        "Fleur Fransen",
        "nl",
    )
    assert row(db, "SELECT kind, title, status FROM engagements WHERE id = ?", engagement_id) == (
        "individual",
        "Clarity",
        "active",
    )
    page = opened(client, started.headers["Location"])
    assert "Fleur Fransen" in text(page) and "Nothing planned yet" in text(page)


def test_a_group_of_known_and_new_clients_with_rows_added_as_needed(client, db, scene):
    start = opened(client, f"{scene['bob']}/start")
    form = form_for(start, "/start")
    known = {box["value"]: box for box in form["inputs"] if box.get("name") == "client"}
    assert len(known) == 2  # Anna and Carl, whom Bob worked with; never Eve's Dana
    assert "dana@example.org" not in start.text

    before = dump(db)
    more = send(
        client, form, **{"new-1-name": "Gus Groen", "new-1-email": "gus@example.org"}, more=1
    )
    assert more.status_code == 200 and dump(db) == before  # one more row, nothing started
    form = form_for(more, "/start")
    assert 'value="Gus Groen"' in more.text
    anna = row(db, "SELECT id FROM clients WHERE email = 'anna@example.org'")[0]
    started = send(
        client,
        form,
        client=anna,
        **{"new-2-name": "Hans Hout", "new-2-email": "hans@example.org"},
        min_members=2,
        title="Leadership",
    )
    assert started.status_code == 303, text(started)
    engagement_id = row(db, "SELECT max(id) FROM engagements")[0]
    assert row(db, "SELECT kind, min_members FROM engagements WHERE id = ?", engagement_id) == (
        "group",
        2,
    )
    members = db.conn.execute(
        "SELECT clients.email FROM members JOIN clients ON clients.id = members.client_id"
        " WHERE engagement_id = ? ORDER BY members.id",
        [engagement_id],
    ).fetchall()
    assert [m[0] for m in members] == ["anna@example.org", "gus@example.org", "hans@example.org"]


def test_a_new_client_the_practice_knows_already_is_that_client(client, db, scene):
    started = press(
        client,
        f"{scene['bob']}/start",
        "/start",
        **{"new-1-name": "Someone Else", "new-1-email": "DANA@example.org"},
    )
    assert started.status_code == 303
    assert row(db, "SELECT count(*) FROM clients WHERE email = 'dana@example.org'") == (1,)
    assert "Dana Dekker" in text(opened(client, started.headers["Location"]))


NEW = {"new-1-name": "Ida Ink", "new-1-email": "ida@example.org"}


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({}, "Please choose a client, or fill in a new one."),
        ({"new-1-name": "Ida Ink"}, "Please fill in the e-mail address of Ida Ink."),
        ({"new-1-email": "ida@example.org"}, "Please fill in the name of ida@example.org."),
        (NEW | {"new-1-email": "ida-at-example"}, "“ida-at-example” is not an e-mail address"),
        (NEW | {"new-1-name": "Ida =?utf-8?q?x?="}, "A name cannot contain '=?'."),
        (NEW | {"min_members": "2"}, "between 1 and the number of clients (1)"),
        (NEW | {"min_members": "0"}, "between 1 and the number of clients (1)"),
        (NEW | {"min_members": "two"}, "between 1 and the number of clients (1)"),
        (NEW | {"title": "x" * 201}, "A title can be at most 200 characters long."),
        (NEW | {"client": "x"}, "The form arrived garbled"),
    ],
)
def test_a_bad_start_form_is_a_400_that_keeps_what_was_typed(client, db, scene, fields, sentence):
    answer = refused(client, db, f"{scene['bob']}/start", "/start", 400, sentence, **fields)
    for value in fields.values():
        if value and len(value) < 100 and value != "x":
            assert value in Html(answer.text).text or f'value="{value}"' in answer.text


def test_another_coachs_client_cannot_be_chosen(client, db, scene):
    dana = row(db, "SELECT id FROM clients WHERE email = 'dana@example.org'")[0]
    before = dump(db)
    answer = press(client, f"{scene['bob']}/start", "/start", client=dana)
    assert answer.status_code == 404
    assert dump(db) == before


def test_recording_a_session_held_opens_its_round_and_mails_everyone(client, db, scene):
    page = opened(client, f"{scene['bob']}/engagements/{scene['group']}")
    held = send(client, form_for(page, "/held"), minutes=90)
    assert held.status_code == 303
    round_id = row(
        db, "SELECT id FROM rounds WHERE engagement_id = ? AND status = 'open'", scene["group"]
    )[0]
    assert held.headers["Location"] == f"{scene['bob']}#round-{round_id}"
    assert row(
        db, "SELECT minutes, status FROM sessions WHERE engagement_id = ?", scene["group"]
    ) == (90, "held")
    mailed = {r[0] for r in db.conn.execute("SELECT to_email FROM outbox WHERE kind = 'decision'")}
    assert {"bob@example.org", "anna@example.org", "carl@example.org"} <= mailed
    overview = opened(client, f"{scene['bob']}")
    assert form_for(overview, f"/rounds/{round_id}")  # the coach decides right there

    # The same form sent again (a second tab, a double press) is refused: R7.
    before = dump(db)
    again = send(client, form_for(page, "/held"))
    assert again.status_code == 409
    assert "A round is waiting for decisions" in text(again)
    assert dump(db) == before


def test_recording_holds_the_planned_session(client, db, scene):
    held = press(client, f"{scene['bob']}/engagements/{scene['planned']}", "/held")
    assert held.status_code == 303
    assert row(db, "SELECT status FROM sessions WHERE id = ?", scene["session"]) == ("held",)


def test_a_bad_length_of_a_session_held(client, db, scene):
    path = f"{scene['bob']}/engagements/{scene['group']}"
    for minutes in ("0", "1441", "an hour"):
        answer = refused(
            client,
            db,
            path,
            "/held",
            400,
            "A session lasts from 1 to 1440 minutes.",
            minutes=minutes,
        )
        assert f'value="{minutes}"' in answer.text


def test_planning_from_the_engagement_page(client, db, scene):
    page = opened(client, f"{scene['bob']}/engagements/{scene['group']}")
    plan_page = next(a for a in re.findall(r'href="([^"]+)"', page.text) if a.endswith("/plan"))
    when = future(10, "14:30")
    planned_ = press(client, plan_page, "/plan", **when, minutes=45)
    assert planned_.status_code == 303
    starts = datetime.fromisoformat(f"{when['date']}T14:30").replace(tzinfo=AMSTERDAM)
    assert row(
        db,
        "SELECT starts_at, minutes, status FROM sessions WHERE engagement_id = ?",
        scene["group"],
    ) == (
        to_db(starts),
        45,
        "planned",
    )
    assert "Move it" in text(opened(client, planned_.headers["Location"]))


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"date": "", "time": "10:00"}, "Please fill in the date of the session."),
        ({"time": ""}, "Please fill in the time the session starts."),
        ({"date": "9-12-2026"}, "Please give the date as YYYY-MM-DD and the time as HH:MM"),
        ({"time": "25:00"}, "Please give the date as YYYY-MM-DD and the time as HH:MM"),
        ({"minutes": "0"}, "A session lasts from 1 to 1440 minutes."),
        ({"days": -1}, "That moment has passed; please choose a time still to come."),
    ],
)
def test_a_bad_plan_is_a_400_that_keeps_it(client, db, scene, fields, sentence):
    when = future(fields.pop("days", 7))
    path = f"{scene['bob']}/engagements/{scene['group']}/plan"
    answer = refused(client, db, path, "/plan", 400, sentence, **(when | fields))
    kept = when | fields
    assert f'value="{kept["date"]}"' in answer.text and f'value="{kept["time"]}"' in answer.text


def test_a_second_plan_is_refused(client, db, scene):
    path = f"{scene['bob']}/engagements/{scene['group']}/plan"
    page = opened(client, path)
    assert press(client, path, "/plan", **future(3)).status_code == 303
    before = dump(db)
    again = send(client, form_for(page, "/plan"), **future(4))
    assert again.status_code == 409
    assert "A session is planned already; move it, or cancel it first." in text(again)
    assert dump(db) == before


def test_moving_the_planned_session(client, db, scene):
    path = f"{scene['bob']}/engagements/{scene['planned']}/move"
    page = opened(client, path)
    form = form_for(page, f"/sessions/{scene['session']}/move")
    shown = submission(form)
    was = row(db, "SELECT starts_at FROM sessions WHERE id = ?", scene["session"])[0]
    was_local = datetime.fromisoformat(was).astimezone(AMSTERDAM)
    assert (shown["date"], shown["time"], shown["minutes"]) == (
        was_local.date().isoformat(),
        was_local.strftime("%H:%M"),
        "60",
    )
    when = future(9, "09:15")
    moved = send(client, form, **when)
    assert moved.status_code == 303
    starts = datetime.fromisoformat(f"{when['date']}T09:15").replace(tzinfo=AMSTERDAM)
    assert row(db, "SELECT starts_at, minutes FROM sessions WHERE id = ?", scene["session"]) == (
        to_db(starts),
        60,
    )
    assert last_event(db)["kind"] == "session_moved"

    refused(client, db, path, "/move", 400, "That moment has passed", **future(-2))


def test_cancelling_the_planned_session(client, db, scene):
    path = f"{scene['bob']}/engagements/{scene['planned']}"
    page = opened(client, path)
    cancelled = send(client, form_for(page, "/cancel"))
    assert cancelled.status_code == 303
    assert row(db, "SELECT count(*) FROM sessions WHERE id = ?", scene["session"]) == (0,)
    assert last_event(db)["kind"] == "session_cancelled"
    before = dump(db)
    again = send(client, form_for(page, "/cancel"))  # a second tab: that session is gone
    assert again.status_code == 404
    assert dump(db) == before


def test_reopening_an_ended_engagement_with_or_without_a_plan(client, db, scene):
    path = f"{scene['bob']}/engagements/{scene['ended']}/reopen"
    page = opened(client, path)
    assert "ended on" in text(page)
    refused(client, db, path, "/reopen", 400, "That moment has passed", **future(-1))
    refused(client, db, path, "/reopen", 400, "Please fill in the time", **future(2) | {"time": ""})

    reopened = send(client, form_for(page, "/reopen"))
    assert reopened.status_code == 303
    assert row(db, "SELECT status FROM engagements WHERE id = ?", scene["ended"]) == ("active",)
    assert row(
        db,
        "SELECT count(*) FROM sessions WHERE engagement_id = ? AND status = 'planned'",
        scene["ended"],
    ) == (0,)
    before = dump(db)
    again = send(client, form_for(page, "/reopen"))
    assert again.status_code == 409
    assert "This engagement is active already" in text(again)
    assert dump(db) == before
    # Now the same link offers to plan.
    assert form_for(opened(client, path), "/plan")


def test_reopening_and_planning_at_once(client, db, scene):
    path = f"{scene['bob']}/engagements/{scene['ended']}/reopen"
    reopened = press(client, path, "/reopen", **future(5), minutes=30)
    assert reopened.status_code == 303
    assert row(
        db,
        "SELECT minutes FROM sessions WHERE engagement_id = ? AND status = 'planned'",
        scene["ended"],
    ) == (30,)


def test_members_join_and_leave_a_group_from_the_page(client, db, scene):
    path = f"{scene['bob']}/engagements/{scene['group']}"
    added = press(
        client, path, "/members", **{"new-name": "Jan Jansen", "new-email": "jan@example.org"}
    )
    assert added.status_code == 303
    page = opened(client, path)
    assert "Jan Jansen" in text(page)
    refused(
        client,
        db,
        path,
        "/members",
        400,
        "“jan@” is not an e-mail address",
        **{"new-name": "X", "new-email": "jan@"},
    )
    refused(client, db, path, "/members", 400, "Please choose a client, or fill in a new one.")
    refused(
        client,
        db,
        path,
        "/members",
        409,
        "This client is a member of the group already.",
        **{"new-name": "Jan", "new-email": "jan@example.org"},
    )

    stale = form_for(page, f"/members/{scene['member']}/remove")
    removed = send(client, stale)
    assert removed.status_code == 303
    assert row(db, "SELECT status FROM members WHERE id = ?", scene["member"]) == ("left",)
    before = dump(db)
    again = send(client, stale)
    assert again.status_code == 409 and "has left the group already" in text(again)
    assert dump(db) == before
    # Whoever left can be added back: they are one of Bob's clients.
    anna = row(db, "SELECT client_id FROM members WHERE id = ?", scene["member"])[0]
    assert press(client, path, "/members", client=anna).status_code == 303
    assert row(db, "SELECT status FROM members WHERE id = ?", scene["member"]) == ("active",)


def test_who_asked_to_come_back_and_when(app, client, db, scene, smtp):
    deliver(app, db, later_now())
    (outcome,) = [m for m in smtp.to("carl@example.org") if "welcome back" in m["Subject"]]
    (link,) = links_in(outcome)
    token = token_of(link)
    page = opened(client, f"/b/{token}")
    assert send(client, form_for(page, f"/b/{token}"), message="Can we talk?").status_code == 303
    overview = text(opened(client, scene["bob"]))
    day = datetime.now(UTC).astimezone(AMSTERDAM)
    assert f"Carl Client asked for a new session on {day.day} {day:%B} {day.year}." in overview
    assert "Reopen and plan a session" in overview
    assert "Carl Client asked for a new session" in text(
        opened(client, f"{scene['bob']}/engagements/{scene['ended']}")
    )
    assert "Carl Client asked" not in text(opened(client, scene["eve"]))


# Every new form of the coach's pages: the page it is on, and what a person fills in.
ACTIONS = {
    "start": ("/start", "/start", NEW),
    "held": ("/engagements/{group}", "/held", {}),
    "plan": ("/engagements/{group}/plan", "/plan", "FUTURE"),
    "move": ("/engagements/{planned}/move", "/sessions/{session}/move", "FUTURE"),
    "cancel": ("/engagements/{planned}", "/sessions/{session}/cancel", {}),
    "reopen": ("/engagements/{ended}/reopen", "/reopen", {}),
    "add member": (
        "/engagements/{group}",
        "/members",
        {"new-name": "K", "new-email": "k@example.org"},
    ),
    "remove member": ("/engagements/{group}", "/members/{member}/remove", {}),
}


def action(scene, name):
    page, action_end, fields = ACTIONS[name]
    fields = future(6) if fields == "FUTURE" else fields
    return scene["bob"] + page.format(**scene), action_end.format(**scene), fields


@pytest.mark.parametrize("name", ACTIONS)
def test_every_form_needs_a_persons_post(client, db, scene, name):
    path, action_end, fields = action(scene, name)
    form = form_for(opened(client, path), action_end)
    before = dump(db)
    data = submission(form) | fields
    for sent in ({k: v for k, v in data.items() if k != "served"}, data | {"website": "http://x"}):
        answer = client.post(form["action"], data=sent)
        assert answer.status_code == 200
        assert ASK_AGAIN in text(answer)
    assert dump(db) == before
    assert send(client, form, **fields).status_code == 303  # the same, by a person


@pytest.mark.parametrize("name", ACTIONS)
def test_another_coachs_link_changes_nothing_of_bobs(client, db, scene, name):
    path, action_end, fields = action(scene, name)
    form = form_for(opened(client, path), action_end)
    before = dump(db)
    eve_token, bob_token = scene["eve"].rsplit("/", 1)[1], scene["bob"].rsplit("/", 1)[1]
    if name != "start":  # Eve's own start page is hers to use
        assert client.get(path.replace(bob_token, eve_token)).status_code == 404
        answer = client.post(
            form["action"].replace(bob_token, eve_token), data=submission(form) | fields
        )
        assert answer.status_code == 404
        assert "Career" not in answer.text and "Team" not in answer.text
    assert dump(db) == before


def test_a_link_that_does_not_open_changes_nothing(client, db, scene):
    before = dump(db)
    for name in ACTIONS:
        path, action_end, fields = action(scene, name)
        form = form_for(opened(client, path), action_end)
        made_up = "/c/" + "A" * 43
        answer = client.post(
            form["action"].replace(scene["bob"], made_up), data=submission(form) | fields
        )
        assert answer.status_code == 404
    assert dump(db) == before


def test_looking_at_every_page_changes_nothing(client, db, scene):
    pages = ["/c", scene["bob"], *{action(scene, name)[0] for name in ACTIONS}]
    pages += [
        f"{scene['bob']}/engagements/{scene['planned']}/plan",
        f"{scene['bob']}/engagements/{scene['group']}/reopen",
    ]
    before = dump(db)
    for path in pages:
        assert client.get(path).status_code == 200, path
        assert client.head(path).status_code == 200, path
    assert dump(db) == before


def test_the_pages_keep_their_link_to_themselves(client, scene):
    for name in ACTIONS:
        answer = opened(client, action(scene, name)[0])
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-store"
        assert "Content-Security-Policy" in answer.headers


def test_a_dutch_coach_works_in_dutch(client, db, scene, extracted):  # noqa: F811
    eve, eves = scene["eve"], scene["eves"]
    pages = [eve, f"{eve}/start", f"{eve}/engagements/{eves}", f"{eve}/engagements/{eves}/plan"]
    for path in pages:
        shown = text(opened(client, path))
        for sentence in english_sentences(extracted):
            assert sentence not in shown, (path, sentence)
    answer = press(client, f"{eve}/engagements/{eves}/plan", "/plan", **future(-1))
    assert answer.status_code == 400
    assert "Dat moment is al voorbij" in text(answer)
    answer = press(client, f"{eve}/start", "/start")
    assert "Kies een cliënt, of vul een nieuwe in." in text(answer)
    held = press(client, f"{eve}/engagements/{eves}", "/held")
    assert held.status_code == 303
    again = opened(client, f"{eve}/engagements/{eves}/plan")
    assert not [f for f in forms_of(again) if f["action"].endswith("/plan")]  # says why instead
    assert "Er wacht een ronde op beslissingen" in text(again)


# --- a coach's whole month without the command line -------------------------------------------


def newest_mail(smtp, address: str):
    return smtp.to(address)[-1]


def coach_paths(message) -> dict[str, str]:
    """The coach pages a mail links to, by what they do: overview, plan, reopen."""
    paths = {}
    for path in mailed_links(message):
        tail = path.rsplit("/", 1)[1]
        paths[tail if tail in ("plan", "reopen") else "overview"] = path
    return paths


def tick(run, now: datetime):
    """What cron runs, at a later moment: rounds open and close, mail goes out."""
    result = run("tick", "--now", now.isoformat())
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_a_coachs_whole_month_without_the_command_line(
    app,
    db,
    client,
    smtp,
    run,
    lang,
    extracted,  # noqa: F811
):
    seen = []  # every page and mail the coach reads, to check the language at the end

    def look(path):
        before = dump(db)
        page = opened(client, path)
        assert client.head(path).status_code == 200
        assert dump(db) == before  # a scanner opening the link changes nothing
        seen.append(text(page))
        return page

    # The operator added the coach; from here on the coach uses only mail and pages.
    add_person(db, "coach", "Bob Coach", "bob@example.org", lang, T0)
    overview = sign_in(app, db, client, smtp, "bob@example.org")
    seen.append(text_of(newest_mail(smtp, "bob@example.org")))
    look(overview)

    # Start an engagement with a new client.
    start = look(f"{overview}/start")
    started = send(
        client,
        form_for(start, "/start"),
        **{"new-1-name": "Anna de Vries", "new-1-email": "anna@example.org", "new-1-lang": lang},
        title="Career",
    )
    assert started.status_code == 303
    engagement_page = started.headers["Location"]
    engagement_id = int(engagement_page.rsplit("/", 1)[1])

    # The session took place: record it; everyone gets the question.
    held = send(client, form_for(look(engagement_page), "/held"))
    assert held.status_code == 303
    deliver(app, db, later_now())
    bobs = newest_mail(smtp, "bob@example.org")
    seen.append(text_of(bobs))
    assert "overview" in coach_paths(bobs)  # the coach's decision mail links to the overview
    (annas_link,) = [link for link in links_in(newest_mail(smtp, "anna@example.org"))
                     if link.endswith("/continue")]  # fmt: skip
    annas_page = opened(client, f"/d/{token_of(annas_link)}")
    assert (
        send(
            client, form_for(annas_page, f"/d/{token_of(annas_link)}"), choice="continue"
        ).status_code
        == 303
    )

    # Bob decides on his overview (the page the link in his mail opens).
    mine = look(overview)
    round_id = row(db, "SELECT id FROM rounds WHERE engagement_id = ?", engagement_id)[0]
    decided = send(client, form_for(mine, f"/rounds/{round_id}"), choice="continue")
    assert decided.status_code == 303
    assert row(db, "SELECT outcome FROM rounds WHERE id = ?", round_id) == ("continue",)

    # "We continue": the mail's own link plans the next session.
    smtp.clear()
    deliver(app, db, later_now())
    we_continue = newest_mail(smtp, "bob@example.org")
    seen.append(text_of(we_continue))
    links = coach_paths(we_continue)
    assert set(links) == {"overview", "plan"}
    plan_page = look(links["plan"])
    when = future(7, "10:00")
    planned_ = send(client, form_for(plan_page, "/plan"), **when, minutes=60)
    assert planned_.status_code == 303
    session_id = row(db, "SELECT id FROM sessions WHERE status = 'planned'")[0]

    # Move it, a day later and half an hour longer.
    move_page = look(f"{engagement_page}/move")
    moved_to = future(8, "11:00")
    moved = send(client, form_for(move_page, "/move"), **moved_to, minutes=90)
    assert moved.status_code == 303
    starts = datetime.fromisoformat(f"{moved_to['date']}T11:00").replace(tzinfo=AMSTERDAM)
    assert row(db, "SELECT starts_at, minutes FROM sessions WHERE id = ?", session_id) == (
        to_db(starts),
        90,
    )

    # The session takes place; nobody answers; at the deadline the engagement ends by silence.
    tick(run, starts + timedelta(minutes=91))
    assert row(db, "SELECT status FROM sessions WHERE id = ?", session_id) == ("held",)
    smtp.clear()
    tick(run, starts + timedelta(days=8))
    assert row(db, "SELECT status, end_reason FROM engagements WHERE id = ?", engagement_id) == (
        "ended",
        "undecided",
    )
    seen.append(text_of(newest_mail(smtp, "bob@example.org")))
    welcome = [link for link in links_in(newest_mail(smtp, "anna@example.org")) if "/b/" in link]
    (welcome_link,) = welcome

    # Anna asks to come back; Bob's mail has "Reopen and plan a session".
    ask = opened(client, f"/b/{token_of(welcome_link)}")
    asked = send(client, form_for(ask, f"/b/{token_of(welcome_link)}"), message="Shall we?")
    assert asked.status_code == 303
    smtp.clear()
    deliver(app, db, later_now())
    come_back = newest_mail(smtp, "bob@example.org")
    seen.append(text_of(come_back))
    assert "python cli.py" not in text_of(come_back)
    links = coach_paths(come_back)
    assert set(links) == {"overview", "reopen"}
    shown = look(links["overview"])
    assert "Anna de Vries" in text(shown)  # who asked to come back, and when
    reopen_page = look(links["reopen"])
    again = future(14, "09:30")
    reopened = send(client, form_for(reopen_page, "/reopen"), **again)
    assert reopened.status_code == 303
    assert row(db, "SELECT status FROM engagements WHERE id = ?", engagement_id) == ("active",)
    assert row(
        db,
        "SELECT count(*) FROM sessions WHERE engagement_id = ? AND status = 'planned'",
        engagement_id,
    ) == (1,)
    look(reopened.headers["Location"])

    kinds = [
        r[0]
        for r in db.conn.execute(
            "SELECT kind FROM events WHERE engagement_id = ? ORDER BY id", [engagement_id]
        )
    ]
    for kind in ("engagement_started", "session_held", "session_planned", "session_moved",
                 "engagement_ended", "welcome_back_asked", "engagement_reopened"):  # fmt: skip
        assert kind in kinds
    if lang == "nl":
        for shown_text in seen:
            for sentence in english_sentences(extracted):
                assert sentence not in shown_text


# --- the links in a coach's mails -------------------------------------------------------------


def decision_tokens(app, db, smtp, engagement_id) -> dict[str, str]:
    """`session done`, delivered: each party's decision token, from their mail."""
    smtp.clear()
    record_session_done(db, engagement_id, datetime.now(UTC), POLICY)
    deliver(app, db, later_now())
    return {
        address: token_of(links_in(smtp.to(address)[-1])[0])
        for address in ("bob@example.org", "anna@example.org")
    }


def test_the_coachs_decision_page_opens_the_overview(app, db, client, smtp, engagement):
    tokens = decision_tokens(app, db, smtp, engagement)
    page = opened(client, f"/d/{tokens['bob@example.org']}")
    (path,) = [a for a in re.findall(r'href="([^"]+)"', page.text) if a.endswith("/overview")]
    before = dump(db)
    offer = opened(client, path)
    assert client.head(path).status_code == 200
    assert dump(db) == before  # opening the offer makes no link
    form = form_for(offer, "/overview")
    no_stamp = {k: v for k, v in submission(form).items() if k != "served"}
    assert ASK_AGAIN in text(client.post(form["action"], data=no_stamp))
    assert dump(db) == before

    made = send(client, form)
    assert made.status_code == 303
    assert "Overview for Bob Coach" in text(opened(client, made.headers["Location"]))
    assert last_event(db)["kind"] == "coach_link_made"


def test_a_clients_decision_page_offers_no_overview(app, db, client, smtp, engagement):
    tokens = decision_tokens(app, db, smtp, engagement)
    anna = tokens["anna@example.org"]
    assert "/overview" not in opened(client, f"/d/{anna}").text
    before = dump(db)
    assert client.get(f"/d/{anna}/overview").status_code == 404
    assert client.post(f"/d/{anna}/overview", data={}).status_code == 404
    assert dump(db) == before


def test_only_the_coachs_mails_carry_coach_links_and_only_until_delivery(
    app, db, client, smtp, engagement
):
    tokens = decision_tokens(app, db, smtp, engagement)
    assert not mailed_links(smtp.to("anna@example.org")[-1])
    (overview,) = mailed_links(smtp.to("bob@example.org")[-1])
    raw = overview.rsplit("/", 1)[1]
    assert raw not in dump(db)  # delivered: wiped from the outbox; the token only hashed
    assert "Overview for Bob Coach" in text(opened(client, overview))

    # A stop: the coach's outcome mail links to the overview, and to no planning.
    smtp.clear()
    anna = opened(client, f"/d/{tokens['anna@example.org']}")
    assert (
        send(client, form_for(anna, "/d/" + tokens["anna@example.org"]), choice="stop").status_code
        == 303
    )
    deliver(app, db, later_now())
    assert set(coach_paths(smtp.to("bob@example.org")[-1])) == {"overview"}
    assert not mailed_links(smtp.to("anna@example.org")[-1])


def test_a_coachs_expired_overview_links_go_when_a_new_one_is_made(app, db, client, smtp, people):
    from twoyes.tokens import new_coach_view_token

    path = sign_in(app, db, client, smtp, "bob@example.org")
    overview_links = "SELECT count(*) FROM tokens WHERE purpose = 'coach_view'"
    bob = row(db, "SELECT id FROM coaches WHERE email = 'bob@example.org'")[0]
    new_coach_view_token(db, bob, datetime.now(UTC) + timedelta(hours=23))
    assert row(db, overview_links) == (2,)
    assert client.get(path).status_code == 200
    new_coach_view_token(db, bob, datetime.now(UTC) + timedelta(hours=25))
    assert row(db, overview_links) == (2,)  # the first went, a new one came
    assert client.get(path).status_code == 404


def test_a_coach_page_that_does_not_open_shows_the_way_to_a_fresh_link(client, db, scene):
    made_up = "/c/" + "A" * 43
    eve_on_bobs = f"{scene['eve']}/engagements/{scene['planned']}"
    answers = [client.get(path) for path in (made_up, f"{made_up}/start")]
    assert {answer.status_code for answer in answers} == {404}
    assert len({answer.text for answer in answers}) == 1  # the same page, whatever the reason
    (fresh,) = [f for f in re.findall(r'href="([^"]+)"', answers[0].text) if f == "/c"]
    assert client.get(fresh).status_code == 200
    # Eve's own link on Bob's engagement: the same page, in Eve's language, nothing of Bob's.
    eves = client.get(eve_on_bobs)
    assert eves.status_code == 404
    assert "Career" not in eves.text and 'href="/c"' in eves.text
