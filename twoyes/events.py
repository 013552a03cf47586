"""The append-only event log: every state change leaves one row here.

Callers write the event inside the same transaction as the change itself,
so the log and the state never disagree.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlite_utils

from twoyes.times import to_db


def log_event(
    db: sqlite_utils.Database,
    kind: str,
    now: datetime,
    *,
    engagement_id: int | None = None,
    round_id: int | None = None,
    **detail: Any,
) -> None:
    db.conn.execute(
        "INSERT INTO events (at, kind, engagement_id, round_id, detail) VALUES (?, ?, ?, ?, ?)",
        [to_db(now), kind, engagement_id, round_id, json.dumps(detail, sort_keys=True)],
    )
