r"""Soft notions of rank read from a spectrum: effective rank, stable rank, participation ratio."""

from __future__ import annotations

import torch

from .._errors import InputError
from .._validation import as_float_tensor, check_eigenvalues, check_finite, check_ndim, unit_peak

__all__ = ["effective_rank", "participation_ratio", "stable_rank"]


def _spectrum(values, func: str, name: str = "values") -> torch.Tensor:
    v = check_eigenvalues(as_float_tensor(values, name, func), name, func)
    if bool((v.amax(dim=-1) == 0).any()):
        raise InputError(
            f"The '{name}' argument of {func} holds an all-zero spectrum (shape "
            f"{tuple(v.shape)}); its rank measures are 0/0. Drop zero matrices first."
        )
    # every measure here is scale-free: in units of the largest value, sums and squares of
    # spectra near the largest or smallest float stay finite
    return unit_peak(v)


def effective_rank(values) -> torch.Tensor:
    r"""Effective rank of Roy and Vetterli: the exponential of the spectrum's Shannon entropy.

    .. math::

        \operatorname{erank}(v) = \exp\Big(-\sum_i p_i \log p_i\Big),
        \qquad p_i = \frac{v_i}{\sum_j v_j},\quad 0 \log 0 = 0.

    Roy and Vetterli define it on singular values; pass covariance eigenvalues to measure
    a representation (the analysis report uses singular values for weights and eigenvalues
    for activations, and says so in its column docs).

    Parameters
    ----------
    values : tensor or array_like, shape (..., r)
        Non-negative spectrum along the last axis; leading axes are a batch.

    Returns
    -------
    erank : torch.Tensor, shape (...)
        In [1, r]: r for a flat spectrum, 1 when a single value is nonzero. Invariant to
        scaling and permutation. Zeros are allowed (they contribute nothing).

    Raises
    ------
    InputError
        If ``values`` is empty, non-finite, significantly negative or entirely zero.

    References
    ----------
    O. Roy and M. Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007.

    Examples
    --------
    >>> from infospec import effective_rank
    >>> round(float(effective_rank([1.0, 1.0, 1.0, 1.0])), 6)
    4.0
    >>> round(float(effective_rank([5.0, 0.0, 0.0])), 6)
    1.0
    """
    v = _spectrum(values, "effective_rank")
    p = v / v.sum(dim=-1, keepdim=True)
    plogp = torch.where(
        p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p)
    )
    return torch.exp(-plogp.sum(dim=-1))


def participation_ratio(values) -> torch.Tensor:
    r"""Participation ratio of a covariance spectrum.

    .. math::

        \mathrm{PR}(\lambda) = \frac{\left(\sum_i \lambda_i\right)^2}{\sum_i \lambda_i^2}
        = \frac{(\operatorname{tr}\Sigma)^2}{\operatorname{tr}(\Sigma^2)}

    Parameters
    ----------
    values : tensor or array_like, shape (..., d)
        Covariance eigenvalues (non-negative) along the last axis.

    Returns
    -------
    pr : torch.Tensor, shape (...)
        In [1, d]; d for an isotropic covariance, 1 for rank one. Scale and permutation
        invariant.

    Raises
    ------
    InputError
        If ``values`` is empty, non-finite, significantly negative or entirely zero.

    References
    ----------
    P. Gao, E. Trautmann, B. Yu, et al., "A theory of multineuronal dimensionality,
    dynamics and measurement", bioRxiv 214262, 2017.

    Examples
    --------
    >>> from infospec import participation_ratio
    >>> round(float(participation_ratio([2.0, 2.0, 2.0])), 6)
    3.0
    >>> round(float(participation_ratio([3.0, 1.0])), 6)  # 16 / 10
    1.6
    """
    v = _spectrum(values, "participation_ratio")
    return v.sum(dim=-1) ** 2 / (v * v).sum(dim=-1)


def stable_rank(W=None, *, sigma=None) -> torch.Tensor:
    r"""Stable (numerical) rank :math:`\|W\|_F^2 / \|W\|_2^2`.

    .. math::

        \operatorname{srank}(W) = \frac{\sum_i \sigma_i^2}{\sigma_{\max}^2}

    Parameters
    ----------
    W : tensor or array_like, shape (..., m, n), optional
        A matrix (or a batch). Give exactly one of ``W`` and ``sigma``.
    sigma : tensor or array_like, shape (..., r), optional
        Its singular values, when already computed (one spectrum, many measures).

    Returns
    -------
    srank : torch.Tensor, shape (...)
        In [1, rank(W)]; scale invariant; at most the rank.

    Raises
    ------
    InputError
        If neither or both inputs are given, ``W`` has fewer than 2 dimensions or is
        non-finite, ``sigma`` is invalid, or the matrix is zero.

    References
    ----------
    M. Rudelson and R. Vershynin, "Sampling from large matrices: an approach through
    geometric functional analysis", JACM 54(4), 2007.

    Examples
    --------
    >>> import torch
    >>> from infospec import stable_rank
    >>> round(float(stable_rank(torch.eye(5))), 6)
    5.0
    >>> round(float(stable_rank(sigma=[2.0, 1.0])), 6)  # (4 + 1) / 4
    1.25
    """
    func = "stable_rank"
    if (W is None) == (sigma is None):
        raise InputError(
            f"{func} takes exactly one of 'W' (a matrix) or 'sigma' "
            f"(its singular values); got {'both' if W is not None else 'neither'}."
        )
    if W is not None:
        m = as_float_tensor(W, "W", func)
        check_ndim(m, "W", func, min_ndim=2, expected="at least 2 dimensions (..., m, n)")
        if m.shape[-1] == 0 or m.shape[-2] == 0:
            raise InputError(
                f"The 'W' argument of {func} has an empty side: shape "
                f"{tuple(m.shape)}. Expected a matrix with m, n >= 1."
            )
        check_finite(m, "W", func)
        # divided by the largest |entry| first (the ratio is scale invariant), so that
        # squares of entries beyond ~1e±154 neither overflow nor underflow float64
        top = m.detach().abs().amax(dim=(-2, -1), keepdim=True)
        m = m / torch.where(top > 0, top, torch.ones_like(top))
        fro2 = (m * m).sum(dim=(-2, -1))
        spec2 = torch.linalg.matrix_norm(m, ord=2) ** 2
        if bool((spec2 == 0).any()):
            raise InputError(
                f"The 'W' argument of {func} is a zero matrix (shape "
                f"{tuple(m.shape)}); its stable rank is 0/0."
            )
        return fro2 / spec2
    s = _spectrum(sigma, func, "sigma")
    return (s * s).sum(dim=-1)
