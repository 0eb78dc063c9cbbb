"""rate_distortion_curve and truncation_curve: bad input, overflow and the ratio at zero error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infospec import InputError
from infospec.transforms.coding import TransformCoder
from infospec.transforms.curves import rate_distortion_curve, truncation_curve


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64) * torch.tensor([4.0, 2, 1, 0.5])


@pytest.mark.parametrize(
    "rates",
    [[], (), np.array([]), {"a": 1}, 5, math.nan, torch.tensor(5.0), np.float64(5.0), "8"],
)
def test_rate_distortion_curve_refuses_rates_that_are_not_a_list(rates):
    with pytest.raises(InputError, match="'rates' argument of rate_distortion_curve must be a"):
        rate_distortion_curve(_data(), rates)


@pytest.mark.parametrize("rates", [[0], [math.nan], [-1.0], [math.inf], ["8"]])
def test_rate_distortion_curve_refuses_a_bad_rate(rates):
    with pytest.raises(InputError, match="'rates' parameter of rate_distortion_curve must be"):
        rate_distortion_curve(_data(), rates)


def test_rate_distortion_curve_takes_any_iterable_of_rates():
    x = _data()
    want = rate_distortion_curve(x, [4.0, 8.0])
    for rates in (iter([4.0, 8.0]), (4.0, 8.0), np.array([4.0, 8.0]), torch.tensor([4.0, 8.0])):
        assert rate_distortion_curve(x, rates).equals(want)


@pytest.mark.parametrize(
    ("coder", "match"),
    [
        (TransformCoder(rate=1.0), "fitted TransformCoder .* got an unfitted TransformCoder"),
        ("abc", "must be a fitted TransformCoder .* got 'abc'"),
        (5, "must be a fitted TransformCoder .* got 5"),
        (torch.ones(2), "must be a fitted TransformCoder .* got tensor"),
        (TransformCoder(rate=1.0).fit(torch.randn(50, 3)), "fitted on vectors of 3 coordinates"),
    ],
)
def test_rate_distortion_curve_refuses_a_bad_coder(coder, match):
    with pytest.raises(InputError, match="'coder' argument of rate_distortion_curve"):
        rate_distortion_curve(_data(), [4.0], coder=coder)
    with pytest.raises(InputError, match=match):
        rate_distortion_curve(_data(), [4.0], coder=coder)


def test_rate_distortion_curve_names_the_overflow_of_huge_test_data():
    x = _data()
    with pytest.raises(InputError, match=r"squared errors overflow float64 .* beyond about 1e154"):
        rate_distortion_curve(x, [4.0], test=x * 1e160)


@pytest.mark.parametrize("dims", [5, math.nan, torch.tensor(2), [], "12"])
def test_truncation_curve_refuses_dims_that_are_not_a_list(dims):
    with pytest.raises(InputError, match="'dims' argument of truncation_curve must be a"):
        truncation_curve(_data(), dims)


def test_truncation_curve_takes_a_1d_array_of_dims():
    x = _data()
    assert truncation_curve(x, np.array([1, 2])).equals(truncation_curve(x, [1, 2]))


def test_truncation_curve_of_test_data_far_larger_than_the_training_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    t = torch.randn(50, 4, generator=g, dtype=torch.float64)
    small = truncation_curve(x * 2.0**-565, test=t)  # |x| about 1e-170
    plain = truncation_curve(x * 2.0**-65, test=t * 2.0**500)  # both 2**500 times larger
    assert np.isfinite(small.drop(columns="k").to_numpy()).all()
    np.testing.assert_allclose(small["ratio"], plain["ratio"], rtol=1e-12)
    for col in ("prefix_distortion", "klt_distortion", "total_variance"):
        np.testing.assert_allclose(small[col] * 2.0**1000, plain[col], rtol=1e-12)


@pytest.mark.parametrize("scale", [1e200, 1e300])
def test_truncation_curve_names_the_overflow_of_its_distortions(scale):
    x = _data()
    with pytest.raises(InputError, match="truncation_curve: the squared errors overflow float64"):
        truncation_curve(x * scale)
    with pytest.raises(InputError, match="truncation_curve: the squared errors overflow float64"):
        truncation_curve(x, test=x * scale)


def test_truncation_curve_ratio_is_one_where_both_errors_are_zero():
    x = _data()
    assert truncation_curve(x, [4])["ratio"].tolist() == [1.0]  # k = d: round-off only
    assert truncation_curve(torch.randn(50, 1))["ratio"].tolist() == [1.0]
    # constant leading coordinates: the prefix keeps them and loses the varying one
    y = torch.cat([torch.ones(50, 3), torch.randn(50, 1)], 1)
    curve = truncation_curve(y)
    assert curve["k"].tolist() == [1, 2, 4]
    assert curve["ratio"].tolist() == [math.inf, math.inf, 1.0]
    # and large data keeps finite, scale-free ratios
    big = truncation_curve(x * 1e150, [1, 2, 4])
    np.testing.assert_allclose(big["ratio"], truncation_curve(x, [1, 2, 4])["ratio"], rtol=1e-12)


@pytest.mark.parametrize("value", [1.0, 3.3e-7, 1e200, 1e-200, -7.25e150])
def test_truncation_curve_of_constant_data_is_refused_alike_at_every_scale(value):
    # the centring of a constant leaves the mean's round-off (at 3.3e-7 a total variance
    # of 1e-44, at 1e200 an overflow): below MEAN_ROUND_OFF of the mean it counts as none
    x = torch.full((50, 4), value, dtype=torch.float64)
    with pytest.raises(InputError, match=r"TransformCoder\.fit: the covariance is zero"):
        truncation_curve(x)
    # the coder itself takes data whose squares are finite (beyond, it says to divide)
    expected = "the covariance is zero" if abs(value) < 1e154 else "overflows float64"
    with pytest.raises(InputError, match=expected):
        TransformCoder(rate=1.0).fit(x)


def test_a_constant_coordinate_is_constant_whatever_its_value():
    # translating a constant coordinate changes nothing: its measured variance (the
    # rounding of the centring, about 1e-12 at 1e10) is set to zero, in the coder and in
    # the curve's errors
    g = torch.Generator().manual_seed(3)
    y = torch.randn(60, 3, generator=g, dtype=torch.float64) * 1e-5
    shifted = y.clone()
    shifted[:, 0] = 1e10
    y[:, 0] = 0.0
    a, b = truncation_curve(y), truncation_curve(shifted)
    for col in ("prefix_distortion", "klt_distortion", "total_variance", "ratio"):
        np.testing.assert_allclose(b[col], a[col], rtol=1e-12, atol=0)
    coder = TransformCoder(rate=1.0).fit(shifted)
    assert float(coder.eigenvalues_[-1]) == 0.0
    np.testing.assert_allclose(
        coder.eigenvalues_[:2], TransformCoder(rate=1.0).fit(y).eigenvalues_[:2], rtol=1e-12
    )
