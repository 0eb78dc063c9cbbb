"""The interface every weight source offers, and selection of layers by name."""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator, Sequence

from .._errors import InputError
from .entry import WeightEntry

__all__ = ["WeightSource", "select"]


class WeightSource(abc.ABC):
    """Where a model's weight tensors come from.

    A source lists its tensors instantly, from the module's structure or a file's
    header, reading no tensor data; each :class:`WeightEntry` loads its tensor when
    asked. Implementations: :class:`ModuleSource`, :class:`StateDictSource`,
    :class:`SafetensorsSource`; :func:`open_source` picks one.

    Attributes
    ----------
    name : str
        Short name for reports: a file or folder name, or a module's class name.
    description : str
        One line saying what the source is (path, number of tensors, size).
    min_dim : int
        Matrices whose smaller side is below it are skipped.
    """

    name: str
    description: str
    min_dim: int

    @abc.abstractmethod
    def entries(self) -> list[WeightEntry]:
        """Every tensor of the source, skipped ones included (with their reason)."""

    def select(self, layers: str | Sequence[str] | None = None) -> list[WeightEntry]:
        """The entries whose names match ``layers``; see :func:`select`."""
        return select(self.entries(), layers)

    def __iter__(self) -> Iterator[WeightEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


def _examples(entries: Sequence[WeightEntry], k: int = 5) -> str:
    kept = [e.name for e in entries if not e.skipped] or [e.name for e in entries]
    shown = ", ".join(repr(n) for n in kept[:k])
    more = f" and {len(kept) - k} more" if len(kept) > k else ""
    return shown + more


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(
            f"The 'layers' pattern {pattern!r} is not a valid regular expression: {exc}. "
            f"Escape literal characters with a backslash or re.escape."
        ) from exc


def select(
    entries: Iterable[WeightEntry], layers: str | Sequence[str] | None = None
) -> list[WeightEntry]:
    r"""Keep the entries whose full dotted name matches ``layers``.

    Skipped entries that match are kept too (with their ``skip_reason``), so that a
    report can say why a selected tensor was not analysed.

    Parameters
    ----------
    entries : iterable of WeightEntry
        For example ``source.entries()``.
    layers : str, sequence of str, or None
        ``None`` keeps everything. A string is a regular expression searched anywhere in
        each full dotted name (:func:`re.search`, case-sensitive): ``"attention"``,
        ``r"layer\.[0-2]\."``, ``"query|key"``. In a sequence, an item equal to a name
        selects that tensor alone, any other item is a pattern; the union is kept, in the
        entries' order.

    Returns
    -------
    list of WeightEntry
        The matching entries, in their original order.

    Raises
    ------
    InputError
        If a pattern is not a valid regular expression (with :mod:`re`'s message), if a
        pattern or name matches nothing (listing names that exist), or if ``layers`` is
        neither a string nor a sequence of strings.

    Examples
    --------
    >>> import torch
    >>> from infospec.sources import open_source
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 16))
    >>> [e.name for e in select(open_source(net).entries(), r"^1\.")]
    ['1.weight', '1.bias']
    """
    entries = list(entries)
    if layers is None:
        return entries
    if isinstance(layers, str):
        items: list[str] = [layers]
    elif isinstance(layers, Sequence) and all(isinstance(x, str) for x in layers):
        items = list(layers)
        if not items:
            raise InputError(
                "The 'layers' parameter must name at least one pattern; got an empty "
                "sequence. Pass None to keep every layer."
            )
    else:
        raise InputError(
            f"The 'layers' parameter must be a regular expression (str), a sequence of "
            f"names or patterns, or None. Got {layers!r} of type {type(layers).__name__}."
        )
    if not entries:
        raise InputError(
            f"The 'layers' parameter {layers!r} cannot select anything: the source has no tensors."
        )
    names = {e.name for e in entries}
    exact = not isinstance(layers, str)
    patterns = {item: _compile(item) for item in items if not (exact and item in names)}
    chosen: set[str] = set()
    for item in items:
        if item not in patterns:
            chosen.add(item)
            continue
        regex = patterns[item]
        hits = {e.name for e in entries if regex.search(e.name)}
        if not hits:
            raise InputError(
                f"The 'layers' pattern {item!r} matches none of the {len(entries)} tensor "
                f"names (it is searched anywhere in the full dotted name with re.search); "
                f"names look like: {_examples(entries)}."
            )
        chosen |= hits
    return [e for e in entries if e.name in chosen]
