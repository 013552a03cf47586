"""One engagement on the coach's pages, `/c/<token>/engagements/<id>`: what it stands at,
and every change a coach makes to it: record a session held, plan, move or cancel the
planned one, reopen it, and take members into a group or out of it.

Each change is a POST through coach.change (the scanner check, the form kept on a
refusal) to one function of coach_work.py, which checks that the engagement is the
coach's own and says what the rules refuse in the coach's words.
"""

from __future__ import annotations

import functools

from flask import Blueprint, request, url_for

from twoyes.coach_view import (
    describe_own_engagement,
    get_own_engagement,
    get_own_member,
    get_own_session,
    list_own_clients,
)
from twoyes.coach_work import (
    add_own_member,
    cancel_own_session,
    move_own_session,
    plan_own_session,
    record_own_session,
    remove_own_member,
    reopen_own_engagement,
)
from twoyes.errors import N_, NotFound
from twoyes.times import format_local
from twoyes.web.coach import Visit, change, engagement_url, link_gone, open_visit, render
from twoyes.web.coach_forms import Problem, SessionTime, read_minutes, read_new_client
from twoyes.web.context import limit_tokens, settings
from twoyes.web.forms import GARBLED

bp = Blueprint("coach_engagement", __name__)
bp.register_error_handler(NotFound, link_gone)


def engagement_page(visit: Visit, engagement_id: int, *, status: int = 200, notice=()):
    view = describe_own_engagement(visit.db, visit.coach["id"], engagement_id, visit.since)
    members = {
        member["email"].lower() for member in view["members"] if member["status"] == "active"
    }
    joinable = [
        client
        for client in list_own_clients(visit.db, visit.coach["id"])
        if client["email"].lower() not in members
    ]
    return render(
        visit,
        "coach_engagement.html",
        status=status,
        notice=notice,
        view=view,
        joinable=joinable,
    )


@bp.get("/c/<token>/engagements/<int:engagement_id>")
@limit_tokens
def engagement(token: str, engagement_id: int):
    return engagement_page(open_visit(token), engagement_id)


@bp.post("/c/<token>/engagements/<int:engagement_id>/held")
@limit_tokens
def record_held(token: str, engagement_id: int):
    """What `session done` does: the planned session (or one of `minutes`) was held now."""
    visit = open_visit(token)
    get_own_engagement(visit.db, visit.coach["id"], engagement_id)

    def make():
        problems: list[Problem] = []
        minutes = read_minutes(request.form, problems)
        if problems:
            return problems
        _, round_id = record_own_session(
            visit.db, visit.coach["id"], engagement_id, visit.now, settings().policy, minutes or 60
        )
        return url_for("coach.coach_view", token=token, _anchor=f"round-{round_id}")

    show = functools.partial(engagement_page, visit, engagement_id)
    return change(visit, show, make)


def session_page(visit: Visit, engagement_id: int, action: str, *, status: int = 200, notice=()):
    """The page of one session form: plan (the "We continue" mail's link), reopen and plan
    (the come-back mail's link), or move the planned session."""
    view = describe_own_engagement(visit.db, visit.coach["id"], engagement_id, visit.since)
    zone = settings().zone
    planned_at = {}
    if view["planned"]:
        starts = view["planned"]["starts_at"]
        planned_at = {
            "date": format_local(starts, "yyyy-MM-dd", zone, "en"),
            "time": format_local(starts, "HH:mm", zone, "en"),
        }
    return render(
        visit,
        "coach_session.html",
        status=status,
        notice=notice,
        view=view,
        action=action,
        zone=zone.key,
        planned_at=planned_at,
    )


@bp.get("/c/<token>/engagements/<int:engagement_id>/<any(plan, reopen, move):action>")
@limit_tokens
def session_form(token: str, engagement_id: int, action: str):
    return session_page(open_visit(token), engagement_id, action)


def change_session(visit: Visit, engagement_id: int, action: str, make_change, *, required=True):
    """A POST from a session page: read the date, time and length, then `make_change(when)`."""
    when = SessionTime.read(request.form, settings().zone, required=required)

    def make():
        if when.problems:
            return when.problems
        make_change(when)
        return engagement_url(visit.token, engagement_id)

    show = functools.partial(session_page, visit, engagement_id, action)
    return change(visit, show, make)


@bp.post("/c/<token>/engagements/<int:engagement_id>/<any(plan, reopen):action>")
@limit_tokens
def plan(token: str, engagement_id: int, action: str):
    """Plan the next session; to reopen, make the ended engagement active first (the
    come-back mail's link) and plan only when a date and time are given."""
    visit = open_visit(token)
    get_own_engagement(visit.db, visit.coach["id"], engagement_id)

    def make_change(when: SessionTime):
        minutes = when.minutes or 60
        if action == "reopen":
            reopen_own_engagement(
                visit.db, visit.coach["id"], engagement_id, visit.now, when.starts, minutes
            )
        else:
            plan_own_session(
                visit.db, visit.coach["id"], engagement_id, when.starts, minutes, visit.now
            )

    return change_session(visit, engagement_id, action, make_change, required=action == "plan")


@bp.post("/c/<token>/sessions/<int:session_id>/move")
@limit_tokens
def move(token: str, session_id: int):
    visit = open_visit(token)
    engagement_id = get_own_session(visit.db, visit.coach["id"], session_id)["engagement_id"]
    return change_session(
        visit,
        engagement_id,
        "move",
        lambda when: move_own_session(
            visit.db, visit.coach["id"], session_id, when.starts, visit.now, when.minutes
        ),
    )


@bp.post("/c/<token>/sessions/<int:session_id>/cancel")
@limit_tokens
def cancel(token: str, session_id: int):
    visit = open_visit(token)
    engagement_id = get_own_session(visit.db, visit.coach["id"], session_id)["engagement_id"]

    def make():
        cancel_own_session(visit.db, visit.coach["id"], session_id, visit.now)
        return engagement_url(token, engagement_id)

    show = functools.partial(engagement_page, visit, engagement_id)
    return change(visit, show, make)


@bp.post("/c/<token>/engagements/<int:engagement_id>/members")
@limit_tokens
def add_member(token: str, engagement_id: int):
    visit = open_visit(token)
    get_own_engagement(visit.db, visit.coach["id"], engagement_id)

    def make():
        problems: list[Problem] = []
        chosen = request.form.get("client") or ""
        new_client = read_new_client(request.form, "new-", problems)
        if problems:
            return problems
        if new_client is None and not chosen:
            return [N_("Please choose a client, or fill in a new one.")]
        if new_client is None and not chosen.isdigit():
            return [GARBLED]
        add_own_member(
            visit.db,
            visit.coach["id"],
            engagement_id,
            visit.now,
            client_id=None if new_client else int(chosen),
            new_client=new_client,
        )
        return engagement_url(token, engagement_id)

    show = functools.partial(engagement_page, visit, engagement_id)
    return change(visit, show, make)


@bp.post("/c/<token>/engagements/<int:engagement_id>/members/<int:member_id>/remove")
@limit_tokens
def remove_member(token: str, engagement_id: int, member_id: int):
    visit = open_visit(token)
    get_own_member(visit.db, visit.coach["id"], engagement_id, member_id)

    def make():
        remove_own_member(visit.db, visit.coach["id"], engagement_id, member_id, visit.now)
        return engagement_url(token, engagement_id)

    show = functools.partial(engagement_page, visit, engagement_id)
    return change(visit, show, make)
