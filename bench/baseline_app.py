"""The bare baselines for the decision page and the decision POST: the least a Flask app can do.

bench/run.py serves this module under the same gunicorn as twoyes
(`baseline_app:app`, 2 sync workers, twoyes's gunicorn.conf.py with its access
log) on a copy of the same generated database, so that the ratio shows what
twoyes adds on top of the unavoidable work:

- GET /d/<token>: one lookup (the token's hash joined to everything the page
  shows) and one Jinja render of a page of about the same size as twoyes's.
- POST /d/<token>: one token lookup by hash, then one UPDATE (the decision)
  and one INSERT (its event) in one immediate transaction, then a 303.

Like twoyes it keeps one connection per worker (opening one per request, as
flaskr does, costs more than the request on a WAL file), with a busy timeout
and synchronous=NORMAL. It checks nothing else: no form stamp, no rules, no
security headers.

Example: BENCH_DATABASE=bench/data/x.db gunicorn -w 2 --chdir bench baseline_app:app
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime

from flask import Flask, abort, redirect, render_template, request

app = Flask(__name__)
app.config["DATABASE"] = os.environ.get("BENCH_DATABASE", "bench/data/baseline.db")

REASONS = {
    "on_my_own": "I can go on by myself for now",
    "not_useful": "This is not helping me enough",
    "other": "Another reason",
}

PAGE_SQL = """
SELECT decisions.id, decisions.role, decisions.choice, rounds.deadline_at,
       sessions.starts_at, coaches.name AS coach_name,
       coalesce(clients.name, coaches.name) AS name
FROM tokens
JOIN decisions ON decisions.id = tokens.decision_id
JOIN rounds ON rounds.id = decisions.round_id
JOIN sessions ON sessions.id = rounds.session_id
JOIN engagements ON engagements.id = rounds.engagement_id
JOIN coaches ON coaches.id = engagements.coach_id
LEFT JOIN clients ON clients.id = decisions.client_id
WHERE tokens.hash = ?
"""


_connection: dict[int, sqlite3.Connection] = {}


def get_db() -> sqlite3.Connection:
    pid = os.getpid()
    if pid not in _connection:
        connection = sqlite3.connect(app.config["DATABASE"], timeout=30, isolation_level=None)
        connection.execute("PRAGMA synchronous = NORMAL")
        _connection[pid] = connection
    return _connection[pid]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.get("/d/<token>")
def decision(token: str):
    row = get_db().execute(PAGE_SQL, [token_hash(token)]).fetchone()
    if row is None:
        abort(404)
    keys = ("id", "role", "choice", "deadline_at", "starts_at", "coach_name", "name")
    return render_template(
        "baseline_decision.html",
        token=token,
        party=dict(zip(keys, row, strict=True)),
        reasons=REASONS,
    )


@app.post("/d/<token>")
def decide(token: str):
    choice = request.form.get("choice")
    if choice not in ("continue", "stop"):
        abort(400)
    db = get_db()
    row = db.execute(
        "SELECT decision_id FROM tokens WHERE hash = ?", [token_hash(token)]
    ).fetchone()
    if row is None:
        abort(404)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    db.execute("BEGIN IMMEDIATE")
    db.execute(
        "UPDATE decisions SET choice = ?, decided_at = ? WHERE id = ?", [choice, now, row[0]]
    )
    db.execute(
        "INSERT INTO events (at, kind, detail) VALUES (?, 'decision_recorded', ?)",
        [now, json.dumps({"decision_id": row[0], "choice": choice})],
    )
    db.execute("COMMIT")
    return redirect(f"/d/{token}", 303)
