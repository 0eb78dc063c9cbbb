"""TorchScript archives (``torch.jit.save``): their parameters and buffers, never run.

The archive is loaded with ``torch.jit.load(path, map_location="cpu")`` and only its
tensors are read (``named_parameters`` and ``named_buffers`` of every submodule); no
method of the module is called. Each submodule keeps the name of the Python class it was
compiled from (``original_name``), so ``Linear``, convolutions, embeddings and attention
get the same kinds as in a live module (:class:`~infospec.sources.ModuleSource`), and any
other tensor is recognised by name and shape as in a file.

Trust: loading deserialises and compiles the archive's TorchScript code (not Python: it
cannot import modules), and runs a class's TorchScript ``__setstate__`` if the archive
defines one. Treat an archive like code: open only archives you trust. Unlike pickles,
the archive is read whole into memory (``torch.jit.load`` has no memory map). Before
``torch.jit.load`` reads it, its zip headers are checked
(:func:`~infospec.sources.formats.check_torch_archive`): ``torch.jit.save`` deflates
its ``code/`` members only, so a member compressed otherwise than deflated, deflated
members that would inflate to over 64 MiB plus 32 times their size (a zip bomb), and
members that overlap or run past the file are refused; a truncated archive is reported
as such.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._checks import check_positive
from .._errors import SourceError
from .._text import printable
from .entry import DEFAULT_MIN_DIM
from .formats import check_torch_archive, refusal, regular_file, sniff
from .torch_sources import ModuleSource

__all__ = ["TorchScriptSource"]


class TorchScriptSource(ModuleSource):
    """The tensors of a TorchScript archive, in the module's order.

    Parameters are listed as in :class:`ModuleSource`, and buffers too (an archive can
    hold weights as buffers; running statistics and index buffers are skipped by the
    usual rules).

    Parameters
    ----------
    path : str or path-like
        A ``torch.jit.save`` file.
    min_dim : int >= 1, default 10
        Matrices whose smaller side is below it are skipped.

    Raises
    ------
    SourceError
        If the file is not a regular file, not a TorchScript archive, cannot be loaded,
        or holds no tensors (a frozen module keeps its weights as constants, which are
        not readable).

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "net.pt"
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Linear(16, 12))
    >>> torch.jit.save(torch.jit.script(net), path)
    >>> [(e.name, e.kind) for e in TorchScriptSource(path) if not e.skipped]
    [('0.weight', 'conv2d'), ('1.weight', 'linear')]
    """

    _with_buffers = True

    def __init__(self, path: str | os.PathLike[str], *, min_dim: int = DEFAULT_MIN_DIM) -> None:
        import torch

        path = Path(path).expanduser()
        regular_file(path)
        fmt = sniff(path)
        if fmt == "zip-corrupt":
            raise refusal(path, fmt)  # truncated or corrupt: says so
        if fmt != "torchscript":
            raise SourceError(
                f"The file '{path}' is not a TorchScript archive (torch.jit.save output): "
                f"pass it to open_source, which tells its format from its content."
            )
        check_torch_archive(path, fmt)  # members inside the file, inflating boundedly
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError and others
            first = printable((str(exc).strip().splitlines() or [type(exc).__name__])[0], 200)
            raise SourceError(
                f"The TorchScript archive '{path}' cannot be loaded by torch.jit.load: "
                f"{first}. It may be truncated, corrupt, or from a newer PyTorch."
            ) from None
        n_params = sum(1 for _ in module.parameters())
        n_buffers = sum(1 for _ in module.buffers())
        if n_params + n_buffers == 0:
            raise SourceError(
                f"The TorchScript archive '{path}' holds no parameters or buffers (a frozen "
                f"module keeps its weights as constants, which infospec does not read): "
                f"save the module before torch.jit.freeze, or its state_dict()."
            )
        self.module = module
        self.path = path
        self.min_dim = check_positive(min_dim, "min_dim", "TorchScriptSource", integer=True)
        self.name = path.name
        self._origin = str(path)
        original = getattr(module, "original_name", type(module).__name__)
        self.description = (
            f"TorchScript archive '{path}' (module {original}, {n_params} parameter and "
            f"{n_buffers} buffer tensors)"
        )
