"""Safe file output: a report file is complete or absent, and never replaces the user's data.

* :func:`atomic_write` writes beside the target and renames over it (never half-written),
  writes *through* a symbolic link (the link stays, its target gets the new content),
  keeps an existing target's permission bits (a 0600 report stays 0600), and turns an
  operating-system failure (a read-only or full filesystem, ``/proc``) into one
  :class:`~infospec.InputError` naming the path, leaving no temporary file.
* :func:`check_output` is what the command line asks before it computes anything: the
  output must not be one of the input files (compared by resolved path and by inode, so
  hard links and symbolic links count), and an existing file that infospec did not write
  (:func:`is_infospec_output`) is replaced only with ``--force``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ._errors import InputError

__all__ = ["atomic_write", "check_output", "is_infospec_output", "output_path"]


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()

#: Bytes read from the start of an existing file to tell whether infospec wrote it.
SNIFF_BYTES = 64 * 1024

#: First lines of the CSV tables infospec writes (report tables, ``track``, the Monitor).
_CSV_HEADERS = (
    "name,tensor,kind,dtype,status",  # Report weights (analyze, compare)
    "name,module,status",  # Report activations
    "name,shape,dtype,kind,reason",  # Report skipped
    "checkpoint,step,tensor,metric,value",  # track --out
    "step,table,layer,matrix,status",  # Monitor log
)

#: A PNG file's first bytes, and the text chunk infospec's figures carry (``Software``).
_PNG_SIGNATURE, _PNG_MARK = b"\x89PNG\r\n\x1a\n", b"tEXtSoftware\x00infospec"

#: Files of an input folder looked at (to this depth, at most this many) by check_output.
_FOLDER_DEPTH, _FOLDER_FILES = 3, 20000


def is_infospec_output(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file infospec wrote (so replacing it needs no ``--force``).

    Told by content, from its first :data:`SNIFF_BYTES` bytes (the suffix does not count):

    * a JSON report: an object whose ``"meta"`` holds an ``"infospec"`` version key
      (:meth:`Report.to_json <infospec.Report.to_json>`);
    * a CSV table whose header line starts as one of infospec's tables (the weights,
      activations and skipped tables, ``track``'s long table, a Monitor log);
    * an HTML page (``<!doctype html>``) whose title starts with ``infospec``;
    * a plain-text summary starting with ``infospec report:``;
    * a PNG figure whose ``Software`` text chunk starts with ``infospec`` (``infospec
      spectrum``);
    * an empty file (nothing to lose).

    Anything else (a checkpoint, a ``config.json``, a file that cannot be read) is not.
    """
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return False
            head = fh.read(SNIFF_BYTES)
    except OSError:
        return False
    if not head:
        return True
    if head.startswith(_PNG_SIGNATURE):
        return _PNG_MARK in head
    if b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    start = text.lstrip()
    if start.startswith("{"):
        meta = start.find('"meta"')
        return 0 <= meta < 16 and '"infospec": "' in start
    if start.lower().startswith("<!doctype html"):
        return "<title>infospec" in start[:8192]
    if start.startswith("infospec report:"):
        return True
    first = start.split("\n", 1)[0].rstrip("\r")
    return any(first.startswith(h) for h in _CSV_HEADERS)


def output_path(path: str | os.PathLike) -> Path:
    """The file that writing ``path`` changes: a symbolic link resolved to its target."""
    target = Path(path)
    if target.is_symlink():
        return Path(os.path.realpath(target))
    return target


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def _folder_files(folder: Path) -> Iterator[Path]:
    """Regular files under ``folder`` (links followed), to :data:`_FOLDER_DEPTH` levels."""
    todo, seen = [(folder, 0)], 0
    while todo:
        where, depth = todo.pop()
        try:
            with os.scandir(where) as it:
                entries = list(it)
        except OSError:
            continue
        for e in entries:
            seen += 1
            if seen > _FOLDER_FILES:
                return
            try:
                if e.is_dir():
                    if depth + 1 < _FOLDER_DEPTH:
                        todo.append((Path(e.path), depth + 1))
                elif e.is_file():
                    yield Path(e.path)
            except OSError:
                continue


def check_output(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    *,
    force: bool = False,
    flag: str = "--out",
) -> None:
    """Refuse an output path that would destroy an input or a file infospec did not write.

    Parameters
    ----------
    out : str or path-like
        The output file (a symbolic link counts as its target).
    inputs : iterable of paths
        The files and folders the command reads (``None`` items are ignored). A folder
        stands for the files under it (three levels deep), except infospec's own outputs
        (a report written into the model folder can be written again).
    force : bool, default False
        Allow replacing an existing file that is not an infospec output. An input file is
        never replaced, even with ``force``.
    flag : str, default "--out"
        The option named in the messages.

    Raises
    ------
    InputError
        If ``out`` is an input file (same resolved path or same inode), a directory, or an
        existing file that infospec did not write and ``force`` is False.
    """
    given = Path(out)
    target = output_path(given)
    shown = f"'{given}'" if target == given else f"'{given}' (a link to '{target}')"
    if target.is_dir():
        raise InputError(f"{flag} {shown} is a directory; give a file path.")
    ident = _identity(target)
    real = os.path.realpath(target)
    for item in inputs:
        if item is None:
            continue
        src = Path(item)
        if src.is_dir():
            if not os.path.exists(real):
                continue
            inside = Path(real).is_relative_to(os.path.realpath(src))
            if (inside and not is_infospec_output(target)) or (
                ident is not None
                and any(
                    _identity(f) == ident and not is_infospec_output(f) for f in _folder_files(src)
                )
            ):
                raise InputError(
                    f"{flag} {shown} is a file of the input folder '{src}'; infospec never "
                    f"writes over its inputs. Give another output path."
                )
        elif os.path.realpath(src) == real or (ident is not None and _identity(src) == ident):
            raise InputError(
                f"{flag} {shown} is the input file '{src}'; infospec never writes over its "
                f"inputs. Give another output path."
            )
    if ident is not None and not force and not is_infospec_output(target):
        raise InputError(
            f"{flag} {shown} exists and is not a report infospec wrote; pass --force to "
            f"replace it, or give another output path."
        )


def _os_error(target: Path, exc: OSError) -> InputError:
    why = {
        errno.EROFS: "the filesystem is read-only",
        errno.ENOSPC: "the filesystem is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "the operation is not permitted",
    }.get(exc.errno, exc.strerror or str(exc))
    return InputError(
        f"Cannot write the output to '{target}': {why}; nothing was written there. Give a "
        f"writable path (--out)."
    )


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    On an exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left untouched. The rename is atomic on POSIX and Windows filesystems.
    A symbolic link ``path`` is written through: the temporary file goes beside the
    link's target and replaces it, the link itself is kept. An existing target keeps its
    permission bits (and, where the process may, its owner); a new file gets those of
    :func:`open` (``0666`` less the umask).

    Raises
    ------
    InputError
        If the parent directory of ``path`` does not exist, ``path`` is a directory, or
        the system refuses the write (a read-only or full filesystem, no permission, a
        virtual filesystem such as ``/proc``): one message naming the path, with no
        temporary file left behind.
    """
    target = output_path(path)
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
    try:
        old = os.stat(target)
    except OSError:
        old = None
    binary = "b" in mode
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise _os_error(target, exc) from exc
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if old is not None and stat.S_ISREG(old.st_mode):
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
            if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                with contextlib.suppress(OSError):
                    os.chown(tmp, old.st_uid, old.st_gid)
        else:
            # mkstemp creates 0600; give the file the permissions open() would (0666 &
            # ~umask), with the umask read once at import (reading it means setting it)
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise _os_error(target, exc) from exc
        raise
