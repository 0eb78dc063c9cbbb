"""Checks of scalar options that need neither torch nor NumPy (kept light for start-up).

:mod:`infospec._validation` re-exports them beside the tensor checks.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable
from typing import Any

from ._errors import InputError

__all__ = [
    "check_choice",
    "check_positive",
    "check_probability",
    "count_in_range",
    "real_above",
    "real_value",
    "shown",
    "shown_str",
]


def _format(value: Any) -> str:
    return shown(value) if isinstance(value, str) else shown_str(value)


def _bounded(text_of: Any, value: Any) -> str:
    """``text_of(value)`` (repr or str), at most 60 characters; a value whose text Python
    refuses (an int past 4300 digits) is described instead."""
    try:
        text = text_of(value)
    except ValueError:
        text = _unprintable(value)
    return text if len(text) <= 60 else text[:57] + "..."


def shown_str(value: Any) -> str:
    """``str(value)`` for a message, bounded (see :func:`_bounded`)."""
    return _bounded(str, value)


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
        try:
            v = int(value) if integer else float(value)
        except OverflowError:  # an int beyond float64: not a finite float
            v = math.inf
        if (integer or math.isfinite(v)) and (v >= 0 if allow_zero else v > 0):
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
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        if (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1):
            return v
    raise InputError(
        f"The '{name}' parameter of {func} must be a float in {lo}0, 1{hi}. "
        f"Got {_format(value)} instead."
    )


def check_choice(value: Any, name: str, func: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise, listing the valid choices."""
    choices = tuple(choices)
    try:  # an array is unhashable (and compares elementwise): never a choice
        hash(value)
        ok = bool(value in choices)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise InputError(
            f"The '{name}' parameter of {func} must be one of {listed}. "
            f"Got {_format(value)} instead."
        )
    return value


def _unprintable(value: Any) -> str:
    """What to print for a value whose text Python refuses (an int past 4300 digits)."""
    if isinstance(value, int):
        return f"an int of about {int(value.bit_length() * math.log10(2))} digits"
    return f"a {type(value).__name__} holding an int too long to print"


def shown(value: Any) -> str:
    """``repr(value)`` for a message, bounded (see :func:`_bounded`)."""
    return _bounded(repr, value)


def count_in_range(value: Any, what: str, *, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; ``what`` names it in the error message.

    Python, NumPy and 0-d tensor integers pass, and integral floats (a JSON config may write
    ``4096.0``); bools, strings, other floats, NaN and infinities do not.
    """
    v = None
    if not isinstance(value, (bool, str, bytes)):
        try:
            v = operator.index(value)
        except TypeError:
            if isinstance(value, numbers.Real) and math.isfinite(value) and value == int(value):
                v = int(value)
    if v is None or v < low or (high is not None and v > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InputError(f"{what} must be an int {bound}. Got {shown(value)} instead.")
    return v


def real_value(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool, array or tensor), else None;
    an int beyond float64 reads as an infinity (``float()`` raises OverflowError)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return None


def real_above(value: Any, what: str, *, above: float = 0.0) -> float:
    """``value`` as a finite float ``> above``; ``what`` names it in the error."""
    v = real_value(value)
    if v is not None and math.isfinite(v) and v > above:
        return v
    raise InputError(f"{what} must be a finite number > {above:g}. Got {shown(value)} instead.")
