r"""Operational curves of transform codes against the Gaussian bound of the same covariance.

:func:`rate_distortion_curve` runs a fitted :class:`~infospec.transforms.TransformCoder`
at several rates and tabulates, per operating point, the measured rate (plug-in entropy of
the symbols, and optionally the bitstream's length), the measured error, and the Gaussian
rate–distortion function :math:`R(D)` of the training covariance at the measured error:
the gap between the two is what the scalar quantizer and the entropy coder cost over the
bound (about 0.254 bits per kept component at high rate).

:func:`truncation_curve` measures the error of keeping ``k`` coordinates of each vector:
the first ``k`` as stored (a prefix, as Matryoshka embeddings are read), or the first
``k`` KLT components (the optimum among all ``k``-dimensional linear projections,
Eckart–Young), with the rest replaced by the mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._checks import check_positive, shown
from .._errors import InputError
from .._validation import binary_scale, check_bool, check_not_meta
from ..measures.water_filling import rate_distortion
from .coding import MEAN_ROUND_OFF, TransformCoder, _samples

__all__ = ["rate_distortion_curve", "truncation_curve"]


def _values(value: Any, name: str, func: str, example: str) -> list:
    """``value`` (a list, tuple, 1-D array or tensor, or any iterable) as a non-empty list."""
    given = value
    if isinstance(value, torch.Tensor):
        value = check_not_meta(value, name, func).detach().cpu().numpy()
    ok = not isinstance(value, str | bytes | Mapping) and isinstance(value, Iterable)
    if isinstance(value, np.ndarray):
        ok = value.ndim == 1
    items = list(value.tolist() if isinstance(value, np.ndarray) else value) if ok else []
    if not items:
        value = given
        raise InputError(
            f"The '{name}' argument of {func} must be a non-empty list of values, e.g. "
            f"{example}; got {shown(value)}."
        )
    return items


def _check_coder(coder: Any, d: int, func: str) -> TransformCoder:
    if not isinstance(coder, TransformCoder) or not coder._fitted:
        what = "an unfitted TransformCoder" if isinstance(coder, TransformCoder) else shown(coder)
        raise InputError(
            f"The 'coder' argument of {func} must be a fitted TransformCoder (call "
            f"TransformCoder(rate=...).fit(X) first) or None; got {what}."
        )
    if coder.mean_.numel() != d:
        raise InputError(
            f"The 'coder' argument of {func} was fitted on vectors of {coder.mean_.numel()} "
            f"coordinates; X has {d}."
        )
    return coder


def _overflow(func: str, peak: float) -> InputError:
    return InputError(
        f"{func}: the squared errors overflow float64 (values up to {peak:.3g}; beyond "
        f"about 1e154 they have no finite square). Divide X and test by one constant "
        f"first (rates and ratios are scale-free; distortions scale by its square)."
    )


def rate_distortion_curve(
    X: Any,
    rates: Sequence[float] | None = None,
    *,
    test: Any = None,
    coder: TransformCoder | None = None,
    bitstream: bool = False,
    model: str = "gaussian",
) -> pd.DataFrame:
    r"""The operational rate–distortion curve of a KLT transform code, beside the Gaussian bound.

    Parameters
    ----------
    X : tensor or array_like, shape (n, d)
        Training vectors: the covariance, the basis and the allocation come from them.
    rates : sequence of float > 0, optional
        Target rates in bits per vector; default 12 points from d/8 to 4d bits, spaced
        geometrically.
    test : tensor or array_like, shape (m, d), optional
        Vectors on which rate and error are measured (default ``X``: in-sample).
    coder : TransformCoder, optional
        An already fitted coder (its basis is reused; ``X`` is then only checked).
    bitstream : bool, default False
        Also encode the test vectors and report the bitstream's bits per vector (slower).
    model : {"gaussian", "laplace"}, default "gaussian"
        Entropy model of the bitstream.

    Returns
    -------
    pandas.DataFrame
        One row per target rate: ``target_rate_bits``, ``theta`` (water level),
        ``active`` (kept components), ``rate_bits`` (plug-in entropy of the symbols, bits
        per vector), ``distortion`` (measured mean squared error per vector, summed over
        coordinates), ``gaussian_rate_bits`` (:math:`R(D)` of the training covariance at
        the measured distortion), ``gap_bits`` (``rate_bits - gaussian_rate_bits``),
        ``gap_per_component`` (divided by ``active``), and ``bitstream_bits`` when
        ``bitstream=True``.

    Raises
    ------
    InputError
        If ``X`` or ``test`` is not a finite 2-D array of one width, ``rates`` is not a
        non-empty list of finite numbers > 0, ``coder`` is not a fitted
        :class:`TransformCoder` of that width, or the squared errors overflow float64
        (test values beyond about 1e154).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(20000, 4, generator=g, dtype=torch.float64) * torch.tensor([8., 4., 2., 1.])
    >>> curve = rate_distortion_curve(X, [16.0, 24.0], bitstream=True)
    >>> gap = (curve["bitstream_bits"] - curve["gaussian_rate_bits"]) / curve["active"]
    >>> [round(v, 2) for v in gap]  # about 0.254 bits per component at high rate
    [0.26, 0.26]

    The plug-in ``rate_bits`` is biased low by about ``(K - 1) / (2 n ln 2)`` bits per
    component for ``K`` distinct symbols, so at high rates on few vectors it falls below
    the bitstream's length; the bitstream, coded under a model fixed before seeing the
    test vectors, has no such bias.
    """
    check_bool(bitstream, "bitstream", "rate_distortion_curve")
    x = _samples(X, "rate_distortion_curve")
    func = "rate_distortion_curve"
    t = x if test is None else _samples(test, func, "test", dim=x.shape[1])
    d = x.shape[1]
    if rates is None:
        rates = np.geomspace(max(d / 8, 0.5), 4 * d, 12).tolist()
    rates = [check_positive(r, "rates", func) for r in _values(rates, "rates", func, "[8.0]")]
    if coder is None:
        coder = TransformCoder(rate=rates[0], model=model).fit(x)
    coder = _check_coder(coder, d, func)
    lam = coder.eigenvalues_
    rows = []
    for r in rates:
        point = coder.at(rate=r)
        symbols_rate = point.empirical_rate_bits(t)
        dist = point.distortion(t)
        if not math.isfinite(dist):
            raise _overflow(func, float(t.abs().max()))
        total = float(lam.sum())
        if dist < total:
            bound = float(rate_distortion(lam, dist, bits=True).rate)
        else:
            bound = 0.0
        row = {
            "target_rate_bits": float(r),
            "theta": point.theta_,
            "active": point.n_active_,
            "rate_bits": symbols_rate,
            "distortion": dist,
            "gaussian_rate_bits": bound,
            "gap_bits": symbols_rate - bound,
            "gap_per_component": (symbols_rate - bound) / max(point.n_active_, 1),
        }
        if bitstream:
            row["bitstream_bits"] = len(point.encode(t)) * 8 / t.shape[0]
        rows.append(row)
    return pd.DataFrame(rows)


def truncation_curve(
    X: Any, dims: Sequence[int] | None = None, *, test: Any = None
) -> pd.DataFrame:
    r"""Error of keeping ``k`` coordinates: the stored prefix against the top ``k`` KLT ones.

    For each ``k``, with the mean :math:`\mu` and the covariance eigenvectors
    :math:`u_1, \dots` of the training vectors:

    * ``prefix_distortion``: :math:`\mathbb E\|x - \hat x\|^2` with
      :math:`\hat x_j = x_j` for :math:`j < k` and :math:`\mu_j` otherwise;
    * ``klt_distortion``: :math:`\mathbb E\|x - \mu - \sum_{i<k} u_i u_i^\top (x - \mu)\|^2`,
      equal in-sample to :math:`\sum_{i \ge k} \lambda_i` (Eckart–Young: no projection on
      ``k`` dimensions does better);

    and their ratio. A prefix code that has learnt to put the principal directions first
    (Matryoshka training) approaches the KLT.

    Parameters
    ----------
    X : tensor or array_like, shape (n, d)
        Training vectors (mean and basis).
    dims : sequence of int, optional
        Values of ``k`` in [1, d]; default powers of two up to ``d``, and ``d``.
    test : tensor or array_like, shape (m, d), optional
        Where the errors are measured (default ``X``).

    Returns
    -------
    pandas.DataFrame
        Columns ``k``, ``prefix_distortion``, ``klt_distortion``, ``ratio``
        (prefix / KLT), ``total_variance``. An error below the round-off of the test
        vectors' energy, :math:`(16\,d\,\epsilon)^2` times ``total_variance``
        (:math:`\epsilon` the float64 epsilon), counts as 0 in the ratio: ``1`` where
        both errors are 0 (as at ``k = d``), ``inf`` where only the KLT error is.

    Raises
    ------
    InputError
        If an array is not finite 2-D of one width, ``dims`` is not a non-empty list of
        ints in [1, d], the training vectors are all the same (to round-off, at any
        scale: a coordinate whose spread is below ``MEAN_ROUND_OFF`` of its mean, and a
        test value that close to the mean, count as constant), or the distortions
        overflow float64 (data beyond about 1e154).

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[1.0, 10.0], [-1.0, -10.0], [1.0, -10.0], [-1.0, 10.0]])
    >>> truncation_curve(X, [1])[["prefix_distortion", "klt_distortion"]].values.tolist()
    [[100.0, 1.0]]
    """
    func = "truncation_curve"
    x = _samples(X, func)
    t = x if test is None else _samples(test, func, "test", dim=x.shape[1])
    d = x.shape[1]
    if dims is None:
        dims = sorted({min(d, 2**i) for i in range(int(np.log2(d)) + 1)} | {d})
    ks = []
    for k in _values(dims, "dims", func, "[1, 2, 4]"):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= d:
            raise InputError(
                f"The 'dims' argument of {func} must hold ints in [1, {d}]; got {shown(k)}."
            )
        ks.append(int(k))
    # in units of a power of two near max |X| (exact), then of one near the largest
    # centred test value: the ratios are scale-free, the distortions are multiplied back
    # by the square of both units, and no square under- or overflows on the way
    peak = float(t.abs().max())
    unit = float(binary_scale(x))
    x, t = x / unit, t / unit
    coder = TransformCoder(rate=1.0).fit(x)
    centred = t - coder.mean_
    # a difference below the round-off of the mean is none (constant data at any scale)
    centred = torch.where(centred.abs() <= MEAN_ROUND_OFF * coder.mean_.abs(), 0.0, centred)
    step = float(binary_scale(centred))
    unit, centred = unit * step, centred / step
    coeffs = centred @ coder.components_.mT
    total = float((centred**2).sum(dim=1).mean())
    tol = total * (16 * d * np.finfo(np.float64).eps) ** 2  # round-off of the energy
    area = unit * unit if total > 0 else 1.0  # all errors are 0 when total is
    if not math.isfinite(area * total):
        raise _overflow(func, peak)
    rows = []
    for k in ks:
        prefix = float((centred[:, k:] ** 2).sum(dim=1).mean())
        recon = coeffs[:, :k] @ coder.components_[:k]
        klt = float(((centred - recon) ** 2).sum(dim=1).mean())
        if klt > tol:
            ratio = prefix / klt
        else:
            ratio = 1.0 if prefix <= tol else math.inf
        rows.append(
            {
                "k": k,
                "prefix_distortion": prefix * area,
                "klt_distortion": klt * area,
                "ratio": ratio,
                "total_variance": total * area,
            }
        )
    return pd.DataFrame(rows)
