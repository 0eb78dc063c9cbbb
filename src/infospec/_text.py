"""Text read from files (tensor names, paths) made safe to show: terminals, figures, pages.

A checkpoint's tensor names are whatever its writer chose: ANSI escape sequences that
recolour or rewrite a terminal, control characters, lone surrogates (which cannot even
be encoded to UTF-8), right-to-left overrides, names of 100 kB. Every place where such
text reaches a terminal goes through :func:`printable`; figures through
:func:`figure_text` (matplotlib would read ``$...$`` as mathtext); pages HTML-escape
:func:`printable`'s result.
"""

from __future__ import annotations

__all__ = ["ELLIPSIS", "figure_text", "printable"]

#: Marks a shortened text.
ELLIPSIS = "…"


def _escape(ch: str) -> str:
    if ch.isprintable():
        return ch
    code = ord(ch)
    if ch in "\n\r\t":
        return repr(ch)[1:-1]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object, limit: int | None = None) -> str:
    r"""``text`` with every non-printable character escaped as :func:`repr` writes it.

    Printable Unicode (accents, CJK, emoji) is kept; control characters (``\x1b`` of an
    ANSI sequence, ``\n``, ``\x00``), format characters (``\u202e``), separators other
    than the space and lone surrogates (``\ud800``) become backslash escapes, so the
    result is one line, encodes to UTF-8 and cannot drive a terminal. Idempotent on its
    own output (a backslash is kept as it is).

    Parameters
    ----------
    text : str or object
        Converted with :func:`str` first.
    limit : int, optional
        Keep at most this many characters of ``text`` (before escaping), ending the
        shortened text with :data:`ELLIPSIS`.

    Examples
    --------
    >>> printable("layer.\x1b[31m0\x1b[0m.weight")
    'layer.\\x1b[31m0\\x1b[0m.weight'
    >>> printable("couche.é.\ud800")
    'couche.é.\\ud800'
    >>> printable("a" * 10, limit=5)
    'aaaa…'
    """
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + ELLIPSIS
    if text.isprintable():
        return text
    return "".join(map(_escape, text))


def figure_text(text: object, limit: int | None = None) -> str:
    r"""``text`` for a matplotlib text artist: :func:`printable`, with ``$`` escaped.

    Matplotlib reads a pair of ``$`` as mathtext and raises on a malformed formula
    (a tensor named ``$\frac{a$``); an escaped ``\$`` is drawn as a plain dollar sign.

    Examples
    --------
    >>> figure_text(r"w.$\frac{a$")
    'w.\\$\\frac{a\\$'
    """
    return printable(text, limit).replace("$", r"\$")
