"""Water-filling on Gaussian spectra: rate-distortion, its inverse, and channel capacity.

- :func:`rate_distortion` and :func:`distortion_rate`: the Gaussian rate-distortion curve by
  reverse water-filling, and its inverse;
- :func:`gaussian_capacity` and :func:`water_filling_capacity`: the mutual information of a
  Gaussian signal through additive Gaussian noise, and the capacity of parallel Gaussian
  channels under a power budget.

Reverse water-filling, its inverse and water-filling are one computation: the water level
solving a piecewise-linear equation whose breakpoints are the sorted levels (see
:func:`_water_level`). It is solved exactly, for many targets at once, with cumulative sums
and :func:`torch.searchsorted`; there is no iteration. Every measure returns nats unless
``bits=True``.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np
import torch

from .._errors import InputError
from .._units import from_nats, to_nats
from .._validation import (
    as_float_tensor,
    check_bool,
    check_eigenvalues,
    check_finite,
    check_ndim,
    check_nonempty,
    check_positive,
    describe,
    first_index,
)

__all__ = [
    "DistortionRate",
    "RateDistortion",
    "WaterFilling",
    "distortion_rate",
    "gaussian_capacity",
    "rate_distortion",
    "water_filling_capacity",
]


def _broadcast_shapes(*shapes: Any) -> torch.Size:
    """``torch.broadcast_shapes`` without its first-call import of sympy (about a second)."""
    return torch.Size(np.broadcast_shapes(*(tuple(s) for s in shapes)))


class RateDistortion(NamedTuple):
    """Result of :func:`rate_distortion`.

    Attributes
    ----------
    rate : torch.Tensor, shape ``broadcast(eigvals.shape[:-1], distortion.shape)``
        :math:`R(D)`, in nats (bits with ``bits=True``).
    theta : torch.Tensor, same shape as ``rate``
        The reverse water level :math:`\\theta`: every component with variance above it is
        coded with squared error :math:`\\theta`, the others are dropped. Units of variance.
    component_rates : torch.Tensor, shape ``rate.shape + (d,)``
        :math:`\\tfrac12 \\max(0, \\log(\\lambda_i / \\theta))` for each eigenvalue, in the
        order of ``eigvals`` (not sorted); they sum to ``rate``.
    """

    rate: torch.Tensor
    theta: torch.Tensor
    component_rates: torch.Tensor


class DistortionRate(NamedTuple):
    """Result of :func:`distortion_rate`.

    Attributes
    ----------
    distortion : torch.Tensor, shape ``broadcast(eigvals.shape[:-1], rate.shape)``
        :math:`D(R) = \\sum_i \\min(\\theta, \\lambda_i)`, the total squared error (units of
        variance).
    theta : torch.Tensor, same shape as ``distortion``
        The reverse water level reached at that rate.
    component_rates : torch.Tensor, shape ``distortion.shape + (d,)``
        The rate spent on each eigenvalue, in the order of ``eigvals``, in nats (bits with
        ``bits=True``); they sum to ``rate``.
    """

    distortion: torch.Tensor
    theta: torch.Tensor
    component_rates: torch.Tensor


class WaterFilling(NamedTuple):
    """Result of :func:`water_filling_capacity`.

    Attributes
    ----------
    capacity : torch.Tensor, shape ``broadcast(noise_vars.shape[:-1], power.shape)``
        :math:`C = \\sum_i \\tfrac12 \\log(1 + P_i / N_i)`, in nats (bits with ``bits=True``).
    water_level : torch.Tensor, same shape as ``capacity``
        The water level :math:`\\nu`, in units of power.
    allocation : torch.Tensor, shape ``capacity.shape + (d,)``
        :math:`P_i = \\max(0, \\nu - N_i)` in the order of ``noise_vars``; it sums to ``power``.
    """

    capacity: torch.Tensor
    water_level: torch.Tensor
    allocation: torch.Tensor


def _as_target(value: Any, like: torch.Tensor, name: str, func: str) -> torch.Tensor:
    """Convert a scalar or tensor of targets (distortions, rates, powers) next to ``like``.

    Returns it in the dtype and on the device of ``like``, after checking it is finite and
    that its shape broadcasts with ``like.shape[:-1]``.
    """
    t = as_float_tensor(value, name, func).to(device=like.device, dtype=like.dtype)
    check_finite(t, name, func)
    try:
        _broadcast_shapes(like.shape[:-1], t.shape)
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"The '{name}' argument of {func} must broadcast with the batch shape "
            f"{tuple(like.shape[:-1])} of the spectrum (its shape without the last axis); got "
            f"{describe(t)}. Pass a scalar, or a tensor whose shape broadcasts with it."
        ) from exc
    return t


def _water_level(levels: torch.Tensor, target: torch.Tensor, *, fill: bool) -> torch.Tensor:
    """Exact water level for (reverse) water-filling, vectorised over targets.

    With ``d`` levels :math:`v_i` along the last axis of ``levels``, solve for :math:`x`

    - ``fill=False`` (reverse water-filling): :math:`\\sum_i \\min(x, v_i) = t`, for
      :math:`0 < t \\le \\sum_i v_i`;
    - ``fill=True`` (water-filling): :math:`\\sum_i \\max(0, x - v_i) = t`, for :math:`t \\ge 0`.

    Both are the same piecewise-linear function up to the identity
    :math:`\\sum_i \\max(0, x - v_i) = d\\,x - \\sum_i \\min(x, v_i)`. With the levels sorted
    ascending and :math:`S_k = v_{(1)} + \\dots + v_{(k)}`, on the segment
    :math:`v_{(k)} \\le x \\le v_{(k+1)}`

    .. math::

        \\sum_i \\min(x, v_i) = S_k + (d - k)\\,x, \\qquad \\sum_i \\max(0, x - v_i) = k\\,x - S_k.

    The segment holding ``t`` is the number of breakpoint values (the function at
    :math:`x = v_{(k)}`) below ``t``, found by :func:`torch.searchsorted`; the level then
    follows from one division. Levels equal to ``+inf`` (``fill=True`` only) are channels that
    never open. ``target`` broadcasts with ``levels.shape[:-1]``; the result has the broadcast
    shape.
    """
    d = levels.shape[-1]
    v, _ = torch.sort(levels, dim=-1)
    cums = torch.cumsum(v, dim=-1)
    k = torch.arange(1, d + 1, dtype=v.dtype, device=v.device)
    below = cums + (d - k) * v  # sum_i min(v_(k), v_i), k = 1..d
    if fill:
        breaks = torch.where(torch.isinf(v), torch.inf, d * v - below)
    else:
        breaks = below
    # Round-off can make equal breakpoints (tied levels) decrease by an ulp: keep them sorted.
    breaks = torch.cummax(breaks, dim=-1).values
    s = torch.cat([torch.zeros_like(cums[..., :1]), cums], dim=-1)  # S_0 .. S_d

    shape = _broadcast_shapes(levels.shape[:-1], target.shape)
    t = target.expand(shape).unsqueeze(-1).contiguous()
    breaks = breaks.expand(*shape, d).contiguous()
    seg = torch.searchsorted(breaks, t, side="left")  # number of breakpoints strictly below t
    if fill:
        seg = seg.clamp(min=1)  # t = 0 sits on the first breakpoint: x = min level
        s_k = torch.gather(s.expand(*shape, d + 1), -1, seg)
        x = (t + s_k) / seg.to(t.dtype)
    else:
        seg = seg.clamp(max=d - 1)  # t = sum(levels) up to round-off: the last segment
        s_k = torch.gather(s.expand(*shape, d + 1), -1, seg)
        x = (t - s_k) / (d - seg).to(t.dtype)
    return x.squeeze(-1)


def _log_or_minus_inf(eig: torch.Tensor) -> torch.Tensor:
    """``log(eig)``, ``-inf`` at zero eigenvalues, with a zero (not NaN) gradient there.

    ``torch.log``'s gradient at 0 is infinite, and a later ``max``/``where`` that discards
    the value multiplies it by 0: NaN. The zero entries take ``log(1)`` first.
    """
    positive = eig > 0
    logs = torch.log(torch.where(positive, eig, torch.ones_like(eig)))
    return torch.where(positive, logs, torch.full_like(eig, -torch.inf))


def _component_rates(log_eig: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Per-component rates :math:`\\tfrac12 \\max(0, \\log\\lambda_i - \\log\\theta)`.

    Computed in the log domain so that a water level too small for the dtype (a very high
    rate) still gives finite rates; zero eigenvalues (``log_eig = -inf``) get exactly 0.
    """
    return 0.5 * (log_eig - log_theta.unsqueeze(-1)).clamp_min(0)


def _at(idx: tuple[int, ...]) -> str:
    """`` at index (i, j)`` for an error message, or nothing for a scalar."""
    return f" at index {idx}" if idx else ""


def _check_not_all_zero(eig: torch.Tensor, name: str, func: str) -> None:
    if bool((eig.amax(dim=-1) <= 0).any()):
        raise InputError(
            f"The '{name}' argument of {func} must have at least one positive eigenvalue in "
            f"every spectrum; got an all-zero spectrum in a tensor with {describe(eig)}. A "
            f"zero-variance source needs no rate at any distortion."
        )


def rate_distortion(eigvals: Any, distortion: Any, *, bits: bool = False) -> RateDistortion:
    """Rate-distortion function of a Gaussian source by reverse water-filling.

    For a Gaussian vector with covariance eigenvalues :math:`\\lambda_i` and a total squared
    error budget :math:`D` (Cover & Thomas, Theorem 10.3.3):

    .. math::

        R(D) = \\sum_i \\frac12 \\max\\Big(0, \\log \\frac{\\lambda_i}{\\theta}\\Big),
        \\qquad \\sum_i \\min(\\theta, \\lambda_i) = D .

    The water level :math:`\\theta` is found exactly: :math:`\\theta \\mapsto \\sum_i
    \\min(\\theta, \\lambda_i)` is piecewise linear with breakpoints at the eigenvalues, so the
    segment holding ``D`` is located by a search over cumulative sums and :math:`\\theta`
    follows by one division, for all values of ``D`` at once. Zero eigenvalues are allowed
    and cost no rate.

    Parameters
    ----------
    eigvals : tensor or array-like, shape (..., d)
        Eigenvalues of the source covariance, >= 0 and not all zero; leading batch axes.
    distortion : float or tensor, shape broadcastable with ``eigvals.shape[:-1]``
        Total squared error :math:`D` (the sum over components, not the mean), in
        :math:`(0, \\sum_i \\lambda_i]`. A tensor gives many points of the curve at once.
    bits : bool, default False
        Rates in bits instead of nats.

    Returns
    -------
    RateDistortion
        ``(rate, theta, component_rates)``; ``rate`` and ``theta`` have shape
        ``broadcast(eigvals.shape[:-1], distortion.shape)``, ``component_rates`` that shape
        plus ``(d,)``, in the original order of the eigenvalues.

    Raises
    ------
    InputError
        If ``eigvals`` is empty, not finite, negative beyond round-off or all zero; if
        ``distortion`` is not finite, does not broadcast, or lies outside
        :math:`(0, \\sum_i \\lambda_i]`.

    References
    ----------
    T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., Wiley, 2006,
    Theorem 10.3.3.

    Examples
    --------
    >>> import torch
    >>> rd = rate_distortion(torch.tensor([4.0, 1.0, 0.25]), 1.25)   # theta = 0.5
    >>> round(float(rd.theta), 6), round(float(rd.rate), 6)
    (0.5, 1.386294)
    >>> [round(r, 6) for r in rd.component_rates.tolist()]
    [1.039721, 0.346574, 0.0]
    """
    func = "rate_distortion"
    check_bool(bits, "bits", func)
    eig = check_eigenvalues(as_float_tensor(eigvals, "eigvals", func), "eigvals", func)
    _check_not_all_zero(eig, "eigvals", func)
    dist = _as_target(distortion, eig, "distortion", func)
    total = eig.sum(-1)
    shape = _broadcast_shapes(total.shape, dist.shape)
    total_b, dist_b = total.expand(shape), dist.expand(shape)
    slack = 4 * eig.shape[-1] * torch.finfo(eig.dtype).eps
    bad = (dist_b <= 0) | (dist_b > total_b * (1 + slack))
    if bool(bad.any()):
        idx = first_index(bad)
        raise InputError(
            f"The 'distortion' argument of {func} must lie in (0, sum(eigvals)] = "
            f"(0, {float(total_b[idx]):.6g}] (0 needs an infinite rate, the total variance "
            f"needs none); got {float(dist_b[idx]):.6g}{_at(idx)}."
        )
    dist = torch.minimum(dist_b, total_b)
    # R(eig, D) is scale-free: water-fill in units of the detached largest eigenvalue, so
    # spectra near the smallest (subnormal) or largest float keep their exact rate and
    # gradient instead of meeting the floor below.
    peak = eig.detach().amax(-1)
    theta_u = _water_level(eig / peak.unsqueeze(-1), dist / peak, fill=False)
    # theta >= D / d > 0; the floor only guards a distortion near the smallest float.
    log_theta = torch.log(theta_u.clamp_min(torch.finfo(theta_u.dtype).tiny)) + torch.log(peak)
    comps = _component_rates(_log_or_minus_inf(eig), log_theta)
    theta = theta_u * peak
    return RateDistortion(from_nats(comps.sum(-1), bits), theta, from_nats(comps, bits))


def distortion_rate(eigvals: Any, rate: Any, *, bits: bool = False) -> DistortionRate:
    """Distortion-rate function of a Gaussian source: the inverse of :func:`rate_distortion`.

    .. math::

        D(R) = \\sum_i \\min(\\theta, \\lambda_i), \\qquad
        \\sum_i \\frac12 \\max\\Big(0, \\log \\frac{\\lambda_i}{\\theta}\\Big) = R .

    In :math:`u = -\\log\\theta` the rate equation reads
    :math:`\\sum_i \\max(0, u + \\log\\lambda_i) = 2R`, a water-filling over the levels
    :math:`-\\log\\lambda_i`: :math:`\\log\\theta` is linear in :math:`R` between the
    breakpoints (the eigenvalues sorted in descending order), and is found exactly for all
    rates at once. ``R = 0`` gives :math:`D = \\sum_i \\lambda_i`; zero eigenvalues never
    receive rate.

    Parameters
    ----------
    eigvals : tensor or array-like, shape (..., d)
        Eigenvalues of the source covariance, >= 0 and not all zero; leading batch axes.
    rate : float or tensor, shape broadcastable with ``eigvals.shape[:-1]``
        Rate :math:`R \\ge 0`, in nats (bits with ``bits=True``).
    bits : bool, default False
        ``rate`` and the returned ``component_rates`` are in bits instead of nats.

    Returns
    -------
    DistortionRate
        ``(distortion, theta, component_rates)``; ``distortion`` and ``theta`` have shape
        ``broadcast(eigvals.shape[:-1], rate.shape)``, ``component_rates`` that shape plus
        ``(d,)``, in the original order of the eigenvalues.
        At rates of several hundred nats per active component ``theta`` and ``distortion``
        underflow to 0 in float64; the component rates, computed in the log domain, stay
        finite and sum to ``rate``.

    Raises
    ------
    InputError
        If ``eigvals`` is empty, not finite, negative beyond round-off or all zero; if
        ``rate`` is negative, not finite, or does not broadcast.

    References
    ----------
    T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., Wiley, 2006,
    Theorem 10.3.3.

    Examples
    --------
    >>> import math, torch
    >>> dr = distortion_rate(torch.tensor([4.0, 1.0, 0.25]), 2 * math.log(2))
    >>> round(float(dr.distortion), 6), round(float(dr.theta), 6)
    (1.25, 0.5)
    >>> round(float(distortion_rate([4.0, 1.0], 0.0).distortion), 6)
    5.0
    """
    func = "distortion_rate"
    check_bool(bits, "bits", func)
    eig = check_eigenvalues(as_float_tensor(eigvals, "eigvals", func), "eigvals", func)
    _check_not_all_zero(eig, "eigvals", func)
    r = _as_target(rate, eig, "rate", func)
    if bool((r < 0).any()):
        idx = first_index(r < 0)
        raise InputError(
            f"The 'rate' argument of {func} must be >= 0 ({'bits' if bits else 'nats'}); got "
            f"{float(r[idx]):.6g}{_at(idx)}."
        )
    r = to_nats(r, bits)
    log_eig = _log_or_minus_inf(eig)
    # -log(eig) is +inf for zero eigenvalues: those channels never open.
    log_theta = -_water_level(-log_eig, 2.0 * r, fill=True)
    theta = torch.exp(log_theta)  # may underflow to 0 at rates of hundreds of nats
    comps = _component_rates(log_eig, log_theta)
    dist = torch.minimum(eig, theta.unsqueeze(-1)).sum(-1)
    return DistortionRate(dist, theta, from_nats(comps, bits))


def gaussian_capacity(signal_eigvals: Any, noise_var: Any, *, bits: bool = False) -> torch.Tensor:
    """Mutual information between a Gaussian signal and its copy in additive Gaussian noise.

    .. math::

        I(Z; Z + N) = \\frac12 \\sum_i \\log\\Big(1 + \\frac{\\lambda_i}{t_i^2}\\Big)

    for :math:`Z \\sim \\mathcal N(0, \\Sigma)` with eigenvalues :math:`\\lambda_i` and noise
    :math:`N \\sim \\mathcal N(0, \\operatorname{diag}(t_i^2))` in the eigenbasis of
    :math:`\\Sigma` (or isotropic, :math:`t_i^2 = t^2`). For
    :math:`Z \\sim \\mathcal N(0, s^2 I_d)` it is :math:`\\frac d2 \\log(1 + s^2/t^2)`: the
    capacity of a latent variable read through noise, finite and invariant to a common
    scaling of signal and noise, unlike the differential entropy. Computed with ``log1p``.
    Zero eigenvalues carry nothing.

    Parameters
    ----------
    signal_eigvals : tensor or array-like, shape (..., d)
        Eigenvalues of the signal covariance, >= 0; leading batch axes.
    noise_var : float > 0, or tensor of per-component variances > 0
        The noise variance :math:`t^2` (a variance, not a standard deviation). A tensor must
        broadcast with ``signal_eigvals``; its last axis runs over components.
    bits : bool, default False
        Return bits instead of nats.

    Returns
    -------
    torch.Tensor, shape ``broadcast(signal_eigvals.shape, noise_var.shape)[:-1]``
        The mutual information in nats (bits with ``bits=True``), >= 0.

    Raises
    ------
    InputError
        If ``signal_eigvals`` is empty, not finite or negative beyond round-off; if
        ``noise_var`` is not > 0 and finite everywhere, or does not broadcast.

    References
    ----------
    C. E. Shannon, "A mathematical theory of communication", Bell System Technical Journal
    27, 1948. T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed.,
    Wiley, 2006, Section 9.4. eri24816, blog note on the capacity of a VAE latent variable
    read through Gaussian noise, 2024-11-16.

    Examples
    --------
    >>> import math, torch
    >>> c = gaussian_capacity(torch.full((8,), 3.0), 1.0, bits=True)   # 8/2 log2(1 + 3)
    >>> round(float(c), 6)
    8.0
    >>> round(float(gaussian_capacity([4.0, 0.0], torch.tensor([4.0, 1.0]))), 6)
    0.346574
    """
    func = "gaussian_capacity"
    check_bool(bits, "bits", func)
    eig = check_eigenvalues(
        as_float_tensor(signal_eigvals, "signal_eigvals", func), "signal_eigvals", func
    )
    if isinstance(noise_var, numbers.Real) and not isinstance(noise_var, torch.Tensor):
        noise = check_positive(noise_var, "noise_var", func)
    else:
        noise = as_float_tensor(noise_var, "noise_var", func).to(device=eig.device, dtype=eig.dtype)
        check_finite(noise, "noise_var", func)
        if bool((noise <= 0).any()):
            idx = first_index(noise <= 0)
            raise InputError(
                f"The 'noise_var' argument of {func} must be > 0 everywhere (noise "
                f"variances); got {float(noise[idx]):.6g}{_at(idx)} in a tensor with "
                f"{describe(noise)}."
            )
        try:
            _broadcast_shapes(eig.shape, noise.shape)
        except (RuntimeError, ValueError) as exc:
            raise InputError(
                f"The 'noise_var' argument of {func} must broadcast with 'signal_eigvals' of "
                f"shape {tuple(eig.shape)}; got {describe(noise)}. Pass a float, or one "
                f"variance per component along the last axis."
            ) from exc
    noise_t = torch.as_tensor(noise, dtype=eig.dtype, device=eig.device)
    ratio = eig / noise_t
    # log1p(lam / t^2); a ratio beyond float64 (1e300 / 1e-300) from logs instead of inf
    big = torch.isinf(ratio)
    logs = torch.log(torch.where(big, eig, torch.ones_like(eig))) - torch.log(noise_t)
    terms = torch.where(big, logs, torch.log1p(torch.where(big, torch.zeros_like(ratio), ratio)))
    return from_nats(0.5 * terms.sum(-1), bits)


def water_filling_capacity(noise_vars: Any, power: Any, *, bits: bool = False) -> WaterFilling:
    """Capacity of parallel Gaussian channels under a total power budget, by water-filling.

    .. math::

        C = \\sum_i \\frac12 \\log\\Big(1 + \\frac{P_i}{N_i}\\Big), \\qquad
        P_i = \\max(0, \\nu - N_i), \\qquad \\sum_i P_i = P .

    The water level :math:`\\nu` solves a piecewise-linear equation with breakpoints at the
    sorted noise levels (the same computation as :func:`rate_distortion`, through
    :math:`\\sum_i \\max(0, \\nu - N_i) = d\\nu - \\sum_i \\min(\\nu, N_i)`), exactly and for
    many power budgets at once. ``power = 0`` gives capacity 0 and water level
    :math:`\\min_i N_i`.

    Numerics: the levels are filled above :math:`\\min_i N_i` and in units of the larger
    of the power and the noises' spread, so a power far below the noise is shared exactly
    (equal noises get :math:`P/k` each) and noises and power anywhere in the float64 range,
    subnormals included, give the capacity to round-off; a ratio :math:`P_i/N_i` beyond
    float64 is taken through its logarithm.

    Parameters
    ----------
    noise_vars : tensor or array-like, shape (..., d)
        Noise variances :math:`N_i > 0` of the ``d`` channels; leading batch axes.
    power : float >= 0 or tensor, shape broadcastable with ``noise_vars.shape[:-1]``
        Total power budget :math:`P`. A tensor gives many budgets at once.
    bits : bool, default False
        Capacity in bits instead of nats.

    Returns
    -------
    WaterFilling
        ``(capacity, water_level, allocation)``; ``capacity`` and ``water_level`` have shape
        ``broadcast(noise_vars.shape[:-1], power.shape)``, ``allocation`` that shape plus
        ``(d,)`` in the order of ``noise_vars``.

    Raises
    ------
    InputError
        If ``noise_vars`` is empty, not finite or has a value <= 0; if ``power`` is
        negative, not finite or does not broadcast.

    References
    ----------
    T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., Wiley, 2006,
    Section 9.4.

    Examples
    --------
    >>> import torch
    >>> wf = water_filling_capacity(torch.tensor([1.0, 2.0, 4.0]), 3.0)   # nu = 3
    >>> round(float(wf.water_level), 6), [round(p, 6) for p in wf.allocation.tolist()]
    (3.0, [2.0, 1.0, 0.0])
    >>> round(float(wf.capacity), 6)   # 1/2 log 3 + 1/2 log 1.5
    0.752039
    """
    func = "water_filling_capacity"
    check_bool(bits, "bits", func)
    noise = as_float_tensor(noise_vars, "noise_vars", func)
    check_ndim(noise, "noise_vars", func, min_ndim=1)
    check_nonempty(noise, "noise_vars", func)
    check_finite(noise, "noise_vars", func)
    if bool((noise <= 0).any()):
        idx = first_index(noise <= 0)
        raise InputError(
            f"The 'noise_vars' argument of {func} must be > 0 everywhere (noise variances); "
            f"got {float(noise[idx]):.6g} at index {idx} in a tensor with {describe(noise)}. "
            f"A noiseless channel has infinite capacity."
        )
    p = _as_target(power, noise, "power", func)
    if bool((p < 0).any()):
        idx = first_index(p < 0)
        raise InputError(
            f"The 'power' argument of {func} must be >= 0; got {float(p[idx]):.6g}{_at(idx)}."
        )
    # Water-fill the noise above its smallest value (v' = N - min N: equal noises give
    # exactly P / k each, however small P is beside N), in units of the detached
    # c = max(largest v', power): every level and the power are <= 1, so no breakpoint sum
    # overflows and a subnormal noise keeps its share.
    base = noise.amin(-1, keepdim=True)
    shifted = noise - base
    c = torch.maximum(shifted.detach().amax(-1), p.detach())
    c = c.clamp_min(torch.finfo(noise.dtype).tiny)
    unit = c.unsqueeze(-1)
    nu_u = _water_level(shifted / unit, p / c, fill=True)
    alloc_u = (nu_u.unsqueeze(-1) - shifted / unit).clamp_min(0)
    alloc = alloc_u * unit
    # each term 1/2 log1p(P_i / N_i); where P_i / N_i leaves the normal float64 range it is
    # read from logs, logaddexp(0, log(P_i/c) + log c - log N_i); a closed channel adds 0
    ratio = alloc / noise
    direct = (alloc >= torch.finfo(noise.dtype).tiny) & torch.isfinite(ratio)
    open_ = alloc_u > 0
    log_ratio = (
        torch.log(torch.where(open_, alloc_u, torch.ones_like(alloc_u)))
        + torch.log(unit)
        - torch.log(noise)
    )
    terms = torch.where(
        direct,
        torch.log1p(torch.where(direct, ratio, torch.zeros_like(ratio))),
        torch.where(
            open_,
            torch.logaddexp(torch.zeros_like(log_ratio), log_ratio),
            torch.zeros_like(log_ratio),
        ),
    )
    capacity = 0.5 * terms.sum(-1)
    return WaterFilling(from_nats(capacity, bits), base.squeeze(-1) + nu_u * c, alloc)
