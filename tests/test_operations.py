"""Running twoyes for real: one settings file for every entry point, private files, `config`,
`check`, compiled catalogues, and files written at paths a person names.

Every command here runs as its own `python cli.py` process with nothing but the instance
folder in its environment, as cron or a systemd unit would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult
from support import ROOT, Inbox, free_port, serve_smtp

from twoyes.catalogues import catalogue_problem, stale_catalogues
from twoyes.settings import SETTINGS

# Each test runs `python cli.py` or the server as the operator would: a process each.
pytestmark = pytest.mark.slow


def twoyes(instance: Path, *args: str, umask: int = 0o022, **environment: str):
    """`python cli.py ARGS` with only the instance folder (and `environment`) set."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TWOYES_") and key != "PYTHONPATH"
    }
    env["TWOYES_INSTANCE_PATH"] = str(instance)
    env.update({f"TWOYES_{key}": value for key, value in environment.items()})
    return subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.umask(umask),  # the operator's usual umask
    )


def write_config(instance: Path, text: str) -> None:
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    (instance / "config.toml").write_text(text)
    (instance / "config.toml").chmod(0o600)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def lines_of(result) -> list[str]:
    return result.stdout.splitlines()


# --- one configuration --------------------------------------------------------------------------


def test_init_writes_a_private_commented_settings_file_and_makes_the_folder_private(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    instance.chmod(0o755)  # as an operator's mkdir leaves it

    first = twoyes(instance, "init")

    assert first.returncode == 0, first.stderr
    settings_file = instance / "config.toml"
    assert f"Wrote the settings file {settings_file}" in first.stdout
    assert mode(instance) == 0o700
    assert mode(settings_file) == 0o600
    text = settings_file.read_text()
    for name, (_, meaning) in SETTINGS.items():
        assert f"# {name} = " in text
        assert meaning in text
    # Uncommenting every setting gives a file that reads: the template teaches the format.
    uncommented = "\n".join(
        line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line
    )
    assert tomllib.loads(uncommented)["DECISION_DAYS"] == 7

    # The operator's own file is never overwritten by a later init.
    write_config(instance, 'PRACTICE_NAME = "Praktijk Zon"\n')
    again = twoyes(instance, "init")
    assert again.returncode == 0, again.stderr
    assert "Wrote the settings file" not in again.stdout
    assert (instance / "config.toml").read_text() == 'PRACTICE_NAME = "Praktijk Zon"\n'


def test_every_command_reads_the_settings_file_and_the_environment_wins(tmp_path):
    instance = tmp_path / "instance"
    write_config(
        instance,
        'DECISION_DAYS = 3\nBASE_URL = "https://coach.example.org"\n'
        'MAIL_PASSWORD = "hunter2-secret"\n',
    )

    shown = twoyes(instance, "config", "--json", REMINDER_DAYS="1")
    plain = twoyes(instance, "config", REMINDER_DAYS="1")

    assert shown.returncode == 0, shown.stderr
    rows = {row["name"]: row for row in json.loads(shown.stdout)["settings"]}
    assert rows["DECISION_DAYS"] == {"name": "DECISION_DAYS", "value": 3, "source": "file"}
    assert rows["BASE_URL"]["value"] == "https://coach.example.org"
    assert rows["REMINDER_DAYS"]["source"] == "environment"
    assert rows["IDLE_DAYS"] == {"name": "IDLE_DAYS", "value": 60, "source": "default"}
    assert rows["MAIL_PASSWORD"] == {"name": "MAIL_PASSWORD", "value": "********", "source": "file"}
    assert rows["SECRET_KEY"]["value"] == "********"
    assert rows["SECRET_KEY"]["source"] == "generated"
    assert "hunter2" not in shown.stdout + plain.stdout
    assert "DECISION_DAYS          3  [file]" in plain.stdout


def test_the_environment_overrides_the_file(tmp_path):
    instance = tmp_path / "instance"
    write_config(instance, "DECISION_DAYS = 3\n")

    shown = twoyes(instance, "config", "--json", DECISION_DAYS="5")

    rows = {row["name"]: row for row in json.loads(shown.stdout)["settings"]}
    assert rows["DECISION_DAYS"] == {"name": "DECISION_DAYS", "value": 5, "source": "environment"}


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("DECISION_DAY = 3\n", "names DECISION_DAY, which is not a setting"),
        ("DECISION_DAYS = \n", "cannot be read"),
        ('DECISION_DAYS = "seven"\n', "TWOYES_DECISION_DAYS must be a number of 0 or more"),
        ('BASE_URL = "coach.example.org"\n', "TWOYES_BASE_URL must start with http://"),
    ],
)
def test_a_broken_settings_file_is_one_sentence_and_changes_nothing(tmp_path, text, sentence):
    instance = tmp_path / "instance"
    write_config(instance, text)

    for command in (["tick"], ["init"], ["status"], ["config"]):
        result = twoyes(instance, *command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert sentence in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(path.name for path in instance.iterdir()) == ["config.toml"]


def test_the_web_app_reads_the_same_file(tmp_path):
    instance = tmp_path / "instance"
    write_config(instance, 'PRACTICE_CONTACT = "privacy@praktijk.example"\nDECISION_DAYS = 3\n')
    assert twoyes(instance, "init").returncode == 0
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOYES_")}
    env["TWOYES_INSTANCE_PATH"] = str(instance)
    server = subprocess.Popen(
        [sys.executable, "cli.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = fetch(f"http://127.0.0.1:{port}/privacy")
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert "privacy@praktijk.example" in page


def fetch(url: str, attempts: int = 100) -> str:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310
                return answer.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


# --- files nobody else reads --------------------------------------------------------------------


def test_every_file_twoyes_makes_is_private_whatever_the_umask(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    instance.chmod(0o755)
    assert twoyes(instance, "init").returncode == 0
    steps = [
        ("coach", "add", "Bob Coach", "bob@example.org"),
        ("client", "add", "Anna de Vries", "anna@example.org"),
        ("engagement", "start", "--coach", "bob@example.org", "--client", "anna@example.org"),
        ("session", "done", "1"),
        ("send",),  # BASE_URL is the loopback default: mail goes to instance/mail/*.eml
    ]
    for step in steps:
        result = twoyes(instance, *step)
        assert result.returncode == 0, (step, result.stderr)
    export = tmp_path / "decisions.csv"
    assert twoyes(instance, "export", "--csv", str(export)).returncode == 0

    made = [instance, *instance.rglob("*"), export]
    names = {path.name for path in made}
    assert {"twoyes.db", "secret_key", "config.toml", "mail"} <= names
    assert any(name.endswith(".eml") for name in names)
    for path in made:
        expected = 0o700 if path.is_dir() else 0o600
        assert mode(path) == expected, (path, oct(mode(path)))


def test_the_database_wal_and_shm_are_private_while_the_app_holds_them(tmp_path):
    instance = tmp_path / "instance"
    assert twoyes(instance, "init").returncode == 0
    # A command holding the database open: its -wal and -shm exist meanwhile.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; sys.path.insert(0, '.');"
            "from twoyes.web import create_app; from twoyes import db;"
            "app = create_app(); d = db.get_db(app.extensions['twoyes'].database);"
            "d.conn.execute('SELECT count(*) FROM coaches').fetchone();"
            "print('ready', flush=True); time.sleep(30)",
        ],
        cwd=ROOT,
        env={**os.environ, "TWOYES_INSTANCE_PATH": str(instance)},
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.umask(0o022),
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        files = {path.name: mode(path) for path in instance.iterdir()}
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()
    assert files["twoyes.db-wal"] == 0o600
    assert files["twoyes.db-shm"] == 0o600
    assert files["twoyes.db"] == 0o600


@pytest.fixture
def practice(tmp_path):
    """An initialised instance with one ended-or-not engagement, for the export commands."""
    instance = tmp_path / "instance"
    assert twoyes(instance, "init").returncode == 0
    for step in (
        ("coach", "add", "Bob Coach", "bob@example.org"),
        ("client", "add", "Anna de Vries", "anna@example.org"),
        ("engagement", "start", "--coach", "bob@example.org", "--client", "anna@example.org"),
    ):
        assert twoyes(instance, *step).returncode == 0
    return instance


WRITERS = {
    "export": lambda path: ("export", "--csv", str(path)),
    "report": lambda path: ("report", "--html", str(path)),
    "client export": lambda path: ("client", "export", "anna@example.org", "--output", str(path)),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_file_at_a_named_path_is_new_or_replaced_never_written_through(
    practice, tmp_path, writer
):
    target = tmp_path / "out.file"
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me")
    elsewhere.chmod(0o644)

    # An existing file, a folder, a symlink: each refused in one sentence, nothing written.
    target.write_text("old")
    target.chmod(0o644)
    existing = twoyes(practice, *WRITERS[writer](target))
    folder = twoyes(practice, *WRITERS[writer](tmp_path))
    link = tmp_path / "link.file"
    link.symlink_to(elsewhere)
    through_link = twoyes(practice, *WRITERS[writer](link))

    assert existing.returncode == 1
    assert existing.stderr.strip() == (
        f"Error: {target} exists already; choose another name, or add --force to replace it."
    )
    assert target.read_text() == "old"
    assert folder.returncode in (1, 2)  # Click's own path type may refuse a folder first
    assert "Traceback" not in folder.stderr
    assert through_link.returncode == 1
    assert "exists already" in through_link.stderr
    assert elsewhere.read_text() == "keep me"

    # With --force the new content replaces the file, private, and a link is replaced, not
    # followed.
    forced = twoyes(practice, *WRITERS[writer](target), "--force")
    forced_link = twoyes(practice, *WRITERS[writer](link), "--force")

    assert forced.returncode == 0, forced.stderr
    assert target.read_text() != "old"
    assert mode(target) == 0o600
    assert forced_link.returncode == 0, forced_link.stderr
    assert not link.is_symlink()
    assert mode(link) == 0o600
    assert elsewhere.read_text() == "keep me"
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


# --- catalogues ---------------------------------------------------------------------------------


def test_a_missing_or_stale_catalogue_is_named(tmp_path):
    messages = tmp_path / "nl" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    source = messages / "messages.po"
    source.write_text('msgid ""\nmsgstr ""\n')
    assert stale_catalogues(tmp_path) == ["nl"]
    compiled = messages / "messages.mo"
    compiled.write_bytes(b"")
    os.utime(compiled, (time.time() + 5, time.time() + 5))
    assert stale_catalogues(tmp_path) == []
    os.utime(source, (time.time() + 10, time.time() + 10))
    assert stale_catalogues(tmp_path) == ["nl"]
    assert "run `make translations`" in catalogue_problem(tmp_path)


def test_a_checkout_without_compiled_catalogues_refuses_to_start(tmp_path):
    """Used without `make`, twoyes would send English to Dutch clients: it says so instead."""
    checkout = tmp_path / "checkout"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    assert not list(checkout.glob("translations/*/LC_MESSAGES/*.mo"))

    result = subprocess.run(
        [sys.executable, "cli.py", "status"],
        cwd=checkout,
        env={**os.environ, "TWOYES_INSTANCE_PATH": str(tmp_path / "instance")},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: The configuration is not right: The translations for nl are not compiled, "
        "or older than their messages.po; run `make translations` (or `make install`) in the "
        "twoyes folder."
    )


# --- check --------------------------------------------------------------------------------------


def checks_of(result) -> dict[str, dict]:
    return {item["check"]: item for item in json.loads(result.stdout)}


def test_check_passes_on_a_sound_installation_and_sends_nothing(tmp_path, smtp):
    instance = tmp_path / "instance"
    write_config(instance, f'MAIL_SERVER = "127.0.0.1"\nMAIL_PORT = {smtp.port}\n')
    assert twoyes(instance, "init").returncode == 0

    result = twoyes(instance, "check")
    as_json = twoyes(instance, "check", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split(":")[0] for line in lines_of(result)] == [
        "ok    settings",
        "ok    database",
        "ok    files",
        "ok    secret key",
        "ok    translations",
        "ok    mail server",
        "ok    base url",
    ]
    assert f"ok    mail server: 127.0.0.1:{smtp.port} answers" in result.stdout
    assert all(item["ok"] for item in checks_of(as_json).values())
    assert smtp.messages == []


def test_check_sends_one_test_mail_when_asked(tmp_path, smtp):
    instance = tmp_path / "instance"
    write_config(instance, f'MAIL_SERVER = "127.0.0.1"\nMAIL_PORT = {smtp.port}\n')
    assert twoyes(instance, "init").returncode == 0

    result = twoyes(instance, "check", "--send-test", "me@example.org")
    malformed = twoyes(instance, "check", "--send-test", "me@@example")

    assert result.returncode == 0, result.stdout
    assert "a test mail went to me@example.org" in result.stdout
    assert [message["To"] for message in smtp.messages] == ["me@example.org"]
    assert "can send mail to your clients" in smtp.messages[0].get_content()
    assert malformed.returncode == 1
    assert "is not a valid e-mail address" in malformed.stderr
    assert len(smtp.messages) == 1


def test_check_names_each_problem_and_exits_1(tmp_path):
    instance = tmp_path / "instance"
    closed_port = free_port()
    write_config(
        instance,
        f'BASE_URL = "http://coach.example.org"\nMAIL_SERVER = "127.0.0.1"\n'
        f"MAIL_PORT = {closed_port}\nMAIL_TIMEOUT = 5\n",
    )
    missing_database = twoyes(instance, "check", "--json")
    assert twoyes(instance, "init").returncode == 0
    (instance / "secret_key").chmod(0o644)

    result = twoyes(instance, "check", "--json")

    assert missing_database.returncode == 1
    assert "run `python cli.py init`" in checks_of(missing_database)["database"]["message"]
    assert result.returncode == 1
    found = checks_of(result)
    assert found["database"]["ok"]
    assert not found["files"]["ok"]
    assert str(instance / "secret_key") in found["files"]["message"]
    assert not found["mail server"]["ok"]
    assert f"127.0.0.1:{closed_port} does not answer" in found["mail server"]["message"]
    assert not found["base url"]["ok"]
    assert "is not https" in found["base url"]["message"]


def test_check_without_a_mail_server_fails_unless_the_base_url_is_local(tmp_path):
    instance = tmp_path / "instance"
    assert twoyes(instance, "init").returncode == 0
    local = twoyes(instance, "check", "--json")
    write_config(instance, 'BASE_URL = "https://coach.example.org"\n')
    production = twoyes(instance, "check", "--json")

    assert local.returncode == 0
    assert ".eml" in checks_of(local)["mail server"]["message"]
    assert production.returncode == 1
    assert checks_of(production)["mail server"]["message"] == (
        "MAIL_SERVER is not set, so no mail can go out; set it in instance/config.toml."
    )
    assert checks_of(production)["base url"]["ok"]


class Login:
    """aiosmtpd's authenticator: one user and password."""

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"practice" and auth_data.password == b"right"
        return AuthResult(success=ok, handled=False)


# A test server on 127.0.0.1: a login without TLS is what this test wants to see.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize(("password", "ok"), [("right", True), ("wrong", False)])
def test_check_logs_in_as_delivery_would(tmp_path, password, ok):
    instance = tmp_path / "instance"
    with serve_smtp(
        Inbox(),
        authenticator=Login(),
        auth_required=True,
        auth_require_tls=False,
    ) as inbox:
        write_config(
            instance,
            f'MAIL_SERVER = "127.0.0.1"\nMAIL_PORT = {inbox.port}\n'
            f'MAIL_USERNAME = "practice"\nMAIL_PASSWORD = "{password}"\n',
        )
        assert twoyes(instance, "init").returncode == 0
        result = twoyes(instance, "check", "--json")
    mail = checks_of(result)["mail server"]
    assert mail["ok"] is ok
    if ok:
        assert mail["message"] == f"127.0.0.1:{inbox.port} answers and accepts the login"
    else:
        assert mail["message"] == f"127.0.0.1:{inbox.port}: the login was refused (535)."


def test_check_refuses_a_tls_certificate_it_cannot_verify(tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir()
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    instance = tmp_path / "instance"
    with serve_smtp(Inbox(), tls_context=context, require_starttls=True) as inbox:
        settings = f'MAIL_SERVER = "127.0.0.1"\nMAIL_PORT = {inbox.port}\nMAIL_USE_TLS = true\n'
        write_config(instance, settings)
        assert twoyes(instance, "init").returncode == 0
        untrusted = twoyes(instance, "check", "--json")
        write_config(instance, settings + f'MAIL_CA_FILE = "{cert}"\n')
        trusted = twoyes(instance, "check", "--json")

    assert "TLS does not verify" in checks_of(untrusted)["mail server"]["message"]
    assert untrusted.returncode == 1
    assert checks_of(trusted)["mail server"]["ok"], trusted.stdout
    assert trusted.returncode == 0


def test_check_url_fetches_the_health_page(tmp_path):
    instance = tmp_path / "instance"
    port = free_port()
    write_config(instance, f'BASE_URL = "http://127.0.0.1:{port}"\n')
    assert twoyes(instance, "init").returncode == 0
    down = twoyes(instance, "check", "--url", "--json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOYES_")}
    server = subprocess.Popen(
        [sys.executable, "cli.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env={**env, "TWOYES_INSTANCE_PATH": str(instance)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        fetch(f"http://127.0.0.1:{port}/healthz")
        up = twoyes(instance, "check", "--url", "--json")
    finally:
        server.terminate()
        server.wait(timeout=10)

    assert down.returncode == 1
    assert "does not answer" in checks_of(down)["health page"]["message"]
    assert up.returncode == 0, up.stdout
    assert checks_of(up)["health page"]["message"] == (
        f"http://127.0.0.1:{port}/healthz answers ok"
    )
