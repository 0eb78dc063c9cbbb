r"""One layer's activation covariance turned into the activation measures of the report.

Conventions, for a layer with ``dim`` features and ``samples`` rows (tokens, positions):

* eigenvalues :math:`\lambda_i` of the centred sample covariance (ddof 1), float64;
  those below the rounding floor
  :math:`\max(d\,\epsilon_{64}\lambda_{\max},\ 4\sqrt d\,\epsilon_{x}^2\,\bar\lambda)` are
  set to 0, and ``rank`` counts the rest. The first term is the eigensolver's; the second is
  that of the activations' own precision :math:`\epsilon_x` (float32:
  :math:`1.2\times10^{-7}`; bfloat16: :math:`7.8\times10^{-3}`): a LayerNorm output computed
  in float32 leaves its structurally zero direction at about :math:`10\,\epsilon_{32}^2\bar\lambda`
  (measured: :math:`1.3\times10^{-14}\bar\lambda` at d = 16, :math:`1.4\times10^{-13}\bar\lambda`
  at d = 384), which the floor clears by 4-8x. Outputs are often confined to a subspace exactly:
  a LayerNorm output sums to a constant across features (rank :math:`d-1`, and so does any
  linear map of it), an up-projection spans at most its input width, and a covariance of
  :math:`n < d` samples has rank :math:`\le n-1`;
* ``flatness`` and ``entropy_bits_per_dim`` are measured **on the support**, the ``rank``
  nonzero eigenvalues: the geometric over arithmetic mean of those, and the Gaussian
  differential entropy of the distribution on its ``rank``-dimensional support,
  :math:`\frac{1}{r}\big(\frac r2\log_2(2\pi e) + \frac12\sum_{\lambda_i>0}\log_2\lambda_i\big)`.
  For a full-rank layer they are the usual full-space values; for a rank-deficient one the
  full-space values are 0 and :math:`-\infty` whatever the layer does, which says nothing
  more than ``rank < dim`` already says. The entropy depends on the scale of the features,
  as every differential entropy does;
* ``coding_rate_bits``: the coding rate of MCR²/CRATE at ``eps`` of the centred features
  rescaled to unit mean squared norm (as MCR²'s normalised features):
  :math:`\frac12\log_2\det(I + \frac{d}{\epsilon^2}\tilde\Sigma)` with
  :math:`\tilde\Sigma = \Sigma/\operatorname{tr}\Sigma`, which is
  :func:`~infospec.gaussian_capacity` of :math:`\tilde\lambda` at noise variance
  :math:`\epsilon^2/d`;
* ``rate_bits``: Gaussian :math:`R(D)` at
  :math:`D = \text{rel\_distortion}\cdot\operatorname{tr}\Sigma`;
* ``capacity_bits``: seed 002's latent capacity
  :math:`\frac12\sum_i\log_2(1 + \lambda_i/t^2)` with noise variance
  :math:`t^2 = \text{rel\_noise}\cdot\bar\lambda` (scale-free);
* ``mp_num_spikes``: eigenvalues above the Marchenko–Pastur edge fitted with
  :math:`q = d/n`: directions that stand out of an isotropic-noise bulk;
* the self-supervised-learning measures of :mod:`infospec.measures.representation`, from
  the same eigenvalues, over every row accumulated (not one batch): ``rankme`` is RankMe
  of the **centred** features, whose singular values are
  :math:`\sqrt{(n-1)\lambda_i}`, so :func:`~infospec.measures.representation.entropy_rank`
  of :math:`\sqrt{\lambda}` at :math:`\varepsilon = 10^{-7}` (the paper's constant;
  the paper's uncentred RankMe needs the raw rows, which are not kept); ``nesum``
  :math:`\sum\lambda_i/\lambda_1`; ``alpha_req`` and ``alpha_req_r2`` the α-ReQ decay
  fitted over eigenvalue indices 10-99 (NaN below 12 nonzero eigenvalues, a rule
  stated in the column's meaning rather than repeated in every small layer's warning).
"""

from __future__ import annotations

from typing import Any

import torch

from .._errors import InfospecError
from ..measures.flatness import spectral_flatness
from ..measures.information import gaussian_entropy
from ..measures.marchenko_pastur import fit_marchenko_pastur
from ..measures.rank import effective_rank, participation_ratio
from ..measures.representation import ALPHA_REQ_FIT_RANGE, eigen_decay, entropy_rank, nesum
from ..measures.water_filling import gaussian_capacity, rate_distortion

__all__ = ["ACTIVATION_COLUMNS", "activation_record"]

NAN = float("nan")

ACTIVATION_COLUMNS: dict[str, str] = {
    "dim": "feature dimension d of the layer's output",
    "samples": "rows (tokens or positions) accumulated",
    "rank": "numerical rank: eigenvalues above the rounding floor (the support)",
    "flatness": "spectral flatness of the nonzero covariance eigenvalues (1 = whitened)",
    "effective_rank": "exp of the entropy of lambda / sum lambda",
    "participation_ratio": "(sum lambda)^2 / sum lambda^2",
    "entropy_bits_per_dim": "Gaussian differential entropy on the support, bits per dimension",
    "coding_rate_bits": "MCR2 coding rate at eps of the centred unit-energy features, bits",
    "rate_bits": "Gaussian R(D) at the relative distortion, bits per sample",
    "capacity_bits": "latent capacity 1/2 sum log2(1 + lambda / t^2), t^2 = rel_noise * mean",
    "mp_sigma2": "Marchenko-Pastur bulk variance with q = d / samples",
    "mp_num_spikes": "covariance eigenvalues above the MP bulk edge",
    "rankme": "RankMe of the centred features (entropy rank of sqrt(lambda), eps 1e-7)",
    "nesum": "sum lambda / max lambda",
    "alpha_req": "alpha-ReQ: decay exponent of lambda over indices 10-99 (NaN below rank 12)",
    "alpha_req_r2": "R^2 of the alpha-ReQ fit in log lambda",
}

#: RankMe's smoothing constant (Garrido et al. 2023).
RANKME_EPS = 1e-7


def activation_record(
    eigvals: torch.Tensor,
    samples: int,
    *,
    eps: float = 0.5,
    rel_distortion: float = 0.01,
    rel_noise: float = 0.1,
    input_dtype: torch.dtype = torch.float64,
) -> dict[str, Any]:
    """Every activation measure of one layer from its covariance eigenvalues.

    Parameters
    ----------
    eigvals : torch.Tensor, shape (d,)
        Covariance eigenvalues (non-negative).
    samples : int
        Number of rows behind the covariance.
    eps, rel_distortion, rel_noise : float
        See the module docstring.
    input_dtype : torch.dtype, default torch.float64
        Precision the activations were computed in; sets the rounding floor.

    Returns
    -------
    record : dict
        :data:`ACTIVATION_COLUMNS` as Python numbers plus ``warning``; measures that cannot
        be made are NaN with the reason in ``warning``.
    """
    warnings: list[str] = []
    lam = eigvals.detach().to(torch.float64).flatten().clamp_min(0)
    d = lam.numel()
    rec: dict[str, Any] = {"dim": d, "samples": samples}
    total = float(lam.sum())
    if total == 0:
        rec.update({k: NAN for k in ACTIVATION_COLUMNS if k not in rec})
        rec["warning"] = "constant activations: zero covariance"
        return rec
    # eigenvalues below the round-off floor of the eigensolver are noise: make them exact
    # zeros, so that the support (and rank) of a rank-deficient output is exact
    eps_x = torch.finfo(input_dtype).eps if input_dtype.is_floating_point else 0.0
    floor = max(
        d * torch.finfo(torch.float64).eps * float(lam.max()), 4 * d**0.5 * eps_x**2 * total / d
    )
    lam = torch.where(lam > floor, lam, torch.zeros_like(lam))
    rec["rank"] = int((lam > 0).sum())
    support = lam[lam > 0]
    rec["flatness"] = float(spectral_flatness(support))
    rec["effective_rank"] = float(effective_rank(lam))
    rec["participation_ratio"] = float(participation_ratio(lam))
    rec["entropy_bits_per_dim"] = float(gaussian_entropy(support, bits=True)) / support.numel()
    unit = lam / total
    rec["coding_rate_bits"] = float(gaussian_capacity(unit, eps * eps / d, bits=True))
    rec["rate_bits"] = float(rate_distortion(lam, rel_distortion * total, bits=True).rate)
    rec["capacity_bits"] = float(gaussian_capacity(lam, rel_noise * total / d, bits=True))
    try:
        fit = fit_marchenko_pastur(lam, d / max(samples, 1))
        rec["mp_sigma2"] = float(fit.sigma2)
        rec["mp_num_spikes"] = int(fit.num_spikes)
    except InfospecError as exc:
        rec["mp_sigma2"] = rec["mp_num_spikes"] = NAN
        warnings.append(f"Marchenko-Pastur fit: {exc}")
    rec["rankme"] = float(entropy_rank(torch.sqrt(lam), eps=RANKME_EPS))
    rec["nesum"] = float(nesum(lam))
    if rec["rank"] >= ALPHA_REQ_FIT_RANGE[0] + 2:
        decay = eigen_decay(lam, fit_range=ALPHA_REQ_FIT_RANGE)
        rec["alpha_req"], rec["alpha_req_r2"] = float(decay.alpha), float(decay.r2)
    else:  # too few eigenvalues to fit: NaN by the column's stated rule, not a warning
        rec["alpha_req"] = rec["alpha_req_r2"] = NAN
    rec["warning"] = "; ".join(warnings)
    return rec
