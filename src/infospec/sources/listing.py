"""Entries of a source whose tensors are known by name, shape and dtype (files, state dicts).

One rule for every such source: the kind from the name and shape
(:func:`~infospec.sources.entry.infer_kind`), the skip reason of FP8 scales first
(:mod:`infospec.sources.fp8`), then the general skip rules
(:mod:`infospec.sources.entry`), then the source's own reason (a tied or storage-less
tensor); FP8 weights load dequantized; file sources sort the entries into model order
(:mod:`infospec.sources.order`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from .entry import Loader, WeightEntry, infer_kind, skip_reason_for
from .fp8 import DEFAULT_BLOCK, FP8_DTYPES, SCALE_DTYPE, fp8_plan
from .order import sort_model_order

__all__ = ["TensorMeta", "build_entries"]


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


def build_entries(
    tensors: Mapping[str, TensorMeta],
    loader_of: Callable[[str], Loader],
    *,
    min_dim: int,
    conv1d_modules: frozenset[str] = frozenset(),
    block: tuple[int, int] = DEFAULT_BLOCK,
    model_order: bool = True,
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

    Returns
    -------
    tuple of WeightEntry
    """
    if any(m.dtype in FP8_DTYPES or m.dtype == SCALE_DTYPE for m in tensors.values()):
        plan = fp8_plan({n: (m.shape, m.dtype) for n, m in tensors.items()}, block=block)
    else:  # no FP8 tensor: nothing to pair (and no copy of a million-tensor listing)
        plan = fp8_plan({}, block=block)
    names = sort_model_order(tensors) if model_order else list(tensors)
    out = []
    for name in names:
        meta = tensors[name]
        kind = infer_kind(name, meta.shape, conv1d_modules=conv1d_modules)
        reason = (
            plan.reasons.get(name)
            or skip_reason_for(kind, meta.shape, meta.dtype, min_dim=min_dim)
            or meta.reason
        )
        loader = plan.loader(name, meta.dtype, meta.shape, loader_of(name), loader_of)
        out.append(WeightEntry(name, meta.shape, meta.dtype, kind, reason, meta.origin, loader))
    return tuple(out)
