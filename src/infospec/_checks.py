"""Checks of scalar options that need neither torch nor NumPy (kept light for start-up).

:mod:`infospec._validation` re-exports them beside the tensor checks.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

from ._errors import InputError

__all__ = ["check_choice", "check_positive", "check_probability"]


def _format(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value}"


def check_positive(
    value: Any, name: str, func: str, *, allow_zero: bool = False, integer: bool = False
) -> float | int:
    """Return ``value`` as a Python number after checking it is a finite number > 0 (or >= 0)."""
    kind = "an int" if integer else "a float"
    bound = ">= 0" if allow_zero else "> 0"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real)
    if isinstance(value, bool):
        ok_type = False
    if ok_type:
        v = int(value) if integer else float(value)
        if math.isfinite(v) and (v >= 0 if allow_zero else v > 0):
            return v
    raise InputError(
        f"The '{name}' parameter of {func} must be {kind} {bound}. Got {_format(value)} instead."
    )


def check_probability(
    value: Any, name: str, func: str, *, low_open: bool = True, high_open: bool = False
) -> float:
    """Return ``value`` as a float after checking it lies in (0, 1] (bounds configurable)."""
    lo, hi = ("(" if low_open else "["), ("]" if not high_open else ")")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1):
            return v
    raise InputError(
        f"The '{name}' parameter of {func} must be a float in {lo}0, 1{hi}. "
        f"Got {_format(value)} instead."
    )


def check_choice(value: Any, name: str, func: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise, listing the valid choices."""
    choices = tuple(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise InputError(
            f"The '{name}' parameter of {func} must be one of {listed}. "
            f"Got {_format(value)} instead."
        )
    return value
