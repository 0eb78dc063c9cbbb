"""The header of a GGUF file (llama.cpp), parsed and checked in bounded steps.

A GGUF file (version 2 or 3, little-endian) is the magic ``GGUF``, a ``uint32`` version,
the ``uint64`` tensor and key-value counts, the key-value metadata, one *tensor info*
per tensor (name, ``uint32`` number of dimensions, ``uint64`` dimensions, ``uint32``
ggml type, ``uint64`` offset relative to the data region), padding to
``general.alignment`` (32 by default), and the data region
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md). :func:`read_gguf_header`
checks it before any tensor is read, each fault a :class:`~infospec.SourceError` naming
the file, without allocating more than the header's own size.
"""

from __future__ import annotations

import itertools
import math
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from .._errors import SourceError
from .._text import printable
from .formats import regular_file

__all__ = ["GGUFArray", "GGUFHeader", "GGUFTensorInfo", "read_gguf_header"]


_GGUF_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = 8
_DEFAULT_ALIGNMENT = 32
_MAX_ALIGNMENT = 1 << 30
_KEPT_STRING = 4096  # metadata strings longer than this are kept as a length only
_MAX_NAME = 65535  # the GGUF specification's limit on a key

# GGUF value types (gguf.GGUFValueType): struct format of the fixed-size ones
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}


_STRING = 8
_ARRAY = 9
_TYPE_WORDS = {
    0: "uint8",
    1: "int8",
    2: "uint16",
    3: "int16",
    4: "uint32",
    5: "int32",
    6: "float32",
    7: "bool",
    8: "string",
    9: "array",
    10: "uint64",
    11: "int64",
    12: "float64",
}


class GGUFArray(NamedTuple):
    """A metadata array, kept by element type and length only (a vocabulary, merges)."""

    element_type: str
    length: int


class GGUFTensorInfo(NamedTuple):
    """One tensor of a GGUF file.

    Attributes
    ----------
    type_name : str
        The ggml type (``"Q8_0"``, ``"F16"``), or ``"type <code>"`` for a code the
        installed gguf package does not know.
    ne : tuple of int
        Dimensions as stored, fastest-varying first; the row-major shape is
        ``ne[::-1]``.
    offset : int
        Byte offset of the data, relative to the data region.
    n_bytes : int or None
        Bytes of data (None for an unknown type).
    """

    type_name: str
    ne: tuple[int, ...]
    offset: int
    n_bytes: int | None

    @property
    def shape(self) -> tuple[int, ...]:
        """The row-major (NumPy, PyTorch) shape: ``ne`` reversed."""
        return self.ne[::-1]


class GGUFHeader(NamedTuple):
    """The checked header of a GGUF file.

    Attributes
    ----------
    path : pathlib.Path
    version : int
    metadata : dict
        Key-value metadata: numbers, booleans, strings (up to 4096 characters, longer
        ones as a :class:`GGUFArray`-like note of their length), arrays as
        :class:`GGUFArray`.
    tensors : dict of str to GGUFTensorInfo
        In the file's order.
    alignment : int
    data_start : int
        Byte offset of the data region.
    file_size : int
    """

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo]
    alignment: int
    data_start: int
    file_size: int


def _gguf():
    """The gguf package, or the error that says how to install it."""
    try:
        import gguf
        import gguf.quants
    except ImportError as exc:
        raise ImportError(
            "reading GGUF files needs the gguf package: pip install 'infospec[gguf]'"
        ) from exc
    return gguf


class _Cursor:
    """Bounded little-endian reads from a buffer; running past its end is a SourceError."""

    def __init__(self, buf, fail: Callable[[str], SourceError]) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.fail = fail

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(
                f"is truncated: {what} at byte {self.pos} needs {n} bytes but only "
                f"{self.size - self.pos} remain. Copy or download it again"
            )

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return value[0] if len(value) == 1 else value

    def string(self, what: str, *, keep: int | None = None) -> str | int:
        """A gguf_string; its length alone (an int) when over ``keep`` bytes.

        Without ``keep`` (a key, a tensor name) it must be at most :data:`_MAX_NAME` bytes.
        """
        n = self.unpack("Q", f"the length of {what}")
        self.need(n, f"{what} ({n} bytes)")
        if keep is None and n > _MAX_NAME:
            raise self.fail(f"has {what} of {n} bytes, over the {_MAX_NAME} bytes of a name")
        start = self.pos
        self.pos += n
        if keep is not None and n > keep:
            return n
        try:
            return bytes(self.buf[start : start + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"has {what} at byte {start} that is not UTF-8 text") from None

    def skip_array(self, what: str, depth: int = 0) -> GGUFArray:
        element = self.unpack("I", f"the element type of {what}")
        length = self.unpack("Q", f"the length of {what}")
        if element in _SCALARS:
            self.need(length * struct.calcsize(_SCALARS[element]), f"{what} of {length} elements")
            self.pos += length * struct.calcsize(_SCALARS[element])
        elif element == _STRING:
            self.need(length * 8, f"{what} of {length} strings")  # each at least its length
            for _ in range(length):
                n = self.unpack("Q", f"a string of {what}")
                self.need(n, f"a string of {what} ({n} bytes)")
                self.pos += n
        elif element == _ARRAY:
            if depth + 1 >= _MAX_NESTING:
                raise self.fail(f"nests arrays more than {_MAX_NESTING} deep in {what}")
            self.need(length * 12, f"{what} of {length} arrays")
            for _ in range(length):
                self.skip_array(what, depth + 1)
        else:
            raise self.fail(f"has {what} of unknown element type {element}")
        return GGUFArray(_TYPE_WORDS[element], length)

    def value(self, kind: int, what: str) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind], what)
        if kind == _STRING:
            s = self.string(what, keep=_KEPT_STRING)
            return GGUFArray("string of bytes", s) if isinstance(s, int) else s
        if kind == _ARRAY:
            return self.skip_array(what)
        raise self.fail(f"has {what} of unknown value type {kind} (known: 0 to 12)")


def _name(name: str) -> str:
    return printable(name, 200)


def _type_tables():
    """name -> (code, block size, bytes per block), and code -> name, from gguf."""
    gguf = _gguf()
    by_code = {int(t): t.name for t in gguf.GGMLQuantizationType}
    sizes = {t.name: gguf.GGML_QUANT_SIZES[t] for t in gguf.GGML_QUANT_SIZES}
    return by_code, sizes


def read_gguf_header(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read and check the header of a GGUF file, without reading tensor data.

    Checks, each failing with a :class:`SourceError` that names the file: it is a
    regular file with the magic ``GGUF``; the version is 2 or 3 and the file is
    little-endian; the tensor and key-value counts fit in the file (each tensor info
    takes at least 24 bytes and each key-value 13); every string, array and value lies
    inside the file; arrays nest at most 8 deep; no key or tensor name is given twice;
    ``general.alignment``, if given, is a ``uint32`` power of two; every tensor has 1
    to 4 dimensions whose product fits 64 bits, a row length that is a multiple of its
    type's block, an aligned offset, and data inside the file that overlaps no other
    tensor's. Parsing is linear in the header's size and allocates no more than it.

    Parameters
    ----------
    path : str or path-like
        The ``.gguf`` file.

    Returns
    -------
    GGUFHeader

    Raises
    ------
    SourceError
        If the file is missing, not a regular file, truncated or malformed.
    ImportError
        If the gguf package is not installed.

    Examples
    --------
    >>> import tempfile, numpy as np, gguf
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "m.gguf"
    >>> w = gguf.GGUFWriter(path, "llama")
    >>> w.add_tensor("blk.0.attn_q.weight", np.zeros((3, 64), dtype=np.float16))
    >>> w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    >>> info = read_gguf_header(path).tensors["blk.0.attn_q.weight"]
    >>> info.type_name, info.ne, info.shape
    ('F16', (64, 3), (3, 64))
    """
    path = Path(path).expanduser()
    size = regular_file(path)

    def fail(problem: str) -> SourceError:
        return SourceError(f"The GGUF file '{path}' {problem}.")

    if size < 24:
        raise fail(
            f"is {size} bytes long, too short for a GGUF file (whose fixed header is 24 "
            f"bytes): it is empty, truncated or not GGUF"
        )
    by_code, sizes = _type_tables()
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            header = _parse(path, buf, size, fail, by_code, sizes)
    except OSError as exc:
        raise fail(f"cannot be read: {exc.strerror or type(exc).__name__}") from exc
    return header


def _parse(path, buf, size, fail, by_code, sizes) -> GGUFHeader:
    cur = _Cursor(buf, fail)
    if bytes(buf[:4]) != b"GGUF":
        raise fail("does not start with the magic bytes 'GGUF': it is not a GGUF file")
    cur.pos = 4
    version = cur.unpack("I", "the version")
    if version & 0xFFFFFF == 0 and version >> 24 in _GGUF_VERSIONS:  # byte-swapped uint32
        raise fail(
            "is a big-endian GGUF file (written for s390x), which infospec does not read: "
            "convert it on a little-endian machine with gguf's gguf-convert-endian"
        )
    if version not in _GGUF_VERSIONS:
        raise fail(
            f"has GGUF version {version}; infospec reads versions 2 and 3"
            + (" (version 1 is llama.cpp's 2023 format: convert it again)" if version == 1 else "")
        )
    n_tensors, n_kv = cur.unpack("QQ", "the tensor and key-value counts")
    room = size - cur.pos
    if n_kv * 13 > room or n_tensors * 24 > room or (n_kv * 13 + n_tensors * 24) > room:
        raise fail(
            f"declares {n_tensors} tensors and {n_kv} key-value pairs, which need at least "
            f"{n_tensors * 24 + n_kv * 13} bytes, but only {room} bytes follow: it is "
            f"truncated or corrupt"
        )
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"the key of metadata pair {i}")
        kind = cur.unpack("I", f"the value type of '{_name(key)}'")
        if key in metadata:
            raise fail(f"has the metadata key '{_name(key)}' twice")
        metadata[key] = cur.value(kind, f"the value of '{_name(key)}'")
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if (
        type(alignment) is not int
        or alignment <= 0
        or alignment & (alignment - 1)
        or alignment > _MAX_ALIGNMENT
    ):
        raise fail(
            f"has general.alignment {printable(alignment, 40)}; it must be a power of two "
            f"below 2**30"
        )
    infos: dict[str, tuple[int, tuple[int, ...], int]] = {}
    for i in range(n_tensors):
        name = cur.string(f"the name of tensor {i}")
        n_dims = cur.unpack("I", f"the dimension count of tensor '{_name(name)}'")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise fail(f"gives tensor '{_name(name)}' {n_dims} dimensions; ggml allows 1 to 4")
        cur.need(8 * n_dims, f"the dimensions of tensor '{_name(name)}'")
        ne = struct.unpack_from(f"<{n_dims}Q", buf, cur.pos)
        cur.pos += 8 * n_dims
        code = cur.unpack("I", f"the type of tensor '{_name(name)}'")
        offset = cur.unpack("Q", f"the offset of tensor '{_name(name)}'")
        if name in infos:
            raise fail(f"has the tensor name '{_name(name)}' twice")
        infos[name] = (code, tuple(ne), offset)
    header_end = cur.pos
    data_start = -(-header_end // alignment) * alignment
    data_size = max(size - data_start, 0)
    tensors: dict[str, GGUFTensorInfo] = {}
    spans = []
    for name, (code, ne, offset) in infos.items():
        type_name = by_code.get(code, f"type {code}")
        where = f"tensor '{_name(name)}' ({type_name}, ne {list(ne)})"
        n = math.prod(ne)
        if n >= 2**63:
            raise fail(f"gives {where} more than 2**63 elements")
        if offset % alignment:
            raise fail(
                f"gives {where} the offset {offset}, not a multiple of the alignment {alignment}"
            )
        n_bytes = None
        if type_name in sizes:
            block, block_bytes = sizes[type_name]
            if ne[0] % block:
                raise fail(
                    f"gives {where} rows of {ne[0]} elements, not a multiple of the "
                    f"{type_name} block of {block}"
                )
            n_bytes = n // block * block_bytes
            if offset + n_bytes > data_size:
                raise fail(
                    f"is truncated: {where} ends at byte {data_start + offset + n_bytes} but "
                    f"the file has only {size} bytes. Copy or download it again"
                )
            if n_bytes:
                spans.append((offset, offset + n_bytes, name))
        tensors[name] = GGUFTensorInfo(type_name, ne, offset, n_bytes)
    spans.sort()
    for (_, end, first), (begin, _, second) in itertools.pairwise(spans):
        if begin < end:
            raise fail(
                f"is corrupt: the data of tensor '{_name(second)}' overlaps that of "
                f"'{_name(first)}'"
            )
    return GGUFHeader(path, version, metadata, tensors, alignment, data_start, size)
