"""What a request reads from its app: the settings, the database, the form stamp, the rate limit.

The core takes these as arguments; the routes fetch them here, so that no
route reaches into `current_app.config` under string keys.
"""

from __future__ import annotations

import functools

import sqlite_utils
from flask import current_app, request, url_for

from twoyes import db as database
from twoyes.errors import NotFound
from twoyes.settings import Settings
from twoyes.web.forms import FormStamp
from twoyes.web.rate_limits import TokenRateLimit


def settings() -> Settings:
    return current_app.extensions["twoyes"]


def get_db() -> sqlite_utils.Database:
    """This thread's connection to the app's database (kept between requests)."""
    return database.get_db(settings().database)


def form_stamp() -> FormStamp:
    """The app's stamp signer, made once by create_app (the settings do not change)."""
    return current_app.extensions["twoyes_form_stamp"]


def rate_limit() -> TokenRateLimit:
    return current_app.extensions["twoyes_rate_limit"]


def client_address() -> str:
    return request.remote_addr or "127.0.0.1"


def limit_tokens(view):
    """Guard a token route: 429 once its address has used up its refusals or its link its
    requests; a link that does not open counts as a refusal (see rate_limits)."""

    @functools.wraps(view)
    def limited(*args, **kwargs):
        rate_limit().check(client_address(), kwargs.get("token"))
        try:
            return view(*args, **kwargs)
        except NotFound:
            rate_limit().count_refusal(client_address())
            raise

    return limited


def issue_stamp(endpoint: str, state: str = "", **values) -> str:
    """A stamp for a form that posts to `endpoint` with `values` (see forms.FormStamp)."""
    return form_stamp().issue(url_for(endpoint, **values), state)


def stamp_is_human(state: str = "") -> bool:
    """Whether this POST is a person's, sent with a form served for this very route and token
    (see forms.FormStamp); a refused stamp counts against its address, as a token that does
    not open does."""
    action = url_for(request.endpoint, **request.view_args)
    if form_stamp().is_human(request.form, action, state):
        return True
    rate_limit().count_refusal(client_address())
    return False
