r"""Rate-distortion-perception of a scalar Gaussian source: squared error, W2 perception.

Lossy compression that must also keep the reconstructions *realistic* (distributed like the
source) pays in distortion. For :math:`X \sim \mathcal N(m, \sigma^2)`, mean squared error
:math:`D = \mathbb E(X - \hat X)^2` and the perception index the squared 2-Wasserstein
distance :math:`W_2^2(p_X, p_{\hat X}) \le P`, the trade-off has a closed form
(Zhang et al. 2021, after Blau & Michaeli 2019):

.. math::

    D(R, P) =
    \begin{cases}
      \sigma^2 e^{-2R}
        & \sqrt P \ge \sigma\,(1 - \rho),\\[2pt]
      \sigma^2 + (\sigma - \sqrt P)^2 - 2\rho\,\sigma(\sigma - \sqrt P)
        & \text{otherwise},
    \end{cases}
    \qquad \rho = \sqrt{1 - e^{-2R}},

with :math:`R` in nats. Why: a jointly Gaussian :math:`(X, \hat X)` with correlation
:math:`\rho` and :math:`\hat\sigma = \operatorname{sd}(\hat X)` has
:math:`I(X; \hat X) = -\tfrac12 \log(1 - \rho^2)`,
:math:`D = \sigma^2 + \hat\sigma^2 - 2\rho\sigma\hat\sigma` and
:math:`W_2^2 = (\sigma - \hat\sigma)^2` (equal means); at a rate :math:`R` the largest
:math:`\rho` is best, and :math:`D` is minimised over :math:`\hat\sigma \ge \sigma - \sqrt P`
at :math:`\hat\sigma = \max(\rho\sigma, \sigma - \sqrt P)`. Gaussian reconstructions are
optimal (Zhang et al.). The unconstrained branch is the classical
:math:`D(R) = \sigma^2 e^{-2R}` (:func:`~infospec.measures.distortion_rate`); perfect realism
(:math:`P = 0`) gives :math:`D(R, 0) = 2\sigma^2 (1 - \rho)`, at most twice :math:`D(R)`.

References
----------
G. Zhang, J. Qian, J. Chen and A. Khisti, "Universal Rate-Distortion-Perception
Representations for Lossy Compression", NeurIPS 2021.
Y. Blau and T. Michaeli, "Rethinking Lossy Compression: The Rate-Distortion-Perception
Tradeoff", ICML 2019.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .._errors import InputError
from .._units import from_nats, to_nats
from .._validation import (
    as_float_tensor,
    check_bool,
    check_finite,
    first_index,
)

__all__ = [
    "DistortionRatePerception",
    "RateDistortionPerception",
    "distortion_rate_perception",
    "rate_distortion_perception",
]


class DistortionRatePerception(NamedTuple):
    """Result of :func:`distortion_rate_perception` (every field broadcast together).

    Attributes
    ----------
    distortion : torch.Tensor
        :math:`D(R, P)`, the least mean squared error, in the units of ``variance``.
    reconstruction_std : torch.Tensor
        :math:`\\hat\\sigma = \\max(\\rho\\sigma, \\sigma - \\sqrt P)`, the standard deviation
        of the optimal (Gaussian) reconstruction.
    perception_binds : torch.Tensor, bool
        Whether the perception constraint is active (:math:`D(R, P) > \\sigma^2 e^{-2R}`).
    """

    distortion: torch.Tensor
    reconstruction_std: torch.Tensor
    perception_binds: torch.Tensor


class RateDistortionPerception(NamedTuple):
    """Result of :func:`rate_distortion_perception` (every field broadcast together).

    Attributes
    ----------
    rate : torch.Tensor
        :math:`R(D, P)`, in nats (bits with ``bits=True``); 0 where
        :math:`D \\ge \\sigma^2 + \\max(0, \\sigma - \\sqrt P)^2`.
    reconstruction_std : torch.Tensor
        The standard deviation of the optimal reconstruction.
    perception_binds : torch.Tensor, bool
        Whether the perception constraint is active (:math:`R(D, P) > R(D)`).
    """

    rate: torch.Tensor
    reconstruction_std: torch.Tensor
    perception_binds: torch.Tensor


def _inputs(func: str, **named: Any) -> list[torch.Tensor]:
    """Float tensors, finite, >= 0 (variance > 0), broadcast together, with named errors."""
    tensors = []
    for name, value in named.items():
        t = check_finite(as_float_tensor(value, name, func), name, func)
        bad = t <= 0 if name == "variance" else t < 0
        if bool(bad.any()):
            idx = first_index(bad)
            where = f" at index {idx}" if idx else ""
            rule = "> 0" if name == "variance" else ">= 0"
            raise InputError(
                f"The '{name}' argument of {func} must be {rule}; got {float(t[idx]):.6g}{where}."
            )
        tensors.append(t)
    try:
        return list(torch.broadcast_tensors(*tensors))
    except RuntimeError:
        shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(named, tensors, strict=True))
        raise InputError(f"The arguments of {func} do not broadcast together: {shapes}.") from None


def distortion_rate_perception(
    variance: Any, rate: Any, perception: Any, *, bits: bool = False
) -> DistortionRatePerception:
    r"""Least mean squared error of a Gaussian source at a rate and a W2 perception budget.

    .. math::

        D(R, P) = \sigma^2 + \hat\sigma^2 - 2\rho\,\sigma\hat\sigma, \qquad
        \hat\sigma = \max(\rho\sigma,\ \sigma - \sqrt P), \qquad
        \rho = \sqrt{1 - e^{-2R}},

    which is :math:`\sigma^2 e^{-2R}` where the constraint is slack and
    :math:`2\sigma^2(1-\rho)` at perfect realism :math:`P = 0` (module docstring for the
    derivation). Differentiable in all three arguments (torch autograd).

    Parameters
    ----------
    variance : float or tensor
        Source variance :math:`\sigma^2 > 0` (the mean plays no part).
    rate : float or tensor
        Rate :math:`R \ge 0` in nats per sample (bits with ``bits=True``).
    perception : float or tensor
        Budget :math:`P \ge 0` on :math:`W_2^2(p_X, p_{\hat X})`, in the units of
        ``variance``; ``float("inf")`` is not accepted, use a value :math:`\ge \sigma^2`
        for no constraint.
    bits : bool, default False
        ``rate`` is in bits.

    Returns
    -------
    DistortionRatePerception
        ``(distortion, reconstruction_std, perception_binds)``, float64 unless the inputs
        are of another floating dtype, of the broadcast shape.

    Raises
    ------
    InputError
        If an argument is not finite, ``variance`` is not positive, ``rate`` or
        ``perception`` is negative, or the shapes do not broadcast.

    References
    ----------
    G. Zhang, J. Qian, J. Chen and A. Khisti, NeurIPS 2021 (the scalar Gaussian case).

    Examples
    --------
    >>> import math
    >>> d = distortion_rate_perception(1.0, 1.0, 0.0, bits=True)   # perfect realism, 1 bit
    >>> round(float(d.distortion), 6), round(2 * (1 - math.sqrt(0.75)), 6)
    (0.267949, 0.267949)
    >>> float(distortion_rate_perception(1.0, 1.0, 1.0, bits=True).distortion)   # D(R)
    0.25
    """
    func = "distortion_rate_perception"
    check_bool(bits, "bits", func)
    var, r, p = _inputs(func, variance=variance, rate=rate, perception=perception)
    r = to_nats(r, bits)
    sigma = torch.sqrt(var)
    rho = torch.sqrt(-torch.expm1(-2 * r))
    floor = sigma - torch.sqrt(p)
    binds = floor > rho * sigma
    s_hat = torch.where(binds, floor, rho * sigma)
    # sigma^2 + s^2 - 2 rho sigma s, written so the slack branch is exactly sigma^2 e^{-2R}
    slack = var * torch.exp(-2 * r)
    # The bound is evaluated at a harmless rate where it is not selected: rho's derivative is
    # infinite at R = 0 and torch.where would turn 0 * inf into a NaN gradient of the slack.
    rho_b = torch.sqrt(-torch.expm1(-2 * torch.where(binds, r, torch.ones_like(r))))
    bound = (sigma - floor) ** 2 + 2 * (1 - rho_b) * sigma * floor
    return DistortionRatePerception(torch.where(binds, bound, slack), s_hat, binds)


def rate_distortion_perception(
    variance: Any, distortion: Any, perception: Any, *, bits: bool = False
) -> RateDistortionPerception:
    r"""Least rate of a Gaussian source at a mean squared error and a W2 perception budget.

    The inverse of :func:`distortion_rate_perception` in :math:`R`: with
    :math:`s = \max(0, \sigma - \sqrt P)`,

    .. math::

        R(D, P) =
        \begin{cases}
          0 & D \ge \sigma^2 + s^2,\\
          \tfrac12 \log(\sigma^2 / D) & \sqrt{\max(0, \sigma^2 - D)} \ge s,\\
          -\tfrac12 \log(1 - \rho^2),\ \
          \rho = \dfrac{\sigma^2 + s^2 - D}{2\sigma s} & \text{otherwise}
        \end{cases}

    (the constrained branch sets :math:`\hat\sigma = s` and solves
    :math:`D = \sigma^2 + s^2 - 2\rho\sigma s` for :math:`\rho`). :math:`D = 0` needs an
    infinite rate: ``inf`` is returned there.

    Parameters
    ----------
    variance : float or tensor
        Source variance :math:`\sigma^2 > 0`.
    distortion : float or tensor
        Mean squared error :math:`D \ge 0`, in the units of ``variance``.
    perception : float or tensor
        Budget :math:`P \ge 0` on :math:`W_2^2`, in the units of ``variance``.
    bits : bool, default False
        Return the rate in bits.

    Returns
    -------
    RateDistortionPerception
        ``(rate, reconstruction_std, perception_binds)`` of the broadcast shape.

    Raises
    ------
    InputError
        As :func:`distortion_rate_perception`, for ``distortion`` in place of ``rate``.

    Examples
    --------
    >>> r = rate_distortion_perception(1.0, 2 * (1 - 0.75 ** 0.5), 0.0, bits=True)
    >>> round(float(r.rate), 9)
    1.0
    >>> round(float(rate_distortion_perception(1.0, 0.25, 1.0, bits=True).rate), 9)
    1.0
    """
    func = "rate_distortion_perception"
    check_bool(bits, "bits", func)
    var, d, p = _inputs(func, variance=variance, distortion=distortion, perception=perception)
    sigma = torch.sqrt(var)
    s = torch.clamp(sigma - torch.sqrt(p), min=0)
    slack = torch.sqrt(torch.clamp(var - d, min=0)) >= s
    zero = d >= var + s * s
    safe_s = torch.where(s > 0, s, torch.ones_like(s))  # s carries its gradient where it binds
    rho = torch.clamp((var + s * s - d) / (2 * sigma * safe_s), max=1.0)
    bound = -0.5 * torch.log1p(-rho * rho)
    free = 0.5 * (torch.log(var) - torch.log(d))
    rate = torch.where(zero, torch.zeros_like(d), torch.where(slack, free, bound))
    free_std = torch.sqrt(torch.clamp(var - d, min=0))
    s_hat = torch.where(zero, torch.zeros_like(d), torch.where(slack, free_std, s))
    binds = ~zero & ~slack
    return RateDistortionPerception(from_nats(rate, bits), s_hat, binds)
