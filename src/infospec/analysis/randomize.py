r"""Randomized ESDs (WeightWatcher's ``randomize``): each matrix against its own shuffle.

Shuffling the entries of :math:`W` keeps their distribution and destroys every
correlation between them, so the shuffled matrix's ESD is what the same entries give
without structure: a Marchenko–Pastur bulk when the entries are light-tailed. A matrix
whose ESD is far from its shuffle's carries learned structure (``rand_distance``); a
spike of the *shuffled* ESD above its own MP edge is a **correlation trap** (Martin &
Mahoney): a few very large entries, which a shuffle keeps and which alone make an
outlying singular value.

For a matrix :math:`W` (``rows x cols``, :math:`N = \max`, :math:`M = \min`) with
eigenvalues :math:`\lambda_i = \sigma_i^2` and the eigenvalues :math:`\tilde\lambda_i` of
:math:`\tilde W`, its entries permuted uniformly at random (seeded; for a pooled
convolution each kernel position's matrix is shuffled alone and the ESDs pooled, as
WeightWatcher does):

* ``rand_distance``: WeightWatcher 0.7.7's definition, the Jensen–Shannon distance
  between the two sorted eigenvalue vectors read as probability vectors,
  :math:`p = \lambda_{(\cdot)} / \sum\lambda`, :math:`q = \tilde\lambda_{(\cdot)} /
  \sum\tilde\lambda` (both ascending),
  :math:`\sqrt{\tfrac12 \mathrm{KL}(p\|m) + \tfrac12 \mathrm{KL}(q\|m)}`, with
  :math:`m` the normalised :math:`\lambda_{(\cdot)} + \tilde\lambda_{(\cdot)}` (WeightWatcher
  averages the raw vectors; a shuffle keeps :math:`\sum\lambda = \|W\|_F^2`, so this is
  :math:`m = (p+q)/2`), natural logarithms (in :math:`[0, \sqrt{\ln 2}]`);
* ``num_traps``: eigenvalues :math:`\tilde\lambda` above the edge of the
  Marchenko–Pastur law fitted to the shuffled ESD (:func:`infospec.fit_marchenko_pastur`,
  bulk variance :math:`\sigma^2`, :math:`q = M/N`) plus four Tracy–Widom scales,
  :math:`\sigma^2[(\sqrt N + \sqrt M)^2 + 4\,(\sqrt N + \sqrt M)(N^{-1/2} + M^{-1/2})^{1/3}]`
  (Johnstone 2001: the largest eigenvalue of a Gaussian matrix sits at the first term
  plus a Tracy–Widom variable times the second's scale, so a bare edge counts a pure-noise
  matrix's own fluctuation as a trap about as often as not; WeightWatcher's
  ``rand_num_spikes`` counts from its bare fitted edge);
* ``rand_max_eval``: :math:`\max\tilde\lambda` (WeightWatcher's ``max_rand_eval``);
* ``rand_bulk_max``: that threshold, in the units of :math:`\lambda`;
* ``trap_ratio``: :math:`\max\tilde\lambda` / ``rand_bulk_max``, how far the largest trap
  sits above the bulk (NaN without a trap).

References
----------
I. M. Johnstone, "On the distribution of the largest eigenvalue in principal components
analysis", *Annals of Statistics* 29 (2001) 295-327.
C. H. Martin and M. W. Mahoney, "Implicit Self-Regularization in Deep Neural Networks",
JMLR 22 (2021); WeightWatcher 0.7.7, ``apply_random_esd`` and ``jensen_shannon_distance``.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import torch

from .._errors import InfospecError
from ..measures.marchenko_pastur import fit_marchenko_pastur

__all__ = [
    "RANDOMIZE_COLUMNS",
    "add_randomized",
    "rand_distance",
    "randomized_record",
    "shuffled",
]

NAN = float("nan")

#: Tracy-Widom scales above the Marchenko-Pastur edge that a shuffled eigenvalue must pass
#: to count as a trap (module docstring).
TRAP_TW_UNITS = 4.0

#: Column name -> meaning, added to the weight table by ``analyze(randomize=True)``.
RANDOMIZE_COLUMNS: dict[str, str] = {
    "rand_distance": "Jensen-Shannon distance between the ESD and the shuffled matrix's "
    "(WeightWatcher's definition, nats^(1/2))",
    "num_traps": "eigenvalues of the shuffled matrix above its Marchenko-Pastur edge",
    "rand_max_eval": "largest eigenvalue of the shuffled matrix",
    "rand_bulk_max": "trap threshold: the shuffled ESD's MP edge + 4 Tracy-Widom scales",
    "trap_ratio": "rand_max_eval / rand_bulk_max when there is a trap (NaN otherwise)",
}


def shuffled(matrix: torch.Tensor, seed: int, label: str) -> torch.Tensor:
    """``matrix`` (or each matrix of a stack) with its entries permuted at random.

    The permutation is seeded by ``seed`` and the matrix's label, so that a report does
    not depend on the order in which workers reach its matrices.
    """
    gen = torch.Generator(device="cpu").manual_seed(
        (int(seed) * 1_000_003 + zlib.crc32(label.encode("utf-8"))) % (2**63)
    )
    rows, cols = matrix.shape[-2:]
    flat = matrix.reshape(-1, rows * cols)
    out = torch.empty_like(flat)
    for i in range(flat.shape[0]):
        perm = torch.randperm(rows * cols, generator=gen).to(matrix.device)
        out[i] = flat[i, perm]
    return out.reshape(matrix.shape)


def rand_distance(lam, lam_rand) -> float:
    r"""WeightWatcher's ``rand_distance``: Jensen–Shannon distance of two sorted ESDs.

    Parameters
    ----------
    lam, lam_rand : array_like, same length
        Eigenvalues (any order; each sorted ascending here), non-negative.

    Returns
    -------
    float
        :math:`\sqrt{\mathrm{JSD}(p, q)}` in nats (module docstring).

    Examples
    --------
    >>> rand_distance([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    0.0
    """
    a = torch.as_tensor(lam, dtype=torch.float64).flatten().sort().values
    b = torch.as_tensor(lam_rand, dtype=torch.float64).flatten().sort().values
    # as WeightWatcher: m averages the raw vectors, and each is normalised afterwards
    # (scipy.stats.entropy); for a shuffle, sum(lam) == sum(lam_rand) and this is
    # scipy.spatial.distance.jensenshannon
    p, q, m = a / a.sum(), b / b.sum(), (a + b) / (a + b).sum()

    def kl(a):
        mask = a > 0
        return float((a[mask] * torch.log(a[mask] / m[mask])).sum())

    return math.sqrt(max(0.0, (kl(p) + kl(q)) / 2))


def randomized_record(
    sigma: torch.Tensor, sigma_rand: torch.Tensor, *, rows: int, cols: int
) -> dict[str, Any]:
    """The :data:`RANDOMIZE_COLUMNS` of one matrix from its and its shuffle's spectra.

    Returns
    -------
    dict
        The columns, and ``warning`` (empty unless the MP fit of the shuffled ESD failed).
    """
    n_big, m_small = max(rows, cols), min(rows, cols)
    lam = (sigma.to(torch.float64).flatten()) ** 2
    lam_r = (sigma_rand.to(torch.float64).flatten()) ** 2
    rec: dict[str, Any] = {
        "rand_distance": rand_distance(lam, lam_r) if float(lam.sum()) > 0 else NAN,
        "rand_max_eval": float(lam_r.max()),
        "num_traps": NAN,
        "rand_bulk_max": NAN,
        "trap_ratio": NAN,
        "warning": "",
    }
    try:
        fit = fit_marchenko_pastur(lam_r / n_big, m_small / n_big)
    except InfospecError as exc:
        rec["warning"] = f"Marchenko-Pastur fit of the shuffled ESD: {exc}"
        return rec
    # the MP edge plus TRAP_TW_UNITS Tracy-Widom scales: a pure-noise matrix's largest
    # eigenvalue fluctuates above the asymptotic edge at finite size (Johnstone 2001)
    root = math.sqrt(n_big) + math.sqrt(m_small)
    tw_scale = root * (1 / math.sqrt(n_big) + 1 / math.sqrt(m_small)) ** (1 / 3)
    edge = float(fit.sigma2) * (root * root + TRAP_TW_UNITS * tw_scale)
    rec["num_traps"] = int((lam_r > edge).sum())
    rec["rand_bulk_max"] = edge
    if rec["num_traps"] > 0:
        rec["trap_ratio"] = rec["rand_max_eval"] / rec["rand_bulk_max"]
    return {**{k: rec[k] for k in RANDOMIZE_COLUMNS}, "warning": rec["warning"]}


def add_randomized(
    rows: list[dict[str, Any]],
    esds: dict[str, Any],
    spectra: list[tuple],
    rand: dict[str, torch.Tensor],
) -> None:
    """Add the :data:`RANDOMIZE_COLUMNS` of each analysed matrix to its report row.

    ``spectra`` are the first stage's items of one tensor (``(label, rows, cols, sigma,
    error)``) and ``rand`` its shuffled spectra by label; the shuffled ESD (descending)
    goes to ``esds["randomized/<label>"]``. A row without a shuffled spectrum (a LoRA
    delta, read from its factors) gets NaN and says why in its ``warning``.
    """
    by_label = {item[0]: item for item in spectra}
    for row in rows:
        if row.get("status") != "ok":
            continue
        label = row["name"]
        item = by_label.get(label)
        if label not in rand or item is None or item[3] is None:
            row.update(dict.fromkeys(RANDOMIZE_COLUMNS, NAN))
            note = "randomize: no shuffled spectrum (a matrix read from its low-rank factors)"
            row["warning"] = "; ".join(x for x in (row.get("warning", ""), note) if x)
            continue
        rec = randomized_record(item[3], rand[label], rows=item[1], cols=item[2])
        note = rec.pop("warning")
        row.update(rec)
        if note:
            row["warning"] = "; ".join(x for x in (row.get("warning", ""), note) if x)
        lam = (rand[label].to(torch.float64) ** 2).flatten().sort(descending=True).values
        esds[f"randomized/{label}"] = lam.numpy()
