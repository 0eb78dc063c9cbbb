"""allocate_ranks: exact for its Lagrangian relaxation, within its gap bound of brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from infospec import InputError
from infospec.transforms.allocation import (
    DENSE,
    allocate_ranks,
    max_saving_rank,
    uniform_ranks,
)


def _options(e, m, n):
    e = np.sort(e)[::-1]
    opts = [(k * (m + n), float(e[k:].sum()), k) for k in range(1, max_saving_rank(m, n) + 1)]
    return [*opts, (m * n, 0.0, DENSE)]


def _brute(energies, shapes, budget):
    """The optimal loss over every combination of ranks (and dense) within the budget."""
    best = (np.inf, None)
    for combo in itertools.product(
        *(_options(e, m, n) for e, (m, n) in zip(energies, shapes, strict=True))
    ):
        cost = sum(c for c, _, _ in combo)
        loss = sum(x for _, x, _ in combo)
        if cost <= budget and loss < best[0]:
            best = (loss, [k for _, _, k in combo])
    return best


@pytest.mark.parametrize("seed", range(12))
def test_greedy_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    count = 2 + seed % 2
    shapes = [tuple(int(v) for v in rng.integers(3, 9, size=2)) for _ in range(count)]
    energies = [rng.gamma(0.7, size=min(s)) * rng.uniform(0.1, 10) for s in shapes]
    total = sum(m * n for m, n in shapes)
    gaps = []
    for ratio in np.linspace(0.3, 1.0, 15):
        budget = int(ratio * total)
        try:
            alloc = allocate_ranks(energies, shapes, budget)
        except InputError:
            continue  # below one rank per matrix
        opt, _ = _brute(energies, shapes, budget)
        assert alloc.params <= budget
        assert alloc.loss >= opt - 1e-9
        # within the documented bound of the optimum at the budget ...
        assert alloc.loss - opt <= alloc.gap_bound + 1e-9
        # ... and exactly optimal at the budget it reached before the greedy fill
        opt_lagr, _ = _brute(energies, shapes, alloc.lagrangian_params)
        loss_at_lagr = allocate_ranks(energies, shapes, alloc.lagrangian_params).loss
        assert loss_at_lagr == pytest.approx(opt_lagr, abs=1e-9)
        gaps.append(alloc.loss - opt)
    assert gaps  # some budgets were feasible


def test_brute_force_gap_is_real_and_bounded():
    """A case where the Lagrangian greedy is not optimal: the gap is within its bound."""
    # matrix 0: one big component behind an expensive step; matrix 1: cheap steps
    energies = [np.array([10.0, 9.0, 0.1, 0.0]), np.array([4.0, 3.9, 3.8, 0.0])]
    shapes = [(8, 8), (4, 4)]
    found = False
    for budget in range(24, 100):
        alloc = allocate_ranks(energies, shapes, budget)
        opt, _ = _brute(energies, shapes, budget)
        assert alloc.loss - opt <= alloc.gap_bound + 1e-12
        found |= alloc.loss > opt + 1e-12
    assert found


def test_dense_when_factorising_does_not_save():
    shapes = [(4, 4)]  # max saving rank 1 (k(m+n)=8 < 16; k=2 gives 16, no saving)
    alloc = allocate_ranks([np.array([4.0, 3, 2, 1])], shapes, 16)
    assert alloc.ranks == [DENSE] and alloc.loss == 0.0 and alloc.params == 16
    alloc = allocate_ranks([np.array([4.0, 3, 2, 1])], shapes, 15)
    assert alloc.ranks == [1] and alloc.loss == pytest.approx(6.0)


def test_ratio_one_is_dense_everywhere():
    rng = np.random.default_rng(1)
    shapes = [(12, 7), (5, 9), (16, 16)]
    energies = [rng.random(min(s)) for s in shapes]
    total = sum(m * n for m, n in shapes)
    assert allocate_ranks(energies, shapes, total).ranks == [DENSE] * 3
    assert uniform_ranks(energies, shapes, 1.0).ranks == [DENSE] * 3


def test_planted_case_allocation_beats_uniform():
    """One matrix holds all the energy: the allocator spends the budget on it."""
    shapes = [(32, 32), (32, 32)]
    energies = [10 * 0.8 ** np.arange(32), np.full(32, 1e-3)]
    uni = uniform_ranks(energies, shapes, 0.5)
    alloc = allocate_ranks(energies, shapes, uni.params)
    assert alloc.loss < 0.5 * uni.loss
    assert alloc.ranks[0] > uni.ranks[0] and alloc.ranks[1] == 1


def test_max_ranks_cap_and_budget_too_small():
    shapes = [(20, 20)]
    e = [np.linspace(5, 0.1, 20)]
    assert allocate_ranks(e, shapes, 400, max_ranks=[3]).ranks == [3]
    with pytest.raises(InputError, match="below the cheapest allocation"):
        allocate_ranks(e, shapes, 39)
    with pytest.raises(InputError, match="finite and >= 0"):
        allocate_ranks([np.array([1.0, -1.0])], [(2, 2)], 4)
