r"""A low-overhead training monitor: per-layer spectra in bits, every k optimizer steps.

:class:`Monitor` watches chosen layers of a model while it trains. It is told of each
optimizer step by :meth:`Monitor.step` (the Lightning and Hugging Face callbacks of
:mod:`infospec.training.callbacks` call it) and, every ``every`` steps, measures

* for each layer's **activations** (its output, rows of features as in
  :mod:`infospec.spectra.activations`): spectral flatness and effective rank of the
  covariance eigenvalues, the Gaussian entropy in bits per dimension and the coding rate
  of MCR² (:func:`infospec.analysis.activation_record`);
* for each layer's **weight matrices** (:func:`infospec.spectra.conventions.as_matrices`):
  flatness and effective rank of the singular values, :math:`\operatorname{Var}[\log
  \sigma_i]`, the power-law exponent ``alpha`` of the ESD tail, the stable rank and the
  spectral norm (:func:`infospec.analysis.weight_record`, without its Marchenko–Pastur fit);
* with ``latent=...``, a Gaussian encoder's **latent** capacity and KL rate in bits and its
  active dimensions (:mod:`infospec.training.latent_watch`).

Where the time goes, and why the defaults meet a 5 % budget
-----------------------------------------------------------
Outside measured steps the model carries **no hooks at all**. Forward hooks
(:class:`~infospec.spectra.activations.ActivationCovariances`) are attached only for the
last ``window`` optimizer steps before each measurement, and feed at most ``max_tokens``
rows per forward pass into float64 streaming covariances (about :math:`2\,n\,d^2`
float64 operations for :math:`n` rows of width :math:`d`, float32 ones for 16-bit
activations (:class:`~infospec.spectra.covariance.StreamingCovariance`'s ``precision``),
comparable to the layer's own forward pass); they are removed right after the
measurement. Forward passes in evaluation mode (``model.eval()``, a validation loop) are
not collected. A layer replaced in the model (``model[2] = nn.Linear(...)``) is followed
by name: the hooks of the next window go on the new module (a warning says so once).
A measurement costs about two symmetric eigendecompositions per layer (the activation
covariance, :math:`d \times d`, and the Gram matrix of each weight), i.e.
:math:`O(d^3)`, independent of the batch.
The overhead is therefore roughly

.. math::

    \frac{\text{window}\cdot t_\text{hook} + t_\text{measure}}{\text{every}\cdot t_\text{step}},

which the defaults (``every=500, window=4, max_tokens=1024``) keep below 5 % on the
benchmark models of ``benchmarks/bench_monitor.py``, on one CPU thread: about 3 % for a
784-512-512-10 MLP at batch 256 (11 ms steps; a measurement takes about 0.1 s) and under
1 % for a two-layer ``nn.TransformerEncoder`` (d_model 128, 32 x 64 tokens). For wide
layers trained with small batches or very fast steps (small models on a GPU) raise
``every``.

Sampling
--------
The rows of one measurement are pooled over the ``window`` steps before it, and the
weights change between those steps: the covariance describes the layer over the window,
not at one instant. For a layer whose output spans a subspace (an up-projection, width
:math:`d_\text{out} > d_\text{in}`) the pooled output spans up to
:math:`\min(d_\text{out}, \text{window}\cdot d_\text{in})` directions, the extra ones small
(they come from the updates), so its rank and flatness read the updates as well as the map.

A covariance of :math:`d` features estimated from :math:`n \le d` rows has rank at most
:math:`n - 1`: the measures then describe the span of the sample, not the layer, and
change with the batch size. Choose ``window`` so that ``window`` x rows per step exceeds
the widest layer; the monitor says so in the row's ``warning`` and warns once per layer
when it does not. Flatness and entropy follow
:func:`~infospec.analysis.activation_record`'s conventions (for example for a layer whose
output spans a subspace, such as an up-projection).

Alerts
------
A layer whose spectrum collapses onto few directions has a small effective rank (it is
1 for a rank-one output) and, when its other directions keep a little variance, a small
flatness. Each alert is raised once per table, layer and measure; a NaN or infinite
activation or weight is an alert too (measure ``"nan"``), recorded with the layer's name
while training goes on.

Examples
--------
>>> import torch
>>> from torch import nn
>>> from infospec.training.monitor import Monitor
>>> _ = torch.manual_seed(0)
>>> model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 16))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.01)
>>> with Monitor(model, every=5, window=2, alerts=None) as monitor:
...     for _ in range(10):
...         loss = model(torch.randn(64, 16)).pow(2).mean()
...         opt.zero_grad(); loss.backward(); opt.step()
...         metrics = monitor.step()
>>> table = monitor.history()
>>> sorted(set(zip(table["step"], table["table"])))
[(5, 'activations'), (5, 'weights'), (10, 'activations'), (10, 'weights')]
>>> row = table.query("step == 10 and table == 'activations' and layer == '2'").iloc[0]
>>> int(row["samples"]), int(row["dim"]), bool(0 < row["flatness"] <= 1)
(128, 16, True)
>>> any(m._forward_hooks for m in model.modules())
False
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch import nn

from .._checks import count_in_range, shown
from .._errors import InfospecError, InfospecWarning, InputError
from .._names import close_matches, match_names
from .._validation import check_device, check_positive
from ..analysis.activations import activation_record
from ..analysis.weights import weight_record
from ..sources import open_source
from ..spectra.activations import ActivationCovariances
from ..spectra.conventions import as_matrices
from ..spectra.covariance import StreamingCovariance
from ..spectra.matrices import singular_values
from .latent_watch import LATENT_METRICS, LatentWatch, check_latent, names_text

__all__ = ["DEFAULT_ALERTS", "MONITOR_COLUMNS", "Monitor", "MonitorAlert"]

NAN = float("nan")

#: Default alert thresholds: a measure falling below its threshold signals a collapse.
#: Default collapse alert: effective rank below 2. Flatness is not a default alert: it is
#: driven toward 0 by any single near-empty direction (a dead unit, or the small directions
#: that the weight updates of a window add to an up-projection's pooled output), so it
#: signals spread, not collapse; ask for it with ``alerts={"flatness": ...}``.
DEFAULT_ALERTS: dict[str, float] = {"effective_rank": 2.0}

#: Measures of each table, in the order they are logged.
ACTIVATION_METRICS: tuple[str, ...] = (
    "flatness",
    "effective_rank",
    "entropy_bits_per_dim",
    "coding_rate_bits",
    "rankme",
    "nesum",
    "alpha_req",
)
WEIGHT_METRICS: tuple[str, ...] = (
    "flatness",
    "effective_rank",
    "log_sigma_var",
    "alpha",
    "stable_rank",
    "sigma_max",
)
_TABLE_METRICS = {
    "activations": ACTIVATION_METRICS,
    "weights": WEIGHT_METRICS,
    "latent": LATENT_METRICS,
}

#: Columns of :meth:`Monitor.history` (and of the CSV log), in order, with their meaning.
MONITOR_COLUMNS: dict[str, str] = {
    "step": "optimizer step at which the row was measured",
    "table": "'activations' (a layer's output), 'weights' (one of its weight matrices) or "
    "'latent' (a Gaussian encoder's code, Monitor(latent=...))",
    "layer": "full dotted name of the module ('(model)' for the model itself)",
    "matrix": "weights: label of the matrix (as_matrices); activations: empty",
    "status": "'ok', or 'error' when the layer produced NaN/Inf or could not be measured",
    "dim": "activations: feature dimension d of the output; latent: latent dimensions",
    "samples": "activations, latent: rows accumulated over the window",
    "rank": "activations: numerical rank of the covariance",
    "rows": "weights: rows of the matrix (out)",
    "cols": "weights: columns of the matrix (in)",
    "flatness": "spectral flatness of covariance eigenvalues / singular values (1 = flat)",
    "effective_rank": "exp of the entropy of the normalised spectrum",
    "entropy_bits_per_dim": "activations: Gaussian differential entropy, bits per dimension",
    "coding_rate_bits": "activations: MCR2 coding rate at eps of unit-energy features, bits",
    "rankme": "activations: RankMe of the centred features over the window",
    "nesum": "activations: sum of covariance eigenvalues over the largest",
    "alpha_req": "activations: alpha-ReQ eigenvalue decay exponent (NaN below rank 12)",
    "log_sigma_var": "weights: Var[log sigma_i]",
    "alpha": "weights: power-law exponent of the ESD tail (NaN when alpha=False)",
    "stable_rank": "weights: ||W||_F^2 / ||W||_2^2",
    "sigma_max": "weights: largest singular value",
    "capacity_bits": "latent: sum over dims of 1/2 log2(1 + Var[mu_j] / E[sigma_j^2]), bits",
    "kl_rate_bits": "latent: mean KL(q(z|x) || N(0, I)) over the window's rows, bits",
    "active_dims": "latent: dimensions with Var[mu_j] > 0.01 (Burda et al.)",
    "warning": "why a measure is degenerate or missing; empty when none",
}

_ROOT = "(model)"
#: Frames between warnings.warn and the caller of Monitor.step / Monitor.measure.
_STACKLEVEL = 5
_INT_COLUMNS = ("dim", "samples", "rank", "rows", "cols", "active_dims")


class MonitorAlert(NamedTuple):
    """A layer whose measure fell below its threshold, or that produced NaN/Inf.

    Attributes
    ----------
    step : int
        Optimizer step of the measurement.
    table : str
        ``"activations"`` or ``"weights"``.
    layer : str
        Module name (for weights, the matrix label).
    metric : str
        The measure (``"flatness"``, ``"effective_rank"``...) or ``"nan"`` for non-finite
        values.
    value : float
        The measured value (NaN for a ``"nan"`` alert).
    threshold : float
        The threshold it fell below (NaN for a ``"nan"`` alert).
    message : str
        One line saying what happened, where, and what it may mean.
    """

    step: int
    table: str
    layer: str
    metric: str
    value: float
    threshold: float
    message: str


def _display(name: str) -> str:
    return name if name else _ROOT


def _owner(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _process_group_size(group: Any = None) -> int:
    """Processes of a torch.distributed group (default: the world), or 1 when none runs."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


#: Largest ``seed`` (torch generators take 64-bit seeds; each window's is seed + step).
_MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes [-2**63, 2**64 - 1]


def _check_not_all_meta(layers: Mapping[str, nn.Module], func: str) -> None:
    """An :class:`InputError` if every watched weight is a meta tensor (nothing to measure).

    A model offloaded by accelerate keeps meta weights that its hooks load for each
    forward pass; its activations can still be measured, so it passes.
    """
    params = [
        (name, p)
        for name, mod in layers.items()
        for p in mod.parameters(recurse=False)
        if not hasattr(mod, "_hf_hook")
    ]
    if params and all(p.device.type == "meta" for _, p in params):
        name, p = params[0]
        raise InputError(
            f"The 'model' argument of {func} holds only meta tensors in the watched layers "
            f"(layer '{name or '<root>'}': shape {tuple(p.shape)}, no values), so there is "
            f"nothing to measure. Load the weights first (model.to_empty(device='cpu') and "
            f"a state dict)."
        )


class _LogFile:
    """Appends one record per line to a .jsonl or .csv file, each line in one write."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise InputError(
                f"The 'log_path' parameter of Monitor must end in '.jsonl' or '.csv'. "
                f"Got '{self.path}' instead."
            )
        if self.path.is_dir():
            raise InputError(
                f"The 'log_path' parameter of Monitor is the directory '{self.path}'; "
                f"give a file path ending in '.jsonl' or '.csv'."
            )
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(
                f"The 'log_path' parameter of Monitor is '{self.path}', but the directory "
                f"'{parent}' does not exist. Create it first."
            )
        self.csv = suffix == ".csv"
        self.columns = list(MONITOR_COLUMNS)
        if self.csv and self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(encoding="utf-8", newline="") as fh:
                header = next(csv.reader(fh), [])
            if header != self.columns:
                raise InputError(
                    f"The CSV log '{self.path}' exists with other columns "
                    f"({', '.join(header[:5])}...); a monitor appends rows with the columns "
                    f"{', '.join(self.columns[:5])}... Give a new path or remove the file."
                )

    def _line(self, values: Sequence[Any]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(values)
        return buf.getvalue()

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if self.csv and os.fstat(fd).st_size == 0:
                os.write(fd, self._line(self.columns).encode("utf-8"))
            for row in rows:
                if self.csv:
                    line = self._line([row.get(c, "") for c in self.columns])
                else:
                    clean = {c: _json_value(row.get(c)) for c in self.columns}
                    line = json.dumps(clean, allow_nan=False) + "\n"
                os.write(fd, line.encode("utf-8"))  # one write per line: appends atomically
        finally:
            os.close(fd)


class Monitor:
    r"""Per-layer spectral measures of a model during training, every ``every`` steps.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained; it must have weight matrices.
    layers : None, str or sequence of str, default None
        Modules to watch. ``None``: every module that owns a weight matrix (``Linear``,
        convolutions, embeddings, ``MultiheadAttention``...). A string: a regular expression
        searched in the full dotted module names (:func:`re.search`). A sequence: module
        names (an item equal to a name selects that module), other items are patterns.
        Only modules that own a weight matrix can be watched.
    every : int >= 1, default 500
        Measure at every ``every``-th optimizer step (steps ``every``, ``2 every``...).
    window : int >= 1, default 4
        Activations are collected during the last ``window`` steps before each measurement
        (at most ``every``). Their rows must outnumber a layer's width for its covariance
        to be non-singular (see the module docstring).
    max_tokens : int > 0 or None, default 1024
        Most rows taken from one output of one forward pass (a seeded random subset).
    weights, activations : bool, default True
        Which tables to measure.
    alpha : bool, default True
        Fit the power-law exponent of each weight matrix's ESD (the costliest weight
        measure, tens of milliseconds for a 1000-wide matrix); ``False`` leaves ``alpha``
        NaN.
    eps : float > 0, default 0.5
        Distortion of the coding rate (see :func:`~infospec.analysis.activation_record`).
    writer : object with ``add_scalar(tag, value, global_step)``, optional
        A ``torch.utils.tensorboard.SummaryWriter`` or anything alike. Tags are
        ``infospec/activations/<layer>/<metric>`` and
        ``infospec/weights/<matrix>/<metric>``; non-finite values are not sent.
    log_path : str or path-like, optional
        A ``.jsonl`` or ``.csv`` file to which each row is appended, one line per row
        written in a single ``write`` (so a crash leaves whole lines). Non-finite values are
        ``null`` in JSONL and ``nan``/``-inf`` in CSV.
    alerts : mapping of str to float, or None, default ``DEFAULT_ALERTS``
        Thresholds ``{metric: value}``: a row whose measure is below its threshold raises
        an alert. A key ``"flatness"`` applies to both tables, ``"activations/flatness"``
        to one. Keys must be measures of :data:`MONITOR_COLUMNS` of a table.
        ``None`` disables alerts (NaN alerts stay on).
    alert_callback : callable, optional
        Called with each :class:`MonitorAlert`; by default each alert is issued as an
        :class:`~infospec.InfospecWarning`. An alert is issued once per table, layer and
        measure.
    min_dim : int >= 1, default 10
        Weight matrices whose smaller side is below it are not measured (too few singular
        values for a spectrum); their activations still are.
    spectrum_device : torch.device or str or None, default "cpu"
        Where the eigendecompositions run (the accumulators stay on the model's device and
        are copied once per measurement). LAPACK on the CPU is faster than GPU solvers at
        the widths of most layers; ``None`` keeps each tensor's device.
    seed : int in [-2**63, 2**64 - 1], default 0
        Seed of the row subsampling.
    distributed : bool, default False
        Under ``torch.distributed`` (DDP), pool every process's activation rows before
        measuring, so that each layer's covariance is that of the global batch: the
        accumulators are merged across the ``group`` (:meth:`StreamingCovariance.all_reduce
        <infospec.spectra.covariance.StreamingCovariance.all_reduce>`) and every rank gets
        the same rows, while only rank 0 of the group writes to ``writer`` and ``log_path``
        and issues the default alert warnings (``alert_callback`` runs on every rank). It
        is a collective: **every** rank of the group must create a monitor with it, on the
        same model and ``layers``, and step it at the same steps, or the processes wait on
        each other until the backend's timeout (ranks watching different layers get an
        :class:`InputError`). Weights are not reduced (DDP keeps them identical). With
        ``False`` under a process group of more than one process, each rank measures its
        own rows (a warning says so once). The Lightning and Hugging Face callbacks switch
        it on in the monitors they create when the process group has more than one
        process, unless it is given.
    group : torch.distributed process group, optional
        The group of ``distributed`` (default: the whole world).
    latent : str or pair of str, optional
        Log the latent capacity of a Gaussian encoder (a VAE's) in a third table,
        ``latent``: the module returning ``(mu, logvar, ...)`` or one tensor
        ``[mu | logvar]`` (halves of the last axis), or the pair of modules returning
        ``mu`` and ``logvar`` (:mod:`infospec.training.latent_watch`). The rows of the
        window's training-mode forward passes (``max_tokens`` per pass) give
        ``capacity_bits``, ``kl_rate_bits`` and ``active_dims``
        (:func:`~infospec.measures.latent.latent_capacity`); they are pooled over the
        ranks with ``distributed``. An alert ``{"capacity_bits": 1.0}`` flags a posterior
        collapse. The modules need not own weights.

    Attributes
    ----------
    global_step : int
        Optimizer steps seen by :meth:`step`.
    alerts : list of MonitorAlert
        Every alert issued, in order.
    layers : dict of str to nn.Module
        The watched modules.
    skipped : dict of str to str
        What was not measured, and why (a small weight matrix, a module whose forward is
        never called...).
    measure_seconds : list of float
        Wall time of each measurement.

    Raises
    ------
    InputError
        If ``model`` is not a module with weight matrices, a name or pattern in ``layers``
        matches no module (the message lists close matches) or only modules without
        weights, ``every``/``window``/``max_tokens``/``eps``/``min_dim`` are out of range,
        both tables are switched off, ``writer`` has no ``add_scalar``, ``log_path`` is not
        a writable ``.jsonl``/``.csv`` path (or a CSV with other columns), ``alerts`` names
        an unknown measure, ``spectrum_device`` is not a device (or is ``"meta"``, or CUDA
        where there is none), ``seed`` is not an int in [-2**63, 2**64 - 1], ``distributed`` is
        not a bool, ``latent`` names no module of the model, or every watched weight is
        a meta tensor (no values).

    References
    ----------
    Y. Yu, K. H. R. Chan, C. You, C. Song and Y. Ma, "Learning diverse and discriminative
    representations via the principle of maximal coding rate reduction", NeurIPS 2020
    (coding rate). C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep
    neural networks", JMLR 22, 2021 (alpha).

    Examples
    --------
    >>> import torch
    >>> from infospec.training.monitor import Monitor
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.ReLU())
    >>> Monitor(model, layers="lin")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    infospec._errors.InputError: The 'layers' pattern 'lin' of Monitor matches none of the 2 ...
    >>> monitor = Monitor(model, every=1, alerts=None)
    >>> _ = model(torch.randn(64, 16)); metrics = monitor.step()
    >>> sorted(k for k in metrics if k.endswith("flatness"))
    ['infospec/activations/0/flatness', 'infospec/weights/0.weight/flatness']
    >>> monitor.remove()
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: str | Sequence[str] | None = None,
        every: int = 500,
        window: int = 4,
        max_tokens: int | None = 1024,
        weights: bool = True,
        activations: bool = True,
        alpha: bool = True,
        eps: float = 0.5,
        writer: Any = None,
        log_path: str | os.PathLike | None = None,
        alerts: Mapping[str, float] | None = DEFAULT_ALERTS,
        alert_callback: Callable[[MonitorAlert], Any] | None = None,
        min_dim: int = 10,
        spectrum_device: torch.device | str | None = "cpu",
        seed: int = 0,
        distributed: bool = False,
        group: Any = None,
        latent: str | Sequence[str] | None = None,
    ) -> None:
        func = "Monitor"
        if not isinstance(model, nn.Module):
            raise InputError(
                f"The 'model' argument of {func} must be a torch.nn.Module; got "
                f"{type(model).__name__}."
            )
        self.every = check_positive(every, "every", func, integer=True)
        self.window = min(check_positive(window, "window", func, integer=True), self.every)
        if max_tokens is not None:
            max_tokens = check_positive(max_tokens, "max_tokens", func, integer=True)
        self.max_tokens = max_tokens
        self.eps = check_positive(eps, "eps", func)
        self.min_dim = check_positive(min_dim, "min_dim", func, integer=True)
        self.latent_names = () if latent is None else check_latent(model, latent, func)
        if not (weights or activations or self.latent_names):
            raise InputError(
                f"{func} has nothing to measure: weights=False and activations=False. "
                f"Switch on at least one table (or give latent=...)."
            )
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise InputError(
                f"The 'writer' parameter of {func} must have an add_scalar(tag, value, "
                f"global_step) method (a torch.utils.tensorboard.SummaryWriter); got "
                f"{type(writer).__name__}."
            )
        if alert_callback is not None and not callable(alert_callback):
            raise InputError(
                f"The 'alert_callback' parameter of {func} must be callable or None; got "
                f"{type(alert_callback).__name__}."
            )
        self.model = model
        self.weights = bool(weights)
        self.activations = bool(activations)
        self.alpha = bool(alpha)
        self.writer = writer
        self.seed = count_in_range(
            seed, f"The 'seed' parameter of {func}", low=-(2**63), high=_MAX_SEED
        )
        self.spectrum_device = check_device(spectrum_device, "spectrum_device", func)
        if not isinstance(distributed, bool):
            raise InputError(
                f"The 'distributed' parameter of {func} must be True or False; got "
                f"{shown(distributed)}."
            )
        self.distributed = distributed
        self.group = group
        self.alert_callback = alert_callback
        self.thresholds = self._check_alerts(alerts)
        if log_path is not None and not isinstance(log_path, (str, os.PathLike)):
            raise InputError(
                f"The 'log_path' parameter of {func} must be a path (str or os.PathLike) "
                f"ending in '.jsonl' or '.csv', or None. Got {shown(log_path)} instead."
            )
        self._log = None if log_path is None else _LogFile(log_path)
        self.layers = self._select_layers(model, layers)
        _check_not_all_meta(self.layers, func)

        self.global_step = 0
        self.alerts: list[MonitorAlert] = []
        self.skipped: dict[str, str] = {}
        self.measure_seconds: list[float] = []
        self._rows: list[dict[str, Any]] = []
        self._alerted: set[tuple[str, str, str]] = set()
        self._warned: set[str] = set()
        self._collector: ActivationCovariances | None = None
        self._latent: LatentWatch | None = None
        self._attached = False
        self.attach()

    # -- configuration -------------------------------------------------------------------
    @staticmethod
    def _check_alerts(alerts: Mapping[str, float] | None) -> dict[tuple[str, str], float]:
        func = "Monitor"
        if alerts is None:
            return {}
        if not isinstance(alerts, Mapping):
            raise InputError(
                f"The 'alerts' parameter of {func} must be a mapping of measure names to "
                f"thresholds, or None. Got {shown(alerts)} instead."
            )
        out: dict[tuple[str, str], float] = {}
        for key, value in alerts.items():
            table, _, metric = str(key).rpartition("/")
            tables = [table] if table else list(_TABLE_METRICS)
            valid = [t for t in tables if t in _TABLE_METRICS and metric in _TABLE_METRICS[t]]
            if not valid:
                names = sorted({m for ms in _TABLE_METRICS.values() for m in ms})
                raise InputError(
                    f"The 'alerts' parameter of {func} has the key {key!r}, which is not a "
                    f"measure of the monitor; use one of {', '.join(map(repr, names))}, "
                    f"optionally prefixed by 'activations/', 'weights/' or 'latent/'."
                )
            # any finite threshold: entropy in bits per dimension is often negative
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(float(value))
            ):
                raise InputError(
                    f"The 'alerts' parameter of {func} must map measures to finite numbers; "
                    f"got {shown(value)} for {key!r}."
                )
            threshold = float(value)
            for t in valid:
                out[(t, metric)] = float(threshold)
        return out

    @staticmethod
    def _select_layers(
        model: nn.Module, layers: str | Sequence[str] | None
    ) -> dict[str, nn.Module]:
        func = "Monitor"
        named = dict(model.named_modules())
        try:
            entries = open_source(model).entries()
        except InfospecError as exc:
            raise InputError(
                f"The 'model' argument of {func} has no weights to monitor: {exc}"
            ) from exc
        owners = {_owner(e.name) for e in entries if e.kind != "other"}
        with_weights = [n for n in named if n in owners]
        if not with_weights:
            raise InputError(
                f"The 'model' argument of {func} ({type(model).__name__}) has no weight "
                f"matrix to monitor (only biases, norm scales or buffers). Pass a model "
                f"with Linear, convolution, embedding or attention layers."
            )
        if layers is None:
            return {n: named[n] for n in with_weights}
        names = [n for n in named if n]
        # one rule for names and patterns (match_names), applied item by item so that an
        # item choosing only modules without weights can be named in the error
        if isinstance(layers, str):
            items: list[Any] = [layers]
        elif isinstance(layers, Sequence) and layers and all(isinstance(x, str) for x in layers):
            items = [[x] for x in layers]  # one-item sequences keep the exact-name rule
        else:
            items = [layers]  # match_names reports the bad type or the empty sequence
        chosen: set[str] = set()
        for item in items:
            hits = set(match_names(names, item, param="layers", func=func, what="module"))
            if hits and not hits & owners:
                label = item[0] if isinstance(item, list) else item
                kinds = ", ".join(f"'{n}' ({type(named[n]).__name__})" for n in sorted(hits)[:4])
                raise InputError(
                    f"The 'layers' entry {label!r} of {func} selects only modules without "
                    f"weights: {kinds}. The monitor watches layers that own a weight "
                    f"matrix; close matches: {close_matches(label, with_weights)}."
                )
            chosen |= hits & owners
        return {n: named[n] for n in with_weights if n in chosen}

    # -- lifecycle -----------------------------------------------------------------------
    def _collecting(self, next_step: int) -> bool:
        """Whether the forward passes of optimizer step ``next_step`` are collected."""
        r = next_step % self.every
        return r == 0 or r > self.every - self.window

    def _follow_replaced_layers(self) -> None:
        """Point each watched name at the module the model holds under it now.

        After ``model[2] = nn.Linear(...)`` the hooks must go on the new module, or that
        layer's activations would vanish silently; a warning says so once per layer. A
        name the model no longer has is dropped from the activations, with a warning.
        """
        named = dict(self.model.named_modules())
        for name, module in list(self.layers.items()):
            now = named.get(name)
            if now is module:
                continue
            if now is None:
                del self.layers[name]
                self._warn_once(
                    f"gone/{name}",
                    f"Monitor: layer '{_display(name)}' is no longer in the model; it is no "
                    f"longer watched.",
                )
                continue
            self.layers[name] = now
            self._warn_once(
                f"replaced/{name}/{id(now)}",
                f"Monitor: layer '{_display(name)}' was replaced by a new "
                f"{type(now).__name__}; its activations are now collected from the new "
                f"module.",
            )

    def _update_hooks(self) -> None:
        window = self._attached and self._collecting(self.global_step + 1)
        if window and self.latent_names and self._latent is None:
            self._latent = LatentWatch(
                self.model,
                self.latent_names,
                max_tokens=self.max_tokens,
                seed=(self.seed + self.global_step) % (_MAX_SEED + 1),
            )
        elif not window and self._latent is not None:
            self._latent.remove()
            self._latent = None
        want = window and self.activations
        if want and self._collector is None:
            self._follow_replaced_layers()  # at each window start: hooks on the live modules
            self._collector = ActivationCovariances(
                dict(self.layers),
                max_tokens=self.max_tokens,
                seed=(self.seed + self.global_step) % (_MAX_SEED + 1),
                training_only=True,
            )
        elif not want and self._collector is not None:
            self._collector.remove()
            self._collector = None

    def attach(self) -> Monitor:
        """(Re)start watching: hooks are attached again when a measured window comes."""
        self._attached = True
        self._update_hooks()
        return self

    def remove(self) -> None:
        """Remove every hook; the model is left exactly as before. Safe to call twice.

        The history and alerts are kept; :meth:`attach` resumes monitoring.
        """
        self._attached = False
        if self._collector is not None:
            self._collector.remove()
            self._collector = None
        if self._latent is not None:
            self._latent.remove()
            self._latent = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"<Monitor of {len(self.layers)} layer(s), every={self.every}, "
            f"window={self.window}, step {self.global_step}, "
            f"{'attached' if self._attached else 'removed'}>"
        )

    # -- stepping ------------------------------------------------------------------------
    def step(self, step: int | None = None) -> dict[str, float]:
        """Tell the monitor that an optimizer step has been taken.

        Parameters
        ----------
        step : int, optional
            The trainer's own count of optimizer steps after this one (for example
            Lightning's ``trainer.global_step``); by default the monitor counts calls.

        Returns
        -------
        metrics : dict of str to float
            When this step was measured, the finite measures by TensorBoard tag
            (``"infospec/activations/<layer>/flatness"``...); otherwise empty.

        Raises
        ------
        InputError
            If the monitor was removed (call :meth:`attach` first) or ``step`` is not an
            int >= 0.
        """
        if not self._attached:
            raise InputError(
                "Monitor.step was called after Monitor.remove(); call monitor.attach() to "
                "resume monitoring, or create a new Monitor."
            )
        if step is None:
            self.global_step += 1
        else:
            self.global_step = check_positive(
                step, "step", "Monitor.step", integer=True, allow_zero=True
            )
        metrics: dict[str, float] = {}
        if self.global_step > 0 and self.global_step % self.every == 0:
            metrics = self._measure()
        self._update_hooks()
        return metrics

    # -- measuring -----------------------------------------------------------------------
    def measure(self) -> dict[str, float]:
        """Measure now, at :attr:`global_step`, from the activations collected so far.

        :meth:`step` calls it every ``every`` steps; call it directly for a measurement
        at the end of training. The activation accumulators are emptied afterwards. With
        ``distributed=True`` it is a collective: call it on every rank.

        Returns
        -------
        metrics : dict of str to float
            The finite measures by TensorBoard tag.
        """
        return self._measure()

    def _measure(self) -> dict[str, float]:
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        with torch.no_grad():
            if self.activations:
                rows += self._activation_rows()
            if self.weights:
                rows += self._weight_rows()
            if self._latent is not None:
                rows.append(self._latent_row())
        self._rows += rows
        self.measure_seconds.append(time.perf_counter() - t0)
        metrics = self._metrics(rows)
        writes = self._rank() == 0
        if self._log is not None and rows and writes:
            self._log.append(rows)
        if self.writer is not None and writes:
            for tag, value in metrics.items():
                self.writer.add_scalar(tag, value, global_step=self.global_step)
        for row in rows:
            self._check_row(row)
        return metrics

    def _base(self, table: str, layer: str, matrix: str = "") -> dict[str, Any]:
        return {
            "step": self.global_step,
            "table": table,
            "layer": _display(layer),
            "matrix": matrix,
            "status": "ok",
        }

    def _latent_row(self) -> dict[str, Any]:
        """The ``latent`` table's row of this measurement (pooled over ranks if distributed)."""
        fields = self._latent.record(group=self.group, pooled=self._pooling())
        return {**self._base("latent", names_text(self.latent_names)), **fields}

    # -- torch.distributed -----------------------------------------------------------------
    def _world(self) -> int:
        """Processes in the group when a process group is running, else 1."""
        return _process_group_size(self.group)

    def _pooling(self) -> bool:
        """Whether measurements pool the rows of several processes (``distributed``)."""
        return self.distributed and self._world() > 1

    def _rank(self) -> int:
        """This process's rank in the group when ``distributed``, else 0 (it writes)."""
        if not self._pooling():
            return 0
        import torch.distributed as dist

        return dist.get_rank(self.group)

    def _pooled(self, collector: ActivationCovariances) -> tuple[dict, dict[str, str], dict]:
        """Every rank's accumulators merged (:func:`~infospec.spectra.pooling.pool_over_ranks`).

        Returns the pooled accumulators, the error of each failed layer and the input dtype
        of each pooled layer, all the same on every rank; the reason of a layer that failed
        here is a warning on this rank.
        """
        from ..spectra.pooling import pool_over_ranks

        for name in self.layers:
            if name in collector.errors:  # the reason, on the rank that knows it
                self._warn_once(
                    f"rank-error/{name}",
                    f"Monitor, rank {self._rank()}: {collector.errors[name]}",
                )

        def failed_message(name: str, failed: list[int]) -> str:
            # the same words on every rank, so that every rank logs the same rows
            return (
                f"layer '{_display(name)}' could not be measured on rank(s) {failed} of "
                f"the group (non-finite, non-floating or width-changing outputs; a "
                f"warning on that rank says which); its statistics for this measurement "
                f"stop there"
            )

        return pool_over_ranks(
            collector,
            self.layers,
            self.group,
            who="Monitor(distributed=True)",
            fix="Create the monitor with the same model and 'layers' on every rank.",
            failed_message=failed_message,
        )

    def _activation_rows(self) -> list[dict[str, Any]]:
        collector = self._collector
        out: list[dict[str, Any]] = []
        if collector is None:
            return out
        accumulators: Mapping[str, StreamingCovariance] = collector.accumulators
        errors: Mapping[str, str] = collector.errors
        dtypes: Mapping[str, torch.dtype] = collector.dtypes
        if self._world() > 1:
            if self.distributed:
                accumulators, errors, dtypes = self._pooled(collector)
            else:
                self._warn_once(
                    "distributed",
                    f"Monitor: torch.distributed runs {self._world()} processes but the "
                    f"monitor has distributed=False, so each rank measures only its own "
                    f"activation rows. Pass distributed=True on every rank to pool them.",
                )
        for name in self.layers:
            base = self._base("activations", name)
            if name in errors:
                out.append({**base, "status": "error", "warning": errors[name]})
                continue
            acc = accumulators.get(name)
            if acc is None:
                self.skipped.setdefault(
                    f"activations/{_display(name)}",
                    "no forward call of this module in training mode during a measured "
                    "step (its weight may be used functionally by its parent module)",
                )
                continue
            if acc.count < 2:
                out.append({**base, "status": "error", "warning": "fewer than 2 rows seen"})
                continue
            if self.spectrum_device is not None and acc.mean.device != self.spectrum_device:
                acc = StreamingCovariance(acc.dim, device=self.spectrum_device).merge(acc)
            try:
                rec = activation_record(
                    acc.eigenvalues(),
                    acc.count,
                    eps=self.eps,
                    input_dtype=dtypes.get(name, torch.float64),
                )
            except (InfospecError, torch.linalg.LinAlgError) as exc:
                # finite activations whose squares overflow (~1e160), a solver that fails:
                # the layer's row says why, and training goes on
                out.append({**base, "status": "error", "warning": str(exc).splitlines()[0]})
                continue
            row = {**base, **{k: rec[k] for k in ("dim", "samples", "rank")}}
            row.update({k: rec[k] for k in ACTIVATION_METRICS})
            notes = [rec["warning"]] if rec.get("warning") else []
            if rec["samples"] <= rec["dim"]:
                notes.append(
                    f"under-sampled: {rec['samples']} rows for {rec['dim']} features (rank at "
                    f"most {rec['samples'] - 1}); raise window or the batch size"
                )
                self._warn_once(
                    f"undersampled/{name}",
                    f"Monitor: layer '{_display(name)}' got {rec['samples']} activation rows "
                    f"for {rec['dim']} features, so its covariance has rank at most "
                    f"{rec['samples'] - 1} by under-sampling and its measures depend on the "
                    f"batch size. Raise window (now {self.window}), the batch size or "
                    f"max_tokens.",
                )
            row["warning"] = "; ".join(notes)
            out.append(row)
        collector.reset()
        return out

    def _weight_rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for entry in open_source(self.model, min_dim=self.min_dim).entries():
            owner = _owner(entry.name)
            if owner not in self.layers or entry.kind == "other":
                continue
            if entry.skipped:
                self.skipped.setdefault(f"weights/{entry.name}", entry.skip_reason or "")
                continue
            tensor = entry.load()
            if not bool(torch.isfinite(tensor).all()):
                n_bad = int((~torch.isfinite(tensor)).sum())
                out.append(
                    {
                        **self._base("weights", owner, entry.name),
                        "status": "error",
                        "warning": f"weight '{entry.name}' of layer '{_display(owner)}' "
                        f"contains {n_bad} NaN/Inf value(s)",
                    }
                )
                continue
            for label, matrix in as_matrices(entry, tensor):
                rows_, cols_ = matrix.shape
                base = self._base("weights", owner, label)
                try:
                    sigma = singular_values(matrix, device=self.spectrum_device)
                    rec = weight_record(
                        sigma, rows=rows_, cols=cols_, fit_power=self.alpha, fit_mp=False
                    )
                except (InfospecError, torch.linalg.LinAlgError) as exc:
                    out.append({**base, "status": "error", "warning": str(exc)})
                    continue
                row = {**base, "rows": rows_, "cols": cols_}
                row.update({k: rec[k] for k in WEIGHT_METRICS})
                warning = rec["warning"]
                if not self.alpha:
                    # the power-law fit was not asked for: not a degenerate spectrum
                    warning = "; ".join(w for w in warning.split("; ") if "power-law" not in w)
                row["warning"] = warning
                out.append(row)
        return out

    @staticmethod
    def _tag(row: Mapping[str, Any], metric: str) -> str:
        where = row["matrix"] if row["table"] == "weights" else row["layer"]
        return f"infospec/{row['table']}/{where}/{metric}"

    def _metrics(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for row in rows:
            if row["status"] != "ok":
                continue
            for metric in _TABLE_METRICS[row["table"]]:
                value = row.get(metric)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    metrics[self._tag(row, metric)] = float(value)
        return metrics

    # -- alerts --------------------------------------------------------------------------
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, InfospecWarning, stacklevel=_STACKLEVEL)

    def _alert(
        self, row: Mapping[str, Any], metric: str, value: float, threshold: float, msg: str
    ) -> None:
        where = row["matrix"] if row["table"] == "weights" else row["layer"]
        key = (row["table"], where, metric)
        if key in self._alerted:
            return
        self._alerted.add(key)
        alert = MonitorAlert(row["step"], row["table"], where, metric, value, threshold, msg)
        self.alerts.append(alert)
        if self.alert_callback is not None:
            self.alert_callback(alert)  # on every rank: it may stop training everywhere
        elif self._rank() == 0:  # pooled rows: one warning, not one per process
            warnings.warn(msg, InfospecWarning, stacklevel=_STACKLEVEL)

    def _check_row(self, row: Mapping[str, Any]) -> None:
        table, step = row["table"], row["step"]
        where = row["matrix"] if table == "weights" else row["layer"]
        if row["status"] == "error":
            self._alert(
                row,
                "nan",
                NAN,
                NAN,
                f"Monitor, step {step}: the {table} of "
                f"{'weight matrix' if table == 'weights' else 'layer'} '{where}' could not be "
                f"measured: {row.get('warning', '')}",
            )
            return
        for (t, metric), threshold in self.thresholds.items():
            if t != table:
                continue
            value = row.get(metric)
            if not isinstance(value, (int, float)) or math.isnan(value) or value >= threshold:
                continue
            what = {
                "weights": f"weight matrix '{where}'",
                "latent": f"the latent of '{where}'",
            }.get(table, f"the activations of layer '{where}'")
            self._alert(
                row,
                metric,
                float(value),
                threshold,
                f"Monitor, step {step}: {metric} of {what} fell to {value:.4g}, below the "
                f"alert threshold {threshold:g} (a collapse of its spectrum onto few "
                f"directions).",
            )

    # -- results -------------------------------------------------------------------------
    def history(self) -> pd.DataFrame:
        """Every measured row so far, in long format (columns :data:`MONITOR_COLUMNS`).

        Returns
        -------
        pandas.DataFrame
            One row per step, table and layer (per matrix for weights); measures that do
            not apply to a table are NaN.
        """
        frame = pd.DataFrame(self._rows, columns=list(MONITOR_COLUMNS))
        for col in _INT_COLUMNS:
            frame[col] = frame[col].astype("Int64")
        frame["warning"] = frame["warning"].fillna("")
        frame["matrix"] = frame["matrix"].fillna("")
        return frame
