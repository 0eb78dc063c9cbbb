import math

import numpy as np
import pytest
import torch

from infospec import InputError
from infospec.spectra import (
    RadialPowerLaw,
    RadialSpectrum,
    fit_radial_power_law,
    noise_cutoff_frequency,
    noise_level_information,
    radial_power_spectrum,
)


def _power_law_field(gen, shape, alpha, count=1):
    """Gaussian fields whose expected orthonormal power spectrum is |f|^-alpha (DC: 0)."""
    h, w = shape
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, dtype=torch.float64)
    f = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    amp = torch.where(f > 0, f.clamp_min(1e-300) ** (-alpha / 2), torch.zeros_like(f))
    noise = torch.randn(count, h, w, dtype=torch.float64, generator=gen)
    return torch.fft.ifft2(torch.fft.fft2(noise) * amp).real


def _spectrum(frequency, power):
    """A RadialSpectrum holding a given radial law (for the fit's exact checks)."""
    n = torch.ones_like(frequency, dtype=torch.int64)
    return RadialSpectrum(frequency, power, n, power[..., None])


@pytest.mark.parametrize("shape", [(16, 16), (12, 20), (7, 33), (2, 2)])
def test_parseval_and_counts(gen, shape):
    x = torch.randn(3, *shape, dtype=torch.float64, generator=gen)
    s = radial_power_spectrum(x)
    torch.testing.assert_close(s.power_2d.sum((-2, -1)), (x * x).sum((-2, -1)), rtol=1e-12, atol=0)
    assert int(s.counts.sum()) == shape[0] * shape[1]
    ring_sums = (s.power * s.counts).sum(-1)
    torch.testing.assert_close(ring_sums, (x * x).sum((-2, -1)), rtol=1e-12, atol=0)
    assert s.frequency[0] == 0 and s.counts[0] == 1
    assert torch.all(torch.diff(s.frequency) > 0)


def test_square_rings_are_the_integer_radius_of_the_centred_grid(gen):
    n = 24
    x = torch.randn(n, n, dtype=torch.float64, generator=gen)
    s = radial_power_spectrum(x)
    k = np.fft.fftfreq(n) * n
    radius = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    ref = np.bincount(radius.ravel(), weights=s.power_2d.numpy().ravel())
    counts = np.bincount(radius.ravel())
    np.testing.assert_array_equal(s.counts.numpy(), counts)
    np.testing.assert_allclose(s.power.numpy(), ref / counts, rtol=1e-13)
    np.testing.assert_allclose(s.frequency.numpy(), np.arange(len(counts)) / n)


def test_non_square_rings_use_physical_frequency():
    # 4 cycles over the 32 rows and 8 over the 64 columns are both 0.125 cycles/pixel:
    # they must land in the same ring (an index radius would put them at 4 and 8)
    h, w = 32, 64
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows = radial_power_spectrum(np.cos(2 * np.pi * 4 * i / h))
    cols = radial_power_spectrum(np.cos(2 * np.pi * 8 * j / w))
    for s in (rows, cols):
        ring = int(torch.argmax(s.power))
        assert s.frequency[ring] == 0.125
        # all the energy (h*w/2 for a unit cosine) in that ring
        assert float(s.power[ring] * s.counts[ring]) == pytest.approx(h * w / 2, rel=1e-12)


def test_white_noise_has_the_flat_spectrum_sigma2(gen):
    sigma2, count, h, w = 2.5, 200, 24, 40
    x = math.sqrt(sigma2) * torch.randn(count, h, w, dtype=torch.float64, generator=gen)
    s = radial_power_spectrum(x, average=True)
    assert s.power.shape == s.frequency.shape and s.power_2d.shape == (h, w)
    # each ring mean over `count` images: P(k)/sigma2 is chi2 (2 dof)/2, sd 1 per coefficient
    se = sigma2 / torch.sqrt(s.counts.to(torch.float64) * count)
    assert torch.all(torch.abs(s.power - sigma2) < 5 * se)
    assert float(s.power_2d.mean()) == pytest.approx(sigma2, rel=0.01)
    fit = fit_radial_power_law(s)
    assert abs(float(fit.alpha)) < 0.03 and float(fit.K) == pytest.approx(sigma2, rel=0.05)


@pytest.mark.parametrize(("shape", "alpha"), [((128, 128), 2.0), ((96, 160), 3.0)])
def test_a_synthesised_power_law_field_recovers_alpha(gen, shape, alpha):
    x = _power_law_field(gen, shape, alpha, count=100)
    s = radial_power_spectrum(x, average=True)
    fit = fit_radial_power_law(s, f_min=0.05)
    assert float(fit.alpha) == pytest.approx(alpha, abs=0.02)
    assert float(fit.K) == pytest.approx(1.0, rel=0.05)
    assert float(fit.r2) > 0.999
    assert fit.f_min == 0.05 and fit.f_max == 0.5 and fit.n_bins > 20


def test_fit_is_exact_on_an_exact_law():
    f = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64)
    power = torch.stack([0.7 * f.clamp_min(1e-3) ** -2.3, 2.0 * f.clamp_min(1e-3) ** -1.1])
    fit = fit_radial_power_law(_spectrum(f, power))
    torch.testing.assert_close(fit.alpha, torch.tensor([2.3, 1.1], dtype=torch.float64))
    torch.testing.assert_close(fit.K, torch.tensor([0.7, 2.0], dtype=torch.float64))
    torch.testing.assert_close(fit.r2, torch.ones(2, dtype=torch.float64))
    assert fit.n_bins == 5 and fit.f_min == pytest.approx(0.1)  # DC and the corner left out


def test_cutoff_is_where_the_law_meets_the_noise_floor():
    f = torch.linspace(0, 0.5, 11, dtype=torch.float64)
    fit = fit_radial_power_law(_spectrum(f, 0.02 * f.clamp_min(1e-3) ** -2.0))
    noise = torch.tensor([1e-3, 0.08, 2.0], dtype=torch.float64)
    fc = noise_cutoff_frequency(fit, noise)
    torch.testing.assert_close(fc, (0.02 / noise) ** 0.5)
    torch.testing.assert_close(fit.K * fc ** (-fit.alpha), noise)  # P(f_c) = sigma^2
    assert float(noise_cutoff_frequency(fit, 0.08)) == pytest.approx(0.5)
    assert torch.all(torch.diff(fc) < 0)  # more noise buries lower frequencies


def test_information_of_a_stationary_gaussian_image(gen):
    # a periodic stationary Gaussian image has the circulant covariance C with eigenvalues
    # P(k); I(X; X + N) = 1/2 logdet(I + C / sigma^2) computed from C itself, in float64
    h, w = 6, 8
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    spectrum = 1.0 / (0.02 + fy**2 + fx**2)  # symmetric in k -> -k: a real covariance
    c = np.fft.ifft2(spectrum).real  # autocovariance c(d) (orthonormal FFT convention)
    idx = np.array([(a, b) for a in range(h) for b in range(w)])
    d = (idx[:, None, :] - idx[None, :, :]) % np.array([h, w])
    cov = c[d[..., 0], d[..., 1]]
    # an image whose periodogram is exactly `spectrum`: unit-modulus Hermitian phases
    phase = np.fft.fft2(np.random.default_rng(1).standard_normal((h, w)))
    x = np.fft.ifft2(np.sqrt(spectrum) * phase / np.abs(phase), norm="ortho").real
    s = radial_power_spectrum(x)
    np.testing.assert_allclose(s.power_2d.numpy(), spectrum, rtol=1e-10)
    for sigma2 in (0.1, 1.0, 30.0):
        ref = 0.5 * np.linalg.slogdet(np.eye(h * w) + cov / sigma2)[1]
        nats = noise_level_information(s, sigma2, bits=False)
        assert float(nats) == pytest.approx(ref, rel=1e-10)
        bits = noise_level_information(s, sigma2, bits=True)
        assert float(bits) == pytest.approx(ref / math.log(2), rel=1e-10)
        assert float(noise_level_information(s, sigma2, radial=True)) >= float(nats) - 1e-9


def test_information_per_level_flat_rings_and_batch(gen):
    delta = torch.zeros(2, 8, 8, dtype=torch.float64)
    delta[0, 0, 0], delta[1, 3, 5] = 8.0, 4.0  # flat spectra 1 and 1/4 at all 64 frequencies
    s = radial_power_spectrum(delta)
    levels = torch.tensor([0.25, 1.0, 3.0], dtype=torch.float64)
    got = noise_level_information(s, levels, bits=True)
    ref = 32 * torch.log2(1 + torch.tensor([[1.0], [0.25]], dtype=torch.float64) / levels)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(noise_level_information(s, levels, radial=True, bits=True), ref)
    assert torch.all(torch.diff(got, dim=-1) < 0)  # more noise, fewer bits


def test_channel_layouts_and_average_agree(gen):
    x = torch.randn(2, 3, 10, 14, dtype=torch.float64, generator=gen)  # (N, C, H, W)
    first = radial_power_spectrum(x, channels="first")
    last = radial_power_spectrum(x.movedim(1, -1).numpy(), channels="last")
    assert first.power.shape == (2, 3, first.frequency.numel())
    torch.testing.assert_close(first.power, last.power, rtol=1e-13, atol=0)
    mean = radial_power_spectrum(x, channels="first", average=True)
    torch.testing.assert_close(mean.power, first.power.mean((0, 1)), rtol=1e-13, atol=0)
    # translation invariance of a power spectrum (circular shift)
    rolled = radial_power_spectrum(torch.roll(x, (3, -5), dims=(-2, -1)), channels="first")
    torch.testing.assert_close(rolled.power, first.power, rtol=1e-12, atol=1e-12)


def test_gradient_through_the_spectrum(gen):
    x = torch.randn(16, 16, generator=gen, requires_grad=True)
    s = radial_power_spectrum(x)
    assert s.power.dtype == torch.float32
    s.power[1:].sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_real_images_shipped_with_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets")
    china = datasets.load_sample_image("china.jpg") / 127.5 - 1  # (427, 640, 3) in [-1, 1]
    s = radial_power_spectrum(china, channels="last")
    assert s.power.shape[0] == 3 and int(s.counts.sum()) == 427 * 640
    fit = fit_radial_power_law(s)
    # the natural-image law (alpha near 2; measured 2.06, 2.06, 2.15 for R, G, B)
    assert torch.all((fit.alpha > 1.8) & (fit.alpha < 2.3)) and torch.all(fit.r2 > 0.95)
    digits = datasets.load_digits().images / 8.0 - 1  # (1797, 8, 8)
    d = radial_power_spectrum(digits, average=True)
    assert d.frequency.tolist() == [k / 8 for k in range(7)]
    assert float(fit_radial_power_law(d).alpha) == pytest.approx(2.267, abs=0.01)  # measured


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(images=np.ones((4, 4)), channels="middle"), "'channels' parameter of radial_power"),
        (dict(images=np.ones((4, 4)), average=1), "'average' parameter of radial_power_spectrum"),
        (dict(images=np.ones(4)), r"'images' argument of radial_power_spectrum must have shape"),
        (dict(images=np.ones((4, 4)), channels="last"), r"shape \(\.\.\., H, W, C\)"),
        (dict(images=np.ones((1, 5))), "at least 2 x 2 pixels"),
        (dict(images=np.ones((0, 4, 4))), "at least 2 x 2 pixels"),
        (
            dict(images=np.full((4, 4), np.inf)),
            "'images' argument of radial_power_spectrum must be",
        ),
        (dict(images=np.ones((4, 4)) * 1j), "must be real"),
    ],
)
def test_spectrum_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        radial_power_spectrum(**kwargs)


def test_fit_cutoff_and_information_errors(gen):
    s = radial_power_spectrum(torch.randn(16, 16, dtype=torch.float64, generator=gen))
    with pytest.raises(InputError, match="must be the RadialSpectrum returned by"):
        fit_radial_power_law(s.power)
    with pytest.raises(InputError, match=r"'f_min' parameter of fit_radial_power_law \(0.4\)"):
        fit_radial_power_law(s, f_min=0.4, f_max=0.2)
    with pytest.raises(InputError, match="'f_max' parameter of fit_radial_power_law"):
        fit_radial_power_law(s, f_max=-1)
    with pytest.raises(InputError, match="needs at least 2 rings in"):
        fit_radial_power_law(s, f_min=0.3, f_max=0.31)
    flat = radial_power_spectrum(np.ones((8, 8)))
    with pytest.raises(InputError, match=r"zero power at f = 0\.125"):
        fit_radial_power_law(flat)
    fit = fit_radial_power_law(s)
    rising = RadialPowerLaw(fit.K, torch.tensor(-0.5), fit.r2, 0.1, 0.5, 5)
    with pytest.raises(InputError, match=r"alpha = -0\.5 <= 0"):
        noise_cutoff_frequency(rising, 1.0)
    with pytest.raises(InputError, match="must be the RadialPowerLaw returned by"):
        noise_cutoff_frequency((1.0, 2.0), 1.0)
    good = RadialPowerLaw(fit.K, torch.tensor(2.0), fit.r2, 0.1, 0.5, 5)
    for bad in (0.0, -1.0, [1.0, -2.0], [], [[1.0]], [np.nan]):
        with pytest.raises(InputError, match="'noise_var'"):
            noise_cutoff_frequency(good, bad)
    with pytest.raises(InputError, match="'noise_var' argument of noise_level_information"):
        noise_level_information(s, [0.5, 0.0])
    with pytest.raises(InputError, match="'bits' parameter of noise_level_information"):
        noise_level_information(s, 1.0, bits="yes")
    with pytest.raises(InputError, match="'radial' parameter of noise_level_information"):
        noise_level_information(s, 1.0, radial=None)


@pytest.mark.parametrize("exponent", [-500, -300, 300, 500])
def test_the_radial_spectrum_scales_bit_for_bit_to_the_edges_of_float64(exponent):
    img = torch.randn(16, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    s = 2.0**exponent
    ref = radial_power_spectrum(img)
    got = radial_power_spectrum(img * s)
    assert torch.equal(got.power / (s * s), ref.power)
    assert torch.equal(got.power_2d / (s * s), ref.power_2d)


def test_a_radial_power_beyond_float64_is_named():
    img = torch.randn(16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with pytest.raises(InputError, match=r"'images' argument of radial_power_spectrum .*overflow"):
        radial_power_spectrum(img * 1e160)


def test_hand_built_spectra_and_fits_are_checked():
    """A RadialSpectrum or RadialPowerLaw made by hand may hold anything: named errors
    (a list frequency raised AttributeError, a short one IndexError, NaN power and NaN or
    negative K gave silent NaN, a cutoff past float64 gave inf)."""
    import pytest
    import torch

    from infospec import InputError
    from infospec.spectra import (
        RadialPowerLaw,
        fit_radial_power_law,
        noise_cutoff_frequency,
        noise_level_information,
        radial_power_spectrum,
    )

    img = torch.rand(32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sp = radial_power_spectrum(img)
    ref = fit_radial_power_law(sp)
    listed = fit_radial_power_law(sp._replace(frequency=sp.frequency.tolist()))
    torch.testing.assert_close(listed.alpha, ref.alpha)
    with pytest.raises(InputError, match="one value per ring"):
        fit_radial_power_law(sp._replace(frequency=sp.frequency[:-1]))
    with pytest.raises(InputError, match="'spectrum' argument of fit_radial_power_law must be fin"):
        fit_radial_power_law(sp._replace(power=sp.power * float("nan")))
    with pytest.raises(InputError, match="'spectrum' argument of noise_level_information must"):
        noise_level_information(sp._replace(power=sp.power * float("nan")), 1.0, radial=True)

    def fit(k, alpha):
        one = torch.tensor(1.0, dtype=torch.float64)
        return RadialPowerLaw(
            torch.tensor(k, dtype=torch.float64),
            torch.tensor(alpha, dtype=torch.float64),
            one,
            0.1,
            0.5,
            5,
        )

    with pytest.raises(InputError, match="'fit' argument of noise_cutoff_frequency must be fin"):
        noise_cutoff_frequency(fit(float("nan"), 2.0), 1.0)
    with pytest.raises(InputError, match="K = -1 <= 0"):
        noise_cutoff_frequency(fit(-1.0, 2.0), 1.0)
    with pytest.raises(InputError, match="outside the float64 range"):
        noise_cutoff_frequency(fit(0.01, 1e-300), 1.0)
    with pytest.raises(InputError, match="outside the float64 range"):
        noise_cutoff_frequency(fit(1e300, 1.0), 1e-300)
    got = noise_cutoff_frequency(fit(0.01, 2.0), [0.04, 1.0])
    torch.testing.assert_close(got, torch.tensor([0.5, 0.1], dtype=torch.float64))
