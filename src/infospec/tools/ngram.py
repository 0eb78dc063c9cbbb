"""A byte n-gram model with additive smoothing: next-byte distributions and their entropies.

:math:`p(b \\mid c) = (n(c, b) + \\alpha) / (n(c) + 256 \\alpha)` with ``c`` the previous
``order - 1`` bytes (the text is left-padded with zero bytes). Counts are kept sparse
(sorted unique keys ``c * 256 + b``) so fitting and scoring are vectorised NumPy.

:func:`corpus_ngram` is the model shipped with the package
(``infospec/data/byte_ngram_corpus.npz``): order 3, ``alpha = 0.1``, fitted on the built-in
corpus (:func:`infospec.example.example_corpus`, all paragraphs joined by newlines) by
:func:`write_corpus_ngram`; the file records the corpus's SHA-256, size and the Python version
whose docstrings made it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._checks import shown
from .._errors import InputError, SourceError

__all__ = ["ByteNgram", "corpus_bytes", "corpus_ngram", "write_corpus_ngram"]

#: The shipped model, inside the package.
CORPUS_MODEL = ("data", "byte_ngram_corpus.npz")


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
            raise InputError(f"The 'order' parameter must be an int in 1..4. Got {shown(order)}.")
        if not alpha > 0:
            raise InputError(f"The 'alpha' parameter must be a float > 0. Got {shown(alpha)}.")
        self.order, self.alpha = order, float(alpha)
        self.meta: dict = {}  # what a loaded model was fitted on (see load)
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

    def save(self, path, *, meta: dict | None = None) -> None:
        """Write the counts (and ``meta``, JSON) to ``path`` as ``.npz``, atomically.

        Raises
        ------
        InputError
            If ``path`` cannot be written; the message names it.
        """
        from .._io import atomic_write

        header = dict(order=self.order, alpha=self.alpha, **(meta or {}))
        with atomic_write(path, "wb") as fh:
            np.savez_compressed(
                fh,
                pair_keys=self._pair_keys,
                pair_counts=self._pair_counts,
                header=np.array(json.dumps(header, sort_keys=True)),
            )

    @classmethod
    def load(cls, path) -> ByteNgram:
        """A model written by :meth:`save`; its ``meta`` dict is the file's header.

        Raises
        ------
        SourceError
            If ``path`` is not such a file; the message names it.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                keys, counts = z["pair_keys"], z["pair_counts"]
            model = cls(int(header["order"]), alpha=float(header["alpha"]))
        except (OSError, ValueError, KeyError, InputError) as exc:
            raise SourceError(
                f"cannot read {path} as a ByteNgram file (written by ByteNgram.save): {exc}"
            ) from exc
        if keys.dtype != np.int64 or keys.shape != counts.shape or np.any(np.diff(keys) <= 0):
            raise SourceError(f"{path}: the counts are not sorted unique int64 keys")
        model._pair_keys, model._pair_counts = keys, counts.astype(np.int64)
        model._summarise()
        model.meta = header
        return model

    def bits_per_byte(self, data) -> float:
        """Mean ``-log2 p(x_t | context)`` over ``data`` (bits per byte)."""
        lp = self.log_prob(data)
        if lp.size == 0:
            raise InputError("The 'data' parameter is empty; bits per byte needs >= 1 byte.")
        return float(-lp.mean() / np.log(2.0))


def corpus_bytes() -> bytes:
    """The built-in corpus as one text: :func:`~infospec.example.example_corpus` (all
    paragraphs) joined by newlines, UTF-8. Its exact text follows the Python version."""
    from ..example import example_corpus

    return "\n".join(example_corpus(None)).encode("utf-8")


def write_corpus_ngram(path, *, order: int = 3, alpha: float = 0.1) -> ByteNgram:
    """Fit a :class:`ByteNgram` on :func:`corpus_bytes` and :meth:`~ByteNgram.save` it.

    The shipped file was made with
    ``write_corpus_ngram("src/infospec/data/byte_ngram_corpus.npz")``.
    """
    import hashlib
    import platform

    data = corpus_bytes()
    model = ByteNgram(order, alpha=alpha).fit(data)
    meta = dict(
        corpus="infospec.example.example_corpus(None), joined by newlines, UTF-8",
        corpus_bytes=len(data),
        corpus_sha256=hashlib.sha256(data).hexdigest(),
        python=platform.python_version(),
    )
    model.save(path, meta=meta)
    model.meta = dict(order=order, alpha=float(alpha), **meta)
    return model


def corpus_ngram() -> ByteNgram:
    """The shipped byte n-gram model fitted on the built-in corpus (order 3, ``alpha = 0.1``).

    Its ``meta`` says what it was fitted on (corpus SHA-256, bytes, Python version).
    """
    from importlib.resources import as_file, files

    with as_file(files("infospec").joinpath(*CORPUS_MODEL)) as path:
        return ByteNgram.load(Path(path))
