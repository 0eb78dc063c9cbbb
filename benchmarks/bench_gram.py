"""What an ill-conditioned matrix costs: the Gram route, its refinement, and a full SVD.

Issue 16 asked that a matrix at the Gram route's conditioning limit (lambda_min / lambda_max
of the Gram matrix just below 1e-10, the case that used to fall back to a full SVD without a
word) cost at most about 1.5x a well-conditioned matrix of the same shape. For each shape
this times, interleaved and on one thread (torch and every BLAS pool pinned):

* ``well``: ``singular_values`` of a random Gaussian matrix (route ``gram``);
* ``limit``: the same singular vectors with a spectrum whose smallest values put the Gram
  matrix at 6.4e-11 of its largest eigenvalue (route ``gram+refine``);
* ``svd``: ``torch.linalg.svdvals`` in float64 of the ``limit`` matrix, what the old
  fallback cost;

and prints the medians of ``--rounds``, the ratios, the route taken and the largest relative
difference of the refined values from LAPACK's SVD.

Usage::

    python benchmarks/bench_gram.py [--sizes 1024 2048] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from threadpoolctl import threadpool_limits

from infospec import singular_values


def _matrices(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    well = torch.randn(n, n, generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    sigma = torch.linspace(1.0, 0.5, n, dtype=torch.float64)
    sigma[-8:] = torch.sqrt(torch.tensor(6.4e-11, dtype=torch.float64))  # Gram ratio 6.4e-11
    limit = (u * sigma) @ v.mT
    return well.float(), limit.float()


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, one thread, median of {args.rounds}; load {load}")
    print("| n | well s | limit s | svd s | limit / well | svd / well | route | max rel. diff. |")
    print("|---|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=1):
        for n in args.sizes:
            well, limit = _matrices(n)
            runs = {
                "well": lambda w=well: singular_values(w),
                "limit": lambda m=limit: singular_values(m),
                "svd": lambda m=limit: torch.linalg.svdvals(m.double()),
            }
            times: dict[str, list[float]] = {k: [] for k in runs}
            order = list(runs)
            for r in range(args.rounds):
                for key in order[r % 3 :] + order[: r % 3]:
                    times[key].append(_time(runs[key]))
            med = {k: statistics.median(v) for k, v in times.items()}
            got, route = singular_values(limit, return_method=True)
            ref = torch.linalg.svdvals(limit.double())
            diff = float(((got - ref).abs() / ref).max())
            print(
                f"| {n} | {med['well']:.3f} | {med['limit']:.3f} | {med['svd']:.3f} | "
                f"{med['limit'] / med['well']:.2f} | {med['svd'] / med['well']:.2f} | {route} | "
                f"{diff:.1e} |"
            )
    print(f"load after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
