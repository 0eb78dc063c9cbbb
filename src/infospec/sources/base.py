"""The interface every weight source offers, and selection of layers by name."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence

from .._errors import InputError
from .._names import match_names
from .entry import WeightEntry
from .listing import EntryTable

__all__ = ["WeightSource", "select"]


class WeightSource(abc.ABC):
    """Where a model's weight tensors come from.

    A source lists its tensors instantly, from the module's structure or a file's
    header, reading no tensor data; each :class:`WeightEntry` loads its tensor when
    asked. Implementations: :class:`ModuleSource`, :class:`StateDictSource`,
    :class:`SafetensorsSource`, :class:`PickleSource`, :class:`TorchScriptSource`;
    :func:`open_source` picks one.

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
    def entries(self) -> Sequence[WeightEntry]:
        """Every tensor of the source, skipped ones included (with their reason).

        A list, or, for a file source, a read-only sequence whose entries are built when
        indexed or iterated (:class:`~infospec.sources.listing.EntryTable`), so that a
        header of a million tensors lists at once.
        """

    def select(self, layers: str | Sequence[str] | None = None) -> list[WeightEntry]:
        """The entries whose names match ``layers``; see :func:`select`."""
        return select(self.entries(), layers)

    def __iter__(self) -> Iterator[WeightEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


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
    if isinstance(entries, EntryTable) and layers is not None:
        # a file's listing: matched on its name column, only the chosen entries built
        names, skipped = entries.names, entries.skipped_flags()
    else:
        entries = list(entries)
        if layers is None:  # everything, in order (and no set of a million names)
            return entries
        names, skipped = [e.name for e in entries], [e.skipped for e in entries]
    if not names:
        raise InputError(
            f"The 'layers' parameter {layers!r} cannot select anything: the source has no tensors."
        )
    # names of analysed tensors first, so that close matches suggest useful names
    ordered = [n for n, s in zip(names, skipped, strict=True) if not s]
    ordered += [n for n, s in zip(names, skipped, strict=True) if s]
    chosen = set(match_names(ordered, layers, param="layers", what="tensor"))
    return [entries[i] for i, n in enumerate(names) if n in chosen]
