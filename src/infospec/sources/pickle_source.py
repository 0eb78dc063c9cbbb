"""PyTorch checkpoints written by ``torch.save``, read without unpickling code.

Every file is read with ``torch.load(path, weights_only=True, mmap=True,
map_location="cpu")``: the weights-only unpickler builds tensors, containers and plain
values and refuses any other Python global, so reading a checkpoint never runs its code.
A file that needs ``weights_only=False`` (a pickled module, a custom class) is refused
with the global it refused and a command that converts it in a trusted environment.
Since PyTorch 1.6 ``torch.save`` writes a zip archive, which is memory-mapped: tensor
data is read from disk when a tensor is used. The older format
(``_use_new_zipfile_serialization=False``) cannot be mapped: it is read whole, so memory
then holds the file (one shard of a sharded checkpoint at a time); so does a
``torch.save`` file named ``*.safetensors``, which ``torch.load`` would take for
safetensors if given its path.

The weights are found by one rule (:func:`unwrap_checkpoint`): a mapping that holds
tensors is the state dict; otherwise the first of :data:`NESTED_KEYS` that holds a
mapping of tensors (Lightning's ``state_dict``, DeepSpeed's ``module``...), applied again
to what it holds; then a prefix common to every name, ``module.`` (DataParallel,
DistributedDataParallel) or ``_orig_mod.`` (``torch.compile``), is stripped. Non-tensor
values (an epoch, hyperparameters, optimizer state) are ignored and counted in the
source's description, with what was unwrapped.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._checks import check_positive
from .._errors import SourceError
from .._text import printable
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, WeightEntry, natural_key
from .formats import convert_pickle_command, refusal, regular_file, sniff, then_analyze
from .fp8 import block_size
from .listing import TensorMeta, build_entries
from .order import order_note
from .safetensors_source import (
    _read_config,
    check_shard_names,
    conv1d_modules,
    quantization_config,
    shards_of,
)

__all__ = ["NESTED_KEYS", "PICKLE_SUFFIXES", "PickleSource", "load_checkpoint", "unwrap_checkpoint"]

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
_MAX_DEPTH = 4
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
    for _ in range(_MAX_DEPTH):
        if not isinstance(obj, Mapping):
            raise SourceError(
                f"The PyTorch checkpoint '{path}' holds a {type(obj).__name__} at {where}, "
                f"not a mapping of names to tensors: save model.state_dict() instead."
            )
        if any(_is_tensor(v) for v in obj.values()):
            break
        for key in NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and _holds_tensors(inner):
                where += f"[{key!r}]"
                ignored += [str(k) for k in obj if k != key]
                obj = inner
                break
        else:
            found = ", ".join(printable(repr(k), 80) for k in list(obj)[:10]) or "none"
            raise SourceError(
                f"The PyTorch checkpoint '{path}' holds no tensors at {where} nor under "
                f"any of the keys {', '.join(NESTED_KEYS)} (keys found: {found}): save "
                f"the model's state_dict() alone."
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


def _holds_tensors(obj: Mapping, depth: int = 0) -> bool:
    if any(_is_tensor(v) for v in obj.values()):
        return True
    return depth < _MAX_DEPTH and any(
        isinstance(obj.get(k), Mapping) and _holds_tensors(obj[k], depth + 1) for k in NESTED_KEYS
    )


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
    try:
        if str(path).endswith(".safetensors"):
            # torch.load hands a path of that name to safetensors: give it the open file
            # (which cannot be memory-mapped)
            with open(path, "rb") as fh:
                return torch.load(fh, weights_only=True, map_location="cpu")
        return torch.load(path, weights_only=True, mmap=fmt == "torch-zip", map_location="cpu")
    except pickle.UnpicklingError as exc:
        text = str(exc)
        m = _GLOBAL.search(text)
        refused = next((g for g in m.groups() if g), None) if m else None
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
        target = _resolve_folder(given) if given.is_dir() else given
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
        if given.is_dir() or self.index is not None:
            self.config = _read_config(target.parent / "config.json")
            self.quantization = quantization_config(target.parent, self.config)
        self.files = [target.parent / s for s in shards]
        metas: dict[str, TensorMeta] = {}
        owner: dict[str, Path] = {}
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
            t = tensors[name].detach()
            return t if device is None else t.to(device)

        return load

    def entries(self) -> list[WeightEntry]:
        return list(self._entries)
