"""Weights read lazily from safetensors files: one file, a sharded checkpoint, a model folder.

Opening a source reads and checks only the headers; each tensor is read when its
entry's :meth:`~infospec.sources.WeightEntry.load` is called, through a memory map of
its file, one at a time, so a checkpoint larger than memory can be analysed.

The header is checked here before safetensors sees the file, so that a damaged file
fails at once with a message naming it and the problem. A safetensors file is an
8-byte little-endian header length ``n``, ``n`` bytes of JSON mapping each tensor name
to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data
region that follows the header), and the data region, which the tensors must cover
exactly, without gaps or overlaps.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import operator
import os
import re
import struct
import sys
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .._checks import check_positive
from .._errors import SourceError
from .._text import printable
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, natural_key
from .formats import regular_file, sniff
from .fp8 import block_size
from .listing import EntryTable, TensorMeta, entry_table, meta_columns
from .order import order_note

if TYPE_CHECKING:  # reading headers needs no torch; loading tensors does
    import torch

__all__ = ["SafetensorsHeader", "SafetensorsSource", "TensorInfo", "read_safetensors_header"]

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

# Hugging Face model types whose checkpoints store GPT-2's transposed Conv1D weights,
# and the modules that are Conv1D in them.
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
_CONV1D_MODULES = frozenset({"c_attn", "q_attn", "c_proj", "c_fc"})

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

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
_META = functools.partial(tuple.__new__, TensorMeta)


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


def _header_object(pairs: list[tuple[str, Any]]) -> Any:
    """The object hook of a safetensors header: a valid tensor entry becomes a TensorInfo.

    Checked as the JSON is parsed, an entry written as safetensors writes it (``dtype``,
    ``shape``, ``data_offsets``, in that order) never becomes a dict: a header of a
    million tensors then takes a third of the memory. Anything else is a dict (a key
    given twice refused), checked afterwards with the reason if it is wrong.
    """
    if len(pairs) == 3:
        (k1, dtype), (k2, shape), (k3, offsets) = pairs
        if k1 == "dtype" and k2 == "shape" and k3 == "data_offsets":
            info = _checked_info(dtype, shape, offsets)
            if info is not None:
                return info
    return _unique_pairs(pairs)


def _checked_info(dtype: Any, shape: Any, offsets: Any) -> TensorInfo | None:
    """The TensorInfo of a valid entry, or None (then :func:`_entry_problem` says why)."""
    bits = _BITS.get(dtype) if type(dtype) is str else None
    if bits is None or type(shape) is not list or type(offsets) is not list:
        return None
    if len(offsets) != 2 or not all(type(s) is int and 0 <= s < _U64 for s in shape):
        return None
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or not 0 <= begin <= end < _U64:
        return None
    n = _elements(shape)
    if n is None or n * bits != (end - begin) * 8:
        return None
    return _TENSOR_INFO((dtype, tuple(shape), begin, end))


def _name(name: str) -> str:
    """A tensor name for a message: escaped, and shortened past 200 characters."""
    return printable(name, 200)


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


def _tensor_info(path: Path, name: str, raw: Any) -> TensorInfo:
    """One header entry checked as safetensors checks it (or more strictly)."""
    if type(raw) is TensorInfo:  # checked by _header_object while parsing
        return raw
    if type(raw) is dict and len(raw) == 3:
        info = _checked_info(raw.get("dtype"), raw.get("shape"), raw.get("data_offsets"))
        if info is not None:
            return info
    raise _entry_problem(path, name, raw)


def _entry_problem(path: Path, name: str, raw: Any) -> SourceError:
    """Why a header entry is refused (it failed :func:`_tensor_info`'s checks)."""

    def bad(problem: str) -> SourceError:
        return _fail(path, f"has a malformed header entry for tensor '{_name(name)}': {problem}.")

    if not isinstance(raw, dict):
        return bad(f"expected an object, got {_json_type(raw)}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in raw]
    if missing:
        return bad(f"missing {', '.join(repr(k) for k in missing)}")
    extra = [k for k in raw if k not in _TENSOR_KEYS]
    if extra:
        return bad(
            f"unexpected key '{_name(extra[0])}' (an entry holds only 'dtype', 'shape' and "
            f"'data_offsets')"
        )
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        shown = repr(printable(dtype, 40)) if isinstance(dtype, str) else _json_type(dtype)
        return bad(f"unknown dtype {shown} (known: {', '.join(_DTYPES)})")
    if not isinstance(shape, list):
        return bad(f"shape must be a list of non-negative integers, got {_json_type(shape)}")
    for s in shape:
        if type(s) is not int:
            return bad(
                f"shape must be a list of non-negative integers, got an element that is "
                f"{_json_type(s)}"
            )
        if not 0 <= s < _U64:
            return bad(
                "shape must be a list of non-negative integers below 2**64, got "
                + ("a negative element" if s < 0 else "an element of 2**64 or more")
            )
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int for o in offsets)
    ):
        return bad(
            f"data_offsets must be [begin, end], two integers; got {_json_type(offsets)}"
            + (f" of {len(offsets)} elements" if isinstance(offsets, list) else "")
        )
    begin, end = offsets
    if not 0 <= begin <= end < _U64:
        span = "begin > end" if 0 <= end < begin < _U64 else "an offset outside 0 to 2**64 - 1"
        return bad(f"data_offsets must be [begin, end] with 0 <= begin <= end < 2**64, got {span}")
    n = _elements(shape)
    if n is None:
        return bad(f"the product of its shape's {len(shape)} dimensions overflows 64 bits")
    need_bits = n * _BITS[dtype]
    small = len(shape) <= 8 and all(s < 10**12 for s in shape)
    shown = tuple(shape) if small else f"of {len(shape)} dimensions"
    return bad(
        f"shape {shown} of dtype {dtype} needs {need_bits / 8:g} bytes but its "
        f"data_offsets span {end - begin} bytes"
    )


def _json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words, without its content."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, TensorInfo):  # a valid tensor entry, checked while parsing
        return "an object"
    for kind, word in (
        (int, "an integer"),
        (float, "a number with a fraction or an exponent"),
        (str, "a string"),
        (list, "an array"),
        (dict, "an object"),
    ):
        if isinstance(value, kind):
            return word
    return "null"


# -- the fast path: a header written as safetensors writes it, checked in bulk ---------------
_INT = r"(?:0|[1-9][0-9]{0,19})"  # a JSON integer (no leading zero, no sign) of <= 20 digits
_W = r"[ \t\n\r]*"  # JSON whitespace
_WS = " \t\n\r"


def _entry_pattern(w: str) -> re.Pattern[str]:
    """One entry, its keys in safetensors' order, with ``w`` between tokens.

    Groups: the name (no escape, no control character: the JSON string is its text),
    dtype and shape together (the shape's integers checked by _kinds, once per distinct
    text), begin, end.
    """
    return re.compile(
        rf'"([^"\\\x00-\x1f]*)"{w}:{w}\{{{w}"dtype"{w}:{w}"([A-Z0-9_]{{1,16}}"{w},{w}"shape"'
        rf'{w}:{w}\[[0-9,{_WS}]*)\]{w},{w}"data_offsets"{w}:{w}\[{w}({_INT}){w},{w}'
        rf"({_INT}){w}\]{w}\}}"
    )


#: As safetensors writes it (no space), and as ``json.dumps`` writes it with its default
#: separators or an indent (whitespace between tokens): one pattern per header.
_ENTRY = _entry_pattern("")
_ENTRY_SPACED = _entry_pattern(_W)
_OPEN = re.compile(rf'{_W}\{{{_W}(?:("__metadata__"){_W}:{_W})?')
#: Between two entries: the end of one and the start of the next name.
_NEXT = re.compile(rf'\}}{_W},{_W}"')
_NEXT_AFTER_METADATA = re.compile(rf'{_W},{_W}(?=")')
#: Entries are split in chunks of about this many characters (bounded temporary memory).
_CHUNK = 1 << 22


class _TensorTable(Mapping):
    """The tensors of a header read by the fast path: columns, a TensorInfo when asked.

    A read-only mapping of each name to its :class:`TensorInfo`, in the header's order,
    holding a name list, each tensor's ``(dtype, shape)`` kind as an index into a short
    list, and the offsets in two ``array('Q')``: a header of a million tensors takes
    about 80 MB instead of 400 MB of one object per tensor.
    """

    __slots__ = ("_begins", "_ends", "_index", "kind_ids", "kinds", "names")

    def __init__(self, names, kind_ids, kinds, begins, ends) -> None:
        self.names: list[str] = names
        self.kind_ids: array = kind_ids
        self.kinds: list[tuple[str, tuple[int, ...]]] = kinds
        self._begins, self._ends = begins, ends
        self._index: dict[str, int] | None = None

    def _position(self, name: str) -> int:
        if self._index is None:  # built when a name is first looked up (not to list)
            self._index = {name: i for i, name in enumerate(self.names)}
        return self._index[name]

    def __getitem__(self, name: str) -> TensorInfo:
        i = self._position(name)
        dtype, shape = self.kinds[self.kind_ids[i]]
        if self._begins is not None:
            begin = self._begins[i]
        else:  # stored contiguously in the header's order
            begin = self._ends[i - 1] if i else 0
        return _TENSOR_INFO((dtype, shape, begin, self._ends[i]))

    def __contains__(self, name: object) -> bool:
        try:
            self._position(name)  # type: ignore[arg-type]
        except (KeyError, TypeError):
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"<{len(self)} safetensors tensors>"


def _fast_header(text: str, data_size: int) -> tuple[_TensorTable, dict[str, str]] | None:
    """The tensors and metadata of a header laid out as safetensors writes it, or None.

    safetensors writes ``{"__metadata__":{...},"name":{"dtype":..,"shape":[..],
    "data_offsets":[b,e]},...}`` with no space, padded with spaces; ``json.dumps`` of
    the same object writes the same tokens with whitespace between them (its default
    ``", "`` and ``": "``, or an indent). Such a header is split by one regular
    expression (in C) in chunks, its numbers converted in bulk and checked over arrays:
    every name once, a known dtype, dimensions and offsets below 2**64, a shape whose
    product does not overflow and whose bytes equal the span, and spans that tile the
    data region. Whatever is not exactly so (escapes in a name, other key orders, an
    error of any kind) gives None, and the header is then parsed and checked entry by
    entry, which says what is wrong: this path decides no refusal, it only accepts what
    the full check would accept.
    """
    opening = _OPEN.match(text)
    if opening is None:
        return None
    pos, metadata = opening.end(), {}
    if opening.group(1):  # the metadata first, as safetensors writes it
        try:
            metadata, pos = json.JSONDecoder(object_pairs_hook=_unique_pairs).raw_decode(text, pos)
        except (ValueError, RecursionError):
            return None
        if (
            type(metadata) is not dict
            or not all(type(v) is str for v in metadata.values())
            or _SURROGATE_ESCAPE.search(text, opening.end(), pos)
        ):
            return None
        comma = _NEXT_AFTER_METADATA.match(text, pos)
        if comma is None:
            return None
        pos = comma.end()
    tail = text[-64:]  # the closing brace, then the padding (at most 7 spaces)
    stop = len(text) - (len(tail) - len(tail.rstrip(_WS))) - 1
    if stop <= pos or text[stop] != "}":
        return None
    if _ENTRY.match(text, pos):
        pattern, spaced = _ENTRY, False
    elif _ENTRY_SPACED.match(text, pos):
        pattern, spaced = _ENTRY_SPACED, True
        inner = text[max(pos, stop - 64) : stop]  # whitespace before the closing brace
        stop -= len(inner) - len(inner.rstrip(_WS))
    else:
        return None
    names: list[str] = []
    kind_of: dict[str, int] = {}
    kind_ids, ends = array("L"), array("Q")
    begins: array | None = None  # None while each tensor begins where the one before ends
    last = "0"  # the end of the tensor before, as written
    try:
        while pos < stop:
            after = _NEXT.search(text, pos + _CHUNK, stop) if stop - pos > _CHUNK else None
            cut = stop if after is None else after.start() + 1
            parts = pattern.split(text[pos:cut])
            seps = parts[5:-1:5]
            if parts[0] or parts[-1] or len(parts) < 6:
                return None
            if spaced:
                if any(sep.strip(_WS) != "," for sep in set(seps)):
                    return None
            elif seps.count(",") != len(seps):
                return None
            names += parts[1::5]
            combos = parts[2::5]
            for combo in set(combos).difference(kind_of):
                kind_of[combo] = len(kind_of)
            kind_ids.extend(map(kind_of.__getitem__, combos))
            firsts, lasts = parts[3::5], parts[4::5]
            if begins is None and (firsts[0] != last or firsts[1:] != lasts[:-1]):
                begins = array("Q", [0]) + ends[:-1] if ends else array("Q")
            if begins is not None:  # not in the data's order: every begin converted
                begins.extend(map(int, firsts))
            ends.extend(map(int, lasts))
            last = lasts[-1]
            del parts, seps, combos, firsts, lasts
            pos = stop if after is None else after.end() - 1  # at the next name's quote
        kinds, sizes, canonical = _kinds(kind_of)
        if kinds is None:
            return None
        if canonical is not None:  # one kind written with different whitespace
            kind_ids = array("L", map(canonical.__getitem__, kind_ids))
        need = map(sizes.__getitem__, kind_ids)
        if begins is None:  # contiguous from 0: the ends are the running sum of the sizes
            if ends != array("Q", accumulate(need)) or ends[-1] != data_size:
                return None
        elif array("Q", map(operator.sub, ends, begins)) != array("Q", need):
            return None  # (a negative span is an OverflowError)
        if begins is not None and not _tiles(begins, ends, data_size):
            return None
    except OverflowError:  # an offset of 2**64 or more, begin > end
        return None
    unique = set(names)
    if len(unique) != len(names) or "__metadata__" in unique:
        return None
    del unique
    return _TensorTable(names, kind_ids, kinds, begins, ends), metadata


def _kinds(kind_of: dict[str, int]) -> tuple[list | None, list[int], list[int] | None]:
    """Each ``'DTYPE","shape":[d,..'`` text as (dtype, shape), its size in bytes, and
    where texts differ only in whitespace, the index of each text's first kind."""
    kinds: list = []
    sizes: list[int] = []
    first: dict[tuple[str, tuple[int, ...]], int] = {}
    canonical = [0] * len(kind_of)
    for combo, i in kind_of.items():  # in the order of the ids
        dtype = combo[: combo.index('"')]
        dims = combo[combo.index("[") + 1 :]
        texts = [d.strip(_WS) for d in dims.split(",")] if dims.strip(_WS) else []
        if not all(0 < len(d) <= 20 and d.isdigit() and (d[0] != "0" or d == "0") for d in texts):
            return None, [], None  # not JSON integers (1,,2, 01 or 1 2), or past 2**64 surely
        shape = tuple(int(d) for d in texts)
        bits = _BITS.get(dtype)
        n = _elements(list(shape)) if all(d < _U64 for d in shape) else None
        if bits is None or n is None or n * bits % 8:
            return None, [], None
        kind = (dtype, shape)
        if kind not in first:
            first[kind] = len(kinds)
            kinds.append(kind)
            sizes.append(n * bits // 8)
        canonical[i] = first[kind]
    same = len(kinds) == len(kind_of)  # then canonical is the identity
    return kinds, sizes, None if same else canonical


def _tiles(begins: array, ends: array, data_size: int) -> bool:
    """Whether the spans ``[begin, end)`` cover ``[0, data_size)`` without gap or overlap.

    Sorted by begin, then end (empty tensors first), and compared as whole arrays (in C).
    """
    order = sorted(sorted(range(len(begins)), key=ends.__getitem__), key=begins.__getitem__)
    begins = array("Q", map(begins.__getitem__, order))
    ends = array("Q", map(ends.__getitem__, order))
    return begins[0] == 0 and ends[-1] == data_size and begins[1:] == ends[:-1]


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and check the header of a safetensors file, without reading tensor data.

    Checks, each failing with a :class:`SourceError` that names the file (and never
    echoes its bytes): the file exists, is a regular file and is at least 8 bytes long;
    the declared header length fits in the file and safetensors' 100 MB limit; the
    header is UTF-8 JSON (no key twice in an object, nested less deep than Python's
    recursion limit, no integer of more than 4300 digits), an object whose
    ``__metadata__`` (if any) maps strings to strings and whose other entries hold
    exactly ``dtype`` (a known one), ``shape`` (integers in ``[0, 2**64)``, whose
    product does not overflow 64 bits) and ``data_offsets`` (``0 <= begin <= end <
    2**64``) whose span matches shape and dtype; no name holds a lone surrogate; the
    tensors' data lies inside the file and covers the data region exactly (a truncated
    file is reported as such). Every file that safetensors itself refuses is refused
    here, with the reason, so that a file that lists reads; this is stricter than
    safetensors on a name given twice and on unknown keys in an entry.

    Checking is linear in the header's size. A header laid out as safetensors writes it
    (the keys of each entry in its order, names without escapes), with no space or with
    JSON whitespace between tokens (as ``json.dumps`` writes it), is checked in bulk, in
    C, with the same rules (a million tensors, 70 MB: about 1.1 s of CPU and 250 MB on a
    2-core machine; 1.5 s written by ``json.dumps``); any other is parsed and checked
    entry by entry, which also says what is wrong with a header that fails (a million
    tensors with the keys in another order: about 5 s).

    Parameters
    ----------
    path : str or path-like
        The ``.safetensors`` file.

    Returns
    -------
    SafetensorsHeader
        The tensors' dtypes, shapes and offsets, and the metadata.

    Raises
    ------
    SourceError
        If the file is missing, unreadable, not a regular file (a FIFO, a device),
        truncated or not a valid safetensors file.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from safetensors.torch import save_file
    >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
    >>> save_file({"w": torch.zeros(3, 4, dtype=torch.bfloat16)}, path)
    >>> read_safetensors_header(path).tensors["w"]
    TensorInfo(dtype='BF16', shape=(3, 4), begin=0, end=24)
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise _fail(path, "is a folder, not a file.")
    size = regular_file(path)
    not_st = "it is not a safetensors file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            if len(head) < 8:
                raise _fail(
                    path,
                    f"is {size} bytes long, too short for a safetensors file (which starts "
                    f"with an 8-byte header length): it is empty, truncated or not safetensors.",
                )
            (n,) = struct.unpack("<Q", head[:8])
            if n == 0:
                raise _fail(path, f"declares an empty header: {not_st}.")
            # a length past the file, with no '{' (or JSON whitespace) after it, is no
            # length but the file's content, never printed (the start of /etc/passwd
            # reads as a header length of 3475222254926655346)
            first = head[8:9]
            if n > min(size - 8, MAX_HEADER_BYTES) and first not in (
                b"{",
                b" ",
                b"\t",
                b"\r",
                b"\n",
            ):
                raise _fail(
                    path,
                    f"is not a safetensors file: it does not start with an 8-byte header "
                    f"length and a JSON object (it looks like {_looks_like(path, head)}).",
                )
            if n > MAX_HEADER_BYTES:
                raise _fail(
                    path,
                    f"declares a header of {n} bytes, over safetensors' limit of "
                    f"{MAX_HEADER_BYTES} bytes: {not_st}.",
                )
            if n > size - 8:
                raise _fail(
                    path,
                    f"declares a header of {n} bytes but only {size - 8} bytes follow the "
                    f"length field: the file is truncated or not a safetensors file.",
                )
            raw = head[8:] + fh.read(n - 1)
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror or type(exc).__name__}.") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(
            path,
            f"has a header that is not UTF-8 text ({exc.reason} at byte {8 + exc.start}): "
            f"it is corrupt or not a safetensors file.",
        ) from None
    del raw
    data_start = 8 + n
    checked = _fast_header(text, size - data_start)
    if checked is None:  # parsed and checked entry by entry, saying what is wrong
        with _no_gc():
            header, metadata = _parsed_header(path, text)
            del text
            checked = _checked_entries(path, header, data_start, size), metadata
    return SafetensorsHeader(path, checked[0], checked[1], data_start, size)


def _parsed_header(path: Path, text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Any header as JSON: its entries (checked while parsed where valid) and metadata."""
    header = _loads(
        text,
        lambda problem: _fail(
            path, f"has a header that {problem}: it is corrupt or not a safetensors file."
        ),
        lambda exc: f"byte {8 + exc.pos}",
        _header_object,
    )
    if type(header) is TensorInfo:  # the header is one entry, not a map of entries
        header = {"dtype": header.dtype, "shape": header.shape, "data_offsets": header[2:]}
    if not isinstance(header, dict):
        raise _fail(path, f"has a JSON header that is {_json_type(header)}, not an object.")

    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        got = (
            _json_type(metadata)
            if not isinstance(metadata, dict)
            else "a value that is not a string"
        )
        raise _fail(
            path,
            f"has a malformed __metadata__ block (it must map strings to strings; got {got}).",
        )
    if _SURROGATE_ESCAPE.search(text):  # only a \\udXXX escape can make a lone surrogate
        for name in (*header, *metadata, *metadata.values()):
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail(
                    path,
                    f"has a name or metadata string with a lone surrogate "
                    f"('{_name(name)}'), which is not valid Unicode and which safetensors "
                    f"refuses: the file is corrupt.",
                ) from None
    return header, dict(metadata)


def _checked_entries(
    path: Path, header: dict[str, Any], data_start: int, size: int
) -> dict[str, TensorInfo]:
    """The entries of a parsed header checked one by one, and their spans in order."""
    tensors = {name: _tensor_info(path, name, raw_info) for name, raw_info in header.items()}
    header.clear()

    data_size = size - data_start
    expected = 0
    previous = None
    # (begin, end, name) sorted in C: a million tensors in a fraction of a second
    spans = sorted(
        zip(
            [info.begin for info in tensors.values()],
            [info.end for info in tensors.values()],
            tensors,
            strict=True,
        )
    )
    for begin, end, name in spans:
        if end > data_size:
            raise _fail(
                path,
                f"is truncated: tensor '{_name(name)}' ends at byte {data_start + end} but "
                f"the file has only {size} bytes. Copy or download it again.",
            )
        if begin != expected:
            what = "overlaps" if begin < expected else "leaves a gap after"
            raise _fail(
                path,
                f"is corrupt: the data of tensor '{_name(name)}' (bytes {begin}-{end} of "
                f"the data region) {what} the previous tensor"
                + (f" '{_name(previous)}'" if previous is not None else "")
                + ".",
            )
        expected = end
        previous = name
    del spans
    if expected != data_size:
        raise _fail(
            path,
            f"has {data_size - expected} bytes after the last tensor's data, which "
            f"safetensors refuses: the file is corrupt.",
        )
    return tensors


def _looks_like(path: Path, head: bytes) -> str:
    """What a file looks like, in words, never its bytes: a known format, text or binary."""
    fmt = sniff(path)
    if fmt != "unknown":
        return f"a file in the format '{fmt}'"
    if all(32 <= b < 127 or b in (9, 10, 13) or b >= 0x80 for b in head):
        return "text"
    return "binary data in no format infospec knows"


def _device_arg(device: Any) -> tuple[str, torch.device | None]:
    """safetensors' device string, and a device to move to afterwards (or None)."""
    if device is None:
        return "cpu", None
    import torch

    d = torch.device(device)
    if d.type == "cpu":
        return "cpu", None
    if d.type == "cuda":
        index = d.index if d.index is not None else torch.cuda.current_device()
        return f"cuda:{index}", None
    return "cpu", d


def _load_tensor(path: Path, name: str, device: Any = None) -> torch.Tensor:
    from safetensors import safe_open

    where, then = _device_arg(device)
    try:
        with safe_open(str(path), framework="pt", device=where) as fh:
            tensor = fh.get_tensor(name)
    except Exception as exc:
        raise SourceError(
            f"Cannot read tensor '{_name(name)}' from the safetensors file '{path}': "
            f"{printable(exc, 300)}. The file may have changed since it was opened; open it "
            f"again."
        ) from exc
    return tensor if then is None else tensor.to(then)


_TORCH_DTYPE = {code: torch_name or code for code, (torch_name, _) in _DTYPES.items()}


def _meta(info: TensorInfo, origin: str) -> TensorMeta:
    return _META((info.shape, _TORCH_DTYPE[info.dtype], origin, None))


def _header_columns(header: SafetensorsHeader) -> tuple[list[str], Sequence[int], list[TensorMeta]]:
    """(names, meta index of each, distinct metas) of one file's tensors."""
    tensors = header.tensors
    if isinstance(tensors, _TensorTable):  # the fast path's columns as they are
        names, ids, kinds = tensors.names, tensors.kind_ids, tensors.kinds
    else:
        index: dict[tuple[str, tuple[int, ...]], int] = {}
        ids = [index.setdefault((i.dtype, i.shape), len(index)) for i in tensors.values()]
        names, kinds = list(tensors), list(index)
    origin = str(header.path)
    return names, ids, [_META((shape, _TORCH_DTYPE[d], origin, None)) for d, shape in kinds]


def _first(header: SafetensorsHeader, _name: str) -> SafetensorsHeader:
    return header


def _read_small(header_of: Callable[[str], SafetensorsHeader], name: str) -> torch.Tensor:
    """A uint8 tensor read at its offsets in the header already parsed (no second parse
    of the header, as ``safe_open`` would make: listing reads these while it lists)."""
    import torch

    header = header_of(name)
    info = header.tensors[name]
    if info.dtype != "U8":
        return _load_tensor(header.path, name)
    try:
        with open(header.path, "rb") as fh:
            fh.seek(header.data_start + info.begin)
            raw = fh.read(info.end - info.begin)
    except OSError as exc:
        raise SourceError(
            f"Cannot read tensor '{_name(name)}' from the safetensors file '{header.path}': "
            f"{printable(exc, 300)}."
        ) from exc
    if len(raw) != info.end - info.begin:
        raise SourceError(
            f"The safetensors file '{header.path}' ends inside tensor '{_name(name)}': the "
            f"file changed since its header was read; open it again."
        )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(info.shape)


def _file_loader(path: Path, name: str):
    """``loader(device)`` of one tensor (a partial: small, for a million tensors)."""
    return functools.partial(_load_tensor, path, name)


def _read_json(path: Path, what: str) -> Any:
    """A JSON file of a checkpoint (an index, a config), read as untrusted text.

    A regular file of at most :data:`MAX_HEADER_BYTES` bytes, UTF-8, parsed by
    :func:`_loads` (a key twice, deep nesting, huge integers refused); errors name the
    file and never echo its content.
    """
    size = regular_file(path)
    if size > MAX_HEADER_BYTES:
        raise SourceError(
            f"The {what} '{path}' is {size} bytes long, over the {MAX_HEADER_BYTES} bytes "
            f"infospec reads from a JSON file of a checkpoint: it is not a {what}."
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SourceError(
            f"The {what} '{path}' cannot be read: {exc.strerror or type(exc).__name__}."
        ) from None
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"The {what} '{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})."
        ) from None
    return _loads(
        text,
        lambda problem: SourceError(f"The {what} '{path}' {problem}."),
        lambda exc: f"line {exc.lineno}, column {exc.colno}",
    )


def _read_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    config = _read_json(path, "model config")
    if not isinstance(config, dict):
        raise SourceError(
            f"The model config '{path}' must be a JSON object; got {_json_type(config)}."
        )
    return config


def quantization_config(folder: Path, config: Mapping[str, Any] | None) -> dict | None:
    """A checkpoint's quantization settings: ``config.json``'s ``quantization_config``,
    else the folder's ``quantize_config.json`` (AutoGPTQ), else None."""
    q = (config or {}).get("quantization_config")
    if isinstance(q, dict):
        return q
    path = folder / "quantize_config.json"
    if not path.is_file():
        return None
    q = _read_json(path, "quantization config")
    return q if isinstance(q, dict) else None


def _read_index(index: Path) -> dict[str, str]:
    data = _read_json(index, "checkpoint index")
    if not isinstance(data, dict) or "weight_map" not in data:
        found = (
            ", ".join(f"'{_name(k)}'" for k in list(data)[:10])
            + (f" and {len(data) - 10} more" if len(data) > 10 else "")
            if isinstance(data, dict)
            else "none"
        ) or "none"
        raise SourceError(
            f"The checkpoint index '{index}' has no 'weight_map' (keys found: {found}). A "
            f"sharded checkpoint index maps each tensor name to its shard file under "
            f"'weight_map'."
        )
    weight_map = data["weight_map"]
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise SourceError(
            f"The 'weight_map' of the checkpoint index '{index}' must map tensor names "
            f"(str) to shard file names (str)."
        )
    if not weight_map:
        raise SourceError(f"The checkpoint index '{index}' lists no tensors in 'weight_map'.")
    return weight_map


def _pickle_hint(files: Sequence[Path]) -> str:
    if not files:
        return ""
    listed = ", ".join(f.name for f in files[:3])
    return (
        f" It holds PyTorch pickle checkpoint(s) ({listed}), which SafetensorsSource does "
        f"not read: pass the folder to open_source (or infospec analyze), which reads them "
        f"with torch.load(weights_only=True)."
    )


def _shard_roots(folder: str) -> list[str]:
    """Where the shards of an index in ``folder`` (a real path) may resolve to.

    The folder itself; and, for a snapshot of the Hugging Face cache
    (``models--org--name/snapshots/<revision>``), whose files are links into
    ``models--org--name/blobs``, that blobs folder.
    """
    roots = [folder]
    parent = os.path.dirname(folder)
    if os.path.basename(parent) == "snapshots":
        blobs = os.path.join(os.path.dirname(parent), "blobs")
        if os.path.isdir(blobs):
            roots.append(os.path.realpath(blobs))
    return roots


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_confined(index: Path, by_shard: dict[str, list[str]]) -> None:
    """Refuse an index whose shard paths leave its folder (``..``, absolute, links out)."""
    folder = os.path.realpath(index.parent)
    roots = _shard_roots(folder)
    for shard, names in by_shard.items():
        where = (
            f"The checkpoint index '{index}' maps tensor '{_name(names[0])}' to the shard "
            f"'{_name(shard)}'"
        )
        if "\0" in shard:
            raise SourceError(f"{where}, which is not a file name (it holds a NUL character).")
        if os.path.isabs(shard):
            raise SourceError(
                f"{where}, an absolute path: infospec reads shards only from the index's "
                f"folder '{folder}', named relative to it."
            )
        target = os.path.realpath(os.path.join(folder, shard))
        if not any(_inside(target, root) for root in roots):
            link = os.path.islink(os.path.join(folder, shard))
            raise SourceError(
                f"{where}, which {'is a link to' if link else 'resolves to'} "
                f"'{printable(target, 300)}', "
                f"outside the index's folder '{folder}': infospec reads shards only from "
                f"inside the folder of their index (links included), so it refuses this index."
            )


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the system cannot look up (too long...)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def shards_of(index: Path) -> dict[str, list[str]]:
    """The tensor names of each shard of a checkpoint index, in the index's order.

    Every shard must resolve (:func:`os.path.realpath`, links followed) inside the
    index's folder: a name with ``..`` that leaves it, an absolute path or a link to a
    file elsewhere is refused, naming the entry. The one exception is a snapshot of the
    Hugging Face cache (``.../snapshots/<revision>``), whose files are links into the
    cache's ``blobs`` folder beside ``snapshots``.

    Raises
    ------
    SourceError
        If the index is malformed (see :class:`SafetensorsSource`), a shard path leaves
        the index's folder, or a shard is missing.
    """
    by_shard: dict[str, list[str]] = {}
    for name, shard in _read_index(index).items():
        by_shard.setdefault(shard, []).append(name)
    _check_confined(index, by_shard)
    missing = [s for s in by_shard if not _is_file(index.parent / s)]
    if missing:
        first = missing[0]
        raise SourceError(
            f"The shard '{_name(first)}' listed in the checkpoint index '{index}' (for "
            f"{len(by_shard[first])} tensors, e.g. '{_name(by_shard[first][0])}') is "
            f"missing: no file '{index.parent / _name(first)}'"
            + (
                f" ({len(missing)} of {len(by_shard)} shards are missing)"
                if len(missing) > 1
                else ""
            )
            + ". Download or copy the missing shard(s) beside the index."
        )
    return by_shard


def check_shard_names(index: Path, shard: str, listed: Sequence[str], held) -> None:
    """Raise if the index maps a tensor to ``shard`` whose file does not hold it."""
    absent = [n for n in listed if n not in held]
    if absent:
        raise SourceError(
            f"The checkpoint index '{index}' maps tensor '{_name(absent[0])}' to the shard "
            f"'{_name(shard)}', whose header has no such tensor ({len(absent)} such "
            f"tensor(s)): the index and the shards do not belong together."
        )


class SafetensorsSource(WeightSource):
    """Weights in safetensors files: one file, a sharded checkpoint or a model folder.

    ``path`` may be

    * a ``.safetensors`` file;
    * a sharded checkpoint index (``*.safetensors.index.json``), whose ``weight_map``
      names each tensor's shard (shards are looked up beside the index; the index is
      authoritative, as in ``transformers``);
    * a model folder: ``model.safetensors.index.json`` or ``model.safetensors`` if
      present, otherwise the folder's only index or only ``.safetensors`` file.

    The ``config.json`` of a folder (or beside an index) is read: for GPT-2-style model
    types (``gpt2``, ``openai-gpt``, ``imagegpt``, ``decision_transformer``) the 2-D
    weights of ``c_attn``, ``q_attn``, ``c_proj`` and ``c_fc`` are the transposed
    ``Conv1D`` layout, ``(in, out)``. Without a config (a file passed alone) they are
    plain ``"matrix"``.

    Kinds come from names and shapes (:func:`infospec.sources.entry.infer_kind`):
    ``"embedding"``, ``"in_proj"``, a convolution for a 3- to 5-D ``weight``, otherwise
    ``"matrix"`` (a 2-D weight read as stored, out x in in PyTorch's convention).
    Entries are in model order (:mod:`infospec.sources.order`: embeddings, then the
    blocks by index, attention before the MLP, heads last). FP8 weights load dequantized
    to float32 with their ``*_scale_inv`` scales (:mod:`infospec.sources.fp8`).

    Parameters
    ----------
    path : str or path-like
        File, index or folder.
    min_dim : int >= 1, default 10
        Matrices whose smaller side is below it are skipped.

    Attributes
    ----------
    files : list of pathlib.Path
        The safetensors files read (the shards).
    index : pathlib.Path or None
        The index, for a sharded checkpoint.
    config : dict or None
        The folder's ``config.json``, if any.
    metadata : dict of str to str
        The ``__metadata__`` of the first file.

    Raises
    ------
    SourceError
        If a file is missing, truncated or malformed; an index is not valid JSON, lacks
        ``weight_map``, names a missing shard, or maps a tensor to a shard that lacks it;
        a folder holds no safetensors file (or several and no index); a ``config.json``
        is not valid JSON.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from safetensors.torch import save_file
    >>> folder = Path(tempfile.mkdtemp())
    >>> save_file({"layer.10.weight": torch.ones(16, 12), "layer.2.weight": torch.ones(16, 8),
    ...            "layer.2.bias": torch.ones(16)}, folder / "model.safetensors")
    >>> source = SafetensorsSource(folder)
    >>> [(e.name, e.kind, e.skip_reason) for e in source]  # doctest: +NORMALIZE_WHITESPACE
    [('layer.2.weight', 'matrix', 'smaller side 8 < min_dim=10 (matrix 16 x 8)'),
     ('layer.2.bias', 'other', '1-D tensor (bias or norm scale)'),
     ('layer.10.weight', 'matrix', None)]
    >>> source.entries()[2].load().sum().item()
    192.0
    """

    def __init__(self, path: str | os.PathLike[str], *, min_dim: int = DEFAULT_MIN_DIM) -> None:
        self.min_dim = check_positive(min_dim, "min_dim", "SafetensorsSource", integer=True)
        given = Path(path).expanduser()
        self.path = given
        self.index: Path | None = None
        self.config: dict[str, Any] | None = None
        #: ``quantization_config`` of the folder (:func:`quantization_config`), or None.
        self.quantization: dict[str, Any] | None = None
        if not given.exists():
            raise SourceError(f"No such file or folder: '{given}'.")
        if given.is_dir():
            target = self._resolve_folder(given)
            kind_of_path = "model folder"
            self.name = given.resolve().name
        else:
            target = given
            kind_of_path = ""
            self.name = given.name
        if target.name.endswith(".json"):
            self.index = target
            headers, owner = self._read_sharded(target)
            if not kind_of_path:
                kind_of_path = "sharded checkpoint"
                self.name = target.resolve().parent.name
        else:
            headers, owner = [read_safetensors_header(target)], None
            kind_of_path = kind_of_path or "safetensors file"
        if given.is_dir() or self.index is not None:
            self.config = _read_config(target.parent / "config.json")
            self.quantization = quantization_config(target.parent, self.config)
        self.files = [h.path for h in headers]
        self.metadata = dict(headers[0].metadata)
        model_type = self.model_type
        if owner is None:  # one file: its header's columns, no object per tensor
            names, meta_ids, metas = _header_columns(headers[0])
            loader_of = functools.partial(_file_loader, headers[0].path)
            header_of = functools.partial(_first, headers[0])
        else:
            origins = {id(h): str(h.path) for h in headers}  # one string per file
            names, meta_ids, metas = meta_columns(
                {
                    name: _meta(header.tensors[name], origins[id(header)])
                    for name, header in owner.items()
                }
            )

            def loader_of(name: str):
                return _file_loader(owner[name].path, name)

            header_of = owner.__getitem__

        self._entries = entry_table(
            names,
            meta_ids,
            metas,
            loader_of,
            min_dim=self.min_dim,
            conv1d_modules=conv1d_modules(self.config),
            block=block_size(self.config),
            quantization=self.quantization,
            read_small=functools.partial(_read_small, header_of),
        )
        n_bytes = sum(h.file_size - h.data_start for h in headers)
        parts = [f"{len(self._entries)} tensors", f"{n_bytes / 1e6:.1f} MB"]
        note = order_note(len(self._entries))
        if note:
            parts.append(note)
        if len(headers) > 1 or self.index is not None:
            parts.insert(0, f"{len(headers)} shard(s)")
        if model_type:
            parts.insert(0, f"model_type {model_type}")
        self.description = f"{kind_of_path} '{given}' ({', '.join(parts)})"

    def entries(self) -> EntryTable:
        """Every tensor, in model order, built when indexed or iterated.

        A read-only sequence (:class:`~infospec.sources.listing.EntryTable`): a header of
        a million tensors lists without a million objects.
        """
        return self._entries

    @staticmethod
    def _resolve_folder(folder: Path) -> Path:
        for preferred in ("model.safetensors.index.json", "model.safetensors"):
            if (folder / preferred).is_file():
                return folder / preferred
        indexes = sorted(folder.glob("*.safetensors.index.json"))
        files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
        if len(indexes) == 1:
            return indexes[0]
        if len(indexes) > 1:
            raise SourceError(
                f"The folder '{folder}' holds several checkpoint indexes "
                f"({', '.join(p.name for p in indexes)}): pass the one to analyse."
            )
        if len(files) == 1:
            return files[0]
        if len(files) > 1:
            raise SourceError(
                f"The folder '{folder}' holds {len(files)} safetensors files "
                f"({', '.join(p.name for p in files[:5])}) and no index saying how they "
                f"fit together: pass one file, or a *.safetensors.index.json."
            )
        pickles = sorted(p for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        subfolders = sorted({p.parent.name for p in folder.glob("*/*.safetensors") if p.is_file()})
        hint = _pickle_hint(pickles)
        if subfolders:
            hint += f" Subfolders with safetensors files: {', '.join(subfolders)}; pass one."
        raise SourceError(f"The folder '{folder}' holds no .safetensors file.{hint}")

    @staticmethod
    def _read_sharded(
        index: Path,
    ) -> tuple[list[SafetensorsHeader], dict[str, SafetensorsHeader]]:
        by_shard = shards_of(index)
        headers = []
        owner: dict[str, SafetensorsHeader] = {}
        for shard in sorted(by_shard, key=natural_key):
            header = read_safetensors_header(index.parent / shard)
            headers.append(header)
            check_shard_names(index, shard, by_shard[shard], header.tensors)
            for name in by_shard[shard]:
                owner[name] = header
        return headers, owner

    @property
    def model_type(self) -> str | None:
        """The ``model_type`` of the folder's ``config.json``, if any."""
        return model_type_of(self.config)


def model_type_of(config: dict[str, Any] | None) -> str | None:
    """The ``model_type`` of a model config, if it is a string."""
    value = (config or {}).get("model_type")
    return value if isinstance(value, str) else None


def conv1d_modules(config: dict[str, Any] | None) -> frozenset[str]:
    """The modules stored as GPT-2's transposed ``Conv1D`` for this model config."""
    return _CONV1D_MODULES if model_type_of(config) in _CONV1D_MODEL_TYPES else frozenset()
