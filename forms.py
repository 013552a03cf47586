"""Reading the decision form, and telling a person's POST from a mail scanner's.

Scanners (Safe Links, Barracuda, Google) open every link within seconds and
some press buttons. A decision counts only when its POST carries a signed
stamp of when the page was served, at least MIN_DECISION_SECONDS old, and
an empty honeypot field; otherwise the page simply asks again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner
from werkzeug.datastructures import MultiDict

HONEYPOT = "website"
STAMP = "served"
STAMP_MAX_AGE = 30 * 24 * 3600


class FormStamp:
    """A signed 'this page was served at' value, bound to one decision."""

    def __init__(self, secret_key: str, min_seconds: float) -> None:
        self.signer = TimestampSigner(secret_key, salt="twoyes-form-stamp")
        self.min_seconds = min_seconds

    def issue(self, subject_id: int) -> str:
        return self.signer.sign(str(subject_id)).decode("ascii")

    def is_human(self, form: MultiDict, subject_id: int) -> bool:
        """True for a POST a person could have sent: signed, old enough, honeypot empty."""
        if form.get(HONEYPOT):
            return False
        try:
            value, signed_at = self.signer.unsign(
                form.get(STAMP, ""), max_age=STAMP_MAX_AGE, return_timestamp=True
            )
        except (BadSignature, SignatureExpired):
            return False
        age = self.signer.get_timestamp() - int(signed_at.timestamp())
        return value.decode("ascii") == str(subject_id) and age >= self.min_seconds


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
            note=(data.get("note") or "").strip() or None,
        )
        raw = (data.get("usefulness") or "").strip()
        if raw:
            try:
                form.usefulness = int(raw)
            except ValueError:
                form.problems.append("Usefulness is a whole number from 0 to 10.")
        if form.choice is None:
            form.problems.append("Please press Continue or Stop.")
        if form.choice == "continue":
            form.reason = None
        return form
