"""The commands for mail: `send` delivers what waits, `outbox list` and `outbox retry`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from twoyes.cli.options import (
    get_db,
    json_option,
    now_option,
    print_json,
    print_rows,
    settings,
    with_app,
)
from twoyes.mail.delivery import deliver_due_mail
from twoyes.outbox import list_mail, retry_mail
from twoyes.settings import CONFIG_FILE
from twoyes.times import utcnow


def report_delivery(report) -> None:
    """What did not go out, on stderr; exit 1 when no mail server is set to send it."""
    for line in report.errors:
        click.echo(line, err=True)
    if report.no_mail_server:
        # Cron mails this line to the operator, the journal keeps it: nothing is lost silently.
        click.echo(missing_mail_server(report.waiting), err=True)
        sys.exit(1)
    if report.waiting:
        click.echo(f"{report.waiting} mail(s) wait for a later retry.", err=True)


def missing_mail_server(waiting: int) -> str:
    where = f"set MAIL_SERVER in {Path(settings().instance_path) / CONFIG_FILE}"
    if waiting:
        return f"No mail was sent: {where} (or TWOYES_MAIL_SERVER); {waiting} mail(s) wait."
    return f"No mail can be sent: {where} (or TWOYES_MAIL_SERVER); none waits yet."


@click.command()
@now_option
@json_option
@with_app
def send(now, as_json):
    """Deliver queued mail; what fails now is retried by a later run.

    Without MAIL_SERVER, mail is written to instance/mail/ as .eml files while
    BASE_URL is a loopback address (development); on any other BASE_URL it
    stays queued, and send exits 1 naming the missing setting.

    Example: python cli.py send
    """
    report = deliver_due_mail(get_db(), now, echo=click.echo)
    if as_json:
        print_json(vars(report))
    elif report.sent:
        click.echo(f"Delivered {report.sent} mail(s).")
    report_delivery(report)
    if report.failed:
        sys.exit(1)


@click.group()
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
    nothing = "The outbox is empty." if status is None else f"No {status} mail."
    print_rows(list_mail(get_db(), status), as_json, mail_line, nothing)


def mail_line(row: dict) -> str:
    error = f"  ({row['last_error']})" if row["last_error"] and row["status"] != "sent" else ""
    return f"{row['id']:>5}  {row['status']:<8} {row['kind']:<13} {row['to_email']}{error}"


@outbox.command(name="retry")
@click.argument("mail_id", type=int)
@with_app
def outbox_retry(mail_id):
    """Queue a failed mail again for the next `send` or `tick`.

    Example: python cli.py outbox retry 12
    """
    retry_mail(get_db(), mail_id, utcnow())
    click.echo(f"Mail {mail_id} is queued again.")
