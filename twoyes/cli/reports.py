"""The commands that show the practice to its coaches: status, report, export, coach link.

They only read (a coach link writes its token), so they can run at any time,
next to cron and the web app.
"""

from __future__ import annotations

import csv
import sys
from datetime import timedelta
from pathlib import Path

import click
from flask import render_template
from flask_babel import force_locale, get_locale, gettext

from twoyes.cli.options import get_db, json_option, now_option, print_json, settings, with_app
from twoyes.cli.terminal import local, render_status, report_lines
from twoyes.coach_view import get_coach, make_coach_link
from twoyes.files import open_new_file, write_new_file
from twoyes.mail.delivery import lacks_mail_server
from twoyes.outbox import summarise_waiting
from twoyes.reports import (
    EXPORT_COLUMNS,
    decision_rows,
    get_coach_id,
    practice_report,
    practice_status,
)
from twoyes.settings import CONFIG_FILE
from twoyes.times import utcnow


@click.command(name="link")
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
    link = make_coach_link(get_db(), email, now)
    url = f"{settings().base_url}/c/{link['token']}"
    if as_json:
        print_json({"url": url, "expires_at": link["expires_at"]})
        return
    zone = settings().zone
    click.echo(url)
    click.echo(
        f"It opens the overview of {link['coach']['name']} until "
        f"{local(link['expires_at'], zone)} ({zone.key}); give it to them only."
    )


def coach_option(command):
    return click.option(
        "--coach", "coach_email", help="Only this coach's engagements (their address)."
    )(command)


def get_named_coach(db, coach_email: str | None) -> tuple[int | None, dict | None]:
    """The coach named by --coach (id and row), or (None, None) for the whole practice."""
    coach_id = get_coach_id(db, coach_email)
    return coach_id, get_coach(db, coach_id) if coach_id else None


@click.command()
@coach_option
@now_option
@json_option
@with_app
def status(coach_email, now, as_json):
    """Show what needs attention now: open rounds and who has not decided, engagements
    going quiet, mail that failed, and mail that waits (and why).

    Deadlines are shown in the practice's time zone.

    Example: python cli.py status --coach bob@example.org
    """
    db = get_db()
    coach_id, coach = get_named_coach(db, coach_email)
    data = practice_status(db, now, settings().policy, coach_id)
    data["waiting_mail"] = summarise_waiting(db, coach_id) | {
        "no_mail_server": lacks_mail_server(settings())
    }
    if as_json:
        print_json(data)
        return
    who = f"{coach['name']} <{coach['email']}>" if coach else "the practice"
    text = render_status(
        data,
        now,
        settings().zone,
        who=who,
        config_file=Path(settings().instance_path) / CONFIG_FILE,
        tty=sys.stdout.isatty(),
    )
    click.echo(text, nl=False)


@click.command()
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
    help="Also write the report with charts as one page to open or print.",
)
@click.option("--force", is_flag=True, help="Replace the --html file if it exists.")
@json_option
@with_app
def report(coach_email, since, html_path, force, as_json):
    """Show how engagements went over a period.

    Engagements started and ended, sessions per ended engagement, why they
    ended (a client who can go on alone apart from one who found it not
    useful), the clients' average usefulness by session number, and how many
    decided before the reminder. The --html page speaks the coach's language
    (with --coach) or the practice's.

    Example: python cli.py report --coach bob@example.org --since 2026-01-01 --html report.html
    """
    db = get_db()
    zone = settings().zone
    coach_id, coach = get_named_coach(db, coach_email)
    now = utcnow()
    start = since.replace(tzinfo=zone) if since else now - timedelta(days=365)
    data = practice_report(db, start, coach_id)
    if html_path:
        with force_locale(coach["lang"] if coach else settings().language):
            page = render_report_page(data, coach["name"] if coach else None, start, now)
        write_new_file(html_path, page, force=force)
    if as_json:
        print_json(data)
        return
    who = f"{coach['name']} <{coach['email']}>" if coach else "the practice"
    click.echo("\n".join(report_lines(data, who=who, zone=zone)))
    if html_path:
        click.echo(
            f"\nWrote the report with charts to {html_path}: open it in a browser, or print it."
        )


def render_report_page(report: dict, coach_name: str | None, since, now) -> str:
    """The whole report as one self-contained HTML page (its CSS inlined, charts inline),
    in the language force_locale set."""
    from twoyes.charts import report_charts, report_stylesheet  # pygal: only for --html
    from twoyes.mail.wording import format_date

    heading = (
        gettext("Report for %(name)s", name=coach_name)
        if coach_name
        else gettext("Report for the practice")
    )
    return render_template(
        "report.html",
        heading=heading,
        report=report,
        charts=report_charts(report, gettext, str(get_locale())),
        period_from=format_date(since),
        period_to=format_date(now),
        css=report_stylesheet(),
    )


# A cell a spreadsheet would run as a formula (=, +, -, @, or a tab or CR before one).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


@click.command()
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
    coach_id, _ = get_named_coach(get_db(), coach_email)
    rows = decided = 0
    with open_new_file(csv_path, force=force) as file:
        writer = csv.DictWriter(file, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        for row in decision_rows(get_db(), coach_id):
            writer.writerow({key: spreadsheet_safe(value) for key, value in row.items()})
            rows += 1
            decided += row["choice"] is not None
    if as_json:
        print_json(
            {"path": csv_path, "rows": rows, "decisions": decided, "no_answer": rows - decided}
        )
        return
    # A row is a party of a round; one who never answered has a row without a choice.
    silent = rows - decided
    click.echo(
        f"Wrote {decided} decision{'' if decided == 1 else 's'} to {csv_path}"
        + (
            f", and {silent} row{'' if silent == 1 else 's'} for parties who did not answer."
            if silent
            else "."
        )
    )
