r"""Spectral flatness and the variance of a log-spectrum.

Both read a spectrum of non-negative values along one axis: power-spectrum bins,
covariance eigenvalues, or singular values of a weight matrix (seed 001, section 1).
"""

from __future__ import annotations

import torch

from .._checks import shown, shown_str
from .._errors import InputError
from .._validation import (
    as_float_tensor,
    check_eigenvalues,
    check_positive,
    first_index,
    unit_peak,
)

__all__ = ["log_spectrum_variance", "spectral_flatness"]


def _prepare(values, name: str, func: str, dim: int, amin: float) -> torch.Tensor:
    v = as_float_tensor(values, name, func)
    if v.ndim == 0:
        raise InputError(
            f"The '{name}' argument of {func} must have at least 1 dimension; got a scalar."
        )
    if isinstance(dim, bool) or not isinstance(dim, int) or not -v.ndim <= dim < v.ndim:
        raise InputError(
            f"The 'dim' parameter of {func} must be in [{-v.ndim}, {v.ndim - 1}] for an input "
            f"of shape {tuple(v.shape)}. Got {shown_str(dim)} instead."
        )
    v = check_eigenvalues(v.movedim(dim, -1), name, func)
    amin = check_positive(amin, "amin", func, allow_zero=True)
    return v.clamp_min(amin) if amin > 0 else v


def spectral_flatness(values, *, dim: int = -1, amin: float = 0.0) -> torch.Tensor:
    r"""Spectral flatness: geometric mean over arithmetic mean of a non-negative spectrum.

    .. math::

        \mathrm{SFM}(v) = \frac{\left(\prod_{k=1}^{M} v_k\right)^{1/M}}
                               {\frac{1}{M}\sum_{k=1}^{M} v_k}
                        = \exp\!\Big(\overline{\log v} - \log \overline{v}\Big)

    computed in the log domain so that long spectra do not under- or overflow.
    The same formula serves a power spectrum (:math:`v = |X(f)|^2`), the eigenvalues of a
    covariance (:math:`\mathrm{SFM}_{\text{rep}}`, 1 for whitened features) and the singular
    values of a weight matrix (:math:`\mathrm{SFM}_W` of seed 001; pass :math:`\sigma_i`,
    or :math:`\sigma_i^2` for the flatness of :math:`W^\top W`).

    Parameters
    ----------
    values : tensor or array_like, shape (..., M)
        Non-negative spectrum along ``dim``; leading axes are a batch of spectra.
    dim : int, default -1
        Axis holding the spectrum.
    amin : float >= 0, default 0
        Floor applied to the values before the logarithm. With the default 0 the result
        is exact: any zero value makes the geometric mean, and the flatness, exactly 0
        (and its gradient undefined). Use a small positive ``amin`` (e.g. ``1e-10`` of the
        scale) for a finite gradient, as librosa does.

    Returns
    -------
    flatness : torch.Tensor, shape (...)
        Dimensionless, in [0, 1]: 1 for a white (constant) spectrum, 0 when a value is 0,
        close to 0 for a pure tone. Invariant to scaling and to permutation of the values.
        float64 unless ``values`` is a lower-precision tensor that requires grad.

    Raises
    ------
    InputError
        If ``values`` is empty or a scalar, holds NaN/Inf or significantly negative values
        (round-off negatives are clipped with a warning), if a spectrum is entirely zero
        (flatness is then undefined, 0/0), or if ``dim`` or ``amin`` are invalid.

    References
    ----------
    N. S. Jayant and P. Noll, *Digital Coding of Waveforms*, Prentice-Hall, 1984
    (spectral flatness measure). J. D. Johnston, "Transform coding of audio signals using
    perceptual noise criteria", IEEE JSAC 6(2), 1988.

    Examples
    --------
    >>> from infospec import spectral_flatness
    >>> float(spectral_flatness([2.0, 2.0, 2.0, 2.0]))
    1.0
    >>> float(spectral_flatness([1.0, 0.0, 0.0, 0.0]))
    0.0
    >>> round(float(spectral_flatness([1.0, 4.0])), 4)  # sqrt(4) / 2.5
    0.8
    """
    func = "spectral_flatness"
    v = _prepare(values, "values", func, dim, amin)
    v = unit_peak(v)  # the ratio is scale-free; keeps the mean finite near the float maximum
    mean = v.mean(dim=-1)
    if bool((mean == 0).any()):
        idx = first_index(mean == 0)
        where = f" (batch index {idx})" if idx else ""
        raise InputError(
            f"The 'values' argument of {func} holds an all-zero spectrum{where}; flatness "
            f"(geometric / arithmetic mean) is undefined for it. Drop it or add a floor "
            f"with amin > 0."
        )
    log_gm = torch.log(v).mean(dim=-1)  # -inf when a value is 0; exp(-inf) = 0 exactly
    return torch.exp(log_gm - torch.log(mean))


def log_spectrum_variance(
    values, *, dim: int = -1, amin: float = 0.0, ddof: int = 0
) -> torch.Tensor:
    r"""Variance of the logarithm of a spectrum, :math:`\mathrm{Var}[\log \sigma_i]`.

    .. math::

        V(\sigma) = \frac{1}{r - \text{ddof}} \sum_{i=1}^{r}
                    \left(\log \sigma_i - \overline{\log \sigma}\right)^2

    The weight-flatness penalty of seed 001 (:math:`\gamma\,\mathrm{Var}[\log\sigma_i(W)]`):
    0 exactly when all singular values are equal, growing as the spectrum spreads. It is a
    second-order companion of :func:`spectral_flatness`: for a log-normal spread
    :math:`-\log \mathrm{SFM} \approx V/2`.

    Parameters
    ----------
    values : tensor or array_like, shape (..., r)
        Positive spectrum (singular values, eigenvalues) along ``dim``.
    dim : int, default -1
        Axis holding the spectrum.
    amin : float >= 0, default 0
        Floor applied before the logarithm. With 0, a zero value gives ``+inf`` (its log is
        :math:`-\infty`), returned exactly; use ``amin > 0`` inside a loss.
    ddof : int >= 0, default 0
        Delta degrees of freedom (0: population variance, the regulariser's convention).

    Returns
    -------
    variance : torch.Tensor, shape (...)
        In squared nats (natural log). Invariant to scaling (:math:`\log c\sigma` shifts
        every term) and to permutation.

    Raises
    ------
    InputError
        If ``values`` is empty, non-finite or significantly negative, if ``ddof`` is not
        smaller than the spectrum length, or ``dim``/``amin`` are invalid.

    References
    ----------
    A. Lewandowski, M. Bortkiewicz, S. Kumar, A. György, D. Schuurmans, M. Ostaszewski,
    M. C. Machado, "Learning Continually by Spectral Regularization", arXiv:2406.06811, 2024.

    Examples
    --------
    >>> from infospec import log_spectrum_variance
    >>> float(log_spectrum_variance([3.0, 3.0, 3.0]))
    0.0
    >>> import math
    >>> round(float(log_spectrum_variance([1.0, math.e ** 2])), 6)  # logs 0 and 2
    1.0
    """
    func = "log_spectrum_variance"
    v = _prepare(values, "values", func, dim, amin)
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        raise InputError(
            f"The 'ddof' parameter of {func} must be an int >= 0. Got {shown(ddof)} instead."
        )
    r = v.shape[-1]
    if ddof >= r:
        raise InputError(
            f"The 'ddof' parameter of {func} must be smaller than the spectrum length {r} "
            f"(shape {tuple(v.shape)}). Got {shown_str(ddof)} instead."
        )
    has_zero = (v == 0).any(dim=-1)
    safe = torch.where(has_zero.unsqueeze(-1), torch.ones_like(v), v)
    logs = torch.log(safe)
    var = logs.var(dim=-1, correction=ddof)
    return torch.where(has_zero, torch.full_like(var, float("inf")), var)
