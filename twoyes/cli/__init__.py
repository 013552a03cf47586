"""The twoyes command line: what the operator types and what cron runs.

Each command reads its options, calls one domain function and prints the
result (as JSON with --json). Errors checked against data or rules come back
as one line on stderr with exit status 1; Click itself answers a malformed
command line with exit status 2. The commands live in one module per group.
"""

from __future__ import annotations

from pathlib import Path

import click

from twoyes.cli.engagements import decide, engagement, session
from twoyes.cli.health import check, config
from twoyes.cli.jobs import close_undecided, tick
from twoyes.cli.mail import inbound, outbox, send
from twoyes.cli.options import get_db, settings, with_app
from twoyes.cli.people import client_group, coach_group
from twoyes.cli.privacy import backup
from twoyes.cli.reports import export, report, status
from twoyes.cli.serve import serve
from twoyes.db import init_db
from twoyes.settings import CONFIG_FILE, write_settings_template


@click.group()
@click.version_option("0.1.0", prog_name="twoyes")
def cli():
    """twoyes: after every session, coach and client each decide whether another is useful.

    Settings come from instance/config.toml and TWOYES_ environment variables (see the README).
    """


@cli.command()
@with_app
def init():
    """Create or upgrade the database, and write a commented settings file; safe to repeat.

    The instance folder becomes readable by its owner only; instance/config.toml
    is written (0600) with every setting commented out at its default, unless
    it exists.

    Example: python cli.py init
    """
    instance = Path(settings().instance_path)
    wrote_template = write_settings_template(instance)
    before, after, created = init_db(get_db())
    path = settings().database
    if created:
        click.echo(f"Created the database at {path} (schema version {after}).")
    elif before == after:
        click.echo(f"The database at {path} is up to date (schema version {after}).")
    else:
        click.echo(f"Upgraded the database at {path} from version {before} to {after}.")
    if wrote_template:
        click.echo(f"Wrote the settings file {instance / CONFIG_FILE}: every setting, commented.")


for command in (
    coach_group,
    client_group,
    engagement,
    session,
    decide,
    tick,
    close_undecided,
    send,
    inbound,
    outbox,
    status,
    report,
    export,
    backup,
    serve,
    config,
    check,
):
    cli.add_command(command)
