"""The activation pass of :func:`infospec.analyze`: data through the model, a row per layer.

Forward hooks (:class:`~infospec.spectra.activations.ActivationCovariances`) stream every
observed layer's outputs into a covariance; its eigenvalues give the layer's measures
(:func:`~infospec.analysis.activations.activation_record`). Under
``analyze(..., distributed=True)`` each rank streams its own batches and the covariances
are pooled over the ranks (:func:`~infospec.spectra.pooling.pool_over_ranks`) before the
measures, so every rank reports the covariance of all ranks' rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import nn

from .._errors import InfospecError, InputError
from .._names import match_names
from .._progress import progress_bar
from ..spectra.activations import ActivationCovariances
from .activations import activation_record
from .report import Report

__all__ = ["ROOT_NAME", "activation_pass"]

#: Report name of the model itself when it is the observed module (a bare nn.Linear, say).
ROOT_NAME = "(model)"


def _observed_modules(
    model: nn.Module, weight_names: Sequence[str], activation_layers: str | Sequence[str] | None
) -> dict[str, nn.Module]:
    named = dict(model.named_modules())
    if activation_layers is None:
        owners = []
        for w in weight_names:
            owner = w.rsplit(".", 1)[0] if "." in w else ""
            if owner in named and owner not in owners:
                owners.append(owner)
        # a bare layer (the model is itself the weight's owner) is reported as "(model)"
        return {(n or ROOT_NAME): named[n] for n in owners}
    chosen = match_names(
        [n for n in named if n],
        activation_layers,
        param="activation_layers",
        func="analyze",
        what="module",
    )
    return {n: named[n] for n in chosen}


def call_model(
    model: nn.Module,
    batch: Any,
    device,
    index: int,
    before: Callable[[torch.Tensor | None], None] | None = None,
) -> Any:
    """``model(batch)`` for a tensor, tuple or dict batch, moved to ``device``; its output.

    ``before`` is called with the batch's ``attention_mask`` (None for other batches) just
    before the forward call. A batch that does not fit the model is an :class:`InputError`
    naming its index.
    """

    def move(x):
        return x.to(device) if isinstance(x, torch.Tensor) and device is not None else x

    def announce(mask):
        if before is not None:
            before(mask if isinstance(mask, torch.Tensor) else None)

    try:
        if isinstance(batch, Mapping):
            kwargs = {k: move(v) for k, v in batch.items()}
            announce(kwargs.get("attention_mask"))
            return model(**kwargs)
        if isinstance(batch, (tuple, list)):
            announce(None)
            return model(*[move(b) for b in batch])
        if isinstance(batch, torch.Tensor):
            announce(None)
            return model(move(batch))
        raise InputError(
            f"Batch {index} of 'data' is a {type(batch).__name__}; a batch "
            f"must be a tensor, a tuple of tensors or a dict of model inputs."
        )
    except (RuntimeError, TypeError, IndexError, ValueError, AttributeError, KeyError) as exc:
        # (a model given only some of its inputs fails on the missing one's None: an
        # AttributeError or KeyError from inside its forward, as CLIP without pixel values)
        if isinstance(exc, InfospecError):
            raise
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        what = (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
        given = (
            f"; this one holds {', '.join(map(str, batch))}" if isinstance(batch, Mapping) else ""
        )
        raise InputError(
            f"Batch {index} of 'data' ({shape}) failed in the forward pass of the model "
            f"({type(model).__name__}): {type(exc).__name__}: {what}. Every batch must be a "
            f"valid input of the model: same feature width, dtype and device, and every "
            f"input it needs{given}. A model that needs inputs a batch does not hold (pixel "
            f"values, audio features, decoder inputs) cannot be run on it: analyse its "
            f"weights without data."
        ) from exc


def _forward(
    model: nn.Module, batch: Any, device, collector: ActivationCovariances, index: int
) -> None:
    call_model(model, batch, device, index, before=collector.set_token_mask)


def activation_pass(
    model: nn.Module,
    data: Iterable[Any],
    weight_names: Sequence[str],
    report: Report,
    *,
    activation_layers,
    device,
    max_tokens,
    precision,
    linear_inputs,
    eps,
    rel_distortion,
    rel_noise,
    progress,
    workers,
    pg=None,
) -> None:
    """Stream ``data`` through ``model`` and add one row per observed layer to ``report``.

    The second pass of :func:`infospec.analyze` (whose parameters these are). With ``pg``
    (a :class:`~infospec.analysis.distributed.ProcessGroup`) this is a collective: each rank
    streams its own ``data``, the covariances are pooled over the ranks, and every rank adds
    the same rows; a rank whose batch fails makes every rank raise its error. ``meta`` gets
    ``batches`` (over all ranks), the seconds of each step and, with ``pg``,
    ``rank_batches``.
    """
    from .stages import _intra_op_threads, _resolve_workers

    start = time.perf_counter()
    modules = _observed_modules(model, weight_names, activation_layers)
    if not modules:
        raise InputError(
            "analyze found no module to observe for activations (the model has "
            "no analysed weight layers); pass activation_layers=REGEX."
        )
    was_training = model.training
    model.eval()
    total = len(data) if hasattr(data, "__len__") else None
    try:
        with (
            ActivationCovariances(
                modules,
                max_tokens=max_tokens,
                device=device,
                precision=precision,
                linear_inputs=linear_inputs,
            ) as acts,
            torch.no_grad(),
        ):
            bar = progress_bar(
                data,
                total=total,
                desc="activations",
                unit="batch",
                enabled=progress if pg is None or pg.rank == 0 else False,
            )
            accumulators, errors, dtypes = _stream(
                model, bar, device, acts, list(modules), pg, report.meta
            )
            batches = report.meta["batches"]
            passes = time.perf_counter() - start
            if batches == 0:
                raise InputError(
                    "The 'data' argument of analyze yielded no batch; give at "
                    "least one batch or data=None."
                )

            def measure(name: str):
                acc = accumulators[name]
                eig = acc.eigenvalues()
                rec = activation_record(
                    eig,
                    acc.count,
                    eps=eps,
                    rel_distortion=rel_distortion,
                    rel_noise=rel_noise,
                    input_dtype=dtypes.get(name, torch.float64),
                )
                return eig, rec

            ready = [
                n
                for n in modules
                if n not in errors and n in accumulators and accumulators[n].count >= 2
            ]
            # one intra-op thread per worker, as for the weights: a symmetric eigensolver
            # gains little from threads, and a busy machine stalls it badly (a 384-wide
            # eigvalsh took 0.02-2 s on 2 threads of a loaded 2-core machine, 0.015 s on 1)
            pool_size = _resolve_workers(workers, len(ready))
            with _intra_op_threads(1), ThreadPoolExecutor(max_workers=pool_size) as pool:
                measured = dict(zip(ready, pool.map(measure, ready), strict=True))
            for name in modules:
                row: dict[str, Any] = {"name": name, "module": type(modules[name]).__name__}
                if name in errors:
                    report.activations.append({**row, "status": "error", "warning": errors[name]})
                    continue
                if name not in measured:
                    report.activations.append(
                        {
                            **row,
                            "status": "error",
                            "warning": "fewer than 2 activation rows were seen",
                        }
                    )
                    continue
                eig, rec = measured[name]
                report.activations.append({**row, "status": "ok", **rec})
                report.spectra[f"activations/{name}"] = eig.cpu().numpy()
    finally:
        model.train(was_training)
    # host time: on a GPU the forward passes and the hooks overlap the device's work
    report.meta["activation_seconds"] = total_seconds = time.perf_counter() - start
    report.meta["activation_forward_seconds"] = passes - acts.seconds
    report.meta["activation_accumulate_seconds"] = acts.seconds
    # the covariances' eigenvalues and the measures
    report.meta["activation_measure_seconds"] = total_seconds - passes


def _stream(
    model: nn.Module,
    batches: Iterable[Any],
    device,
    acts: ActivationCovariances,
    names: list[str],
    pg,
    meta: dict[str, Any],
) -> tuple[Mapping[str, Any], Mapping[str, str], Mapping[str, torch.dtype]]:
    """Every batch through the model; the accumulators, errors and input dtypes by layer.

    Alone: this process's (linear layers through their inputs mapped to their outputs).
    With ``pg``: every rank's, pooled (the same on every rank); a failure on any rank is
    raised on every rank (:func:`~infospec.analysis.distributed.gather_outcome`).
    ``meta["batches"]`` is the number of batches over all ranks.
    """
    count = 0
    exc: BaseException | None = None
    try:
        for i, batch in enumerate(batches):
            _forward(model, batch, device, acts, i)
            count += 1
    except BaseException as failure:  # an interrupt too: the other ranks must hear of it
        if pg is None:
            raise
        exc = failure
    if pg is None:
        meta["batches"] = count
        return acts.accumulators, acts.errors, acts.dtypes
    from ..spectra.pooling import pool_over_ranks
    from .distributed import gather_outcome

    sent = gather_outcome(pg, (count, dict(acts.errors)), exc)
    meta["rank_batches"] = [n for n, _ in sent]
    meta["batches"] = sum(meta["rank_batches"])

    def failed_message(name: str, ranks: list[int]) -> str:
        return f"{sent[ranks[0]][1][name]} (on rank(s) {ranks} of {pg.world})"

    return pool_over_ranks(
        acts,
        names,
        pg.group,
        who="analyze(distributed=True)",
        fix="Give every rank the same model and activation_layers.",
        failed_message=failed_message,
    )
