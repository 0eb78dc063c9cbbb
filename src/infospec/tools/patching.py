"""Entropy patching of bytes as in the Byte Latent Transformer (Pagnoni et al. 2024).

Rules, with ``H[t]`` the entropy (nats) of the model's distribution of byte ``t`` given the
bytes before it: byte 0 always starts a patch; for ``t >= 1``

- ``"global"``: ``t`` starts a patch when ``H[t] > threshold``;
- ``"monotonic"``: when ``H[t] - H[t-1] > threshold`` (the approximate monotonic constraint);
- ``"both"``: when ``H[t] > threshold`` and ``H[t] - H[t-1] > threshold_add``.

``max_patch_length`` then splits longer patches into pieces of at most that length. These are
this module's statement of the rules; BLT's ``patcher.py`` (which, with a BOS token, also
starts a patch at position 1) was not re-read in this session.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from .._checks import check_choice, count_in_range, real_value, shown
from .._errors import InputError

__all__ = ["entropy_patches"]

_MODES = ("global", "monotonic", "both")
_FUNC = "entropy_patches"
#: How far a row of a callable model's probabilities may sum from 1: float16 softmax rows
#: of 256 values are off by up to about 1e-3 (found in review: 0.9997 was refused at 1e-4).
_SUM_TOL = 1e-2
_KINDS = {
    "b": "booleans",
    "c": "complex numbers",
    "U": "strings",
    "S": "bytes",
    "O": "Python objects",
}


def _finite_real(value: Any, name: str) -> float:
    """``value`` as a float if it is a finite real number (not a bool, array or tensor)."""
    v = real_value(value)
    if v is not None and math.isfinite(v):
        return v
    raise InputError(
        f"The '{name}' parameter of {_FUNC} must be a finite real number (nats). "
        f"Got {shown(value)} instead."
    )


def _real_array(x: Any, name: str, func: str) -> np.ndarray:
    """``x`` (array-like or torch tensor) as a float64 NumPy array of real numbers.

    Booleans, complex numbers, strings, Python objects and meta tensors are refused with an
    :class:`InputError` naming ``name``. Torch is imported only if ``x`` may be a tensor.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        from .._validation import as_float_tensor

        return as_float_tensor(x, name, func).detach().cpu().numpy().astype(np.float64)
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as exc:  # a ragged list
        raise InputError(
            f"The '{name}' argument of {func} must be an array of real numbers; NumPy cannot "
            f"read the {type(x).__name__} given as one ({exc})."
        ) from None
    if a.dtype.kind not in "iuf":
        kind = _KINDS.get(a.dtype.kind, f"dtype {a.dtype}")
        raise InputError(
            f"The '{name}' argument of {func} must be an array of real numbers; got an array "
            f"of {kind} from {type(x).__name__}."
        )
    return a.astype(np.float64)


def entropy_patches(
    data=None,
    model=None,
    *,
    entropies=None,
    threshold: float = 1.5,
    threshold_add: float | None = None,
    mode: str = "global",
    max_patch_length: int | None = None,
) -> np.ndarray:
    """Start indices (int64, ascending, first 0) of the entropy patches of ``data``.

    Parameters
    ----------
    data : bytes or str, optional when ``entropies`` is given.
    model : object with ``entropies(data) -> (n,)`` nats, or a callable returning next-byte
        probabilities of shape (n, 256) (rows of non-negative numbers summing to 1) for the
        ``n`` bytes of ``data``; default: the shipped
        :func:`~infospec.tools.ngram.corpus_ngram` (order 3, fitted on the built-in corpus).
    entropies : array (n,), finite (nats, or a standardised score), instead of a model.
    threshold, threshold_add : finite float, nats.
    mode : {"global", "monotonic", "both"}
    max_patch_length : int in [1, 2**63 - 1] or None.

    Raises
    ------
    InputError
        If ``mode`` is not one of the three; ``threshold`` or ``threshold_add`` is not a
        finite real number; ``max_patch_length`` is not an int in [1, 2**63 - 1]; neither
        ``data`` nor ``entropies`` is given; ``data`` is not bytes or str; ``model`` is
        neither; the entropies are not a 1-D array of finite reals (or, from a model,
        not one per byte); or a callable model's probabilities are not an (n, 256) array
        of finite non-negative rows summing to 1.
    """
    check_choice(mode, "mode", _FUNC, _MODES)
    threshold = _finite_real(threshold, "threshold")
    if threshold_add is not None:
        threshold_add = _finite_real(threshold_add, "threshold_add")
    if max_patch_length is not None:
        max_patch_length = count_in_range(
            max_patch_length,
            f"The 'max_patch_length' parameter of {_FUNC}",
            low=1,
            high=2**63 - 1,
        )
    if mode == "both" and threshold_add is None:
        raise InputError("mode='both' needs 'threshold_add' (the rise, in nats).")
    if entropies is None:
        if data is None:
            raise InputError(f"{_FUNC}: give 'data' (with an optional 'model') or 'entropies'.")
        entropies = _model_entropies(data, model)
    h = _real_array(entropies, "entropies", _FUNC)
    # any finite values: entropies in nats, or a standardised score (threshold 0)
    if h.ndim != 1 or not np.all(np.isfinite(h)):
        raise InputError(
            f"The 'entropies' argument of {_FUNC} must be a 1-D array of finite values "
            f"(nats). Got shape {h.shape}" + (", with NaN or infinite values." if h.size else ".")
        )
    if h.size == 0:
        return np.zeros(0, np.int64)
    rise = np.diff(h)
    if mode == "global":
        cut = h[1:] > threshold
    elif mode == "monotonic":
        cut = rise > threshold
    else:
        cut = (h[1:] > threshold) & (rise > threshold_add)
    starts = np.concatenate([[0], np.flatnonzero(cut) + 1]).astype(np.int64)
    if max_patch_length is not None:
        step = min(max_patch_length, h.size)  # longer splits nothing; keeps int64 arithmetic
        lengths = np.diff(np.append(starts, h.size))
        pieces = -(-lengths // step)
        offs = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        starts = np.repeat(starts, pieces) + offs * step
    return starts


def _model_entropies(data, model) -> np.ndarray:
    from .ngram import _as_bytes, corpus_ngram

    n = _as_bytes(data, _FUNC).size  # bytes or str, for every model
    if model is None:
        model = corpus_ngram()
    if hasattr(model, "entropies"):
        h = _real_array(model.entropies(data), "model.entropies(data)", _FUNC)
        if h.shape != (n,):
            raise InputError(
                f"The model's entropies(data) returned shape {h.shape}; {_FUNC} expected "
                f"({n},), one entropy per byte of 'data'."
            )
        return h
    if not callable(model):
        raise InputError(
            f"The 'model' argument of {_FUNC} must have .entropies(data) or be a callable "
            f"returning (n, 256) next-byte probabilities. Got {type(model).__name__}."
        )
    p = _real_array(model(data), "model(data)", _FUNC)
    if p.shape != (n, 256):
        raise InputError(
            f"The callable model returned shape {p.shape}; {_FUNC} expected ({n}, 256) "
            f"next-byte probabilities, a row per byte of 'data'."
        )
    bad = ~np.isfinite(p) | (p < 0)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise InputError(
            f"The callable model's probabilities must be finite and >= 0; row {row} (byte "
            f"{row} of 'data') holds NaN, infinite or negative values."
        )
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > _SUM_TOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise InputError(
            f"The callable model's probabilities must sum to 1 in each row (within "
            f"{_SUM_TOL:g}); row {row} sums to {shown(float(sums[row]))}. Normalise them "
            f"(a softmax)."
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return np.maximum(h, 0.0)  # a probability a rounding over 1 gives -1e-5 nats, not < 0
