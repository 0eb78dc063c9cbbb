r"""``analyze(..., distributed=True)``: the tensors of one analysis spread over processes.

The one spectrum pipeline of :func:`infospec.analyze` (:func:`~infospec.analysis.analyze.
run_stages`) runs on every rank of a ``torch.distributed`` group over a share of the
tensors, and the records are gathered back in input order:

* **Balance.** A matrix costs about :math:`m\,n\,\min(m, n)` multiply-adds (its Gram
  product and eigensolver, or its SVD), times its kernel positions. The tensors are
  assigned by the greedy longest-processing-time rule (Graham, 1969): the costliest first,
  each to the rank with the least cost so far (the lowest rank on a tie). Its makespan is
  within :math:`4/3 - 1/(3p)` of the optimum on :math:`p` ranks. The assignment reads
  shapes only, so every rank computes the same one without a message.
* **Reading.** Every rank opens the source (a memory map, headers only) and loads only the
  tensors assigned to it, one at a time.
* **Gathering.** Each rank's records, ESDs and stage times travel once by
  ``all_gather_object``; every rank rebuilds the same rows, in the order of a
  single-process run, and so returns the same :class:`~infospec.Report` (the command line
  writes it on rank 0 only).
* **Failures.** A tensor that fails (NaN, a solver that does not converge) is an error
  row, as in one process. A failure that ends a run (an unreadable file, an interrupt, a
  bug) is carried in the same gather, so every rank raises it (``"rank r: ..."``) instead
  of waiting for a rank that left: no rank hangs.

:func:`infospec.compare` shares out its matched pairs the same way (:func:`stages_on`), and
:func:`infospec.track` each checkpoint's tensors, with its store read and written on rank 0
alone (:func:`on_rank_0`).

References
----------
R. L. Graham, "Bounds on multiprocessing timing anomalies", SIAM J. Appl. Math. 17(2),
416-429 (1969).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import shown
from .._errors import InfospecError, InputError

__all__ = [
    "ProcessGroup",
    "assign_by_cost",
    "entry_cost",
    "gather_outcome",
    "join_process_group",
    "on_every_rank",
    "on_rank_0",
    "process_group",
    "raise_if_any_failed",
    "rank_device",
    "run_stages_distributed",
    "setup",
    "stages_on",
]

#: The environment variables ``env://`` initialisation reads (torchrun sets them all).
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

_HOW_TO_LAUNCH = (
    "launch every process with torchrun (torchrun --nproc-per-node N -m infospec analyze "
    "SOURCE, or a script calling analyze), set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
    "yourself (srun: RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS), or call "
    "torch.distributed.init_process_group before analyze"
)


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the group an analysis runs on.

    Attributes
    ----------
    rank : int
        This process's rank in ``group`` (0 writes the outputs).
    world : int
        Processes in ``group``.
    group : torch.distributed.ProcessGroup or None
        The group (None: the default, whole world).
    backend : str
        Its backend (``"gloo"``, ``"nccl"``, ``"cpu:gloo,cuda:nccl"``).
    """

    rank: int
    world: int
    group: Any
    backend: str

    @property
    def uses_nccl(self) -> bool:
        """Whether the group reduces CUDA tensors through NCCL (each rank then has a GPU)."""
        return "nccl" in self.backend


def launched_by_torchrun() -> bool:
    """Whether this process was started with ``RANK`` and ``WORLD_SIZE`` set (torchrun, srun)."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE"))


def join_process_group(func: str = "analyze") -> tuple[ProcessGroup, bool]:
    """The running ``torch.distributed`` world, or one started from the launch environment.

    If a process group is initialised, it is used as it is. Otherwise one is started from
    :data:`LAUNCH_VARIABLES` (``init_method="env://"``, as torchrun sets them) with the
    ``gloo`` backend, or ``cpu:gloo,cuda:nccl`` where CUDA is available (CPU tensors
    through gloo, CUDA tensors through NCCL, each rank on GPU ``LOCAL_RANK``), and left
    running (``torch.distributed.destroy_process_group()`` ends it).

    Parameters
    ----------
    func : str, default "analyze"
        The function named in error messages.

    Returns
    -------
    pg : ProcessGroup
    created : bool
        Whether this call started the group.

    Raises
    ------
    InputError
        If torch.distributed is not available, or no group runs and the launch variables
        are missing (the message says how to launch).
    """
    import torch.distributed as dist

    if not dist.is_available():
        raise InputError(
            f"{func}(distributed=True) needs torch.distributed, which this build of torch "
            f"lacks; install a torch with distributed support, or pass distributed=False."
        )
    created = False
    if not dist.is_initialized():
        missing = [v for v in LAUNCH_VARIABLES if v not in os.environ]
        if missing:
            raise InputError(
                f"{func}(distributed=True) found no torch.distributed process group and "
                f"the launch variable(s) {', '.join(missing)} are not set: {_HOW_TO_LAUNCH}."
            )
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(_local_rank() % torch.cuda.device_count())
        dist.init_process_group(backend, init_method="env://")
        created = True
    pg = ProcessGroup(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        group=None,
        backend=str(dist.get_backend()),
    )
    return pg, created


@contextlib.contextmanager
def process_group(func: str = "analyze") -> Iterator[ProcessGroup]:
    """:func:`join_process_group` for a block: a group it started is destroyed on exit."""
    import torch.distributed as dist

    pg, created = join_process_group(func)
    try:
        yield pg
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def _local_rank() -> int:
    """``LOCAL_RANK`` (torchrun; ``SLURM_LOCALID`` under srun), else the global rank."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        if name in os.environ:
            return int(os.environ[name])
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def setup(
    distributed: Any, device: torch.device | None, func: str
) -> tuple[ProcessGroup | None, torch.device | None]:
    """The group and this rank's device of ``func(..., distributed=...)``.

    ``(None, device)`` when ``distributed`` is False; else the group
    (:func:`join_process_group`) and :func:`rank_device`, made the current CUDA device
    when it is one (``torch.cuda.set_device``).

    Raises
    ------
    InputError
        If ``distributed`` is not a bool, or as :func:`join_process_group`.
    """
    if not isinstance(distributed, bool):
        raise InputError(
            f"The 'distributed' parameter of {func} must be True or False; got "
            f"{shown(distributed)}."
        )
    if not distributed:
        return None, device
    pg, _ = join_process_group(func)
    device = rank_device(device, pg, func)
    if device is not None and device.type == "cuda":
        # NCCL's object collectives and reductions run on the current device: this rank's
        torch.cuda.set_device(device)
    return pg, device


def rank_device(
    device: torch.device | None, pg: ProcessGroup, func: str = "analyze"
) -> torch.device | None:
    """The device of this rank: its own GPU (``cuda:LOCAL_RANK``) or the device given.

    Under NCCL, no device means this rank's GPU; a ``cuda`` device without an index (any
    backend) becomes this rank's GPU, so that ranks on one node do not share GPU 0.
    """
    if device is None and not pg.uses_nccl:
        return None
    if device is not None and (device.type != "cuda" or device.index is not None):
        return device
    count = torch.cuda.device_count()
    if count == 0:
        raise InputError(
            f"{func}(distributed=True) runs on a {pg.backend} group, whose ranks compute on "
            f"their own GPU, but no CUDA device is visible; use the gloo backend on the CPU."
        )
    return torch.device("cuda", _local_rank() % count)


def entry_cost(entry: Any, *, conv: str, split_in_proj: bool) -> float:
    r"""About the multiply-adds of one tensor's spectra: :math:`k\,m\,n\,\min(m, n)`.

    ``k`` matrices of ``m x n`` (:func:`~infospec.spectra.conventions.matrix_layout`); a
    tensor whose layout is unknown counts as its number of entries times its smaller side.
    """
    from ..spectra.conventions import matrix_layout

    shape = tuple(int(s) for s in entry.shape)
    try:
        count, rows, cols = matrix_layout(entry.kind, shape, conv=conv, split_in_proj=split_in_proj)
    except (InfospecError, ValueError, IndexError):
        count, rows, cols = 1, shape[0] if shape else 1, math.prod(shape[1:]) or 1
    return float(count) * rows * cols * min(rows, cols)


def assign_by_cost(costs: Sequence[float], world: int) -> list[int]:
    """The rank of each item: longest processing time first, each to the least loaded rank.

    Parameters
    ----------
    costs : sequence of float
        Cost of each item (any unit; :func:`entry_cost`).
    world : int > 0
        Number of ranks.

    Returns
    -------
    list of int
        ``owner[i]`` in ``range(world)``. Deterministic: ties go to the earlier item and the
        lower rank, so every rank computes the same list.

    Examples
    --------
    >>> assign_by_cost([8.0, 1.0, 5.0, 4.0, 2.0], 2)
    [0, 1, 1, 1, 0]
    """
    owner = [0] * len(costs)
    loads = [(0.0, r) for r in range(world)]  # a heap of (load, rank)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(loads)
        owner[i] = rank
        heapq.heappush(loads, (load + costs[i], rank))
    return owner


def _failure(exc: BaseException, rank: int) -> tuple[str, str]:
    """What a failed rank sends: the exception's kind and ``"rank r: message"``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupt", f"rank {rank} was interrupted"
    kind = type(exc).__name__ if isinstance(exc, InfospecError) else "other"
    detail = str(exc) if isinstance(exc, InfospecError) else f"{type(exc).__name__}: {exc}"
    return kind, f"rank {rank}: {detail}"


def raise_if_any_failed(
    failures: Sequence[tuple[str, str] | None], mine: BaseException | None, rank: int
) -> None:
    """Raise on every rank the failure of the lowest rank that failed.

    ``failures[r]`` is rank r's ``(kind, message)`` or None. An infospec error is raised as
    the same class with the message ``"rank r: ..."`` on every rank (on rank r chained to
    the original); an interrupt as :class:`KeyboardInterrupt` (rank r re-raises its own);
    anything else as a :class:`RuntimeError` naming it (rank r re-raises the original).
    """
    for failed, failure in enumerate(failures):
        if failure is None:
            continue
        kind, message = failure
        own = mine if failed == rank else None
        from .. import _errors

        cls = getattr(_errors, kind, None)
        if isinstance(cls, type) and issubclass(cls, InfospecError):
            raise cls(message) from own
        if own is not None:
            raise own
        if kind == "interrupt":
            raise KeyboardInterrupt(message)
        raise RuntimeError(f"analyze(distributed=True) failed on {message}")
    if mine is not None:  # failed here but sent nothing: cannot happen, but never swallow it
        raise mine


def gather_outcome(pg: ProcessGroup, payload: Any, exc: BaseException | None) -> list[Any]:
    """Every rank's ``payload``, gathered on every rank, after raising any rank's failure.

    A collective: every rank of ``pg`` must call it once, failed or not (a failed rank
    passes its exception as ``exc``), so that no rank waits for one that left.
    """
    import torch.distributed as dist

    sent = (None if exc is not None else payload, None if exc is None else _failure(exc, pg.rank))
    gathered: list[Any] = [None] * pg.world
    dist.all_gather_object(gathered, sent, group=pg.group)
    raise_if_any_failed([g[1] for g in gathered], exc, pg.rank)
    return [g[0] for g in gathered]


def on_every_rank(pg: ProcessGroup | None, work: Any) -> Any:
    """``work()`` on this rank; with ``pg``, a failure on any rank then raised on every rank.

    With ``pg`` a collective (:func:`gather_outcome`), for what every rank does for itself
    before the shared work, such as opening the source: a rank that cannot (a file missing
    on its node) makes every rank raise, instead of leaving the others waiting for it.
    """
    if pg is None:
        return work()
    value, exc = None, None
    try:
        value = work()
    except Exception as failure:  # every rank raises it
        exc = failure
    gather_outcome(pg, None, exc)
    return value


def on_rank_0(pg: ProcessGroup | None, work: Any) -> Any:
    """``work()`` here alone; with ``pg``, on rank 0 only, its result (or failure) sent to all.

    With ``pg`` this is a collective (:func:`gather_outcome`): every rank calls it, and
    every rank returns rank 0's result or raises its failure. For what one process must do
    alone, such as reading and writing :func:`infospec.track`'s store.
    """
    if pg is None:
        return work()
    value, exc = None, None
    if pg.rank == 0:
        try:
            value = work()
        except Exception as failure:  # every rank raises it
            exc = failure
    return gather_outcome(pg, value, exc)[0]


def _check_same_items(pg: ProcessGroup, names: Sequence[str], desc: str) -> None:
    """Every rank lists the same tensors in the same order (else the shares would not fit)."""
    import zlib

    import torch.distributed as dist

    mine = (len(names), zlib.crc32("\n".join(names).encode("utf-8")))
    seen: list[Any] = [None] * pg.world
    dist.all_gather_object(seen, mine, group=pg.group)
    if any(s != seen[0] for s in seen):
        raise InputError(
            f"analyze(distributed=True): the ranks list different {desc} tensors (counts "
            f"{[s[0] for s in seen]}); give every rank the same source, layers and min_dim."
        )


def stages_on(
    pg: ProcessGroup | None,
    first,
    second,
    items: Sequence[Any],
    meta: dict[str, Any],
    *,
    conv: str,
    split_in_proj: bool,
    **options: Any,
):
    """The weight stages of a verb: :func:`~infospec.analysis.stages.run_stages` alone, or
    :func:`run_stages_distributed` over ``pg`` with each item's :func:`entry_cost`.

    ``options`` are those of ``run_stages`` (``workers``, ``pipeline``, ``progress``,
    ``desc``).
    """
    if pg is None:
        from .stages import run_stages

        return run_stages(first, second, items, meta, **options)
    costs = [entry_cost(e, conv=conv, split_in_proj=split_in_proj) for e in items]
    return run_stages_distributed(first, second, items, meta, pg=pg, costs=costs, **options)


def run_stages_distributed(
    first,
    second,
    items: Sequence[Any],
    meta: dict[str, Any],
    *,
    pg: ProcessGroup,
    costs: Sequence[float],
    workers: int | None,
    pipeline: bool,
    progress: bool | None,
    desc: str = "weights",
):
    """:func:`~infospec.analysis.stages.run_stages` over this rank's share, gathered.

    Every rank runs the stages over the items :func:`assign_by_cost` gives it, then the
    results of all ranks are gathered (:func:`gather_outcome`) and yielded in the order of
    ``items``, the same on every rank. ``meta`` gets ``world_size``, ``rank_items`` (items
    per rank), ``rank_seconds`` (each rank's wall time in the stages), ``workers`` and
    ``pipeline`` of this rank, and ``spectrum_seconds`` and ``fit_seconds`` summed over
    ranks. Only rank 0 shows a progress bar (of its own share).
    """
    from .stages import run_stages

    _check_same_items(pg, [str(getattr(e, "name", e)) for e in items], desc)
    owner = assign_by_cost(costs, pg.world)
    share = [i for i, r in enumerate(owner) if r == pg.rank]
    local_meta: dict[str, Any] = {}
    results: dict[int, Any] = {}
    start = time.perf_counter()
    exc: BaseException | None = None
    try:
        stages = run_stages(
            first,
            second,
            [items[i] for i in share],
            local_meta,
            workers=workers,
            pipeline=pipeline,
            progress=progress if pg.rank == 0 else False,
            desc=f"{desc} (rank 0 of {pg.world})",
        )
        for i, value in zip(share, stages, strict=True):
            results[i] = value
    except BaseException as failure:  # an interrupt too: the other ranks must hear of it
        exc = failure
    local_meta["seconds"] = time.perf_counter() - start
    gathered = gather_outcome(pg, (results, local_meta), exc)
    merged: dict[int, Any] = {}
    for part, _ in gathered:
        merged.update(part)
    metas = [m for _, m in gathered]
    meta["world_size"] = pg.world
    meta["workers"] = local_meta.get("workers")
    meta["pipeline"] = pipeline
    meta["rank_items"] = [owner.count(r) for r in range(pg.world)]
    meta["rank_seconds"] = [m["seconds"] for m in metas]
    meta["spectrum_seconds"] = sum(m.get("spectrum_seconds", 0.0) for m in metas)
    meta["fit_seconds"] = sum(m.get("fit_seconds", 0.0) for m in metas)
    for i in range(len(items)):
        yield merged[i]
