"""The bare baselines for close-undecided and send, run as their own processes by bench/run.py.

Each does the same writes as twoyes in the plainest way, so that a ratio
shows what twoyes adds. It imports only the standard library, so its start
is a bare interpreter's.

Example: python bench/baseline_jobs.py close bench/data/run-close-baseline.db
         python bench/baseline_jobs.py send bench/data/run-send-baseline.db 8025
"""

from __future__ import annotations

import json
import smtplib
import sqlite3
import sys
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate

BASELINE_CLOSE_SQL = [
    "CREATE TEMP TABLE due AS SELECT id, engagement_id FROM rounds"
    " WHERE status = 'open' AND deadline_at <= :now",
    "UPDATE rounds SET status = 'closed', outcome = 'stop', closed_at = :now"
    " WHERE id IN (SELECT id FROM due)",
    "UPDATE engagements SET status = 'ended', end_reason = 'undecided', ended_at = :now"
    " WHERE id IN (SELECT engagement_id FROM due) AND status = 'active'",
    """INSERT INTO outbox (kind, engagement_id, to_name, to_email, reply_to_name, reply_to_email,
                           lang, context, message_id, next_attempt_at, created_at)
    SELECT 'outcome', due.engagement_id, coalesce(clients.name, coaches.name),
           coalesce(clients.email, coaches.email), coaches.name, coaches.email,
           coalesce(clients.lang, coaches.lang),
           json_object('role', decisions.role, 'name', coalesce(clients.name, coaches.name),
                       'coach_name', coaches.name, 'title', engagements.title,
                       'outcome', 'stop', 'end_reason', 'undecided',
                       'session_at', sessions.starts_at),
           lower(hex(randomblob(12))), :now, :now
    FROM due
    JOIN rounds ON rounds.id = due.id
    JOIN sessions ON sessions.id = rounds.session_id
    JOIN engagements ON engagements.id = due.engagement_id
    JOIN coaches ON coaches.id = engagements.coach_id
    JOIN decisions ON decisions.round_id = due.id
    LEFT JOIN clients ON clients.id = decisions.client_id""",
]


def baseline_close(database: str) -> None:
    """The baseline of close-undecided: the same writes as plain SQL in one transaction."""
    connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    connection.execute("PRAGMA synchronous = NORMAL")
    now = {"now": datetime.now(UTC).isoformat(timespec="seconds")}
    connection.execute("BEGIN IMMEDIATE")
    for statement in BASELINE_CLOSE_SQL:
        connection.execute(statement, now)
    connection.execute("COMMIT")
    connection.close()


def baseline_send(database: str, port: str) -> None:
    """The baseline of send: raw smtplib over one connection, a text+HTML mail per row.

    It reads the queued rows, builds each message with the standard library's
    EmailMessage, and marks each row sent once the server accepted it.
    """
    connection = sqlite3.connect(database, timeout=30, isolation_level=None)
    connection.execute("PRAGMA synchronous = NORMAL")
    rows = connection.execute(
        "SELECT id, to_name, to_email, reply_to_name, reply_to_email, context, message_id"
        " FROM outbox WHERE status = 'queued' ORDER BY id"
    ).fetchall()
    with smtplib.SMTP("127.0.0.1", int(port), timeout=30) as smtp:
        for mail_id, to_name, to_email, reply_name, reply_email, context, message_id in rows:
            facts = json.loads(context)
            link = f"http://127.0.0.1:5000/b/{facts.get('welcome_back_token', '')}"
            sentence = (
                "We did not hear from everyone by the deadline, and we never continue without "
                "a yes, so this was our last session for now."
            )
            text = (
                f"Hello {facts['name']},\n\n{sentence}\n\nYou are welcome back any time: the "
                f"link below lets your coach know.\n\nWelcome back (this link works for a "
                f"year):\n{link}\n\nWarm regards,\n{facts['coach_name']}\n"
            )
            html = (
                '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Thank you'
                '</title></head><body style="margin:0;padding:0;background:#f4f1ea;">'
                '<table role="presentation" width="100%"><tr><td align="center" '
                'style="padding:24px 12px;"><table role="presentation" width="100%" '
                'style="max-width:560px;background:#ffffff;border-radius:8px;"><tr><td '
                'style="padding:24px;font-family:Arial,Helvetica,sans-serif;font-size:16px;">'
                f'<p style="margin:0 0 16px;">Hello {facts["name"]},</p>'
                f'<p style="margin:0 0 16px;">{sentence}</p><p style="margin:0 0 16px;">You '
                "are welcome back any time: the link below lets your coach know.</p>"
                f'<p style="margin:0 0 16px;"><a href="{link}" style="display:inline-block;'
                'background:#1d5c4d;color:#ffffff;padding:12px 20px;">Welcome back</a></p>'
                f'<p style="margin:24px 0 0;">Warm regards,<br>{facts["coach_name"]}</p>'
                "</td></tr></table></td></tr></table></body></html>"
            )
            message = EmailMessage()
            message["Subject"] = "Thank you, and welcome back any time"
            message["From"] = formataddr(("twoyes", "twoyes@localhost"))
            message["To"] = formataddr((to_name, to_email))
            message["Reply-To"] = formataddr((reply_name, reply_email))
            message["Date"] = formatdate(localtime=True)
            message["Message-ID"] = f"<{message_id}@localhost>"
            message.set_content(text)
            message.add_alternative(html, subtype="html")
            smtp.send_message(message)
            connection.execute(
                "UPDATE outbox SET status = 'sent', sent_at = ? WHERE id = ?",
                [datetime.now(UTC).isoformat(timespec="seconds"), mail_id],
            )
    connection.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["close"]:
        baseline_close(sys.argv[2])
    elif sys.argv[1:2] == ["send"]:
        baseline_send(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
