r"""How much of a layer's output error reaches the model's output: end-to-end sensitivities.

The allocators of :func:`~infospec.transforms.lowrank.compress` add up per-layer errors.
The relative output error :math:`\varepsilon_l = \mathbb E\|\Delta y_l\|^2/\mathbb
E\|y_l\|^2` of one layer is not what the model's user sees: the rest of the network
amplifies or damps it. To first order, independent small errors in several layers add up at
the output as

.. math::

    \frac{\mathbb E\|\Delta y_{\text{out}}\|^2}{\mathbb E\|y_{\text{out}}\|^2}
    \approx \sum_l s_l\,\varepsilon_l, \qquad
    s_l = \frac{\mathbb E\|\Delta y_{\text{out}}\|^2 / \mathbb E\|y_{\text{out}}\|^2}
               {\varepsilon_l}\Big|_{\text{error in layer } l \text{ alone}},

and :func:`output_sensitivities` measures each :math:`s_l` by adding white Gaussian noise of
relative power ``noise**2`` to layer :math:`l`'s output (a forward hook, one extra forward
pass per layer and batch) and comparing the model's output tensors with the clean ones
(relative squared errors summed over the output's floating tensors: a model returning
``last_hidden_state`` and ``pooler_output`` counts both).
White noise is a proxy: a truncation or quantization error has its own directions, which
the network may treat differently; the figure is a gain averaged over directions.
``weighting="sensitivity"`` in :func:`~infospec.transforms.lowrank.compress` then
allocates on :math:`s_l\varepsilon_l`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .._checks import shown
from .._errors import InputError

__all__ = ["first_batches", "output_sensitivities"]


def _tensors(output: Any) -> list[torch.Tensor]:
    """Every floating tensor of a model output (a tensor, tuple/list, dict or ModelOutput)."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    return []


def _outputs(model: nn.Module, batch: Any, device, index: int) -> tuple[list[torch.Tensor], Any]:
    from ..analysis.activation_pass import call_model

    masks: list[Any] = []
    outs = _tensors(call_model(model, batch, device, index, before=masks.append))
    if not outs:
        raise InputError(
            f"output_sensitivities: the model's output for batch {index} holds no floating "
            f"tensor to compare; sensitivities need one (or use weighting='relative')."
        )
    return [o.detach().to(torch.float64) for o in outs], masks[0] if masks else None


def _sum_of_squares(t: torch.Tensor, mask: Any) -> float:
    """sum t^2 over the real positions (a (B, T) attention mask on a (B, T, ...) output)."""
    sq = t * t
    if isinstance(mask, torch.Tensor) and mask.shape == t.shape[: mask.ndim]:
        shape = (*mask.shape, *[1] * (t.ndim - mask.ndim))
        sq = sq * mask.to(device=t.device, dtype=t.dtype).reshape(shape)
    return float(sq.sum())


def output_sensitivities(
    model: nn.Module,
    modules: dict[str, nn.Module],
    batches: Iterable[Any],
    *,
    noise: float = 1e-2,
    seed: int = 0,
) -> dict[str, float]:
    r"""End-to-end sensitivity :math:`s_l` of each module's output error (module docstring).

    Parameters
    ----------
    model : nn.Module
        Evaluated in ``eval()`` mode under ``torch.no_grad()``; restored afterwards.
    modules : dict
        name -> module whose output is perturbed (one at a time).
    batches : iterable of batches
        As :func:`~infospec.compress`'s ``data``; a few suffice (``compress`` uses the first
        ``sensitivity_batches``).
    noise : float in (0, 0.5], default 0.01
        Relative RMS of the injected noise: small enough for the first-order model, large
        enough to stand above float32 round-off.
    seed : int, default 0
        The noise generator's seed (the same noise for every run).

    Returns
    -------
    dict
        name -> :math:`s_l > 0`, the output's relative squared error per unit of the
        layer's relative squared error.

    Raises
    ------
    InputError
        If ``batches`` is empty, a batch does not fit the model, the output holds no tensor
        or is all zeros, or a perturbation leaves the output unchanged (a module that does
        not reach the output).
    """
    if not (isinstance(noise, int | float) and 0 < noise <= 0.5):
        raise InputError(
            f"output_sensitivities: noise must be a number in (0, 0.5]; got {shown(noise)}."
        )
    from ..analysis.analyze import _data_device

    device = _data_device(model)
    was_training = model.training
    model.eval()
    errors = dict.fromkeys(modules, None)
    energy: list[float] | None = None
    n = 0
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                clean, mask = _outputs(model, batch, device, i)
                energies = [_sum_of_squares(c, mask) for c in clean]
                energy = (
                    energies
                    if energy is None
                    else [a + b for a, b in zip(energy, energies, strict=True)]
                )
                for name, module in modules.items():
                    gen = torch.Generator(device=clean[0].device).manual_seed(seed + 7919 * i)

                    def hook(_mod, _inp, out, gen=gen):
                        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                            return out
                        rms = out.detach().float().pow(2).mean().sqrt()
                        draw = torch.randn(out.shape, generator=gen, device=out.device)
                        return out + (noise * rms * draw).to(out.dtype)

                    handle = module.register_forward_hook(hook)
                    try:
                        noisy, _ = _outputs(model, batch, device, i)
                    finally:
                        handle.remove()
                    errs = [_sum_of_squares(a - b, mask) for a, b in zip(noisy, clean, strict=True)]
                    prev = errors[name]
                    errors[name] = (
                        errs if prev is None else [a + b for a, b in zip(prev, errs, strict=True)]
                    )
                n += 1
    finally:
        model.train(was_training)
    if n == 0 or energy is None:
        raise InputError("output_sensitivities: 'batches' yielded no batch; give at least one.")
    if not any(e > 0 for e in energy):
        raise InputError("output_sensitivities: the model's output is all zeros.")
    # relative squared error summed over the output tensors (each in its own units)
    errors = {
        name: sum(e / z for e, z in zip(errs, energy, strict=True) if z > 0)
        for name, errs in errors.items()
    }
    out = {}
    for name, err in errors.items():
        if not (err > 0 and math.isfinite(err)):
            raise InputError(
                f"output_sensitivities: noise in module '{name}' does not change the model's "
                f"output (err {err!r}); it does not reach the output: leave it out with "
                f"layers=REGEX."
            )
        out[name] = err / noise**2
    return out


def first_batches(data: Iterable[Any], k: int) -> tuple[Iterable[Any], list[Any]]:
    """``data`` to iterate once more, and a list that holds its first ``k`` batches after.

    A list or tuple is returned as is with its first ``k`` items; an iterator is wrapped so
    that the batches it yields are recorded as they pass (no second pass over a stream).
    """
    if isinstance(data, list | tuple):
        return data, list(data[:k])
    kept: list[Any] = []

    def passing():
        for batch in data:
            if len(kept) < k:
                kept.append(batch)
            yield batch

    return passing(), kept
