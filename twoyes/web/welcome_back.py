"""Welcome back: a client whose sessions ended asks the coach for a new session.

From `/b/<token>`, the link in the outcome mail (good for a year), or from the closed round's
own decision page, `POST /d/<token>/welcome-back` (while that page opens, 30 days). Asking
mails the coach, at most once a day (twoyes/welcome_back.py); it reopens nothing (R8), and may
be used again later. Either way the same scanner rules hold as for a decision: only a POST,
with a signed stamp old enough and an empty honeypot, asks; a page's stamp is bound to its
route, its token and the link's last ask, so one page is sent once.
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for
from flask_babel import gettext

from twoyes import welcome_back as asking
from twoyes.errors import N_, TwoyesError
from twoyes.parties import describe_party, get_welcome_back_member
from twoyes.rules import NOTE_MAX, clean_free_text
from twoyes.times import utcnow
from twoyes.tokens import get_decision_id, get_member_id
from twoyes.web.context import get_db, issue_stamp, limit_tokens, stamp_is_human
from twoyes.web.decisions import asked_from, decision_page
from twoyes.web.forms import GARBLED, body_is_utf8

bp = Blueprint("welcome_back", __name__)

NOT_YET = N_(
    "You can ask for a new session here once this round has closed and your sessions have ended."
)


def welcome_back_page(token, member, *, status=200, notice=None, message="", asked=None):
    """The page; `asked` is "1" after an ask that mailed the coach, "again" after one the
    same day that did not."""
    g.lang = member["client_lang"]
    page = render_template(
        "welcome_back.html",
        member=member,
        token=token,
        asked=asked,
        message=message,
        notice=notice and gettext(notice[0], **notice[1]),
        status=status,
        stamp=issue_stamp(
            "welcome_back.ask_welcome_back",
            asking.find_last_ask(get_db(), member) or "",
            token=token,
        ),
    )
    return page, status


@bp.get("/b/<token>")
@limit_tokens
def welcome_back(token: str):
    db = get_db()
    member = get_welcome_back_member(db, get_member_id(db, token, utcnow()))
    return welcome_back_page(token, member, asked=asked_from(request.args))


@bp.post("/b/<token>")
@limit_tokens
def ask_welcome_back(token: str):
    db = get_db()
    now = utcnow()
    member = get_welcome_back_member(db, get_member_id(db, token, now))
    refused, sent = ask_coach(member, now, via="welcome_back_link")
    if refused:
        return welcome_back_page(token, member, **refused)
    asked = "1" if sent else "again"
    return redirect(url_for("welcome_back.welcome_back", token=token, asked=asked), 303)


@bp.post("/d/<token>/welcome-back")
@limit_tokens
def ask_from_decision_page(token: str):
    """The welcome-back button on a closed round's page: the decision token acts for its one
    client, and only once that client's sessions ended with the round (the same clients
    whose outcome mail carries a welcome-back link)."""
    db = get_db()
    now = utcnow()
    decision_id = get_decision_id(db, token, now)
    view = describe_party(db, decision_id, now)
    if not view["welcome_back"]:
        return decision_page(token, status=409, notice=[NOT_YET])
    member = get_welcome_back_member(db, view["me"]["member_id"])
    refused, sent = ask_coach(member, now, via="decision_page")
    if refused:
        return decision_page(
            token, status=refused["status"], notice=[refused["notice"]], message=refused["message"]
        )
    asked = "1" if sent else "again"
    return redirect(url_for("decisions.decision", token=token, asked=asked), 303)


def ask_coach(member: dict, now, *, via: str) -> tuple[dict | None, bool]:
    """Mail the coach that `member` would like a new session, with the posted message.

    Returns (None, whether the coach was mailed: not twice within a day), or how to show
    the form again (`status`, `notice` as a msgid and its values, the `message` as typed)
    and False, having changed nothing.
    """
    if not body_is_utf8(request.get_data(cache=True)):
        return {"status": 400, "notice": (GARBLED, {}), "message": ""}, False
    message = clean_free_text(request.form.get("message")) or ""
    if len(message) > NOTE_MAX:
        notice = (
            N_("A message can be at most %(most)s characters; this one has %(length)s."),
            {"most": f"{NOTE_MAX:,}", "length": f"{len(message):,}"},
        )
        return {"status": 400, "notice": notice, "message": message}, False
    db = get_db()
    if not stamp_is_human(asking.find_last_ask(db, member) or ""):
        notice = (N_("Please press the button once more to send your request."), {})
        return {"status": 200, "notice": notice, "message": message}, False
    try:
        sent = asking.ask_welcome_back(
            db,
            member,
            message,
            now,
            via=via,
            ip=request.remote_addr,
            user_agent=request.user_agent.string[:300],
        )
    except TwoyesError as error:
        shown = message.replace("\x00", "")
        return {"status": 400, "notice": (error.parts[0], {}), "message": shown}, False
    return None, sent
