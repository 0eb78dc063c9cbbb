r"""One weight matrix's spectrum turned into every weight measure of the report.

The singular values are computed once (:func:`infospec.singular_values`) and every measure
reads them. Conventions (the ESD is that of WeightWatcher, so alphas compare):

* ``W`` is ``rows x cols`` = out x in (see :mod:`infospec.spectra.conventions`);
  :math:`N = \max(\text{rows}, \text{cols})`, :math:`M = \min(\text{rows}, \text{cols})`.
* The empirical spectral density (ESD) is :math:`\lambda_i = \sigma_i^2`, the eigenvalues
  of :math:`W^\top W`, unnormalised (as WeightWatcher). The power-law fit reads them.
* The Marchenko–Pastur fit reads :math:`\lambda_i / N`, the eigenvalues of
  :math:`W^\top W / N`, with aspect ratio :math:`q = M/N`, so that ``mp_sigma2`` is the
  variance of a weight entry when ``W`` is pure noise.
* The bits: the ``cols`` columns of ``W`` are treated as samples of a Gaussian vector of
  dimension ``rows`` with second moment :math:`W W^\top/\text{cols}` (eigenvalues
  :math:`\sigma_i^2/\text{cols}`); ``rate_bits`` is its rate-distortion function
  :math:`R(D)` in bits per column at the total squared error
  :math:`D = \text{rel\_distortion}\cdot\|W\|_F^2/\text{cols}`, and ``bits_per_param`` is
  :math:`R(D)/\text{rows}`: what an optimal transform code needs per weight to keep
  ``1 - rel_distortion`` of the energy.

A **pooled** convolution (``conv="pooled"``, the default of :func:`infospec.analyze`,
WeightWatcher's convention; see :mod:`infospec.spectra.conventions`) has ``P`` kernel
positions, each an ``out x in`` matrix :math:`W^{(p)}`; its one row reads the
concatenation of their singular values, :math:`P \min(\text{out}, \text{in})` of them:

* ``rows``, ``cols`` are ``out`` and ``in`` (one position's matrix), ``params`` is
  :math:`P \cdot \text{rows} \cdot \text{cols}` (every weight of the kernel), ``sigma_max``
  is the largest over positions and ``frobenius_norm`` that of the whole kernel;
* ``N``, ``M`` and ``mp_q = M/N`` are those of one position's matrix, and the
  Marchenko–Pastur fit reads the pooled :math:`\lambda/N` (each position's
  :math:`W^{(p)\top} W^{(p)}/N` is one draw of the same law when the kernel is noise;
  each position adds its own chance of a largest eigenvalue past the edge, so a noise
  kernel of 9 positions gave 0 to 5 ``mp_num_spikes`` in 15 seeded Gaussian draws);
* the power-law fit, ``stable_rank`` (:math:`\sum\lambda/\lambda_{\max}`), the norms and
  the flatness read the pooled ESD, as WeightWatcher (which halves every conv
  eigenvalue, so its ``log_norm`` is lower by :math:`\log_{10}2`; the module
  docstring of :mod:`infospec.spectra.conventions` lists the differences);
* the bits: an input channel's weights at every position, a vector of dimension
  :math:`P\cdot\text{rows}`, is one of the ``cols`` samples, with the positions'
  blocks taken as uncorrelated, so its second moment is block-diagonal with eigenvalues
  the pooled :math:`\sigma^2/\text{cols}`. ``rate_bits`` is :math:`R(D)` per input
  channel, reverse water-filling over all blocks at once at
  :math:`D = \text{rel\_distortion}\cdot\|K\|_F^2/\text{cols}`, and
  ``bits_per_param`` is :math:`R(D)/(P\cdot\text{rows})`, so that
  ``bits_per_param * params`` is the total in both readings.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch

from .._errors import InfospecError, InputError
from ..measures.flatness import log_spectrum_variance, spectral_flatness
from ..measures.marchenko_pastur import fit_marchenko_pastur
from ..measures.power_law import WW_EIGENVALUE_THRESHOLD, fit_power_law
from ..measures.rank import effective_rank
from ..measures.water_filling import rate_distortion

__all__ = ["WEIGHT_COLUMNS", "weight_record"]

NAN = float("nan")
#: Largest singular values whose squares (and sums of squares) float64 holds with full
#: precision; outside, the spectrum is read in units of a power of two.
_SAFE_LOW, _SAFE_HIGH = 1e-150, 1e150

#: Column name -> meaning, in report order (names and layout columns come first).
WEIGHT_COLUMNS: dict[str, str] = {
    "rows": "rows of W (out features)",
    "cols": "columns of W (in features, x kernel positions when a conv is flattened)",
    "params": "number of entries of W (of every kernel position's W when pooled)",
    "sigma_max": "largest singular value (spectral norm of W)",
    "frobenius_norm": "Frobenius norm of W",
    "stable_rank": "||W||_F^2 / ||W||_2^2",
    "effective_rank": "exp of the entropy of sigma / sum sigma (Roy & Vetterli)",
    "flatness": "spectral flatness of the singular values (geometric / arithmetic mean)",
    "log_sigma_var": "Var[log sigma_i] (seed 001's weight-flatness penalty)",
    "mp_q": "aspect ratio q = M/N of the Marchenko-Pastur fit",
    "mp_sigma2": "bulk variance per entry fitted by Marchenko-Pastur",
    "mp_upper_edge": "MP bulk edge sigma2 (1 + sqrt q)^2, eigenvalue of W^T W / N",
    "mp_num_spikes": "eigenvalues of W^T W / N above the MP bulk edge",
    "mp_ks": "KS distance between the bulk and the fitted MP law",
    "alpha": "power-law exponent of the ESD tail (MLE, xmin by min KS; WeightWatcher's)",
    "alpha_xmin": "start of the power-law tail (an eigenvalue of W^T W)",
    "alpha_ks": "KS distance of the power-law fit",
    "alpha_sigma": "standard error of alpha",
    "alpha_num_tail": "eigenvalues in the power-law tail",
    "alpha_weighted": "alpha * log10(lambda_max) (WeightWatcher)",
    "log_norm": "log10 of ||W||_F^2 = log10 sum lambda (WeightWatcher)",
    "log_spectral_norm": "log10 lambda_max = log10 sigma_max^2 (WeightWatcher)",
    "log_alpha_norm": "log10 sum lambda^alpha (WeightWatcher)",
    "rate_bits": "Gaussian R(D) of the columns of W at the relative distortion, bits/column",
    "bits_per_param": "rate_bits / rows: bits per weight of an optimal transform code",
}


def _fail(warnings: list[str], what: str, exc: Exception) -> None:
    warnings.append(f"{what}: {exc}")


def weight_record(
    sigma: torch.Tensor,
    *,
    rows: int,
    cols: int,
    rel_distortion: float = 0.01,
    fit_power: bool = True,
    fit_mp: bool = True,
) -> dict[str, Any]:
    """Every weight measure of one matrix from its singular values.

    Parameters
    ----------
    sigma : torch.Tensor, shape (min(rows, cols),) or (P, min(rows, cols))
        Singular values of ``W`` (float64, any order, on any device); 2-D: those of a
        stack of ``P`` matrices (a pooled convolution's kernel positions), pooled into
        one ESD as in the module docstring.
    rows, cols : int
        Shape of ``W`` (of each matrix of the stack) as out x in.
    rel_distortion : float in (0, 1]
        Relative squared error of the rate column.
    fit_power, fit_mp : bool
        Whether to make the power-law and Marchenko-Pastur fits.

    Returns
    -------
    record : dict
        The :data:`WEIGHT_COLUMNS` as Python numbers, plus ``warning`` (a string, empty
        when every measure could be made). A measure that cannot be made is NaN and its
        reason is in ``warning``; this function does not raise for degenerate spectra.
    """
    warnings: list[str] = []
    positions = sigma.shape[0] if sigma.ndim == 2 else 1
    s = sigma.detach().to(torch.float64).flatten()
    top = float(s.max()) if s.numel() else 0.0
    # weights beyond about 1e+-150 have squares outside float64: the spectrum is read in
    # units of a power of two 2^e (exact), the scale-free measures are unchanged and the
    # logs and eigenvalue columns are moved back by 2e log 2 (e = 0 otherwise, bit for bit
    # the unscaled computation)
    e = math.frexp(top)[1] if top > 0 and not _SAFE_LOW <= top <= _SAFE_HIGH else 0
    if e:
        s = torch.ldexp(s, torch.tensor(-e, dtype=torch.int32))
    lam = s * s
    log10_unit = 2 * e * math.log10(2)  # log10 of the unit of lam
    n_big, m_small = max(rows, cols), min(rows, cols)
    total = float(lam.sum())
    lam_max = float(lam.max()) if lam.numel() else 0.0
    rec: dict[str, Any] = {
        "rows": rows,
        "cols": cols,
        "params": positions * rows * cols,
        "sigma_max": top,
        "frobenius_norm": math.ldexp(math.sqrt(total), e),
    }
    if lam_max == 0:
        warnings.append("zero matrix: spectral measures undefined")
        rec.update({k: NAN for k in WEIGHT_COLUMNS if k not in rec})
        rec["warning"] = "; ".join(warnings)
        return rec
    out_of_range: list[str] = []

    def eigenvalue(value: float, column: str) -> float:
        """An eigenvalue of the unit's scale moved back to W's, or NaN beyond float64."""
        try:
            back = math.ldexp(value, 2 * e)
        except OverflowError:
            back = math.inf
        if value and not (sys.float_info.min <= back < math.inf):
            out_of_range.append(column)
            return NAN
        return back

    rec["stable_rank"] = total / lam_max
    rec["effective_rank"] = float(effective_rank(s))
    rec["flatness"] = float(spectral_flatness(s))
    rec["log_sigma_var"] = float(log_spectrum_variance(s))

    rec["mp_q"] = m_small / n_big
    mp = dict.fromkeys(("mp_sigma2", "mp_upper_edge", "mp_num_spikes", "mp_ks"), NAN)
    if fit_mp:
        try:
            fit = fit_marchenko_pastur(lam / n_big, m_small / n_big)
            mp = {
                "mp_sigma2": eigenvalue(float(fit.sigma2), "mp_sigma2"),
                "mp_upper_edge": eigenvalue(float(fit.upper_edge), "mp_upper_edge"),
                "mp_num_spikes": int(fit.num_spikes),
                "mp_ks": float(fit.ks_distance),
            }
        except InfospecError as exc:
            _fail(warnings, "Marchenko-Pastur fit", exc)
    rec.update(mp)

    pl = dict.fromkeys(("alpha", "alpha_xmin", "alpha_ks", "alpha_sigma", "alpha_num_tail"), NAN)
    if fit_power:
        # WeightWatcher's threshold is absolute (on W's eigenvalues): in the unit's scale
        try:
            threshold = math.ldexp(WW_EIGENVALUE_THRESHOLD, -2 * e)
        except OverflowError:
            threshold = math.inf
        try:
            if not math.isfinite(threshold):
                largest = math.log10(lam_max) + log10_unit
                raise InputError(
                    f"every eigenvalue of W^T W (the largest about 10^{largest:.4g}) is "
                    f"below WeightWatcher's threshold {WW_EIGENVALUE_THRESHOLD:g}"
                )
            fit = fit_power_law(lam, threshold=threshold)
            pl = {
                "alpha": float(fit.alpha),
                "alpha_xmin": eigenvalue(float(fit.xmin), "alpha_xmin"),
                "alpha_ks": float(fit.ks_distance),
                "alpha_sigma": float(fit.sigma),
                "alpha_num_tail": int(fit.num_tail),
            }
        except InfospecError as exc:
            _fail(warnings, "power-law fit", exc)
    rec.update(pl)
    alpha = pl["alpha"]
    rec["log_norm"] = math.log10(total) + log10_unit
    rec["log_spectral_norm"] = math.log10(lam_max) + log10_unit
    rec["alpha_weighted"] = alpha * rec["log_spectral_norm"]
    if math.isnan(alpha):
        rec["log_alpha_norm"] = NAN
    else:
        # log10 sum lam^alpha, computed stably in the log domain
        rec["log_alpha_norm"] = (
            float(torch.logsumexp(alpha * torch.log(lam[lam > 0]), dim=0) / math.log(10))
            + alpha * log10_unit
        )

    col_eig = lam / cols  # the rate is scale-free: read in the unit's scale
    rd = rate_distortion(col_eig, rel_distortion * float(col_eig.sum()), bits=True)
    rec["rate_bits"] = float(rd.rate)
    rec["bits_per_param"] = rec["rate_bits"] / (positions * rows)
    if out_of_range:
        warnings.append(
            f"{', '.join(out_of_range)}: eigenvalues of W^T W outside the float64 range "
            f"(weights of magnitude about 10^{math.log10(top):.4g}); the other columns are "
            f"computed in units of 2^{2 * e}"
        )
    rec["warning"] = "; ".join(warnings)
    return rec
