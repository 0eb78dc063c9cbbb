"""PyTorch checkpoints written by ``torch.save``, read without unpickling code.

Every file is read with ``torch.load(path, weights_only=True, mmap=True,
map_location="cpu")``: the weights-only unpickler builds tensors, containers and plain
values and refuses any other Python global, so reading a checkpoint never runs its code.
A file that needs ``weights_only=False`` (a pickled module, a custom class) is refused
with the global it refused and a command that converts it in a trusted environment.
Since PyTorch 1.6 ``torch.save`` writes a zip archive, which is memory-mapped: tensor
data is read from disk when a tensor is used. Its members are checked first, from the
zip headers alone (:func:`~infospec.sources.formats.check_torch_archive`):
``torch.save`` stores every member uncompressed, so an archive with a compressed member
(re-zipped, or forged: a compressed tensor would be mapped as its compressed bytes, and
a compressed ``data.pkl`` can inflate to any size) is refused before ``torch.load``
reads anything, and so is one whose members overlap or run past the file. The older format
(``_use_new_zipfile_serialization=False``) cannot be mapped: it is read whole, so memory
then holds the file (one shard of a sharded checkpoint at a time); so does a
``torch.save`` file named ``*.safetensors``, which ``torch.load`` would take for
safetensors if given its path.

The weights are found by one rule (:func:`unwrap_checkpoint`): a mapping that holds
tensors is the state dict; otherwise the first of :data:`NESTED_KEYS` that holds a
mapping of tensors (Lightning's ``state_dict``, DeepSpeed's ``module``...), applied again
to what it holds, through at most :data:`MAX_NESTING` (8) such keys; then a prefix
common to every name, ``module.`` (DataParallel, DistributedDataParallel) or
``_orig_mod.`` (``torch.compile``), is stripped. Non-tensor values (an epoch,
hyperparameters, optimizer state) are ignored and counted in the source's description,
with what was unwrapped. A checkpoint whose tensors the rule does not reach (under other
keys, or deeper than :data:`MAX_NESTING`) is refused as holding no tensors, the message
saying where tensors were found if a bounded search finds some.

Sparse tensors (any ``sparse_*`` layout), nested tensors and meta tensors, which
``weights_only=True`` loads, are listed skipped, with their layout (or the meta device)
as the reason; their entries do not load (a ``SourceError`` says to save them dense).
"""

from __future__ import annotations

import mmap
import os
import pickle
import re
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._checks import check_positive
from .._errors import SourceError
from .._text import printable
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, WeightEntry, natural_key
from .formats import (
    check_torch_archive,
    convert_pickle_command,
    refusal,
    regular_file,
    sniff,
    then_analyze,
)
from .fp8 import block_size
from .listing import TensorMeta, build_entries
from .order import order_note
from .safetensors_source import (
    _read_config,
    check_shard_names,
    confined,
    conv1d_modules,
    quantization_config,
    shards_of,
)

__all__ = [
    "MAX_NESTING",
    "NESTED_KEYS",
    "PICKLE_SUFFIXES",
    "PickleSource",
    "load_checkpoint",
    "unwrap_checkpoint",
]

#: Keys under which checkpoints nest their weights, in the order they are tried.
NESTED_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "network",
    "net",
    "weights",
    "params",
    "ema",
    "state_dict_ema",
    "model_ema",
)
#: Prefixes stripped when every tensor name has them.
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
#: File names of pickle checkpoints in a model folder, in the order they are preferred.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: Most :data:`NESTED_KEYS` unwrapped in a row (``checkpoint['state_dict']['model']...``).
MAX_NESTING = 8
#: Bounds of the search for tensors the rule does not reach (for the message only).
_SEARCH_DEPTH = 32
_SEARCH_NODES = 10_000
#: Files of a Hugging Face Trainer checkpoint folder that hold no model weights.
_NOT_WEIGHTS = re.compile(
    r"training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth"
)


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def unwrap_checkpoint(obj: Any, path: Path) -> tuple[dict[str, Any], list[str]]:
    """The state dict inside a loaded checkpoint, and notes on what was done.

    See the module docstring for the rule.

    Parameters
    ----------
    obj : object
        What ``torch.load`` returned.
    path : pathlib.Path
        The file, for messages.

    Returns
    -------
    tensors : dict of str to torch.Tensor
        Names (prefix stripped) to tensors, in the checkpoint's order.
    notes : list of str
        What was unwrapped, stripped and ignored, for the description.

    Raises
    ------
    SourceError
        If no mapping of names to tensors is found (listing the keys found).
    """
    notes: list[str] = []
    where = "checkpoint"
    ignored: list[str] = []  # the entries beside the one unwrapped, at each level
    root = obj
    holds = _TensorReach()
    for level in range(MAX_NESTING + 1):
        if not isinstance(obj, Mapping):
            raise SourceError(
                f"The PyTorch checkpoint '{path}' holds a {type(obj).__name__} at {where}, "
                f"not a mapping of names to tensors: save model.state_dict() instead."
            )
        if any(_is_tensor(v) for v in obj.values()):
            break
        for key in NESTED_KEYS if level < MAX_NESTING else ():
            inner = obj.get(key)
            if isinstance(inner, Mapping) and holds(inner, MAX_NESTING - level - 1):
                where += f"[{key!r}]"
                ignored += [str(k) for k in obj if k != key]
                obj = inner
                break
        else:
            found = ", ".join(printable(repr(k), 80) for k in list(obj)[:10]) or "none"
            deeper = _tensors_beyond_the_rule(root)
            if deeper and len(deeper) > 300:
                deeper = deeper[:300] + "..."
            hint = (
                f"; tensors were found at {deeper}, which the rule does not reach "
                f"(it unwraps only those keys, at most {MAX_NESTING} deep)"
                if deeper
                else ""
            )
            raise SourceError(
                f"The PyTorch checkpoint '{path}' holds no tensors at {where} nor under "
                f"any of the keys {', '.join(NESTED_KEYS)} (keys found: {found}){hint}: "
                f"save the model's state_dict() alone."
            )
    if where != "checkpoint":
        notes.append(f"unwrapped {where}")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and _is_tensor(v)}
    ignored += [str(k) for k in obj if k not in tensors]
    for prefix in STRIPPED_PREFIXES:
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
            notes.append(f"prefix '{prefix}' stripped")
    if ignored:
        shown = ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        notes.append(f"{len(ignored)} non-tensor entries ignored ({shown})")
    return tensors, notes


class _TensorReach:
    """Whether a mapping holds tensors within ``depth`` more :data:`NESTED_KEYS`.

    Memoised by object and depth: a pickle can share one dict under every key (or nest
    it in itself), which would make the plain recursion exponential in the depth.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[int, int], bool] = {}
        self._keep: list[Any] = []  # keeps the ids of the memo alive

    def __call__(self, obj: Mapping, depth: int) -> bool:
        key = (id(obj), depth)
        if key not in self._memo:
            self._memo[key] = False  # a cycle reaches nothing new
            self._keep.append(obj)
            self._memo[key] = any(_is_tensor(v) for v in obj.values()) or (
                depth > 0
                and any(
                    isinstance(obj.get(k), Mapping) and self(obj[k], depth - 1) for k in NESTED_KEYS
                )
            )
        return self._memo[key]


def _tensors_beyond_the_rule(root: Any) -> str | None:
    """Where the shallowest mapping holding tensors is (``checkpoint['a']['b']``), or None.

    A breadth-first search under any key (and in lists and tuples), at most
    :data:`_SEARCH_DEPTH` deep and over at most :data:`_SEARCH_NODES` containers, each
    once: for the message of a checkpoint whose tensors :func:`unwrap_checkpoint` does
    not reach.
    """
    seen: set[int] = set()
    level = [("checkpoint", root)]
    visited = 0
    for _ in range(_SEARCH_DEPTH + 1):
        below: list[tuple[str, Any]] = []
        for where, obj in level:
            if id(obj) in seen or visited >= _SEARCH_NODES:
                continue
            seen.add(id(obj))
            visited += 1
            items = list(obj.items()) if isinstance(obj, Mapping) else list(enumerate(obj))
            n = sum(1 for _, v in items if _is_tensor(v))
            if n and isinstance(obj, Mapping):
                return f"{where} ({n} tensors)"
            below += [
                (f"{where}[{printable(repr(k), 80)}]", v)
                for k, v in items
                if isinstance(v, Mapping | list | tuple)
            ]
        if not below:
            return None
        level = below
    return None


def unread_layout(t: Any) -> str | None:
    """Why infospec does not read tensor ``t`` (sparse, nested, meta), or ``None``.

    The skip reason of its entry: ``"sparse tensor (layout sparse_coo), not read"``.
    """
    import torch

    if t.is_nested:
        layout = str(t.layout).replace("torch.", "")
        try:
            n = f"{t.size(0)} tensors"
        except Exception:  # any layout torch may add
            n = "tensors"
        return f"nested tensor (layout {layout}, {n} of their own shapes), not read"
    if t.layout != torch.strided:
        layout = str(t.layout).replace("torch.", "")
        what = "sparse tensor" if layout.startswith("sparse") else "tensor"
        return f"{what} (layout {layout}), not read"
    if t.is_meta:  # torch.save of a meta tensor keeps its shape, no data
        return "tensor on the meta device (no data)"
    return None


def _listed_shape(t: Any) -> tuple[int, ...]:
    """The shape listed for a tensor that is not read: a nested one's padded shape.

    That is the number of its tensors, then each dimension's largest size, as
    ``torch.nested.to_padded_tensor`` would make it; ``()`` if torch gives no sizes.
    """
    if not t.is_nested:
        return tuple(int(d) for d in t.shape)
    try:  # the strided layout: one row of sizes per tensor
        sizes = t._nested_tensor_size()
        if sizes.shape[0] == 0:
            return (0,)
        return (int(sizes.shape[0]), *(max(0, int(d)) for d in sizes.amax(0).tolist()))
    except Exception:  # the jagged layout, or one torch may add
        pass
    try:  # the jagged layout: one ragged dimension, its lengths from the offsets
        longest = int(t.offsets().diff().max())
        return tuple(longest if i == t._ragged_idx else int(d) for i, d in enumerate(t.shape))
    except Exception:
        return ()


def _global_in_file(path: Path, fmt: str, name: str) -> bool:
    """Whether the legacy pickle ``path`` holds the GLOBAL opcode's text of ``name`` whole.

    A legacy ``torch.save`` pickles at protocol 2, whose GLOBAL opcode writes
    ``module\\nname\\n``: a refused global whose text the file lacks was cut short by the
    file's end. A zip checkpoint's pickle is a member of known size: always ``True``.
    """
    if fmt != "torch-legacy" or "." not in name:
        return True
    module, _, attr = name.rpartition(".")
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(f"{module}\n{attr}\n".encode()) >= 0
    except (OSError, ValueError):
        return True


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|global ([\w.]+)|Unsupported class ([\w.]+)")


def load_checkpoint(path: Path) -> Any:
    """``torch.load`` of one checkpoint file, weights only, memory-mapped where possible.

    Raises
    ------
    SourceError
        If the file is not a regular file, not a ``torch.save`` checkpoint, needs
        ``weights_only=False`` (naming the refused global and the conversion command),
        or cannot be read.
    """
    import torch

    regular_file(path)
    fmt = sniff(path)
    if fmt not in ("torch-zip", "torch-legacy"):
        if fmt == "torchscript":
            raise SourceError(
                f"The file '{path}' is a TorchScript archive, not a torch.save checkpoint: "
                f"pass it alone to open_source (or infospec analyze)."
            )
        raise refusal(path, fmt)
    if fmt == "torch-zip":
        check_torch_archive(path, fmt)  # stored members inside the file: before torch.load
    try:
        if str(path).endswith(".safetensors"):
            # torch.load hands a path of that name to safetensors: give it the open file
            # (which cannot be memory-mapped)
            with open(path, "rb") as fh:
                return torch.load(fh, weights_only=True, map_location="cpu")
        return torch.load(path, weights_only=True, mmap=fmt == "torch-zip", map_location="cpu")
    except EOFError:
        raise SourceError(
            f"The PyTorch checkpoint '{path}' ends before its pickle does: it is truncated "
            f"or corrupt. Copy or download it again."
        ) from None
    except pickle.UnpicklingError as exc:
        text = str(exc)
        m = _GLOBAL.search(text)
        refused = next((g for g in m.groups() if g), None) if m else None
        if not refused and "nested jagged" in text:
            raise SourceError(
                f"The PyTorch checkpoint '{path}' holds a nested jagged tensor (NJT), which "
                f"torch.load(weights_only=True) reads only once torch._dynamo is imported, "
                f"and which infospec does not analyse (nested tensors are skipped): save "
                f"it as a dense tensor (torch.nested.to_padded_tensor) or leave it out."
            ) from None
        # a global name cut short by the end of the file ('collections.', 'collections.Or')
        cut = refused and ("" in refused.split(".") or not _global_in_file(path, fmt, refused))
        if cut or (not refused and "truncated" in text):
            why = (
                f"a global named '{printable(refused, 120)}', cut short"
                if cut
                else f"torch.load: {printable(text.strip().splitlines()[0], 120)}"
            )
            raise SourceError(
                f"The PyTorch checkpoint '{path}' breaks off inside its pickle ({why}): it "
                f"is truncated or corrupt. Copy or download it again."
            ) from None
        what = f"the global {refused}" if refused else printable(text.strip().splitlines()[0], 200)
        raise SourceError(
            f"The PyTorch checkpoint '{path}' cannot be read with weights_only=True: it "
            f"pickles {what}, and infospec never unpickles code. If you trust the file, "
            f"convert it in a trusted environment with: {convert_pickle_command(path)} ; "
            f"{then_analyze(path)}."
        ) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors...
        first = printable((str(exc).strip().splitlines() or [type(exc).__name__])[0], 200)
        raise SourceError(
            f"The PyTorch checkpoint '{path}' cannot be read by torch.load: {first}. It may "
            f"be truncated or corrupt (copy or download it again), or hold what this "
            f"PyTorch cannot load (then convert it to safetensors where it loads)."
        ) from None


class _ShardCache:
    """The state dict of one checkpoint file at a time (one shard mapped at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._tensors: dict[str, Any] = {}
        self._notes: list[str] = []

    def get(self, path: Path) -> tuple[dict[str, Any], list[str]]:
        with self._lock:
            if path != self._path:
                self._tensors = {}  # drop the previous shard before reading the next
                self._path = None
                tensors, notes = unwrap_checkpoint(load_checkpoint(path), path)
                self._path, self._tensors, self._notes = path, tensors, notes
            return self._tensors, self._notes


def _resolve_folder(folder: Path) -> Path:
    """The pickle checkpoint (or index) of a model folder that has no safetensors."""
    for preferred in ("pytorch_model.bin.index.json", "pytorch_model.bin"):
        if (folder / preferred).is_file():
            return folder / preferred
    indexes = sorted(folder.glob("*.bin.index.json"))
    if len(indexes) == 1:
        return indexes[0]
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in PICKLE_SUFFIXES
        and p.is_file()
        and not _NOT_WEIGHTS.fullmatch(p.name)
    )
    if len(indexes) + len(files) == 1:
        return (indexes or files)[0]
    if not indexes and not files:
        raise SourceError(
            f"The folder '{folder}' holds no checkpoint: no .safetensors file, no "
            f"pytorch_model.bin and no PyTorch checkpoint (.bin, .pt, .pth, .ckpt)."
        )
    listed = ", ".join(p.name for p in (indexes + files)[:5])
    raise SourceError(
        f"The folder '{folder}' holds several PyTorch checkpoints ({listed}) and no "
        f"pytorch_model.bin: pass the one to analyse."
    )


class PickleSource(WeightSource):
    """Weights in PyTorch checkpoints: one file, a sharded ``.bin`` index or a folder.

    ``path`` may be a ``torch.save`` file of any name (``pytorch_model.bin``, ``.pt``,
    ``.pth``, a Lightning ``.ckpt``); a sharded index (``pytorch_model.bin.index.json``),
    whose ``weight_map`` names each tensor's shard; or a model folder without
    safetensors files (``pytorch_model.bin.index.json`` or ``pytorch_model.bin``, else
    its only index or checkpoint, not counting a Trainer's ``training_args.bin``,
    ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt`` and ``rng_state*.pth``). See the
    module docstring for how files are read and
    how nested checkpoints are unwrapped.

    Opening reads each file's pickle (names, shapes, dtypes; the zip format maps tensor
    data without reading it) and keeps the last file mapped; each entry's
    :meth:`~WeightEntry.load` reads its tensor then, mapping its shard if another one is
    mapped. Kinds, skip rules, model order and FP8 dequantization are those of
    :class:`~infospec.sources.SafetensorsSource` (with ``config.json`` beside an index
    or in a folder for GPT-2-style models).

    Parameters
    ----------
    path : str or path-like
        File, index or folder.
    min_dim : int >= 1, default 10
        Matrices whose smaller side is below it are skipped.

    Attributes
    ----------
    files : list of pathlib.Path
        The checkpoint files (the shards).
    index : pathlib.Path or None
        The index, for a sharded checkpoint.
    config : dict or None
        The folder's ``config.json``, if any.

    Raises
    ------
    SourceError
        If a file is not a regular file, not a ``torch.save`` checkpoint, needs
        ``weights_only=False``, holds no tensors, or is corrupt; an index is malformed
        or names a missing shard; a folder holds no checkpoint or several.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "last.ckpt"
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 16))
    >>> torch.save({"state_dict": net.state_dict(), "epoch": 3}, path)
    >>> source = PickleSource(path)
    >>> [e.name for e in source]
    ['0.weight', '0.bias', '1.weight', '1.bias']
    >>> print(source.description.split("; ")[1])
    unwrapped checkpoint['state_dict'], 1 non-tensor entries ignored (epoch))
    """

    def __init__(self, path: str | os.PathLike[str], *, min_dim: int = DEFAULT_MIN_DIM) -> None:
        self.min_dim = check_positive(min_dim, "min_dim", "PickleSource", integer=True)
        given = Path(path).expanduser()
        self.path = given
        self.index: Path | None = None
        self.config: dict[str, Any] | None = None
        #: ``quantization_config`` of the folder (:func:`quantization_config`), or None.
        self.quantization: dict[str, Any] | None = None
        if not given.exists():
            raise SourceError(f"No such file or folder: '{given}'.")
        # a checkpoint found by name in a folder is confined to it (links included)
        target = confined(_resolve_folder(given), "checkpoint", given) if given.is_dir() else given
        kind_of_path = "model folder" if given.is_dir() else "PyTorch checkpoint"
        self.name = given.resolve().name
        self._cache = _ShardCache()
        if target.name.endswith(".json"):
            self.index = target
            by_shard = shards_of(target)
            shards = sorted(by_shard, key=natural_key)
            if not given.is_dir():
                kind_of_path = "sharded PyTorch checkpoint"
                self.name = target.resolve().parent.name
        else:
            by_shard = {target.name: None}
            shards = [target.name]
        # the config.json beside the checkpoint (a folder's, an index's or a file's)
        self.config = _read_config(target.parent / "config.json")
        self.quantization = quantization_config(target.parent, self.config)
        self.files = [target.parent / s for s in shards]
        metas: dict[str, TensorMeta] = {}
        owner: dict[str, Path] = {}
        unread: dict[str, str] = {}  # sparse, nested and meta tensors: their reason
        notes: list[str] = []
        n_bytes = 0
        for shard, file in zip(shards, self.files, strict=True):
            tensors, file_notes = self._cache.get(file)
            if by_shard[shard] is not None:
                check_shard_names(target, shard, by_shard[shard], tensors)
            notes += [n for n in file_notes if n not in notes]
            seen: dict[tuple, str] = {}
            for name, t in tensors.items():
                if by_shard[shard] is not None and name not in by_shard[shard]:
                    continue  # the index is authoritative, as in transformers
                layout = unread_layout(t)
                if layout is not None:  # no strided data: no shape, data pointer or data
                    dtype = str(t.dtype).replace("torch.", "")
                    metas[name] = TensorMeta(_listed_shape(t), dtype, str(file), layout)
                    owner[name] = file
                    unread[name] = layout
                    continue
                reason = None
                if t.numel():
                    key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())
                    first = seen.setdefault(key, name)
                    if first != name:
                        reason = f"same tensor as '{printable(first, 200)}' (tied weights)"
                    else:
                        n_bytes += t.numel() * t.element_size()
                dtype = str(t.dtype).replace("torch.", "")
                metas[name] = TensorMeta(tuple(t.shape), dtype, str(file), reason)
                owner[name] = file
        self._entries = build_entries(
            metas,
            lambda name: self._loader(owner[name], name),
            min_dim=self.min_dim,
            conv1d_modules=conv1d_modules(self.config),
            block=block_size(self.config),
            quantization=self.quantization,
        )
        if unread:  # their layout is the reason, before any rule on a shape they lack
            self._entries = tuple(
                replace(
                    e,
                    kind="other" if unread[e.name].startswith("nested") else e.kind,
                    skip_reason=unread[e.name],
                )
                if e.name in unread
                else e
                for e in self._entries
            )
        parts = [f"{len(self._entries)} tensors", f"{n_bytes / 1e6:.1f} MB"]
        note = order_note(len(self._entries))
        if note:
            parts.append(note)
        if self.index is not None:
            parts.insert(0, f"{len(self.files)} shard(s)")
        self.description = f"{kind_of_path} '{given}' ({', '.join(parts)}" + (
            f"; {', '.join(notes)})" if notes else ")"
        )

    def _loader(self, file: Path, name: str):
        def load(device: Any = None):
            tensors, _ = self._cache.get(file)
            if name not in tensors:
                raise SourceError(
                    f"Cannot read tensor '{name}' from the PyTorch checkpoint '{file}': it is "
                    f"no longer there. The file may have changed since it was opened; open "
                    f"it again."
                )
            t = tensors[name]
            layout = unread_layout(t)
            if layout is not None:
                fix = (
                    "save it from a model whose weights are loaded (not on the meta device)"
                    if t.is_meta
                    else "save it as a dense tensor (tensor.to_dense(), or "
                    "torch.nested.to_padded_tensor)"
                )
                raise SourceError(
                    f"Cannot read tensor '{printable(name, 200)}' from the PyTorch "
                    f"checkpoint '{file}': it is a {layout}; {fix} to analyse it."
                )
            t = t.detach()
            return t if device is None else t.to(device)

        return load

    def entries(self) -> list[WeightEntry]:
        return list(self._entries)
