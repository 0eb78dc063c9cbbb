"""Progress bars: tqdm on stderr when it is a terminal (or when asked), nothing otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None,
    desc: str,
    unit: str,
    enabled: bool | None,
    leave: bool = False,
) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one when it is None), showing done and left.

    ``enabled=None`` means: when stderr is a terminal. Without a bar, returns ``iterable``
    unchanged (None for a manual bar), so callers iterate either way.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is in the io extra
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr)
