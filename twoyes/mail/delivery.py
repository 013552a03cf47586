"""Delivery: rendering queued mail and handing it to SMTP (or, in development, to .eml files).

Runs inside the Flask app context: the words come from templates/mail/, the
SMTP settings from the app's `Settings`. One SMTP connection a run (a new one
after MAIL_MAX_EMAILS mails), opened here with smtplib, a timeout and
verified TLS; each mail's bytes are written by mime.py. A batch is written
one language at a time, then sent in the order it was queued. A mail is
marked sent only once the server accepted it.

With no MAIL_SERVER, where mail goes depends on BASE_URL. On a loopback
address (development), each mail is written to instance/mail/ as an .eml
file and its links are printed, so a newcomer can click through on one
machine. Every run removes the files whose mail is spent (retention.py): a
decision or reminder mail's once its round closed, every one once its mail
was blanked, so no file keeps a link or a name longer than the database does.
On any other address nothing is delivered and nothing is claimed:
the mail stays queued, untried, until a mail server is set, and the report
says so, because a production instance that writes its clients' mail to
files loses it without a word.
"""

from __future__ import annotations

import contextlib
import functools
import os
import smtplib
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import css_inline
import sqlite_utils
from flask import current_app, render_template
from flask_babel import force_locale, get_translations
from jinja2 import TemplateError

from twoyes.db import transaction
from twoyes.mail.mime import (
    address_header,
    header,
    multipart_alternative,
    multipart_with_calendar,
    subject_header,
)
from twoyes.mail.wording import bound_gettext, calendar_of, subject_for
from twoyes.outbox import (
    claim_due_mail,
    count_waiting,
    mark_failed_attempt,
    mark_handed,
    mark_sent,
)
from twoyes.people import ascii_address
from twoyes.retention import find_spent_mail
from twoyes.settings import Settings
from twoyes.tokens import open_links


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)
    # No MAIL_SERVER on a BASE_URL that is not loopback: nothing was delivered or tried.
    no_mail_server: bool = False


@dataclass(frozen=True)
class Message:
    """One mail as it goes over SMTP: its envelope, its subject (for the log) and its bytes."""

    sender: str
    recipient: str
    subject: str
    data: bytes


def open_smtp(settings: Settings) -> smtplib.SMTP:
    """A connection to the mail server, logged in when a login is set.

    TLS (MAIL_USE_SSL from the start, or MAIL_USE_TLS by STARTTLS) verifies the
    server's certificate against the system's CAs, or MAIL_CA_FILE; every wait
    ends after MAIL_TIMEOUT seconds. OSError or smtplib.SMTPException when the
    server cannot be reached, its certificate does not verify, or the login fails.
    """
    server, port, timeout = settings.mail_server, settings.mail_port, settings.mail_timeout
    context = None
    if settings.mail_use_ssl or settings.mail_use_tls:
        # Loading the system's CAs takes 75 ms a run: only where TLS will use them.
        context = ssl.create_default_context(cafile=settings.mail_ca_file)
    host: smtplib.SMTP
    if settings.mail_use_ssl:
        host = smtplib.SMTP_SSL(server, port, timeout=timeout, context=context)
    else:
        host = smtplib.SMTP(server, port, timeout=timeout)
    try:
        if settings.mail_use_tls:
            host.starttls(context=context)
        if settings.mail_username and settings.mail_password:
            host.login(settings.mail_username, settings.mail_password)
    except (OSError, smtplib.SMTPException):
        host.close()
        raise
    return host


def close_smtp(host: smtplib.SMTP) -> None:
    """Say goodbye to the server; a server that hung up first has nothing left to lose."""
    try:
        host.quit()
    except (OSError, smtplib.SMTPException):
        host.close()


class Connection:
    """One run's SMTP connection: after MAIL_MAX_EMAILS mails the next mail gets a new one.

    The new connection is opened before the next mail, not right after the last one:
    a mail the server accepted must never look lost because the reconnect failed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host: smtplib.SMTP | None = open_smtp(settings)
        self.sent = 0

    def send(self, message: Message) -> None:
        """Hand one mail to the server; returns once the server accepted it."""
        if self.host is None:
            self.host = open_smtp(self.settings)
        self.host.sendmail(message.sender, [message.recipient], message.data)
        self.sent += 1
        if self.settings.mail_max_emails and self.sent % self.settings.mail_max_emails == 0:
            host, self.host = self.host, None
            close_smtp(host)

    def close(self) -> None:
        if self.host is not None:
            close_smtp(self.host)
            self.host = None


class Writer:
    """Writes outbox rows as mails; what is the same for every mail of a run is done once."""

    def __init__(self, settings: Settings) -> None:
        self.from_header = header("From", settings.mail_default_sender)
        self.sender = address = parseaddr(settings.mail_default_sender)[1]
        self.domain = address.rpartition("@")[2] or urlsplit(settings.base_url).hostname or "twoyes"
        self.base_url = settings.base_url
        # Where a reply to a mail with links goes when the practice reads replies (replies.py).
        self.inbound = parseaddr(settings.inbound_address or "")[1] or None
        self.secret_key = settings.secret_key

    @staticmethod
    def tokens_of(mail: dict) -> dict[str, str]:
        """The raw tokens of a mail's links (made by tokens.open_links), and those of mail
        queued before version 6, which kept them raw in its context."""
        context = mail["context"]
        queued_raw = {key: value for key, value in context.items() if key.endswith("_token")}
        return queued_raw | mail.get("tokens", {})

    def links_of(self, tokens: dict[str, str]) -> dict[str, str]:
        """The links a mail carries, built from its tokens (tokens_of) and BASE_URL."""
        links = {}
        if tokens.get("decide_token"):
            token = tokens["decide_token"]
            links["continue"] = f"{self.base_url}/d/{token}/continue"
            links["stop"] = f"{self.base_url}/d/{token}/stop"
            links["page"] = f"{self.base_url}/d/{token}"
        if tokens.get("welcome_back_token"):
            links["welcome_back"] = f"{self.base_url}/b/{tokens['welcome_back_token']}"
        if tokens.get("coach_view_token"):
            links["overview"] = f"{self.base_url}/c/{tokens['coach_view_token']}"
        return links

    def write(self, mail: dict, gettexts: dict) -> Message:
        """The full mail, text and HTML, in the language force_locale set; `gettexts` are
        that language's (language.bound_gettext).

        ValueError (or a subclass) when a header cannot be written, e.g. CR/LF in a name.
        """
        context = mail["context"]
        tokens = self.tokens_of(mail)
        values = (
            context
            | tokens
            | {
                "links": self.links_of(tokens),
                "kind": mail["kind"],
                "facts": context,
                "answer_by_reply": bool(self.inbound and tokens.get("decide_token")),
                **gettexts,  # what the templates' _() and {% trans %} call
            }
        )
        subject = subject_for(mail["kind"], context)
        text = render_template(f"mail/{mail['kind']}.txt", **values)
        # Mail clients (Gmail, Outlook) drop <style>: every rule goes onto its element.
        html = css_inline.inline(
            render_template(f"mail/{mail['kind']}.html", subject=subject, **values)
        )
        recipient = smtp_address(mail["to_email"])
        if not recipient.isascii():
            # Refused here, not halfway through the SMTP conversation of this mail.
            raise ValueError(f"{recipient!r} cannot be carried without SMTPUTF8")
        head = [
            subject_header(subject),
            self.from_header,
            address_header("To", mail["to_name"], recipient),
        ]
        if values["answer_by_reply"]:
            # A reply to a mail with links is read by twoyes; anything it cannot read still
            # reaches the coach, forwarded.
            head.append(address_header("Reply-To", mail["reply_to_name"] or "", self.inbound))
        elif mail["reply_to_email"]:
            reply_to = smtp_address(mail["reply_to_email"])
            head.append(address_header("Reply-To", mail["reply_to_name"], reply_to))
        head.append(f"Date: {format_datetime(datetime.now(UTC))}\r\n")
        head.append(header("Message-ID", f"<{mail['message_id']}@{self.domain}>"))
        # RFC 3834: a machine wrote this, so most out-of-office responders stay quiet.
        head.append("Auto-Submitted: auto-generated\r\n")
        calendar = calendar_of(mail)
        if calendar is None:
            return Message(self.sender, recipient, subject, multipart_alternative(head, text, html))
        data = multipart_with_calendar(head, text, html, calendar, context["method"])
        return Message(self.sender, recipient, subject, data)


@functools.lru_cache(maxsize=4096)
def smtp_address(address: str) -> str:
    """ascii_address, remembered: most mails of a run reply to a handful of coaches."""
    return ascii_address(address)


def deliver_due_mail(
    db: sqlite_utils.Database, now: datetime, echo: Callable[[str], None] = print
) -> DeliveryReport:
    """Deliver every mail that is due; each one is marked sent only once it was accepted.

    Without a mail server, only a loopback BASE_URL writes .eml files; on any
    other, nothing is claimed or tried and the report says `no_mail_server`.
    """
    settings = current_app.extensions["twoyes"]
    report = DeliveryReport()
    remove_spent_files(db, Path(settings.instance_path) / "mail")
    if settings.mail_server:
        _deliver_over_smtp(db, now, report, settings)
    elif lacks_mail_server(settings):
        report.no_mail_server = True
    else:
        _deliver_to_files(db, now, report, settings, echo)
    report.waiting = count_waiting(db)
    return report


def lacks_mail_server(settings: Settings) -> bool:
    """Whether mail cannot go anywhere: no MAIL_SERVER, and a BASE_URL that is not loopback."""
    return not settings.mail_server and not settings.loopback


def _deliver_to_files(db, now, report, settings: Settings, echo) -> None:
    folder = Path(settings.instance_path) / "mail"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # also when someone made the folder before us: the mails are personal
    writer = Writer(settings)
    while batch := claim_due_mail(db, now):
        for mail, message in write_batch(db, batch, now, report, writer):
            path = folder / f"{mail['id']:06d}-{mail['kind']}.eml"
            write_private(path, message.data)
            links = writer.links_of(writer.tokens_of(mail))  # before mark_sent wipes them
            # Marked first: a reader who closes our stdout (| head) must not leave it 'sending'.
            mark_sent(db, mail, now)
            report.sent += 1
            echo(f"Mail {mail['id']} to {mail['to_name']} <{mail['to_email']}>: {message.subject}")
            echo(f"  saved as {path}")
            for name, url in links.items():
                echo(f"  {name}: {url}")


def remove_spent_files(db: sqlite_utils.Database, folder: Path) -> None:
    """Remove development's .eml files of mails that are spent (retention.find_spent_mail),
    and of mails a database started afresh never sent; any other file stays."""
    files: dict[int, list[Path]] = {}
    for path in folder.glob("*.eml") if folder.is_dir() else ():
        number = path.name.partition("-")[0]
        if number.isdigit():
            files.setdefault(int(number), []).append(path)
    for mail_id in find_spent_mail(db, list(files)):
        for path in files[mail_id]:
            path.unlink(missing_ok=True)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (0600), replacing any file of that name.

    The bytes go to a new file (mkstemp makes it 0600), renamed over the target: never
    written through a link, and never with an old file's mode (a database started
    afresh numbers its mails from 1 again).
    """
    descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def _deliver_over_smtp(db, now, report, settings: Settings) -> None:
    batch = claim_due_mail(db, now)
    if not batch:
        return
    writer = Writer(settings)
    try:
        connection = Connection(settings)
    except (OSError, smtplib.SMTPException) as error:
        error_text = f"could not reach the mail server: {error}"
        _give_back(db, batch, now, report, error_text, unreached=True)
        return
    try:
        while batch:
            written = write_batch(db, batch, now, report, writer)
            for position, (mail, message) in enumerate(written):
                try:
                    mark_handed(db, mail, now)
                    connection.send(message)
                except smtplib.SMTPRecipientsRefused as error:
                    code, answer = next(iter(error.recipients.values()))
                    _failed(db, mail, now, report, f"{code} {answer!r}", permanent=code >= 500)
                except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as error:
                    _failed(
                        db,
                        mail,
                        now,
                        report,
                        f"{error.smtp_code} {error.smtp_error!r}",
                        permanent=error.smtp_code >= 500,
                    )
                except (UnicodeError, ValueError) as error:
                    # This mail cannot be put into SMTP at all; the others go on.
                    _failed(db, mail, now, report, f"cannot be sent: {error!r}", permanent=True)
                except (OSError, smtplib.SMTPException) as error:
                    # The connection broke: this mail and the rest wait for a later run.
                    waiting = [mail for mail, _ in written[position:]]
                    _give_back(db, waiting, now, report, f"connection lost: {error}")
                    return
                else:
                    mark_sent(db, mail, now)
                    report.sent += 1
            batch = claim_due_mail(db, now)
    finally:
        # A server that hung up first loses nothing: what it accepted is marked sent already.
        connection.close()


def write_batch(db, batch, now, report, writer: Writer) -> list[tuple[dict, Message]]:
    """Each mail of the batch with its message, in the batch's order and its reader's language.

    The language is set once for all the batch's mails in it, not once a mail. A mail that
    cannot be written fails for good: it must not hold up the others in every later run.
    The links' tokens are made here, from SECRET_KEY, and open from now on.
    """
    with transaction(db):
        open_links(db, batch, writer.secret_key)
    written = {}
    for lang in sorted({mail["lang"] for mail in batch}):
        with force_locale(lang):
            gettexts = bound_gettext(get_translations())
            for mail in batch:
                if mail["lang"] != lang:
                    continue
                try:
                    written[mail["id"]] = writer.write(mail, gettexts)
                except (TemplateError, KeyError, ValueError, TypeError) as error:
                    error_text = f"could not be written: {error!r}"
                    _failed(db, mail, now, report, error_text, permanent=True)
    return [(mail, written[mail["id"]]) for mail in batch if mail["id"] in written]


def _failed(db, mail, now, report, error: str, **how: bool) -> None:
    status = mark_failed_attempt(db, mail, now, error, **how)
    if status == "failed":
        report.failed += 1
        report.errors.append(f"mail {mail['id']} to {mail['to_email']} failed for good: {error}")
    else:
        report.retrying += 1
        report.errors.append(f"mail {mail['id']} to {mail['to_email']} will be retried: {error}")


def _give_back(db, mails, now, report, error: str, *, unreached: bool = False) -> None:
    for mail in mails:
        _failed(db, mail, now, report, error, unreached=unreached)
