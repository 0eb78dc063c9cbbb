"""Weights read lazily from a GGUF file (llama.cpp), dequantized one tensor at a time.

A GGUF file (version 2 or 3, little-endian) is the magic ``GGUF``, a ``uint32`` version,
the ``uint64`` tensor and key-value counts, the key-value metadata, one *tensor info*
per tensor (name, ``uint32`` number of dimensions, ``uint64`` dimensions, ``uint32``
ggml type, ``uint64`` offset relative to the data region), padding to
``general.alignment`` (32 by default), and the data region
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).

The header is parsed and checked here, in bounded steps, before any tensor is read: a
truncated file, a count or a size that the file cannot hold, a bad magic, an unknown
version, a big-endian file, nesting too deep, a name given twice or a tensor outside
the file is a :class:`~infospec.SourceError` naming the file, found without allocating
more than the header's own size (``gguf.GGUFReader`` itself builds one NumPy view per
array element, which a hostile array of a billion elements turns into a hang). The
maintained ``gguf`` package supplies the type table (``GGML_QUANT_SIZES``) and the
dequantization (``gguf.quants.dequantize``).

Orientation: GGUF lists dimensions fastest-varying first (ggml's ``ne``), the reverse of
NumPy's row-major shape. A matrix written from a NumPy ``(rows, cols)`` array (as
llama.cpp's converter writes a PyTorch ``(out, in)`` weight) has ``ne = [cols, rows]``;
its entry here has shape ``(rows, cols)``, the array's, and loads equal to it.
Quantization blocks run along ``ne[0]``, the rows of the row-major matrix.
"""

from __future__ import annotations

import itertools
import math
import mmap
import os
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .._checks import check_positive
from .._errors import SourceError
from .._text import printable
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, WeightEntry, generic_kind, infer_kind, skip_reason_for
from .formats import regular_file
from .order import order_note, sort_model_order

if TYPE_CHECKING:
    import torch

__all__ = [
    "READ_TYPES",
    "GGUFHeader",
    "GGUFSource",
    "GGUFTensorInfo",
    "read_gguf_header",
]

#: ggml types stored as plain arrays: the dtype a tensor of the type loads as.
_PLAIN = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
_INTEGER = {"I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}
#: Block-quantized ggml types read here, dequantized to float32 by gguf.quants.dequantize:
#: each is tested against the float matrix it was made from (tests/sources/test_gguf_source.py).
_QUANTIZED = (
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "TQ1_0",
    "TQ2_0",
    "MXFP4",
)
#: Every ggml type infospec reads (those the installed gguf package also knows).
READ_TYPES: tuple[str, ...] = (*_PLAIN, *_QUANTIZED)
_NOT_WEIGHTS = {
    "Q8_1": "llama.cpp's intermediate format for activations, never a stored weight",
    "Q8_K": "llama.cpp's intermediate format for activations, never a stored weight",
}

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
_STRING, _ARRAY = 8, 9
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


def _load_tensor(path: Path, start: int, info: GGUFTensorInfo, name: str, device: Any = None):
    """Read one tensor: plain types in their dtype, quantized ones dequantized to float32."""
    import numpy as np
    import torch

    gguf = _gguf()
    end = start + info.offset + (info.n_bytes or 0)
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < end:
                raise OSError("the file is shorter than when it was opened")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                raw = np.frombuffer(buf, np.uint8, info.n_bytes, start + info.offset)
                try:
                    array = _decode(gguf, np, raw, info)
                finally:
                    del raw
    except (OSError, ValueError) as exc:
        raise SourceError(
            f"Cannot read tensor '{_name(name)}' from the GGUF file '{path}': "
            f"{printable(exc, 300)}. The file may have changed since it was opened; open it "
            f"again."
        ) from exc
    if info.type_name == "BF16":
        tensor = torch.from_numpy(array).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    tensor = tensor.reshape(info.shape)
    return tensor if device is None else tensor.to(device)


def _decode(gguf, np, raw, info: GGUFTensorInfo):
    """A new array (not a view of the map) of the tensor's values, row-major."""
    if info.type_name == "BF16":
        return raw.view(np.int16).copy()
    if info.type_name in ("F32", "F16", "F64"):
        return raw.view(
            {"F32": np.float32, "F16": np.float16, "F64": np.float64}[info.type_name]
        ).copy()
    qtype = gguf.GGMLQuantizationType[info.type_name]
    rows = raw.reshape(-1, raw.size // max(math.prod(info.ne[1:]), 1))
    return np.ascontiguousarray(gguf.quants.dequantize(rows, qtype), dtype=np.float32)


def _skip_for_type(type_name: str, read: frozenset[str]) -> str | None:
    if type_name in read:
        return None
    if type_name in _INTEGER:
        return None  # the general rule names the integer dtype
    if type_name in _NOT_WEIGHTS:
        return f"GGUF type {type_name}: {_NOT_WEIGHTS[type_name]}"
    if type_name.startswith("type "):
        return (
            f"GGUF {type_name} is unknown to the installed gguf package (a newer "
            f"llama.cpp type): upgrade gguf (pip install -U gguf)"
        )
    return (
        f"GGUF type {type_name} is not read: infospec reads {', '.join(sorted(read))}, the "
        f"types it tests against the float matrix they encode; requantize to Q8_0 "
        f"(llama-quantize) or analyse the checkpoint the file was converted from"
    )


#: llama.cpp's module names as the Hugging Face names that :mod:`~infospec.sources.order`
#: ranks, used only to sort the entries into model order.
_ORDER_ALIASES = {
    "token_embd": "embed_tokens",
    "position_embd": "embed_positions",
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_qkv": "self_attn.qkv",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "output_norm": "norm",
    "output": "lm_head",
}


def _model_order(names: list[str]) -> list[str]:
    """GGUF names in model order: embeddings, blocks by index (attention, then MLP), head."""
    alias = {}
    for name in names:
        parts = name.split(".")
        alias[".".join(_ORDER_ALIASES.get(p, p) for p in parts)] = name
    if len(alias) != len(names):  # two names alias to one: keep the plain order
        return sort_model_order(names)
    return [alias[a] for a in sort_model_order(list(alias))]


def _kind(name: str, shape: tuple[int, ...]) -> str:
    """A GGUF tensor's kind: no convolution guessed for a 3-D expert stack."""
    module = name.split(".")[-2] if "." in name else ""
    if len(shape) == 2 and module in ("token_embd", "position_embd", "token_types"):
        return "embedding"
    if len(shape) == 2:
        return infer_kind(name, shape)
    return generic_kind(shape)


class GGUFSource(WeightSource):
    """Weights of a GGUF file (llama.cpp), listed from its header, read one at a time.

    Entries have the row-major shape (``ne`` reversed: a PyTorch ``(out, in)`` weight
    converted by llama.cpp lists as ``(out, in)``) and the ggml type as dtype: ``F32``,
    ``F16``, ``BF16`` and ``F64`` tensors are named ``float32``... and load in that
    dtype; the block-quantized types of :data:`READ_TYPES` keep their name
    (``"Q8_0"``, ``"Q4_K"``) and load dequantized to float32 by
    ``gguf.quants.dequantize``. Other types are listed as skipped with the reason.
    ``token_embd`` is an embedding; a 3-D tensor (a stack of MoE experts) is skipped as
    a tensor with no known matrix layout. Names are llama.cpp's (``blk.0.attn_q.weight``),
    not the Hugging Face names; llama.cpp's converter permutes the rows of ``attn_q`` and
    ``attn_k`` for its rotary layout, which leaves their singular values unchanged.

    Parameters
    ----------
    path : str or path-like
        The ``.gguf`` file (one part of a split file lists that part's tensors).
    min_dim : int >= 1, default 10
        Matrices whose smaller side is below it are skipped.

    Attributes
    ----------
    header : GGUFHeader
    metadata : dict
        The header's key-value metadata (arrays by type and length only).

    Raises
    ------
    SourceError
        If the file is missing, truncated or malformed (see :func:`read_gguf_header`),
        or the gguf package is not installed.

    Examples
    --------
    >>> import tempfile, numpy as np, gguf
    >>> from pathlib import Path
    >>> from gguf.quants import quantize
    >>> path = Path(tempfile.mkdtemp()) / "m.gguf"
    >>> w = np.random.default_rng(0).standard_normal((48, 64)).astype(np.float32)
    >>> writer = gguf.GGUFWriter(path, "llama")
    >>> q8 = gguf.GGMLQuantizationType.Q8_0
    >>> writer.add_tensor("blk.0.ffn_up.weight", quantize(w, q8), raw_dtype=q8)
    >>> writer.write_header_to_file(); writer.write_kv_data_to_file()
    >>> writer.write_tensors_to_file(); writer.close()
    >>> entry = GGUFSource(path).entries()[0]
    >>> entry.shape, entry.dtype, entry.kind
    ((48, 64), 'Q8_0', 'matrix')
    >>> bool(abs(entry.load().numpy() - w).max() < 0.02)
    True
    """

    def __init__(self, path: str | os.PathLike[str], *, min_dim: int = DEFAULT_MIN_DIM) -> None:
        self.min_dim = check_positive(min_dim, "min_dim", "GGUFSource", integer=True)
        self.path = Path(path).expanduser()
        self.name = self.path.name
        try:
            gguf = _gguf()
        except ImportError as exc:
            raise SourceError(f"The file '{self.path}' is a GGUF file: {exc}.") from None
        self.header = read_gguf_header(self.path)
        self.metadata = self.header.metadata
        if not self.header.tensors:
            raise SourceError(
                f"The GGUF file '{self.path}' holds no tensors (a vocabulary-only file, or "
                f"an empty one): pass the GGUF file with the model's weights."
            )
        known = {t.name for t in gguf.GGMLQuantizationType}
        read = frozenset(t for t in READ_TYPES if t in known)
        entries = []
        for name in _model_order(list(self.header.tensors)):
            info = self.header.tensors[name]
            shape = info.shape
            kind = _kind(name, shape)
            dtype = _PLAIN.get(info.type_name) or _INTEGER.get(info.type_name) or info.type_name
            reason = _skip_for_type(info.type_name, read)
            if reason is None:
                readable = dtype if info.type_name not in _QUANTIZED else "float32"
                reason = skip_reason_for(kind, shape, readable, min_dim=self.min_dim)
            loader = None if info.n_bytes is None else _loader(self.header, info, name)
            entries.append(WeightEntry(name, shape, dtype, kind, reason, str(self.path), loader))
        self._entries = tuple(entries)
        self.description = self._describe()

    def _describe(self) -> str:
        h = self.header
        parts = [f"GGUF v{h.version}"]
        for key, word in (("general.architecture", "architecture"), ("general.name", "name")):
            value = h.metadata.get(key)
            if isinstance(value, str):
                parts.append(f"{word} {printable(value, 60)}")
        file_type = h.metadata.get("general.file_type")
        if type(file_type) is int:
            try:
                parts.append(f"file type {_gguf().LlamaFileType(file_type).name}")
            except ValueError:
                parts.append(f"file type {file_type}")
        split = h.metadata.get("split.count")
        if type(split) is int and split > 1:
            index = h.metadata.get("split.no")
            parts.append(
                f"part {index + 1 if type(index) is int else '?'} of {split} of a split file"
            )
        counts = Counter(info.type_name for info in h.tensors.values())
        parts.append(f"{len(h.tensors)} tensors")
        parts.append(f"{max(h.file_size - h.data_start, 0) / 1e6:.1f} MB")
        parts.append("types " + ", ".join(f"{t} x {n}" for t, n in counts.most_common()))
        note = order_note(len(h.tensors))
        if note:
            parts.append(note)
        return f"GGUF file '{self.path}' ({', '.join(parts)})"

    def entries(self) -> list[WeightEntry]:
        return list(self._entries)


def _loader(header: GGUFHeader, info: GGUFTensorInfo, name: str):
    def load(device: Any = None) -> torch.Tensor:
        return _load_tensor(header.path, header.data_start, info, name, device)

    return load
