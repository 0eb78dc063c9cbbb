"""infospec's weight report against WeightWatcher 0.7.7, on the same matrices, interleaved.

Honest by construction: in each configuration every contender runs once per round, in an
order rotated from round to round (so no contender always runs first, on a cold cache, or
last, on a hot machine); each contender's figure is the **median of the rounds** with the
spread (min-max) beside it; every run is timed, ``mp_fit=True`` included; wall time and
the process's CPU time (all threads) are both printed; the load average is printed before
and after each configuration.

Contenders, on the layers WeightWatcher analyses (its ``longname`` column; infospec is
given exactly those tensors):

* ``floor seq``: the bare float64 eigendecompositions of the same matrices, one after
  another (each tensor upcast to float64, the Gram matrix on the smaller side by a general
  matrix multiply, ``torch.linalg.eigvalsh``): the least any exact spectral report must do;
* ``floor pool``: the same work on infospec's own CPU worker schedule (``workers`` threads
  of one intra-op thread each, :func:`infospec.analysis.stages._map_in_order`), the floor
  that ``analyze``'s scheduling alone would reach;
* ``infospec``: :func:`infospec.analyze`, every measure and fit (weights only);
* ``infospec w1`` (``default`` only): the same with ``workers=1``, the calling thread
  with torch's and every BLAS pool's default threads;
* ``ww``: ``WeightWatcher(model).analyze()`` with its defaults (a power-law fit per layer);
* ``ww mp``: ``analyze(mp_fit=True)``, the metric set comparable with infospec's (it adds
  the Marchenko-Pastur fit); ``--no-mp-fit`` leaves it out.

Configurations (``--threads``): ``1`` pins **every** library to one thread: torch
(``torch.set_num_threads``) and every BLAS/OpenMP pool in the process through
``threadpoolctl`` (torch's setting does not reach SciPy's or NumPy's OpenBLAS, which
WeightWatcher and the fits use), and ``analyze(workers=1)``. ``default`` leaves every
library at its own default (infospec's default worker pool).

Models: MiniLM-L6 (the built-in example) and a randomly initialised BERT-base-shaped model
(transformers ``BertModel(BertConfig())``, seeded).

Usage::

    pip install torch==2.13.0 && pip install -e ".[bench]"
    python benchmarks/bench_weights.py [--models minilm bert-base] [--threads 1 default]
                                       [--rounds 3] [--no-mp-fit]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from threadpoolctl import threadpool_limits


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


def _eig_floor(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().to(torch.float64)
    w = w.reshape(w.shape[0], -1)
    g = w.mT @ w if w.shape[1] <= w.shape[0] else w @ w.mT
    return torch.linalg.eigvalsh(g)


def _floors(model, names, workers):
    from infospec.analysis.stages import _map_in_order

    params = dict(model.named_parameters())
    tensors = [params[n] for n in names]

    def seq():
        for w in tensors:
            _eig_floor(w)

    def pool():
        list(
            _map_in_order(_eig_floor, lambda w, lam: None, tensors, workers=workers, pipeline=False)
        )

    return seq, pool


@contextmanager
def _threads(setting: str):
    """Every library on one thread (``"1"``), or every library at its default."""
    before = torch.get_num_threads()
    if setting == "1":
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            yield
    else:
        yield
    torch.set_num_threads(before)


def _run(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def bench(name: str, setting: str, rounds: int, mp_fit: bool) -> dict:
    import weightwatcher as ww

    import infospec
    from infospec.analysis.stages import _resolve_workers

    model = MODELS[name]()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    watcher = ww.WeightWatcher(model=model)
    with _threads(setting):
        details = watcher.analyze()  # the layer set (untimed warm-up of WeightWatcher too)
        names = [f"{n}.weight" for n in details["longname"]]
        workers = 1 if setting == "1" else _resolve_workers(None, len(names))
        seq, pool = _floors(model, names, workers)
        contenders = {
            "floor seq": seq,
            "floor pool": pool,
            "infospec": lambda: infospec.analyze(
                model, layers=names, progress=False, workers=workers
            ),
            "ww": lambda: watcher.analyze(),
        }
        if setting == "default":
            # one worker with every library at its defaults (torch's intra-op threads)
            contenders["infospec w1"] = lambda: infospec.analyze(
                model, layers=names, progress=False, workers=1
            )
        if mp_fit:
            contenders["ww mp"] = lambda: watcher.analyze(mp_fit=True)
        infospec.analyze(model, layers=names, progress=False, workers=workers)  # warm-up
        load_before = _load()
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
        order = list(contenders)
        report = None
        for r in range(rounds):
            for key in order[r % len(order) :] + order[: r % len(order)]:
                wall, cpu, out = _run(contenders[key])
                times[key].append((wall, cpu))
                if key == "infospec":
                    report = out
        load_after = _load()
    df = report.to_dataframe().set_index("name")
    ours = df.loc[names, "alpha"].to_numpy(float)
    theirs = details["alpha"].to_numpy(float)
    rel = np.abs(ours - theirs) / np.abs(theirs)
    routes = df.loc[names, "spectrum_method"].value_counts().to_dict()
    return {
        "model": name,
        "threads": setting,
        "workers": workers,
        "layers": len(names),
        "times": times,
        "load": (load_before, load_after),
        "alpha_within_2pct": float(np.mean(rel <= 0.02)),
        "alpha_max_rel_diff": float(np.max(rel)),
        "routes": routes,
    }


def _median(samples, i=0) -> float:
    return statistics.median(s[i] for s in samples)


def _spread(samples) -> str:
    walls = [s[0] for s in samples]
    return f"{min(walls):.3g}-{max(walls):.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", nargs="+", default=["1", "default"], choices=["1", "default"])
    ap.add_argument("--rounds", type=int, default=3, help="rounds, median taken (default 3)")
    ap.add_argument("--no-mp-fit", dest="mp_fit", action="store_false", help="skip ww mp")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    warnings.filterwarnings("ignore")
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch default threads "
        f"{torch.get_num_threads()}; median of {args.rounds} interleaved rounds"
    )
    for model in args.models:
        for setting in args.threads:
            row = bench(model, setting, args.rounds, args.mp_fit)
            t = row["times"]
            print(
                f"\n{model}, threads {setting} (infospec workers {row['workers']}), "
                f"{row['layers']} layers; load average before {row['load'][0]}, "
                f"after {row['load'][1]}; routes {row['routes']}; alpha within 2 % of WW on "
                f"{100 * row['alpha_within_2pct']:.0f} % (max rel. diff. "
                f"{row['alpha_max_rel_diff']:.1e})"
            )
            print("| contender | wall s (median) | spread | CPU s (median) | wall / infospec |")
            print("|---|---|---|---|---|")
            ref = _median(t["infospec"])
            for key, samples in t.items():
                print(
                    f"| {key} | {_median(samples):.3f} | {_spread(samples)} | "
                    f"{_median(samples, 1):.3f} | {_median(samples) / ref:.2f} |"
                )
            print(
                f"infospec / floor pool {ref / _median(t['floor pool']):.2f}, "
                f"infospec / floor seq {ref / _median(t['floor seq']):.2f}, "
                f"ww / infospec {_median(t['ww']) / ref:.2f}"
                + (f", ww mp / infospec {_median(t['ww mp']) / ref:.1f}" if "ww mp" in t else "")
            )


if __name__ == "__main__":
    main()
