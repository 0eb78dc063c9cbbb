"""Choosing layers by name: one rule for every verb that takes ``layers=``.

A string is a regular expression searched anywhere in each full dotted name
(:func:`re.search`, case-sensitive). In a sequence, an item equal to a name selects that
name alone and any other item is a pattern; the union is kept, in the names' order. A
pattern that matches nothing raises :class:`~infospec.InputError` listing close matches.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from ._checks import shown
from ._errors import InputError

__all__ = ["close_matches", "match_names"]


def close_matches(item: str, names: Sequence[str], *, k: int = 5) -> str:
    """Names that resemble ``item`` (difflib), else names sharing a word with it, else the first."""
    names = list(names)
    close = difflib.get_close_matches(item, names, n=k, cutoff=0.5)
    if not close:
        pieces = [p for p in re.split(r"[^0-9A-Za-z_]+", item) if p]
        close = [n for n in names if any(p in n for p in pieces)][:k] or names[:k]
    more = f" and {len(names) - len(close)} more" if len(names) > len(close) else ""
    return ", ".join(repr(n) for n in close) + more


def _compile(item: str, param: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(item)
    except re.error as exc:
        raise InputError(
            f"The '{param}' pattern {item!r}{where} is not a valid regular expression: {exc}. "
            f"Escape literal characters with a backslash or re.escape."
        ) from exc


def match_names(
    names: Sequence[str],
    layers: Any,
    *,
    param: str = "layers",
    func: str | None = None,
    what: str = "tensor",
) -> list[str]:
    """The names chosen by ``layers`` (see the module docstring), in the order of ``names``.

    Parameters
    ----------
    names : sequence of str
        Every name that can be chosen.
    layers : str, sequence of str, or None
        ``None`` chooses every name.
    param, func, what : str
        The parameter, the function and the kind of thing named, for error messages.

    Raises
    ------
    InputError
        If ``layers`` is not a string or a non-empty sequence of strings, a pattern is not a
        valid regular expression, ``names`` is empty, or an item matches nothing.

    Examples
    --------
    >>> match_names(["0.weight", "0.bias", "1.weight"], r"weight$")
    ['0.weight', '1.weight']
    >>> match_names(["a.b", "a.bc"], ["a.b"])  # an exact name selects itself alone
    ['a.b']
    """
    names = list(names)
    if layers is None:
        return names
    where = f" of {func}" if func else ""
    if isinstance(layers, str):
        items, exact = [layers], False
    elif isinstance(layers, Sequence) and all(isinstance(x, str) for x in layers):
        items, exact = list(layers), True
        if not items:
            raise InputError(
                f"The '{param}' parameter{where} must name at least one pattern; got an empty "
                f"sequence. Pass None to keep every {what}."
            )
    else:
        raise InputError(
            f"The '{param}' parameter{where} must be a regular expression (str), a sequence of "
            f"names or patterns, or None. Got {shown(layers)} of type {type(layers).__name__}."
        )
    if not names:
        raise InputError(
            f"The '{param}' parameter{where} {layers!r} cannot select anything: there is no "
            f"{what} to choose from."
        )
    known = set(names)
    # compile every pattern first: a syntax error is reported before any empty match
    patterns = {i: _compile(i, param, where) for i in items if not (exact and i in known)}
    chosen: set[str] = set()
    for item in items:
        if item not in patterns:
            chosen.add(item)
            continue
        regex = patterns[item]
        hits = {n for n in names if regex.search(n)}
        if not hits:
            raise InputError(
                f"The '{param}' pattern {item!r}{where} matches none of the {len(names)} {what} "
                f"names (it is searched anywhere in the full dotted name with re.search); "
                f"close matches: {close_matches(item, names)}."
            )
        chosen |= hits
    return [n for n in names if n in chosen]
