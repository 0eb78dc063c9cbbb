r"""Forward hooks that stream a model's activations into covariance accumulators.

One implementation serves the analysis report (:func:`infospec.analyze`) and the training
monitor: :class:`ActivationCovariances` attaches a forward hook to each chosen module and
feeds its output, as rows of features, into a :class:`StreamingCovariance` kept on the
model's device in float64.

Features of an output tensor:

* convolution outputs ``(batch, channels, *spatial)`` give one row per spatial position,
  with the channels as features;
* everything else ``(..., d)`` gives one row per leading index (tokens of a sequence);
* a tuple or dict output (Hugging Face blocks) contributes its first tensor.

Padding tokens can be excluded: call :meth:`ActivationCovariances.set_token_mask` with a
``(batch, seq)`` mask before the forward pass (the analysis does it with a batch's
``attention_mask``); rows of outputs whose leading shape matches the mask are filtered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._errors import InfospecError, InputError
from .._validation import check_positive
from .covariance import StreamingCovariance

__all__ = ["ActivationCovariances", "first_tensor", "output_features"]

_CONV = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def first_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor of a module output (a tensor, tuple/list, dict or ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def output_features(module: nn.Module, out: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Rows of features of one output; the flag tells whether rows follow (batch, seq) order."""
    if isinstance(module, _CONV) and out.ndim >= 3:
        return out.movedim(1, -1).reshape(-1, out.shape[1]), False
    if out.ndim == 1:
        return out.reshape(1, -1), False
    return out.reshape(-1, out.shape[-1]), True


class ActivationCovariances:
    """Streaming covariances of the outputs of named modules, fed by forward hooks.

    Parameters
    ----------
    modules : mapping of str to nn.Module
        Full dotted names and the modules to observe.
    max_tokens : int > 0, optional
        Cap on the rows taken from one output of one forward pass: a uniform random subset
        (seeded, so reproducible) when an output has more rows. ``None`` keeps every row,
        and then the result does not depend on how the data is split into batches.
    device : torch.device or str, optional
        Where the accumulators live; default: the device of each module's first output.
    seed : int, default 0
        Seed of the row subsampling.
    training_only : bool, default False
        Ignore forward passes of modules in evaluation mode (a validation loop inside a
        training run), as the training monitor needs.

    Notes
    -----
    A layer whose output is not a floating tensor, changes width between batches, or
    contains NaN/Inf stops accumulating; its reason is kept in :attr:`errors` and the other
    layers go on. Use as a context manager (or call :meth:`remove`) so the hooks are removed
    even when the forward pass raises.
    """

    def __init__(
        self,
        modules: Mapping[str, nn.Module],
        *,
        max_tokens: int | None = None,
        device: torch.device | str | None = None,
        seed: int = 0,
        training_only: bool = False,
    ) -> None:
        if max_tokens is not None:
            max_tokens = check_positive(
                max_tokens, "max_tokens", "ActivationCovariances", integer=True
            )
        self.max_tokens = max_tokens
        self.device = device
        self.training_only = training_only
        self.accumulators: dict[str, StreamingCovariance] = {}
        self.errors: dict[str, str] = {}
        #: dtype of each layer's outputs (sets the rounding floor of its covariance spectrum)
        self.dtypes: dict[str, torch.dtype] = {}
        self._mask: torch.Tensor | None = None
        self._gen = torch.Generator().manual_seed(seed)
        self._handles = [
            module.register_forward_hook(self._make_hook(name, module))
            for name, module in modules.items()
        ]

    # -- hooks ---------------------------------------------------------------------------
    def _make_hook(self, name: str, module: nn.Module):
        def hook(_mod: nn.Module, _inp: Any, output: Any) -> None:
            if name in self.errors or (self.training_only and not module.training):
                return
            try:
                self._observe(name, module, output)
            except InfospecError as exc:
                self.errors[name] = str(exc)

        return hook

    def _observe(self, name: str, module: nn.Module, output: Any) -> None:
        out = first_tensor(output)
        if out is None or not out.is_floating_point():
            what = "no tensor" if out is None else f"a {out.dtype} tensor"
            raise InputError(
                f"layer '{name}' returned {what}; only floating outputs have a covariance spectrum"
            )
        out = out.detach()
        rows, seq_ordered = output_features(module, out)
        if (
            self._mask is not None
            and seq_ordered
            and out.ndim >= 3
            and tuple(out.shape[:2]) == tuple(self._mask.shape)
        ):
            rows = rows.reshape(*self._mask.shape, -1)[self._mask.to(out.device)]
        if self.max_tokens is not None and rows.shape[0] > self.max_tokens:
            idx = torch.randperm(rows.shape[0], generator=self._gen)[: self.max_tokens]
            rows = rows[idx.to(rows.device)]
        acc = self.accumulators.get(name)
        if acc is None:
            acc = StreamingCovariance(rows.shape[-1], device=self.device or rows.device)
            self.accumulators[name] = acc
            self.dtypes[name] = out.dtype
        if rows.shape[-1] != acc.dim:
            raise InputError(
                f"layer '{name}' produced features of width {rows.shape[-1]} after "
                f"earlier batches of width {acc.dim}; batches must have a "
                f"consistent width"
            )
        try:
            acc.update(rows)  # checks finiteness once, on the rows as they are
        except InputError as exc:
            raise InputError(
                f"layer '{name}' produced NaN/Inf activations; its statistics stop here ({exc})"
            ) from exc

    def set_token_mask(self, mask: torch.Tensor | None) -> None:
        """Rows to keep in (batch, seq)-shaped outputs of the next forward pass (or None)."""
        self._mask = None if mask is None else mask.detach().to(torch.bool)

    # -- lifecycle -----------------------------------------------------------------------
    def remove(self) -> None:
        """Remove every hook; the model is left as it was. Safe to call twice."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def reset(self) -> None:
        """Forget the accumulated statistics and errors (hooks stay attached)."""
        self.accumulators.clear()
        self.errors.clear()
        self.dtypes.clear()

    def __enter__(self) -> ActivationCovariances:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
