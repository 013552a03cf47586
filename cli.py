"""The twoyes command line: what coaches type and what cron runs.

Each command reads its options, calls one domain function and prints the
result (as JSON with --json). Errors checked against data or rules come back
as one line on stderr with exit status 1; Click itself answers a malformed
command line with exit status 2.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sqlite3
import sys
from datetime import datetime, timedelta

import click
from flask import current_app
from flask_babel import force_locale

from app import ConfigError, create_app, get_db
from backups import backup_database
from coach_view import get_coach, make_coach_link
from db import init_db, transaction
from delivery import deliver_due_mail
from engagements import (
    describe_engagement,
    end_idle_engagements,
    list_engagements,
    reopen_engagement,
    start_engagement,
)
from errors import NotFound, TwoyesError
from logs import hide_tokens
from members import add_member, remove_member
from outbox import retry_mail
from people import add_person
from privacy import anonymise_expired, export_client, forget_client, purge_delivered_mail
from report_pages import render_report_page
from reports import EXPORT_COLUMNS, coach_filter, decision_rows, practice_report, practice_status
from rounds import close_overdue_rounds, open_due_rounds, record_decision, send_reminders
from rules import CHOICES, REASONS
from sessions import plan_session, record_session_done
from terminal import local, render_status, report_lines
from times import utcnow


class Rollback(Exception):
    """Raised inside a transaction to undo it on purpose (--dry-run)."""


def with_app(command):
    """Run the command inside the app, turning domain errors into one clean line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            app = create_app()
        except ConfigError as error:
            raise click.ClickException(f"The configuration is not right: {error}") from error
        with app.app_context():
            try:
                return command(*args, **kwargs)
            except TwoyesError as error:
                raise click.ClickException(str(error)) from error
            except sqlite3.OperationalError as error:
                if "no such table" in str(error):
                    raise click.ClickException(
                        "The database is not set up yet; run `python cli.py init` first."
                    ) from error
                raise click.ClickException(f"The database did not answer: {error}") from error

    return wrapper


class Instant(click.ParamType):
    """An ISO 8601 time; without an offset it is read in the practice's time zone."""

    name = "ISO-TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO time such as 2026-12-09T10:00", param, ctx)


def now_option(command):
    return click.option(
        "--now",
        type=Instant(),
        help="Stand in for the clock (ISO time), for tests or to replay a missed night.",
    )(command)


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)


def the_time(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        return now.replace(tzinfo=current_app.config["ZONE"])
    return now


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


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
cli.add_command(coach_group)
client_group = person_commands("client")
cli.add_command(client_group)


@coach_group.command(name="link")
@click.argument("email")
@now_option
@json_option
@with_app
def coach_link(email, now, as_json):
    """Make a link to a coach's own overview page, good for 24 hours.

    The page shows that coach's engagements, open rounds (with who has not
    decided yet) and report charts, and lets them decide their own open rounds.
    It shows nothing of other coaches. Anyone who has the link can open it until
    it expires: give it to that coach only.

    Example: python cli.py coach link bob@example.org
    """
    link = make_coach_link(get_db(), email, the_time(now))
    url = f"{current_app.config['BASE_URL'].rstrip('/')}/c/{link['token']}"
    if as_json:
        print_json({"url": url, "expires_at": link["expires_at"]})
        return
    zone = current_app.config["ZONE"]
    click.echo(url)
    click.echo(
        f"It opens the overview of {link['coach']['name']} until "
        f"{local(link['expires_at'], zone)} ({zone.key}); give it to them only."
    )


@client_group.command(name="export")
@click.argument("email")
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the JSON to this file (readable only by you) instead of printing it.",
)
@with_app
def client_export(email, output):
    """Answer an access request: all about one client, as JSON.

    Everything twoyes holds about them: their profile, engagements, sessions,
    decisions with notes, the mails sent to them (without links) and the log of
    their answers; nothing of anyone else.

    Example: python cli.py client export anna@example.org --output anna.json
    """
    data = export_client(get_db(), email)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as error:
        raise click.ClickException(f"Cannot write {output}: {error.strerror}.") from error
    click.echo(f"Wrote everything twoyes holds about {data['client']['email']} to {output}.")


@client_group.command(name="forget")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask first (for scripts).")
@json_option
@with_app
def client_forget(email, yes, as_json):
    """Answer an erasure request: forget a client for good.

    Erases their name, address, notes and mails. Their engagements, sessions and
    choices stay as anonymous counts, so reports stay true; every link of theirs
    stops working at once; an engagement they are still in ends for them now.
    Asks first, unless --yes.

    Example: python cli.py client forget anna@example.org --yes
    """
    db = get_db()
    if not yes:
        found = export_client(db, email)  # an unknown address is the first thing to hear
        if not sys.stdin.isatty():
            raise click.ClickException(
                "Forgetting cannot be undone and there is no terminal to ask on; "
                "add --yes to confirm."
            )
        person = found["client"]
        active = ", ".join(str(e["id"]) for e in found["engagements"] if e["status"] == "active")
        ending = f", ending their part in engagement(s) {active}" if active else ""
        click.confirm(
            f"Forget {person['name']} <{person['email']}> (client {person['id']}) for good"
            f"{ending}?",
            abort=True,
        )
    result = forget_client(db, email, utcnow())
    if as_json:
        print_json(result)
        return
    click.echo(
        f"Forgot client {result['client_id']}: name, address and {result['notes_erased']} "
        f"note(s) erased, {result['mails_erased']} mail(s) blanked, "
        f"{result['links_stopped']} link(s) stopped."
    )
    if result["engagements_left"]:
        left = ", ".join(map(str, result["engagements_left"]))
        click.echo(f"They no longer take part in engagement(s) {left}.")
    click.echo(
        "Keep a note of this request (date and address) outside twoyes: after restoring an "
        "older backup, forget them again."
    )


@cli.group()
def engagement():
    """Start, list, show and reopen engagements."""


@engagement.command(name="start")
@click.option("--coach", "coach_email", required=True, help="The coach's e-mail address.")
@click.option(
    "--client",
    "client_emails",
    required=True,
    multiple=True,
    help="A client's address; repeat for a group.",
)
@click.option("--title", help="A short name, such as 'Leadership training'.")
@click.option(
    "--min-members",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Groups: how many members must continue for the group to go on.",
)
@json_option
@with_app
def engagement_start(coach_email, client_emails, title, min_members, as_json):
    """Start an engagement; two or more clients make a group.

    Example: python cli.py engagement start --coach bob@example.org --client anna@example.org
    """
    engagement_id = start_engagement(
        get_db(), coach_email, list(client_emails), utcnow(), title=title, min_members=min_members
    )
    if as_json:
        print_json({"id": engagement_id})
    else:
        click.echo(
            f"Started engagement {engagement_id}. After a session: "
            f"python cli.py session done {engagement_id}"
        )


@engagement.command(name="list")
@click.option("--status", type=click.Choice(["active", "ended"]), help="Only these.")
@json_option
@with_app
def engagement_list(status, as_json):
    """List engagements, newest first, one line each.

    Example: python cli.py engagement list --status active
    """
    rows = list_engagements(get_db(), status)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("No engagements yet." if status is None else f"No {status} engagements.")
    for row in rows:
        state = row["status"] if row["status"] == "active" else f"ended ({row['end_reason']})"
        title = f" {row['title']!r}" if row["title"] else ""
        click.echo(
            f"{row['id']:>4}  {state:<24} {row['coach_name']} with {row['clients'] or 'nobody'}"
            f"{title}, {row['sessions_held']} session(s) held"
        )


@engagement.command(name="show")
@click.argument("engagement_id", type=int)
@json_option
@with_app
def engagement_show(engagement_id, as_json):
    """Show everything about one engagement.

    Example: python cli.py engagement show 1 --json
    """
    data = describe_engagement(get_db(), engagement_id)
    if as_json:
        print_json(data)
        return
    state = data["status"] + (f" ({data['end_reason']})" if data["end_reason"] else "")
    click.echo(f"Engagement {data['id']}{': ' + data['title'] if data['title'] else ''}")
    click.echo(f"  {data['kind']}, {state}")
    click.echo(f"  coach: {data['coach']['name']} <{data['coach']['email']}>")
    for member in data["members"]:
        click.echo(f"  client: {member['name']} <{member['email']}> ({member['status']})")
    for session in data["sessions"]:
        state = "held" if session["round"] else "planned"
        click.echo(f"  session {session['id']} at {session['at']} ({state})")
        if session["round"]:
            round_ = session["round"]
            click.echo(
                f"    round {round_['id']}: {round_['status']}, deadline {round_['deadline']}"
                + (f", outcome {round_['outcome']}" if round_["outcome"] else "")
            )
            for decision in round_["decisions"]:
                click.echo(f"      {decision['party']}: {decision['choice'] or 'undecided'}")


@engagement.command(name="reopen")
@click.argument("engagement_id", type=int)
@with_app
def engagement_reopen(engagement_id):
    """Make an ended engagement active again, for a client who came back.

    Example: python cli.py engagement reopen 1
    """
    reopen_engagement(get_db(), engagement_id, utcnow())
    click.echo(
        f"Engagement {engagement_id} is active again. Plan the next session with "
        f'python cli.py session add {engagement_id} --at "YYYY-MM-DD HH:MM"'
    )


@engagement.command(name="add-member")
@click.argument("engagement_id", type=int)
@click.argument("email")
@now_option
@json_option
@with_app
def engagement_add_member(engagement_id, email, now, as_json):
    """Add a client to a group; they decide from the next round on.

    Example: python cli.py engagement add-member 4 dana@example.org
    """
    result = add_member(get_db(), engagement_id, email, the_time(now))
    if as_json:
        print_json(result)
    else:
        click.echo(
            f"{result['email']} joined engagement {engagement_id}; "
            "they decide from the next round on."
        )


@engagement.command(name="remove-member")
@click.argument("engagement_id", type=int)
@click.argument("email")
@now_option
@json_option
@with_app
def engagement_remove_member(engagement_id, email, now, as_json):
    """Take a client out of a group now; their links in an open round stop working.

    Example: python cli.py engagement remove-member 4 dana@example.org
    """
    result = remove_member(get_db(), engagement_id, email, the_time(now))
    if as_json:
        print_json(result)
        return
    click.echo(f"{result['email']} left engagement {engagement_id}.")
    if result["round_closed"] and result["outcome"] == "continue":
        click.echo("With that, the round closed and the group goes on.")
    elif result["round_closed"]:
        click.echo(f"With that, the round closed and the group ended ({result['end_reason']}).")


@cli.group()
def session():
    """Plan sessions and record the ones that took place."""


@session.command(name="add")
@click.argument("engagement_id", type=int)
@click.option(
    "--at",
    "at",
    required=True,
    type=click.DateTime(["%Y-%m-%d %H:%M"]),
    help="Start, in the practice's time zone: 'YYYY-MM-DD HH:MM'.",
)
@click.option("--minutes", type=click.IntRange(1, 1440), default=60, show_default=True)
@json_option
@with_app
def session_add(engagement_id, at, minutes, as_json):
    """Plan the next session; its round opens at the first tick after it ends.

    Example: python cli.py session add 1 --at "2026-12-09 10:00" --minutes 60
    """
    starts = at.replace(tzinfo=current_app.config["ZONE"])
    session_id = plan_session(get_db(), engagement_id, starts, minutes, utcnow())
    if as_json:
        print_json({"session_id": session_id})
    else:
        click.echo(
            f"Planned session {session_id} of engagement {engagement_id} at {at:%Y-%m-%d %H:%M}."
        )


@session.command(name="done")
@click.argument("engagement_id", type=int)
@click.option(
    "--minutes",
    type=click.IntRange(1, 1440),
    default=60,
    show_default=True,
    help="Length, when no session was planned.",
)
@now_option
@json_option
@with_app
def session_done(engagement_id, minutes, now, as_json):
    """Record that a session just took place and open its round now.

    Example: python cli.py session done 1
    """
    session_id, round_id = record_session_done(
        get_db(), engagement_id, the_time(now), current_app.config["POLICY"], minutes
    )
    if as_json:
        print_json({"session_id": session_id, "round_id": round_id})
    else:
        click.echo(
            f"Recorded session {session_id} and opened round {round_id}; the decision mails are "
            "queued (python cli.py send delivers them)."
        )


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
    return close_overdue_rounds(db, now) + end_idle_engagements(db, now, policy)


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
        "rounds_closed": len(close_overdue_rounds(db, when)),
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


@cli.command()
@click.argument("path", type=click.Path())
@json_option
@with_app
def backup(path, as_json):
    """Copy the database safely, even while it is in use.

    Uses SQLite's online backup, so the web app and cron keep running, and checks
    the copy with PRAGMA integrity_check; the README says how to restore.

    Example: python cli.py backup backups/twoyes-2026-12-09.db
    """
    result = backup_database(get_db(), path)
    if as_json:
        print_json(result)
    else:
        click.echo(
            f"Backed up the database to {result['path']} ({result['bytes']:,} bytes, "
            f"schema version {result['schema_version']}, integrity check ok)."
        )


def coach_option(command):
    return click.option(
        "--coach", "coach_email", help="Only this coach's engagements (their address)."
    )(command)


def scope(db, coach_email: str | None) -> tuple[int | None, dict | None]:
    """The coach named by --coach (id and row), or (None, None) for the whole practice."""
    coach_id = coach_filter(db, coach_email)
    return coach_id, get_coach(db, coach_id) if coach_id else None


@cli.command()
@coach_option
@now_option
@json_option
@with_app
def status(coach_email, now, as_json):
    """Show what needs attention now: open rounds and who has not decided, engagements
    going quiet, mail that failed.

    Deadlines are shown in the practice's time zone.

    Example: python cli.py status --coach bob@example.org
    """
    db = get_db()
    coach_id, coach = scope(db, coach_email)
    when = the_time(now)
    data = practice_status(db, when, current_app.config["POLICY"], coach_id)
    if as_json:
        print_json(data)
        return
    who = f"{coach['name']} <{coach['email']}>" if coach else "the practice"
    text = render_status(data, when, current_app.config["ZONE"], who=who, tty=sys.stdout.isatty())
    click.echo(text, nl=False)


@cli.command()
@coach_option
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    help="Start of the period, YYYY-MM-DD in the practice's time zone (default: a year ago).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Also write the report with charts as one page to open or print (replaces the file).",
)
@json_option
@with_app
def report(coach_email, since, html_path, as_json):
    """Show how engagements went over a period.

    Engagements started and ended, sessions per ended engagement, why they
    ended (a client who can go on alone apart from one who found it not
    useful), the clients' average usefulness by session number, and how many
    decided before the reminder. The --html page speaks the coach's language
    (with --coach) or the practice's.

    Example: python cli.py report --coach bob@example.org --since 2026-01-01 --html report.html
    """
    db = get_db()
    zone = current_app.config["ZONE"]
    coach_id, coach = scope(db, coach_email)
    now = utcnow()
    start = since.replace(tzinfo=zone) if since else now - timedelta(days=365)
    data = practice_report(db, start, coach_id)
    if html_path:
        with force_locale(coach["lang"] if coach else current_app.config["LANGUAGE"]):
            page = render_report_page(
                data, coach_name=coach["name"] if coach else None, since=start, now=now
            )
        try:
            with open(html_path, "w", encoding="utf-8") as file:
                file.write(page)
        except OSError as error:
            raise click.ClickException(f"Cannot write {html_path}: {error.strerror}.") from error
    if as_json:
        print_json(data)
        return
    who = f"{coach['name']} <{coach['email']}>" if coach else "the practice"
    click.echo("\n".join(report_lines(data, who=who, zone=zone)))
    if html_path:
        click.echo(
            f"\nWrote the report with charts to {html_path}: open it in a browser, or print it."
        )


# A cell a spreadsheet would run as a formula (=, +, -, @, or a tab or CR before one).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


@cli.command()
@click.option(
    "--csv", "csv_path", required=True, type=click.Path(dir_okay=False), help="The file to write."
)
@coach_option
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@json_option
@with_app
def export(csv_path, coach_email, force, as_json):
    """Write every decision to a CSV file, one row each, for your own analysis.

    Columns: engagement, session and round, the party (a client's address, or
    coach), choice, reason, usefulness, note and when (UTC). No links or tokens.
    Notes are personal data: the file is readable only by you, and an existing
    file is kept unless --force. A text that a spreadsheet would run as a formula
    gets an apostrophe in front.

    Example: python cli.py export --csv decisions.csv --coach bob@example.org
    """
    coach_id, _ = scope(get_db(), coach_email)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        descriptor = os.open(csv_path, flags, 0o600)
    except FileExistsError as error:
        raise click.ClickException(
            f"{csv_path} exists already; choose another name, or add --force to replace it."
        ) from error
    except OSError as error:
        raise click.ClickException(f"Cannot write {csv_path}: {error.strerror}.") from error
    os.fchmod(descriptor, 0o600)  # a file replaced with --force keeps its old mode otherwise
    count = 0
    with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for row in decision_rows(get_db(), coach_id):
            writer.writerow({key: spreadsheet_safe(value) for key, value in row.items()})
            count += 1
    if as_json:
        print_json({"path": csv_path, "rows": count})
    else:
        click.echo(f"Wrote {count} decision(s) to {csv_path}.")


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
