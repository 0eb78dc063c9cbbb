"""``analyze(source, data)``: every weight matrix, and every observed layer's activations."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._checks import shown
from .._errors import InfospecError, InputError, SourceError
from .._validation import (
    check_bool,
    check_choice,
    check_device,
    check_positive,
    check_probability,
)
from ..sources import open_source
from ..sources.entry import skip_reason_under
from ..spectra.conventions import ANALYSIS_CONV, CONV_MODES, as_matrices
from ..spectra.covariance import PRECISIONS
from ..spectra.matrices import singular_values

# _forward and _observed_modules re-exported: the low-rank transform, tests and benchmarks
# drive the forward pass themselves
from .activation_pass import _forward as _forward
from .activation_pass import _observed_modules as _observed_modules
from .activation_pass import activation_pass
from .report import Report
from .weights import weight_record

__all__ = ["analyze"]


#: One matrix from the first stage: ``(name, rows, cols, sigma, error)``. ``sigma`` is the
#: float64 spectrum on the CPU (shape ``(P, min(rows, cols))`` for the ``P`` kernel
#: positions of a pooled convolution), or None with the reason in ``error`` (then
#: ``rows`` and ``cols`` are None too when the whole tensor failed).
Spectrum = tuple[str, int | None, int | None, torch.Tensor | None, str]


def _spectra(
    entry,
    *,
    conv: str,
    split_in_proj: bool,
    method: str,
    device,
    randomize: int | None = None,
    rand_out: dict[str, torch.Tensor] | None = None,
    methods: dict[str, str] | None = None,
) -> list[Spectrum]:
    """The first stage: load one tensor and compute the singular values of its matrices.

    A matrix with NaN or Inf gives an item with its counts as the error, and the others
    go on. Any other failure (a Gram matrix that overflows, a solver that does not
    converge) ends the tensor with one item named after it, after the matrices already
    done. Only the message is kept: an exception's traceback would hold the loaded tensor
    (on a GPU, device memory) until a fit worker reached it. :class:`SourceError`
    propagates: an unreadable file ends the run. An entry with a ``factor_spectra``
    method (a low-rank delta, :class:`~infospec.sources.peft_source.LoraEntry`) gives
    its spectra from its factors, without materialising the matrix. With ``randomize``
    (a seed), the spectrum of each matrix's shuffle goes to ``rand_out`` by label; with
    ``methods``, each matrix's route (``"gram"``, ``"gram+refine"``, ``"svd"``, or
    ``"factors"`` for a LoRA delta) goes there by label.
    """
    out: list[Spectrum] = []
    try:
        factor_spectra = getattr(entry, "factor_spectra", None)
        if factor_spectra is not None:
            items = factor_spectra(device=device)
            if methods is not None:
                methods.update((item[0], "factors") for item in items)
            return items
        tensor = entry.load(device=device)
        tensor_spectra(
            entry,
            tensor,
            out,
            conv=conv,
            split_in_proj=split_in_proj,
            method=method,
            device=device,
            randomize=randomize,
            rand_out=rand_out,
            methods=methods,
        )
    except SourceError:
        raise
    except (InfospecError, torch.linalg.LinAlgError) as exc:
        out.append((entry.name, None, None, None, str(exc)))
    return out


def tensor_spectra(
    entry,
    tensor: torch.Tensor,
    out: list[Spectrum],
    *,
    conv: str,
    split_in_proj: bool,
    method: str,
    device,
    name: str | None = None,
    randomize: int | None = None,
    rand_out: dict[str, torch.Tensor] | None = None,
    methods: dict[str, str] | None = None,
) -> list[Spectrum]:
    """The spectra of one loaded tensor's matrices, appended to ``out`` (and returned).

    ``entry`` gives the kind (and, unless ``name`` is given, the labels) of
    :func:`~infospec.spectra.conventions.as_matrices`; a matrix with NaN or Inf gives an
    item with its counts as the error. Other errors propagate (:func:`_spectra` keeps
    their message). With ``randomize`` (a seed) the singular values of each matrix with
    its entries shuffled (:func:`infospec.analysis.randomize.shuffled`) are put in
    ``rand_out`` under the matrix's label, and with ``methods`` the route of its spectrum
    (:func:`infospec.singular_values` with ``return_method=True``).
    """
    for label, matrix in as_matrices(
        entry, tensor, conv=conv, split_in_proj=split_in_proj, name=name
    ):
        rows, cols = matrix.shape[-2:]  # a pooled convolution: a stack of P matrices
        try:
            # singular_values checks finiteness on the small Gram matrix (no extra pass)
            sigma, route = singular_values(matrix, method=method, device=device, return_method=True)
        except InputError:
            error = nonfinite_error(matrix)
            if error is None:
                raise
            out.append((label, rows, cols, None, error))
            continue
        # a few thousand numbers: the fits run on the CPU, where they do not wait on
        # kernel launches and device syncs, and (on a GPU) overlap the next spectrum
        out.append((label, rows, cols, sigma.cpu(), ""))
        if methods is not None:
            methods[label] = route
        if randomize is not None and rand_out is not None:
            from .randomize import shuffled

            mixed = shuffled(matrix, randomize, label)
            rand_out[label] = singular_values(mixed, method=method, device=device).cpu()
    return out


def nonfinite_error(matrix: torch.Tensor) -> str | None:
    """``"tensor contains n NaN and m infinite value(s); not analysed"``, or None if finite."""
    finite = torch.isfinite(matrix)
    if bool(finite.all()):
        return None
    n_nan = int(torch.isnan(matrix).sum())
    n_inf = int((~finite).sum()) - n_nan
    return f"tensor contains {n_nan} NaN and {n_inf} infinite value(s); not analysed"


def _records(
    entry, spectra: list[Spectrum], *, rel_distortion: float, fits: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The second stage: the report rows, and the ESDs, of one tensor's spectra."""
    base = {"tensor": entry.name, "kind": entry.kind, "dtype": entry.dtype}
    rows_out: list[dict[str, Any]] = []
    esds: dict[str, Any] = {}
    for label, rows, cols, sigma, error in spectra:
        if sigma is not None:
            try:
                rec = weight_record(
                    sigma,
                    rows=rows,
                    cols=cols,
                    rel_distortion=rel_distortion,
                    fit_power=fits,
                    fit_mp=fits,
                )
            except InfospecError as exc:
                error = str(exc)
            else:
                rows_out.append({"name": label, **base, "status": "ok", **rec})
                # descending, as one matrix's; a pooled convolution's positions merged
                lam = (sigma * sigma).flatten().sort(descending=True).values
                esds[f"weights/{label}"] = lam.numpy()
                continue
        rows_out.append({"name": label, **base, "status": "error", "warning": error})
    return rows_out, esds


def add_spectrum_methods(rows: list[dict[str, Any]], methods: Mapping[str, str]) -> None:
    """Give each analysed row its ``spectrum_method`` (the route of its singular values)."""
    for row in rows:
        if row.get("status") == "ok" and row["name"] in methods:
            row["spectrum_method"] = methods[row["name"]]


def _data_device(source: Any) -> torch.device:
    """Where an in-memory source's tensors live (the CPU for files)."""
    if isinstance(source, nn.Module):
        for p in source.parameters():
            return p.device
    if isinstance(source, Mapping):
        for v in source.values():
            if isinstance(v, torch.Tensor):
                return v.device
    return torch.device("cpu")


def skipped_record(entry, reason: str) -> dict[str, Any]:
    """One row of ``Report.skipped``: the entry's name, shape, dtype and kind, and why."""
    return {
        "name": entry.name,
        "shape": tuple(entry.shape),
        "dtype": entry.dtype,
        "kind": entry.kind,
        "reason": reason,
    }


def plan_entries(
    entries: Iterable[Any], skipped: list[dict[str, Any]], *, min_dim: int, conv: str
) -> list[Any]:
    """The entries an analysis reads; the others appended to ``skipped`` with their reason.

    The rule is :func:`~infospec.sources.entry.skip_reason_under` (the one ``infospec
    describe`` applies).
    """
    todo = []
    for e in entries:
        reason = skip_reason_under(e, min_dim=min_dim, conv=conv)
        if reason is not None:
            skipped.append(skipped_record(e, reason))
        else:
            todo.append(e)
    return todo


def analyze(
    source: Any,
    data: Iterable[Any] | None = None,
    *,
    layers: str | Sequence[str] | None = None,
    activation_layers: str | Sequence[str] | None = None,
    device: str | torch.device | None = None,
    conv: str = ANALYSIS_CONV,
    split_in_proj: bool = True,
    min_dim: int | None = None,
    method: str = "auto",
    fits: bool = True,
    rel_distortion: float = 0.01,
    eps: float = 0.5,
    rel_noise: float = 0.1,
    max_tokens: int | None = None,
    activation_precision: str = "auto",
    linear_inputs: bool = True,
    progress: bool | None = None,
    workers: int | None = None,
    randomize: bool | int = False,
    distributed: bool = False,
) -> Report:
    """Analyse every weight matrix of a model, and, given data, every observed layer's activations.

    Parameters
    ----------
    source : nn.Module, state dict, str or Path
        A torch module, a mapping of names to tensors, a ``.safetensors`` file, a sharded
        checkpoint's ``*.safetensors.index.json``, or a model folder (see
        :func:`infospec.sources.open_source`). Files are read one tensor at a time through a
        memory map, so checkpoints larger than memory work.
    data : iterable of batches, optional
        Inputs for activation measures (``source`` must then be an ``nn.Module``): each batch
        a tensor (``model(x)``), a tuple (``model(*b)``) or a dict (``model(**b)``; its
        ``attention_mask``, if any, excludes padding tokens). Batch texts by length (sort by
        token count, then batch: :func:`infospec.example.example_batches`): padding
        positions cost a full forward pass each and are then dropped.
    layers : str or list of str, optional
        Regular expression(s) searched in full dotted tensor names; default all.
    activation_layers : str or list of str, optional
        Regular expression(s) on module names whose outputs are observed; default: the
        modules owning the analysed weights.
    device : str or torch.device, optional
        Where spectra are computed and activations accumulated (``"cuda"`` for speed).
    conv : {"pooled", "flatten", "per_position"}, default "pooled"
        How a convolution kernel ``(out, in, *k)`` is read
        (:mod:`infospec.spectra.conventions`): ``"pooled"``, WeightWatcher's convention,
        one row whose ESD pools the spectra of the ``out x in`` matrices of every kernel
        position; ``"flatten"``, one ``out x (in*k)`` matrix; ``"per_position"``, one row
        per position. Per position or pooled, ``min_dim`` applies to each position's
        matrix.
    split_in_proj : bool, default True
        Analyse a packed attention ``in_proj_weight`` as its q, k and v matrices.
    min_dim : int, optional
        Skip matrices whose smaller side is below this (default of the source).
    method : {"auto", "gram", "svd"}, default "auto"
        Route of :func:`infospec.singular_values`.
    fits : bool, default True
        Make the power-law and Marchenko–Pastur fits.
    rel_distortion : float in (0, 1], default 0.01
        Relative squared error of the ``rate_bits`` columns.
    eps : float > 0, default 0.5
        Precision of the activation coding rate (features at unit mean energy).
    rel_noise : float > 0, default 0.1
        Noise variance of the activation capacity, relative to the mean eigenvalue.
    max_tokens : int, optional
        Cap on rows per layer per batch (random subset); default all rows.
    activation_precision : {"auto", "float64", "float32"}, default "auto"
        Precision of the per-batch Gram products of the activation covariances
        (:class:`~infospec.StreamingCovariance`, whose Notes bound the error): ``"auto"``
        is float64 for float32 and float64 activations, float32 for 16-bit ones (whose own
        rounding floor is higher). ``"float32"`` on float32 activations is about twice as
        fast in the products, but eigenvalues below about :math:`10^{-5}` of their mean are
        then round-off, and they count in ``rank`` and enter flatness and entropy.
    linear_inputs : bool, default True
        Accumulate a plain ``nn.Linear`` no wider at its input than at its output through
        its input (:class:`~infospec.spectra.activations.ActivationCovariances`): the
        same covariance :math:`W M_x W^\top` at the cost of its input width, one Gram
        product shared by the layers fed the same tensor (query, key, value). False
        accumulates every output as it is.
    progress : bool, optional
        Show progress bars; default when stderr is a terminal.
    workers : int > 0, optional
        CPU threads, each with one intra-op thread (torch's thread count is restored
        afterwards); default one per CPU core, at most 4. On the CPU each analyses one
        tensor at a time. On a GPU (``device``, or where a module's or state dict's tensors
        are) the spectra are computed one after another on the device while the workers
        make the fits of the tensors before, so the device need not wait for them. Results
        do not depend on it, up to floating-point round-off.
    randomize : bool or int, default False
        Also compare every matrix with its entries shuffled (WeightWatcher's
        ``randomize``; :mod:`infospec.analysis.randomize`): the columns
        ``rand_distance``, ``num_traps`` (correlation traps), ``rand_max_eval``,
        ``rand_bulk_max`` and ``trap_ratio``, and the shuffled ESD in ``report.spectra``
        under ``"randomized/<name>"``. An int is the seed (True: 0). One more spectrum
        per matrix; a LoRA delta (read from its factors) gets no such columns.
    distributed : bool, default False
        Spread the analysis over the processes of ``torch.distributed``
        (:mod:`infospec.analysis.distributed`); call it on every rank with the same
        arguments. The tensors are shared out by cost (about ``m * n * min(m, n)`` each),
        each rank reading only its own, and the records gathered; with ``data`` (each
        rank's own shard of the batches) the activation covariances are pooled over the
        ranks. Each rank computes on its own GPU (``cuda:LOCAL_RANK``) under NCCL or when
        ``device="cuda"``, else on the CPU. With no process group initialised, one is
        started from torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
        ``MASTER_PORT``) and left running. A tensor that fails on a rank is an error row;
        a failure that ends the run (an unreadable file, a bad batch, an interrupt) is
        raised on every rank.

    Returns
    -------
    Report
        Records per weight matrix and per observed layer, skipped tensors with reasons,
        spectra, and metadata. With ``distributed``, every rank returns the same report
        (the rows in the order of a single-process run); its ``meta`` adds
        ``world_size``, ``rank_items`` (tensors per rank), ``rank_seconds`` (each rank's
        time in the weight stages) and, with data, ``rank_batches``.

    Raises
    ------
    SourceError
        If the source cannot be opened or read.
    InputError
        If an option is invalid, ``layers`` matches nothing, ``data`` is given with a
        source that is not a module, a batch fails in the model, or ``distributed=True``
        finds neither a process group nor torchrun's variables (the message says how to
        launch).

    Examples
    --------
    >>> import torch
    >>> import infospec
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
    ...                             torch.nn.Linear(32, 16))
    >>> report = infospec.analyze(model, [torch.randn(256, 64)], progress=False)
    >>> report.to_dataframe()[["name", "rows", "cols"]].values.tolist()
    [['0.weight', 32, 64], ['2.weight', 16, 32]]
    >>> len(report.activations)
    2
    """
    func = "analyze"
    t0 = time.perf_counter()
    check_choice(conv, "conv", func, CONV_MODES)
    check_choice(method, "method", func, ("auto", "gram", "svd"))
    rel_distortion = check_probability(rel_distortion, "rel_distortion", func)
    eps = check_positive(eps, "eps", func)
    rel_noise = check_positive(rel_noise, "rel_noise", func)
    check_choice(activation_precision, "activation_precision", func, PRECISIONS)
    dev = check_device(device, "device", func)
    for flag, name in (
        (split_in_proj, "split_in_proj"),
        (fits, "fits"),
        (linear_inputs, "linear_inputs"),
    ):
        check_bool(flag, name, func)
    if progress is not None:
        check_bool(progress, "progress", func)
    if data is not None and (
        isinstance(data, (str, bytes, Mapping, torch.Tensor)) or not isinstance(data, Iterable)
    ):
        raise InputError(
            f"The 'data' argument of analyze must be an iterable of batches (a list or a "
            f"DataLoader); got {type(data).__name__}. Wrap a single batch in a list: [batch]."
        )
    if data is not None and not isinstance(source, nn.Module):
        raise InputError(
            "The 'data' argument of analyze needs a torch.nn.Module as 'source' "
            f"(activations come from a forward pass); got {type(source).__name__}."
            " Load the model first, or omit data for a weights-only report."
        )
    from .distributed import on_every_rank, setup, stages_on

    pg, dev = setup(distributed, dev, func)

    def opened():
        src = open_source(source) if min_dim is None else open_source(source, min_dim=min_dim)
        return src, src.select(layers)

    src, entries = on_every_rank(pg, opened)
    report = Report(
        meta={
            "source": str(getattr(src, "description", None) or src),
            "layers": layers,
            "device": str(dev or "default"),
            "conv": conv,
            "split_in_proj": split_in_proj,
            "method": method,
            "rel_distortion": rel_distortion,
            "eps": eps,
            "rel_noise": rel_noise,
            "max_tokens": max_tokens,
            "activation_precision": activation_precision,
            "linear_inputs": linear_inputs,
            "infospec": _version(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
    )
    todo = plan_entries(entries, report.skipped, min_dim=src.min_dim, conv=conv)

    seed = _randomize_seed(randomize)
    report.meta["randomize"] = seed

    def first(entry):
        rand: dict[str, torch.Tensor] | None = None if seed is None else {}
        methods: dict[str, str] = {}
        spectra = _spectra(
            entry,
            conv=conv,
            split_in_proj=split_in_proj,
            method=method,
            device=dev,
            randomize=seed,
            rand_out=rand,
            methods=methods,
        )
        return spectra, rand, methods

    def second(entry, value):
        spectra, rand, methods = value
        rows, esds = _records(entry, spectra, rel_distortion=rel_distortion, fits=fits)
        add_spectrum_methods(rows, methods)
        if rand is not None:
            from .randomize import add_randomized

            add_randomized(rows, esds, spectra, rand)
        return rows, esds

    pipeline = (dev or _data_device(source)).type != "cpu"
    stages = stages_on(
        pg,
        first,
        second,
        todo,
        report.meta,
        conv=conv,
        split_in_proj=split_in_proj,
        workers=workers,
        pipeline=pipeline,
        progress=progress,
    )
    for rows, esds in stages:
        report.weights.extend(rows)
        report.spectra.update(esds)
    report.meta["weight_seconds"] = time.perf_counter() - t0

    if data is not None:
        activation_pass(
            source,
            data,
            [e.name for e in todo],
            report,
            activation_layers=activation_layers,
            device=dev,
            max_tokens=max_tokens,
            precision=activation_precision,
            linear_inputs=linear_inputs,
            eps=eps,
            rel_distortion=rel_distortion,
            rel_noise=rel_noise,
            progress=progress,
            workers=workers,
            pg=pg,
        )
    report.meta["seconds"] = time.perf_counter() - t0
    return report


def _randomize_seed(randomize: Any) -> int | None:
    """The seed of ``analyze(randomize=...)``: None (off), 0 for True, or the int given."""
    if randomize is False or randomize is None:
        return None
    if randomize is True:
        return 0
    if isinstance(randomize, int) and randomize >= 0:
        return int(randomize)
    raise InputError(
        f"The 'randomize' parameter of analyze must be True, False or a seed (an int >= 0). "
        f"Got {shown(randomize)} instead."
    )


def _version() -> str:
    from .. import __version__

    return __version__
