"""Welcome back: a client whose sessions ended asks the coach for a new session.

From `/b/<token>`, the link in the outcome mail (good for a year), or from the closed round's
own decision page, `POST /d/<token>/welcome-back` (while that page opens, 30 days). Asking
mails the coach; it reopens nothing (R8), and may be used again later. Either way the same
scanner rules hold as for a decision: only a POST, with a signed stamp old enough and an
empty honeypot, asks.
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for
from flask_babel import gettext

from twoyes.db import transaction
from twoyes.errors import N_
from twoyes.events import log_event
from twoyes.mails import queue_welcome_back_mail
from twoyes.parties import describe_party, get_welcome_back_member
from twoyes.rules import NOTE_MAX
from twoyes.times import utcnow
from twoyes.tokens import get_decision_id, get_member_id
from twoyes.web.context import form_stamp, get_db, limit_tokens
from twoyes.web.decisions import decision_page
from twoyes.web.forms import GARBLED, body_is_utf8, clean_text

bp = Blueprint("welcome_back", __name__)

NOT_YET = N_(
    "You can ask for a new session here once this round has closed and your sessions have ended."
)


def welcome_back_page(token, member, *, status=200, notice=None, message="", asked=False):
    g.lang = member["client_lang"]
    page = render_template(
        "welcome_back.html",
        member=member,
        token=token,
        asked=asked,
        message=message,
        notice=notice and gettext(notice[0], **notice[1]),
        status=status,
        stamp=form_stamp().issue(member["member_id"]),
    )
    return page, status


@bp.get("/b/<token>")
@limit_tokens
def welcome_back(token: str):
    db = get_db()
    member = get_welcome_back_member(db, get_member_id(db, token, utcnow()))
    return welcome_back_page(token, member, asked=request.args.get("asked") == "1")


@bp.post("/b/<token>")
@limit_tokens
def ask_welcome_back(token: str):
    db = get_db()
    now = utcnow()
    member = get_welcome_back_member(db, get_member_id(db, token, now))
    refused = ask_coach(member, member["member_id"], now, via="welcome_back_link")
    if refused:
        return welcome_back_page(token, member, **refused)
    return redirect(url_for("welcome_back.welcome_back", token=token, asked=1), 303)


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
    # The page's stamp is bound to the decision, like the decision form's.
    refused = ask_coach(member, decision_id, now, via="decision_page")
    if refused:
        return decision_page(
            token, status=refused["status"], notice=[refused["notice"]], message=refused["message"]
        )
    return redirect(url_for("decisions.decision", token=token, asked=1), 303)


def ask_coach(member: dict, stamped_for: int, now, *, via: str) -> dict | None:
    """Mail the coach that `member` would like a new session, with the posted message.

    Returns None once asked; else how to show the form again (`status`, `notice` as a
    msgid and its values, the `message` as typed), having changed nothing.
    """
    if not body_is_utf8(request.get_data(cache=True)):
        return {"status": 400, "notice": (GARBLED, {}), "message": ""}
    message = clean_text(request.form.get("message")) or ""
    if len(message) > NOTE_MAX:
        notice = (
            N_("A message can be at most %(most)s characters; this one has %(length)s."),
            {"most": f"{NOTE_MAX:,}", "length": f"{len(message):,}"},
        )
        return {"status": 400, "notice": notice, "message": message}
    if not form_stamp().is_human(request.form, stamped_for):
        notice = (N_("Please press the button once more to send your request."), {})
        return {"status": 200, "notice": notice, "message": message}
    with transaction(get_db()) as db:
        queue_welcome_back_mail(db, member, message, now)
        log_event(
            db,
            "welcome_back_asked",
            now,
            engagement_id=member["engagement_id"],
            member_id=member["member_id"],
            via=via,
            ip=request.remote_addr,
            user_agent=request.user_agent.string[:300],
        )
    return None
