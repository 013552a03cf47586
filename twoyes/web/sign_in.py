"""Signing in by mail, `/c`: a coach types their address and gets a fresh overview link.

There is no password. The answer is the same page, status and words whether
or not the address is a coach's, so the page tells nobody who is a coach; only
the coach's own mailbox gets the link. Asking is limited per client address
(the token routes' budget) and per mail address, so the page cannot be used to
flood a coach's inbox.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_babel import gettext

from twoyes.coach_view import mail_coach_link
from twoyes.errors import N_, Invalid
from twoyes.people import normalise_email
from twoyes.times import utcnow
from twoyes.tokens import COACH_VIEW_HOURS
from twoyes.web.context import form_stamp, get_db, limit_tokens
from twoyes.web.forms import GARBLED, body_is_utf8
from twoyes.web.rate_limits import TokenRateLimit

bp = Blueprint("sign_in", __name__)

# Per mail address, whoever asks: enough for a coach who mistyped or lost a mail.
ADDRESS_LIMIT = "5 per hour; 20 per day"
# Every answer takes at least this long: a coach's (a token and a mail written) would
# otherwise come back a millisecond or two later than anyone else's, and tell.
ANSWER_SECONDS = 0.025
STAMP_SUBJECT = "sign-in"


@bp.record_once
def make_address_limit(state) -> None:
    state.app.extensions["twoyes_sign_in_limit"] = TokenRateLimit(
        ADDRESS_LIMIT, state.app.extensions["twoyes"].ratelimit_storage_uri
    )


def sign_in_page(*, status: int = 200, notice: str | None = None, email: str = ""):
    page = render_template(
        "sign_in.html",
        status=status,
        notice=gettext(notice) if notice else None,
        email=email,
        sent=request.method == "GET" and request.args.get("sent") == "1",
        hours=COACH_VIEW_HOURS,
        stamp=form_stamp().issue(STAMP_SUBJECT),
    )
    return page, status


@bp.get("/c")
def sign_in():
    return sign_in_page()


@bp.post("/c")
@limit_tokens
def ask_link():
    if not body_is_utf8(request.get_data(cache=True)):
        return sign_in_page(status=400, notice=GARBLED)
    typed = (request.form.get("email") or "").strip()[:320]
    if not typed:
        return sign_in_page(status=400, notice=N_("Please fill in your e-mail address."))
    try:
        address = normalise_email(typed)
    except Invalid:
        notice = N_("That is not an e-mail address we can send to; please check it.")
        return sign_in_page(status=400, notice=notice, email=typed)
    if not form_stamp().is_human(request.form, STAMP_SUBJECT):
        notice = N_("Please press the button once more to get your link.")
        return sign_in_page(notice=notice, email=typed)
    current_app.extensions["twoyes_sign_in_limit"].count(f"address:{address.lower()}")
    started = time.monotonic()
    mail_coach_link(get_db(), address, utcnow())
    time.sleep(max(0.0, ANSWER_SECONDS - (time.monotonic() - started)))
    return redirect(url_for("sign_in.sign_in", sent=1), 303)
