"""Tests of infospec.measures.mixture against quadrature, Monte Carlo and closed limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from infospec._errors import InputError
from infospec.measures.mixture import (
    mixture_entropy_bounds,
    mixture_entropy_monte_carlo,
    mixture_entropy_series,
)

H1 = 0.5 * math.log(2 * math.pi * math.e)
K_SE = 4.0  # bounds must hold within this many Monte Carlo standard errors


def _random_mixture(k: int, d: int, seed: int, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(k))
    means = rng.normal(0, spread, (k, d))
    a = rng.standard_normal((k, d, d))
    covs = a @ a.transpose(0, 2, 1) / d + 0.2 * np.eye(d)
    return w, means, covs


def _entropy_quadrature_1d(w, means, variances) -> float:
    def f(x):
        return sum(
            wi * scipy.stats.norm.pdf(x, m, math.sqrt(v))
            for wi, m, v in zip(w, means, variances, strict=True)
        )

    lo, hi = (
        min(means) - 12 * math.sqrt(max(variances)),
        max(means) + 12 * math.sqrt(max(variances)),
    )
    val, _ = scipy.integrate.quad(lambda x: -f(x) * math.log(max(f(x), 1e-300)), lo, hi, limit=400)
    return val


# ------------------------------------------------------------------ pairwise distances


def test_pairwise_kl_and_bhattacharyya_match_direct_formulas():
    w, means, covs = _random_mixture(3, 4, seed=0)
    b = mixture_entropy_bounds(w, means, covs)
    for i in range(3):
        for j in range(3):
            si, sj = covs[i], covs[j]
            delta = means[j] - means[i]
            kl = 0.5 * (
                np.trace(np.linalg.solve(sj, si))
                + delta @ np.linalg.solve(sj, delta)
                - 4
                + np.linalg.slogdet(sj)[1]
                - np.linalg.slogdet(si)[1]
            )
            avg = (si + sj) / 2
            bd = delta @ np.linalg.solve(avg, delta) / 8 + 0.5 * (
                np.linalg.slogdet(avg)[1]
                - 0.5 * (np.linalg.slogdet(si)[1] + np.linalg.slogdet(sj)[1])
            )
            assert float(b.kl[i, j]) == pytest.approx(kl, rel=1e-10, abs=1e-12)
            assert float(b.bhattacharyya[i, j]) == pytest.approx(bd, rel=1e-10, abs=1e-12)
    assert np.allclose(np.diag(b.kl.numpy()), 0, atol=1e-12)
    assert np.allclose(b.bhattacharyya.numpy(), b.bhattacharyya.numpy().T, atol=1e-12)


def test_bhattacharyya_matches_its_integral_in_one_dimension():
    m1, v1, m2, v2 = 0.3, 0.5, 1.7, 2.0
    b = mixture_entropy_bounds([0.5, 0.5], [[m1], [m2]], [[[v1]], [[v2]]])
    coeff, _ = scipy.integrate.quad(
        lambda x: math.sqrt(
            scipy.stats.norm.pdf(x, m1, math.sqrt(v1)) * scipy.stats.norm.pdf(x, m2, math.sqrt(v2))
        ),
        -30,
        30,
    )
    assert float(b.bhattacharyya[0, 1]) == pytest.approx(-math.log(coeff), rel=1e-9)
    kl, _ = scipy.integrate.quad(
        lambda x: (
            scipy.stats.norm.pdf(x, m1, math.sqrt(v1))
            * (
                scipy.stats.norm.logpdf(x, m1, math.sqrt(v1))
                - scipy.stats.norm.logpdf(x, m2, math.sqrt(v2))
            )
        ),
        -30,
        30,
    )
    assert float(b.kl[0, 1]) == pytest.approx(kl, rel=1e-9)


# ------------------------------------------------------------------ the bounds


@pytest.mark.parametrize(
    ("w", "means", "variances"),
    [
        ([0.5, 0.5], [-1.0, 1.0], [1.0, 1.0]),
        ([0.2, 0.3, 0.5], [0.0, 0.5, 3.0], [0.3, 1.0, 2.0]),
        ([0.9, 0.1], [0.0, 4.0], [1.0, 0.05]),
    ],
)
def test_bounds_bracket_the_quadrature_entropy_in_one_dimension(w, means, variances):
    h = _entropy_quadrature_1d(w, means, variances)
    b = mixture_entropy_bounds(w, [[m] for m in means], [[[v]] for v in variances])
    assert float(b.lower) <= h + 1e-9 <= float(b.upper) + 2e-9
    comp = sum(
        wi * 0.5 * math.log(2 * math.pi * math.e * v) for wi, v in zip(w, variances, strict=True)
    )
    hc = -sum(wi * math.log(wi) for wi in w)
    assert comp - 1e-12 <= float(b.lower) and float(b.upper) <= comp + hc + 1e-12


@pytest.mark.parametrize(
    ("k", "d", "seed", "spread"), [(3, 2, 1, 1.0), (5, 3, 2, 1.5), (4, 6, 3, 0.7)]
)
def test_bounds_hold_against_monte_carlo_with_general_covariances(k, d, seed, spread):
    w, means, covs = _random_mixture(k, d, seed, spread)
    b = mixture_entropy_bounds(w, means, covs)
    g = torch.Generator().manual_seed(seed)
    mc = mixture_entropy_monte_carlo(w, means, covs, n_samples=40_000, generator=g)
    se = float(mc.standard_error)
    assert 0 < se < 0.02  # the SE is computed and small enough to make the check bite
    assert float(b.lower) <= float(mc.entropy) + K_SE * se
    assert float(mc.entropy) <= float(b.upper) + K_SE * se
    assert float(b.lower) < float(b.upper)


def test_bounds_are_exact_for_one_identical_or_far_apart_components():
    cov = np.array([[2.0, 0.3], [0.3, 0.5]])
    h_gauss = H1 * 2 + 0.5 * np.linalg.slogdet(cov)[1]
    one = mixture_entropy_bounds([1.0], [[1.0, 2.0]], cov[None])
    assert float(one.lower) == pytest.approx(h_gauss, rel=1e-12)
    assert float(one.upper) == pytest.approx(h_gauss, rel=1e-12)
    same = mixture_entropy_bounds([0.25, 0.75], [[1.0, 2.0]] * 2, np.stack([cov, cov]))
    assert float(same.lower) == pytest.approx(h_gauss, rel=1e-12)
    assert float(same.upper) == pytest.approx(h_gauss, rel=1e-12)
    far = mixture_entropy_bounds([0.25, 0.75], [[0.0, 0.0], [1e3, 0.0]], np.stack([cov, cov]))
    hc = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert float(far.lower) == pytest.approx(h_gauss + hc, rel=1e-12)
    assert float(far.upper) == pytest.approx(h_gauss + hc, rel=1e-12)


def test_bounds_invariances_and_units():
    w, means, covs = _random_mixture(4, 3, seed=5)
    base = mixture_entropy_bounds(w, means, covs)
    perm = np.array([2, 0, 3, 1])
    p = mixture_entropy_bounds(w[perm], means[perm], covs[perm])
    assert float(p.lower) == pytest.approx(float(base.lower), rel=1e-12)
    assert float(p.upper) == pytest.approx(float(base.upper), rel=1e-12)
    # a rotation and shift of space leaves entropy and both bounds unchanged
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    r = mixture_entropy_bounds(w, means @ q.T + 5.0, q @ covs @ q.T)
    assert float(r.lower) == pytest.approx(float(base.lower), rel=1e-10)
    assert float(r.upper) == pytest.approx(float(base.upper), rel=1e-10)
    # scaling space by a adds d log a to every entropy
    a = 3.0
    s = mixture_entropy_bounds(w, a * means, a**2 * covs)
    assert float(s.upper) == pytest.approx(float(base.upper) + 3 * math.log(a), rel=1e-10)
    bits = mixture_entropy_bounds(w, means, covs, bits=True)
    assert float(bits.upper) * math.log(2) == pytest.approx(float(base.upper), rel=1e-14)
    assert float(bits.lower) * math.log(2) == pytest.approx(float(base.lower), rel=1e-14)


def test_zero_weight_component_is_ignored():
    _, means, covs = _random_mixture(2, 2, seed=6)
    b2 = mixture_entropy_bounds([1.0, 0.0], means, covs)
    b1 = mixture_entropy_bounds([1.0], means[:1], covs[:1])
    assert float(b2.upper) == pytest.approx(float(b1.upper), rel=1e-12)
    assert float(b2.lower) == pytest.approx(float(b1.lower), rel=1e-12)


def test_bounds_are_differentiable():
    w, means, covs = _random_mixture(2, 2, seed=7)
    m = torch.tensor(means, requires_grad=True)
    c = torch.tensor(covs, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda mm, cc: mixture_entropy_bounds(w, mm, (cc + cc.transpose(-1, -2)) / 2).lower,
        (m, c),
    )
    assert torch.autograd.gradcheck(lambda mm: mixture_entropy_bounds(w, mm, covs).upper, (m,))


# ------------------------------------------------------------------ Monte Carlo


def test_monte_carlo_standard_error_is_the_spread_of_the_estimate():
    # repeated estimates scatter with the standard deviation the SE predicts
    w, means, covs = [0.5, 0.5], [[-1.0], [1.0]], [[[1.0]], [[0.5]]]
    est = [
        mixture_entropy_monte_carlo(
            w, means, covs, n_samples=2000, generator=torch.Generator().manual_seed(s)
        )
        for s in range(60)
    ]
    values = np.array([float(e.entropy) for e in est])
    ses = np.array([float(e.standard_error) for e in est])
    assert values.std(ddof=1) == pytest.approx(ses.mean(), rel=0.3)
    h = _entropy_quadrature_1d([0.5, 0.5], [-1.0, 1.0], [1.0, 0.5])
    assert abs(values.mean() - h) < K_SE * ses.mean() / math.sqrt(60)
    assert est[0].n_samples == 2000


# ------------------------------------------------------------------ the series


def test_series_matches_quadrature_for_two_components_in_one_dimension():
    # q = 2, n = 1: h depends only on delta = (W1 - W2)/2 ~ N(0, mu/2); average by Gauss-Hermite
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / math.sqrt(2 * math.pi)
    x = np.linspace(-30, 30, 60001)
    dx = x[1] - x[0]

    def h(delta):
        f = 0.5 * (scipy.stats.norm.pdf(x, -delta) + scipy.stats.norm.pdf(x, delta))
        return -np.sum(f * np.log(np.maximum(f, 1e-300))) * dx

    for mu in (0.02, 0.05):
        avg = sum(wt * h(nd * math.sqrt(mu / 2)) for nd, wt in zip(nodes, weights, strict=True))
        s2 = float(mixture_entropy_series(1, 2, mu))
        s1 = float(mixture_entropy_series(1, 2, mu, order=1))
        assert abs(avg - s2) < 0.3 * mu**3  # the neglected term is about 0.25 mu^3
        assert abs(avg - s1) > 0.5 * (3 / 16) * mu**2  # and the mu^2 term is needed


def test_series_against_monte_carlo_over_random_means():
    # E_W h(f_W) by Monte Carlo over (W, J, X); the control variate log phi(X - W_J) has the
    # known mean -n h_sigma, so the terms log phi_J(X) - log f_W(X) carry the whole variance.
    n, q, s2, sigma2 = 3, 4, 0.04, 0.5
    rng = np.random.default_rng(0)
    reps = 400_000
    w = rng.normal(0, math.sqrt(s2), (reps, q, n))
    j = rng.integers(0, q, reps)
    x = w[np.arange(reps), j] + math.sqrt(sigma2) * rng.standard_normal((reps, n))
    sq = ((x[:, None, :] - w) ** 2).sum(-1) / (2 * sigma2)  # (reps, q)
    own = -sq[np.arange(reps), j]
    log_mix = np.logaddexp.reduce(-sq, axis=1) - math.log(q)
    terms = own - log_mix  # mean = E_W h - n h_sigma
    est, se = terms.mean(), terms.std(ddof=1) / math.sqrt(reps)
    hs = n * 0.5 * math.log(2 * math.pi * math.e * sigma2)
    series = float(mixture_entropy_series(n, q, s2, sigma2)) - hs
    first = float(mixture_entropy_series(n, q, s2, sigma2, order=1)) - hs
    mu = s2 / sigma2
    assert se < 1e-3
    assert abs(est - series) < K_SE * se + (n * mu) ** 3 / 4
    assert abs(est - first) > K_SE * se  # the second-order term is resolved


def test_series_limits_and_units():
    assert float(mixture_entropy_series(4, 1, 0.3)) == pytest.approx(4 * H1, rel=1e-15)
    assert float(mixture_entropy_series(2, 3, 0.0)) == pytest.approx(2 * H1, rel=1e-15)
    # q -> infinity: the series of n h + n/2 log(1 + mu)
    mu, n = 0.01, 5
    big = float(mixture_entropy_series(n, 10**9, mu)) - n * H1
    assert big == pytest.approx(n / 2 * (mu - mu**2 / 2), rel=1e-7)
    # noise variance enters through mu = s^2 / sigma^2 and h_sigma
    a = float(mixture_entropy_series(2, 3, 0.2, 2.0))
    b = float(mixture_entropy_series(2, 3, 0.1, 1.0))
    assert a == pytest.approx(b + math.log(2.0), rel=1e-14)
    nats = mixture_entropy_series(2, 3, torch.tensor([0.0, 0.1, 0.2]))
    bits = mixture_entropy_series(2, 3, torch.tensor([0.0, 0.1, 0.2]), bits=True)
    np.testing.assert_allclose(bits.numpy() * math.log(2), nats.numpy(), rtol=1e-14)
    assert mixture_entropy_series(2, 3, 0.1, order=0) == pytest.approx(2 * H1)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("w", "means", "covs", "match"),
    [
        ([0.5, 0.5], [[0.0]], [[[1.0]]], "same K components"),
        ([1.0], [0.0], [[[1.0]]], "'means' argument .* shape \\(K, d\\)"),
        ([1.0], [[0.0]], [[1.0]], "'covariances' argument .* shape \\(K, d, d\\)"),
        ([[1.0]], [[0.0]], [[[1.0]]], "'weights' argument .* shape \\(K,\\)"),
        ([0.6, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "summing to 1"),
        ([1.5, -0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "summing to 1"),
        ([1.0], [[np.nan]], [[[1.0]]], "'means' .* must be finite"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]], "symmetric"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], "positive-definite"),
        ([1.0], [[0.0]], [[[0.0]]], "component 0"),
    ],
)
def test_bad_mixture_input_is_named(w, means, covs, match):
    with pytest.raises(InputError, match=match):
        mixture_entropy_bounds(w, means, covs)


@pytest.mark.parametrize("bad", [1, 0, 2.5, "100"])
def test_bad_n_samples(bad):
    with pytest.raises(InputError, match="'n_samples' parameter of mixture_entropy_monte_carlo"):
        mixture_entropy_monte_carlo([1.0], [[0.0]], [[[1.0]]], n_samples=bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "'dim' parameter"),
        ({"n_components": 1.5}, "'n_components' parameter"),
        ({"mean_var": -0.1}, "'mean_var' argument .* >= 0"),
        ({"mean_var": float("inf")}, "'mean_var' .* finite"),
        ({"noise_var": 0.0}, "'noise_var' parameter"),
        ({"order": 3}, "'order' parameter .* 0, 1 or 2"),
    ],
)
def test_bad_series_input(kwargs, match):
    args = {"dim": 2, "n_components": 3, "mean_var": 0.1} | kwargs
    with pytest.raises(InputError, match=match):
        mixture_entropy_series(**args)


def test_a_zero_weight_has_the_exact_gradient_not_nan():
    """The estimator took log(c) with an infinite gradient at c = 0: the weight gradient was
    NaN. Checked along the simplex against a finite difference, and against the
    closed-form partial derivative h_k - log S_k - sum_i c_i e^{-D_ik} / S_i."""
    m = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    cov = torch.eye(2, dtype=torch.float64).repeat(3, 1, 1)
    w = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    b = mixture_entropy_bounds(w, m, cov)
    (g_up,) = torch.autograd.grad(b.upper, w, retain_graph=True)
    (g_low,) = torch.autograd.grad(b.lower, w)
    h = 0.5 * math.log(2 * math.pi * math.e) * 2  # each component's entropy, d = 2
    for grad, dist in ((g_up, b.kl), (g_low, b.bhattacharyya)):
        assert bool(torch.isfinite(grad).all())
        e = torch.exp(-dist.detach())
        s = e @ w.detach()
        want = h - torch.log(s) - e.mT @ (w.detach() / s)
        assert torch.allclose(grad, want, rtol=1e-12, atol=1e-12)
    step = 1e-7
    moved = mixture_entropy_bounds(w.detach() + torch.tensor([-step, 0.0, step]), m, cov)
    fd = (float(moved.upper) - float(b.upper.detach())) / step
    assert float(g_up[2] - g_up[0]) == pytest.approx(fd, rel=1e-5)
