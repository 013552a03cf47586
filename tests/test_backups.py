"""Backups into a folder, as the nightly timer takes them: a name with the time, the newest N
kept, nothing else in the folder ever touched.

Real parts: the real command line on a real database; older backups in the folder are
real backups made by `backup PATH` under the names the timer would have given them.
(One backup taken while another process writes, and restored, is in test_privacy.py.)
"""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

NAME = re.compile(r"twoyes-(\d{4}-\d{2}-\d{2}T\d{6}Z)\.db")
# Three nights' backups, long ago.
OLD = [f"twoyes-2020-01-0{day}T033000Z.db" for day in (1, 2, 3)]


def ok(run, *args):
    result = run(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def listing(folder: Path) -> dict[str, str]:
    """Each entry of the folder with what it is and holds, to see that nothing else changed."""
    seen = {}
    for path in folder.iterdir():
        if path.is_symlink():
            seen[path.name] = f"link to {path.readlink()}"
        elif path.is_dir():
            seen[path.name] = "folder"
        else:
            seen[path.name] = path.read_bytes().hex()
    return seen


def people_in(path: Path) -> int:
    """The people a backup holds, after checking it is whole."""
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return connection.execute(
            "SELECT (SELECT count(*) FROM coaches) + (SELECT count(*) FROM clients)"
        ).fetchone()[0]
    finally:
        connection.close()


def taken_at(path: Path) -> datetime:
    match = NAME.fullmatch(path.name)
    assert match, f"{path.name} is not named as a backup"
    return datetime.strptime(match.group(1), "%Y-%m-%dT%H%M%SZ").replace(tzinfo=UTC)


def next_second() -> None:
    """Wait for the clock's next second, so that the next backup gets a name of its own."""
    start = datetime.now(UTC).replace(microsecond=0)
    while datetime.now(UTC).replace(microsecond=0) == start:
        time.sleep(0.02)


def test_backup_into_keeps_the_newest_and_touches_nothing_else(run, db, people, tmp_path):
    folder = tmp_path / "backups"
    for name in OLD:
        ok(run, "backup", folder / name)
    # What an operator may keep beside them, some of it named much like a backup.
    (folder / "README.txt").write_text("my notes")
    (folder / "twoyes-before-upgrade.db").write_text("a copy of my own")
    (folder / "twoyes-2019-01-01T000000Z.db.gz").write_text("compressed by hand")
    (folder / "twoyes-2019-06-01T000000Z.db").mkdir()
    outside = tmp_path / "elsewhere.db"
    outside.write_text("not in the folder")
    (folder / "twoyes-2019-07-01T000000Z.db").symlink_to(outside)
    before = listing(folder)

    started = datetime.now(UTC).replace(microsecond=0)
    result = json.loads(ok(run, "backup", "--into", folder, "--keep", "2", "--json").stdout)

    new = Path(result["path"])
    assert new.parent == folder
    assert started <= taken_at(new) <= datetime.now(UTC)
    assert result["integrity_check"] == "ok"
    assert result["removed"] == [str(folder / OLD[0]), str(folder / OLD[1])]
    after = listing(folder)
    assert set(after) == set(before) - {OLD[0], OLD[1]} | {new.name}
    assert {name: after[name] for name in before if name in after} == {
        name: before[name] for name in before if name not in OLD[:2]
    }
    assert outside.read_text() == "not in the folder"
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert people_in(new) == 3
    assert not list(folder.glob(".*partial"))


def test_without_keep_every_backup_stays_and_keep_says_what_it_removed(run, db, people, tmp_path):
    folder = tmp_path / "nightly"
    for name in OLD:
        ok(run, "backup", folder / name)
    first = ok(run, "backup", "--into", folder)
    (line,) = first.stdout.splitlines()
    assert line.startswith(f"Backed up the database to {folder}/twoyes-")
    assert line.endswith("integrity check ok).")
    assert len(listing(folder)) == 4

    next_second()
    second = ok(run, "backup", "--into", folder, "--keep", "2")
    lines = second.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Backed up the database to ")
    assert lines[1] == f"Removed 3 older backup(s): {', '.join(OLD)}."
    kept = sorted(folder.iterdir())
    assert len(kept) == 2 and taken_at(kept[0]) < taken_at(kept[1])
    assert all(people_in(path) == 3 for path in kept)


def test_the_copy_just_taken_stays_when_older_copies_carry_later_names(run, db, people, tmp_path):
    # The clock was once set ahead: two copies are named in the future.
    folder = tmp_path / "backups"
    ahead = [f"twoyes-2099-01-0{day}T033000Z.db" for day in (1, 2)]
    for name in ahead:
        ok(run, "backup", folder / name)
    result = json.loads(ok(run, "backup", "--into", folder, "--keep", "2", "--json").stdout)
    assert result["removed"] == [str(folder / ahead[0])]
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [ahead[1], Path(result["path"]).name]
    )
    assert taken_at(Path(result["path"])) > datetime.now(UTC) - timedelta(minutes=1)


def test_backup_into_makes_a_folder_only_its_owner_opens(run, db, people, tmp_path):
    folder = tmp_path / "new" / "backups"
    result = json.loads(ok(run, "backup", "--into", folder, "--json").stdout)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [path.name for path in folder.iterdir()] == [Path(result["path"]).name]
    assert result["removed"] == []


def test_a_command_line_that_does_not_say_one_thing_is_refused(run, db, people, tmp_path):
    folder = tmp_path / "backups"
    ok(run, "backup", folder / OLD[0])
    before = listing(folder)
    for args, words in [
        ([], "Name either a PATH"),
        ([folder / "x.db", "--into", folder], "Name either a PATH"),
        ([folder / "x.db", "--keep", "1"], "--keep goes with --into"),
        (["--into", folder, "--keep", "0"], "0 is not in the range x>=1"),
    ]:
        result = run("backup", *args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr
        assert "Traceback" not in result.output
        assert listing(folder) == before


def test_backup_into_a_file_is_one_clear_line_and_changes_nothing(run, db, people, tmp_path):
    target = tmp_path / "not-a-folder"
    target.write_text("keep me")
    before = sorted(path.name for path in tmp_path.iterdir())
    result = run("backup", "--into", target, "--keep", "1")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {target} is not a folder; name the folder the backups go to."
    ]
    assert target.read_text() == "keep me"
    assert sorted(path.name for path in tmp_path.iterdir()) == before
