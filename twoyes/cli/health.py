"""The operator's view of an installation: `config` (what is set, and where) and `check` (does
it work: settings, database, files, catalogues, mail server, address).

`check` changes nothing and sends nothing unless asked (`--send-test`), so it
is safe to run on a live server at any time, and after every upgrade.
"""

from __future__ import annotations

import http.client
import json
import smtplib
import sqlite3
import ssl
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import click
from flask import Flask

from twoyes import db as database
from twoyes.catalogues import TRANSLATIONS, stale_catalogues
from twoyes.cli.options import json_option, print_json
from twoyes.errors import Invalid
from twoyes.mail.delivery import close_smtp, open_smtp
from twoyes.people import ascii_address, normalise_email
from twoyes.settings import SETTINGS, ConfigError, is_loopback, masked
from twoyes.web import create_app


def load_app() -> Flask:
    try:
        return create_app()
    except ConfigError as error:
        raise click.ClickException(f"The configuration is not right: {error}") from error


@click.command()
@json_option
def config(as_json):
    """Show the effective settings and where each came from (secrets masked).

    A setting comes from its default, from instance/config.toml (file), or from
    a TWOYES_ environment variable, which wins over the file.

    Example: python cli.py config
    """
    app = load_app()
    sources = app.extensions["twoyes_sources"]
    rows = [
        {
            "name": name,
            "value": masked(name, app.config.get(name)),
            "source": sources.get(name, "default"),
        }
        for name in SETTINGS
    ]
    if as_json:
        print_json({"settings_file": str(app.extensions["twoyes_settings_file"]), "settings": rows})
        return
    click.echo(f"Settings file: {app.extensions['twoyes_settings_file']}")
    width = max(len(name) for name in SETTINGS)
    for row in rows:
        value = "(not set)" if row["value"] in (None, "") else json.dumps(row["value"])
        click.echo(f"{row['name']:<{width}}  {value}  [{row['source']}]")


@dataclass
class Result:
    check: str
    ok: bool
    message: str


@click.command()
@click.option("--send-test", "send_test", metavar="ADDRESS", help="Also send one test mail there.")
@click.option("--url", "fetch_url", is_flag=True, help="Also fetch BASE_URL/healthz.")
@json_option
def check(send_test, fetch_url, as_json):
    """Check that this installation can work: one line per check, exit 1 when one fails.

    Checks the settings, the database (opens, passes quick_check, current
    schema), that the instance folder and its files are private, the secret
    key, the compiled translations for the languages people use, the mail
    server (it answers, TLS verifies, the login is accepted; nothing is sent
    without --send-test), the inbound mailbox when INBOUND_IMAP_HOST is set (the
    same, and its folder; nothing is read) and that BASE_URL is https unless it is
    this machine.

    Example: python cli.py check --send-test me@example.org --url
    """
    if send_test is not None:
        try:
            send_test = normalise_email(send_test)
        except Invalid as error:
            raise click.ClickException(str(error)) from error
    try:
        app = create_app()
    except ConfigError as error:
        results = [Result("settings", False, str(error))]
    else:
        with app.app_context():
            results = run_checks(app, send_test=send_test, fetch_url=fetch_url)
    if as_json:
        print_json([vars(result) for result in results])
    else:
        for result in results:
            click.echo(f"{'ok  ' if result.ok else 'FAIL'}  {result.check}: {result.message}")
    if not all(result.ok for result in results):
        raise SystemExit(1)


def run_checks(app: Flask, *, send_test: str | None, fetch_url: bool) -> list[Result]:
    settings = app.extensions["twoyes"]
    sources = app.extensions["twoyes_sources"]
    results = [Result("settings", True, f"valid ({app.extensions['twoyes_settings_file']})")]
    languages = set()
    results.append(check_database(settings.database, languages))
    results.append(check_files(Path(settings.instance_path)))
    results.append(check_secret(Path(settings.instance_path), sources))
    results.append(check_catalogues(languages))
    results.append(check_mail_server(app, send_test))
    if settings.inbound_imap_host:
        results.append(check_inbound_mailbox(settings))
    results.append(check_base_url(settings.base_url))
    if fetch_url:
        results.append(check_health_page(settings.base_url))
    return results


def check_inbound_mailbox(settings) -> Result:
    """The replies mailbox answers, its TLS verifies, the login and its folder work."""
    from twoyes.mail.inbound import InboundError, check_mailbox

    try:
        return Result("inbound mailbox", True, check_mailbox(settings))
    except InboundError as error:
        return Result("inbound mailbox", False, str(error))


def check_database(path: str, languages: set) -> Result:
    """Opens, passes quick_check and has the current schema; gathers the languages in use."""
    if not Path(path).exists():
        return Result("database", False, f"{path} does not exist; run `python cli.py init`.")
    try:
        db = database.get_db(path)
        verdict = db.conn.execute("PRAGMA quick_check").fetchone()[0]
        version = database.schema_version(db)
        if verdict == "ok" and version == database.SCHEMA_VERSION:
            languages.update(
                row[0]
                for row in db.conn.execute(
                    "SELECT lang FROM coaches UNION SELECT lang FROM clients"
                )
            )
    except sqlite3.Error as error:
        return Result("database", False, f"{path} cannot be read: {error}.")
    if verdict != "ok":
        return Result("database", False, f"{path} is damaged: {verdict}. Restore a backup.")
    if version != database.SCHEMA_VERSION:
        return Result(
            "database",
            False,
            f"{path} has schema version {version}, this twoyes needs "
            f"{database.SCHEMA_VERSION}; run `python cli.py init` to upgrade it.",
        )
    return Result("database", True, f"{path} (schema version {version}, quick_check ok)")


def check_files(instance: Path) -> Result:
    """The instance folder 0700, and nothing in it readable or writable by anyone else."""
    if not instance.is_dir():
        return Result("files", False, f"{instance} does not exist; run `python cli.py init`.")
    open_to_others = [
        str(path)
        for path in [instance, *instance.rglob("*")]
        if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    if open_to_others:
        shown = ", ".join(open_to_others[:3]) + (" ..." if len(open_to_others) > 3 else "")
        return Result(
            "files",
            False,
            f"readable by other users: {shown}; run `chmod -R go= {instance}`.",
        )
    return Result("files", True, f"{instance} and everything in it are private to their owner")


def check_secret(instance: Path, sources: dict) -> Result:
    if sources.get("SECRET_KEY") in ("file", "environment", "test"):
        return Result("secret key", True, f"set ({sources['SECRET_KEY']})")
    if (instance / "secret_key").is_file():
        return Result("secret key", True, f"generated in {instance / 'secret_key'}")
    return Result("secret key", False, "missing; run `python cli.py init`.")


def check_catalogues(languages: set) -> Result:
    """English needs no catalogue (the code's sentences are English); every other one does."""
    needed = sorted(languages - {"en"})
    stale = set(stale_catalogues()) & set(needed)
    missing = [lang for lang in needed if not (TRANSLATIONS / lang).is_dir()]
    if stale or missing:
        return Result(
            "translations",
            False,
            f"not compiled or out of date for {', '.join(sorted(stale | set(missing)))}; "
            "run `make translations`.",
        )
    used = ", ".join(sorted(languages)) or "none yet"
    return Result("translations", True, f"current for the languages people use ({used})")


def check_mail_server(app: Flask, send_test: str | None) -> Result:
    """Connect, verify TLS and log in as delivery would; send one mail only with --send-test."""
    settings = app.extensions["twoyes"]
    if not settings.mail_server:
        if settings.loopback:
            return Result(
                "mail server",
                True,
                "none: mail is written to instance/mail/*.eml (development, BASE_URL is local)",
            )
        return Result(
            "mail server",
            False,
            "MAIL_SERVER is not set, so no mail can go out; set it in instance/config.toml.",
        )
    host, port = settings.mail_server, settings.mail_port
    where = f"{host}:{port}"
    try:
        # The very connection delivery opens: same TLS, same CA file, same login.
        smtp = open_smtp(settings)
        try:
            smtp.noop()
            if send_test:
                smtp.send_message(test_message(app, send_test))
        finally:
            close_smtp(smtp)
    except ssl.SSLError as error:
        return Result("mail server", False, f"{where}: TLS does not verify ({error.reason}).")
    except smtplib.SMTPAuthenticationError as error:
        return Result("mail server", False, f"{where}: the login was refused ({error.smtp_code}).")
    except smtplib.SMTPRecipientsRefused:
        return Result("mail server", False, f"{where}: the test address {send_test} was refused.")
    except (OSError, smtplib.SMTPException) as error:
        return Result("mail server", False, f"{where} does not answer as it should: {error}.")
    encrypted = settings.mail_use_ssl or settings.mail_use_tls or is_loopback(f"smtp://{host}")
    if not encrypted:
        return Result(
            "mail server",
            False,
            f"{where} answers, but without TLS; set MAIL_USE_TLS (587) or MAIL_USE_SSL (465).",
        )
    sent = f"; a test mail went to {send_test}" if send_test else ""
    login = " and accepts the login" if settings.mail_username else ""
    return Result("mail server", True, f"{where} answers{login}{sent}")


def test_message(app: Flask, address: str) -> EmailMessage:
    message = EmailMessage()
    sender = app.extensions["mail"].default_sender
    message["From"] = sender if isinstance(sender, str) else f"{sender[0]} <{sender[1]}>"
    message["To"] = ascii_address(address)
    message["Subject"] = "twoyes: a test mail"
    message["Message-ID"] = make_msgid(domain="twoyes.invalid")
    message.set_content(
        "This is a test from `python cli.py check --send-test`.\n"
        "If you read this, twoyes can send mail to your clients.\n"
    )
    return message


def check_base_url(base_url: str) -> Result:
    if base_url.startswith("https://") or is_loopback(base_url):
        return Result("base url", True, base_url)
    return Result(
        "base url",
        False,
        f"{base_url} is not https: links with secret tokens would travel in the clear.",
    )


def check_health_page(base_url: str) -> Result:
    url = f"{base_url}/healthz"
    try:
        # BASE_URL was checked to be http:// or https:// at start-up.
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310  # nosec B310
            body = json.loads(answer.read())
    except (OSError, ValueError, http.client.HTTPException) as error:
        return Result("health page", False, f"{url} does not answer: {error}.")
    if body.get("status") != "ok":
        return Result("health page", False, f"{url} answers {body}.")
    return Result("health page", True, f"{url} answers ok")
