"""A byte n-gram model with additive smoothing: next-byte distributions and their entropies.

:math:`p(b \\mid c) = (n(c, b) + \\alpha) / (n(c) + 256 \\alpha)` with ``c`` the previous
``order - 1`` bytes (the text is left-padded with zero bytes). Counts are kept sparse
(sorted unique keys ``c * 256 + b``) so fitting and scoring are vectorised NumPy.
"""

from __future__ import annotations

import numpy as np

from .._errors import InputError

__all__ = ["ByteNgram"]


def _keys(data: np.ndarray, order: int) -> np.ndarray:
    """Context id of every position: the previous ``order - 1`` bytes, zero-padded."""
    padded = np.concatenate([np.zeros(order - 1, np.int64), data.astype(np.int64)])
    ctx = np.zeros(data.size, np.int64)
    for k in range(order - 1):
        ctx = ctx * 256 + padded[k : k + data.size]
    return ctx


def _as_bytes(data) -> np.ndarray:
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"The 'data' parameter must be bytes or str. Got {type(data).__name__}.")
    return np.frombuffer(bytes(data), dtype=np.uint8)


class ByteNgram:
    """Byte n-gram model, ``order`` in 1..4, smoothing ``alpha > 0``; ``fit`` adds counts.

    Entropies are in nats (as in BLT's code); :meth:`bits_per_byte` in bits.
    """

    def __init__(self, order: int = 3, *, alpha: float = 0.1):
        if not isinstance(order, int) or not 1 <= order <= 4:
            raise InputError(f"The 'order' parameter must be an int in 1..4. Got {order!r}.")
        if not alpha > 0:
            raise InputError(f"The 'alpha' parameter must be a float > 0. Got {alpha!r}.")
        self.order, self.alpha = order, float(alpha)
        self._pair_keys = np.zeros(0, np.int64)
        self._pair_counts = np.zeros(0, np.int64)

    def fit(self, data) -> ByteNgram:
        """Add the counts of ``data`` (bytes or str, UTF-8) to the model."""
        x = _as_bytes(data)
        keys = _keys(x, self.order) * 256 + x
        keys = np.concatenate([self._pair_keys, keys])
        counts = np.concatenate([self._pair_counts, np.ones(x.size, np.int64)])
        uniq, inv = np.unique(keys, return_inverse=True)
        self._pair_keys, self._pair_counts = uniq, np.bincount(inv, weights=counts).astype(np.int64)
        self._summarise()
        return self

    def _summarise(self) -> None:
        ctx = self._pair_keys // 256
        self._ctx, start = np.unique(ctx, return_index=True)
        total = np.add.reduceat(self._pair_counts, start) if ctx.size else np.zeros(0, np.int64)
        seen = np.diff(np.append(start, ctx.size))
        self._ctx_total = total
        a = self.alpha
        z = total + 256 * a
        p = (self._pair_counts + a) / np.repeat(z, seen)
        h_seen = np.add.reduceat(-p * np.log(p), start) if ctx.size else np.zeros(0)
        p0 = a / z
        self._ctx_entropy = h_seen - (256 - seen) * p0 * np.log(p0)

    def _lookup(self, x: np.ndarray):
        ctx = _keys(x, self.order)
        i = np.searchsorted(self._ctx, ctx)
        i = np.minimum(i, max(self._ctx.size - 1, 0))
        found = (
            (self._ctx.size > 0) & (self._ctx[i] == ctx)
            if self._ctx.size
            else np.zeros(x.size, bool)
        )
        return ctx, i, found

    def entropies(self, data) -> np.ndarray:
        """Entropy (nats) of the predicted distribution of each byte, shape (len(data),)."""
        x = _as_bytes(data)
        _, i, found = self._lookup(x)
        out = np.full(x.size, np.log(256.0))
        out[found] = self._ctx_entropy[i[found]]
        return out

    def log_prob(self, data) -> np.ndarray:
        """``log p(x_t | context)`` in nats for each byte, shape (len(data),)."""
        x = _as_bytes(data)
        ctx, i, found = self._lookup(x)
        total = np.where(found, self._ctx_total[i] if self._ctx.size else 0, 0)
        keys = ctx * 256 + x
        j = np.minimum(np.searchsorted(self._pair_keys, keys), max(self._pair_keys.size - 1, 0))
        hit = (self._pair_keys[j] == keys) if self._pair_keys.size else np.zeros(x.size, bool)
        n = np.where(hit, self._pair_counts[j] if self._pair_keys.size else 0, 0)
        return np.log((n + self.alpha) / (total + 256 * self.alpha))

    def bits_per_byte(self, data) -> float:
        """Mean ``-log2 p(x_t | context)`` over ``data`` (bits per byte)."""
        lp = self.log_prob(data)
        if lp.size == 0:
            raise InputError("The 'data' parameter is empty; bits per byte needs >= 1 byte.")
        return float(-lp.mean() / np.log(2.0))
