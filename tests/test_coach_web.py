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
from conftest import POLICY, T0, deliver, dump, html_of, text_of
from test_cli import ok as cli_ok
from test_cli import refused as cli_refused
from test_language import english_sentences, extracted  # noqa: F401 (a fixture)
from test_web import AMSTERDAM, Html, submission

from twoyes.people import add_person
from twoyes.sessions import record_session_done
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


def send(client, form: dict, **fields):
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
