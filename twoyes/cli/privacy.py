"""The commands for people's rights and the practice's copy: export and forget, backup.

`client export` and `coach export` answer an access request, `client forget`
and `coach forget` an erasure request (privacy.py), one command for either;
`backup` makes the online copy a restore starts from.
"""

from __future__ import annotations

import json
import os
import sys

import click

from twoyes.backups import backup_database, backup_into
from twoyes.cli.options import get_db, json_option, print_json, with_app
from twoyes.files import write_new_file
from twoyes.privacy import (
    export_client,
    export_coach,
    forget_client,
    forget_coach,
    refuse_active_coach,
)
from twoyes.times import utcnow

EXPORT_HELP = {
    "client": """Answer an access request: all about one client, as JSON.

    Everything twoyes holds about them: their profile, engagements, sessions,
    decisions with notes, the mails sent to them (without links) and the log of
    their answers; nothing of anyone else.

    Example: python cli.py client export anna@example.org --output anna.json
    """,
    "coach": """Answer a coach's access request: all about them, as JSON.

    Their profile, the engagements they coach with sessions, rounds and their own
    decisions with notes, the mails sent to them (without links) and the log of
    their answers; nothing about their clients.

    Example: python cli.py coach export bob@example.org --output bob.json
    """,
}

FORGET_HELP = {
    "client": """Answer an erasure request: forget a client for good.

    Erases their name, address, notes and mails. Their engagements, sessions and
    choices stay as anonymous counts, so reports stay true; every link of theirs
    stops working at once; an engagement they are still in ends for them now.
    Asks first, unless --yes.

    Example: python cli.py client forget anna@example.org --yes
    """,
    "coach": """Answer a coach's erasure request: forget a coach for good.

    Only once every engagement they coach has ended. Erases their name, address,
    notes and mails; their engagements, sessions and rounds stay as anonymous
    records; every link of theirs stops working at once. Asks first, unless --yes.

    Example: python cli.py coach forget bob@example.org --yes
    """,
}
EXPORTERS = {"client": export_client, "coach": export_coach}
FORGETTERS = {"client": forget_client, "coach": forget_coach}


def export_command(role: str) -> click.Command:
    """`client export` or `coach export`: the same command for either."""

    @click.command(name="export", help=EXPORT_HELP[role])
    @click.argument("email")
    @click.option(
        "--output",
        type=click.Path(dir_okay=False),
        help="Write the JSON to this new file (readable only by you) instead of printing it.",
    )
    @click.option("--force", is_flag=True, help="Replace the --output file if it exists.")
    @with_app
    def export(email, output, force):
        data = EXPORTERS[role](get_db(), email)
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        if output is None:
            click.echo(text, nl=False)
            return
        write_new_file(output, text, force=force)
        click.echo(f"Wrote everything twoyes holds about {data[role]['email']} to {output}.")

    return export


def forget_command(role: str) -> click.Command:
    """`client forget` or `coach forget`: the same command for either."""

    @click.command(name="forget", help=FORGET_HELP[role])
    @click.argument("email")
    @click.option("--yes", is_flag=True, help="Do not ask first (for scripts).")
    @json_option
    @with_app
    def forget(email, yes, as_json):
        db = get_db()
        if not yes:
            confirm_forgetting(db, role, email)
        result = FORGETTERS[role](db, email, utcnow())
        if as_json:
            print_json(result)
            return
        click.echo(
            f"Forgot {role} {result[f'{role}_id']}: name, address and "
            f"{result['notes_erased']} note(s) erased, {result['mails_erased']} mail(s) blanked, "
            f"{result['links_stopped']} link(s) stopped."
        )
        if result.get("engagements_left"):
            left = ", ".join(map(str, result["engagements_left"]))
            click.echo(f"They no longer take part in engagement(s) {left}.")
        click.echo(
            "Keep a note of this request (date and address) outside twoyes: after restoring an "
            "older backup, forget them again."
        )

    return forget


def confirm_forgetting(db, role: str, email: str) -> None:
    """Ask on the terminal, after the refusals a wrong address or an active coach get."""
    found = EXPORTERS[role](db, email)  # an unknown address is the first thing to hear
    person = found[role]
    if role == "coach":
        refuse_active_coach(db, person)
    if not sys.stdin.isatty():
        raise click.ClickException(
            "Forgetting cannot be undone and there is no terminal to ask on; add --yes to confirm."
        )
    active = ", ".join(str(e["id"]) for e in found["engagements"] if e["status"] == "active")
    ending = f", ending their part in engagement(s) {active}" if active else ""
    click.confirm(
        f"Forget {person['name']} <{person['email']}> ({role} {person['id']}) for good{ending}?",
        abort=True,
    )


client_export = export_command("client")
client_forget = forget_command("client")
coach_export = export_command("coach")
coach_forget = forget_command("coach")


@click.command()
@click.argument("path", type=click.Path(), required=False)
@click.option(
    "--into",
    "folder",
    type=click.Path(),
    metavar="FOLDER",
    help="Instead of PATH: a folder, where the copy gets a name with the time it was taken "
    "(twoyes-2026-12-09T033000Z.db, in UTC).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --into: keep only the newest N backups in the folder, removing older ones. "
    "Other files there are never touched.",
)
@json_option
@with_app
def backup(path, folder, keep, as_json):
    """Copy the database safely, even while it is in use.

    Uses SQLite's online backup, so the web app and cron keep running, and checks
    the copy with PRAGMA integrity_check; the README says how to restore. With
    --into and --keep it keeps a folder of the last N, as the nightly timer does.

    Example: python cli.py backup backups/twoyes-2026-12-09.db

    Example: python cli.py backup --into /var/backups/twoyes --keep 14
    """
    if (path is None) == (folder is None):
        raise click.UsageError("Name either a PATH for the copy or a folder with --into.")
    if keep is not None and folder is None:
        raise click.UsageError("--keep goes with --into: it counts the backups in that folder.")
    if folder is None:
        result = backup_database(get_db(), path)
    else:
        result = backup_into(get_db(), folder, utcnow(), keep)
    if as_json:
        print_json(result)
        return
    click.echo(
        f"Backed up the database to {result['path']} ({result['bytes']:,} bytes, "
        f"schema version {result['schema_version']}, integrity check ok)."
    )
    if result.get("removed"):
        names = ", ".join(os.path.basename(old) for old in result["removed"])
        click.echo(f"Removed {len(result['removed'])} older backup(s): {names}.")
