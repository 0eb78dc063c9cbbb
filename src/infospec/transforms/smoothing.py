r"""Spectral interventions on a model: SVD smoothing, SVD sharpening and RMT-KD projection.

Each function returns a modified deep copy (the input model is untouched), runs on the
model's device, and computes each SVD or eigendecomposition in float64 (bf16/fp16/fp32
weights are upcast per matrix and cast back).

* :func:`svd_smooth` keeps only the top components of each weight matrix: those above the
  fitted Marchenko-Pastur bulk edge (``keep="mp_edge"``), the top ``k``, or a fraction of
  the rank (WeightWatcher's ``SVDSmoothing``, which keeps the top ``num_smooth``).
* :func:`svd_sharpen` acts on the spikes instead. WeightWatcher 0.7's ``SVDSharpness``
  (read from its source: ``apply_svd_sharpness`` fits the MP law, sets ``num_smooth =
  -num_spikes`` and ``smooth_W_alt`` then *zeroes* the top ``num_spikes`` singular
  values) removes them; ``mode="clip"`` (the default here) lowers each singular value above
  the bulk edge to the edge instead, so the directions stay with their noise-level scale;
  ``mode="remove"`` is WeightWatcher's.
* :func:`rmt_project` is the RMT-KD step on activations: the directions of a layer's output
  covariance whose eigenvalues lie above its MP edge are kept and the projection
  :math:`y \mapsto \bar y + V_k V_k^\top (y - \bar y)` is inserted after the layer.

MP conventions (:mod:`infospec.measures.marchenko_pastur`): for a weight :math:`W` of shape
:math:`N \times M`, :math:`N \ge M`, the eigenvalues :math:`\sigma_i^2 / N` with
:math:`q = M / N`; the bulk edge in singular values is :math:`\sqrt{N \lambda_+}`. For
activations (:math:`n` rows of width :math:`d`), the covariance eigenvalues with
:math:`q = d / n`.

References
----------
C. H. Martin and M. W. Mahoney, WeightWatcher (``SVDSmoothing``, ``SVDSharpness``),
https://github.com/CalculatedContent/WeightWatcher, and "Implicit self-regularization in
deep neural networks", JMLR 22(165), 2021.
D. Ettori, N. Darabi, S. Senthilkumar and A. R. Trivedi, "RMT-KD: Random matrix theoretic
causal knowledge distillation", 2025.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .._checks import shown, shown_str
from .._errors import InputError
from .._names import match_names
from .._validation import check_choice, check_module
from ..measures.marchenko_pastur import fit_marchenko_pastur
from ..spectra.activations import ActivationCovariances, first_tensor
from .lowrank import MHA_OUT_PROJ, root_linear_hint

__all__ = ["ProjectedOutput", "rmt_project", "svd_sharpen", "svd_smooth"]

_LINEAR = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)


def _layers(
    model: nn.Module, layers, func: str, *, linear: bool = True, root: bool = False
) -> dict[str, nn.Module]:
    """The chosen modules: every nn.Linear by default; with a pattern, the linear ones matched
    (when ``linear`` is False and the pattern matches no nn.Linear: the modules matched
    that are not ModuleList / ModuleDict containers, which never run)."""
    check_module(model, func)
    if root and layers is None and type(model) in _LINEAR:
        return {"": model}  # a bare layer, changed in place (its weight, not the module)
    named = [(n, m) for n, m in model.named_modules() if n]
    if layers is None:
        out = {n: m for n, m in named if type(m) in _LINEAR}
    else:
        picked = set(
            match_names([n for n, _ in named], layers, param="layers", func=func, what="module")
        )
        out = {n: m for n, m in named if n in picked and type(m) in _LINEAR}
        if not out and not linear:
            containers = (nn.ModuleList, nn.ModuleDict)
            out = {n: m for n, m in named if n in picked and not isinstance(m, containers)}
    if not out:
        if layers is None:
            root_linear_hint(model, func)
        raise InputError(f"{func}: layers={shown(layers)} chose no nn.Linear layer.")
    return out


def _bulk_edge(s: torch.Tensor, shape: tuple[int, int]) -> tuple[float, int]:
    """(singular-value MP edge, number of singular values above it) of a matrix."""
    big, small = max(shape), min(shape)
    fit = fit_marchenko_pastur((s**2 / big).cpu(), small / big)
    return math.sqrt(float(fit.upper_edge) * big), int(fit.num_spikes)


def _keep_count(keep: Any, s: torch.Tensor, shape, name: str) -> int:
    rank = s.numel()
    if keep == "mp_edge":
        return max(1, _bulk_edge(s, shape)[1])
    if isinstance(keep, bool) or not isinstance(keep, int | float):
        raise InputError(
            f"svd_smooth: keep must be 'mp_edge', an int >= 1 or a float in (0, 1]; got "
            f"{shown(keep)}."
        )
    if isinstance(keep, int):
        if keep < 1:
            raise InputError(f"svd_smooth: keep={keep} must be >= 1.")
        return min(keep, rank)
    if not 0 < keep <= 1:
        raise InputError(
            f"svd_smooth: a fractional keep must lie in (0, 1]; got {shown_str(keep)}."
        )
    return max(1, math.ceil(keep * rank - 1e-9))


def _rewrite(model: nn.Module, layers, func: str, change) -> tuple[nn.Module, list[dict]]:
    check_module(model, func)
    out = copy.deepcopy(model)
    records = []
    for name, lin in _layers(out, layers, func, root=True).items():
        w = lin.weight.detach()
        if not bool(torch.isfinite(w).all()):
            raise InputError(
                f"{func}: the weight of layer '{name}' holds NaN or Inf; it has no spectrum "
                f"to change. Repair the weight, or leave the layer out with layers=."
            )
        if not bool((w != 0).any()):  # nothing to smooth or sharpen: left as it is
            records.append({"name": name, "shape": list(w.shape), "skipped": "all-zero weight"})
            continue
        u, s, vh = torch.linalg.svd(w.to(torch.float64), full_matrices=False)
        s_new, rec = change(s, tuple(w.shape), name)
        with torch.no_grad():
            lin.weight.copy_(((u * s_new) @ vh).to(w.dtype))
        records.append({"name": name, "shape": list(w.shape), **rec})
    out.spectral_changes = records  # what each layer went through, for reports
    return out, records


def svd_smooth(model: nn.Module, keep: str | int | float = "mp_edge", *, layers=None) -> nn.Module:
    r"""Keep the top components of each linear weight (WeightWatcher's SVDSmoothing).

    :math:`W = \sum_i \sigma_i u_i v_i^\top \mapsto \sum_{i \le k} \sigma_i u_i v_i^\top`
    with :math:`k` = the number of singular values above the fitted MP bulk edge (at least
    1) for ``keep="mp_edge"``, ``keep`` itself for an int, :math:`\lceil
    \text{keep}\cdot\operatorname{rank}\rceil` for a float in (0, 1].

    Returns
    -------
    nn.Module
        A deep copy with the smoothed weights (same architecture); its attribute
        ``spectral_changes`` lists per layer the kept count ``k``.

    Examples
    --------
    >>> import torch
    >>> from infospec.transforms import svd_smooth
    >>> lin = torch.nn.Linear(8, 6)
    >>> out = svd_smooth(torch.nn.Sequential(lin), keep=2)
    >>> s = torch.linalg.svdvals(out[0].weight.detach())
    >>> bool(s[2:].max() < 1e-5 * s[0]), out.spectral_changes[0]["kept"]
    (True, 2)
    """

    def change(s, shape, name):
        k = _keep_count(keep, s, shape, name)
        s_new = s.clone()
        s_new[k:] = 0
        return s_new, {"kept": k, "of": s.numel()}

    return _rewrite(model, layers, "svd_smooth", change)[0]


def svd_sharpen(model: nn.Module, *, mode: str = "clip", layers=None) -> nn.Module:
    r"""Lower the spikes of each linear weight to the MP bulk edge (SVDSharpness).

    With :math:`\sigma_+ = \sqrt{N\lambda_+}` the bulk edge of the fitted MP law (module
    docstring), ``mode="clip"`` maps :math:`\sigma_i \mapsto \min(\sigma_i, \sigma_+)`;
    ``mode="remove"`` sets the singular values above the edge to 0, as WeightWatcher 0.7's
    ``SVDSharpness`` does. The bulk is left unchanged.

    Returns
    -------
    nn.Module
        A deep copy; ``spectral_changes`` lists per layer the edge and the spike count.
    """
    mode = check_choice(mode, "mode", "svd_sharpen", ("clip", "remove"))

    def change(s, shape, name):
        edge, spikes = _bulk_edge(s, shape)
        s_new = s.clone()
        s_new[:spikes] = edge if mode == "clip" else 0.0
        return s_new, {"edge": edge, "spikes": spikes}

    return _rewrite(model, layers, "svd_sharpen", change)[0]


class ProjectedOutput(nn.Module):
    r"""A module followed by the affine projection :math:`y \mapsto \bar y + V V^\top(y - \bar y)`.

    ``basis`` (:math:`d \times k`, orthonormal columns) and ``mean`` (:math:`d`) are
    buffers. A tuple or dict output has its first tensor projected (the last axis).
    """

    def __init__(self, module: nn.Module, basis: torch.Tensor, mean: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("basis", basis)
        self.register_buffer("mean", mean)

    def _project(self, y: torch.Tensor) -> torch.Tensor:
        v, mu = self.basis.to(y.dtype), self.mean.to(y.dtype)
        return mu + ((y - mu) @ v) @ v.mT

    def forward(self, *args, **kwargs):
        out = self.module(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return self._project(out)
        first = first_tensor(out)
        if isinstance(out, tuple):
            return tuple(self._project(t) if t is first else t for t in out)
        raise InputError(f"ProjectedOutput: cannot project an output of type {type(out).__name__}.")


def rmt_project(
    model: nn.Module,
    data: Iterable[Any],
    *,
    layers: str | Sequence[str] | None = None,
) -> nn.Module:
    r"""The RMT-KD step: project each layer's output on its above-the-MP-edge directions.

    For each chosen layer, the covariance :math:`\Sigma` of its outputs on ``data`` (rows:
    real tokens) is fitted with the MP law at :math:`q = d/n` (:math:`d` the width,
    :math:`n` the rows); with :math:`V_k` the eigenvectors of the :math:`k` eigenvalues
    above the bulk edge (at least 1), the layer's output :math:`y` becomes
    :math:`\bar y + V_kV_k^\top(y - \bar y)`. For an ``nn.Linear`` the projection is folded
    into two thinner linears, :math:`x \mapsto V_k\,(V_k^\top W x + V_k^\top(b - \bar y))
    + \bar y`, which saves parameters when :math:`k(d_\text{in}+d) < d_\text{in}d`; other
    modules are wrapped in :class:`ProjectedOutput`.

    Parameters
    ----------
    model : nn.Module
    data : iterable of batches
        As for :func:`infospec.compress` (dicts' ``attention_mask`` excludes padding).
    layers : str or sequence of str, optional
        Regular expressions over module names; the ``nn.Linear`` modules matched (every
        ``nn.Linear`` by default), or, when no ``nn.Linear`` matches, the modules matched.

    Returns
    -------
    nn.Module
        A deep copy; ``spectral_changes`` lists per layer ``kept``, ``of``, ``q`` and the
        edge.
    """
    check_module(model, "rmt_project")
    out = copy.deepcopy(model)
    chosen = _layers(out, layers, "rmt_project", linear=False)
    # the out_proj of nn.MultiheadAttention: its weight is read directly, never replaced
    mha = [
        n for n, m in chosen.items() if type(m) is nn.modules.linear.NonDynamicallyQuantizableLinear
    ]
    for n in mha:
        del chosen[n]
    if not chosen:
        raise InputError(f"rmt_project: every chosen layer is {MHA_OUT_PROJ}.")
    from .folder import set_module as _set_module
    from .lowrank import _feed

    was_training = out.training
    out.eval()
    try:
        with ActivationCovariances(chosen) as acts:
            _feed(out, data, acts, "rmt_project")
            accs = acts.accumulators
    finally:
        out.train(was_training)
    records = []
    for name, module in chosen.items():
        if name in acts.errors or name not in accs or accs[name].count < 2:
            raise InputError(
                f"rmt_project: layer '{name}' gave no usable outputs on 'data' "
                f"({acts.errors.get(name, 'fewer than 2 rows')})."
            )
        acc = accs[name]
        cov = acc.covariance().to(torch.float64)
        # in units of the largest output variance: the spikes and their directions are
        # scale-free, and outputs of tiny weights (1e-30) are not read as all zero
        unit = float(cov.diagonal().amax())
        constant = (
            f"rmt_project: layer '{name}' gives the same output for every row of 'data' "
            f"(to the precision of its dtype: its output covariance is zero or round-off); "
            f"there is no direction to keep. Leave it out with layers=."
        )
        if not unit > 0:
            raise InputError(constant)
        cov = cov / unit
        evals, evecs = torch.linalg.eigh((cov + cov.mT) / 2)
        evals, evecs = evals.flip(0), evecs.flip(1)
        d, n = cov.shape[0], acc.count
        try:
            fit = fit_marchenko_pastur(evals.clamp_min(0).cpu(), d / n)
        except InputError:  # no eigenvalue above the round-off floor
            raise InputError(constant) from None
        k = max(1, int(fit.num_spikes))
        v, mu = evecs[:, :k], acc.mean.to(torch.float64)
        if type(module) in _LINEAR:
            w = module.weight.detach().to(torch.float64)
            b = module.bias.detach().to(torch.float64) if module.bias is not None else 0.0
            dt, dev = module.weight.dtype, module.weight.device
            first = nn.Linear(module.in_features, k, device=dev, dtype=dt)
            second = nn.Linear(k, module.out_features, device=dev, dtype=dt)
            with torch.no_grad():
                first.weight.copy_(v.mT @ w)
                first.bias.copy_(v.mT @ (b - mu))
                second.weight.copy_(v)
                second.bias.copy_(mu)
            replacement: nn.Module = nn.Sequential(first, second)
        else:
            replacement = ProjectedOutput(module, v.to(mu.device), mu)
        _set_module(out, name, replacement)
        records.append(
            {"name": name, "kept": k, "of": d, "q": d / n, "edge": float(fit.upper_edge) * unit}
        )
    records += [{"name": n, "skipped": MHA_OUT_PROJ} for n in mha]
    out.spectral_changes = records
    return out
