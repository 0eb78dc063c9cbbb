r"""The duality experiment's core: data, model, the four training methods and the measurements.

One small MLP (``64-128-64-10``, ReLU) is trained on scikit-learn's bundled digits four ways,
from the same initialisation and with the same batches for a given seed:

=================  ================================================================
``baseline``       cross-entropy only
``coding_rate``    cross-entropy :math:`- w\,R(z, \epsilon)` on the penultimate features
                   :math:`z` (rows scaled to unit norm), the expansion term of SimDINO
                   (:class:`~infospec.training.CodingRateLoss`)
``info_spec``      cross-entropy :math:`+ \beta H(z) + \gamma \sum_W \mathrm{Var}[\log\sigma_i(W)]`,
                   seed 001's regulariser (:class:`~infospec.training.InfoSpecLoss`) on the
                   same features and on every weight matrix
``spectral``       cross-entropy :math:`+ \lambda \sum_W (\sigma_{\max}(W)^k - 1)^2`
                   (:class:`~infospec.training.SpectralRegularizer`, Lewandowski et al.)
=================  ================================================================

At checkpoints (initialisation, every ``checkpoint_every`` epochs and the last epoch) each
layer is measured by :func:`infospec.analyze` on the test set: the activation spectrum of
the layer's output (after the ReLU for hidden layers, the logits for the last) and the
singular values of its weight matrix. Everything lands in one long-format table with the
columns of :data:`RESULT_COLUMNS`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import shown
from .._errors import InputError
from .._validation import check_choice, check_positive, check_probability

__all__ = [
    "ACTIVATION_METRICS",
    "METHODS",
    "MODEL_METRICS",
    "RESULT_COLUMNS",
    "WEIGHT_METRICS",
    "DemoConfig",
    "DigitsData",
    "build_mlp",
    "layer_map",
    "load_digits_split",
    "measure",
    "run_duality",
    "train_run",
]

#: The training methods, in the order they are reported.
METHODS: tuple[str, ...] = ("baseline", "coding_rate", "info_spec", "spectral")

#: Long-format result columns.
RESULT_COLUMNS: tuple[str, ...] = ("run", "seed", "method", "epoch", "layer", "metric", "value")

#: Activation metrics: name in the results -> (column of the analysis report, meaning).
ACTIVATION_METRICS: dict[str, tuple[str, str]] = {
    "act_flatness": (
        "flatness",
        "spectral flatness of the output covariance's nonzero eigenvalues (1 = white)",
    ),
    "act_effective_rank": ("effective_rank", "exp of the entropy of lambda / sum lambda"),
    "act_rank": ("rank", "numerical rank of the output covariance (the support)"),
    "act_entropy_bits_per_dim": (
        "entropy_bits_per_dim",
        "Gaussian differential entropy on the support, bits per dimension (scale-dependent)",
    ),
    "act_coding_rate_bits": (
        "coding_rate_bits",
        "MCR2 coding rate at eps = 0.5 of the features rescaled to unit mean energy, bits",
    ),
    "act_energy": ("", "mean covariance eigenvalue, trace / d (the features' energy)"),
}

#: Weight metrics: name in the results -> (column of the analysis report, meaning).
WEIGHT_METRICS: dict[str, tuple[str, str]] = {
    "weight_flatness": ("flatness", "spectral flatness of the singular values of W"),
    "weight_log_sigma_var": ("log_sigma_var", "Var[log sigma_i(W)], seed 001's weight term"),
    "weight_sigma_max": ("sigma_max", "largest singular value of W"),
}

#: Whole-model metrics (layer ``"model"``).
MODEL_METRICS: dict[str, str] = {
    "test_accuracy": "accuracy on the held-out test split",
    "train_loss": "mean cross-entropy on the training split (no regulariser)",
}


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the duality experiment and of the continual-learning check.

    Every run of a method sees the same initialisation and the same batch order for a given
    seed, so that differences between methods are paired by seed.

    Parameters
    ----------
    seeds : int > 0
        Number of seeds (0, 1, ..., seeds-1); every method and arm runs once per seed.
    epochs : int > 0
        Training epochs of each duality run.
    checkpoint_every : int > 0
        Epochs between measurements (the initialisation and the last epoch are always
        measured).
    batch_size : int >= 2
        Mini-batch size (the info-spec entropy needs at least 2 rows).
    lr : float > 0
        Adam learning rate (no weight decay).
    hidden : tuple of int
        Widths of the hidden layers.
    test_fraction : float in (0, 1)
        Share of each class held out for testing (a fixed stratified split).
    split_seed : int
        Seed of the train/test split and of the task permutations, fixed across seeds.
    coding_rate_weight, coding_rate_eps : float > 0
        SimDINO's :math:`\\gamma` and :math:`\\epsilon` of the coding-rate method.
    info_spec_beta, info_spec_gamma : float >= 0
        :math:`\\beta` (nats) and :math:`\\gamma` of the info-spec method.
    info_spec_ridge : float > 0
        Ridge added to the batch covariance of the info-spec entropy.
    spectral_lambda, spectral_k : float > 0
        Weight and exponent of the spectral regulariser.
    continual_tasks : int >= 2
        Permuted-pixel tasks of the continual-learning check (task 1 is the original order).
    continual_epochs : int > 0
        Epochs of training on each task.
    threads : int > 0
        ``torch.set_num_threads`` during the run (restored afterwards). One thread is the
        fastest for a model this small.
    mode : {"full", "quick"}
        A label recorded in the summary.
    """

    seeds: int = 8
    epochs: int = 30
    checkpoint_every: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    hidden: tuple[int, ...] = (128, 64)
    test_fraction: float = 0.2
    split_seed: int = 0
    coding_rate_weight: float = 0.02
    coding_rate_eps: float = 0.5
    info_spec_beta: float = 1e-3
    info_spec_gamma: float = 0.1
    info_spec_ridge: float = 1e-4
    spectral_lambda: float = 0.01
    spectral_k: float = 2.0
    continual_tasks: int = 10
    continual_epochs: int = 5
    threads: int = 1
    mode: str = "full"

    def __post_init__(self) -> None:
        func = "DemoConfig"
        for name in ("seeds", "epochs", "checkpoint_every", "continual_epochs", "threads"):
            check_positive(getattr(self, name), name, func, integer=True)
        for name, low in (("batch_size", 2), ("continual_tasks", 2)):
            value = getattr(self, name)
            if check_positive(value, name, func, integer=True) < low:
                raise InputError(
                    f"The '{name}' parameter of {func} must be an int >= {low}. "
                    f"Got {shown(value)} instead."
                )
        for name in ("lr", "coding_rate_weight", "coding_rate_eps", "info_spec_ridge"):
            check_positive(getattr(self, name), name, func)
        for name in ("spectral_lambda", "spectral_k"):
            check_positive(getattr(self, name), name, func)
        for name in ("info_spec_beta", "info_spec_gamma"):
            check_positive(getattr(self, name), name, func, allow_zero=True)
        check_probability(self.test_fraction, "test_fraction", func, high_open=True)
        check_choice(self.mode, "mode", func, ("full", "quick"))
        if not self.hidden or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 2 for h in self.hidden
        ):
            raise InputError(
                f"The 'hidden' parameter of {func} must be a non-empty tuple of ints >= 2. "
                f"Got {self.hidden!r} instead."
            )

    @classmethod
    def full(cls, *, seeds: int | None = None) -> DemoConfig:
        """The full experiment (about two minutes on 2 CPU cores): 8 seeds, 30 epochs, 10 tasks."""
        return cls() if seeds is None else cls(seeds=seeds)

    @classmethod
    def quick(cls, *, seeds: int | None = None) -> DemoConfig:
        """The quick run of the test suite: 2 seeds, 4 epochs, 3 tasks of 2 epochs."""
        return cls(
            seeds=2 if seeds is None else seeds,
            epochs=4,
            checkpoint_every=2,
            continual_tasks=3,
            continual_epochs=2,
            mode="quick",
        )

    def coefficients(self) -> dict[str, dict[str, float]]:
        """The regularisation coefficients of each method, as recorded in the summary."""
        return {
            "baseline": {},
            "coding_rate": {"weight": self.coding_rate_weight, "eps": self.coding_rate_eps},
            "info_spec": {
                "beta": self.info_spec_beta,
                "gamma": self.info_spec_gamma,
                "ridge": self.info_spec_ridge,
            },
            "spectral": {"lambda": self.spectral_lambda, "k": self.spectral_k},
        }

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-safe values."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    def checkpoints(self) -> list[int]:
        """Epochs at which the duality runs are measured (0 is the initialisation)."""
        every = list(range(0, self.epochs + 1, self.checkpoint_every))
        return every if every[-1] == self.epochs else [*every, self.epochs]


class DigitsData(NamedTuple):
    """The digits, split and standardised.

    Attributes
    ----------
    X_train, X_test : torch.Tensor, shape (n, 64), float32
        Pixel intensities standardised with the training split's mean and standard
        deviation (constant pixels keep a scale of 1).
    y_train, y_test : torch.Tensor, shape (n,), int64
        Digit labels 0-9.
    """

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split(*, test_fraction: float = 0.2, seed: int = 0) -> DigitsData:
    """Scikit-learn's bundled 8x8 digits (1,797 images, no download), split and standardised.

    The split is stratified: ``round(test_fraction * n_c)`` images of each class ``c``,
    chosen by a generator seeded with ``seed``, form the test set.

    Parameters
    ----------
    test_fraction : float in (0, 1), default 0.2
        Share of each class held out.
    seed : int, default 0
        Seed of the split.

    Returns
    -------
    DigitsData

    Raises
    ------
    InputError
        If scikit-learn is not installed, or ``test_fraction`` is not in (0, 1).

    Examples
    --------
    >>> data = load_digits_split()
    >>> tuple(data.X_train.shape), tuple(data.X_test.shape)
    ((1438, 64), (359, 64))
    >>> [int((data.y_test == c).sum()) for c in range(3)]
    [36, 36, 35]
    """
    test_fraction = check_probability(
        test_fraction, "test_fraction", "load_digits_split", high_open=True
    )
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise InputError(
            "The demo needs scikit-learn for its bundled digits data set: pip install scikit-learn"
        ) from exc
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = round(test_fraction * idx.size)
        test.extend(rng.permutation(idx)[:k].tolist())
    test_mask = np.zeros(y.size, dtype=bool)
    test_mask[test] = True
    X_tr, X_te = X[~test_mask], X[test_mask]
    mean = X_tr.mean(axis=0)
    std = X_tr.std(axis=0)
    std[std == 0] = 1.0
    return DigitsData(
        torch.as_tensor((X_tr - mean) / std, dtype=torch.float32),
        torch.as_tensor(y[~test_mask], dtype=torch.int64),
        torch.as_tensor((X_te - mean) / std, dtype=torch.float32),
        torch.as_tensor(y[test_mask], dtype=torch.int64),
    )


def build_mlp(
    n_in: int = 64, hidden: tuple[int, ...] = (128, 64), n_out: int = 10, *, seed: int = 0
) -> nn.Sequential:
    """The demo's MLP: ``fc1, act1, fc2, act2, ..., head`` (Linear + ReLU, PyTorch's init).

    Examples
    --------
    >>> [name for name, _ in build_mlp().named_children()]
    ['fc1', 'act1', 'fc2', 'act2', 'head']
    """
    # A private copy of the global generator: seeded, and the caller's state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = n_in
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"act{i}"] = nn.ReLU()
            width = h
        layers["head"] = nn.Linear(width, n_out)
        return nn.Sequential(layers)


def layer_map(hidden: tuple[int, ...]) -> dict[str, tuple[str, str]]:
    """Layer label -> (weight parameter, observed module) of :func:`build_mlp`'s model.

    Examples
    --------
    >>> for label, names in layer_map((128, 64)).items():
    ...     print(label, names)
    hidden1 ('fc1.weight', 'act1')
    hidden2 ('fc2.weight', 'act2')
    output ('head.weight', 'head')
    """
    out = {f"hidden{i}": (f"fc{i}.weight", f"act{i}") for i in range(1, len(hidden) + 1)}
    out["output"] = ("head.weight", "head")
    return out


def _features_and_logits(
    model: nn.Sequential, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The penultimate features (input of the head) and the logits, in one pass."""
    children = list(model.children())
    z = x
    for module in children[:-1]:
        z = module(z)
    return z, children[-1](z)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches; a last batch of one row is merged into the one before."""
    perm = torch.randperm(n, generator=gen)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n
        yield perm[s:end]


class _Penalty:
    """The regulariser of one method: ``penalty(features)`` returns the term to add."""

    def __init__(self, method: str, model: nn.Module, config: DemoConfig, seed: int) -> None:
        from ..training import CodingRateLoss, InfoSpecLoss, SpectralRegularizer

        self.method = method
        self._fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._close: Callable[[], None] | None = None
        penultimate = f"act{len(config.hidden)}"
        if method == "coding_rate":
            loss = CodingRateLoss(eps=config.coding_rate_eps, weight=config.coding_rate_weight)
            self._fn = loss
        elif method == "info_spec":
            loss = InfoSpecLoss(
                model,
                beta=config.info_spec_beta,
                gamma=config.info_spec_gamma,
                activation_layers=[penultimate],
                ridge=config.info_spec_ridge,
            )
            self._fn = lambda _z: loss()
            self._close = loss.remove
        elif method == "spectral":
            reg = SpectralRegularizer(model, k=config.spectral_k, seed=seed)
            self._fn = lambda _z: config.spectral_lambda * reg()
        elif method != "baseline":
            raise InputError(f"Unknown demo method {method!r}; choose one of {', '.join(METHODS)}.")

    def __call__(self, features: torch.Tensor) -> torch.Tensor | None:
        return None if self._fn is None else self._fn(features)

    def close(self) -> None:
        if self._close is not None:
            self._close()


def _accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        acc = float((model(X).argmax(dim=1) == y).double().mean())
    model.train(was)
    return acc


def _task_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        loss = float(F.cross_entropy(model(X), y))
    model.train(was)
    return loss


def measure(
    model: nn.Sequential, data: DigitsData, hidden: tuple[int, ...]
) -> list[tuple[str, str, float]]:
    """Per-layer spectral measures and accuracy of the model now: ``(layer, metric, value)``.

    Activation and weight measures come from one call of :func:`infospec.analyze` on the
    whole test split (no fits); ``act_energy`` is the mean of the activation covariance
    eigenvalues that the report keeps.

    Examples
    --------
    >>> data = load_digits_split()
    >>> rows = measure(build_mlp(seed=0), data, (128, 64))
    >>> sorted({metric for _, metric, _ in rows})[:3]
    ['act_coding_rate_bits', 'act_effective_rank', 'act_energy']
    >>> sorted({layer for layer, _, _ in rows})
    ['hidden1', 'hidden2', 'model', 'output']
    """
    from ..analysis import analyze

    layers = layer_map(hidden)
    weight_names = [w for w, _ in layers.values()]
    act_names = [a for _, a in layers.values()]
    report = analyze(
        model,
        [data.X_test],
        layers=[f"^{w}$" for w in weight_names],
        activation_layers=[f"^{a}$" for a in act_names],
        fits=False,
        min_dim=1,
        progress=False,
    )
    weights = {r["name"]: r for r in report.weights}
    acts = {r["name"]: r for r in report.activations}
    rows: list[tuple[str, str, float]] = []
    for label, (w_name, a_name) in layers.items():
        a_rec = acts.get(a_name, {})
        for metric, (column, _) in ACTIVATION_METRICS.items():
            if metric == "act_energy":
                eig = report.spectra.get(f"activations/{a_name}")
                value = float(np.mean(eig)) if eig is not None else float("nan")
            else:
                value = float(a_rec.get(column, float("nan")))
            rows.append((label, metric, value))
        w_rec = weights.get(w_name, {})
        for metric, (column, _) in WEIGHT_METRICS.items():
            rows.append((label, metric, float(w_rec.get(column, float("nan")))))
    rows.append(("model", "test_accuracy", _accuracy(model, data.X_test, data.y_test)))
    rows.append(("model", "train_loss", _task_loss(model, data.X_train, data.y_train)))
    return rows


def train_run(method: str, seed: int, data: DigitsData, config: DemoConfig) -> pd.DataFrame:
    """Train the MLP with one method and seed; measure it at every checkpoint.

    The initialisation depends on ``seed`` only, and so does the batch order: runs of
    different methods with the same seed are paired.

    Returns
    -------
    pandas.DataFrame
        Long format, columns :data:`RESULT_COLUMNS`.

    Raises
    ------
    InputError
        If ``method`` is not one of :data:`METHODS`.
    """
    if method not in METHODS:
        raise InputError(f"Unknown demo method {method!r}; choose one of {', '.join(METHODS)}.")
    model = build_mlp(data.X_train.shape[1], config.hidden, 10, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(10_000 + seed)
    penalty = _Penalty(method, model, config, seed)
    checkpoints = set(config.checkpoints())
    run = f"{method}-s{seed}"
    records: list[tuple[Any, ...]] = []

    def record(epoch: int) -> None:
        for layer, metric, value in measure(model, data, config.hidden):
            records.append((run, seed, method, epoch, layer, metric, value))

    try:
        record(0)  # the initialisation
        model.train()
        for epoch in range(1, config.epochs + 1):
            for idx in _batches(len(data.y_train), config.batch_size, gen):
                features, logits = _features_and_logits(model, data.X_train[idx])
                loss = F.cross_entropy(logits, data.y_train[idx])
                extra = penalty(features)
                if extra is not None:
                    loss = loss + extra
                if not torch.isfinite(loss):
                    raise InputError(
                        f"The {method} run (seed {seed}) diverged at epoch {epoch}: the loss "
                        f"is {float(loss)}. Lower the learning rate or the coefficient."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if epoch in checkpoints:
                record(epoch)
    finally:
        penalty.close()
    return pd.DataFrame.from_records(records, columns=list(RESULT_COLUMNS))


def run_grid(
    run: Callable[[str, int], Any],
    methods: Sequence[str],
    seeds: int,
    *,
    label: str = "",
    tick: Callable[[str], None] | None = None,
) -> tuple[list[Any], dict[str, float]]:
    """``run(method, seed)`` for every seed and method, seed-major; the results in order
    and the seconds spent per method. ``tick(description)`` follows each run (for a
    progress bar)."""
    results = []
    seconds = dict.fromkeys(methods, 0.0)
    for seed in range(seeds):
        for method in methods:
            t0 = time.perf_counter()
            results.append(run(method, seed))
            seconds[method] += time.perf_counter() - t0
            if tick is not None:
                tick(f"{label}{method} seed {seed}")
    return results, seconds


def run_duality(
    config: DemoConfig, data: DigitsData, *, tick: Callable[[str], None] | None = None
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Every method for every seed; returns the long table and seconds spent per method.

    ``tick(description)`` is called after each run (for a progress bar).
    """
    frames, seconds = run_grid(
        lambda method, seed: train_run(method, seed, data, config),
        METHODS,
        config.seeds,
        tick=tick,
    )
    return pd.concat(frames, ignore_index=True), seconds
