"""Reading and checking the header of a safetensors file, without reading tensor data.

:func:`read_safetensors_header` checks a header as safetensors does (or more strictly),
each fault a :class:`~infospec.SourceError` that names the file and never echoes its
bytes: in bulk where the header is laid out as safetensors writes it
(:mod:`.safetensors_bulk`), else entry by entry, which says what is wrong.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import SourceError
from .._text import printable
from .formats import regular_file, sniff
from .safetensors_bulk import _fast_header
from .safetensors_format import (
    _BITS,
    _DTYPES,
    _SURROGATE_ESCAPE,
    _TENSOR_INFO,
    _TENSOR_KEYS,
    _U64,
    MAX_HEADER_BYTES,
    SafetensorsHeader,
    TensorInfo,
    _elements,
    _fail,
    _loads,
    _no_gc,
    _unique_pairs,
)

__all__ = ["read_safetensors_header"]

if TYPE_CHECKING:  # reading headers needs no torch; loading tensors does
    pass


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
