"""The twoyes command line: what the operator types and what cron runs.

Each command reads its options, calls one domain function and prints the
result (as JSON with --json). Errors checked against data or rules come back
as one line on stderr with exit status 1; Click itself answers a malformed
command line with exit status 2. The commands live in one module per group.
"""

from __future__ import annotations

import click

from twoyes.cli.engagements import decide, engagement, session
from twoyes.cli.jobs import close_undecided, tick
from twoyes.cli.mail import outbox, send
from twoyes.cli.options import get_db, settings, with_app
from twoyes.cli.people import client_group, coach_group
from twoyes.cli.privacy import backup
from twoyes.cli.reports import export, report, status
from twoyes.cli.serve import serve
from twoyes.db import init_db


@click.group()
@click.version_option("0.1.0", prog_name="twoyes")
def cli():
    """twoyes: after every session, coach and client each decide whether another is useful.

    Settings come from instance/config.toml and TWOYES_ environment variables (see the README).
    """


@cli.command()
@with_app
def init():
    """Create or upgrade the database; safe to repeat.

    Example: python cli.py init
    """
    before, after, created = init_db(get_db())
    path = settings().database
    if created:
        click.echo(f"Created the database at {path} (schema version {after}).")
    elif before == after:
        click.echo(f"The database at {path} is up to date (schema version {after}).")
    else:
        click.echo(f"Upgraded the database at {path} from version {before} to {after}.")


for command in (
    coach_group,
    client_group,
    engagement,
    session,
    decide,
    tick,
    close_undecided,
    send,
    outbox,
    status,
    report,
    export,
    backup,
    serve,
):
    cli.add_command(command)
