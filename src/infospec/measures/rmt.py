r"""Random-matrix theory of weight spectra: the Marchenko-Pastur law and heavy-tail power laws.

Two questions are asked of the eigenvalues :math:`\lambda_i` of :math:`W^\top W` (the
squared singular values of a weight matrix):

* Does the bulk look like noise? A matrix with iid entries has the Marchenko-Pastur (MP)
  spectrum; :func:`fit_marchenko_pastur` estimates its scale robustly, counts the
  eigenvalues above the bulk edge (spikes, i.e. learned directions) and says how well the
  bulk fits (:func:`marchenko_pastur_edges`, :func:`marchenko_pastur_pdf`,
  :func:`marchenko_pastur_cdf`).
* How heavy is the tail? :func:`fit_power_law` fits :math:`p(\lambda) \propto
  \lambda^{-\alpha}` above a threshold :math:`\lambda_{\min}` chosen by the
  Kolmogorov-Smirnov rule of Clauset, Shalizi and Newman (2009), the exponent that
  WeightWatcher reports as ``alpha``.

Conventions for the MP law: ``q = p / n`` is the dimension over the number of samples for
the sample covariance :math:`\frac1n X^\top X` of an :math:`n \times p` matrix :math:`X`
with iid entries of variance :math:`\sigma^2`. For a weight matrix :math:`W` of shape
:math:`N \times M` with :math:`N \ge M` this is ``q = M / N`` and the eigenvalues of
:math:`W^\top W / N`.

What WeightWatcher 0.7.7 does for ``alpha`` (read from its source)
------------------------------------------------------------------
With its defaults (``pl_package='ww'``, ``xmax=None``, ``fix_fingers=False``),
``WeightWatcher.analyze()`` does *not* call the ``powerlaw`` package for the fit; it uses
its own class ``WW_powerlaw.WWFit``:

* eigenvalues are ``sv**2`` of the unnormalised weight matrix (``normalize`` was removed in
  0.6.5), and only those ``> 1e-5`` (``EVALS_THRESH``, absolute) are fitted;
* the fit is continuous and **untruncated** (``xmax=None``): for every candidate
  :math:`x_{\min}` the exponent is the closed-form maximum-likelihood estimate
  :math:`\hat\alpha = 1 + n / \sum_{x_j \ge x_{\min}} \log(x_j / x_{\min})`;
* the candidates are *all* sorted eigenvalues except the largest (ties are not merged: a
  repeated value is a candidate once per copy, with the tail starting at that copy);
* the KS distance of a candidate is :math:`D = \max_j |F(x_{(j)}) - j/n|`, j = 0..n-1, over
  the sorted tail, with :math:`F(x) = 1 - (x/x_{\min})^{1-\alpha}`: the fitted CDF against
  the empirical CDF's left limits only (the ``powerlaw`` package computes the same
  quantity for distinct values);
* the chosen :math:`x_{\min}` is the first candidate with the smallest :math:`D`;
  ``sigma`` is :math:`(\hat\alpha - 1)/\sqrt{n}` and ``num_pl_spikes`` the tail size;
* when fewer than 20 eigenvalues are fitted it switches to a small-sample rule: a
  bias-corrected :math:`\hat\alpha = 1 + (n-1)/\sum\log(x_j/x_{\min})` and only candidates
  with :math:`n \ge 8` (the whole spectrum when there are fewer than 8 eigenvalues). Its
  ``fit_powerlaw_smallN`` ranks them by :math:`D - 0.868/\sqrt{n}`, but ``WWFit.__init__``
  then overwrites that choice with the first smallest :math:`D` among them, so the
  smallest :math:`D` is what it reports (checked against WeightWatcher 0.7.7 itself).
  Below 8 eigenvalues its ``sigma`` is :math:`-1/\sqrt{N}` (the standard errors are
  computed before the exponent is filled in); we report :math:`(\hat\alpha-1)/\sqrt{n}`.

Its other paths: ``xmax='force'`` or ``fix_fingers`` require ``pl_package='powerlaw'``,
which calls ``powerlaw.Fit(data, xmax=..., distribution=...)``; with ``powerlaw`` 2.0 that
call raises ``TypeError`` (``Fit`` has no ``distribution`` argument), which WeightWatcher
catches and reports as a failed fit. An integer ``xmax=k`` drops the top ``k`` eigenvalues.

What we do
----------
:func:`fit_power_law` reproduces the default above exactly (same threshold, candidates,
estimator, KS distance, tie-breaking, small-sample rule), vectorised over the candidates,
so our ``alpha`` can be compared with WeightWatcher's. It differs only outside that
default: a user-given ``xmin`` is used as is (WeightWatcher's own ``fit_powerlaw(xmin=...)``
moves it to the nearest eigenvalue and still scans the candidates above it; ``analyze()``
never passes one), and ``xmax`` fits a power law truncated at ``xmax`` by maximum
likelihood (the exponent then solves a 1-D equation; the KS distance uses the truncated
CDF). The ``powerlaw`` package (2.0) computes the same untruncated estimate with two
differences: it scans unique values below the two largest, and its default range
``alpha`` in (0, 3) rejects steeper tails; widen it with ``parameter_ranges={'alpha': [1,
100]}`` to compare. With ``xmax`` it maximises the truncated likelihood numerically only
when the untruncated closed form lies outside (1.5, 3]; inside that range it returns the
untruncated closed form, which is biased for a truncated tail (ours is the truncated
maximum-likelihood estimate throughout).

References
----------
V. A. Marchenko and L. A. Pastur, "Distribution of eigenvalues for some sets of random
matrices", Mat. Sbornik 72(114), 1967.
M. Gavish and D. L. Donoho, "The optimal hard threshold for singular values is 4/sqrt(3)",
IEEE Trans. Inf. Theory 60(8), 2014.
J. Baik, G. Ben Arous and S. Péché, "Phase transition of the largest eigenvalue for nonnull
complex sample covariance matrices", Ann. Probab. 33(5), 2005.
A. Clauset, C. R. Shalizi and M. E. J. Newman, "Power-law distributions in empirical data",
SIAM Review 51(4), 2009.
C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks:
evidence from random matrix theory and implications for learning", JMLR 22(165), 2021.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.optimize import brentq

from .._errors import InputError
from .._validation import (
    as_float_tensor,
    check_choice,
    check_eigenvalues,
    check_finite,
    check_ndim,
    check_positive,
    describe,
)

__all__ = [
    "MarchenkoPasturEdges",
    "MarchenkoPasturFit",
    "PowerLawFit",
    "fit_marchenko_pastur",
    "fit_power_law",
    "marchenko_pastur_cdf",
    "marchenko_pastur_edges",
    "marchenko_pastur_pdf",
]

#: WeightWatcher's ``EVALS_THRESH``: eigenvalues at or below it are not fitted.
WW_EIGENVALUE_THRESHOLD = 1e-5
#: WeightWatcher switches to its small-sample rule below this many fitted eigenvalues.
_WW_SMALL_N = 20
#: Smallest tail a candidate may have under the small-sample rule.
_WW_SMALL_N_MIN_TAIL = 8
#: Entries per block of the (candidates x tail) KS matrix on the CPU: 1 MiB in float64,
#: which stays in a core's L2 cache through the block's dozen passes (a 4096-value fit took
#: 0.091 s with it against 0.123 s with 8 MiB blocks, one thread). On a GPU, where each
#: pass is a kernel launch, blocks are larger (:data:`_KS_BLOCK_ELEMENTS_DEVICE`).
_KS_BLOCK_ELEMENTS = 1 << 17
_KS_BLOCK_ELEMENTS_DEVICE = 1 << 22
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


class PowerLawFit(NamedTuple):
    """Result of :func:`fit_power_law`.

    Attributes
    ----------
    alpha : torch.Tensor, shape ()
        Exponent of :math:`p(\\lambda) \\propto \\lambda^{-\\alpha}` on the tail.
    xmin : torch.Tensor, shape ()
        Start of the tail (an eigenvalue when scanned, the given value otherwise).
    ks_distance : torch.Tensor, shape ()
        KS distance :math:`\\max_j |F(x_{(j)}) - j/n|` between the fitted CDF and the
        tail's empirical CDF (left limits), in [0, 1]; WeightWatcher's ``D``.
    sigma : torch.Tensor, shape ()
        Asymptotic standard error of ``alpha``: :math:`(\\alpha - 1)/\\sqrt{n}` untruncated
        (WeightWatcher's ``sigma``); the Fisher-information value when truncated.
    num_tail : int
        Number of eigenvalues in the fitted tail, :math:`n` (WeightWatcher's
        ``num_pl_spikes``, unless eigenvalues are tied at ``xmin``).
    xmax : torch.Tensor, shape ()
        Upper truncation point; ``inf`` for the untruncated fit.
    """

    alpha: torch.Tensor
    xmin: torch.Tensor
    ks_distance: torch.Tensor
    sigma: torch.Tensor
    num_tail: int
    xmax: torch.Tensor


# --------------------------------------------------------------------------------------
# Marchenko-Pastur law
# --------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _law_parameter(value: Any, name: str, func: str) -> float | torch.Tensor:
    """``q`` or ``sigma2``: a finite number > 0, or a tensor/array of them."""
    if _is_number(value):
        return check_positive(value, name, func)
    if isinstance(value, str | bytes) or value is None:
        raise InputError(
            f"The '{name}' parameter of {func} must be a float > 0 or a numeric tensor. "
            f"Got {value!r} instead."
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
    >>> from infospec.measures.rmt import marchenko_pastur_edges
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
    >>> from infospec.measures.rmt import marchenko_pastur_pdf
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
    >>> from infospec.measures.rmt import marchenko_pastur_cdf
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
    a few spikes (for example a heavy-tailed trained layer: see :func:`fit_power_law`).

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
    >>> from infospec.measures.rmt import fit_marchenko_pastur
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
        median = torch.quantile(nonzero, 0.5)
        num_spikes = 0
        for _ in range(max_iter):
            level = 0.5 * m / (m - num_spikes)
            s2 = median / _mp_unit_quantile(q_, level)
            k = int((nonzero > s2 * edge_factor).sum())
            if k == num_spikes:
                break
            num_spikes = k
        num_spikes = int((nonzero > s2 * edge_factor).sum())  # consistent with the edge

    lower, upper = marchenko_pastur_edges(q_, s2)
    bulk = nonzero[nonzero <= upper]
    q_t = torch.tensor(q_, dtype=torch.float64, device=t.device)
    if bulk.numel() == 0:
        ks = torch.ones((), dtype=torch.float64, device=t.device)
    else:
        mass = min(1.0, 1.0 / q_)
        ks = _ks_two_sided(_mp_continuous_cdf(bulk, q_t, s2) / mass)
    return MarchenkoPasturFit(s2, lower, upper, num_spikes, ks)


# --------------------------------------------------------------------------------------
# Power-law tail
# --------------------------------------------------------------------------------------


def _truncated_ratio(v: torch.Tensor) -> torch.Tensor:
    """h(v) = 1/v - 1/(e^v - 1): decreasing from 1 (v -> -inf) to 0 (v -> inf), h(0) = 1/2."""
    small = v.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(v), v)
    series = 0.5 - v / 12 + v**3 / 720 - v**5 / 30240
    return torch.where(small, series, 1 / safe - 1 / torch.expm1(safe))


def _solve_truncated(ratio: torch.Tensor) -> torch.Tensor:
    """Solve h(v) = ratio for v, elementwise, ratio in (0, 1), by bisection."""
    lo = -1 / (1 - ratio) - 1
    hi = 1 / ratio + 1
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        go_right = _truncated_ratio(mid) > ratio
        lo = torch.where(go_right, mid, lo)
        hi = torch.where(go_right, hi, mid)
        if bool(((hi - lo) <= 1e-15 * (1 + hi.abs())).all()):
            break
    return 0.5 * (lo + hi)


def _truncated_fisher(v: torch.Tensor) -> torch.Tensor:
    """Fisher information per point of u = alpha - 1, over t^2: 1/v^2 - 1/(4 sinh^2(v/2))."""
    small = v.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(v), v)
    exact = 1 / safe**2 - 1 / (4 * torch.sinh(safe / 2) ** 2)
    return torch.where(small, 1 / 12 - v**2 / 240 + v**4 / 6048, exact)


def _tail_cdf(
    log_ratio: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None, span: torch.Tensor | None
) -> torch.Tensor:
    """Power-law CDF at log(x / xmin): untruncated when ``v`` is None, else truncated."""
    if v is None:
        return -torch.expm1(-u * log_ratio)
    # (1 - e^{-v s}) / (1 - e^{-v}) with s = log(x/xmin) / log(xmax/xmin) in [0, 1]; for
    # v < 0 it is rewritten as e^{-|v|(1-s)} (1 - e^{-|v| s}) / (1 - e^{-|v|}) (no overflow).
    share = (log_ratio / span).clamp(0.0, 1.0)
    size = v.abs()
    zero = size == 0
    safe = torch.where(zero, torch.ones_like(size), size)
    base = torch.expm1(-safe * share) / torch.expm1(-safe)
    base = torch.where(v >= 0, base, torch.exp(-safe * (1 - share)) * base)
    return torch.where(zero, share, base)


def _ks_rows(
    logs: torch.Tensor,
    start: int,
    stop: int,
    u: torch.Tensor,
    v: torch.Tensor | None,
    span: torch.Tensor | None,
) -> torch.Tensor:
    """KS distances max_j |F(x_j) - (j - i)/n_i| of candidates i in [start, stop).

    ``u``, ``v`` and ``span`` hold the rows' parameters (length stop - start). Works on the
    (rows x tail) block with tensor ops, in place; callers bound its size. Entries with
    j < i get log-ratio 0 and step 0, hence a gap of exactly 0.
    """
    total = logs.numel()
    rows = torch.arange(stop - start, device=logs.device)
    offset = torch.arange(total - start, device=logs.device)
    step = (offset[None, :] - rows[:, None]).clamp_(min=0).to(logs.dtype)  # j - i
    step.div_((total - start - rows).to(logs.dtype)[:, None])  # (j - i) / n_i
    log_ratio = (logs[None, start:] - logs[start:stop, None]).clamp_(min=0)
    if v is None:
        model = log_ratio.mul_(-u[:, None]).expm1_().neg_()  # 1 - (x_j / x_i)^(1 - alpha)
    else:
        model = _tail_cdf(log_ratio, u[:, None], v[:, None], span[:, None])
    return model.sub_(step).abs_().amax(dim=1)


def _ks_all(
    logs: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None, span: torch.Tensor | None
) -> torch.Tensor:
    """KS distance of every candidate 0..len(u)-1, in blocks of bounded size."""
    count = u.numel()
    total = logs.numel()
    out = torch.empty(count, dtype=logs.dtype, device=logs.device)
    start = 0
    block = _KS_BLOCK_ELEMENTS if logs.device.type == "cpu" else _KS_BLOCK_ELEMENTS_DEVICE
    while start < count:
        rows = max(1, block // max(1, total - start))
        stop = min(count, start + rows)
        sl = slice(start, stop)
        out[sl] = _ks_rows(
            logs,
            start,
            stop,
            u[sl],
            None if v is None else v[sl],
            None if span is None else span[sl],
        )
        start = stop
    return out


def _check_xlimit(value: Any, name: str, func: str) -> float:
    if _is_number(value) and math.isfinite(float(value)) and float(value) > 0:
        return float(value)
    raise InputError(
        f"The '{name}' parameter of {func} must be None or a float > 0"
        + (" or 'max'" if name == "xmax" else "")
        + f". Got {value!r} instead."
    )


def fit_power_law(
    eigvals,
    *,
    xmin: float | None = None,
    xmax: float | str | None = None,
    threshold: float = WW_EIGENVALUE_THRESHOLD,
    small_sample: str = "ww",
) -> PowerLawFit:
    r"""Fit a power law to the tail of an empirical spectral density (WeightWatcher's alpha).

    For each candidate :math:`x_{\min}`, the continuous maximum-likelihood exponent of the
    :math:`n` eigenvalues :math:`x_j \ge x_{\min}` is

    .. math::

        \hat\alpha = 1 + \frac{n}{\sum_{j} \log(x_j / x_{\min})},
        \qquad F(x) = 1 - (x / x_{\min})^{1 - \hat\alpha},

    and :math:`x_{\min}` is the candidate with the smallest Kolmogorov-Smirnov distance
    :math:`D = \max_{j=0}^{n-1} |F(x_{(j)}) - j/n|` (Clauset, Shalizi and Newman 2009). This
    is exactly the estimator of WeightWatcher 0.7.7 with its defaults (see the module
    docstring for what it does): same absolute ``threshold``, candidates (every sorted
    eigenvalue but the largest), KS distance, first-minimum tie-break, and the same
    small-sample rule below 20 eigenvalues. All candidates are handled at once: the
    log-sums come from suffix cumulative sums of :math:`(N - k - 1)(\log x_{k+1} - \log
    x_k) \ge 0` (exact zeros for tied tails, no cancellation), and the KS distances from
    blocks of the (candidates x tail) matrix of at most :math:`2^{17}` entries on the CPU
    (:math:`2^{22}` on a GPU), so memory stays bounded (about 0.1 s on one CPU core for 4,096
    eigenvalues, 0.5 s for 10,000).

    Parameters
    ----------
    eigvals : tensor or array_like, shape (p,)
        Eigenvalues (for a weight matrix: its squared singular values, unnormalised as
        in WeightWatcher), in any order. Values at most ``threshold`` are discarded.
    xmin : float > 0, optional
        Fixed start of the tail: no scan, :math:`\hat\alpha` from the eigenvalues
        :math:`\ge x_{\min}` by the formula above (or the truncated one).
    xmax : float > 0 or ``'max'``, optional
        Fit a power law truncated at ``xmax`` (``'max'``: the largest eigenvalue, as
        WeightWatcher's ``xmax='force'``): eigenvalues above it are discarded, the density
        is normalised on :math:`[x_{\min}, x_{\max}]`, :math:`\hat\alpha = 1 + v/t` with
        :math:`t = \log(x_{\max}/x_{\min})` solves :math:`1/v - 1/(e^v - 1) =
        \overline{\log(x/x_{\min})}/t` (bisection, any real :math:`\hat\alpha`), and
        :math:`F(x) = (1 - (x/x_{\min})^{1-\hat\alpha}) / (1 - (x_{\max}/x_{\min})^{1-\hat
        \alpha})`. ``None`` (default) fits the untruncated law, like WeightWatcher.
    threshold : float >= 0, default 1e-5
        Eigenvalues at or below it are treated as zeros (WeightWatcher's absolute
        ``EVALS_THRESH``; it assumes unnormalised weights).
    small_sample : {'ww', 'standard'}, default 'ww'
        With fewer than 20 eigenvalues and a scanned, untruncated fit, ``'ww'`` applies
        WeightWatcher's rule (bias-corrected :math:`\hat\alpha = 1 + (n-1)/\sum\log`,
        tails of at least 8, smallest :math:`D`; the whole spectrum below 8 eigenvalues);
        ``'standard'`` keeps the rule above at every size.

    Returns
    -------
    PowerLawFit
        ``(alpha, xmin, ks_distance, sigma, num_tail, xmax)``: 0-d float64 tensors on the
        input's device and an ``int``. ``sigma`` is :math:`(\hat\alpha - 1)/\sqrt n`
        untruncated; truncated, it is :math:`1/\sqrt{n I(\hat\alpha)}` from the Fisher
        information :math:`I = 1/u^2 - t^2 e^{ut}/(e^{ut} - 1)^2`, :math:`u = \hat\alpha -
        1` (which tends to the former as :math:`x_{\max} \to \infty`). Scale-equivariant:
        multiplying the eigenvalues (and ``threshold``, ``xmin``, ``xmax``) by
        :math:`c` multiplies ``xmin`` and ``xmax`` by :math:`c` and leaves the rest.

    Raises
    ------
    InputError
        If ``eigvals`` is not 1-D, non-finite or significantly negative; if fewer than 2
        eigenvalues exceed ``threshold`` (and lie at most ``xmax``) or they are all equal;
        if a given ``xmin`` leaves fewer than 2 distinct values in the tail; if the best
        tail is made of equal values (infinite exponent); or if an option is invalid.

    Notes
    -----
    Not differentiable (the choice of :math:`x_{\min}` is an argmin); the input is
    detached. 1-D only: spectra of different matrices keep different numbers of
    eigenvalues above the threshold, so fit them one by one.

    References
    ----------
    A. Clauset, C. R. Shalizi and M. E. J. Newman, "Power-law distributions in empirical
    data", SIAM Review 51(4), 2009.
    C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks",
    JMLR 22(165), 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from infospec.measures.rmt import fit_power_law
    >>> x = 1.0 + np.random.default_rng(0).pareto(1.5, 5000)  # density ~ x^-2.5 on [1, inf)
    >>> fit = fit_power_law(x)
    >>> round(float(fit.alpha), 2), round(float(fit.sigma), 2)
    (2.47, 0.02)
    >>> fixed = fit_power_law(x, xmin=1.0)
    >>> bool(abs(fixed.alpha - (1 + 5000 / np.log(x).sum())) < 1e-9)
    True
    """
    func = "fit_power_law"
    t = as_float_tensor(eigvals, "eigvals", func)
    check_ndim(t, "eigvals", func, min_ndim=1, max_ndim=1, expected="exactly 1 dimension (p,)")
    t = check_eigenvalues(t, "eigvals", func).detach().to(torch.float64)
    threshold = check_positive(threshold, "threshold", func, allow_zero=True)
    check_choice(small_sample, "small_sample", func, ("ww", "standard"))
    xmin_ = None if xmin is None else _check_xlimit(xmin, "xmin", func)
    if xmax is None or (isinstance(xmax, str) and xmax == "max"):
        xmax_ = xmax
    else:
        xmax_ = _check_xlimit(xmax, "xmax", func)

    if xmin_ is not None and isinstance(xmax_, float) and xmin_ >= xmax_:
        raise InputError(
            f"The 'xmin' parameter of {func} must be below 'xmax'; got xmin={xmin_:.6g} "
            f"and xmax={xmax_:.6g}."
        )
    x = torch.sort(t[t > threshold]).values
    if xmax_ == "max" and x.numel():
        xmax_ = float(x[-1])
    if isinstance(xmax_, float):
        x = x[x <= xmax_]
    where = f"above threshold={threshold:g}" + (
        f" and at most xmax={xmax_:.6g}" if isinstance(xmax_, float) else ""
    )
    if x.numel() < 2:
        raise InputError(
            f"The 'eigvals' argument of {func} has {x.numel()} eigenvalue(s) {where} "
            f"(tensor with {describe(t)}); a power-law fit needs at least 2. Lower "
            f"'threshold' if the eigenvalues are normalised (small), or skip this matrix."
        )
    if bool(x[0] == x[-1]):
        raise InputError(
            f"The 'eigvals' argument of {func} has all {x.numel()} eigenvalues {where} "
            f"equal to {float(x[0]):.6g}: a flat spectrum has no power-law tail."
        )
    truncated = isinstance(xmax_, float)
    if xmin_ is not None:
        return _fit_fixed_xmin(x, xmin_, xmax_ if truncated else None, func)

    # Candidates i = 0..N-2, tail x[i:], of size n_i = N - i.
    size = x.numel()
    raw_logs = torch.log(x)
    logs = raw_logs - raw_logs.mean()  # centred: smaller rounding in the differences
    n_tail = (size - torch.arange(size - 1, device=x.device)).to(torch.float64)
    weights = (size - 1 - torch.arange(size - 1, device=x.device)).to(torch.float64) * (
        logs[1:] - logs[:-1]
    ).clamp_min(0)
    log_sums = torch.flip(torch.cumsum(torch.flip(weights, (0,)), 0), (0,))  # sum log(x/x_i)
    flat_tail = log_sums == 0  # the tail is x_i repeated: infinite exponent

    if truncated:
        span = math.log(xmax_) - raw_logs[:-1]
        feasible = (span > 0) & ~flat_tail
        safe_span = torch.where(feasible, span, torch.ones_like(span))
        ratio = torch.where(feasible, log_sums / n_tail / safe_span, torch.full_like(span, 0.5))
        v = _solve_truncated(ratio.clamp(1e-300, 1 - 1e-16))
        u = v / safe_span
        ks = _ks_all(logs, u, v, safe_span)
        ks = torch.where(flat_tail, (n_tail - 1) / n_tail, ks)
        ks = torch.where(span > 0, ks, torch.full_like(ks, math.inf))
        best = int(torch.argmin(ks))
        if bool(flat_tail[best]):
            _raise_flat_tail(x, best, func)
        alpha = 1 + u[best]
        sigma = 1 / (safe_span[best] * torch.sqrt(n_tail[best] * _truncated_fisher(v[best])))
        xmax_t = torch.tensor(xmax_, dtype=torch.float64, device=x.device)
        return PowerLawFit(alpha, x[best], ks[best], sigma, int(n_tail[best]), xmax_t)

    safe_sums = torch.where(flat_tail, torch.ones_like(log_sums), log_sums)
    inf = torch.full_like(n_tail, math.inf)
    if small_sample == "ww" and size < _WW_SMALL_N:
        # WeightWatcher's small-sample rule: bias-corrected exponent, tails of >= 8,
        # smallest D; the whole spectrum when no tail is long enough.
        alphas = torch.where(flat_tail, inf, 1 + (n_tail - 1) / safe_sums)
        usable = (n_tail >= _WW_SMALL_N_MIN_TAIL) & (log_sums > 1e-12)
        if bool(usable.any()):
            ks = _ks_all(
                logs, torch.where(usable, alphas - 1, torch.zeros_like(alphas)), None, None
            )
            best = int(torch.argmin(torch.where(usable, ks, inf)))
        else:
            best = 0
            if not bool(log_sums[0] > 1e-12):
                _raise_flat_tail(x, 0, func)
            ks = _ks_all(logs, alphas[:1] - 1, None, None)
    else:
        alphas = torch.where(flat_tail, inf, 1 + n_tail / safe_sums)
        ks = _ks_all(logs, torch.where(flat_tail, torch.zeros_like(alphas), alphas - 1), None, None)
        best = int(torch.argmin(ks))
    if bool(flat_tail[best]):
        _raise_flat_tail(x, best, func)
    alpha = alphas[best]
    sigma = (alpha - 1) / torch.sqrt(n_tail[best])
    xmax_t = torch.tensor(math.inf, dtype=torch.float64, device=x.device)
    return PowerLawFit(alpha, x[best], ks[best], sigma, int(n_tail[best]), xmax_t)


def _raise_flat_tail(x: torch.Tensor, index: int, func: str) -> None:
    raise InputError(
        f"{func}: the best tail starts at xmin={float(x[index]):.6g} and holds "
        f"{x.numel() - index} equal eigenvalues, so its exponent is infinite. The spectrum "
        f"has repeated top values; fit it with a given 'xmin' below them."
    )


def _fit_fixed_xmin(x: torch.Tensor, xmin: float, xmax: float | None, func: str) -> PowerLawFit:
    """Maximum-likelihood fit with a given xmin (and optional truncation at xmax)."""
    tail = x[x >= xmin]
    n = tail.numel()
    log_ratio = torch.log(tail / xmin)
    total = log_ratio.sum()
    if n < 2 or not bool(total > 0):
        raise InputError(
            f"The 'xmin' parameter of {func} leaves {n} eigenvalue(s) at or above "
            f"xmin={xmin:.6g}"
            + ("" if n < 2 else ", all equal to it")
            + "; a power-law fit needs at least 2 distinct values in the tail. Lower 'xmin'."
        )
    device = x.device
    n_t = torch.tensor(float(n), dtype=torch.float64, device=device)
    steps = torch.arange(n, dtype=torch.float64, device=device) / n
    if xmax is None:
        u = n_t / total
        model = _tail_cdf(log_ratio, u, None, None)
        sigma = u / torch.sqrt(n_t)
        xmax_t = torch.tensor(math.inf, dtype=torch.float64, device=device)
    else:
        span = torch.tensor(math.log(xmax / xmin), dtype=torch.float64, device=device)
        ratio = (total / n_t / span).clamp(1e-300, 1 - 1e-16)
        v = _solve_truncated(ratio.reshape(1))[0]
        u = v / span
        model = _tail_cdf(log_ratio, u, v, span)
        sigma = 1 / (span * torch.sqrt(n_t * _truncated_fisher(v)))
        xmax_t = torch.tensor(xmax, dtype=torch.float64, device=device)
    ks = (model - steps).abs().amax()
    xmin_t = torch.tensor(xmin, dtype=torch.float64, device=device)
    return PowerLawFit(1 + u, xmin_t, ks, sigma, n, xmax_t)
