r"""Radially averaged power spectra of images, their power law, and what noise leaves of them.

Dieleman's "Diffusion is spectral autoregression" in numbers: natural images have a power
spectrum close to :math:`P(f) = K f^{-\alpha}` (:math:`\alpha \approx 2`), white Gaussian
noise of variance :math:`\sigma^2` has the flat spectrum :math:`\sigma^2`, so noise buries
every frequency above the cutoff :math:`f_c = (K/\sigma^2)^{1/\alpha}`; as a diffusion
process adds noise it erases the image from the high frequencies down.

Conventions (stated once, used throughout)
------------------------------------------
* **Normalisation.** :math:`\hat x = \mathrm{FFT2}(x) / \sqrt{HW}` (``norm="ortho"``,
  unitary) and :math:`P(k) = |\hat x(k)|^2`, in squared pixel units. Parseval:
  :math:`\sum_k P(k) = \sum_n x_n^2`; white noise of variance :math:`\sigma^2` has
  :math:`\mathbb E\,P(k) = \sigma^2` at every frequency, so a noise floor is the line
  :math:`P = \sigma^2` on the same axes.
* **Frequencies** are in cycles per pixel: :math:`f_y` = ``fftfreq(H)``, :math:`f_x` =
  ``fftfreq(W)``, :math:`|f| = \sqrt{f_x^2 + f_y^2}` (up to :math:`\sqrt{1/2}` in the
  corners). Not array indices: on a non-square image an index radius
  :math:`\sqrt{i^2 + j^2}` mixes two spacings (:math:`1/H` and :math:`1/W`) and bends the
  spectrum (the pitfall of index-based RAPSD code such as ``pysteps.utils.rapsd``).
* **Radial bins.** With :math:`L = \min(H, W)`, bin 0 is the DC coefficient alone and a
  frequency :math:`f \ne 0` goes to bin :math:`r = \max(1, \operatorname{round}(L |f|))`
  (round half to even): rings of width :math:`1/L`, the frequency spacing of the shorter
  side, centred on :math:`r/L`; for a square :math:`N \times N` image this is the integer
  radius of the centred index grid. Rings past :math:`r = L/2` are the corners (beyond the
  shorter side's Nyquist frequency); empty rings are dropped. ``counts`` sum to
  :math:`HW`.
* **Information.** Each Fourier coefficient is treated as a Gaussian channel with signal
  power :math:`P(k)` and noise power :math:`\sigma^2`; a real image has :math:`HW` real
  degrees of freedom, which the :math:`HW` coefficients carry (a conjugate pair
  :math:`k, -k` is one complex channel, :math:`\log(1 + P/\sigma^2)` =
  twice :math:`\frac12 \log(1+P/\sigma^2)`). So the information about the image left at
  noise level :math:`\sigma^2` is :math:`\sum_k \frac12 \log(1 + P(k)/\sigma^2)` over all
  :math:`HW` 2-D frequencies (:func:`noise_level_information`), exact for a stationary
  Gaussian image; summing ring means times ring counts (``radial=True``) is an upper bound
  of it (Jensen), equal when every ring is flat.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .._errors import InputError
from .._units import from_nats
from .._validation import (
    as_float_tensor,
    binary_scale,
    check_bool,
    check_choice,
    check_finite,
    check_ndim,
    check_not_meta,
    check_positive,
    describe,
    first_index,
)
from ..measures.water_filling import gaussian_capacity

__all__ = [
    "RadialPowerLaw",
    "RadialSpectrum",
    "fit_radial_power_law",
    "noise_cutoff_frequency",
    "noise_level_information",
    "radial_power_spectrum",
]

_CHANNELS = (None, "first", "last")


class RadialSpectrum(NamedTuple):
    """Radially averaged power spectrum (RAPSD) and the 2-D spectrum it came from.

    Attributes
    ----------
    frequency : torch.Tensor, shape (R,)
        Ring centre in cycles per pixel: 0 for the DC ring, :math:`r / \\min(H, W)` after.
    power : torch.Tensor, shape (..., R)
        Mean of :math:`|\\hat x(k)|^2` over each ring (squared pixel units).
    counts : torch.Tensor, shape (R,)
        Number of 2-D frequencies in each ring (int64); they sum to :math:`HW`.
    power_2d : torch.Tensor, shape (..., H, W)
        :math:`|\\hat x(k)|^2` per 2-D frequency, in ``torch.fft`` order (DC at [0, 0]).
    """

    frequency: torch.Tensor
    power: torch.Tensor
    counts: torch.Tensor
    power_2d: torch.Tensor


class RadialPowerLaw(NamedTuple):
    """Least-squares fit :math:`\\log P = \\log K - \\alpha \\log f` of a radial spectrum.

    Attributes
    ----------
    K : torch.Tensor, shape (...)
        Amplitude, in the unit of the power (squared pixel units): :math:`P(1) = K`.
    alpha : torch.Tensor, shape (...)
        Exponent (2 for a scale-invariant natural image).
    r2 : torch.Tensor, shape (...)
        Coefficient of determination of the fit in log-log coordinates.
    f_min, f_max : float
        The fitted frequency range (cycles per pixel, both ends included).
    n_bins : int
        Number of rings fitted.
    """

    K: torch.Tensor
    alpha: torch.Tensor
    r2: torch.Tensor
    f_min: float
    f_max: float
    n_bins: int


def _radial_bins(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Ring index of every 2-D frequency (``torch.fft`` order, flattened) and ``L``."""
    side = min(h, w)
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=device)
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    bins = torch.round(radius * side).to(torch.int64).clamp_min(1)
    bins[0, 0] = 0
    return bins.reshape(-1), side


def radial_power_spectrum(
    images: Any, *, channels: str | None = None, average: bool = False
) -> RadialSpectrum:
    r"""Radially averaged power spectral density of images, with an orthonormal FFT.

    .. math::

        P(k) = \Big|\frac{1}{\sqrt{HW}} \sum_{n} x_n e^{-2\pi i \langle k, n \rangle}\Big|^2,
        \qquad
        \bar P(r) = \frac{1}{|\mathcal R_r|} \sum_{k \in \mathcal R_r} P(k)

    over the rings :math:`\mathcal R_r` of the module's convention (bin 0 the DC alone,
    then :math:`r = \operatorname{round}(\min(H, W)\,|f|)`, :math:`|f|` in cycles/pixel).

    Parameters
    ----------
    images : tensor or array_like
        Pixel values as given (no rescaling), shape ``(..., H, W)`` with
        ``channels=None``, ``(..., H, W, C)`` with ``channels='last'`` (image files,
        matplotlib, PIL) or ``(..., C, H, W)`` with ``channels='first'`` (torch). Leading
        axes are a batch.
    channels : {None, 'first', 'last'}, default None
        Where the colour axis is, if any; it is never guessed. Each channel gets its own
        spectrum (the channel axis is put before ``H, W``).
    average : bool, default False
        Average the power over every leading axis (images and channels): the ensemble
        spectrum :math:`\mathbb E\,|\hat x(k)|^2` of a set, shapes ``(R,)`` and ``(H, W)``.

    Returns
    -------
    RadialSpectrum
        ``frequency`` (R,), ``power`` (..., [C,] R), ``counts`` (R,),
        ``power_2d`` (..., [C,] H, W); float64 (float32 for a low-precision input that
        requires grad, which stays differentiable).

    Raises
    ------
    InputError
        If ``images`` has too few dimensions for ``channels``, an image side shorter than 2
        pixels, complex or non-finite values, or ``channels``/``average`` are invalid.

    References
    ----------
    D. J. Field, "Relations between the statistics of natural images and the response
    properties of cortical cells", JOSA A 4(12), 1987. A. van der Schaaf and J. H. van
    Hateren, "Modelling the power spectra of natural images", Vision Research 36(17), 1996.
    S. Dieleman, "Diffusion is spectral autoregression", blog post, 2024.

    Examples
    --------
    >>> import torch
    >>> from infospec.spectra import radial_power_spectrum
    >>> delta = torch.zeros(8, 8); delta[0, 0] = 1.0  # flat spectrum 1/64
    >>> s = radial_power_spectrum(delta)
    >>> s.frequency[:3].tolist(), int(s.counts.sum()), float(s.power.max()) * 64
    ([0.0, 0.125, 0.25], 64, 1.0)
    """
    func = "radial_power_spectrum"
    check_choice(channels, "channels", func, _CHANNELS)
    check_bool(average, "average", func)
    x = as_float_tensor(images, "images", func)
    layout = {None: "(..., H, W)", "first": "(..., C, H, W)", "last": "(..., H, W, C)"}
    need = 2 if channels is None else 3
    check_ndim(x, "images", func, min_ndim=need, expected=f"shape {layout[channels]}")
    if channels == "last":
        x = x.movedim(-1, -3)
    h, w = x.shape[-2:]
    if h < 2 or w < 2 or x.numel() == 0:
        raise InputError(
            f"The 'images' argument of {func} must have images of at least 2 x 2 pixels in "
            f"layout {layout[channels]}; got {describe(x)} (H = {h}, W = {w}). Check the "
            f"'channels' option."
        )
    check_finite(x, "images", func)
    # in units of c ~ max |x| (a power of two: exact), so |x^|^2 neither overflows nor
    # underflows on the way; c^2 is applied last and a power beyond float64 is named
    c = binary_scale(x)
    coeff = torch.view_as_real(torch.fft.fft2(x / c, norm="ortho"))
    power_2d = (coeff * coeff).sum(dim=-1) * c * c  # |x^|^2, no square root (exact at 0)
    if not bool(torch.isfinite(power_2d).all()):
        raise InputError(
            f"The 'images' argument of {func} has values up to {float(x.abs().max()):.3g}, "
            f"whose power |x^|^2 overflows {str(power_2d.dtype)[6:]}; divide the images by "
            f"a constant first (the power scales by its square)."
        )
    if average:
        power_2d = power_2d.reshape(-1, h, w).mean(dim=0)
    bins, side = _radial_bins(h, w, x.device)
    n_rings = int(bins.max()) + 1
    counts = torch.bincount(bins, minlength=n_rings)
    flat = power_2d.reshape(*power_2d.shape[:-2], h * w)
    sums = torch.zeros(*flat.shape[:-1], n_rings, dtype=flat.dtype, device=flat.device)
    sums = sums.index_add(-1, bins, flat)
    keep = counts > 0
    frequency = torch.arange(n_rings, dtype=torch.float64, device=x.device) / side
    return RadialSpectrum(
        frequency=frequency[keep],
        power=sums[..., keep] / counts[keep].to(flat.dtype),
        counts=counts[keep],
        power_2d=power_2d,
    )


def _check_spectrum(spectrum: Any, func: str) -> RadialSpectrum:
    """The RadialSpectrum with its fields checked (one made by hand may hold anything)."""
    if not isinstance(spectrum, RadialSpectrum):
        raise InputError(
            f"The 'spectrum' argument of {func} must be the RadialSpectrum returned by "
            f"radial_power_spectrum; got {type(spectrum).__name__}."
        )
    name = "spectrum"
    freq = check_not_meta(as_float_tensor(spectrum.frequency, name, func), name, func)
    power = check_not_meta(as_float_tensor(spectrum.power, name, func), name, func)
    if freq.ndim != 1 or power.ndim < 1 or power.shape[-1] != freq.shape[0]:
        raise InputError(
            f"The 'spectrum' argument of {func} must hold a 1-D frequency and a power whose "
            f"last axis has one value per ring; got shapes {tuple(freq.shape)} and "
            f"{tuple(power.shape)}."
        )
    check_finite(freq, name, func)
    check_finite(power, name, func)
    if bool((freq < 0).any()) or bool((power < 0).any()):
        raise InputError(
            f"The 'spectrum' argument of {func} holds a negative frequency or power; a "
            f"power spectrum is >= 0 at frequencies >= 0."
        )
    return spectrum._replace(frequency=freq, power=power)


def fit_radial_power_law(
    spectrum: RadialSpectrum, *, f_min: float | None = None, f_max: float = 0.5
) -> RadialPowerLaw:
    r"""Fit :math:`\log P(f) = \log K - \alpha \log f` by least squares over a range.

    Ordinary least squares in natural-log coordinates over the rings with
    :math:`f_{\min} \le f \le f_{\max}`, one point per ring (unweighted):

    .. math::

        \hat\alpha = -\frac{\sum_r (u_r - \bar u)(v_r - \bar v)}{\sum_r (u_r - \bar u)^2},
        \qquad \log \hat K = \bar v + \hat\alpha \bar u,
        \qquad u_r = \log f_r,\ v_r = \log \bar P(r).

    Parameters
    ----------
    spectrum : RadialSpectrum
        From :func:`radial_power_spectrum`; a batch of spectra (..., R) is fitted row by row.
    f_min : float > 0 or None, default None
        Lowest fitted frequency (cycles/pixel); None: the first ring after DC,
        :math:`1/\min(H, W)`. The DC ring (f = 0) is never fitted.
    f_max : float > 0, default 0.5
        Highest fitted frequency; the default (Nyquist) leaves the corner rings out.

    Returns
    -------
    RadialPowerLaw
        ``K``, ``alpha``, ``r2`` of shape (...), and the range and number of rings used.

    Raises
    ------
    InputError
        If ``spectrum`` is not a RadialSpectrum, ``f_min``/``f_max`` are not > 0 or
        ``f_min > f_max``, fewer than 2 rings lie in the range, or a fitted ring has zero
        power (its logarithm is :math:`-\infty`; e.g. a constant image).

    References
    ----------
    A. van der Schaaf and J. H. van Hateren, "Modelling the power spectra of natural
    images", Vision Research 36(17), 1996.

    Examples
    --------
    >>> import torch
    >>> from infospec.spectra import radial_power_spectrum, fit_radial_power_law
    >>> s = radial_power_spectrum(torch.randn(64, 32, 32, generator=torch.manual_seed(0)),
    ...                           average=True)
    >>> fit = fit_radial_power_law(s)  # white noise: flat, alpha near 0, K near 1
    >>> abs(float(fit.alpha)) < 0.05, abs(float(fit.K) - 1) < 0.1
    (True, True)
    """
    func = "fit_radial_power_law"
    spectrum = _check_spectrum(spectrum, func)
    freq = spectrum.frequency
    lo = float(freq[1]) if f_min is None and freq.numel() > 1 else f_min
    if lo is None:
        raise InputError(f"The 'spectrum' of {func} has no ring after DC; nothing to fit.")
    lo = check_positive(lo, "f_min", func)
    hi = check_positive(f_max, "f_max", func)
    if lo > hi:
        raise InputError(
            f"The 'f_min' parameter of {func} ({lo:g}) must not exceed f_max ({hi:g})."
        )
    tol = 1e-12
    mask = (freq > 0) & (freq >= lo - tol) & (freq <= hi + tol)
    n = int(mask.sum())
    if n < 2:
        raise InputError(
            f"{func} needs at least 2 rings in [f_min, f_max] = [{lo:g}, {hi:g}] cycles/pixel; "
            f"the spectrum has {n} there (ring spacing {float(freq[-1] - freq[-2]):g} for "
            f"its {freq.numel()} rings). Widen the range or use larger images."
        )
    power = spectrum.power[..., mask]
    if bool((power <= 0).any()):
        idx = first_index(power <= 0)
        raise InputError(
            f"The 'spectrum' of {func} has zero power at f = {float(freq[mask][idx[-1]]):g} "
            f"cycles/pixel{f' (batch index {idx[:-1]})' if idx[:-1] else ''}; its log is "
            f"-inf. Fit a range where every ring has power (a constant image has none)."
        )
    u = torch.log(freq[mask]).to(power.dtype)
    v = torch.log(power)
    du = u - u.mean()
    dv = v - v.mean(dim=-1, keepdim=True)
    slope = (du * dv).sum(-1) / (du * du).sum()
    alpha = -slope
    log_k = v.mean(dim=-1) + alpha * u.mean()
    resid = dv - slope.unsqueeze(-1) * du
    ss_tot = (dv * dv).sum(-1)
    r2 = torch.where(ss_tot > 0, 1 - (resid * resid).sum(-1) / ss_tot, torch.ones_like(ss_tot))
    return RadialPowerLaw(torch.exp(log_k), alpha, r2, lo, hi, n)


def _noise_levels(noise_var: Any, func: str, like: torch.Tensor) -> torch.Tensor:
    """``noise_var`` as a tensor of shape () or (L,) on ``like``'s device, every entry > 0."""
    noise = as_float_tensor(noise_var, "noise_var", func).to(device=like.device, dtype=like.dtype)
    check_ndim(noise, "noise_var", func, min_ndim=0, max_ndim=1, expected="0 or 1 dimension")
    check_finite(noise, "noise_var", func)
    if noise.numel() == 0 or bool((noise <= 0).any()):
        bad = "no value" if noise.numel() == 0 else f"{float(noise.min()):.6g}"
        raise InputError(
            f"The 'noise_var' argument of {func} must hold noise variances > 0; got "
            f"{bad} "
            f"in a tensor with {describe(noise)}."
        )
    return noise


def noise_cutoff_frequency(fit: RadialPowerLaw, noise_var: Any) -> torch.Tensor:
    r"""Frequency above which white noise of variance :math:`\sigma^2` buries the fitted law.

    .. math::

        K f_c^{-\alpha} = \sigma^2 \iff f_c = \Big(\frac{K}{\sigma^2}\Big)^{1/\alpha}

    in cycles per pixel, with :math:`P` and :math:`\sigma^2` on the orthonormal-FFT scale of
    :func:`radial_power_spectrum` (white noise of variance :math:`\sigma^2` has
    :math:`P(f) = \sigma^2`). For diffusion, :math:`x_t = \sqrt{\bar\alpha_t} x_0 +
    \sqrt{1 - \bar\alpha_t}\,\varepsilon` read as :math:`x_0 + \sigma_t \varepsilon` with
    :math:`\sigma_t^2 = (1 - \bar\alpha_t)/\bar\alpha_t`. A value above the Nyquist
    frequency 0.5 (:math:`\sqrt{1/2}` in the corners) means no frequency is buried yet; it
    is an extrapolation of the fitted line.

    Parameters
    ----------
    fit : RadialPowerLaw
        From :func:`fit_radial_power_law`, with ``alpha > 0``.
    noise_var : float > 0 or tensor of shape (L,)
        Noise variance(s) :math:`\sigma^2`, in squared pixel units.

    Returns
    -------
    torch.Tensor, shape ``fit.alpha.shape + noise_var.shape``
        :math:`f_c` in cycles per pixel.

    Raises
    ------
    InputError
        If ``noise_var`` is not > 0 and finite, or a fitted ``alpha`` is not > 0 (a flat or
        rising spectrum is not crossed from above by a noise floor).

    References
    ----------
    S. Dieleman, "Diffusion is spectral autoregression", blog post, 2024.

    Examples
    --------
    >>> import torch
    >>> from infospec.spectra import RadialPowerLaw, noise_cutoff_frequency
    >>> K, alpha = torch.tensor(0.01, dtype=torch.float64), torch.tensor(2.0)
    >>> fit = RadialPowerLaw(K, alpha, torch.tensor(1.0), f_min=0.1, f_max=0.5, n_bins=5)
    >>> [round(f, 12) for f in noise_cutoff_frequency(fit, [0.04, 1.0]).tolist()]
    [0.5, 0.1]
    """
    func = "noise_cutoff_frequency"
    if not isinstance(fit, RadialPowerLaw):
        raise InputError(
            f"The 'fit' argument of {func} must be the RadialPowerLaw returned by "
            f"fit_radial_power_law; got {type(fit).__name__}."
        )
    alpha = as_float_tensor(fit.alpha, "fit", func).to(torch.float64)
    k = as_float_tensor(fit.K, "fit", func).to(dtype=alpha.dtype, device=alpha.device)
    check_finite(alpha, "fit", func)
    check_finite(k, "fit", func)
    if bool((k <= 0).any()):
        raise InputError(
            f"The 'fit' argument of {func} has K = {float(k.min()):.4g} <= 0: the fitted "
            f"power is positive at every frequency, so K must be > 0."
        )
    if bool((alpha <= 0).any()):
        raise InputError(
            f"The 'fit' argument of {func} has alpha = {float(alpha.min()):.4g} <= 0: the "
            f"spectrum does not fall with frequency, so no single cutoff exists. Check the "
            f"fitted range (f_min, f_max) = ({fit.f_min:g}, {fit.f_max:g})."
        )
    noise = _noise_levels(noise_var, func, alpha)
    shape = (*alpha.shape, *([1] * noise.ndim))
    # from logs: (K / sigma^2)^(1 / alpha) = exp((log K - log sigma^2) / alpha)
    out = torch.exp((torch.log(k.reshape(shape)) - torch.log(noise)) / alpha.reshape(shape))
    if not bool(torch.isfinite(out).all()) or bool((out == 0).any()):
        raise InputError(
            f"The cutoff frequencies of {func} ((K / noise_var)^(1/alpha) for K up to "
            f"{float(k.max()):.4g} and alpha down to {float(alpha.min()):.4g}) lie outside "
            f"the float64 range; no ring of any image is there."
        )
    return out


def noise_level_information(
    spectrum: RadialSpectrum, noise_var: Any, *, bits: bool = False, radial: bool = False
) -> torch.Tensor:
    r"""Information about an image that survives additive white noise, per noise level.

    .. math::

        I(\sigma^2) = \sum_{k} \tfrac12 \log\Big(1 + \frac{P(k)}{\sigma^2}\Big)

    over all :math:`HW` 2-D frequencies :math:`k` (one real Gaussian channel per degree of
    freedom; see the module docstring), computed by
    :func:`infospec.measures.gaussian_capacity`. With ``radial=True`` the ring means
    stand in for :math:`P(k)`, :math:`\sum_r |\mathcal R_r| \frac12 \log(1 + \bar P(r) /
    \sigma^2)`: an upper bound (log is concave), equal for rings of constant power.
    The DC coefficient is included; its "power" is :math:`HW \bar x^2` for a mean
    :math:`\bar x`, so centre the images (or compare levels) if the mean is not signal.

    Parameters
    ----------
    spectrum : RadialSpectrum
        From :func:`radial_power_spectrum`, a batch (..., H, W) allowed.
    noise_var : float > 0 or tensor of shape (L,)
        Noise variance(s) :math:`\sigma^2` on the orthonormal-FFT scale (the variance of
        the pixel noise).
    bits : bool, default False
        Bits instead of nats.
    radial : bool, default False
        Use ring means times ring counts instead of the 2-D spectrum.

    Returns
    -------
    torch.Tensor, shape ``spectrum.power.shape[:-1] + noise_var.shape``
        Nats (bits with ``bits=True``) per image (per channel when there is a channel
        axis); divide by :math:`HW` for a rate per pixel.

    Raises
    ------
    InputError
        If ``spectrum`` is not a RadialSpectrum or ``noise_var`` is not > 0 and finite.

    References
    ----------
    C. E. Shannon, "Communication in the presence of noise", Proc. IRE 37(1), 1949.
    T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., Wiley, 2006,
    Section 9.5 (parallel Gaussian channels).

    Examples
    --------
    >>> import math, torch
    >>> from infospec.spectra import radial_power_spectrum, noise_level_information
    >>> delta = torch.zeros(8, 8); delta[0, 0] = 8.0  # P(k) = 1 at all 64 frequencies
    >>> bits = noise_level_information(radial_power_spectrum(delta), [1.0, 3.0], bits=True)
    >>> [round(b, 6) for b in bits.tolist()]  # 64/2 log2(1 + 1), 64/2 log2(1 + 1/3)
    [32.0, 13.2812]
    """
    func = "noise_level_information"
    spectrum = _check_spectrum(spectrum, func)
    bits = check_bool(bits, "bits", func)
    radial = check_bool(radial, "radial", func)
    noise = _noise_levels(noise_var, func, spectrum.power)
    if radial:
        power = spectrum.power
        weights = spectrum.counts.to(power.dtype)
    else:
        power = spectrum.power_2d.reshape(*spectrum.power_2d.shape[:-2], -1)
        weights = None
    levels = noise.reshape(-1)
    out = []
    for level in levels.tolist():
        if weights is None:
            out.append(gaussian_capacity(power, level))
        else:
            out.append((weights * 0.5 * torch.log1p(power / level)).sum(-1))
    nats = torch.stack(out, dim=-1)
    if noise.ndim == 0:
        nats = nats[..., 0]
    return from_nats(nats, bits)
