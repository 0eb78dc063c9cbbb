r"""Statistics of the demo: correlations and effect sizes with confidence intervals over seeds.

The unit of replication is the seed: one seed is one initialisation and one batch order,
shared by every method. Every statistic is therefore computed **per seed** first, and its
confidence interval is a Student-t interval across the seeds' values:

* a correlation: Spearman's :math:`\rho` between two metrics over the points of one seed
  (every method at every checkpoint); the seeds' values are averaged and the t-interval is
  clipped to :math:`[-1, 1]` (a plain average rather than one on Fisher's z, which a seed
  with :math:`\rho = \pm 1`, common over a dozen points, would send to infinity);
* an effect size: the paired difference (method minus baseline, same seed) of a metric at
  the last epoch, with its t-interval and the standardised mean difference
  :math:`d_z = \bar\Delta / s_\Delta`;
* an accuracy: the mean over seeds with its t-interval clipped to :math:`[0, 1]`.

With one seed there is no interval: its bounds are NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from .continual import CONTINUAL_ARMS
from .experiment import METHODS

__all__ = [
    "CORRELATION_PAIRS",
    "EFFECT_METRICS",
    "Interval",
    "continual_statistics",
    "correlation_interval",
    "duality_statistics",
    "mean_interval",
]

#: Metric pairs whose correlation tests "flatten the spectrum and you compress the signal":
#: (x, y, what it tests). The seed's claim predicts a negative correlation for each.
CORRELATION_PAIRS: tuple[tuple[str, str, str], ...] = (
    (
        "act_flatness",
        "act_coding_rate_bits",
        "activation flatness vs coding rate at fixed (unit) energy",
    ),
    (
        "act_flatness",
        "act_entropy_bits_per_dim",
        "activation flatness vs Gaussian entropy (energy free to change)",
    ),
    ("act_flatness", "act_energy", "activation flatness vs the features' energy"),
    (
        "weight_flatness",
        "act_coding_rate_bits",
        "weight flatness vs the coding rate of the layer's output",
    ),
)

#: Metrics compared between methods at the last epoch.
EFFECT_METRICS: tuple[str, ...] = (
    "act_flatness",
    "act_effective_rank",
    "act_coding_rate_bits",
    "act_entropy_bits_per_dim",
    "act_energy",
    "weight_flatness",
    "weight_log_sigma_var",
    "weight_sigma_max",
)


class Interval(NamedTuple):
    """A statistic over seeds with its confidence interval.

    Attributes
    ----------
    value : float
        The mean over seeds.
    lo, hi : float
        Bounds of the two-sided t-interval at the chosen level (clipped to the quantity's
        range where it has one); NaN with fewer than 2 seeds.
    n : int
        Seeds with a finite value.
    per_seed : tuple of float
        The seeds' values, in seed order (NaN where undefined).
    """

    value: float
    lo: float
    hi: float
    n: int
    per_seed: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None."""
        return {
            "value": _json(self.value),
            "lo": _json(self.lo),
            "hi": _json(self.hi),
            "n": self.n,
            "per_seed": [_json(v) for v in self.per_seed],
        }


def _json(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def mean_interval(
    values: Sequence[float], *, level: float = 0.95, bounds: tuple[float, float] | None = None
) -> Interval:
    r"""Mean and Student-t interval :math:`\bar x \pm t_{(1+\ell)/2,\,n-1}\, s/\sqrt n`.

    Non-finite values are left out (and counted out of ``n``). With ``bounds`` the interval
    is clipped to the range the quantity can take (a correlation, an accuracy).

    Examples
    --------
    >>> iv = mean_interval([1.0, 2.0, 3.0])
    >>> round(iv.value, 3), round(iv.lo, 3), round(iv.hi, 3), iv.n
    (2.0, -0.484, 4.484, 3)
    >>> mean_interval([0.9, 0.99], bounds=(0.0, 1.0)).hi
    1.0
    """
    per_seed = tuple(float(v) for v in values)
    x = np.array([v for v in per_seed if math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, per_seed)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, per_seed)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return Interval(mean, lo, hi, n, per_seed)


def correlation_interval(rs: Sequence[float], *, level: float = 0.95) -> Interval:
    """Mean correlation over seeds with its t-interval clipped to [-1, 1].

    Examples
    --------
    >>> iv = correlation_interval([0.8, 0.9, 1.0])
    >>> round(iv.value, 3), round(iv.lo, 3), iv.hi
    (0.9, 0.652, 1.0)
    """
    return mean_interval(rs, level=level, bounds=(-1.0, 1.0))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(sps.spearmanr(x[ok], y[ok]).statistic)


def _wide(results: pd.DataFrame, layer: str) -> pd.DataFrame:
    """One layer's metrics as columns, one row per (seed, method, epoch)."""
    sub = results[results["layer"] == layer]
    return sub.pivot_table(
        index=["seed", "method", "epoch"], columns="metric", values="value", aggfunc="first"
    )


def duality_statistics(results: pd.DataFrame, *, level: float = 0.95) -> dict[str, Any]:
    """Accuracies, correlations (direction a) and effect sizes (direction b) of the experiment.

    Parameters
    ----------
    results : pandas.DataFrame
        The long table of :func:`~infospec.demo.experiment.run_duality`.
    level : float, default 0.95
        Confidence level of the intervals.

    Returns
    -------
    dict
        ``"accuracy"``: method -> :class:`Interval` of the final test accuracy;
        ``"correlations"``: list of dicts (``x``, ``y``, ``tests``, ``layer``, ``interval``),
        one per pair of :data:`CORRELATION_PAIRS` and layer, plus the layer ``"all"``
        (per seed, the mean of the layers' correlations);
        ``"effects"``: list of dicts (``method``, ``layer``, ``metric``, ``interval`` of
        the paired difference, ``dz``, ``baseline``, ``treated``) at the last epoch.
    """
    layers = [x for x in results["layer"].unique() if x != "model"]
    seeds = sorted(results["seed"].unique())
    last = int(results["epoch"].max())
    final = results[results["epoch"] == last]

    accuracy = {}
    acc = final[final["metric"] == "test_accuracy"]
    for method in METHODS:
        vals = acc[acc["method"] == method].sort_values("seed")["value"].tolist()
        accuracy[method] = mean_interval(vals, level=level, bounds=(0.0, 1.0))

    correlations = []
    wides = {layer: _wide(results, layer) for layer in layers}
    for x, y, tests in CORRELATION_PAIRS:
        per_layer: dict[str, list[float]] = {}
        for layer in layers:
            w = wides[layer]
            rs = []
            for seed in seeds:
                ws = w.xs(seed, level="seed")
                rs.append(_spearman(ws[x].to_numpy(float), ws[y].to_numpy(float)))
            per_layer[layer] = rs
            correlations.append(
                {
                    "x": x,
                    "y": y,
                    "tests": tests,
                    "layer": layer,
                    "interval": correlation_interval(rs, level=level),
                }
            )
        # all layers: per seed, the mean of its layers' correlations
        pooled = []
        for i in range(len(seeds)):
            rs = [per_layer[layer][i] for layer in layers if math.isfinite(per_layer[layer][i])]
            pooled.append(float(np.mean(rs)) if rs else math.nan)
        correlations.append(
            {
                "x": x,
                "y": y,
                "tests": tests,
                "layer": "all",
                "interval": correlation_interval(pooled, level=level),
            }
        )

    effects = []
    table = final.pivot_table(
        index=["layer", "metric", "seed"], columns="method", values="value", aggfunc="first"
    )
    for method in METHODS[1:]:
        for layer in [*layers, "model"]:
            metrics = ("test_accuracy",) if layer == "model" else EFFECT_METRICS
            for metric in metrics:
                if (layer, metric) not in table.index.droplevel("seed"):
                    continue
                block = table.loc[(layer, metric)].reindex(seeds)
                diff = (block[method] - block["baseline"]).to_numpy(float)
                iv = mean_interval(diff, level=level)
                finite = diff[np.isfinite(diff)]
                sd = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
                dz = iv.value / sd if sd and math.isfinite(sd) and sd > 0 else math.nan
                effects.append(
                    {
                        "method": method,
                        "layer": layer,
                        "metric": metric,
                        "interval": iv,
                        "dz": dz,
                        "baseline": float(np.nanmean(block["baseline"].to_numpy(float))),
                        "treated": float(np.nanmean(block[method].to_numpy(float))),
                    }
                )
    return {
        "level": level,
        "seeds": len(seeds),
        "last_epoch": last,
        "accuracy": accuracy,
        "correlations": correlations,
        "effects": effects,
    }


def continual_statistics(table: pd.DataFrame, *, level: float = 0.95) -> dict[str, Any]:
    """Plasticity and forgetting of the continual check, with intervals over seeds.

    Returns
    -------
    dict
        ``"new_task_accuracy"``: arm -> list over tasks of :class:`Interval` of
        :math:`A[t, t]`; ``"plasticity_slope"``: arm -> :class:`Interval` of the
        least-squares slope of :math:`A[t, t]` over :math:`t` (accuracy per task; a
        progressive loss of plasticity makes it negative), the verdict's statistic;
        ``"plasticity_change"``: arm -> :class:`Interval` of the mean over tasks 2..T of
        :math:`A[t, t] - A[1, 1]`; ``"spectral_minus_baseline"``:
        :class:`Interval` of the mean over tasks 2..T of the arms' difference in
        :math:`A[t, t]`, and ``"spectral_minus_baseline_task1"`` the same on task 1 alone
        (a fresh network, the reference); ``"first_task_end"``: arm -> :class:`Interval`
        of :math:`A[T, 1]`;
        ``"sigma_max_end"``: arm -> :class:`Interval` of the mean largest singular value
        after the last task.
    """
    seeds = sorted(table["seed"].unique())
    n_tasks = int(table["trained_task"].max())
    diag = table[table["trained_task"] == table["eval_task"]]
    piv = diag.pivot_table(
        index=["method", "seed"], columns="trained_task", values="accuracy", aggfunc="first"
    )
    out: dict[str, Any] = {
        "level": level,
        "seeds": len(seeds),
        "tasks": n_tasks,
        "new_task_accuracy": {},
        "plasticity_slope": {},
        "plasticity_change": {},
        "first_task_end": {},
        "sigma_max_end": {},
    }
    later = list(range(2, n_tasks + 1))
    for arm in CONTINUAL_ARMS:
        a = piv.loc[arm].reindex(seeds)
        out["new_task_accuracy"][arm] = [
            mean_interval(a[t].tolist(), level=level, bounds=(0.0, 1.0))
            for t in range(1, n_tasks + 1)
        ]
        t = np.arange(1, n_tasks + 1, dtype=np.float64)
        slopes = [
            float(np.polyfit(t, row, 1)[0]) for row in a[list(range(1, n_tasks + 1))].to_numpy()
        ]
        out["plasticity_slope"][arm] = mean_interval(slopes, level=level)
        change = (a[later].mean(axis=1) - a[1]).tolist()
        out["plasticity_change"][arm] = mean_interval(change, level=level)
        end = table[(table["method"] == arm) & (table["trained_task"] == n_tasks)]
        first = end[end["eval_task"] == 1].set_index("seed").reindex(seeds)
        out["first_task_end"][arm] = mean_interval(
            first["accuracy"].tolist(), level=level, bounds=(0.0, 1.0)
        )
        out["sigma_max_end"][arm] = mean_interval(first["sigma_max_mean"].tolist(), level=level)
    b = piv.loc["baseline"].reindex(seeds)[later].mean(axis=1)
    s = piv.loc["spectral"].reindex(seeds)[later].mean(axis=1)
    out["spectral_minus_baseline"] = mean_interval((s - b).tolist(), level=level)
    b1 = piv.loc["baseline"].reindex(seeds)[1]
    s1 = piv.loc["spectral"].reindex(seeds)[1]
    out["spectral_minus_baseline_task1"] = mean_interval((s1 - b1).tolist(), level=level)
    return out
