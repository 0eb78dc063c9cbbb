"""Tests of infospec.measures.latent.latent_capacity against closed forms and NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from infospec._errors import InputError
from infospec.measures.latent import LatentCapacity, latent_capacity

LN2 = math.log(2.0)


def _reference(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension capacity and KL rate in nats, straight from the definitions."""
    s2 = mu.var(axis=0)  # ddof = 0
    t2 = np.exp(logvar).mean(axis=0)
    cap = 0.5 * np.log(1.0 + s2 / t2)
    kl = 0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar).mean(axis=0)
    return cap, kl


def _codes(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((n, d)) * rng.uniform(0.05, 3.0, d) + rng.normal(0, 1, d)
    logvar = rng.normal(-1.0, 1.0, (n, d))
    return mu, logvar


def test_seed_closed_form_isotropic():
    # Z ~ spread s^2 per dimension, noise t^2: I = d/2 log(1 + s^2/t^2) (seed 002)
    s, t2, d = 1.7, 0.4, 5
    mu = np.tile(np.array([[-s], [s]]), (3, d))  # population variance s^2 exactly
    logvar = np.full_like(mu, math.log(t2))
    cap = latent_capacity(mu, logvar)
    assert float(cap.total) == pytest.approx(d / 2 * math.log2(1 + s**2 / t2), rel=1e-13)
    np.testing.assert_allclose(cap.per_dim.numpy(), 0.5 * math.log2(1 + s**2 / t2), rtol=1e-13)
    # KL of N(+-s, t2) against N(0, 1): 1/2 (s^2 + t2 - 1 - log t2) per dimension
    kl = 0.5 * (s**2 + t2 - 1 - math.log(t2)) / LN2
    assert float(cap.kl_rate) == pytest.approx(d * kl, rel=1e-13)
    assert cap.active == tuple(range(d))
    assert cap.n_active == d and cap.bits is True


def test_equality_case_of_the_bound():
    # mean zero, constant sigma, s^2 + t^2 = 1: capacity == KL rate
    s2 = 0.64
    mu = np.array([[-0.8], [0.8]])
    logvar = np.full((2, 1), math.log(1 - s2))
    cap = latent_capacity(mu, logvar, bits=False)
    assert float(cap.total) == pytest.approx(-0.5 * math.log(1 - s2), rel=1e-13)
    assert float(cap.kl_rate) == pytest.approx(float(cap.total), rel=1e-12)


def test_matches_numpy_reference_with_heteroscedastic_noise():
    mu, logvar = _codes(257, 6, seed=3)
    cap = latent_capacity(mu, logvar, bits=False)
    ref_cap, ref_kl = _reference(mu, logvar)
    np.testing.assert_allclose(cap.per_dim.numpy(), ref_cap, rtol=1e-12)
    np.testing.assert_allclose(cap.kl_per_dim.numpy(), ref_kl, rtol=1e-12)
    assert float(cap.total) == pytest.approx(ref_cap.sum(), rel=1e-12)
    assert float(cap.kl_rate) == pytest.approx(ref_kl.sum(), rel=1e-12)
    assert cap.per_dim.dtype == torch.float64


def test_bits_and_nats_differ_by_ln2():
    mu, logvar = _codes(64, 4, seed=1)
    b = latent_capacity(mu, logvar, bits=True)
    n = latent_capacity(mu, logvar, bits=False)
    for field in ("total", "per_dim", "kl_rate", "kl_per_dim"):
        np.testing.assert_allclose(
            getattr(b, field).numpy() * LN2, getattr(n, field).numpy(), rtol=1e-14
        )
    assert b.active == n.active and n.bits is False


def test_permutation_of_dimensions_permutes_the_result():
    mu, logvar = _codes(100, 7, seed=2)
    perm = np.random.default_rng(0).permutation(7)
    a = latent_capacity(mu, logvar)
    b = latent_capacity(mu[:, perm], logvar[:, perm])
    np.testing.assert_allclose(b.per_dim.numpy(), a.per_dim.numpy()[perm], rtol=1e-14)
    np.testing.assert_allclose(b.kl_per_dim.numpy(), a.kl_per_dim.numpy()[perm], rtol=1e-14)
    assert float(b.total) == pytest.approx(float(a.total), rel=1e-14)
    assert float(b.kl_rate) == pytest.approx(float(a.kl_rate), rel=1e-14)
    assert sorted(int(perm[j]) for j in b.active) == list(a.active)


def test_permutation_of_rows_changes_nothing():
    mu, logvar = _codes(50, 3, seed=4)
    rows = np.random.default_rng(1).permutation(50)
    a = latent_capacity(mu, logvar)
    b = latent_capacity(mu[rows], logvar[rows])
    np.testing.assert_allclose(b.per_dim.numpy(), a.per_dim.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.kl_per_dim.numpy(), a.kl_per_dim.numpy(), rtol=1e-12)


def test_capacity_is_invariant_to_a_common_scaling_of_signal_and_noise():
    # mu -> c mu, sigma -> c sigma leaves s^2/t^2 and so the capacity unchanged (not the KL)
    mu, logvar = _codes(80, 4, seed=5)
    a = latent_capacity(mu, logvar)
    c = 3.5
    b = latent_capacity(c * mu, logvar + 2 * math.log(c))
    np.testing.assert_allclose(b.per_dim.numpy(), a.per_dim.numpy(), rtol=1e-12)
    assert float(b.kl_rate) != pytest.approx(float(a.kl_rate), rel=1e-3)


@pytest.mark.parametrize("c", [1e-300, 1e-170, 1e170, 1e300])
def test_the_scaling_invariance_holds_to_the_edges_of_float64(c):
    """The squares of mu overflowed beyond ~1e154 (capacity inf) and underflowed below
    ~1e-154 (a live dimension read as collapsed: capacity 0)."""
    mu, logvar = _codes(80, 4, seed=6)
    a = latent_capacity(mu, logvar)
    b = latent_capacity(c * mu, logvar + 2 * math.log(c))
    # logvar + 2 log c carries ~1e-13 of relative round-off at |log c| ~ 700
    np.testing.assert_allclose(b.per_dim.numpy(), a.per_dim.numpy(), rtol=1e-11)
    assert b.active == (() if c < 1 else (0, 1, 2, 3))


def test_collapsed_dimension_carries_nothing_and_is_inactive():
    rng = np.random.default_rng(6)
    mu = rng.standard_normal((40, 3))
    mu[:, 1] = 0.7  # posterior mean does not depend on x
    logvar = rng.normal(0, 0.3, (40, 3))
    cap = latent_capacity(mu, logvar)
    assert float(cap.per_dim[1]) == 0.0
    assert float(cap.kl_per_dim[1]) > 0  # an offset mean still costs KL
    assert cap.active == (0, 2)


def test_active_threshold_is_burda_rule():
    # Var_x[mu] = 0.02, 0.005 and 0.0101 against the default threshold 0.01
    spreads = np.array([0.02, 0.005, 0.0101])
    mu = np.array([[-1.0], [1.0]]) * np.sqrt(spreads)
    logvar = np.zeros_like(mu)
    assert latent_capacity(mu, logvar).active == (0, 2)
    assert latent_capacity(mu, logvar, active_threshold=0.001).active == (0, 1, 2)
    assert latent_capacity(mu, logvar, active_threshold=0.015).active == (0,)
    assert latent_capacity(mu, logvar, active_threshold=0).active == (0, 1, 2)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 30),
    d=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-3, 1e2),
    shift=st.floats(-5, 5),
    noise=st.floats(-8, 8),
)
def test_capacity_never_exceeds_kl_rate(n, d, seed, scale, shift, noise):
    rng = np.random.default_rng(seed)
    mu = scale * rng.standard_normal((n, d)) + shift
    logvar = noise + rng.normal(0, 2.0, (n, d))
    cap = latent_capacity(mu, logvar, bits=False)
    slack = 1e-12 * (1 + cap.kl_per_dim.abs())
    assert bool((cap.per_dim <= cap.kl_per_dim + slack).all())
    assert bool((cap.per_dim >= 0).all())
    assert float(cap.total) <= float(cap.kl_rate) + 1e-12 * (1 + float(cap.kl_rate))


def test_capacity_approaches_the_mutual_information_of_a_gaussian_code():
    # mu(x) ~ N(0, s^2) over many inputs, constant sigma: I(X; Z) -> 1/2 log(1 + s^2/t^2).
    # I(X; Z) for x uniform over the N rows, by Monte Carlo with its standard error.
    rng = np.random.default_rng(7)
    n, s2, t2 = 2000, 2.0, 0.5
    mu = rng.standard_normal((n, 1)) * math.sqrt(s2)
    logvar = np.full((n, 1), math.log(t2))
    cap = float(latent_capacity(mu, logvar, bits=False).total)
    x = rng.integers(0, n, 2500)
    z = mu[x, 0] + math.sqrt(t2) * rng.standard_normal(2500)
    logq = -0.5 * (z[:, None] - mu[None, :, 0]) ** 2 / t2  # shared constants cancel
    own = logq[np.arange(2500), x]
    marg = np.logaddexp.reduce(logq, axis=1) - math.log(n)
    terms = own - marg
    mi, se = terms.mean(), terms.std(ddof=1) / math.sqrt(terms.size)
    assert se < 0.02
    assert abs(mi - cap) < 4 * se + 0.01


def test_gradients_are_finite_and_match_autograd_reference():
    mu, logvar = _codes(20, 3, seed=8)
    mu[:, 2] = 0.0  # a collapsed dimension must not give a NaN gradient
    m = torch.tensor(mu, requires_grad=True)
    lv = torch.tensor(logvar, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: latent_capacity(a, b, bits=False).total, (m, lv), eps=1e-6, atol=1e-6
    )
    latent_capacity(m, lv).total.backward()
    assert bool(torch.isfinite(m.grad).all()) and bool(torch.isfinite(lv.grad).all())


def test_float32_leaf_stays_float32_and_extreme_log_variances_are_finite():
    m = torch.randn(16, 2, requires_grad=True)
    lv = torch.zeros(16, 2, requires_grad=True)
    assert latent_capacity(m, lv).total.dtype == torch.float32
    mu, _ = _codes(10, 2, seed=9)
    for scale, level in ((1e-150, -700.0), (1e150, 700.0)):
        lv = np.full((10, 2), level)
        lv[0] += 1.0
        cap = latent_capacity(mu * scale, lv, bits=False)
        s2 = mu.var(0) * scale**2
        log_t2 = level + np.log((np.e + 9) / 10)
        np.testing.assert_allclose(
            cap.per_dim.numpy(), 0.5 * np.logaddexp(0, np.log(s2) - log_t2), rtol=1e-12
        )
        assert bool(torch.isfinite(cap.total)) and bool(torch.isfinite(cap.kl_rate))


def test_result_is_a_frozen_dataclass():
    cap = latent_capacity([[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]])
    assert isinstance(cap, LatentCapacity)
    with pytest.raises(AttributeError):
        cap.total = torch.tensor(0.0)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mu", "logvar", "match"),
    [
        (np.zeros((4, 2)), np.zeros((4, 3)), "same shape"),
        (np.zeros(4), np.zeros(4), "'mu' argument of latent_capacity must have exactly 2"),
        (np.zeros((4, 2)), np.zeros((2, 4, 2)), "'logvar' argument .* exactly 2"),
        (np.zeros((1, 3)), np.zeros((1, 3)), "at least 2 rows"),
        (np.zeros((3, 0)), np.zeros((3, 0)), "1 column"),
        (np.array([[0.0], [np.nan]]), np.zeros((2, 1)), "'mu' .* must be finite"),
        (np.zeros((2, 1)), np.array([[0.0], [np.inf]]), "'logvar' .* must be finite"),
    ],
)
def test_bad_input_is_named(mu, logvar, match):
    with pytest.raises(InputError, match=match):
        latent_capacity(mu, logvar)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.01", True])
def test_bad_threshold(bad):
    with pytest.raises(InputError, match="'active_threshold' parameter of latent_capacity"):
        latent_capacity(np.zeros((2, 1)), np.zeros((2, 1)), active_threshold=bad)


def test_bad_bits():
    with pytest.raises(InputError, match="'bits' parameter of latent_capacity"):
        latent_capacity(np.zeros((2, 1)), np.zeros((2, 1)), bits="yes")
