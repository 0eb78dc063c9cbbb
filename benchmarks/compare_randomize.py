"""``analyze(randomize=True)`` against WeightWatcher 0.7.7's ``analyze(randomize=True)`` on MiniLM.

Same model (the built-in MiniLM-L6), same layers (those in WeightWatcher's ``longname``
column), same definitions (``rand_distance``: Jensen-Shannon distance of the sorted ESDs;
``num_traps``: spikes of the shuffled ESD above its Marchenko-Pastur edge; ``max_rand_eval``
vs ``rand_max_eval``). The shuffles differ (each library draws its own permutation), so
the per-layer values are compared as two draws of the same statistic: ``rand_distance``
and ``max_rand_eval`` should agree to within the shuffle's spread (a second infospec seed
gives that spread), and the trap counts should agree on most layers. Prints both
libraries' wall times and their ratio. Usage::

    pip install -e ".[bench]"
    python benchmarks/compare_randomize.py
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np


def main() -> None:
    import weightwatcher as ww

    import infospec
    from infospec.example import load_minilm

    warnings.filterwarnings("ignore")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    model, _ = load_minilm()
    watcher = ww.WeightWatcher(model=model)
    t0 = time.perf_counter()
    theirs = watcher.analyze(randomize=True)
    t_ww = time.perf_counter() - t0
    names = [f"{n}.weight" for n in theirs["longname"]]
    t0 = time.perf_counter()
    ours = infospec.analyze(model, layers=names, randomize=0, progress=False)
    t_is = time.perf_counter() - t0
    other = infospec.analyze(model, layers=names, randomize=1, progress=False)
    a = ours.to_dataframe().set_index("name").loc[names]
    b = other.to_dataframe().set_index("name").loc[names]
    rd_ww = theirs["rand_distance"].to_numpy(float)
    rd_is, rd_is2 = a["rand_distance"].to_numpy(float), b["rand_distance"].to_numpy(float)
    mx_ww = theirs["max_rand_eval"].to_numpy(float)
    mx_is = a["rand_max_eval"].to_numpy(float)
    traps_ww = theirs["num_traps"].to_numpy(float)
    traps_is = a["num_traps"].to_numpy(float)
    print(f"MiniLM-L6, {len(names)} layers (WeightWatcher's set)")
    print(f"WeightWatcher 0.7.7 analyze(randomize=True): {t_ww:.1f} s")
    print(
        f"infospec analyze(randomize=True):            {t_is:.1f} s; "
        f"WeightWatcher / infospec = {t_ww / t_is:.2f}"
    )
    print(
        f"rand_distance: median |infospec - WW| = {np.median(np.abs(rd_is - rd_ww)):.4f}; "
        f"median |seed 0 - seed 1| (infospec's own shuffle spread) = "
        f"{np.median(np.abs(rd_is - rd_is2)):.4f}; medians WW {np.median(rd_ww):.4f}, "
        f"infospec {np.median(rd_is):.4f}"
    )
    print(
        f"max_rand_eval: median relative difference {np.median(np.abs(mx_is - mx_ww) / mx_ww):.4f}"
    )
    print(
        f"num_traps: equal on {int(np.sum(traps_is == traps_ww))} of {len(names)} layers; "
        f"totals WW {int(np.nansum(traps_ww))}, infospec {int(np.nansum(traps_is))}"
    )


if __name__ == "__main__":
    main()
