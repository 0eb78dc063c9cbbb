"""One entry point that turns whatever the user holds into a :class:`WeightSource`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .._errors import SourceError
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM
from .safetensors_source import SafetensorsSource
from .torch_sources import ModuleSource, StateDictSource

__all__ = ["open_source"]

_ACCEPTED = (
    "a torch.nn.Module, a state dict (a mapping of names to tensors), a path (str or "
    "os.PathLike) to a .safetensors file, a *.safetensors.index.json index or a model "
    "folder, or a WeightSource"
)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_OTHER_FORMATS = {
    ".gguf": "GGUF (llama.cpp)",
    ".onnx": "ONNX",
    ".h5": "HDF5 (Keras)",
    ".keras": "Keras",
    ".tflite": "TensorFlow Lite",
    ".npz": "NumPy archive (load it with numpy.load and pass dict(archive))",
}


def _open_path(path: Path, min_dim: int) -> WeightSource:
    if not path.exists():
        hint = ""
        if not path.is_absolute() and path.parts and "/" in str(path) and len(path.parts) == 2:
            hint = (
                " infospec reads local files only (no download); for a model hub id, "
                "download the model first and pass its folder."
            )
        raise SourceError(f"No such file or folder: '{path}'.{hint}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in _PICKLE_SUFFIXES:
            raise SourceError(
                f"The file '{path}' is a PyTorch pickle checkpoint, which infospec does not "
                f"read (unpickling can run code): load it with torch.load(path, "
                f"weights_only=True) and pass the state dict, or convert it to safetensors."
            )
        if suffix in _OTHER_FORMATS:
            raise SourceError(
                f"The file '{path}' is in the {_OTHER_FORMATS[suffix]} format, which infospec "
                f"does not read: it reads safetensors files, checkpoint indexes, model "
                f"folders, torch modules and state dicts."
            )
        if path.name == "config.json":
            path = path.parent
    return SafetensorsSource(path, min_dim=min_dim)


def open_source(obj: Any, *, min_dim: int = DEFAULT_MIN_DIM) -> WeightSource:
    """Open the weights of a model, whatever form they come in.

    ===========================================  ==========================
    ``obj``                                      source
    ===========================================  ==========================
    ``torch.nn.Module``                          :class:`ModuleSource`
    mapping of names to tensors (state dict)     :class:`StateDictSource`
    path to ``.safetensors``, an index           :class:`SafetensorsSource`
    ``*.safetensors.index.json``, a model
    folder (or its ``config.json``)
    a :class:`WeightSource`                      returned as is
    ===========================================  ==========================

    Opening lists the tensors and checks file headers; no tensor data is read.

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
        does not exist or is not a readable safetensors checkpoint (PyTorch pickles and
        other formats are named as such), or a module or state dict holds no tensors.
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
    if isinstance(obj, nn.Module):
        return ModuleSource(obj, min_dim=min_dim)
    if isinstance(obj, Mapping):
        return StateDictSource(obj, min_dim=min_dim)
    if isinstance(obj, str | os.PathLike):
        return _open_path(Path(obj).expanduser(), min_dim)
    raise SourceError(
        f"open_source cannot read an object of type {type(obj).__name__}; it accepts {_ACCEPTED}."
    )
