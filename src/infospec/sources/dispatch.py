"""One entry point that turns whatever the user holds into a :class:`WeightSource`."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import SourceError
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM
from .formats import refusal, regular_file, sniff
from .pickle_source import PickleSource
from .safetensors_source import SafetensorsSource, shards_of

__all__ = ["open_source"]

_ACCEPTED = (
    "a torch.nn.Module, a state dict (a mapping of names to tensors), a path (str or "
    "os.PathLike) to a checkpoint file (safetensors, torch.save, TorchScript, GGUF), a sharded "
    "checkpoint index or a model folder, or a WeightSource"
)
_SAFETENSORS_FILES = ("*.safetensors", "*.safetensors.index.json")
_PICKLE_FILES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.bin.index.json")


def _has(folder: Path, patterns: tuple[str, ...]) -> bool:
    return any(p.is_file() for pattern in patterns for p in folder.glob(pattern))


def _open_index(path: Path, min_dim: int) -> WeightSource:
    """A sharded checkpoint: safetensors or pickle shards, told by the first shard's content."""
    by_shard = shards_of(path)
    first = path.parent / next(iter(by_shard))
    regular_file(first)
    fmt = sniff(first)
    if fmt in ("torch-zip", "torch-legacy"):
        return PickleSource(path, min_dim=min_dim)
    if fmt in ("safetensors", "unknown"):
        return SafetensorsSource(path, min_dim=min_dim)
    raise refusal(first, fmt)


def _open_path(path: Path, min_dim: int) -> WeightSource:
    if not path.exists():
        hint = ""
        if not path.is_absolute() and path.parts and "/" in str(path) and len(path.parts) == 2:
            hint = (
                " infospec reads local files only (no download); for a model hub id, "
                "download the model first and pass its folder."
            )
        raise SourceError(f"No such file or folder: '{path}'.{hint}")
    from .peft_source import PeftSource, is_adapter_folder

    if is_adapter_folder(path):  # adapter_config.json: a PEFT LoRA adapter's deltas
        return PeftSource(path, min_dim=min_dim)
    if path.is_dir() or path.name == "config.json":
        folder = path if path.is_dir() else path.parent
        if not _has(folder, _SAFETENSORS_FILES) and _has(folder, _PICKLE_FILES):
            return PickleSource(folder, min_dim=min_dim)
        return SafetensorsSource(folder, min_dim=min_dim)
    regular_file(path)
    if path.name.endswith(".json"):
        return _open_index(path, min_dim)
    fmt = sniff(path)
    if fmt == "safetensors":
        return SafetensorsSource(path, min_dim=min_dim)
    if fmt in ("torch-zip", "torch-legacy"):
        return PickleSource(path, min_dim=min_dim)
    if fmt == "torchscript":
        from .torchscript_source import TorchScriptSource

        return TorchScriptSource(path, min_dim=min_dim)
    if fmt == "gguf":
        from .gguf_source import GGUFSource

        return GGUFSource(path, min_dim=min_dim)
    if fmt == "unknown" and path.suffix.lower() == ".safetensors":
        return SafetensorsSource(path, min_dim=min_dim)  # says what is wrong with it
    if fmt == "unknown" and path.suffix.lower() == ".onnx":
        fmt = "onnx"
    raise refusal(path, fmt)


def open_source(obj: Any, *, min_dim: int = DEFAULT_MIN_DIM) -> WeightSource:
    """Open the weights of a model, whatever form they come in.

    ===========================================  ==========================
    ``obj``                                      source
    ===========================================  ==========================
    ``torch.nn.Module``                          :class:`ModuleSource`
    mapping of names to tensors (state dict)     :class:`StateDictSource`
    a safetensors file, a ``*.safetensors``      :class:`SafetensorsSource`
    ``.index.json`` index, a model folder with
    safetensors (or its ``config.json``)
    a ``torch.save`` file (``.bin``, ``.pt``,    :class:`PickleSource`
    ``.pth``, ``.ckpt``), a
    ``pytorch_model.bin.index.json`` index, a
    model folder with only such files
    a ``torch.jit.save`` archive                 :class:`TorchScriptSource`
    a GGUF file (llama.cpp; needs ``gguf``)      :class:`GGUFSource`
    a :class:`WeightSource`                      returned as is
    ===========================================  ==========================

    A file's format is told from its first bytes, not its name
    (:func:`infospec.sources.formats.sniff`): a ``.bin`` that holds safetensors is read
    as safetensors. ONNX, HDF5, NumPy files and plain pickles are refused with a command
    that converts them. A folder with both safetensors and pickle files is read from its
    safetensors files.

    Opening lists the tensors and checks file headers; no tensor data is read (a
    ``torch.save`` file is memory-mapped; a TorchScript archive and an old-format,
    non-zip ``torch.save`` file are read into memory).

    Parameters
    ----------
    obj : Module, mapping, str, path-like or WeightSource
        What holds the weights.
    min_dim : int >= 1, default 10
        Matrices whose smaller side is below it are listed as skipped. Ignored for a
        :class:`WeightSource`, which keeps its own.

    Returns
    -------
    WeightSource
        Its ``entries()`` list every tensor, skipped ones with their reason.

    Raises
    ------
    SourceError
        If ``obj`` is of another type (naming it and listing the accepted ones), a path
        does not exist, is not a regular file (a FIFO, a device), is in a format infospec
        does not read (named, with the command to run instead), is a pickle that needs
        ``weights_only=False``, or is corrupt; or a module or state dict holds no tensors.
    InputError
        If ``min_dim`` is not an int >= 1.

    Examples
    --------
    >>> import torch
    >>> source = open_source(torch.nn.Embedding(50, 12))
    >>> source.description
    'module Embedding (1 parameter tensors)'
    >>> [(e.name, e.shape, e.kind) for e in source.entries()]
    [('weight', (50, 12), 'embedding')]
    >>> open_source(3.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    infospec._errors.SourceError: open_source cannot read an object of type float; ...
    """
    if isinstance(obj, WeightSource):
        return obj
    torch = sys.modules.get("torch")  # an nn.Module exists only once torch is imported
    if torch is not None and isinstance(obj, torch.nn.Module):
        from .torch_sources import ModuleSource

        return ModuleSource(obj, min_dim=min_dim)
    if isinstance(obj, Mapping):
        from .torch_sources import StateDictSource

        return StateDictSource(obj, min_dim=min_dim)
    if isinstance(obj, str | os.PathLike):
        return _open_path(Path(obj).expanduser(), min_dim)
    raise SourceError(
        f"open_source cannot read an object of type {type(obj).__name__}; it accepts {_ACCEPTED}."
    )
