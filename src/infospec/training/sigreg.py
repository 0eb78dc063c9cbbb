r"""SIGReg: the sketched isotropic-Gaussian regulariser of LeJEPA, beside the coding-rate loss.

Embeddings :math:`z_1..z_n \in \mathbb R^d` are pushed toward :math:`\mathcal N(0, I_d)` by
testing their 1-D projections :math:`a^\top z` on random unit directions :math:`a` against
:math:`\mathcal N(0, 1)` (Cramér-Wold: a distribution is Gaussian iff all its projections
are). Each projection is scored by the Epps-Pulley statistic, the weighted distance of its
empirical characteristic function :math:`\hat\varphi(t) = \frac1n\sum_j e^{i t x_j}` to
the Gaussian one :math:`\varphi(t) = e^{-t^2/2}`:

.. math::

    T(x) = n \int_{-t_{\max}}^{t_{\max}} \big|\hat\varphi(t) - \varphi(t)\big|^2\, w(t)\, dt,
    \qquad w(t) = e^{-t^2/2},

by the trapezoid rule on ``n_points`` equispaced nodes of :math:`[0, t_{\max}]` (the
integrand is even). Over the whole line the integral has the closed form

.. math::

    \frac{\sqrt{2\pi}}{n^2}\sum_{j,k} e^{-(x_j - x_k)^2/2}
    - \frac{2\sqrt\pi}{n}\sum_j e^{-x_j^2/4} + \sqrt{\tfrac{2\pi}{3}},

(Epps & Pulley 1983 with unit weight width), which ``tests/training/test_sigreg.py``
checks the quadrature against. It is differentiable in :math:`x`, costs
:math:`O(n\,K\,\text{n\_points})` for :math:`K` directions, and is a mean over the
batch, so the loss of a sharded batch is the loss of its pooled characteristic functions
(the defaults :math:`t_{\max} = 3` and 17 nodes are LeJEPA's).

References
----------
R. Balestriero and Y. LeCun, "LeJEPA: Provable and Scalable Self-Supervised Learning
Without the Heuristics", arXiv:2511.08544, 2025.
T. W. Epps and L. B. Pulley, "A test for normality based on the empirical characteristic
function", Biometrika 70(3), 1983.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from .._checks import shown
from .._errors import InputError
from .._validation import as_float_tensor, check_finite, check_ndim, check_positive
from .losses import _check_samples, _device_of, _full_precision, _loss_dtype, _upcast

__all__ = ["epps_pulley", "sigreg_loss"]

#: Largest ``n_points``: the trapezoid rule on a smooth integrand is exact to round-off far
#: below it, and the statistic holds an (n, K, n_points) tensor (10**7 nodes asked 20 GB).
MAX_N_POINTS = 10_000
#: Largest ``num_slices`` of :func:`sigreg_loss` (LeJEPA uses a few hundred to a thousand).
MAX_NUM_SLICES = 65_536


def _quadrature(t_max: float, n_points: int, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Nodes on [0, t_max], doubled trapezoid weights times w(t), and phi(t) = e^{-t^2/2}."""
    t = torch.linspace(0.0, t_max, n_points, dtype=like.dtype, device=like.device)
    step = t_max / (n_points - 1)
    weights = torch.full_like(t, 2 * step)
    weights[0] = weights[-1] = step  # 2 x the trapezoid's half weights at the ends
    phi = torch.exp(-0.5 * t * t)
    return t, weights * phi, phi


def _check_grid(t_max: Any, n_points: Any, func: str) -> tuple[float, int]:
    t_max = check_positive(t_max, "t_max", func)
    if (
        isinstance(n_points, bool)
        or not isinstance(n_points, numbers.Integral)
        or not 3 <= n_points <= MAX_N_POINTS
    ):
        raise InputError(
            f"The 'n_points' argument of {func} must be an integer in [3, {MAX_N_POINTS}] "
            f"(the default 17 is LeJEPA's); got {shown(n_points)}."
        )
    return float(t_max), int(n_points)


def epps_pulley(x: Any, *, t_max: float = 3.0, n_points: int = 17) -> torch.Tensor:
    r"""Epps-Pulley statistic of samples against :math:`\mathcal N(0, 1)`, per column.

    :math:`T = n \int |\hat\varphi - \varphi|^2 e^{-t^2/2} dt` over
    :math:`[-t_{\max}, t_{\max}]` by the trapezoid rule (module docstring); 0 only for an
    empirical distribution whose characteristic function matches the Gaussian's at every
    node. Not standardised: a sample of :math:`\mathcal N(0, s^2)` with :math:`s \ne 1`
    scores high, as SIGReg intends.

    Parameters
    ----------
    x : tensor, shape (n,) or (n, K)
        Samples in rows (one test per column), finite, n >= 2.
    t_max : float > 0, default 3.0
    n_points : int in [3, MAX_N_POINTS], default 17
        Quadrature nodes (:data:`MAX_N_POINTS` is 10 000).

    Returns
    -------
    torch.Tensor, shape () or (K,)

    Raises
    ------
    InputError
        If ``x`` is not 1-D or 2-D, has fewer than 2 rows or a non-finite value, or a
        quadrature parameter is invalid (``t_max`` not a finite float > 0, ``n_points``
        not an int in [3, :data:`MAX_N_POINTS`]).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> normal = torch.randn(4000, generator=g, dtype=torch.float64)
    >>> bool(epps_pulley(normal) < 0.5), bool(epps_pulley(3 * normal) > 50)
    (True, True)
    """
    func = "epps_pulley"
    t_max, n_points = _check_grid(t_max, n_points, func)
    x = check_finite(as_float_tensor(_upcast(x), "x", func), "x", func)
    check_ndim(x, "x", func, min_ndim=1, max_ndim=2)
    samples = x if x.ndim == 2 else x.unsqueeze(1)
    if samples.shape[0] < 2 or samples.shape[1] < 1:
        raise InputError(f"The 'x' argument of {func} needs at least 2 samples (rows).")
    stat = _statistic(samples, t_max, n_points)
    return stat if x.ndim == 2 else stat[0]


def _statistic(x: torch.Tensor, t_max: float = 3.0, n_points: int = 17) -> torch.Tensor:
    t, weights, phi = _quadrature(t_max, n_points, x)
    xt = x.unsqueeze(-1) * t  # (n, K, T)
    err = (torch.cos(xt).mean(0) - phi) ** 2 + torch.sin(xt).mean(0) ** 2
    return x.shape[0] * (err @ weights)


def sigreg_loss(
    Z: Any,
    *,
    num_slices: int = 256,
    t_max: float = 3.0,
    n_points: int = 17,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""LeJEPA's SIGReg loss: the mean Epps-Pulley statistic of random 1-D projections.

    .. math::

        \mathcal L(Z) = \frac1K\sum_{k=1}^K T(Z a_k), \qquad
        a_k = g_k / \lVert g_k\rVert,\ g_k \sim \mathcal N(0, I_d),

    with :math:`T` of :func:`epps_pulley`. Minimising it drives the embeddings toward
    :math:`\mathcal N(0, I_d)`: zero mean, unit variance along every direction, so a flat
    covariance spectrum (measured on a toy encoder in
    ``tests/training/test_sigreg.py``). Add it, times a weight, to a prediction loss; it
    plays the part the coding-rate loss (:func:`~infospec.training.coding_rate_loss`)
    plays in SimDINO, without a log-determinant.

    Parameters
    ----------
    Z : tensor, shape (n, d)
        Embeddings in rows, finite, n >= 2.
    num_slices : int in [1, MAX_NUM_SLICES], default 256
        Directions :math:`K`, drawn afresh at each call (:data:`MAX_NUM_SLICES` is 65 536).
    t_max, n_points
        The quadrature of :func:`epps_pulley` (LeJEPA's defaults).
    generator : torch.Generator, optional
        Source of the directions (on ``Z``'s device); default torch's global generator.
        Seed it identically on every rank of a data-parallel run so that the ranks use
        the same directions.

    Returns
    -------
    torch.Tensor, shape ()
        float32 for 16- and 32-bit input, float64 for float64 input.

    Raises
    ------
    InputError
        If ``Z`` is not a finite 2-D tensor with 2 rows or more, a parameter is invalid
        (``num_slices`` not an int in [1, :data:`MAX_NUM_SLICES`], a bad quadrature), or
        ``generator`` is not a :class:`torch.Generator` on ``Z``'s device.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> iso = torch.randn(2000, 32, generator=g)
    >>> squashed = iso * torch.logspace(0, -2, 32)          # a collapsing spectrum
    >>> # N(0, I) scores about 1.06 on average (the integral of (1 - phi^2) w), a collapse far more
    >>> bool(sigreg_loss(iso, generator=g) < 2), bool(sigreg_loss(squashed, generator=g) > 50)
    (True, True)
    """
    func = "sigreg_loss"
    t_max, n_points = _check_grid(t_max, n_points, func)
    if (
        isinstance(num_slices, bool)
        or not isinstance(num_slices, numbers.Integral)
        or not 1 <= num_slices <= MAX_NUM_SLICES
    ):
        raise InputError(
            f"The 'num_slices' argument of {func} must be an integer in [1, {MAX_NUM_SLICES}]; "
            f"got {shown(num_slices)}."
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(
            f"The 'generator' argument of {func} must be a torch.Generator or None; got "
            f"{shown(generator)}. Use torch.Generator().manual_seed(seed)."
        )
    out_dtype = _loss_dtype(Z)
    with _full_precision(_device_of(Z)):
        z = _check_samples(_upcast(Z), func, batched=False)
        if z.shape[0] < 2:
            raise InputError(f"The 'Z' argument of {func} needs at least 2 samples (rows).")
        if generator is not None and generator.device.type != z.device.type:
            raise InputError(
                f"The 'generator' argument of {func} is on {generator.device} but 'Z' is on "
                f"{z.device}; create it with torch.Generator(device={str(z.device)!r})."
            )
        with torch.no_grad():
            a = torch.randn(
                z.shape[1], int(num_slices), generator=generator, dtype=z.dtype, device=z.device
            )
            a /= a.norm(dim=0, keepdim=True)
        stat = _statistic(z @ a, t_max, n_points)
    return stat.mean().to(out_dtype)
