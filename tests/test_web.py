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
from html.parser import HTMLParser
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from conftest import POLICY, T0, deliver, dump, html_of, links_in, text_of, token_of

from twoyes.engagements import start_engagement
from twoyes.rounds import send_reminders
from twoyes.sessions import record_session_done
from twoyes.times import to_db
from twoyes.web import create_app

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NOT_RECORDED = "Please confirm your choice by pressing the button once more."
HREF = re.compile(r'href="([^"]+)"')


# --- reading pages the way a browser does ---------------------------------------------------


class Html(HTMLParser):
    """A page's visible text and its forms, with what each form would submit."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.parts: list[str] = []
        self._form: dict | None = None
        self._select: str | None = None
        self._textarea: str | None = None
        self._button = False
        self._skip = 0
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = {name: value if value is not None else "" for name, value in attrs}
        if tag in ("title", "style", "script"):
            self._skip += 1
        if tag == "form":
            self._form = {
                "method": attrs.get("method", "get").lower(),
                "action": attrs.get("action"),
                "inputs": [],
                "buttons": [],
                "selects": {},
                "textareas": {},
            }
            self.forms.append(self._form)
        if self._form is None:
            return
        if tag == "input":
            self._form["inputs"].append(attrs)
        elif tag == "button":
            self._form["buttons"].append(attrs | {"text": ""})
            self._button = True
        elif tag == "select":
            self._select = attrs["name"]
            self._form["selects"][self._select] = []
        elif tag == "option" and self._select:
            self._form["selects"][self._select].append(attrs)
        elif tag == "textarea":
            self._textarea = attrs["name"]
            self._form["textareas"][self._textarea] = {"attrs": attrs, "text": ""}

    def handle_endtag(self, tag):
        if tag in ("title", "style", "script"):
            self._skip -= 1
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "button":
            self._button = False

    def handle_data(self, data):
        if self._skip:
            return
        self.parts.append(data)
        if self._form is not None:
            if self._textarea:
                self._form["textareas"][self._textarea]["text"] += data
            elif self._button:
                self._form["buttons"][-1]["text"] += data

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())

    def form(self) -> dict:
        (form,) = self.forms
        return form


def text(response) -> str:
    return Html(response.text).text


def submission(form: dict) -> dict[str, str]:
    """What the browser sends for this form when no button is pressed (form.submit())."""
    data = {}
    for attrs in form["inputs"]:
        if attrs.get("type") in ("radio", "checkbox"):
            if "checked" in attrs:
                data[attrs["name"]] = attrs.get("value", "on")
        elif attrs.get("name"):
            data[attrs["name"]] = attrs.get("value", "")
    for name, options in form["selects"].items():
        chosen = [o for o in options if "selected" in o] or options[:1]
        data[name] = chosen[0].get("value", "") if chosen else ""
    for name, area in form["textareas"].items():
        data[name] = area["text"]
    return data


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
    return f"{local:%A} {local.day} {local:%B} at {local:%H:%M}"


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
    assert "We have recorded your choice" not in seen

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

    for token in tokens.values():
        page = client.get(f"/d/{token}/{choice}")
        assert page.status_code == 200
        assert client.head(f"/d/{token}/{choice}").status_code == 200
        seen = text(page)
        button = choice.capitalize()
        assert "in the mail. Nothing is recorded until you press " + button in seen
        buttons = {b["value"]: b for b in Html(page.text).form()["buttons"]}
        assert "preselected" in buttons[choice].get("class", "")
        other = "stop" if choice == "continue" else "continue"
        assert "preselected" not in buttons[other].get("class", "")
        # No autofocus: on a phone it would scroll past who, which session and the deadline.
        assert "autofocus" not in buttons[choice] and "autofocus" not in buttons[other]
        assert "We have recorded your choice" not in seen

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
    assert "We have recorded your choice: continue." in seen
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
    assert "We have recorded your choice: stop." in seen
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
    assert Html(answer.text).forms == []
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

BAD_VALUES = [
    pytest.param(
        {"choice": "continue", "usefulness": "11"},
        "Usefulness is a whole number from 0 to 10.",
        id="usefulness-11",
    ),
    pytest.param(
        {"choice": "continue", "usefulness": "-1"},
        "Usefulness is a whole number from 0 to 10.",
        id="usefulness-negative",
    ),
    pytest.param(
        {"choice": "continue", "usefulness": "abc"},
        "Usefulness is a whole number from 0 to 10.",
        id="usefulness-abc",
    ),
    pytest.param(
        {"choice": "continue", "usefulness": "7.5"},
        "Usefulness is a whole number from 0 to 10.",
        id="usefulness-fraction",
    ),
    pytest.param(
        {"choice": "continue", "note": "x" * 2001},
        "A note can be at most 2,000 characters; please shorten it.",
        id="note-2001",
    ),
    pytest.param(
        {"choice": "stop", "reason": "bogus"},
        "Please choose one of the reasons in the list, or none.",
        id="unknown-reason",
    ),
    pytest.param(
        {"choice": "stop", "reason": "values"},
        "Please choose one of the reasons in the list, or none.",
        id="coach-reason-from-client",
    ),
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
    assert dump(db) == before
    # The same person pressing the genuine form is recorded (MIN_DECISION_SECONDS is 0 here).
    assert client.post(f"/d/{tokens[ANNA]}", data=data).status_code == 303
    assert decision_row(db, ANNA)["choice"] == "stop"


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
    assert "We have recorded your choice" not in seen


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
        assert "2 of 2 members have decided." in text(page)

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


def test_welcome_back_page_changes_nothing_and_asking_mails_the_coach_again_and_again(
    app, db, client, smtp, engagement
):
    token = welcome_back_token(app, db, client, smtp, engagement)
    before = dump(db)

    page = client.get(f"/b/{token}")
    assert client.head(f"/b/{token}").status_code == 200
    assert client.get(f"/b/{token}?asked=1").status_code == 200

    assert page.status_code == 200
    assert "Welcome back, Anna de Vries" in text(page)
    assert "Would you like a new session with Bob Coach (Career)?" in text(page)
    assert Html(page.text).form()["method"] == "post"
    assert dump(db) == before

    for message in ("Could we talk in March?", "Or April <b>perhaps</b>"):
        data = form_of(client, f"/b/{token}") | {"message": message}
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
        assert message in text_of(mail)
        assert token not in mail.as_string()

    ended = db.conn.execute("SELECT status FROM engagements WHERE id = ?", [engagement]).fetchone()
    assert ended["status"] == "ended", "welcome back reopens nothing"
    asked = db.conn.execute("SELECT count(*) FROM events WHERE kind = 'welcome_back_asked'")
    assert asked.fetchone()[0] == 2


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
