"""Weights read lazily from safetensors files: one file, a sharded checkpoint, a model folder.

Opening a source reads and checks only the headers; each tensor is read when its
entry's :meth:`~infospec.sources.WeightEntry.load` is called, through a memory map of
its file, one at a time, so a checkpoint larger than memory can be analysed.

Every header is checked (:func:`~.safetensors_header.read_safetensors_header`) before
safetensors sees the file, so that a damaged file fails at once with a message naming it
and the problem; the JSON files beside it (``config.json``, the shard index) go through
the same hardened parser, and shard paths are confined to the index's folder.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._checks import check_positive
from .._errors import SourceError
from .._text import printable
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, natural_key
from .formats import regular_file
from .fp8 import block_size
from .listing import EntryTable, TensorMeta, entry_table, meta_columns
from .order import order_note
from .safetensors_bulk import _TensorTable
from .safetensors_format import (
    _DTYPES,
    MAX_HEADER_BYTES,
    SafetensorsHeader,
    TensorInfo,
    _loads,
)
from .safetensors_header import _json_type, _name, read_safetensors_header

if TYPE_CHECKING:  # reading headers needs no torch; loading tensors does
    import torch

__all__ = ["SafetensorsSource"]

# Hugging Face model types whose checkpoints store GPT-2's transposed Conv1D weights,
# and the modules that are Conv1D in them.
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
_CONV1D_MODULES = frozenset({"c_attn", "q_attn", "c_proj", "c_fc"})

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

_META = functools.partial(tuple.__new__, TensorMeta)


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
    """The ``config.json`` found beside a checkpoint (confined to its folder), or None."""
    if not path.is_file():
        return None
    config = _read_json(confined(path, "model config"), "model config")
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
    q = _read_json(confined(path, "quantization config"), "quantization config")
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


def _escape(path: str | Path, roots: list[str]) -> str | None:
    """Where ``path`` resolves (links followed) if that is outside every root, else None."""
    target = os.path.realpath(path)
    return None if any(_inside(target, root) for root in roots) else target


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
        target = _escape(os.path.join(folder, shard), roots)
        if target is not None:
            link = os.path.islink(os.path.join(folder, shard))
            raise SourceError(
                f"{where}, which {'is a link to' if link else 'resolves to'} "
                f"'{printable(target, 300)}', "
                f"outside the index's folder '{folder}': infospec reads shards only from "
                f"inside the folder of their index (links included), so it refuses this index."
            )


def confined(path: Path, what: str, folder: Path | None = None) -> Path:
    """``path``, a file infospec found by its name in ``folder`` (default its parent).

    It must resolve (links followed) inside the folder, or, for a snapshot of the Hugging
    Face cache, inside the cache's ``blobs`` (:func:`_shard_roots`): a ``config.json``,
    ``model.safetensors`` or index that is a link out of the folder is refused, as a
    shard's is, so that no file outside the folder a user names is read. A file the user
    names itself is read wherever it is.

    Raises
    ------
    SourceError
        Naming the link, where it leads and how to read that file anyway.
    """
    folder = path.parent if folder is None else folder
    real_folder = os.path.realpath(folder)
    target = _escape(path, _shard_roots(real_folder))
    if target is None:
        return path
    raise SourceError(
        f"The {what} '{path}' is a link to '{printable(target, 300)}', outside the folder "
        f"'{real_folder}': infospec reads only files inside the folder it is given (links "
        f"included). Pass that file itself to read it."
    )


def _not_a_file(path: Path) -> str:
    """What a path that is not a regular file is, in words (for a shard's message)."""
    if not os.path.lexists(path):
        return f"missing: no file '{path}'"
    if os.path.islink(path) and not os.path.exists(path):
        return f"a link that leads nowhere (dangling, or a loop of links): '{path}'"
    try:
        regular_file(path)
    except SourceError as exc:
        return f"not readable as a file ({str(exc).rstrip('.')})"
    return f"not readable: '{path}'"  # pragma: no cover - a race: it is a file now


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
        path = index.parent / first
        absent = not os.path.lexists(path)
        raise SourceError(
            f"The shard '{_name(first)}' listed in the checkpoint index '{index}' (for "
            f"{len(by_shard[first])} tensors, e.g. '{_name(by_shard[first][0])}') is "
            + (f"missing: no file '{index.parent / _name(first)}'" if absent else _not_a_file(path))
            + (
                f" ({len(missing)} of {len(by_shard)} shards are not regular files)"
                if len(missing) > 1
                else ""
            )
            + (
                ". Download or copy the missing shard(s) beside the index."
                if absent
                else ". Put the shard's file itself beside the index."
            )
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

    The ``config.json`` beside the checkpoint (in a folder, beside an index, or beside a
    file passed alone, as ``save_pretrained`` writes them) is read: for GPT-2-style model
    types (``gpt2``, ``openai-gpt``, ``imagegpt``, ``decision_transformer``) the 2-D
    weights of ``c_attn``, ``q_attn``, ``c_proj`` and ``c_fc`` are the transposed
    ``Conv1D`` layout, ``(in, out)``. Without a config beside it they are plain
    ``"matrix"``.

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
        # the config.json beside the checkpoint (a folder's, an index's, or a file's in
        # the folder save_pretrained wrote): GPT-2's Conv1D layout and FP8 blocks depend on it
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
        """The checkpoint a model folder holds (an index, or one file), inside the folder."""
        for preferred in ("model.safetensors.index.json", "model.safetensors"):
            if (folder / preferred).is_file():
                what = "checkpoint index" if preferred.endswith(".json") else "checkpoint"
                return confined(folder / preferred, what, folder)
        indexes = sorted(folder.glob("*.safetensors.index.json"))
        files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
        if len(indexes) == 1:
            return confined(indexes[0], "checkpoint index", folder)
        if len(indexes) > 1:
            raise SourceError(
                f"The folder '{folder}' holds several checkpoint indexes "
                f"({', '.join(p.name for p in indexes)}): pass the one to analyse."
            )
        if len(files) == 1:
            return confined(files[0], "checkpoint", folder)
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
