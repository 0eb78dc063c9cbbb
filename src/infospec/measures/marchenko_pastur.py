r"""The Marchenko-Pastur law of noise spectra: its edges, density, CDF and a robust fit.

Does the bulk of a spectrum look like noise? A matrix with iid entries has the
Marchenko-Pastur (MP) spectrum; :func:`fit_marchenko_pastur` estimates its scale robustly,
counts the eigenvalues above the bulk edge (spikes, i.e. learned directions) and says how
well the bulk fits (:func:`marchenko_pastur_edges`, :func:`marchenko_pastur_pdf`,
:func:`marchenko_pastur_cdf`). The heavy-tail question is in :mod:`.power_law`.

Conventions for the MP law: ``q = p / n`` is the dimension over the number of samples for
the sample covariance :math:`\frac1n X^\top X` of an :math:`n \times p` matrix :math:`X`
with iid entries of variance :math:`\sigma^2`. For a weight matrix :math:`W` of shape
:math:`N \times M` with :math:`N \ge M` this is ``q = M / N`` and the eigenvalues of
:math:`W^\top W / N`.

References
----------
V. A. Marchenko and L. A. Pastur, "Distribution of eigenvalues for some sets of random
matrices", Mat. Sbornik 72(114), 1967.
M. Gavish and D. L. Donoho, "The optimal hard threshold for singular values is 4/sqrt(3)",
IEEE Trans. Inf. Theory 60(8), 2014.
J. Baik, G. Ben Arous and S. Péché, "Phase transition of the largest eigenvalue for nonnull
complex sample covariance matrices", Ann. Probab. 33(5), 2005.
"""

from __future__ import annotations

import bisect
import functools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.optimize import brentq

from .._checks import shown
from .._errors import InputError
from .._validation import (
    as_float_tensor,
    check_eigenvalues,
    check_finite,
    check_ndim,
    check_positive,
    describe,
)

__all__ = [
    "MarchenkoPasturEdges",
    "MarchenkoPasturFit",
    "fit_marchenko_pastur",
    "marchenko_pastur_cdf",
    "marchenko_pastur_edges",
    "marchenko_pastur_pdf",
]

#: Fewest nonzero eigenvalues that :func:`fit_marchenko_pastur` accepts.
_MP_MIN_EIGENVALUES = 4


class MarchenkoPasturEdges(NamedTuple):
    """Edges of the Marchenko-Pastur bulk.

    Attributes
    ----------
    lower : float or torch.Tensor
        :math:`\\sigma^2 (1 - \\sqrt q)^2`.
    upper : float or torch.Tensor
        :math:`\\sigma^2 (1 + \\sqrt q)^2`.
    """

    lower: Any
    upper: Any


class MarchenkoPasturFit(NamedTuple):
    """Result of :func:`fit_marchenko_pastur`.

    Attributes
    ----------
    sigma2 : torch.Tensor, shape ()
        Estimated bulk variance :math:`\\sigma^2` (same units as the eigenvalues).
    lower_edge, upper_edge : torch.Tensor, shape ()
        MP edges :math:`\\sigma^2 (1 \\mp \\sqrt q)^2` for the fitted :math:`\\sigma^2`.
    num_spikes : int
        Nonzero eigenvalues above ``upper_edge`` (outliers of the bulk).
    ks_distance : torch.Tensor, shape ()
        Two-sided Kolmogorov-Smirnov distance between the bulk eigenvalues (nonzero, at
        most ``upper_edge``) and the fitted MP law of the nonzero eigenvalues, in [0, 1].
    """

    sigma2: torch.Tensor
    lower_edge: torch.Tensor
    upper_edge: torch.Tensor
    num_spikes: int
    ks_distance: torch.Tensor


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _law_parameter(value: Any, name: str, func: str) -> float | torch.Tensor:
    """``q`` or ``sigma2``: a finite number > 0, or a tensor/array of them."""
    if _is_number(value):
        return check_positive(value, name, func)
    if isinstance(value, str | bytes) or value is None:
        raise InputError(
            f"The '{name}' parameter of {func} must be a float > 0 or a numeric tensor. "
            f"Got {shown(value)} instead."
        )
    t = as_float_tensor(value, name, func)
    check_finite(t, name, func)
    if t.numel() == 0 or bool((t <= 0).any()):
        raise InputError(
            f"The '{name}' parameter of {func} must hold values > 0; got a tensor with "
            f"{describe(t)}"
            + (f" and minimum {float(t.min()):.6g}" if t.numel() else "")
            + ". Pass q = p / n (dimension over samples) and a positive variance."
        )
    return t


def marchenko_pastur_edges(q, sigma2=1.0) -> MarchenkoPasturEdges:
    r"""Edges of the Marchenko-Pastur bulk.

    .. math::

        \lambda_\pm = \sigma^2 \left(1 \pm \sqrt{q}\right)^2, \qquad q = p / n.

    The eigenvalues of the sample covariance :math:`\frac1n X^\top X` of an :math:`n \times
    p` matrix with iid entries of variance :math:`\sigma^2` fill :math:`[\lambda_-,
    \lambda_+]` as :math:`n, p \to \infty` with :math:`p/n \to q`. When :math:`q > 1`,
    :math:`p - n` eigenvalues are exactly zero and the :math:`n` nonzero ones fill the same
    interval (whose lower edge is then :math:`\sigma^2(\sqrt q - 1)^2 > 0`). For a weight
    matrix :math:`W` of shape :math:`N \times M` with :math:`N \ge M`, use ``q = M / N`` and
    the eigenvalues of :math:`W^\top W / N`.

    Parameters
    ----------
    q : float > 0 or tensor
        Aspect ratio :math:`p / n`. A tensor broadcasts with ``sigma2``.
    sigma2 : float > 0 or tensor, default 1.0
        Variance of the entries.

    Returns
    -------
    MarchenkoPasturEdges
        ``(lower, upper)``: Python floats when both inputs are numbers, otherwise
        float64 tensors of the broadcast shape.

    Raises
    ------
    InputError
        If ``q`` or ``sigma2`` is not a finite value > 0.

    References
    ----------
    V. A. Marchenko and L. A. Pastur, Mat. Sbornik 72(114), 1967.

    Examples
    --------
    >>> from infospec.measures.marchenko_pastur import marchenko_pastur_edges
    >>> lower, upper = marchenko_pastur_edges(0.25)
    >>> (round(lower, 6), round(upper, 6))
    (0.25, 2.25)
    >>> [round(v, 6) for v in marchenko_pastur_edges(4.0, sigma2=2.0)]
    [2.0, 18.0]
    """
    func = "marchenko_pastur_edges"
    q_ = _law_parameter(q, "q", func)
    s2 = _law_parameter(sigma2, "sigma2", func)
    if isinstance(q_, float) and isinstance(s2, float):
        root = math.sqrt(q_)
        return MarchenkoPasturEdges(s2 * (1.0 - root) ** 2, s2 * (1.0 + root) ** 2)
    device = next((v.device for v in (q_, s2) if isinstance(v, torch.Tensor)), None)
    root = torch.sqrt(torch.as_tensor(q_, dtype=torch.float64, device=device))
    s2_t = torch.as_tensor(s2, dtype=torch.float64, device=device)
    return MarchenkoPasturEdges(s2_t * (1.0 - root) ** 2, s2_t * (1.0 + root) ** 2)


def _mp_inputs(x, q, sigma2, func: str):
    t = as_float_tensor(x, "x", func)
    check_finite(t, "x", func)
    q_ = _law_parameter(q, "q", func)
    s2 = _law_parameter(sigma2, "sigma2", func)
    q_t = torch.as_tensor(q_, dtype=t.dtype, device=t.device)
    s2_t = torch.as_tensor(s2, dtype=t.dtype, device=t.device)
    try:
        np.broadcast_shapes(tuple(t.shape), tuple(q_t.shape), tuple(s2_t.shape))
    except ValueError as exc:
        raise InputError(
            f"The 'x', 'q' and 'sigma2' arguments of {func} must broadcast together; got "
            f"shapes {tuple(t.shape)}, {tuple(q_t.shape)} and {tuple(s2_t.shape)}."
        ) from exc
    return t, q_t, s2_t


def marchenko_pastur_pdf(x, q, sigma2=1.0) -> torch.Tensor:
    r"""Density of the continuous part of the Marchenko-Pastur law.

    .. math::

        p(x) = \frac{\sqrt{(\lambda_+ - x)(x - \lambda_-)}}{2\pi\sigma^2 q\, x}
        \quad \text{for } \lambda_- \le x \le \lambda_+, \qquad 0 \text{ outside},

    with :math:`\lambda_\pm = \sigma^2(1 \pm \sqrt q)^2` (see
    :func:`marchenko_pastur_edges`). It integrates to :math:`\min(1, 1/q)`: when
    :math:`q > 1` the law also has a point mass :math:`1 - 1/q` at 0 (the :math:`p - n` zero
    eigenvalues), which this density does not include. Its mean is :math:`\sigma^2` when
    :math:`q \le 1`. At :math:`q = 1` the density diverges like :math:`x^{-1/2}` at 0;
    the value returned at exactly ``x = 0`` is then ``inf``.

    Parameters
    ----------
    x : tensor or array_like, any shape
        Points at which to evaluate the density.
    q : float > 0 or tensor
        Aspect ratio :math:`p / n`; a tensor broadcasts with ``x``.
    sigma2 : float > 0 or tensor, default 1.0
        Variance of the matrix entries; a tensor broadcasts with ``x``.

    Returns
    -------
    pdf : torch.Tensor
        Non-negative density of the broadcast shape; float64 unless ``x`` is a float32
        tensor that requires grad. Differentiable in ``x`` and ``sigma2`` inside the bulk.

    Raises
    ------
    InputError
        If ``x`` is not finite, or ``q`` or ``sigma2`` is not > 0.

    References
    ----------
    V. A. Marchenko and L. A. Pastur, Mat. Sbornik 72(114), 1967.

    Examples
    --------
    >>> from infospec.measures.marchenko_pastur import marchenko_pastur_pdf
    >>> [round(v, 6) for v in marchenko_pastur_pdf([0.1, 1.0, 3.0], 0.25).tolist()]
    [0.0, 0.616404, 0.0]
    """
    t, q_t, s2_t = _mp_inputs(x, q, sigma2, "marchenko_pastur_pdf")
    # in units of sigma2 (p(x) = p_1(x / sigma2) / sigma2): the product of the two
    # distances to the edges would overflow or underflow for sigma2 beyond ~1e+-154
    u = t / s2_t
    root = torch.sqrt(q_t)
    lower = (1 - root) ** 2
    upper = (1 + root) ** 2
    inside = (u >= lower) & (u <= upper)
    positive = inside & (t > 0)
    safe_u = torch.where(positive, u, torch.ones_like(u))
    radicand = ((upper - safe_u) * (safe_u - lower)).clamp_min(0)
    density = torch.sqrt(radicand) / (2 * math.pi * q_t * safe_u) / s2_t
    out = torch.where(positive, density, torch.zeros_like(density))
    # x == 0 lies in the bulk only when q == 1, where the density has an x^(-1/2) pole.
    pole = inside & (t == 0)
    return torch.where(pole, torch.full_like(out, math.inf), out)


#: Below this sqrt(q), the MP mass uses its series in sqrt(q) (see _mp_mass_at_angle).
_MP_SERIES_ROOT = 0.25
#: Terms of that series: the k-th is below sqrt(q)^(k-2) / k, the first left out below
#: 2e-18 at 28 terms.
_MP_SERIES_TERMS = 28


def _mp_mass_at_angle(theta, q, root, lib):
    r"""Mass of the continuous MP part below x = sigma2 (1 + q - 2 sqrt(q) cos(theta)).

    The closed form of the integral of the density over theta in [0, pi] (sigma2 drops
    out); it rises from 0 to min(1, 1/q). ``lib`` is :mod:`torch` (tensors) or :mod:`math`
    (floats, for the scalar root-finding of :func:`_mp_unit_quantile`); ``root`` is sqrt(q).

    For small ``q`` the closed form subtracts two terms of size theta / (2q) (an absolute
    error of about 1e-16 / q, 4e-5 at q = 1e-12), so below ``sqrt(q) = 0.25`` the same
    integral is taken in a form without cancellation: with r = sqrt(q) < 1,

    .. math::

        \pi F(\theta) = \theta + \delta - \sum_{k \ge 2} r^{k-2} \frac{\sin k\theta}{k},
        \qquad \delta = \operatorname{atan2}(r \sin\theta, 1 - r\cos\theta)
                        = \sum_{k \ge 1} r^k \frac{\sin k\theta}{k},

    from :math:`\operatorname{atan2}((1+r)\sin\tfrac\theta2, (1-r)\cos\tfrac\theta2)
    = \tfrac\theta2 + \delta`.
    """
    arc = lib.atan2((1 + root) * lib.sin(theta / 2), abs(1 - root) * lib.cos(theta / 2))
    closed = (lib.sin(theta) / root + (1 + q) * theta / (2 * q) - abs(1 - q) * arc / q) / math.pi
    small = root < _MP_SERIES_ROOT
    if lib is math and not small:
        return closed
    if lib is not math and not bool(torch.as_tensor(small).any()):
        return closed
    r = root if lib is math else torch.where(small, root, torch.zeros_like(root))
    delta = lib.atan2(r * lib.sin(theta), 1 - r * lib.cos(theta))
    tail = 0.0
    for k in range(_MP_SERIES_TERMS + 1, 1, -1):  # Horner's rule in r, smallest terms first
        tail = tail * r + lib.sin(k * theta) / k
    series = (theta + delta - tail) / math.pi
    return series if lib is math else torch.where(small, series, closed)


def _mp_continuous_cdf(x: torch.Tensor, q: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Mass of the continuous MP part on (0, x]; rises from 0 to min(1, 1/q)."""
    root = torch.sqrt(q)
    half_width = 2 * sigma2 * root
    # centre - x as (sigma2 - x) + sigma2 q: the first difference is exact near the bulk
    # (Sterbenz), so a narrow bulk (small q) keeps the digits of x - sigma2
    theta = torch.arccos((((sigma2 - x) + sigma2 * q) / half_width).clamp(-1.0, 1.0))
    value = _mp_mass_at_angle(theta, q, root, torch)
    return value.clamp(min=torch.zeros_like(value), max=torch.clamp(1 / q, max=1.0))


def marchenko_pastur_cdf(x, q, sigma2=1.0) -> torch.Tensor:
    r"""Cumulative distribution function of the Marchenko-Pastur law.

    .. math::

        F(x) = \max\!\left(0, 1 - \tfrac1q\right)\,\mathbb 1[x \ge 0]
        + \int_{\lambda_-}^{x} p(t)\, dt,

    the point mass at 0 (when :math:`q > 1`) plus the integral of
    :func:`marchenko_pastur_pdf`, computed in closed form: with :math:`x = \sigma^2 (1 + q -
    2\sqrt q \cos\theta)`,

    .. math::

        \int_{\lambda_-}^{x} p = \frac1\pi\left[\frac{\sin\theta}{\sqrt q}
        + \frac{(1+q)\,\theta}{2q} - \frac{|1-q|}{q}
        \operatorname{atan2}\!\big((1+\sqrt q)\sin\tfrac\theta2,\ |1-\sqrt q|\cos\tfrac\theta2
        \big)\right].

    Parameters
    ----------
    x : tensor or array_like, any shape
        Points at which to evaluate the CDF.
    q : float > 0 or tensor
        Aspect ratio :math:`p / n`; a tensor broadcasts with ``x``.
    sigma2 : float > 0 or tensor, default 1.0
        Variance of the matrix entries; a tensor broadcasts with ``x``.

    Returns
    -------
    cdf : torch.Tensor
        Values in [0, 1] of the broadcast shape: 0 below 0, 1 from :math:`\lambda_+` on.

    Raises
    ------
    InputError
        If ``x`` is not finite, or ``q`` or ``sigma2`` is not > 0.

    References
    ----------
    V. A. Marchenko and L. A. Pastur, Mat. Sbornik 72(114), 1967.

    Examples
    --------
    >>> from infospec.measures.marchenko_pastur import marchenko_pastur_cdf
    >>> [round(v, 6) for v in marchenko_pastur_cdf([0.0, 2.25, 9.0], 0.25).tolist()]
    [0.0, 1.0, 1.0]
    >>> round(float(marchenko_pastur_cdf(0.0, 4.0)), 6)  # the point mass 1 - 1/q
    0.75
    """
    t, q_t, s2_t = _mp_inputs(x, q, sigma2, "marchenko_pastur_cdf")
    atom = torch.where(t >= 0, (1 - 1 / q_t).clamp_min(0), torch.zeros_like(t))
    return (atom + _mp_continuous_cdf(t, q_t, s2_t)).clamp(0.0, 1.0)


@functools.lru_cache(maxsize=4096)
def _mp_unit_quantile(q: float, level: float) -> float:
    """Quantile at ``level`` of the nonzero part of the MP law with sigma2 = 1.

    Solves for theta in x = 1 + q - 2 sqrt(q) cos(theta), where the CDF has the closed
    form of :func:`marchenko_pastur_cdf` and is increasing in theta on [0, pi], by Brent's
    method (about a dozen scalar evaluations to 1e-15). Cached: matrices of one shape share
    their (q, level) pairs.
    """
    root = math.sqrt(q)
    mass = min(1.0, 1.0 / q)

    def excess(theta: float) -> float:
        return _mp_mass_at_angle(theta, q, root, math) / mass - level

    lo_val, hi_val = excess(0.0), excess(math.pi)
    if lo_val >= 0:
        theta = 0.0
    elif hi_val <= 0:
        theta = math.pi
    else:
        theta = brentq(excess, 0.0, math.pi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    return 1 + q - 2 * root * math.cos(theta)


def _input_eps(raw: Any) -> float:
    """Machine epsilon of the caller's floating dtype (float64 for anything else)."""
    dtype = getattr(raw, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float64).eps
    if dtype is not None and np.issubdtype(dtype, np.floating):
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)


def _ks_two_sided(cdf_at_sorted: torch.Tensor) -> torch.Tensor:
    """Two-sided KS distance of a sorted sample, given the model CDF at its points."""
    n = cdf_at_sorted.numel()
    ranks = torch.arange(1, n + 1, dtype=cdf_at_sorted.dtype, device=cdf_at_sorted.device)
    above = (ranks / n - cdf_at_sorted).amax()
    below = (cdf_at_sorted - (ranks - 1) / n).amax()
    return torch.maximum(above, below).clamp(0.0, 1.0)


def fit_marchenko_pastur(
    eigvals,
    q,
    *,
    sigma2: float | None = None,
    max_iter: int = 50,
    zero_rtol: float | None = None,
) -> MarchenkoPasturFit:
    r"""Fit the Marchenko-Pastur law to a spectrum with a few outliers (spikes).

    The bulk variance is estimated by matching medians, the robust estimator of Gavish and
    Donoho (2014), with the spikes accounted for:

    1. drop the zero eigenvalues (at most ``zero_rtol * max(eigvals)``; there are
       :math:`p - n` of them when :math:`q > 1`), leaving :math:`m` values;
    2. with :math:`k` of them taken as spikes (start with :math:`k = 0`), the median of all
       :math:`m` is the bulk's quantile at level :math:`m / (2(m - k))`, so
       :math:`\hat\sigma^2 = \operatorname{median}(\lambda) / Q_q\big(m/(2(m-k))\big)`,
       where :math:`Q_q` is the quantile function of the nonzero part of the MP law with
       :math:`\sigma^2 = 1` (from the closed-form CDF of :func:`marchenko_pastur_cdf`, by
       bisection);
    3. count the eigenvalues above :math:`\lambda_+ = \hat\sigma^2(1 + \sqrt q)^2` as the
       new :math:`k` and repeat 2-3 until :math:`k` no longer changes.

    :math:`k` only grows (a larger :math:`k` lowers :math:`\hat\sigma^2`) and cannot exceed
    :math:`m/2`, because the edge stays above the median: the loop ends, and at most half
    of the eigenvalues are ever called spikes (the median's breakdown point). With a few
    spikes the median barely moves and step 2 removes its small upward bias (a rank-:math:`k`
    signal adds :math:`k` eigenvalues on top of the bulk). Spikes above the BBP threshold
    (population variance above :math:`\sigma^2(1 + \sqrt q)`) separate from the bulk and
    are counted; on pure noise the largest eigenvalues fluctuate around :math:`\lambda_+` on
    the Tracy-Widom scale, so 0-2 spurious spikes are typical. A spike count near
    :math:`m/2` or a large ``ks_distance`` says that the spectrum is not a noise bulk with
    a few spikes (for example a heavy-tailed trained layer: see
    :func:`~infospec.measures.power_law.fit_power_law`).

    Parameters
    ----------
    eigvals : tensor or array_like, shape (p,)
        Eigenvalues of :math:`\frac1n X^\top X` (or :math:`W^\top W / N`), in any order;
        zeros allowed.
    q : float > 0
        Aspect ratio :math:`p / n` (``M / N`` for an :math:`N \times M` weight matrix).
    sigma2 : float > 0, optional
        Known bulk variance: skips the estimation and only counts spikes and measures
        the fit.
    max_iter : int > 0, default 50
        Maximum number of rounds of steps 2-3 (they stop earlier, when ``k`` is stable).
    zero_rtol : float >= 0, optional
        Eigenvalues at most ``zero_rtol * max(eigvals)`` count as zeros. Default: ``p``
        times the machine epsilon of the input's dtype (NumPy's ``matrix_rank`` rule).

    Returns
    -------
    MarchenkoPasturFit
        ``(sigma2, lower_edge, upper_edge, num_spikes, ks_distance)``; 0-d float64
        tensors on the input's device and an ``int``.

    Raises
    ------
    InputError
        If ``eigvals`` is not 1-D, non-finite or significantly negative; if it has fewer
        than 4 nonzero eigenvalues or they are all equal (the law cannot be fitted); if
        ``q``, ``sigma2``, ``max_iter`` or ``zero_rtol`` is invalid.

    References
    ----------
    M. Gavish and D. L. Donoho, IEEE Trans. Inf. Theory 60(8), 2014.
    J. Baik, G. Ben Arous and S. Péché, Ann. Probab. 33(5), 2005.

    Examples
    --------
    >>> import torch
    >>> from infospec.measures.marchenko_pastur import fit_marchenko_pastur
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(2000, 500, generator=g, dtype=torch.float64)
    >>> X[:, 0] *= 4.0  # one planted direction of variance 16
    >>> fit = fit_marchenko_pastur(torch.linalg.eigvalsh(X.T @ X / 2000), 500 / 2000)
    >>> round(float(fit.sigma2), 2), fit.num_spikes
    (1.0, 1)
    """
    func = "fit_marchenko_pastur"
    raw = eigvals
    t = as_float_tensor(eigvals, "eigvals", func)
    check_ndim(t, "eigvals", func, min_ndim=1, max_ndim=1, expected="exactly 1 dimension (p,)")
    t = check_eigenvalues(t, "eigvals", func).detach().to(torch.float64)
    q_ = check_positive(q, "q", func)
    max_iter = check_positive(max_iter, "max_iter", func, integer=True)
    if zero_rtol is None:
        zero_rtol = t.numel() * _input_eps(raw)
    else:
        zero_rtol = check_positive(zero_rtol, "zero_rtol", func, allow_zero=True)

    values = torch.sort(t).values
    largest = values[-1]
    nonzero = values[values > zero_rtol * largest] if bool(largest > 0) else values[:0]
    m = nonzero.numel()
    if m < _MP_MIN_EIGENVALUES:
        raise InputError(
            f"The 'eigvals' argument of {func} has {m} nonzero eigenvalue(s) (tensor with "
            f"{describe(t)}); the Marchenko-Pastur law needs at least "
            f"{_MP_MIN_EIGENVALUES}. Pass the spectrum of a larger matrix."
        )
    if bool(nonzero[0] == nonzero[-1]):
        raise InputError(
            f"The 'eigvals' argument of {func} has all {m} nonzero eigenvalues equal to "
            f"{float(nonzero[0]):.6g}: a spectrum without spread cannot be fitted by the "
            f"Marchenko-Pastur law (it is an orthogonal matrix up to scale)."
        )

    edge_factor = (1 + math.sqrt(q_)) ** 2
    if sigma2 is not None:
        s2 = torch.tensor(
            check_positive(sigma2, "sigma2", func), dtype=torch.float64, device=t.device
        )
        num_spikes = int((nonzero > s2 * edge_factor).sum())
    else:
        # Median matching with the spikes accounted for: the median of all m nonzero
        # eigenvalues is the bulk's quantile at level m / (2 (m - k)) when k of them are
        # spikes. Starting from k = 0, k can only grow and stays at most m / 2.
        # in Python floats over the sorted values (the same IEEE operations as on 0-d
        # tensors, and a count of the values above a threshold is a bisection)
        median = float(torch.quantile(nonzero, 0.5))
        ascending = nonzero.tolist()
        num_spikes = 0
        for _ in range(max_iter):
            level = 0.5 * m / (m - num_spikes)
            s2_value = median / _mp_unit_quantile(q_, level)
            k = m - bisect.bisect_right(ascending, s2_value * edge_factor)
            if k == num_spikes:
                break
            num_spikes = k
        num_spikes = m - bisect.bisect_right(ascending, s2_value * edge_factor)  # at the edge
        s2 = torch.tensor(s2_value, dtype=torch.float64, device=t.device)

    lower, upper = marchenko_pastur_edges(q_, s2)
    bulk = nonzero[nonzero <= upper]
    q_t = torch.tensor(q_, dtype=torch.float64, device=t.device)
    if bulk.numel() == 0:
        ks = torch.ones((), dtype=torch.float64, device=t.device)
    else:
        mass = min(1.0, 1.0 / q_)
        ks = _ks_two_sided(_mp_continuous_cdf(bulk, q_t, s2) / mass)
    return MarchenkoPasturFit(s2, lower, upper, num_spikes, ks)
