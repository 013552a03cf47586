"""What a request reads from its app: the settings, the database, the form stamp, the rate limit.

The core takes these as arguments; the routes fetch them here, so that no
route reaches into `current_app.config` under string keys.
"""

from __future__ import annotations

import functools

import sqlite_utils
from flask import current_app, request

from twoyes import db as database
from twoyes.settings import Settings
from twoyes.web.forms import FormStamp


def settings() -> Settings:
    return current_app.extensions["twoyes"]


def get_db() -> sqlite_utils.Database:
    """This thread's connection to the app's database (kept between requests)."""
    return database.get_db(settings().database)


def form_stamp() -> FormStamp:
    """The app's stamp signer, made once by create_app (the settings do not change)."""
    return current_app.extensions["twoyes_form_stamp"]


def limit_tokens(view):
    """Count a token route's request against its client address; 429 once the budget is used."""

    @functools.wraps(view)
    def limited(*args, **kwargs):
        current_app.extensions["twoyes_rate_limit"].count(request.remote_addr or "127.0.0.1")
        return view(*args, **kwargs)

    return limited
