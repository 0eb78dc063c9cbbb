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

import numpy as np

from .._checks import shown
from .._errors import InputError

__all__ = ["entropy_patches"]

_MODES = ("global", "monotonic", "both")


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
        probabilities of shape (n, 256); default: the shipped
        :func:`~infospec.tools.ngram.corpus_ngram` (order 3, fitted on the built-in corpus).
    entropies : array (n,), nats, instead of a model.
    threshold, threshold_add : float, nats.
    mode : {"global", "monotonic", "both"}
    max_patch_length : int >= 1 or None.
    """
    if mode not in _MODES:
        raise InputError(
            f"The 'mode' parameter must be one of {_MODES}. Got {shown(mode)} instead."
        )
    if entropies is None:
        if data is None:
            raise InputError("Give 'data' (with an optional 'model') or 'entropies'.")
        entropies = _model_entropies(data, model)
    h = np.asarray(entropies, dtype=np.float64)
    if h.ndim != 1 or not np.all(np.isfinite(h)):
        raise InputError(f"'entropies' must be a finite 1-D array. Got shape {h.shape}.")
    if h.size == 0:
        return np.zeros(0, np.int64)
    rise = np.diff(h)
    if mode == "global":
        cut = h[1:] > threshold
    elif mode == "monotonic":
        cut = rise > threshold
    else:
        if threshold_add is None:
            raise InputError("mode='both' needs 'threshold_add' (the rise, in nats).")
        cut = (h[1:] > threshold) & (rise > threshold_add)
    starts = np.concatenate([[0], np.flatnonzero(cut) + 1]).astype(np.int64)
    if max_patch_length is not None:
        if not isinstance(max_patch_length, int) or max_patch_length < 1:
            raise InputError(
                f"'max_patch_length' must be an int >= 1. Got {shown(max_patch_length)}."
            )
        lengths = np.diff(np.append(starts, h.size))
        pieces = -(-lengths // max_patch_length)
        offs = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        starts = np.repeat(starts, pieces) + offs * max_patch_length
    return starts


def _model_entropies(data, model) -> np.ndarray:
    from .ngram import corpus_ngram

    if model is None:
        model = corpus_ngram()
    if hasattr(model, "entropies"):
        return model.entropies(data)
    if not callable(model):
        raise InputError("'model' must have .entropies(data) or be a callable -> (n, 256) probs")
    p = np.asarray(model(data), dtype=np.float64)
    n = len(data.encode() if isinstance(data, str) else data)
    if p.shape != (n, 256):
        raise InputError(f"the model returned shape {p.shape}; expected ({n}, 256) probabilities")
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
