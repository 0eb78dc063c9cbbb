"""``run_demo``: the duality experiment and the continual check, end to end, into a folder."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from .._errors import InputError
from .._io import atomic_write
from .._progress import progress_bar
from .._validation import check_positive
from .continual import run_continual
from .experiment import METHODS, DemoConfig, layer_map, load_digits_split, run_duality
from .reading import continual_reading, duality_reading
from .report import make_figures, metric_meanings, render_demo_html
from .stats import continual_statistics, duality_statistics

__all__ = ["DemoResult", "run_demo"]


class DemoResult(NamedTuple):
    """What :func:`run_demo` measured and wrote.

    Attributes
    ----------
    out_dir : pathlib.Path
        The folder holding the files.
    results : pandas.DataFrame
        The duality experiment in long format (``results.csv``).
    continual : pandas.DataFrame
        The continual check's accuracy matrix in long format (``continual.csv``).
    summary : dict
        The contents of ``summary.json``.
    files : list of pathlib.Path
        Every file written.
    """

    out_dir: Path
    results: pd.DataFrame
    continual: pd.DataFrame
    summary: dict[str, Any]
    files: list[Path]


def _out_dir(out: str | os.PathLike) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"The 'out' parameter of run_demo names '{path}', which is a file, not a folder. "
            f"Give a folder (it is created if missing)."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"The 'out' parameter of run_demo names '{path}', which cannot be created: "
            f"{exc.strerror or exc}. Give a writable folder."
        ) from exc
    return path


def write_experiment_files(
    folder: Path, results: Any, summary: dict[str, Any], figure_name: str, figure: Any
) -> None:
    """``results.csv``, ``summary.json`` and one matplotlib figure as PNG, each atomically."""
    import json

    from .._io import atomic_write

    with atomic_write(folder / "results.csv") as fh:
        results.to_csv(fh, index=False)
    with atomic_write(folder / "summary.json") as fh:
        json.dump(_json_safe(summary), fh, indent=2)
    with atomic_write(folder / figure_name, "wb", encoding=None) as fh:
        figure.savefig(fh, format="png")


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, Interval -> dict, recursively."""
    if hasattr(value, "to_dict") and hasattr(value, "per_seed"):
        return value.to_dict()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if np.isfinite(v) else None
    return value


def _versions() -> dict[str, str]:
    from .. import __version__

    out = {
        "infospec": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
    }
    for name in ("sklearn", "scipy", "matplotlib"):
        try:
            module = __import__(name)
            out[name if name != "sklearn" else "scikit-learn"] = module.__version__
        except ImportError:  # pragma: no cover - optional
            pass
    return out


def run_demo(
    out: str | os.PathLike = "infospec-demo",
    *,
    quick: bool = False,
    seeds: int | None = None,
    progress: bool | None = None,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Run the duality experiment and the continual-learning check; write every output file.

    Trains the same MLP on scikit-learn's digits four ways (no regulariser, SimDINO's
    coding-rate expansion, seed 001's info-spec loss, the spectral regulariser of Lewandowski
    et al.), measures each layer with :func:`infospec.analyze` at checkpoints, tests both
    directions of seed 001's "flatten the spectrum and you compress the signal; compress the
    signal and you flatten its spectrum" with intervals over seeds, and runs a sequence of
    permuted-pixel tasks with and without the spectral regulariser. See
    :mod:`infospec.demo.experiment`, :mod:`~infospec.demo.continual` and
    :mod:`~infospec.demo.stats` for the details.

    Files written to ``out`` (each atomically): ``results.csv`` (long format: run, seed,
    method, epoch, layer, metric, value), ``continual.csv``, ``summary.json`` (accuracies,
    correlations and effects with intervals, coefficients, timings, versions and the
    reading), ``report.html`` (one self-contained page) and the figures ``fig_*.png``.

    Parameters
    ----------
    out : str or path, default "infospec-demo"
        Output folder, created if missing.
    quick : bool, default False
        The quick settings of :meth:`DemoConfig.quick` (well under a minute) instead of
        :meth:`DemoConfig.full` (a few minutes on 2 CPU cores).
    seeds : int > 0, optional
        Number of seeds, overriding the mode's default (full 8, quick 2).
    progress : bool, optional
        A progress bar on stderr; default when stderr is a terminal.
    config : DemoConfig, optional
        Every setting at once (then ``quick`` and ``seeds`` must be left at their defaults).

    Returns
    -------
    DemoResult

    Raises
    ------
    InputError
        If ``seeds`` is not a positive int, ``out`` is a file or cannot be created, both
        ``config`` and ``quick``/``seeds`` are given, or scikit-learn is missing.

    References
    ----------
    Seed 001 of this project (the claim and the info-spec loss). Z. Wu et al., "Simplifying
    DINO via coding rate regularization", arXiv:2502.10385, 2025. A. Lewandowski et al.,
    "Learning Continually by Spectral Regularization", ICLR 2025, arXiv:2406.06811.

    Examples
    --------
    >>> from infospec.demo import run_demo
    >>> result = run_demo("demo-out", quick=True)  # doctest: +SKIP
    >>> result.summary["accuracy"]["baseline"]["value"] > 0.5  # doctest: +SKIP
    True
    >>> print(result.summary["reading"]["duality"][-1])  # doctest: +SKIP
    In short, on this data and at these coefficients, ...
    """
    func = "run_demo"
    if seeds is not None:
        seeds = check_positive(seeds, "seeds", func, integer=True)
    if config is not None:
        if not isinstance(config, DemoConfig):
            raise InputError(
                f"The 'config' parameter of {func} must be a DemoConfig. "
                f"Got {type(config).__name__} instead."
            )
        if quick or seeds is not None:
            raise InputError(
                f"{func}: give either 'config' or 'quick'/'seeds', not both; set the seeds "
                f"in the DemoConfig."
            )
    else:
        config = DemoConfig.quick(seeds=seeds) if quick else DemoConfig.full(seeds=seeds)
    out_dir = _out_dir(out)

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    t_start = time.perf_counter()
    bar = progress_bar(
        total=config.seeds * (len(METHODS) + 2),
        desc="infospec demo",
        unit="run",
        enabled=progress,
        leave=True,
    )

    def tick(desc: str) -> None:
        if bar is not None:
            bar.set_postfix_str(desc, refresh=False)
            bar.update(1)

    tick_fn: Callable[[str], None] | None = tick if bar is not None else None
    try:
        data = load_digits_split(test_fraction=config.test_fraction, seed=config.split_seed)
        t0 = time.perf_counter()
        results, duality_seconds = run_duality(config, data, tick=tick_fn)
        t1 = time.perf_counter()
        continual, continual_seconds = run_continual(config, data, tick=tick_fn)
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()

    dstats = duality_statistics(results)
    cstats = continual_statistics(continual)
    features_layer = f"hidden{len(config.hidden)}"
    reading = {
        "duality": duality_reading(dstats, features_layer=features_layer),
        "continual": continual_reading(cstats, epochs_per_task=config.continual_epochs),
    }
    t3 = time.perf_counter()
    pngs = make_figures(results, dstats, continual, cstats)
    t4 = time.perf_counter()

    widths = [data.X_train.shape[1], *config.hidden, 10]
    files = {
        "results.csv": "the duality experiment, long format (run, seed, method, epoch, "
        "layer, metric, value)",
        "continual.csv": "the continual check: accuracy on every task after each task",
        "summary.json": "accuracies, correlations and effects with intervals, coefficients, "
        "timings, versions and the reading",
        "report.html": "this page",
        **{name: "figure (also embedded in report.html)" for name in pngs},
    }
    summary: dict[str, Any] = {
        "mode": config.mode,
        "claim": "flatten the spectrum and you compress the signal; compress the signal and "
        "you flatten its spectrum (seed 001)",
        "config": config.to_dict(),
        "coefficients": config.coefficients(),
        "data": {
            "name": "scikit-learn digits (8x8 images, 10 classes, bundled)",
            "train": len(data.y_train),
            "test": len(data.y_test),
            "features": data.X_train.shape[1],
            "standardisation": "each pixel standardised with the training split's mean and "
            "standard deviation",
        },
        "model": {
            "widths": widths,
            "description": "MLP " + "-".join(str(w) for w in widths) + ", ReLU, PyTorch init",
            "observed": "per layer: the output after the ReLU (logits for the last layer) "
            "and the weight matrix",
            "layers": {
                k: {"weight": w, "activation": a} for k, (w, a) in layer_map(config.hidden).items()
            },
            "regularised_features": features_layer,
        },
        "checkpoints": config.checkpoints(),
        "metrics": metric_meanings(),
        "accuracy": dstats["accuracy"],
        "correlations": [
            {k: v for k, v in c.items() if k != "interval"}
            | c["interval"].to_dict()
            | {"claim_predicts": "negative"}
            for c in dstats["correlations"]
        ],
        "effects": [
            {k: v for k, v in e.items() if k != "interval"} | e["interval"].to_dict()
            for e in dstats["effects"]
        ],
        "continual": cstats,
        "reading": reading,
        "timings": {
            "total_seconds": time.perf_counter() - t_start,
            "duality_seconds": t1 - t0,
            "continual_seconds": t2 - t1,
            "figures_seconds": t4 - t3,
            **{f"duality_{m}_seconds": s for m, s in duality_seconds.items()},
            **{f"continual_{m}_seconds": s for m, s in continual_seconds.items()},
        },
        "versions": _versions(),
        "files": files,
    }
    summary = _json_safe(summary)
    html = render_demo_html(summary, dstats, cstats, pngs)
    summary["timings"]["total_seconds"] = time.perf_counter() - t_start

    written = []
    with atomic_write(out_dir / "results.csv") as fh:
        results.to_csv(fh, index=False)
    written.append(out_dir / "results.csv")
    with atomic_write(out_dir / "continual.csv") as fh:
        continual.to_csv(fh, index=False)
    written.append(out_dir / "continual.csv")
    for name, png in pngs.items():
        with atomic_write(out_dir / name, "wb") as fh:
            fh.write(png)
        written.append(out_dir / name)
    with atomic_write(out_dir / "report.html") as fh:
        fh.write(html)
    written.append(out_dir / "report.html")
    with atomic_write(out_dir / "summary.json") as fh:
        fh.write(json.dumps(summary, indent=1, allow_nan=False, ensure_ascii=False) + "\n")
    written.append(out_dir / "summary.json")
    return DemoResult(out_dir, results, continual, summary, written)
