"""Write a large twoyes database directly with SQL, through the project's own schema.

Each engagement is individual (one coach, one client) with one held session
and one open round, both parties undecided. `--overdue` puts every deadline
in the past (for close-undecided); otherwise deadlines are a week ahead.
Every party gets a decision token whose raw value is written to a side file,
so a load generator can act as each party.

Example: python bench/generate.py bench/data/100k.db --engagements 100000 --tokens tokens.txt
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twoyes import db as database  # noqa: E402
from twoyes.times import to_db  # noqa: E402

COACHES = 100


def generate(path: Path, engagements: int, *, overdue: bool, tokens_file: Path | None) -> None:
    if path.exists():
        path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = database.connect(path)
    database.init_db(db)
    now = datetime.now(UTC)
    opened = now - timedelta(days=8 if overdue else 1)
    deadline = opened + timedelta(days=7)
    reminder = deadline - timedelta(days=2)
    at = to_db(opened)
    raw_tokens: list[str] = []
    conn = db.conn
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO coaches (id, name, email, lang, created_at) VALUES (?, ?, ?, 'en', ?)",
        [(i, f"Coach {i}", f"coach{i}@example.org", at) for i in range(1, COACHES + 1)],
    )
    conn.executemany(
        "INSERT INTO clients (id, name, email, lang, created_at) VALUES (?, ?, ?, 'en', ?)",
        [(i, f"Client {i}", f"client{i}@example.org", at) for i in range(1, engagements + 1)],
    )
    conn.executemany(
        "INSERT INTO engagements (id, coach_id, title, kind, started_at)"
        " VALUES (?, ?, NULL, 'individual', ?)",
        [(i, 1 + i % COACHES, at) for i in range(1, engagements + 1)],
    )
    conn.executemany(
        "INSERT INTO members (id, engagement_id, client_id, joined_at) VALUES (?, ?, ?, ?)",
        [(i, i, i, at) for i in range(1, engagements + 1)],
    )
    conn.executemany(
        "INSERT INTO sessions (id, engagement_id, status, starts_at, minutes, ends_at, held_at,"
        " created_at) VALUES (?, ?, 'held', ?, 60, ?, ?, ?)",
        [(i, i, at, at, at, at) for i in range(1, engagements + 1)],
    )
    conn.executemany(
        "INSERT INTO rounds (id, session_id, engagement_id, opened_at, deadline_at, reminder_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(i, i, i, at, to_db(deadline), to_db(reminder)) for i in range(1, engagements + 1)],
    )
    conn.executemany(
        "INSERT INTO decisions (id, round_id, role, client_id) VALUES (?, ?, ?, ?)",
        (
            row
            for i in range(1, engagements + 1)
            for row in ((2 * i - 1, i, "coach", None), (2 * i, i, "client", i))
        ),
    )

    def token_rows():
        # Links already mailed: a nonce and the hash of the token delivery made of it.
        for decision_id in range(1, 2 * engagements + 1):
            raw = secrets.token_urlsafe(32)
            raw_tokens.append(raw)
            nonce = secrets.token_hex(16)
            yield (nonce, hashlib.sha256(raw.encode()).hexdigest(), "decide", decision_id, at)

    conn.executemany(
        "INSERT INTO tokens (nonce, hash, purpose, decision_id, created_at) VALUES (?, ?, ?, ?, ?)",
        token_rows(),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    db.close()
    if tokens_file:
        tokens_file.write_text("\n".join(raw_tokens) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--engagements", type=int, default=10_000)
    parser.add_argument("--overdue", action="store_true")
    parser.add_argument("--tokens", type=Path, help="write the raw tokens here, one a line")
    args = parser.parse_args()
    args.path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    generate(args.path, args.engagements, overdue=args.overdue, tokens_file=args.tokens)
    print(
        f"wrote {args.path} ({args.engagements:,} engagements) in "
        f"{time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
