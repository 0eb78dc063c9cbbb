r"""Low-rank compression of a model's linear layers at a parameter budget.

:func:`compress` replaces chosen ``nn.Linear`` layers :math:`y = Wx + b` (:math:`W` of
shape :math:`m \times n`, out by in) by two thinner ones, :math:`y = A(Bx) + b` with
:math:`A` of shape :math:`m \times k` and :math:`B` of shape :math:`k \times n`, and
chooses the ranks :math:`k` across layers at a budget (:mod:`.allocation`).

Activation-aware truncation (SVD-LLM's whitening)
-------------------------------------------------
With :math:`C = \mathbb E[x x^\top]` the *uncentred* second moment of the layer's inputs
(the layer acts on raw inputs, and the bias is kept, so the output error of a change
:math:`\Delta` of :math:`W` is :math:`\Delta x`, not :math:`\Delta (x - \bar x)`), and its
Cholesky factor :math:`C = L L^\top`, take the SVD :math:`W L = U S V^\top` and keep the
top :math:`k` triplets:

.. math::

    A = U_k S_k^{1/2},\qquad B = S_k^{1/2} V_k^\top L^{-1},\qquad
    \mathbb E\,\|(W - A B)\,x\|^2 = \operatorname{tr}\big((W - AB)\,C\,(W - AB)^\top\big)
    = \sum_{i > k} \sigma_i^2 ,

because :math:`(W - AB) L = U S V^\top - U_k S_k V_k^\top` has the dropped singular values.
On the calibration rows :math:`X` (:math:`N` rows) this reads
:math:`\|(W - AB)X^\top\|_F^2 = N \sum_{i>k}\sigma_i^2` exactly, and by Eckart-Young no
rank-:math:`k` matrix has a smaller output error on them. The ``predicted_loss`` of the
plan is :math:`\sum_{i>k}\sigma_i^2` (mean squared output error per input row, in squared
output units). When :math:`C` is singular (fewer rows than features, dead inputs),
:math:`C + \rho\,\overline{\operatorname{diag} C}\, I` is factorised instead (``ridge``
:math:`\rho`; the identity then holds for the regularised :math:`C`, which adds
:math:`\rho\,\overline{\operatorname{diag}C}\,\|W-AB\|_F^2` to the loss).

``method="weights"`` is the plain truncated SVD of :math:`W` (``L = I``): it minimises
:math:`\|W - AB\|_F` instead, the output error for white inputs only.

References
----------
X. Wang, Y. Zheng, Z. Wan and M. Zhang, "SVD-LLM: Truncation-aware singular value
decomposition for large language model compression", arXiv:2403.07378, 2024.
Z. Yuan, Y. Shang, Y. Song, Q. Wu, Y. Yan and G. Sun, "ASVD: Activation-aware singular
value decomposition for compressing large language models", arXiv:2312.05821, 2023.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import shown
from .._errors import InputError
from .._names import match_names
from .._progress import progress_bar
from .._validation import check_bool, check_choice, check_module
from ..spectra.activations import ActivationCovariances
from .allocation import DENSE, allocate_ranks, uniform_ranks
from .folder import factorised, load_compressed, save_folder, set_module
from .quantization import WEIGHTINGS, evaluate_quantized, quantize_model
from .sensitivity import first_batches, output_sensitivities

__all__ = [
    "CompressionResult",
    "compress",
    "input_second_moments",
    "load_compressed",
    "whitened_factors",
]


# -- statistics ------------------------------------------------------------------------------
def _feed(
    model: nn.Module,
    data: Iterable[Any],
    acts: ActivationCovariances,
    func: str,
    progress: bool | None = None,
) -> int:
    from ..analysis.analyze import _data_device, _forward

    device = _data_device(model)
    total = len(data) if hasattr(data, "__len__") else None
    bar = progress_bar(data, total=total, desc=func, unit="batch", enabled=progress)
    n = 0
    with torch.no_grad():
        for i, batch in enumerate(bar):
            _forward(model, batch, device, acts, i)
            n += 1
    if n == 0:
        raise InputError(f"The 'data' argument of {func} yielded no batch; give at least one.")
    return n


def input_second_moments(
    model: nn.Module,
    modules: dict[str, nn.Module],
    data: Iterable[Any],
    *,
    func: str = "compress",
    progress: bool | None = None,
) -> dict[str, tuple[torch.Tensor, int]]:
    r"""The uncentred second moment :math:`\mathbb E[xx^\top]` of each module's inputs.

    Streams the inputs with forward pre-hooks (:class:`ActivationCovariances` with
    ``observe="inputs"``), padding tokens excluded through a batch's ``attention_mask``.

    Returns
    -------
    dict
        name -> (C, rows): ``C`` float64 of shape (in, in), on the model's device, and the
        number of input rows it averages.

    Raises
    ------
    InputError
        If a batch does not fit the model, or a module saw no rows or non-finite inputs.
    """
    was_training = model.training
    model.eval()
    try:
        with ActivationCovariances(modules, observe="inputs") as acts:
            _feed(model, data, acts, func, progress)
            accs = acts.accumulators
    finally:
        model.train(was_training)
    out = {}
    for name in modules:
        if name in acts.errors:
            raise InputError(f"{func}: layer '{name}': {acts.errors[name]}")
        acc = accs.get(name)
        if acc is None or acc.count < 1:
            raise InputError(
                f"{func}: layer '{name}' received no input rows from 'data' (is it used in "
                f"the forward pass?); leave it out with layers=REGEX."
            )
        mean = acc.mean.to(torch.float64)
        c = acc.scatter.to(torch.float64) / acc.count + torch.outer(mean, mean)
        out[name] = ((c + c.mT) / 2, int(acc.count))
    return out


# -- one matrix ----------------------------------------------------------------------------
def _cholesky(c: torch.Tensor, ridge: float, name: str) -> torch.Tensor:
    if not bool(torch.isfinite(c).all()):
        raise InputError(f"compress: the input covariance of layer '{name}' is not finite.")
    scale = float(torch.diagonal(c).mean())
    if not scale > 0:
        raise InputError(
            f"compress: the inputs of layer '{name}' are all zero; its covariance cannot "
            f"whiten (leave the layer out with layers=REGEX or use method='weights')."
        )
    creg = c + ridge * scale * torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    factor, info = torch.linalg.cholesky_ex(creg)
    if int(info) != 0:
        raise InputError(
            f"compress: the input covariance of layer '{name}' is singular (Cholesky failed "
            f"at ridge={ridge:g}); pass a ridge > 0 (e.g. ridge=1e-6) or more data."
        )
    return factor


def whitened_factors(
    weight: torch.Tensor, factor: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""SVD of :math:`W L` (or of :math:`W` when ``factor`` is None), in float64.

    Returns
    -------
    (U, S, Vh_Linv)
        :math:`W L = U\,\mathrm{diag}(S)\,V^\top` and ``Vh_Linv`` :math:`= V^\top L^{-1}`,
        so that for any ``k``, ``A = U[:, :k] * S[:k].sqrt()`` and
        ``B = S[:k].sqrt()[:, None] * Vh_Linv[:k]`` give :math:`W \approx AB` with output
        error :math:`\sum_{i>k}\sigma_i^2` under the moment :math:`C = LL^\top`.
    """
    w = weight.detach().to(torch.float64)
    if factor is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u, s, vh
    u, s, vh = torch.linalg.svd(w @ factor, full_matrices=False)
    # V^T L^{-1}: solve X L = V^T for X (L lower triangular)
    vh_linv = torch.linalg.solve_triangular(factor, vh, upper=False, left=False)
    return u, s, vh_linv


def _split(u, s, vh_linv, k: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    root = s[:k].sqrt()
    a = (u[:, :k] * root).to(dtype)
    b = (root[:, None] * vh_linv[:k]).to(dtype)
    return a.contiguous(), b.contiguous()


# -- the result --------------------------------------------------------------------------------
class CompressionResult:
    """What :func:`compress` returns: the compressed copy, its plan and its timings.

    Attributes
    ----------
    model : nn.Module
        The compressed deep copy (the input model is untouched).
    plan : list of dict
        One record per chosen matrix: ``name``, ``shape`` [out, in], ``rank`` (``None`` when
        kept dense), ``params_before``, ``params_after``, ``predicted_loss`` (discarded
        energy: the mean squared output error per input row on the calibration data for
        ``method="activations"``; :math:`\\|W - AB\\|_F^2` for ``"weights"``),
        ``predicted_relative`` (over :math:`\\mathbb E\\|Wx\\|^2`, resp.
        :math:`\\|W\\|_F^2`), ``status`` (``"factorised"``, ``"dense"``, ``"skipped"``) and
        ``reason``; after :meth:`evaluate`, ``measured_loss`` and ``measured_relative``.
    seconds : dict
        ``covariance``, ``svd`` and (after :meth:`save`) ``write``, host seconds.
    """

    def __init__(self, model, plan, factors, source, settings, seconds, quantized=None):
        self.model = model
        self.plan = plan
        self.factors = factors  # name -> (A, B), on the model's device
        #: name -> QuantizedMatrix for ``compress(..., bits=...)`` (empty for low rank)
        self.quantized = quantized or {}
        self._source = source
        self.settings = settings
        self.seconds = seconds

    def frame(self):
        """The plan as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.plan)

    @property
    def params_before(self) -> int:
        return sum(r["params_before"] for r in self.plan if r["status"] != "skipped")

    @property
    def params_after(self) -> int:
        return sum(
            r.get("params_after", r["params_before"]) for r in self.plan if r["status"] != "skipped"
        )

    @property
    def bits_before(self) -> int:
        """Stored bits of the chosen matrices before (their dtype's width per weight)."""
        return sum(r.get("bits_before", 0) for r in self.plan if r["status"] != "skipped")

    @property
    def bits_after(self) -> int:
        """Stored bits after ``bits=`` quantization: packed codes plus scales and minima."""
        return sum(r.get("bits_after", 0) for r in self.plan if r["status"] != "skipped")

    def evaluate(self, data: Iterable[Any]) -> list[dict]:
        r"""Measure each factorised layer's output error on ``data`` (held out, ideally).

        The error is :math:`\mathbb E\,\|(W - AB)x\|^2` over the rows :math:`x` that reach
        the layer in the *original* model, computed exactly from their second moment
        :math:`C'` as :math:`\operatorname{tr}(\Delta C' \Delta^\top)`; on the calibration
        data it equals ``predicted_loss`` (activations, ridge 0). Fills ``measured_loss``
        and ``measured_relative`` (over :math:`\mathbb E\|Wx\|^2`) in :attr:`plan`.
        """
        named = dict(self._source.named_modules())
        names = [r["name"] for r in self.plan if r["status"] in ("factorised", "quantized")]
        moments = input_second_moments(
            self._source, {n: named[n] for n in names}, data, func="evaluate"
        )
        if self.quantized:
            evaluate_quantized(self._source, self.plan, self.quantized, moments)
            return self.plan
        by_name = {r["name"]: r for r in self.plan}
        for name in names:
            c, _rows = moments[name]
            w = named[name].weight.detach().to(torch.float64)
            a, b = (t.to(torch.float64) for t in self.factors[name])
            delta = w - a @ b
            err = float(torch.einsum("ij,jk,ik->", delta, c, delta))
            ref = float(torch.einsum("ij,jk,ik->", w, c, w))
            by_name[name]["measured_loss"] = err
            by_name[name]["measured_relative"] = err / ref if ref > 0 else math.nan
        return self.plan

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``factors.safetensors`` and ``plan.json`` into a new folder ``directory``.

        The folder holds only the factors, ``<module>.A`` (out x k) and ``<module>.B``
        (k x in) of each factorised layer (after ``bits=``: ``quantized.safetensors``
        with ``<module>.codes``, the packed codes, and ``.scale`` / ``.minimum``); every
        other tensor (biases included) is taken from the original model by
        :func:`load_compressed`. The folder is written beside its final place under a
        temporary name and renamed when complete, so an error or Ctrl-C leaves no partial
        folder. An existing non-empty ``directory`` is an error.
        """
        start = time.perf_counter()
        target = save_folder(self, directory)
        self.seconds["write"] = time.perf_counter() - start
        return target


# -- compress ------------------------------------------------------------------------------------
#: Why the output projection of ``nn.MultiheadAttention`` is never factorised.
MHA_OUT_PROJ = (
    "the out_proj of an nn.MultiheadAttention, whose forward reads its weight directly "
    "(a factorised module in its place would break the attention)"
)


def root_linear_hint(model: nn.Module, func: str) -> None:
    """Raise the error for a model that is itself one nn.Linear (it cannot be replaced)."""
    if isinstance(model, nn.Linear):
        raise InputError(
            f"{func}: the model is itself an nn.Linear, which cannot be replaced in place; "
            f"wrap it, e.g. {func}(nn.Sequential(layer), ...)."
        )


def _chosen_linears(
    model: nn.Module, layers, *, factorised: bool = True
) -> tuple[dict[str, nn.Module], list[dict]]:
    named = [(n, m) for n, m in model.named_modules() if n]
    if layers is None:
        picked = [n for n, m in named if isinstance(m, nn.Linear)]
        if not picked:
            root_linear_hint(model, "compress")
            raise InputError("compress: the model has no nn.Linear layer to compress.")
    else:
        picked = match_names(
            [n for n, _ in named], layers, param="layers", func="compress", what="module"
        )
    modules = dict(named)
    if layers is None:  # GPT-2's transformers Conv1D blocks: listed, not silently left out
        picked += [n for n, m in named if type(m).__name__ == "Conv1D"]
    owners: dict[int, list[str]] = {}  # each weight's modules (a tie lists two)
    for n, m in named:
        w = getattr(m, "weight", None)
        if isinstance(w, nn.Parameter):
            owners.setdefault(id(w), []).append(n)
    chosen, skipped = {}, []
    for n in picked:
        m = modules[n]
        tied = [o for o in owners.get(id(getattr(m, "weight", None)), []) if o != n]
        if factorised and type(m) is nn.modules.linear.NonDynamicallyQuantizableLinear:
            skipped.append({"name": n, "status": "skipped", "reason": MHA_OUT_PROJ})
        elif type(m).__name__ == "Conv1D" and not isinstance(m, nn.Linear):
            reason = "a transformers Conv1D (GPT-2 style), not an nn.Linear: not compressed"
            skipped.append({"name": n, "status": "skipped", "reason": reason})
        elif tied and isinstance(m, nn.Linear):
            reason = (
                f"its weight is tied to '{tied[0]}' (the same tensor), which keeps it: "
                f"compressing it would add parameters, or change '{tied[0]}' too"
            )
            skipped.append({"name": n, "status": "skipped", "reason": reason})
        elif type(m) in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear):
            if m.weight.device.type == "meta":
                raise InputError(f"compress: layer '{n}' has its weights on the meta device.")
            chosen[n] = m
        elif isinstance(m, nn.modules.conv._ConvNd):  # other modules matched: not weights
            reason = "convolutions are not compressed (linear layers only)"
            skipped.append({"name": n, "status": "skipped", "reason": reason})
    if not chosen:
        why = "; ".join(f"'{r['name']}': {r['reason']}" for r in skipped[:3])
        raise InputError(
            f"compress: layers={shown(layers)} chose no nn.Linear layer it can compress"
            + (f" ({len(skipped)} matched and skipped: {why})." if skipped else ".")
        )
    return chosen, skipped


def _check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (0 < ratio <= 1):
        raise InputError(
            f"compress: ratio must be a number in (0, 1] (kept parameters over the "
            f"original parameters of the chosen matrices); got {shown(ratio)}."
        )
    return float(ratio)


def _mp_cap(s: torch.Tensor, shape: tuple[int, int]) -> int:
    from ..measures.marchenko_pastur import fit_marchenko_pastur

    big, small = max(shape), min(shape)
    eig = (s.detach().to(torch.float64) ** 2 / big).cpu()
    fit = fit_marchenko_pastur(eig, small / big)
    return max(1, int(fit.num_spikes))


def compress(
    model: nn.Module,
    data: Iterable[Any] | None,
    *,
    ratio: float | None = None,
    bits: float | None = None,
    group_size: int = 128,
    method: str = "activations",
    allocation: str = "allocated",
    layers: str | Sequence[str] | None = None,
    ridge: float = 1e-6,
    mp_edge: bool = False,
    weighting: str = "relative",
    sensitivity_batches: int = 4,
    eval_data: Iterable[Any] | None = None,
    progress: bool | None = None,
) -> CompressionResult:
    r"""Replace linear layers by rank-:math:`k` products at a parameter budget.

    Parameters
    ----------
    model : nn.Module
        Not modified: a deep copy is compressed.
    data : iterable of batches, or None
        Calibration batches for the input second moments :math:`C = \mathbb E[xx^\top]`:
        tensors (``model(x)``), tuples (``model(*b)``) or dicts (``model(**b)``, the
        ``attention_mask`` excluding padding). Only ``method="weights"`` may pass None.
    ratio : float in (0, 1], optional
        Kept parameters over the original parameters of the chosen matrices (biases are
        not counted and are kept). Give ``ratio`` (low rank) or ``bits``, not both.
    bits : float, optional
        Quantize instead of factorising (:mod:`~infospec.transforms.quantization`): the
        mean number of code bits per weight over the chosen matrices, between 2 and 8;
        each matrix gets a width in 2..8, allocated by equal slope on the measured output
        errors (``"allocated"``, any mean) or the same for all (``"uniform"``, an integer).
        The plan's records then have ``bits``, ``bits_before``/``bits_after`` (stored
        bits, scales included) instead of ``rank``/``params_after``.
    group_size : int, default 128
        With ``bits``: input columns sharing one float16 scale and minimum (about
        ``32 / group_size`` bits per weight more).
    method : {"activations", "weights"}
        ``"activations"``: truncate the SVD of :math:`WL` (module docstring);
        ``"weights"``: plain SVD of :math:`W`.
    allocation : {"allocated", "uniform"}
        ``"allocated"``: ranks by equal slope across matrices at the total budget
        (:func:`~infospec.transforms.allocation.allocate_ranks`); ``"uniform"``: the same
        ratio for every matrix.
    layers : str or sequence of str, optional
        Regular expressions over module names (``match_names``); default every
        ``nn.Linear``. Only the ``nn.Linear`` modules matched are compressed; matched
        convolutions are listed in the plan as skipped (linear layers only: a convolution
        would need the covariance of its unfolded patches), and so are transformers'
        ``Conv1D`` blocks (GPT-2's) and a linear layer whose weight is tied to another
        module's (an ``lm_head`` tied to the embedding: factorised, the embedding would
        keep the weight and the factors add parameters; quantized, the embedding would
        change too); other modules are ignored.
    ridge : float >= 0, default 1e-6
        :math:`\rho` in :math:`C + \rho\,\overline{\operatorname{diag}C}\,I`, the Cholesky
        regulariser for singular :math:`C`.
    mp_edge : bool, default False
        Cap each matrix's rank at its number of singular values above the fitted
        Marchenko-Pastur bulk edge (:func:`~infospec.measures.fit_marchenko_pastur` on
        :math:`\sigma_i^2/\max(m,n)` with :math:`q = \min(m,n)/\max(m,n)`), at least 1.
    weighting : {"relative", "absolute"}, default "relative"
        What the allocator adds up across matrices: each matrix's discarded energy over
        its total (:math:`\sum_{i>k}\sigma_i^2 / \sum_i\sigma_i^2`, the relative output
        error :math:`\mathbb E\|(W-AB)x\|^2/\mathbb E\|Wx\|^2`), or the energy itself.
        Absolute output errors of different layers are in different units (a layer
        whose outputs are large dominates the sum while a LayerNorm downstream rescales
        them), and on MiniLM the absolute rule lost to the uniform ratio
        (``benchmarks/README.md``); the relative one is the default. ``"sensitivity"``
        weighs each matrix's relative error by its measured end-to-end gain :math:`s_l`
        (:func:`~infospec.transforms.sensitivity.output_sensitivities`: white noise in
        the layer's output against the model's first output tensor, on the first
        ``sensitivity_batches`` calibration batches, one extra forward pass per layer and
        batch), so that the allocator minimises the first-order output error
        :math:`\sum_l s_l\varepsilon_l`; the plan records each ``sensitivity``.
    sensitivity_batches : int >= 1, default 4
        Calibration batches used to measure the sensitivities (``weighting="sensitivity"``).
    eval_data : iterable of batches, optional
        If given, :meth:`CompressionResult.evaluate` is run on it.
    progress : bool, optional
        A bar over the calibration batches (``None``: on a terminal only; as for
        :func:`infospec.analyze`).

    Returns
    -------
    CompressionResult

    Raises
    ------
    InputError
        Ratio outside (0, 1], unknown method/allocation, ``layers`` matching no module or
        no ``nn.Linear``, data that does not fit the model, a singular covariance at the
        given ridge, or a ratio below one rank per matrix.

    Examples
    --------
    >>> import torch, infospec
    >>> torch.manual_seed(0) and None
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    >>> data = [torch.randn(64, 16) for _ in range(4)]
    >>> res = infospec.compress(mlp, data, ratio=0.5)
    >>> res.params_after <= 0.5 * res.params_before
    True
    """
    check_module(model, "compress")
    if (ratio is None) == (bits is None):
        raise InputError(
            "compress: give ratio= (low-rank factors at a parameter budget) or bits= "
            "(quantization at a mean bit width), exactly one of them."
        )
    if ratio is not None:
        ratio = _check_ratio(ratio)
    method = check_choice(method, "method", "compress", ("activations", "weights"))
    allocation = check_choice(allocation, "allocation", "compress", ("allocated", "uniform"))
    weighting = check_choice(weighting, "weighting", "compress", WEIGHTINGS)
    if weighting == "sensitivity":
        if data is None:
            raise InputError(
                "compress: weighting='sensitivity' measures each layer's end-to-end gain on "
                "calibration batches; give data (or use weighting='relative')."
            )
        if (
            isinstance(sensitivity_batches, bool)
            or not isinstance(sensitivity_batches, int)
            or sensitivity_batches < 1
        ):
            raise InputError(
                f"compress: sensitivity_batches must be an integer >= 1; got "
                f"{sensitivity_batches!r}."
            )
    if not (isinstance(ridge, int | float) and math.isfinite(ridge) and ridge >= 0):
        raise InputError(f"compress: ridge must be a finite number >= 0; got {shown(ridge)}.")
    check_bool(mp_edge, "mp_edge", "compress")
    if data is None and method == "activations":
        raise InputError("compress: method='activations' needs data (calibration batches).")
    chosen, skipped = _chosen_linears(model, layers, factorised=bits is None)
    seconds = {"covariance": 0.0, "svd": 0.0}
    start = time.perf_counter()
    kept: list[Any] = []
    if weighting == "sensitivity":
        data, kept = first_batches(data, sensitivity_batches)
    moments = (
        input_second_moments(model, chosen, data, progress=progress) if data is not None else {}
    )
    seconds["covariance"] = time.perf_counter() - start
    gains = None
    if weighting == "sensitivity":
        start = time.perf_counter()
        gains = output_sensitivities(model, chosen, kept)
        seconds["sensitivity"] = time.perf_counter() - start
    if bits is not None:
        if mp_edge:
            raise InputError(
                "The 'mp_edge' argument of compress caps ranks; it does not apply with bits=."
            )
        out, plan, quantized, settings, secs = quantize_model(
            model,
            chosen,
            moments,
            bits=bits,
            method=method,
            allocation=allocation,
            weighting=weighting,
            group_size=group_size,
            sensitivities=gains,
        )
        seconds["quantize"] = secs
        result = CompressionResult(out, plan + skipped, {}, model, settings, seconds, quantized)
        if eval_data is not None:
            result.evaluate(eval_data)
        return result

    start = time.perf_counter()
    svds, shapes, energies, caps, refs = {}, [], [], [], []
    for name, lin in chosen.items():
        factor = _cholesky(moments[name][0], ridge, name) if method == "activations" else None
        if factor is not None:
            factor = factor.to(lin.weight.device)
        u, s, vh = whitened_factors(lin.weight, factor)
        svds[name] = (u, s, vh)
        shapes.append(tuple(lin.weight.shape))
        energies.append((s**2).cpu().numpy())
        refs.append(float((s**2).sum()))
        caps.append(_mp_cap(s, tuple(lin.weight.shape)) if mp_edge else None)
    total = sum(m * n for m, n in shapes)
    budget = math.floor(ratio * total + 1e-9)
    if allocation == "allocated":
        weights = (
            energies
            if weighting == "absolute"
            else [e / r if r > 0 else e for e, r in zip(energies, refs, strict=True)]
        )
        if gains is not None:
            weights = [w * gains[name] for w, name in zip(weights, chosen, strict=True)]
        alloc = allocate_ranks(weights, shapes, budget, max_ranks=caps if mp_edge else None)
    else:
        alloc = uniform_ranks(energies, shapes, ratio, max_ranks=caps if mp_edge else None)

    out = copy.deepcopy(model)
    factors, plan = {}, []
    for (name, lin), (m, n), k, e, ref in zip(
        chosen.items(), shapes, alloc.ranks, energies, refs, strict=True
    ):
        rec = {"name": name, "shape": [m, n], "params_before": m * n}
        if gains is not None:
            rec["sensitivity"] = gains[name]
        if k == DENSE:
            rec.update(rank=None, params_after=m * n, predicted_loss=0.0, predicted_relative=0.0)
            rec.update(status="dense", reason="a factorisation at its rank would not save")
        else:
            a, b = _split(*svds[name], k, lin.weight.dtype)
            factors[name] = (a, b)
            loss = float(e[k:].sum())
            rec.update(rank=k, params_after=k * (m + n), predicted_loss=loss)
            rec.update(predicted_relative=loss / ref if ref > 0 else math.nan)
            rec.update(status="factorised", reason="")
            set_module(out, name, factorised(out.get_submodule(name), a, b))
        plan.append(rec)
    seconds["svd"] = time.perf_counter() - start
    settings = {
        "ratio": ratio,
        "method": method,
        "allocation": allocation,
        "ridge": ridge,
        "mp_edge": bool(mp_edge),
        "weighting": weighting,
        "budget": budget,
        "params_before": total,
        "params_after": alloc.params,
        "predicted_loss": alloc.loss,
        "lagrangian_params": alloc.lagrangian_params,
        "gap_bound": alloc.gap_bound,
    }
    result = CompressionResult(out, plan + skipped, factors, model, settings, seconds)
    if eval_data is not None:
        result.evaluate(eval_data)
    return result
