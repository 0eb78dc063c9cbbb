"""Tests of infospec.measures.information against closed forms and float64 references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch

from infospec._errors import InfospecWarning, InputError
from infospec.measures.information import (
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
