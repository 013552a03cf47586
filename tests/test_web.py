"""The web pages of SPEC section 4, driven the way people (and mail scanners) use them.

Every token comes from a mail the real SMTP server accepted; every request goes
through the real app. The web reads the real clock, so where time has to pass
for it (a round closed 31 days ago, an expired welcome-back link) the stored
instants are moved back with an UPDATE: that is data, not a mock.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from urllib.parse import urlsplit

import pytest
from support import (
    AMSTERDAM,
    POLICY,
    T0,
    Html,
    deliver,
    dump,
    html_of,
    links_in,
    open_mail,
    submission,
    text_of,
    token_of,
    year_unless_now,
)

from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.rounds import close_overdue_rounds, send_reminders
from twoyes.sessions import record_session_done
from twoyes.times import to_db
from twoyes.tokens import hash_token
from twoyes.web import create_app

NOT_RECORDED = "Please confirm your choice by pressing the button once more."
HREF = re.compile(r'href="([^"]+)"')


# --- reading pages the way a browser does ---------------------------------------------------


def text(response) -> str:
    return Html(response.text).text


def form_of(client, path: str) -> dict[str, str]:
    """Open a page and return what its form would send, as a person sees it."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return submission(Html(page.text).form())


def decide(client, token: str, **fields) -> object:
    """Open the decision page, fill in the fields, press a button (choice=...)."""
    data = form_of(client, f"/d/{token}")
    data.update({key: str(value) for key, value in fields.items()})
    return client.post(f"/d/{token}", data=data)


def without_stamp(markup: str) -> str:
    return re.sub(r'name="served" value="[^"]*"', 'name="served" value=""', markup)


# --- mail -----------------------------------------------------------------------------------


def deliver_now(app, db):
    """Deliver what the web queued: it queues at the real clock, not at T0."""
    return deliver(app, db, datetime.now(UTC) + timedelta(minutes=1))


def recipients(message) -> list[str]:
    return [address for _, address in getaddresses([message["To"]])]


def all_links(message) -> list[str]:
    """Every link a scanner would open: those in the text part and in the HTML part."""
    return sorted(set(links_in(message)) | set(HREF.findall(html_of(message))))


def open_round(app, db, smtp, engagement_id: int, now: datetime = T0) -> dict[str, str]:
    """`session done`, deliver, and read each party's token from their mail."""
    smtp.clear()
    record_session_done(db, engagement_id, now, POLICY)
    deliver(app, db, now + timedelta(minutes=1))
    tokens = {}
    for message in smtp.messages:
        links = links_in(message)
        assert {link.rsplit("/", 1)[1] for link in links} == {"continue", "stop"}
        assert len({token_of(link) for link in links}) == 1, links
        (address,) = recipients(message)
        tokens[address] = token_of(links[0])
    return tokens


def when(moment: datetime) -> str:
    """How a person in Amsterdam reads an instant on the pages and in the mails."""
    local = moment.astimezone(AMSTERDAM)
    return f"{local:%A} {local.day} {local:%B}{year_unless_now(local.year)} at {local:%H:%M}"


def decision_row(db, email: str, round_id: int | None = None) -> dict:
    """The latest decision of a client (by address) or of the coach ("coach")."""
    sql = (
        "SELECT decisions.* FROM decisions LEFT JOIN clients ON clients.id = decisions.client_id"
        " WHERE coalesce(clients.email, 'coach') = ?"
    )
    params = [email]
    if round_id is not None:
        sql += " AND decisions.round_id = ?"
        params.append(round_id)
    rows = db.conn.execute(sql + " ORDER BY decisions.id DESC", params).fetchall()
    return dict(rows[0])


def round_of(db, engagement_id: int) -> dict:
    return dict(
        db.conn.execute(
            "SELECT * FROM rounds WHERE engagement_id = ? ORDER BY id DESC", [engagement_id]
        ).fetchone()
    )


ANNA, BOB, CARL = "anna@example.org", "bob@example.org", "carl@example.org"


# --- GET /d/<token>: the decision page ------------------------------------------------------


def test_client_page_shows_who_session_deadline_so_far_and_the_form(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)
    (mail,) = smtp.to(ANNA)
    mail_deadline = re.search(r"If we hear nothing by (.+?), we take it", text_of(mail)).group(1)
    before = dump(db)

    page = client.get(f"/d/{tokens[ANNA]}")

    assert page.status_code == 200
    seen = text(page)
    assert "Another session?" in seen
    assert "For Anna de Vries" in seen
    assert "Coach Bob Coach" in seen
    assert "Engagement Career" in seen
    assert f"Session {when(T0 - timedelta(minutes=60))}" in seen
    assert f"Please decide by {when(T0 + timedelta(days=7))}" in seen
    assert mail_deadline == when(T0 + timedelta(days=7)), "the page and the mail agree"
    assert "You and Bob Coach each decide for yourself" in seen
    assert "Recorded:" not in seen

    form = Html(page.text).form()
    assert form["method"] == "post"
    assert form["action"] == f"/d/{tokens[ANNA]}"
    buttons = {(b["name"], b["value"], b.get("type"), b["text"].strip()) for b in form["buttons"]}
    assert buttons == {
        ("choice", "continue", "submit", "Continue"),
        ("choice", "stop", "submit", "Stop"),
    }
    reasons = [i["value"] for i in form["inputs"] if i.get("name") == "reason"]
    assert reasons == ["on_my_own", "not_useful", "other"]
    assert all(i["type"] == "radio" for i in form["inputs"] if i.get("name") == "reason")
    assert [o["value"] for o in form["selects"]["usefulness"]] == [""] + [str(n) for n in range(11)]
    assert form["textareas"]["note"]["attrs"]["maxlength"] == "2000"
    assert submission(form)["note"] == ""
    assert submission(form)["usefulness"] == ""
    assert "reason" not in submission(form), "no reason is chosen for the person"
    assert dump(db) == before


def test_coach_page_shows_the_coach_role_reasons_and_each_client(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    before = dump(db)

    page = client.get(f"/d/{tokens[BOB]}")

    assert page.status_code == 200
    seen = text(page)
    assert "For Bob Coach (coach)" in seen
    assert f"Please decide by {when(T0 + timedelta(days=7))}" in seen
    assert "Anna de Vries: not decided yet" in seen
    form = Html(page.text).form()
    reasons = [i["value"] for i in form["inputs"] if i.get("name") == "reason"]
    assert reasons == ["cannot_help", "values", "other"]
    assert {b["value"] for b in form["buttons"]} == {"continue", "stop"}
    assert dump(db) == before


@pytest.mark.parametrize("choice", ["continue", "stop"])
def test_mail_links_preselect_their_choice_and_change_nothing(
    app, db, client, smtp, engagement, choice
):
    tokens = open_round(app, db, smtp, engagement)
    before = dump(db)

    chosen = {
        ("continue", ANNA): "You chose: another session would be useful.",
        ("continue", BOB): "You chose: another session would be useful.",
        ("stop", ANNA): "You chose: I have what I need for now.",
        ("stop", BOB): "You chose: no further session for now.",
    }
    other = "stop" if choice == "continue" else "continue"
    for who, token in tokens.items():
        page = client.get(f"/d/{token}/{choice}")
        assert page.status_code == 200
        assert client.head(f"/d/{token}/{choice}").status_code == 200
        seen = text(page)
        assert chosen[choice, who] + " Nothing is recorded until you press Confirm." in seen
        # One answer to confirm: above the optional fields, and again below them.
        form = Html(page.text).form()
        buttons = {(b["name"], b["value"], b["text"].strip()) for b in form["buttons"]}
        assert buttons == {("choice", choice, "Confirm")}
        # No autofocus: on a phone it would scroll past who, which session and the deadline.
        assert all("autofocus" not in b for b in form["buttons"])
        assert f'href="/d/{token}/{other}"' in page.text, "the other answer is one tap away"
        # A reason is asked only of whoever came to stop.
        reasons = [i["value"] for i in form["inputs"] if i.get("name") == "reason"]
        assert bool(reasons) == (choice == "stop")
        assert ("If you stop" in seen) is False
        assert "Recorded:" not in seen

    assert dump(db) == before
    assert round_of(db, engagement)["status"] == "open"


# --- POST /d/<token>: recording -------------------------------------------------------------


def test_post_records_and_redirects_to_the_page_that_shows_it(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    note = "<script>alert('hi')</script> & thanks"

    answer = decide(client, tokens[ANNA], choice="continue", usefulness=7, note=note)

    assert answer.status_code == 303
    assert urlsplit(answer.headers["Location"]).path == f"/d/{tokens[ANNA]}"
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200
    seen = text(page)
    assert "Recorded: you would like another session." in seen
    assert "You rated this session 7 out of 10." in seen
    assert f"Your note: {note}" in seen
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(" in page.text
    assert f"You can still change this into stop until {when(T0 + timedelta(days=7))}" in seen
    assert "Change your answer" in seen
    row = decision_row(db, ANNA)
    assert (row["choice"], row["usefulness"], row["note"]) == ("continue", 7, note)
    assert round_of(db, engagement)["status"] == "open"


def test_both_continue_closes_the_round_and_the_outcome_mail_follows(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)
    assert decide(client, tokens[ANNA], choice="continue").status_code == 303
    assert round_of(db, engagement)["status"] == "open"
    assert decide(client, tokens[BOB], choice="continue").status_code == 303

    assert (round_of(db, engagement)["status"], round_of(db, engagement)["outcome"]) == (
        "closed",
        "continue",
    )
    smtp.clear()
    deliver_now(app, db)
    (to_anna,) = smtp.to(ANNA)
    (to_bob,) = smtp.to(BOB)
    assert to_anna["Subject"] == to_bob["Subject"] == "We continue"
    assert "You and Bob Coach both chose to continue, so there will" in text_of(to_anna)
    assert "You and Anna de Vries chose to continue. Please plan" in text_of(to_bob)
    for token in tokens.values():
        page = client.get(f"/d/{token}")
        assert page.status_code == 200
        assert "This round is closed" in text(page)
        assert "there will be another session" in text(page)
        assert Html(page.text).forms == []


def test_client_stop_closes_the_round_and_mails_the_outcome_with_welcome_back(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)

    answer = decide(client, tokens[ANNA], choice="stop", reason="on_my_own", usefulness=9)

    assert answer.status_code == 303
    seen = text(client.get(f"/d/{tokens[ANNA]}"))
    assert "Recorded: you have what you need for now." in seen
    assert "Your reason: I can go on by myself for now." in seen
    assert "You rated this session 9 out of 10." in seen
    assert "This round is closed" in seen
    assert "This was the last session for now" in seen
    engagement_row = db.conn.execute(
        "SELECT status, end_reason FROM engagements WHERE id = ?", [engagement]
    ).fetchone()
    assert tuple(engagement_row) == ("ended", "client_stopped")

    smtp.clear()
    deliver_now(app, db)
    (to_anna,) = smtp.to(ANNA)
    (to_bob,) = smtp.to(BOB)
    assert "Going on by yourself is the best outcome" in text_of(to_anna)
    assert [urlsplit(link).path.split("/")[1] for link in links_in(to_anna)] == ["b"]
    assert "Anna de Vries: stop, usefulness 9/10, I can go on by myself for now" in text_of(to_bob)
    assert links_in(to_bob) == []


def test_a_continue_can_still_become_a_stop_while_the_round_is_open(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)
    assert decide(client, tokens[ANNA], choice="continue").status_code == 303
    assert "Change your answer" in text(client.get(f"/d/{tokens[ANNA]}"))

    assert decide(client, tokens[ANNA], choice="stop", reason="not_useful").status_code == 303

    row = decision_row(db, ANNA)
    assert (row["choice"], row["reason"]) == ("stop", "not_useful")
    assert (round_of(db, engagement)["status"], round_of(db, engagement)["outcome"]) == (
        "closed",
        "stop",
    )
    changed = db.conn.execute(
        "SELECT detail FROM events WHERE kind = 'decision_recorded' ORDER BY id DESC"
    ).fetchone()
    assert json.loads(changed["detail"])["changed_from"] == "continue"


@pytest.mark.parametrize(
    ("closing", "late", "outcome_words"),
    [
        # Anna stops; she (still holding the page) and Bob both press a button afterwards.
        ((ANNA, "stop"), ANNA, "This was the last session for now"),
        ((ANNA, "stop"), BOB, "This was the last session for now"),
        # Bob stops while Anna's page is open.
        ((BOB, "stop"), ANNA, "This was the last session for now"),
    ],
)
def test_post_on_a_closed_round_is_409_with_the_outcome(
    app, db, client, smtp, engagement, closing, late, outcome_words
):
    tokens = open_round(app, db, smtp, engagement)
    held_open = form_of(client, f"/d/{tokens[late]}")  # the page as it was before closing
    who, choice = closing
    assert decide(client, tokens[who], choice=choice).status_code == 303
    before = dump(db)

    answer = client.post(f"/d/{tokens[late]}", data=held_open | {"choice": "continue"})

    assert answer.status_code == 409
    seen = text(answer)
    assert "This round is closed" in seen
    assert "Outcome" in seen
    assert outcome_words in seen
    # No form to decide with; Anna, whose sessions ended, may ask to come back right there.
    actions = [form["action"] for form in Html(answer.text).forms]
    assert actions == ([f"/d/{tokens[late]}/welcome-back"] if late == ANNA else [])
    assert dump(db) == before


def test_post_after_both_continued_is_409_showing_the_next_session(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)
    held_open = form_of(client, f"/d/{tokens[ANNA]}")
    assert decide(client, tokens[ANNA], choice="continue").status_code == 303
    assert decide(client, tokens[BOB], choice="continue").status_code == 303
    before = dump(db)

    answer = client.post(f"/d/{tokens[ANNA]}", data=held_open | {"choice": "stop"})

    assert answer.status_code == 409
    assert "there will be another session" in text(answer)
    assert dump(db) == before


# --- POST /d/<token>: bad values ------------------------------------------------------------

USEFULNESS = "Usefulness is a whole number from 0 to 10."
REASON = "Please choose one of the reasons in the list, or none."
BAD_VALUES = [
    pytest.param({"choice": "continue", "usefulness": "11"}, USEFULNESS, id="usefulness-11"),
    pytest.param({"choice": "continue", "usefulness": "-1"}, USEFULNESS, id="usefulness-negative"),
    pytest.param({"choice": "continue", "usefulness": "abc"}, USEFULNESS, id="usefulness-abc"),
    pytest.param({"choice": "continue", "usefulness": "7.5"}, USEFULNESS, id="usefulness-fraction"),
    pytest.param(
        {"choice": "continue", "note": "x" * 2001},
        "A note can be at most 2,000 characters; please shorten it.",
        id="note-2001",
    ),
    pytest.param({"choice": "stop", "reason": "bogus"}, REASON, id="unknown-reason"),
    pytest.param({"choice": "stop", "reason": "values"}, REASON, id="coach-reason-from-client"),
    pytest.param({}, "Please press Continue or Stop.", id="no-choice-form-submit"),
    pytest.param({"choice": "maybe"}, "Please choose Continue or Stop.", id="choice-maybe"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_VALUES)
def test_bad_values_get_a_400_page_saying_what_is_wrong_and_change_nothing(
    app, db, client, smtp, engagement, fields, message
):
    tokens = open_round(app, db, smtp, engagement)
    data = form_of(client, f"/d/{tokens[ANNA]}") | fields
    before = dump(db)

    answer = client.post(f"/d/{tokens[ANNA]}", data=data)

    assert answer.status_code == 400
    assert message in text(answer)
    assert Html(answer.text).form()["method"] == "post", "the person can correct and resend"
    assert dump(db) == before


def test_a_400_page_keeps_what_the_person_wrote(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    data = form_of(client, f"/d/{tokens[ANNA]}")
    data |= {"choice": "continue", "usefulness": "12", "note": "My thoughts <b>so far</b>"}

    answer = client.post(f"/d/{tokens[ANNA]}", data=data)

    assert answer.status_code == 400
    form = Html(answer.text).form()
    assert form["textareas"]["note"]["text"] == "My thoughts <b>so far</b>"
    assert "<b>so far</b>" not in answer.text


def test_a_bad_choice_is_not_shown_as_an_opened_stop_link(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    data = form_of(client, f"/d/{tokens[ANNA]}") | {"choice": "maybe"}

    answer = client.post(f"/d/{tokens[ANNA]}", data=data)

    assert answer.status_code == 400
    assert "Nothing is recorded until you press" not in text(answer)
    buttons = Html(answer.text).form()["buttons"]
    assert not any("preselected" in b.get("class", "") for b in buttons)


def test_a_note_that_fits_the_textarea_is_accepted_with_its_line_breaks(
    app, db, client, smtp, engagement
):
    """A textarea counts a line break as one character against maxlength=2000, but the
    browser sends it as CR LF: a note that fit in the box must not be refused."""
    tokens = open_round(app, db, smtp, engagement)
    typed = ("a" * 99 + "\n") * 20  # 2,000 characters in the box, 20 lines
    sent = typed.replace("\n", "\r\n")  # what the browser posts: 2,020 characters

    answer = decide(client, tokens[ANNA], choice="continue", note=sent)

    assert answer.status_code == 303, text(answer)
    assert decision_row(db, ANNA)["note"] == typed.strip()


@pytest.mark.parametrize(
    "fields",
    [
        {"choice": "continue", "usefulness": "0"},
        {"choice": "continue", "usefulness": "10"},
        {"choice": "continue", "note": "y" * 2000},
        {"choice": "stop", "reason": "other", "note": "Zoë — ünïcode ✓"},
    ],
    ids=["usefulness-0", "usefulness-10", "note-2000", "unicode-note"],
)
def test_values_at_the_edges_are_recorded(app, db, client, smtp, engagement, fields):
    tokens = open_round(app, db, smtp, engagement)

    answer = decide(client, tokens[ANNA], **fields)

    assert answer.status_code == 303
    row = decision_row(db, ANNA)
    assert row["choice"] == fields["choice"]
    if "usefulness" in fields:
        assert row["usefulness"] == int(fields["usefulness"])
    if "note" in fields:
        assert row["note"] == fields["note"]
        assert fields["note"][:50] in text(client.get(f"/d/{tokens[ANNA]}"))


def test_a_continue_after_the_deadline_does_not_count(app, db, client, smtp, engagement):
    """R4: whoever has not answered by the deadline counts as stop, even before cron ran."""
    tokens = open_round(app, db, smtp, engagement)
    forms = {address: form_of(client, f"/d/{token}") for address, token in tokens.items()}
    db.conn.execute(
        "UPDATE rounds SET deadline_at = ? WHERE engagement_id = ?",
        [to_db(datetime.now(UTC) - timedelta(minutes=5)), engagement],
    )
    before = dump(db)

    answers = [
        client.post(f"/d/{tokens[address]}", data=forms[address] | {"choice": "continue"})
        for address in (ANNA, BOB)
    ]

    assert [answer.status_code for answer in answers] == [409, 409]
    assert "The deadline for this round has passed" in text(answers[0])
    assert dump(db) == before
    assert round_of(db, engagement)["outcome"] != "continue"
    page = client.get(f"/d/{tokens[ANNA]}/continue")
    assert page.status_code == 200
    assert "The deadline has passed" in text(page)
    assert Html(page.text).forms == [], "no form to answer with any more"
    assert dump(db) == before


def test_a_post_in_the_deadline_second_itself_does_not_count(app, db, client, smtp, engagement):
    """R4 at the boundary, on the web's real clock: a continue posted within the very second
    of the deadline is refused (409) and changes nothing, the page says the deadline has
    passed, and close-undecided in that second ends the engagement undecided."""
    tokens = open_round(app, db, smtp, engagement)
    form = form_of(client, f"/d/{tokens[ANNA]}") | {"choice": "continue"}
    for _attempt in range(5):  # until both requests fall within the deadline's own second
        deadline = datetime.fromtimestamp(int(time.time()) + 1, UTC)
        db.conn.execute(
            "UPDATE rounds SET deadline_at = ? WHERE engagement_id = ?",
            [to_db(deadline), engagement],
        )
        before = dump(db)
        while time.time() < deadline.timestamp():
            time.sleep(0.002)
        answer = client.post(f"/d/{tokens[ANNA]}", data=form)
        page = client.get(f"/d/{tokens[ANNA]}")
        if time.time() < deadline.timestamp() + 1:
            break
    else:
        pytest.fail("the machine was too slow to post and look within one second, five times")

    assert answer.status_code == 409, answer.text
    assert "The deadline for this round has passed" in text(answer)
    assert "The deadline has passed" in text(page)
    assert dump(db) == before
    closed = close_overdue_rounds(db, deadline)
    assert [(row["outcome"], row["end_reason"]) for row in closed] == [("stop", "undecided")]
    assert decision_row(db, ANNA)["choice"] is None


# --- tokens that do not open ----------------------------------------------------------------


def tampered(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


def test_unknown_malformed_tampered_and_expired_tokens_get_the_same_404(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)
    real = tokens[ANNA]
    assert decide(client, real, choice="stop").status_code == 303
    smtp.clear()
    deliver_now(app, db)
    (outcome,) = smtp.to(ANNA)
    welcome = token_of(links_in(outcome)[0])
    expired = tokens[BOB]
    db.conn.execute(
        "UPDATE rounds SET closed_at = ? WHERE engagement_id = ?",
        [to_db(datetime.now(UTC) - timedelta(days=31)), engagement],
    )
    bad = {
        "unknown": "Q" * 43,
        "too-short": real[:20],
        "too-long": real + "x",
        "bad-characters": real[:42] + "!",
        "dots": "." * 43,
        "markup": "%3Cb%3Ehello",
        "tampered": tampered(real),
        "expired": expired,
        "welcome-back-token-as-decision": welcome,
    }
    before = dump(db)

    bodies = {}
    for name, token in bad.items():
        for method, path in [
            ("GET", f"/d/{token}"),
            ("GET", f"/d/{token}/continue"),
            ("GET", f"/d/{token}/stop"),
            ("POST", f"/d/{token}"),
        ]:
            answer = client.open(path, method=method, data={"choice": "continue"})
            assert answer.status_code == 404, (name, method, path)
            assert token not in answer.text
            assert "hello" not in answer.text
            bodies[(name, method, path)] = answer.text
        assert client.head(f"/d/{token}").status_code == 404
    for name, token in {**bad, "decision-token-as-welcome-back": real}.items():
        if name == "welcome-back-token-as-decision":
            continue
        for method in ("GET", "POST"):
            answer = client.open(f"/b/{token}", method=method, data={"message": "hi"})
            assert answer.status_code == 404, (name, method)
            bodies[(name, method, "/b/")] = answer.text

    assert len(set(bodies.values())) == 1, "every refusal reads the same"
    seen = text(client.get(f"/d/{bad['unknown']}"))
    assert "This link does not open" in seen
    for word in ("expired", "closed", "tamper", "invalid", "decision", "round"):
        assert word not in seen.lower()
    assert dump(db) == before


def test_a_closed_round_opens_read_only_for_30_days_then_404(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    assert decide(client, tokens[ANNA], choice="continue", usefulness=6).status_code == 303
    assert decide(client, tokens[BOB], choice="continue").status_code == 303
    unknown = client.get("/d/" + "Q" * 43).text

    def closed_days_ago(days: float) -> None:
        db.conn.execute(
            "UPDATE rounds SET closed_at = ? WHERE engagement_id = ?",
            [to_db(datetime.now(UTC) - timedelta(days=days)), engagement],
        )

    closed_days_ago(29)
    before = dump(db)
    for token in tokens.values():
        for path in (f"/d/{token}", f"/d/{token}/continue", f"/d/{token}/stop"):
            page = client.get(path)
            assert page.status_code == 200
            assert "This round is closed" in text(page)
            assert "there will be another session" in text(page)
            assert Html(page.text).forms == [], "read-only: no form"
    assert "You rated this session 6 out of 10." in text(client.get(f"/d/{tokens[ANNA]}"))
    assert dump(db) == before

    closed_days_ago(30.01)
    before = dump(db)
    for token in tokens.values():
        for path in (f"/d/{token}", f"/d/{token}/continue", f"/d/{token}/stop"):
            page = client.get(path)
            assert page.status_code == 404
            assert page.text == unknown
        assert client.post(f"/d/{token}", data={"choice": "stop"}).status_code == 404
    assert dump(db) == before


# --- scanners -------------------------------------------------------------------------------


def scan(client, messages, *, later: bool = False) -> int:
    """Do what Safe Links and friends do: GET and HEAD every link of every mail.

    `later`: days on, when a coach's overview link (good for a day) may be gone.
    """
    opened = 0
    for message in messages:
        for link in all_links(message):
            path = urlsplit(link).path
            expected = (200, 404) if later and path.startswith("/c/") else (200,)
            got = client.get(path, headers={"User-Agent": "Microsoft Office SafeLinks"})
            assert got.status_code in expected, link
            assert client.head(path).status_code in expected, link
            opened += 1
    return opened


def test_scanners_opening_every_link_of_every_mail_change_nothing(
    app, db, client, smtp, engagement
):
    # Decision mails.
    open_round(app, db, smtp, engagement)
    decision_mails = list(smtp.messages)
    before = dump(db)
    assert scan(client, decision_mails) == 5  # each party's three, and the coach's overview
    assert dump(db) == before

    # Reminders, with fresh links.
    smtp.clear()
    assert send_reminders(db, T0 + timedelta(days=5, minutes=1)) == 2
    deliver(app, db, T0 + timedelta(days=5, minutes=2))
    reminder_mails = list(smtp.messages)
    assert len(reminder_mails) == 2
    before = dump(db)
    assert scan(client, reminder_mails) == 5
    assert dump(db) == before
    assert round_of(db, engagement)["status"] == "open"

    # Anna stops through her reminder; the outcome mails carry a welcome-back link.
    (anna_reminder,) = [m for m in reminder_mails if ANNA in recipients(m)]
    assert decide(client, token_of(links_in(anna_reminder)[0]), choice="stop").status_code == 303
    smtp.clear()
    deliver_now(app, db)
    outcome_mails = list(smtp.messages)
    assert len(outcome_mails) == 2
    before = dump(db)
    assert scan(client, outcome_mails) == 2  # the welcome-back link, the coach's overview
    # Scanners come back later, too: every link of every mail, round closed.
    assert scan(client, decision_mails + reminder_mails + outcome_mails, later=True) == 12
    assert dump(db) == before
    assert not db.conn.execute("SELECT 1 FROM outbox WHERE status != 'sent'").fetchall()


# --- the human-POST rule --------------------------------------------------------------------


@pytest.mark.slow
def test_a_post_sooner_than_min_decision_seconds_is_not_recorded_but_later_is(
    settings, db, smtp, engagement
):
    slow = create_app({"TESTING": True, **settings, "MIN_DECISION_SECONDS": 3})
    client = slow.test_client()
    tokens = open_round(slow, db, smtp, engagement)
    path = f"/d/{tokens[ANNA]}/continue"
    page = client.get(path)
    pressed = submission(Html(page.text).form()) | {"choice": "continue"}
    before = dump(db)

    # A scanner that presses the button at once.
    hurried = client.post(f"/d/{tokens[ANNA]}", data=pressed)

    assert hurried.status_code == 200
    assert NOT_RECORDED in text(hurried)
    assert Html(hurried.text).form()["method"] == "post", "the page asks again"
    assert dump(db) == before

    time.sleep(3.1)  # a person reads, thinks, presses
    answer = client.post(f"/d/{tokens[ANNA]}", data=pressed)

    assert answer.status_code == 303
    assert decision_row(db, ANNA)["choice"] == "continue"


@pytest.mark.slow
def test_a_post_2_3_seconds_after_the_page_is_not_recorded_when_3_are_asked(
    settings, db, smtp, engagement
):
    """The stamp must measure MIN_DECISION_SECONDS, not whole seconds on the wall clock."""
    slow = create_app({"TESTING": True, **settings, "MIN_DECISION_SECONDS": 3})
    client = slow.test_client()
    tokens = open_round(slow, db, smtp, engagement)
    while not 0.85 <= time.time() % 1 < 0.88:  # serve the page late in a second
        time.sleep(0.005)
    served = time.monotonic()
    page = client.get(f"/d/{tokens[ANNA]}")
    pressed = submission(Html(page.text).form()) | {"choice": "continue"}
    before = dump(db)
    time.sleep(2.3 - (time.monotonic() - served))

    answer = client.post(f"/d/{tokens[ANNA]}", data=pressed)

    assert time.monotonic() - served < 3
    assert answer.status_code == 200
    assert NOT_RECORDED in text(answer)
    assert dump(db) == before


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda data, other: data | {"website": "http://spam.example"}, id="honeypot"),
        pytest.param(
            lambda data, other: {k: v for k, v in data.items() if k != "served"}, id="no-stamp"
        ),
        pytest.param(lambda data, other: data | {"served": ""}, id="empty-stamp"),
        pytest.param(
            lambda data, other: data | {"served": "1.ZZZZZZ.abcdefgh"}, id="made-up-stamp"
        ),
        pytest.param(
            lambda data, other: data | {"served": tampered(data["served"])}, id="tampered-stamp"
        ),
        pytest.param(
            lambda data, other: data | {"served": other["served"]}, id="other-partys-stamp"
        ),
    ],
)
def test_a_filled_honeypot_or_a_missing_or_forged_stamp_is_not_recorded(
    app, db, client, smtp, engagement, forge
):
    tokens = open_round(app, db, smtp, engagement)
    data = form_of(client, f"/d/{tokens[ANNA]}") | {"choice": "stop", "reason": "on_my_own"}
    other = form_of(client, f"/d/{tokens[BOB]}")
    before = dump(db)

    answer = client.post(f"/d/{tokens[ANNA]}", data=forge(data, other))

    assert answer.status_code == 200
    assert NOT_RECORDED in text(answer)
    assert "You chose: I have what I need for now." in text(answer), "the same choice, to confirm"
    assert dump(db) == before
    # The same person pressing the genuine form is recorded (MIN_DECISION_SECONDS is 0 here).
    assert client.post(f"/d/{tokens[ANNA]}", data=data).status_code == 303
    assert decision_row(db, ANNA)["choice"] == "stop"


def test_a_stamp_counts_only_on_the_form_it_was_served_with_and_shows_no_id(
    app, db, client, smtp, engagement
):
    """A welcome-back page's stamp on a decision page whose internal id happens to be the
    welcome-back member's id: refused, as each stamp is bound to its form's route and token.
    What a stamp shows is when its page was served, and nothing else."""
    carl = start_engagement(db, BOB, [CARL], T0)
    carls_round = open_round(app, db, smtp, carl)  # decisions 1 and 2; Anna is member 1
    welcome = welcome_back_token(app, db, client, smtp, engagement)
    (member_id,) = db.conn.execute("SELECT id FROM members WHERE engagement_id = ?", [engagement])
    same_id = next(
        token
        for token in carls_round.values()
        if db.conn.execute(
            "SELECT decision_id FROM tokens WHERE hash = ?", [hash_token(token)]
        ).fetchone()[0]
        == member_id[0]
    )
    stamp = form_of(client, f"/b/{welcome}")["served"]
    before = dump(db)

    answer = client.post(f"/d/{same_id}", data={"served": stamp, "choice": "stop"})

    assert answer.status_code == 200
    assert NOT_RECORDED in text(answer)
    assert dump(db) == before
    for page in (f"/b/{welcome}", f"/d/{same_id}", f"/d/{same_id}/stop"):
        shown, _, signature = form_of(client, page)["served"].rpartition(".")
        assert shown.isdigit() and abs(int(shown) - time.time() * 1000) < 60_000, shown
        assert len(signature) >= 40


def test_a_web_decision_keeps_its_time_ip_and_user_agent_in_the_event_log(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)
    data = form_of(client, f"/d/{tokens[ANNA]}") | {"choice": "continue"}
    agent = "Mozilla/5.0 (X11; Linux x86_64) TwoyesTest/1.0"
    started = datetime.now(UTC).replace(microsecond=0)

    answer = client.post(
        f"/d/{tokens[ANNA]}",
        data=data,
        headers={"User-Agent": agent},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )

    assert answer.status_code == 303
    (event,) = db.conn.execute(
        "SELECT at, detail FROM events WHERE kind = 'decision_recorded'"
    ).fetchall()
    detail = json.loads(event["detail"])
    assert detail["ip"] == "203.0.113.7"
    assert detail["user_agent"] == agent
    assert detail["choice"] == "continue"
    assert started <= datetime.fromisoformat(event["at"]) <= datetime.now(UTC)


# --- who sees what --------------------------------------------------------------------------


def test_the_coach_page_shows_the_clients_choice(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    decide(client, tokens[ANNA], choice="continue", usefulness=8, note="Helpful, thanks")

    seen = text(client.get(f"/d/{tokens[BOB]}"))

    assert "Anna de Vries: continue, usefulness 8/10" in seen
    assert "Helpful, thanks" in seen


def test_a_client_page_never_shows_what_the_coach_chose_or_wrote(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    decide(client, tokens[BOB], choice="continue", usefulness=3, note="coach-private-note")

    page = client.get(f"/d/{tokens[ANNA]}")

    seen = text(page)
    assert "coach-private-note" not in page.text
    assert "3/10" not in seen and "3 out of 10" not in seen
    assert "Bob Coach: continue" not in seen
    assert "Recorded:" not in seen


def test_a_client_page_looks_the_same_before_and_after_the_coach_continued(
    app, db, client, smtp, engagement
):
    """While the round is open, a coach who decided can only have chosen continue (a stop
    closes the round): saying that the coach decided tells the client the coach's choice."""
    tokens = open_round(app, db, smtp, engagement)
    before = text(client.get(f"/d/{tokens[ANNA]}"))
    assert decide(client, tokens[BOB], choice="continue").status_code == 303

    after = text(client.get(f"/d/{tokens[ANNA]}"))

    assert after == before


def test_in_a_group_a_client_sees_nothing_of_the_other_members(app, db, client, smtp, people):
    group = start_engagement(db, BOB, [ANNA, CARL], T0, title="Team")
    tokens = open_round(app, db, smtp, group)
    decide(client, tokens[CARL], choice="continue", usefulness=4, note="carl-private-note")
    decide(client, tokens[ANNA], choice="continue", usefulness=9, note="anna-private-note")

    for me, other_name, other_email, other_note in [
        (ANNA, "Carl", CARL, "carl-private-note"),
        (CARL, "Anna", ANNA, "anna-private-note"),
    ]:
        page = client.get(f"/d/{tokens[me]}")
        assert page.status_code == 200
        assert other_name not in page.text
        assert other_email not in page.text
        assert other_note not in page.text
        # A group of two: not even how many decided (it would be the other's answer).
        assert "decided" not in text(page) and "2 of 2" not in text(page)
        assert "Each member and Bob Coach decide for themselves" in text(page)

    coach = text(client.get(f"/d/{tokens[BOB]}"))
    assert "Carl Client: continue, usefulness 4/10" in coach
    assert "Anna de Vries: continue, usefulness 9/10" in coach
    assert "carl-private-note" in coach and "anna-private-note" in coach


# --- welcome back ---------------------------------------------------------------------------


def welcome_back_token(app, db, client, smtp, engagement) -> str:
    tokens = open_round(app, db, smtp, engagement)
    assert decide(client, tokens[ANNA], choice="stop", reason="on_my_own").status_code == 303
    smtp.clear()
    deliver_now(app, db)
    (outcome,) = smtp.to(ANNA)
    (link,) = links_in(outcome)
    assert urlsplit(link).path.startswith("/b/")
    smtp.clear()
    return token_of(link)


def test_welcome_back_page_changes_nothing_and_asking_mails_the_coach_once_a_day(
    app, db, client, smtp, engagement
):
    token = welcome_back_token(app, db, client, smtp, engagement)
    before = dump(db)

    page = client.get(f"/b/{token}")
    assert client.head(f"/b/{token}").status_code == 200
    assert client.get(f"/b/{token}?asked=1").status_code == 200

    assert page.status_code == 200
    assert "Welcome back, Anna" in text(page)
    assert "Would you like a new session with Bob Coach (Career)?" in text(page)
    assert Html(page.text).form()["method"] == "post"
    assert dump(db) == before

    data = form_of(client, f"/b/{token}") | {"message": "Could we talk in March?"}
    answer = client.post(f"/b/{token}", data=data)
    assert answer.status_code == 303
    thanks = client.get(answer.headers["Location"])
    assert "We have let Bob Coach know that you would like a new session" in text(thanks)
    smtp.clear()
    deliver_now(app, db)
    (mail,) = smtp.messages
    assert recipients(mail) == [BOB]
    assert getaddresses([mail["Reply-To"]])[0][1] == ANNA
    assert mail["Subject"] == "Anna de Vries would like a new session"
    assert "Anna de Vries (anna@example.org) used the welcome-back link" in text_of(mail)
    assert "Could we talk in March?" in text_of(mail)
    assert token not in mail.as_string()

    # Asking again the same day, from a fresh page: shown as sent already, nobody mailed.
    again = form_of(client, f"/b/{token}") | {"message": "Or April <b>perhaps</b>"}
    answer = client.post(f"/b/{token}", data=again)
    assert answer.status_code == 303
    seen = text(client.get(answer.headers["Location"]))
    assert "You asked already in the last day, so this request was not sent again." in seen
    assert "We have let Bob Coach know that you would like a new session" in seen
    smtp.clear()
    deliver_now(app, db)
    assert smtp.messages == []

    ended = db.conn.execute("SELECT status FROM engagements WHERE id = ?", [engagement]).fetchone()
    assert ended["status"] == "ended", "welcome back reopens nothing"
    asked = db.conn.execute("SELECT count(*) FROM events WHERE kind = 'welcome_back_asked'")
    assert asked.fetchone()[0] == 1


def test_one_welcome_back_page_sent_twenty_times_mails_the_coach_once(
    app, db, client, smtp, engagement
):
    """A page's stamp is used once: replayed, the form is refused and asks to press again."""
    token = welcome_back_token(app, db, client, smtp, engagement)
    data = form_of(client, f"/b/{token}") | {"message": "Hello"}

    answers = [client.post(f"/b/{token}", data=data) for _ in range(20)]

    assert [answer.status_code for answer in answers] == [303] + [200] * 19
    assert "Please press the button once more" in text(answers[-1])
    deliver_now(app, db)
    assert len(smtp.to(BOB)) == 1


def test_a_welcome_back_link_asks_again_after_a_day(app, db, client, smtp, engagement):
    from twoyes.parties import get_welcome_back_member
    from twoyes.tokens import get_member_id
    from twoyes.welcome_back import ask_welcome_back

    token = welcome_back_token(app, db, client, smtp, engagement)
    now = datetime.now(UTC)
    member = get_welcome_back_member(db, get_member_id(db, token, now))

    asked = [
        ask_welcome_back(db, member, "", moment)
        for moment in (now, now + timedelta(hours=23, minutes=59), now + timedelta(days=1))
    ]

    assert asked == [True, False, True]
    queued = db.conn.execute("SELECT count(*) FROM outbox WHERE kind = 'welcome_back'")
    assert queued.fetchone()[0] == 2


def test_a_welcome_back_message_that_fits_the_textarea_is_sent_with_its_line_breaks(
    app, db, client, smtp, engagement
):
    token = welcome_back_token(app, db, client, smtp, engagement)
    typed = ("b" * 99 + "\n") * 20  # fits maxlength=2000 in the browser
    data = form_of(client, f"/b/{token}") | {"message": typed.replace("\n", "\r\n")}

    answer = client.post(f"/b/{token}", data=data)

    assert answer.status_code == 303, text(answer)
    deliver_now(app, db)
    (mail,) = smtp.to(BOB)
    assert "b" * 99 in text_of(mail)


def test_welcome_back_with_a_filled_honeypot_mails_nobody(app, db, client, smtp, engagement):
    token = welcome_back_token(app, db, client, smtp, engagement)
    data = form_of(client, f"/b/{token}") | {"website": "http://spam.example"}
    before = dump(db)

    answer = client.post(f"/b/{token}", data=data)

    assert answer.status_code == 200
    assert "Please press the button once more" in text(answer)
    assert dump(db) == before


def welcome_back_form_of(client, token: str) -> dict[str, str]:
    """The welcome-back form on a closed round's page, as the browser would send it."""
    page = client.get(f"/d/{token}")
    assert page.status_code == 200
    (form,) = [f for f in Html(page.text).forms if f["action"] == f"/d/{token}/welcome-back"]
    assert form["method"] == "post"
    assert [b["text"].strip() for b in form["buttons"]] == ["Ask for a new session"]
    return submission(form)


def test_a_closed_rounds_page_asks_the_coach_for_a_new_session_right_there(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)
    assert decide(client, tokens[ANNA], choice="stop").status_code == 303
    smtp.clear()
    deliver_now(app, db)
    smtp.clear()
    page = client.get(f"/d/{tokens[ANNA]}")
    assert "the mail about this outcome has a link" not in text(page)
    assert "Would you like a new session with Bob Coach (Career)?" in text(page)
    assert client.head(f"/d/{tokens[ANNA]}?asked=1").status_code == 200
    before = dump(db)
    data = welcome_back_form_of(client, tokens[ANNA]) | {"message": "After the summer?"}
    assert dump(db) == before, "looking changes nothing"

    answer = client.post(f"/d/{tokens[ANNA]}/welcome-back", data=data)

    assert answer.status_code == 303
    assert urlsplit(answer.headers["Location"]).path == f"/d/{tokens[ANNA]}"
    thanks = text(client.get(answer.headers["Location"]))
    assert "We have let Bob Coach know that you would like a new session" in thanks
    deliver_now(app, db)
    (mail,) = smtp.messages
    assert recipients(mail) == [BOB]
    assert mail["Subject"] == "Anna de Vries would like a new session"
    assert "After the summer?" in text_of(mail)
    (detail,) = db.conn.execute(
        "SELECT detail FROM events WHERE kind = 'welcome_back_asked'"
    ).fetchone()
    assert json.loads(detail)["via"] == "decision_page"
    ended = db.conn.execute("SELECT status FROM engagements WHERE id = ?", [engagement])
    assert ended.fetchone()[0] == "ended", "asking reopens nothing"


@pytest.mark.parametrize(
    ("forge", "status", "message"),
    [
        (lambda data: data | {"website": "http://spam.example"}, 200, "Please press the button"),
        (lambda data: data | {"served": ""}, 200, "Please press the button once more"),
        (lambda data: data | {"message": "x" * 2001}, 400, "A message can be at most 2,000"),
    ],
    ids=["honeypot", "no-stamp", "too-long"],
)
def test_a_welcome_back_ask_from_the_page_that_a_person_did_not_send_mails_nobody(
    app, db, client, smtp, engagement, forge, status, message
):
    tokens = open_round(app, db, smtp, engagement)
    assert decide(client, tokens[ANNA], choice="stop").status_code == 303
    data = forge(welcome_back_form_of(client, tokens[ANNA]))
    before = dump(db)

    answer = client.post(f"/d/{tokens[ANNA]}/welcome-back", data=data)

    assert answer.status_code == status
    assert message in text(answer)
    assert welcome_back_form_of(client, tokens[ANNA])  # the button is there to press again
    assert dump(db) == before


def test_only_a_client_whose_sessions_ended_can_ask_from_the_decision_page(
    app, db, client, smtp, engagement
):
    tokens = open_round(app, db, smtp, engagement)
    # Stamps a person would carry: each page's own, served while the round was open.
    anna, bob = (form_of(client, f"/d/{tokens[who]}") for who in (ANNA, BOB))
    before = dump(db)
    # While the round is open there is nothing to come back to.
    answer = client.post(f"/d/{tokens[ANNA]}/welcome-back", data=anna)
    assert answer.status_code == 409
    assert "once this round has closed" in text(answer)
    assert dump(db) == before

    assert decide(client, tokens[BOB], choice="stop").status_code == 303
    assert "/welcome-back" not in client.get(f"/d/{tokens[BOB]}").text
    before = dump(db)
    # The coach's own token does not ask the coach for a session.
    assert client.post(f"/d/{tokens[BOB]}/welcome-back", data=bob).status_code == 409
    assert client.get(f"/d/{tokens[ANNA]}/welcome-back").status_code == 405
    assert client.post("/d/" + "Q" * 43 + "/welcome-back", data=anna).status_code == 404
    assert dump(db) == before


def test_a_welcome_back_ask_from_a_page_past_its_30_days_is_404(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    assert decide(client, tokens[ANNA], choice="stop").status_code == 303
    data = welcome_back_form_of(client, tokens[ANNA])
    db.conn.execute(
        "UPDATE rounds SET closed_at = ? WHERE engagement_id = ?",
        [to_db(datetime.now(UTC) - timedelta(days=31)), engagement],
    )
    before = dump(db)

    assert client.post(f"/d/{tokens[ANNA]}/welcome-back", data=data).status_code == 404
    assert dump(db) == before


def test_an_expired_welcome_back_link_is_404(app, db, client, smtp, engagement):
    token = welcome_back_token(app, db, client, smtp, engagement)
    data = form_of(client, f"/b/{token}")
    db.conn.execute(
        "UPDATE tokens SET expires_at = ? WHERE purpose = 'welcome_back'",
        [to_db(datetime.now(UTC) - timedelta(minutes=1))],
    )
    unknown = client.get("/b/" + "Q" * 43).text
    before = dump(db)

    assert client.get(f"/b/{token}").status_code == 404
    assert client.get(f"/b/{token}").text == unknown
    assert client.head(f"/b/{token}").status_code == 404
    assert client.post(f"/b/{token}", data=data).status_code == 404
    assert dump(db) == before


# --- health, methods, sizes, headers --------------------------------------------------------


def test_healthz_answers_200_json_when_the_database_answers(client):
    answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.is_json
    assert answer.get_json()["status"] == "ok"


def test_healthz_answers_503_when_the_database_does_not(settings, tmp_path):
    broken = create_app({"TESTING": True, **settings, "DATABASE": str(tmp_path / "empty.db")})

    answer = broken.test_client().get("/healthz")

    assert answer.status_code == 503
    assert answer.get_json()["status"] != "ok"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_get_405(app, db, client, smtp, engagement, method):
    tokens = open_round(app, db, smtp, engagement)
    before = dump(db)

    for path in (f"/d/{tokens[ANNA]}", f"/d/{tokens[ANNA]}/continue", "/healthz"):
        answer = client.open(path, method=method, data={"choice": "stop"})
        assert answer.status_code == 405, path
        assert "This page cannot be used that way." in text(answer)
    assert dump(db) == before


def test_an_oversized_post_is_413_not_500(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    data = form_of(client, f"/d/{tokens[ANNA]}") | {"choice": "continue", "note": "x" * 70_000}
    before = dump(db)

    answer = client.post(f"/d/{tokens[ANNA]}", data=data)

    assert answer.status_code == 413
    assert "That was more than this form takes." in text(answer)
    assert dump(db) == before


def test_an_oversized_welcome_back_post_is_413(app, db, client, smtp, engagement):
    token = welcome_back_token(app, db, client, smtp, engagement)
    data = form_of(client, f"/b/{token}") | {"message": "x" * 70_000}
    before = dump(db)

    answer = client.post(f"/b/{token}", data=data)

    assert answer.status_code == 413
    assert dump(db) == before


def test_every_page_sends_the_security_headers(app, db, client, smtp, engagement):
    tokens = open_round(app, db, smtp, engagement)
    anna = tokens[ANNA]
    held_open = form_of(client, f"/d/{anna}")
    pages = {
        "index": client.get("/"),
        "healthz": client.get("/healthz"),
        "unknown path": client.get("/nowhere"),
        "stylesheet": client.get("/static/style.css"),
        "decision": client.get(f"/d/{anna}"),
        "continue link": client.get(f"/d/{anna}/continue"),
        "stop link (HEAD)": client.head(f"/d/{anna}/stop"),
        "unknown token": client.get("/d/" + "Q" * 43),
        "400": client.post(f"/d/{anna}", data=held_open | {"choice": "maybe"}),
        "asks again": client.post(f"/d/{anna}", data={"choice": "stop"}),
        "405": client.put(f"/d/{anna}"),
        "413": client.post(f"/d/{anna}", data={"note": "x" * 70_000}),
        "303": decide(client, anna, choice="stop"),
        "recorded": client.get(f"/d/{anna}"),
        "409": client.post(f"/d/{anna}", data=held_open | {"choice": "continue"}),
    }
    smtp.clear()
    deliver_now(app, db)
    (outcome,) = smtp.to(ANNA)
    welcome = token_of(links_in(outcome)[0])
    pages["welcome back"] = client.get(f"/b/{welcome}")
    pages["welcome back asked"] = client.post(
        f"/b/{welcome}", data=form_of(client, f"/b/{welcome}")
    )
    pages["welcome back unknown"] = client.get("/b/" + "Q" * 43)

    for name, answer in pages.items():
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", name
        policy = answer.headers.get("Content-Security-Policy", "")
        assert "default-src 'none'" in policy, name
        assert "frame-ancestors 'none'" in policy, name
        if name not in ("index", "healthz", "unknown path", "stylesheet"):
            assert answer.headers.get("Referrer-Policy") == "no-referrer", name
            assert "no-store" in answer.headers.get("Cache-Control", ""), name
        if answer.mimetype == "text/html" and answer.text:
            # The policy allows no inline script or style; the pages must not need them.
            assert "<script" not in answer.text, name
            assert " style=" not in answer.text, name
        answer.close()  # the stylesheet is streamed from a file


def test_token_pages_are_rate_limited_per_address(settings, engagement, db, app, smtp):
    """Guessing tokens by the thousand meets a 429 page, in the reader's language."""
    from twoyes.web import create_app

    limited = create_app({"TESTING": True, **settings, "TOKEN_RATE_LIMIT": "5 per minute"})
    browser = limited.test_client()
    answers = [browser.get("/d/" + "A" * 43).status_code for _ in range(5)]
    assert answers == [404] * 5
    refused = browser.get("/d/" + "B" * 43)
    assert refused.status_code == 429
    assert "wait a minute" in refused.get_data(as_text=True)
    assert browser.post("/b/" + "C" * 43).status_code == 429  # one budget for all token routes
    other = limited.test_client()
    assert other.get("/healthz").status_code == 200  # pages without tokens are not limited
    elsewhere = {"REMOTE_ADDR": "192.0.2.7"}
    assert browser.get("/d/" + "D" * 43, environ_base=elsewhere).status_code == 404  # own budget


def test_a_training_room_on_one_address_decides_and_guessing_still_meets_a_429(settings, db):
    """Twenty members of a training share the venue's address: each opens the page, presses,
    sees the result, all within a minute, under the default limit; all twenty are recorded.
    Guessing from an address still meets a 429 that says when to come back."""
    defaults = {key: value for key, value in settings.items() if key != "TOKEN_RATE_LIMIT"}
    browser = create_app({"TESTING": True, **defaults}).test_client()
    now = datetime.now(UTC) - timedelta(minutes=1)
    add_person(db, "coach", "Bob Coach", "bob@example.org", "en", now)
    members = [f"member{n}@example.org" for n in range(20)]
    for number, address in enumerate(members):
        add_person(db, "client", f"Member {number}", address, "en", now)
    engagement = start_engagement(db, "bob@example.org", members, now, min_members=2)
    record_session_done(db, engagement, now, POLICY)
    tokens = [
        open_mail(db, json.loads(context))["decide_token"]
        for (context,) in db.conn.execute(
            "SELECT context FROM outbox WHERE kind = 'decision' AND to_email != 'bob@example.org'"
        )
    ]
    assert len(tokens) == 20

    started = time.monotonic()
    for token in tokens:
        page = browser.get(f"/d/{token}")
        assert page.status_code == 200
        stamp = re.search(r'name="served" value="([^"]+)"', page.text).group(1)
        pressed = browser.post(f"/d/{token}", data={"served": stamp, "choice": "continue"})
        assert pressed.status_code == 303
        assert browser.get(pressed.headers["Location"]).status_code == 200
    assert time.monotonic() - started < 60

    (recorded,) = db.conn.execute(
        "SELECT count(*) FROM decisions WHERE role = 'client' AND choice = 'continue'"
    ).fetchone()
    assert recorded == 20

    guesses = [browser.get(f"/d/{n:043d}") for n in range(150)]
    statuses = [guess.status_code for guess in guesses]
    assert statuses[:30] == [404] * 30 and statuses[30:] == [429] * 120
    assert 0 < int(guesses[-1].headers["Retry-After"]) <= 60
    # Once guessing has used up the address's budget, a real link answers the same 429:
    # a guesser cannot tell a hit from a miss.
    assert browser.get(f"/d/{tokens[0]}").status_code == 429


def test_one_link_opened_over_and_over_meets_its_own_limit(settings, app, db, smtp, engagement):
    """A link that opens has a budget of its own, far above what a person uses: the 121st
    request within a minute is a 429; another link from the same address still opens."""
    defaults = {key: value for key, value in settings.items() if key != "TOKEN_RATE_LIMIT"}
    browser = create_app({"TESTING": True, **defaults}).test_client()
    tokens = open_round(app, db, smtp, engagement)

    answers = [browser.get(f"/d/{tokens[ANNA]}").status_code for _ in range(121)]

    assert answers == [200] * 120 + [429]
    assert browser.get(f"/d/{tokens[BOB]}").status_code == 200


def test_the_rate_limit_setting_must_read_like_limits(settings):
    from twoyes.settings import ConfigError
    from twoyes.web import create_app

    with pytest.raises(ConfigError, match="TWOYES_TOKEN_RATE_LIMIT"):
        create_app({**settings, "TOKEN_RATE_LIMIT": "lots"})


def test_a_generated_secret_key_is_kept_readable_by_its_owner_only(settings, tmp_path):
    """Without TWOYES_SECRET_KEY one is generated into the instance folder, mode 0600,
    and the next start reads the same one (stamps stay valid across restarts)."""
    import stat

    from twoyes.web import create_app

    mine = {key: value for key, value in settings.items() if key != "SECRET_KEY"}
    mine["INSTANCE_PATH"] = str(tmp_path / "fresh-instance")
    first = create_app(mine)
    path = tmp_path / "fresh-instance" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.config["SECRET_KEY"]) >= 32
    assert create_app(mine).config["SECRET_KEY"] == first.config["SECRET_KEY"]


def test_no_page_keeps_a_session_or_sets_a_cookie(app, client):
    """twoyes opens no cookie session (app.NoSessions): links carry their tokens, and a page
    remembers nothing of its reader."""
    import flask

    for path in ("/", "/privacy", "/d/" + "A" * 43, "/b/" + "A" * 43, "/nothing"):
        assert "Set-Cookie" not in client.get(path).headers, path
    with app.test_request_context("/"):
        with pytest.raises(RuntimeError):
            flask.session["seen"] = True  # Flask's null session refuses to remember
