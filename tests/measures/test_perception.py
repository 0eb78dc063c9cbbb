"""Gaussian rate-distortion-perception: closed forms, a brute-force optimisation, inverses."""

import math

import numpy as np
import pytest
import torch
from scipy import optimize

from infospec import InputError
from infospec.measures import distortion_rate
from infospec.measures.perception import distortion_rate_perception, rate_distortion_perception


def _brute_force(var, rate, perception):
    """min over jointly Gaussian (X, Xhat): sigma_hat >= 0, corr rho in [0, 1), with
    -1/2 log(1 - rho^2) <= R and (sigma - sigma_hat)^2 <= P, of E(X - Xhat)^2; a bounded
    2-D search from a grid of starts (no closed form used)."""
    sigma = math.sqrt(var)
    rho_max = math.sqrt(-math.expm1(-2 * rate))
    lo, hi = max(0.0, sigma - math.sqrt(perception)), sigma + math.sqrt(perception)

    def d(v):
        rho, s = v
        return var + s * s - 2 * rho * sigma * s

    best = math.inf
    for rho0 in np.linspace(0, rho_max, 5):
        for s0 in np.linspace(lo, hi, 5):
            res = optimize.minimize(
                d,
                [rho0, s0],
                bounds=[(0, rho_max), (lo, hi)],
                method="L-BFGS-B",
                options={"ftol": 1e-15, "gtol": 1e-12},
            )
            best = min(best, res.fun)
    return best


@pytest.mark.parametrize(
    ("var", "rate", "perception"),
    [
        (1.0, 0.3, 0.0),
        (1.0, 0.3, 0.01),
        (2.5, 1.2, 0.05),
        (0.3, 2.0, 0.3),
        (4.0, 0.0, 0.5),
        (1.0, 0.7, 10.0),
        (9.0, 3.0, 1e-4),
    ],
)
def test_matches_brute_force_optimisation(var, rate, perception):
    got = float(distortion_rate_perception(var, rate, perception).distortion)
    assert got == pytest.approx(_brute_force(var, rate, perception), rel=1e-9, abs=1e-12)


def test_perfect_realism_and_no_constraint_closed_forms():
    var = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)[:, None]
    rate = torch.linspace(0, 4, 9, dtype=torch.float64)
    realism = distortion_rate_perception(var, rate, 0.0, bits=True)
    expected = 2 * var * (1 - torch.sqrt(1 - 2.0 ** (-2 * rate)))
    torch.testing.assert_close(realism.distortion, expected, rtol=1e-14, atol=0)
    assert bool(realism.perception_binds[:, 1:].all())  # R > 0: realism costs distortion
    free = distortion_rate_perception(var, rate, var, bits=True)
    classical = distortion_rate(var.expand(-1, 9).unsqueeze(-1), rate, bits=True).distortion
    torch.testing.assert_close(free.distortion, classical, rtol=1e-14, atol=0)
    assert not bool(free.perception_binds.any())
    # at most twice the classical distortion, twice at R = 0 (an independent draw of the
    # source against its mean: 2 sigma^2 against sigma^2) ...
    assert bool((realism.distortion <= 2 * free.distortion + 1e-15).all())
    torch.testing.assert_close(realism.distortion[:, 0], 2 * var[:, 0], rtol=1e-15, atol=0)
    torch.testing.assert_close(free.distortion[:, 0], var[:, 0], rtol=0, atol=0)
    # ... and realism gets cheap at high rate: 2(1 - sqrt(1 - x)) = x + x^2/4 + ..., so the
    # ratio falls monotonically from 2 towards 1 (1 + 2^-2R / 4 + ...)
    ratio = realism.distortion / free.distortion
    assert bool((ratio.diff(dim=1) < 0).all())
    x = 2.0 ** (-2 * rate[-1])
    assert float(ratio[1, -1]) == pytest.approx(1 + x / 4, rel=1e-4)


def test_threshold_where_the_constraint_starts_to_bind():
    rate = 1.0  # nats
    rho = math.sqrt(1 - math.exp(-2 * rate))
    p_star = (1 - rho) ** 2  # variance 1: the unconstrained reconstruction's W2^2
    above = distortion_rate_perception(1.0, rate, p_star * (1 + 1e-9))
    below = distortion_rate_perception(1.0, rate, p_star * (1 - 1e-6))
    assert not bool(above.perception_binds) and bool(below.perception_binds)
    assert float(above.distortion) == pytest.approx(math.exp(-2 * rate), rel=1e-12)
    assert float(below.distortion) == pytest.approx(math.exp(-2 * rate), rel=1e-5)  # continuous
    assert float(above.reconstruction_std) == pytest.approx(rho, rel=1e-12)


def test_monotone_in_rate_and_perception_and_scale_covariant():
    rate = torch.linspace(0, 3, 31, dtype=torch.float64)
    perception = torch.logspace(-4, 0, 17, dtype=torch.float64)[:, None]
    d = distortion_rate_perception(1.0, rate, perception).distortion
    assert bool((d.diff(dim=1) <= 1e-15).all()) and bool((d.diff(dim=0) <= 1e-15).all())
    scaled = distortion_rate_perception(7.0, rate, 7.0 * perception).distortion
    torch.testing.assert_close(scaled, 7.0 * d, rtol=1e-13, atol=0)


def test_rate_inverts_distortion():
    var = 2.0
    rate = torch.linspace(0.01, 3, 40, dtype=torch.float64)
    for p in (0.0, 0.02, 0.3, 5.0):
        fwd = distortion_rate_perception(var, rate, p)
        back = rate_distortion_perception(var, fwd.distortion, p)
        torch.testing.assert_close(back.rate, rate, rtol=1e-9, atol=1e-12)
        assert torch.equal(back.perception_binds, fwd.perception_binds)
        torch.testing.assert_close(
            back.reconstruction_std, fwd.reconstruction_std, rtol=1e-9, atol=0
        )
    # D >= sigma^2 + max(0, sigma - sqrt P)^2 costs nothing; D = 0 costs an infinite rate
    s = math.sqrt(var) - math.sqrt(0.3)
    assert float(rate_distortion_perception(var, var + s * s, 0.3).rate) == 0.0
    assert float(rate_distortion_perception(var, var * 1.2, 0.3).rate) > 0  # above sigma^2
    assert math.isinf(float(rate_distortion_perception(var, 0.0, 0.3).rate))
    assert float(rate_distortion_perception(var, 0.5, 0.3, bits=True).rate) == pytest.approx(
        float(rate_distortion_perception(var, 0.5, 0.3).rate) / math.log(2), rel=1e-14
    )


def test_gradients():
    def f(r, p):
        return distortion_rate_perception(1.3, r, p).distortion

    for p in (0.01, 2.0):  # binding and slack branches
        r = torch.tensor([0.4, 1.1], dtype=torch.float64, requires_grad=True)
        pp = torch.tensor(p, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(f, (r, pp))
    r = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    distortion_rate_perception(1.0, r, 0.0).distortion.backward()
    rho = math.sqrt(1 - math.exp(-1.6))
    assert float(r.grad) == pytest.approx(-2 * math.exp(-1.6) / rho, rel=1e-12)  # d/dR 2(1-rho)


def test_errors_name_the_argument():
    with pytest.raises(InputError, match=r"'variance' argument .* must be > 0"):
        distortion_rate_perception(0.0, 1.0, 0.1)
    with pytest.raises(InputError, match=r"'rate' argument .* must be >= 0"):
        distortion_rate_perception(1.0, -0.1, 0.1)
    with pytest.raises(InputError, match=r"'perception' argument .* must be >= 0"):
        distortion_rate_perception(1.0, 0.1, [0.1, -1.0])
    with pytest.raises(InputError, match=r"'perception'.*finite|finite.*'perception'"):
        distortion_rate_perception(1.0, 0.1, math.inf)
    with pytest.raises(InputError, match=r"'distortion' argument .* must be >= 0"):
        rate_distortion_perception(1.0, -1.0, 0.1)
    with pytest.raises(InputError, match="do not broadcast"):
        distortion_rate_perception([1.0, 2.0], [0.1, 0.2, 0.3], 0.0)


def _central_difference(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("d0", [0.3, 0.5, 0.8])
def test_rate_distortion_perception_gradient_where_perception_binds(d0):

    d = torch.tensor(d0, dtype=torch.float64, requires_grad=True)
    out = rate_distortion_perception(1.0, d, 0.0)
    assert bool(out.perception_binds)
    out.rate.backward()
    ref = _central_difference(lambda x: float(rate_distortion_perception(1.0, x, 0.0).rate), d0)
    assert float(d.grad) == pytest.approx(ref, rel=1e-7)
    v = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    rate_distortion_perception(v, d0, 0.05).rate.backward()
    ref_v = _central_difference(lambda x: float(rate_distortion_perception(x, d0, 0.05).rate), 1.3)
    assert float(v.grad) == pytest.approx(ref_v, rel=1e-7)


def test_distortion_rate_perception_gradient_at_rate_zero_in_the_slack_branch():

    r = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    out = distortion_rate_perception(2.0, r, 4.0)  # perception slack: D = var e^{-2R}
    assert not bool(out.perception_binds)
    out.distortion.backward()
    assert float(r.grad) == pytest.approx(-4.0, rel=1e-12)  # dD/dR = -2 var at R = 0
    r = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    out = distortion_rate_perception(1.0, r, 0.01)
    assert bool(out.perception_binds)
    out.distortion.backward()
    ref = _central_difference(
        lambda x: float(distortion_rate_perception(1.0, x, 0.01).distortion), 0.2
    )
    assert float(r.grad) == pytest.approx(ref, rel=1e-7)
