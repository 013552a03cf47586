"""The twoyes command line: what coaches type and what cron runs.

Each command reads its options, calls one domain function and prints the
result (as JSON with --json). Errors checked against data or rules come back
as one line on stderr with exit status 1; Click itself answers a malformed
command line with exit status 2.
"""

from __future__ import annotations

import sys
from datetime import datetime

import click
from flask import current_app

from app import create_app, get_db
from cli_engagements import engagement, session
from cli_options import (
    Rollback,
    json_option,
    now_option,
    print_json,
    the_time,
    with_app,
)
from cli_privacy import backup, client_export, client_forget
from cli_reports import coach_link, export, report, status
from db import init_db, transaction
from delivery import deliver_due_mail
from engagements import (
    end_idle_engagements,
)
from errors import NotFound
from logs import hide_tokens
from outbox import retry_mail
from people import add_person
from retention import anonymise_expired, purge_delivered_mail
from rounds import close_overdue_rounds, open_due_rounds, record_decision, send_reminders
from rules import CHOICES, REASONS
from settings import ConfigError
from times import utcnow


@click.group()
@click.version_option("0.1.0", prog_name="twoyes")
def cli():
    """twoyes: after every session, coach and client each decide whether another is useful.

    Settings come from TWOYES_ environment variables (see the README).
    """


@cli.command()
@with_app
def init():
    """Create or upgrade the database; safe to repeat.

    Example: python cli.py init
    """
    before, after, created = init_db(get_db())
    path = current_app.config["DATABASE"]
    if created:
        click.echo(f"Created the database at {path} (schema version {after}).")
    elif before == after:
        click.echo(f"The database at {path} is up to date (schema version {after}).")
    else:
        click.echo(f"Upgraded the database at {path} from version {before} to {after}.")


PERSON_GROUPS = {
    "coach": "Add coaches, and give them a link to their overview page.",
    "client": "Add clients, export their data, or forget them.",
}


def person_commands(role: str) -> click.Group:
    @click.group(name=role, help=PERSON_GROUPS[role])
    def group():
        pass

    @group.command(
        name="add",
        help=f"Add a {role} with a name and an e-mail address.\n\n"
        f'Example: python cli.py {role} add "Anna de Vries" anna@example.org --lang nl',
    )
    @click.argument("name")
    @click.argument("email")
    @click.option("--lang", type=click.Choice(["en", "nl"]), help="Language of mails and pages.")
    @json_option
    @with_app
    def add(name, email, lang, as_json):
        lang = lang or current_app.config["LANGUAGE"]
        person_id = add_person(get_db(), role, name, email, lang, utcnow())
        if as_json:
            print_json({"id": person_id})
        else:
            click.echo(f"Added {role} {name} <{email.strip()}> (id {person_id}, language {lang}).")

    return group


coach_group = person_commands("coach")
coach_group.add_command(coach_link)
cli.add_command(coach_group)
client_group = person_commands("client")
client_group.add_command(client_export)
client_group.add_command(client_forget)
cli.add_command(client_group)
for command in (engagement, session, status, report, export, backup):
    cli.add_command(command)


@cli.command()
@click.argument("round_id", type=int)
@click.option("--choice", required=True, type=click.Choice(CHOICES))
@click.option("--reason", type=click.Choice(REASONS["coach"]), help="Why you stop.")
@click.option("--usefulness", type=click.IntRange(0, 10), help="How useful was it, 0-10.")
@click.option("--note", help="A note for yourself (at most 2,000 characters).")
@now_option
@with_app
def decide(round_id, choice, reason, usefulness, note, now):
    """Decide as the coach in a round.

    Example: python cli.py decide 3 --choice stop --reason cannot_help
    """
    db = get_db()
    row = db.conn.execute(
        "SELECT id FROM decisions WHERE round_id = ? AND role = 'coach'", [round_id]
    ).fetchone()
    if row is None:
        raise NotFound(
            f"There is no round {round_id}; `python cli.py engagement show ID` lists them."
        )
    result = record_decision(
        db,
        row["id"],
        the_time(now),
        choice=choice,
        reason=reason,
        usefulness=usefulness,
        note=note,
        via={"via": "cli"},
    )
    verdict = result["verdict"]
    click.echo(f"Recorded your choice in round {round_id}: {choice}.")
    if verdict is None:
        click.echo("The round stays open until everyone has decided or the deadline passes.")
    elif verdict.outcome == "continue":
        click.echo("Everyone chose to continue: plan the next session with `session add`.")
    else:
        click.echo(f"The round closed and the engagement ended ({verdict.end_reason}).")


def close_undecided_now(now: datetime) -> list[dict]:
    db = get_db()
    policy = current_app.config["POLICY"]
    batch = current_app.config["SWEEP_BATCH"]
    return close_overdue_rounds(db, now, batch) + end_idle_engagements(db, now, policy)


@cli.command(name="close-undecided")
@now_option
@click.option("--dry-run", is_flag=True, help="Show what would end, and change nothing.")
@json_option
@with_app
def close_undecided(now, dry_run, as_json):
    """End every engagement left undecided past its deadline, and idle ones.

    Example: python cli.py close-undecided --dry-run
    """
    db = get_db()
    when = the_time(now)
    if dry_run:
        try:
            with transaction(db):
                ended = close_undecided_now(when)
                raise Rollback
        except Rollback:
            pass
    else:
        ended = close_undecided_now(when)
    if as_json:
        print_json(ended)
        return
    verb = "Would close" if dry_run else "Closed"
    lines = []
    for item in ended:
        if "round_id" in item:
            result = (
                "continues" if item["outcome"] == "continue" else f"ends ({item['end_reason']})"
            )
            lines.append(
                f"{verb} round {item['round_id']}: engagement {item['engagement_id']} {result}"
            )
        else:
            lines.append(f"{verb} engagement {item['engagement_id']}: idle")
    # One write: a sweep can end a hundred thousand engagements.
    click.echo("\n".join(lines) or "Nothing is past its deadline or idle.")


def report_delivery(report) -> None:
    for line in report.errors:
        click.echo(line, err=True)
    if report.waiting:
        click.echo(f"{report.waiting} mail(s) wait for a later retry.", err=True)


@cli.command()
@now_option
@json_option
@with_app
def send(now, as_json):
    """Deliver queued mail; what fails now is retried by a later run.

    Example: python cli.py send
    """
    report = deliver_due_mail(get_db(), the_time(now), echo=click.echo)
    if as_json:
        print_json(vars(report))
    elif report.sent:
        click.echo(f"Delivered {report.sent} mail(s).")
    report_delivery(report)
    if report.failed:
        sys.exit(1)


@cli.command()
@now_option
@json_option
@with_app
def tick(now, as_json):
    """Do what is due: open rounds, remind, close overdue rounds and idle engagements, deliver mail.

    Safe every minute, and safe when two runs overlap.

    \b
    Example: a crontab line
    */10 * * * * cd /srv/twoyes && .venv/bin/python cli.py tick
    """
    db = get_db()
    when = the_time(now)
    policy = current_app.config["POLICY"]
    summary = {
        "rounds_opened": len(open_due_rounds(db, when, policy)),
        "rounds_closed": len(close_overdue_rounds(db, when, current_app.config["SWEEP_BATCH"])),
        "idle_ended": len(end_idle_engagements(db, when, policy)),
        "reminders": send_reminders(db, when),
    }
    summary |= anonymise_expired(db, when, current_app.config["RETENTION_DAYS"])
    summary["mail_bodies_purged"] = purge_delivered_mail(db, when)
    report = deliver_due_mail(db, when, echo=lambda line: None)
    summary["mails_sent"] = report.sent
    if as_json:
        print_json(summary | {"mails_waiting": report.waiting, "mails_failed": report.failed})
    elif any(summary.values()):
        click.echo(", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in summary.items()))
    report_delivery(report)


@cli.group()
def outbox():
    """See and retry mail."""


@outbox.command(name="list")
@click.option("--status", type=click.Choice(["queued", "sending", "sent", "failed"]))
@json_option
@with_app
def outbox_list(status, as_json):
    """List mail in the outbox, newest first.

    Example: python cli.py outbox list --status failed
    """
    rows = [
        dict(row)
        for row in get_db().conn.execute(
            "SELECT id, kind, to_email, status, attempts, next_attempt_at, sent_at, last_error"
            " FROM outbox WHERE ? IS NULL OR status = ? ORDER BY id DESC",
            [status, status],
        )
    ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        error = f"  ({row['last_error']})" if row["last_error"] and row["status"] != "sent" else ""
        click.echo(f"{row['id']:>5}  {row['status']:<8} {row['kind']:<13} {row['to_email']}{error}")
    if not rows:
        click.echo("The outbox is empty." if status is None else f"No {status} mail.")


@outbox.command(name="retry")
@click.argument("mail_id", type=int)
@with_app
def outbox_retry(mail_id):
    """Queue a failed mail again for the next `send` or `tick`.

    Example: python cli.py outbox retry 12
    """
    retry_mail(get_db(), mail_id, utcnow())
    click.echo(f"Mail {mail_id} is queued again.")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
def serve(host, port):
    """Run the web app (for production use gunicorn, see the README).

    Example: python cli.py serve --port 8000
    """
    from werkzeug.serving import WSGIRequestHandler

    class QuietTokens(WSGIRequestHandler):
        def log(self, type, message, *args):
            args = tuple(hide_tokens(arg) if isinstance(arg, str) else arg for arg in args)
            super().log(type, hide_tokens(message), *args)

    try:
        app = create_app()
    except ConfigError as error:
        raise click.ClickException(f"The configuration is not right: {error}") from error
    app.run(host=host, port=port, request_handler=QuietTokens)


if __name__ == "__main__":
    cli()
