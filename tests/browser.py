"""What the browser tests share: Debian's Chromium, a practice served for real, tabs, screenshots,
and axe-core's WCAG 2.2 AA rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

from axe_playwright_python.sync_playwright import Axe
from babel.messages.pofile import read_po
from playwright.sync_api import Browser, Page, sync_playwright
from support import ROOT, Inbox, free_port

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


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless (browser downloads are impossible here)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


PHONE = {"width": 390, "height": 844}
NARROWEST = {"width": 320, "height": 640}
DESKTOP = {"width": 1280, "height": 900}
WIDTHS = {"phone": PHONE, "desktop": DESKTOP}
MIN_DECISION_SECONDS = 1
COACH = ("Bob Coach", "bob@example.org")
DUTCH_COACH = ("Sanne Visser", "sanne@example.org")

# The WCAG 2.2 rules at levels A and AA (axe's tags for 2.0, 2.1 and 2.2); axe's
# best-practice rules are advice, not the standard, and stay out.
WCAG_22_AA = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"],
    },
    "resultTypes": ["violations"],
}
AXE = Axe()


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
            # One browser opens every page from one address; test_web checks the limit.
            "TWOYES_TOKEN_RATE_LIMIT": "10000 per minute",
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

    def open_round(
        self, name: str, email: str, lang: str, coach: str = COACH[1]
    ) -> tuple[int, EmailMessage]:
        """A new client of the coach's, a session just held, and the client's decision mail."""
        self.cli("client", "add", name, email, "--lang", lang)
        started = self.cli("engagement", "start", "--coach", coach, "--client", email, "--json")
        engagement_id = json.loads(started)["id"]
        self.cli("session", "done", str(engagement_id))
        self.cli("send")
        welcome, mail = self.inbox.to(email)  # the start's welcome, then the question
        assert welcome["Subject"] == words(lang)("Welcome: every session can be the last")
        assert mail["Subject"] == words(lang)("Another session?")
        return engagement_id, mail

    def show(self, engagement_id: int) -> dict:
        return json.loads(self.cli("engagement", "show", str(engagement_id), "--json"))


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


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """The first screen as a person sees it on arrival (or the whole page), for a person."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=full_page)


def axe_violations(page: Page) -> str | None:
    """axe-core's report of the page's WCAG 2.2 A and AA violations, or None when it has none."""
    results = AXE.run(page, options=WCAG_22_AA)
    return results.generate_report() if results.violations_count else None
