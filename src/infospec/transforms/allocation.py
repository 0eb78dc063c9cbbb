r"""Ranks for a set of matrices at a parameter budget: equal slope across matrices.

Each matrix :math:`j` (shape :math:`m_j \times n_j`) is either kept dense, at a cost of
:math:`m_j n_j` parameters and no loss, or replaced by a rank-:math:`k` product
:math:`A B` (:math:`m_j \times k` times :math:`k \times n_j`) at a cost of
:math:`k (m_j + n_j)` parameters and a loss equal to the energy of the dropped components,

.. math::

    \ell_j(k) = \sum_{i > k} e_{j,i},\qquad e_{j,1} \ge e_{j,2} \ge \dots \ge 0,

(the squared singular values :math:`\sigma_{j,i}^2` of the matrix, or of its whitened form
:math:`W_j L_j` for activation-aware compression, where the loss is the output error
:math:`\mathbb E\,\|(W_j - A B) x\|^2`). A factorisation that does not save parameters
(:math:`k (m_j + n_j) \ge m_j n_j`) is never chosen: the matrix stays dense instead.

The problem
-----------
Minimise :math:`\sum_j \ell_j(k_j)` subject to :math:`\sum_j \mathrm{cost}_j(k_j) \le B`,
:math:`B` = ``ratio`` times the dense parameters of the matrices. It is a multiple-choice
knapsack: exact solutions are NP-hard in general. :func:`allocate_ranks` solves its
*Lagrangian relaxation* exactly and then fills the remaining budget greedily:

1. For each matrix, the options (cost, loss) -- ranks ``min_rank`` ... the largest saving
   rank, and dense -- are reduced to their lower convex hull. Since :math:`e_{j,i}` is
   non-increasing and every rank step costs the same :math:`m_j + n_j`, the factorised
   options are already convex; only the jump to dense can fall off the hull.
2. The hull segments of all matrices are merged in order of decreasing slope
   :math:`\Delta\ell / \Delta\mathrm{cost}` (discarded energy saved per parameter spent;
   for a rank step :math:`e_{j,k} / (m_j + n_j)`, the per-parameter marginal loss) and
   taken in that order while they fit. This is the water-filling rule across matrices:
   every matrix is cut where its marginal loss per parameter crosses one common level
   :math:`\lambda`.
3. When the next segment does not fit, the allocation reached so far minimises
   :math:`\sum_j \ell_j + \lambda \sum_j \mathrm{cost}_j` for :math:`\lambda` = that
   segment's slope, so (Everett's theorem) it is *exactly optimal among all allocations
   that cost no more than it does*, :math:`B_\lambda`.
4. The budget left over, :math:`B - B_\lambda`, is filled greedily by single rank steps
   and switches to dense, best loss decrease per parameter first, while they fit.

Every allocation within :math:`B` loses at least
:math:`\ell(B_\lambda) - \lambda (B - B_\lambda)`, so the result is within
``gap_bound`` :math:`= \lambda (B - B_\lambda)` of the optimum at :math:`B` (at most the
loss decrease of the segment that did not fit); it is exact whenever the budget falls on a
hull vertex. Without the dense option a segment is one rank step and the gap is below one
step's :math:`e_{j,k}`; the dense option can make a hull segment long (from a low rank
straight to dense when a matrix's tail holds much energy), which step 4 then covers rank by
rank. The tests compare against brute force over every rank combination of two or three
small matrices.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .._errors import InputError

__all__ = [
    "Allocation",
    "ChoiceAllocation",
    "allocate_choices",
    "allocate_ranks",
    "max_saving_rank",
    "uniform_ranks",
]

#: rank value that stands for "keep the matrix dense"
DENSE = -1


class Allocation(NamedTuple):
    """Result of :func:`allocate_ranks` / :func:`uniform_ranks`.

    Attributes
    ----------
    ranks : list of int
        Rank per matrix; ``-1`` (:data:`DENSE`) keeps the matrix dense.
    params : int
        Parameters of the allocation (dense matrices count :math:`mn`).
    loss : float
        Total discarded energy :math:`\\sum_j \\ell_j(k_j)`.
    lagrangian_params : int
        :math:`B_\\lambda`, the parameters of the allocation at the end of step 3, exactly
        optimal at that budget (:func:`allocate_ranks`; ``params`` for
        :func:`uniform_ranks`).
    gap_bound : float
        Upper bound on ``loss`` minus the optimal loss at the budget,
        :math:`\\lambda (B - B_\\lambda)` (0 when every segment fitted; 0 for
        :func:`uniform_ranks`, which makes no optimality claim).
    """

    ranks: list[int]
    params: int
    loss: float
    lagrangian_params: int
    gap_bound: float


def max_saving_rank(m: int, n: int) -> int:
    """The largest rank ``k`` whose factors cost fewer parameters than the matrix: k(m+n) < mn."""
    return (m * n - 1) // (m + n)


def _loss(energies: np.ndarray, rank: int) -> float:
    return 0.0 if rank == DENSE else float(energies[rank:].sum())


def _options(energies: np.ndarray, m: int, n: int, min_rank: int, max_rank: int | None):
    """(cost, loss, rank) of each option of one matrix, by increasing cost."""
    kmax = min(max_saving_rank(m, n), len(energies))
    cap = kmax if max_rank is None else min(kmax, max_rank)
    # ranks from 1 at least: no rank saves parameters when cap < 1 (a 2 x 2 or 1 x n
    # matrix), and then the matrix stays dense (a rank-0 "factorisation" keeps only a bias)
    low = max(1, min(min_rank, cap))
    opts = [(k * (m + n), _loss(energies, k), k) for k in range(low, cap + 1)]
    if not opts or max_rank is None or max_rank > kmax:
        opts.append((m * n, 0.0, DENSE))
    return opts


def _lower_hull(opts: list[tuple[int, float, int]]) -> list[tuple[int, float, int]]:
    """Vertices of the lower convex hull of (cost, loss), from the cheapest option."""
    hull: list[tuple[int, float, int]] = []
    for p in opts:
        # drop options that are no better than a cheaper one
        if hull and p[1] >= hull[-1][1]:
            continue
        while len(hull) >= 2:
            (c1, l1, _), (c2, l2, _) = hull[-2], hull[-1]
            # hull[-1] lies on or above the chord from hull[-2] to p: not a vertex
            if (l2 - l1) * (p[0] - c1) >= (p[1] - l1) * (c2 - c1):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def _check(energies: Sequence, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    if len(energies) != len(shapes) or not shapes:
        raise InputError(
            f"allocate_ranks needs one spectrum per matrix shape; got {len(energies)} "
            f"spectra and {len(shapes)} shapes."
        )
    out = []
    for e in energies:
        e = np.asarray(e, dtype=np.float64).ravel()
        if not np.all(np.isfinite(e)) or np.any(e < 0):
            raise InputError("allocate_ranks: the energies must be finite and >= 0.")
        out.append(np.sort(e)[::-1])
    return out


def allocate_ranks(
    energies: Sequence,
    shapes: Sequence[tuple[int, int]],
    budget: int,
    *,
    min_rank: int = 1,
    max_ranks: Sequence[int | None] | None = None,
) -> Allocation:
    r"""Ranks that minimise the total discarded energy at a parameter budget (equal slope).

    Parameters
    ----------
    energies : sequence of 1-D arrays
        Per matrix, the energies :math:`e_{j,i}` of its components (squared singular
        values; any order, sorted here).
    shapes : sequence of (m, n)
    budget : int
        Parameters allowed in total (dense matrices count :math:`mn`, factorised ones
        :math:`k(m+n)`).
    min_rank : int, default 1
        Smallest rank a factorised matrix may have.
    max_ranks : sequence of int or None, optional
        Per matrix, a cap on the rank (the MP-edge rule); a capped matrix cannot be dense
        unless its cap is above the largest saving rank.

    Returns
    -------
    Allocation

    Raises
    ------
    InputError
        If even the cheapest option of every matrix exceeds the budget.

    Notes
    -----
    See the module docstring: exact for the Lagrangian relaxation, then a greedy fill; the
    returned ``gap_bound`` bounds the distance to the optimum.

    Examples
    --------
    >>> import numpy as np
    >>> from infospec.transforms.allocation import allocate_ranks
    >>> a = allocate_ranks([np.array([9.0, 4, 1, 0]), np.array([1.0, 0.5, 0, 0])],
    ...                    [(8, 4), (8, 4)], budget=36)
    >>> a.ranks, a.params, a.loss
    ([2, 1], 36, 1.5)
    """
    spectra = _check(energies, shapes)
    caps = list(max_ranks) if max_ranks is not None else [None] * len(shapes)
    hulls = [
        _lower_hull(_options(e, m, n, min_rank, cap))
        for e, (m, n), cap in zip(spectra, shapes, caps, strict=True)
    ]
    lagr = _lagrangian(hulls, budget)
    if lagr is None:
        raise InputError(
            f"The budget of {budget} parameters is below the cheapest allocation "
            f"({sum(h[0][0] for h in hulls)} parameters, every matrix at rank {min_rank}); "
            f"raise the ratio."
        )
    pos, spent, slope = lagr
    ranks = [h[p][2] for h, p in zip(hulls, pos, strict=True)]
    if slope is None:
        loss = sum(h[p][1] for h, p in zip(hulls, pos, strict=True))
        return Allocation(ranks, spent, float(loss), spent, 0.0)
    ranks, params, loss = _fill(spectra, shapes, caps, ranks, budget)
    return Allocation(ranks, params, loss, spent, slope * (budget - spent))


def _lagrangian(hulls, budget):
    r"""Step 3 of the module docstring: hull segments by decreasing slope while they fit.

    ``hulls`` holds, per item, the vertices (cost, loss, tag) of its lower convex hull from
    the cheapest option. Returns None if the cheapest options already exceed ``budget``,
    else ``(pos, spent, slope)``: the hull vertex reached per item, its total cost
    :math:`B_\lambda`, and the slope of the first segment that did not fit (None when
    every segment fitted). By Everett's theorem the vertices reached minimise
    loss + slope * cost, so no allocation within ``budget`` loses less than
    ``loss - slope * (budget - spent)``.
    """
    pos = [0] * len(hulls)
    spent = sum(h[0][0] for h in hulls)
    if spent > budget:
        return None
    segments = []
    for j, h in enumerate(hulls):
        for s in range(1, len(h)):
            dc, dl = h[s][0] - h[s - 1][0], h[s - 1][1] - h[s][1]
            segments.append((dl / dc, j, s, dc))
    # by decreasing slope; an item's own segments are already in that order (convex hull),
    # and the stable sort on (slope, item, step) keeps them so when slopes tie
    segments.sort(key=lambda t: (-t[0], t[1], t[2]))
    for slope, j, s, dc in segments:
        if spent + dc > budget:
            return pos, spent, slope
        spent += dc
        pos[j] = s
    return pos, spent, None


class ChoiceAllocation(NamedTuple):
    r"""Result of :func:`allocate_choices`.

    Attributes
    ----------
    choices : list of int
        Per item, the index of the chosen option in its ``options`` list.
    cost, loss : float
        Totals of the chosen options.
    lagrangian_cost : float
        :math:`B_\lambda`: the cost at the end of the exact Lagrangian step.
    gap_bound : float
        Upper bound on ``loss`` minus the optimal loss at the budget.
    """

    choices: list[int]
    cost: float
    loss: float
    lagrangian_cost: float
    gap_bound: float


def allocate_choices(options: Sequence[Sequence[tuple[float, float]]], budget: float):
    r"""One option per item minimising the total loss at a total cost (equal slope).

    The multiple-choice knapsack of the module docstring for any per-item menu of
    (cost, loss) pairs -- quantization bit widths of matrices, say -- solved the same
    way: the exact Lagrangian relaxation over each item's lower convex hull (every item
    cut where its loss decrease per unit cost crosses one common level :math:`\lambda`,
    the reverse water-filling rule across items), then a greedy fill of what is left,
    any costlier option of an item with a lower loss, best slope first.

    Parameters
    ----------
    options : sequence of sequences of (cost, loss)
        Per item, its options; costs > 0 and losses >= 0, finite, any order.
    budget : float
        Total cost allowed.

    Returns
    -------
    ChoiceAllocation
        ``gap_bound`` :math:`= \lambda (B - B_\lambda)` bounds the distance to the optimum
        (0 when the budget falls on a hull vertex).

    Raises
    ------
    InputError
        If an item has no option, a cost or loss is not finite (or a cost <= 0), or the
        cheapest option of every item together exceeds the budget.

    Examples
    --------
    >>> from infospec.transforms.allocation import allocate_choices
    >>> menu = [(2, 16.0), (4, 1.0), (8, 0.0)]  # e.g. bit widths and their errors
    >>> a = allocate_choices([menu, [(2, 4.0), (4, 0.25), (8, 0.0)]], budget=8)
    >>> a.choices, a.cost, a.loss
    ([1, 1], 8.0, 1.25)
    """
    menus = []
    for j, opts in enumerate(options):
        arr = [(float(c), float(loss), i) for i, (c, loss) in enumerate(opts)]
        if not arr:
            raise InputError(f"allocate_choices: item {j} has no option.")
        if not all(math.isfinite(c) and c > 0 and math.isfinite(v) and v >= 0 for c, v, _ in arr):
            raise InputError(
                f"allocate_choices: item {j} has an option whose cost is not a finite "
                f"number > 0 or whose loss is not a finite number >= 0."
            )
        # by cost, then loss: the hull starts at the cheapest (and best among the cheapest)
        menus.append(sorted(arr, key=lambda t: (t[0], t[1], t[2])))
    if not menus:
        raise InputError("allocate_choices: options is empty; give at least one item.")
    hulls = [_lower_hull(m) for m in menus]
    lagr = _lagrangian(hulls, budget)
    if lagr is None:
        cheapest = sum(h[0][0] for h in hulls)
        raise InputError(
            f"allocate_choices: the budget {budget:g} is below the cheapest allocation "
            f"({cheapest:g}); raise the budget."
        )
    pos, spent, slope = lagr
    chosen = [h[p] for h, p in zip(hulls, pos, strict=True)]
    if slope is None:
        return ChoiceAllocation(
            [c[2] for c in chosen], spent, float(sum(c[1] for c in chosen)), spent, 0.0
        )
    # greedy fill: from each item's current option, any costlier one with a lower loss
    cost = spent
    heap: list[tuple[float, int, int, int, float]] = []
    version = [0] * len(menus)

    def push(j: int) -> None:
        c0, l0, _ = chosen[j]
        for c, v, i in menus[j]:
            if c > c0 and v < l0:
                heapq.heappush(heap, (-(l0 - v) / (c - c0), j, version[j], i, c - c0))

    for j in range(len(menus)):
        push(j)
    while heap:
        _neg, j, ver, i, dc = heapq.heappop(heap)
        if ver != version[j] or cost + dc > budget:
            continue
        chosen[j] = next(t for t in menus[j] if t[2] == i)
        cost += dc
        version[j] += 1
        push(j)
    return ChoiceAllocation(
        [c[2] for c in chosen],
        float(cost),
        float(sum(c[1] for c in chosen)),
        spent,
        slope * (budget - spent),
    )


def _fill(spectra, shapes, caps, ranks, budget):
    """Spend what is left greedily: single rank steps, or a switch to dense, best slope first.

    Unlike the hull segments, a rank step here is one rank (the hull may jump from a low
    rank straight to dense, a step too large for what is left).
    """
    ranks = list(ranks)

    def cost(j, k):
        m, n = shapes[j]
        return m * n if k == DENSE else k * (m + n)

    def moves(j):
        k = ranks[j]
        if k == DENSE:
            return []
        m, n = shapes[j]
        e = spectra[j]
        top = min(max_saving_rank(m, n), len(e))
        cap = caps[j]
        out = []
        if k < (top if cap is None else min(top, cap)):
            out.append((k + 1, m + n, float(e[k])))
        if cap is None or cap > top:
            out.append((DENSE, m * n - k * (m + n), _loss(e, k)))
        return out

    spent = sum(cost(j, k) for j, k in enumerate(ranks))
    heap = []
    version = [0] * len(ranks)
    for j in range(len(ranks)):
        for new, dc, dl in moves(j):
            heapq.heappush(heap, (-dl / dc, j, version[j], new, dc))
    while heap:
        _neg, j, ver, new, dc = heapq.heappop(heap)
        if ver != version[j] or spent + dc > budget:
            continue  # stale, or too dear now (what is left only shrinks)
        ranks[j] = new
        spent += dc
        version[j] += 1
        for nxt, dc2, dl2 in moves(j):
            heapq.heappush(heap, (-dl2 / dc2, j, version[j], nxt, dc2))
    loss = sum(_loss(e, k) for e, k in zip(spectra, ranks, strict=True))
    return ranks, spent, float(loss)


def uniform_ranks(
    energies: Sequence,
    shapes: Sequence[tuple[int, int]],
    ratio: float,
    *,
    min_rank: int = 1,
    max_ranks: Sequence[int | None] | None = None,
) -> Allocation:
    r"""The same ratio for every matrix: :math:`k_j = \lfloor r\, m_j n_j / (m_j + n_j) \rfloor`.

    Each matrix gets its own budget :math:`r\,m_j n_j`: it stays dense when that affords it
    (:math:`r = 1`) or when the rank would not save parameters; ``max_ranks`` caps ranks as
    in :func:`allocate_ranks`.
    """
    spectra = _check(energies, shapes)
    caps = list(max_ranks) if max_ranks is not None else [None] * len(shapes)
    ranks, params, loss = [], 0, 0.0
    for e, (m, n), cap in zip(spectra, shapes, caps, strict=True):
        k = max(min_rank, int(np.floor(ratio * m * n / (m + n) + 1e-9)))
        # dense when its own budget affords the matrix (ratio 1) or the rank would not save
        if ratio >= 1 or k > max_saving_rank(m, n):
            k = DENSE
        # a cap that saves parameters bounds the rank, dense included (as in allocate_ranks)
        if cap is not None and cap <= max_saving_rank(m, n) and (k == DENSE or k > cap):
            k = max(min_rank, cap)
        ranks.append(k)
        params += m * n if k == DENSE else k * (m + n)
        loss += _loss(e, k)
    return Allocation(ranks, params, float(loss), params, 0.0)
