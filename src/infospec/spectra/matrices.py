r"""Singular values of weight matrices, accurate in float64.

The spectrum is the expensive step and the shared currency of the library: compute it
once per matrix here, then hand it to every measure.
"""

from __future__ import annotations

import torch

from .._checks import shown
from .._errors import InputError
from .._validation import (
    as_float_tensor,
    check_bool,
    check_choice,
    check_device,
    check_finite,
    check_ndim,
    check_not_meta,
)
from .gram import gram_matrix, refine_small_singular_values

__all__ = ["SPECTRUM_METHODS", "singular_values", "spectrum_and_gram"]

#: Ratio lambda_min / lambda_max of the Gram matrix below which ``method="auto"`` refines
#: the smallest eigenvalues from ``W``: below it the Gram eigenvalues of the smallest
#: singular values carry fewer than ~6 correct digits in float64 (their absolute error is
#: ~eps * lambda_max).
_GRAM_CONDITION_LIMIT = 1e-10
#: tau: the refinement's subspace holds every Gram eigenvalue below tau * lambda_max, so
#: that the eigenvalues outside it are at least tau * lambda_max (the Ritz values' error
#: is then about eps^2 kappa_i^2 / tau relative, see refine_small_singular_values).
_REFINE_SUBSPACE = 1e-4
#: Above this fraction of the side in the subspace (a nearly rank-deficient matrix) the
#: refinement would cost about an SVD, and the SVD is taken.
_REFINE_MAX_FRACTION = 0.25
#: Once the route refines, it replaces every Gram eigenvalue below this fraction of
#: lambda_max (tau / 100: their Ritz values converge by 1e-2 or better per iteration, and
#: their Gram values have only ~10 correct digits); the ones above keep their Gram values.
_REFINE_REPLACE = 1e-6

#: From this side on, a CPU Gram matrix is diagonalised in place (LAPACK ``syevd`` through
#: SciPy, ``overwrite_a``) instead of by ``torch.linalg.eigvalsh``, which copies its input
#: (512 MB at 8192, the width of 70B-class models). Below it the copy is kept: SciPy's
#: OpenBLAS ``syevd`` took 4.1 s where torch's MKL took 3.3 s for a 4096 x 4096 matrix
#: on 2 cores (2026-12-02), for 134 MB. A matrix refined after the in-place route has
#: its Gram matrix formed again (one more Gram product).
_IN_PLACE_MIN_SIDE = 8192

#: The routes of :func:`singular_values` (``return_method=True``; the ``spectrum_method``
#: column of :func:`infospec.analyze`), cheapest first.
SPECTRUM_METHODS = ("gram", "gram+refine", "svd")


def _as_matrix_tensor(W, func: str) -> torch.Tensor:
    """``W`` as a real floating tensor, keeping a floating tensor's stored dtype."""
    if isinstance(W, torch.Tensor) and W.dtype.is_floating_point:
        return check_not_meta(W.detach(), "W", func)
    return as_float_tensor(W.detach() if isinstance(W, torch.Tensor) else W, "W", func)


def _matrix_spectrum(
    W: torch.Tensor, *, method: str, dtype: torch.dtype, func: str
) -> tuple[torch.Tensor, str]:
    """Singular values (descending, ``dtype``, on ``W``'s device) of one matrix, and the route."""
    sigma, route, _, _ = _spectrum_and_gram(W, method=method, dtype=dtype, func=func, keep=False)
    return sigma, route


def spectrum_and_gram(
    W: torch.Tensor, *, method: str = "auto", dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, str, torch.Tensor, float | None]:
    """:func:`singular_values` of one matrix, its route, and the Gram matrix it came from.

    For the callers that need the Gram matrix again (the top singular vectors of
    :func:`infospec.analysis.compare.top_singular_subspaces`): the spectrum takes the same
    routes as :func:`singular_values` (``gram``, ``gram+refine``, ``svd``), and the Gram
    matrix of the smaller side is formed once for both.

    Returns
    -------
    sigma : torch.Tensor
        Descending singular values of ``W``.
    route : str
        One of :data:`SPECTRUM_METHODS`.
    gram : torch.Tensor, shape (s, s)
        The Gram matrix of ``W / scale`` (of ``W`` when ``scale`` is None); **only its lower
        triangle is defined**, as :func:`~infospec.spectra.gram.gram_matrix` returns it.
    scale : float or None
        The largest absolute entry of ``W`` when its Gram matrix would overflow or
        underflow ``dtype``, else None.
    """
    return _spectrum_and_gram(W, method=method, dtype=dtype, func="spectrum_and_gram", keep=True)


def _spectrum_and_gram(
    W: torch.Tensor, *, method: str, dtype: torch.dtype, func: str, keep: bool
) -> tuple[torch.Tensor, str, torch.Tensor | None, float | None]:
    """The work of both: ``keep`` returns the Gram matrix intact (else it may be overwritten)."""
    if method == "svd":
        t = check_finite(W.to(dtype), "W", func)
        if not keep:
            return torch.linalg.svdvals(t), "svd", None, None
    gram = gram_matrix(W, dtype=dtype)
    scale = None
    # Entries beyond ~1e154 overflow the Gram matrix and entries below ~1e-154 underflow
    # it (a 1e-300 matrix would give zeros): then W is divided by its largest |entry|
    # (singular values are scale-covariant) and the spectrum multiplied back. The extra
    # pass over W is paid only then (never for bf16, fp16 or float32 inputs in float64).
    tiny = torch.finfo(dtype).tiny ** 0.5
    if not bool(torch.isfinite(gram.sum())) or float(gram.diagonal().amax()) < tiny:
        # a NaN or Inf anywhere in W makes its Gram matrix non-finite, so checking the
        # small Gram matrix replaces a pass over all of W; W is scanned only then. Its sum
        # is checked, not each entry (no mask the size of G); a sum that overflows while
        # every entry is finite only sends W to the rescaled route, with the same result
        check_finite(W, "W", func)
        largest = float(W.abs().amax())
        if largest > 0:
            scale = largest
            gram = gram_matrix(W, dtype=dtype, scale=scale)
    if method == "svd":  # keep: the Gram matrix for the caller, the values by the SVD
        t = W.to(dtype)
        sigma = torch.linalg.svdvals(t if scale is None else t / scale)
        return (sigma if scale is None else sigma * scale), "svd", gram, scale
    lam, overwritten = _gram_eigenvalues(gram, overwrite=not keep)  # ascending
    sigma = lam.clamp_min(0).sqrt()
    route = "gram"
    lam_max = float(lam[-1])
    count = int((lam < _GRAM_CONDITION_LIMIT * lam_max).sum()) if method == "auto" else 0
    if count:
        side = lam.shape[-1]
        subspace = int((lam < _REFINE_SUBSPACE * lam_max).sum())
        if subspace > _REFINE_MAX_FRACTION * side:
            t = W.to(dtype)
            if not keep:
                gram = None
            sigma = torch.linalg.svdvals(t if scale is None else t / scale)
            return (sigma if scale is None else sigma * scale), "svd", gram, scale
        count = int((lam < _REFINE_REPLACE * lam_max).sum())
        if overwritten:
            gram = gram_matrix(W, dtype=dtype, scale=scale)
        refined = refine_small_singular_values(
            W, gram, lam, count=count, subspace=subspace, scale=scale
        )
        sigma[:count] = refined.flip(0)
        # a refined value can pass a well-determined neighbour by its round-off only
        sigma = sigma.sort().values
        route = "gram+refine"
    sigma = sigma.flip(-1)  # descending
    return (sigma if scale is None else sigma * scale), route, gram, scale


def _gram_eigenvalues(gram: torch.Tensor, *, overwrite: bool = True) -> tuple[torch.Tensor, bool]:
    """Ascending eigenvalues of a Gram matrix (its lower triangle), and whether it was overwritten.

    ``overwrite=False`` keeps ``gram`` intact whatever its side.

    A CPU float64/float32 matrix of side :data:`_IN_PLACE_MIN_SIDE` or more, stored in
    Fortran order (as :func:`~infospec.spectra.gram.gram_matrix` returns it on the CPU),
    is diagonalised in place by ``scipy.linalg.eigh(..., driver="evd")``, the same
    divide-and-conquer ``syevd`` that ``torch.linalg.eigvalsh`` calls, without its copy;
    anything else goes to ``torch.linalg.eigvalsh``.
    """
    side = gram.shape[-1]
    if (
        overwrite
        and gram.device.type == "cpu"
        and gram.dtype in (torch.float64, torch.float32)
        and side >= _IN_PLACE_MIN_SIDE
        and gram.stride() == (1, side)
    ):
        import scipy.linalg

        a = gram.numpy()  # a Fortran-ordered view of the same memory
        lam = scipy.linalg.eigh(
            a, lower=True, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd"
        )
        return torch.from_numpy(lam), True
    return torch.linalg.eigvalsh(gram, UPLO="L"), False


def _singular_values_and_method(
    W, *, method: str, dtype: torch.dtype, device
) -> tuple[torch.Tensor, str]:
    """The work of :func:`singular_values`: the values and the route."""
    func = "singular_values"
    check_choice(method, "method", func, ("auto", "gram", "svd"))
    if dtype not in (torch.float64, torch.float32):  # LAPACK's eigensolvers: no half types
        raise InputError(
            f"The 'dtype' parameter of {func} must be torch.float64 or torch.float32 (the "
            f"working precision of the eigensolver). Got {shown(dtype)} instead."
        )
    device = check_device(device, "device", func)
    t = _as_matrix_tensor(W, func)
    if device is not None:
        t = t.to(device)  # in the stored dtype: a bf16 matrix travels at half the size
    check_ndim(t, "W", func, min_ndim=2, expected="at least 2 dimensions (..., m, n)")
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise InputError(
            f"The 'W' argument of {func} has an empty side: shape "
            f"{tuple(t.shape)}. Expected a matrix with m, n >= 1."
        )
    if t.ndim == 2:
        return _matrix_spectrum(t, method=method, dtype=dtype, func=func)
    batch = t.shape[:-2]
    if t.numel() == 0:  # an empty batch: no matrix, no value (each would have min(m, n))
        return t.new_zeros((*batch, min(t.shape[-2:])), dtype=dtype), "gram"
    flat = t.reshape(-1, *t.shape[-2:])
    if method != "svd":
        # a batch (a convolution's kernel positions: small matrices) is screened in one
        # batched Gram product and eigvalsh; only its ill-conditioned or extreme matrices
        # take the per-matrix route
        w = flat.to(dtype)
        gram = w.mT @ w if w.shape[-1] <= w.shape[-2] else w @ w.mT
        finite = bool(torch.isfinite(gram).all())
        lam = torch.linalg.eigvalsh(gram if finite else torch.zeros_like(gram))
        tiny = torch.finfo(dtype).tiny ** 0.5
        lam_max = lam[..., -1:]
        bad = ~torch.isfinite(gram).all((-2, -1)) | (
            gram.diagonal(dim1=-2, dim2=-1).amax(-1) < tiny
        )
        if method == "auto":
            bad |= (lam[..., :1] < _GRAM_CONDITION_LIMIT * lam_max).squeeze(-1)
        if not bool(bad.any()):
            sigma = lam.clamp_min(0).sqrt().flip(-1)
            return sigma.reshape(*batch, -1), "gram"
    parts = [_matrix_spectrum(w, method=method, dtype=dtype, func=func) for w in flat]
    route = max((r for _, r in parts), key=SPECTRUM_METHODS.index)
    sigma = torch.stack([s for s, _ in parts]).reshape(*batch, -1)
    return sigma, route


def singular_values(
    W,
    *,
    method: str = "auto",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    return_method: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, str]:
    r"""Singular values of a matrix (or a batch), in descending order, float64-accurate.

    The routes (the spectrum is the same to the accuracy stated):

    * ``"gram"``: :math:`\sigma_i = \sqrt{\lambda_i(G)}` with :math:`G = W^\top W` or
      :math:`W W^\top`, whichever is smaller, accumulated in ``dtype`` from blocks of ``W``
      upcast one at a time (no ``dtype`` copy of the whole of ``W``; on the CPU a symmetric
      rank-k update, :func:`infospec.spectra.gram.gram_matrix`) and diagonalised
      (``eigvalsh``). Fast and accurate to :math:`\epsilon\,\sigma_{\max}^2/\sigma_i^2`
      relative (eigenvalue :math:`\lambda_i` to :math:`\epsilon\lambda_{\max}` absolute):
      ~1e-16 for well-conditioned matrices in float64, about 6 digits at
      :math:`\lambda_{\min}/\lambda_{\max} = 10^{-10}`. Never do this in float32: small
      eigenvalues of a float32 Gram matrix are wrong by orders of magnitude.
    * ``"svd"``: ``torch.linalg.svdvals`` in ``dtype``; backward stable, absolute error
      :math:`\epsilon\,\sigma_{\max}`, several times slower.
    * ``"auto"`` (default): the Gram route; when the Gram condition
      :math:`\lambda_{\min}/\lambda_{\max}` is below 1e-10 (a nearly singular matrix,
      whose small values the Gram route loses), **"gram+refine"**: the eigenvalues above
      1e-6 of the largest are kept and the ones below are recomputed from ``W`` by
      Rayleigh-Ritz on the subspace of every eigenvalue below 1e-4 of the largest
      (:func:`infospec.spectra.gram.refine_small_singular_values`: one Cholesky
      factorisation of ``G``, about a third of the Gram product, and a projection of
      ``W``). The refined values agree with a float64 SVD to about
      :math:`10^{-8} + 100\,\epsilon\,\sigma_{\max}/\sigma_i` relative (tested from
      :math:`\kappa = 10^6` to :math:`10^{14}`; the SVD itself is that far from the exact
      values). A matrix with more than a quarter of its Gram eigenvalues below 1e-4 of the
      largest (nearly rank-deficient), where the refinement would cost about an SVD, gets
      the SVD (``"svd"``).

    A matrix whose entries are so large or small that their squares overflow or
    underflow float64 (beyond about 1e±154) is divided by its largest absolute entry
    first and the spectrum multiplied back, so ``1e-300 * W`` gives ``1e-300`` times the
    spectrum of ``W``, not zeros.

    Parameters
    ----------
    W : tensor or array_like, shape (..., m, n)
        Matrix or batch of matrices, any floating dtype (bf16, fp16 and float32 are read
        in blocks and upcast block by block).
    method : {"auto", "gram", "svd"}, default "auto"
        Route, as above.
    dtype : torch.dtype, default torch.float64
        Working and output precision.
    device : torch.device or str, optional
        Where to compute (default: ``W``'s device), e.g. ``"cuda"`` for large matrices.
    return_method : bool, default False
        Also return the route taken.

    Returns
    -------
    sigma : torch.Tensor, shape (..., min(m, n))
        Non-negative singular values, descending, in ``dtype`` on ``device``.
    route : {"gram", "gram+refine", "svd"}
        Only with ``return_method=True``: the route (of a batch, the most expensive any
        of its matrices took; :data:`SPECTRUM_METHODS`).

    Raises
    ------
    InputError
        If ``W`` has fewer than 2 dimensions, an empty side, NaN/Inf, or ``method`` is not
        one of the choices.

    References
    ----------
    G. H. Golub and C. F. Van Loan, *Matrix Computations*, 4th ed., sections 8.6 (SVD),
    5.3.7 (normal equations and the squared condition number), 8.1.2 and 8.2.4
    (Rayleigh-Ritz, subspace iteration).

    Examples
    --------
    >>> import torch
    >>> from infospec import singular_values
    >>> singular_values(torch.diag(torch.tensor([3.0, 1.0, 2.0]))).tolist()
    [3.0, 2.0, 1.0]
    >>> W = torch.eye(64, dtype=torch.float64)
    >>> W[63, 63] = 1e-7  # lambda_min / lambda_max = 1e-14: below the 1e-10 limit
    >>> sigma, route = singular_values(W, return_method=True)
    >>> route, float(sigma[0]), float(sigma[-1])
    ('gram+refine', 1.0, 1e-07)
    """
    check_bool(return_method, "return_method", "singular_values")
    sigma, route = _singular_values_and_method(W, method=method, dtype=dtype, device=device)
    return (sigma, route) if return_method else sigma
