r"""Singular values of weight matrices, accurate in float64.

The spectrum is the expensive step and the shared currency of the library: compute it
once per matrix here, then hand it to every measure.
"""

from __future__ import annotations

import torch

from .._errors import InputError
from .._validation import (
    as_float_tensor,
    check_choice,
    check_device,
    check_finite,
    check_ndim,
)

__all__ = ["singular_values"]

#: Ratio lambda_min / lambda_max of the Gram matrix below which ``method="auto"``
#: recomputes with an SVD: below it the Gram eigenvalues of the smallest singular values
#: carry fewer than ~6 correct digits in float64 (their absolute error is ~eps * lambda_max).
_GRAM_CONDITION_LIMIT = 1e-10


def _gram(W: torch.Tensor) -> torch.Tensor:
    m, n = W.shape[-2:]
    return W.mT @ W if n <= m else W @ W.mT


def _gram_singular_values(W: torch.Tensor, func: str) -> torch.Tensor:
    gram = _gram(W)
    scale = None
    # Entries beyond ~1e154 overflow the Gram matrix and entries below ~1e-154 underflow
    # it (a 1e-300 matrix would give zeros): then W is divided by its largest |entry|
    # (singular values are scale-covariant) and the spectrum multiplied back. The extra
    # pass over W is paid only then.
    tiny = torch.finfo(W.dtype).tiny ** 0.5
    if not bool(torch.isfinite(gram).all()) or bool(
        (gram.diagonal(dim1=-2, dim2=-1).amax(-1) < tiny).any()
    ):
        # a NaN or Inf anywhere in W makes its Gram matrix non-finite, so checking the
        # small Gram matrix replaces a pass over all of W; W is scanned only then
        check_finite(W, "W", func)
        scale = W.abs().amax(dim=(-2, -1), keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        gram = _gram(W / scale)
    sigma = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(-1)  # descending
    return sigma if scale is None else sigma * scale.squeeze(-1)


def singular_values(
    W,
    *,
    method: str = "auto",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""Singular values of a matrix (or a batch), in descending order, float64-accurate.

    Two routes give the same spectrum:

    * ``"gram"``: :math:`\sigma_i = \sqrt{\lambda_i(G)}` with :math:`G = W^\top W` or
      :math:`W W^\top`, whichever is smaller, formed and diagonalised (``eigvalsh``) in
      ``dtype``. Fast (one matrix product and a symmetric eigensolver on the small side)
      and accurate to :math:`\epsilon\,\sigma_{\max}^2/\sigma_i` relative, i.e. to
      ~1e-16 relative for well-conditioned matrices in float64. Never do this in float32:
      small eigenvalues of a float32 Gram matrix are wrong by orders of magnitude.
    * ``"svd"``: ``torch.linalg.svdvals`` in ``dtype``; backward stable, absolute error
      :math:`\epsilon\,\sigma_{\max}`, slower.
    * ``"auto"`` (default): the Gram route, falling back to the SVD for matrices whose
      Gram condition :math:`\lambda_{\min}/\lambda_{\max}` is below 1e-10 (nearly singular
      matrices, where the Gram route loses the small values).

    A matrix whose entries are so large or small that their squares overflow or
    underflow float64 (beyond about 1e±154) is divided by its largest absolute entry
    first and the spectrum multiplied back, so ``1e-300 * W`` gives ``1e-300`` times the
    spectrum of ``W``, not zeros.

    Parameters
    ----------
    W : tensor or array_like, shape (..., m, n)
        Matrix or batch of matrices, any floating dtype (bf16 and fp16 are upcast).
    method : {"auto", "gram", "svd"}, default "auto"
        Route, as above.
    dtype : torch.dtype, default torch.float64
        Working and output precision.
    device : torch.device or str, optional
        Where to compute (default: ``W``'s device), e.g. ``"cuda"`` for large matrices.

    Returns
    -------
    sigma : torch.Tensor, shape (..., min(m, n))
        Non-negative singular values, descending, in ``dtype`` on ``device``.

    Raises
    ------
    InputError
        If ``W`` has fewer than 2 dimensions, an empty side, NaN/Inf, or ``method`` is not
        one of the choices.

    References
    ----------
    G. H. Golub and C. F. Van Loan, *Matrix Computations*, 4th ed., section 8.6 (SVD) and
    5.3.7 (normal equations and the squared condition number).

    Examples
    --------
    >>> import torch
    >>> from infospec import singular_values
    >>> singular_values(torch.diag(torch.tensor([3.0, 1.0, 2.0]))).tolist()
    [3.0, 2.0, 1.0]
    """
    func = "singular_values"
    check_choice(method, "method", func, ("auto", "gram", "svd"))
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point and not dtype.is_complex):
        raise InputError(
            f"The 'dtype' parameter of {func} must be a real floating torch dtype "
            f"(torch.float64 or torch.float32). Got {dtype!r} instead."
        )
    device = check_device(device, "device", func)
    t = W.detach() if isinstance(W, torch.Tensor) else W
    if device is not None and isinstance(t, torch.Tensor):
        t = t.to(device)  # move before upcasting: a bf16 matrix travels at half the size
    t = as_float_tensor(t, "W", func).to(dtype)
    if device is not None:
        t = t.to(device)
    check_ndim(t, "W", func, min_ndim=2, expected="at least 2 dimensions (..., m, n)")
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise InputError(
            f"The 'W' argument of {func} has an empty side: shape "
            f"{tuple(t.shape)}. Expected a matrix with m, n >= 1."
        )
    if method == "svd":
        check_finite(t, "W", func)
        return torch.linalg.svdvals(t)
    sigma = _gram_singular_values(t, func)
    if method == "gram":
        return sigma
    top = sigma[..., :1]
    bottom = sigma[..., -1:]
    ill = ((bottom * bottom) < _GRAM_CONDITION_LIMIT * (top * top)).squeeze(-1)
    if bool(ill.any()):
        if sigma.ndim == 1:
            return torch.linalg.svdvals(t)
        sigma = sigma.clone()
        sigma[ill] = torch.linalg.svdvals(t[ill])
    return sigma
