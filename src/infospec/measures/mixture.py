"""Differential entropy of Gaussian mixtures: pairwise-distance bounds, a series, Monte Carlo.

A mixture :math:`f = \\sum_i c_i\\, \\mathcal N(\\mu_i, \\Sigma_i)` has no closed-form entropy.
This module gives

- :func:`mixture_entropy_bounds`: the pairwise-distance estimators of Kolchinsky & Tracey
  (2017), which bracket it, with KL divergences for the upper bound and Bhattacharyya
  distances for the lower one (any covariances);
- :func:`mixture_entropy_monte_carlo`: the sample mean of :math:`-\\log f(X)` with its
  standard error, the reference the bounds are checked against;
- :func:`mixture_entropy_series`: the small-:math:`\\mu` series of the *average* entropy of an
  equal-weight isotropic mixture whose means are themselves Gaussian (the setting of
  Joudeh & Škorić 2024), through :math:`O(\\mu^2)`.

Entropies are in nats unless ``bits=True``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import torch

from .._checks import shown
from .._errors import InputError
from .._units import from_nats
from .._validation import (
    as_float_tensor,
    binary_scale,
    check_bool,
    check_finite,
    check_ndim,
    check_positive,
    describe,
)

__all__ = [
    "MixtureEntropyBounds",
    "MonteCarloEstimate",
    "mixture_entropy_bounds",
    "mixture_entropy_monte_carlo",
    "mixture_entropy_series",
]

_LOG_2PI = math.log(2.0 * math.pi)


class MixtureEntropyBounds(NamedTuple):
    """Result of :func:`mixture_entropy_bounds`.

    Attributes
    ----------
    lower : torch.Tensor, 0-d
        :math:`\\hat H_{\\mathrm{BD}}`, the Bhattacharyya-distance estimator; ``<=`` the entropy.
    upper : torch.Tensor, 0-d
        :math:`\\hat H_{\\mathrm{KL}}`, the KL-divergence estimator; ``>=`` the entropy.
    kl : torch.Tensor, shape (K, K)
        :math:`\\operatorname{KL}(p_i \\,\\|\\, p_j)` in nats (always nats: a divergence
        between components, not the answer).
    bhattacharyya : torch.Tensor, shape (K, K)
        :math:`-\\log \\int \\sqrt{p_i p_j}` in nats.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    kl: torch.Tensor
    bhattacharyya: torch.Tensor


class MonteCarloEstimate(NamedTuple):
    """Result of :func:`mixture_entropy_monte_carlo`.

    Attributes
    ----------
    entropy : torch.Tensor, 0-d
        The sample mean of :math:`-\\log f(x_s)`.
    standard_error : torch.Tensor, 0-d
        :math:`\\hat s / \\sqrt S`, the sample standard deviation (``ddof = 1``) of the
        terms over the square root of their number; same units.
    n_samples : int
        :math:`S`.
    """

    entropy: torch.Tensor
    standard_error: torch.Tensor
    n_samples: int


def _check_mixture(
    weights: Any, means: Any, covariances: Any, func: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Validated float64 (or float32 with grad) weights, means, covariances, Cholesky factors.

    Means and covariances are returned in units of a power of two (``log_unit``, the log
    of the covariance unit, is the fifth value): entropies computed from them are
    :math:`\\tfrac d2` ``log_unit`` short of the true ones; distances are unchanged.
    """
    c = as_float_tensor(weights, "weights", func)
    m = as_float_tensor(means, "means", func)
    cov = as_float_tensor(covariances, "covariances", func)
    check_ndim(c, "weights", func, min_ndim=1, max_ndim=1, expected="shape (K,)")
    check_ndim(m, "means", func, min_ndim=2, max_ndim=2, expected="shape (K, d)")
    check_ndim(cov, "covariances", func, min_ndim=3, max_ndim=3, expected="shape (K, d, d)")
    k, d = m.shape
    if k < 1 or d < 1:
        raise InputError(
            f"The 'means' argument of {func} must have at least one component and one "
            f"dimension; got {describe(m)}."
        )
    if c.shape[0] != k or cov.shape != (k, d, d):
        raise InputError(
            f"The arguments of {func} must describe the same K components in the same d "
            f"dimensions: weights (K,), means (K, d), covariances (K, d, d); got weights with "
            f"{describe(c)}, means with {describe(m)} and covariances with {describe(cov)}. "
            f"For diagonal covariances pass torch.diag_embed(variances)."
        )
    for t, name in ((c, "weights"), (m, "means"), (cov, "covariances")):
        check_finite(t, name, func)
    if bool((c < 0).any()) or abs(float(c.detach().sum()) - 1.0) > 1e-8 * k:
        raise InputError(
            f"The 'weights' argument of {func} must be probabilities (>= 0, summing to 1); "
            f"got min {float(c.min()):.6g} and sum {float(c.sum()):.12g}. Divide by their sum."
        )
    dtype = torch.promote_types(torch.promote_types(c.dtype, m.dtype), cov.dtype)
    c, m, cov = c.to(dtype), m.to(dtype), cov.to(dtype)
    asym = (cov - cov.transpose(-1, -2)).detach().abs().amax()
    if float(asym) > 1e-10 * max(float(cov.detach().abs().amax()), 1e-300) * d:
        raise InputError(
            f"The 'covariances' argument of {func} must hold symmetric matrices; the largest "
            f"|S - S^T| entry is {float(asym):.3g}. Pass (S + S^T) / 2 if it is round-off."
        )
    # in units of u = 4^e near the largest |covariance entry| (exact: a power of two, and
    # sqrt(u) = 2^e for the means): the distances are invariant, the entropies move by
    # (d / 2) log u, and neither a subnormal nor a huge covariance meets an overflowing
    # inverse or an underflowing determinant
    unit = binary_scale(cov, square=True)
    m, cov = m / unit.sqrt(), cov / unit
    log_unit = float(torch.log(unit))
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        bad = int(torch.nonzero(info)[0])
        raise InputError(
            f"The 'covariances' argument of {func} must hold positive-definite matrices; "
            f"component {bad} is not (its Cholesky factorisation fails). A degenerate "
            f"component has entropy -inf."
        )
    return c, m, cov, chol, log_unit


def _logdet(chol: torch.Tensor) -> torch.Tensor:
    return 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def _component_entropies(chol: torch.Tensor) -> torch.Tensor:
    d = chol.shape[-1]
    return 0.5 * (d * (_LOG_2PI + 1.0) + _logdet(chol))


def _pairwise_kl(m: torch.Tensor, cov: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """:math:`\\operatorname{KL}(p_i\\|p_j) = \\tfrac12[\\operatorname{tr}(\\Sigma_j^{-1}\\Sigma_i)
    + \\Delta^T\\Sigma_j^{-1}\\Delta - d + \\log|\\Sigma_j| - \\log|\\Sigma_i|]`, shape (K, K)."""
    d = m.shape[-1]
    inv = torch.cholesky_inverse(chol)  # Sigma_j^{-1}, (K, d, d)
    trace = torch.einsum("jab,iba->ij", inv, cov)
    delta = m[None, :, :] - m[:, None, :]  # delta[i, j] = mu_j - mu_i
    maha = torch.einsum("ija,jab,ijb->ij", delta, inv, delta)
    logdet = _logdet(chol)
    return 0.5 * (trace + maha - d + logdet[None, :] - logdet[:, None])


def _pairwise_bhattacharyya(m: torch.Tensor, cov: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """Bhattacharyya distances, shape (K, K).

    :math:`\\tfrac18 \\Delta^T\\bar\\Sigma^{-1}\\Delta + \\tfrac12\\log(|\\bar\\Sigma| /
    \\sqrt{|\\Sigma_i||\\Sigma_j|})` with :math:`\\bar\\Sigma = (\\Sigma_i + \\Sigma_j)/2`.
    """
    avg = 0.5 * (cov[:, None] + cov[None, :])  # (K, K, d, d)
    chol_avg = torch.linalg.cholesky(avg)  # sums of PD matrices are PD
    delta = (m[None, :, :] - m[:, None, :]).unsqueeze(-1)
    sol = torch.cholesky_solve(delta, chol_avg)
    maha = (delta * sol).sum((-2, -1))
    logdet = _logdet(chol)
    return maha / 8.0 + 0.5 * (_logdet(chol_avg) - 0.5 * (logdet[:, None] + logdet[None, :]))


def _pairwise_estimator(c: torch.Tensor, h: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """:math:`\\sum_i c_i h_i - \\sum_i c_i \\log S_i`, :math:`S_i = \\sum_j c_j e^{-D_{ij}}`.

    :math:`D \\ge 0` with :math:`D_{ii} = 0`, so :math:`c_i \\le S_i \\le 1`: the sum is
    formed directly (no log-sum-exp, and no :math:`\\log c_j`, whose infinite gradient at a
    zero weight made NaN). A zero-weight component adds 0 to the value and its exact
    derivative :math:`h_i - \\log S_i - \\sum_k c_k e^{-D_{ki}}/S_k` to the gradient; a
    row whose sum underflows to 0 (every live component beyond ~745 nats) takes
    :math:`\\log 1`.
    """
    sums = (c[None, :] * torch.exp(-dist)).sum(dim=1)
    inner = torch.log(torch.where(sums > 0, sums, torch.ones_like(sums)))
    return (c * h).sum() - (c * inner).sum()


def mixture_entropy_bounds(
    weights: Any, means: Any, covariances: Any, *, bits: bool = False
) -> MixtureEntropyBounds:
    """Lower and upper bounds on the entropy of a Gaussian mixture, from pairwise distances.

    For :math:`f = \\sum_i c_i p_i` with :math:`p_i = \\mathcal N(\\mu_i, \\Sigma_i)` and a
    distance :math:`D` between components, Kolchinsky & Tracey's estimator is

    .. math::

        \\hat H_D = \\sum_i c_i\\, h(p_i) - \\sum_i c_i \\log \\sum_j c_j\\, e^{-D(p_i \\| p_j)} .

    With the Kullback-Leibler divergence it is an upper bound, with the Bhattacharyya
    distance :math:`D_B = -\\log \\int \\sqrt{p_i p_j}` (the Chernoff α-divergence at
    α = 1/2) a lower bound:

    .. math::

        \\hat H_{\\mathrm{BD}} \\le h(f) \\le \\hat H_{\\mathrm{KL}} ,

    and both lie within :math:`[\\sum_i c_i h(p_i),\\ \\sum_i c_i h(p_i) + H(c)]`. They are
    exact for one component, for identical components, and in the limit of components far
    apart (then :math:`h(f) = \\sum_i c_i h(p_i) + H(c)`). Between Gaussians (``d``
    dimensions, :math:`\\Delta = \\mu_j - \\mu_i`, :math:`\\bar\\Sigma = (\\Sigma_i +
    \\Sigma_j)/2`):

    .. math::

        \\operatorname{KL}(p_i\\|p_j) &= \\tfrac12\\big[\\operatorname{tr}(\\Sigma_j^{-1}\\Sigma_i)
            + \\Delta^T\\Sigma_j^{-1}\\Delta - d + \\log|\\Sigma_j| - \\log|\\Sigma_i|\\big], \\\\
        D_B(p_i, p_j) &= \\tfrac18 \\Delta^T\\bar\\Sigma^{-1}\\Delta
            + \\tfrac12 \\log\\frac{|\\bar\\Sigma|}{\\sqrt{|\\Sigma_i||\\Sigma_j|}} .

    Computed with Cholesky factors (no explicit determinants) and a log-sum-exp, in float64
    (float32 for a ``requires_grad`` float32 input); differentiable in all three inputs.
    The cost is :math:`K^2` Cholesky factorisations of :math:`d \\times d` matrices.

    Parameters
    ----------
    weights : tensor or array-like, shape (K,)
        Mixing probabilities :math:`c_i \\ge 0`, summing to 1 (to ``1e-8 K``).
    means : tensor or array-like, shape (K, d)
        Component means.
    covariances : tensor or array-like, shape (K, d, d)
        Symmetric positive-definite component covariances (any, not only isotropic); for
        diagonal ones pass ``torch.diag_embed(variances)``.
    bits : bool, default False
        ``lower`` and ``upper`` in bits instead of nats.

    Returns
    -------
    MixtureEntropyBounds
        ``(lower, upper, kl, bhattacharyya)``.

    Raises
    ------
    InputError
        If the shapes disagree or are not (K,), (K, d), (K, d, d); if any input is not
        finite; if the weights are negative or do not sum to 1; if a covariance is not
        symmetric or not positive definite.

    References
    ----------
    A. Kolchinsky and B. D. Tracey, "Estimating mixture entropy with pairwise distances",
    Entropy 19(7), 361, 2017.

    Examples
    --------
    >>> import math, torch
    >>> far = mixture_entropy_bounds([0.5, 0.5], [[-50.0], [50.0]], torch.ones(2, 1, 1))
    >>> h = 0.5 * math.log(2 * math.pi * math.e) + math.log(2)  # far apart: h(p) + H(c)
    >>> round(float(far.lower), 6) == round(float(far.upper), 6) == round(h, 6)
    True
    >>> b = mixture_entropy_bounds([0.3, 0.7], [[0.0], [1.0]], [[[1.0]], [[2.0]]])
    >>> float(b.lower) <= float(b.upper)
    True
    """
    func = "mixture_entropy_bounds"
    check_bool(bits, "bits", func)
    c, m, cov, chol, log_unit = _check_mixture(weights, means, covariances, func)
    h = _component_entropies(chol) + 0.5 * m.shape[-1] * log_unit
    kl = _pairwise_kl(m, cov, chol)
    bd = _pairwise_bhattacharyya(m, cov, chol)
    upper = _pairwise_estimator(c, h, kl)
    lower = _pairwise_estimator(c, h, bd)
    return MixtureEntropyBounds(from_nats(lower, bits), from_nats(upper, bits), kl, bd)


def _log_density(
    x: torch.Tensor, c: torch.Tensor, m: torch.Tensor, chol: torch.Tensor
) -> torch.Tensor:
    """:math:`\\log f(x)` for rows of ``x``, shape (S,)."""
    d = m.shape[-1]
    diff = (x[:, None, :] - m[None, :, :]).unsqueeze(-1)  # (S, K, d, 1)
    z = torch.linalg.solve_triangular(chol.expand(x.shape[0], *chol.shape), diff, upper=False)
    log_p = -0.5 * (z.square().sum((-2, -1)) + d * _LOG_2PI + _logdet(chol)[None, :])
    return torch.logsumexp(torch.log(c)[None, :] + log_p, dim=1)


def mixture_entropy_monte_carlo(
    weights: Any,
    means: Any,
    covariances: Any,
    *,
    n_samples: int = 100_000,
    generator: torch.Generator | None = None,
    bits: bool = False,
) -> MonteCarloEstimate:
    """Monte Carlo estimate of a Gaussian mixture's entropy, with its standard error.

    .. math::

        \\hat h = -\\frac1S \\sum_{s=1}^S \\log f(x_s), \\quad x_s \\sim f, \\qquad
        \\widehat{\\mathrm{SE}} = \\frac{\\operatorname{sd}_s \\log f(x_s)}{\\sqrt S} .

    Unbiased, with an error that is asymptotically normal with that standard deviation:
    an interval of :math:`\\pm k\\,\\widehat{\\mathrm{SE}}` covers the entropy with the
    normal probability of ``k``. Samples are drawn in float64 as
    :math:`x = \\mu_J + L_J \\varepsilon` (``J`` from the weights, ``L`` the Cholesky factor);
    memory is :math:`O(S K d)`.

    Parameters
    ----------
    weights, means, covariances
        As for :func:`mixture_entropy_bounds`.
    n_samples : int >= 2, default 100000
        :math:`S`.
    generator : torch.Generator, optional
        Source of randomness (the global one if omitted).
    bits : bool, default False
        Bits instead of nats.

    Returns
    -------
    MonteCarloEstimate
        ``(entropy, standard_error, n_samples)``.

    Raises
    ------
    InputError
        As :func:`mixture_entropy_bounds`, and if ``n_samples`` is not an int >= 2.

    Examples
    --------
    >>> import math, torch
    >>> g = torch.Generator().manual_seed(0)
    >>> mc = mixture_entropy_monte_carlo([1.0], [[0.0]], [[[1.0]]], n_samples=20000, generator=g)
    >>> abs(float(mc.entropy) - 0.5 * math.log(2 * math.pi * math.e)) < 4 * float(mc.standard_error)
    True
    """
    func = "mixture_entropy_monte_carlo"
    check_bool(bits, "bits", func)
    n = check_positive(n_samples, "n_samples", func, integer=True)
    if n < 2:
        raise InputError(
            f"The 'n_samples' parameter of {func} must be an int >= 2 (for a standard error). "
            f"Got {shown(n_samples)} instead."
        )
    c, m, _, chol, log_unit = _check_mixture(weights, means, covariances, func)
    with torch.no_grad():
        c, m, chol = c.detach().double(), m.detach().double(), chol.detach().double()
        comp = torch.multinomial(c, n, replacement=True, generator=generator)
        eps = torch.randn(n, m.shape[1], 1, dtype=torch.float64, generator=generator)
        x = m[comp] + (chol[comp] @ eps).squeeze(-1)
        terms = 0.5 * m.shape[-1] * log_unit - _log_density(x, c, m, chol)
        mean = terms.mean()
        se = terms.std(correction=1) / math.sqrt(n)
    return MonteCarloEstimate(from_nats(mean, bits), from_nats(se, bits), n)


def mixture_entropy_series(
    dim: int,
    n_components: int,
    mean_var: Any,
    noise_var: float = 1.0,
    *,
    order: int = 2,
    bits: bool = False,
) -> torch.Tensor:
    """Average entropy of a random equal-weight Gaussian mixture, as a series in μ = s²/σ².

    The mixture :math:`f_W = \\frac1q \\sum_{i=1}^q \\mathcal N(W_i, \\sigma^2 I_n)` has means
    :math:`W_i \\sim \\mathcal N(0, s^2 I_n)` drawn independently (the setting of Joudeh &
    Škorić); its entropy averaged over the means, :math:`\\bar h = \\mathbb E_W\\, h(f_W)`
    (the conditional entropy :math:`h(X \\mid W)`), is, with :math:`\\mu = s^2/\\sigma^2` and
    :math:`h_\\sigma = \\tfrac12 \\log(2\\pi e \\sigma^2)`,

    .. math::

        \\bar h = n h_\\sigma + \\frac n2 \\Big(1 - \\frac1q\\Big) \\mu
            - \\frac n4 \\Big(1 - \\frac1q\\Big)\\Big(1 + \\frac nq\\Big) \\mu^2 + O(\\mu^3) .

    ``order`` keeps the terms through :math:`\\mu^{\\text{order}}` (0, 1 or 2).

    How the coefficients were checked here: writing :math:`f_W = \\phi\\,(1 + \\varepsilon)`
    with :math:`\\phi` the standard normal density (σ = 1) gives
    :math:`h(f_W) = n h_1 + \\frac1{2q}\\sum_i |W_i|^2 - \\mathbb E_\\phi[(1+\\varepsilon)
    \\log(1+\\varepsilon)]`; the terms :math:`\\varepsilon^2/2 - \\varepsilon^3/6 +
    \\varepsilon^4/12` averaged over the Gaussian means (Wick's theorem) give the
    coefficients above, evaluated exactly (symbolic in ``n``) for q = 2, 3, 4; one
    component gives :math:`n h_\\sigma` exactly; for :math:`q \\to \\infty` the mixture tends
    to :math:`\\mathcal N(0, (1 + \\mu)\\sigma^2 I)`, whose entropy
    :math:`n h_\\sigma + \\frac n2 \\log(1 + \\mu)` has the same limiting coefficients
    :math:`n/2` and :math:`-n/4`; and the tests compare with quadrature (n = 1, q = 2) and
    Monte Carlo. The paper's own statement could not be read for this implementation
    (only its abstract and a secondary summary of it): the summary's first-order term
    agrees with the one above, its :math:`\\mu^2` coefficient differs by a factor
    :math:`1/q` and fails the :math:`q \\to \\infty` limit, so the coefficient used is the
    one derived and checked here.

    Parameters
    ----------
    dim : int >= 1
        :math:`n`, the dimension.
    n_components : int >= 1
        :math:`q`.
    mean_var : float >= 0 or tensor
        :math:`s^2`, the variance of each coordinate of the random means. A tensor gives
        many values at once.
    noise_var : float > 0, default 1
        :math:`\\sigma^2`, each component's variance per coordinate.
    order : {0, 1, 2}, default 2
        Highest power of μ kept.
    bits : bool, default False
        Bits instead of nats.

    Returns
    -------
    torch.Tensor, shape of ``mean_var``
        The truncated series, in nats (bits with ``bits=True``). It is accurate for
        :math:`\\mu \\ll 1/n` (the neglected term grows like :math:`n^3 \\mu^3`).

    Raises
    ------
    InputError
        If ``dim`` or ``n_components`` is not an int >= 1, ``mean_var`` is negative or not
        finite, ``noise_var`` is not > 0, or ``order`` is not 0, 1 or 2.

    References
    ----------
    B. Joudeh and B. Škorić, "Average entropy of Gaussian mixtures", Entropy 26(8), 659,
    2024 (arXiv:2404.07311).

    Examples
    --------
    >>> import math
    >>> h1 = 0.5 * math.log(2 * math.pi * math.e)
    >>> s = mixture_entropy_series(1, 2, 0.1)        # h1 + 0.1/4 - 3/16 * 0.01
    >>> round(float(s) - h1, 8)
    0.023125
    >>> float(mixture_entropy_series(3, 1, 0.5)) == 3 * h1   # one component: exact
    True
    """
    func = "mixture_entropy_series"
    check_bool(bits, "bits", func)
    n = check_positive(dim, "dim", func, integer=True)
    q = check_positive(n_components, "n_components", func, integer=True)
    sigma2 = check_positive(noise_var, "noise_var", func)
    if not isinstance(order, numbers.Integral) or isinstance(order, bool) or order not in (0, 1, 2):
        raise InputError(
            f"The 'order' parameter of {func} must be 0, 1 or 2. Got {shown(order)} instead."
        )
    s2 = as_float_tensor(mean_var, "mean_var", func)
    check_finite(s2, "mean_var", func)
    if bool((s2 < 0).any()):
        raise InputError(
            f"The 'mean_var' argument of {func} must be >= 0 (a variance of the means); got "
            f"min {float(s2.min()):.6g}."
        )
    mu = s2 / sigma2
    out = torch.full_like(mu, n * 0.5 * math.log(2.0 * math.pi * math.e * sigma2))
    spread = 1.0 - 1.0 / q
    if order >= 1:
        out = out + 0.5 * n * spread * mu
    if order >= 2:
        out = out - 0.25 * n * spread * (1.0 + n / q) * mu.square()
    return from_nats(out, bits)
