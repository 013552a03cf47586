"""Hostile input and hostile servers: nobody gets in, nothing breaks, nothing changes.

The web side is fuzzed with hypothesis through the real app: any path, any method, any
value in any form field. A refused request gets a page below 500 and leaves the database
exactly as it was; an accepted one records only valid values. Names and notes full of
HTML and script come out escaped in pages and in the HTML part of mails, and nothing a
coach types reaches a mail header. The mail side meets servers that never answer, stall
or hang up in the middle of a batch, and a server whose certificate nobody vouches for.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import itertools
import json
import os
import re
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from support import (
    POLICY,
    ROOT,
    Inbox,
    cli_env,
    deliver,
    dump,
    free_port,
    html_of,
    links_in,
    ok,
    open_mail,
    outbox_rows,
    serve_smtp,
    start,
    text_of,
)
from support import token_of as token_in_link

from twoyes.engagements import start_engagement
from twoyes.outbox import CLAIM_MINUTES, MAX_ATTEMPTS
from twoyes.people import add_person
from twoyes.rounds import send_reminders
from twoyes.rules import REASONS
from twoyes.sessions import record_session_done
from twoyes.web import create_app

# Each example builds what it needs in the test's own database, so sharing the
# function-scoped fixtures between examples is intended.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 80)),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
STAMP = re.compile(r'name="served" value="([^"]*)"')
REFUSED = {400, 404, 405, 409, 413, 429}


@pytest.fixture
def web(settings, app):
    """The app on the test's database, with room for many requests from one address."""
    return create_app(
        {"TESTING": True, **settings, "TOKEN_RATE_LIMIT": "100000 per minute"}
    ).test_client()


numbers = itertools.count()


def new_round(db, opened: datetime | None = None) -> dict:
    """A new individual engagement whose round opened a minute ago (or at `opened`), and each
    party's raw token.

    The tokens are made from the decision mails waiting in the outbox, as delivery makes
    them for the mails.
    """
    number = next(numbers)
    now = opened or datetime.now(UTC) - timedelta(minutes=1)
    coach, client = f"coach{number}@example.org", f"client{number}@example.org"
    add_person(db, "coach", f"Coach {number}", coach, "en", now)
    add_person(db, "client", f"Client {number}", client, "en", now)
    engagement = start_engagement(db, coach, [client], now)
    record_session_done(db, engagement, now, POLICY)
    tokens = {}
    for to_email, context in db.conn.execute(
        "SELECT to_email, context FROM outbox WHERE engagement_id = ? AND kind = 'decision'",
        [engagement],
    ):
        party = "coach" if to_email == coach else "client"
        tokens[party] = open_mail(db, json.loads(context))["decide_token"]
    return {"engagement": engagement, "tokens": tokens}


def stamp_of(web, token: str) -> str:
    page = web.get(f"/d/{token}")
    assert page.status_code == 200
    return STAMP.search(page.text).group(1)


def welcome_token(db, web) -> str:
    """A client stops through the web; the welcome-back link of their outcome mail."""
    made = new_round(db)
    token = made["tokens"]["client"]
    stopped = web.post(f"/d/{token}", data={"served": stamp_of(web, token), "choice": "stop"})
    assert stopped.status_code == 303
    (context,) = db.conn.execute(
        "SELECT context FROM outbox WHERE engagement_id = ? AND kind = 'outcome'"
        " AND context ->> 'welcome_back_nonce' IS NOT NULL",
        [made["engagement"]],
    ).fetchone()
    return open_mail(db, json.loads(context))["welcome_back_token"]


def decision_of(db, role: str, engagement: int) -> dict:
    return dict(
        db.conn.execute(
            "SELECT decisions.* FROM decisions JOIN rounds ON rounds.id = decisions.round_id"
            " WHERE rounds.engagement_id = ? AND decisions.role = ?",
            [engagement, role],
        ).fetchone()
    )


# --- any path, any method: below 500, and nothing changes ---------------------------------------

ANY_TEXT = st.text(max_size=60)
TOKENISH = st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True)


def near_misses(token: str) -> st.SearchStrategy[str]:
    """A real token one step off: a character changed, cut short, grown, cased, encoded."""
    return st.one_of(
        st.integers(0, 42).map(
            lambda i: token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        ),
        st.integers(0, 42).map(lambda i: token[:i]),
        ANY_TEXT.map(lambda extra: token + extra),
        st.just(token.swapcase()),
        st.just(token + "%00"),
        st.just(token + "/"),
    )


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_any_path_and_method_gets_a_page_below_500_and_changes_nothing(db, web, data):
    real = new_round(db)["tokens"]["client"]
    before = dump(db)
    prefix = data.draw(st.sampled_from(["/d/", "/b/", "/c/", "/", "/static/", "/healthz/"]))
    token = data.draw(st.one_of(near_misses(real), TOKENISH, ANY_TEXT, st.just(real)))
    suffix = data.draw(
        st.one_of(
            st.sampled_from(["", "/continue", "/stop", "/CONTINUE", "/continue/stop", "/..", "/"]),
            ANY_TEXT.map(lambda text: "/" + text),
            st.just("/rounds/1"),
        )
    )
    method = data.draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]))
    body = data.draw(
        st.one_of(
            st.none(),
            st.dictionaries(
                st.sampled_from(["choice", "served", "website", "note", "usefulness", "x"]),
                ANY_TEXT,
            ),
        )
    )
    path = quote(prefix + token + suffix, safe="/%")

    answer = web.open(path, method=method, data=body)
    answer.close()  # a file from /static/ is streamed

    assert answer.status_code < 500, (method, path, answer.status_code)
    assert answer.status_code in REFUSED | {200, 204, 303, 308}, (method, path)
    assert dump(db) == before, (method, path, answer.status_code)


# --- every form field ----------------------------------------------------------------------------

FIELD = st.one_of(
    ANY_TEXT,
    st.sampled_from(
        ["", " ", "continue ", "CONTINUE", "stop\x00", "\r\n", "%FF", "<script>alert(1)</script>"]
    ),
)
USEFULNESS = st.one_of(
    st.integers(-20, 30).map(str),
    st.sampled_from(
        ["", " 7 ", "+3", "-0", "03", "1_0", "10.0", "1e1", "٣", "0x5", "9" * 5000, "NaN", "∞"]
    ),
    ANY_TEXT,
)
NOTE = st.one_of(
    st.text(max_size=2100),
    st.sampled_from(
        [
            "x" * 2000,
            "x" * 2001,
            "y\r\n" * 667,
            "</textarea><script>alert(1)</script>",
            "  \r\n ",
            "a\x00b",
            "x\x1b[2J\ty\u202ez\x85",
        ]
    ),
)
ALL_REASONS = sorted({reason for reasons in REASONS.values() for reason in reasons})


def expected_note(raw: str | None) -> str | None:
    """What a person typed, each line break one "\\n", the other control characters and the
    bidirectional overrides taken out (NUL stays, to be refused), trimmed; None when empty."""
    text = re.sub("\r\n?|[\x85\u2028\u2029]", "\n", raw or "")
    text = re.sub("[\x01-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", "", text)
    return text.strip() or None


@pytest.mark.slow
@FUZZ
@given(
    who=st.sampled_from(["coach", "client"]),
    choice=st.one_of(st.none(), st.sampled_from(["continue", "stop"]), FIELD),
    reason=st.one_of(st.none(), st.sampled_from(ALL_REASONS), FIELD),
    usefulness=st.one_of(st.none(), USEFULNESS),
    note=st.one_of(st.none(), NOTE),
    honeypot=st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=5)),
    extra=st.dictionaries(st.text(min_size=1, max_size=8), ANY_TEXT, max_size=2),
)
def test_every_form_field_fuzzed_is_refused_with_4xx_or_recorded_as_valid(
    db, web, who, choice, reason, usefulness, note, honeypot, extra
):
    made = new_round(db)
    token = made["tokens"][who]
    form = {"served": stamp_of(web, token)}
    form |= {key: value for key, value in extra.items() if key not in ("served", "website")}
    for name, value in [
        ("choice", choice),
        ("reason", reason),
        ("usefulness", usefulness),
        ("note", note),
        ("website", honeypot),
    ]:
        if value is not None:
            form[name] = value
        else:
            form.pop(name, None)
    before = dump(db)

    answer = web.post(f"/d/{token}", data=form)

    # What the rules and the spec say about these values.
    posted = {name: form.get(name) for name in ("choice", "reason", "usefulness", "note")}
    raw = (posted["usefulness"] or "").strip()
    value = None
    if re.fullmatch(r"[0-9]+", raw):  # ASCII digits only: "+3", "٣", "1_0" are no usefulness
        value = int(raw) if len(raw) < 5 else 99_999  # far out of range, however long
    elif raw:
        value = "not a number"
    kept_reason = (posted["reason"] or None) if posted["choice"] == "stop" else None
    problems = [
        posted["choice"] not in ("continue", "stop"),
        value is not None and not (isinstance(value, int) and 0 <= value <= 10),
        kept_reason is not None and kept_reason not in REASONS[who],
        len(expected_note(posted["note"]) or "") > 2000,
        "\x00" in (expected_note(posted["note"]) or ""),
    ]

    status = answer.status_code
    assert status < 500
    if form.get("website"):
        assert status == 200  # taken for a scanner: the page asks again
    elif any(problems):
        assert status == 400, (form, status)
    else:
        assert status == 303, (form, status)
    if status != 303:
        assert dump(db) == before
        return
    recorded = decision_of(db, who, made["engagement"])
    assert recorded["choice"] == posted["choice"]
    assert recorded["reason"] == kept_reason
    assert recorded["usefulness"] == value
    assert recorded["note"] == expected_note(posted["note"])
    page = web.get(f"/d/{token}")
    assert page.status_code == 200
    if recorded["note"]:
        assert str(escape(recorded["note"])) in page.text


@pytest.mark.parametrize(
    ("typed", "status", "recorded"),
    [
        (" 3 ", 303, 3),  # the spaces around a number typed by hand
        ("03", 303, 3),
        ("+3", 400, None),
        ("-0", 400, None),
        ("٣", 400, None),  # Arabic-Indic three
        ("３", 400, None),  # full-width three
        ("５", 400, None),
        ("1_0", 400, None),
        ("9" * 5000, 400, None),
    ],
)
def test_usefulness_is_written_in_ascii_digits_only(db, web, typed, status, recorded):
    """SPEC: usefulness is a whole number from 0 to 10, written with the digits 0-9 (what the
    page's list sends). Python's other spellings of a number, another script's digits or a
    sign are refused with a sentence (400) and nothing is recorded."""
    made = new_round(db)
    token = made["tokens"]["client"]
    form = {"served": stamp_of(web, token), "choice": "continue", "usefulness": typed}
    before = dump(db)

    answer = web.post(f"/d/{token}", data=form)

    assert answer.status_code == status, answer.text
    if status == 400:
        assert "Usefulness is a whole number from 0 to 10." in answer.text
        assert dump(db) == before
    else:
        assert decision_of(db, "client", made["engagement"])["usefulness"] == recorded


@pytest.mark.parametrize("link", ["/d/{token}?choice=stop", "/d/{token}/stop?choice=stop"])
def test_the_choice_comes_only_from_the_pressed_button_not_the_address(db, web, link):
    """A scanner that opens the Stop link and runs form.submit() sends the form without any
    button's value; a choice in the address does not count either."""
    token = new_round(db)["tokens"]["client"]
    page = web.get(link.format(token=token))
    assert page.status_code == 200
    form = {"served": STAMP.search(page.text).group(1), "website": "", "usefulness": "", "note": ""}
    before = dump(db)

    answer = web.post(f"/d/{token}?choice=stop", data=form)

    assert answer.status_code == 400
    assert dump(db) == before


# --- oversized and garbled bodies --------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"choice=continue&note=" + b"x" * 70_000),
        (
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data;"
            b' name="note"; filename="a.txt"\r\n\r\n' + b"x" * 70_000 + b"\r\n--b--\r\n",
        ),
        ("application/json", b'{"choice": "continue", "note": "' + b"x" * 70_000 + b'"}'),
        ("text/plain", b"x" * 70_000),
        ("application/x-www-form-urlencoded", b"choice=stop&" + b"a=b&" * 20_000),
    ],
    ids=["form", "multipart-file", "json", "text", "many-fields"],
)
@pytest.mark.parametrize("where", ["/d/{decide}", "/b/{welcome}", "/d/{decide}/continue"])
def test_an_oversized_body_of_any_kind_is_refused_and_changes_nothing(
    db, web, content_type, body, where
):
    decide = new_round(db)["tokens"]["client"]
    path = where.format(decide=decide, welcome=welcome_token(db, web))
    before = dump(db)

    answer = web.post(path, data=body, content_type=content_type)

    allowed = (405, 413) if path.endswith("/continue") else (413,)
    assert answer.status_code in allowed, answer.status_code
    assert dump(db) == before


@pytest.mark.parametrize(
    ("method", "where", "allowed"),
    [
        ("POST", "/d/{decide}/continue", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/d/{decide}", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("DELETE", "/b/{welcome}", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("POST", "/", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_a_405_names_the_methods_that_work_in_allow(db, web, method, where, allowed):
    """RFC 9110: a 405 response carries Allow."""
    path = where.format(decide=new_round(db)["tokens"]["client"], welcome=welcome_token(db, web))
    before = dump(db)

    answer = web.open(path, method=method, data={"choice": "stop"})

    assert answer.status_code == 405
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) == allowed
    assert dump(db) == before


def test_a_chunked_post_the_server_did_not_read_is_refused_with_411(db, web):
    """A body of unknown length that the WSGI server did not take in for the app (no
    Content-Length, no wsgi.input_terminated) cannot be read: refused with 411, never
    taken for an empty form."""
    token = new_round(db)["tokens"]["client"]
    body = f"served={stamp_of(web, token)}&choice=stop".encode()
    before = dump(db)

    answer = web.post(
        f"/d/{token}",
        input_stream=io.BytesIO(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)),
        content_type="application/x-www-form-urlencoded",
        headers={"Transfer-Encoding": "chunked"},
    )

    assert answer.status_code == 411
    assert "What you sent arrived without its length, so nothing was recorded." in answer.text
    assert dump(db) == before


@pytest.mark.slow
def test_a_chunked_post_through_gunicorn_is_read_and_recorded(settings, db, web):
    """gunicorn takes a chunked body in for the app: the decision in it counts."""
    made = new_round(db)
    token = made["tokens"]["client"]
    body = f"served={stamp_of(web, token)}&choice=stop".encode()
    port = free_port()
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "-b", f"127.0.0.1:{port}", "app:create_app()"],
        cwd=ROOT,
        env=cli_env(settings, MIN_DECISION_SECONDS="0"),  # the stamp was served just now
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(200):  # until gunicorn listens
            with contextlib.suppress(OSError):
                connection.connect()
                break
            time.sleep(0.1)
        connection.putrequest("POST", f"/d/{token}")
        connection.putheader("Content-Type", "application/x-www-form-urlencoded")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        connection.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        status = connection.getresponse().status
    finally:
        server.terminate()
        server.wait(timeout=20)

    assert status == 303
    assert decision_of(db, "client", made["engagement"])["choice"] == "stop"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"choice=continue&note=%FF%FE%FD", "note"),
        (b"choice=continue&note=caf%C3", "note"),
        (b"choice=continue&note=\xff\xfe", "note"),
        (b"choice=continu%FF", "choice"),
        (b"choice=continue&usefulness=%FF7", "usefulness"),
    ],
    ids=[
        "note-percent-encoded",
        "note-cut-in-a-character",
        "note-raw-bytes",
        "choice",
        "usefulness",
    ],
)
def test_a_body_that_is_not_utf8_gets_a_4xx_and_changes_nothing(db, web, body, field):
    """Invalid UTF-8 is hostile input like any other: refused with a 4xx, nothing recorded."""
    token = new_round(db)["tokens"]["client"]
    stamp = stamp_of(web, token).encode()
    before = dump(db)

    answer = web.post(
        f"/d/{token}",
        data=b"served=" + stamp + b"&website=&" + body,
        content_type="application/x-www-form-urlencoded",
    )

    assert 400 <= answer.status_code < 500, (field, answer.status_code)
    assert dump(db) == before


def test_a_welcome_back_message_that_is_not_utf8_gets_a_4xx_and_mails_nobody(db, web):
    welcome = welcome_token(db, web)
    page = web.get(f"/b/{welcome}")
    stamp = STAMP.search(page.text).group(1).encode()
    before = dump(db)

    answer = web.post(
        f"/b/{welcome}",
        data=b"served=" + stamp + b"&website=&message=%FF%FEhello",
        content_type="application/x-www-form-urlencoded",
    )

    assert 400 <= answer.status_code < 500, answer.status_code
    assert dump(db) == before


# --- control characters in free text ------------------------------------------------------------

# Typed by a person: a line break (as a browser sends it) and a tab. Hidden in it: ESC and a
# terminal escape, a form feed, DEL, a C1 control, and a right-to-left override and isolate.
HIDDEN = "Fine.\r\nNext\tline\x1b[2J\x0c\x7f\x9b \u202eevil\u2066 end"
SEEN = "Fine.\nNext\tline[2J evil end"
UNSEEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_control_characters_in_a_note_are_taken_out_and_line_breaks_kept(db, web, app, smtp):
    made = new_round(db)
    token = made["tokens"]["client"]
    deliver(app, db)  # the decision mails
    smtp.clear()
    form = {"served": stamp_of(web, token), "choice": "stop", "note": HIDDEN}

    assert web.post(f"/d/{token}", data=form).status_code == 303

    assert decision_of(db, "client", made["engagement"])["note"] == SEEN
    deliver(app, db)
    (outcome,) = [m for m in smtp.messages if "coach" in m["To"]]
    assert SEEN in text_of(outcome).replace("\r\n", "\n")  # the mail's own line ends are CR LF
    assert not UNSEEN.search(text_of(outcome).replace("\r\n", "\n"))


def test_control_characters_in_a_welcome_back_message_are_taken_out(db, web, app, smtp):
    welcome = welcome_token(db, web)
    deliver(app, db)
    smtp.clear()
    page = web.get(f"/b/{welcome}")
    form = {"served": STAMP.search(page.text).group(1), "message": HIDDEN}

    assert web.post(f"/b/{welcome}", data=form).status_code == 303

    deliver(app, db)
    (asked,) = smtp.messages
    assert SEEN in text_of(asked).replace("\r\n", "\n")
    assert not UNSEEN.search(text_of(asked).replace("\r\n", "\n"))


NUL_REFUSED = (
    "The text holds a NUL character, which cannot be kept; please take it out and send it again."
)


@pytest.mark.parametrize("where", ["note", "message"])
def test_a_nul_in_free_text_is_refused_with_a_sentence(db, web, where):
    if where == "note":
        path = f"/d/{new_round(db)['tokens']['client']}"
        form = {"served": stamp_of(web, path[3:]), "choice": "continue", "note": "a\x00b"}
    else:
        path = f"/b/{welcome_token(db, web)}"
        form = {"served": STAMP.search(web.get(path).text).group(1), "message": "a\x00b"}
    before = dump(db)

    answer = web.post(path, data=form)

    assert answer.status_code == 400
    assert NUL_REFUSED in answer.text
    assert dump(db) == before


# --- HTML and script in names, titles and notes -------------------------------------------------

SCRIPT = '<script>alert("x")</script>'
IMG = "<img src=x onerror=alert(1)>"


def test_script_in_names_titles_and_notes_is_escaped_in_pages_and_mails(run, db, app, client, smtp):
    ok(run, "coach", "add", f"Bob {IMG}", "bob@example.org")
    ok(run, "client", "add", f"Anna {SCRIPT} & Co", "anna@example.org")
    start(run, "bob@example.org", "anna@example.org", extra=("--title", f"<b>Career</b> {SCRIPT}"))
    ok(run, "session", "done", "1", "--now", (datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    deliver(app, db)
    # The welcome mails (no links) say the names and the title too: as text, never markup.
    welcomes = [html_of(message) for message in smtp.messages if not links_in(message)]
    assert len(welcomes) == 2
    tokens = {
        parseaddr(message["To"])[1]: token_in_link(links_in(message)[0])
        for message in smtp.messages
        if links_in(message)
    }
    note = f"</textarea>{SCRIPT}{IMG}"
    anna, bob = tokens["anna@example.org"], tokens["bob@example.org"]
    answer = client.post(
        f"/d/{anna}", data={"served": stamp_of(client, anna), "choice": "continue", "note": note}
    )
    assert answer.status_code == 303
    pages = [client.get(f"/d/{anna}").text, client.get(f"/d/{bob}").text]  # open, both
    answer = client.post(
        f"/d/{anna}", data={"served": stamp_of(client, anna), "choice": "stop", "note": note}
    )
    assert answer.status_code == 303
    pages += [client.get(f"/d/{token}").text for token in tokens.values()]  # closed
    smtp.clear()
    deliver(app, db)
    welcome = next(
        token_in_link(link)
        for message in smtp.messages
        for link in links_in(message)
        if "/b/" in link
    )
    page = client.get(f"/b/{welcome}")
    pages.append(page.text)
    asked = client.post(
        f"/b/{welcome}",
        data={"served": STAMP.search(page.text).group(1), "message": f"Back! {SCRIPT}"},
    )
    assert asked.status_code == 303
    deliver(app, db)
    htmls = [html_of(message) for message in smtp.messages]
    assert len(htmls) == 3  # both outcome mails and the coach's welcome-back mail

    for markup in pages + htmls + welcomes:
        seen = Html(markup)
        assert "script" not in seen.tags
        assert not [attrs for attrs in seen.attrs if "onerror" in attrs]
    # What was typed is there, as text to read.
    assert SCRIPT in Html(pages[0]).text, "Anna's page shows her name"
    assert all(f"<b>Career</b> {SCRIPT}" in Html(html).text for html in welcomes)
    assert note in Html(pages[1]).text, "the coach's page shows Anna's note"
    assert "<b>Career</b>" in Html(pages[0]).text
    assert any(note in Html(html).text for html in htmls), "and so does the coach's mail"
    assert any(f"Back! {SCRIPT}" in Html(html).text for html in htmls)
    assert any(SCRIPT in text_of(message) for message in smtp.messages)


class Html(HTMLParser):
    """What a browser makes of the markup: its elements, their attributes, its text."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[dict] = []
        self.parts: list[str] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append(dict(attrs))

    def handle_data(self, data):
        self.parts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.parts)


# --- names never reach a header ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "name"),
    [
        ("client", "Dana\r\nBcc: eve@example.org"),
        ("client", "Dana\rDoe"),
        ("coach", "Bob\nReply-To: eve@example.org"),
    ],
)
def test_cr_lf_in_a_name_is_refused_by_the_command_and_changes_nothing(run, db, role, name):
    """Hostile input is refused, not repaired: exit 1, one line, nothing stored."""
    before = dump(db)
    result = run(role, "add", name, "dana@example.org")
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert dump(db) == before


HEADERISH = st.lists(
    st.one_of(
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
        st.sampled_from(
            ["\r", "\n", "\r\n", ":", "<", ">", '"', ",", ";", "@", "\r\nBcc: eve@x.org"]
        ),
    ),
    min_size=1,
    max_size=30,
).map("".join)


@pytest.mark.slow
@FUZZ
@given(name=st.one_of(HEADERISH, st.just("a\r\nBcc: eve@example.org")))
def test_no_name_reaches_a_header_of_its_own(run, db, app, smtp, name):
    """Whatever a name holds, the mail to that client has one recipient and no extra header,
    and a reader sees the name as it was stored."""
    check_name_in_headers(run, db, app, smtp, name)


@pytest.mark.parametrize(
    "name", ["=?utf-8?q?Bob?=", "=?utf-8?q?Eve_=3Cceo=40bank=2Eexample=3E?= Client"]
)
def test_a_name_that_looks_like_an_encoded_word_is_shown_as_typed(run, db, app, smtp, name):
    """RFC 2047: text that looks like an encoded word must be encoded itself, or every mail
    program shows it decoded: "Eve <ceo@bank.example>" instead of what the coach typed."""
    check_name_in_headers(run, db, app, smtp, name)


def check_name_in_headers(run, db, app, smtp, name: str) -> None:
    number = next(numbers)
    address = f"dana{number}@example.org"
    # "--": a name may start with a dash, as on a real command line.
    result = run("client", "add", "--", name, address)
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        assert (
            db.conn.execute("SELECT 1 FROM clients WHERE email = ?", [address]).fetchone() is None
        )
        return
    (stored,) = db.conn.execute("SELECT name FROM clients WHERE email = ?", [address]).fetchone()
    if not db.conn.execute("SELECT 1 FROM coaches").fetchone():
        add_person(db, "coach", "Bob", "bob@example.org", "en", datetime.now(UTC))
    engagement = start_engagement(db, "bob@example.org", [address], datetime.now(UTC))
    record_session_done(db, engagement, datetime.now(UTC) - timedelta(minutes=1), POLICY)
    smtp.clear()
    deliver(app, db)

    # The one mail whose envelope goes to the client: one recipient, as typed.
    ((message, recipients),) = [
        (message, rcpts)
        for message, (_, rcpts) in zip(smtp.messages, smtp.envelopes, strict=True)
        if address in rcpts
    ]
    assert recipients == [address]
    assert not {"Bcc", "Cc"} & set(message.keys())
    raw = dict(message.raw_items())
    for header in ("To", "From", "Subject", "Reply-To", "Message-ID", "Date"):
        unfolded = re.sub(r"\r?\n[ \t]", " ", raw[header])
        assert "\r" not in unfolded and "\n" not in unfolded
    # A mail program reads one addressee: the client, under the name the coach typed.
    # (Adjacent encoded words may come back with a space between them: a stdlib quirk.)
    (addressee,) = message["To"].addresses
    assert addressee.addr_spec == address
    assert addressee.display_name.split() == stored.split() or "".join(
        addressee.display_name.split()
    ) == "".join(stored.split())
    (to_coach,) = [m for m in smtp.messages if m is not message]
    assert stored in text_of(to_coach)


# --- addresses that mail cannot carry as typed --------------------------------------------------


def test_an_address_with_a_non_ascii_local_part_is_refused_or_fails_alone(
    settings, run, db, smtp, tmp_path
):
    """zoë@example.org: refused by `client add`, or its mail fails with a sentence while every
    other mail goes out once; a send run never dies on it."""
    ok(run, "coach", "add", "Bob", "bob@example.org")
    added = run("client", "add", "Zoë", "zoë@example.org")
    if added.exit_code == 1:
        assert db.conn.execute("SELECT count(*) FROM clients").fetchone()[0] == 0
        return
    assert added.exit_code == 0, added.output
    for number in range(3):
        ok(run, "client", "add", f"Client {number}", f"c{number}@example.org")
    # Zoë's mails sit between the others in the queue.
    for address in ["c0@example.org", "zoë@example.org", "c1@example.org", "c2@example.org"]:
        ok(run, "engagement", "start", "--coach", "bob@example.org", "--client", address)
    now = datetime.now(UTC)
    for engagement in range(1, 5):
        ok(run, "session", "done", str(engagement), "--now", now.isoformat())

    runs = []
    for attempt in range(MAX_ATTEMPTS + 2):
        when = now + attempt * timedelta(minutes=CLAIM_MINUTES + 1)
        process = subprocess.run(
            [sys.executable, "cli.py", "send", "--now", when.isoformat()],
            cwd=ROOT,
            env=cli_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        runs.append(process)

    rows = db.conn.execute("SELECT message_id, to_email, status, last_error FROM outbox").fetchall()
    others = {f"<{mid}@example.org>" for mid, to, _, _ in rows if to != "zoë@example.org"}
    arrived = Counter(message["Message-ID"] for message in smtp.messages)
    assert {mid: arrived[mid] for mid in others} == dict.fromkeys(others, 1), [
        (to, status, error) for _, to, status, error in rows
    ]
    (zoe,) = [(status, error) for _, to, status, error in rows if to == "zoë@example.org"]
    assert zoe[0] in ("failed", "sent"), zoe
    assert not [p.stderr for p in runs if "Traceback" in p.stderr], runs[0].stderr[-2000:]


def test_the_envelope_goes_to_the_domain_the_coach_typed(settings, run, db, app, smtp):
    """anna@straße.example is not anna@strasse.example (IDNA 2008): a link that acts for Anna
    must never be handed to another domain's mail server."""
    ok(run, "coach", "add", "Bob", "bob@example.org")
    added = run("client", "add", "Anna", "anna@straße.example")
    if added.exit_code == 1:
        return
    ok(run, "engagement", "start", "--coach", "bob@example.org", "--client", "anna@straße.example")
    ok(run, "session", "done", "1", "--now", (datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    deliver(app, db)

    recipients = {rcpt for _, rcpts in smtp.envelopes for rcpt in rcpts}
    assert "anna@strasse.example" not in recipients
    assert recipients & {"anna@straße.example", "anna@xn--strae-oqa.example"}


# --- SMTP servers that stall, hang up, or cannot be trusted --------------------------------------

MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.MULTILINE | re.IGNORECASE)


class FaultyServer(socketserver.ThreadingTCPServer):
    """A small real SMTP server on 127.0.0.1 that misbehaves on purpose.

    mode "silent": accepts the connection and never says a word.
    mode "stall": answers normally, but after `after` accepted mails never answers the end
    of the next one. mode "drop": after `after` accepted mails, hangs up at the next MAIL.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str, after: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), SMTPConversation)
        self.mode, self.after = mode, after
        self.accepted: list[str] = []
        self.release = threading.Event()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def saturated(self) -> bool:
        return len(self.accepted) >= self.after


class SMTPConversation(socketserver.StreamRequestHandler):
    def say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        server: FaultyServer = self.server
        if server.mode == "silent":
            server.release.wait(30)
            return
        self.say("220 faulty.test ESMTP")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.say("250-faulty.test")
                self.say("250 8BITMIME")
            elif verb == b"MAIL" and server.mode == "drop" and server.saturated():
                return  # hang up in the middle of the batch
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                self.say("250 OK")
            elif verb == b"DATA":
                self.say("354 go ahead")
                content = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    content += chunk
                if server.mode == "stall" and server.saturated():
                    server.release.wait(30)  # the mail is never answered
                    return
                server.accepted.append(MESSAGE_ID.search(content).group(1).decode())
                self.say("250 accepted")
            elif verb == b"QUIT":
                self.say("221 bye")
                return
            else:
                self.say("502 not here")


@contextlib.contextmanager
def faulty(mode: str, after: int = 0):
    server = FaultyServer(mode, after)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def send_process(settings, port: int, now: datetime, **extra: str):
    environment = cli_env(settings, MAIL_PORT=str(port), MAIL_TIMEOUT="1", **extra)
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "cli.py", "send", "--now", now.isoformat()],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return process, time.monotonic() - started


def queued_for(db, count: int) -> datetime:
    """`count` individual engagements, each with a round just opened: 2 mails each."""
    now = datetime.now(UTC)
    add_person(db, "coach", "Bob", "bob@example.org", "en", now)
    for number in range(count):
        address = f"c{number}@example.org"
        add_person(db, "client", f"Client {number}", address, "en", now)
        record_session_done(
            db, start_engagement(db, "bob@example.org", [address], now), now, POLICY
        )
    return now


@pytest.mark.slow
def test_a_server_that_never_answers_costs_one_timeout_and_the_mail_waits(settings, db):
    now = queued_for(db, 1)
    with faulty("silent") as server:
        process, took = send_process(settings, server.port, now + timedelta(minutes=1))

    assert process.returncode == 0, process.stderr
    assert took < 8, f"send took {took:.1f} s with TWOYES_MAIL_TIMEOUT=1"
    assert "Traceback" not in process.stderr
    assert "2 mail(s) wait for a later retry." in process.stderr
    for row in outbox_rows(db):
        assert (row["status"], row["attempts"]) == ("queued", 1)
        assert "timed out" in row["last_error"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stall", "drop"])
def test_a_server_that_stalls_or_hangs_up_mid_batch_loses_nothing_and_doubles_nothing(
    settings, db, smtp, mode
):
    now = queued_for(db, 4)  # 8 mails in one batch
    with faulty(mode, after=3) as server:
        process, took = send_process(settings, server.port, now + timedelta(minutes=1))
    accepted = list(server.accepted)

    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    assert took < 10
    assert len(accepted) == 3
    rows = outbox_rows(db)
    assert [row["status"] for row in rows] == ["sent"] * 3 + ["queued"] * 5
    assert {f"<{row['message_id']}@example.org>" for row in rows[:3]} == set(accepted)
    for row in rows[3:]:
        assert row["last_error"]

    # A later run, the server well again: the rest goes, once, with the same Message-IDs.
    later, _ = send_process(settings, smtp.port, now + timedelta(minutes=4))
    assert later.returncode == 0, later.stderr
    arrived = Counter(message["Message-ID"] for message in smtp.messages)
    assert arrived == {f"<{row['message_id']}@example.org>": 1 for row in rows[3:]}
    assert {row["status"] for row in outbox_rows(db)} == {"sent"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that no public CA vouches for."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("flag", ["MAIL_USE_TLS", "MAIL_USE_SSL"])
def test_tls_certificates_are_verified_unless_the_operator_names_a_ca_file(
    settings, db, certificate, flag
):
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if flag == "MAIL_USE_TLS":
        options = {"tls_context": context, "require_starttls": True}
    else:
        options = {"ssl_context": context}
    now = queued_for(db, 1)
    with serve_smtp(Inbox(), **options) as inbox:
        port = inbox.port
        untrusted, _ = send_process(settings, port, now + timedelta(minutes=1), **{flag: "true"})
        rows = outbox_rows(db)
        trusted, _ = send_process(
            settings, port, now + timedelta(minutes=3), **{flag: "true", "MAIL_CA_FILE": str(cert)}
        )

    assert untrusted.returncode == 0, untrusted.stderr
    assert "Traceback" not in untrusted.stderr
    assert [row["status"] for row in rows] == ["queued", "queued"]
    assert all("certificate" in row["last_error"].lower() for row in rows), rows[0]["last_error"]

    assert trusted.returncode == 0, trusted.stderr
    assert {row["status"] for row in outbox_rows(db)} == {"sent"}
    assert sorted(parseaddr(m["To"])[1] for m in inbox.messages) == [
        "bob@example.org",
        "c0@example.org",
    ]


# --- tokens at rest ------------------------------------------------------------------------------


def test_no_raw_token_of_any_delivered_mail_is_left_in_the_database_file(
    settings, app, db, web, smtp
):
    """Decision, reminder and outcome mails and a welcome-back request, all delivered."""
    made = new_round(db, opened=datetime.now(UTC) - timedelta(days=5, hours=1))
    deliver(app, db)
    assert send_reminders(db, datetime.now(UTC)) == 2
    deliver(app, db)
    token = made["tokens"]["client"]
    web.post(f"/d/{token}", data={"served": stamp_of(web, token), "choice": "stop"})
    deliver(app, db)
    welcome = next(
        token_in_link(link) for m in smtp.messages for link in links_in(m) if "/b/" in link
    )
    page = web.get(f"/b/{welcome}")
    web.post(f"/b/{welcome}", data={"served": STAMP.search(page.text).group(1), "message": "hi"})
    deliver(app, db)

    delivered = {token_in_link(link) for m in smtp.messages for link in links_in(m)}
    assert len(delivered) == 2 + 2 + 1  # decision, reminder, welcome back
    busy, _, _ = db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    path = Path(settings["DATABASE"])
    raw = path.read_bytes()
    wal = Path(f"{path}-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    assert [t for t in delivered if t.encode() in raw] == []
    assert {row["status"] for row in outbox_rows(db)} == {"sent"}
