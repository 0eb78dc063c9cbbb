r"""Representation-quality measures of self-supervised learning: RankMe, LiDAR, α-ReQ, NESum.

Each is a function of a spectrum of the embeddings :math:`Z` (``n`` samples in rows, ``d``
features); the spectrum differs, and the peers differ in which they take, so every choice
is a keyword argument here and named in the docstring:

* **RankMe** (Garrido et al. 2023): the exponential of the entropy of
  :math:`p_k = \sigma_k / \lVert\sigma\rVert_1 + \varepsilon` over the **singular values**
  of :math:`Z`. The paper takes :math:`Z` as it is (uncentred) with
  :math:`\varepsilon = 10^{-7}`; stable-pretraining 0.1.8's ``RankMe`` callback does the same
  with :math:`\varepsilon = 10^{-5}`; reptrix 0.1.0's ``get_rankme`` takes instead the
  **covariance eigenvalues** of the centred features (:math:`\lambda_k \propto \sigma_k^2`
  of the centred :math:`Z`, through scikit-learn's PCA) with :math:`\varepsilon = 10^{-7}`,
  which is a different number (squaring sharpens the distribution). ``center=`` and
  ``values="singular" | "eigen"`` select among them.
* :func:`entropy_rank` is that entropy rank of any non-negative spectrum;
  :func:`~infospec.measures.effective_rank` (Roy & Vetterli) is the same with
  :math:`\varepsilon = 0`.
* **NESum** (He & Ozay 2022): :math:`\sum_k \lambda_k / \lambda_1` over the covariance
  eigenvalues.
* **α-ReQ** (Agrawal et al. 2022): the decay exponent :math:`\alpha` of the eigenvalues,
  :math:`\lambda_k \propto k^{-\alpha}`, by weighted least squares of
  :math:`\log\lambda_k` on :math:`-\log k` over a range of ranks, weights :math:`1/k`
  (the fit of reptrix, after Stringer et al. 2019).
* **LiDAR** (Thilak et al. 2024): the entropy rank of the eigenvalues of the linear
  discriminant matrix :math:`\Sigma_w^{-1/2}\Sigma_b\Sigma_w^{-1/2}` over surrogate classes
  (the augmented views of one input form a class).

References
----------
Q. Garrido, R. Balestriero, L. Najman and Y. LeCun, "RankMe: Assessing the Downstream
Performance of Pretrained Self-Supervised Representations by Their Rank", ICML 2023.
V. Thilak et al., "LiDAR: Sensing Linear Probing Performance in Joint Embedding SSL
Architectures", ICLR 2024.
K. K. Agrawal, A. K. Mondal, A. Ghosh and B. A. Richards, "α-ReQ: Assessing
Representation Quality in Self-Supervised Learning by Measuring Eigenspectrum Decay",
NeurIPS 2022.
B. He and M. Ozay, "Exploring the Gap between Collapsed and Whitened Features in
Self-Supervised Learning", ICML 2022.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np
import torch

from .._checks import shown
from .._errors import InputError
from .._validation import (
    as_float_tensor,
    binary_scale,
    check_bool,
    check_eigenvalues,
    check_finite,
    check_ndim,
    describe,
    unit_peak,
)

__all__ = [
    "ALPHA_REQ_FIT_RANGE",
    "AlphaReq",
    "alpha_req",
    "eigen_decay",
    "entropy_rank",
    "lidar",
    "nesum",
    "rankme",
]


#: alpha-ReQ's fitted indices of the descending eigenvalues (reptrix's ``np.arange(10, 100)``).
ALPHA_REQ_FIT_RANGE = (10, 100)


class AlphaReq(NamedTuple):
    """Result of :func:`alpha_req` and :func:`eigen_decay`.

    Attributes
    ----------
    alpha : torch.Tensor, 0-d
        The decay exponent: :math:`\\lambda_k \\approx e^{b}\\, k^{-\\alpha}`.
    intercept : torch.Tensor, 0-d
        :math:`b`, the fitted :math:`\\log\\lambda` at rank 1 (natural log).
    r2 : torch.Tensor, 0-d
        Coefficient of determination of the fit in :math:`\\log\\lambda` over the fitted
        ranks (unweighted, as scikit-learn's ``r2_score``).
    num_fitted : int
        The number of eigenvalues the fit used.
    """

    alpha: torch.Tensor
    intercept: torch.Tensor
    r2: torch.Tensor
    num_fitted: int


def _eps(value: Any, func: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value >= 0
        or value == float("inf")
    ):
        raise InputError(
            f"The 'eps' argument of {func} must be a finite number >= 0; got {shown(value)}."
        )
    return float(value)


def _spectrum(values: Any, name: str, func: str) -> torch.Tensor:
    v = check_eigenvalues(as_float_tensor(values, name, func), name, func)
    if v.ndim != 1 or v.numel() == 0:
        raise InputError(
            f"The '{name}' argument of {func} must be a non-empty 1-D spectrum; got {describe(v)}."
        )
    if not bool((v > 0).any()):
        raise InputError(
            f"The '{name}' argument of {func} is all zeros: the measure is undefined for a "
            f"collapsed (constant) representation."
        )
    return v


def entropy_rank(values: Any, *, eps: float = 0.0) -> torch.Tensor:
    r"""Exponential of the entropy of a spectrum smoothed by ``eps``: RankMe's formula.

    .. math::

        \operatorname{rank}_\varepsilon(v) = \exp\Big(-\sum_k p_k \log p_k\Big),
        \qquad p_k = \frac{v_k}{\sum_j v_j} + \varepsilon .

    With :math:`\varepsilon = 0` it is :func:`~infospec.measures.effective_rank` (in
    :math:`[1, d]`); :math:`\varepsilon > 0` (the peers' "numerical stability" constant)
    adds about :math:`-d\,\varepsilon\log\varepsilon` to the entropy, which matters when
    :math:`d\varepsilon` is not small. Scale-invariant in ``values``.

    Parameters
    ----------
    values : tensor or array-like, shape (d,)
        Non-negative spectrum (singular values or eigenvalues), not all zero.
    eps : float >= 0, default 0

    Returns
    -------
    torch.Tensor, 0-d

    Raises
    ------
    InputError
        If ``values`` is empty, not 1-D, negative, not finite or all zero, or ``eps`` is
        negative.

    Examples
    --------
    >>> round(float(entropy_rank([1.0, 1.0, 1.0, 1.0])), 12)
    4.0
    >>> round(float(entropy_rank([1.0, 1.0, 0.0, 0.0], eps=1e-7)), 6)
    2.000006
    """
    func = "entropy_rank"
    e = _eps(eps, func)
    v = _spectrum(values, "values", func)
    v = unit_peak(v)  # scale-free; keeps the sum finite near the float maximum
    p = v / v.sum() + e
    terms = torch.where(p > 0, p * torch.log(p), torch.zeros_like(p))
    return torch.exp(-terms.sum())


def nesum(eigvals: Any) -> torch.Tensor:
    r"""Normalised eigenvalue sum :math:`\sum_k \lambda_k / \lambda_{\max}` (He & Ozay 2022).

    In :math:`[1, d]`: 1 for a representation along one direction, :math:`d` for an
    isotropic one. Scale-invariant.

    Parameters
    ----------
    eigvals : tensor or array-like, shape (d,)
        Covariance eigenvalues, non-negative, not all zero.

    Returns
    -------
    torch.Tensor, 0-d

    Raises
    ------
    InputError
        If ``eigvals`` is empty, not 1-D, negative, not finite or all zero.

    Examples
    --------
    >>> float(nesum([4.0, 2.0, 2.0]))
    2.0
    """
    lam = _spectrum(eigvals, "eigvals", "nesum")
    return (lam / lam.max()).sum()


def _samples(Z: Any, func: str, *, min_rows: int = 2) -> torch.Tensor:
    z = check_finite(as_float_tensor(Z, "Z", func), "Z", func)
    check_ndim(z, "Z", func, min_ndim=2, max_ndim=2, expected="shape (n, d)")
    if z.shape[0] < min_rows or z.shape[1] < 1:
        raise InputError(
            f"The 'Z' argument of {func} needs at least {min_rows} samples (rows) and one "
            f"feature; got shape {tuple(z.shape)}."
        )
    return z


def _squared_singular_values(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`\sigma(Z/c)^2` by the float64 Gram matrix of the smaller side, and :math:`c`.

    ``Z`` is divided by :math:`c`, the power of two at its largest absolute entry
    (detached; 1 for a zero matrix) first, so that the Gram matrix neither overflows
    (entries beyond ~1e154) nor underflows (below ~1e-154);
    :math:`\sigma(Z)^2 = c^2\,\sigma(Z/c)^2`. Each value carries an absolute error of
    about :math:`d\,\epsilon\,\sigma_{\max}^2`; the entropy ranks here weigh a value by its
    share of the total, so that error moves them by about :math:`10^{-13}` relative, at a
    fraction of an SVD's cost for :math:`n \gg d`.
    """
    z = z.to(torch.float64)
    scale = binary_scale(z)
    z = z / scale
    gram = z.mT @ z if z.shape[0] >= z.shape[1] else z @ z.mT
    return torch.linalg.eigvalsh(gram).clamp_min(0), scale


def rankme(
    Z: Any, *, eps: float = 1e-7, center: bool = False, values: str = "singular"
) -> torch.Tensor:
    r"""RankMe of embeddings (Garrido et al. 2023): the smoothed entropy rank of their spectrum.

    .. math::

        \operatorname{RankMe}(Z) = \exp\Big(-\sum_k p_k\log p_k\Big), \qquad
        p_k = \frac{s_k}{\lVert s\rVert_1} + \varepsilon ,

    with :math:`s = \sigma(Z)` (``values="singular"``, the paper) or :math:`s = \sigma(Z)^2`,
    proportional to the covariance eigenvalues when ``center=True`` (``values="eigen"``).
    The peers, reproduced with these options (``tests/measures/test_representation.py``):

    ==========================================  =========================================
    stable-pretraining 0.1.8 ``RankMe``          ``rankme(Z, eps=1e-5)``
    reptrix 0.1.0 ``get_rankme``                 ``rankme(Z, center=True, values="eigen")``
    the paper                                    ``rankme(Z)`` (the default)
    ==========================================  =========================================

    Parameters
    ----------
    Z : tensor or array-like, shape (n, d)
        Embeddings, one sample per row, n >= 2.
    eps : float >= 0, default 1e-7
    center : bool, default False
        Subtract the mean embedding first.
    values : {"singular", "eigen"}, default "singular"

    Returns
    -------
    torch.Tensor, 0-d
        In :math:`[1, \min(n, d)]` up to the ``eps`` term.

    Raises
    ------
    InputError
        If ``Z`` is not a finite 2-D array with at least 2 rows, is constant (all zero
        after centring), or an option is invalid.

    Examples
    --------
    >>> import torch
    >>> Z = torch.eye(4, dtype=torch.float64).repeat(5, 1)   # 4 orthogonal directions
    >>> round(float(rankme(Z, eps=0.0)), 12)
    4.0
    """
    func = "rankme"
    check_bool(center, "center", func)
    if values not in ("singular", "eigen"):
        raise InputError(
            f"The 'values' argument of {func} must be 'singular' or 'eigen'; got {shown(values)}."
        )
    z = _samples(Z, func)
    if center:
        z = z - z.mean(dim=0, keepdim=True)
    sq, _ = _squared_singular_values(z)  # in units of ~max |Z|: RankMe is scale-free
    if not bool((sq > 0).any()):
        raise InputError(f"The 'Z' argument of {func} is constant: RankMe is undefined.")
    return entropy_rank(torch.sqrt(sq) if values == "singular" else sq, eps=eps)


def _fit_range(fit_range: Any, func: str) -> tuple[int, int]:
    ok = (
        isinstance(fit_range, (tuple, list))
        and len(fit_range) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in fit_range)
        and 0 <= fit_range[0] < fit_range[1] - 1
    )
    if not ok:
        raise InputError(
            f"The 'fit_range' argument of {func} must be a pair (start, stop) of integers "
            f"with 0 <= start and stop - start >= 2 (0-based indices of the eigenvalues "
            f"sorted in descending order, stop excluded); got {shown(fit_range)}."
        )
    return int(fit_range[0]), int(fit_range[1])


def eigen_decay(eigvals: Any, *, fit_range: tuple[int, int] = ALPHA_REQ_FIT_RANGE) -> AlphaReq:
    r"""α-ReQ's power-law decay exponent of a spectrum, by weighted least squares.

    With the eigenvalues sorted in descending order and ranks :math:`k = i + 1` for the
    0-based indices :math:`i \in [\text{start}, \text{stop})` (``fit_range``, reptrix's
    default ``np.arange(10, 100)``), minimise

    .. math::

        \sum_k \frac1k\big(\log\lambda_k - b + \alpha\log k\big)^2

    over :math:`(\alpha, b)` (closed-form normal equations). The range is cut at the
    spectrum's last positive eigenvalue; at least 2 must remain. ``r2`` is the unweighted
    :math:`R^2` of :math:`\log\lambda` over the fitted ranks. reptrix 0.1.0 reports its
    :math:`R^2` over ranks 11-500 (or up to :math:`d - 10`), beyond the fitted range.

    Parameters
    ----------
    eigvals : tensor or array-like, shape (d,)
        Covariance eigenvalues, non-negative (any order); scale changes only ``intercept``.
    fit_range : (int, int), default (10, 100)

    Returns
    -------
    AlphaReq
        ``(alpha, intercept, r2, num_fitted)``.

    Raises
    ------
    InputError
        If ``eigvals`` is not a valid spectrum, ``fit_range`` is malformed, or fewer than 2
        positive eigenvalues fall in it.

    Examples
    --------
    >>> import torch
    >>> lam = torch.arange(1, 201, dtype=torch.float64) ** -1.5
    >>> fit = eigen_decay(lam)
    >>> round(float(fit.alpha), 12), fit.num_fitted, round(float(fit.r2), 12)
    (1.5, 90, 1.0)
    """
    func = "eigen_decay"
    start, stop = _fit_range(fit_range, func)
    lam = torch.sort(_spectrum(eigvals, "eigvals", func).to(torch.float64), descending=True).values
    stop = min(stop, int((lam > 0).sum()))
    if stop - start < 2:
        raise InputError(
            f"The 'eigvals' argument of {func} has {int((lam > 0).sum())} positive "
            f"eigenvalues; the fit over indices [{fit_range[0]}, {fit_range[1]}) needs at "
            f"least 2 of them: pass a smaller fit_range or a wider representation."
        )
    k = torch.arange(start + 1, stop + 1, dtype=torch.float64)
    y = torch.log(lam[start:stop])
    x = torch.stack([-torch.log(k), torch.ones_like(k)], dim=1)
    w = (1.0 / k).unsqueeze(1)
    alpha, intercept = torch.linalg.solve(x.mT @ (w * x), (w * x).mT @ y)
    pred = x @ torch.stack([alpha, intercept])
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1 - ((y - pred) ** 2).sum() / total if total > 0 else torch.tensor(1.0)
    return AlphaReq(alpha, intercept, r2.to(torch.float64), stop - start)


def alpha_req(Z: Any, *, fit_range: tuple[int, int] = ALPHA_REQ_FIT_RANGE) -> AlphaReq:
    r"""α-ReQ of embeddings (Agrawal et al. 2022): :func:`eigen_decay` of their covariance.

    The eigenvalues of the centred sample covariance of ``Z`` (the squared singular values
    of the centred embeddings by their float64 Gram matrix, scaled; the scale only moves
    ``intercept``), fitted as
    :func:`eigen_decay` does. reptrix 0.1.0's ``get_alpha`` gives the same ``alpha``
    (tested).

    Parameters
    ----------
    Z : tensor or array-like, shape (n, d)
        Embeddings, one sample per row.
    fit_range : (int, int), default (10, 100)

    Returns
    -------
    AlphaReq

    Raises
    ------
    InputError
        As :func:`eigen_decay`, and if ``Z`` is not a finite 2-D array with 2 rows or more.
    """
    z = _samples(Z, "alpha_req").to(torch.float64)
    sq, scale = _squared_singular_values(z - z.mean(dim=0, keepdim=True))
    fit = eigen_decay(sq / (z.shape[0] - 1), fit_range=fit_range)
    # the eigenvalues are c^2 times those fitted: only the intercept moves, by 2 log c
    return fit._replace(intercept=fit.intercept + 2 * torch.log(scale))


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _labels(groups: Any, func: str, n: int) -> torch.Tensor:
    """Class labels as a tensor: integers as given, strings coded by their sorted order."""
    if isinstance(groups, torch.Tensor):
        return groups
    try:
        arr = np.asarray(groups)
        if arr.ndim != 1:
            raise ValueError
        if arr.dtype.kind in "USO":  # names of classes: code them 0..C-1
            arr = np.unique(arr, return_inverse=True)[1].reshape(arr.shape)
        return torch.as_tensor(arr)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(
            f"The 'groups' argument of {func} must be one label (an integer or a string) per "
            f"row of Z ({n} rows); got {type(groups).__name__} {_short(groups)}."
        ) from None


def lidar(Z: Any, groups: Any, *, delta: float = 1e-4, eps: float = 1e-8) -> torch.Tensor:
    r"""LiDAR (Thilak et al. 2024): the entropy rank of the linear discriminant spectrum.

    With surrogate classes :math:`c = 1..C` (the augmented views of one input), class means
    :math:`\mu_c`, their mean :math:`\mu`, and :math:`n_c` views of class :math:`c`:

    .. math::

        \Sigma_b = \frac{1}{C-1}\sum_c(\mu_c-\mu)(\mu_c-\mu)^\top, \qquad
        \Sigma_w = \frac{1}{\sum_c (n_c - 1)}\sum_c\sum_{i\in c}(z_i-\mu_c)(z_i-\mu_c)^\top
                   + \delta I,

    and LiDAR is :func:`entropy_rank` (with ``eps``) of the eigenvalues of
    :math:`\Sigma_w^{-1/2}\Sigma_b\Sigma_w^{-1/2}` (float64, by ``eigh``). The defaults
    :math:`\delta = 10^{-4}`, :math:`\varepsilon = 10^{-8}` are stable-pretraining 0.1.8's;
    it adds :math:`\varepsilon` to the eigenvalues before normalising, a difference of
    order :math:`d\varepsilon/\sum\lambda`. reptrix 0.1.0 feeds the LiDAR matrix to a PCA as
    if its rows were samples, which takes the squared singular values of the *centred*
    matrix, not its eigenvalues; that is not done here.

    Parameters
    ----------
    Z : tensor or array-like, shape (n, d)
        Embeddings, one view per row.
    groups : tensor or array-like of int or str, shape (n,)
        The surrogate class of each row (any integer labels, or class names); at least 2
        classes, and at least 2 views in some class.
    delta : float > 0, default 1e-4
        Ridge of the within-class covariance, in the units of ``Z`` squared.
    eps : float >= 0, default 1e-8

    Returns
    -------
    torch.Tensor, 0-d

    Raises
    ------
    InputError
        If ``groups`` does not hold one integer label per row of ``Z``, there are fewer than
        2 classes or no class with 2 views, or ``delta`` is not positive.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> centres = 10 * torch.randn(50, 8, generator=g, dtype=torch.float64)
    >>> Z = centres.repeat_interleave(4, 0) + torch.randn(200, 8, generator=g, dtype=torch.float64)
    >>> groups = torch.arange(50).repeat_interleave(4)
    >>> bool(6.5 < float(lidar(Z, groups)) <= 8.0)
    True
    """
    func = "lidar"
    z = _samples(Z, func).to(torch.float64)
    e = _eps(eps, func)
    if (
        isinstance(delta, bool)
        or not isinstance(delta, numbers.Real)
        or not 0 < delta < float("inf")
    ):
        raise InputError(
            f"The 'delta' argument of {func} must be a finite number > 0; got {shown(delta)}."
        )
    g = _labels(groups, func, z.shape[0])
    if (
        g.ndim != 1
        or g.shape[0] != z.shape[0]
        or g.is_floating_point()
        or g.is_complex()
        or g.device.type == "meta"
    ):
        raise InputError(
            f"The 'groups' argument of {func} must be one integer label per row of Z "
            f"({z.shape[0]} rows); got {describe(g)}."
        )
    labels, inverse, counts = torch.unique(g, return_inverse=True, return_counts=True)
    if labels.numel() < 2 or int((counts - 1).sum()) < 1:
        raise InputError(
            f"The 'groups' argument of {func} must name at least 2 classes and give some "
            f"class 2 or more views; got {labels.numel()} classes with at most "
            f"{int(counts.max())} views."
        )
    d = z.shape[1]
    # in units of c, a power of two near max |Z| (detached): the covariances stay finite
    # at any scale, and the ridge delta becomes delta / c^2, carried as its log (it may
    # leave float64)
    scale = binary_scale(z)
    z = z / scale
    log_ridge = math.log(float(delta)) - 2 * math.log(float(scale))
    sums = torch.zeros(labels.numel(), d, dtype=torch.float64).index_add_(0, inverse, z)
    means = sums / counts.unsqueeze(1).to(torch.float64)
    centred_means = means - means.mean(dim=0, keepdim=True)
    sigma_b = centred_means.mT @ centred_means / (labels.numel() - 1)
    within = z - means[inverse]
    sigma_w = within.mT @ within / int((counts - 1).sum())
    # LiDAR's spectrum is taken up to scale (entropy_rank), so Sigma_w + delta I may be
    # divided by t = max(largest within-class variance, delta): both terms stay <= 1, and
    # the ridge is held at 1e-300 of t at least (a ridge below float64's range)
    log_w = math.log(float(sigma_w.detach().diagonal().amax().clamp_min(1e-300)))
    log_t = max(log_w, log_ridge)
    ridge = math.exp(max(log_ridge - log_t, -690.0))
    sigma_w = sigma_w * math.exp(-log_t) + ridge * torch.eye(d, dtype=torch.float64)
    w_eig, w_vec = torch.linalg.eigh(sigma_w)
    inv_sqrt = (w_vec / torch.sqrt(w_eig)) @ w_vec.mT
    lam = torch.linalg.eigvalsh(inv_sqrt @ sigma_b @ inv_sqrt).clamp_min(0)
    return entropy_rank(lam, eps=e)
