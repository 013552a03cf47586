"""The twoyes web app: the pages behind the links in the mails, and the app every command runs in.

`create_app()` layers the settings (defaults, then instance/config.toml, then
the TWOYES_ environment, then a test's own), checks them once into a frozen
`Settings`, and only then starts Flask-Mail (it copies its settings at that
moment). The routes live in Blueprints, one module each; they stay thin:
read the request, call one domain function, show the result. GET and HEAD
never change anything, because mail scanners open every link.
"""

from __future__ import annotations

import os
import tomllib
from email.utils import formataddr
from pathlib import Path

from flask import Flask, abort, g, render_template, request
from flask.sessions import SessionInterface
from flask_babel import gettext
from flask_mail import Mail
from jinja2.bccache import Bucket, BytecodeCache
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter, Rule

from twoyes import db as database
from twoyes.catalogues import catalogue_problem
from twoyes.errors import N_, NotFound, TwoyesError
from twoyes.logs import HideTokens
from twoyes.settings import CONFIG_FILE, DEFAULTS, FIXED, SETTINGS, ConfigError, load_settings
from twoyes.web.forms import FormStamp
from twoyes.web.i18n import init_language, translate_error
from twoyes.web.rate_limits import TokenRateLimit

mail = Mail()

# templates/, static/, translations/ and instance/ lie at the repository's root.
ROOT = Path(__file__).resolve().parent.parent.parent

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


class RowId(IntegerConverter):
    """A row id in a path, such as a round's: a number beyond SQLite's integers matches no
    route, so it is a 404 like any unknown id (SQLite could not even look it up)."""

    def __init__(self, url_map, *args, **kwargs) -> None:
        super().__init__(url_map, *args, max=2**63 - 1, **kwargs)


class Route(Rule):
    """A route whose URL builder is compiled the first time a URL is built from it.

    Werkzeug compiles two builders a route as the app is made: 70 ms an app, in every
    command run (`tick` every five minutes) that builds no URL at all, and in every
    test. This defers that work to the first `url_for` (werkzeug is pinned; the page
    tests build every route's URL).
    """

    def _compile_builder(self, append_unknown: bool = True):
        compile_builder = super()._compile_builder
        compiled = None

        def build(rule, *args, **kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = compile_builder(append_unknown)
            return compiled(rule, *args, **kwargs)

        return build


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


class CompiledTemplates(BytecodeCache):
    """Templates compiled once a process, not once an app.

    Jinja compiles a template the first time an app renders it (40 ms for a page);
    a process that makes many apps (the test suite, a command run in-process) keeps
    the compiled code here. A bucket's key holds the template's checksum, so an
    edited template is compiled again.
    """

    def __init__(self) -> None:
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = CompiledTemplates()


def create_app(test_config: dict | None = None) -> Flask:
    """The app, with its settings checked; ConfigError names a setting that cannot work."""
    # Every file this process makes (the database, its -wal and -shm, the secret, .eml
    # files, exports, backups) holds clients' data: readable by its owner only.
    os.umask(0o077)
    # The instance folder holds the settings file, the database, the secret and .eml files.
    instance = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("TWOYES_INSTANCE_PATH")
    app = Flask(
        "twoyes",
        root_path=str(ROOT),
        instance_relative_config=True,
        instance_path=instance and os.path.abspath(instance),
    )
    app.url_rule_class = Route
    app.config.from_mapping(DEFAULTS | FIXED)
    sources = {name: "default" for name in DEFAULTS}
    settings_file = Path(app.instance_path) / CONFIG_FILE
    try:
        with open(settings_file, "rb") as file:
            from_file = tomllib.load(file)
    except FileNotFoundError:
        from_file = {}
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{settings_file} cannot be read: {error}") from error
    unknown = sorted(set(from_file) - set(SETTINGS))
    if unknown:
        raise ConfigError(
            f"{settings_file} names {', '.join(unknown)}, which is not a setting; "
            "the README lists them all (without the TWOYES_ prefix)."
        )
    app.config.from_mapping(from_file)
    sources |= dict.fromkeys(from_file, "file")
    app.config.from_prefixed_env("TWOYES")
    sources |= {name: "environment" for name in app.config if f"TWOYES_{name}" in os.environ}
    if test_config:
        app.config.from_mapping(test_config)
        sources |= dict.fromkeys(test_config, "test")
    practice_name = str(app.config.get("PRACTICE_NAME") or "").strip()
    if sources["MAIL_DEFAULT_SENDER"] == "default" and practice_name:
        # Mail comes from the practice by name, not from "twoyes", until a sender is set.
        app.config["MAIL_DEFAULT_SENDER"] = formataddr((practice_name, "twoyes@localhost"))
    settings = load_settings(app.config, app.instance_path)
    problem = catalogue_problem()
    if problem:
        raise ConfigError(problem)
    if not app.config.get("SECRET_KEY"):
        # load_settings generated it into instance/secret_key (a source, not a password).
        sources["SECRET_KEY"] = "generated"  # noqa: S105  # nosec B105
    app.config["SECRET_KEY"] = settings.secret_key
    app.config["DATABASE"] = settings.database
    app.extensions["twoyes"] = settings
    app.extensions["twoyes_sources"] = sources
    app.extensions["twoyes_settings_file"] = settings_file
    app.extensions["twoyes_form_stamp"] = FormStamp(
        settings.secret_key, settings.min_decision_seconds
    )
    # Token routes are rate limited: refusals per address, requests per link (rate_limits).
    app.extensions["twoyes_rate_limit"] = TokenRateLimit(
        settings.token_rate_limit, settings.ratelimit_storage_uri
    )
    app.session_interface = NoSessions()
    app.jinja_options = {**app.jinja_options, "bytecode_cache": COMPILED_TEMPLATES}
    app.url_map.converters["id"] = RowId
    mail.init_app(app)
    if settings.proxies:
        # Behind nginx or Caddy the client's address is in X-Forwarded-For.
        hops = settings.proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    init_language(app, settings)

    app.teardown_appcontext(database.roll_back_unfinished)
    app.before_request(refuse_unread_chunks)
    app.after_request(security_headers)
    app.register_error_handler(TwoyesError, show_error)
    for status in (400, 404, 405, 411, 413, 429, 500):
        app.register_error_handler(status, show_http_error)

    from twoyes.web import coach, coach_engagement, decisions, pages, sign_in, welcome_back

    blueprints = (decisions, welcome_back, coach, coach_engagement, sign_in, pages)
    for blueprint in (module.bp for module in blueprints):
        app.register_blueprint(blueprint)
    app.logger.addFilter(HideTokens())  # Flask logs the path of a request that failed
    return app


def refuse_unread_chunks():
    """411 for a chunked body the WSGI server did not take in for the app (it sets
    wsgi.input_terminated when it did, as gunicorn and the development server do): werkzeug
    would read it as empty, and a person's decision would be taken for a scanner's."""
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if chunked and not request.environ.get("wsgi.input_terminated"):
        abort(411)


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
    411: N_("What you sent arrived without its length, so nothing was recorded. Please try again."),
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
    """The error page in the reader's language, keeping what the error tells a client in its
    headers: Retry-After on a 429, Allow on a 405."""
    status = getattr(error, "code", None) or getattr(error, "status", 500)
    message = gettext(HTTP_ERRORS.get(status, HTTP_ERRORS[500]))
    headers = []
    if isinstance(error, HTTPException):
        headers = [(name, value) for name, value in error.get_headers() if name != "Content-Type"]
    return render_template("error.html", status=status, message=message), status, headers
