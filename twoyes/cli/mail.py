"""The commands for mail: `send` delivers what waits, `inbound` reads replies, `outbox list`
and `outbox retry`."""

from __future__ import annotations

import sqlite3
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


EX_TEMPFAIL = 75  # sysexits.h: a mail server delivering by pipe tries again later

# A message larger than this is no reply to a decision mail; a pipe sends it whole or not at all.
MAX_MESSAGE_BYTES = 25 * 1024 * 1024

OUTCOMES = {
    "duplicate": "This message was handled before; nothing was done again.",
    "machine": "A machine wrote this message (an automatic reply or a bounce); it was set aside.",
    "own": "This message came from the practice's own address; it was set aside.",
    "unmatched": "This message answers no decision mail; it was forwarded to the practice.",
    "recorded": "The answer was recorded, and its sender gets a confirmation.",
    "refused": "The round no longer takes answers; the sender gets a mail saying so.",
    "unclear": "No clear answer: the sender gets the links again, the coach the message.",
}


def read_replies(db, when) -> tuple[dict[str, int], str | None]:
    """Read the inbound mailbox (only here is the IMAP wing imported: an idle tick without
    INBOUND_IMAP_HOST loads none of it); what was handled, and the error that stopped it."""
    from twoyes.mail.inbound import InboundError, read_inbound

    try:
        report = read_inbound(db, when, settings())
    except InboundError as error:
        return {}, str(error)
    for line in report.errors:
        click.echo(line, err=True)
    return report.handled, None


@click.command()
@click.option("--stdin", "from_stdin", is_flag=True, help="Read one message from standard input.")
@now_option
@json_option
@with_app
def inbound(from_stdin, now, as_json):
    """Read replies to decision mails: from the IMAP mailbox, or one message on standard input.

    A reply that says "continue" or "stop" (or "doorgaan", "stoppen") is recorded as if its
    sender had pressed the button. With --stdin, for a mail server that pipes each message to
    a command, the message is handled and the command exits 0.

    \b
    Example: python cli.py inbound
    Example: python cli.py inbound --stdin < reply.eml
    """
    from twoyes.replies import handle_message  # here only: other commands need none of it

    if from_stdin:
        raw = sys.stdin.buffer.read(MAX_MESSAGE_BYTES + 1)
        if not raw.strip():
            raise click.ClickException("No message came on standard input; nothing was done.")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise click.ClickException(
                "The message is larger than 25 MB, so it is no reply to a decision mail;"
                " nothing was done."
            )
        try:
            result = handle_message(get_db(), raw, now, settings())
        except sqlite3.Error as error:
            # EX_TEMPFAIL: the mail server keeps the message and offers it again later.
            click.echo(f"The database could not take the message now: {error}.", err=True)
            sys.exit(EX_TEMPFAIL)
        if as_json:
            print_json(result)
        else:
            click.echo(OUTCOMES[result["outcome"]])
        return
    if not settings().inbound_imap_host:
        raise click.ClickException(
            f"No inbound mailbox is set: set INBOUND_IMAP_HOST in"
            f" {Path(settings().instance_path) / CONFIG_FILE} (or TWOYES_INBOUND_IMAP_HOST),"
            " or pipe each message to `python cli.py inbound --stdin`."
        )
    handled, error = read_replies(get_db(), now)
    if as_json:
        print_json({"handled": handled, "error": error})
    elif handled:
        click.echo(", ".join(f"{outcome}: {count}" for outcome, count in sorted(handled.items())))
    else:
        click.echo("No replies were waiting." if error is None else "")
    if error:
        raise click.ClickException(error)


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
