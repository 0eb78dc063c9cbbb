"""Entries of a source whose tensors are known by name, shape and dtype (files, state dicts).

One rule for every such source: packed integer weights (bitsandbytes, GPTQ) become one
entry each with the matrix's shape, their companion tensors skipped
(:mod:`infospec.sources.packed`); the kind from the name and shape
(:func:`~infospec.sources.entry.infer_kind`); the skip reasons of packed parts and FP8
scales first (:mod:`infospec.sources.fp8`), then the general skip rules
(:mod:`infospec.sources.entry`), then the source's own reason (a tied or storage-less
tensor); FP8 and packed weights load dequantized; file sources sort the entries into
model order (:mod:`infospec.sources.order`).

Entries are kept as columns (:class:`EntryTable`): the names, and for each tensor an
index into a short list of the distinct (shape, dtype, kind, skip reason, origin)
profiles; a :class:`WeightEntry` is built when it is asked for. Kinds and reasons are
computed once per profile, and by name only for the tensors whose kind the name can
change (a 2- to 5-D tensor whose name ends in ``weight``): the entries of a header of a
million one-byte tensors take a few hundredths of a second once the header is read.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import NamedTuple, overload

from .entry import (
    Loader,
    WeightEntry,
    fused_experts_kinds,
    generic_kind,
    infer_kind,
    is_fused_experts,
    skip_reason_for,
)
from .fp8 import DEFAULT_BLOCK, FP8_DTYPES, SCALE_DTYPE, Fp8Plan, fp8_plan
from .order import model_order_indices
from .packed import EMPTY_PLAN, PackedPlan, may_hold_packed, packed_plan

__all__ = [
    "EntryTable",
    "TensorMeta",
    "build_entries",
    "entry_groups",
    "entry_table",
    "meta_columns",
]


class TensorMeta(NamedTuple):
    """What a source knows of one tensor before reading it.

    Attributes
    ----------
    shape : tuple of int
    dtype : str
        As torch names it (``"bfloat16"``), or the file's code when torch has none.
    origin : str
        The file holding it, or ``"state dict"``.
    reason : str or None
        The source's own skip reason, used when no general rule applies (tied weights).
    """

    shape: tuple[int, ...]
    dtype: str
    origin: str
    reason: str | None = None


class EntryTable(Sequence[WeightEntry]):
    """The entries of a source as columns, each :class:`WeightEntry` built when asked for.

    A read-only sequence: ``table[i]``, ``len(table)``, iteration, slices (a list).
    Built by :func:`entry_table`.
    """

    __slots__ = ("_loader_of", "_names", "_packed", "_plan", "_profile_ids", "_profiles")

    def __init__(
        self,
        names: list[str],
        profile_ids: array,
        profiles: list[tuple[tuple[int, ...], str, str, str | None, str]],
        loader_of: Callable[[str], Loader],
        plan: Fp8Plan,
        packed: PackedPlan = EMPTY_PLAN,
    ) -> None:
        self._names = names
        self._profile_ids = profile_ids
        self._profiles = profiles
        self._loader_of = loader_of
        self._plan = plan
        self._packed = packed

    def _entry(self, i: int) -> WeightEntry:
        name = self._names[i]
        shape, dtype, kind, reason, origin = self._profiles[self._profile_ids[i]]
        if name in self._packed.weights:
            load = self._packed.loader(name, self._loader_of)
        else:
            load = self._plan.loader(name, dtype, shape, self._loader_of(name), self._loader_of)
        return WeightEntry(name, shape, dtype, kind, reason, origin, load)

    @overload
    def __getitem__(self, i: int) -> WeightEntry: ...
    @overload
    def __getitem__(self, i: slice) -> list[WeightEntry]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._entry(j) for j in range(*i.indices(len(self._names)))]
        if not -len(self._names) <= i < len(self._names):
            raise IndexError(f"entry index {i} out of range for {len(self._names)} entries")
        return self._entry(i % len(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[WeightEntry]:
        return map(self._entry, range(len(self._names)))

    @property
    def names(self) -> list[str]:
        """Every entry's name, in order (no entry built)."""
        return list(self._names)

    def skipped_flags(self) -> list[bool]:
        """Whether each entry is skipped (has a skip reason), in order (no entry built)."""
        skipped = [p[3] is not None for p in self._profiles]
        return [skipped[p] for p in self._profile_ids]

    def groups(self) -> list[tuple[WeightEntry, int]]:
        """Each distinct profile as a nameless entry, and how many entries have it."""
        counts = Counter(self._profile_ids)
        return [(WeightEntry("", *self._profiles[p]), c) for p, c in sorted(counts.items())]

    def __repr__(self) -> str:
        return f"<EntryTable of {len(self)} entries, {len(self._profiles)} profiles>"


def entry_groups(entries: Sequence[WeightEntry]) -> list[tuple[WeightEntry, int]]:
    """The entries grouped by (shape, dtype, kind, skip reason, origin), with counts.

    Each group is a nameless :class:`WeightEntry` and the number of entries like it, in
    the order of first appearance; an :class:`EntryTable` gives them without building
    its entries.
    """
    if isinstance(entries, EntryTable):
        return entries.groups()
    counts = Counter((e.shape, e.dtype, e.kind, e.skip_reason, e.origin) for e in entries)
    return [(WeightEntry("", *key), c) for key, c in counts.items()]


def meta_columns(
    tensors: Mapping[str, TensorMeta],
) -> tuple[list[str], list[int], list[TensorMeta]]:
    """``tensors`` as (names, an index into the distinct metas for each, the metas)."""
    index: dict[TensorMeta, int] = {}
    ids = [index.setdefault(m, len(index)) for m in tensors.values()]
    return list(tensors), ids, list(index)


def entry_table(
    names: list[str],
    meta_ids: Sequence[int],
    metas: Sequence[TensorMeta],
    loader_of: Callable[[str], Loader],
    *,
    min_dim: int,
    conv1d_modules: frozenset[str] = frozenset(),
    block: tuple[int, int] = DEFAULT_BLOCK,
    model_order: bool = True,
    quantization: Mapping | None = None,
    read_small: Callable | None = None,
) -> EntryTable:
    """The entries of tensors given as columns (see :func:`build_entries`).

    Parameters
    ----------
    names : list of str
        Every tensor by full name, in the source's order.
    meta_ids : sequence of int
        For each name, the index of its :class:`TensorMeta` in ``metas``.
    metas : sequence of TensorMeta
        The distinct metas.
    loader_of, min_dim, conv1d_modules, block, model_order, quantization
        As in :func:`build_entries`; ``loader_of`` is called when an entry is built
        (and, while listing, for bitsandbytes' small ``quant_state`` tensors, unless
        ``read_small`` is given).
    read_small : callable, optional
        ``read_small(name)``: the data of a small tensor read while listing, faster than
        its loader (a file source's reader of its bytes at the offsets already parsed).

    Returns
    -------
    EntryTable
    """
    packed = EMPTY_PLAN
    if may_hold_packed({m.dtype for m in metas}, names):  # look for packed layers
        packed = packed_plan(
            _shapes(names, meta_ids, metas),
            read_small or (lambda n: loader_of(n)(None)),
            quantization=quantization,
        )
        if packed.weights:  # each packed weight: its entry name and the matrix's meta
            names, meta_ids, metas = list(names), list(meta_ids), list(metas)
            for j, stored in enumerate(names):
                entry = packed.renamed.get(stored, stored)
                spec = packed.weights.get(entry)
                if spec is not None and spec.stored == stored:
                    stored_meta = metas[meta_ids[j]]  # its reason (tied, no data) holds
                    names[j] = entry
                    meta_ids[j] = len(metas)
                    metas.append(
                        TensorMeta(spec.shape, spec.dtype, stored_meta.origin, stored_meta.reason)
                    )
    if any(m.dtype in FP8_DTYPES or m.dtype == SCALE_DTYPE for m in metas):
        plan = fp8_plan(
            _shapes(names, meta_ids, metas),
            block=block,
        )
    else:  # no FP8 tensor: nothing to pair (and no copy of a million-tensor listing)
        plan = fp8_plan({}, block=block)
    order = model_order_indices(names) if model_order else None
    if order is not None:
        names = [names[i] for i in order]
        meta_ids = [meta_ids[i] for i in order]
    profiles: list[tuple[tuple[int, ...], str, str, str | None, str]] = []
    profile_of: dict[tuple[int, str, str | None], int] = {}

    def profile(meta_id: int, kind: str, plan_reason: str | None) -> int:
        key = (meta_id, kind, plan_reason)
        p = profile_of.get(key)
        if p is None:
            m = metas[meta_id]
            reason = (
                plan_reason or skip_reason_for(kind, m.shape, m.dtype, min_dim=min_dim) or m.reason
            )
            p = profile_of[key] = len(profiles)
            profiles.append((m.shape, m.dtype, kind, reason, m.origin))
        return p

    # the kind from the shape alone; a name changes it only for a 2- to 5-D tensor named
    # '...weight' (in_proj, Conv1D, embedding, convolution: see infer_kind)
    generic = [profile(i, generic_kind(m.shape), None) for i, m in enumerate(metas)]
    ids = array("L", map(generic.__getitem__, meta_ids))
    by_name = {i for i, m in enumerate(metas) if 2 <= len(m.shape) <= 5}
    reasons = {**packed.reasons, **plan.reasons} if packed.reasons else plan.reasons
    if by_name or reasons:
        candidates = _named_candidates(names, meta_ids, metas, by_name, reasons, conv1d_modules)
        # fused mixture-of-experts tensors (3-D, 'experts.gate_up_proj'...): the orientation
        # of each experts module is read from its tensors together
        experts = fused_experts_kinds(
            {
                names[j]: metas[meta_ids[j]].shape
                for j in candidates
                if is_fused_experts(names[j], metas[meta_ids[j]].shape)
            }
        )
        for j in candidates:
            name, i = names[j], meta_ids[j]
            plan_reason = reasons.get(name) if reasons else None
            if i in by_name and (name.endswith("weight") or name in experts):
                kind = infer_kind(
                    name,
                    metas[i].shape,
                    conv1d_modules=conv1d_modules,
                    experts_kind=experts.get(name),
                )
            elif plan_reason is None:
                continue
            else:
                kind = generic_kind(metas[i].shape)
            ids[j] = profile(i, kind, plan_reason)
    return EntryTable(names, ids, profiles, loader_of, plan, packed)


def _named_candidates(
    names: Sequence[str],
    meta_ids: Sequence[int],
    metas: Sequence[TensorMeta],
    by_name: set[int],
    reasons: Mapping[str, str],
    conv1d_modules: frozenset[str],
) -> Iterable[int]:
    """Indices of the tensors whose entry may differ from their shape's generic kind.

    Those with a plan's reason, and those named ``...weight`` whose kind
    :func:`~infospec.sources.entry.infer_kind` may read from the name: a 3- to 5-D
    tensor (a convolution), or a 2-D one whose name holds ``in_proj_weight``, ``embed``
    (any case), ``wte``, ``wpe`` or a Conv1D module's name. The last are found by one
    regular expression over the names joined (in C): a million tensors named
    ``m.<i>.weight`` are not looked at one by one. A superset: infer_kind decides.
    """
    wanted: set[int] = set()
    if reasons:
        wanted.update(j for j, name in enumerate(names) if name in reasons)
    convs = {i for i in by_name if len(metas[i].shape) > 2}
    if convs:
        wanted.update(j for j, i in enumerate(meta_ids) if i in convs)
    if by_name - convs:
        blob = "\n".join(names)
        if blob.count("\n") != len(names) - 1:  # a name holds the separator: every name
            return range(len(names))
        lowered = blob.lower()  # the same positions unless a letter lowers to two (U+0130)
        hits: list[int] = []
        if len(lowered) != len(blob):
            hits += (m.start() for m in re.finditer("(?i:embed)", blob))
        else:
            _find_all(lowered, "embed", hits)
        for word in ("wte", "wpe", "in_proj_weight", *conv1d_modules):
            if word:
                _find_all(blob, word, hits)
        if hits:
            # acc[j]: where name j + 1 starts; the name holding position p is the number
            # of names that start at or before it, less one
            acc = array("Q", accumulate(map((1).__add__, map(len, names))))
            wanted.update(bisect_right(acc, p) for p in hits)
    return sorted(wanted)


def _find_all(text: str, word: str, out: list[int]) -> None:
    """Append to ``out`` where ``word`` starts in ``text`` (str.find: in C, no regex scan)."""
    at = text.find(word)
    while at >= 0:
        out.append(at)
        at = text.find(word, at + 1)


def _shapes(names, meta_ids, metas) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor's (shape, dtype) by name, as the FP8 and packed plans read them."""
    return {n: (metas[i].shape, metas[i].dtype) for n, i in zip(names, meta_ids, strict=True)}


def build_entries(
    tensors: Mapping[str, TensorMeta],
    loader_of: Callable[[str], Loader],
    *,
    min_dim: int,
    conv1d_modules: frozenset[str] = frozenset(),
    block: tuple[int, int] = DEFAULT_BLOCK,
    model_order: bool = True,
    quantization: Mapping | None = None,
) -> tuple[WeightEntry, ...]:
    """One :class:`WeightEntry` per tensor.

    Parameters
    ----------
    tensors : mapping of str to TensorMeta
        Every tensor by full name, in the source's order.
    loader_of : callable
        ``loader_of(name)`` gives the tensor's stored-dtype loader.
    min_dim : int
        Smallest matrix side analysed.
    conv1d_modules : frozenset of str
        Modules whose 2-D weight is GPT-2's transposed ``Conv1D``.
    block : (int, int)
        Block size of FP8 block-wise scales.
    model_order : bool, default True
        Sort into model order (file sources); ``False`` keeps the mapping's order.
    quantization : mapping, optional
        The model config's ``quantization_config`` (GPTQ bits and checkpoint format,
        :mod:`infospec.sources.packed`).

    Returns
    -------
    tuple of WeightEntry
        Built now, each loader taken from ``loader_of`` now (:func:`entry_table` builds
        them when asked for).
    """
    names, ids, metas = meta_columns(tensors)
    table = entry_table(
        names,
        ids,
        metas,
        loader_of,
        min_dim=min_dim,
        conv1d_modules=conv1d_modules,
        block=block,
        model_order=model_order,
        quantization=quantization,
    )
    return tuple(table)
