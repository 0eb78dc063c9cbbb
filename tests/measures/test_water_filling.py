"""Tests of infospec.measures.water_filling against closed forms and float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from infospec.measures.water_filling import (
    DistortionRate,
    RateDistortion,
    WaterFilling,
    distortion_rate,
    gaussian_capacity,
    rate_distortion,
    water_filling_capacity,
)

LN2 = math.log(2.0)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _rd_ref(lam: np.ndarray, dist: float) -> tuple[float, float]:
    """R(D) by brentq on the water level theta (float64)."""
    theta = scipy.optimize.brentq(
        lambda th: np.minimum(th, lam).sum() - dist, 0.0, lam.max(), xtol=1e-15, rtol=1e-15
    )
    return float(0.5 * np.log(np.maximum(lam, theta) / theta).sum()), theta


def _dr_ref(lam: np.ndarray, rate: float) -> tuple[float, float]:
    """D(R) by brentq on log(theta) (float64)."""
    pos = lam[lam > 0]

    def excess(log_th: float) -> float:
        return 0.5 * np.maximum(0.0, np.log(pos) - log_th).sum() - rate

    lo = np.log(pos.max()) - 2 * rate - 1.0
    log_th = scipy.optimize.brentq(excess, lo, np.log(pos.max()), xtol=1e-14, rtol=1e-15)
    theta = math.exp(log_th)
    return float(np.minimum(theta, lam).sum()), theta


def _wf_ref(noise: np.ndarray, power: float) -> tuple[float, float]:
    """Water-filling by brentq on the water level nu (float64)."""
    if power == 0:
        return 0.0, float(noise.min())
    nu = scipy.optimize.brentq(
        lambda v: np.maximum(0.0, v - noise).sum() - power,
        noise.min(),
        noise.max() + power,
        xtol=1e-15,
        rtol=1e-15,
    )
    alloc = np.maximum(0.0, nu - noise)
    return float(0.5 * np.log1p(alloc / noise).sum()), nu


def test_reverse_water_filling_textbook():
    # lambda = (4, 1, 0.25), theta = 0.5: D = 0.5 + 0.5 + 0.25 = 1.25,
    # R = 1/2 log 8 + 1/2 log 2 + 0 = log 4.
    rd = rate_distortion(torch.tensor([4.0, 1.0, 0.25]), 1.25)
    assert isinstance(rd, RateDistortion)
    assert rd.rate.shape == () and rd.theta.shape == () and rd.component_rates.shape == (3,)
    assert rd.theta.item() == pytest.approx(0.5, rel=1e-15)
    assert rd.rate.item() == pytest.approx(math.log(4.0), rel=1e-15)
    torch.testing.assert_close(
        rd.component_rates,
        torch.tensor([0.5 * math.log(8.0), 0.5 * math.log(2.0), 0.0], dtype=torch.float64),
    )
    # Components stay in the caller's order.
    rd2 = rate_distortion(torch.tensor([0.25, 4.0, 1.0]), 1.25)
    torch.testing.assert_close(rd2.component_rates, rd.component_rates[[2, 0, 1]])


@pytest.mark.parametrize(
    ("dist", "theta", "rate"),
    [
        (0.3, 0.1, 0.5 * math.log(40.0 * 10.0 * 2.5)),  # all three active
        (0.75, 0.25, 0.5 * math.log(16.0 * 4.0)),  # theta on the smallest eigenvalue
        (2.25, 1.0, 0.5 * math.log(4.0)),  # theta on the middle eigenvalue
        (5.25, 4.0, 0.0),  # D = total variance
    ],
)
def test_reverse_water_filling_segments_and_breakpoints(dist, theta, rate):
    rd = rate_distortion([4.0, 1.0, 0.25], dist)
    assert rd.theta.item() == pytest.approx(theta, rel=1e-14)
    assert rd.rate.item() == pytest.approx(rate, rel=1e-14, abs=1e-15)


def test_rate_distortion_zero_eigenvalues_cost_nothing():
    rd = rate_distortion(torch.tensor([0.0, 2.0, 0.0, 1.0]), torch.tensor([0.5, 3.0]))
    # D = 0.5: theta = 0.25 on the two positive eigenvalues.
    assert rd.theta.tolist() == pytest.approx([0.25, 2.0])
    assert rd.rate[0].item() == pytest.approx(0.5 * math.log(8.0 * 4.0), rel=1e-14)
    assert rd.rate[1].item() == 0.0
    assert (rd.component_rates[:, [0, 2]] == 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_rate_distortion_matches_brentq(seed):
    rng = _rng(60 + seed)
    lam = rng.exponential(size=12) ** 2
    dists = lam.sum() * np.array([1e-4, 0.01, 0.2, 0.5, 0.9, 0.999])
    rd = rate_distortion(lam, dists)
    for i, dd in enumerate(dists):
        ref_rate, ref_theta = _rd_ref(lam, dd)
        assert rd.rate[i].item() == pytest.approx(ref_rate, rel=1e-11, abs=1e-12)
        assert rd.theta[i].item() == pytest.approx(ref_theta, rel=1e-11)


def test_rate_distortion_curve_over_a_grid():
    lam = torch.tensor([3.0, 2.0, 1.0, 0.5])
    dists = torch.linspace(0.01, 6.5, 200, dtype=torch.float64)
    rd = rate_distortion(lam, dists)
    assert rd.rate.shape == (200,) and rd.component_rates.shape == (200, 4)
    torch.testing.assert_close(rd.component_rates.sum(-1), rd.rate)
    torch.testing.assert_close(torch.minimum(lam.double(), rd.theta[:, None]).sum(-1), dists)
    assert (rd.rate.diff() < 0).all()


@pytest.mark.parametrize("scale", [1e-3, 1.0, 250.0])
def test_rate_distortion_scale_and_permutation_invariance(scale):
    lam = np.array([5.0, 0.1, 2.0, 2.0, 0.7])
    perm = [3, 0, 4, 1, 2]
    base = rate_distortion(lam, 3.0)
    scaled = rate_distortion(scale * lam, 3.0 * scale)
    permuted = rate_distortion(lam[perm], 3.0)
    assert scaled.rate.item() == pytest.approx(base.rate.item(), rel=1e-13)
    assert scaled.theta.item() == pytest.approx(scale * base.theta.item(), rel=1e-13)
    assert permuted.rate.item() == pytest.approx(base.rate.item(), rel=1e-14)
    torch.testing.assert_close(permuted.component_rates, base.component_rates[perm])


def test_rate_distortion_batched_equals_looped_and_broadcasts():
    rng = _rng(70)
    lam = torch.from_numpy(rng.uniform(0.0, 3.0, size=(3, 5)))
    fracs = torch.tensor([0.05, 0.3, 0.8, 1.0], dtype=torch.float64)
    dists = lam.sum(-1, keepdim=True) * fracs  # (3, 4)
    rd = rate_distortion(lam[:, None, :], dists)
    assert rd.rate.shape == (3, 4) and rd.component_rates.shape == (3, 4, 5)
    for i in range(3):
        for j in range(4):
            one = rate_distortion(lam[i], dists[i, j])
            assert rd.rate[i, j].item() == pytest.approx(one.rate.item(), rel=1e-14, abs=1e-15)
            assert rd.theta[i, j].item() == pytest.approx(one.theta.item(), rel=1e-14)
            torch.testing.assert_close(rd.component_rates[i, j], one.component_rates)
    # One distortion for the whole batch.
    same = rate_distortion(lam, 1.0)
    assert same.rate.shape == (3,)
    for i in range(3):
        assert same.rate[i].item() == pytest.approx(rate_distortion(lam[i], 1.0).rate.item())


def test_distortion_rate_textbook():
    dr = distortion_rate(torch.tensor([4.0, 1.0, 0.25]), math.log(4.0))
    assert isinstance(dr, DistortionRate)
    assert dr.theta.item() == pytest.approx(0.5, rel=1e-14)
    assert dr.distortion.item() == pytest.approx(1.25, rel=1e-14)
    torch.testing.assert_close(
        dr.component_rates,
        torch.tensor([0.5 * math.log(8.0), 0.5 * math.log(2.0), 0.0], dtype=torch.float64),
    )
    # In bits: 2 bits is log 4 nats.
    dr_bits = distortion_rate([4.0, 1.0, 0.25], 2.0, bits=True)
    assert dr_bits.distortion.item() == pytest.approx(1.25, rel=1e-14)
    assert dr_bits.component_rates.sum().item() == pytest.approx(2.0, rel=1e-14)


def test_distortion_rate_zero_rate_and_zero_eigenvalues():
    dr = distortion_rate(torch.tensor([0.0, 3.0, 1.0, 0.0]), torch.tensor([0.0, 0.5, 30.0]))
    assert dr.distortion[0].item() == pytest.approx(4.0, rel=1e-15)
    assert dr.theta[0].item() == pytest.approx(3.0, rel=1e-15)
    assert torch.isfinite(dr.distortion).all() and torch.isfinite(dr.component_rates).all()
    assert (dr.component_rates[:, [0, 3]] == 0).all()
    # High rate: theta = sqrt(3 * 1) exp(-R) on both positive eigenvalues, D = 2 theta.
    assert dr.theta[2].item() == pytest.approx(math.sqrt(3.0) * math.exp(-30.0), rel=1e-12)
    assert dr.distortion[2].item() == pytest.approx(2 * dr.theta[2].item(), rel=1e-12)


def test_distortion_rate_extreme_rate_stays_finite():
    dr = distortion_rate([0.0, 2.0, 1.0], torch.tensor([1e3, 1e6], dtype=torch.float64))
    assert dr.distortion.tolist() == [0.0, 0.0]  # theta underflows: documented
    assert torch.isfinite(dr.component_rates).all()
    torch.testing.assert_close(dr.component_rates.sum(-1), torch.tensor([1e3, 1e6]).double())
    # Split evenly up to half the log-ratio of the eigenvalues: 1/2 log 2 apart.
    diff = (dr.component_rates[:, 1] - dr.component_rates[:, 2]).tolist()
    assert diff == pytest.approx([0.5 * math.log(2.0)] * 2, rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_distortion_rate_matches_brentq(seed):
    rng = _rng(80 + seed)
    lam = rng.exponential(size=10) ** 2
    rates = np.array([0.0, 1e-3, 0.1, 1.0, 4.0, 25.0])
    dr = distortion_rate(lam, rates)
    for i, r in enumerate(rates):
        ref_dist, ref_theta = _dr_ref(lam, r) if r > 0 else (lam.sum(), lam.max())
        assert dr.distortion[i].item() == pytest.approx(ref_dist, rel=1e-10)
        assert dr.theta[i].item() == pytest.approx(ref_theta, rel=1e-10)
    torch.testing.assert_close(dr.component_rates.sum(-1), torch.from_numpy(rates))


def test_distortion_rate_round_trip_and_batched():
    lam = torch.from_numpy(_rng(90).uniform(0.01, 4.0, size=(4, 7)))
    rates = torch.tensor([0.0, 0.2, 1.5, 6.0], dtype=torch.float64)
    dr = distortion_rate(lam[:, None, :], rates)
    assert dr.distortion.shape == (4, 4) and dr.component_rates.shape == (4, 4, 7)
    rd = rate_distortion(lam[:, None, :], dr.distortion)
    torch.testing.assert_close(rd.rate, rates.expand(4, 4), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rd.theta, dr.theta, rtol=1e-10, atol=0)
    for i in range(4):
        for j in range(4):
            one = distortion_rate(lam[i], rates[j])
            assert dr.distortion[i, j].item() == pytest.approx(one.distortion.item(), rel=1e-14)


@pytest.mark.parametrize("d", [1, 4, 64])
@pytest.mark.parametrize(("s", "t"), [(1.0, 1.0), (3.0, 0.5), (0.01, 2.0)])
def test_capacity_seed_002_isotropic(d, s, t):
    # I(Z; Z + N) = d/2 log(1 + s^2 / t^2) for Z ~ N(0, s^2 I_d), N ~ N(0, t^2 I_d).
    c = gaussian_capacity(torch.full((d,), s**2, dtype=torch.float64), t**2)
    assert c.item() == pytest.approx(d / 2 * math.log(1 + s**2 / t**2), rel=1e-14)


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_capacity_invariant_to_common_scaling(scale):
    lam = np.array([3.0, 1.0, 0.2, 0.0])
    noise = np.array([0.5, 1.0, 2.0, 1.0])
    base = gaussian_capacity(lam, noise)
    assert gaussian_capacity(scale * lam, scale * noise).item() == pytest.approx(
        base.item(), rel=1e-13
    )
    assert base.item() == pytest.approx(0.5 * np.log1p(lam / noise).sum(), rel=1e-15)


def test_capacity_small_snr_uses_log1p():
    c = gaussian_capacity(torch.tensor([1e-20, 1e-20]), 1.0)
    assert c.item() == pytest.approx(1e-20, rel=1e-12)


def test_capacity_per_component_noise_broadcasts_over_batch():
    lam = torch.from_numpy(_rng(100).uniform(0.0, 2.0, size=(3, 4)))
    noise = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    c = gaussian_capacity(lam, noise)
    assert c.shape == (3,)
    for i in range(3):
        assert c[i].item() == pytest.approx(gaussian_capacity(lam[i], noise).item(), rel=1e-15)
    # A batch of noise levels against one spectrum.
    grid = gaussian_capacity(lam[0], torch.tensor([[0.5], [1.0], [2.0]]))
    assert grid.shape == (3,)
    assert grid[1].item() == pytest.approx(gaussian_capacity(lam[0], 1.0).item(), rel=1e-15)


@pytest.mark.parametrize(
    ("power", "nu", "alloc"),
    [
        (0.0, 1.0, [0.0, 0.0, 0.0]),
        (0.5, 1.5, [0.5, 0.0, 0.0]),
        (1.0, 2.0, [1.0, 0.0, 0.0]),  # level reaches the second channel
        (3.0, 3.0, [2.0, 1.0, 0.0]),
        (10.0, 17.0 / 3.0, [14.0 / 3.0, 11.0 / 3.0, 5.0 / 3.0]),
    ],
)
def test_water_filling_by_hand(power, nu, alloc):
    noise = [1.0, 2.0, 4.0]
    wf = water_filling_capacity(torch.tensor(noise), power)
    assert isinstance(wf, WaterFilling)
    assert wf.capacity.shape == () and wf.allocation.shape == (3,)
    assert wf.water_level.item() == pytest.approx(nu, rel=1e-15)
    torch.testing.assert_close(wf.allocation, torch.tensor(alloc, dtype=torch.float64))
    expected = sum(0.5 * math.log1p(p / n) for p, n in zip(alloc, noise, strict=True))
    assert wf.capacity.item() == pytest.approx(expected, rel=1e-14, abs=0)


def test_water_filling_keeps_caller_order_and_ties():
    wf = water_filling_capacity([4.0, 1.0, 2.0, 1.0], 2.0)  # nu = 2 fills both 1's
    assert wf.water_level.item() == pytest.approx(2.0, rel=1e-15)
    assert wf.allocation.tolist() == pytest.approx([0.0, 1.0, 0.0, 1.0])


@pytest.mark.parametrize("seed", range(4))
def test_water_filling_matches_brentq(seed):
    rng = _rng(110 + seed)
    noise = rng.uniform(0.05, 5.0, size=9)
    powers = np.array([0.0, 1e-3, 0.3, 2.0, 10.0, 1e3])
    wf = water_filling_capacity(noise, powers)
    for i, p in enumerate(powers):
        ref_c, ref_nu = _wf_ref(noise, p)
        assert wf.capacity[i].item() == pytest.approx(ref_c, rel=1e-11, abs=1e-15)
        assert wf.water_level[i].item() == pytest.approx(ref_nu, rel=1e-11)
    torch.testing.assert_close(wf.allocation.sum(-1), torch.from_numpy(powers))


def test_water_filling_equal_noise_is_seed_002_capacity():
    # With N_i = t^2 and P = d s^2, water-filling spreads power equally: d/2 log(1 + s^2/t^2).
    d, s2, t2 = 6, 2.5, 0.7
    wf = water_filling_capacity(torch.full((d,), t2, dtype=torch.float64), d * s2)
    assert wf.capacity.item() == pytest.approx(
        gaussian_capacity(torch.full((d,), s2, dtype=torch.float64), t2).item(), rel=1e-14
    )


def test_water_filling_batched_equals_looped():
    noise = torch.from_numpy(_rng(120).uniform(0.1, 3.0, size=(2, 5)))
    powers = torch.tensor([0.0, 0.7, 4.0], dtype=torch.float64)
    wf = water_filling_capacity(noise[:, None, :], powers)
    assert wf.capacity.shape == (2, 3) and wf.allocation.shape == (2, 3, 5)
    for i in range(2):
        for j in range(3):
            one = water_filling_capacity(noise[i], powers[j])
            assert wf.capacity[i, j].item() == pytest.approx(one.capacity.item(), rel=1e-14)
            torch.testing.assert_close(wf.allocation[i, j], one.allocation)


_LAM = np.array([3.0, 1.0, 0.5, 0.1])


def test_distortion_rate_bits_input():
    nats = distortion_rate(_LAM, 1.3)
    in_bits = distortion_rate(_LAM, 1.3 / LN2, bits=True)
    assert in_bits.distortion.item() == pytest.approx(nats.distortion.item(), rel=1e-14)
    torch.testing.assert_close(in_bits.component_rates, nats.component_rates / LN2)


_eigs = st.lists(st.floats(0.0, 100.0), min_size=1, max_size=8).filter(lambda v: max(v) > 1e-3)


@settings(max_examples=60, deadline=None)
@given(_eigs, st.floats(1e-6, 1.0), st.floats(1e-6, 1.0))
def test_property_rate_distortion_monotone_and_round_trip(eigs, f1, f2):
    lam = torch.tensor(eigs, dtype=torch.float64)
    lo, hi = sorted((f1, f2))
    dists = lam.sum() * torch.tensor([lo, hi], dtype=torch.float64)
    rd = rate_distortion(lam, dists)
    assert (rd.rate >= 0).all() and torch.isfinite(rd.rate).all()
    assert rd.rate[0] >= rd.rate[1] - 1e-12
    back = distortion_rate(lam, rd.rate)
    torch.testing.assert_close(back.distortion, dists, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1e-3, 100.0), min_size=1, max_size=8),
    st.floats(0.0, 1e3),
    st.floats(0.0, 1e3),
)
def test_property_water_filling(noise, p1, p2):
    n = torch.tensor(noise, dtype=torch.float64)
    powers = torch.tensor(sorted((p1, p2)), dtype=torch.float64)
    wf = water_filling_capacity(n, powers)
    assert (wf.capacity >= 0).all()
    assert (wf.allocation >= 0).all()
    torch.testing.assert_close(wf.allocation.sum(-1), powers, rtol=1e-12, atol=1e-9)
    if powers[1] > powers[0] * (1 + 1e-9) + 1e-9:
        assert wf.capacity[1] > wf.capacity[0]
    else:
        assert wf.capacity[1] >= wf.capacity[0] - 1e-12


@pytest.mark.parametrize(
    ("func", "target", "want"),
    [
        # R(D) at D = 0.5 on (4, 1, 0): theta = 0.25; a dead component's dR/dlam = 1/(2 theta)
        (rate_distortion, 0.5, [1 / 8, 1 / 2, 2.0]),
        # D(R): theta set by the live ones; a dead component's dD/dlam = 1 (D sums it)
        (distortion_rate, 2.0, None),
    ],
)
def test_a_zero_eigenvalue_has_a_finite_exact_gradient(func, target, want):
    """log(0) was taken with its infinite gradient and multiplied by 0: NaN."""
    lam = torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    out = func(lam, target)
    value = out.rate if func is rate_distortion else out.distortion
    (grad,) = torch.autograd.grad(value, lam)
    assert bool(torch.isfinite(grad).all())
    h = 1e-7  # one-sided: the eigenvalue cannot go below 0
    for i in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[i] = h
        moved = func(lam.detach() + step, target)
        fd = (float(moved.rate if func is rate_distortion else moved.distortion) - float(value)) / h
        assert float(grad[i]) == pytest.approx(fd, rel=1e-5)
    if want is not None:
        assert grad.tolist() == pytest.approx(want, rel=1e-12)
    else:
        assert float(grad[2]) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e-3, 1e3, 1e170, 1e300, 1e307])
def test_water_filling_is_exact_when_noise_and_power_scale_together(scale):
    """Was inf at noise ~1e308 (the breakpoint sums overflowed) and 0 at 1e300."""
    noise = torch.tensor([1.0, 2.0, 4.0, 0.5], dtype=torch.float64)
    nu = 13 / 6  # (3 + 1 + 2 + 0.5) / 3: the 4.0 channel stays closed
    want = 0.5 * (math.log(nu) + math.log(nu / 2) + math.log(nu / 0.5))
    wf = water_filling_capacity(noise * scale, 3.0 * scale)
    assert float(wf.capacity) == pytest.approx(want, rel=1e-14)
    assert float(wf.water_level) / scale == pytest.approx(nu, rel=1e-14)
    assert (wf.allocation / scale).tolist() == pytest.approx([nu - 1, nu - 2, 0.0, nu - 0.5])


def test_water_filling_across_the_whole_float64_range():
    # noises 600 decades apart: the quiet channel takes all the power, C = 1/2 log1p(1e300)
    wf = water_filling_capacity(torch.tensor([1e-300, 1e300], dtype=torch.float64), 1.0)
    assert float(wf.capacity) == pytest.approx(0.5 * math.log1p(1e300), rel=1e-14)
    # a subnormal noise (1e-310) keeps its share of the power
    sub = water_filling_capacity(torch.tensor([1e-310, 2e-310], dtype=torch.float64), 1e-310)
    assert float(sub.capacity) == pytest.approx(
        float(water_filling_capacity(torch.tensor([1.0, 2.0]), 1.0).capacity), rel=1e-12
    )
    # a power far below the noise: equal noises share it exactly (the water level
    # N + P/k used to absorb P, leaving no allocation and C = 0)
    tiny = water_filling_capacity(torch.tensor([1e300, 1e300], dtype=torch.float64), 1.0)
    assert tiny.allocation.tolist() == [0.5, 0.5]
    assert float(tiny.capacity) == pytest.approx(5e-301, rel=1e-14)
    low = water_filling_capacity(torch.tensor([1.0, 1.0 + 2**-40, 3.0], dtype=torch.float64), 1e-9)
    assert float(low.allocation.sum()) == pytest.approx(1e-9, rel=1e-12)
    x = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: water_filling_capacity(t, 3.0).capacity, (x,))
    # equal noises: dC/dN_i = 1/(2 nu) - 1/(2 N_i) = 1/4 - 1/2 at N = 1, P = 3
    ones = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(water_filling_capacity(ones, 3.0).capacity, ones)
    assert grad.tolist() == pytest.approx([-0.25] * 3, rel=1e-12)


def test_gaussian_capacity_of_a_ratio_beyond_float64():
    """lam / t^2 = 1e600 overflowed to inf: the capacity is 1/2 log(1e600), finite."""
    got = float(gaussian_capacity([1e300, 1.0], 1e-300))
    want = 0.5 * (math.log(1e300) - math.log(1e-300)) + 0.5 * math.log1p(1e300)
    assert got == pytest.approx(want, rel=1e-14)
