"""Delivery: rendering queued mail and handing it to SMTP (or to .eml files) exactly once.

Runs inside the Flask app context: the words come from templates/mail/, the
SMTP settings from Flask-Mail. One SMTP connection per run. Flask-Mail 0.10
has no timeout and does not verify TLS certificates by itself, so the
connection is opened here with both, and each mail is written here too (see
multipart_alternative) and handed to that connection's smtplib.SMTP. A batch is
written one language at a time, then sent in the order it was queued. With no
MAIL_SERVER set, each mail is written to instance/mail/ as an .eml file and its
links are printed, so a newcomer can click through on one machine.
"""

from __future__ import annotations

import functools
import secrets
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy, quoprimime
from email.headerregistry import Address
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import css_inline
import flask_mail
import sqlite_utils
from flask import current_app, render_template
from flask_babel import force_locale, get_translations
from jinja2 import TemplateError

from twoyes.mail.wording import bound_gettext, subject_for
from twoyes.outbox import claim_due_mail, count_waiting, mark_failed_attempt, mark_sent
from twoyes.people import ascii_address

# The modern policy folds a long accented name correctly (Flask-Mail 0.10's legacy one puts
# a space inside it), encodes non-ASCII words (RFC 2047) and refuses CR/LF in any header.
SMTP = policy.SMTP


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Message:
    """One mail as it goes over SMTP: its envelope, its subject (for the log) and its bytes."""

    sender: str
    recipient: str
    subject: str
    data: bytes


class Connection(flask_mail.Connection):
    """Flask-Mail's connection with a timeout and verified TLS, sending mail written here."""

    def configure_host(self) -> smtplib.SMTP:
        settings = current_app.extensions["twoyes"]
        context = ssl.create_default_context(cafile=settings.mail_ca_file)
        timeout = settings.mail_timeout
        host: smtplib.SMTP
        if self.mail.use_ssl:
            host = smtplib.SMTP_SSL(
                self.mail.server, self.mail.port, timeout=timeout, context=context
            )
        else:
            host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=timeout)
        if self.mail.use_tls:
            host.starttls(context=context)
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host

    def send(self, message: Message) -> None:  # type: ignore[override]
        """Hand one mail to the server; returns once the server accepted it.

        Flask-Mail's own send would put the message together a second time.
        """
        if self.host is None:  # MAIL_SUPPRESS_SEND: Flask-Mail counts it as sent
            return
        self.host.sendmail(message.sender, [message.recipient], message.data)
        self.num_emails += 1
        if self.num_emails == self.mail.max_emails:
            self.num_emails = 0
            self.host.quit()
            self.host = self.configure_host()


class Writer:
    """Writes outbox rows as mails; what is the same for every mail of a run is done once."""

    def __init__(self) -> None:
        settings = current_app.extensions["twoyes"]
        sender = current_app.extensions["mail"].default_sender
        if isinstance(sender, tuple):
            sender = Address(display_name=sender[0], addr_spec=sender[1])
        self.from_header = header("From", sender)
        address = sender.addr_spec if isinstance(sender, Address) else parseaddr(sender)[1]
        self.sender = address
        self.domain = address.rpartition("@")[2] or urlsplit(settings.base_url).hostname or "twoyes"
        self.base_url = settings.base_url

    def links_of(self, mail: dict) -> dict[str, str]:
        """The links a mail carries, built from its tokens and BASE_URL."""
        context = mail["context"]
        links = {}
        if context.get("decide_token"):
            token = context["decide_token"]
            links["continue"] = f"{self.base_url}/d/{token}/continue"
            links["stop"] = f"{self.base_url}/d/{token}/stop"
            links["page"] = f"{self.base_url}/d/{token}"
        if context.get("welcome_back_token"):
            links["welcome_back"] = f"{self.base_url}/b/{context['welcome_back_token']}"
        return links

    def write(self, mail: dict, gettexts: dict) -> Message:
        """The full mail, text and HTML, in the language force_locale set; `gettexts` are
        that language's (language.bound_gettext).

        ValueError (or a subclass) when a header cannot be written, e.g. CR/LF in a name.
        """
        context = mail["context"]
        values = context | {
            "links": self.links_of(mail),
            "kind": mail["kind"],
            "facts": context,
            **gettexts,  # what the templates' _() and {% trans %} call
        }
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
        if mail["reply_to_email"]:
            reply_to = smtp_address(mail["reply_to_email"])
            head.append(address_header("Reply-To", mail["reply_to_name"], reply_to))
        head.append(f"Date: {format_datetime(datetime.now(UTC))}\r\n")
        head.append(header("Message-ID", f"<{mail['message_id']}@{self.domain}>"))
        return Message(self.sender, recipient, subject, multipart_alternative(head, text, html))


def header(name: str, value: str | Address) -> str:
    """One header, folded and ending in CRLF, written the way EmailMessage writes it."""
    return SMTP.fold(*SMTP.header_store_parse(name, value))


# The modern policy parses every header it writes, and most mails of a run share their
# subject and reply to one of a few coaches: so each of these is written once.
@functools.lru_cache(maxsize=1024)
def subject_header(subject: str) -> str:
    return header("Subject", subject)


@functools.lru_cache(maxsize=4096)
def address_header(name: str, display_name: str, address: str) -> str:
    return header(name, Address(display_name=display_name, addr_spec=address))


def multipart_alternative(head: list[str], text: str, html: str) -> bytes:
    """The whole mail: its headers, then the text and the HTML as alternatives, in UTF-8.

    The same shape EmailMessage gives set_content(text) plus add_alternative(html), each
    part quoted-printable, so no line is too long for SMTP. Written here because building
    and flattening an EmailMessage (as Flask-Mail's Message does) took about half of the
    time of a send run: it parses every header it is given and folds it again.
    """
    # "=_" never occurs in quoted-printable, so no part can contain the boundary (RFC 2045).
    boundary = f"=_{secrets.token_hex(12)}"
    return "".join(
        [
            *head,
            "MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n',
            f"\r\n--{boundary}\r\n",
            'Content-Type: text/plain; charset="utf-8"\r\n',
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(text),
            f"\r\n--{boundary}\r\n",
            'Content-Type: text/html; charset="utf-8"\r\n',
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(html),
            f"\r\n--{boundary}--\r\n",
        ]
    ).encode("ascii")


def quoted_printable(text: str) -> str:
    """The body as EmailMessage.set_content(text, cte="quoted-printable") writes it."""
    lines = text.encode("utf-8").splitlines()
    body = b"\n".join(lines).decode("latin-1") + "\n"
    return quoprimime.body_encode(body, SMTP.max_line_length, eol="\r\n")


@functools.lru_cache(maxsize=4096)
def smtp_address(address: str) -> str:
    """ascii_address, remembered: most mails of a run reply to a handful of coaches."""
    return ascii_address(address)


def deliver_due_mail(
    db: sqlite_utils.Database, now: datetime, echo: Callable[[str], None] = print
) -> DeliveryReport:
    """Deliver every mail that is due; each one is marked sent only once it was accepted."""
    report = DeliveryReport()
    if current_app.extensions["twoyes"].mail_server:
        _deliver_over_smtp(db, now, report)
    else:
        _deliver_to_files(db, now, report, echo)
    report.waiting = count_waiting(db)
    return report


def _deliver_to_files(db, now, report, echo) -> None:
    folder = Path(current_app.extensions["twoyes"].instance_path) / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    writer = Writer()
    while batch := claim_due_mail(db, now):
        for mail, message in write_batch(db, batch, now, report, writer):
            path = folder / f"{mail['id']:06d}-{mail['kind']}.eml"
            path.write_bytes(message.data)
            links = writer.links_of(mail)  # before mark_sent wipes the tokens
            # Marked first: a reader who closes our stdout (| head) must not leave it 'sending'.
            mark_sent(db, mail, now)
            report.sent += 1
            echo(f"Mail {mail['id']} to {mail['to_name']} <{mail['to_email']}>: {message.subject}")
            echo(f"  saved as {path}")
            for name, url in links.items():
                echo(f"  {name}: {url}")


def _deliver_over_smtp(db, now, report) -> None:
    batch = claim_due_mail(db, now)
    if not batch:
        return
    writer = Writer()
    try:
        connection = Connection(current_app.extensions["mail"]).__enter__()
    except (OSError, smtplib.SMTPException) as error:
        _give_back(db, batch, now, report, f"could not reach the mail server: {error}")
        return
    try:
        while batch:
            written = write_batch(db, batch, now, report, writer)
            for position, (mail, message) in enumerate(written):
                try:
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
        try:
            connection.__exit__(None, None, None)
        except (OSError, smtplib.SMTPException):
            pass  # the server hung up first; everything it accepted is marked sent already


def write_batch(db, batch, now, report, writer: Writer) -> list[tuple[dict, Message]]:
    """Each mail of the batch with its message, in the batch's order and its reader's language.

    The language is set once for all the batch's mails in it, not once a mail. A mail that
    cannot be written fails for good: it must not hold up the others in every later run.
    """
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


def _failed(db, mail, now, report, error: str, *, permanent: bool = False) -> None:
    status = mark_failed_attempt(db, mail, now, error, permanent=permanent)
    if status == "failed":
        report.failed += 1
        report.errors.append(f"mail {mail['id']} to {mail['to_email']} failed for good: {error}")
    else:
        report.retrying += 1
        report.errors.append(f"mail {mail['id']} to {mail['to_email']} will be retried: {error}")


def _give_back(db, mails, now, report, error: str) -> None:
    for mail in mails:
        _failed(db, mail, now, report, error)
