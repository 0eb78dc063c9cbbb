r"""Group-wise uniform quantization of weight matrices, with bit widths allocated by spectra.

Each chosen ``nn.Linear`` weight :math:`W` (:math:`m \times n`, out by in) is cut, row by
row, into groups of ``group_size`` consecutive input columns (the last group of a row may
be shorter). A group :math:`g` with smallest and largest entries :math:`\ell_g \le h_g` is
coded at :math:`b` bits by the asymmetric uniform (round-to-nearest) quantizer

.. math::

    s_g = \frac{h_g - \ell_g}{2^b - 1},\qquad
    q = \operatorname{clip}\Big(\Big\lfloor \frac{w - \ell_g}{s_g} \Big\rceil,\, 0,\, 2^b - 1\Big),
    \qquad \hat w = \ell_g + q\, s_g ,

with :math:`s_g` and :math:`\ell_g` stored in ``scale_dtype`` (float16 by default),
:math:`\ell_g` rounded down and :math:`s_g` up where rounding to nearest would cut the
group's range (so every entry is within half a stored step of its level); the codes are
computed with the *stored* values, so dequantizing the file gives exactly the weights that
were measured. A matrix then costs :math:`b\,mn` code bits plus
:math:`2 \cdot 16` bits per group.

The loss of a bit width
-----------------------
As for the low-rank factors (:mod:`.lowrank`), the loss of replacing :math:`W` by
:math:`\hat W` is the output error under the input second moment
:math:`C = \mathbb E[xx^\top]`,

.. math::

    \ell(b) = \mathbb E\,\|(W - \hat W_b)\,x\|^2 = \operatorname{tr}(\Delta_b C \Delta_b^\top),

computed exactly for every candidate width (``method="activations"``; ``"weights"`` uses
:math:`C = I`, the squared Frobenius error). At high rate a uniform quantizer's error
falls by a factor 4 per bit (:math:`\ell(b) \approx \ell_0\, 2^{-2b}`, the
:math:`\Delta^2/12` rule), the exponential distortion-rate curve of a Gaussian source;
minimising :math:`\sum_j \ell_j(b_j)` at a total of code bits
:math:`\sum_j b_j m_j n_j \le B` then cuts every matrix where its error decrease per bit
crosses one common level, the reverse water-filling rule of
:func:`~infospec.measures.rate_distortion` applied across matrices.
:func:`~infospec.transforms.allocation.allocate_choices` solves it exactly for its
Lagrangian relaxation on the *measured* losses (not the high-rate model), then fills what
is left greedily, with a bound on the gap to the optimum.

References
----------
T. Dettmers, M. Lewis, Y. Belkada and L. Zettlemoyer, "LLM.int8(): 8-bit matrix
multiplication for transformers at scale", NeurIPS 2022 (group-wise scales).
E. Frantar, S. Ashkboos, T. Hoefler and D. Alistarh, "GPTQ: Accurate post-training
quantization for generative pre-trained transformers", ICLR 2023 (the group-wise
asymmetric min-max grid; GPTQ's error feedback is not used here).
T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., Wiley, 2006,
Sec. 10.3.3 (reverse water-filling).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .._checks import count_in_range, shown
from .._errors import InputError
from .._validation import check_choice, check_not_meta
from .allocation import allocate_choices

__all__ = [
    "QuantizedMatrix",
    "dequantize",
    "pack_codes",
    "quantize_groups",
    "quantize_model",
    "unpack_codes",
]

#: What the allocators add up across matrices (see compress's ``weighting``).
WEIGHTINGS = ("relative", "absolute", "sensitivity")

#: the bit widths :func:`quantize_model` chooses from by default
BIT_WIDTHS = (2, 3, 4, 5, 6, 7, 8)
QUANT_FILE = "quantized.safetensors"


class QuantizedMatrix(NamedTuple):
    """One matrix quantized by :func:`quantize_groups`.

    Attributes
    ----------
    codes : torch.Tensor
        uint8 of shape (m, n), each in ``[0, 2**bits - 1]``.
    scale, minimum : torch.Tensor
        Shape (m, G) in ``scale_dtype``, :math:`G = \\lceil n / \\text{group\\_size} \\rceil`.
    bits, group_size : int
    """

    codes: torch.Tensor
    scale: torch.Tensor
    minimum: torch.Tensor
    bits: int
    group_size: int

    @property
    def stored_bits(self) -> int:
        """Bits of the stored form: the packed codes, then the scales and minima."""
        itemsize = self.scale.element_size() * 8
        return self.bits * self.codes.numel() + 2 * itemsize * self.scale.numel()


def _check_bits(bits: Any, func: str = "quantize_groups") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise InputError(f"{func}: bits must be an int in 1..8; got {shown(bits)}.")
    return bits


def _check_group_size(group_size: Any, func: str) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise InputError(
            f"The 'group_size' argument of {func} must be an int >= 1 (input columns per "
            f"scale, e.g. 128); got {shown(group_size)}."
        )
    return group_size


def _check_float_dtype(dtype: Any, name: str, func: str) -> torch.dtype:
    """``dtype`` if it is a real floating torch dtype of 16 bits or more."""
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point and dtype.itemsize >= 2):
        raise InputError(
            f"The '{name}' argument of {func} must be a floating torch dtype of 16 bits or "
            f"more: torch.float16, torch.bfloat16, torch.float32 or torch.float64. Got "
            f"{shown(dtype)}."
        )
    return dtype


def _check_tensor(x: Any, name: str, func: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"The '{name}' argument of {func} must be a torch.Tensor; got {type(x).__name__}."
        )
    return check_not_meta(x, name, func)


def _groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    """``weight`` (m, n) float64 padded by edge values to (m, G, group_size), and n."""
    m, n = weight.shape
    g = -(-n // group_size)
    pad = g * group_size - n
    if pad:  # repeat the row's last entry: it changes neither the group's min nor its max
        weight = torch.cat([weight, weight[:, -1:].expand(m, pad)], dim=1)
    return weight.reshape(m, g, group_size), n


def _next(x: torch.Tensor, direction: float) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, direction))


def _toward(stored: torch.Tensor, exact: torch.Tensor, direction: float) -> torch.Tensor:
    """``stored`` (the rounded ``exact``), moved one step toward ``direction`` where it
    rounded past ``exact``: the stored minimum is never above the group's minimum."""
    past = stored.to(torch.float64) > exact if direction < 0 else stored.to(torch.float64) < exact
    return torch.where(past, _next(stored, direction), stored)


def quantize_groups(
    weight: torch.Tensor,
    bits: int,
    *,
    group_size: int = 128,
    scale_dtype: torch.dtype = torch.float16,
) -> QuantizedMatrix:
    r"""Asymmetric min-max uniform quantization of a matrix, one scale per row group.

    Parameters
    ----------
    weight : torch.Tensor
        Shape (m, n), floating point, finite.
    bits : int in 1..8
        Code width :math:`b`: :math:`2^b` levels per group.
    group_size : int, default 128
        Consecutive input columns (entries of a row) sharing a scale and a minimum.
    scale_dtype : torch.dtype, default torch.float16
        Storage of :math:`s_g` and :math:`\ell_g`; the codes are rounded against the stored
        values, so :func:`dequantize` reproduces the quantized weights exactly.

    Returns
    -------
    QuantizedMatrix

    Raises
    ------
    InputError
        If ``weight`` is not a finite floating 2-D tensor (or is a meta tensor), ``bits``
        is not in 1..8, ``group_size`` < 1, ``scale_dtype`` is not a floating torch dtype
        of 16 bits or more, or a group's minimum or scale overflows ``scale_dtype`` (pass
        ``scale_dtype=torch.float32``). A ``group_size`` above the row length gives one
        group per row.

    Examples
    --------
    >>> import torch
    >>> from infospec.transforms.quantization import quantize_groups, dequantize
    >>> w = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    >>> q = quantize_groups(w, 2, group_size=4)
    >>> q.codes.tolist(), dequantize(q).tolist()
    ([[0, 1, 2, 3]], [[0.0, 1.0, 2.0, 3.0]])
    """
    bits = _check_bits(bits)
    group_size = _check_group_size(group_size, "quantize_groups")
    scale_dtype = _check_float_dtype(scale_dtype, "scale_dtype", "quantize_groups")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or not weight.is_floating_point():
        raise InputError(
            "quantize_groups: weight must be a 2-D floating-point tensor (out x in); got "
            f"{type(weight).__name__}"
            + (f" of shape {tuple(weight.shape)}" if isinstance(weight, torch.Tensor) else "")
            + "."
        )
    if weight.numel() == 0:
        raise InputError("quantize_groups: weight is empty; give a matrix with entries.")
    check_not_meta(weight, "weight", "quantize_groups")
    group_size = min(group_size, weight.shape[1])  # larger: one group per row
    w = weight.detach().to(torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise InputError("quantize_groups: weight has NaN or infinite entries.")
    grouped, n = _groups(w, group_size)
    levels = (1 << bits) - 1
    lo = grouped.amin(dim=2)
    hi = grouped.amax(dim=2)
    lo_s = _toward(lo.to(scale_dtype), lo, -math.inf)
    scale_s = ((hi - lo_s.to(torch.float64)) / levels).to(scale_dtype)
    # round the stored step up where needed, so that the top level reaches the maximum
    top = lo_s.to(torch.float64) + levels * scale_s.to(torch.float64)
    scale_s = torch.where(top < hi, _next(scale_s, math.inf), scale_s)
    if not (bool(torch.isfinite(lo_s).all()) and bool(torch.isfinite(scale_s).all())):
        raise InputError(
            f"quantize_groups: a group's range does not fit {scale_dtype}; pass "
            f"scale_dtype=torch.float32."
        )
    lo64, s64 = lo_s.to(torch.float64), scale_s.to(torch.float64)
    safe = torch.where(s64 > 0, s64, torch.ones_like(s64))
    q = torch.round((grouped - lo64[..., None]) / safe[..., None]).clamp_(0, levels)
    q = torch.where((s64 > 0)[..., None], q, torch.zeros_like(q))
    codes = q.reshape(w.shape[0], -1)[:, :n].to(torch.uint8)
    return QuantizedMatrix(codes.contiguous(), scale_s, lo_s, bits, group_size)


def dequantize(q: QuantizedMatrix, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r""":math:`\hat w = \ell_g + q\,s_g` of a :class:`QuantizedMatrix`, shape (m, n).

    Raises
    ------
    InputError
        If ``q`` is not a :class:`QuantizedMatrix` of 2-D codes with (m, G) scales and
        minima for its ``group_size`` (an int >= 1), or ``dtype`` is not a floating torch
        dtype of 16 bits or more.
    """
    func = "dequantize"
    if not isinstance(q, QuantizedMatrix):
        raise InputError(
            f"The 'q' argument of {func} must be a QuantizedMatrix (from quantize_groups); "
            f"got {type(q).__name__}."
        )
    dtype = _check_float_dtype(dtype, "dtype", func)
    codes = _check_tensor(q.codes, "q.codes", func)
    scale = _check_tensor(q.scale, "q.scale", func)
    minimum = _check_tensor(q.minimum, "q.minimum", func)
    if codes.ndim != 2:
        raise InputError(f"{func}: q.codes must be 2-D (m, n); got shape {tuple(codes.shape)}.")
    m, n = codes.shape
    group_size = q.group_size
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise InputError(
            f"{func}: the 'group_size' field of q must be an int >= 1 (input columns per "
            f"scale); got {shown(group_size)}. Pass the QuantizedMatrix quantize_groups made."
        )
    groups = -(-n // group_size)
    if tuple(scale.shape) != (m, groups) or tuple(minimum.shape) != (m, groups):
        raise InputError(
            f"{func}: q.scale and q.minimum must have shape {(m, groups)} for codes of shape "
            f"{(m, n)} at group size {group_size}; got {tuple(scale.shape)} and "
            f"{tuple(minimum.shape)}."
        )
    idx = torch.arange(n, device=codes.device) // min(group_size, max(n, 1))
    lo = minimum.to(torch.float64)[:, idx]
    s = scale.to(torch.float64)[:, idx]
    return (lo + codes.to(torch.float64) * s).to(dtype)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """The codes' low ``bits`` bits, concatenated (little-endian) into a uint8 tensor.

    ``ceil(codes.numel() * bits / 8)`` bytes: what the file stores, so its size is the
    real cost of the bit width (a 3-bit matrix takes 3/8 of a byte per weight).

    Raises
    ------
    InputError
        If ``codes`` is not an integer tensor (or is a meta tensor), ``bits`` is not in
        1..8, or a code is outside ``[0, 2**bits - 1]``.
    """
    func = "pack_codes"
    bits = _check_bits(bits, func)
    codes = _check_tensor(codes, "codes", func)
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise InputError(
            f"The 'codes' argument of {func} must be an integer tensor (e.g. uint8); got "
            f"dtype {str(codes.dtype).removeprefix('torch.')}."
        )
    flat = codes.detach().cpu().reshape(-1).to(torch.int64)
    bad = (flat < 0) | (flat > (1 << bits) - 1)
    if bool(bad.any()):
        first = int(flat[bad][0])
        raise InputError(
            f"The 'codes' argument of {func} must hold codes in [0, {(1 << bits) - 1}] for "
            f"bits={bits}; got {first} ({int(bad.sum())} code(s) out of range)."
        )
    planes = np.unpackbits(flat.numpy().astype(np.uint8)[:, None], axis=1, bitorder="little")
    return torch.from_numpy(np.packbits(planes[:, :bits].reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: uint8 codes of ``shape``.

    Raises
    ------
    InputError
        If ``packed`` is not a tensor (or is a meta tensor), ``bits`` is not in 1..8,
        ``shape`` is not a sequence of ints >= 0, or ``packed`` does not hold exactly the
        bytes that ``shape`` at ``bits`` needs.
    """
    func = "unpack_codes"
    bits = _check_bits(bits, func)
    packed = _check_tensor(packed, "packed", func)
    if hasattr(shape, "tolist") and getattr(shape, "ndim", 0) == 1:  # a NumPy array, a tensor
        shape = shape.tolist()
    if isinstance(shape, str | bytes) or not isinstance(shape, Sequence):
        raise InputError(
            f"The 'shape' argument of {func} must be a sequence of ints >= 0, e.g. (m, n); "
            f"got {shown(shape)}."
        )
    shape = tuple(
        count_in_range(v, f"Each size in the 'shape' argument of {func}", low=0) for v in shape
    )
    count = math.prod(shape)
    need = -(-count * bits // 8)
    raw = packed.detach().cpu().reshape(-1)
    if raw.dtype != torch.uint8 or raw.numel() != need:
        raise InputError(
            f"unpack_codes: {shape} codes of {bits} bits need {need} uint8 bytes; "
            f"got {raw.numel()} of {raw.dtype}."
        )
    planes = np.unpackbits(raw.numpy(), bitorder="little")[: count * bits].reshape(count, bits)
    values = (planes.astype(np.uint8) << np.arange(bits, dtype=np.uint8)).sum(axis=1)
    return torch.from_numpy(values.astype(np.uint8)).reshape(shape)


def _output_error(delta: torch.Tensor, c: torch.Tensor | None) -> float:
    if c is None:
        return float((delta * delta).sum())
    return float(torch.einsum("ij,jk,ik->", delta, c, delta))


def _check_budget(bits: Any, widths: Sequence[int]) -> float:
    try:
        finite = math.isfinite(bits)
    except (TypeError, OverflowError):  # not a number, or an int beyond float64
        finite = False
    if isinstance(bits, bool) or not isinstance(bits, int | float) or not finite:
        raise InputError(
            f"compress: bits must be a number (mean code bits per weight); got {shown(bits)}."
        )
    lo, hi = min(widths), max(widths)
    if not lo <= bits <= hi:
        raise InputError(
            f"compress: bits={bits!r} is outside the bit widths {lo}..{hi} chosen from; give "
            f"a mean number of code bits per weight in that range."
        )
    return float(bits)


def quantize_model(
    model: nn.Module,
    chosen: dict[str, nn.Module],
    moments: dict[str, tuple[torch.Tensor, int]],
    *,
    bits: float,
    method: str,
    allocation: str,
    weighting: str,
    group_size: int = 128,
    widths: Sequence[int] = BIT_WIDTHS,
    scale_dtype: torch.dtype = torch.float16,
    sensitivities: dict[str, float] | None = None,
) -> tuple[nn.Module, list[dict], dict[str, QuantizedMatrix], dict[str, Any], float]:
    """Quantize the ``chosen`` linears of a copy of ``model`` at a mean of ``bits`` code bits.

    The core of :func:`~infospec.transforms.lowrank.compress` with ``bits=``: every
    candidate width of every matrix is quantized and its output error measured, then the
    widths are allocated (``"allocated"``: :func:`allocate_choices` on the losses, each over
    the matrix's :math:`\\mathbb E\\|Wx\\|^2` for ``weighting="relative"``, and times the
    matrix's end-to-end gain from ``sensitivities`` for ``"sensitivity"``; ``"uniform"``:
    ``bits`` for every matrix, which must then be one of ``widths``).

    Returns
    -------
    (model, plan, quantized, settings, seconds)
        The quantized deep copy, one plan record per matrix, name -> QuantizedMatrix,
        the settings, and the host seconds spent.
    """
    method = check_choice(method, "method", "compress", ("activations", "weights"))
    allocation = check_choice(allocation, "allocation", "compress", ("allocated", "uniform"))
    weighting = check_choice(weighting, "weighting", "compress", WEIGHTINGS)
    if (weighting == "sensitivity") != (sensitivities is not None):
        raise InputError(
            "compress: weighting='sensitivity' and the measured sensitivities go together."
        )
    group_size = _check_group_size(group_size, "compress")
    widths = sorted({_check_bits(b, "compress") for b in widths})
    budget_bits = _check_budget(bits, widths)
    if allocation == "uniform" and budget_bits not in widths:
        raise InputError(
            f"compress: allocation='uniform' gives every matrix the same width, so bits must "
            f"be one of {widths}; got {shown(bits)} (use allocation='allocated' for a mean)."
        )
    start = time.perf_counter()
    menus, candidates, refs, shapes = [], {}, [], []
    for name, lin in chosen.items():
        w = lin.weight.detach().to(torch.float64)
        c = moments[name][0].to(w.device) if method == "activations" else None
        ref = _output_error(w, c)
        options = {}
        for b in widths:
            q = quantize_groups(w, b, group_size=group_size, scale_dtype=scale_dtype)
            options[b] = (q, _output_error(w - dequantize(q), c))
        candidates[name] = options
        refs.append(ref)
        shapes.append(tuple(w.shape))
        scale = ref if weighting != "absolute" and ref > 0 else 1.0
        if sensitivities is not None:
            scale /= sensitivities[name]
        menus.append([(b * w.numel(), options[b][1] / scale) for b in widths])
    total = sum(m * n for m, n in shapes)
    if allocation == "allocated":
        alloc = allocate_choices(menus, budget_bits * total + 1e-6)
        picked = [widths[i] for i in alloc.choices]
        gap = alloc.gap_bound
    else:
        picked = [int(budget_bits)] * len(shapes)
        gap = 0.0
    out = copy.deepcopy(model)
    plan, quantized = [], {}
    for (name, lin), b, ref, (m, n) in zip(chosen.items(), picked, refs, shapes, strict=True):
        q, loss = candidates[name][b]
        quantized[name] = q
        with torch.no_grad():
            out.get_submodule(name).weight.copy_(dequantize(q, lin.weight.dtype))
        plan.append(
            {
                "name": name,
                "shape": [m, n],
                "bits": b,
                "group_size": group_size,
                "params_before": m * n,
                "bits_before": m * n * lin.weight.element_size() * 8,
                "bits_after": q.stored_bits,
                "predicted_loss": loss,
                "predicted_relative": loss / ref if ref > 0 else math.nan,
                "status": "quantized",
                "reason": "",
            }
        )
        if sensitivities is not None:
            plan[-1]["sensitivity"] = sensitivities[name]
    code_bits = sum(r["bits"] * r["params_before"] for r in plan)
    settings = {
        "bits": budget_bits,
        "widths": widths,
        "group_size": group_size,
        "scale_dtype": str(scale_dtype).removeprefix("torch."),
        "method": method,
        "allocation": allocation,
        "weighting": weighting,
        "params": total,
        "mean_code_bits": code_bits / total,
        "mean_stored_bits": sum(r["bits_after"] for r in plan) / total,
        "predicted_loss": float(sum(r["predicted_loss"] for r in plan)),
        "gap_bound": gap,
    }
    return out, plan, quantized, settings, time.perf_counter() - start


def quantized_tensors(quantized: dict[str, QuantizedMatrix]) -> dict[str, torch.Tensor]:
    """The tensors of a quantized-model file: packed codes, scales and minima per layer."""
    tensors = {}
    for name, q in quantized.items():
        tensors[f"{name}.codes"] = pack_codes(q.codes, q.bits)
        tensors[f"{name}.scale"] = q.scale.detach().cpu().contiguous()
        tensors[f"{name}.minimum"] = q.minimum.detach().cpu().contiguous()
    return tensors


def evaluate_quantized(
    source: nn.Module,
    plan: list[dict],
    quantized: dict[str, QuantizedMatrix],
    moments: dict[str, tuple[torch.Tensor, int]],
) -> None:
    r"""Fill ``measured_loss`` / ``measured_relative`` of each quantized layer's record.

    :math:`\operatorname{tr}(\Delta C' \Delta^\top)` with :math:`C'` the input second moment
    of the evaluation data in the original model, as for the low-rank factors.
    """
    named = dict(source.named_modules())
    by_name = {r["name"]: r for r in plan}
    for name, q in quantized.items():
        c, _rows = moments[name]
        w = named[name].weight.detach().to(torch.float64)
        c = c.to(w.device)
        err = _output_error(w - dequantize(q).to(w.device), c)
        ref = _output_error(w, c)
        by_name[name]["measured_loss"] = err
        by_name[name]["measured_relative"] = err / ref if ref > 0 else math.nan
