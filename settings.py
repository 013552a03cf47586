"""The settings: defaults, the TWOYES_ environment, and one check of them all at start-up.

A mistake in a setting is one sentence when the app or a command starts,
never a traceback in the middle of a night's cron run.
"""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path

from flask import Flask
from limits import parse_many

from rules import Policy
from times import zone

RATE_LIMIT = "30 per minute; 300 per hour"

DEFAULTS = {
    "BASE_URL": "http://127.0.0.1:5000",
    "DECISION_DAYS": 7,
    "REMINDER_DAYS": 2,
    "IDLE_DAYS": 60,
    "MIN_DECISION_SECONDS": 2,
    "TIMEZONE": "Europe/Amsterdam",
    "LANGUAGE": "en",
    "RETENTION_DAYS": 730,  # after an engagement ends; then it is anonymised (privacy.py)
    "PRACTICE_NAME": "",  # for the privacy page: who keeps the data
    "PRACTICE_CONTACT": "",  # and where to ask for a copy or an erasure
    "MAIL_DEFAULT_SENDER": "twoyes <twoyes@localhost>",
    "MAIL_SUPPRESS_SEND": False,  # Flask-Mail would otherwise drop mail in testing mode
    "MAIL_TIMEOUT": 30,
    "MAIL_CA_FILE": None,
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "TOKEN_RATE_LIMIT": RATE_LIMIT,
    "RATELIMIT_STORAGE_URI": "memory://",  # per process; a shared store: "redis://..."
    "PROXIES": 0,  # how many reverse proxies set X-Forwarded-For in front of the app
    "SWEEP_BATCH": 5000,  # overdue rounds closed per transaction (rounds.close_overdue_rounds)
}


class ConfigError(Exception):
    """A setting that cannot work; the message names it and says what would."""


def load_settings(app: Flask) -> None:
    """Check every setting once, so that a mistake is one sentence at start-up."""
    config = app.config
    config.setdefault("DATABASE", os.path.join(app.instance_path, "twoyes.db"))
    try:
        config["POLICY"] = Policy(
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
    for name in ("PRACTICE_NAME", "PRACTICE_CONTACT"):
        config[name] = str(config[name] or "").strip()
    try:
        config["ZONE"] = zone(str(config["TIMEZONE"]))
    except ValueError as error:
        raise ConfigError(f"TWOYES_TIMEZONE: {error}") from error
    if config["LANGUAGE"] not in ("en", "nl"):
        raise ConfigError(f"TWOYES_LANGUAGE is {config['LANGUAGE']!r}; use 'en' or 'nl'.")
    if not str(config["BASE_URL"]).startswith(("http://", "https://")):
        raise ConfigError("TWOYES_BASE_URL must start with http:// or https://.")
    if config.get("MAIL_SERVER") and not isinstance(config.get("MAIL_PORT", 25), int):
        raise ConfigError("TWOYES_MAIL_PORT must be a number, such as 587.")
    for flag in ("MAIL_USE_TLS", "MAIL_USE_SSL"):
        if not isinstance(config.get(flag, False), bool):
            raise ConfigError(f"TWOYES_{flag} must be true or false (lowercase).")
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = instance_secret(Path(app.instance_path))


def _number(config, name: str) -> float:
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
        instance.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip()
