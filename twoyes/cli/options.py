"""What every command shares: the app around it, one clean line for an error, --now, --json.

Like sqlite-utils' shared options: decorators, so that each command stays a
few lines that read its options and call one domain function.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from datetime import datetime

import click
import sqlite_utils
from flask import current_app

from twoyes import db as database
from twoyes.errors import TwoyesError
from twoyes.rules import read_whole_number
from twoyes.settings import ConfigError, Settings
from twoyes.times import utcnow
from twoyes.web import create_app


def settings() -> Settings:
    """The settings of the app the command runs in (see with_app)."""
    return current_app.extensions["twoyes"]


def get_db() -> sqlite_utils.Database:
    """The command's connection to the practice's database."""
    return database.get_db(settings().database)


def with_app(command):
    """Run the command inside the app, turning domain errors into one clean line.

    A command's --now is read here, where the practice's time zone is known: the command
    gets an aware time, the clock's when --now was not given.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            app = create_app()
        except ConfigError as error:
            raise click.ClickException(f"The configuration is not right: {error}") from error
        with app.app_context():
            try:
                if "now" in kwargs:
                    kwargs["now"] = now_or_clock(kwargs["now"])
                return command(*args, **kwargs)
            except TwoyesError as error:
                raise click.ClickException(str(error)) from error
            except OverflowError as error:  # SQLite cannot even look such a number up
                raise click.ClickException(unknown_number()) from error
            except sqlite3.OperationalError as error:
                if "no such table" in str(error):
                    raise click.ClickException(
                        "The database is not set up yet; run `python cli.py init` first."
                    ) from error
                raise click.ClickException(f"The database did not answer: {error}") from error

    return wrapper


# What SQLite stores in an INTEGER column, ids included.
SQLITE_INTEGERS = range(-(2**63), 2**63)


def unknown_number() -> str:
    """The sentence for a number beyond SQLite's integers: no row has it, so it is told apart
    no more than an id that does not exist ("There is no engagement 99...")."""
    for name, value in click.get_current_context().params.items():
        if isinstance(value, int) and value not in SQLITE_INTEGERS:
            return f"There is no {name.removesuffix('_id').replace('_', ' ')} {value}."
    return "That number is larger than any twoyes keeps; nothing was changed."


class WholeNumber(click.IntRange):
    """A whole number in a range, written in the digits 0-9 only (rules.read_whole_number)."""

    name = "integer range"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and read_whole_number(value.strip()) is None:
            self.fail(f"{value!r} is not a whole number written with the digits 0-9.", param, ctx)
        return super().convert(value, param, ctx)


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


def now_or_clock(now: datetime | None) -> datetime:
    """The --now given (read on the practice's wall clock without an offset), or the clock."""
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        return now.replace(tzinfo=settings().zone)
    return now


def print_json(data) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_rows(rows: list[dict], as_json: bool, line, nothing: str) -> None:
    """What a list command prints: the rows as JSON, or `line(row)` for each, or the
    sentence `nothing` when there are none."""
    if as_json:
        print_json(rows)
        return
    for row in rows:
        click.echo(line(row))
    if not rows:
        click.echo(nothing)
