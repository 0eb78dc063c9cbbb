"""Information measures of Gaussian spectra and of samples: entropy and coding rate.

Every measure reads either a spectrum (covariance eigenvalues along the last axis) or
samples in rows, and returns nats unless ``bits=True``:

- :func:`gaussian_entropy`: differential entropy of :math:`\\mathcal N(\\mu, \\Sigma)`;
- :func:`coding_rate` and :func:`rate_reduction`: the lossy coding rate of samples and the
  MCR² rate reduction of a labelled set.

The water-filling measures (:func:`~.water_filling.rate_distortion`,
:func:`~.water_filling.distortion_rate`, :func:`~.water_filling.gaussian_capacity`,
:func:`~.water_filling.water_filling_capacity`) live in :mod:`.water_filling` and are
importable from here too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._errors import InputError
from .._units import from_nats
from .._validation import (
    as_float_tensor,
    check_bool,
    check_eigenvalues,
    check_finite,
    check_ndim,
    check_positive,
    describe,
)
from .water_filling import (
    DistortionRate,
    RateDistortion,
    WaterFilling,
    distortion_rate,
    gaussian_capacity,
    rate_distortion,
    water_filling_capacity,
)

__all__ = [
    "DistortionRate",
    "RateDistortion",
    "WaterFilling",
    "coding_rate",
    "distortion_rate",
    "gaussian_capacity",
    "gaussian_entropy",
    "rate_distortion",
    "rate_reduction",
    "water_filling_capacity",
]

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)


def _logdet_cholesky(gram: torch.Tensor, func: str) -> torch.Tensor:
    """:math:`\\log\\det G = 2 \\sum_i \\log L_{ii}` for SPD ``G = L L^T`` (batched)."""
    chol, info = torch.linalg.cholesky_ex(gram)
    logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    if bool((info != 0).any()) or not bool(torch.isfinite(logdet).all()):
        dtype = str(gram.dtype).replace("torch.", "")
        raise InputError(
            f"{func}: I + alpha * Gram of the 'Z' argument (Gram of shape "
            f"{tuple(gram.shape)}) is not positive definite or overflows in {dtype} "
            f"arithmetic: the samples are too large relative to 'eps' for this precision. "
            f"Pass Z in float64, rescale it, or increase 'eps'."
        )
    return logdet


def _softplus(t: torch.Tensor) -> torch.Tensor:
    """:math:`\\log(1 + e^t)`, exact for every finite or infinite ``t`` (no threshold)."""
    return t.clamp_min(0) + torch.log1p(torch.exp(-t.abs()))


def _coding_rate_nats(z: torch.Tensor, eps: float, func: str) -> torch.Tensor:
    """Coding rate in nats of validated samples ``z`` of shape (..., n, d).

    ``Z`` is first divided by its largest absolute entry ``s`` (a constant for autograd),
    so the Gram matrix :math:`G'` of the scaled samples has entries at most
    :math:`\\max(n, d)`, and :math:`R = \\tfrac12 \\log\\det(I + c\\,G')` with
    :math:`c = d s^2 / (n \\epsilon^2)` is carried as :math:`\\log c` (no overflow for
    any ``s`` or ``eps``). Where :math:`x = c \\max_i G'_{ii}` lies in
    :math:`[u^{1/4}, u^{-1/2}]` (``u`` the dtype's machine epsilon: [1.2e-4, 6.7e7] in
    float64), a Cholesky factor gives the log-determinant: relative error about
    :math:`u^{3/4}` at the lower end, and round-off eigenvalues of :math:`G'` (about
    :math:`u \\max G'`) add at most :math:`\\sqrt u` nats each at the upper end. Outside
    it, the eigenvalues :math:`\\mu_i` of :math:`G'` give
    :math:`R = \\tfrac12 \\sum_i \\log(1 + e^{\\log c + \\log \\mu_i})`, exact in relative
    terms for ``R`` down to the smallest float (the Cholesky diagonal
    :math:`\\sqrt{1 + x}` loses the digits of a small ``x``) and finite for samples near
    the largest float; there, eigenvalues at or below the round-off floor
    :math:`\\max(n, d)\\,u\\,\\mu_{\\max}` are taken as 0 (as ``numpy.linalg.matrix_rank``
    does), since multiplied by a huge ``c`` they would add rate that is only noise.
    """
    n, d = z.shape[-2], z.shape[-1]
    scale = z.detach().abs().amax(dim=(-2, -1))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zs = z / scale[..., None, None]
    gram = zs @ zs.mT if n < d else zs.mT @ zs  # the smaller side
    log_c = (math.log(d) - math.log(n) - 2.0 * math.log(eps)) + 2.0 * torch.log(scale)
    finfo = torch.finfo(z.dtype)
    reach = log_c + torch.log(gram.detach().diagonal(dim1=-2, dim2=-1).amax(-1))
    log_u = math.log(finfo.eps)
    if bool(((reach >= 0.25 * log_u) & (reach <= -0.5 * log_u)).all()):
        eye = torch.eye(gram.shape[-1], dtype=z.dtype, device=z.device)
        return 0.5 * _logdet_cholesky(eye + torch.exp(log_c)[..., None, None] * gram, func)
    mu = torch.linalg.eigvalsh(gram)
    floor = max(n, d) * finfo.eps * mu.detach().amax(-1, keepdim=True)
    positive = mu > floor
    log_mu = torch.log(torch.where(positive, mu, torch.ones_like(mu)))
    terms = _softplus(log_c[..., None] + log_mu)
    return 0.5 * torch.where(positive, terms, torch.zeros_like(terms)).sum(-1)


def _check_samples(z: Any, func: str, *, batched: bool) -> torch.Tensor:
    t = as_float_tensor(z, "Z", func)
    if batched:
        check_ndim(t, "Z", func, min_ndim=2, expected="at least 2 dimensions (..., n, d)")
    else:
        check_ndim(t, "Z", func, min_ndim=2, max_ndim=2, expected="exactly 2 dimensions (n, d)")
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise InputError(
            f"The 'Z' argument of {func} must hold at least one sample (row) and one feature "
            f"(column); got {describe(t)}."
        )
    check_finite(t, "Z", func)
    return t


def gaussian_entropy(eigvals: Any, *, bits: bool = False) -> torch.Tensor:
    """Differential entropy of a Gaussian from its covariance eigenvalues.

    .. math::

        h(\\mathcal N(\\mu, \\Sigma)) = \\frac d2 \\log(2\\pi e)
            + \\frac12 \\sum_{i=1}^d \\log \\lambda_i

    The mean plays no part. A zero eigenvalue (a degenerate Gaussian, supported on a
    subspace) gives exactly ``-inf``, without NaN or warning. Differentiable (the gradient
    with respect to :math:`\\lambda_i` is :math:`1/(2\\lambda_i)`).

    Parameters
    ----------
    eigvals : tensor or array-like, shape (..., d)
        Eigenvalues of the covariance :math:`\\Sigma` along the last axis, >= 0 (round-off
        negatives are clipped to 0 with a warning). Leading axes are batch axes.
    bits : bool, default False
        Return bits instead of nats.

    Returns
    -------
    torch.Tensor, shape ``eigvals.shape[:-1]``
        The entropy in nats (bits with ``bits=True``); ``-inf`` where an eigenvalue is 0.

    Raises
    ------
    InputError
        If ``eigvals`` is empty, not finite, or has negative values beyond round-off.

    References
    ----------
    T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., Wiley, 2006,
    Theorem 8.4.1.

    Examples
    --------
    >>> import math, torch
    >>> h = gaussian_entropy(torch.tensor([2.0, 2.0, 2.0]))
    >>> round(float(h), 6) == round(1.5 * math.log(2 * math.pi * math.e * 2.0), 6)
    True
    >>> round(float(gaussian_entropy([1.0, 1.0], bits=True)), 4)   # log2(2 pi e)
    4.0942
    >>> float(gaussian_entropy([1.0, 0.0]))
    -inf
    """
    func = "gaussian_entropy"
    check_bool(bits, "bits", func)
    eig = check_eigenvalues(as_float_tensor(eigvals, "eigvals", func), "eigvals", func)
    d = eig.shape[-1]
    h = 0.5 * d * _LOG_2PI_E + 0.5 * torch.log(eig).sum(-1)
    return from_nats(h, bits)


def coding_rate(Z: Any, *, eps: float, bits: bool = False) -> torch.Tensor:
    """Lossy coding rate of samples (Ma et al., 2007), as used by MCR², CRATE and SimDINO.

    .. math::

        R(Z, \\epsilon) = \\frac12 \\log\\det\\Big(I_d + \\frac{d}{n\\epsilon^2} Z^\\top Z\\Big)
                      = \\frac12 \\log\\det\\Big(I_n + \\frac{d}{n\\epsilon^2} Z Z^\\top\\Big)

    for ``n`` samples in the rows of ``Z`` (``n x d``): the number of nats needed to code the
    samples up to a mean squared error :math:`\\epsilon^2` per sample, for a Gaussian model.
    The two forms are equal by Sylvester's determinant identity; the smaller Gram matrix is
    used (``n x n`` when ``n < d``). The log-determinant is :math:`2 \\sum_i \\log L_{ii}` from
    the Cholesky factor :math:`L`, which is differentiable (a training loss); where
    :math:`R \\ll 1` or the samples are near the float range's ends, it is
    :math:`\\sum_i \\log(1 + c\\,\\mu_i)` over the Gram eigenvalues instead, computed in
    the log domain after dividing ``Z`` by its largest entry, so a rate of 1e-17 nats or
    samples of 1e155 give the right finite value (round-off eigenvalues below
    :math:`\\max(n, d)\\,u\\,\\mu_{\\max}` count as 0 there). The samples are not centred.

    **Which eps.** ``eps`` here is :math:`\\epsilon`, the root mean squared error, as in the
    papers' formula. The reference MCR² code (``scalar = p / (m * eps)``, then
    ``logdet / 2``) puts its ``eps`` where the formula has :math:`\\epsilon^2`: its
    ``eps=e`` is ``coding_rate(Z, eps=math.sqrt(e))`` here. Code that writes
    ``d / (n * eps ** 2)`` (as CRATE's does) uses :math:`\\epsilon` as here; check which
    form the code you compare with uses, and whether it halves the log-determinant.

    Parameters
    ----------
    Z : tensor or array-like, shape (..., n, d)
        Samples in rows, features in columns; leading axes are batch axes. Finite.
    eps : float > 0
        The distortion :math:`\\epsilon` (root mean squared error per sample).
    bits : bool, default False
        Return bits instead of nats.

    Returns
    -------
    torch.Tensor, shape ``Z.shape[:-2]``
        The coding rate in nats (bits with ``bits=True``), >= 0.

    Raises
    ------
    InputError
        If ``Z`` has fewer than 2 dimensions, an empty axis or non-finite values, if ``eps``
        is not a float > 0.

    References
    ----------
    Y. Ma, H. Derksen, W. Hong and J. Wright, "Segmentation of multivariate mixed data via
    lossy data coding and compression", IEEE TPAMI 29(9), 2007.
    Y. Yu, K. H. R. Chan, C. You, C. Song and Y. Ma, "Learning diverse and discriminative
    representations via the principle of maximal coding rate reduction", NeurIPS 2020.
    Y. Yu et al., "White-box transformers via sparse rate reduction" (CRATE), NeurIPS 2023.
    Z. Wu et al., "Simplifying DINO via coding rate regularization" (SimDINO), 2025.

    Examples
    --------
    >>> import torch
    >>> Z = torch.eye(4)[:2]          # 2 orthonormal samples in 4 dimensions
    >>> r = coding_rate(Z, eps=1.0)   # 1/2 logdet(I_2 + 2 I_2) = log 3
    >>> round(float(r), 6)
    1.098612
    >>> round(float(coding_rate(Z.T, eps=1.0)), 6)   # 4 samples in 2-D: log 1.5
    0.405465
    """
    func = "coding_rate"
    check_bool(bits, "bits", func)
    eps = check_positive(eps, "eps", func)
    z = _check_samples(Z, func, batched=True)
    return from_nats(_coding_rate_nats(z, eps, func), bits)


def rate_reduction(Z: Any, labels: Any, *, eps: float, bits: bool = False) -> torch.Tensor:
    """MCR² rate reduction of labelled samples (Yu et al., 2020).

    .. math::

        \\Delta R = R(Z, \\epsilon) - \\sum_{j} \\frac{n_j}{2n}
            \\log\\det\\Big(I + \\frac{d}{n_j \\epsilon^2} Z_j^\\top Z_j\\Big)

    where :math:`Z_j` holds the :math:`n_j` rows of class ``j`` and :math:`R` is
    :func:`coding_rate`: the rate of the whole set minus the sample-weighted rates of the
    classes. It is large when the classes span independent subspaces and 0 for a single
    class. Differentiable in ``Z``.

    Parameters
    ----------
    Z : tensor or array-like, shape (n, d)
        Samples in rows; finite. No batch axes.
    labels : tensor or array-like of integers, shape (n,)
        Class of each row. Any integer values; only classes present count.
    eps : float > 0
        The distortion :math:`\\epsilon`.
    bits : bool, default False
        Return bits instead of nats.

    Returns
    -------
    torch.Tensor, shape ()
        :math:`\\Delta R` in nats (bits with ``bits=True``).

    Raises
    ------
    InputError
        If ``Z`` is not 2-D, empty or not finite; if ``labels`` is not a 1-D integer array of
        length ``n``; if ``eps`` is not a float > 0.

    References
    ----------
    Y. Yu, K. H. R. Chan, C. You, C. Song and Y. Ma, "Learning diverse and discriminative
    representations via the principle of maximal coding rate reduction", NeurIPS 2020.

    Examples
    --------
    >>> import torch
    >>> Z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    >>> round(float(rate_reduction(Z, torch.tensor([0, 0, 1, 1]), eps=1.0)), 4)
    0.4748
    >>> float(rate_reduction(Z, torch.zeros(4, dtype=torch.long), eps=1.0))
    0.0
    """
    func = "rate_reduction"
    check_bool(bits, "bits", func)
    eps = check_positive(eps, "eps", func)
    z = _check_samples(Z, func, batched=False)
    if isinstance(labels, torch.Tensor):
        lab = labels
    else:
        arr = np.asarray(labels)
        if arr.dtype.kind not in "biuf":
            raise InputError(
                f"The 'labels' argument of {func} must be a 1-D array of integer class "
                f"indices; got {type(labels).__name__} (dtype {arr.dtype})."
            )
        lab = torch.as_tensor(arr)
    if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        raise InputError(
            f"The 'labels' argument of {func} must hold integers (class indices); got "
            f"{describe(lab)}. Convert it, e.g. labels.long()."
        )
    n = z.shape[0]
    if lab.ndim != 1 or lab.shape[0] != n:
        raise InputError(
            f"The 'labels' argument of {func} must be 1-D with one label per row of Z "
            f"(length {n}); got {describe(lab)}."
        )
    lab = lab.to(z.device)
    total = _coding_rate_nats(z, eps, func)
    within = torch.zeros((), dtype=z.dtype, device=z.device)
    for c in torch.unique(lab):
        zj = z[lab == c]
        within = within + (zj.shape[0] / n) * _coding_rate_nats(zj, eps, func)
    return from_nats(total - within, bits)
