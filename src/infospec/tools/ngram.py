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
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import count_in_range, real_value, shown
from .._errors import InputError, SourceError

__all__ = ["ByteNgram", "corpus_bytes", "corpus_ngram", "write_corpus_ngram"]

#: The shipped model, inside the package.
CORPUS_MODEL = ("data", "byte_ngram_corpus.npz")
#: The smoothing ``alpha`` allowed. Below, ``alpha / (n(c) + 256 alpha)`` underflows to 0 for
#: a context seen up to :data:`MAX_TOTAL` times (0 log 0 is NaN); above, ``256 alpha``
#: overflows. Inside, every probability is a normal float64 (>= 1e-100 / 2**53 ~ 1e-116).
ALPHA_RANGE = (1e-100, 1e100)
#: The largest total count a loaded file may hold: float64 counts exactly up to 2**53.
MAX_TOTAL = 2**53
#: The most bytes a loaded file's arrays may unpack to (a compressed archive can claim
#: gigabytes from a few kilobytes; the shipped order-3 model holds a few megabytes).
MAX_UNPACKED = 2**31


def _check_alpha(value: Any, what: str) -> float:
    """``value`` as a float in :data:`ALPHA_RANGE`, else an InputError; ``what`` names it."""
    v = real_value(value)
    if v is not None and ALPHA_RANGE[0] <= v <= ALPHA_RANGE[1]:
        return v
    raise InputError(
        f"{what} must be a float in [{ALPHA_RANGE[0]:g}, "
        f"{ALPHA_RANGE[1]:g}] (outside it the smoothed probabilities underflow or overflow "
        f"and the entropies are NaN). Got {shown(value)} instead."
    )


def _check_path(path: Any, func: str) -> Path:
    """``path`` (str or os.PathLike) as a :class:`~pathlib.Path`, else an InputError."""
    if isinstance(path, (str, os.PathLike)) and isinstance(os.fspath(path), str) and str(path):
        return Path(path)
    raise InputError(
        f"The 'path' argument of {func} must be a file path (str or os.PathLike). "
        f"Got {shown(path)} instead."
    )


def _keys(data: np.ndarray, order: int) -> np.ndarray:
    """Context id of every position: the previous ``order - 1`` bytes, zero-padded."""
    padded = np.concatenate([np.zeros(order - 1, np.int64), data.astype(np.int64)])
    ctx = np.zeros(data.size, np.int64)
    for k in range(order - 1):
        ctx = ctx * 256 + padded[k : k + data.size]
    return ctx


def _as_bytes(data, func: str = "ByteNgram") -> np.ndarray:
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(
            f"The 'data' argument of {func} must be bytes or str (UTF-8). "
            f"Got {type(data).__name__}."
        )
    return np.frombuffer(bytes(data), dtype=np.uint8)


class ByteNgram:
    """Byte n-gram model, ``order`` in 1..4, smoothing ``alpha`` in [1e-100, 1e100] (see
    :data:`ALPHA_RANGE`); ``fit`` adds counts.

    Entropies are in nats (as in BLT's code); :meth:`bits_per_byte` in bits.

    Raises
    ------
    InputError
        If ``order`` is not an int in [1, 4] or ``alpha`` not a float in [1e-100, 1e100].
    """

    def __init__(self, order: int = 3, *, alpha: float = 0.1):
        order = count_in_range(order, "The 'order' parameter of ByteNgram", low=1, high=4)
        self.order, self.alpha = order, _check_alpha(alpha, "The 'alpha' parameter of ByteNgram")
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

        ``meta`` is a dict of JSON values with str keys; an ``order`` or ``alpha`` in it must
        equal the model's (a loaded model's ``meta`` holds both).

        Raises
        ------
        InputError
            If ``path`` is not a str or os.PathLike or cannot be written (the message names
            it), or ``meta`` is not such a dict.
        """
        from .._io import atomic_write

        func = "ByteNgram.save"
        path = _check_path(path, func)
        header = dict(order=self.order, alpha=self.alpha)
        if meta is not None:
            if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
                raise InputError(
                    f"The 'meta' argument of {func} must be a dict with str keys or None. "
                    f"Got {shown(meta)}."
                )
            for key in ("order", "alpha"):
                value = meta.get(key, header[key])
                same = type(value) in (int, float) and value == header[key]  # no arrays, bools
                if not same:
                    raise InputError(
                        f"The 'meta' argument of {func} has {key}={shown(value)}, but the "
                        f"model's {key} is {header[key]}: the file records the model's. Drop "
                        f"the key or rename it."
                    )
            header.update(meta)
        try:
            text = json.dumps(header, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"The 'meta' argument of {func} must hold JSON values only (str, finite "
                f"numbers, bools, None, lists, dicts): {exc}."
            ) from None
        with atomic_write(path, "wb") as fh:
            np.savez_compressed(
                fh,
                pair_keys=self._pair_keys,
                pair_counts=self._pair_counts,
                header=np.array(text),
            )

    @classmethod
    def load(cls, path) -> ByteNgram:
        """A model written by :meth:`save`; its ``meta`` dict is the file's header.

        Raises
        ------
        InputError
            If ``path`` is not a str or os.PathLike.
        SourceError
            If ``path`` is missing, not a regular file, or not such a file: not an ``.npz``
            archive; a header that is not a JSON object with an ``order`` in [1, 4] and an
            ``alpha`` in [1e-100, 1e100]; keys that are not sorted unique 1-D int64 ids of
            that order; counts that are not ints >= 1 with a total of at most 2**53; arrays
            that unpack to more than 2**31 bytes. The message names the file.
        """
        from ..sources.formats import regular_file

        path = _check_path(path, "ByteNgram.load")
        regular_file(path)

        def bad(problem: str) -> SourceError:
            return SourceError(
                f"Cannot read '{path}' as a ByteNgram file (written by ByteNgram.save): {problem}."
            )

        try:
            z = np.load(path, allow_pickle=False)
        except Exception as exc:  # BadZipFile, a pickle (ValueError), a bad .npy header, ...
            raise bad(f"not an .npz archive ({type(exc).__name__})") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise bad("it is a single .npy array, not an .npz archive")
        names = ("header", "pair_keys", "pair_counts")
        unpacked = sum(info.file_size for info in z.zip.infolist())
        if unpacked > MAX_UNPACKED:  # what the archive says it holds, before inflating it
            z.close()
            raise bad(
                f"its arrays unpack to {unpacked} bytes, over the {MAX_UNPACKED} bytes a byte "
                f"n-gram model may hold (16 bytes per distinct n-gram)"
            )
        missing = [k for k in names if k not in z.files]
        if missing:
            z.close()
            raise bad(f"it has no array {', '.join(repr(k) for k in missing)}")
        try:
            with z:
                arrays = {k: z[k] for k in names}
        except Exception as exc:  # a damaged archive: zlib.error, BadZipFile, EOFError, ...
            raise bad(f"a damaged archive ({type(exc).__name__})") from None
        header, keys, counts = arrays["header"], arrays["pair_keys"], arrays["pair_counts"]
        if header.ndim != 0 or header.dtype.kind != "U":
            raise bad("the header is not one JSON string")
        try:
            meta = json.loads(str(header))
        except (ValueError, RecursionError):
            raise bad("the header is not valid JSON") from None
        if not isinstance(meta, dict) or "order" not in meta or "alpha" not in meta:
            raise bad("the header is not a JSON object with 'order' and 'alpha'")
        try:
            order = count_in_range(meta["order"], "its header's 'order'", low=1, high=4)
            model = cls(order, alpha=_check_alpha(meta["alpha"], "its header's 'alpha'"))
        except InputError as exc:
            raise bad(str(exc).rstrip(".")) from None
        if keys.ndim != 1 or keys.dtype != np.int64 or keys.shape != counts.shape:
            raise bad(
                f"the keys (shape {keys.shape}, {keys.dtype}) and counts (shape "
                f"{counts.shape}, {counts.dtype}) are not two 1-D arrays of equal length "
                f"of int64 keys and int counts"
            )
        if keys.size and (
            np.any(np.diff(keys) <= 0) or keys[0] < 0 or keys[-1] >= 256**model.order
        ):
            raise bad(f"the keys are not sorted unique ids in [0, 256**{model.order})")
        if counts.dtype.kind not in "iu":
            raise bad(f"the counts are {counts.dtype}, not integers")
        if counts.size and (counts.min() < 1 or counts.astype(np.float64).sum() > MAX_TOTAL):
            raise bad("the counts are not ints >= 1 with a total of at most 2**53")
        model._pair_keys, model._pair_counts = keys, counts.astype(np.int64)
        model._summarise()
        model.meta = meta
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

    Raises
    ------
    InputError
        If ``path`` is not a str or os.PathLike or cannot be written, or ``order`` or
        ``alpha`` is out of range (see :class:`ByteNgram`).
    """
    import hashlib
    import platform

    path = _check_path(path, "write_corpus_ngram")
    model = ByteNgram(order, alpha=alpha)
    data = corpus_bytes()
    model.fit(data)
    meta = dict(
        corpus="infospec.example.example_corpus(None), joined by newlines, UTF-8",
        corpus_bytes=len(data),
        corpus_sha256=hashlib.sha256(data).hexdigest(),
        python=platform.python_version(),
    )
    model.save(path, meta=meta)
    model.meta = dict(order=model.order, alpha=model.alpha, **meta)
    return model


def corpus_ngram() -> ByteNgram:
    """The shipped byte n-gram model fitted on the built-in corpus (order 3, ``alpha = 0.1``).

    Its ``meta`` says what it was fitted on (corpus SHA-256, bytes, Python version).
    """
    from importlib.resources import as_file, files

    with as_file(files("infospec").joinpath(*CORPUS_MODEL)) as path:
        return ByteNgram.load(Path(path))
