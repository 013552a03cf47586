"""The settings: defaults, then instance/config.toml, then the TWOYES_ environment, checked once.

Every entry point (the web app, each command, cron, the service units) goes
through `create_app()`, which layers the three sources and hands the result
to `load_settings`. A mistake in a setting is one sentence at start-up, never
a traceback in the middle of a night's cron run. What the rest of the code
reads is one frozen `Settings`, built once: no derived objects pushed back
into a mutable config under string keys.
"""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from limits import parse_many

from twoyes.rules import LANGUAGES, Policy
from twoyes.times import zone

RATE_LIMIT = "30 per minute; 300 per hour"
CONFIG_FILE = "config.toml"

# Every setting a user sets, with its default and one line of meaning: the source of
# `init`'s commented config.toml, of `config`, and of the README's table.
SETTINGS: dict[str, tuple[object, str]] = {
    "DATABASE": (None, "The SQLite file; default: twoyes.db in the instance folder."),
    "BASE_URL": ("http://127.0.0.1:5000", "The address in every link; https:// in production."),
    "SECRET_KEY": (None, "Signs the forms; generated into the instance folder when not set."),
    "PRACTICE_NAME": ("", "The practice's name: heads the privacy page."),
    "PRACTICE_CONTACT": ("", "Where clients ask for a copy or an erasure of their data."),
    "TIMEZONE": ("Europe/Amsterdam", "The practice's time zone: times are shown in it."),
    "LANGUAGE": ("en", "The language of a person added without one: en or nl."),
    "DECISION_DAYS": (7, "Days a round stays open after a session."),
    "REMINDER_DAYS": (2, "Days before the deadline that the undecided get a reminder."),
    "IDLE_DAYS": (60, "Days without a session held or planned before an engagement ends."),
    "MIN_DECISION_SECONDS": (2, "Seconds between showing a form and accepting it (scanners)."),
    "RETENTION_DAYS": (730, "Days after an engagement ends before it is anonymised (>= 30)."),
    "MAIL_SERVER": (
        None,
        "The SMTP server; without one mail waits (or, on a loopback BASE_URL, goes to .eml files).",
    ),
    "MAIL_PORT": (25, "The SMTP port: 587 with MAIL_USE_TLS, 465 with MAIL_USE_SSL."),
    "MAIL_USE_TLS": (False, "STARTTLS on the SMTP connection."),
    "MAIL_USE_SSL": (False, "TLS from the start of the SMTP connection."),
    "MAIL_USERNAME": (None, "The SMTP login."),
    "MAIL_PASSWORD": (None, "The SMTP password."),
    "MAIL_DEFAULT_SENDER": ("twoyes <twoyes@localhost>", "The From of every mail."),
    "MAIL_TIMEOUT": (30, "Seconds to wait for the SMTP server."),
    "MAIL_CA_FILE": (None, "A CA bundle for an SMTP server with a private certificate."),
    "MAIL_MAX_EMAILS": (None, "Mails per SMTP connection before a new one is opened."),
    "PROXIES": (0, "How many reverse proxies set X-Forwarded-For in front of the app."),
    "TOKEN_RATE_LIMIT": (RATE_LIMIT, "Links that do not open and refused forms, per address."),
    "RATELIMIT_STORAGE_URI": ("memory://", "Where the rate limit counts; memory:// per process."),
    "SWEEP_BATCH": (5000, "Overdue rounds closed per transaction by the deadline sweep."),
    "INBOUND_ADDRESS": (
        None,
        "The mailbox replies go to (Reply-To of decision mails); unset: replies reach the coach.",
    ),
    "INBOUND_IMAP_HOST": (None, "The IMAP server of that mailbox; unset: tick reads no mail."),
    "INBOUND_IMAP_PORT": (993, "The IMAP port (TLS from the start)."),
    "INBOUND_IMAP_USERNAME": (None, "The IMAP login of the inbound mailbox."),
    "INBOUND_IMAP_PASSWORD": (None, "The IMAP password of the inbound mailbox."),
    "INBOUND_IMAP_FOLDER": (
        "INBOX",
        "The folder replies arrive in; read ones move to 'processed'.",
    ),
    "INBOUND_IMAP_CA_FILE": (None, "A CA bundle for an IMAP server with a private certificate."),
}
SECRETS = ("SECRET_KEY", "MAIL_PASSWORD", "INBOUND_IMAP_PASSWORD")
# What the template shows, commented out, for a setting that has no default.
EXAMPLES = {
    "DATABASE": "/srv/twoyes/instance/twoyes.db",
    "SECRET_KEY": "a-long-random-string",  # noqa: S105  # nosec B105: an example
    "MAIL_SERVER": "smtp.example.org",
    "MAIL_USERNAME": "practice@example.org",
    "MAIL_PASSWORD": "the-smtp-password",  # noqa: S105  # nosec B105: an example
    "MAIL_CA_FILE": "/etc/ssl/certs/practice-ca.pem",
    "MAIL_MAX_EMAILS": 100,
    "INBOUND_ADDRESS": "replies@example.org",
    "INBOUND_IMAP_HOST": "imap.example.org",
    "INBOUND_IMAP_USERNAME": "replies@example.org",
    "INBOUND_IMAP_PASSWORD": "the-imap-password",  # noqa: S105  # nosec B105: an example
    "INBOUND_IMAP_CA_FILE": "/etc/ssl/certs/practice-ca.pem",
}

# What Flask and Flask-Mail need besides, set by the code, never by a user.
FIXED = {
    "MAIL_SUPPRESS_SEND": False,  # Flask-Mail would otherwise drop mail in testing mode
    "MAX_CONTENT_LENGTH": 64 * 1024,
}

DEFAULTS = {name: default for name, (default, _) in SETTINGS.items() if default is not None}


class ConfigError(Exception):
    """A setting that cannot work; the message names it and says what would."""


@dataclass(frozen=True)
class Settings:
    """The checked settings every part of twoyes reads; built once by `load_settings`."""

    instance_path: str
    database: str
    base_url: str
    secret_key: str
    policy: Policy
    zone: ZoneInfo
    language: str
    min_decision_seconds: float
    retention_days: float
    practice_name: str
    practice_contact: str
    mail_server: str | None
    mail_port: int
    mail_use_tls: bool
    mail_use_ssl: bool
    mail_username: str | None
    mail_password: str | None = field(repr=False)
    mail_default_sender: str
    mail_max_emails: int | None
    mail_timeout: float
    mail_ca_file: str | None
    proxies: int
    token_rate_limit: str
    ratelimit_storage_uri: str
    sweep_batch: int
    inbound_address: str | None = None
    inbound_imap_host: str | None = None
    inbound_imap_port: int = 993
    inbound_imap_username: str | None = None
    inbound_imap_password: str | None = field(default=None, repr=False)
    inbound_imap_folder: str = "INBOX"
    inbound_imap_ca_file: str | None = None

    @property
    def loopback(self) -> bool:
        """Whether BASE_URL names this machine: development, where mail may go to files."""
        return is_loopback(self.base_url)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(config: Mapping, instance_path: str) -> Settings:
    """Check every setting once and return them as one frozen object.

    `config` holds the raw values (defaults, file and environment already
    layered); a missing SECRET_KEY is generated into the instance folder.
    """
    try:
        policy = Policy(
            decision_days=_number(config, "DECISION_DAYS"),
            reminder_days=_number(config, "REMINDER_DAYS"),
            idle_days=_number(config, "IDLE_DAYS"),
        )
        _number(config, "MIN_DECISION_SECONDS")
        _number(config, "MAIL_TIMEOUT")
        if _number(config, "RETENTION_DAYS") < 30:
            # A closed round's links open read-only for 30 days; keep its data as long.
            raise ValueError("TWOYES_RETENTION_DAYS must be at least 30.")
    except ValueError as error:
        raise ConfigError(str(error)) from error
    try:
        parse_many(str(config["TOKEN_RATE_LIMIT"]))
    except ValueError as error:
        raise ConfigError(
            "TWOYES_TOKEN_RATE_LIMIT must read like '30 per minute; 300 per hour'."
        ) from error
    if isinstance(config["PROXIES"], bool) or not isinstance(config["PROXIES"], int):
        raise ConfigError("TWOYES_PROXIES must be a whole number (0 when no proxy).")
    batch = config["SWEEP_BATCH"]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError("TWOYES_SWEEP_BATCH must be a whole number of 1 or more, such as 5000.")
    sender = config["MAIL_DEFAULT_SENDER"]
    if any(end in str(sender) for end in ("\r", "\n")):
        raise ConfigError(
            "TWOYES_MAIL_DEFAULT_SENDER must be one line, such as 'twoyes <a@b.org>'."
        )
    try:
        practice_zone = zone(str(config["TIMEZONE"]))
    except ValueError as error:
        raise ConfigError(f"TWOYES_TIMEZONE: {error}") from error
    if config["LANGUAGE"] not in LANGUAGES:
        raise ConfigError(f"TWOYES_LANGUAGE is {config['LANGUAGE']!r}; use 'en' or 'nl'.")
    if not str(config["BASE_URL"]).startswith(("http://", "https://")):
        raise ConfigError("TWOYES_BASE_URL must start with http:// or https://.")
    if config.get("MAIL_SERVER") and not isinstance(config.get("MAIL_PORT", 25), int):
        raise ConfigError("TWOYES_MAIL_PORT must be a number, such as 587.")
    for flag in ("MAIL_USE_TLS", "MAIL_USE_SSL"):
        if not isinstance(config.get(flag, False), bool):
            raise ConfigError(f"TWOYES_{flag} must be true or false (lowercase).")
    max_emails = config.get("MAIL_MAX_EMAILS") or None
    if max_emails is not None and (
        isinstance(max_emails, bool) or not isinstance(max_emails, int) or max_emails < 1
    ):
        raise ConfigError("TWOYES_MAIL_MAX_EMAILS must be a whole number of 1 or more, like 100.")
    inbound = _inbound_settings(config)
    return Settings(
        instance_path=instance_path,
        database=str(config.get("DATABASE") or os.path.join(instance_path, "twoyes.db")),
        base_url=str(config["BASE_URL"]).rstrip("/"),
        secret_key=config.get("SECRET_KEY") or instance_secret(Path(instance_path)),
        policy=policy,
        zone=practice_zone,
        language=config["LANGUAGE"],
        min_decision_seconds=config["MIN_DECISION_SECONDS"],
        retention_days=config["RETENTION_DAYS"],
        practice_name=str(config.get("PRACTICE_NAME") or "").strip(),
        practice_contact=str(config.get("PRACTICE_CONTACT") or "").strip(),
        mail_server=config.get("MAIL_SERVER") or None,
        mail_port=config.get("MAIL_PORT", 25),
        mail_use_tls=config.get("MAIL_USE_TLS", False),
        mail_use_ssl=config.get("MAIL_USE_SSL", False),
        mail_username=config.get("MAIL_USERNAME") or None,
        mail_password=config.get("MAIL_PASSWORD") or None,
        mail_default_sender=str(sender),
        mail_max_emails=max_emails,
        mail_timeout=config["MAIL_TIMEOUT"],
        mail_ca_file=config.get("MAIL_CA_FILE") or None,
        proxies=config["PROXIES"],
        token_rate_limit=str(config["TOKEN_RATE_LIMIT"]),
        ratelimit_storage_uri=str(config["RATELIMIT_STORAGE_URI"]),
        sweep_batch=batch,
        **inbound,
    )


def _inbound_settings(config: Mapping) -> dict:
    """The inbound mailbox's settings, checked: reading it needs an address, a login and a port."""
    address = str(config.get("INBOUND_ADDRESS") or "").strip() or None
    if address is not None and (
        any(end in address for end in ("\r", "\n")) or "@" not in parseaddr(address)[1]
    ):
        raise ConfigError(
            "TWOYES_INBOUND_ADDRESS must be one address, such as replies@example.org."
        )
    host = config.get("INBOUND_IMAP_HOST") or None
    port = config.get("INBOUND_IMAP_PORT", 993)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError("TWOYES_INBOUND_IMAP_PORT must be a port number, such as 993.")
    if host and address is None:
        raise ConfigError(
            "TWOYES_INBOUND_IMAP_HOST is set but TWOYES_INBOUND_ADDRESS is not: set the address"
            " replies should go to, or no reply would ever reach that mailbox."
        )
    if host and not (config.get("INBOUND_IMAP_USERNAME") and config.get("INBOUND_IMAP_PASSWORD")):
        raise ConfigError(
            "TWOYES_INBOUND_IMAP_HOST needs TWOYES_INBOUND_IMAP_USERNAME and"
            " TWOYES_INBOUND_IMAP_PASSWORD to log in."
        )
    return {
        "inbound_address": address,
        "inbound_imap_host": host,
        "inbound_imap_port": port,
        "inbound_imap_username": config.get("INBOUND_IMAP_USERNAME") or None,
        "inbound_imap_password": config.get("INBOUND_IMAP_PASSWORD") or None,
        "inbound_imap_folder": str(config.get("INBOUND_IMAP_FOLDER") or "INBOX"),
        "inbound_imap_ca_file": config.get("INBOUND_IMAP_CA_FILE") or None,
    }


def _number(config: Mapping, name: str) -> float:
    value = config[name]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"TWOYES_{name} must be a number of 0 or more, not {value!r}.")
    return value


def instance_secret(instance: Path) -> str:
    """The generated SECRET_KEY, made once and readable only by its owner."""
    path = instance / "secret_key"
    if not path.exists():
        instance.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip()


def settings_template() -> str:
    """instance/config.toml as `init` writes it: every setting, commented out at its default."""
    lines = [
        "# twoyes settings, read by the web app, every command and cron alike.",
        "# Uncomment a line to change it; a TWOYES_<NAME> environment variable still wins.",
        "# Strings in double quotes, numbers bare, true/false in lowercase.",
        "",
    ]
    for name, (default, meaning) in SETTINGS.items():
        lines.append(f"# {meaning}")
        if default is None:
            lines.append(f"# {name} = {_toml_value(EXAMPLES[name])}  # not set by default")
        else:
            lines.append(f"# {name} = {_toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_settings_template(instance: Path) -> bool:
    """Make the instance folder private (0700) and write config.toml (0600) if it is missing.

    Returns whether the file was written. An operator's own file is never touched.
    """
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    instance.chmod(0o700)
    try:
        descriptor = os.open(
            instance / CONFIG_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
        )
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(settings_template())
    return True


def masked(name: str, value: object) -> object:
    """A setting's value as `config` shows it: secrets as asterisks."""
    if name in SECRETS and value:
        return "********"
    return value
