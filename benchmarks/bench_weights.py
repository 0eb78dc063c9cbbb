"""infospec's weight report against WeightWatcher 0.7.7, on the same matrices, in one run.

For each model it times, on this machine:

* ``floor``: the bare float64 eigendecompositions of the same matrices (each tensor upcast
  to float64, Gram matrix on the smaller side, ``torch.linalg.eigvalsh``): the least any
  exact spectral report must do;
* ``infospec``: :func:`infospec.analyze` on the model, every measure and fit (weights only);
* ``ww``: ``WeightWatcher(model).analyze()`` with its defaults (power-law fit per layer);
* ``ww_mp``: ``analyze(mp_fit=True)``, the metric set comparable with infospec's (it adds
  the Marchenko-Pastur fit).

and prints the times, the ratios, and how many layers' alphas agree within 2 %.

Models: (a) MiniLM-L6 (the built-in example), (b) a randomly initialised BERT-base-shaped
model (transformers ``BertModel(BertConfig())``, seeded). The layer set is the one
WeightWatcher analyses (its ``longname`` column); infospec is given exactly those tensors.

Usage::

    pip install torch==2.13.0 && pip install -e ".[bench]"
    python benchmarks/bench_weights.py [--models minilm bert-base] [--threads N] [--repeat R]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
import torch


def _minilm():
    from infospec.example import load_minilm

    model, _ = load_minilm()
    return model


def _bert_base():
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    return BertModel(BertConfig()).eval()


MODELS = {"minilm": _minilm, "bert-base": _bert_base}


def _best(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _floor(model, names):
    params = dict(model.named_parameters())

    def run():
        for n in names:
            w = params[n].detach().to(torch.float64)
            w = w.reshape(w.shape[0], -1)
            g = w.mT @ w if w.shape[1] <= w.shape[0] else w @ w.mT
            torch.linalg.eigvalsh(g)

    return run


def bench(name, repeat):
    import weightwatcher as ww

    import infospec

    model = MODELS[name]()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    watcher = ww.WeightWatcher(model=model)
    t_ww, details = _best(lambda: watcher.analyze(), repeat)
    t_ww_mp, _ = _best(lambda: watcher.analyze(mp_fit=True), 1)
    names = [f"{n}.weight" for n in details["longname"]]
    t_floor, _ = _best(_floor(model, names), repeat)
    t_is, report = _best(lambda: infospec.analyze(model, layers=names, progress=False), repeat)
    df = report.to_dataframe().set_index("name")
    ours = df.loc[names, "alpha"].to_numpy(float)
    theirs = details["alpha"].to_numpy(float)
    rel = np.abs(ours - theirs) / np.abs(theirs)
    return {
        "model": name,
        "layers": len(names),
        "floor_s": t_floor,
        "infospec_s": t_is,
        "ww_s": t_ww,
        "ww_mp_s": t_ww_mp,
        "alpha_within_2pct": float(np.mean(rel <= 0.02)),
        "alpha_median_rel_diff": float(np.median(rel)),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    ap.add_argument("--repeat", type=int, default=2, help="best of R runs (default 2)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rows = [bench(m, args.repeat) for m in args.models]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeat}")
    hdr = (
        f"{'model':<10} {'layers':>6} {'floor s':>8} {'infospec s':>10} {'ww s':>8} "
        f"{'ww mp s':>8} {'ww/is':>6} {'ww_mp/is':>8} {'is/floor':>8} {'alpha<=2%':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['model']:<10} {r['layers']:>6} {r['floor_s']:>8.3f} {r['infospec_s']:>10.3f} "
            f"{r['ww_s']:>8.2f} {r['ww_mp_s']:>8.2f} {r['ww_s'] / r['infospec_s']:>6.1f} "
            f"{r['ww_mp_s'] / r['infospec_s']:>8.1f} {r['infospec_s'] / r['floor_s']:>8.2f} "
            f"{100 * r['alpha_within_2pct']:>8.0f}%"
        )


if __name__ == "__main__":
    main()
