r"""The Gram matrix of a weight matrix, formed blockwise, and its small eigenvalues refined.

Two steps of :func:`infospec.singular_values` live here:

* :func:`gram_matrix`: :math:`G = W^\top W` (``n <= m``) or :math:`W W^\top`, the smaller
  side, accumulated in the working precision from blocks of ``W`` upcast one at a time
  from its stored dtype (bf16, fp16, float32), so no working-precision copy of the whole
  of ``W`` is made. On the CPU the products are symmetric rank-k updates (BLAS ``syrk``,
  through :func:`scipy.linalg.blas.dsyrk`), which compute one triangle: half the
  multiply-adds of a general product (``benchmarks/bench_weights.py --gram`` measures
  both). When torch runs more than one thread, and on other devices, the lower block
  triangle is accumulated by torch's own matrix products instead
  (:func:`add_lower_gram`): SciPy's OpenBLAS threads and torch's OpenMP threads, each
  pool spinning while the other works, slowed every matrix of MiniLM 1.6-2.4x.
* :func:`refine_small_singular_values`: the Rayleigh-Ritz refinement of the eigenvalues of
  ``G`` that the Gram route cannot resolve, from ``W`` itself (the route ``"gram+refine"``
  of :func:`infospec.singular_values`).

References
----------
G. H. Golub and C. F. Van Loan, *Matrix Computations*, 4th ed., sections 8.2.4 (subspace
iteration) and 8.1.2 (Rayleigh-Ritz); B. N. Parlett, *The Symmetric Eigenvalue Problem*,
SIAM 1998, chapter 11 (error bounds of Ritz values).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "add_lower_gram",
    "gram_matrix",
    "project",
    "refine_small_singular_values",
    "triangle_blocks",
]

#: Size of one upcast block of ``W`` (bytes in the working precision): at most this much
#: working-precision memory beyond ``W`` and ``G`` is held while ``G`` is formed.
BLOCK_BYTES = 16 * 2**20

_NUMPY = {torch.float64: np.float64, torch.float32: np.float32}

#: Below this width one matrix product is as fast as the block-triangular Gram.
_TRIANGLE_MIN_DIM = 256
#: Target column-block widths of the block-triangular Gram, by matrix width: ``(below, w)``.
#: Measured with torch's float64 products on 977-4096 rows (2-core AMD EPYC, MKL):
#: 96-wide blocks are 10 % faster than two 192-wide ones at d = 384 (fewer products and
#: panels that stay in cache), 192 the fastest from 768 to 1536 (15-25 % faster than
#: 512), 256 at 4096 and beyond.
_TRIANGLE_WIDTHS = ((768, 96), (4096, 192))
_TRIANGLE_WIDEST = 256


def triangle_blocks(d: int) -> list[tuple[int, int]]:
    """Column blocks ``(a0, a1)`` of the block-triangular Gram of a ``d``-wide matrix.

    One block below 256 columns; else ``k = ceil(d / w)`` blocks of equal width, ``w`` the
    target width of :data:`_TRIANGLE_WIDTHS` (96 below 768 columns, 192 below 4096, 256
    beyond), so that the products on and below the diagonal are :math:`(k+1)/(2k)` of a
    full product's (5/8 at d = 384, 17/32 at d = 4096).
    """
    if d < _TRIANGLE_MIN_DIM:
        return [(0, d)]
    target = next((w for below, w in _TRIANGLE_WIDTHS if d < below), _TRIANGLE_WIDEST)
    k = max(2, -(-d // target))
    w = -(-d // k)
    return [(a0, min(d, a0 + w)) for a0 in range(0, d, w)]


def add_lower_gram(g: torch.Tensor, a: torch.Tensor, *, overwrite: bool = False) -> None:
    r"""Add :math:`A^\top A` to the lower block triangle of ``g`` in place (``A``: (b, d)).

    Only the blocks on and below the diagonal of :func:`triangle_blocks` are multiplied
    (each block row ``i``: ``g[i, :i+1] += A[:, i]^T A[:, :i+1]``), written straight into
    ``g`` (a strided view BLAS writes to); the blocks above the diagonal are not touched.
    ``overwrite=True`` sets those blocks to the product instead of adding to them (``g``
    may then be uninitialised). The same operations per entry as ``A.mT @ A``, so the
    same rounding. (torch has no symmetric rank-k update; this is its blockwise form.)
    """
    for a0, a1 in triangle_blocks(a.shape[-1]):
        left, right, out = a[:, a0:a1].mT, a[:, :a1], g[a0:a1, :a1]
        if overwrite:
            torch.mm(left, right, out=out)
        else:
            out.addmm_(left, right)


def _blocks(
    W: torch.Tensor, *, by_rows: bool, dtype: torch.dtype, scale: float | None
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, block)``: row blocks ``(b, n)`` or column blocks ``(m, b)`` of ``W`` in ``dtype``.

    Each block is a copy in ``dtype`` (a view when ``W`` is already in ``dtype`` and no
    ``scale`` is given) of at most about :data:`BLOCK_BYTES`, divided by ``scale`` if given.
    """
    m, n = W.shape
    width, total = (n, m) if by_rows else (m, n)
    size = torch.empty((), dtype=dtype).element_size()
    step = max(64, BLOCK_BYTES // (size * width))
    for start in range(0, total, step):
        block = W[start : start + step] if by_rows else W[:, start : start + step]
        block = block.to(dtype)
        if scale is not None:
            block = block / scale
        yield start, block
        del block  # before the next one is made: one block alive at a time, not two


def gram_matrix(
    W: torch.Tensor, *, dtype: torch.dtype = torch.float64, scale: float | None = None
) -> torch.Tensor:
    r"""The Gram matrix of the smaller side of ``W``, accumulated blockwise in ``dtype``.

    .. math::

        G = \sum_b W_b^\top W_b \quad (n \le m,\ W_b \text{ row blocks}),\qquad
        G = \sum_b W_{:,b} W_{:,b}^\top \quad (m < n),

    every block upcast from ``W``'s stored dtype to ``dtype`` when it is used (and divided by
    ``scale``, if given: the Gram matrix of ``W / scale``).

    Parameters
    ----------
    W : torch.Tensor, shape (m, n)
        Any floating dtype, on any device.
    dtype : torch.float64 or torch.float32
        Accumulation and output precision.
    scale : float > 0, optional
        Divide ``W`` by it first (when the squares of its entries would overflow or
        underflow ``dtype``).

    Returns
    -------
    G : torch.Tensor, shape (min(m, n), min(m, n))
        On ``W``'s device, Fortran-ordered (strides ``(1, side)``). **Only its lower
        triangle is defined** (zeros, or part of the products, above the diagonal): read
        it with ``torch.linalg.eigvalsh(G, UPLO="L")``.
    """
    m, n = W.shape
    by_rows = n <= m
    side = min(m, n)
    if W.device.type == "cpu" and dtype in _NUMPY and torch.get_num_threads() == 1:
        from scipy.linalg.blas import get_blas_funcs

        syrk = get_blas_funcs("syrk", dtype=_NUMPY[dtype])
        gram = np.zeros((side, side), dtype=_NUMPY[dtype], order="F")
        for _, block in _blocks(W, by_rows=by_rows, dtype=dtype, scale=scale):
            a = block.numpy().T  # Fortran-ordered for a C-ordered block: no copy
            # by rows: G += a a^T with a = block^T (n x b); by columns: G += a^T a with
            # a = block^T (b x m); lower=1 fills the lower triangle of the Fortran array
            gram = syrk(1.0, a, beta=1.0, c=gram, trans=0 if by_rows else 1, lower=1,
                        overwrite_c=1)  # fmt: skip
            del a, block
        return torch.from_numpy(gram)
    # Fortran-ordered like the syrk route's (the in-place eigensolver of large Gram
    # matrices reads that layout)
    gram = torch.zeros((side, side), dtype=dtype, device=W.device).mT
    for _, block in _blocks(W, by_rows=by_rows, dtype=dtype, scale=scale):
        add_lower_gram(gram, block if by_rows else block.mT)
    return gram


def project(
    W: torch.Tensor, X: torch.Tensor, *, dtype: torch.dtype, scale: float | None
) -> torch.Tensor:
    """``W X`` (``n <= m``, ``X`` of shape (n, p)) or ``W^T X`` (``m < n``), blockwise."""
    m, n = W.shape
    by_rows = n <= m
    out = torch.empty((m if by_rows else n, X.shape[1]), dtype=dtype, device=X.device)
    for start, block in _blocks(W, by_rows=by_rows, dtype=dtype, scale=scale):
        block = block.to(X.device)
        if by_rows:
            out[start : start + block.shape[0]] = block @ X
        else:
            out[start : start + block.shape[1]] = block.mT @ X
    return out


def refine_small_singular_values(
    W: torch.Tensor,
    gram: torch.Tensor,
    lam: torch.Tensor,
    *,
    count: int,
    subspace: int,
    scale: float | None = None,
    iterations: int = 4,
) -> torch.Tensor:
    r"""The ``count`` smallest singular values of ``W``, refined from ``W`` itself.

    The Gram route gives every eigenvalue :math:`\lambda_i` of :math:`G` to an absolute
    error of about :math:`\epsilon\lambda_{\max}`, so the smallest carry few or no correct
    digits. Their eigenvectors, however, are well determined as a subspace: the
    ``subspace`` eigenvectors of the smallest eigenvalues, separated from the others by
    :math:`\lambda_{p+1} \ge \tau\lambda_{\max}`, are found by subspace iteration with
    :math:`(G + sI)^{-1}` (one Cholesky factorisation, ``iterations`` block solves,
    :math:`s = \min(m, n)\,\epsilon\,\lambda_{\max}`), and the singular values of ``W``
    restricted to that subspace (Rayleigh-Ritz: those of :math:`W X`, ``X`` its orthonormal
    basis, of shape ``(min(m, n), subspace)``) replace the ``count`` smallest. :math:`W X`
    is formed from ``W`` (blockwise, as :func:`gram_matrix`), not from ``G``, so its
    singular values have the SVD's absolute error of about :math:`\epsilon\sigma_{\max}`;
    the subspace's own error (from that of ``G``) adds a relative error of about
    :math:`\epsilon^2\kappa_i^2/\tau` to :math:`\sigma_i^2`, :math:`\kappa_i =
    \sigma_{\max}/\sigma_i` (Parlett, ch. 11). The extra cost is one Cholesky factorisation
    of ``G`` (:math:`s^3/3` multiply-adds, a third of the Gram product) plus
    :math:`O(mnp)`.

    Parameters
    ----------
    W : torch.Tensor, shape (m, n)
        The matrix, in its stored dtype.
    gram : torch.Tensor, shape (s, s)
        :func:`gram_matrix` of ``W`` (lower triangle), ``s = min(m, n)``, in the working
        precision.
    lam : torch.Tensor, shape (s,)
        The eigenvalues of ``gram``, ascending (``torch.linalg.eigvalsh``).
    count : int
        How many of the smallest to refine (``count <= subspace``).
    subspace : int
        Dimension ``p`` of the subspace (every eigenvalue below :math:`\tau\lambda_{\max}`).
    scale : float, optional
        The scale ``gram`` was formed with (``W / scale``).
    iterations : int
        Subspace iterations; each multiplies the unwanted components by at most
        :math:`\lambda_i/\lambda_{p+1}` for a wanted :math:`\lambda_i`.

    Returns
    -------
    sigma : torch.Tensor, shape (count,)
        The refined singular values (of ``W / scale`` when ``scale`` is given), descending.
    """
    dtype = gram.dtype
    side = gram.shape[-1]
    eps = torch.finfo(dtype).eps
    lam_max = float(lam[-1].clamp_min(torch.finfo(dtype).tiny))
    shift = side * eps * lam_max
    # the Cholesky factorisation reads the lower triangle only: G + shift I is formed in
    # G's own memory, its diagonal shifted and put back exactly afterwards (no n x n copy)
    diagonal = gram.diagonal()
    saved = diagonal.clone()
    try:
        for _ in range(60):  # positive definite once the shift passes the round-off
            torch.add(saved, shift, out=diagonal)
            factor, info = torch.linalg.cholesky_ex(gram)
            if int(info) == 0:
                break
            shift *= 4.0
        else:  # pragma: no cover - G + lam_max I is always positive definite
            raise torch.linalg.LinAlgError("refinement: no Cholesky factor of the shifted Gram")
    finally:
        diagonal.copy_(saved)
    g = torch.Generator(device=gram.device).manual_seed(0)
    X = torch.randn(side, subspace, dtype=dtype, device=gram.device, generator=g)
    X = torch.linalg.qr(X).Q
    for _ in range(iterations):
        # (L L^T)^{-1} X by two triangular solves (torch.cholesky_solve copies the factor
        # at every call: 4x slower at side 2048)
        y = torch.linalg.solve_triangular(factor, X, upper=False)
        X = torch.linalg.qr(torch.linalg.solve_triangular(factor.mT, y, upper=True)).Q
    del factor, y
    ritz = torch.linalg.svdvals(project(W, X, dtype=dtype, scale=scale))
    return ritz[-count:]
