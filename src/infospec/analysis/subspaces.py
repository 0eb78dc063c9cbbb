r"""Top singular subspaces of a matrix and the principal angles between two subspaces.

:func:`top_singular_subspaces` gives the top-:math:`k` left and right singular vectors of
a matrix (from the Gram matrix on its smaller side: a full symmetric eigendecomposition up
to :data:`_EIGH_MAX`, Lanczos iteration beyond), and :func:`principal_cosines` the cosines
of the principal angles between two orthonormal bases, the singular values of
:math:`Q_1^\top Q_2` (Björck & Golub 1973). :func:`infospec.compare` reads a fine-tuning's
subspace overlap from them.

References
----------
Å. Björck and G. H. Golub, "Numerical methods for computing angles between linear
subspaces", *Mathematics of Computation* 27 (1973) 579-594.
"""

from __future__ import annotations

import torch

from .._errors import InputError
from ..spectra.gram import project
from ..spectra.matrices import spectrum_and_gram
from .analyze import nonfinite_error

__all__ = ["principal_cosines", "top_singular_subspaces"]


def principal_cosines(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    r"""Cosines of the principal angles between the column spans of two orthonormal bases.

    :math:`\cos\theta_i = \sigma_i(Q_1^\top Q_2)` (Björck & Golub 1973), descending, in
    :math:`[0, 1]`; batched over leading axes.

    Parameters
    ----------
    q1, q2 : torch.Tensor, shape (..., m, k)
        Orthonormal columns (``Q^T Q = I``).

    Returns
    -------
    torch.Tensor, shape (..., k)
        ``cos(theta)``, clamped to ``[0, 1]`` against round-off.

    Examples
    --------
    >>> import torch
    >>> e = torch.eye(3, dtype=torch.float64)
    >>> principal_cosines(e[:, :2], e[:, 1:]).tolist()
    [1.0, 0.0]
    """
    return torch.linalg.svdvals(q1.mT @ q2).clamp(0.0, 1.0)


#: Gram matrices up to this side take a full symmetric eigendecomposition for the top-k
#: vectors; larger ones Lanczos iteration (ARPACK) for the k wanted vectors alone: on 2
#: cores a 4096-wide ``eigh`` with vectors takes 72 s, ``eigvalsh`` 15 s.
_EIGH_MAX = 512


def _top_eigenvectors(gram: torch.Tensor, k: int) -> torch.Tensor:
    """Orthonormal eigenvectors of the ``k`` largest eigenvalues of each symmetric matrix."""
    n = gram.shape[-1]
    if n <= _EIGH_MAX or k >= n - 1:
        return torch.linalg.eigh(gram)[1].flip(-1)[..., :k]
    import numpy as np
    from scipy.sparse.linalg import eigsh

    flat = gram.reshape(-1, n, n)
    out = []
    for g in flat:
        a = g.detach().cpu().numpy()
        # tol=0: ARPACK's machine-precision stopping rule; a fixed start vector, so that
        # results do not depend on NumPy's global random state
        _, vec = eigsh(a, k=k, which="LA", tol=0, v0=np.ones(n) / np.sqrt(n))
        out.append(torch.from_numpy(vec[:, ::-1].copy()))
    return torch.stack(out).reshape(*gram.shape[:-2], n, k).to(gram.device)


def top_singular_subspaces(
    matrix: torch.Tensor,
    k: int,
    *,
    method: str = "auto",
    device=None,
    return_method: bool = False,
) -> tuple[torch.Tensor, ...]:
    r"""The singular values and orthonormal bases of the top-``k`` singular subspaces.

    The smaller Gram matrix (:math:`G = W^\top W` when ``cols <= rows``) is formed once
    in float64 and serves both:

    * the spectrum takes :func:`infospec.singular_values`' routes for a single matrix
      (:math:`\sigma = \sqrt{\lambda(G)}`; ``gram+refine`` when
      :math:`\lambda_{\min}/\lambda_{\max} < 10^{-10}`, an SVD for ``method="svd"`` or a
      nearly rank-deficient matrix); a batch (a convolution's kernel positions) takes one
      batched ``eigvalsh``, or an SVD of the batch when one of its matrices is that
      ill-conditioned;
    * the top-``k`` eigenvectors of :math:`G` (the right singular vectors :math:`V_k`) come
      from a full eigendecomposition for sides up to 512 and from Lanczos iteration
      (ARPACK's ``eigsh`` to machine precision) above, which costs :math:`O(k)` products
      with :math:`G` instead of a second :math:`O(n^3)` factorisation. The other side's
      basis is the Q factor of :math:`W V_k` (formed blockwise from ``W``'s stored dtype),
      which spans the top-``k`` left singular subspace.

    Parameters
    ----------
    matrix : torch.Tensor, shape (..., rows, cols)
        Any floating dtype (computed in float64).
    k : int >= 1
        Subspace dimension (capped at ``min(rows, cols)``).
    method : {"auto", "gram", "svd"}
        Route of the singular values.
    device : optional
        Where to compute.
    return_method : bool, default False
        Also return the route of the singular values (one of
        :data:`~infospec.spectra.matrices.SPECTRUM_METHODS`).

    Returns
    -------
    sigma : torch.Tensor, shape (..., min(rows, cols))
        Descending singular values, float64.
    left : torch.Tensor, shape (..., rows, k)
    right : torch.Tensor, shape (..., cols, k)
        Orthonormal bases of the top-``k`` left and right singular subspaces.
    route : str
        With ``return_method=True`` only.

    Raises
    ------
    InputError
        If the matrix holds NaN or Inf.

    References
    ----------
    R. B. Lehoucq, D. C. Sorensen and C. Yang, *ARPACK Users' Guide*, SIAM (1998).
    """
    t = matrix.to(device) if device is not None else matrix
    rows, cols = t.shape[-2:]
    k = min(k, rows, cols)
    right_side = cols <= rows
    if t.ndim == 2:
        error = nonfinite_error(t)
        if error is not None:
            raise InputError(f"The matrix {error}")
        sigma, route, lower, scale = spectrum_and_gram(t, method=method)
        lower = lower.tril()
        top = _top_eigenvectors(lower + lower.tril(-1).mT, k)
        del lower
        other = torch.linalg.qr(project(t, top, dtype=torch.float64, scale=scale)).Q
    else:
        sigma, route, top, other = _batch_subspaces(t.to(torch.float64), k, right_side, method)
    left, right = (other, top) if right_side else (top, other)
    return (sigma, left, right, route) if return_method else (sigma, left, right)


def _batch_subspaces(t: torch.Tensor, k: int, right_side: bool, method: str):
    """:func:`top_singular_subspaces` of a batch ``(..., rows, cols)`` of float64 matrices."""
    gram = t.mT @ t if right_side else t @ t.mT
    scale = None
    tiny = torch.finfo(torch.float64).tiny ** 0.5
    if not bool(torch.isfinite(gram).all()) or bool(
        (gram.diagonal(dim1=-2, dim2=-1).amax(-1) < tiny).any()
    ):
        # NaN/Inf in W, or entries beyond about 1e+-154 whose squares overflow or
        # underflow: as singular_values, divide by the largest entry and scale back
        error = nonfinite_error(t)
        if error is not None:
            raise InputError(f"The matrix {error}")
        scale = t.abs().amax(dim=(-2, -1), keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        t = t / scale
        gram = t.mT @ t if right_side else t @ t.mT
    lam = torch.linalg.eigvalsh(gram).flip(-1).clamp_min(0.0)
    sigma, route = lam.sqrt(), "gram"
    ill = lam[..., -1] < 1e-10 * lam[..., 0]
    if method == "svd" or (method == "auto" and bool(ill.any())):
        sigma, route = torch.linalg.svdvals(t), "svd"
    if scale is not None:
        sigma = sigma * scale.squeeze(-1)
    top = _top_eigenvectors(gram, k)
    other = torch.linalg.qr(t @ top if right_side else t.mT @ top).Q
    return sigma, route, top, other
