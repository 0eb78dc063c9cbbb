"""Weights read lazily from a GGUF file (llama.cpp), dequantized one tensor at a time.

A GGUF file (version 2 or 3, little-endian) is the magic ``GGUF``, a ``uint32`` version,
the ``uint64`` tensor and key-value counts, the key-value metadata, one *tensor info*
per tensor (name, ``uint32`` number of dimensions, ``uint64`` dimensions, ``uint32``
ggml type, ``uint64`` offset relative to the data region), padding to
``general.alignment`` (32 by default), and the data region
(https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).

The header is parsed and checked (:mod:`.gguf_header`), in bounded steps, before any
tensor is read: a truncated file, a count or a size that the file cannot hold, a bad
magic, an unknown version, a big-endian file, nesting too deep, a name given twice or a
tensor outside the file is a :class:`~infospec.SourceError` naming the file, found
without allocating more than the header's own size (``gguf.GGUFReader`` itself builds one
NumPy view per array element, which a hostile array of a billion elements turns into a
hang). The maintained ``gguf`` package supplies the type table (``GGML_QUANT_SIZES``) and the
dequantization (``gguf.quants.dequantize``).

Orientation: GGUF lists dimensions fastest-varying first (ggml's ``ne``), the reverse of
NumPy's row-major shape. A matrix written from a NumPy ``(rows, cols)`` array (as
llama.cpp's converter writes a PyTorch ``(out, in)`` weight) has ``ne = [cols, rows]``;
its entry here has shape ``(rows, cols)``, the array's, and loads equal to it.
Quantization blocks run along ``ne[0]``, the rows of the row-major matrix.
"""

from __future__ import annotations

import math
import mmap
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._checks import check_positive
from .._errors import SourceError
from .._text import printable
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, WeightEntry, generic_kind, infer_kind, skip_reason_for
from .gguf_header import GGUFHeader, GGUFTensorInfo, _gguf, _name, read_gguf_header
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
