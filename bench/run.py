"""Measure twoyes against a bare baseline of the same work, in one run on one machine.

Shared 2-core machines are noisy, so only ratios taken in the same run mean
anything: every item runs twoyes and its baseline alternately (twoyes,
baseline, twoyes, ...), takes the median of each, and reports the spread of
the runs as the measure of noise. Nothing here is a test; `make test` never
times anything.

Items (issue 7):
  decision_post    POST /d/<token> under gunicorn (2 sync workers), 16 connections, 10 s
  decision_get     GET /d/<token>, the same way
                   (twoyes and its baseline both under twoyes's gunicorn.conf.py, the access
                   log included: "the same gunicorn", as issue 7 says)
  close_undecided  `cli.py close-undecided` on 10,000 and 100,000 overdue rounds
  send             `cli.py send` of 5,000 queued mails to a local aiosmtpd
  idle_tick        `cli.py tick` on 100,000 engagements with nothing due

Writes bench/results.json and prints a table. Databases live in bench/data/.

Example: .venv/bin/python bench/run.py --only decision_get --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
RESULTS = BENCH / "results.json"
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
PY = sys.executable
SECRET_KEY = "twoyes-bench-secret-not-for-production"
ITEMS = ("decision_post", "decision_get", "close_undecided", "send", "idle_tick")
# The last engagements are kept out of the measured requests: the warm-up uses them.
WARMUP_ENGAGEMENTS = 5_000
SEND_MAILS = 5_000
# Each item's share of the time budget, in seconds: about what 3 runs take on a quiet
# 2-core machine. On a busier one an item stops after fewer runs (at least 1), says so,
# and `make bench` still ends within 10 minutes.
SHARES_S = {
    "decision_post": 90,
    "decision_get": 90,
    "close_undecided_10k": 25,
    "close_undecided_100k": 120,
    "send": 130,
}


# ---------------------------------------------------------------- small helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def copy_database(source: Path, target: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)
    if Path(f"{source}-wal").exists():
        shutil.copyfile(f"{source}-wal", f"{target}-wal")
    return target


def query(path: Path, sql: str, params=()) -> int:
    connection = sqlite3.connect(path, timeout=30)
    try:
        return connection.execute(sql, params).fetchone()[0]
    finally:
        connection.close()


def repetitions(args, key: str, planned: int):
    """Run numbers 1..planned; fewer when the next run would pass the item's time share."""
    started = time.perf_counter()
    for number in range(1, planned + 1):
        if number > 1 and not args.no_budget:
            spent = time.perf_counter() - started
            if spent * number / (number - 1) > SHARES_S[key]:
                log(f"  {key}: {number - 1} run(s), not {planned}, to keep within the time budget")
                return
        yield number


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> float:
    """(max - min) / median, in percent: how much the runs of one figure disagree."""
    middle = median(values)
    return round(100 * (max(values) - min(values)) / middle, 1) if middle else 0.0


def twoyes_env(database: Path, instance: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TWOYES_")}
    env.update(
        TWOYES_DATABASE=str(database),
        TWOYES_INSTANCE_PATH=str(instance),
        TWOYES_SECRET_KEY=SECRET_KEY,
        TWOYES_MIN_DECISION_SECONDS="0",
        # Lift the per-address limit on token pages (all load comes from 127.0.0.1), but
        # keep the limit counting: its cost per request is part of twoyes's.
        TWOYES_TOKEN_RATE_LIMIT="1000000 per minute",
    )
    env.update(extra)
    return env


# Linux counts the RSS a child had before exec (a copy of its parent's) in its ru_maxrss,
# and this driver grows past 100 MB; so a small launcher forks each measured process.
LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"wall_s": time.perf_counter() - started, "status": status,
                  "cpu_s": usage.ru_utime + usage.ru_stime, "peak_kb": usage.ru_maxrss}))
"""


def run_child(command: list[str], env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run a process to its end; its wall time, CPU time and peak RSS (from wait4)."""
    with tempfile.TemporaryFile() as errors:
        launched = subprocess.run(
            [PY, "-c", LAUNCHER, *command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            check=True,
        )
        measured = json.loads(launched.stdout)
        code = os.waitstatus_to_exitcode(measured["status"])
        if code != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(command)} exited {code}: {tail}")
    return {
        "wall_s": measured["wall_s"],
        "cpu_s": measured["cpu_s"],
        "peak_rss_mb": measured["peak_kb"] / 1024,
    }


def generate(path: Path, engagements: int, *, overdue: bool, tokens: Path | None = None):
    command = [PY, str(BENCH / "generate.py"), str(path), "--engagements", str(engagements)]
    if overdue:
        command.append("--overdue")
    if tokens:
        command += ["--tokens", str(tokens)]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- web: servers and load


class Server:
    """One gunicorn (2 sync workers) on 127.0.0.1, serving twoyes or the baseline app."""

    def __init__(self, kind: str, database: Path, instance: Path) -> None:
        self.kind = kind
        self.port = free_port()
        if kind == "twoyes":
            env, chdir, target = twoyes_env(database, instance), ROOT, "app:create_app()"
        else:
            # PYTHONPATH: the shared gunicorn.conf.py imports logs.py from the project.
            env = dict(os.environ, BENCH_DATABASE=str(database), PYTHONPATH=str(ROOT))
            chdir, target = BENCH, "baseline_app:app"
        config = ["--config", str(GUNICORN_CONF)] if GUNICORN_CONF.exists() else []
        command = [
            PY, "-m", "gunicorn", *config, "--workers", "2", "--worker-class", "sync",
            "--bind", f"127.0.0.1:{self.port}", "--chdir", str(chdir),
            "--log-level", "warning", "--backlog", "2048", target,
        ]  # fmt: skip
        # Both run under the same gunicorn, as twoyes is deployed: its gunicorn.conf.py (the
        # access log, when the project has one); the command line's bind and workers win.
        self.log = open(DATA / f"gunicorn-{kind}.log", "ab")  # closed in stop()
        self.process = subprocess.Popen(
            command, env=env, cwd=chdir, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.wait_until_ready()

    def wait_until_ready(self, seconds: float = 60) -> None:
        from urllib.error import URLError
        from urllib.request import urlopen

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn for {self.kind} exited {self.process.returncode}; "
                    f"see bench/data/gunicorn-{self.kind}.log"
                )
            try:
                with urlopen(f"{self.url}/healthz", timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn for {self.kind} did not answer /healthz in {seconds} s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU of the gunicorn master and its workers, from /proc."""
        pids = [self.process.pid] + children_of(self.process.pid)
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except FileNotFoundError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent:
            pids.append(int(entry.name))
    return pids


def ensure_wrk(choice: str) -> str | None:
    """wrk's path, installing Debian's package when we may; None means the Python generator."""
    if choice == "python":
        return None
    found = shutil.which("wrk")
    if found or choice == "wrk-no-install":
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing; installing Debian's package (apt-get install -y wrk)")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "timeout": 300}
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            if subprocess.run(
                ["apt-get", "install", "-y", "-q", "wrk"], env=env, **quiet
            ).returncode:
                subprocess.run(["apt-get", "update", "-q"], env=env, **quiet)
                subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, **quiet)
        except (OSError, subprocess.TimeoutExpired):
            pass
        found = shutil.which("wrk")
    if not found:
        log("wrk is not available: using the Python load generator (slower; ratios still hold)")
    return found


def load_with_wrk(wrk: str, url: str, requests_file: Path, seconds: float, connections: int):
    threads = 2
    command = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "10s",
        "-s", str(BENCH / "tokens.lua"), url, "--", str(requests_file), str(threads),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(row for row in output.splitlines() if row.startswith('{"requests"'))
    raw = json.loads(line)
    errors = sum(value for key, value in raw.items() if key.startswith("errors_"))
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": errors,
    }


def load_with_python(url: str, requests_file: Path, seconds: float, connections: int):
    """A small asyncio load generator: one new connection per request, as with sync gunicorn."""
    import asyncio
    import itertools

    port = int(url.rsplit(":", 1)[1])
    raw_requests = []
    for line in requests_file.read_text().splitlines():
        method, path, *rest = line.split("\t")
        body = rest[0].encode() if rest else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        if method == "POST":
            head += "Content-Type: application/x-www-form-urlencoded\r\n"
            head += f"Content-Length: {len(body)}\r\n"
        raw_requests.append(head.encode() + b"\r\n" + body)
    cycle = itertools.cycle(raw_requests)
    latencies: list[float] = []
    errors = 0

    async def client(deadline: float) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(next(cycle))
                await writer.drain()
                answer = await reader.read()
                writer.close()
            except OSError:
                errors += 1
                continue
            if time.perf_counter() > deadline:
                break
            latencies.append(time.perf_counter() - started)
            if answer[9:10] not in (b"2", b"3"):
                errors += 1

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds) for _ in range(connections)))
        return time.perf_counter() - started

    elapsed = asyncio.run(main())
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
        "errors": errors,
    }


class Web:
    """Runs the GET and POST load items."""

    def __init__(self, args, wrk: str | None) -> None:
        self.args = args
        self.wrk = wrk
        self.pristine = DATA / "open-100k.db"
        self.tokens = DATA / "open-100k.tokens"

    def prepare(self) -> None:
        log(f"generating {self.pristine.name}: 100,000 engagements, 100,000 open rounds")
        generate(self.pristine, 100_000, overdue=False, tokens=self.tokens)
        self.write_request_files()
        for kind in ("twoyes", "baseline"):
            (DATA / f"gunicorn-{kind}.log").unlink(missing_ok=True)

    def write_request_files(self) -> None:
        """Measured requests: engagements 1..95,000 shuffled; warm-up: the last 5,000."""
        import random
        from urllib.parse import urlencode

        sys.path.insert(0, str(ROOT))
        from twoyes.web.forms import FormStamp  # the project's own stamp, whatever its format

        tokens = self.tokens.read_text().split()
        engagements = len(tokens) // 2
        measured = list(range(1, engagements - WARMUP_ENGAGEMENTS + 1))
        warmup = list(range(engagements - WARMUP_ENGAGEMENTS + 1, engagements + 1))
        shuffle = random.Random(7).shuffle  # noqa: S311 (an order, not a secret)
        shuffle(measured)
        stamp = FormStamp(SECRET_KEY, 0)

        def post(decision_id: int) -> str:
            path = f"/d/{tokens[decision_id - 1]}"  # a stamp is good only for its form's path
            body = urlencode(
                {
                    "usefulness": "",
                    "note": "",
                    "website": "",
                    "served": stamp.issue(path),
                    "choice": "continue",
                }
            )
            return f"POST\t{path}\t{body}"

        # POST: one party per engagement (coach and client taking turns), so that no
        # round closes and every request is one recorded decision, as in the baseline.
        def party(engagement: int) -> int:
            return 2 * engagement - 1 if engagement % 2 else 2 * engagement

        files = {
            "post": [post(party(e)) for e in measured],
            "post-warmup": [post(party(e)) for e in warmup],
            "get": [f"GET\t/d/{tokens[2 * e - 1 - side]}" for e in measured for side in (0, 1)],
            "get-warmup": [
                f"GET\t/d/{tokens[2 * e - 1 - side]}" for e in warmup for side in (0, 1)
            ],
        }
        random.Random(8).shuffle(files["get"])  # noqa: S311
        files["get"] = files["get"][:120_000]
        for name, lines in files.items():
            (DATA / f"requests-{name}.txt").write_text("\n".join(lines) + "\n")

    def load(self, url: str, requests_file: Path, seconds: float) -> dict:
        if self.wrk:
            return load_with_wrk(self.wrk, url, requests_file, seconds, self.args.connections)
        return load_with_python(url, requests_file, seconds, self.args.connections)

    def one_run(self, kind: str, method: str) -> dict:
        database = copy_database(self.pristine, DATA / f"run-{kind}.db")
        instance = DATA / f"instance-{kind}"
        shutil.rmtree(instance, ignore_errors=True)
        server = Server(kind, database, instance)
        try:
            self.load(server.url, DATA / f"requests-{method}-warmup.txt", 1)
            time.sleep(0.5)  # let the server finish what the warm-up left in its backlog
            decided_before = query(
                database, "SELECT count(*) FROM decisions WHERE choice IS NOT NULL"
            )
            cpu_before = server.cpu_seconds()
            result = self.load(server.url, DATA / f"requests-{method}.txt", self.args.duration)
            cpu = server.cpu_seconds() - cpu_before
        finally:
            server.stop()
        requests = max(result["requests"], 1)
        figures = {
            "requests_per_s": result["requests"] / result["seconds"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "cpu_ms_per_request": 1000 * cpu / requests,
            "requests": result["requests"],
            "errors": result["errors"],
        }
        if method == "post":
            decided = query(database, "SELECT count(*) FROM decisions WHERE choice IS NOT NULL")
            figures["decisions_recorded"] = decided - decided_before
            # In-flight requests at the end may land too; fewer would mean refused POSTs.
            if figures["decisions_recorded"] < 0.98 * result["requests"]:
                raise RuntimeError(
                    f"{kind}: {result['requests']} POSTs but only "
                    f"{figures['decisions_recorded']} decisions recorded: a rate limit or the "
                    "form stamp refuses them (see twoyes_env and write_request_files)"
                )
        if result["errors"] > 0.01 * requests:
            raise RuntimeError(f"{kind}: {result['errors']} of {requests} requests failed")
        if result["errors"]:
            log(f"  warning: {result['errors']} errors or non-2xx/3xx answers from {kind}")
        return figures

    def item(self, method: str) -> dict:
        runs: dict[str, list[dict]] = {"twoyes": [], "baseline": []}
        for number in repetitions(self.args, f"decision_{method}", self.args.runs):
            for kind in ("twoyes", "baseline"):
                figures = self.one_run(kind, method)
                runs[kind].append(figures)
                log(
                    f"  {method.upper()} run {number} {kind:8}: "
                    f"{figures['requests_per_s']:7.1f} req/s, p50 {figures['p50_ms']:.1f} ms, "
                    f"p99 {figures['p99_ms']:.1f} ms, "
                    f"cpu {figures['cpu_ms_per_request']:.2f} ms/req"
                )
        metrics = ("requests_per_s", "p50_ms", "p99_ms", "cpu_ms_per_request")
        summary = {}
        for kind, kind_runs in runs.items():
            summary[kind] = {m: round(median([r[m] for r in kind_runs]), 3) for m in metrics}
            summary[kind]["spread_pct"] = {m: spread([r[m] for r in kind_runs]) for m in metrics}
            summary[kind]["runs"] = kind_runs
        ratio = {m: round(summary["twoyes"][m] / summary["baseline"][m], 3) for m in metrics}
        paired = [
            round(t["requests_per_s"] / b["requests_per_s"], 3)
            for t, b in zip(runs["twoyes"], runs["baseline"], strict=True)
        ]
        return {
            "item": f"decision_{method}",
            "what": f"{'POST' if method == 'post' else 'GET'} /d/<token>, gunicorn 2 sync "
            f"workers, {self.args.connections} connections, {self.args.duration:g} s per run, "
            f"100,000 engagements",
            "load_generator": "wrk" if self.wrk else "python",
            "runs": len(runs["twoyes"]),
            "twoyes": summary["twoyes"],
            "baseline": summary["baseline"],
            "ratio": ratio,
            "paired_ratios_requests_per_s": paired,
            "goal": "ratio of requests/s >= 0.8",
            "goal_met": ratio["requests_per_s"] >= 0.8,
        }


# ---------------------------------------------------------------- close-undecided


def close_undecided_item(args) -> dict:
    sizes = {"10k": 10_000, "100k": 100_000}
    result: dict = {
        "item": "close_undecided",
        "what": "cli.py close-undecided on N overdue rounds (every engagement ends, 2 mails "
        "each), against plain SQL doing the same writes in one transaction",
    }
    for label, count in sizes.items():
        pristine = DATA / f"overdue-{label}.db"
        log(f"generating {pristine.name}: {count:,} overdue rounds")
        generate(pristine, count, overdue=True)
        runs = args.runs_close_100k if count == 100_000 else args.runs
        measured: dict[str, list[dict]] = {"twoyes": [], "baseline": []}
        for number in repetitions(args, f"close_undecided_{label}", runs):
            for kind in ("twoyes", "baseline"):
                database = copy_database(pristine, DATA / f"run-close-{kind}.db")
                if kind == "twoyes":
                    instance = DATA / "instance-close"
                    shutil.rmtree(instance, ignore_errors=True)
                    figures = run_child(
                        [PY, "cli.py", "close-undecided"], env=twoyes_env(database, instance)
                    )
                else:
                    figures = run_child(
                        [PY, str(BENCH / "baseline_jobs.py"), "close", str(database)]
                    )
                check_closed(database, count, kind)
                measured[kind].append(figures)
                log(
                    f"  close-undecided {label} run {number} {kind:8}: "
                    f"{figures['wall_s']:.2f} s, peak {figures['peak_rss_mb']:.0f} MB"
                )
        entry = {}
        for kind, kind_runs in measured.items():
            walls = [r["wall_s"] for r in kind_runs]
            entry[kind] = {
                "wall_s": round(median(walls), 3),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in kind_runs), 1),
                "cpu_s": round(median([r["cpu_s"] for r in kind_runs]), 3),
                "spread_pct": spread(walls),
                "runs_wall_s": [round(w, 3) for w in walls],
            }
        entry["ratio"] = round(entry["twoyes"]["wall_s"] / entry["baseline"]["wall_s"], 2)
        entry["runs"] = len(measured["twoyes"])
        result[label] = entry
    scaling = round(result["100k"]["twoyes"]["wall_s"] / result["10k"]["twoyes"]["wall_s"], 2)
    peak = max(result[label]["twoyes"]["peak_rss_mb"] for label in sizes)
    result["scaling_100k_over_10k"] = scaling
    result["peak_rss_mb"] = peak
    result["goal"] = "ratio <= 3 at 10k and 100k, 100k/10k <= 12, peak RSS <= 150 MB"
    result["goals"] = {
        "ratio_10k_le_3": result["10k"]["ratio"] <= 3,
        "ratio_100k_le_3": result["100k"]["ratio"] <= 3,
        "scaling_le_12": scaling <= 12,
        "peak_rss_le_150_mb": peak <= 150,
    }
    result["goal_met"] = all(result["goals"].values())
    return result


def check_closed(database: Path, count: int, kind: str) -> None:
    open_rounds = query(database, "SELECT count(*) FROM rounds WHERE status = 'open'")
    ended = query(database, "SELECT count(*) FROM engagements WHERE status = 'ended'")
    mails = query(database, "SELECT count(*) FROM outbox WHERE kind = 'outcome'")
    if (open_rounds, ended, mails) != (0, count, 2 * count):
        raise RuntimeError(
            f"{kind} close-undecided left {open_rounds} open rounds, ended {ended} "
            f"engagements and queued {mails} mails (expected 0, {count}, {2 * count})"
        )


# ---------------------------------------------------------------- send


def send_item(args) -> dict:
    pristine = DATA / "send-5k.db"
    log(f"generating {pristine.name}: {SEND_MAILS:,} outcome mails queued by close-undecided")
    generate(pristine, SEND_MAILS // 2, overdue=True)
    run_child(
        [PY, "cli.py", "close-undecided"],
        env=twoyes_env(pristine, DATA / "instance-send-prepare"),
    )
    queued = query(pristine, "SELECT count(*) FROM outbox WHERE status = 'queued'")
    if queued != SEND_MAILS:
        raise RuntimeError(f"expected {SEND_MAILS} queued mails, found {queued}")
    port = free_port()
    smtp = subprocess.Popen(
        [PY, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    measured: dict[str, list[dict]] = {"twoyes": [], "baseline": []}
    try:
        wait_for_port(port)
        for number in repetitions(args, "send", args.runs):
            for kind in ("twoyes", "baseline"):
                database = copy_database(pristine, DATA / f"run-send-{kind}.db")
                if kind == "twoyes":
                    instance = DATA / "instance-send"
                    shutil.rmtree(instance, ignore_errors=True)
                    env = twoyes_env(
                        database,
                        instance,
                        TWOYES_MAIL_SERVER="127.0.0.1",
                        TWOYES_MAIL_PORT=str(port),
                    )
                    figures = run_child([PY, "cli.py", "send"], env=env)
                else:
                    figures = run_child(
                        [PY, str(BENCH / "baseline_jobs.py"), "send", str(database), str(port)]
                    )
                sent = query(database, "SELECT count(*) FROM outbox WHERE status = 'sent'")
                if sent != SEND_MAILS:
                    raise RuntimeError(f"{kind} send delivered {sent} of {SEND_MAILS} mails")
                figures["mails_per_s"] = SEND_MAILS / figures["wall_s"]
                figures["cpu_ms_per_mail"] = 1000 * figures["cpu_s"] / SEND_MAILS
                measured[kind].append(figures)
                log(
                    f"  send run {number} {kind:8}: {figures['mails_per_s']:.0f} mails/s "
                    f"({figures['wall_s']:.2f} s, {figures['cpu_ms_per_mail']:.2f} ms CPU a mail)"
                )
    finally:
        smtp.terminate()
        smtp.wait()
    summary = {}
    for kind, kind_runs in measured.items():
        rates = [r["mails_per_s"] for r in kind_runs]
        summary[kind] = {
            "mails_per_s": round(median(rates), 1),
            "wall_s": round(median([r["wall_s"] for r in kind_runs]), 3),
            "cpu_ms_per_mail": round(median([r["cpu_ms_per_mail"] for r in kind_runs]), 3),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in kind_runs), 1),
            "spread_pct": spread(rates),
            "runs_mails_per_s": [round(rate, 1) for rate in rates],
        }
    ratio = round(summary["twoyes"]["mails_per_s"] / summary["baseline"]["mails_per_s"], 3)
    return {
        "item": "send",
        "what": f"cli.py send of {SEND_MAILS:,} queued outcome mails to aiosmtpd on 127.0.0.1, "
        "against raw smtplib + EmailMessage (text+HTML) over one connection, marking each sent",
        "runs": len(measured["twoyes"]),
        "twoyes": summary["twoyes"],
        "baseline": summary["baseline"],
        "ratio": ratio,
        "goal": "ratio of mails/s >= 0.8",
        "goal_met": ratio >= 0.8,
    }


# ---------------------------------------------------------------- idle tick


def idle_tick_item(args) -> dict:
    pristine = DATA / "open-100k.db"
    if not pristine.exists():
        log(f"generating {pristine.name}: 100,000 engagements, 100,000 open rounds")
        generate(pristine, 100_000, overdue=False, tokens=DATA / "open-100k.tokens")
    database = copy_database(pristine, DATA / "run-tick.db")
    instance = DATA / "instance-tick"
    shutil.rmtree(instance, ignore_errors=True)
    env = twoyes_env(database, instance)
    runs = max(args.runs, 5)
    measured: dict[str, list[float]] = {"tick": [], "interpreter": [], "imports": []}
    commands = {
        "tick": [PY, "cli.py", "tick"],
        "interpreter": [PY, "-c", "pass"],
        "imports": [PY, "-c", "import cli"],
    }
    for _ in range(runs):
        for name, command in commands.items():
            measured[name].append(run_child(command, env=env)["wall_s"])
    changed = query(database, "SELECT count(*) FROM rounds WHERE status = 'closed'")
    if changed:
        raise RuntimeError(f"the idle tick closed {changed} rounds; nothing should be due")
    tick, interpreter, imports = (median(measured[name]) for name in commands)
    log(
        f"  idle tick: {tick:.3f} s (interpreter start {interpreter:.3f} s, "
        f"imports {imports - interpreter:.3f} s, work {tick - imports:.3f} s)"
    )
    return {
        "item": "idle_tick",
        "what": "cli.py tick on 100,000 engagements with nothing due; baseline: the bare "
        "interpreter starting (python -c pass)",
        "runs": runs,
        "twoyes": {"wall_s": round(tick, 3), "spread_pct": spread(measured["tick"])},
        "baseline": {
            "wall_s": round(interpreter, 3),
            "spread_pct": spread(measured["interpreter"]),
        },
        "ratio": round(tick / interpreter, 2),
        "breakdown_s": {
            "interpreter_start": round(interpreter, 3),
            "imports": round(imports - interpreter, 3),
            "app_and_queries": round(tick - imports, 3),
        },
        "wall_s": round(tick, 3),
        "goal": "wall time <= 0.5 s",
        "goal_met": tick <= 0.5,
    }


# ---------------------------------------------------------------- report


def table(results: list[dict]) -> str:
    """The results as a plain text table, one or more rows per item."""
    rows = [("item", "figure", "twoyes", "baseline", "ratio", "goal", "met", "spread t/b %")]
    yes_no = {True: "yes", False: "NO"}

    def add(item, figure, twoyes, baseline, ratio="", goal="", met=None, noise=("", "")):
        noise_text = f"{noise[0]:.0f}/{noise[1]:.0f}" if noise[0] != "" else ""
        met_text = "" if met is None else yes_no[met]
        rows.append((item, figure, twoyes, baseline, ratio, goal, met_text, noise_text))

    for result in results:
        name, runs = result["item"], result.get("runs")
        t, b = result.get("twoyes"), result.get("baseline")
        if name.startswith("decision_"):
            ratio = result["ratio"]
            figures = [
                ("requests_per_s", f"requests/s ({runs} runs)", "{:.1f}"),
                ("p50_ms", "p50 ms", "{:.1f}"),
                ("p99_ms", "p99 ms", "{:.1f}"),
                ("cpu_ms_per_request", "server CPU ms/req", "{:.2f}"),
            ]
            for number, (key, label, fmt) in enumerate(figures):
                add(
                    "" if number else name,
                    label,
                    fmt.format(t[key]),
                    fmt.format(b[key]),
                    f"{ratio[key]:.2f}" if number else f"{ratio[key]:.3f}",
                    "" if number else ">= 0.8",
                    None if number else result["goal_met"],
                    (t["spread_pct"][key], b["spread_pct"][key]),
                )
        elif name == "close_undecided":
            for size in ("10k", "100k"):
                entry = result[size]
                t, b = entry["twoyes"], entry["baseline"]
                add(
                    name if size == "10k" else "",
                    f"{size} wall s ({entry['runs']} runs)",
                    f"{t['wall_s']:.2f}",
                    f"{b['wall_s']:.2f}",
                    f"{entry['ratio']:.1f}x",
                    "<= 3x",
                    entry["ratio"] <= 3,
                    (t["spread_pct"], b["spread_pct"]),
                )
                peak = t["peak_rss_mb"]
                add("", f"{size} peak RSS MB", f"{peak:.0f}", f"{b['peak_rss_mb']:.0f}", "",
                    "<= 150", peak <= 150)  # fmt: skip
            scaling = result["scaling_100k_over_10k"]
            add("", "100k / 10k (twoyes)", f"{scaling:.1f}x", "", "", "<= 12x", scaling <= 12)
        elif name == "send":
            add(
                name,
                f"mails/s ({runs} runs)",
                f"{t['mails_per_s']:.0f}",
                f"{b['mails_per_s']:.0f}",
                f"{result['ratio']:.3f}",
                ">= 0.8",
                result["goal_met"],
                (t["spread_pct"], b["spread_pct"]),
            )
            cpu_ratio = t["cpu_ms_per_mail"] / b["cpu_ms_per_mail"]
            add("", "client CPU ms/mail", f"{t['cpu_ms_per_mail']:.2f}",
                f"{b['cpu_ms_per_mail']:.2f}", f"{cpu_ratio:.2f}")  # fmt: skip
        elif name == "idle_tick":
            add(
                name,
                f"wall s ({runs} runs)",
                f"{t['wall_s']:.3f}",
                f"{b['wall_s']:.3f}",
                f"{result['ratio']:.1f}x",
                "<= 0.5 s",
                result["goal_met"],
                (t["spread_pct"], b["spread_pct"]),
            )
            parts = result["breakdown_s"]
            add("", "of which imports, work", f"{parts['imports']:.3f}, "
                f"{parts['app_and_queries']:.3f}", "")  # fmt: skip
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=ITEMS, default=list(ITEMS))
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median taken)")
    parser.add_argument(
        "--runs-close-100k", type=int, default=3, help="runs of close-undecided on 100k rounds"
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--no-budget", action="store_true", help="always make --runs runs, however long it takes"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "wrk-no-install", "python"),
        default="auto",
        help="auto: wrk, installed from Debian's packages when missing and allowed; "
        "else the Python load generator",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    DATA.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    log(f"twoyes bench on {os.cpu_count()} cores, load average {load_before[0]:.2f}")
    results = []
    if {"decision_post", "decision_get"} & set(args.only):
        web = Web(args, ensure_wrk(args.loadgen))
        log(f"load generator: {'wrk' if web.wrk else 'python (asyncio)'}")
        web.prepare()
        for method in ("post", "get"):
            if f"decision_{method}" in args.only:
                log(f"decision {method.upper()}: twoyes and baseline, alternately")
                results.append(web.item(method))
    if "close_undecided" in args.only:
        log("close-undecided")
        results.append(close_undecided_item(args))
    if "send" in args.only:
        log("send")
        results.append(send_item(args))
    if "idle_tick" in args.only:
        log("idle tick")
        results.append(idle_tick_item(args))
    # The working copies are ~1 GB together; the generated originals stay for a look.
    for path in DATA.glob("run-*.db*"):
        path.unlink()
    for path in DATA.glob("instance-*"):
        shutil.rmtree(path, ignore_errors=True)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_before": round(load_before[0], 2),
            "load_average_after": round(load_after[0], 2),
        },
        "elapsed_s": round(elapsed, 1),
        "notes": [
            "ratio = twoyes / baseline, medians of alternating runs in this run; for rates "
            "higher is better, for times lower is better",
            "spread = (max - min) / median of the runs of a figure: the machine's noise",
            "twoyes ran with MIN_DECISION_SECONDS=0 and TOKEN_RATE_LIMIT lifted to 1,000,000 "
            "a minute (every request still counted against it)",
            (
                "twoyes and the baseline ran under the same gunicorn configuration: "
                "twoyes's gunicorn.conf.py, access log included"
                if GUNICORN_CONF.exists()
                else "no gunicorn.conf.py: neither twoyes nor the baseline logs requests"
            ),
        ],
        "items": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    print()
    print("ratio = twoyes / baseline (medians of alternating runs). spread t/b = (max - min) /")
    print("median of the runs, in %, for twoyes / baseline: how noisy the machine was. When")
    print("requests/s spread widely, server CPU ms/req is the steadier figure.")
    for note in report["notes"][2:]:
        print(f"Note: {note}.")
    print_closing(results, load_before[0], load_after[0], elapsed, RESULTS)


def print_closing(results: list[dict], load_before, load_after, elapsed: float, written: Path):
    """The last lines of a bench: the load around it, its length, and the goals it missed."""
    print(
        f"Load average {load_before:.2f} before, {load_after:.2f} after. "
        f"Took {elapsed / 60:.1f} min. Wrote bench/{written.name}."
    )
    missed = [r["item"] for r in results if not r["goal_met"]]
    print(f"Goals missed: {', '.join(missed)}" if missed else "Every goal met.")


if __name__ == "__main__":
    main()
