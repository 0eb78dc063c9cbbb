import functools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize

import infospec.measures.power_law as power_law
from infospec import InputError
from infospec.measures.rmt import (
    fit_marchenko_pastur,
    fit_power_law,
    marchenko_pastur_cdf,
    marchenko_pastur_edges,
    marchenko_pastur_pdf,
)

# --------------------------------------------------------------------------------------
# Helpers: spectra and independent references
# --------------------------------------------------------------------------------------


def wishart_eigenvalues(n, p, rng, sigma2=1.0, spikes=()):
    """Eigenvalues of X^T X / n for X (n x p) Gaussian, with planted column variances."""
    X = rng.standard_normal((n, p)) * math.sqrt(sigma2)
    for j, strength in enumerate(spikes):
        X[:, j] *= math.sqrt(strength)
    return np.linalg.eigvalsh(X.T @ X / n)


def heavy_tailed_eigenvalues(n, p, rng, dof=2.5):
    """Squared singular values of an n x p matrix with Student-t entries (power-law ESD)."""
    return np.linalg.svd(rng.standard_t(dof, size=(n, p)), compute_uv=False) ** 2


def pareto(alpha, n, rng, xmin=1.0):
    """Samples of the density (alpha - 1) xmin^(alpha-1) x^-alpha on [xmin, inf)."""
    return xmin * (1.0 + rng.pareto(alpha - 1.0, n))


def truncated_mle(log_ratio, span):
    """alpha of a power law on [xmin, xmin e^span] by maximum likelihood, to round-off.

    With u = alpha - 1 the negative log-likelihood per point is
    -log u + log(1 - e^{-u span}) + (1 + u) mean(log x/xmin), convex in u; its derivative
    -1/u + span/expm1(u span) + mean is solved by Brent's root finder (a minimiser of the
    likelihood itself would find u only to about sqrt(eps), which is not a reference).
    """
    mean = float(log_ratio.mean())

    def score(u):
        if abs(u * span) < 1e-6:  # -1/u + span/expm1(u span) = -span/2 + u span^2/12 + ...
            return -span / 2 + u * span * span / 12 + mean
        return -1.0 / u + span / math.expm1(u * span) + mean

    lo, hi = -60.0, 60.0  # the score increases in u; a root outside is clipped to the bound
    if score(lo) >= 0 or score(hi) <= 0:
        return 1.0 + (lo if score(lo) >= 0 else hi)
    return 1.0 + optimize.brentq(score, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)


def reference_scan(evals, *, threshold=1e-5, small_sample="ww", xmax=None):
    """Loop over xmin candidates, written from the documented rule (WeightWatcher 0.7.7)."""
    x = np.sort(np.asarray(evals, dtype=float))
    x = x[x > threshold]
    if xmax is not None:
        x = x[x <= xmax]
    size = len(x)
    small = small_sample == "ww" and xmax is None and size < 20
    rows = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for i in range(size - 1):
            tail = x[i:]
            n = len(tail)
            log_ratio = np.log(tail / x[i])
            total = log_ratio.sum()
            steps = np.arange(n) / n
            if xmax is None:
                if small and (n < 8 or total <= 1e-12):
                    continue
                alpha = 1 + ((n - 1) if small else n) / total if total > 0 else np.inf
                model = 1 - (tail / x[i]) ** (1 - alpha)
            else:
                span = math.log(xmax / x[i])
                if span == 0:
                    continue
                if total == 0:
                    alpha, model = np.inf, np.zeros(n)
                else:
                    alpha = truncated_mle(log_ratio, span)
                    u = alpha - 1
                    model = np.expm1(-u * log_ratio) / np.expm1(-u * span)
            rows.append((np.max(np.abs(model - steps)), i, alpha))
    if not rows:  # the small-sample rule with fewer than 8 eigenvalues: whole spectrum
        log_ratio = np.log(x / x[0])
        alpha = 1 + (size - 1) / log_ratio.sum()
        model = 1 - (x / x[0]) ** (1 - alpha)
        rows.append((np.max(np.abs(model - np.arange(size) / size)), 0, alpha))
    ks, i, alpha = min(rows, key=lambda r: (r[0], r[1]))
    return {"alpha": alpha, "xmin": x[i], "ks": ks, "n": size - i}


def assert_matches_reference(fit, ref, rtol=1e-10):
    assert float(fit.xmin) == ref["xmin"]
    assert fit.num_tail == ref["n"]
    assert float(fit.alpha) == pytest.approx(ref["alpha"], rel=rtol)
    assert float(fit.ks_distance) == pytest.approx(ref["ks"], rel=rtol, abs=1e-12)


# --------------------------------------------------------------------------------------
# Marchenko-Pastur law
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "sigma2", "lower", "upper"),
    [
        (0.25, 1.0, 0.25, 2.25),
        (1.0, 1.0, 0.0, 4.0),
        (4.0, 1.0, 1.0, 9.0),
        (4.0, 2.0, 2.0, 18.0),
        (0.01, 3.0, 3.0 * 0.81, 3.0 * 1.21),
    ],
)
def test_edges_closed_forms(q, sigma2, lower, upper):
    edges = marchenko_pastur_edges(q, sigma2)
    assert isinstance(edges.lower, float) and isinstance(edges.upper, float)
    assert edges.lower == pytest.approx(lower, rel=1e-14, abs=1e-15)
    assert edges.upper == pytest.approx(upper, rel=1e-14)
    lo, hi = marchenko_pastur_edges(q, sigma2=sigma2)  # unpacks like a tuple
    assert (lo, hi) == (edges.lower, edges.upper)


def test_edges_tensor_broadcast_matches_loop():
    q = torch.tensor([[0.1, 0.5], [1.0, 3.0]])
    sigma2 = torch.tensor([1.0, 2.0])
    lower, upper = marchenko_pastur_edges(q, sigma2)
    assert lower.shape == (2, 2) and lower.dtype == torch.float64
    for i in range(2):
        for j in range(2):
            lo, hi = marchenko_pastur_edges(float(q[i, j]), float(sigma2[j]))
            assert float(lower[i, j]) == pytest.approx(lo, rel=1e-14, abs=1e-15)
            assert float(upper[i, j]) == pytest.approx(hi, rel=1e-14)


@pytest.mark.parametrize(
    ("q", "sigma2", "match"),
    [
        (0.0, 1.0, r"'q' parameter of marchenko_pastur_edges must be a float > 0\. Got 0\.0"),
        (-1.0, 1.0, "'q' parameter .* Got -1.0"),
        (float("nan"), 1.0, "'q' parameter .* Got nan"),
        (0.5, 0.0, "'sigma2' parameter .* Got 0.0"),
        (torch.tensor([0.5, -0.1]), 1.0, r"'q' parameter .* values > 0; .*shape \(2,\)"),
        (0.5, "one", "'sigma2' .* a float > 0 or a numeric tensor. Got 'one'"),
    ],
)
def test_edges_invalid(q, sigma2, match):
    with pytest.raises(InputError, match=match):
        marchenko_pastur_edges(q, sigma2)


@pytest.mark.parametrize("q", [0.05, 0.25, 0.7, 1.0, 1.5, 4.0])
@pytest.mark.parametrize("sigma2", [1.0, 2.5])
def test_pdf_integrates_to_nonzero_mass_with_mean_sigma2(q, sigma2):
    lower, upper = marchenko_pastur_edges(q, sigma2)

    def pdf(x):
        return float(marchenko_pastur_pdf(x, q, sigma2))

    mass, _ = integrate.quad(pdf, lower, upper, limit=200)
    mean, _ = integrate.quad(lambda x: x * pdf(x), lower, upper, limit=200)
    assert mass == pytest.approx(min(1.0, 1.0 / q), rel=1e-6)
    # E[lambda] = tr(X^T X / n) / p = sigma2 for every q (the atom at 0 adds nothing).
    assert mean == pytest.approx(sigma2, rel=1e-6)


def test_pdf_zero_outside_bulk_pole_at_zero_and_no_nan():
    q = 0.25
    x = torch.tensor([-1.0, 0.0, 0.2, 0.25, 2.25, 2.3, 100.0])
    pdf = marchenko_pastur_pdf(x, q)
    assert pdf.tolist()[:3] == [0.0, 0.0, 0.0] and pdf.tolist()[-2:] == [0.0, 0.0]
    assert pdf[3] == 0.0 and pdf[4] == 0.0  # the density vanishes at both edges
    assert float(marchenko_pastur_pdf(0.0, 1.0)) == math.inf  # x^(-1/2) pole when q = 1
    assert float(marchenko_pastur_pdf(0.0, 4.0)) == 0.0  # the atom is not in the density
    grid = torch.linspace(-1.0, 20.0, 2001)
    for q in (0.3, 1.0, 3.0):
        assert not torch.isnan(marchenko_pastur_pdf(grid, q)).any()
        assert not torch.isnan(marchenko_pastur_cdf(grid, q)).any()


@pytest.mark.parametrize("q", [0.1, 0.5, 1.0, 2.0, 6.0])
def test_cdf_matches_quadrature_of_pdf(q):
    sigma2 = 1.7
    lower, upper = marchenko_pastur_edges(q, sigma2)
    atom = max(0.0, 1 - 1 / q)
    points = np.linspace(lower, upper, 5)
    cdf = marchenko_pastur_cdf(points, q, sigma2).numpy()
    for x, value in zip(points, cdf, strict=True):
        mass, _ = integrate.quad(lambda t: float(marchenko_pastur_pdf(t, q, sigma2)), lower, x)
        assert value == pytest.approx(atom + mass, abs=1e-8)
    assert float(marchenko_pastur_cdf(-0.1, q, sigma2)) == 0.0
    assert float(marchenko_pastur_cdf(upper * 1.5, q, sigma2)) == pytest.approx(1.0, abs=1e-15)
    assert float(marchenko_pastur_cdf(0.0, q, sigma2)) == pytest.approx(atom, abs=1e-15)


def test_pdf_matches_random_matrix_histogram(rng):
    n, p = 2400, 600
    eig = wishart_eigenvalues(n, p, rng)
    counts, bins = np.histogram(eig, bins=25, density=True)
    centres = 0.5 * (bins[1:] + bins[:-1])
    pdf = marchenko_pastur_pdf(centres, p / n).numpy()
    assert np.max(np.abs(counts - pdf)) < 0.08 * pdf.max()
    # q > 1: the nonzero eigenvalues follow the density divided by its mass 1/q
    eig = wishart_eigenvalues(300, 900, rng)
    nonzero = eig[eig > 1e-8]
    assert len(nonzero) == 300
    counts, bins = np.histogram(nonzero, bins=15, density=True)
    centres = 0.5 * (bins[1:] + bins[:-1])
    pdf = 3.0 * marchenko_pastur_pdf(centres, 3.0).numpy()
    assert np.max(np.abs(counts - pdf)) < 0.2 * pdf.max()


def test_pdf_gradcheck():
    x = torch.tensor([0.4, 1.0, 1.8], dtype=torch.float64, requires_grad=True)
    sigma2 = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, s: marchenko_pastur_pdf(a, 0.3, s), (x, sigma2))


def test_pdf_keeps_float32_with_grad():
    x = torch.tensor([0.5, 1.0], dtype=torch.float32, requires_grad=True)
    out = marchenko_pastur_pdf(x, 0.25)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_pdf_and_cdf_batched_q_matches_loop():
    x = torch.linspace(0.0, 10.0, 50)
    q = torch.tensor([[0.2], [1.0], [3.0]])
    batched_pdf = marchenko_pastur_pdf(x, q, 1.5)
    batched_cdf = marchenko_pastur_cdf(x, q, 1.5)
    assert batched_pdf.shape == (3, 50)
    for i in range(3):
        looped = marchenko_pastur_pdf(x, float(q[i, 0]), 1.5)
        torch.testing.assert_close(batched_pdf[i], looped)
        torch.testing.assert_close(batched_cdf[i], marchenko_pastur_cdf(x, float(q[i, 0]), 1.5))


@pytest.mark.parametrize("func", [marchenko_pastur_pdf, marchenko_pastur_cdf])
def test_pdf_cdf_invalid(func):
    with pytest.raises(InputError, match=r"'x' argument of marchenko_pastur_.* must be finite"):
        func([1.0, float("nan")], 0.5)
    with pytest.raises(InputError, match=r"'q' parameter of marchenko_pastur_.* Got -2"):
        func([1.0], -2)


# --- fit_marchenko_pastur --------------------------------------------------------------


@pytest.fixture(scope="module")
def noise_spectrum():
    rng = np.random.default_rng(11)
    return wishart_eigenvalues(2000, 500, rng, sigma2=2.5)


def test_fit_mp_recovers_sigma2_on_pure_noise(noise_spectrum):
    fit = fit_marchenko_pastur(noise_spectrum, 500 / 2000)
    assert float(fit.sigma2) == pytest.approx(2.5, rel=0.02)
    assert 0 <= fit.num_spikes <= 2
    assert float(fit.ks_distance) < 0.03
    lower, upper = marchenko_pastur_edges(0.25, float(fit.sigma2))
    assert float(fit.lower_edge) == pytest.approx(lower) and float(fit.upper_edge) == upper
    assert fit.sigma2.dtype == torch.float64 and isinstance(fit.num_spikes, int)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_fit_mp_counts_planted_spikes(k):
    # Population spikes 6..20 x sigma2, far above the BBP threshold 1 + sqrt(q) = 1.5.
    rng = np.random.default_rng(100 + k)
    eig = wishart_eigenvalues(2000, 500, rng, spikes=np.linspace(6.0, 20.0, k))
    fit = fit_marchenko_pastur(eig, 0.25)
    assert fit.num_spikes == k
    assert float(fit.sigma2) == pytest.approx(1.0, rel=0.02)


def test_fit_mp_q_above_one_with_zero_eigenvalues(rng):
    eig = wishart_eigenvalues(400, 1200, rng, sigma2=0.5)  # 800 (numerical) zeros
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # round-off negatives are clipped with a warning
        fit = fit_marchenko_pastur(eig, 3.0)
        fit32 = fit_marchenko_pastur(eig.astype(np.float32), 3.0)
    assert float(fit.sigma2) == pytest.approx(0.5, rel=0.02)
    assert fit.num_spikes <= 2 and float(fit.ks_distance) < 0.05
    assert float(fit32.sigma2) == pytest.approx(float(fit.sigma2), rel=1e-5)
    nonzero_only = fit_marchenko_pastur(np.sort(eig)[-400:], 3.0)
    assert float(nonzero_only.sigma2) == pytest.approx(float(fit.sigma2), rel=1e-12)


def test_fit_mp_known_sigma2(noise_spectrum):
    fit = fit_marchenko_pastur(noise_spectrum, 0.25, sigma2=2.5)
    assert float(fit.sigma2) == 2.5
    assert fit.num_spikes == int((noise_spectrum > 2.5 * 2.25).sum())
    bad = fit_marchenko_pastur(noise_spectrum, 0.25, sigma2=1.0)
    assert bad.num_spikes > 200 and float(bad.ks_distance) > float(fit.ks_distance)


@pytest.mark.parametrize(
    ("transform", "scale"),
    [
        (lambda v, r: v, 1.0),
        (lambda v, r: r.permutation(v), 1.0),
        (lambda v, r: 1e-6 * v, 1e-6),
        (lambda v, r: 1e4 * v, 1e4),
        (lambda v, r: torch.from_numpy(v), 1.0),
    ],
)
def test_fit_mp_scale_equivariance_and_permutation_invariance(transform, scale, rng):
    eig = wishart_eigenvalues(1000, 250, rng, spikes=(9.0, 15.0))
    ref = fit_marchenko_pastur(eig, 0.25)
    fit = fit_marchenko_pastur(transform(eig, rng), 0.25)
    assert float(fit.sigma2) == pytest.approx(scale * float(ref.sigma2), rel=1e-12)
    assert float(fit.upper_edge) == pytest.approx(scale * float(ref.upper_edge), rel=1e-12)
    assert fit.num_spikes == ref.num_spikes == 2
    assert float(fit.ks_distance) == pytest.approx(float(ref.ks_distance), abs=1e-12)


def test_fit_mp_ks_matches_scipy(noise_spectrum):
    from scipy import stats

    fit = fit_marchenko_pastur(noise_spectrum, 0.25)
    bulk = noise_spectrum[noise_spectrum <= float(fit.upper_edge)]

    def cdf(x):
        return marchenko_pastur_cdf(x, 0.25, float(fit.sigma2)).numpy()

    expected = stats.kstest(bulk, cdf).statistic
    assert float(fit.ks_distance) == pytest.approx(expected, rel=1e-10)


def test_fit_mp_spike_count_is_capped_at_half_on_heavy_tails(rng):
    eig = heavy_tailed_eigenvalues(800, 400, rng, dof=1.5) / 800
    fit = fit_marchenko_pastur(eig, 0.5)
    assert 0 < fit.num_spikes <= 200
    assert torch.isfinite(fit.sigma2) and fit.sigma2 > 0


@pytest.mark.parametrize(
    ("eigvals", "q", "kwargs", "match"),
    [
        ([1.0, 2.0, 0.0, 0.0, 0.0], 0.5, {}, "has 2 nonzero eigenvalue.* at least 4"),
        ([2.0] * 10, 0.5, {}, "all 10 nonzero eigenvalues equal to 2"),
        ([[1.0, 2.0], [3.0, 4.0]], 0.5, {}, r"exactly 1 dimension \(p,\); got shape \(2, 2\)"),
        ([1.0, float("nan"), 2.0, 3.0, 4.0], 0.5, {}, "must be finite"),
        ([1.0, -2.0, 2.0, 3.0, 4.0], 0.5, {}, "must be non-negative"),
        ([1.0, 2.0, 3.0, 4.0], 0.0, {}, "'q' parameter of fit_marchenko_pastur .* Got 0.0"),
        ([1.0, 2.0, 3.0, 4.0], 0.5, {"sigma2": -1.0}, "'sigma2' .* Got -1.0"),
        ([1.0, 2.0, 3.0, 4.0], 0.5, {"max_iter": 0}, "'max_iter' .* an int > 0"),
        ([1.0, 2.0, 3.0, 4.0], 0.5, {"zero_rtol": -1.0}, "'zero_rtol' .* >= 0"),
    ],
)
def test_fit_mp_errors(eigvals, q, kwargs, match):
    with pytest.raises(InputError, match=match):
        fit_marchenko_pastur(eigvals, q, **kwargs)


# --------------------------------------------------------------------------------------
# Power-law tail
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [2.5, 4.0])
def test_power_law_recovers_pareto_exponent(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    x = pareto(alpha, 5000, rng, xmin=0.3)
    fit = fit_power_law(x)
    assert abs(float(fit.alpha) - alpha) < 3 * float(fit.sigma)
    assert float(fit.sigma) == pytest.approx((float(fit.alpha) - 1) / math.sqrt(fit.num_tail))
    assert 0 < float(fit.ks_distance) < 0.05
    assert float(fit.xmax) == math.inf


@functools.cache
def _spectra():
    rng = np.random.default_rng(5)
    spectra = {
        "pareto": pareto(3.0, 800, rng),
        "lognormal": np.exp(rng.standard_normal(500)),
        "wishart": wishart_eigenvalues(600, 300, rng),
        "heavy_matrix": heavy_tailed_eigenvalues(500, 250, rng),
        "ties": np.repeat(pareto(2.2, 60, rng), 3),
        "ties_top": np.concatenate([pareto(3.0, 40, rng), [50.0, 50.0, 50.0]]),
        "small_5": pareto(2.5, 5, rng),
        "small_8": pareto(2.5, 8, rng),
        "small_12": np.exp(rng.standard_normal(12)),
        "small_19": pareto(2.5, 19, rng),
        "small_20": pareto(2.5, 20, rng),
        "zeros": np.concatenate([np.zeros(50), 1e-7 * np.ones(5), pareto(2.8, 200, rng)]),
    }
    for values in spectra.values():
        values.flags.writeable = False
    return spectra


@pytest.mark.parametrize("name", list(_spectra()))
@pytest.mark.parametrize("small_sample", ["ww", "standard"])
def test_power_law_matches_reference_loop(name, small_sample):
    x = _spectra()[name]
    fit = fit_power_law(x, small_sample=small_sample)
    assert_matches_reference(fit, reference_scan(x, small_sample=small_sample))
    assert float(fit.sigma) == pytest.approx((float(fit.alpha) - 1) / math.sqrt(fit.num_tail))


def _powerlaw_package_fit(x, **kwargs):
    powerlaw = pytest.importorskip("powerlaw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # WeightWatcher's settings (continuous, untruncated, KS-chosen xmin); the alpha range
        # is widened from powerlaw 2.0's default (0, 3), which rejects steeper tails.
        return powerlaw.Fit(
            x[x > 1e-5], verbose=False, parameter_ranges={"alpha": [1.0, 100.0]}, **kwargs
        )


def test_power_law_matches_powerlaw_package_fast():
    x = pareto(2.4, 400, np.random.default_rng(3), xmin=2.0)
    ref = _powerlaw_package_fit(x)
    fit = fit_power_law(x)
    assert float(fit.xmin) == float(ref.xmin)
    assert float(fit.alpha) == pytest.approx(float(ref.alpha), rel=1e-3)
    assert float(fit.ks_distance) == pytest.approx(float(ref.D), rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pareto", "lognormal", "wishart", "heavy_matrix"])
def test_power_law_matches_powerlaw_package(name):
    x = _spectra()[name]
    ref = _powerlaw_package_fit(x)
    fit = fit_power_law(x)
    assert float(fit.xmin) == float(ref.xmin)
    assert float(fit.alpha) == pytest.approx(float(ref.alpha), rel=1e-3)
    assert float(fit.sigma) == pytest.approx(float(ref.sigma), rel=1e-3)


def test_power_law_given_xmin_is_the_closed_form(rng):
    x = pareto(3.0, 2000, rng)
    xmin = 1.7  # not an eigenvalue
    tail = np.sort(x[x >= xmin])
    n = len(tail)
    alpha = 1 + n / np.sum(np.log(tail / xmin))
    ks = np.max(np.abs(1 - (tail / xmin) ** (1 - alpha) - np.arange(n) / n))
    fit = fit_power_law(x, xmin=xmin)
    assert float(fit.alpha) == pytest.approx(alpha, rel=1e-12)
    assert float(fit.xmin) == xmin and fit.num_tail == n
    assert float(fit.sigma) == pytest.approx((alpha - 1) / math.sqrt(n), rel=1e-12)
    assert float(fit.ks_distance) == pytest.approx(ks, rel=1e-10)


def test_power_law_truncated_given_xmin_is_the_numerical_mle(rng):
    x = pareto(2.2, 3000, rng)
    xmin, xmax = 1.3, 40.0
    tail = np.sort(x[(x >= xmin) & (x <= xmax)])
    alpha = truncated_mle(np.log(tail / xmin), math.log(xmax / xmin))
    fit = fit_power_law(x, xmin=xmin, xmax=xmax)
    assert float(fit.alpha) == pytest.approx(alpha, rel=1e-8)
    assert float(fit.xmax) == xmax and fit.num_tail == len(tail)
    u = alpha - 1
    model = np.expm1(-u * np.log(tail / xmin)) / np.expm1(-u * math.log(xmax / xmin))
    ks = np.max(np.abs(model - np.arange(len(tail)) / len(tail)))
    assert float(fit.ks_distance) == pytest.approx(ks, rel=1e-6)
    # Pareto(2.2) cut at 40: the untruncated fit of the same tail is biased upwards.
    untruncated = float(fit_power_law(tail, xmin=xmin).alpha)
    assert abs(float(fit.alpha) - 2.2) < 2 * float(fit.sigma) < abs(untruncated - 2.2)


def test_power_law_truncated_scan_matches_reference_loop(rng):
    x = heavy_tailed_eigenvalues(300, 120, rng)
    for xmax in ("max", float(np.quantile(x, 0.97))):
        fit = fit_power_law(x, xmax=xmax)
        limit = float(x.max()) if xmax == "max" else xmax
        assert_matches_reference(fit, reference_scan(x, xmax=limit))
        assert float(fit.xmax) == limit


def test_power_law_truncated_recovers_exponent_and_standard_error(rng):
    alpha, xmin, xmax, n = 1.6, 1.0, 1e3, 20000
    u = alpha - 1
    span = math.log(xmax / xmin)
    draws = xmin * (1 - rng.random(n) * -np.expm1(-u * span)) ** (-1 / u)
    fit = fit_power_law(draws, xmin=xmin, xmax=xmax)
    assert abs(float(fit.alpha) - alpha) < 3 * float(fit.sigma)
    # sigma = 1 / sqrt(observed information): the curvature of the log-likelihood at the
    # optimum, by central differences.
    mean = np.log(draws / xmin).mean()

    def loglik(v):
        return n * (math.log(v / -math.expm1(-v * span)) - (1 + v) * mean)

    u_hat, h = float(fit.alpha) - 1, 1e-4
    curvature = -(loglik(u_hat + h) - 2 * loglik(u_hat) + loglik(u_hat - h)) / h**2
    assert float(fit.sigma) == pytest.approx(1 / math.sqrt(curvature), rel=1e-4)
    # Cutting the tail at xmax loses information: larger than the untruncated value.
    assert float(fit.sigma) > (float(fit.alpha) - 1) / math.sqrt(n)
    wide = fit_power_law(draws, xmin=xmin, xmax=1e300)
    loose = fit_power_law(draws, xmin=xmin)
    assert float(wide.alpha) == pytest.approx(float(loose.alpha), rel=1e-9)
    assert float(wide.sigma) == pytest.approx(float(loose.sigma), rel=1e-6)


def test_power_law_truncated_allows_alpha_below_one(rng):
    # log-uniform data has p(x) ~ 1/x (alpha = 1); data piling up near xmax has alpha < 1.
    x = np.exp(rng.uniform(0.0, 3.0, 4000) ** 0.5 * math.sqrt(3.0))
    fit = fit_power_law(x, xmin=1.0, xmax=math.exp(3.0))
    assert float(fit.alpha) < 1.0 and torch.isfinite(fit.sigma) and fit.sigma > 0
    flat = fit_power_law(np.exp(rng.uniform(0.0, 3.0, 4000)), xmin=1.0, xmax=math.exp(3.0))
    assert float(flat.alpha) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize(("alpha", "xmax"), [(3.5, 6.0), (4.0, 10.0)])
def test_power_law_truncated_matches_powerlaw_package(alpha, xmax):
    # powerlaw 2.0 maximises the truncated likelihood (Nelder-Mead, tol 1e-4) only when the
    # untruncated closed form falls outside (1.5, 3]; inside, it returns that closed form.
    x = pareto(alpha, 3000, np.random.default_rng(2))
    ref = _powerlaw_package_fit(x, xmin=1.0, xmax=xmax)
    fit = fit_power_law(x, xmin=1.0, xmax=xmax)
    assert float(fit.alpha) == pytest.approx(float(ref.power_law.alpha), rel=1e-3)


def test_power_law_block_size_does_not_change_result(monkeypatch):
    x = _spectra()["heavy_matrix"]
    ref = fit_power_law(x)
    monkeypatch.setattr(power_law, "_KS_BLOCK_ELEMENTS", 100)
    fit = fit_power_law(x)
    assert float(fit.alpha) == float(ref.alpha) and float(fit.xmin) == float(ref.xmin)
    assert float(fit.ks_distance) == float(ref.ks_distance)
    truncated = fit_power_law(x, xmax="max")
    monkeypatch.setattr(power_law, "_KS_BLOCK_ELEMENTS", 1 << 20)
    assert float(fit_power_law(x, xmax="max").alpha) == float(truncated.alpha)


def _spectrum_of_kind(kind, n, rng):
    """Spectra whose KS curves have long flat stretches, ties and plateaus."""
    if kind == "pareto":
        return pareto(rng.uniform(1.5, 5.0), n, rng)
    if kind == "chi2":
        return rng.chisquare(3, n)
    if kind == "ties":  # a quarter-step grid: many equal values and equal tails
        return np.round(rng.exponential(1.0, n) * 4) / 4 + 1e-3
    if kind == "matrix":
        return np.linalg.svd(rng.standard_normal((n, n + 5)), compute_uv=False) ** 2
    return np.concatenate([rng.uniform(0, 1, n), 10 + rng.pareto(2.0, max(1, n // 10))])


@pytest.mark.parametrize("kind", ["pareto", "chi2", "ties", "matrix", "mixed"])
@pytest.mark.parametrize("stride", [1, 2, 6, 17])
def test_power_law_bounded_scan_is_the_full_scan(kind, stride, monkeypatch):
    # _ks_argmin bounds each candidate's KS distance from a column grid and computes the
    # rest only for the candidates the bounds cannot rule out: the chosen tail, its exponent
    # and its distance must be those of the full scan, to the bit, at any stride
    rng = np.random.default_rng(stride)
    spectra = [_spectrum_of_kind(kind, int(n), rng) for n in rng.integers(30, 700, 6)]
    monkeypatch.setattr(power_law, "_KS_STRIDE", 10**9)  # every candidate scanned in full
    full = [fit_power_law(x) for x in spectra]
    monkeypatch.setattr(power_law, "_KS_STRIDE", stride)
    monkeypatch.setattr(power_law, "_KS_BLOCK_ELEMENTS", 1 << 12)  # many blocks and splits
    for x, ref in zip(spectra, full, strict=True):
        fit = fit_power_law(x)
        assert fit.num_tail == ref.num_tail
        for field in ("alpha", "xmin", "ks_distance", "sigma"):
            assert float(getattr(fit, field)) == float(getattr(ref, field)), field


def test_power_law_bounded_scan_bounds_hold():
    # the grid's maximum is a lower bound of each candidate's distance and, plus
    # stride / n_i, an upper bound: checked against every full distance
    rng = np.random.default_rng(5)
    x = np.sort(_spectrum_of_kind("mixed", 500, rng))
    logs = torch.from_numpy(np.log(x) - np.log(x).mean())
    n = logs.numel()
    n_tail = torch.arange(n, 1, -1, dtype=torch.float64)
    u = torch.from_numpy(rng.uniform(0.2, 3.0, n - 1))
    full = power_law._ks_all(logs, u, None, None)
    for stride in (3, 8):
        grid = torch.cat([torch.arange(stride - 1, n - 1, stride), torch.tensor([n - 1])])
        low = power_law._ks_all(logs, u, None, None, cols=grid)
        assert bool((low <= full).all())
        assert bool((full <= low + stride / n_tail + 1e-12).all())
        assert float((full - low).max()) > 0  # the grid misses columns: a real bound


@pytest.mark.parametrize(
    ("transform", "scale"),
    [
        (lambda v, r: r.permutation(v), 1.0),
        (lambda v, r: np.concatenate([v, np.zeros(30), np.full(4, 1e-6)]), 1.0),
        (lambda v, r: torch.from_numpy(v).to(torch.float32).double(), 1.0),
        (lambda v, r: 1e3 * v, 1e3),
        (lambda v, r: 1e-2 * v, 1e-2),
    ],
)
def test_power_law_invariances(transform, scale, rng):
    x = heavy_tailed_eigenvalues(400, 200, rng).astype(np.float32).astype(np.float64)
    ref = fit_power_law(x, threshold=0.0)
    fit = fit_power_law(transform(x, rng), threshold=0.0)
    assert float(fit.alpha) == pytest.approx(float(ref.alpha), rel=1e-9)
    assert float(fit.xmin) == pytest.approx(scale * float(ref.xmin), rel=1e-12)
    assert float(fit.ks_distance) == pytest.approx(float(ref.ks_distance), rel=1e-9)
    assert fit.num_tail == ref.num_tail


def test_power_law_float32_grad_input_is_detached():
    x = torch.tensor(pareto(3.0, 300, np.random.default_rng(0)), dtype=torch.float32)
    fit = fit_power_law(x.requires_grad_())
    assert fit.alpha.dtype == torch.float64 and not fit.alpha.requires_grad
    assert float(fit.alpha) == pytest.approx(float(fit_power_law(x.detach()).alpha))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fits_keep_the_device_and_agree_with_cpu():
    x = torch.from_numpy(_spectra()["heavy_matrix"])
    for fit in (fit_power_law, lambda v: fit_power_law(v, xmax="max")):
        cpu, gpu = fit(x), fit(x.cuda())
        assert gpu.alpha.device.type == "cuda" and gpu.num_tail == cpu.num_tail
        assert float(gpu.alpha) == pytest.approx(float(cpu.alpha), rel=1e-9)
    eig = torch.from_numpy(wishart_eigenvalues(800, 200, np.random.default_rng(1)))
    cpu, gpu = fit_marchenko_pastur(eig, 0.25), fit_marchenko_pastur(eig.cuda(), 0.25)
    assert gpu.sigma2.device.type == "cuda" and gpu.num_spikes == cpu.num_spikes
    assert float(gpu.sigma2) == pytest.approx(float(cpu.sigma2), rel=1e-9)
    assert marchenko_pastur_pdf(eig.cuda(), 0.25).device.type == "cuda"


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.sampled_from([0.5, 1.0, 2.0, 4.0]),
            st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False),
        ),
        min_size=2,
        max_size=45,
    )
)
def test_power_law_property_matches_reference(values):
    x = np.array(values)
    if x.min() == x.max():
        with pytest.raises(InputError, match=r"all .* equal"):
            fit_power_law(x)
        return
    ref = reference_scan(x)
    try:
        fit = fit_power_law(x)
    except InputError as err:  # the best tail is a block of equal top values
        assert "infinite" in str(err) and ref["alpha"] == np.inf
        return
    # Near-ties in D may break differently in the last bit: compare the achieved minimum
    # and the exponent of the chosen tail with the reference's formula for that tail.
    assert float(fit.ks_distance) == pytest.approx(ref["ks"], rel=1e-9, abs=1e-12)
    tail = np.sort(x)[-fit.num_tail :]
    shift = 1 if len(x) < 20 else 0
    alpha = 1 + (len(tail) - shift) / np.sum(np.log(tail / tail[0]))
    assert float(fit.alpha) == pytest.approx(alpha, rel=1e-9)
    assert float(fit.xmin) == tail[0]
    assert math.isfinite(float(fit.sigma)) and float(fit.sigma) > 0


@pytest.mark.parametrize(
    ("eigvals", "kwargs", "match"),
    [
        ([3.0], {}, r"has 1 eigenvalue\(s\) above threshold=1e-05 .* at least 2"),
        ([0.0, 1e-6, 5.0], {}, r"has 1 eigenvalue\(s\) above threshold"),
        ([2.0, 2.0, 2.0, 0.0], {}, "all 3 eigenvalues above threshold=1e-05 equal to 2"),
        ([[1.0, 2.0], [3.0, 4.0]], {}, r"exactly 1 dimension \(p,\); got shape \(2, 2\)"),
        ([1.0, float("inf")], {}, "must be finite"),
        ([1.0, -3.0, 2.0], {}, "must be non-negative"),
        ([1.0, 2.0, 3.0], {"xmin": 3.0}, r"leaves 1 eigenvalue\(s\) at or above xmin=3"),
        ([1.0, 2.0, 3.0, 3.0], {"xmin": 3.0}, "all equal to it"),
        ([1.0, 2.0, 3.0], {"xmin": -1.0}, "'xmin' parameter of fit_power_law .* Got -1.0"),
        ([1.0, 2.0, 3.0], {"xmin": 2.0, "xmax": 1.5}, "'xmin' .* below 'xmax'"),
        ([1.0, 2.0, 3.0], {"xmax": "force"}, r"'xmax' .* float > 0 or 'max'\. Got 'force'"),
        ([1.0, 2.0, 3.0], {"xmax": 0.5}, r"at most xmax=0.5"),
        ([1.0, 2.0, 3.0], {"threshold": -1.0}, "'threshold' .* >= 0. Got -1.0"),
        ([1.0, 2.0, 3.0], {"small_sample": "wW"}, "'small_sample' .* 'ww', 'standard'"),
        ([1.0, 1.1] + [9.0] * 50, {}, "best tail starts at xmin=9 .* exponent is infinite"),
    ],
)
def test_power_law_errors(eigvals, kwargs, match):
    with pytest.raises(InputError, match=match):
        fit_power_law(eigvals, **kwargs)


@pytest.mark.parametrize("q", [1e-14, 1e-12, 1e-10, 1e-6, 0.01, 0.0624, 0.0626, 0.3])
@pytest.mark.parametrize("sigma2", [1.0, 3.7])
def test_marchenko_pastur_cdf_keeps_its_digits_for_a_narrow_bulk(q, sigma2):
    """Small q: the closed form cancels two terms of size 1/q; the series form must not.

    Reference: scipy quad on u = (t - lower) / (upper - lower), where the density becomes
    8 sqrt(u (1 - u)) / (pi t / sigma2) with no cancellation at any q (the sqrt(u) factor
    as quad's algebraic weight). The points are given by u, and the CDF is evaluated at
    the float x nearest each, whose rounding moves u by about 1e-16 / (4 sqrt q).
    """
    from scipy.integrate import quad

    r = math.sqrt(q)
    lower, upper = sigma2 * (1 - r) ** 2, sigma2 * (1 + r) ** 2
    fractions = [0.1, 0.25, 0.5, 0.9]
    xs = [lower + (upper - lower) * f for f in fractions]
    got = marchenko_pastur_cdf(torch.tensor(xs, dtype=torch.float64), q, sigma2=sigma2)

    def density_over_sqrt_u(u):
        return 8 * math.sqrt(1 - u) / (math.pi * ((1 - r) ** 2 + 4 * r * u))

    want = [
        quad(density_over_sqrt_u, 0.0, f, weight="alg", wvar=(0.5, 0.0), epsabs=1e-16)[0]
        for f in fractions
    ]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=5e-14 + 2e-16 / r)


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e170, 1e300])
@pytest.mark.parametrize("q", [0.25, 1.0, 4.0])
def test_marchenko_pastur_law_is_scale_covariant_across_the_float64_range(scale, q):
    """p(x; s sigma2) = p(x / s; sigma2) / s and F likewise, at any s (no overflow)."""
    x = torch.linspace(0.05, 9.0, 37, dtype=torch.float64)
    pdf = marchenko_pastur_pdf(x, q)
    got_pdf = marchenko_pastur_pdf(x * scale, q, sigma2=scale) * scale
    np.testing.assert_allclose(got_pdf.numpy(), pdf.numpy(), rtol=1e-13, atol=0)
    got_cdf = marchenko_pastur_cdf(x * scale, q, sigma2=scale)
    np.testing.assert_allclose(got_cdf.numpy(), marchenko_pastur_cdf(x, q).numpy(), atol=1e-14)
