"""A two-stage symmetric eigensolver (dense, band, values) against ``eigvalsh``: not adopted.

The spectrum of a 4096-wide weight matrix is the eigenvalues of its Gram matrix, and
``torch.linalg.eigvalsh`` (MKL's ``syevd``) is most of the time of ``analyze`` and
``compare`` on Llama-shaped checkpoints. Its first step, the reduction to tridiagonal
form, does half of its work as matrix-vector products. This script measures whether a
two-stage reduction beats it on this machine:

* the first stage takes the matrix to a band of width ``b``: a Householder QR of each
  panel of ``b`` columns (compact WY form :math:`I - VTV^\top`), then the two-sided
  update of the trailing matrix on its lower triangle, all in torch matrix products
  (:math:`\tfrac43 n^3` operations);
* the second stage takes the band's eigenvalues with SciPy's ``eig_banded`` (LAPACK
  ``sbevd``).

The functions below are the whole method: the script is self-contained and the library
does not use it. On the 2-core development machine, idle, the reduction was slower than
MKL's ``syevd`` at every side and bandwidth: 5.9 s against 4.1 s for a 4096-wide matrix on
one thread, and 4.2 s against 2.6 s on two (see ``benchmarks/README.md``). It stays here
so that the measurement can be repeated on other CPUs.

For each side, the Gram matrix ``W^T W`` of a random ``side x side`` float64 matrix is
diagonalised by each contender, round-robin in one process (ABBA order across rounds),
on ``--threads`` torch threads (and as many OpenBLAS threads, pinned with
``threadpoolctl``):

* ``eigvalsh``: ``torch.linalg.eigvalsh``;
* ``two-stage b=B``: the two-stage route at bandwidth ``B``, with the time of its first
  stage beside it.

Prints the median wall time of each contender, with the min-max over the rounds. Beside
it: the ratio of ``eigvalsh``'s median to the contender's, the first stage's share, and
the largest difference from ``numpy.linalg.eigvalsh`` relative to the largest
eigenvalue. The load average is printed before and after. Usage::

    python benchmarks/bench_eigen_two_stage.py [--sides 1024 2048 4096] [--bands 32 64 128]
        [--threads 1 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

#: Columns per block of the products that read and update the lower triangle only.
_BLOCK = 512


def _compact_wy(v: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    r"""The upper triangular ``T`` of :math:`H_1 \cdots H_k = I - V T V^\top` (LAPACK ``larft``).

    :math:`H_i = I - \tau_i v_i v_i^\top`; column by column,
    :math:`T_{:i,i} = -\tau_i\, T_{:i,:i} V_{:,:i}^\top v_i` and :math:`T_{ii} = \tau_i`.
    """
    k = tau.shape[0]
    vtv = v.mT @ v
    t = torch.zeros(k, k, dtype=v.dtype, device=v.device)
    for i in range(k):
        if i:
            t[:i, i] = (t[:i, :i] @ vtv[:i, i]) * -tau[i]
        t[i, i] = tau[i]
    return t


def _symmetric_times(a: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
    """``a @ v`` for the symmetric ``a`` of which only the lower triangle is read.

    Block column by block column: the diagonal block made whole, then the block below it
    multiplied once as itself and once transposed (``symm``'s work, 2 m^2 b operations).
    """
    m = a.shape[0]
    x = torch.empty_like(v)
    for j in range(0, m, block):
        k = min(m, j + block)
        diag = a[j:k, j:k].tril()
        diag += diag.tril(-1).mT
        x[j:k] = diag @ v[j:k]
        if k < m:
            below = a[k:, j:k]
            x[j:k].addmm_(below.mT, v[k:])
    for j in range(0, m, block):  # the products of the blocks below with their rows' v
        k = min(m, j + block)
        if k < m:
            x[k:].addmm_(a[k:, j:k], v[j:k])
    return x


def _to_band(a: torch.Tensor, band: int) -> None:
    """Reduce the symmetric ``a`` (n x n, lower triangle) to a band matrix in place.

    On return the diagonals ``0..band`` of the lower triangle hold a band matrix with the
    eigenvalues of ``a``; the upper triangle is neither read nor written. The two-sided
    update touches the lower triangle only (``syr2k``'s work, block column by block
    column), so a panel costs :math:`4m^2b` operations: :math:`\\tfrac43 n^3` in all, as
    the one-stage reduction, but in matrix products.
    """
    n = a.shape[0]
    block = _BLOCK
    for k in range(0, n - band - 1, band):
        lo = k + band
        panel = a[lo:, k:lo]
        qr, tau = torch.geqrf(panel)
        r = tau.shape[0]  # min(m, band) reflectors
        v = qr[:, :r].tril(-1)
        v.diagonal().fill_(1.0)
        t = _compact_wy(v, tau)
        panel.copy_(qr.triu())  # R on top, zeros below: Q^T P
        trailing = a[lo:, lo:]
        x = _symmetric_times(trailing, v, block) @ t
        w = x - 0.5 * (v @ (t.mT @ (v.mT @ x)))
        # lower triangle -= V W^T + W V^T = [V W] [W V]^T: one product of inner size 2b
        # per block column (C read and written once)
        left, right = torch.cat([v, w], dim=1), torch.cat([w, v], dim=1)
        m = trailing.shape[0]
        for j in range(0, m, block):
            jk = min(m, j + block)
            trailing[j:, j:jk].addmm_(left[j:], right[j:jk].mT, alpha=-1.0)


def two_stage_eigenvalues(a: torch.Tensor, band: int) -> tuple[torch.Tensor, float]:
    """Ascending eigenvalues of the symmetric ``a`` (lower triangle); the first stage's seconds."""
    n = a.shape[0]
    band = min(band, n - 1)
    work = a.clone()
    start = time.perf_counter()
    _to_band(work, band)
    first = time.perf_counter() - start
    bands = torch.zeros(band + 1, n, dtype=a.dtype)
    for j in range(band + 1):
        bands[j, : n - j] = work.diagonal(-j)
    lam = scipy.linalg.eig_banded(
        bands.numpy(), lower=True, eigvals_only=True, overwrite_a_band=True, check_finite=False
    )
    return torch.from_numpy(lam), first


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--bands", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}; load average before: {_load()}")
    print(
        "\n| side | threads | contender | wall s (median) | min-max | eigvalsh / contender "
        "| first stage | max error / lambda_max |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    for side in args.sides:
        w = torch.randn(side, side, dtype=torch.float64, generator=gen)
        gram = w.mT @ w
        del w
        reference = np.linalg.eigvalsh(gram.numpy())
        for threads in args.threads:
            torch.set_num_threads(threads)
            contenders = {"eigvalsh": lambda g=gram: (torch.linalg.eigvalsh(g), 0.0)}
            for band in args.bands:
                contenders[f"two-stage b={band}"] = lambda band=band, g=gram: two_stage_eigenvalues(
                    g, band
                )
            times: dict[str, list[float]] = {k: [] for k in contenders}
            firsts: dict[str, list[float]] = {k: [] for k in contenders}
            errors: dict[str, float] = {}
            with threadpool_limits(threads, user_api="blas"):
                for r in range(args.rounds):
                    order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
                    for name in order:
                        start = time.perf_counter()
                        lam, first = contenders[name]()
                        times[name].append(time.perf_counter() - start)
                        firsts[name].append(first)
                        errors[name] = float(
                            np.abs(lam.numpy() - reference).max() / reference.max()
                        )
            base = statistics.median(times["eigvalsh"])
            for name, ts in times.items():
                med = statistics.median(ts)
                first = statistics.median(firsts[name])
                share = f"{first:.2f} s ({100 * first / med:.0f} %)" if first else ""
                print(
                    f"| {side} | {threads} | {name} | {med:.3f} | {min(ts):.3f}-{max(ts):.3f} "
                    f"| {base / med:.2f} | {share} | {errors[name]:.1e} |"
                )
    print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    main()
