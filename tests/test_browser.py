"""In a real browser: a client taps a link in their decision mail, confirms, and sees it recorded.

Debian's Chromium, headless, driven by Playwright, against the app served by
`python cli.py serve` on a free port; people, sessions and delivery go
through the real command line, and the mail is read back from a real SMTP
server. In English and in Dutch, on a phone (390x844) and a desk (1280x900).

What a person sees first is checked where only a browser can see it: arriving
from a mail's link, the choice and the button that records it lie inside the
first screen, without scrolling; from the page's own link, both buttons do.
axe-core (the engine behind most accessibility checkers, shipped by
axe-playwright-python) judges every page, open and closed, at both widths and
in both languages, against the WCAG 2.2 AA rules, and so does the decision
mail's HTML; what axe cannot judge is checked by hand: no horizontal scroll at
320 px, a visible focus ring that stands out, a decision that needs no
JavaScript.

Screenshots of the first screens go to test-artifacts/ (git-ignored), for a person to look at.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from browser import (
    AXE,
    COACH,
    DESKTOP,
    DUTCH_COACH,
    MIN_DECISION_SECONDS,
    NARROWEST,
    PHONE,
    WCAG_22_AA,
    WIDTHS,
    Practice,
    launch_chromium,
    screenshot,
    tab,
    words,
)
from playwright.sync_api import Browser, Locator, Page
from support import Inbox, html_of, links_in, text_of

from twoyes.labels import REASON_LABELS
from twoyes.rules import REASONS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def practice(tmp_path_factory, inbox) -> Iterator[Practice]:
    practice = Practice(tmp_path_factory.mktemp("practice"), inbox)
    practice.cli("init")
    practice.start()
    try:
        practice.cli("coach", "add", *COACH, "--lang", "en")
        practice.cli("coach", "add", *DUTCH_COACH, "--lang", "nl")
        yield practice
    finally:
        practice.stop()


@pytest.fixture(scope="module")
def waiting(practice) -> dict[str, EmailMessage]:
    """An open round per language, only looked at (GET changes nothing)."""
    return {
        "en": practice.open_round("Anna de Vries", "anna.looks@example.org", "en")[1],
        "nl": practice.open_round("Daan de Boer", "daan.looks@example.org", "nl")[1],
    }


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


def link_to(mail: EmailMessage, choice: str) -> str:
    (link,) = [link for link in links_in(mail) if link.endswith(f"/{choice}")]
    return link


def page_link(mail: EmailMessage) -> str:
    """The decision page's own address: no choice brought from the mail."""
    return link_to(mail, "continue").rsplit("/", 1)[0]


def wait_like_a_person(opened_at: float) -> None:
    """Scanners press buttons at once; a person takes a moment (MIN_DECISION_SECONDS)."""
    time.sleep(max(0.0, opened_at + MIN_DECISION_SECONDS + 0.3 - time.monotonic()))


def in_first_screen(page: Page, element: Locator) -> dict:
    """The element's box, asserting it lies wholly inside the viewport as the page opened."""
    viewport = page.viewport_size
    assert page.evaluate("window.scrollY") == 0, "the page scrolled by itself"
    assert element.is_visible()
    box = element.bounding_box()
    assert box["x"] >= 0 and box["y"] >= 0, box
    assert box["x"] + box["width"] <= viewport["width"], f"{box} is past the right edge"
    assert box["y"] + box["height"] <= viewport["height"], (
        f"{box} is below the first screen of {viewport}"
    )
    return box


def chosen_words(_, choice: str) -> str:
    return {
        "continue": _("You chose: another session would be useful."),
        "stop": _("You chose: I have what I need for now."),
    }[choice]


def recorded_words(_, choice: str) -> str:
    return {
        "continue": _("Recorded: you would like another session."),
        "stop": _("Recorded: you have what you need for now."),
    }[choice]


def mail_label(_, choice: str) -> str:
    """The client's words for a choice, as on the mail's buttons."""
    return {
        "continue": _("Another session would be useful"),
        "stop": _("I have what I need for now"),
    }[choice]


# --- the first screen ------------------------------------------------------------------------

FIRST_SCREENS = [
    ("en", "phone", "continue"),
    ("nl", "phone", "stop"),
    ("en", "desktop", "stop"),
    ("nl", "desktop", "continue"),
]


@pytest.mark.parametrize(("lang", "width", "choice"), FIRST_SCREENS)
def test_the_choice_and_the_button_that_records_it_are_on_the_first_screen(
    browser, practice, lang, width, choice
):
    _ = words(lang)
    name = f"First{lang.title()}{width.title()} Client"
    email = f"first.{lang}.{width}@example.org"
    engagement_id, mail = practice.open_round(name, email, lang)
    link = link_to(mail, choice)
    other = "stop" if choice == "continue" else "continue"

    with tab(browser, WIDTHS[width]) as page:
        answer = page.goto(link)
        opened_at = time.monotonic()
        assert answer.status == 200
        assert page.locator("html").get_attribute("lang") == lang
        screenshot(page, f"first-screen-{lang}-{width}-{choice}")

        assert page.get_by_role("heading", level=1).inner_text() == _("Another session?")
        in_first_screen(page, page.get_by_text(chosen_words(_, choice), exact=True))
        (top, bottom) = page.get_by_role("button", name=_("Confirm"), exact=True).all()
        confirm = in_first_screen(page, top)
        assert confirm["height"] >= 44, f"the button is small to tap: {confirm}"
        in_first_screen(page, page.get_by_role("link", name=mail_label(_, other), exact=True))
        # The optional fields follow below the button; the reason only for a stop.
        usefulness = page.get_by_label(_("How useful was this session? (optional)"))
        assert usefulness.bounding_box()["y"] > confirm["y"] + confirm["height"]
        assert page.get_by_role("radio").count() == (3 if choice == "stop" else 0)
        assert page.get_by_text(_("If you stop: what is the main reason? (optional)")).count() == 0

        if choice == "stop":
            # Filling in the optional fields, then pressing the button below them.
            usefulness.select_option("9")
            page.get_by_label(_(REASON_LABELS["on_my_own"])).check()
            pressed = bottom
        else:
            pressed = top
        wait_like_a_person(opened_at)
        pressed.click()

        page.wait_for_url(link.rsplit("/", 1)[0])
        in_first_screen(page, page.get_by_text(recorded_words(_, choice), exact=True))
        assert f">{choice}<" not in page.content(), "the choice in words, not as a code"
        screenshot(page, f"recorded-{lang}-{width}-{choice}")

    (decision,) = [
        d
        for d in practice.show(engagement_id)["sessions"][0]["round"]["decisions"]
        if d["party"] == email
    ]
    assert decision["choice"] == choice
    assert decision["usefulness"] == (9 if choice == "stop" else None)
    assert decision["reason"] == (None if choice == "continue" else "on_my_own")


@pytest.mark.parametrize("width", ["phone", "desktop"])
@pytest.mark.parametrize("lang", ["en", "nl"])
def test_the_page_s_own_link_shows_both_buttons_on_the_first_screen(browser, waiting, lang, width):
    _ = words(lang)
    with tab(browser, WIDTHS[width]) as page:
        page.goto(page_link(waiting[lang]))
        screenshot(page, f"first-screen-{lang}-{width}-no-choice-yet")
        for name in (_("Continue"), _("Stop")):
            in_first_screen(page, page.get_by_role("button", name=name, exact=True).first)


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_the_decision_page_fits_a_320_px_phone(browser, waiting, lang):
    _ = words(lang)
    with tab(browser, NARROWEST) as page:
        page.goto(link_to(waiting[lang], "stop"))
        assert page.evaluate("window.innerWidth") == 320, "the page must set a mobile viewport"
        width = page.evaluate("document.documentElement.scrollWidth")
        screenshot(page, f"decision-{lang}-320", full_page=True)
        assert width <= 320, f"{width} px wide at 320: the phone scrolls sideways"
        in_first_screen(page, page.get_by_role("button", name=_("Confirm"), exact=True).first)
        for button in page.get_by_role("button").all():
            button.scroll_into_view_if_needed()
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 320, box
            assert box["height"] >= 24, f"too small to tap: {box}"


def test_every_control_has_a_label_and_the_choice_a_legend(browser, waiting):
    _ = words("en")
    with tab(browser, DESKTOP) as page:
        page.goto(page_link(waiting["en"]))
        assert page.locator("script").count() == 0, "the pages need no JavaScript"

        unlabelled = page.evaluate(
            """() => Array.from(document.querySelectorAll(
                 "input:not([type=hidden]), select, textarea, button"))
               .filter((c) => !(c.labels && c.labels.length) && !c.textContent.trim()
                              && !c.getAttribute("aria-label"))
               .map((c) => c.outerHTML)"""
        )
        assert unlabelled == []

        usefulness = page.get_by_label(_("How useful was this session? (optional)"))
        assert usefulness.evaluate("e => e.tagName") == "SELECT"
        note_label = _("Anything you would like %(coach)s to know? (optional)", coach=COACH[0])
        assert page.get_by_label(note_label).evaluate("e => e.tagName") == "TEXTAREA"
        for reason in REASONS["client"]:
            assert page.get_by_label(_(REASON_LABELS[reason])).get_attribute("value") == reason
        reasons = page.get_by_role(
            "group", name=_("If you stop: what is the main reason? (optional)")
        )
        assert reasons.get_by_role("radio").count() == 3

        choice = page.get_by_role("group", name=_("Your answer"))
        assert choice.evaluate("e => e.tagName") == "FIELDSET"
        assert choice.get_by_role("button", name=_("Continue"), exact=True).count() == 1
        assert choice.get_by_role("button", name=_("Stop"), exact=True).count() == 1

        note = page.get_by_role("textbox")
        assert note.get_attribute("aria-describedby") == "note-help"
        assert page.locator("#note-help").inner_text() == _("At most 2,000 characters.")

        page.goto(link_to(waiting["en"], "stop"))
        confirm = page.get_by_role("group", name=_("You chose: I have what I need for now."))
        assert confirm.evaluate("e => e.tagName") == "FIELDSET"
        assert confirm.get_by_role("button", name=_("Confirm")).count() == 1
        reasons = page.get_by_role("group", name=_("What is the main reason? (optional)"))
        assert reasons.get_by_role("radio").count() == 3


FOCUSED_JS = """
() => {
  const e = document.activeElement;
  const style = getComputedStyle(e);
  let around = e.parentElement;
  while (around && getComputedStyle(around).backgroundColor === "rgba(0, 0, 0, 0)") {
    around = around.parentElement;
  }
  return {
    tag: e.tagName, text: e.textContent.trim(), visible: e.matches(":focus-visible"),
    style: style.outlineStyle, width: parseFloat(style.outlineWidth), color: style.outlineColor,
    around: around ? getComputedStyle(around).backgroundColor : "rgb(255, 255, 255)",
  };
}
"""


def test_the_keyboard_reaches_every_control_with_a_visible_focus_ring(browser, waiting):
    _ = words("en")
    with tab(browser, DESKTOP) as page:
        # The page's own address: no choice brought along, no autofocus.
        page.goto(page_link(waiting["en"]))
        seen = []
        for _press in range(12):  # to the footer's link, the page's last stop
            page.keyboard.press("Tab")
            seen.append(page.evaluate(FOCUSED_JS))
            if seen[-1]["tag"] == "A":
                break
        tags = [(f["tag"], f["text"] if f["tag"] == "BUTTON" else "") for f in seen]
        assert tags[:2] == [("BUTTON", _("Continue")), ("BUTTON", _("Stop"))], tags
        for stop in ("SELECT", "INPUT", "TEXTAREA"):
            assert (stop, "") in tags, f"Tab never reached the {stop}: {tags}"
        assert ("BUTTON", _("Continue")) in tags[3:], "the buttons again, below the fields"
        for focused in seen:
            assert focused["visible"], focused
            assert focused["style"] != "none" and focused["width"] >= 2, focused
            # WCAG 2.2 SC 1.4.11: the ring needs 3:1 against what it is drawn on, which axe
            # does not judge (it sees no focus).
            ratio = contrast(focused["color"], focused["around"])
            assert ratio >= 3, f"the focus ring {focused['color']} on {focused['around']}: {ratio}"
        page.keyboard.press("Shift+Tab")
        screenshot(page, "decision-en-focus")


def contrast(first: str, second: str) -> float:
    """WCAG's contrast ratio of two opaque colours as getComputedStyle writes them."""

    def luminance(colour: str) -> float:
        channels = [int(v) / 255 for v in re.findall(r"\d+", colour)[:3]]
        r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_a_decision_needs_no_javascript(browser, practice):
    _ = words("en")
    engagement_id, mail = practice.open_round("Emma Nojs", "emma.nojs@example.org", "en")
    link = link_to(mail, "continue")
    with tab(browser, PHONE, java_script_enabled=False) as page:
        page.goto(link)
        opened_at = time.monotonic()
        page.get_by_label(_("How useful was this session? (optional)")).select_option("7")
        wait_like_a_person(opened_at)
        page.get_by_role("button", name=_("Confirm"), exact=True).last.click()
        page.wait_for_url(link.rsplit("/", 1)[0])
        assert (
            _("Recorded: you would like another session.") in page.locator(".recorded").inner_text()
        )
    decisions = practice.show(engagement_id)["sessions"][0]["round"]["decisions"]
    (decision,) = [d for d in decisions if d["party"] == "emma.nojs@example.org"]
    assert (decision["choice"], decision["usefulness"]) == ("continue", 7)


# --- accessibility: axe-core on every page -----------------------------------------------------


def confirm_in_browser(browser: Browser, link: str, choice: str) -> None:
    """A person opens a mail's link and confirms."""
    with tab(browser, DESKTOP) as page:
        page.goto(link)
        opened_at = time.monotonic()
        wait_like_a_person(opened_at)
        page.get_by_role("button", name=words(lang_of(page))("Confirm"), exact=True).first.click()
        page.wait_for_url(link.rsplit("/", 1)[0])
        assert page.locator(".recorded").count() == 1, choice


def lang_of(page: Page) -> str:
    return page.locator("html").get_attribute("lang")


def mail_about(inbox: Inbox, to: str, subject: str, mentioning: str) -> EmailMessage:
    (mail,) = [m for m in inbox.to(to) if m["Subject"] == subject and mentioning in text_of(m)]
    return mail


@pytest.fixture(scope="module")
def tour(practice, browser, inbox) -> dict[str, dict[str, str]]:
    """Every page a person can meet, per language: a path each, made the way people do."""
    pages = {}
    for lang, (_coach_name, coach) in (("en", COACH), ("nl", DUTCH_COACH)):
        _ = words(lang)
        _id, untouched = practice.open_round(
            f"Open {lang}", f"open.{lang}@example.org", lang, coach
        )
        _id, kept = practice.open_round(f"Kept {lang}", f"kept.{lang}@example.org", lang, coach)
        _id, gone = practice.open_round(f"Gone {lang}", f"gone.{lang}@example.org", lang, coach)
        confirm_in_browser(browser, link_to(kept, "continue"), "continue")
        confirm_in_browser(browser, link_to(gone, "stop"), "stop")
        practice.cli("send")
        ending = mail_about(
            inbox, f"gone.{lang}@example.org", _("Thank you, and welcome back any time"), ""
        )
        (welcome,) = links_in(ending)
        to_coach = mail_about(inbox, coach, _("Another session?"), f"Gone {lang}")
        overview = json.loads(practice.cli("coach", "link", coach, "--json"))["url"]
        decision = page_link(gone).replace(practice.base_url, "")
        pages[lang] = {
            "index": "/",
            "privacy": "/privacy",
            "not found": "/d/" + "Q" * 43,
            "decision, no choice yet": page_link(untouched),
            "decision, continue link": link_to(untouched, "continue"),
            "decision, stop link": link_to(untouched, "stop"),
            "decision, continue recorded": page_link(kept),
            "decision, closed, client": decision,
            "decision, closed, asked to come back": f"{decision}?asked=1",
            "decision, closed, coach": page_link(to_coach),
            "welcome back": welcome,
            "welcome back, asked": f"{welcome}?asked=1",
            "coach overview": overview,
        }
    return {
        lang: {name: path.replace(practice.base_url, "") for name, path in paths.items()}
        for lang, paths in pages.items()
    }


@pytest.mark.parametrize("width", ["phone", "desktop"])
@pytest.mark.parametrize("lang", ["en", "nl"])
def test_every_page_meets_wcag_2_2_aa_by_axe(browser, practice, tour, lang, width):
    locale = {"en": "en-GB", "nl": "nl-NL"}[lang]  # for the pages without a token
    found = {}
    with tab(browser, WIDTHS[width], locale=locale) as page:
        for name, path in tour[lang].items():
            answer = page.goto(practice.base_url + path)
            assert answer.status == (404 if name == "not found" else 200), name
            assert lang_of(page) == lang, name
            results = AXE.run(page, options=WCAG_22_AA)
            if results.violations_count:
                found[name] = results.generate_report()
            slug = re.sub(r"\W+", "-", name).strip("-")
            screenshot(page, f"page-{lang}-{width}-{slug}")
    assert not found, "\n\n".join(f"{name}: {report}" for name, report in found.items())


# What would make a mail client fetch something: images, stylesheets, fonts.
REMOTE = re.compile(
    r"""\b(?:src|background)\s*=\s*["']?https?:|<link\b[^>]*\bhref\s*=\s*["']?https?:"""
    r"|@import|url\(",
    re.IGNORECASE,
)


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_the_decision_mail_reads_well_on_a_phone(browser, waiting, lang):
    _ = words(lang)
    mail = waiting[lang]
    html = html_of(mail)
    assert not REMOTE.findall(html), "the mail must load nothing remote"
    with tab(browser, PHONE) as page:
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.set_content(html, wait_until="load")
        assert requests == [], f"the mail fetched {requests}"
        width = page.evaluate("document.documentElement.scrollWidth")
        screenshot(page, f"mail-decision-{lang}-phone", full_page=True)
        assert width <= PHONE["width"], f"the mail is {width} px wide on a {PHONE['width']} phone"
        assert page.evaluate("Array.from(document.images).map((i) => i.src)") == []

        for choice in ("continue", "stop"):
            link = page.get_by_role("link", name=mail_label(_, choice), exact=True)
            assert link.get_attribute("href") == link_to(mail, choice)
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (choice, box)
        results = AXE.run(page, options=WCAG_22_AA)
        assert results.violations_count == 0, results.generate_report()
