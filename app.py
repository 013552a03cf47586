"""The twoyes web app: the pages behind the links in the mails.

`create_app()` reads the defaults, then the TWOYES_ environment, then the
test configuration, checks them, and only then starts Flask-Mail (it copies
its settings at that moment). Routes stay thin: read the request, call one
domain function, show the result. GET and HEAD never change anything,
because mail scanners open every link.
"""

from __future__ import annotations

import functools
import os
import secrets
import sqlite3
import threading
from datetime import timedelta

from flask import Flask, current_app, g, redirect, render_template, request, url_for
from flask.sessions import SessionInterface
from flask_babel import gettext
from flask_mail import Mail
from werkzeug.middleware.proxy_fix import ProxyFix

import db as database
from coach_view import OVERVIEW_DAYS, coach_overview, get_coach, get_coach_decision_id
from errors import N_, NotFound, TwoyesError
from events import log_event
from forms import GARBLED, TEXT_MAX, DecisionForm, FormStamp, body_is_utf8, clean_text
from language import init_language, translate_error
from logs import HideTokens
from mails import queue_welcome_back_mail
from parties import describe_party, get_welcome_back_member, round_status_of
from rate_limits import TokenRateLimit
from report_pages import ENGAGEMENT_ENDINGS, format_date, report_charts
from reports import practice_report
from retention import retention_terms
from rounds import record_decision
from rules import REASONS
from settings import DEFAULTS, load_settings
from times import utcnow
from tokens import find_coach_view, find_decision, find_decision_id, find_member_id

mail = Mail()

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


ROUND_CLOSED = N_("This round is closed already, so nothing was changed. The outcome is below.")
ASK_AGAIN = N_("Please confirm your choice by pressing the button once more.")


class NoSessions(SessionInterface):
    """No cookie session: every link carries its own token, and nothing else is remembered.

    Flask's default builds a signing serializer to open a session cookie on
    every request (0.03 ms) that twoyes never reads; this gives each request
    Flask's null session at once, and no response ever sets a cookie.
    """

    def open_session(self, app, request):
        return None

    def save_session(self, app, session, response):
        return None


def create_app(test_config: dict | None = None) -> Flask:
    # The instance folder holds the database, the generated secret and the .eml files.
    instance = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("TWOYES_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_relative_config=True,
        instance_path=instance and os.path.abspath(instance),
    )
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env("TWOYES")
    if test_config:
        app.config.from_mapping(test_config)
    load_settings(app)
    app.extensions["twoyes_form_stamp"] = FormStamp(
        app.config["SECRET_KEY"], app.config["MIN_DECISION_SECONDS"]
    )
    app.session_interface = NoSessions()
    mail.init_app(app)
    if app.config["PROXIES"]:
        # Behind nginx or Caddy the client's address is in X-Forwarded-For.
        hops = int(app.config["PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    init_language(app)

    app.teardown_appcontext(close_db)
    app.after_request(security_headers)
    app.register_error_handler(TwoyesError, show_error)
    for status in (400, 404, 405, 413, 429, 500):
        app.register_error_handler(status, show_http_error)
    # Token routes are rate limited per client address: nobody tries tokens by the thousand.
    tokens_limit = TokenRateLimit(
        app.config["TOKEN_RATE_LIMIT"], app.config["RATELIMIT_STORAGE_URI"]
    )
    register_routes(app, tokens_limit)
    app.logger.addFilter(HideTokens())  # Flask logs the path of a request that failed
    return app


_held = threading.local()


def get_db():
    """The database, over one connection per worker thread, kept between requests.

    Opening a connection per request cost more than the request itself: when
    the last connection to a WAL database closes, SQLite checkpoints and
    drops the write-ahead log, and the next one rebuilds it (see bench/).
    """
    key = (os.getpid(), current_app.config["DATABASE"])
    held = getattr(_held, "db", None)
    if held is None or held[0] != key:
        if held is not None:
            held[1].close()
        _held.db = None
        _held.db = (key, database.connect(key[1]))
    return _held.db[1]


def close_db(exception: BaseException | None = None) -> None:
    """End of a request: nothing may stay half-written on the kept connection."""
    held = getattr(_held, "db", None)
    if held is not None and held[1].conn.in_transaction:
        held[1].conn.execute("ROLLBACK")


def security_headers(response):
    response.headers["X-Content-Type-Options"] = "nosniff"
    policy = CONTENT_SECURITY_POLICY
    if "style_nonce" in g:
        # The report's charts are inline SVG with a <style> of their own, let in by nonce.
        policy = policy.replace("style-src 'self'", f"style-src 'self' 'nonce-{g.style_nonce}'")
    response.headers["Content-Security-Policy"] = policy
    if request.path.startswith(("/d/", "/b/", "/c/")):
        # The token is in the path: never pass it on, never keep the page.
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
    return response


HTTP_ERRORS = {
    400: N_("Something in the form was not right. Please go back and try again."),
    404: N_("This page does not exist, or this link does not open any more."),
    405: N_("This page cannot be used that way."),
    413: N_("That was more than this form takes. Please send a shorter note."),
    429: N_("That was many requests in a short time. Please wait a minute and try again."),
    500: N_("Something went wrong on our side. Nothing you sent was lost; please try again later."),
}


def show_error(error: TwoyesError):
    """A domain error as a page; a token that does not open reveals nothing, in any language."""
    if isinstance(error, NotFound):
        return show_http_error(error)
    message = translate_error(error)
    return render_template("error.html", status=error.status, message=message), error.status


def show_http_error(error):
    status = getattr(error, "code", None) or getattr(error, "status", 500)
    message = gettext(HTTP_ERRORS.get(status, HTTP_ERRORS[500]))
    return render_template("error.html", status=status, message=message), status


def decide_from_form(decision_id: int, round_status: str, now, *, via: str, show, done: str):
    """A decision POST, from a party's page or a coach's overview: refuse what a scanner or a
    closed round sends, record what a person sends, then 303 to `done`.

    `round_status` is as the caller just read it; record_decision checks it again under the
    write lock. `show(status=..., form=..., notice=...)` renders the page again with a message.
    """
    db = get_db()
    if round_status == "closed":
        return show(status=409, notice=[ROUND_CLOSED])
    if not body_is_utf8(request.get_data(cache=True)):
        return show(status=400, notice=[GARBLED])
    form = DecisionForm.read(request.form)
    if not form_stamp().is_human(request.form, decision_id):
        return show(form=form, notice=[ASK_AGAIN])
    if form.problems:
        return show(status=400, form=form, notice=form.problems)
    try:
        record_decision(
            db,
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


def form_stamp() -> FormStamp:
    """The app's stamp signer, made once by create_app (the settings do not change)."""
    return current_app.extensions["twoyes_form_stamp"]


def register_routes(app: Flask, tokens_limit: TokenRateLimit) -> None:
    def decision_page(token: str, *, status: int = 200, preselect=None, form=None, notice=()):
        """The party's page, in their language.

        `preselect` only for the Continue and Stop links of a mail; `notice`
        holds sentences to show above the form (msgids, translated here).
        """
        db = get_db()
        now = utcnow()
        view = describe_party(db, find_decision_id(db, token, now), now)
        g.lang = view["me"]["lang"]
        notice = " ".join(gettext(sentence) for sentence in notice)
        page = render_template(
            "decision.html",
            token=token,
            view=view,
            reasons=REASONS[view["me"]["role"]],
            preselect=preselect,
            form=form,
            notice=notice,
            stamp=form_stamp().issue(view["me"]["id"]),
            status=status,
        )
        return page, status

    @app.get("/d/<token>")
    @tokens_limit
    def decision(token: str):
        return decision_page(token)

    @app.get("/d/<token>/<any(continue, stop):choice>")
    @tokens_limit
    def decision_link(token: str, choice: str):
        return decision_page(token, preselect=choice)

    @app.post("/d/<token>")
    @tokens_limit
    def decide(token: str):
        db = get_db()
        now = utcnow()
        found = find_decision(db, token, now)
        return decide_from_form(
            found["decision_id"],
            found["round_status"],
            now,
            via="web",
            show=functools.partial(decision_page, token),
            done=url_for("decision", token=token),
        )

    def welcome_back_page(token, member, *, status=200, notice=None, message="", asked=False):
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
            stamp=form_stamp().issue(member["member_id"]),
        )
        return page, status

    @app.get("/b/<token>")
    @tokens_limit
    def welcome_back(token: str):
        db = get_db()
        member = get_welcome_back_member(db, find_member_id(db, token, utcnow()))
        return welcome_back_page(token, member, asked=request.args.get("asked") == "1")

    @app.post("/b/<token>")
    @tokens_limit
    def ask_welcome_back(token: str):
        db = get_db()
        now = utcnow()
        member = get_welcome_back_member(db, find_member_id(db, token, now))
        if not body_is_utf8(request.get_data(cache=True)):
            return welcome_back_page(token, member, status=400, notice=(GARBLED, {}))
        message = clean_text(request.form.get("message")) or ""
        if len(message) > TEXT_MAX:
            notice = (
                N_("A message can be at most %(most)s characters; this one has %(length)s."),
                {"most": f"{TEXT_MAX:,}", "length": f"{len(message):,}"},
            )
            return welcome_back_page(token, member, status=400, notice=notice, message=message)
        if not form_stamp().is_human(request.form, member["member_id"]):
            notice = (N_("Please press the button once more to send your request."), {})
            return welcome_back_page(token, member, notice=notice, message=message)
        with database.transaction(db):
            queue_welcome_back_mail(db, member, message, now)
            log_event(
                db,
                "welcome_back_asked",
                now,
                engagement_id=member["engagement_id"],
                member_id=member["member_id"],
                ip=request.remote_addr,
                user_agent=request.user_agent.string[:300],
            )
        return redirect(url_for("welcome_back", token=token, asked=1), 303)

    @app.get("/healthz")
    def healthz():
        try:
            get_db().conn.execute("SELECT count(*) FROM engagements").fetchone()
        except sqlite3.Error:
            return {"status": "unavailable", "database": "not answering"}, 503
        return {"status": "ok", "database": "ok"}

    @app.get("/")
    def index():
        return render_template("index.html")

    @app.get("/privacy")
    def privacy_page():
        return render_template(
            "privacy.html",
            practice=app.config["PRACTICE_NAME"],
            contact=app.config["PRACTICE_CONTACT"],
            terms=retention_terms(app.config["RETENTION_DAYS"]),
        )

    register_coach_routes(app, tokens_limit)

    # NotFound from the domain is the same 404 page as an unknown path.
    app.register_error_handler(NotFound, show_error)


def register_coach_routes(app: Flask, tokens_limit: TokenRateLimit) -> None:
    """The coach's overview behind `python cli.py coach link EMAIL`: one coach's own
    engagements, open rounds and report; deciding their own open rounds from there."""

    def coach_page(token: str, *, status: int = 200, notice=(), form=None):
        """The overview, in the coach's language; `notice` holds msgids."""
        db = get_db()
        now = utcnow()
        access = find_coach_view(db, token, now)
        since = now - timedelta(days=OVERVIEW_DAYS)
        view = coach_overview(db, access["coach_id"], now, since)
        g.lang = view["coach"]["lang"]
        g.style_nonce = secrets.token_urlsafe(16)
        report = practice_report(db, since, access["coach_id"])
        page = render_template(
            "coach.html",
            token=token,
            view=view,
            expires_at=access["expires_at"],
            status=status,
            notice=" ".join(gettext(sentence) for sentence in notice),
            stamps={
                round_["round_id"]: form_stamp().issue(round_["coach_decision_id"])
                for round_ in view["open_rounds"]
            },
            reasons=REASONS["coach"],
            open_engagements={round_["engagement_id"] for round_ in view["open_rounds"]},
            ENDINGS=ENGAGEMENT_ENDINGS,
            format_date=format_date,
            report=report,
            charts=report_charts(report, g.style_nonce),
        )
        return page, status

    @app.get("/c/<token>")
    @tokens_limit
    def coach_view(token: str):
        return coach_page(token)

    @app.post("/c/<token>/rounds/<int:round_id>")
    @tokens_limit
    def coach_decide(token: str, round_id: int):
        db = get_db()
        now = utcnow()
        coach_id = find_coach_view(db, token, now)["coach_id"]
        g.lang = get_coach(db, coach_id)["lang"]
        decision_id = get_coach_decision_id(db, coach_id, round_id)  # another's round: 404
        return decide_from_form(
            decision_id,
            round_status_of(db, decision_id),
            now,
            via="coach_view",
            show=functools.partial(coach_page, token),
            done=url_for("coach_view", token=token),
        )
