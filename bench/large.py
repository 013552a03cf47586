"""Measure the deadline sweep and the idle tick at a million rounds: does their cost grow linearly?

`make bench-large` (about 15-25 minutes, and some 8 GB of disk in bench/data/ while it
runs; not part of `make bench`). A practice whose server was off for a month, or a host
running many practices on one database, meets a million overdue rounds; a 1 GB server
must survive the sweep (issue 19).

Items, each a real `python cli.py ...` process, measured by wait4 (wall time, CPU, peak RSS):
  close-undecided  on 10,000, 100,000 and 1,000,000 overdue rounds (every engagement ends,
                   2 mails each). The 1M runs are bracketed by 100k runs (100k, 1M, 100k, ...)
                   so that the ratio 1M / 100k is taken under the same load.
  idle tick        `cli.py tick` on 100,000 and 1,000,000 engagements with nothing due.

Goals: close-undecided at 1M within 12 times its 100k time; peak RSS at most 150 MB at
every size; the idle tick at 1M about its time at 100k. Writes bench/results-large.json.

Example: .venv/bin/python bench/large.py --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from run import (
    DATA,
    PY,
    check_closed,
    copy_database,
    generate,
    log,
    median,
    print_closing,
    query,
    run_child,
    spread,
    twoyes_env,
)

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results-large.json"
SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
PEAK_RSS_MB = 150
SCALING = 12


def sweep_once(label: str, count: int) -> dict:
    """One close-undecided on a fresh copy of the overdue database of `count` rounds."""
    database = copy_database(DATA / f"overdue-{label}.db", DATA / f"run-large-{label}.db")
    instance = DATA / "instance-large"
    shutil.rmtree(instance, ignore_errors=True)
    load = os.getloadavg()[0]
    figures = run_child([PY, "cli.py", "close-undecided"], env=twoyes_env(database, instance))
    check_closed(database, count, "twoyes")
    for path in DATA.glob(f"run-large-{label}.db*"):
        path.unlink()
    figures["load_average"] = load
    log(
        f"  close-undecided {label:>4}: {figures['wall_s']:7.2f} s wall, "
        f"{figures['cpu_s']:7.2f} s CPU, peak {figures['peak_rss_mb']:.0f} MB (load {load:.2f})"
    )
    return figures


def summarise(runs: list[dict]) -> dict:
    walls = [run["wall_s"] for run in runs]
    return {
        "wall_s": round(median(walls), 2),
        "cpu_s": round(median([run["cpu_s"] for run in runs]), 2),
        "peak_rss_mb": round(max(run["peak_rss_mb"] for run in runs), 1),
        "runs": len(runs),
        "spread_pct": spread(walls),
        "runs_wall_s": [round(wall, 2) for wall in walls],
        "load_averages": [round(run["load_average"], 2) for run in runs],
    }


def close_undecided_item(args) -> dict:
    for label, count in SIZES.items():
        if not (DATA / f"overdue-{label}.db").exists() or args.regenerate:
            log(f"generating overdue-{label}.db: {count:,} overdue rounds")
            generate(DATA / f"overdue-{label}.db", count, overdue=True)
    measured: dict[str, list[dict]] = {label: [] for label in SIZES}
    measured["10k"].append(sweep_once("10k", SIZES["10k"]))
    measured["100k"].append(sweep_once("100k", SIZES["100k"]))
    # 100k, 1M, 100k, 1M, 100k: each 1M run lies between two 100k runs.
    for _ in range(args.runs):
        measured["1M"].append(sweep_once("1M", SIZES["1M"]))
        measured["100k"].append(sweep_once("100k", SIZES["100k"]))
    summary = {label: summarise(runs) for label, runs in measured.items()}
    wall_ratio = round(summary["1M"]["wall_s"] / summary["100k"]["wall_s"], 2)
    cpu_ratio = round(summary["1M"]["cpu_s"] / summary["100k"]["cpu_s"], 2)
    peak = max(entry["peak_rss_mb"] for entry in summary.values())
    return {
        "item": "close_undecided",
        "what": "cli.py close-undecided on N overdue rounds of individual engagements (every "
        "engagement ends, 2 outcome mails each), default TWOYES_SWEEP_BATCH",
        **summary,
        "ratio_1m_over_100k": {"wall": wall_ratio, "cpu": cpu_ratio},
        "peak_rss_mb": peak,
        "goal": f"1M wall <= {SCALING} x 100k wall; peak RSS <= {PEAK_RSS_MB} MB at every size",
        "goals": {
            "scaling_le_12": wall_ratio <= SCALING,
            "peak_rss_le_150_mb": peak <= PEAK_RSS_MB,
        },
        "goal_met": wall_ratio <= SCALING and peak <= PEAK_RSS_MB,
    }


def idle_tick_item(args) -> dict:
    runs = max(args.runs, 3)
    measured: dict[str, list[dict]] = {}
    for label in ("100k", "1M"):
        pristine = DATA / f"open-{label}.db"
        if not pristine.exists() or args.regenerate:
            log(f"generating {pristine.name}: {SIZES[label]:,} engagements with nothing due")
            generate(pristine, SIZES[label], overdue=False)
        database = copy_database(pristine, DATA / f"run-large-tick-{label}.db")
        instance = DATA / "instance-large-tick"
        shutil.rmtree(instance, ignore_errors=True)
        measured[label] = []
        for _ in range(runs):
            load = os.getloadavg()[0]
            figures = run_child([PY, "cli.py", "tick"], env=twoyes_env(database, instance))
            figures["load_average"] = load
            measured[label].append(figures)
        if query(database, "SELECT count(*) FROM rounds WHERE status = 'closed'"):
            raise RuntimeError(f"the idle tick at {label} closed rounds; nothing should be due")
        for path in DATA.glob(f"run-large-tick-{label}.db*"):
            path.unlink()
        entry = summarise(measured[label])
        log(
            f"  idle tick {label:>4}: {entry['wall_s']:.2f} s wall, {entry['cpu_s']:.2f} s CPU, "
            f"peak {entry['peak_rss_mb']:.0f} MB (median of {runs})"
        )
    summary = {label: summarise(runs_) for label, runs_ in measured.items()}
    ratio = round(summary["1M"]["wall_s"] / summary["100k"]["wall_s"], 2)
    return {
        "item": "idle_tick",
        "what": "cli.py tick on N engagements, each with an open round a week before its "
        "deadline: nothing due",
        **summary,
        "ratio_1m_over_100k": {
            "wall": ratio,
            "cpu": round(summary["1M"]["cpu_s"] / summary["100k"]["cpu_s"], 2),
        },
        "goal": "1M wall about the 100k wall (at most 1.5 x); peak RSS <= 150 MB",
        "goal_met": ratio <= 1.5 and summary["1M"]["peak_rss_mb"] <= PEAK_RSS_MB,
    }


def table(results: list[dict]) -> str:
    rows = [("item", "size", "wall s", "CPU s", "peak MB", "runs", "load avg")]
    for result in results:
        for label in SIZES:
            if label in result:
                entry = result[label]
                loads = entry["load_averages"]
                rows.append(
                    (
                        result["item"],
                        label,
                        f"{entry['wall_s']:.2f}",
                        f"{entry['cpu_s']:.2f}",
                        f"{entry['peak_rss_mb']:.0f}",
                        str(entry["runs"]),
                        f"{min(loads):.1f}-{max(loads):.1f}",
                    )
                )
        ratio = result["ratio_1m_over_100k"]
        met = "met" if result["goal_met"] else "MISSED"
        rows.append(
            (result["item"], "1M/100k", f"{ratio['wall']:.1f}x", f"{ratio['cpu']:.1f}x", "", "",
             f"goal {met}")
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=1, help="1M sweeps, each followed by a 100k sweep"
    )
    parser.add_argument(
        "--only", nargs="+", choices=("close_undecided", "idle_tick"),
        default=["close_undecided", "idle_tick"],
    )  # fmt: skip
    parser.add_argument(
        "--regenerate", action="store_true", help="write the databases again even if present"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    DATA.mkdir(exist_ok=True)
    load_before = os.getloadavg()[0]
    log(f"twoyes large bench on {os.cpu_count()} cores, load average {load_before:.2f}")
    results = []
    if "close_undecided" in args.only:
        log("close-undecided at 10k, 100k and 1M overdue rounds")
        results.append(close_undecided_item(args))
    if "idle_tick" in args.only:
        log("idle tick at 100k and 1M engagements")
        results.append(idle_tick_item(args))
    shutil.rmtree(DATA / "instance-large", ignore_errors=True)
    shutil.rmtree(DATA / "instance-large-tick", ignore_errors=True)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_before": round(load_before, 2),
            "load_average_after": round(load_after, 2),
        },
        "elapsed_s": round(elapsed, 1),
        "notes": [
            "each figure is a whole `python cli.py ...` process: interpreter start, imports "
            "and the work; peak RSS is the process's maximum resident set (wait4)",
            "the ratio 1M / 100k compares medians taken in this run, the 1M sweeps between "
            "100k sweeps; load_averages are the 1-minute load average as each run started",
        ],
        "items": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    print()
    print_closing(results, load_before, load_after, elapsed, RESULTS)


if __name__ == "__main__":
    main()
