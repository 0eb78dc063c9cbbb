r"""Covariance spectra of samples: one-shot eigenvalues and a streaming accumulator.

Samples are in rows: ``X`` has shape ``(n, d)``, n samples of dimension d.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import shown
from .._errors import InputError
from .._validation import (
    as_float_tensor,
    check_bool,
    check_device,
    check_finite,
    check_ndim,
    check_not_meta,
    check_positive,
    check_probability,
    describe,
)
from .gram import add_lower_gram, triangle_blocks

__all__ = [
    "PRECISIONS",
    "StreamingCovariance",
    "batch_moments",
    "covariance_eigenvalues",
    "gram",
    "gram_dtype",
    "ledoit_wolf_shrinkage",
]


def _check_samples(X: Any, func: str, name: str = "X") -> torch.Tensor:
    x = as_float_tensor(X, name, func)
    check_ndim(
        x,
        name,
        func,
        min_ndim=2,
        max_ndim=2,
        expected="exactly 2 dimensions (n samples, d features), samples in rows",
    )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(
            f"The '{name}' argument of {func} is empty: {describe(x)}. "
            f"Expected at least one sample of at least one feature."
        )
    return check_finite(x, name, func)


def ledoit_wolf_shrinkage(X) -> torch.Tensor:
    r"""Ledoit–Wolf optimal shrinkage intensity toward a scaled identity.

    For centred samples :math:`x_k` (rows of ``X``), :math:`S = X^\top X / n`,
    :math:`\mu = \operatorname{tr} S / d`:

    .. math::

        \delta^2 = \tfrac{1}{d}\|S - \mu I\|_F^2,\qquad
        \beta^2 = \min\Big(\delta^2,\ \frac{1}{d\,n^2}\sum_k \|x_k x_k^\top - S\|_F^2\Big),
        \qquad \rho = \beta^2/\delta^2 \in [0, 1],

    using :math:`\sum_k\|x_kx_k^\top - S\|_F^2 = \sum_k\|x_k\|^4 - n\|S\|_F^2` and
    :math:`\|X^\top X\|_F = \|X X^\top\|_F` (computed on the smaller side).

    Parameters
    ----------
    X : tensor or array_like, shape (n, d)
        Samples in rows; centred here.

    Returns
    -------
    rho : torch.Tensor, shape ()
        Shrinkage intensity in [0, 1] (0 when the sample covariance is already isotropic).

    References
    ----------
    O. Ledoit and M. Wolf, "A well-conditioned estimator for large-dimensional covariance
    matrices", J. Multivariate Analysis 88(2), 2004.

    Examples
    --------
    >>> import torch
    >>> from infospec import ledoit_wolf_shrinkage
    >>> X = torch.randn(20, 50, generator=torch.Generator().manual_seed(0))
    >>> 0.0 <= float(ledoit_wolf_shrinkage(X)) <= 1.0
    True
    """
    func = "ledoit_wolf_shrinkage"
    x = _check_samples(X, func)
    return _ledoit_wolf(x - x.mean(dim=0))


def _ledoit_wolf(xc: torch.Tensor) -> torch.Tensor:
    n, d = xc.shape
    if d == 1:
        return xc.new_zeros(())  # a 1 x 1 covariance is a scaled identity
    # rho is scale invariant: divide by the largest |entry| so that the fourth powers of
    # entries beyond ~1e77 (or below ~1e-77) neither overflow nor underflow
    top = xc.abs().amax()
    xc = xc / torch.where(top > 0, top, torch.ones_like(top))
    trace = (xc * xc).sum() / n
    mu = trace / d
    if d <= n:
        # ||S - mu I||_F^2 formed directly: no cancellation when S is nearly isotropic
        s_mat = (xc.mT @ xc) / n
        s_fro2 = (s_mat * s_mat).sum()
        dev = s_mat - mu * torch.eye(d, dtype=xc.dtype, device=xc.device)
        delta2 = (dev * dev).sum() / d
    else:
        gram = xc @ xc.mT
        s_fro2 = (gram * gram).sum() / n**2
        delta2 = (s_fro2 - d * mu * mu) / d  # rank <= n < d: never near 0 relative to mu^2
    norms4 = ((xc * xc).sum(dim=1) ** 2).sum()
    beta2 = torch.clamp((norms4 / n - s_fro2) / (d * n), min=0)
    beta2 = torch.minimum(beta2, delta2)
    return torch.where(delta2 > 0, beta2 / torch.where(delta2 > 0, delta2, 1), 0 * delta2)


def covariance_eigenvalues(
    X,
    *,
    center: bool = True,
    ddof: int = 1,
    nonzero: bool = False,
    shrinkage: str | float | None = None,
) -> torch.Tensor:
    r"""Eigenvalues of the sample covariance of ``X`` (samples in rows), descending.

    .. math::

        \Sigma = \frac{1}{n - \text{ddof}} (X - \bar x)^\top (X - \bar x)

    computed through the smaller Gram side: when :math:`n < d` the nonzero eigenvalues are
    those of :math:`(X - \bar x)(X - \bar x)^\top/(n-\text{ddof})` (n x n).

    **When n < d** the covariance is singular: with centring its rank is at most
    :math:`n - 1`, so at least :math:`d - n + 1` eigenvalues are exactly zero (:math:`d - n`
    without centring). They are returned as exact zeros (length d), or dropped with
    ``nonzero=True``. Measures that take logarithms (entropy, flatness) then give
    :math:`-\infty` / 0; use ``shrinkage`` for a well-conditioned estimate instead.

    Parameters
    ----------
    X : tensor or array_like, shape (n, d)
        Samples in rows.
    center : bool, default True
        Subtract the sample mean (otherwise the second-moment matrix is used).
    ddof : int >= 0, default 1
        Delta degrees of freedom of the normalisation :math:`n - \text{ddof}`.
    nonzero : bool, default False
        Return only the :math:`\min(d, n - \text{center})` structurally nonzero eigenvalues.
    shrinkage : {None, "ledoit-wolf"} or float in [0, 1], default None
        Shrink toward :math:`\mu I` with :math:`\mu = \operatorname{tr}\Sigma/d`:
        :math:`\lambda_i \to (1-\rho)\lambda_i + \rho\mu`, with :math:`\rho` given or the
        Ledoit–Wolf optimum (:func:`ledoit_wolf_shrinkage`). Not combinable with ``nonzero``.

    Returns
    -------
    eigvals : torch.Tensor, shape (d,) or (min(d, n - center),)
        Non-negative, descending, float64.

    Raises
    ------
    InputError
        If ``X`` is not 2-D, empty or non-finite, ``n - ddof <= 0``, ``shrinkage`` is not a
        valid choice, or ``shrinkage`` is combined with ``nonzero=True``.

    References
    ----------
    O. Ledoit and M. Wolf (2004), see :func:`ledoit_wolf_shrinkage`.

    Examples
    --------
    >>> import torch
    >>> from infospec import covariance_eigenvalues
    >>> X = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    >>> covariance_eigenvalues(X, ddof=0).tolist()
    [2.0, 0.5]
    """
    func = "covariance_eigenvalues"
    check_bool(nonzero, "nonzero", func)
    check_bool(center, "center", func)
    x = _check_samples(X, func)
    n, d = x.shape
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        raise InputError(
            f"The 'ddof' parameter of {func} must be an int >= 0. Got {shown(ddof)} instead."
        )
    if n - ddof <= 0:
        raise InputError(
            f"{func} needs more samples than ddof: X has n={n} rows and "
            f"ddof={ddof}. Pass more samples or ddof=0."
        )
    rho = None
    if shrinkage is not None:
        if nonzero:
            raise InputError(
                f"The 'shrinkage' and 'nonzero' parameters of {func} cannot be "
                f"combined: a shrunk covariance has no zero eigenvalues."
            )
        if isinstance(shrinkage, str):
            if shrinkage != "ledoit-wolf":
                raise InputError(
                    f"The 'shrinkage' parameter of {func} must be None, "
                    f"'ledoit-wolf' or a float in [0, 1]. Got {shown(shrinkage)} instead."
                )
        else:
            rho = check_probability(shrinkage, "shrinkage", func, low_open=False)
    xc = x - x.mean(dim=0) if center else x
    # divided by the largest |entry| (the eigenvalues scale by its square): entries beyond
    # ~1e154 would overflow the Gram matrix and below ~1e-154 underflow it
    top = xc.abs().amax()
    scale = float(top) if float(top) > 0 else 1.0
    xs = xc / scale
    small = xs.mT @ xs if d <= n else xs @ xs.mT
    eig = torch.linalg.eigvalsh(small / (n - ddof)).flip(-1).clamp_min(0)
    largest = float(eig[0]) * scale * scale
    if float(eig[0]) > 0 and not (torch.finfo(torch.float64).tiny <= largest < math.inf):
        where = "above the largest" if largest == math.inf else "below the smallest normal"
        raise InputError(
            f"The covariance eigenvalues of the 'X' argument of {func} (largest about "
            f"{float(eig[0]):.3g} x {scale:.3g}^2) are {where} float64 number. Rescale X "
            f"first (the measures of a spectrum are scale-invariant or scale-covariant)."
        )
    eig = eig * scale * scale
    rank = min(d, n - 1 if center else n)
    if rank < eig.shape[0]:
        eig[rank:] = 0  # structural zeros (round-off would leave ~1e-17 noise there)
    if nonzero:
        return eig[:rank].clone()
    if eig.shape[0] < d:
        eig = torch.cat([eig, eig.new_zeros(d - eig.shape[0])])
    if shrinkage is not None:
        if rho is None:
            rho = _ledoit_wolf(x - x.mean(dim=0))
        mu = eig.sum() / d
        eig = (1 - rho) * eig + rho * mu
    return eig


#: Gram-product precisions of :class:`StreamingCovariance` (see its ``precision``).
PRECISIONS = ("auto", "float64", "float32")


def gram_dtype(precision: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype of the per-batch Gram products for inputs of ``dtype`` (see StreamingCovariance).

    ``"auto"`` is float32 for inputs of 16 bits or fewer (bfloat16, float16, float8) and
    float64 otherwise; ``"float64"`` and ``"float32"`` force one.
    """
    if precision == "float64":
        return torch.float64
    if precision == "float32":
        return torch.float32
    return torch.float32 if torch.finfo(dtype).bits <= 16 else torch.float64


def _check_precision(precision: Any, func: str) -> str:
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise InputError(
            f"The 'precision' parameter of {func} must be one of "
            f"{', '.join(repr(p) for p in PRECISIONS)}. Got {shown(precision)} instead."
        )
    return precision


def gram(y: torch.Tensor) -> torch.Tensor:
    r"""The symmetric Gram matrix :math:`Y^\top Y` of ``y`` (shape (b, d)), in ``y``'s dtype.

    The blocks on and below the diagonal of :func:`~infospec.spectra.gram.triangle_blocks`
    are multiplied (:func:`~infospec.spectra.gram.add_lower_gram`: 5/8 of the products of
    a full matrix multiply at d = 384, the same operations per entry, so the same
    rounding) and the others mirrored.
    """
    d = y.shape[-1]
    g = y.new_empty(d, d)
    add_lower_gram(g, y, overwrite=True)
    for a0, a1 in triangle_blocks(d)[:-1]:
        g[a0:a1, a1:] = g[a1:, a0:a1].mT
    return g


def batch_moments(
    x: torch.Tensor,
    *,
    precision: str = "auto",
    device: torch.device | None = None,
    counts: torch.Tensor | None = None,
) -> tuple[int, torch.Tensor, torch.Tensor] | None:
    r"""Count, float64 mean and float64 centred scatter of the rows of ``x`` (b, d).

    .. math::

        n = \sum_k c_k,\qquad
        \bar x = \frac1n\sum_k c_k x_k,\qquad
        M = \sum_k c_k (x_k - \bar x)(x_k - \bar x)^\top ,

    :math:`c_k = 1` unless ``counts`` is given (row ``k`` stands for :math:`c_k` equal
    rows: the moments of the rows repeated, from one product per distinct row; the
    activation hooks pass the distinct rows of an embedding lookup). The mean is summed in
    float64 and the scatter formed as described under ``precision`` in
    :class:`StreamingCovariance` (with counts, from the rows :math:`\sqrt{c_k}\,(x_k -
    \bar x)`). Returns None when a column sum is not finite (the batch holds a NaN or an
    infinity; for float64 inputs also a sum beyond the float64 range): the finiteness check
    costs no pass of its own.

    ``x`` is not modified; ``device`` is where the results (and the float64 copy) go,
    default ``x``'s; ``counts`` (shape (b,), positive integers) are trusted as given.
    """
    dev = x.device if device is None else torch.device(device)
    x = x.to(dev)
    g_dtype = gram_dtype(precision, x.dtype)
    if counts is None:
        b = x.shape[0]
        total = x.sum(dim=0, dtype=torch.float64)
        root = None
    else:
        c = counts.to(device=dev, dtype=torch.float64)
        b = round(float(c.sum()))
        total = c @ x.to(torch.float64)
        root = c.sqrt().unsqueeze(1)
    if not bool(torch.isfinite(total).all()):
        return None
    mean = total / b
    if g_dtype == torch.float64:
        # one pass that upcasts and centres (float32 - float64 promotes before subtracting:
        # the same numbers as a float64 copy centred in place, without the copy's two
        # extra passes), then the Gram
        y = torch.sub(x, mean)
        return b, mean, gram(y if root is None else y.mul_(root))
    # shift by the mean rounded to the Gram dtype; the residual r = mean - shift is exact
    # in float64 and is taken out of the float64 result: M = Y^T Y - n r r^T
    shift = mean.to(g_dtype)
    y = torch.sub(x, shift)  # in g_dtype (float32) for 16-bit x, one pass
    if root is not None:
        y.mul_(root.to(g_dtype))
    r = mean - shift.to(torch.float64)
    scatter = gram(y).to(torch.float64)
    scatter.addr_(r, r, alpha=-b)
    return b, mean, scatter


class StreamingCovariance:
    r"""Streaming, mergeable covariance of samples arriving in batches (float64 sums).

    Keeps the count :math:`n`, the mean :math:`\bar x` and the centred scatter
    :math:`M = \sum_k (x_k - \bar x)(x_k - \bar x)^\top` and merges batches with the exact
    pairwise update of Chan, Golub and LeVeque:

    .. math::

        n = n_a + n_b,\quad \delta = \bar x_b - \bar x_a,\quad
        M = M_a + M_b + \frac{n_a n_b}{n}\,\delta\delta^\top .

    Each batch is centred on its own mean before its Gram product, so the large-mean
    cancellation of raw second moments never arises (activations often have a mean large
    compared to their spread), and the result does not depend on how the data is split
    into batches (up to round-off). The state :math:`(n, \bar x, M)` is float64 whatever
    the precision of the Gram products: :meth:`merge` and :meth:`all_reduce` are exact.

    Parameters
    ----------
    dim : int > 0
        Feature dimension d.
    device : torch.device or str, optional
        Where the d x d state lives (default CPU); put it on the model's device.
    dtype : torch.dtype, default torch.float64
        Accumulation precision of the state.
    precision : {"auto", "float64", "float32"}, default "auto"
        Precision of each batch's Gram product :math:`Y^\top Y` of the centred rows
        (:func:`batch_moments`). ``"float64"``: the rows are upcast and multiplied in
        float64 (the exact path). ``"float32"``: the rows are shifted by the batch mean
        rounded to float32, multiplied in float32 (about twice as fast on a CPU, less
        memory traffic) and the product is added to the float64 state. ``"auto"``:
        float32 for inputs of 16 bits or fewer (bfloat16, float16), float64 for float32
        and float64 inputs.

    Notes
    -----
    **Error of the float32 Gram.** A float32 product of b rows gives each entry with an
    error (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Thm. 3.5)

    .. math::

        |\widehat G_{ij} - G_{ij}| \le \gamma_b \sum_k |y_{ki}||y_{kj}|
        \le \gamma_b \sqrt{G_{ii}G_{jj}},\qquad \gamma_b = \frac{b\,u}{1-b\,u},\
        u = 2^{-24},

    and about :math:`\sqrt b\,u` in practice (rounding errors of random sign). Centring by
    a shift :math:`c` close to the mean keeps :math:`G_{ii}` at the spread of the rows
    instead of :math:`b\,(\bar x_i - c)^2 + \ldots`: with the batch mean as the shift
    the rows' mean term is gone entirely, so a mean of :math:`10^3` over a unit spread
    costs nothing (uncentred, the same product would lose 6 of float32's 7 digits). Summing
    the errors over entries (:math:`\|E\|_2 \le \|E\|_F \le \gamma_b \operatorname{tr} G`)
    bounds each eigenvalue's error by Weyl's inequality:

    .. math::

        |\hat\lambda_i - \lambda_i| \le \gamma_b\, d\,\bar\lambda ,

    :math:`\bar\lambda` the mean eigenvalue; in practice (random rounding, a random error
    matrix of spectral norm about :math:`2\sqrt d` times its entries) about
    :math:`2\sqrt{d}\,u\,\bar\lambda`. **So the float32 Gram keeps the relative accuracy
    of eigenvalues down to** :math:`\lambda/\bar\lambda \approx 10^{-6}` (d = 384;
    measured on MiniLM: errors of 6e-8 to 3e-5 :math:`\bar\lambda`), against
    :math:`\approx 10^{-14}` for the float64 path, whose floor is the rounding of float32
    activations themselves (:math:`\epsilon_{32}^2\bar\lambda`). MiniLM's float32
    activations have genuine eigenvalues down to :math:`6\times10^{-11}\bar\lambda` and
    LayerNorm null directions at :math:`10^{-13}\bar\lambda`, which a float32 Gram turns
    into noise at :math:`10^{-6}\bar\lambda` (rank 384 instead of 383, flatness off by
    4 %): hence ``"auto"`` keeps float64 for float32 inputs. For bfloat16 and float16 inputs
    the rounding floor of the inputs (:math:`4\sqrt d\,\epsilon_x^2\bar\lambda`, see
    :func:`infospec.analysis.activation_record`: :math:`5\times10^{-3}` and
    :math:`8\times10^{-5}\,\bar\lambda` at d = 384) is far above the float32 Gram's, so
    ``"auto"`` takes the fast path there.

    Examples
    --------
    >>> import torch
    >>> from infospec import StreamingCovariance
    >>> acc = StreamingCovariance(2)
    >>> acc.update(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    >>> acc.update(torch.tensor([[0.0, 2.0], [0.0, -2.0]]))
    >>> acc.count, acc.eigenvalues(ddof=0).tolist()
    (4, [2.0, 0.5])
    """

    def __init__(
        self,
        dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
        precision: str = "auto",
    ) -> None:
        func = "StreamingCovariance"
        self.dim = check_positive(dim, "dim", func, integer=True)
        self.precision = _check_precision(precision, func)
        if dtype not in (torch.float64, torch.float32):
            raise InputError(
                f"The 'dtype' parameter of {func} must be torch.float64 or torch.float32 "
                f"(the precision of the accumulated state). Got {shown(dtype)} instead."
            )
        device = check_device(device, "device", func)
        self.count = 0
        try:
            self.mean = torch.zeros(self.dim, dtype=dtype, device=device)
            self.scatter = torch.zeros(self.dim, self.dim, dtype=dtype, device=device)
        except (RuntimeError, TypeError, ValueError) as exc:  # the d x d state is too large
            size = self.dim * self.dim * torch.empty((), dtype=dtype).element_size()
            raise InputError(
                f"The 'dim' parameter of {func} is {self.dim}: its {self.dim} x {self.dim} "
                f"state ({size / 2**30:.3g} GiB) cannot be allocated on "
                f"{device or 'the CPU'}."
            ) from exc

    def update(self, X: Any) -> None:
        """Add a batch of samples, shape (b, d) (or (..., d): leading axes are flattened).

        Raises :class:`InputError` if ``X`` is not numeric, has another width than the
        accumulator, holds NaN or infinite values, or its scatter overflows float64 (values
        beyond about 1e154); then nothing is added.
        """
        func = "StreamingCovariance.update"
        if isinstance(X, torch.Tensor) and X.is_floating_point():
            x = check_not_meta(X.detach(), "X", func)  # keep the dtype: the Gram follows it
        else:
            x = as_float_tensor(X, "X", func)  # rejects strings, ragged lists, complex, bool
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise InputError(
                f"The 'X' argument of {func} must have last dimension {self.dim} (the "
                f"accumulator's feature dimension); got shape {tuple(x.shape)}. Batches "
                f"of one accumulator must all have the same width."
            )
        x = x.reshape(-1, self.dim)
        if x.shape[0] == 0:
            return
        moments = batch_moments(x, precision=self.precision, device=self.mean.device)
        if moments is None or not bool(torch.isfinite(moments[2]).all()):
            check_finite(x, "X", func)  # says how many NaN/Inf and where
            raise InputError(
                f"The 'X' argument of {func} sums beyond the float64 range (values up to "
                f"{float(x.abs().max()):.3g}, whose squares overflow beyond about 1e154); "
                f"rescale the samples."
            )
        self._merge_moments(*moments)

    def merge_moments(self, count: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        """Fold in a batch given by its count, mean and centred scatter (Chan et al.).

        Raises :class:`InputError` if ``count`` is not an int >= 0, or ``mean`` and
        ``scatter`` are not finite real tensors of shapes (dim,) and (dim, dim).
        """
        func = "StreamingCovariance.merge_moments"
        count = check_positive(count, "count", func, allow_zero=True, integer=True)
        if not count:
            return
        m = check_not_meta(as_float_tensor(mean, "mean", func), "mean", func)
        sc = check_not_meta(as_float_tensor(scatter, "scatter", func), "scatter", func)
        if tuple(m.shape) != (self.dim,) or tuple(sc.shape) != (self.dim, self.dim):
            raise InputError(
                f"{func} needs a mean of shape ({self.dim},) and a scatter of shape "
                f"({self.dim}, {self.dim}); got {tuple(m.shape)} and {tuple(sc.shape)}."
            )
        check_finite(m, "mean", func)
        check_finite(sc, "scatter", func)
        self._merge_moments(count, m, sc)

    def _merge_moments(self, count: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        """:meth:`merge_moments` of moments made here (batch_moments): not checked again."""
        if count:
            self._merge(count, mean.to(self.mean), scatter.to(self.scatter))

    def _merge(self, n_b: int, mean_b: torch.Tensor, scatter_b: torch.Tensor) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.scatter += scatter_b
        if n_a:
            self.scatter.addr_(delta, delta, alpha=n_a * n_b / n)
        self.mean += delta * (n_b / n)
        self.count = n

    def copy(self) -> StreamingCovariance:
        """An independent accumulator with the same state (a plain StreamingCovariance)."""
        out = StreamingCovariance.__new__(StreamingCovariance)
        out.dim, out.precision, out.count = self.dim, self.precision, self.count
        out.mean, out.scatter = self.mean.clone(), self.scatter.clone()
        return out

    def merge(self, other: StreamingCovariance) -> StreamingCovariance:
        """Fold another accumulator (same dimension) into this one; returns ``self``."""
        if not isinstance(other, StreamingCovariance) or other.dim != self.dim:
            raise InputError(
                f"StreamingCovariance.merge needs another StreamingCovariance of dimension "
                f"{self.dim}; got {type(other).__name__} of dimension "
                f"{getattr(other, 'dim', None)}."
            )
        if other.count:
            self._merge(other.count, other.mean.to(self.mean), other.scatter.to(self.scatter))
        return self

    def covariance(self, *, ddof: int = 1) -> torch.Tensor:
        """The d x d covariance :math:`M / (n - \\text{ddof})`."""
        if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
            raise InputError(
                f"The 'ddof' parameter of StreamingCovariance.covariance must be an "
                f"int >= 0. Got {shown(ddof)} instead."
            )
        if self.count - ddof <= 0:
            raise InputError(
                f"StreamingCovariance has {self.count} sample(s), not enough for ddof={ddof}. "
                f"Feed more data (update) or use ddof=0."
            )
        return self.scatter / (self.count - ddof)

    def eigenvalues(self, *, ddof: int = 1) -> torch.Tensor:
        """Covariance eigenvalues, descending, non-negative (round-off clipped).

        The covariance is divided by its largest diagonal entry before ``eigvalsh`` and the
        eigenvalues multiplied back, so that the solver sees entries of order one.

        Raises
        ------
        InputError
            If the accumulated scatter is not finite (samples beyond about 1e154 overflow
            their float64 squares): rescale the inputs.
        """
        cov = self.covariance(ddof=ddof)
        top = cov.diagonal().amax() if cov.numel() else cov.new_zeros(())
        if not bool(torch.isfinite(top)) or not bool(torch.isfinite(cov).all()):
            raise InputError(
                f"StreamingCovariance of dimension {self.dim}: the accumulated scatter "
                f"overflowed float64 (samples of magnitude beyond about 1e154 have no finite "
                f"square); rescale the inputs before update."
            )
        scale = top if bool(top > 0) else torch.ones_like(top)
        return (torch.linalg.eigvalsh(cov / scale) * scale).flip(-1).clamp_min(0)

    def reset(self) -> None:
        """Forget every sample."""
        self.count = 0
        self.mean.zero_()
        self.scatter.zero_()

    def all_reduce(self, group: Any = None) -> StreamingCovariance:
        """Merge the accumulators of every process of a ``torch.distributed`` group, in place.

        Gathers each rank's ``(n, mean, scatter)`` and merges them in rank order, so every
        rank ends with the same state. A no-op when torch.distributed is not initialised.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        world = dist.get_world_size(group)
        state = torch.cat(
            [
                torch.tensor([float(self.count)], dtype=self.mean.dtype, device=self.mean.device),
                self.mean,
                self.scatter.reshape(-1),
            ]
        )
        gathered = [torch.empty_like(state) for _ in range(world)]
        dist.all_gather(gathered, state, group=group)
        d = self.dim
        self.reset()
        for s in gathered:
            n_b = round(float(s[0]))
            if n_b:
                self._merge(n_b, s[1 : 1 + d], s[1 + d :].reshape(d, d))
        return self
