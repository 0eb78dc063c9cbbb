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

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._checks import shown
from .._errors import InputError
from .._validation import binary_scale, check_bool
from ..measures.information import rate_distortion
from .coding import TransformCoder, _samples

__all__ = ["rate_distortion_curve", "truncation_curve"]


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
        If ``X`` or ``test`` is not a finite 2-D array of one width, or a rate is not > 0.

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
    t = x if test is None else _samples(test, "rate_distortion_curve", "test", dim=x.shape[1])
    if coder is None:
        first = 1.0 if rates is None else rates[0]
        coder = TransformCoder(rate=first, model=model).fit(x)
    d = x.shape[1]
    if rates is None:
        rates = np.geomspace(max(d / 8, 0.5), 4 * d, 12).tolist()
    lam = coder.eigenvalues_
    rows = []
    for r in rates:
        point = coder.at(rate=r)
        symbols_rate = point.empirical_rate_bits(t)
        dist = point.distortion(t)
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
        (prefix / KLT; ``inf`` where the KLT error is 0), ``total_variance``.

    Raises
    ------
    InputError
        If an array is not finite 2-D of one width, or a ``k`` is outside [1, d].

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
    for k in dims:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= d:
            raise InputError(
                f"The 'dims' argument of {func} must hold ints in [1, {d}]; got {shown(k)}."
            )
        ks.append(int(k))
    # in units of a power of two near max |X| (exact): the ratios are scale-free, the
    # distortions are multiplied back by unit^2, and no square under- or overflows
    unit = float(binary_scale(x))
    x, t = x / unit, t / unit
    coder = TransformCoder(rate=1.0).fit(x)
    mean = coder.mean_
    centred = t - mean
    coeffs = centred @ coder.components_.mT
    area = unit * unit  # may overflow to inf for |X| beyond ~1e154: so do the distortions
    total = float((centred**2).sum(dim=1).mean())
    rows = []
    for k in ks:
        prefix = float((centred[:, k:] ** 2).sum(dim=1).mean())
        recon = coeffs[:, :k] @ coder.components_[:k]
        klt = float(((centred - recon) ** 2).sum(dim=1).mean())
        rows.append(
            {
                "k": k,
                "prefix_distortion": prefix * area,
                "klt_distortion": klt * area,
                "ratio": prefix / klt if klt > 0 else float("inf"),
                "total_variance": total * area,
            }
        )
    return pd.DataFrame(rows)
