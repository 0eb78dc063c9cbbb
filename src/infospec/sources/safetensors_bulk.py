"""The fast path of safetensors headers: laid out as safetensors writes them, checked in bulk.

:func:`_fast_header` splits such a header with one regular expression (in C) and checks
it over arrays with the rules of the entry-by-entry check of :mod:`.safetensors_header`,
which it only ever spares: whatever it does not accept goes there.
"""

from __future__ import annotations

import json
import operator
import re
from array import array
from collections.abc import Iterator, Mapping
from itertools import accumulate
from typing import TYPE_CHECKING

from .safetensors_format import (
    _BITS,
    _SURROGATE_ESCAPE,
    _TENSOR_INFO,
    _U64,
    TensorInfo,
    _elements,
    _unique_pairs,
)

__all__: list[str] = []

if TYPE_CHECKING:  # reading headers needs no torch; loading tensors does
    pass

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
