"""In a real browser: a client opens the link in their decision mail, chooses, and sees it recorded.

Debian's Chromium, headless, driven by Playwright, against the app served by
`python cli.py serve` on a free port; people, sessions and delivery go
through the real command line, and the mail is read back from a real SMTP
server. Once in English, once in Dutch. The issue's promises for the pages
are checked where only a browser can see them: no horizontal scroll at
320 px, a label for every control, a fieldset with a legend around the
choice, a visible focus ring, WCAG AA contrast from the computed styles, and
a decision that needs no JavaScript. The decision mail's HTML is rendered
too: its buttons are links that read well, and it loads nothing remote.

Screenshots go to test-artifacts/ (git-ignored), for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from playwright.sync_api import Browser, Page, sync_playwright
from support import ROOT, Inbox, free_port, html_of, links_in, serve_smtp, token_of

from twoyes.labels import REASON_LABELS
from twoyes.rules import REASONS

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
PHONE = {"width": 375, "height": 740}
NARROWEST = {"width": 320, "height": 640}
DESKTOP = {"width": 1280, "height": 900}
MIN_DECISION_SECONDS = 1
COACH = ("Bob Coach", "bob@example.org")

# WCAG 2.x relative luminance and contrast ratio, from computed styles. The
# background is every ancestor's background-color composited over white (the
# canvas), so a transparent element gets what shows through behind it.
CONTRAST_JS = """
(element, which) => {
  const parse = (value) => {
    const match = value.match(/rgba?\\(([^)]+)\\)/);
    if (!match) throw new Error("cannot read the colour " + value);
    const parts = match[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: parts[0], g: parts[1], b: parts[2], a: parts.length > 3 ? parts[3] : 1 };
  };
  const over = (top, below) => ({
    r: top.r * top.a + below.r * (1 - top.a),
    g: top.g * top.a + below.g * (1 - top.a),
    b: top.b * top.a + below.b * (1 - top.a),
    a: 1,
  });
  const luminance = (c) => {
    const channel = (v) => {
      const s = v / 255;
      return s <= 0.04045 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  };
  const layers = [];
  let node = which === "outline" ? element.parentElement : element;
  for (; node; node = node.parentElement) {
    const style = getComputedStyle(node);
    if (style.backgroundImage !== "none") throw new Error("a background image behind the text");
    layers.push(parse(style.backgroundColor));
  }
  let background = { r: 255, g: 255, b: 255, a: 1 };
  for (const layer of layers.reverse()) background = over(layer, background);
  const style = getComputedStyle(element);
  const color = which === "outline" ? style.outlineColor : style.color;
  const foreground = over(parse(color), background);
  const [light, dark] = [luminance(foreground), luminance(background)].sort((x, y) => y - x);
  const size = parseFloat(style.fontSize);
  const bold = parseInt(style.fontWeight, 10) >= 700;
  return {
    ratio: (light + 0.05) / (dark + 0.05),
    large: size >= 24 || (bold && size >= 18.66),
    color: color,
    background: `rgb(${[background.r, background.g, background.b].map(Math.round).join(", ")})`,
  };
}
"""

# Every visible element with text of its own: what a reader has to be able to read.
TEXT_ELEMENTS_JS = """
() => Array.from(document.querySelectorAll("body *")).filter((element) =>
  element.checkVisibility() && !element.closest("[aria-hidden=true]") &&
  Array.from(element.childNodes).some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim())
).map((element, index) => {
  element.dataset.textCheck = String(index);
  return String(index);
})
"""

DESCRIBE_JS = "e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')"


def words(lang: str):
    """gettext for the test: the English msgid, or its Dutch from the catalogue."""
    if lang == "en":
        return lambda text, **names: text % names if names else text
    with open(ROOT / "translations/nl/LC_MESSAGES/messages.po", "rb") as file:
        catalogue = read_po(file)

    def dutch(text: str, **names) -> str:
        translated = catalogue[text].string
        return translated % names if names else translated

    return dutch


class Practice:
    """One practice: its database, `python cli.py serve` on a free port, and the command line."""

    def __init__(self, folder: Path, inbox: Inbox) -> None:
        self.inbox = inbox
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "serve.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TWOYES_")} | {
            "TWOYES_DATABASE": str(folder / "twoyes.db"),
            "TWOYES_INSTANCE_PATH": str(folder / "instance"),
            "TWOYES_BASE_URL": self.base_url,
            "TWOYES_MAIL_SERVER": "127.0.0.1",
            "TWOYES_MAIL_PORT": str(inbox.port),
            "TWOYES_MAIL_DEFAULT_SENDER": "Practice <practice@example.org>",
            "TWOYES_MIN_DECISION_SECONDS": str(MIN_DECISION_SECONDS),
            "TWOYES_TIMEZONE": "Europe/Amsterdam",
        }
        self.server: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "cli.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"cli.py {' '.join(args)}: {done.stderr}"
        return done.stdout

    def start(self) -> None:
        with open(self.log, "w") as log:
            self.server = subprocess.Popen(
                [sys.executable, "cli.py", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.server.poll() is None, f"serve stopped: {self.log.read_text()}"
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise AssertionError(f"serve did not answer in 20 s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    def open_round(self, name: str, email: str, lang: str) -> tuple[int, EmailMessage]:
        """A new client of Bob's, a session just held, and the client's decision mail."""
        self.cli("client", "add", name, email, "--lang", lang)
        started = self.cli("engagement", "start", "--coach", COACH[1], "--client", email, "--json")
        engagement_id = json.loads(started)["id"]
        self.cli("session", "done", str(engagement_id))
        self.cli("send")
        (mail,) = self.inbox.to(email)
        assert mail["Subject"] == words(lang)("Another session?")
        return engagement_id, mail

    def show(self, engagement_id: int) -> dict:
        return json.loads(self.cli("engagement", "show", str(engagement_id), "--json"))


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    """The same real SMTP server as conftest's `smtp`, kept for the module like the app."""
    with serve_smtp(Inbox()) as inbox:
        yield inbox


@pytest.fixture(scope="module")
def practice(tmp_path_factory, inbox) -> Iterator[Practice]:
    practice = Practice(tmp_path_factory.mktemp("practice"), inbox)
    practice.cli("init")
    practice.start()
    try:
        practice.cli("coach", "add", *COACH, "--lang", "en")
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
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@contextmanager
def tab(browser: Browser, viewport: dict, **options) -> Iterator[Page]:
    """A fresh browser context with one page; phones are mobile, at twice the pixels."""
    if viewport["width"] < 500:  # a phone: the page's meta viewport counts
        options = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2} | options
    context = browser.new_context(viewport=viewport, **options)
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def link_to(mail: EmailMessage, choice: str) -> str:
    (link,) = [link for link in links_in(mail) if link.endswith(f"/{choice}")]
    return link


def wait_like_a_person(opened_at: float) -> None:
    """Scanners press buttons at once; a person takes a moment (MIN_DECISION_SECONDS)."""
    time.sleep(max(0.0, opened_at + MIN_DECISION_SECONDS + 0.3 - time.monotonic()))


def contrast(page: Page, selector: str, which: str = "text") -> dict:
    return page.locator(selector).first.evaluate(CONTRAST_JS, which)


def low_contrast_text(page: Page) -> list[str]:
    """Every visible text below WCAG AA: 4.5:1, or 3:1 for large text."""
    problems = []
    for index in page.evaluate(TEXT_ELEMENTS_JS):
        element = page.locator(f'[data-text-check="{index}"]')
        found = element.evaluate(CONTRAST_JS, "text")
        if found["ratio"] < (3 if found["large"] else 4.5):
            text = element.inner_text().strip().splitlines()[0][:40]
            where = element.evaluate(DESCRIBE_JS)
            colours = f"{found['color']} on {found['background']}"
            problems.append(f"{where} {text!r}: {found['ratio']:.2f} ({colours})")
    return problems


@pytest.mark.parametrize(
    ("lang", "name", "choice"),
    [("en", "Anna Flow", "continue"), ("nl", "Daan Flow", "stop")],
)
def test_a_client_decides_through_the_link_in_their_mail(browser, practice, lang, name, choice):
    _ = words(lang)
    email = f"{name.split()[0].lower()}.flow@example.org"
    engagement_id, mail = practice.open_round(name, email, lang)
    link = link_to(mail, choice)
    assert link.startswith(f"{practice.base_url}/d/")
    assert f'href="{link}"' in html_of(mail)
    token = token_of(link)

    with tab(browser, DESKTOP) as page:
        page.goto(link)
        assert page.locator("html").get_attribute("lang") == lang
        screenshot(page, f"decision-{lang}-desktop")

    with tab(browser, PHONE) as page:
        answer = page.goto(link)
        opened_at = time.monotonic()
        assert answer.status == 200
        assert page.locator("html").get_attribute("lang") == lang
        assert page.get_by_role("heading", level=1).inner_text() == _("Another session?")
        screenshot(page, f"decision-{lang}-phone")

        page.get_by_label(_("How useful was this session? (optional)")).select_option(
            "8" if choice == "continue" else "9"
        )
        if choice == "stop":
            page.get_by_label(_("I can go on by myself for now")).check()
            page.get_by_label(
                _("Anything you would like %(coach)s to know? (optional)", coach=COACH[0])
            ).fill("Dank je, ik kan verder.")
        button = _("Continue") if choice == "continue" else _("Stop")
        wait_like_a_person(opened_at)
        page.get_by_role("button", name=button, exact=True).click()

        page.wait_for_url(f"{practice.base_url}/d/{token}")
        recorded = page.locator(".recorded")
        assert _(f"We have recorded your choice: {choice}.") in recorded.inner_text()
        assert _("You rated this session %(n)s out of 10.", n=8 if choice == "continue" else 9) in (
            recorded.inner_text()
        )
        if choice == "continue":
            assert page.get_by_role("heading", level=1).inner_text() == _("Another session?")
            assert page.get_by_role("heading", name=_("Change your answer")).is_visible()
        else:
            assert page.get_by_role("heading", level=1).inner_text() == _("This round is closed")
            assert page.get_by_role("button").count() == 0
        screenshot(page, f"recorded-{lang}-phone")
        assert low_contrast_text(page) == []

    (decision,) = [
        d
        for d in practice.show(engagement_id)["sessions"][0]["round"]["decisions"]
        if d["party"] == email
    ]
    assert decision["choice"] == choice
    assert decision["usefulness"] == (8 if choice == "continue" else 9)
    assert decision["reason"] == (None if choice == "continue" else "on_my_own")


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_the_decision_page_fits_a_320_px_phone(browser, waiting, lang):
    _ = words(lang)
    with tab(browser, NARROWEST) as page:
        page.goto(link_to(waiting[lang], "stop"))
        assert page.evaluate("window.innerWidth") == 320, "the page must set a mobile viewport"
        width = page.evaluate("document.documentElement.scrollWidth")
        screenshot(page, f"decision-{lang}-320")
        assert width <= 320, f"{width} px wide at 320: the phone scrolls sideways"
        for name in (_("Continue"), _("Stop")):
            button = page.get_by_role("button", name=name, exact=True)
            button.scroll_into_view_if_needed()
            assert button.is_visible()
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 320, f"{name}: {box}"
            assert box["height"] >= 24, f"{name} is too small to tap: {box}"


def test_every_control_has_a_label_and_the_choice_a_legend(browser, waiting):
    _ = words("en")
    with tab(browser, DESKTOP) as page:
        page.goto(link_to(waiting["en"], "continue"))
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

        choice = page.get_by_role("group", name=_("Your choice"))
        assert choice.evaluate("e => e.tagName") == "FIELDSET"
        assert choice.locator("> legend").inner_text() == _("Your choice")
        assert choice.get_by_role("button", name=_("Continue"), exact=True).count() == 1
        assert choice.get_by_role("button", name=_("Stop"), exact=True).count() == 1

        note = page.get_by_role("textbox")
        assert note.get_attribute("aria-describedby") == "note-help"
        assert page.locator("#note-help").inner_text() == _("At most 2,000 characters.")


FOCUSED_JS = """
() => {
  const e = document.activeElement;
  const style = getComputedStyle(e);
  return {
    tag: e.tagName, text: e.textContent.trim(), visible: e.matches(":focus-visible"),
    style: style.outlineStyle, width: parseFloat(style.outlineWidth), color: style.outlineColor,
  };
}
"""


def test_the_keyboard_focus_is_visible_on_every_control(browser, waiting):
    _ = words("en")
    with tab(browser, DESKTOP) as page:
        # The page's own address: no preselected button, no autofocus.
        page.goto(f"{link_to(waiting['en'], 'continue').rsplit('/', 1)[0]}")
        seen = []
        for _press in range(20):
            page.keyboard.press("Tab")
            focused = page.evaluate(FOCUSED_JS)
            seen.append(focused)
            if focused["tag"] == "BUTTON" and focused["text"] == _("Stop"):
                break
        tags = [(f["tag"], f["text"] if f["tag"] == "BUTTON" else "") for f in seen]
        for stop in ("SELECT", "INPUT", "TEXTAREA"):
            assert (stop, "") in tags, f"Tab never reached the {stop}: {tags}"
        assert tags[-2:] == [("BUTTON", _("Continue")), ("BUTTON", _("Stop"))], tags
        for focused in seen:
            assert focused["visible"], focused
            assert focused["style"] != "none" and focused["width"] >= 2, focused
        page.keyboard.press("Shift+Tab")
        assert page.evaluate(FOCUSED_JS)["text"] == _("Continue")
        screenshot(page, "decision-en-focus-continue")


def test_the_focus_ring_stands_out_from_the_page(browser, waiting):
    """WCAG 2.1 SC 1.4.11 (AA): a focus indicator needs 3:1 against what surrounds it."""
    _ = words("en")
    with tab(browser, DESKTOP) as page:
        page.goto(f"{link_to(waiting['en'], 'continue').rsplit('/', 1)[0]}")
        page.get_by_role("button", name=_("Continue"), exact=True).focus()
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Tab")
        focused = page.locator(":focus")
        assert focused.inner_text() == _("Continue")
        # The ring is drawn 2 px outside the button, on the background around it.
        found = focused.evaluate(CONTRAST_JS, "outline")
        assert found["ratio"] >= 3, (
            f"the focus ring {found['color']} on {found['background']} is {found['ratio']:.2f}:1"
        )


@pytest.mark.parametrize("lang", ["en", "nl"])
def test_the_decision_page_text_has_aa_contrast(browser, waiting, lang):
    _ = words(lang)
    with tab(browser, DESKTOP) as page:
        page.goto(link_to(waiting[lang], "stop"))
        for name in (_("Continue"), _("Stop")):
            button = page.get_by_role("button", name=name, exact=True)
            found = button.evaluate(CONTRAST_JS, "text")
            assert found["ratio"] >= 4.5, f"{name} button: {found}"
        body = contrast(page, "body")
        assert body["ratio"] >= 4.5, body
        assert low_contrast_text(page) == []


def test_a_decision_needs_no_javascript(browser, practice):
    _ = words("en")
    engagement_id, mail = practice.open_round("Emma Nojs", "emma.nojs@example.org", "en")
    link = link_to(mail, "continue")
    with tab(browser, PHONE, java_script_enabled=False) as page:
        page.goto(link)
        opened_at = time.monotonic()
        page.get_by_label(_("How useful was this session? (optional)")).select_option("7")
        wait_like_a_person(opened_at)
        page.get_by_role("button", name=_("Continue"), exact=True).click()
        page.wait_for_url(link.rsplit("/", 1)[0])
        assert (
            _("We have recorded your choice: continue.") in page.locator(".recorded").inner_text()
        )
    decisions = practice.show(engagement_id)["sessions"][0]["round"]["decisions"]
    (decision,) = [d for d in decisions if d["party"] == "emma.nojs@example.org"]
    assert (decision["choice"], decision["usefulness"]) == ("continue", 7)


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
        screenshot(page, f"mail-decision-{lang}-375")
        assert width <= PHONE["width"], f"the mail is {width} px wide on a 375 px phone"
        assert page.evaluate("Array.from(document.images).map((i) => i.src)") == []

        buttons = {
            "continue": _("Another session would be useful"),
            "stop": _("I have what I need for now"),
        }
        for choice, name in buttons.items():
            link = page.get_by_role("link", name=name, exact=True)
            assert link.get_attribute("href") == link_to(mail, choice)
            found = link.evaluate(CONTRAST_JS, "text")
            assert found["ratio"] >= 4.5, f"mail button {name!r}: {found}"
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (name, box)
        assert low_contrast_text(page) == []
