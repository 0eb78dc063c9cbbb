"""Atomic file output: a report file is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ._errors import InputError

__all__ = ["atomic_write"]


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On an exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left untouched. The rename is atomic on POSIX and Windows filesystems.

    Raises
    ------
    InputError
        If the parent directory of ``path`` does not exist or ``path`` is a directory.
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(
            f"Cannot write the output to '{target}': it is a directory. Give a file path."
        )
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(
            f"Cannot write the output to '{target}': the directory "
            f"'{parent}' does not exist. Create it first."
        )
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the permissions open() would (0666 & ~umask),
        # with the umask read once at import (reading it means setting it, process-wide)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
