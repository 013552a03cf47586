"""The rules of a round as pure functions of plain values: no database, no clock.

R3 (individual), R4 (deadline) and R5 (groups) decide when a round closes and
with which outcome; the database code in rounds.py only gathers the
decisions, asks `judge_round`, and carries out the verdict.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from twoyes.errors import N_

# The languages of pages and mails; schema.sql repeats them in CHECK constraints.
LANGUAGES = ("en", "nl")
CHOICES = ("continue", "stop")
REASONS = {
    "client": ("on_my_own", "not_useful", "other"),
    "coach": ("cannot_help", "values", "other"),
}
NOTE_MAX = 2000
# A client's usefulness rating at or below this is named in the coach's outcome mail,
# so that the next conversation can be about what would be more useful.
LOW_USEFULNESS = 4


@dataclass(frozen=True)
class Policy:
    """The practice's time limits, from DECISION_DAYS, REMINDER_DAYS and IDLE_DAYS."""

    decision_days: float = 7
    reminder_days: float = 2
    idle_days: float = 60

    def __post_init__(self) -> None:
        limits = (self.decision_days, self.reminder_days, self.idle_days)
        if not all(isinstance(n, (int, float)) and math.isfinite(n) for n in limits):
            raise ValueError("DECISION_DAYS, REMINDER_DAYS and IDLE_DAYS must be finite numbers.")
        if self.decision_days <= 0 or self.idle_days <= 0 or self.reminder_days < 0:
            raise ValueError(
                "DECISION_DAYS and IDLE_DAYS must be above 0, REMINDER_DAYS 0 or more."
            )
        if self.reminder_days >= self.decision_days:
            raise ValueError("REMINDER_DAYS must be less than DECISION_DAYS.")


@dataclass(frozen=True)
class Verdict:
    """How a round closes: its outcome, why the engagement ends, who leaves now."""

    outcome: str
    end_reason: str | None = None
    leaving: tuple[int, ...] = ()


def judge_round(
    kind: str,
    min_members: int,
    coach_choice: str | None,
    member_choices: dict[int, str | None],
    deadline_passed: bool,
) -> Verdict | None:
    """The verdict on a round, or None while it stays open.

    `member_choices` maps each member who is a party of the round to their
    choice (None while undecided). Nobody's silence ever counts as continue.
    """
    continuing = [member for member, choice in member_choices.items() if choice == "continue"]
    stopped = [member for member, choice in member_choices.items() if choice == "stop"]
    silent = [member for member, choice in member_choices.items() if choice is None]

    # R3, R5: the coach's stop ends it at once, for one client or a group.
    if coach_choice == "stop":
        return Verdict("stop", "coach_stopped")

    if kind == "individual":
        if stopped:
            return Verdict("stop", "client_stopped")
        if coach_choice == "continue" and not silent:
            return Verdict("continue")
        if deadline_passed:
            return Verdict("stop", "undecided")  # R4
        return None

    # R5: groups. Members who stopped have left already; the others carry on.
    if deadline_passed:
        leaving = tuple(silent)
        if coach_choice is None:
            return Verdict("stop", "undecided", leaving)
        if len(continuing) >= min_members:
            return Verdict("continue", None, leaving)
        return Verdict("stop", "members_left", leaving)
    if len(continuing) + len(silent) < min_members:
        return Verdict("stop", "members_left")
    if coach_choice == "continue" and not silent:
        return Verdict("continue")
    return None


# In free text (notes, welcome-back messages) a person types line breaks and tabs; the other
# control characters (C0, DEL, C1) and the bidirectional embeddings, overrides and isolates
# only fake lines or turn words round in a mail's plain text or on a terminal: taken out.
LINE_ENDS = re.compile("\r\n?|[\x85\u2028\u2029]")
UNSEEN = re.compile("[\x01-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# NUL is refused instead: no person types it, and much software ends a text there.
NUL_IN_TEXT = N_(
    "The text holds a NUL character, which cannot be kept; please take it out and send it again."
)


def clean_free_text(text: str | None) -> str | None:
    """Free text as it is kept: each line break one "\\n" (a textarea's maxlength counts
    it as one character, so the length check must too), the unseen characters taken out,
    trimmed; None if nothing is left. A NUL stays, for the check to refuse."""
    text = UNSEEN.sub("", LINE_ENDS.sub("\n", text or "")).strip()
    return text or None


def read_whole_number(text: str) -> int | None:
    """A whole number written in the digits 0-9 and nothing else, or None. int() would also
    read "+3", "1_0" and other scripts' digits ("٣", "５"): no form or person means those as a
    usefulness, so they are refused, on the web and on the command line alike."""
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18  # far out of any range, however long


def check_decision(
    role: str, choice: str, reason: str | None, usefulness: int | None, note: str | None
) -> list[str]:
    """What is wrong with a decision's values, as sentences; empty when all is well."""
    problems = []
    if choice not in CHOICES:
        problems.append(N_("Please choose Continue or Stop."))
    if reason is not None and reason not in REASONS[role]:
        problems.append(N_("Please choose one of the reasons in the list, or none."))
    if usefulness is not None and not 0 <= usefulness <= 10:
        problems.append(N_("Usefulness is a whole number from 0 to 10."))
    if note is not None and len(note) > NOTE_MAX:
        problems.append(N_("A note can be at most 2,000 characters; please shorten it."))
    if note is not None and "\x00" in note:
        problems.append(NUL_IN_TEXT)
    return problems
