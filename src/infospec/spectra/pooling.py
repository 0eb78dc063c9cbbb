"""Activation covariances of every process of a ``torch.distributed`` group, pooled by layer.

Each rank streams its own rows into an
:class:`~infospec.spectra.activations.ActivationCovariances`; :func:`pool_over_ranks`
merges them layer by layer (:meth:`StreamingCovariance.all_reduce
<infospec.spectra.covariance.StreamingCovariance.all_reduce>`, exact in float64), so every
rank holds the covariance of all ranks' rows, as one process streaming them all would
(up to round-off). Shared by :class:`infospec.training.Monitor` (``distributed=True``)
and :func:`infospec.analyze` (``distributed=True``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._errors import InputError
from .activations import ActivationCovariances
from .covariance import StreamingCovariance

__all__ = ["dtype_of_eps", "pool_over_ranks"]


def dtype_of_eps(eps: float) -> torch.dtype:
    """The floating dtype whose machine epsilon is ``eps`` (float64 for 0 or unknown)."""
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        if eps == torch.finfo(dtype).eps:
            return dtype
    return torch.float64


def pool_over_ranks(
    collector: ActivationCovariances,
    names: Sequence[str],
    group: Any = None,
    *,
    who: str,
    fix: str,
    failed_message: Callable[[str, list[int]], str],
) -> tuple[dict[str, StreamingCovariance], dict[str, str], dict[str, torch.dtype]]:
    """Every rank's accumulators merged, layer by layer, in the same order everywhere.

    A collective: every rank of ``group`` calls it with the same ``names``. A first
    ``all_gather`` checks that every rank watches the same layers. A second gathers each
    rank's (width, rows, error, input precision, on CUDA) per layer, so every rank knows
    which layers have rows anywhere, which failed somewhere, the coarsest input dtype (for
    the rank floor) and one device for the reduction; then each layer with rows is reduced
    (a rank without rows for it takes part with an empty accumulator).

    Parameters
    ----------
    collector : ActivationCovariances
        This rank's accumulators and errors.
    names : sequence of str
        The observed layers, the same on every rank.
    group : torch.distributed.ProcessGroup, optional
        Default: the whole world.
    who, fix : str
        The caller, named in the error (``"Monitor(distributed=True)"``), and the remedy
        the error ends with.
    failed_message : callable
        ``failed_message(name, ranks)``: the error of a layer that failed on ``ranks``.

    Returns
    -------
    pooled : dict of str to StreamingCovariance
        The merged accumulator of each layer with rows on some rank.
    errors : dict of str to str
        The error of each failed layer (or of ranks that disagree on its width).
    dtypes : dict of str to torch.dtype
        The coarsest input dtype of each pooled layer.

    All three are the same on every rank.

    Raises
    ------
    InputError
        If the ranks watch different layers (on every rank).
    """
    import torch.distributed as dist

    world = dist.get_world_size(group)
    names = list(names)
    accs = collector.accumulators
    # small tensors travel on the CPU, except under a pure NCCL backend (GPU only)
    nccl_only = dist.get_backend(group) == "nccl"
    cuda = torch.device("cuda", torch.cuda.current_device()) if nccl_only else None

    def gather(rows: list[list[float]]) -> torch.Tensor:
        mine = torch.tensor(rows, dtype=torch.float64, device=cuda)
        out = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(out, mine, group=group)
        return torch.stack(out).cpu()

    fingerprint = float(zlib.crc32("\n".join(names).encode("utf-8")))
    seen = gather([[float(len(names)), fingerprint]])[:, 0]
    if not bool((seen == seen[0]).all()):
        raise InputError(
            f"{who}: the ranks watch different layers (counts "
            f"{[int(n) for n in seen[:, 0].tolist()]}). {fix}"
        )
    state = []
    for n in names:
        acc = accs.get(n)
        dtype = collector.dtypes.get(n, torch.float64)
        state.append(
            [
                float(acc.dim) if acc is not None else 0.0,
                float(acc.count) if acc is not None else 0.0,
                1.0 if n in collector.errors else 0.0,
                torch.finfo(dtype).eps if acc is not None else 0.0,
                1.0 if acc is not None and acc.mean.device.type == "cuda" else 0.0,
            ]
        )
    table = gather(state).reshape(world, len(names), 5)
    pooled: dict[str, StreamingCovariance] = {}
    errors: dict[str, str] = {}
    dtypes: dict[str, torch.dtype] = {}
    for i, name in enumerate(names):
        dims = {int(d) for d in table[:, i, 0].tolist() if d > 0}
        failed = [r for r in range(world) if table[r, i, 2] > 0]
        if failed:
            errors[name] = failed_message(name, failed)
            continue
        if not dims:
            continue
        if len(dims) > 1:
            errors[name] = f"ranks disagree on the output width: {sorted(dims)}"
            continue
        on_cuda = nccl_only or bool((table[:, i, 4] > 0).any())
        where = torch.device("cuda", torch.cuda.current_device()) if on_cuda else "cpu"
        mine = StreamingCovariance(dims.pop(), device=where)
        acc = accs.get(name)
        if acc is not None:
            mine.merge(acc)
        pooled[name] = mine.all_reduce(group)
        dtypes[name] = dtype_of_eps(float(table[:, i, 3].max()))
    return pooled, errors, dtypes
