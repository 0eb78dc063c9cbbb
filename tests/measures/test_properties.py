"""One property suite over every public measure: hostile inputs give the right value or a
named error, never a silent NaN and never a raw traceback from inside torch or NumPy.

Each measure is called through a small adapter that feeds the probe as its main input.
For every probe the outcome must be one of:

* an :class:`InfospecError` (an ``InputError`` naming the argument), or
* a result whose numbers are all finite (``-inf`` only where documented: the entropy of a
  spectrum with a zero), equal to the value the measure gives the clean input at unit
  scale, transformed by the measure's scale law.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import infospec
from infospec import InfospecError

rng = np.random.default_rng(2026)
SPECTRUM = np.sort(rng.chisquare(4, 40))[::-1].copy()  # positive, distinct
SAMPLES = rng.standard_normal((60, 5)) @ np.diag([3.0, 2.0, 1.0, 0.5, 0.25])
LABELS = np.arange(60) % 3


def _numbers(out: Any) -> list[float]:
    """Every number in a measure's result (tensor, tuple of tensors, named tuple, float)."""
    if isinstance(out, torch.Tensor):
        return out.detach().double().flatten().tolist()
    if isinstance(out, tuple):
        return [v for item in out for v in _numbers(item)]
    if isinstance(out, (int, float)):
        return [float(out)]
    return []


#: name -> (call(main input, scale), kind of main input, scale law). The calls take their
#: other arguments from the clean input's statistics times ``scale`` (never from the probe,
#: which may be anything). Scale law: "invariant" (same value), ("power", k) (value times
#: s**k), ("log", k) (value + k log s, nats), a function (want, s) -> expected, or None
#: (finite or named error only).
S_SUM, S_MEDIAN, S_MEAN = float(SPECTRUM.sum()), float(np.median(SPECTRUM)), float(SPECTRUM.mean())


def _MIXTURE_LAW(want: np.ndarray, scale: float) -> np.ndarray | None:
    """h + 5 log s, where the covariances s^2 I are normal numbers (at s = 1e-160 they are
    subnormal, ~5 digits: then the input itself is not s^2 I to float64 accuracy)."""
    if not scale * scale >= np.finfo(np.float64).tiny:
        return None
    return want + 5.0 * math.log(scale)


MEASURES: dict[str, tuple[Callable[..., Any], str, Any]] = {
    "spectral_flatness": (lambda v, s: infospec.spectral_flatness(v), "spectrum", "invariant"),
    "log_spectrum_variance": (
        lambda v, s: infospec.log_spectrum_variance(v),
        "spectrum",
        "invariant",
    ),
    "effective_rank": (lambda v, s: infospec.effective_rank(v), "spectrum", "invariant"),
    "participation_ratio": (
        lambda v, s: infospec.participation_ratio(v),
        "spectrum",
        "invariant",
    ),
    "stable_rank(sigma)": (lambda v, s: infospec.stable_rank(sigma=v), "spectrum", "invariant"),
    "stable_rank(W)": (lambda z, s: infospec.stable_rank(z), "samples", "invariant"),
    "gaussian_entropy": (lambda v, s: infospec.gaussian_entropy(v), "spectrum", ("log", 20.0)),
    "rate_distortion": (
        lambda v, s: infospec.rate_distortion(v, 0.1 * S_SUM * s).rate,
        "spectrum",
        "invariant",
    ),
    "distortion_rate": (
        lambda v, s: infospec.distortion_rate(v, 3.0).distortion,
        "spectrum",
        ("power", 1),
    ),
    "gaussian_capacity": (
        lambda v, s: infospec.gaussian_capacity(v, S_MEAN * s),
        "spectrum",
        "invariant",
    ),
    "water_filling_capacity": (
        lambda v, s: infospec.water_filling_capacity(v, S_SUM * s).capacity,
        "spectrum",
        "invariant",
    ),
    "marchenko_pastur_pdf": (
        lambda v, s: infospec.marchenko_pastur_pdf(v, 0.5, sigma2=S_MEDIAN * s),
        "spectrum",
        ("power", -1),
    ),
    "marchenko_pastur_cdf": (
        lambda v, s: infospec.marchenko_pastur_cdf(v, 0.5, sigma2=S_MEDIAN * s),
        "spectrum",
        "invariant",
    ),
    "marchenko_pastur_edges": (
        # sigma2 as a tensor: the edges of each variance (they broadcast)
        lambda v, s: tuple(infospec.marchenko_pastur_edges(0.5, sigma2=v)),
        "spectrum",
        ("power", 1),
    ),
    "fit_marchenko_pastur": (
        # a fixed zero_rtol: its default follows the input dtype's epsilon, by design
        lambda v, s: infospec.fit_marchenko_pastur(v, 0.5, zero_rtol=1e-12).sigma2,
        "spectrum",
        ("power", 1),
    ),
    "singular_values": (lambda z, s: infospec.singular_values(z), "samples", ("power", 1)),
    "coding_rate": (lambda z, s: infospec.coding_rate(z, eps=0.5 * s), "samples", "invariant"),
    "covariance_eigenvalues": (
        lambda z, s: infospec.covariance_eigenvalues(z),
        "samples",
        ("power", 2),
    ),
    "ledoit_wolf_shrinkage": (
        lambda z, s: infospec.ledoit_wolf_shrinkage(z),
        "samples",
        "invariant",
    ),
    "rate_reduction": (
        lambda z, s: infospec.rate_reduction(z, LABELS, eps=0.5 * s),
        "samples",
        "invariant",
    ),
    "entropy_rank": (lambda v, s: infospec.entropy_rank(v, eps=1e-7), "spectrum", "invariant"),
    "nesum": (lambda v, s: infospec.nesum(v), "spectrum", "invariant"),
    "eigen_decay": (lambda v, s: infospec.eigen_decay(v).alpha, "spectrum", "invariant"),
    "alpha_req": (
        lambda z, s: infospec.alpha_req(z, fit_range=(1, 5)).alpha,
        "samples",
        "invariant",
    ),
    "rankme": (lambda z, s: infospec.rankme(z), "samples", "invariant"),
    "lidar": (
        # the ridge is in the units of Z squared: scaled with it (beyond 1e154 it is inf,
        # refused by name)
        lambda z, s: infospec.lidar(z, LABELS, delta=1e-4 * s * s),
        "samples",
        "invariant",
    ),
    "fit_power_law": (
        # threshold is absolute (eigenvalues below it are dropped): no scale law
        lambda v, s: infospec.fit_power_law(v).alpha,
        "spectrum",
        None,
    ),
    "rate_distortion_perception": (
        lambda v, s: (
            infospec.rate_distortion_perception(v, 0.5 * S_MEDIAN * s, 0.05 * S_MEDIAN * s).rate
        ),
        "spectrum",
        "invariant",
    ),
    "distortion_rate_perception": (
        lambda v, s: infospec.distortion_rate_perception(v, 1.0, 0.05 * S_MEDIAN * s).distortion,
        "spectrum",
        None,  # the perception budget is fixed, not a share of each variance
    ),
    "latent_capacity": (
        lambda z, s: infospec.latent_capacity(z, np.full((60, 5), 2 * math.log(s))).total,
        "samples",
        "invariant",
    ),
    "mixture_entropy_bounds": (
        lambda z, s: tuple(
            infospec.mixture_entropy_bounds(
                np.full(60, 1 / 60), z, np.eye(5)[None].repeat(60, 0) * (s * s)
            )[:2]
        ),
        "samples",
        _MIXTURE_LAW,
    ),
    "mixture_entropy_monte_carlo": (
        lambda z, s: (
            infospec.mixture_entropy_monte_carlo(
                np.full(60, 1 / 60),
                z,
                np.eye(5)[None].repeat(60, 0) * (s * s),
                n_samples=64,
                generator=torch.Generator().manual_seed(0),
            ).entropy
        ),
        "samples",
        _MIXTURE_LAW,
    ),
    "TransformCoder.rate": (
        lambda z, s: infospec.transforms.TransformCoder(rate=6.0).fit(z).empirical_rate_bits(z),
        "samples",
        "invariant",
    ),
    "TransformCoder.distortion": (
        lambda z, s: infospec.transforms.TransformCoder(rate=6.0).fit(z).distortion(z),
        "samples",
        ("power", 2),
    ),
    "rate_distortion_curve": (
        lambda z, s: torch.tensor(
            infospec.transforms.rate_distortion_curve(z, [4.0, 8.0])["rate_bits"].values
        ),
        "samples",
        "invariant",
    ),
    "truncation_curve": (
        lambda z, s: torch.tensor(infospec.transforms.truncation_curve(z, [1, 3])["ratio"].values),
        "samples",
        "invariant",
    ),
    "radial_power_spectrum": (
        lambda z, s: infospec.spectra.radial_power_spectrum(z).power,
        "samples",
        ("power", 2),
    ),
    "power_spectrogram": (
        lambda v, s: infospec.spectra.power_spectrogram(v, n_fft=16, power=1),
        "spectrum",
        ("power", 1),
    ),
}


def _clean(kind: str) -> np.ndarray:
    return SPECTRUM.copy() if kind == "spectrum" else SAMPLES.copy()


def _check(name: str, call: Callable[..., Any], probe: Any, scale: float = 1.0) -> Any:
    """Run one probe: a named error passes, any other exception fails, NaN fails."""
    try:
        out = call(probe, scale)
    except InfospecError as exc:
        assert str(exc), f"{name}: an InfospecError with no message"
        return None
    nums = _numbers(out)
    assert not any(math.isnan(v) for v in nums), f"{name}: silent NaN for {type(probe)}"
    return out


def _bad_probes(kind: str) -> dict[str, Any]:
    x = _clean(kind)
    with_nan = x.copy()
    with_nan.flat[3] = np.nan
    with_inf = x.copy()
    with_inf.flat[2] = np.inf
    with_ninf = x.copy()
    with_ninf.flat[1] = -np.inf
    return {
        "nan": with_nan,
        "inf": with_inf,
        "-inf": with_ninf,
        "empty": np.zeros((0,) * x.ndim),
        "string": np.array(["a", "b"]),
        "object": np.array([object(), object()], dtype=object),
        "complex": x.astype(np.complex128),
        "complex_tensor": torch.tensor(x, dtype=torch.complex64),
        "bool": x > np.median(x),
        "scalar": np.float64(1.5),
        "python_none": None,
        "nested_ragged": [[1.0, 2.0], [3.0]],
        "too_many_dims": np.ones((2, 2, 2, 2)) if kind == "samples" else np.ones((3, 2)),
        "negative": -x,
        "meta": torch.empty(x.shape, dtype=torch.float64, device="meta"),
    }


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("probe", sorted(_bad_probes("spectrum")))
def test_bad_inputs_give_a_named_error_or_a_finite_value(name, probe):
    call, kind, _ = MEASURES[name]
    _check(name, call, _bad_probes(kind)[probe])


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("nan_kind", ["nan", "inf"])
def test_non_finite_inputs_are_refused_by_name(name, nan_kind):
    """NaN or +Inf in the main input: always an InputError, never a value."""
    call, kind, _ = MEASURES[name]
    with pytest.raises(InfospecError, match=r"finite|NaN|infinite"):
        call(_bad_probes(kind)[nan_kind], 1.0)


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-160, 1e-20, 1e20, 1e160, 1e200, 1e300])
def test_extreme_scales_follow_the_scale_law_or_are_refused(name, scale):
    call, kind, law = MEASURES[name]
    x = _clean(kind)
    ref = call(x, 1.0)
    out = _check(name, call, x * scale, scale)
    if out is None or law is None:
        return
    got = np.asarray(_numbers(out), dtype=float)
    want = np.asarray(_numbers(ref), dtype=float)
    if callable(law):
        expected = law(want, scale)
        if expected is None:
            return  # the law does not apply at this scale (its docstring says why)
    elif law == "invariant":
        expected = want
    elif law[0] == "power":
        with np.errstate(over="ignore", under="ignore"):
            expected = want * scale ** law[1]
        if not np.all(np.isfinite(expected)) or np.any((expected == 0) & (want != 0)):
            return  # the exact answer is outside float64 itself
    else:  # ("log", k): value + k log s
        expected = want + law[1] * math.log(scale)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12 * max(1.0, abs(want).max()))


@pytest.mark.parametrize("name", sorted(MEASURES))
@pytest.mark.parametrize(
    "variant", ["int", "float16", "bfloat16", "float32", "non_contiguous", "numpy_f32", "list"]
)
def test_other_dtypes_and_layouts_agree_with_float64(name, variant):
    call, kind, _ = MEASURES[name]
    x = _clean(kind)
    ref = np.asarray(_numbers(call(x, 1.0)), dtype=float)
    if variant == "int":
        probe = np.round(x * 10).astype(np.int64)  # compared with the same integers as floats
        ref = np.asarray(_numbers(call(probe.astype(np.float64), 1.0)), dtype=float)
        rtol = 1e-12
    elif variant in ("float16", "bfloat16", "float32"):
        dtype = getattr(torch, variant)
        probe = torch.tensor(x, dtype=dtype)
        ref = np.asarray(_numbers(call(probe.double(), 1.0)), dtype=float)
        rtol = 1e-12  # the lower-precision values, upcast, give the float64 answer
    elif variant == "non_contiguous":
        wide = np.stack([x, x], axis=-1)  # every other element
        probe = torch.tensor(wide)[..., 0]
        assert not probe.is_contiguous()
        rtol = 1e-13
    elif variant == "numpy_f32":
        probe = x.astype(np.float32)
        ref = np.asarray(_numbers(call(probe.astype(np.float64), 1.0)), dtype=float)
        rtol = 1e-12
    else:
        probe = x.tolist()
        rtol = 1e-13
    out = _check(name, call, probe)
    assert out is not None, f"{name} refused a valid {variant} input"
    got = np.asarray(_numbers(out), dtype=float)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=1e-12 * max(1.0, abs(ref).max()))


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (infospec.spectral_flatness, 0.9711832700543621),  # cbrt(1.7 * 1.7 * 1) / (4.4 / 3)
        (infospec.effective_rank, 2.9199708099825386),
        (infospec.entropy_rank, 2.9199708099825386),
    ],
)
def test_scale_free_measures_survive_an_overflowing_sum(func, expected):
    """The sum of [1.7e308, 1.7e308, 1e308] overflows float64; the measure must not."""
    big = torch.tensor([1.7e308, 1.7e308, 1e308], dtype=torch.float64)
    assert float(func(big)) == pytest.approx(expected, rel=1e-12)
    # float32 near its maximum: value and gradient equal the unit-scale ones (gradient x 1e38).
    z = torch.tensor([3e38, 3e38, 1e38], requires_grad=True)
    u = torch.tensor([3.0, 3.0, 1.0], requires_grad=True)
    func(z).backward()
    func(u).backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad.double() * 1e38, u.grad.double(), rtol=1e-4, atol=0)


@pytest.mark.parametrize("scale", [1e-310, 1e-300, 1.0, 1e300])
def test_rate_distortion_keeps_its_rate_at_the_ends_of_the_float_range(scale):
    """R(c * eig, c * D) = R(eig, D), subnormal eigenvalues included (was 0 at 1e-310)."""
    eig = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)
    ref = infospec.rate_distortion(eig, 0.9)
    out = infospec.rate_distortion(eig * scale, 0.9 * scale)
    assert float(out.rate) == pytest.approx(float(ref.rate), rel=1e-9)
    # reverse water-filling at D = 0.9 on [3, 1, 0.5]: all three components coded, theta = 0.3
    assert float(ref.rate) == pytest.approx(0.5 * math.log(3 * 1 * 0.5 / 0.3**3), rel=1e-12)


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_a_meta_tensor_is_refused_by_name(name):
    """A tensor without values (a model built on the meta device): named, not Tensor.item()."""
    call, kind, _ = MEASURES[name]
    with pytest.raises(InfospecError, match="meta tensor"):
        call(_bad_probes(kind)["meta"], 1.0)


FLAGS = [
    (lambda b: infospec.gaussian_entropy(SPECTRUM, bits=b), "'bits' parameter of gaussian_entropy"),
    (lambda b: infospec.coding_rate(SAMPLES, eps=0.5, bits=b), "'bits' parameter of coding_rate"),
    (
        lambda b: infospec.rate_reduction(SAMPLES, LABELS, eps=0.5, bits=b),
        "'bits' parameter of rate_reduction",
    ),
    (lambda b: infospec.rate_distortion(SPECTRUM, 1.0, bits=b), "'bits' parameter of rate_dist"),
    (lambda b: infospec.distortion_rate(SPECTRUM, 1.0, bits=b), "'bits' parameter of distortion_"),
    (lambda b: infospec.gaussian_capacity(SPECTRUM, 1.0, bits=b), "'bits' parameter of gaussian_c"),
    (
        lambda b: infospec.water_filling_capacity(SPECTRUM, 1.0, bits=b),
        "'bits' parameter of water_filling_capacity",
    ),
    (
        lambda b: infospec.rate_distortion_perception(1.0, 0.5, 0.1, bits=b),
        "'bits' parameter of rate_distortion_perception",
    ),
    (
        lambda b: infospec.distortion_rate_perception(1.0, 0.5, 0.1, bits=b),
        "'bits' parameter of distortion_rate_perception",
    ),
    (
        lambda b: infospec.mixture_entropy_bounds([1.0], [[0.0]], [[[1.0]]], bits=b),
        "'bits' parameter of mixture_entropy_bounds",
    ),
    (
        lambda b: infospec.mixture_entropy_series(3, 2, 0.5, bits=b),
        "'bits' parameter of mixture_entropy_series",
    ),
    (
        lambda b: infospec.latent_capacity(SAMPLES, np.zeros((60, 5)), bits=b),
        "'bits' parameter of latent_capacity",
    ),
    (lambda b: infospec.rankme(SAMPLES, center=b), "'center' parameter of rankme"),
    (
        lambda b: infospec.covariance_eigenvalues(SAMPLES, nonzero=b),
        "'nonzero' parameter of covariance_eigenvalues",
    ),
    (
        lambda b: infospec.singular_values(SAMPLES, return_method=b),
        "'return_method' parameter of singular_values",
    ),
    (
        lambda b: infospec.transforms.TransformCoder(rate=1.0, center=b),
        "'center' parameter of TransformCoder",
    ),
    (
        lambda b: infospec.transforms.rate_distortion_curve(SAMPLES, [2.0], bitstream=b),
        "'bitstream' parameter of rate_distortion_curve",
    ),
]


@pytest.mark.parametrize(("call", "match"), FLAGS)
@pytest.mark.parametrize("bad", ["yes", 1, torch.tensor(True), None])
def test_a_flag_that_is_not_a_bool_is_refused_by_name(call, match, bad):
    """``bits="no"`` was read by its truth value (bits, silently); now it is named."""
    with pytest.raises(InfospecError, match=match + ".* must be True or False"):
        call(bad)
    call(np.True_)  # NumPy's booleans are booleans
    call(False)
