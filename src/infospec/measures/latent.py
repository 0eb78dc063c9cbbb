"""Capacity of a Gaussian encoder's latent variable, in bits (the notes' seed 002).

A VAE encoder maps each input :math:`x` to :math:`q(z \\mid x) = \\mathcal N(\\mu(x),
\\operatorname{diag} \\sigma^2(x))`. The differential entropy of the codes says nothing about
how much they can carry (it changes with a rescaling of :math:`z`); read through the
encoder's own noise, each latent dimension is a Gaussian channel whose input spreads with
:math:`s_j^2 = \\operatorname{Var}_x[\\mu_j(x)]` and whose noise has power
:math:`t_j^2 = \\mathbb E_x[\\sigma_j^2(x)]`, and it carries
:math:`\\tfrac12 \\log(1 + s_j^2 / t_j^2)`: the seed's :math:`I(Z; Z + N)`, unchanged when
signal and noise scale together. :func:`latent_capacity` returns it beside the exact average
KL rate :math:`\\mathbb E_x \\operatorname{KL}(q(z \\mid x) \\,\\|\\, \\mathcal N(0, I))` (the
VAE's rate term, an upper bound on :math:`I(X; Z)`) and the active dimensions of Burda et al.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from .._checks import shown
from .._errors import InputError
from .._units import from_nats
from .._validation import (
    as_float_tensor,
    check_bool,
    check_finite,
    check_ndim,
    describe,
)

__all__ = ["LatentCapacity", "latent_capacity"]


@dataclass(frozen=True, eq=False)
class LatentCapacity:
    """Result of :func:`latent_capacity`.

    Attributes
    ----------
    total : torch.Tensor, 0-d
        :math:`C = \\sum_j C_j`, in bits (nats with ``bits=False``).
    per_dim : torch.Tensor, shape (d,)
        :math:`C_j = \\tfrac12 \\log(1 + \\operatorname{Var}_x[\\mu_j] / \\mathbb E_x[\\sigma_j^2])`
        for each latent dimension, in the order of the columns of ``mu``.
    kl_rate : torch.Tensor, 0-d
        :math:`\\mathbb E_x \\operatorname{KL}(q(z \\mid x) \\,\\|\\, \\mathcal N(0, I))`,
        same units as ``total``; always ``>= total``.
    kl_per_dim : torch.Tensor, shape (d,)
        The KL rate of each dimension; they sum to ``kl_rate`` and each is ``>= per_dim``.
    active : tuple of int
        Indices of the active dimensions, :math:`\\operatorname{Var}_x[\\mu_j] >`
        ``active_threshold``, in increasing order.
    bits : bool
        Whether ``total``, ``per_dim``, ``kl_rate`` and ``kl_per_dim`` are in bits.
    """

    total: torch.Tensor
    per_dim: torch.Tensor
    kl_rate: torch.Tensor
    kl_per_dim: torch.Tensor
    active: tuple[int, ...]
    bits: bool

    @property
    def n_active(self) -> int:
        """Number of active dimensions."""
        return len(self.active)


def _check_threshold(value: Any, func: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
        if math.isfinite(v) and v >= 0:
            return v
    raise InputError(
        f"The 'active_threshold' parameter of {func} must be a float >= 0 (a variance of the "
        f"encoder means). Got {shown(value)} instead."
    )


def latent_capacity(
    mu: Any, logvar: Any, *, bits: bool = True, active_threshold: float = 0.01
) -> LatentCapacity:
    """Capacity of a diagonal Gaussian encoder's latent, with its KL rate and active dimensions.

    For codes :math:`q(z \\mid x) = \\mathcal N(\\mu(x), \\operatorname{diag}
    e^{\\ell(x)})` over the ``N`` inputs in the rows of ``mu`` and ``logvar`` (``ℓ`` the log
    variance), each latent dimension ``j`` is read as a Gaussian channel with signal
    variance :math:`s_j^2` and noise variance :math:`t_j^2`:

    .. math::

        C_j = \\frac12 \\log\\Big(1 + \\frac{s_j^2}{t_j^2}\\Big), \\qquad
        s_j^2 = \\operatorname{Var}_x[\\mu_j(x)], \\qquad
        t_j^2 = \\mathbb E_x[e^{\\ell_j(x)}], \\qquad C = \\sum_j C_j .

    Beside it, the exact average KL rate against the standard normal prior,

    .. math::

        K_j = \\mathbb E_x \\tfrac12 \\big(\\mu_j^2 + e^{\\ell_j} - 1 - \\ell_j\\big), \\qquad
        K = \\sum_j K_j ,

    and the active dimensions :math:`\\{j : s_j^2 > \\delta\\}` (``δ = active_threshold``;
    Burda et al.'s rule with :math:`\\delta = 10^{-2}`).

    **Capacity never exceeds the KL rate**, per dimension: with :math:`m = \\mathbb E\\mu_j`,
    :math:`\\mathbb E \\mu_j^2 = s^2 + m^2` and Jensen's :math:`\\mathbb E \\ell_j \\le
    \\log t^2`,

    .. math::

        2K_j \\ge s^2 + m^2 + t^2 - 1 - \\log t^2 \\ge (s^2 + t^2) - 1 - \\log t^2
        \\ge \\log(s^2 + t^2) - \\log t^2 = 2C_j ,

    the last step by :math:`u - 1 \\ge \\log u` at :math:`u = s^2 + t^2`. Equality needs
    :math:`m = 0`, a constant :math:`\\sigma_j` and :math:`s^2 + t^2 = 1`: a dimension whose
    aggregate posterior matches the prior's variance. :math:`C_j` is the mutual information
    of a Gaussian input of variance :math:`s^2` through a Gaussian channel of noise
    :math:`t^2`; the KL rate is the variational upper bound on the encoder's actual
    :math:`I(X; Z)` (Alemi et al. 2018), so ``total <= kl_rate`` is the Gaussian-channel
    reading of :math:`I(X; Z) \\le \\mathbb E_x \\operatorname{KL}`. A collapsed dimension
    (:math:`\\mu_j` constant) carries :math:`C_j = 0` whatever its KL.

    Numerics: variances are population moments over the ``N`` rows (``ddof = 0``: the
    inputs are the empirical distribution of ``x``; the bound above is proved for this
    choice). :math:`\\log t_j^2` is a log-sum-exp of ``logvar`` and
    :math:`\\log(1 + s^2/t^2)` is ``logaddexp(0, log s² − log t²)``, so log variances of
    ±700 neither overflow nor underflow, and :math:`s_j^2` is formed in units of the
    column's largest deviation, so means from about 1e-300 to 1e300 give the exact capacity
    (the KL rate, whose :math:`\\mu^2` term then exceeds float64, is ``inf`` beyond about
    1e154); a constant column of ``mu`` gives exactly :math:`C_j = 0`. The result is
    differentiable in ``mu`` and ``logvar`` (a ``requires_grad`` float32 input is computed
    in float32, anything else in float64).

    Parameters
    ----------
    mu : tensor or array-like, shape (N, d)
        Encoder means :math:`\\mu(x)`, one row per input, ``N >= 2``.
    logvar : tensor or array-like, shape (N, d)
        Encoder log variances :math:`\\log \\sigma^2(x)` (natural log, of the variance not
        the standard deviation), same shape as ``mu``.
    bits : bool, default True
        ``total``, ``per_dim``, ``kl_rate`` and ``kl_per_dim`` in bits; nats with ``False``
        (the factor is :math:`\\ln 2`).
    active_threshold : float >= 0, default 0.01
        A dimension is active when :math:`\\operatorname{Var}_x[\\mu_j] >` this value
        (Burda et al. 2016, Section 5.2: :math:`10^{-2}`). In the prior's units: it assumes
        the prior :math:`\\mathcal N(0, I)`.

    Returns
    -------
    LatentCapacity
        ``(total, per_dim, kl_rate, kl_per_dim, active, bits)``.

    Raises
    ------
    InputError
        If ``mu`` or ``logvar`` is not 2-D, if their shapes differ, if ``N < 2`` or
        ``d = 0``, if either holds NaN or infinity, or if ``active_threshold`` is not a
        float >= 0.

    References
    ----------
    eri24816, blog note on the capacity of a VAE latent variable read through Gaussian
    noise, 2024-11-16 (:math:`I(Z; Z+N) = \\tfrac d2 \\log(1 + s^2/t^2)`).
    Y. Burda, R. Grosse and R. Salakhutdinov, "Importance weighted autoencoders", ICLR 2016
    (active units). A. Alemi et al., "Fixing a broken ELBO", ICML 2018 (rate as a bound on
    :math:`I(X; Z)`). T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd
    ed., Wiley, 2006, Section 9.4.

    Examples
    --------
    >>> import math, torch
    >>> mu = torch.tensor([[-1.5, 0.2], [1.5, 0.2]])           # Var = 2.25 and 0
    >>> logvar = torch.full((2, 2), math.log(0.75))
    >>> cap = latent_capacity(mu, logvar)                      # 1/2 log2(1 + 2.25 / 0.75)
    >>> round(float(cap.total), 6), cap.active
    (1.0, (0,))
    >>> float(cap.kl_rate) >= float(cap.total)
    True
    """
    func = "latent_capacity"
    check_bool(bits, "bits", func)
    threshold = _check_threshold(active_threshold, func)
    m = as_float_tensor(mu, "mu", func)
    lv = as_float_tensor(logvar, "logvar", func)
    expected = "exactly 2 dimensions (N inputs, d latent dimensions)"
    check_ndim(m, "mu", func, min_ndim=2, max_ndim=2, expected=expected)
    check_ndim(lv, "logvar", func, min_ndim=2, max_ndim=2, expected=expected)
    if m.shape != lv.shape:
        raise InputError(
            f"The 'mu' and 'logvar' arguments of {func} must have the same shape (N, d); got "
            f"mu with {describe(m)} and logvar with {describe(lv)}. Pass the encoder's mean "
            f"and log variance for the same inputs."
        )
    n, d = m.shape
    if n < 2 or d < 1:
        raise InputError(
            f"The 'mu' argument of {func} must have at least 2 rows (inputs, for a variance "
            f"over x) and 1 column (latent dimension); got {describe(m)}."
        )
    check_finite(m, "mu", func)
    check_finite(lv, "logvar", func)
    dtype = torch.promote_types(m.dtype, lv.dtype)
    m, lv = m.to(dtype), lv.to(device=m.device, dtype=dtype)

    # s_j^2 (ddof = 0), two-pass after subtracting the first row, so that a constant column
    # gives exactly 0 rather than the round-off of its mean
    c = m - m[:1].detach()
    # in units of each column's largest |mu_j - mu_j(x_1)| (detached), so that the squares
    # neither overflow (|mu| beyond ~1e154) nor underflow (spreads below ~1e-154)
    top = c.detach().abs().amax(0)
    unit = torch.where(top > 0, top, torch.ones_like(top))
    cu = c / unit
    spread_u = (cu - cu.mean(0)).square().mean(0)
    log_noise = torch.logsumexp(lv, dim=0) - math.log(n)  # log t_j^2
    live = spread_u > 0
    # log(1) in place of log(0) for a collapsed dimension keeps its gradient finite (0)
    log_spread = torch.log(torch.where(live, spread_u, torch.ones_like(spread_u)))
    log_spread = log_spread + 2 * torch.log(unit)
    spread = torch.exp(log_spread.detach()) * live  # s_j^2 for the active rule (may be inf)
    per_dim = 0.5 * torch.logaddexp(torch.zeros_like(log_spread), log_spread - log_noise)
    per_dim = torch.where(live, per_dim, torch.zeros_like(per_dim))
    kl_per_dim = 0.5 * (m.square() + torch.exp(lv) - 1.0 - lv).mean(0)
    active = tuple(int(j) for j in torch.nonzero(spread.detach() > threshold).flatten())
    return LatentCapacity(
        total=from_nats(per_dim.sum(), bits),
        per_dim=from_nats(per_dim, bits),
        kl_rate=from_nats(kl_per_dim.sum(), bits),
        kl_per_dim=from_nats(kl_per_dim, bits),
        active=active,
        bits=bits,
    )
