"""The coach's view: `status`, `report` (text, JSON and an HTML page with charts), `export`,
and the overview page behind `coach link`, checked on a scenario whose answers are known.

Real parts only: a SQLite file, the command line through Click, the app through its test
client, and an SMTP server on 127.0.0.1 that refuses one address (so a mail fails for real).
"""

from __future__ import annotations

import csv
import html.parser
import json
import re
import sqlite3
import stat
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from support import (
    BEFORE_VERSION_7,
    POLICY,
    T0,
    Inbox,
    decide,
    deliver,
    dump,
    english_sentences,
    hold_session,
    iso,
    links_in,
    ok,
    serve_smtp,
    token_of,
)

from twoyes import db as database
from twoyes.engagements import start_engagement
from twoyes.people import add_person
from twoyes.rounds import close_overdue_rounds
from twoyes.sessions import record_session_done

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
REFUSED = "dana@example.org"
NAMESPACES = {
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/1999/xhtml",
    "http://www.w3.org/1999/xlink",
}
TOKEN_LINK = re.compile(r"http://twoyes\.test(/c/[A-Za-z0-9_-]{43})")


class RefusingInbox(Inbox):
    """Accepts mail for everyone except REFUSED, whose address the server does not know."""

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address == REFUSED:
            return "550 5.1.1 No such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def smtp():
    """This module's SMTP server: the conftest one, but it refuses Dana's address."""
    with serve_smtp(RefusingInbox()) as inbox:
        yield inbox


@pytest.fixture
def practice(app, db, smtp):
    """Bob (English) and Eve (Dutch), with endings known by construction:

    Bob's
    - Anna: 2 sessions (usefulness 6, 9), then stops: she can go on alone.
    - Ben: 1 session (usefulness 3), stops: not useful.
    - Carl: 1 session, never answers: undecided at the deadline.
    - Dana: 1 session, an open round nobody decided yet (her mail is refused: failed).
    - Gus: started, nothing held or planned: going quiet.
    Eve's
    - Erik: 1 session, Eve stops (coach_stopped).
    - Fleur: 1 session, an open round nobody decided yet.
    """
    add_person(db, "coach", "Bob Coach", "bob@example.org", "en", T0)
    add_person(db, "coach", "Eve Visser", "eve@example.org", "nl", T0)
    names = {
        "anna": "Anna Bakker",
        "ben": "Ben Brouwer",
        "carl": "Carl Claes",
        "dana": "Dana Dekker",
        "gus": "Gus Groen",
        "erik": "Erik Eriksen",
        "fleur": "Fleur Fransen",
    }
    for key, name in names.items():
        add_person(db, "client", name, f"{key}@example.org", "en", T0)
    coach_of = {"erik": "eve@example.org", "fleur": "eve@example.org"}
    ids = {
        key: start_engagement(
            db,
            coach_of.get(key, "bob@example.org"),
            [f"{key}@example.org"],
            T0,
            title=f"Work with {names[key].split()[0]}",
        )  # fmt: skip
        for key in names
    }
    rounds = {}

    def session(key, at, *, coach="continue", client="continue", **values):
        email = f"{key}@example.org"
        round_id = hold_session(db, ids[key], email, at, coach=coach, choice=client, **values)
        rounds.setdefault(key, []).append(round_id)
        return round_id

    day = timedelta(days=1)
    session("anna", T0 + day, usefulness=6)
    session("anna", T0 + 2 * day, client="stop", reason="on_my_own", usefulness=9)
    session("ben", T0 + 3 * day, client="stop", reason="not_useful", usefulness=3)
    session("carl", T0 + 4 * day, client=None)
    session("erik", T0 + day, coach="stop", client=None, reason="cannot_help")
    close_overdue_rounds(db, T0 + 12 * day)  # Carl's round: undecided
    later = T0 + 12 * day + timedelta(hours=1)
    session("dana", later, coach=None, client=None)
    session("fleur", later, coach=None, client=None)
    deliver(app, db, now=later + timedelta(minutes=1))  # Dana's mail is refused for good
    return {"ids": ids, "rounds": rounds, "names": names, "later": later}


def coach_link(run, email, now=None) -> str:
    """The overview's path, from `coach link` on the real command line."""
    args = ["coach", "link", email] + (["--now", iso(now)] if now else [])
    return TOKEN_LINK.search(ok(run, *args).stdout).group(1)


# -- status ---------------------------------------------------------------------------------


def test_status_shows_who_still_has_to_decide_what_goes_quiet_and_failed_mail(run, practice):
    now = practice["later"] + timedelta(days=8)  # past Dana's deadline
    result = ok(run, "status", "--coach", "bob@example.org", "--now", iso(now))
    text = result.stdout
    dana_round = practice["rounds"]["dana"][0]
    deadline = (practice["later"] + timedelta(days=7)).astimezone(AMSTERDAM)
    assert text.startswith("Status for Bob Coach <bob@example.org> at ")
    assert "(Europe/Amsterdam)" in text.splitlines()[0]
    assert "Open rounds: who still has to decide" in text
    (row,) = [line for line in text.splitlines() if "Work with Dana" in line]
    assert row.split()[:4] == [str(dana_round), str(practice["ids"]["dana"]), "Work", "with"]
    assert "coach, Dana Dekker" in row
    when = f"{deadline:%a} {deadline.day} {deadline:%b} {deadline.year} {deadline:%H:%M}"
    assert when in row
    assert "overdue" in text
    assert "Going quiet: nothing held or planned for a while" in text
    assert "with Gus Groen" in text
    assert "No failed mail." not in text
    assert "Mail that could not be delivered" in text
    assert REFUSED in text and "550" in text
    assert "python cli.py outbox retry MAIL" in text
    # Another coach's clients are not Bob's business.
    assert "Fleur" not in text and "Erik" not in text
    assert "\x1b[" not in text  # no terminal codes when not on a terminal
    assert all(len(line) <= 100 and line == line.rstrip() for line in text.splitlines())


def test_status_when_nothing_needs_attention(run, db, people):
    text = ok(run, "status").stdout
    assert "Status for the practice at " in text
    assert "No open rounds: nobody has to decide anything." in text
    assert "No engagement is going quiet." in text
    assert "No failed mail." in text


def test_status_json_is_the_practice_status(run, practice):
    data = json.loads(ok(run, "status", "--json", "--now", iso(practice["later"])).stdout)
    assert [r["round_id"] for r in data["open_rounds"]] == [
        practice["rounds"]["dana"][0],
        practice["rounds"]["fleur"][0],
    ]
    assert [m["to_email"] for m in data["failed_mails"]] == [REFUSED]


def test_status_for_an_unknown_coach(run, practice):
    result = run("status", "--coach", "nobody@example.org")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: There is no coach with the address nobody@example.org; check it, or add the "
        "coach first with `python cli.py coach add NAME EMAIL`."
    ]


# -- report ---------------------------------------------------------------------------------


def since_arg() -> str:
    return (T0 - timedelta(days=1)).astimezone(AMSTERDAM).strftime("%Y-%m-%d")


def test_report_json_for_one_coach(run, practice):
    args = ("report", "--coach", "bob@example.org", "--since", since_arg(), "--json")
    data = json.loads(ok(run, *args).stdout)
    assert data["engagements_started"] == 5  # Anna, Ben, Carl, Dana, Gus
    assert data["engagements_ended"] == 3
    assert data["sessions_per_ended_engagement"] == {"1": 2, "2": 1}
    assert data["end_reasons"] == {"client_not_useful": 1, "client_on_my_own": 1, "undecided": 1}
    assert data["usefulness_by_session"] == {
        "1": {"average": 4.5, "ratings": 2},
        "2": {"average": 9.0, "ratings": 1},
    }
    # Closed rounds: Anna's two, Ben's, Carl's. Bob decided in each within the hour; the
    # clients in three of four (Carl never).
    assert data["decided_before_reminder"] == {
        "coach": {"rounds": 4, "decided_before_reminder": 4, "share": 1.0},
        "client": {"rounds": 4, "decided_before_reminder": 3, "share": 0.75},
    }


def test_report_json_for_the_practice(run, practice):
    data = json.loads(ok(run, "report", "--since", since_arg(), "--json").stdout)
    assert data["engagements_started"] == 7
    assert data["engagements_ended"] == 4
    assert data["sessions_per_ended_engagement"] == {"1": 3, "2": 1}
    assert data["end_reasons"]["coach_stopped"] == 1


def test_report_since_a_later_date_leaves_the_earlier_out(run, practice):
    later = (T0 + timedelta(days=30)).astimezone(AMSTERDAM).strftime("%Y-%m-%d")
    data = json.loads(ok(run, "report", "--since", later, "--json").stdout)
    assert data["engagements_started"] == data["engagements_ended"] == 0


def test_report_as_text(run, practice):
    text = ok(run, "report", "--coach", "bob@example.org", "--since", since_arg()).stdout
    lines = text.splitlines()
    assert lines[0].startswith("Report for Bob Coach <bob@example.org> since ")
    assert "Engagements started: 5" in lines
    assert "  1 session: 2 engagements" in lines
    assert "  2 sessions: 1 engagement" in lines
    # Going on alone and "not useful" are told apart.
    assert "  Client can go on alone: 1" in lines
    assert "  Client found it not useful enough: 1" in lines
    assert "  No answer by the deadline: 1" in lines
    assert "  session 1: 4.50 (2 ratings)" in lines
    assert "  clients: 3 of 4 (75%)" in lines


@pytest.mark.parametrize("since", ["2026-02-30", "27-11-2026", "yesterday"])
def test_report_with_a_malformed_date(run, practice, since):
    result = run("report", "--since", since)
    assert result.exit_code == 2
    assert "Invalid value for '--since'" in result.stderr


def test_report_for_an_unknown_coach(run, practice):
    result = run("report", "--coach", "nobody@example.org")
    assert result.exit_code == 1
    assert "There is no coach with the address nobody@example.org" in result.stderr


class TagBalance(html.parser.HTMLParser):
    """Every element that opens also closes, in order (void elements excepted)."""

    VOID = {"meta", "link", "br", "hr", "img", "input", "col", "source", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def remote_loads(page: str) -> list[str]:
    """Anything that would fetch from the network: a URL in src, href, action or CSS
    url(), an @import, and any http(s) address that is not an XML namespace name."""
    found = re.findall(r"""(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//[^"'\s>]*""", page)
    found += re.findall(r"""url\(\s*["']?\s*(?:[a-z]+:)?//[^)]*\)""", page)
    found += re.findall(r"@import[^;]*", page)
    found += [url for url in re.findall(r"https?://[^\s\"'<>)]+", page) if url not in NAMESPACES]
    return found


def test_report_html_is_one_well_formed_self_contained_page(run, practice, tmp_path):
    path = tmp_path / "report.html"
    args = ("report", "--coach", "bob@example.org", "--since", since_arg(), "--html", path)
    result = ok(run, *args)
    assert f"Wrote the report with charts to {path}" in result.stdout
    page = path.read_text(encoding="utf-8")
    ET.fromstring(page)  # well-formed as XML: every tag closes, every entity is known
    balance = TagBalance()
    balance.feed(page)
    balance.close()
    assert balance.problems == [] and balance.stack == []
    assert remote_loads(page) == []
    for tag in ("script", "link", "img", "iframe", "object"):
        assert tag not in balance.tags, tag
    assert balance.tags.count("svg") == 4
    assert balance.tags.count("style") == 5  # the page's own, and one in each chart
    assert "<!--" not in page
    assert '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">' in page
    assert "<h1>Report for Bob Coach</h1>" in page
    # The figures are in the page as text too (tables under the charts).
    assert "<td>Client can go on alone</td><td>1</td>" in page
    assert "<td>1</td><td>4.5</td><td>2</td>" in page
    assert "<td>Clients</td><td>75%</td><td>4</td>" in page
    # Kept on the next run, replaced with --force (a report is made to be made again).
    assert run(*args).exit_code == 1
    ok(run, *args, "--force")
    assert path.read_text(encoding="utf-8").count("<svg") == 4


def test_report_html_with_nothing_to_draw_yet(run, db, people, tmp_path):
    path = tmp_path / "empty.html"
    ok(run, "report", "--html", path)
    page = path.read_text(encoding="utf-8")
    ET.fromstring(page)
    assert "<svg" not in page
    assert page.count("Nothing to show for this period yet.") == 4
    assert "Report for the practice" in page


def test_report_html_speaks_the_coachs_language(run, practice, tmp_path, extracted):
    path = tmp_path / "rapport.html"
    ok(run, "report", "--coach", "eve@example.org", "--since", since_arg(), "--html", path)
    page = path.read_text(encoding="utf-8")
    ET.fromstring(page)
    assert 'lang="nl"' in page
    assert "Rapport voor Eve Visser" in page
    leaks = [sentence for sentence in english_sentences(extracted) if sentence in page]
    assert not leaks, leaks


def test_report_html_to_a_folder_that_does_not_exist(run, practice, tmp_path):
    path = tmp_path / "no" / "such" / "report.html"
    result = run("report", "--html", path)
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"Error: Cannot write {path}: No such file or directory.")


# -- export ---------------------------------------------------------------------------------


def rows_of(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_export_writes_one_row_per_decision_and_no_tokens(run, db, practice, tmp_path):
    path = tmp_path / "decisions.csv"
    result = ok(run, "export", "--csv", path, "--coach", "bob@example.org")
    rows = rows_of(path)
    bobs = db.conn.execute(
        "SELECT count(*) FROM decisions JOIN rounds ON rounds.id = decisions.round_id"
        " JOIN engagements ON engagements.id = rounds.engagement_id"
        " JOIN coaches ON coaches.id = engagements.coach_id WHERE coaches.email = ?",
        ["bob@example.org"],
    ).fetchone()[0]
    assert len(rows) == bobs == 10  # five rounds, two parties each
    # Counted are the decisions made; the parties who never answered are said apart.
    assert sum(1 for row in rows if row["choice"]) == 7
    assert result.stdout == (
        f"Wrote 7 decisions to {path}, and 3 rows for parties who did not answer.\n"
    )
    assert {row["coach"] for row in rows} == {"bob@example.org"}
    assert not any("erik" in row["party"] or "fleur" in row["party"] for row in rows)
    (stop,) = [
        row for row in rows if row["party"] == "anna@example.org" and row["choice"] == "stop"
    ]
    assert stop["reason"] == "on_my_own" and stop["usefulness"] == "9"
    assert stop["round_outcome"] == "stop"
    assert not any("token" in column for column in rows[0])
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"[A-Za-z0-9_-]{43}", text)  # no token, whatever the column
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("command", "made"),
    [
        # The whole practice: seven rounds, two parties each.
        (("export", "--csv"), lambda path: len(rows_of(path)) == 14),
        (("report", "--html"), lambda path: "<svg" in path.read_text(encoding="utf-8")),
    ],
    ids=["export", "report"],
)
def test_a_file_written_for_you_keeps_an_existing_one_unless_forced(
    run, practice, tmp_path, command, made
):
    path = tmp_path / "mine.txt"
    path.write_text("my own analysis\n")
    result = run(*command, path)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: {path} exists already; choose another name, or add --force to replace it."
    )
    assert path.read_text() == "my own analysis\n"
    ok(run, *command, path, "--force")
    assert made(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_export_disarms_a_note_a_spreadsheet_would_run(run, db, practice, tmp_path):
    engagement = start_engagement(db, "bob@example.org", ["gus@example.org"], T0)
    _, round_id = record_session_done(db, engagement, T0, POLICY)
    decide(db, round_id, "gus@example.org", T0, choice="continue", note='=HYPERLINK("x")')
    path = tmp_path / "decisions.csv"
    ok(run, "export", "--csv", path)
    (row,) = [row for row in rows_of(path) if row["note"]]
    assert row["note"] == '\'=HYPERLINK("x")'


def test_export_needs_a_file(run, practice):
    result = run("export")
    assert result.exit_code == 2
    assert "Missing option '--csv'" in result.stderr


# -- the coach's overview -----------------------------------------------------------------


def test_coach_link_prints_the_address_and_when_it_expires(run, practice):
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    result = ok(run, "coach", "link", "bob@example.org", "--now", iso(now))
    url, second = result.stdout.splitlines()
    assert TOKEN_LINK.fullmatch(url)
    assert second == (
        "It opens the overview of Bob Coach until Wed 2 Dec 2026 10:00 (Europe/Amsterdam); "
        "give it to them only."
    )
    data = json.loads(ok(run, "coach", "link", "bob@example.org", "--json").stdout)
    assert set(data) == {"url", "expires_at"}
    assert TOKEN_LINK.fullmatch(data["url"])


def test_coach_link_for_an_unknown_coach(run, practice):
    result = run("coach", "link", "nobody@example.org")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_overview_shows_the_coachs_own_engagements_rounds_and_charts(run, db, practice, client):
    path = coach_link(run, "bob@example.org")
    before = dump(db)
    page = client.get(path)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert dump(db) == before  # looking changes nothing
    assert "<h1>Overview for Bob Coach</h1>" in html
    # Dana's open round, with who still has to decide.
    assert "Work with Dana" in html
    assert "<li>You: not decided yet</li>" in html
    assert "<li>Dana Dekker: not decided yet</li>" in html
    # Active (Dana, Gus) and ended (Anna, Ben, Carl) engagements.
    for name in ("Work with Dana", "Work with Gus", "Work with Anna", "Work with Ben"):
        assert name in html
    assert "No answer by the deadline" in html
    assert html.count("<svg") == 4
    assert remote_loads(html) == []


def test_the_overview_never_shows_another_coachs_clients(run, db, practice, client):
    bob = client.get(coach_link(run, "bob@example.org")).get_data(as_text=True)
    eve = client.get(coach_link(run, "eve@example.org")).get_data(as_text=True)
    for key in ("erik", "fleur"):
        name = practice["names"][key]
        assert name not in bob and name.split()[0] not in bob
        assert f"{key}@example.org" not in bob
        assert name in eve
    for key in ("anna", "ben", "carl", "dana", "gus"):
        name = practice["names"][key]
        assert name not in eve and name.split()[0] not in eve
        assert f"{key}@example.org" not in eve
    assert "Eve Visser" not in bob and "Bob Coach" not in eve


def test_the_overview_link_opens_for_24_hours(run, practice, client):
    almost = datetime.now(UTC) - timedelta(hours=23, minutes=59)
    assert client.get(coach_link(run, "bob@example.org", now=almost)).status_code == 200
    expired = datetime.now(UTC) - timedelta(hours=24, minutes=1)
    path = coach_link(run, "bob@example.org", now=expired)
    answer = client.get(path)
    assert answer.status_code == 404
    assert "Bob Coach" not in answer.get_data(as_text=True)
    assert client.get("/c/" + "Q" * 43).status_code == 404
    assert client.get("/c/short").status_code == 404


def test_a_decision_link_does_not_open_the_overview(run, db, practice, client, smtp):
    token = token_of(links_in(smtp.to("bob@example.org")[-1])[0])
    assert client.get(f"/d/{token}").status_code == 200
    assert client.get(f"/c/{token}").status_code == 404


def test_the_overview_sends_the_security_headers(run, practice, client):
    path = coach_link(run, "bob@example.org")
    answers = {
        "page": client.get(path),
        "unknown": client.get("/c/" + "Q" * 43),
        "asks again": client.post(f"{path}/rounds/{practice['rounds']['dana'][0]}", data={}),
    }
    for name, answer in answers.items():
        assert answer.headers["Referrer-Policy"] == "no-referrer", name
        assert "no-store" in answer.headers["Cache-Control"], name
        assert answer.headers["X-Content-Type-Options"] == "nosniff", name
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, name
        assert "script-src" not in policy and "'unsafe-inline'" not in policy, name
        html = answer.get_data(as_text=True)
        assert "<script" not in html and " style=" not in html, name
    # The charts' own <style> elements are let in by this response's nonce, and only them.
    page = answers["page"].get_data(as_text=True)
    nonce = re.search(r"style-src 'self' 'nonce-([A-Za-z0-9_-]+)'", answers["page"].headers[
        "Content-Security-Policy"
    ]).group(1)  # fmt: skip
    styles = re.findall(r"<style[^>]*>", page)
    assert len(styles) == 4 and all(f'nonce="{nonce}"' in style for style in styles)
    again = client.get(path)
    assert nonce not in again.headers["Content-Security-Policy"]  # a new one each time


def test_the_overview_is_rate_limited_like_the_other_links(settings, run, practice):
    from twoyes.web import create_app

    """Guessed overview links count against the address like any other guess; once they are
    used up, the real overview answers 429 too."""
    limited = create_app({"TESTING": True, **settings, "TOKEN_RATE_LIMIT": "5 per minute"})
    browser = limited.test_client()
    path = coach_link(run, "bob@example.org")
    assert [browser.get(path).status_code for _ in range(6)] == [200] * 6  # a real link
    assert [browser.get("/c/" + "A" * 43).status_code for _ in range(5)] == [404] * 5
    assert browser.get(path).status_code == 429
    dana = practice["rounds"]["dana"][0]
    assert browser.post(f"{path}/rounds/{dana}", data={"choice": "stop"}).status_code == 429


def overview_form(client, path, round_id) -> dict:
    """The fields of the overview's form for one round, as a browser would send them."""
    html = client.get(path).get_data(as_text=True)
    action = f"{path}/rounds/{round_id}"
    assert f'action="{action}"' in html
    form = html.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    served = re.search(r'name="served" value="([^"]+)"', form).group(1)
    return {"served": served, "website": "", "reason": ""}


def coach_choice(db, round_id):
    return db.conn.execute(
        "SELECT choice, reason FROM decisions WHERE round_id = ? AND role = 'coach'", [round_id]
    ).fetchone()


def test_the_coach_decides_an_open_round_from_the_overview(run, db, practice, client):
    path = coach_link(run, "bob@example.org")
    dana = practice["rounds"]["dana"][0]
    answer = client.post(
        f"{path}/rounds/{dana}", data=overview_form(client, path, dana) | {"choice": "continue"}
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == path
    assert tuple(coach_choice(db, dana)) == ("continue", None)
    (event,) = db.conn.execute(
        "SELECT detail FROM events WHERE kind = 'decision_recorded' AND round_id = ?", [dana]
    ).fetchall()
    assert json.loads(event[0])["via"] == "coach_view"
    html = client.get(path).get_data(as_text=True)
    assert "<li>You: continue</li>" in html
    assert f'action="{path}/rounds/{dana}"' not in html  # decided: no form any more
    assert "You can still change this into stop until" in html


def test_a_stop_with_a_reason_from_the_overview(run, db, practice, client):
    path = coach_link(run, "bob@example.org")
    dana = practice["rounds"]["dana"][0]
    data = overview_form(client, path, dana) | {"choice": "stop", "reason": "values"}
    assert client.post(f"{path}/rounds/{dana}", data=data).status_code == 303
    assert tuple(coach_choice(db, dana)) == ("stop", "values")
    html = client.get(path).get_data(as_text=True)
    assert "No round is waiting for a decision." in html


def test_a_post_without_a_persons_stamp_only_asks_again(run, db, practice, client):
    path = coach_link(run, "bob@example.org")
    dana = practice["rounds"]["dana"][0]
    before = dump(db)
    form = overview_form(client, path, dana)
    answers = [
        client.post(f"{path}/rounds/{dana}", data={"choice": "continue"}),
        client.post(f"{path}/rounds/{dana}", data=form | {"choice": "stop", "website": "x"}),
        # A stamp that was tampered with does not count either.
        client.post(
            f"{path}/rounds/{dana}", data=form | {"served": form["served"] + "x", "choice": "stop"}
        ),
    ]
    for answer in answers:
        assert answer.status_code == 200
        assert "Please confirm your choice by pressing the button once more." in answer.text
    assert dump(db) == before


def test_bad_values_from_the_overview_are_a_400(run, db, practice, client):
    path = coach_link(run, "bob@example.org")
    dana = practice["rounds"]["dana"][0]
    form = overview_form(client, path, dana)
    before = dump(db)
    for data in ({"choice": "maybe"}, {"choice": "stop", "reason": "on_my_own"}, {}):
        answer = client.post(f"{path}/rounds/{dana}", data=form | data)
        assert answer.status_code == 400, data
    assert dump(db) == before


def test_another_coachs_round_is_not_found(run, db, practice, client):
    path = coach_link(run, "bob@example.org")
    fleur = practice["rounds"]["fleur"][0]
    before = dump(db)
    answer = client.post(f"{path}/rounds/{fleur}", data={"choice": "stop"})
    assert answer.status_code == 404
    assert "Fleur" not in answer.text and "Eve" not in answer.text
    assert client.post(f"{path}/rounds/999999", data={"choice": "stop"}).status_code == 404
    assert dump(db) == before


@pytest.mark.parametrize(
    ("round_", "status", "sentence"),
    [
        # Beyond SQLite's largest integer no round can have the number: a 404 like any other.
        ("9223372036854775808", 404, "This page does not exist"),
        ("99999999999999999999999", 404, "This page does not exist"),
        ("anna", 409, "This round is closed already, so nothing was changed."),
    ],
)
def test_a_round_beyond_any_id_or_closed_is_refused_and_changes_nothing(
    run, db, practice, client, round_, status, sentence
):
    path = coach_link(run, "bob@example.org")
    number = practice["rounds"][round_][0] if round_ in practice["rounds"] else round_
    before = dump(db)
    answer = client.post(f"{path}/rounds/{number}", data={"choice": "stop"})
    assert answer.status_code == status
    assert sentence in answer.text
    assert dump(db) == before


def test_get_never_decides(run, db, practice, client):
    path = coach_link(run, "bob@example.org")
    dana = practice["rounds"]["dana"][0]
    before = dump(db)
    # The round's address takes only a POST: a GET is told so (405), whoever sends it.
    answer = client.get(f"{path}/rounds/{dana}")
    assert answer.status_code == 405
    assert "This page cannot be used that way." in answer.text
    assert client.head(path).status_code == 200
    assert dump(db) == before


def test_a_dutch_coach_reads_the_overview_in_dutch(run, practice, client, extracted):
    path = coach_link(run, "eve@example.org")
    pages = [client.get(path, headers={"Accept-Language": "en"}).get_data(as_text=True)]
    fleur, erik = practice["rounds"]["fleur"][0], practice["rounds"]["erik"][0]
    asks_again = client.post(f"{path}/rounds/{fleur}", data={"choice": "continue"})
    bad = client.post(
        f"{path}/rounds/{fleur}", data=overview_form(client, path, fleur) | {"choice": "maybe"}
    )
    closed = client.post(f"{path}/rounds/{erik}", data={"choice": "stop"})
    other = client.post(f"{path}/rounds/{practice['rounds']['dana'][0]}", data={})
    assert [asks_again.status_code, bad.status_code, closed.status_code, other.status_code] == [
        200,
        400,
        409,
        404,
    ]
    pages += [asks_again.text, bad.text, closed.text, other.text]
    assert '<html lang="nl">' in pages[0]
    assert "Overzicht voor Eve Visser" in pages[0]
    leaks = {sentence for sentence in english_sentences(extracted) for p in pages if sentence in p}
    assert not leaks, f"English on a Dutch coach's overview: {sorted(leaks)}"


# -- the schema upgrade -----------------------------------------------------------------------

VERSION_2_TOKENS = """
CREATE TABLE tokens_v2 (
    hash TEXT PRIMARY KEY,
    purpose TEXT NOT NULL CHECK (purpose IN ('decide', 'welcome_back')),
    decision_id INTEGER REFERENCES decisions (id),
    member_id INTEGER REFERENCES members (id),
    created_at TEXT NOT NULL,
    expires_at TEXT,
    CHECK ((purpose = 'decide') = (decision_id IS NOT NULL)),
    CHECK ((purpose = 'welcome_back') = (member_id IS NOT NULL AND expires_at IS NOT NULL))
) WITHOUT ROWID
"""


def tables_of(path) -> dict:
    connection = sqlite3.connect(path)
    try:
        return {
            name: [column[1] for column in connection.execute(f"PRAGMA table_info({name})")]
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        }
    finally:
        connection.close()


def test_init_upgrades_a_version_2_database(run, db, practice, app, client):
    path = app.config["DATABASE"]
    fresh = tables_of(path)
    # Back to version 2: a tokens table that knows no coach view.
    for statement in (
        VERSION_2_TOKENS,
        # (Links of mail not delivered yet have no hash since version 6; version 2 had none.)
        "INSERT INTO tokens_v2 SELECT hash, purpose, decision_id, member_id, created_at,"
        " expires_at FROM tokens WHERE purpose != 'coach_view' AND hash IS NOT NULL",
        "DROP TABLE tokens",
        "ALTER TABLE tokens_v2 RENAME TO tokens",
        # Version 4 added the name people are called by (the view reading it goes first).
        "DROP VIEW round_parties",
        "ALTER TABLE coaches DROP COLUMN call_name",
        "ALTER TABLE clients DROP COLUMN call_name",
        *BEFORE_VERSION_7,
        "ALTER TABLE coaches DROP COLUMN forgotten_at",  # version 6 adds it
        "PRAGMA user_version = 2",
    ):
        db.conn.execute(statement)
    tokens = db.conn.execute("SELECT * FROM tokens ORDER BY hash").fetchall()
    assert tokens and "coach_id" not in tables_of(path)["tokens"]
    with pytest.raises(sqlite3.IntegrityError):
        db.conn.execute(
            "INSERT INTO tokens (hash, purpose, created_at) VALUES ('x', 'coach_view', 'now')"
        )

    result = ok(run, "init")
    assert f"from version 2 to {database.SCHEMA_VERSION}" in result.stdout
    assert tables_of(path) == fresh
    after = db.conn.execute(
        "SELECT hash, purpose, decision_id, member_id, created_at, expires_at FROM tokens"
        " ORDER BY hash"
    ).fetchall()
    assert [tuple(row) for row in after] == [tuple(row) for row in tokens]
    assert "up to date" in ok(run, "init").stdout
    assert client.get(coach_link(run, "bob@example.org")).status_code == 200
