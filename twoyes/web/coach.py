"""The coach's overview, `/c/<token>`, where a coach works without a terminal: their own
engagements, open rounds, come-back requests and report; deciding their rounds, and
starting an engagement (one engagement's own changes are in coach_engagement.py).

The link comes by mail (sign_in.py, and every mail to a coach) or from `coach link`.
Every page opens for the token's coach alone: another coach's engagement, session or
member is "not found". GET only shows; every change is a person's POST, with the
scanner check of the clients' pages (`change`), and goes through the same domain
function as the command line. A refused change shows its form again, as sent, with
the reason.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlite_utils
from flask import Blueprint, g, redirect, render_template, request, url_for
from flask_babel import get_locale, gettext

from twoyes.coach_view import (
    OVERVIEW_DAYS,
    coach_of_decision,
    coach_overview,
    get_coach,
    get_coach_decision_id,
    list_come_back_requests,
    list_own_clients,
    open_coach_view,
)
from twoyes.coach_work import start_own_engagement
from twoyes.errors import N_, NotFound, TwoyesError
from twoyes.parties import round_status_of
from twoyes.reports import practice_report
from twoyes.rules import LANGUAGES, REASONS
from twoyes.times import utcnow
from twoyes.tokens import COACH_VIEW_HOURS, get_coach_view, get_decision_id
from twoyes.web import HTTP_ERRORS
from twoyes.web.coach_forms import EngagementForm
from twoyes.web.context import form_stamp, get_db, issue_stamp, limit_tokens, stamp_is_human
from twoyes.web.decisions import decide_from_form
from twoyes.web.forms import GARBLED, body_is_utf8

bp = Blueprint("coach", __name__)

ASK_AGAIN = N_("Please press the button once more; nothing was changed yet.")


@dataclass(frozen=True)
class Visit:
    """One request on a coach's page: whose it is, and the moment it is served."""

    token: str
    coach: dict
    expires_at: str
    now: datetime
    db: sqlite_utils.Database

    @property
    def since(self) -> datetime:
        return self.now - timedelta(days=OVERVIEW_DAYS)


@bp.errorhandler(NotFound)
def link_gone(error: NotFound):
    """A coach's page that does not open: the 404 of every link, and the way to a fresh one
    (the same for every token and every id, so it tells nothing)."""
    message = gettext(HTTP_ERRORS[404])
    return render_template("coach_gone.html", status=404, message=message), 404


def open_visit(token: str) -> Visit:
    """The coach a token opens the pages of (404 otherwise); the page speaks their language."""
    db = get_db()
    now = utcnow()
    access = get_coach_view(db, token, now)
    coach = get_coach(db, access["coach_id"])
    g.lang = coach["lang"]
    return Visit(token, coach, access["expires_at"], now, db)


def say(problems) -> str:
    """Problems (msgids, or msgids with values) as sentences in the page's language."""
    sentences = []
    for problem in problems:
        if isinstance(problem, tuple):
            sentences.append(gettext(problem[0], **problem[1]))
        else:
            sentences.append(gettext(problem))
    return " ".join(sentences)


def render(visit: Visit, template: str, *, status: int = 200, notice=(), **values):
    """A coach's page; after a refused POST it shows the form as sent (`sent`)."""
    page = render_template(
        template,
        token=visit.token,
        coach=visit.coach,
        expires_at=visit.expires_at,
        status=status,
        notice=say(notice),
        sent=request.form if request.method == "POST" else {},
        # Every form of a coach's pages is bound to the overview link that served it.
        stamp=form_stamp().issue(f"/c/{visit.token}"),
        languages=LANGUAGES,
        **values,
    )
    return page, status


def change(visit: Visit, show, make):
    """A coach's POST: refuse what a scanner sends, show what is wrong with what a person
    sent (nothing changes), else make the change and 303 to the page that shows it.

    `show(status=..., notice=...)` renders the form's page again. `make()` reads the form
    and returns its problems (a list), or makes the change through a domain function and
    returns where to go next (a URL).
    """
    if not body_is_utf8(request.get_data(cache=True)):
        return show(status=400, notice=[GARBLED])
    if not form_stamp().is_human(request.form, f"/c/{visit.token}"):
        return show(notice=[ASK_AGAIN])
    try:
        made = make()
    except NotFound:
        raise  # another coach's id, or one that does not exist: the 404 page
    except TwoyesError as error:
        return show(status=error.status, notice=error.parts)
    if isinstance(made, list):
        return show(status=400, notice=made)
    return redirect(made, 303)


# --- the overview -----------------------------------------------------------------------------


def overview_page(visit: Visit, *, status: int = 200, notice=(), form=None):
    view = coach_overview(visit.db, visit.coach["id"], visit.now, visit.since)
    g.style_nonce = secrets.token_urlsafe(16)
    report = practice_report(visit.db, visit.since, visit.coach["id"])
    from twoyes.charts import report_charts  # pygal loads only for the pages that draw

    return render(
        visit,
        "coach.html",
        status=status,
        notice=notice,
        view=view,
        stamps={
            round_["round_id"]: issue_stamp(
                "coach.coach_decide", token=visit.token, round_id=round_["round_id"]
            )
            for round_ in view["open_rounds"]
        },
        reasons=REASONS["coach"],
        open_engagements={round_["engagement_id"] for round_ in view["open_rounds"]},
        come_back=list_come_back_requests(visit.db, visit.coach["id"], visit.since),
        report=report,
        charts=report_charts(report, gettext, str(get_locale()), g.style_nonce),
    )


def coach_page(token: str, **options):
    """The overview again, after a decision from it (decide_from_form's `show`)."""
    return overview_page(open_visit(token), **options)


@bp.get("/c/<token>")
@limit_tokens
def coach_view(token: str):
    return overview_page(open_visit(token))


@bp.post("/c/<token>/rounds/<id:round_id>")
@limit_tokens
def coach_decide(token: str, round_id: int):
    visit = open_visit(token)
    decision_id = get_coach_decision_id(visit.db, visit.coach["id"], round_id)  # another's: 404
    return decide_from_form(
        decision_id,
        round_status_of(visit.db, decision_id),
        visit.now,
        via="coach_view",
        show=functools.partial(coach_page, token),
        done=url_for("coach.coach_view", token=token),
    )


# --- starting an engagement -------------------------------------------------------------------


def start_page(visit: Visit, *, status: int = 200, notice=(), rows: int = 1):
    clients = list_own_clients(visit.db, visit.coach["id"])
    return render(
        visit, "coach_start.html", status=status, notice=notice, clients=clients, rows=rows
    )


@bp.get("/c/<token>/start")
@limit_tokens
def start(token: str):
    return start_page(open_visit(token))


@bp.post("/c/<token>/start")
@limit_tokens
def start_engagement(token: str):
    visit = open_visit(token)
    form = EngagementForm.read(request.form)
    show = functools.partial(start_page, visit, rows=form.rows)
    if request.form.get("more"):
        return show()  # one more row for a new client; nothing is sent yet

    def make():
        if form.problems:
            return form.problems
        engagement_id = start_own_engagement(
            visit.db,
            visit.coach["id"],
            form.client_ids,
            form.new_clients,
            visit.now,
            title=form.title,
            min_members=form.min_members,
            welcome=form.welcome,
        )
        return engagement_url(token, engagement_id)

    return change(visit, show, make)


def engagement_url(token: str, engagement_id: int) -> str:
    return url_for("coach_engagement.engagement", token=token, engagement_id=engagement_id)


def open_overview_page(token: str, decision_id: int, *, notice=()):
    return render_template(
        "coach_open.html",
        token=token,
        status=200,
        notice=say(notice),
        hours=COACH_VIEW_HOURS,
        stamp=issue_stamp("coach.make_overview_link", token=token),
    )


@bp.get("/d/<token>/overview")
@limit_tokens
def open_overview(token: str):
    """The coach's decision page links here: their overview, a button away."""
    db = get_db()
    decision_id = get_decision_id(db, token, utcnow())
    g.lang = get_coach(db, coach_of_decision(db, decision_id))["lang"]
    return open_overview_page(token, decision_id)


@bp.post("/d/<token>/overview")
@limit_tokens
def make_overview_link(token: str):
    """A fresh overview link for the coach, made by a person's POST, and opened."""
    db = get_db()
    now = utcnow()
    decision_id = get_decision_id(db, token, now)
    g.lang = get_coach(db, coach_of_decision(db, decision_id))["lang"]
    if not body_is_utf8(request.get_data(cache=True)) or not stamp_is_human():
        return open_overview_page(token, decision_id, notice=[ASK_AGAIN])
    return redirect(url_for("coach.coach_view", token=open_coach_view(db, decision_id, now)), 303)
