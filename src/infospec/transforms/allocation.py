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
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._checks import count_in_range, real_above, shown
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
    """The largest rank ``k`` whose factors cost fewer parameters than the matrix: k(m+n) < mn.

    Raises
    ------
    InputError
        If ``m`` or ``n`` is not an int >= 1.
    """
    m = count_in_range(m, "The 'm' argument of max_saving_rank")
    n = count_in_range(n, "The 'n' argument of max_saving_rank")
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


def _sequence(value: Any, name: str, func: str) -> list:
    """``value`` as a list: any iterable but a string, bytes or a mapping (a generator, the
    rows of a 2-D array or tensor, ``dict.values()``)."""
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise InputError(
            f"The '{name}' argument of {func} must be a list (one entry per matrix); got "
            f"{type(value).__name__}."
        )
    try:
        return list(value)
    except TypeError as exc:  # a 0-d array or tensor
        raise InputError(
            f"The '{name}' argument of {func} must be a list (one entry per matrix); got "
            f"{shown(value)}."
        ) from exc


def _spectrum(e: Any, j: int, func: str) -> np.ndarray:
    what = f"Entry {j} of the 'energies' argument of {func}"
    if type(e).__module__.startswith("torch"):
        import torch

        from .._validation import check_not_meta

        if isinstance(e, torch.Tensor):
            e = check_not_meta(e, f"energies[{j}]", func).detach().cpu()
    try:
        arr = np.asarray(e)
        if arr.dtype.kind not in "biuf":
            raise TypeError(arr.dtype)
        arr = arr.astype(np.float64).ravel()
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise InputError(
            f"{what} must be a 1-D array of real numbers (the squared singular values of "
            f"matrix {j}); got {shown(e)}."
        ) from exc
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InputError(f"{func}: the energies must be finite and >= 0 (entry {j} is not).")
    return np.sort(arr)[::-1]


def _check(
    energies: Any, shapes: Any, max_ranks: Any, min_rank: Any, func: str
) -> tuple[list[np.ndarray], list[tuple[int, int]], list[int | None], int]:
    """Spectra sorted down, shapes as int pairs, rank caps and ``min_rank``, checked."""
    energies = _sequence(energies, "energies", func)
    shapes = _sequence(shapes, "shapes", func)
    if len(energies) != len(shapes) or not shapes:
        raise InputError(
            f"{func} needs one spectrum per matrix shape; got {len(energies)} "
            f"spectra and {len(shapes)} shapes."
        )
    pairs = []
    for j, shape in enumerate(shapes):
        what = f"Entry {j} of the 'shapes' argument of {func}"
        if isinstance(shape, str | bytes) or not isinstance(shape, Sequence) or len(shape) != 2:
            raise InputError(f"{what} must be a pair (m, n) of ints >= 1; got {shown(shape)}.")
        pairs.append(tuple(count_in_range(v, f"Each size in e{what[1:]}") for v in shape))
    spectra = [_spectrum(e, j, func) for j, e in enumerate(energies)]
    min_rank = count_in_range(min_rank, f"The 'min_rank' parameter of {func}")
    if max_ranks is None:
        caps = [None] * len(pairs)
    else:
        caps = _sequence(max_ranks, "max_ranks", func)
        if len(caps) != len(pairs):
            raise InputError(
                f"The 'max_ranks' argument of {func} must hold one cap (or None) per matrix: "
                f"{len(pairs)}; got {len(caps)}."
            )
        what = f"An entry of the 'max_ranks' argument of {func}"
        caps = [None if c is None else count_in_range(c, what) for c in caps]
    return spectra, pairs, caps, min_rank


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
        If even the cheapest option of every matrix exceeds the budget; if ``energies``
        and ``shapes`` are not lists of one length, a spectrum is not of finite real
        numbers >= 0 (or is a meta tensor), a shape is not a pair of ints >= 1,
        ``budget`` is not a finite number >= 0, ``min_rank`` is not an int >= 1, or
        ``max_ranks`` does not hold one int >= 1 (or None) per matrix.

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
    spectra, shapes, caps, min_rank = _check(
        energies, shapes, max_ranks, min_rank, "allocate_ranks"
    )
    budget = _budget(budget, "allocate_ranks")
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


def _budget(budget: Any, func: str) -> float:
    """``budget`` as a finite float >= 0 (an int beyond float64 is refused as infinite; a
    one-element NumPy array or 0-d tensor is read as its number)."""
    if type(budget).__module__.startswith(("torch", "numpy")) and getattr(budget, "ndim", 1) == 0:
        budget = budget.item()
    if isinstance(budget, numbers.Real) and not isinstance(budget, bool):
        try:
            v = float(budget)
        except OverflowError:
            v = math.inf
        if math.isfinite(v) and v >= 0:
            return int(budget) if isinstance(budget, numbers.Integral) else v
    raise InputError(
        f"The 'budget' argument of {func} must be a finite number >= 0. Got {shown(budget)}."
    )


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


def _menus(options: Any) -> list[list[tuple[float, float, int]]]:
    """Each item's (cost, loss, index) options by cost, then loss, checked."""
    func = "allocate_choices"
    menus = []
    for j, opts in enumerate(_sequence(options, "options", func)):
        if isinstance(opts, str | bytes) or not isinstance(opts, Sequence | np.ndarray):
            raise InputError(
                f"Item {j} of the 'options' argument of {func} must be a list of (cost, loss) "
                f"pairs; got {shown(opts)}."
            )
        arr = []
        for i, pair in enumerate(opts):
            try:
                c, v = (
                    float(x) if isinstance(x, numbers.Real) and not isinstance(x, bool) else None
                    for x in pair
                )
            except (TypeError, ValueError, OverflowError):  # not a pair, or beyond float64
                c = v = None
            if not (c is not None and v is not None and math.isfinite(c) and math.isfinite(v)):
                c = v = None
            if c is None or c <= 0 or v < 0:
                got = shown(pair)
                raise InputError(
                    f"Option {i} of item {j} of the 'options' argument of {func} must be a "
                    f"pair (cost, loss) of real numbers; got {got}, whose cost is not a "
                    f"finite number > 0 or whose loss is not a finite number >= 0."
                )
            arr.append((c, v, i))
        if not arr:
            raise InputError(f"{func}: item {j} has no option.")
        # by cost, then loss: the hull starts at the cheapest (and best among the cheapest)
        menus.append(sorted(arr, key=lambda t: (t[0], t[1], t[2])))
    if not menus:
        raise InputError(f"{func}: options is empty; give at least one item.")
    for k, what in ((0, "costs"), (1, "losses")):
        if not math.isfinite(sum(max(t[k] for t in m) for m in menus)):
            raise InputError(
                f"The 'options' argument of {func}: the {what} add up beyond the float64 "
                f"range (about 1.8e308); divide every cost (and the budget) or every loss "
                f"by one constant first."
            )
    return menus


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
        If ``options`` is not a list of lists of (cost, loss) pairs of real numbers, an
        item has no option, a cost or loss is not finite (or a cost <= 0), the costs or
        the losses add up beyond the float64 range, ``budget`` is not a finite number
        >= 0, or the cheapest option of every item together exceeds the budget.

    Examples
    --------
    >>> from infospec.transforms.allocation import allocate_choices
    >>> menu = [(2, 16.0), (4, 1.0), (8, 0.0)]  # e.g. bit widths and their errors
    >>> a = allocate_choices([menu, [(2, 4.0), (4, 0.25), (8, 0.0)]], budget=8)
    >>> a.choices, a.cost, a.loss
    ([1, 1], 8.0, 1.25)
    """
    menus = _menus(options)
    budget = _budget(budget, "allocate_choices")
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

    Raises
    ------
    InputError
        If ``ratio`` is not a finite number > 0, or the other arguments are invalid as in
        :func:`allocate_ranks`.
    """
    spectra, shapes, caps, min_rank = _check(energies, shapes, max_ranks, min_rank, "uniform_ranks")
    ratio = real_above(ratio, "The 'ratio' parameter of uniform_ranks")
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
