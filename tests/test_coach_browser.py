"""In a real browser on a phone: a coach's whole month without the command line.

Debian's Chromium, headless, driven by Playwright at 390 px wide, against the app served by
`python cli.py serve` (test_browser.Practice); the operator only adds the coach, and cron's
`tick` (with --now) lets time pass. Everything else the coach does by mail and on the
pages: sign in, start an engagement with a new client, record the session, decide, plan the
next one from the "We continue" mail, move it, let it end by silence, and reopen it from the
come-back request. Each page the coach sees is checked as the client's pages are: the
reader's language, no sideways scroll, a label for every control, WCAG AA contrast.

Screenshots go to test-artifacts/ (git-ignored), for a person to look at.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
from browser import (
    MIN_DECISION_SECONDS,
    Practice,
    axe_violations,
    launch_chromium,
    screenshot,
    tab,
    words,
)
from playwright.sync_api import Browser, Page
from support import Inbox, links_in, text_of

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
AMSTERDAM = ZoneInfo("Europe/Amsterdam")
COACH_PAGE = re.compile(r"http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_-]{43}(?:/[a-z0-9/-]+)?")

UNLABELLED_JS = """() => Array.from(document.querySelectorAll(
    "input:not([type=hidden]), select, textarea, button"))
  .filter((c) => c.checkVisibility() && !(c.labels && c.labels.length)
                 && !c.textContent.trim() && !c.getAttribute("aria-label"))
  .map((c) => c.outerHTML)"""


@pytest.fixture(scope="module")
def practice(tmp_path_factory, inbox) -> Iterator[Practice]:
    practice = Practice(tmp_path_factory.mktemp("coach-practice"), inbox)
    # A coach's month is many pages within a minute, all from 127.0.0.1.
    practice.env["TWOYES_TOKEN_RATE_LIMIT"] = "1000 per minute"
    practice.cli("init")
    practice.start()
    try:
        yield practice
    finally:
        practice.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


def newest(inbox: Inbox, address: str) -> EmailMessage:
    return inbox.to(address)[-1]


def coach_link(mail: EmailMessage, ending: str = "") -> str:
    """The link of a coach's mail to their pages: the overview, or one ending in `ending`."""
    found = [link for link in COACH_PAGE.findall(text_of(mail)) if link.endswith(ending)]
    if not ending:
        found = [link for link in found if link.count("/") == 4]
    (link,) = found
    return link


def in_days(days: int) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def like_a_person(page: Page) -> None:
    """Scanners press buttons at once; a person takes a moment (MIN_DECISION_SECONDS)."""
    time.sleep(MIN_DECISION_SECONDS + 0.3)


def check(page: Page, lang: str, name: str) -> None:
    """What every page the coach sees must be: theirs, on a phone, readable by anyone."""
    assert page.locator("html").get_attribute("lang") == lang
    assert page.locator("script").count() == 0, "the pages need no JavaScript"
    assert page.evaluate("window.innerWidth") == PHONE["width"]
    width = page.evaluate("document.documentElement.scrollWidth")
    screenshot(page, f"coach-{lang}-{name}")
    assert width <= PHONE["width"], f"{name}: {width} px wide at {PHONE['width']}"
    assert page.evaluate(UNLABELLED_JS) == [], name
    assert axe_violations(page) is None, name


def fill_when(page: Page, _, moment: datetime, minutes: int) -> None:
    local = moment.astimezone(AMSTERDAM)
    page.get_by_label(_("Date"), exact=True).fill(local.date().isoformat())
    page.get_by_label(_("Starts at"), exact=True).fill(local.strftime("%H:%M"))
    page.get_by_label(_("Minutes"), exact=True).fill(str(minutes))


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_a_coachs_month_on_a_phone(browser, practice, inbox, lang):
    _ = words(lang)
    coach, client = f"bob.{lang}@example.org", f"anna.{lang}@example.org"
    practice.cli("coach", "add", "Bob Coach", coach, "--lang", lang)  # the operator's one step

    with tab(browser, PHONE, locale="nl-NL" if lang == "nl" else "en-GB") as page:
        # Sign in by mail.
        page.goto(f"{practice.base_url}/c")
        check(page, lang, "sign-in")
        page.get_by_label(_("Your e-mail address")).fill(coach)
        like_a_person(page)
        page.get_by_role("button", name=_("Mail me a link")).click()
        assert page.locator(".recorded").is_visible()
        practice.cli("send")
        page.goto(coach_link(newest(inbox, coach)))
        overview = page.url
        check(page, lang, "overview")

        # Start an engagement with a new client.
        page.get_by_role("link", name=_("Start an engagement")).click()
        check(page, lang, "start")
        page.get_by_label(_("Name"), exact=True).fill("Anna de Vries")
        page.get_by_label(_("E-mail address"), exact=True).fill(client)
        page.get_by_label(_("Language of their mails")).select_option(lang)
        page.get_by_label(_("Title (optional)")).fill("Career")
        like_a_person(page)
        page.get_by_role("button", name=_("Start the engagement")).click()
        assert page.get_by_role("heading", level=1).inner_text() == "Career"
        engagement_id = int(page.url.rsplit("/", 1)[1])
        check(page, lang, "engagement")

        # The session took place: record it, then decide on the overview.
        like_a_person(page)
        page.get_by_role("button", name=_("Record the session")).click()
        assert page.url.startswith(overview)
        check(page, lang, "overview-open-round")
        practice.cli("send")
        (continue_link,) = [x for x in links_in(newest(inbox, client)) if x.endswith("/continue")]
        with tab(browser, PHONE) as client_page:
            client_page.goto(continue_link)
            like_a_person(client_page)
            # From the mail's Continue link the page asks to confirm that one choice.
            client_page.get_by_role("button", name=_("Confirm"), exact=True).first.click()
            client_page.wait_for_url(continue_link.rsplit("/", 1)[0])
        page.reload()
        like_a_person(page)
        page.get_by_role("button", name=_("Continue"), exact=True).click()
        page.wait_for_url(overview)

        # "We continue": plan the next session from the mail.
        practice.cli("send")
        we_continue = newest(inbox, coach)
        assert we_continue["Subject"] == _("We continue")
        page.goto(coach_link(we_continue, "/plan"))
        check(page, lang, "plan")
        fill_when(page, _, in_days(7).replace(hour=9, minute=0), 60)
        like_a_person(page)
        page.get_by_role("button", name=_("Plan the session")).click()
        assert page.get_by_role("link", name=_("Move it")).is_visible()

        # Move it a day on.
        page.get_by_role("link", name=_("Move it")).click()
        check(page, lang, "move")
        moved = in_days(8).astimezone(AMSTERDAM).replace(hour=11, minute=0)
        fill_when(page, _, moved, 90)
        like_a_person(page)
        page.get_by_role("button", name=_("Move the session")).click()
        assert moved.strftime("%H:%M") in page.locator("dl.facts").inner_text()

        # Nobody answers after it: by the deadline the engagement ends by silence.
        practice.cli("tick", "--now", (moved + timedelta(minutes=91)).isoformat())
        practice.cli("tick", "--now", (moved + timedelta(days=8)).isoformat())
        (welcome_back,) = [x for x in links_in(newest(inbox, client)) if "/b/" in x]
        with tab(browser, PHONE) as client_page:
            client_page.goto(welcome_back)
            like_a_person(client_page)
            client_page.get_by_role("button").click()
            assert client_page.locator(".recorded").is_visible()

        # The come-back request: reopen and plan from the mail.
        practice.cli("send")
        request = newest(inbox, coach)
        assert "python cli.py" not in text_of(request)
        page.goto(coach_link(request))
        check(page, lang, "overview-come-back")
        asked = page.get_by_role("heading", name=_("Asked to come back"))
        assert "Anna de Vries" in asked.locator("xpath=following-sibling::ul[1]").inner_text()
        page.goto(coach_link(request, "/reopen"))
        check(page, lang, "reopen")
        fill_when(page, _, in_days(14).replace(hour=8, minute=30), 60)
        like_a_person(page)
        page.get_by_role("button", name=_("Reopen"), exact=True).click()
        assert page.get_by_role("link", name=_("Move it")).is_visible()
        check(page, lang, "reopened")

    engagement = practice.show(engagement_id)
    assert engagement["status"] == "active"
    assert [s["round"] is None for s in engagement["sessions"]] == [False, False, True]
