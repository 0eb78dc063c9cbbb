"""The safetensors format: dtype codes, a header's tensors, and the JSON rules of a header.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the data region that follows the header), and the data region, which the
tensors must cover exactly, without gaps or overlaps. This module holds what the header's
readers share (:mod:`.safetensors_header`, :mod:`.safetensors_bulk`): the dtype table, the
record types and the hardened JSON parser of untrusted text.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .._errors import SourceError
from .._text import printable

__all__ = ["MAX_HEADER_BYTES", "SafetensorsHeader", "TensorInfo"]

if TYPE_CHECKING:  # reading headers needs no torch; loading tensors does
    pass

#: safetensors' own limit on the header size (bytes).
MAX_HEADER_BYTES = 100_000_000

# safetensors dtype code -> (torch dtype name, or None if torch has none; bits per element)
_DTYPES: dict[str, tuple[str | None, int]] = {
    "BOOL": ("bool", 8),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "U16": ("uint16", 16),
    "I16": ("int16", 16),
    "U32": ("uint32", 32),
    "I32": ("int32", 32),
    "U64": ("uint64", 64),
    "I64": ("int64", 64),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "F32": ("float32", 32),
    "F64": ("float64", 64),
    "C64": ("complex64", 64),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F6_E2M3": (None, 6),
    "F6_E3M2": (None, 6),
    "F4": (None, 4),
}

_U64 = 2**64
_BITS = {code: bits for code, (_, bits) in _DTYPES.items()}
_TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class TensorInfo(NamedTuple):
    """One tensor of a safetensors header.

    Attributes
    ----------
    dtype : str
        safetensors dtype code (``"F32"``, ``"BF16"``...).
    shape : tuple of int
        Shape.
    begin, end : int
        Byte offsets of the data, relative to the start of the data region.
    """

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


_TENSOR_INFO = TensorInfo._make


class SafetensorsHeader(NamedTuple):
    """The checked header of a safetensors file.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    tensors : mapping of str to TensorInfo
        Every tensor, in the header's order: a read-only mapping backed by columns (a
        name list and arrays of offsets) for a header checked in bulk, else a dict.
    metadata : dict of str to str
        The optional ``__metadata__`` block.
    data_start : int
        Byte offset of the data region in the file (``8 + header length``).
    file_size : int
        Size of the file in bytes.
    """

    path: Path
    tensors: Mapping[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int
    file_size: int


def _fail(path: Path, problem: str) -> SourceError:
    return SourceError(f"The safetensors file '{path}' {problem}")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: a dict, refusing a key given twice (JSON allows it)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _loads(
    text: str,
    fail: Callable[[str], SourceError],
    where: Callable[[Any], str],
    hook: Callable[[list], Any] = _unique_pairs,
) -> Any:
    """``json.loads`` of untrusted text: every failure a :class:`SourceError`.

    ``fail(problem)`` builds the error from a phrase (``"is not valid JSON (...)"``);
    ``where(exc)`` says where a syntax error is. Refused, beside invalid JSON: a key given
    twice in one object, nesting deeper than Python's recursion limit (a
    ``RecursionError`` otherwise) and an integer of more than 4300 digits (Python's
    limit on converting digits to an int). No part of the text is echoed.
    """
    try:
        with _no_gc():
            return json.loads(text, object_pairs_hook=hook)
    except _DuplicateKey as exc:
        raise fail(f"has the key '{printable(exc.key, 200)}' twice in one object") from None
    except json.JSONDecodeError as exc:
        raise fail(f"is not valid JSON ({exc.msg} at {where(exc)})") from None
    except RecursionError:
        raise fail(
            f"is nested too deeply (objects or arrays inside each other more than about "
            f"{sys.getrecursionlimit()} levels)"
        ) from None
    except ValueError as exc:  # int('9' * 5000): over sys.get_int_max_str_digits()
        digits = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
        if "digits" not in str(exc):
            raise fail(f"cannot be read as JSON ({type(exc).__name__})") from None
        raise fail(f"holds an integer of more than {digits} digits") from None


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a while (back on after, if it was on).

    Parsing a JSON text of a million objects, the collector walks every container made
    so far again and again as they pile up (none of them can be garbage): a plain
    ``json.loads`` of a million-tensor header takes 8 s with it, 1.5 s without.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _elements(shape: list[int]) -> int | None:
    """The number of elements of ``shape``, or None where safetensors' product overflows.

    safetensors multiplies the dimensions in order in 64 bits: ``[2**32, 2**32, 0]``
    overflows before it reaches the 0, ``[0, 2**32, 2**32]`` does not.
    """
    n = math.prod(shape)
    if n == 0 and shape:
        n = math.prod(shape[: shape.index(0)])
        return 0 if n < _U64 else None
    return n if n < _U64 else None
