"""The words people read for the codes the rules use: one table per concept.

Each label is an English msgid (marked with N_): pages and mails show it in
the reader's language, the command line as it is.
"""

from __future__ import annotations

from twoyes.errors import N_

# Why a party stops (rules.REASONS).
REASON_LABELS = {
    "on_my_own": N_("I can go on by myself for now"),
    "not_useful": N_("This is not helping me enough"),
    "cannot_help": N_("My approach does not fit this question"),
    "values": N_("This work does not fit my values or interests"),
    "other": N_("Another reason"),
}

# Why an engagement ended (the end reasons of R3-R6).
ENDING_LABELS = {
    "client_stopped": N_("Client stopped"),
    "coach_stopped": N_("Coach stopped"),
    "members_left": N_("Too few group members continued"),
    "undecided": N_("No answer by the deadline"),
    "idle": N_("Nothing held or planned for a long while"),
}

# The same endings as the report counts them: a client's stop split by its reason, so that
# "can go on alone" (what coaching hopes for) stands apart from "not useful".
REPORT_ENDING_LABELS = {
    "client_on_my_own": N_("Client can go on alone"),
    "client_not_useful": N_("Client found it not useful enough"),
    "client_other": N_("Client stopped for another reason"),
    "client_no_reason": N_("Client stopped without saying why"),
} | {code: label for code, label in ENDING_LABELS.items() if code != "client_stopped"}
