"""Files twoyes writes at a path a person names: new, private, and never through a link.

An export, a report or a backup holds personal data. Written naively, an
existing file keeps its old mode (readable by others), and a symlink planted
at the path sends the data wherever it points. So a file is created new
(`O_EXCL | O_NOFOLLOW`, mode 0600); with `force`, the content goes to a
temporary file in the same folder that is renamed over the target, which
replaces a link instead of writing through it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from twoyes.errors import Conflict, Invalid

PRIVATE = 0o600


@contextlib.contextmanager
def open_new_file(
    path: str | os.PathLike, *, force: bool = False, binary: bool = False
) -> Iterator[IO]:
    """Write `path` as a new 0600 file; the file appears only once the block succeeded.

    Conflict when something stands at `path` and `force` is not given; Invalid
    when `path` is a folder or cannot be written (with the system's reason).
    """
    target = Path(path)
    if target.is_dir():
        raise Invalid(f"{path} is a folder; give the name of a file to write.")
    if not force and (target.exists() or target.is_symlink()):
        raise Conflict(f"{path} exists already; choose another name, or add --force to replace it.")
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as error:
        raise Invalid(f"Cannot write {path}: {error.strerror}.") from error
    try:
        os.fchmod(descriptor, PRIVATE)
        mode = "wb" if binary else "w"
        options = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(descriptor, mode, **options) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        if force:
            os.replace(temporary, target)
        else:
            # link() fails when the name was taken meanwhile: never clobber what appeared.
            try:
                os.link(temporary, target, follow_symlinks=False)
            except FileExistsError as error:
                raise Conflict(
                    f"{path} exists already; choose another name, or add --force to replace it."
                ) from error
            os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_new_file(path: str | os.PathLike, text: str, *, force: bool = False) -> None:
    """`text` into a new private file at `path` (see open_new_file)."""
    with open_new_file(path, force=force) as file:
        file.write(text)
