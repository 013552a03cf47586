"""A party's decision page: `/d/<token>`, its Continue and Stop links, and the POST that records.

GET shows (a mail scanner may open it any number of times); only a person's
POST records, and only once the form's stamp says a person had time to read.
"""

from __future__ import annotations

import functools

from flask import Blueprint, g, redirect, render_template, request, url_for
from flask_babel import gettext

from twoyes.errors import N_, TwoyesError
from twoyes.parties import describe_party, get_welcome_back_member
from twoyes.rounds import record_decision
from twoyes.rules import CHOICES, REASONS
from twoyes.times import utcnow
from twoyes.tokens import get_decision, get_decision_id
from twoyes.web.context import get_db, issue_stamp, limit_tokens, stamp_is_human
from twoyes.web.forms import GARBLED, DecisionForm, body_is_utf8
from twoyes.welcome_back import find_last_ask

bp = Blueprint("decisions", __name__)

ROUND_CLOSED = N_("This round is closed already, so nothing was changed. The outcome is below.")
ASK_AGAIN = N_("Please confirm your choice by pressing the button once more.")


def decide_from_form(decision_id: int, round_status: str, now, *, via: str, show, done: str):
    """A decision POST, from a party's page or a coach's overview: refuse what a scanner or a
    closed round sends, record what a person sends, then 303 to `done`.

    `round_status` is as the caller just read it; record_decision checks it again under the
    write lock. `show(status=..., form=..., notice=...)` renders the page again with a message.
    """
    if round_status == "closed":
        return show(status=409, notice=[ROUND_CLOSED])
    if not body_is_utf8(request.get_data(cache=True)):
        return show(status=400, notice=[GARBLED])
    form = DecisionForm.read(request.form)
    if not stamp_is_human():
        return show(form=form, notice=[ASK_AGAIN])
    if form.problems:
        return show(status=400, form=form, notice=form.problems)
    try:
        record_decision(
            get_db(),
            decision_id,
            now,
            choice=form.choice,
            reason=form.reason,
            usefulness=form.usefulness,
            note=form.note,
            via={
                "via": via,
                "ip": request.remote_addr,
                "user_agent": request.user_agent.string[:300],
            },
        )
    except TwoyesError as error:
        return show(status=error.status, form=form, notice=error.parts)
    return redirect(done, 303)


def decision_page(
    token: str, *, status: int = 200, preselect=None, form=None, notice=(), message="", asked=None
):
    """The party's page, in their language.

    `preselect` only for the Continue and Stop links of a mail: the page then
    asks to confirm that one choice. `notice` holds sentences to show at the
    top: msgids, or (msgid, values) pairs, translated here. `message` and
    `asked` belong to the welcome-back form of a closed round.
    """
    db = get_db()
    now = utcnow()
    view = describe_party(db, get_decision_id(db, token, now), now)
    g.lang = view["me"]["lang"]
    # A choice posted and refused (a scanner's stamp, a bad value) is asked to be confirmed again.
    if form is not None and form.choice in CHOICES:
        preselect = form.choice
    page = render_template(
        "decision.html",
        token=token,
        view=view,
        reasons=REASONS[view["me"]["role"]],
        intent=None if preselect == view["me"]["choice"] else preselect,
        form=form,
        notice=" ".join(
            gettext(item) if isinstance(item, str) else gettext(item[0], **item[1])
            for item in notice
        ),
        stamp=issue_stamp("decisions.decide", token=token),
        welcome_back_stamp=view["welcome_back"] and welcome_back_stamp(db, view, token),
        status=status,
        message=message,
        asked=asked,
    )
    return page, status


def asked_from(args) -> str | None:
    """After a welcome-back ask: "1" when it mailed the coach, "again" when it did not."""
    asked = args.get("asked")
    return asked if asked in ("1", "again") else None


def welcome_back_stamp(db, view: dict, token: str) -> str:
    """The stamp of a closed round's welcome-back form: bound to its own route and token,
    and to the member's last ask, so that one page asks once."""
    member = get_welcome_back_member(db, view["me"]["member_id"])
    last = find_last_ask(db, member) or ""
    return issue_stamp("welcome_back.ask_from_decision_page", last, token=token)


@bp.get("/d/<token>")
@limit_tokens
def decision(token: str):
    return decision_page(token, asked=asked_from(request.args))


@bp.get("/d/<token>/<any(continue, stop):choice>")
@limit_tokens
def decision_link(token: str, choice: str):
    return decision_page(token, preselect=choice)


@bp.post("/d/<token>")
@limit_tokens
def decide(token: str):
    db = get_db()
    now = utcnow()
    found = get_decision(db, token, now)
    return decide_from_form(
        found["decision_id"],
        found["round_status"],
        now,
        via="web",
        show=functools.partial(decision_page, token),
        done=url_for("decisions.decision", token=token),
    )
