"""Coaches and clients: who they are, how they are reached, in which language.

Addresses are checked for shape (not deliverability: a practice may run
without DNS) and normalised by email-validator; they are unique per role.
Names may not hold control characters, so nothing a coach types can become
a second mail header.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from datetime import datetime

import sqlite_utils
from email_validator import EmailNotValidError, validate_email

from twoyes.db import transaction
from twoyes.errors import N_, Conflict, Invalid, NotFound
from twoyes.events import log_event
from twoyes.rules import LANGUAGES
from twoyes.times import to_db

ROLES = {"coach": "coaches", "client": "clients"}


def normalise_email(address: str) -> str:
    """The address in its normal form, or Invalid with the validator's reason."""
    try:
        # No SMTPUTF8: a local part like zoë@ is refused, as not every server takes it.
        return validate_email(
            address.strip(), check_deliverability=False, allow_smtputf8=False
        ).normalized
    except EmailNotValidError as error:
        raise Invalid(f"{address!r} is not a valid e-mail address: {error}") from error


LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def ascii_address(address: str) -> str:
    """The address as SMTP carries it: an international domain in its xn-- form.

    (Python's own IDNA codec would turn straße.example into strasse.example.)
    """
    try:
        return validate_email(address, check_deliverability=False).ascii_email or address
    except EmailNotValidError:
        return address


def clean_name(name: str) -> str:
    """The name with its spaces tidied; one that could pass for a mail header is refused."""
    if LINE_BREAKS.search(name):
        raise Invalid(N_("A name must fit on one line."))
    if "=?" in name:
        # A mail program would decode "=?utf-8?q?...?=" into words of someone else's choosing.
        raise Invalid(N_("A name cannot contain '=?'."))
    name = " ".join(name.split())
    if not name:
        raise Invalid(N_("A name cannot be empty."))
    if len(name) > 200:
        raise Invalid(N_("A name can be at most 200 characters long."))
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise Invalid(N_("A name cannot contain control characters."))
    return name


def add_person(
    db: sqlite_utils.Database, role: str, name: str, email: str, lang: str, now: datetime
) -> int:
    """Add a coach or a client; the address must be new for that role."""
    table = ROLES[role]
    name, email = clean_name(name), normalise_email(email)
    if lang not in LANGUAGES:
        raise Invalid(f"Language {lang!r} is not supported; choose one of {', '.join(LANGUAGES)}.")
    with transaction(db):
        try:
            cursor = db.conn.execute(
                # The table name comes from ROLES, never from input.
                f"INSERT INTO {table} (name, email, lang, created_at) VALUES (?, ?, ?, ?)",  # nosec B608
                [name, email, lang, to_db(now)],
            )
        except sqlite3.IntegrityError as error:
            raise Conflict(f"There is already a {role} with the address {email}.") from error
        log_event(db, f"{role}_added", now, **{f"{role}_id": cursor.lastrowid})
    return cursor.lastrowid


def get_person_by_email(db: sqlite_utils.Database, role: str, email: str) -> dict:
    # The table name comes from ROLES, never from input.
    sql = f"SELECT * FROM {ROLES[role]} WHERE email = ?"  # nosec B608
    row = db.conn.execute(sql, [email.strip()]).fetchone()
    if row is None:
        row = db.conn.execute(sql, [normalise_email(email)]).fetchone()
    if row is not None and dict(row).get("forgotten_at"):
        row = None  # a forgotten client answers to no address, not even their placeholder
    if row is None:
        raise NotFound(
            f"There is no {role} with the address {email.strip()}; add one with "
            f"`python cli.py {role} add NAME {email.strip()}`."
        )
    return dict(row)
