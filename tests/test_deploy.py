"""The deployment kit in deploy/, used as the README's "Run it for real" uses it.

There is no systemd running here to start the units, so systemd's own tools check them
and their commands are run for real. `systemd-analyze verify` reads every line of every
unit; an unknown key or a bad value is only a warning with exit status 0, so any output
at all fails the test. It also needs each ExecStart's program to exist (the user
`twoyes` and the folders need not), so the units are rendered first: /srv/twoyes and
/var/backups/twoyes are moved under the test's own folder, where a copy of the
repository stands as `git clone` would leave it and `.venv` is a link to the
virtualenv running the tests. Nothing else in a unit changes.

The slow test deploys for real on 127.0.0.1: that copy with an instance folder and its
config.toml (BASE_URL https, PROXIES = 1, a real SMTP server), gunicorn started with
twoyes-web.service's own command line and reporting ready the systemd way, Debian's
Caddy in front with `tls internal` and a config rendered from deploy/Caddyfile,
twoyes-tick.service's command sending the mail, and clients deciding over HTTPS from
addresses of their own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from support import ROOT, Inbox, free_port, html_of, serve_smtp, text_of, token_of

from twoyes.settings import SETTINGS

DEPLOY = ROOT / "deploy"
SERVICES = ["twoyes-web.service", "twoyes-tick.service", "twoyes-backup.service"]
TIMERS = ["twoyes-tick.timer", "twoyes-backup.timer"]
# The places the units name; a test moves them under its own folder.
PLACES = ("/srv/twoyes", "/var/backups/twoyes")
# What a clone holds that a server does not run from (and what only a checkout has).
NOT_DEPLOYED = (".git", ".venv", "instance", "__pycache__", ".*_cache", ".hypothesis")
NOT_DEPLOYED += ("test-artifacts", "tests", "bench")
URL = re.compile(r"""https?://[^\s"'<>]+""")

# gunicorn, Caddy and systemd units started for real.
pytestmark = pytest.mark.slow


# -- the units, read and rendered ---------------------------------------------------------


def read_unit(text: str) -> dict[str, list[str]]:
    """A unit file's settings: each key with its values in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def unit(name: str) -> dict[str, list[str]]:
    return read_unit((DEPLOY / name).read_text())


def render(text: str, root: Path) -> str:
    """A unit or config with the places it names moved under `root`."""
    for place in PLACES:
        text = text.replace(place, f"{root}{place}")
    return text


def lay_out_server(root: Path, *, with_code: bool) -> Path:
    """/srv/twoyes and /var/backups/twoyes under `root`, as the README's steps leave them."""
    srv = root / "srv" / "twoyes"
    if with_code:
        shutil.copytree(ROOT, srv, ignore=shutil.ignore_patterns(*NOT_DEPLOYED))
    else:
        srv.mkdir(parents=True)
    (srv / ".venv").symlink_to(sys.prefix)
    (root / "var" / "backups" / "twoyes").mkdir(parents=True, mode=0o700)
    return srv


def service_command(root: Path, name: str) -> dict:
    """How systemd would start a service: its command line, folder and umask, rendered."""
    settings = read_unit(render((DEPLOY / name).read_text(), root))
    (command,) = settings["ExecStart"]
    (folder,) = settings["WorkingDirectory"]
    (umask,) = settings["UMask"]
    return {"args": shlex.split(command), "cwd": folder, "umask": int(umask, 8)}


def plain_environment(**extra: str) -> dict[str, str]:
    """The environment without any TWOYES_ setting: on the server they come from the file."""
    kept = {key: value for key, value in os.environ.items() if not key.startswith("TWOYES_")}
    return kept | extra


def run_service(root: Path, name: str) -> subprocess.CompletedProcess:
    """A oneshot service's command, started the way its unit says."""
    how = service_command(root, name)
    return subprocess.run(  # noqa: S603 (the unit's own command line)
        how["args"],
        cwd=how["cwd"],
        umask=how["umask"],
        env=plain_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the units, checked by systemd's tools ------------------------------------------------


def test_the_units_pass_systemd_analyze_verify(tmp_path):
    lay_out_server(tmp_path, with_code=False)
    rendered = tmp_path / "units"
    rendered.mkdir()
    for name in SERVICES + TIMERS:
        (rendered / name).write_text(render((DEPLOY / name).read_text(), tmp_path))
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *sorted(rendered.iterdir())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_every_service_is_sealed_off_as_systemd_rates_it(tmp_path):
    # systemd's own rating of what a service could reach, from 0 to 10: a unit without any
    # of these settings rates 9.2 ("UNSAFE"); ours stay at 2.0 or below.
    lay_out_server(tmp_path, with_code=False)
    for name in SERVICES:
        path = tmp_path / name
        path.write_text(render((DEPLOY / name).read_text(), tmp_path))
        rated = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", "--threshold=20", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert rated.returncode == 0, rated.stdout[-400:] + rated.stderr
        assert re.search(r"Overall exposure level for \S+: [0-2]\.\d (OK|SAFE)", rated.stdout)


def test_every_service_runs_as_its_own_user_and_writes_only_where_it_must():
    for name in SERVICES:
        settings = unit(name)
        assert settings["User"] == ["twoyes"] and settings["Group"] == ["twoyes"], name
        assert settings["WorkingDirectory"] == ["/srv/twoyes"], name
        assert settings["UMask"] == ["0077"], name
        assert settings["ProtectSystem"] == ["strict"], name
        assert settings["NoNewPrivileges"] == ["yes"], name
        assert settings["PrivateTmp"] == ["yes"], name
        (writable,) = settings["ReadWritePaths"]
        assert writable.split()[0] == "/srv/twoyes/instance", name
    assert unit("twoyes-backup.service")["ReadWritePaths"] == [
        "/srv/twoyes/instance /var/backups/twoyes"
    ]
    web = unit("twoyes-web.service")
    assert web["Restart"] == ["on-failure"]
    assert web["Type"] == ["notify"]  # gunicorn says when it listens; the slow test checks
    (command,) = web["ExecStart"]
    args = shlex.split(command)
    assert args[:3] == [
        "/srv/twoyes/.venv/bin/gunicorn",
        "--config",
        "/srv/twoyes/gunicorn.conf.py",
    ]
    assert args[-1] == "app:create_app()"
    assert unit("twoyes-tick.service")["ExecStart"] == ["/srv/twoyes/.venv/bin/python cli.py tick"]
    assert unit("twoyes-backup.service")["ExecStart"] == [
        "/srv/twoyes/.venv/bin/python cli.py backup --into /var/backups/twoyes --keep 14"
    ]


def elapses(spec: str, count: int) -> list[datetime]:
    """When systemd would run a timer with this OnCalendar next, in UTC."""
    shown = subprocess.run(
        ["systemd-analyze", "calendar", f"--iterations={count}", spec],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=plain_environment(TZ="UTC"),
    ).stdout
    moments = re.findall(
        r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", shown
    )
    return [datetime.fromisoformat(moment) for moment in moments]


def test_the_timers_run_tick_every_five_minutes_and_a_backup_every_night():
    for name, every in [
        ("twoyes-tick", timedelta(minutes=5)),
        ("twoyes-backup", timedelta(days=1)),
    ]:
        timer = unit(f"{name}.timer")
        assert timer["Persistent"] == ["true"], name  # a run missed while off comes at boot
        assert "Unit" not in timer and (DEPLOY / f"{name}.service").exists()
        (spec,) = timer["OnCalendar"]
        moments = elapses(spec, 4)
        assert len(moments) == 4
        assert {later - earlier for earlier, later in pairwise(moments)} == {every}
    tick = elapses(unit("twoyes-tick.timer")["OnCalendar"][0], 1)[0]
    assert tick.minute % 5 == 0 and tick.second == 0


def test_both_proxies_pass_requests_to_where_gunicorn_listens(tmp_path):
    bind = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["bind"]
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.findall(r"reverse_proxy (\S+)", caddyfile) == [bind]
    assert re.findall(r"proxy_pass http://([^;/]+);", nginx) == [bind]
    # One proxy, and the address the request came from, never what the client claims.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in nginx
    assert "access_log off;" in nginx
    assert not re.search(r"^\s*log\b", caddyfile.split("twoyes.example.org {")[1], re.M)
    checked = subprocess.run(
        ["caddy", "validate", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=plain_environment(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data")),
    )
    assert checked.returncode == 0, checked.stderr[-600:]
    assert "Valid configuration" in checked.stdout + checked.stderr


# -- deployed for real --------------------------------------------------------------------


@contextlib.contextmanager
def started(args: list[str], log: Path, **options):
    """A server process for the length of the block; stopped as systemd's KillMode=mixed
    stops a service: SIGTERM to the process, then SIGKILL to its whole group."""
    with log.open("w") as output:
        process = subprocess.Popen(  # noqa: S603 (the unit's command line, or Caddy's)
            args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **options
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


@contextlib.contextmanager
def web_service(root: Path, port: int, log: Path):
    """gunicorn as twoyes-web.service starts it (Type=notify): ready when it says READY=1.

    Only the port differs from production, through GUNICORN_CMD_ARGS (gunicorn reads it
    over gunicorn.conf.py): the test may not take 127.0.0.1:8000 on a shared machine.
    """
    how = service_command(root, "twoyes-web.service")
    notify = root / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(0.5)
        environment = plain_environment(
            NOTIFY_SOCKET=str(notify), GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}"
        )
        with started(
            how["args"], log, cwd=how["cwd"], umask=how["umask"], env=environment
        ) as process:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "no READY=1 from gunicorn"
                try:
                    message = listener.recv(4096).decode()
                except TimeoutError:
                    continue
                if "READY=1" in message.splitlines():
                    break
            yield process


def render_caddyfile(port: int, http_port: int, upstream: int, data: Path) -> str:
    """deploy/Caddyfile for this test: the site on https://127.0.0.1:port with a certificate
    from Caddy's own CA, gunicorn on its test port, and everything Caddy keeps in `data`."""
    text = (DEPLOY / "Caddyfile").read_text()
    assert text.count("\n{\n") == 1 and text.count("twoyes.example.org {") == 1
    # Caddy's admin API, its trust store installation and its port 80 are not the test's.
    text = text.replace(
        "\n{\n",
        f"\n{{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\thttp_port {http_port}\n"
        f"\thttps_port {port}\n\tauto_https disable_redirects\n\tskip_install_trust\n"
        f"\tstorage file_system {data}\n",
    )
    text = text.replace("twoyes.example.org {", f"https://127.0.0.1:{port} {{\n\ttls internal")
    return text.replace("reverse_proxy 127.0.0.1:8000", f"reverse_proxy 127.0.0.1:{upstream}")


def https(base_url: str, cafile: Path, method: str, path: str, *, source: str, **options):
    """One request over HTTPS, trusting only Caddy's own root, from the address `source`."""
    split = urlsplit(base_url)
    context = ssl.create_default_context(cafile=str(cafile))
    connection = http.client.HTTPSConnection(
        split.hostname, split.port, context=context, timeout=30, source_address=(source, 0)
    )
    try:
        connection.request(method, path, **options)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read().decode()
    finally:
        connection.close()


class PostForm(HTMLParser):
    """The page's POST form as a browser sends it: action, fields with their values, buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: dict[str, str] = {}  # value -> name
        self.inside = False
        self.select: str | None = None
        self.options: list[tuple[str, bool]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("method") == "post":
            self.action, self.inside = attrs["action"], True
        if not self.inside:
            return
        if tag == "input" and attrs.get("type") in ("radio", "checkbox"):
            if "checked" in attrs:
                self.fields[attrs["name"]] = attrs.get("value", "on")
        elif tag in ("input", "textarea"):
            self.fields[attrs["name"]] = attrs.get("value", "")
        elif tag == "select":
            self.select, self.options = attrs["name"], []
        elif tag == "option":
            self.options.append((attrs.get("value", ""), "selected" in attrs))
        elif tag == "button":
            self.buttons[attrs["value"]] = attrs["name"]

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select" and self.select:
            chosen = [value for value, selected in self.options if selected]
            self.fields[self.select] = (chosen or [self.options[0][0]])[0]
            self.select = None


def decide(base_url, cafile, link, choice, *, source, claimed):
    """A client opens the link from the mail, reads, and presses `choice`.

    The request says X-Forwarded-For: `claimed`, which a proxy must not believe.
    """
    path = urlsplit(link).path
    status, _, page = https(
        base_url, cafile, "GET", path, source=source, headers={"X-Forwarded-For": claimed}
    )
    assert status == 200, page
    form = PostForm()
    form.feed(page)
    assert form.action and form.buttons[choice] == "choice", page
    time.sleep(SETTINGS["MIN_DECISION_SECONDS"][0] + 0.2)  # the default: a person reads first
    body = form.fields | {"usefulness": "8", "choice": choice}
    status, headers, page = https(
        base_url,
        cafile,
        "POST",
        form.action,
        source=source,
        body=urlencode(body),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Forwarded-For": claimed,
        },
    )
    assert status == 303, page
    page_path = f"/d/{token_of(link)}"  # where a decision leads: the party's own page
    assert headers["Location"] in (page_path, base_url + page_path)
    status, _, page = https(base_url, cafile, "GET", page_path, source=source)
    recorded = {
        "continue": "Recorded: you would like another session.",
        "stop": "Recorded: you have what you need for now.",
    }
    assert status == 200 and recorded[choice] in page, page


def links_everywhere(messages) -> list[str]:
    """Every address in every mail, in its text and its HTML alike."""
    found = []
    for message in messages:
        found += URL.findall(text_of(message)) + URL.findall(html_of(message))
    return found


def as_operator(srv: Path, *args: str) -> str:
    """`.venv/bin/python cli.py ...` in /srv/twoyes, with no setting in the environment."""
    done = subprocess.run(  # noqa: S603 (our own command line)
        [str(srv / ".venv" / "bin" / "python"), "cli.py", *args],
        cwd=srv,
        env=plain_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@contextlib.contextmanager
def caddy_in_front(folder: Path, port: int, upstream: int, log: Path):
    """Debian's Caddy with deploy/Caddyfile rendered for the test; yields its root certificate."""
    folder.mkdir()
    (folder / "Caddyfile").write_text(
        render_caddyfile(port, free_port(), upstream, folder / "data")
    )
    command = ["caddy", "run", "--config", str(folder / "Caddyfile"), "--adapter", "caddyfile"]
    environment = plain_environment(
        HOME=str(folder),
        XDG_DATA_HOME=str(folder / "xdg-data"),
        XDG_CONFIG_HOME=str(folder / "xdg-config"),
    )
    with started(command, log, cwd=folder, env=environment) as caddy:
        yield caddy, folder / "data" / "pki" / "authorities" / "local" / "root.crt"


def wait_for_health(base_url: str, cafile: Path, servers: dict) -> dict:
    """/healthz over HTTPS once it answers 200; its headers. `servers`: process -> its log."""
    deadline = time.monotonic() + 60
    while True:
        for process, log in servers.items():
            assert process.poll() is None, log.read_text()[-2000:]
        try:
            status, headers, body = https(base_url, cafile, "GET", "/healthz", source="127.0.0.1")
            if status == 200:
                assert json.loads(body) == {"status": "ok", "database": "ok"}
                return headers
        except (OSError, ssl.SSLError):
            pass  # Caddy not listening yet, or its certificate not made yet
        assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in servers.values()]
        time.sleep(0.2)


def ips_in_event_log(database: Path) -> list[str]:
    connection = sqlite3.connect(database)
    try:
        rows = connection.execute(
            "SELECT json_extract(detail, '$.ip') FROM events"
            " WHERE json_extract(detail, '$.ip') IS NOT NULL ORDER BY id"
        ).fetchall()
    finally:
        connection.close()
    return [ip for (ip,) in rows]


@pytest.mark.slow
def test_twoyes_deployed_behind_caddy_serves_clients_over_https(tmp_path):
    root = tmp_path / "server"
    srv = lay_out_server(root, with_code=True)
    port, upstream = free_port(), free_port()
    base_url = f"https://127.0.0.1:{port}"
    gunicorn_log, caddy_log = tmp_path / "gunicorn.log", tmp_path / "caddy.log"

    with serve_smtp(Inbox()) as smtp, contextlib.ExitStack() as servers:
        # The operator's steps: the settings file, init, the practice's people, a session.
        instance = srv / "instance"
        instance.mkdir(mode=0o700)
        (instance / "config.toml").write_text(
            f'BASE_URL = "{base_url}"\n'
            "PROXIES = 1\n"
            'MAIL_SERVER = "127.0.0.1"\n'
            f"MAIL_PORT = {smtp.port}\n"
            'MAIL_DEFAULT_SENDER = "Practice <practice@example.org>"\n'
        )
        (instance / "config.toml").chmod(0o600)
        as_operator(srv, "init")
        as_operator(srv, "coach", "add", "Bob Coach", "bob@example.org")
        as_operator(srv, "client", "add", "Anna de Vries", "anna@example.org")
        start = "engagement start --coach bob@example.org --client anna@example.org --json"
        engagement = json.loads(as_operator(srv, *start.split()))
        as_operator(srv, "session", "done", str(engagement["id"]))

        web = servers.enter_context(web_service(root, upstream, gunicorn_log))
        caddy, cafile = servers.enter_context(
            caddy_in_front(tmp_path / "caddy", port, upstream, caddy_log)
        )
        headers = wait_for_health(base_url, cafile, {web: gunicorn_log, caddy: caddy_log})
        assert headers["Strict-Transport-Security"] == "max-age=31536000"

        # The timer's service sends the start's welcome (Anna) and confirmation (Bob), and
        # the round's mails.
        ticked = run_service(root, "twoyes-tick.service")
        assert ticked.returncode == 0, ticked.stderr
        assert len(smtp.messages) == 4
        asked = [message for message in smtp.messages if message["Subject"] == "Another session?"]
        assert sorted(message["To"] for message in asked) == [
            "Anna de Vries <anna@example.org>",
            "Bob Coach <bob@example.org>",
        ]

        # Each decides from an address of their own, and claims another one.
        anna, bob = sorted(asked, key=lambda message: message["To"])
        for message, source in [(anna, "127.0.0.2"), (bob, "127.0.0.3")]:
            link = next(link for link in URL.findall(text_of(message)) if "/continue" in link)
            decide(base_url, cafile, link, "continue", source=source, claimed="203.0.113.66")
        assert ips_in_event_log(instance / "twoyes.db") == ["127.0.0.2", "127.0.0.3"]

        # Both said continue: the next tick sends the outcome to both.
        ticked = run_service(root, "twoyes-tick.service")
        assert ticked.returncode == 0, ticked.stderr
        assert len(smtp.messages) == 6
        links = links_everywhere(smtp.messages)
        assert len(links) >= 8 and all(link.startswith(base_url + "/") for link in links), links

        # The nightly backup, as its service takes it.
        backed_up = run_service(root, "twoyes-backup.service")
        assert backed_up.returncode == 0, backed_up.stderr
        (copy,) = (root / "var" / "backups" / "twoyes").iterdir()
        assert re.fullmatch(r"twoyes-\d{4}-\d\d-\d\dT\d{6}Z\.db", copy.name)
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600

        # gunicorn stops on SIGTERM, as systemd stops it; Caddy then answers 502 and logs
        # its trouble without the path that holds the token.
        # Every link's token: a decision's, a welcome back's, and the coach's overview links.
        tokens = set(re.findall(r"/[dbc]/([A-Za-z0-9_-]{43})", " ".join(links)))
        web.terminate()
        assert web.wait(timeout=30) == 0
        status, _, _ = https(base_url, cafile, "GET", f"/d/{min(tokens)}", source="127.0.0.2")
        assert status == 502

    assert caddy.returncode is not None
    logs = gunicorn_log.read_text() + caddy_log.read_text()
    assert "GET /healthz" in logs and "connection refused" in logs
    assert not [token for token in tokens if token in logs]
