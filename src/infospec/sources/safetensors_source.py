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

import json
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .._checks import check_positive
from .._errors import SourceError
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, WeightEntry, natural_key
from .formats import regular_file
from .fp8 import block_size
from .listing import TensorMeta, build_entries

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


class SafetensorsHeader(NamedTuple):
    """The checked header of a safetensors file.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    tensors : dict of str to TensorInfo
        Every tensor, in the header's order.
    metadata : dict of str to str
        The optional ``__metadata__`` block.
    data_start : int
        Byte offset of the data region in the file (``8 + header length``).
    file_size : int
        Size of the file in bytes.
    """

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int
    file_size: int


def _fail(path: Path, problem: str) -> SourceError:
    return SourceError(f"The safetensors file '{path}' {problem}")


def _tensor_info(path: Path, name: str, raw: Any) -> TensorInfo:
    def bad(problem: str) -> SourceError:
        return _fail(path, f"has a malformed header entry for tensor '{name}': {problem}.")

    if not isinstance(raw, dict):
        raise bad(f"expected an object, got {type(raw).__name__}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in raw]
    if missing:
        raise bad(f"missing {', '.join(repr(k) for k in missing)}")
    dtype, shape, offsets = raw["dtype"], raw["shape"], raw["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise bad(f"unknown dtype {dtype!r} (known: {', '.join(_DTYPES)})")
    if not isinstance(shape, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise bad(f"shape must be a list of non-negative integers, got {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise bad(f"data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r}")
    begin, end = offsets
    bits = _DTYPES[dtype][1]
    need_bits = math.prod(shape) * bits
    if need_bits % 8 or need_bits // 8 != end - begin:
        raise bad(
            f"shape {tuple(shape)} of dtype {dtype} needs {need_bits / 8:g} bytes but its "
            f"data_offsets span {end - begin} bytes"
        )
    return TensorInfo(dtype, tuple(shape), begin, end)


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and check the header of a safetensors file, without reading tensor data.

    Checks, each failing with a :class:`SourceError` that names the file: the file
    exists and is at least 8 bytes long; the declared header length fits in the file
    and safetensors' 100 MB limit; the header is UTF-8 JSON, an object whose entries
    have a known dtype, a shape of non-negative integers and ``data_offsets`` whose
    span matches shape and dtype; the tensors' data lies inside the file and covers the
    data region exactly (a truncated file is reported as such).

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
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _fail(
                    path,
                    f"is {size} bytes long, too short for a safetensors file (which starts "
                    f"with an 8-byte header length): it is empty, truncated or not safetensors.",
                )
            (n,) = struct.unpack("<Q", head)
            if n == 0:
                raise _fail(path, "declares an empty header: it is not a safetensors file.")
            if n > size - 8:
                raise _fail(
                    path,
                    f"declares a header of {n} bytes but only {size - 8} bytes follow the "
                    f"length field: the file is truncated or not a safetensors file.",
                )
            if n > MAX_HEADER_BYTES:
                raise _fail(
                    path,
                    f"declares a header of {n} bytes, over safetensors' limit of "
                    f"{MAX_HEADER_BYTES} bytes: it is not a safetensors file.",
                )
            raw = fh.read(n)
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc}.") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(
            path,
            f"has a header that is not UTF-8 text ({exc.reason} at byte {8 + exc.start}): "
            f"it is corrupt or not a safetensors file.",
        ) from exc
    try:
        header = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(
            path,
            f"has a header that is not valid JSON ({exc.msg} at byte {8 + exc.pos}): it is "
            f"corrupt or not a safetensors file.",
        ) from exc
    if not isinstance(header, dict):
        raise _fail(path, f"has a JSON header that is a {type(header).__name__}, not an object.")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _fail(path, "has a malformed __metadata__ block (it must map strings to strings).")
    tensors = {name: _tensor_info(path, name, raw_info) for name, raw_info in header.items()}

    data_start = 8 + n
    data_size = size - data_start
    expected = 0
    previous = None
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.end > data_size:
            raise _fail(
                path,
                f"is truncated: tensor '{name}' ends at byte {data_start + info.end} but "
                f"the file has only {size} bytes. Copy or download it again.",
            )
        if info.begin != expected:
            what = "overlaps" if info.begin < expected else "leaves a gap after"
            raise _fail(
                path,
                f"is corrupt: the data of tensor '{name}' (bytes {info.begin}-{info.end} of "
                f"the data region) {what} the previous tensor"
                + (f" '{previous}'" if previous else "")
                + ".",
            )
        expected = info.end
        previous = name
    if expected != data_size:
        raise _fail(
            path,
            f"has {data_size - expected} bytes after the last tensor's data, which "
            f"safetensors refuses: the file is corrupt.",
        )
    return SafetensorsHeader(path, tensors, dict(metadata), data_start, size)


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


def _file_loader(path: Path, name: str):
    def load(device: Any = None) -> torch.Tensor:
        from safetensors import safe_open

        where, then = _device_arg(device)
        try:
            with safe_open(str(path), framework="pt", device=where) as fh:
                tensor = fh.get_tensor(name)
        except Exception as exc:
            raise SourceError(
                f"Cannot read tensor '{name}' from the safetensors file '{path}': {exc}. "
                f"The file may have changed since it was opened; open it again."
            ) from exc
        return tensor if then is None else tensor.to(then)

    return load


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"The {what} '{path}' cannot be read: {exc}.") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"The {what} '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno})."
        ) from exc


def _read_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    config = _read_json(path, "model config")
    if not isinstance(config, dict):
        raise SourceError(
            f"The model config '{path}' must be a JSON object; got a {type(config).__name__}."
        )
    return config


def _read_index(index: Path) -> dict[str, str]:
    data = _read_json(index, "checkpoint index")
    if not isinstance(data, dict) or "weight_map" not in data:
        found = ", ".join(repr(k) for k in data) if isinstance(data, dict) else "none"
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


def shards_of(index: Path) -> dict[str, list[str]]:
    """The tensor names of each shard of a checkpoint index, in the index's order.

    Raises
    ------
    SourceError
        If the index is malformed (see :class:`SafetensorsSource`) or a shard is missing.
    """
    by_shard: dict[str, list[str]] = {}
    for name, shard in _read_index(index).items():
        by_shard.setdefault(shard, []).append(name)
    missing = [s for s in by_shard if not (index.parent / s).is_file()]
    if missing:
        first = missing[0]
        raise SourceError(
            f"The shard '{first}' listed in the checkpoint index '{index}' (for "
            f"{len(by_shard[first])} tensors, e.g. '{by_shard[first][0]}') is missing: no "
            f"file '{index.parent / first}'"
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
            f"The checkpoint index '{index}' maps tensor '{absent[0]}' to the shard "
            f"'{shard}', whose header has no such tensor ({len(absent)} such "
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
            header = read_safetensors_header(target)
            headers = [header]
            owner = dict.fromkeys(header.tensors, header)
            kind_of_path = kind_of_path or "safetensors file"
        if given.is_dir() or self.index is not None:
            self.config = _read_config(target.parent / "config.json")
        self.files = [h.path for h in headers]
        self.metadata = dict(headers[0].metadata)
        model_type = self.model_type
        metas = {}
        for name, header in owner.items():
            info = header.tensors[name]
            metas[name] = TensorMeta(
                info.shape, _DTYPES[info.dtype][0] or info.dtype, str(header.path)
            )
        self._entries = build_entries(
            metas,
            lambda name: _file_loader(owner[name].path, name),
            min_dim=self.min_dim,
            conv1d_modules=conv1d_modules(self.config),
            block=block_size(self.config),
        )
        n_bytes = sum(h.file_size - h.data_start for h in headers)
        parts = [f"{len(self._entries)} tensors", f"{n_bytes / 1e6:.1f} MB"]
        if len(headers) > 1 or self.index is not None:
            parts.insert(0, f"{len(headers)} shard(s)")
        if model_type:
            parts.insert(0, f"model_type {model_type}")
        self.description = f"{kind_of_path} '{given}' ({', '.join(parts)})"

    def entries(self) -> list[WeightEntry]:
        return list(self._entries)

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
