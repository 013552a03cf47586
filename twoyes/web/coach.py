"""The coach's overview, `/c/<token>`: one coach's own engagements, open rounds and report,
and deciding their own open rounds from there. The link comes from `coach link EMAIL`."""

from __future__ import annotations

import functools
import secrets
from datetime import timedelta

from flask import Blueprint, g, render_template, url_for
from flask_babel import get_locale, gettext

from twoyes.coach_view import OVERVIEW_DAYS, coach_overview, get_coach, get_coach_decision_id
from twoyes.parties import round_status_of
from twoyes.reports import practice_report
from twoyes.rules import REASONS
from twoyes.times import utcnow
from twoyes.tokens import get_coach_view
from twoyes.web.context import get_db, issue_stamp, limit_tokens
from twoyes.web.decisions import decide_from_form

bp = Blueprint("coach", __name__)


def coach_page(token: str, *, status: int = 200, notice=(), form=None):
    """The overview, in the coach's language; `notice` holds msgids."""
    db = get_db()
    now = utcnow()
    access = get_coach_view(db, token, now)
    since = now - timedelta(days=OVERVIEW_DAYS)
    view = coach_overview(db, access["coach_id"], now, since)
    g.lang = view["coach"]["lang"]
    g.style_nonce = secrets.token_urlsafe(16)
    report = practice_report(db, since, access["coach_id"])
    from twoyes.charts import report_charts  # pygal loads only for the pages that draw

    page = render_template(
        "coach.html",
        token=token,
        view=view,
        expires_at=access["expires_at"],
        status=status,
        notice=" ".join(gettext(sentence) for sentence in notice),
        stamps={
            round_["round_id"]: issue_stamp(
                "coach.coach_decide", token=token, round_id=round_["round_id"]
            )
            for round_ in view["open_rounds"]
        },
        reasons=REASONS["coach"],
        open_engagements={round_["engagement_id"] for round_ in view["open_rounds"]},
        report=report,
        charts=report_charts(report, gettext, str(get_locale()), g.style_nonce),
    )
    return page, status


@bp.get("/c/<token>")
@limit_tokens
def coach_view(token: str):
    return coach_page(token)


@bp.post("/c/<token>/rounds/<id:round_id>")
@limit_tokens
def coach_decide(token: str, round_id: int):
    db = get_db()
    now = utcnow()
    coach_id = get_coach_view(db, token, now)["coach_id"]
    g.lang = get_coach(db, coach_id)["lang"]
    decision_id = get_coach_decision_id(db, coach_id, round_id)  # another's round: 404
    return decide_from_form(
        decision_id,
        round_status_of(db, decision_id),
        now,
        via="coach_view",
        show=functools.partial(coach_page, token),
        done=url_for("coach.coach_view", token=token),
    )
