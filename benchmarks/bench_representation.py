"""RankMe, alpha-ReQ and LiDAR against reptrix 0.1.0 on the same embeddings, in one run.

reptrix takes every spectrum through scikit-learn's full PCA (float64 SVD of the centred
data); infospec takes one float64 ``svdvals`` (RankMe, alpha-ReQ) or two small ``eigh``
of d x d matrices (LiDAR). Each contender runs interleaved, best of ``--repeat``; the values
are printed beside the times (RankMe with the matching options: reptrix's convention is
``rankme(Z, center=True, values="eigen")``).

Usage::

    pip install --no-deps reptrix==0.1.0
    python benchmarks/bench_representation.py [--n 4096] [--d 768] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from infospec.measures.representation import alpha_req, lidar, rankme


def _best(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--views", type=int, default=8, help="LiDAR: views per surrogate class")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import reptrix.alpha
    import reptrix.lidar
    import reptrix.rankme

    rng = np.random.default_rng(0)
    scales = np.arange(1, args.d + 1) ** -0.6
    z = rng.standard_normal((args.n, args.d)) * scales
    zt = torch.from_numpy(z)
    classes = args.n // args.views
    groups = np.repeat(np.arange(classes), args.views)
    z_l = np.repeat(rng.standard_normal((classes, args.d)) * scales, args.views, 0)
    z_l = z_l + 0.3 * rng.standard_normal(z_l.shape)
    zl = torch.from_numpy(z_l)
    rows = [
        (
            "RankMe",
            lambda: float(rankme(zt, center=True, values="eigen")),
            lambda: float(reptrix.rankme.get_rankme(zt)),
        ),
        (
            "alpha-ReQ",
            lambda: float(alpha_req(zt).alpha),
            lambda: float(reptrix.alpha.get_alpha(zt, fit_range=np.arange(10, 100))[0]),
        ),
        (
            "LiDAR",
            lambda: float(lidar(zl, groups)),
            lambda: float(reptrix.lidar.get_lidar(zl.float(), classes, args.views)),
        ),
    ]
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"n={args.n} d={args.d}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"best of {args.repeat}; load average {load}"
    )
    print(
        "| measure | infospec s | reptrix s | reptrix / infospec | infospec value | reptrix value |"
    )
    print("|---|---|---|---|---|---|")
    for name, ours, theirs in rows:
        t_ours, v_ours = _best(ours, args.repeat)
        t_theirs, v_theirs = _best(theirs, args.repeat)
        print(
            f"| {name} | {t_ours:.3f} | {t_theirs:.3f} | {t_theirs / t_ours:.1f} | "
            f"{v_ours:.6g} | {v_theirs:.6g} |"
        )
    print(
        "LiDAR values differ by definition: reptrix feeds the LiDAR matrix to a PCA (the "
        "squared singular values of the centred matrix) and uses float32 here (its input)."
    )


if __name__ == "__main__":
    main()
