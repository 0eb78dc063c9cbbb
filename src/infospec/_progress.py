"""Progress on stderr: a tqdm bar on a terminal, plain lines at a low rate otherwise.

``enabled`` follows the CLI's ``--progress`` / ``--no-progress`` (``True`` / ``False``) and
its default (``None``):

* ``None``: a tqdm bar when stderr is a terminal, nothing otherwise (library calls,
  notebooks' captured logs and test runs stay quiet);
* ``True``: a tqdm bar on a terminal; without one (a CI log, ``nohup``, a pipe), plain
  lines such as ``activations: 3/8 batch (38 %), 12 s, about 20 s left``, at most one
  every :data:`LINE_INTERVAL` seconds, and a final line with the total time;
* ``False``: nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["LINE_INTERVAL", "PlainProgress", "progress_bar"]

#: Seconds between two plain progress lines.
LINE_INTERVAL = 10.0


class PlainProgress:
    """Progress as plain text lines on stderr, rate-limited: the tqdm subset the callers use.

    Parameters
    ----------
    iterable : iterable, optional
        Items to yield (counted one each); None for a manual bar (:meth:`update`).
    total : int, optional
        Number of items, for the percentage and the time left.
    desc, unit : str
        What is counted (``unit`` is printed as given: ``batch``, ``layer``).
    interval : float, optional
        Least seconds between two lines (default :data:`LINE_INTERVAL`); the first comes
        after ``interval`` seconds, and the final line (at the end of the iteration or at
        :meth:`close`) always.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None,
        desc: str,
        unit: str,
        interval: float | None = None,
    ) -> None:
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.interval = LINE_INTERVAL if interval is None else interval
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._closed = False

    def _line(self, final: bool) -> str:
        elapsed = time.monotonic() - self._start
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        text = f"{self.desc}: {done} {self.unit}"
        if final:
            text += f" in {elapsed:.1f} s"
        else:
            if self.total:
                text += f" ({100 * self.n / self.total:.0f} %)"
            text += f", {elapsed:.0f} s"
            if self.total and self.n:
                left = elapsed * (self.total - self.n) / self.n
                text += f", about {left:.0f} s left"
        if self.postfix:
            text += f" [{self.postfix}]"
        return text

    def _print(self, final: bool) -> None:
        print(self._line(final), file=sys.stderr, flush=True)
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; print a line if ``interval`` seconds passed since the last."""
        self.n += n
        if self.total is not None and self.n >= self.total:
            return  # the final line follows
        if time.monotonic() - self._last >= self.interval:
            self._print(final=False)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Text appended to the next lines (tqdm's signature; ``refresh`` is ignored)."""
        self.postfix = s

    def close(self) -> None:
        """Print the final line (once)."""
        if not self._closed:
            self._closed = True
            self._print(final=True)

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("a manual PlainProgress (iterable=None) is not iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None,
    desc: str,
    unit: str,
    enabled: bool | None,
    leave: bool = False,
) -> Any:
    """Progress over ``iterable`` (or a manual bar when it is None), showing done and left.

    ``enabled``: see the module docstring (``None``: a bar on a terminal only; ``True``: a
    bar on a terminal, else :class:`PlainProgress` lines). Without progress, returns
    ``iterable`` unchanged (None for a manual bar), so callers iterate either way.
    """
    terminal = sys.stderr.isatty()
    if enabled is False or (enabled is None and not terminal):
        return iterable
    if not terminal:
        return PlainProgress(iterable, total=total, desc=desc, unit=unit)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the io extra
        return PlainProgress(iterable, total=total, desc=desc, unit=unit)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr)
