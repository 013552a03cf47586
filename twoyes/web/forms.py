"""Reading the decision form, and telling a person's POST from a mail scanner's.

Scanners (Safe Links, Barracuda, Google) open every link within seconds and
some press buttons. A decision counts only when its POST carries a signed
stamp of when the page was served, at least MIN_DECISION_SECONDS old and
issued for this very form, and an empty honeypot field; otherwise the page
simply asks again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from werkzeug.datastructures import MultiDict

from twoyes.errors import N_
from twoyes.rules import clean_free_text, read_whole_number

HONEYPOT = "website"
STAMP = "served"
STAMP_MAX_AGE = 30 * 24 * 3600


GARBLED = N_("The form arrived garbled, so nothing was recorded. Please try once more.")


def body_is_utf8(body: bytes) -> bool:
    """Whether a urlencoded form body is UTF-8 through and through (werkzeug would keep a
    bad %FF as literal text, or drop the whole form on raw bad bytes)."""
    try:
        # The raw bytes, and then what the escapes stand for, must each read as UTF-8 ('&' and
        # '=' cannot join two halves of a character, so one pass tells what field by field would).
        body.decode("utf-8")
        unquote_to_bytes(body.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class FormStamp:
    """A signed 'this page was served at' value, good only on the form it was served with.

    The stamp shows the moment (in milliseconds) and an HMAC over the moment, the
    form's action (its route with the token: `/d/<token>`, `/c/<token>/rounds/7`)
    and `state`, so it shows no id and counts nowhere else. `state` binds it to
    what its form changes: a form whose sending changes the state (a welcome-back
    ask) can be sent once.
    """

    def __init__(self, secret_key: str, min_seconds: float) -> None:
        self.key = hashlib.sha256(b"twoyes-form-stamp\0" + secret_key.encode()).digest()
        self.min_seconds = min_seconds

    def issue(self, action: str, state: str = "") -> str:
        served_ms = str(time.time_ns() // 1_000_000)
        return f"{served_ms}.{self.sign(served_ms, action, state)}"

    def sign(self, served_ms: str, action: str, state: str) -> str:
        signed = f"{served_ms}\n{action}\n{state}".encode("utf-8", "surrogatepass")
        digest = hmac.digest(self.key, signed, "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def is_human(self, form: MultiDict, action: str, state: str = "") -> bool:
        """True for a POST to `action` a person could have sent: stamped for it, old enough,
        honeypot empty."""
        if form.get(HONEYPOT):
            return False
        served_ms, _, signature = form.get(STAMP, "").partition(".")
        if not (served_ms.isascii() and served_ms.isdigit()):
            return False
        expected = self.sign(served_ms, action, state)
        if not hmac.compare_digest(signature.encode("utf-8", "replace"), expected.encode()):
            return False
        age = (time.time_ns() // 1_000_000 - int(served_ms)) / 1000
        return self.min_seconds <= age <= STAMP_MAX_AGE


@dataclass
class DecisionForm:
    """The posted fields, parsed; `problems` holds a sentence for each bad value."""

    choice: str | None = None
    reason: str | None = None
    usefulness: int | None = None
    note: str | None = None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, data: MultiDict) -> DecisionForm:
        """Parse the form; the rules' own checks run again in record_decision."""
        form = cls(
            choice=data.get("choice") or None,
            reason=data.get("reason") or None,
            note=clean_free_text(data.get("note")),
        )
        raw = (data.get("usefulness") or "").strip()
        if raw:
            form.usefulness = read_whole_number(raw)
            if form.usefulness is None:
                form.problems.append(N_("Usefulness is a whole number from 0 to 10."))
        if form.choice is None:
            form.problems.append(N_("Please press Continue or Stop."))
        if form.choice == "continue":
            form.reason = None
        return form
