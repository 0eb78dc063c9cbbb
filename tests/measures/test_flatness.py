import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import gmean

from infospec import InfospecWarning, InputError, log_spectrum_variance, spectral_flatness


def test_white_spectrum_is_one():
    assert float(spectral_flatness(torch.full((64,), 3.7))) == pytest.approx(1.0, abs=1e-15)


def test_single_nonzero_bin_is_zero():
    v = torch.zeros(16)
    v[3] = 5.0
    assert float(spectral_flatness(v)) == 0.0


def test_matches_scipy_gmean_over_mean(rng):
    v = rng.gamma(0.5, size=(7, 200)) + 1e-3
    expected = gmean(v, axis=-1) / v.mean(axis=-1)
    np.testing.assert_allclose(spectral_flatness(v).numpy(), expected, rtol=1e-12)


def test_long_spectrum_does_not_underflow(rng):
    # the product of 100k values < 1 underflows; the log-domain formula does not
    v = rng.uniform(0.01, 0.02, size=100_000)
    got = float(spectral_flatness(v))
    expected = math.exp(np.mean(np.log(v)) - math.log(np.mean(v)))
    assert got == pytest.approx(expected, rel=1e-12)
    assert 0.9 < got < 1.0


@pytest.mark.parametrize("scale", [1e-12, 1e-3, 1.0, 7.5, 1e9])
def test_flatness_scale_invariant(scale, rng):
    v = rng.gamma(2.0, size=50)
    assert float(spectral_flatness(scale * v)) == pytest.approx(
        float(spectral_flatness(v)), rel=1e-12
    )


@pytest.mark.parametrize("seed", range(4))
def test_flatness_permutation_invariant(seed):
    r = np.random.default_rng(seed)
    v = r.gamma(1.0, size=30)
    assert float(spectral_flatness(r.permutation(v))) == pytest.approx(
        float(spectral_flatness(v)), rel=1e-13
    )


def test_batched_equals_looped_and_dim(rng):
    v = rng.gamma(1.5, size=(3, 4, 20))
    batched = spectral_flatness(v)
    looped = torch.stack([torch.stack([spectral_flatness(row) for row in block]) for block in v])
    torch.testing.assert_close(batched, looped, rtol=1e-14, atol=0)
    torch.testing.assert_close(spectral_flatness(np.moveaxis(v, -1, 0), dim=0), batched)


def test_amin_floor_matches_manual():
    v = torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64)
    floored = torch.tensor([1e-6, 1.0, 4.0], dtype=torch.float64)
    expected = floored.log().mean().exp() / floored.mean()
    assert float(spectral_flatness(v, amin=1e-6)) == pytest.approx(float(expected), rel=1e-12)


def test_returns_float64_for_numpy_and_keeps_float32_grad():
    assert spectral_flatness([1.0, 2.0]).dtype == torch.float64
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = spectral_flatness(x)
    assert y.dtype == torch.float32
    y.backward()
    assert torch.isfinite(x.grad).all()


def test_gradcheck_flatness_and_log_variance():
    x = torch.tensor([0.5, 1.5, 2.0, 7.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spectral_flatness, (x,))
    assert torch.autograd.gradcheck(log_spectrum_variance, (x,))


def test_log_variance_closed_form_and_numpy(rng):
    s = rng.lognormal(mean=0.3, sigma=0.8, size=(5, 300))
    np.testing.assert_allclose(log_spectrum_variance(s).numpy(), np.log(s).var(axis=-1), rtol=1e-12)
    np.testing.assert_allclose(
        log_spectrum_variance(s, ddof=1).numpy(), np.log(s).var(axis=-1, ddof=1), rtol=1e-12
    )


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_log_variance_scale_invariant(scale, rng):
    s = rng.lognormal(size=40)
    assert float(log_spectrum_variance(scale * s)) == pytest.approx(
        float(log_spectrum_variance(s)), rel=1e-10, abs=1e-12
    )


def test_log_variance_zero_is_inf_not_nan():
    out = log_spectrum_variance(torch.tensor([[0.0, 1.0, 2.0], [1.0, 2.0, 4.0]]))
    assert math.isinf(float(out[0])) and out[0] > 0
    assert float(out[1]) == pytest.approx(np.log([1.0, 2.0, 4.0]).var())


def test_flatness_vs_log_variance_lognormal_link(rng):
    # -log SFM ~ Var[log s]/2 for a narrow log-normal spread (seed 001's two penalties agree)
    s = rng.lognormal(sigma=0.1, size=200_000)
    assert -math.log(float(spectral_flatness(s))) == pytest.approx(
        float(log_spectrum_variance(s)) / 2, rel=0.02
    )


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(1e-6, 1e6)))
def test_flatness_bounds_property(v):
    f = float(spectral_flatness(v))
    assert 0.0 <= f <= 1.0 + 1e-12
    assert float(log_spectrum_variance(v)) >= 0.0


def test_roundoff_negative_clipped_with_warning():
    with pytest.warns(InfospecWarning, match="clipped to 0"):
        out = spectral_flatness(torch.tensor([1.0, 2.0, -1e-14], dtype=torch.float64))
    assert float(out) == 0.0


@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        ([1.0, -0.5, 2.0], {}, "must be non-negative"),
        ([1.0, float("nan")], {}, "must be finite; got 1 NaN"),
        ([1.0, float("inf")], {}, "1 infinite"),
        ([], {}, "at least 1"),
        (3.0, {}, "at least 1 dimension"),
        ([0.0, 0.0], {}, "all-zero spectrum"),
        ([1.0, 2.0], {"amin": -1.0}, "'amin' parameter of spectral_flatness must be a float >= 0"),
        ([1.0, 2.0], {"dim": 3}, "'dim' parameter"),
        ([[1.0 + 1j]], {}, "must be real"),
    ],
)
def test_flatness_errors(values, kwargs, match):
    with pytest.raises(InputError, match=match):
        spectral_flatness(np.asarray(values), **kwargs)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        spectral_flatness([-1.0, 1.0])


@pytest.mark.parametrize(
    ("ddof", "match"), [(-1, "must be an int >= 0"), (3, "smaller than the spectrum length 3")]
)
def test_log_variance_ddof_errors(ddof, match):
    with pytest.raises(InputError, match=match):
        log_spectrum_variance([1.0, 2.0, 3.0], ddof=ddof)
