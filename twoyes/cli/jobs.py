"""What cron runs: `tick` (everything due, then delivery) and `close-undecided` (R4, R6)."""

from __future__ import annotations

import json
import os
import sys

import click

from twoyes.cli.mail import read_replies, report_delivery
from twoyes.cli.options import get_db, json_option, now_option, print_json, settings, with_app
from twoyes.jobs import close_undecided as close_undecided_job
from twoyes.jobs import do_due_work
from twoyes.labels import ENDING_LABELS
from twoyes.mail.delivery import deliver_due_mail


@click.command(name="close-undecided")
@now_option
@click.option("--dry-run", is_flag=True, help="Show what would end, and change nothing.")
@json_option
@with_app
def close_undecided(now, dry_run, as_json):
    """End every engagement left undecided past its deadline, and idle ones.

    Example: python cli.py close-undecided --dry-run
    """
    verb = "Would close" if dry_run else "Closed"
    anything = False
    # Each batch is shown as soon as it committed (click.echo flushes): a sweep of a
    # million rounds shows its progress, and never holds more than a batch of lines.
    for ended in close_undecided_job(get_db(), now, settings(), dry_run=dry_run):
        anything = True
        if as_json:
            show("\n".join(json.dumps(item, ensure_ascii=False) for item in ended))
        else:
            show("\n".join(describe_ending(verb, item) for item in ended))
    if not anything and not as_json:
        show("Nothing is past its deadline or idle.")


def show(text: str) -> None:
    """Print a batch's lines; when their reader has gone (`| head`), the sweep goes on unseen."""
    try:
        click.echo(text)
    except BrokenPipeError:
        # What is left to print, and Python's last flush at exit, go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def describe_ending(verb: str, item: dict) -> str:
    """One line of close-undecided: the round that closed and what became of its engagement."""
    if "round_id" not in item:
        return f"{verb} engagement {item['engagement_id']}: idle"
    result = (
        "continues"
        if item["outcome"] == "continue"
        else f"ends: {ENDING_LABELS[item['end_reason']].lower()}"
    )
    return f"{verb} round {item['round_id']}: engagement {item['engagement_id']} {result}"


@click.command()
@now_option
@json_option
@with_app
def tick(now, as_json):
    """Do what is due: open rounds, remind, close overdue rounds and idle engagements, read
    replies (with INBOUND_IMAP_HOST set), deliver mail.

    Safe every minute, and safe when two runs overlap. Without a mail server on a
    BASE_URL that is not loopback, everything else is done, the mail stays queued,
    and tick exits 1 naming the missing setting.

    \b
    Example: a crontab line
    */5 * * * * cd /srv/twoyes && .venv/bin/python cli.py tick
    """
    db = get_db()
    summary = do_due_work(db, now, settings())
    inbound_error = None
    if settings().inbound_imap_host:
        # Replies before delivery: their confirmations go out in this same run.
        handled, inbound_error = read_replies(db, now)
        summary["replies_read"] = sum(handled.values())
    report = deliver_due_mail(db, now, echo=lambda line: None)
    summary["mails_sent"] = report.sent
    if as_json:
        print_json(
            summary
            | {
                "mails_waiting": report.waiting,
                "mails_failed": report.failed,
                "no_mail_server": report.no_mail_server,
            }
        )
    elif any(summary.values()):
        click.echo(", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in summary.items()))
    if inbound_error:
        # Cron mails this line to the operator; everything else was done.
        click.echo(inbound_error, err=True)
    report_delivery(report)
    if inbound_error:
        sys.exit(1)
