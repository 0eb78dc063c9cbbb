r"""Transform coding of vectors: the KLT, reverse water-filling and an entropy-coded bitstream.

The research notes' claim, made operational: for a Gaussian source the optimal code
decorrelates (the Karhunen–Loève transform, the eigenvectors of the covariance), gives
each component the rate :math:`\tfrac12\log_2(\lambda_i/\theta)` of reverse water-filling
and drops the components below the water level :math:`\theta`. :class:`TransformCoder`
does exactly that with a uniform scalar quantizer per component and a range coder, so the
bound and the operational rate can be compared on real data:

1. **fit** -- the mean and covariance of the training vectors are streamed with
   :class:`~infospec.spectra.StreamingCovariance` (the accumulator of the activation
   report), and the covariance is diagonalised: eigenvalues :math:`\lambda_1 \ge \dots
   \ge \lambda_d` and eigenvectors ``components_``;
2. **allocate** -- for a target ``rate`` (bits per vector) or ``distortion`` (total
   squared error per vector), :func:`~infospec.distortion_rate` or
   :func:`~infospec.rate_distortion` gives :math:`\theta`; component :math:`i` is kept
   when :math:`\lambda_i > \theta` and quantized with the step
   :math:`\Delta = \sqrt{12\,\theta}`, whose high-resolution error :math:`\Delta^2/12`
   is the water level (every kept component gets the same error, as water-filling
   prescribes);
3. **quantize** -- the coefficients :math:`y_i = u_i^\top (x - \mu)` become integers
   :math:`q_i = \operatorname{round}(y_i / \Delta)`, clipped to
   :math:`|q_i| \le M_i = \lceil c\,\sqrt{\lambda_i}/\Delta \rceil` (``clip_sigmas`` =
   :math:`c`, 16 by default: a Gaussian coefficient is clipped with probability below
   1e-57); the reconstruction is :math:`\hat x = \mu + \sum_i q_i \Delta\, u_i`;
4. **encode** -- each kept component's symbols are range coded (the ``constriction``
   package) under a quantized Gaussian (or Laplace) model of the component's variance,
   so :meth:`~TransformCoder.decode` of :meth:`~TransformCoder.encode` gives back exactly
   :meth:`~TransformCoder.dequantize` of :meth:`~TransformCoder.quantize`. The stream
   (format version 3) is a 17-byte header -- magic, version, the number of vectors and of
   components, and a CRC-32 of the header and the coded words -- then the coded words;
   :meth:`~TransformCoder.decode` also reads versions 1 and 2 and refuses a stream whose
   words do not hold exactly the vectors its header declares.

**What to expect.** At high rate, a uniform quantizer on a Gaussian component of variance
:math:`\sigma^2` has output entropy :math:`h(Y) - \log_2\Delta = \tfrac12\log_2(2\pi e
\sigma^2) - \log_2\Delta` and error :math:`\Delta^2/12`, while the Gaussian rate at that
error is :math:`\tfrac12\log_2(12\sigma^2/\Delta^2)`: the gap is
:math:`\tfrac12\log_2(\pi e/6) \approx 0.2546` bits per kept component (the space-filling
loss of a scalar quantizer, 1.53 dB). At low rate the gap shrinks towards 0 for a
component near the water level (its symbols are mostly 0), and the measured error there
differs from :math:`\theta`. :func:`rate_distortion_curve` measures both.

References
----------
T. M. Cover and J. A. Thomas, *Elements of Information Theory*, 2nd ed., section 10.3.3
(reverse water-filling). A. Gersho and R. M. Gray, *Vector Quantization and Signal
Compression*, 1992, sections 5.4 and 9.9 (uniform quantizers and their entropy at high
resolution). V. K. Goyal, "Theoretical foundations of transform coding", IEEE Signal
Processing Magazine 18(5), 2001. R. Bamler, ``constriction`` (range and ANS coders).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from .._errors import InputError
from .._validation import (
    as_float_tensor,
    check_bool,
    check_choice,
    check_finite,
    check_ndim,
    check_positive,
)
from ..measures.water_filling import distortion_rate, rate_distortion
from ..spectra.covariance import StreamingCovariance
from .bitstream import _Bitstream

__all__ = ["ENTROPY_MODELS", "TransformCoder", "empirical_entropy_bits"]

#: Entropy models of the bitstream (the distribution assumed for each component's symbols).
ENTROPY_MODELS = ("gaussian", "laplace")
#: Relative round-off of a mean (64 float64 epsilons, generous for a pairwise sum): a
#: coordinate whose standard deviation is below it, relative to its mean, is constant.
MEAN_ROUND_OFF = 64 * float(np.finfo(np.float64).eps)

#: Largest clip range of the quantizer: symbols stay integers that float64 holds exactly.
_MAX_SYMBOL = 2**52


def empirical_entropy_bits(symbols: torch.Tensor | np.ndarray) -> torch.Tensor:
    r"""Plug-in entropy of each column of integer symbols, in bits.

    .. math::

        \hat H_j = -\sum_s \hat p_{js} \log_2 \hat p_{js}, \qquad
        \hat p_{js} = \frac{\#\{t : q_{tj} = s\}}{n}

    The operational rate of an ideal entropy coder whose model is the empirical
    distribution (it is biased low by about :math:`(K_j - 1)/(2 n \ln 2)` bits for
    :math:`K_j` distinct symbols, Miller 1955).

    Parameters
    ----------
    symbols : tensor or array of integers, shape (n, k)
        ``n`` vectors of ``k`` symbols each.

    Returns
    -------
    torch.Tensor, shape (k,)
        Entropy of each column in bits (float64); their sum is the rate in bits per vector.

    Raises
    ------
    InputError
        If ``symbols`` is not a 2-D array of integers with at least one row.

    Examples
    --------
    >>> import torch
    >>> empirical_entropy_bits(torch.tensor([[0, 1], [1, 1], [2, 1], [3, 1]])).tolist()
    [2.0, 0.0]
    """
    func = "empirical_entropy_bits"
    q = torch.as_tensor(symbols)
    if q.dtype.is_floating_point or q.dtype.is_complex or q.dtype == torch.bool:
        raise InputError(
            f"The 'symbols' argument of {func} must hold integers; got dtype "
            f"{str(q.dtype).replace('torch.', '')}."
        )
    if q.ndim != 2 or q.shape[0] == 0:
        raise InputError(
            f"The 'symbols' argument of {func} must have shape (n, k) with n >= 1; got "
            f"shape {tuple(q.shape)}."
        )
    n, k = q.shape
    out = torch.zeros(k, dtype=torch.float64)
    for j in range(k):
        _, counts = torch.unique(q[:, j], return_counts=True)
        p = counts.to(torch.float64) / n
        out[j] = -(p * torch.log2(p)).sum() + 0.0  # + 0.0: no -0.0 for one symbol
    return out


def _samples(X: Any, func: str, name: str = "X", dim: int | None = None) -> torch.Tensor:
    t = as_float_tensor(X, name, func).to(torch.float64)
    check_ndim(t, name, func, min_ndim=2, max_ndim=2, expected="exactly 2 dimensions (n, d)")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise InputError(
            f"The '{name}' argument of {func} must hold at least one vector of at least one "
            f"coordinate; got shape {tuple(t.shape)}."
        )
    if dim is not None and t.shape[1] != dim:
        raise InputError(
            f"The '{name}' argument of {func} has vectors of {t.shape[1]} coordinates; the "
            f"coder was fitted on {dim}. Pass vectors of the same width."
        )
    return check_finite(t, name, func)


def _overflow(func: str, peak: float) -> str:
    return (
        f"{func}: the covariance of the training vectors overflows float64 (values up to "
        f"{peak:.3g}; beyond about 1e154 they have no finite square). Divide X by a "
        f"constant first (rates are scale-free; distortions scale by its square)."
    )


class TransformCoder(_Bitstream):
    r"""A KLT transform code with reverse water-filling bit allocation and a range coder.

    See the module docstring for the steps and the formulas. Exactly one of ``rate`` and
    ``distortion`` sets the operating point; :meth:`at` moves it without refitting.

    Parameters
    ----------
    rate : float > 0, optional
        Target rate in **bits per vector** of the Gaussian model (the sum of the
        component rates :math:`\tfrac12\log_2(\lambda_i/\theta)`).
    distortion : float > 0, optional
        Target total squared error per vector (summed over coordinates, averaged over
        vectors), at most the total variance.
    center : bool, default True
        Subtract the training mean before the transform (otherwise the code is of the raw
        second moment).
    model : {"gaussian", "laplace"}, default "gaussian"
        Entropy model of the bitstream for each kept component: a quantized Gaussian of
        the component's variance, or a quantized Laplace of the same variance (heavier
        tails, often shorter on real embeddings).
    clip_sigmas : float > 0, default 16
        Symbols are clipped to :math:`\pm\lceil c \sqrt{\lambda_i}/\Delta\rceil`.
        :meth:`quantize` and :meth:`dequantize` work at any rate whose symbols float64
        holds exactly (:math:`M_i \le 2^{52}`); the bitstream of :meth:`encode` codes
        ranges up to :math:`M_i \le 2^{19}` (about 16.8 bits per component at the default
        ``clip_sigmas``), and refuses higher rates with the highest rate it can code.

    Attributes
    ----------
    mean_ : torch.Tensor, shape (d,)
        Training mean (zeros if ``center=False``).
    components_ : torch.Tensor, shape (d, d)
        Eigenvectors of the training covariance, one per row, by decreasing eigenvalue.
    eigenvalues_ : torch.Tensor, shape (d,)
        The covariance eigenvalues (``ddof=0``), descending.
    theta_ : float
        Water level of the operating point.
    n_active_ : int
        Number of kept components (:math:`\lambda_i > \theta`).
    step_ : float
        Quantizer step :math:`\Delta = \sqrt{12\theta}`, the same for every kept component.
    max_symbols_ : torch.Tensor of int64, shape (n_active_,)
        Clip range of each kept component.
    rate_bits_ : float
        Gaussian rate :math:`R(D)` of the operating point, bits per vector.
    distortion_ : float
        Gaussian distortion :math:`D` of the operating point (total squared error).
    n_samples_ : int
        Number of training vectors.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(4000, 3, generator=g, dtype=torch.float64) * torch.tensor([4.0, 1.0, 0.1])
    >>> coder = TransformCoder(rate=8.0).fit(X)
    >>> coder.n_active_, round(coder.rate_bits_, 6)
    (2, 8.0)
    >>> data = coder.encode(X)
    >>> bool(torch.equal(coder.decode(data), coder.dequantize(coder.quantize(X))))
    True
    """

    def __init__(
        self,
        *,
        rate: float | None = None,
        distortion: float | None = None,
        center: bool = True,
        model: str = "gaussian",
        clip_sigmas: float = 16.0,
    ) -> None:
        func = "TransformCoder"
        self._target = self._check_target(rate, distortion, func)
        self.center = check_bool(center, "center", func)
        self.model = check_choice(model, "model", func, ENTROPY_MODELS)
        self.clip_sigmas = check_positive(clip_sigmas, "clip_sigmas", func)
        self._fitted = False

    # -- fitting ---------------------------------------------------------------------

    @staticmethod
    def _check_target(rate: Any, distortion: Any, func: str) -> tuple[str, float]:
        if (rate is None) == (distortion is None):
            got = "both" if rate is not None else "neither"
            raise InputError(
                f"{func} takes exactly one of 'rate' (bits per vector) or 'distortion' "
                f"(total squared error per vector); got {got}."
            )
        if rate is not None:
            return "rate", check_positive(rate, "rate", func)
        return "distortion", check_positive(distortion, "distortion", func)

    def fit(self, X: Any) -> TransformCoder:
        """Learn the mean, the KLT basis and the allocation from training vectors.

        Parameters
        ----------
        X : tensor or array_like, shape (n, d), or an iterable of such batches
            Training vectors in rows (at least 2 in all), finite. Batches are streamed
            into the covariance, so data larger than memory can be used.

        Returns
        -------
        TransformCoder
            ``self``, fitted.

        Raises
        ------
        InputError
            If a batch is not a finite 2-D array, batches differ in width, fewer than 2
            vectors are given, or the target cannot be met (a ``distortion`` above the
            total variance, or an all-zero covariance). A coordinate whose standard
            deviation is below :data:`MEAN_ROUND_OFF` (64 float64 epsilons) of its mean
            is constant: its variance, the rounding of the centring, is set to 0.
        """
        func = "TransformCoder.fit"
        batches = [X] if isinstance(X, (torch.Tensor, np.ndarray)) else X
        if isinstance(X, (list, tuple)) and X and not isinstance(X[0], (torch.Tensor, np.ndarray)):
            batches = [X]  # a nested list of numbers is one batch
        if not isinstance(batches, Iterable):
            raise InputError(
                f"The 'X' argument of {func} must be an array of shape (n, d) or an iterable "
                f"of such batches; got {type(X).__name__}."
            )
        acc: StreamingCovariance | None = None
        for i, batch in enumerate(batches):
            b = _samples(
                batch, func, "X" if i == 0 else f"X[{i}]", None if acc is None else acc.dim
            )
            if acc is None:
                acc = StreamingCovariance(b.shape[1])
            try:
                acc.update(b)
            except InputError:  # b is finite (checked): its squares overflow
                raise InputError(_overflow(func, float(b.abs().max()))) from None
        if acc is None or acc.count < 2:
            raise InputError(
                f"{func} needs at least 2 training vectors; got {0 if acc is None else acc.count}."
            )
        if self.center:
            cov = acc.covariance(ddof=0)
            mean = acc.mean.clone()
            # a coordinate whose spread is below the round-off of its mean is constant:
            # its measured variance is the rounding of the centring, whatever the scale
            flat = cov.diagonal() <= (MEAN_ROUND_OFF * mean.abs()) ** 2
            if bool(flat.any()):
                cov[flat, :] = 0.0
                cov[:, flat] = 0.0
        else:
            mean = torch.zeros(acc.dim, dtype=torch.float64)
            centred = acc.covariance(ddof=0)
            cov = centred + torch.outer(acc.mean, acc.mean)
        if not bool(torch.isfinite(cov).all()):  # the batches' sums overflowed together
            raise InputError(_overflow(func, float(acc.mean.abs().max())))
        top = float(cov.diagonal().amax())
        if not top >= torch.finfo(torch.float64).tiny:  # zero, or subnormal: ~4 digits left
            raise InputError(
                f"{func}: the covariance is zero: every training vector is the same (to "
                f"round-off: a spread below {MEAN_ROUND_OFF:.1e} of the mean counts as none), "
                f"or their spread is below about 1e-154 (its square underflows float64; then "
                f"multiply X by a constant first). There is nothing to code."
            )
        eig, vec = torch.linalg.eigh(cov / top)  # entries of order one for the solver
        order = torch.argsort(eig, descending=True)
        self.eigenvalues_ = eig[order].clamp_min(0) * top
        self.components_ = vec[:, order].mT.contiguous()
        self.mean_ = mean
        self.n_samples_ = acc.count
        self._allocate()
        self._fitted = True
        return self

    def _allocate(self) -> None:
        kind, value = self._target
        lam = self.eigenvalues_
        total = float(lam.sum())
        if kind == "distortion":
            if value >= total:
                raise InputError(
                    f"The 'distortion' of TransformCoder ({value:g}) must be below the total "
                    f"variance of the training vectors ({total:g}); at or above it no bit is "
                    f"needed. Pass a smaller distortion."
                )
            rd = rate_distortion(lam, value, bits=True)
            theta, rate_bits, dist = float(rd.theta), float(rd.rate), value
        else:
            dr = distortion_rate(lam, value, bits=True)
            theta, rate_bits, dist = float(dr.theta), value, float(dr.distortion)
        if not theta > 0:
            raise InputError(
                f"TransformCoder: the rate {value:g} bits per vector is beyond float64 (the "
                f"water level underflows to 0). Pass a lower rate."
            )
        self.theta_ = theta
        self.rate_bits_ = rate_bits
        self.distortion_ = dist
        n_active = int((lam > theta).sum())
        step = math.sqrt(12.0 * theta)
        spans = torch.ceil(self.clip_sigmas * lam[:n_active].sqrt() / step).clamp_min(1)
        if n_active and float(spans[0]) > _MAX_SYMBOL:
            raise InputError(
                f"TransformCoder: at {kind}={value:g} the quantizer step ({step:.3g}) is below "
                f"the float64 resolution of the first component's coefficients (their symbols "
                f"would span +-{float(spans[0]):.3g}, beyond 2^52). Pass a lower rate or a "
                f"larger distortion."
            )
        self.n_active_ = n_active
        self.step_ = step
        self.max_symbols_ = spans.to(torch.int64)

    def at(self, *, rate: float | None = None, distortion: float | None = None) -> TransformCoder:
        """A copy at another operating point, sharing the fitted basis (no refit).

        Parameters
        ----------
        rate, distortion : float > 0
            Exactly one, as in the constructor.

        Returns
        -------
        TransformCoder
            A new fitted coder.

        Raises
        ------
        InputError
            If the coder is not fitted or the target is invalid.
        """
        self._check_fitted("at")
        other = copy.copy(self)
        other._target = self._check_target(rate, distortion, "TransformCoder.at")
        other._allocate()
        return other

    def _check_fitted(self, what: str) -> None:
        if not self._fitted:
            raise InputError(f"TransformCoder.{what} needs a fitted coder: call fit(X) first.")

    # -- the transform ---------------------------------------------------------------

    def transform(self, X: Any) -> torch.Tensor:
        r"""KLT coefficients :math:`Y = (X - \mu) U^\top`, all ``d`` of them, shape (n, d)."""
        self._check_fitted("transform")
        x = _samples(X, "TransformCoder.transform", dim=self.mean_.numel())
        return (x - self.mean_) @ self.components_.mT

    def inverse_transform(self, Y: Any) -> torch.Tensor:
        r"""Vectors :math:`X = \mu + Y_{:, :k} U_{:k}` from the first ``k`` coefficients.

        Returns a tensor of shape (n, d).

        ``Y`` may hold all ``d`` coefficients or only the first ``k`` (the missing ones
        are 0, i.e. at the mean).
        """
        self._check_fitted("inverse_transform")
        func = "TransformCoder.inverse_transform"
        y = _samples(Y, func, "Y")
        k = y.shape[1]
        if k > self.mean_.numel():
            raise InputError(
                f"The 'Y' argument of {func} has {k} coefficients per vector; the coder has "
                f"{self.mean_.numel()} components."
            )
        return self.mean_ + y @ self.components_[:k]

    def quantize(self, X: Any) -> torch.Tensor:
        r"""Integer symbols :math:`q_i = \mathrm{clip}(\mathrm{round}(y_i/\Delta), \pm M_i)`.

        Returns
        -------
        torch.Tensor of int64, shape (n, n_active_)
            One column per kept component (the others are dropped).
        """
        self._check_fitted("quantize")
        y = self.transform(X)[:, : self.n_active_]
        m = self.max_symbols_.to(torch.float64)
        # clipped before the cast, so an outlier far beyond the range cannot overflow int64
        return torch.round(torch.clamp(y / self.step_, -m, m)).to(torch.int64)

    def dequantize(self, symbols: Any) -> torch.Tensor:
        r"""Reconstructed vectors :math:`\hat x = \mu + \sum_i q_i \Delta\, u_i`, shape (n, d)."""
        self._check_fitted("dequantize")
        try:
            q = torch.as_tensor(symbols) if not isinstance(symbols, (str, bytes)) else None
        except (TypeError, ValueError, RuntimeError):
            q = None
        if q is None or q.device.type == "meta" or q.dtype.is_complex or q.dtype == torch.bool:
            raise InputError(
                f"The 'symbols' argument of TransformCoder.dequantize must be an integer "
                f"tensor of shape (n, {self.n_active_}) (from quantize); got "
                f"{type(symbols).__name__}"
                + (f" of dtype {str(q.dtype).replace('torch.', '')}" if q is not None else "")
                + (" on the meta device" if q is not None and q.device.type == "meta" else "")
                + "."
            )
        if q.ndim != 2 or q.shape[1] != self.n_active_ or q.dtype.is_floating_point:
            raise InputError(
                f"The 'symbols' argument of TransformCoder.dequantize must be integers of shape "
                f"(n, {self.n_active_}); got shape {tuple(q.shape)} and dtype "
                f"{str(q.dtype).replace('torch.', '')}."
            )
        y = q.to(torch.float64) * self.step_
        return self.mean_ + y @ self.components_[: self.n_active_]

    # -- measured rate and error -----------------------------------------------------

    def empirical_rate_bits(self, X: Any) -> float:
        """Operational rate on ``X``: the summed plug-in entropy of the symbols, bits per vector."""
        self._check_fitted("empirical_rate_bits")
        if self.n_active_ == 0:
            return 0.0
        return float(empirical_entropy_bits(self.quantize(X)).sum())

    def distortion(self, X: Any) -> float:
        """Measured error on ``X``: mean over vectors of :math:`\\|x - \\hat x\\|^2`."""
        self._check_fitted("distortion")
        x = _samples(X, "TransformCoder.distortion", dim=self.mean_.numel())
        xhat = self.dequantize(self.quantize(x))
        return float(((x - xhat) ** 2).sum(dim=1).mean())

    # -- the bitstream -----------------------------------------------------------------

    def __repr__(self) -> str:
        kind, value = self._target
        state = (
            f", {self.n_active_} of {self.mean_.numel()} components, step {self.step_:.4g}"
            if self._fitted
            else ", not fitted"
        )
        return f"TransformCoder({kind}={value:g}, model={self.model!r}{state})"
