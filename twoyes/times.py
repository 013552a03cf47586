"""Instants in UTC for storage, and the practice's time zone for people.

Stored instants are ISO 8601 text in UTC with seconds and offset, so that
SQLite compares them correctly as text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_db(moment: datetime) -> str:
    """The stored form of an aware instant."""
    if moment.tzinfo is None:
        raise ValueError("naive datetimes are not stored; give a time zone")
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def from_db(text: str) -> datetime:
    return datetime.fromisoformat(text)


def db_time_after(moment: datetime, *, days: float = 0, seconds: float = 0) -> str:
    """The stored form of the instant that long after `moment` (a deadline, an expiry)."""
    return to_db(moment + timedelta(days=days, seconds=seconds))


def zone(name: str) -> ZoneInfo:
    """The named time zone, or ValueError with a sentence for a bad setting."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{name!r} is not a time zone name (try 'Europe/Amsterdam').") from error


def parse_local(text: str, tz: ZoneInfo) -> datetime:
    """Read "YYYY-MM-DD HH:MM" (or any ISO form) as the practice's wall clock.

    A text with its own offset keeps it; a naive one is read in `tz`.
    """
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment


def format_local(moment: datetime | str, pattern: str, tz: ZoneInfo, locale: str) -> str:
    """An instant (aware, or as stored) on the practice's wall clock, in a reader's words.

    The one date formatter of pages, mails and the command line: `pattern` is a
    CLDR pattern ("EEEE d MMMM 'at' HH:mm"), `locale` the reader's language.
    Babel is called directly: Flask-Babel's format_datetime looks locale and
    zone up again each time, four times the cost.
    """
    if isinstance(moment, str):
        moment = from_db(moment)
    return format_datetime(moment, pattern, tzinfo=tz, locale=locale)
