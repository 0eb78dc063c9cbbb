"""The weight pass's schedule: worker threads, the stage pipeline and its progress bar.

:func:`run_stages` drives the two stages of every verb that reads weights
(:func:`infospec.analyze`, :func:`infospec.compare`, :func:`infospec.track`): the spectra,
then the measures and fits, of each item, over worker threads
(:func:`_map_in_order`), with a progress bar and the time of each stage.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from .._progress import progress_bar
from .._validation import (
    check_positive,
)

# _forward and _observed_modules re-exported: the low-rank transform, tests and benchmarks
# drive the forward pass themselves
from .activation_pass import _forward as _forward
from .activation_pass import _observed_modules as _observed_modules


def _progress(iterable: Iterable, *, total: int | None, desc: str, enabled: bool | None):
    """A bar of layers done and time left (see :func:`infospec._progress.progress_bar`)."""
    return progress_bar(iterable, total=total, desc=desc, unit="layer", enabled=enabled)


def _resolve_workers(workers: int | None, n: int) -> int:
    """Default: one worker per CPU core, at most 4."""
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    else:
        workers = check_positive(workers, "workers", "analyze", integer=True)
    return max(1, min(workers, n))


@contextlib.contextmanager
def _intra_op_threads(n: int):
    """Temporarily set torch's intra-op threads and every BLAS pool's to ``n`` (restored on exit).

    torch's count does not reach SciPy's OpenBLAS, which forms the CPU Gram matrices
    (:func:`infospec.spectra.gram.gram_matrix`): its pool is limited through
    ``threadpoolctl`` (process-wide, like torch's setting).
    """
    import scipy.linalg.blas  # noqa: F401  (loaded first: threadpoolctl sees loaded pools only)
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def _map_in_order(first, second, items: Sequence[Any], *, workers: int, pipeline: bool):
    """``second(item, first(item))`` over ``items``, results in input order.

    * ``pipeline=False`` (the CPU): ``workers`` threads each run both stages of one item.
      The symmetric eigensolver's tridiagonal reduction is memory-bound and scales poorly
      over threads (on 2 cores, one 768-wide float64 ``eigvalsh`` is slower with 2 MKL
      threads than with 1), so each worker runs single-threaded and the workers share the
      cores.
    * ``pipeline=True`` (a GPU): the calling thread runs ``first`` (the spectra, on the
      device) item after item, while ``workers`` CPU threads run ``second`` (the fits) of
      the items before, so the device never waits for the fits.

    torch's kernels release the GIL. With ``workers == 1`` and no pipeline everything runs
    in the calling thread.
    """
    if workers <= 1 and not pipeline:
        for item in items:
            yield second(item, first(item))
        return
    with _intra_op_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        try:
            if pipeline:
                for item in items:
                    pending.append(pool.submit(second, item, first(item)))
                    while pending and pending[0].done():
                        yield pending.popleft().result()
            else:
                pending.extend(pool.submit(lambda it: second(it, first(it)), it) for it in items)
            while pending:
                yield pending.popleft().result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def run_stages(
    first,
    second,
    items: Sequence[Any],
    meta: dict[str, Any],
    *,
    workers: int | None,
    pipeline: bool,
    progress: bool | None,
    desc: str = "weights",
):
    """``second(item, first(item))`` for every item, in order, with workers and a bar.

    The driver of :func:`analyze`'s weight pass, shared by every verb that reads weights
    (:func:`infospec.compare`, :func:`infospec.track`): workers resolved
    (:func:`_resolve_workers`) and scheduled by :func:`_map_in_order`, a progress bar of
    items, and the time of each stage summed over items (and threads) in
    ``meta["spectrum_seconds"]`` and ``meta["fit_seconds"]`` (where the time went, not
    wall time), with ``meta["workers"]`` and ``meta["pipeline"]``. An interrupt (Ctrl-C,
    the bar) cancels the queued items, joins the workers and restores torch's thread
    count.
    """
    stage_seconds: dict[str, list[float]] = {"spectra": [], "fits": []}

    def timed_first(item):
        start = time.perf_counter()
        try:
            return first(item)
        finally:
            stage_seconds["spectra"].append(time.perf_counter() - start)

    def timed_second(item, value):
        start = time.perf_counter()
        try:
            return second(item, value)
        finally:
            stage_seconds["fits"].append(time.perf_counter() - start)

    workers = _resolve_workers(workers, len(items))
    meta["workers"] = workers
    meta["pipeline"] = pipeline
    try:
        with contextlib.closing(
            _map_in_order(timed_first, timed_second, items, workers=workers, pipeline=pipeline)
        ) as results:
            yield from _progress(results, total=len(items), desc=desc, enabled=progress)
    finally:
        meta["spectrum_seconds"] = sum(stage_seconds["spectra"])
        meta["fit_seconds"] = sum(stage_seconds["fits"])
