"""Tests of infospec.measures.information against closed forms and float64 references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from infospec._errors import InfospecWarning, InputError
from infospec.measures.information import (
    DistortionRate,
    RateDistortion,
    WaterFilling,
    coding_rate,
    distortion_rate,
    gaussian_capacity,
    gaussian_entropy,
    rate_distortion,
    rate_reduction,
    water_filling_capacity,
)

LN2 = math.log(2.0)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_spd(d: int, seed: int) -> np.ndarray:
    a = _rng(seed).standard_normal((d, d + 3))
    return a @ a.T / (d + 3) + 0.1 * np.eye(d)


def _orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# ---------------------------------------------------------------- float64 references


def _coding_rate_ref(z: np.ndarray, eps: float) -> float:
    n, d = z.shape
    sign, logdet = np.linalg.slogdet(np.eye(d) + d / (n * eps**2) * z.T @ z)
    assert sign > 0
    return 0.5 * logdet


def _rate_reduction_ref(z: np.ndarray, labels: np.ndarray, eps: float) -> float:
    n = z.shape[0]
    within = sum(
        (labels == c).sum() / n * _coding_rate_ref(z[labels == c], eps) for c in np.unique(labels)
    )
    return _coding_rate_ref(z, eps) - within


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


# ---------------------------------------------------------------- gaussian_entropy


@pytest.mark.parametrize("d", [1, 3, 50])
@pytest.mark.parametrize("s", [0.1, 1.0, 7.5])
def test_entropy_isotropic_closed_form(d, s):
    h = gaussian_entropy(torch.full((d,), s**2, dtype=torch.float64))
    assert h.dtype == torch.float64
    assert float(h) == pytest.approx(d / 2 * math.log(2 * math.pi * math.e * s**2), rel=1e-14)


@pytest.mark.parametrize("d", [1, 2, 5, 20])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entropy_matches_scipy(d, seed):
    cov = _random_spd(d, seed)
    ref = scipy.stats.multivariate_normal(mean=np.zeros(d), cov=cov).entropy()
    h = gaussian_entropy(np.linalg.eigvalsh(cov))
    assert float(h) == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_entropy_zero_eigenvalue_is_minus_inf_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = gaussian_entropy(torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]]))
    assert h[0].item() == -math.inf
    assert h[1].item() == pytest.approx(1.5 * math.log(2 * math.pi * math.e))
    assert not torch.isnan(h).any()


def test_entropy_roundoff_negative_is_clipped_with_warning():
    with pytest.warns(InfospecWarning, match="clipped to 0"):
        h = gaussian_entropy(torch.tensor([1.0, -1e-14]))
    assert h.item() == -math.inf


def test_entropy_batched_equals_looped():
    eig = torch.from_numpy(_rng(3).uniform(0.1, 5.0, size=(2, 3, 6)))
    h = gaussian_entropy(eig)
    assert h.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert h[i, j].item() == pytest.approx(gaussian_entropy(eig[i, j]).item(), rel=1e-15)


def test_entropy_gradcheck():
    eig = torch.tensor([0.5, 1.5, 3.0, 0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gaussian_entropy, (eig,))
    (grad,) = torch.autograd.grad(gaussian_entropy(eig), eig)
    torch.testing.assert_close(grad, 0.5 / eig.detach())


# ---------------------------------------------------------------- coding_rate


def test_coding_rate_hand_value():
    # Two orthonormal samples in R^4: alpha = 4 / (2 * 0.5^2) = 8, R = 1/2 logdet(9 I_2) = log 9.
    z = torch.eye(4)[:2]
    assert coding_rate(z, eps=0.5).item() == pytest.approx(math.log(9.0), rel=1e-14)


@pytest.mark.parametrize("shape", [(5, 12), (12, 5), (7, 7), (1, 4), (30, 3)])
@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
def test_coding_rate_matches_slogdet(shape, eps):
    z = _rng(sum(shape)).standard_normal(shape)
    assert coding_rate(z, eps=eps).item() == pytest.approx(
        _coding_rate_ref(z, eps), rel=1e-12, abs=1e-12
    )


@pytest.mark.parametrize("shape", [(4, 9), (9, 4)])
def test_coding_rate_sylvester_side_identity(shape):
    # logdet(I_d + a Z^T Z) = logdet(I_n + a Z Z^T): R(Z, eps) = R(Z^T, eps * n / d).
    n, d = shape
    z = torch.from_numpy(_rng(5).standard_normal(shape))
    r = coding_rate(z, eps=0.3)
    r_t = coding_rate(z.T, eps=0.3 * n / d)
    assert r.item() == pytest.approx(r_t.item(), rel=1e-13)


@pytest.mark.parametrize(
    "transform",
    ["rotate_features", "permute_samples", "permute_features", "flip_signs"],
)
@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
def test_coding_rate_invariances(transform, shape):
    n, d = shape
    z = _rng(11).standard_normal(shape)
    if transform == "rotate_features":
        z2 = z @ _orthogonal(d, 12)
    elif transform == "permute_samples":
        z2 = z[_rng(13).permutation(n)]
    elif transform == "permute_features":
        z2 = z[:, _rng(14).permutation(d)]
    else:
        z2 = z * np.where(_rng(15).random(d) < 0.5, -1.0, 1.0)
    assert coding_rate(z2, eps=0.7).item() == pytest.approx(
        coding_rate(z, eps=0.7).item(), rel=1e-12
    )


def test_coding_rate_batched_equals_looped():
    z = torch.from_numpy(_rng(21).standard_normal((2, 3, 5, 8)))
    r = coding_rate(z, eps=0.5)
    assert r.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert r[i, j].item() == pytest.approx(coding_rate(z[i, j], eps=0.5).item(), rel=1e-14)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (2, 2, 4)])
def test_coding_rate_gradcheck(shape):
    z = torch.from_numpy(_rng(31).standard_normal(shape)).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: coding_rate(t, eps=0.8), (z,))


def test_coding_rate_float32_with_grad_stays_float32():
    z = torch.from_numpy(_rng(32).standard_normal((6, 4))).float().requires_grad_()
    r = coding_rate(z, eps=0.5)
    assert r.dtype == torch.float32
    r.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert r.item() == pytest.approx(_coding_rate_ref(z.detach().double().numpy(), 0.5), rel=1e-5)


# ---------------------------------------------------------------- rate_reduction


def test_rate_reduction_hand_value():
    # Z^T Z = diag(5, 10), alpha = 1/2: R = 1/2 (log 3.5 + log 6); classes: 1/2 log 6, 1/2 log 11.
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    expected = 0.5 * (math.log(3.5) + math.log(6.0)) - 0.5 * (
        0.5 * math.log(6.0) + 0.5 * math.log(11.0)
    )
    assert rate_reduction(z, torch.tensor([0, 0, 1, 1]), eps=1.0).item() == pytest.approx(
        expected, rel=1e-14
    )


@pytest.mark.parametrize("shape", [(12, 5), (9, 20)])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_rate_reduction_matches_slogdet(shape, k):
    rng = _rng(41 + k)
    z = rng.standard_normal(shape)
    labels = rng.integers(0, k, size=shape[0])
    assert rate_reduction(z, labels, eps=0.5).item() == pytest.approx(
        _rate_reduction_ref(z, labels, 0.5), rel=1e-12, abs=1e-12
    )


def test_rate_reduction_single_class_is_zero_and_labels_are_names():
    z = _rng(51).standard_normal((8, 3))
    assert rate_reduction(z, np.full(8, 7), eps=0.5).item() == pytest.approx(0.0, abs=1e-14)
    lab = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    relabelled = np.array([5, 5, -3, -3, 9, 9, 9, 5])
    assert rate_reduction(z, relabelled, eps=0.5).item() == pytest.approx(
        rate_reduction(z, lab, eps=0.5).item(), rel=1e-14
    )


def test_rate_reduction_gradcheck():
    z = torch.from_numpy(_rng(52).standard_normal((7, 4))).requires_grad_()
    labels = torch.tensor([0, 1, 0, 2, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda t: rate_reduction(t, labels, eps=0.9), (z,))


# ---------------------------------------------------------------- rate_distortion


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


# ---------------------------------------------------------------- distortion_rate


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


# ---------------------------------------------------------------- gaussian_capacity


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


# ---------------------------------------------------------------- water_filling_capacity


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


# ---------------------------------------------------------------- units


_Z = _rng(130).standard_normal((6, 4))
_LAM = np.array([3.0, 1.0, 0.5, 0.1])


@pytest.mark.parametrize(
    "measure",
    [
        lambda bits: gaussian_entropy(_LAM, bits=bits),
        lambda bits: coding_rate(_Z, eps=0.5, bits=bits),
        lambda bits: rate_reduction(_Z, np.array([0, 1, 0, 1, 2, 2]), eps=0.5, bits=bits),
        lambda bits: rate_distortion(_LAM, 1.0, bits=bits).rate,
        lambda bits: rate_distortion(_LAM, 1.0, bits=bits).component_rates,
        lambda bits: gaussian_capacity(_LAM, 0.3, bits=bits),
        lambda bits: water_filling_capacity(_LAM, 2.0, bits=bits).capacity,
    ],
    ids=[
        "entropy",
        "coding_rate",
        "rate_reduction",
        "rd_rate",
        "rd_components",
        "capacity",
        "water_filling",
    ],
)
def test_bits_are_nats_over_ln2(measure):
    torch.testing.assert_close(measure(True), measure(False) / LN2, rtol=1e-15, atol=0)


def test_distortion_rate_bits_input():
    nats = distortion_rate(_LAM, 1.3)
    in_bits = distortion_rate(_LAM, 1.3 / LN2, bits=True)
    assert in_bits.distortion.item() == pytest.approx(nats.distortion.item(), rel=1e-14)
    torch.testing.assert_close(in_bits.component_rates, nats.component_rates / LN2)


@pytest.mark.parametrize("transform", ["rotation", "permutation"])
def test_entropy_invariances_of_sample_covariance(transform):
    z = _rng(140).standard_normal((50, 6)) * np.array([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    if transform == "rotation":
        z2 = z @ _orthogonal(6, 141)
    else:
        z2 = z[:, _rng(142).permutation(6)]
    h1 = gaussian_entropy(np.linalg.eigvalsh(np.cov(z, rowvar=False)))
    h2 = gaussian_entropy(np.linalg.eigvalsh(np.cov(z2, rowvar=False)))
    assert h1.item() == pytest.approx(h2.item(), rel=1e-12)
    lam = np.linalg.eigvalsh(np.cov(z, rowvar=False))
    assert gaussian_entropy(lam[::-1].copy()).item() == pytest.approx(h1.item(), rel=1e-15)


# ---------------------------------------------------------------- properties

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


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gaussian_entropy(torch.tensor([])), "at least 1"),
        (lambda: gaussian_entropy([1.0, float("nan")]), "must be finite"),
        (lambda: gaussian_entropy([1.0, -0.5]), "must be non-negative"),
        (lambda: gaussian_entropy(3.0), "at least 1 dimension"),
        (lambda: coding_rate(np.ones((3, 2)), eps=0.0), "'eps' parameter of coding_rate must"),
        (lambda: coding_rate(np.ones((3, 2)), eps=-1), r"float > 0\. Got -1 instead"),
        (lambda: coding_rate(np.ones((3, 2)), eps="1"), "'eps' parameter"),
        (lambda: coding_rate(np.ones(3), eps=1.0), r"at least 2 dimensions \(\.\.\., n, d\)"),
        (lambda: coding_rate(np.ones((0, 3)), eps=1.0), r"at least one sample .* shape \(0, 3\)"),
        (lambda: coding_rate(np.ones((2, 0)), eps=1.0), "one feature"),
        (lambda: coding_rate(np.full((2, 2), np.inf), eps=1.0), "'Z' argument .* finite"),
        (lambda: rate_reduction(np.ones((2, 3, 4)), [0, 1, 0], eps=1.0), r"exactly 2 dim"),
        (lambda: rate_reduction(np.ones((3, 2)), [0.0, 1.0, 0.0], eps=1.0), "must hold integers"),
        (lambda: rate_reduction(np.ones((3, 2)), [0, 1], eps=1.0), r"length 3\); got shape \(2,"),
        (lambda: rate_reduction(np.ones((2, 2)), [[0, 1]], eps=1.0), "must be 1-D"),
        (lambda: rate_reduction(np.ones((2, 2)), [0, 1], eps=0), "'eps' parameter of rate_red"),
        (lambda: rate_distortion([4.0, 1.0], 0.0), r"= \(0, 5\] .* got 0\.$"),
        (lambda: rate_distortion([4.0, 1.0], 5.5), r"must lie in \(0, sum\(eigvals\)\]"),
        (lambda: rate_distortion([4.0, 1.0], [1.0, -2.0]), r"got -2 at index \(1,\)"),
        (lambda: rate_distortion([4.0, 1.0], float("nan")), "'distortion' .* finite"),
        (lambda: rate_distortion([0.0, 0.0], 1.0), "at least one positive eigenvalue"),
        (lambda: rate_distortion(np.ones((3, 2)), np.ones(4)), "must broadcast with the batch"),
        (lambda: distortion_rate([4.0, 1.0], -0.1), r"'rate' .* must be >= 0 \(nats\)"),
        (lambda: distortion_rate([4.0, 1.0], -1.0, bits=True), r">= 0 \(bits\)"),
        (lambda: distortion_rate([0.0], 1.0), "at least one positive eigenvalue"),
        (lambda: gaussian_capacity([1.0], 0.0), "'noise_var' parameter .* float > 0. Got 0.0"),
        (lambda: gaussian_capacity([1.0], -2), "Got -2 instead"),
        (lambda: gaussian_capacity([1.0, 2.0], [1.0, 0.0]), r"> 0 everywhere .* got 0 at"),
        (lambda: gaussian_capacity([1.0, 2.0], [1.0, 2.0, 3.0]), "must broadcast with"),
        (lambda: gaussian_capacity([1.0, -1.0], 1.0), "'signal_eigvals' .* non-negative"),
        (lambda: water_filling_capacity([1.0, 2.0], -1.0), r"'power' .* >= 0; got -1"),
        (lambda: water_filling_capacity([1.0, 0.0], 1.0), r"'noise_vars' .* > 0 everywhere"),
        (lambda: water_filling_capacity([], 1.0), "at least 1"),
        (lambda: water_filling_capacity([1.0], float("inf")), "'power' .* finite"),
    ],
)
def test_documented_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def _coding_rate_log1p_reference(Z: np.ndarray, eps: float) -> float:
    """½ Σ log1p(c μ_i) over the eigenvalues of the scaled Gram, in NumPy float64."""
    n, d = Z.shape
    s = np.abs(Z).max()
    Zs = Z / s
    gram = Zs @ Zs.T if n < d else Zs.T @ Zs
    mu = np.clip(np.linalg.eigvalsh(gram), 0, None)
    log_c = math.log(d / n) - 2 * math.log(eps) + 2 * math.log(s)
    t = log_c + np.log(mu[mu > 0])
    return float(0.5 * np.sum(np.maximum(t, 0) + np.log1p(np.exp(-np.abs(t)))))


@pytest.mark.parametrize("scale", [1e-12, 1e-9, 1e-3])
def test_coding_rate_far_below_one_keeps_its_digits(scale):
    """R ≪ 1: the Cholesky diagonal sqrt(1 + x) would lose x; log1p of eigenvalues keeps it."""
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((50, 4)) * scale
    got = float(coding_rate(Z, eps=0.5))
    want = _coding_rate_log1p_reference(Z, 0.5)
    # first order: R = c tr(Z^T Z) / 2 with c = d / (n eps^2)
    first_order = 0.5 * 4 / (50 * 0.25) * float((Z**2).sum())
    assert want == pytest.approx(first_order, rel=10 * first_order)
    assert got == pytest.approx(want, rel=1e-10)
    assert got > 0


@pytest.mark.parametrize("scale", [1e-150, 1e-100, 1e100, 1e155, 1e300])
def test_coding_rate_is_scale_covariant_with_eps(scale):
    """R(sZ, s eps) = R(Z, eps) for every s, with no overflow or underflow on the way."""
    rng = np.random.default_rng(4)
    Z = rng.standard_normal((40, 6))
    labels = np.arange(40) % 3
    want = float(coding_rate(Z, eps=0.5))
    assert float(coding_rate(Z * scale, eps=0.5 * scale)) == pytest.approx(want, rel=1e-10)
    want_rr = float(rate_reduction(Z, labels, eps=0.5))
    got_rr = float(rate_reduction(Z * scale, labels, eps=0.5 * scale))
    assert got_rr == pytest.approx(want_rr, rel=1e-8)


@pytest.mark.parametrize("scale", [1e155, 1e300])
def test_coding_rate_of_huge_samples_is_finite_and_right(scale):
    rng = np.random.default_rng(5)
    Z = rng.standard_normal((30, 5)) * scale
    got = float(coding_rate(Z, eps=0.5))
    assert math.isfinite(got)
    assert got == pytest.approx(_coding_rate_log1p_reference(Z, 0.5), rel=1e-12)


def test_coding_rate_of_a_rank_deficient_huge_sample_ignores_round_off():
    """Exact rank 1 at a huge c: round-off eigenvalues of the Gram must add no rate."""
    Z = torch.full((2, 2), 1e8, dtype=torch.float32)
    assert float(coding_rate(Z, eps=1.0)) == pytest.approx(0.5 * math.log1p(4e16), rel=1e-6)
    Z64 = np.outer(np.arange(1.0, 6.0), np.ones(3)) * 1e150
    # one nonzero eigenvalue: trace(Z^T Z) = 3 * 55 * 1e300
    want = 0.5 * (math.log(3 / 5) + math.log(3 * 55) + 2 * math.log(1e150))
    assert float(coding_rate(Z64, eps=1.0)) == pytest.approx(want, rel=1e-12)


def test_coding_rate_gradient_at_tiny_rate_is_first_order_exact():
    """For c ||Z||² ≪ 1, dR/dZ = c Z (the eigenvalue route is differentiable)."""
    torch.manual_seed(0)
    Z = torch.randn(20, 3, dtype=torch.float64, requires_grad=True)
    eps = 1e4  # c = 3 / (20 * 1e8): the eigenvalue route
    coding_rate(Z, eps=eps).backward()
    c = 3 / (20 * eps**2)
    np.testing.assert_allclose(Z.grad.numpy(), c * Z.detach().numpy(), rtol=1e-6)


def test_coding_rate_with_an_eps_whose_square_underflows():
    Z = np.eye(3)
    want = 0.5 * 3 * (-2 * math.log(1e-200))  # log(1 + c) = log c to 1e-400, c = 1e400
    assert float(coding_rate(Z, eps=1e-200)) == pytest.approx(want, rel=1e-12)


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
