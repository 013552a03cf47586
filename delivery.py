"""Delivery: rendering queued mail and handing it to SMTP (or to .eml files) exactly once.

Runs inside the Flask app context: the words come from templates/mail/, the
SMTP settings from Flask-Mail. One SMTP connection per run. Flask-Mail 0.10
has no timeout and does not verify TLS certificates by itself, so the
connection is opened here with both. With no MAIL_SERVER set, each mail is
written to instance/mail/ as an .eml file and its links are printed, so a
newcomer can click through on one machine.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import css_inline
import flask_mail
import sqlite_utils
from flask import current_app, render_template
from flask_babel import force_locale
from jinja2 import TemplateError

from language import subject_for
from outbox import claim_due_mail, count_waiting, mark_failed_attempt, mark_sent
from people import ascii_address


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    waiting: int = 0
    errors: list[str] = field(default_factory=list)


class Connection(flask_mail.Connection):
    """Flask-Mail's connection with a timeout and verified TLS."""

    def configure_host(self) -> smtplib.SMTP:
        config = current_app.config
        context = ssl.create_default_context(cafile=config.get("MAIL_CA_FILE") or None)
        timeout = config["MAIL_TIMEOUT"]
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


class Message(flask_mail.Message):
    """Flask-Mail's message, put together with the modern email API.

    Flask-Mail 0.10 pre-encodes names and lets the legacy policy fold them
    again, which puts a space inside a long accented name; the modern
    policy folds correctly, refuses CR/LF in any header, and writes the
    bodies as quoted-printable so no line is too long for SMTP.
    """

    def _message(self) -> EmailMessage:
        message = EmailMessage(policy=policy.SMTP)
        message["Subject"] = self.subject
        message["From"] = as_address(self.sender)
        message["To"] = [as_address(recipient) for recipient in self.recipients]
        if self.reply_to:
            message["Reply-To"] = as_address(self.reply_to)
        message["Date"] = format_datetime(datetime.fromtimestamp(self.date, UTC))
        message["Message-ID"] = self.msgId
        message.set_content(self.body, cte="quoted-printable")
        message.add_alternative(self.html, subtype="html", cte="quoted-printable")
        return message


def as_address(value: str | tuple[str, str]) -> Address | str:
    if isinstance(value, tuple):
        return Address(display_name=value[0], addr_spec=value[1])
    return value


def links_of(mail: dict) -> dict[str, str]:
    """The links a mail carries, built from its tokens and BASE_URL."""
    base = current_app.config["BASE_URL"].rstrip("/")
    context = mail["context"]
    links = {}
    if context.get("decide_token"):
        token = context["decide_token"]
        links["continue"] = f"{base}/d/{token}/continue"
        links["stop"] = f"{base}/d/{token}/stop"
        links["page"] = f"{base}/d/{token}"
    if context.get("welcome_back_token"):
        links["welcome_back"] = f"{base}/b/{context['welcome_back_token']}"
    return links


def build_message(mail: dict) -> flask_mail.Message:
    """The full mail, text and HTML, in the reader's language."""
    with force_locale(mail["lang"]):
        return _build_message(mail)


def _build_message(mail: dict) -> flask_mail.Message:
    context = mail["context"]
    values = context | {"links": links_of(mail), "kind": mail["kind"], "facts": context}
    subject = subject_for(mail["kind"], context)
    message = Message(
        subject=subject,
        recipients=[(mail["to_name"], ascii_address(mail["to_email"]))],
        body=render_template(f"mail/{mail['kind']}.txt", **values),
        # Mail clients (Gmail, Outlook) drop <style>: every rule goes onto its element.
        html=css_inline.inline(
            render_template(f"mail/{mail['kind']}.html", subject=subject, **values)
        ),
        reply_to=(mail["reply_to_name"], ascii_address(mail["reply_to_email"]))
        if mail["reply_to_email"]
        else None,
        charset="utf-8",
        date=time.time(),
    )
    message.msgId = f"<{mail['message_id']}@{message_domain()}>"
    return message


def message_domain() -> str:
    sender = current_app.config.get("MAIL_DEFAULT_SENDER") or ""
    address = parseaddr(sender if isinstance(sender, str) else sender[1])[1]
    return (
        address.rpartition("@")[2] or urlsplit(current_app.config["BASE_URL"]).hostname or "twoyes"
    )


def deliver_due_mail(
    db: sqlite_utils.Database, now: datetime, echo: Callable[[str], None] = print
) -> DeliveryReport:
    """Deliver every mail that is due; each one is marked sent only once it was accepted."""
    report = DeliveryReport()
    if current_app.config.get("MAIL_SERVER"):
        _deliver_over_smtp(db, now, report)
    else:
        _deliver_to_files(db, now, report, echo)
    report.waiting = count_waiting(db)
    return report


def _deliver_to_files(db, now, report, echo) -> None:
    folder = Path(current_app.instance_path) / "mail"
    folder.mkdir(parents=True, exist_ok=True)
    while batch := claim_due_mail(db, now):
        for mail in batch:
            message = render(db, mail, now, report)
            if message is None:
                continue
            path = folder / f"{mail['id']:06d}-{mail['kind']}.eml"
            path.write_bytes(message.as_bytes())
            links = links_of(mail)  # before mark_sent wipes the tokens
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
    try:
        connection = Connection(current_app.extensions["mail"]).__enter__()
    except (OSError, smtplib.SMTPException) as error:
        _give_back(db, batch, now, report, f"could not reach the mail server: {error}")
        return
    try:
        while batch:
            for position, mail in enumerate(batch):
                message = render(db, mail, now, report)
                if message is None:
                    continue
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
                except (UnicodeError, ValueError, flask_mail.BadHeaderError) as error:
                    # This mail cannot be put into SMTP at all; the others go on.
                    _failed(db, mail, now, report, f"cannot be sent: {error!r}", permanent=True)
                except (OSError, smtplib.SMTPException) as error:
                    # The connection broke: this mail and the rest wait for a later run.
                    _give_back(db, batch[position:], now, report, f"connection lost: {error}")
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


def render(db, mail, now, report) -> Message | None:
    """The mail, or None (and the mail failed for good) when it cannot be written.

    One broken mail must not hold up the others in every later run.
    """
    try:
        return build_message(mail)
    except (TemplateError, KeyError, ValueError, TypeError) as error:
        _failed(db, mail, now, report, f"could not be written: {error!r}", permanent=True)
        return None


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
