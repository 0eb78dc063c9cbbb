"""Input conversion and validation shared by every public function.

One message template everywhere, in the scikit-learn manner::

    The 'eps' parameter of coding_rate must be a float > 0. Got -1 instead.

and, for arrays, the argument's shape and dtype and what is expected.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ._checks import check_choice, check_positive, check_probability, shown
from ._errors import InfospecWarning, InputError

__all__ = [
    "as_float_tensor",
    "check_choice",
    "check_device",
    "check_eigenvalues",
    "check_finite",
    "check_ndim",
    "check_nonempty",
    "check_positive",
    "check_probability",
    "describe",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16, torch.float32)


def describe(x: torch.Tensor) -> str:
    """Short description of a tensor for error messages: ``shape (3, 4) and dtype float32``."""
    return f"shape {tuple(x.shape)} and dtype {str(x.dtype).replace('torch.', '')}"


def first_index(mask: torch.Tensor) -> tuple[int, ...]:
    """Index of the first ``True`` entry of a boolean tensor, for error messages (``()`` for
    a 0-d tensor). The caller has checked that some entry is ``True``."""
    return tuple(int(i) for i in mask.nonzero()[0])


def check_not_meta(t: torch.Tensor, name: str, func: str) -> torch.Tensor:
    """``t``, or an :class:`InputError` if it is a meta tensor (a shape without values)."""
    if t.device.type == "meta":
        raise InputError(
            f"The '{name}' argument of {func} is a meta tensor (shape {tuple(t.shape)}, no "
            f"values): load the weights first (e.g. model.to_empty(device='cpu') and a "
            f"state dict, or read the checkpoint file with infospec.analyze)."
        )
    return t


def as_float_tensor(x: Any, name: str, func: str) -> torch.Tensor:
    """Convert ``x`` (tensor, array, list or scalar) to a floating torch tensor.

    The working precision is float64, except for a floating tensor that requires
    gradients in lower precision (a training loss): float32 tensors stay float32 and
    float16/bfloat16 tensors are promoted to float32, so that log-determinants and
    logarithms of small eigenvalues are not computed in half precision. The device
    of a tensor is kept.

    Raises
    ------
    InputError
        If ``x`` cannot be converted, is complex or boolean, or is a meta tensor.
    """
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - numpy accepts nearly anything
            raise InputError(
                f"The '{name}' argument of {func} must be a tensor or array-like; "
                f"got {type(x).__name__}."
            ) from exc
        if arr.dtype.kind not in "biufc" and arr.dtype != object:
            raise InputError(
                f"The '{name}' argument of {func} must be numeric; got an array of dtype "
                f"{arr.dtype} from {type(x).__name__}."
            )
        if arr.dtype == object:
            raise InputError(
                f"The '{name}' argument of {func} must be a numeric tensor or array; "
                f"got an array of Python objects from {type(x).__name__}."
            )
        if arr.ndim and not (arr.flags.c_contiguous and arr.flags.writeable):
            arr = (
                np.ascontiguousarray(arr).copy()
                if not arr.flags.writeable
                else (np.ascontiguousarray(arr))
            )
        t = torch.as_tensor(arr)
    check_not_meta(t, name, func)
    if t.is_complex():
        raise InputError(
            f"The '{name}' argument of {func} must be real; got a complex tensor with "
            f"{describe(t)}. Pass its magnitude (for a power spectrum, abs(X)**2)."
        )
    if t.dtype == torch.bool:
        raise InputError(
            f"The '{name}' argument of {func} must be numeric; got a boolean tensor with "
            f"{describe(t)}."
        )
    if t.requires_grad and t.dtype in _LOW_PRECISION:
        return t.to(torch.float32)
    return t.to(torch.float64)


def check_ndim(
    t: torch.Tensor,
    name: str,
    func: str,
    *,
    min_ndim: int = 1,
    max_ndim: int | None = None,
    expected: str | None = None,
) -> torch.Tensor:
    """Raise :class:`InputError` unless ``min_ndim <= t.ndim <= max_ndim``."""
    if t.ndim < min_ndim or (max_ndim is not None and t.ndim > max_ndim):
        if expected is None:
            if max_ndim is None:
                expected = f"at least {min_ndim} dimension(s)"
            elif max_ndim == min_ndim:
                expected = f"exactly {min_ndim} dimension(s)"
            else:
                expected = f"between {min_ndim} and {max_ndim} dimensions"
        raise InputError(
            f"The '{name}' argument of {func} must have {expected}; got {describe(t)}."
        )
    return t


def check_nonempty(
    t: torch.Tensor, name: str, func: str, *, dim: int | None = -1, minimum: int = 1
) -> torch.Tensor:
    """Raise :class:`InputError` if ``t`` (or its axis ``dim``) has fewer than ``minimum`` items."""
    size = t.numel() if dim is None else (t.shape[dim] if t.ndim else 0)
    if size < minimum or t.numel() == 0:
        what = "values" if dim is None else f"entries along dimension {dim}"
        raise InputError(
            f"The '{name}' argument of {func} must have at least {minimum} {what}; "
            f"got {describe(t)}."
        )
    return t


def check_finite(t: torch.Tensor, name: str, func: str) -> torch.Tensor:
    """Raise :class:`InputError` if ``t`` contains NaN or infinity, saying how many and where."""
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        first = first_index(~finite)
        raise InputError(
            f"The '{name}' argument of {func} must be finite; got {n_nan} NaN and "
            f"{n_inf} "
            f"infinite value(s) (first at index {first}) in a tensor with {describe(t)}."
        )
    return t


def unit_peak(v: torch.Tensor) -> torch.Tensor:
    r"""Divide each spectrum (last axis) by its detached largest value; all-zero rows stay 0.

    For a scale-free measure :math:`f(c v) = f(v)` this changes neither the value nor the
    gradient (:math:`\nabla f(v / c) / c = \nabla f(v)` for a constant :math:`c`), and keeps
    sums and squares finite for spectra near the largest or smallest float.
    """
    peak = v.detach().amax(dim=-1, keepdim=True)
    return v / torch.where(peak > 0, peak, torch.ones_like(peak))


def check_module(model: Any, func: str, *, name: str = "model") -> torch.nn.Module:
    """``model`` if it is a :class:`torch.nn.Module`, else an :class:`InputError` naming it."""
    if not isinstance(model, torch.nn.Module):
        raise InputError(
            f"The '{name}' argument of {func} must be a torch.nn.Module; got "
            f"{type(model).__name__}."
        )
    return model


def check_bool(value: Any, name: str, func: str) -> bool:
    """``value`` as a bool, or an :class:`InputError` naming the parameter.

    Python and NumPy booleans are accepted; anything else (``1``, ``"yes"``, a tensor) is
    refused rather than read by its truth value.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise InputError(f"The '{name}' parameter of {func} must be True or False. Got {shown(value)}.")


def binary_scale(x: torch.Tensor, *, square: bool = False) -> torch.Tensor:
    """The power of two :math:`c = 2^e` with :math:`\\max|x| / c \\in [1/2, 1)` (1 for an
    all-zero ``x``), detached, 0-d; with ``square=True`` the exponent is rounded down to
    an even one, so that :math:`\\sqrt c` is a power of two too (units of a variance whose
    square root scales the means).

    Dividing by it is exact (only the exponents change), so a computation in units of
    ``c`` gives bit for bit the result of the unscaled one wherever that one does not
    overflow or underflow, and a finite one where it would.
    """
    top = x.detach().abs().amax()
    _, exponent = torch.frexp(torch.where(top > 0, top, torch.ones_like(top)))
    if square:
        exponent = 2 * torch.div(exponent, 2, rounding_mode="floor")
    return torch.ldexp(torch.ones_like(top), exponent)


def check_eigenvalues(t: torch.Tensor, name: str, func: str) -> torch.Tensor:
    """Validate a spectrum of non-negative values along the last axis.

    Checks that ``t`` is non-empty and finite, then treats negative values the way
    scikit-learn's ``_check_psd_eigenvalues`` does: a negative value is round-off
    when it is smaller in magnitude than both a relative tolerance of the largest
    value (``1e-5`` in float64, ``5e-3`` in lower precision) and an absolute floor
    (``1e-10`` in float64, ``1e-6`` otherwise); round-off negatives are clipped to 0
    with an :class:`InfospecWarning`, larger ones raise :class:`InputError`.
    """
    check_ndim(t, name, func, min_ndim=1)
    check_nonempty(t, name, func)
    check_finite(t, name, func)
    if t.numel() and bool((t < 0).any()):
        double = t.dtype == torch.float64
        rel, floor = (1e-5, 1e-10) if double else (5e-3, 1e-6)
        largest = t.abs().amax(dim=-1, keepdim=True)
        tol = torch.maximum(rel * largest, torch.full_like(largest, floor))
        significant = t < -tol
        if bool(significant.any()):
            idx = first_index(significant)
            raise InputError(
                f"The '{name}' argument of {func} must be non-negative (eigenvalues of a "
                f"covariance, singular values or power-spectrum bins); got {float(t.min()):.6g} "
                f"at index {idx} in a tensor with {describe(t)}, larger in magnitude than "
                f"round-off. Check that it is a spectrum, not a signal or log-spectrum."
            )
        warnings.warn(
            f"{func}: {int((t < 0).sum())} slightly negative value(s) in '{name}' (min "
            f"{float(t.min()):.3g}) were treated as round-off and clipped to 0.",
            InfospecWarning,
            stacklevel=3,
        )
        t = t.clamp_min(0)
    return t


def check_device(device: Any, name: str, func: str) -> torch.device | None:
    """``device`` as a :class:`torch.device` (None stays None), or a clear error.

    Raises
    ------
    InputError
        If it is not a device torch knows, is ``meta`` (no values to compute on), or names
        CUDA on a machine without it.
    """
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:  # 10**30: ValueError
        raise InputError(
            f"The '{name}' parameter of {func} must be a torch device such as 'cpu' or "
            f"'cuda'. Got {shown(device)} instead."
        ) from exc
    if dev.type == "meta":
        raise InputError(
            f"The '{name}' parameter of {func} is 'meta', a device whose tensors hold no "
            f"values, so there is no spectrum to compute on it. Use {name}='cpu'."
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"The '{name}' parameter of {func} is {str(dev)!r} but no CUDA device is "
            f"available here. Use {name}='cpu'."
        )
    return dev
