"""The pages without a token: the front page, the privacy page, and the health check."""

from __future__ import annotations

import sqlite3

from flask import Blueprint, render_template

from twoyes.retention import retention_terms
from twoyes.web.context import get_db, settings

bp = Blueprint("pages", __name__)


@bp.get("/healthz")
def healthz():
    try:
        get_db().conn.execute("SELECT count(*) FROM engagements").fetchone()
    except sqlite3.Error:
        return {"status": "unavailable", "database": "not answering"}, 503
    return {"status": "ok", "database": "ok"}


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/privacy")
def privacy_page():
    practice = settings()
    return render_template(
        "privacy.html",
        practice=practice.practice_name,
        contact=practice.practice_contact,
        terms=retention_terms(practice.retention_days),
    )
