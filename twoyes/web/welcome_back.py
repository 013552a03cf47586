"""Welcome back: `/b/<token>`, where a client who stopped asks the coach for a new session.

Asking mails the coach, at most once a day; it reopens nothing (R8), and may be used again
later. A page's form is sent once: its stamp is bound to the link's last ask.
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for
from flask_babel import gettext

from twoyes import welcome_back as asking
from twoyes.errors import N_, TwoyesError
from twoyes.parties import get_welcome_back_member
from twoyes.rules import NOTE_MAX, clean_free_text
from twoyes.times import utcnow
from twoyes.tokens import get_member_id
from twoyes.web.context import get_db, issue_stamp, limit_tokens, stamp_is_human
from twoyes.web.forms import GARBLED, body_is_utf8

bp = Blueprint("welcome_back", __name__)


def welcome_back_page(token, member, *, status=200, notice=None, message="", asked=None):
    """The page; `asked` is "1" after an ask that mailed the coach, "again" after one the
    same day that did not."""
    g.lang = member["client_lang"]
    if notice:
        notice = gettext(notice[0], **notice[1])
    page = render_template(
        "welcome_back.html",
        member=member,
        token=token,
        asked=asked,
        message=message,
        notice=notice,
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
    asked = request.args.get("asked")
    return welcome_back_page(token, member, asked=asked if asked in ("1", "again") else None)


@bp.post("/b/<token>")
@limit_tokens
def ask_welcome_back(token: str):
    db = get_db()
    now = utcnow()
    member = get_welcome_back_member(db, get_member_id(db, token, now))
    if not body_is_utf8(request.get_data(cache=True)):
        return welcome_back_page(token, member, status=400, notice=(GARBLED, {}))
    message = clean_free_text(request.form.get("message")) or ""
    if len(message) > NOTE_MAX:
        notice = (
            N_("A message can be at most %(most)s characters; this one has %(length)s."),
            {"most": f"{NOTE_MAX:,}", "length": f"{len(message):,}"},
        )
        return welcome_back_page(token, member, status=400, notice=notice, message=message)
    if not stamp_is_human(asking.find_last_ask(db, member) or ""):
        notice = (N_("Please press the button once more to send your request."), {})
        return welcome_back_page(token, member, notice=notice, message=message)
    try:
        sent = asking.ask_welcome_back(
            db,
            member,
            message,
            now,
            ip=request.remote_addr,
            user_agent=request.user_agent.string[:300],
        )
    except TwoyesError as error:
        shown = message.replace("\x00", "")
        return welcome_back_page(
            token, member, status=400, notice=(error.parts[0], {}), message=shown
        )
    asked = "1" if sent else "again"
    return redirect(url_for("welcome_back.welcome_back", token=token, asked=asked), 303)
