"""Weight sources held in memory: a ``torch.nn.Module`` or a state dict."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import SourceError
from .._validation import check_positive
from ..spectra.conventions import _CONV_NDIM
from .base import WeightSource
from .entry import (
    DEFAULT_MIN_DIM,
    EXPERT_LEAVES,
    WeightEntry,
    experts_transposed,
    fused_experts_kinds,
    generic_kind,
    infer_kind,
    skip_reason_for,
)
from .fp8 import fp8_plan
from .listing import TensorMeta, build_entries
from .packed import EMPTY_PLAN, PackedPlan, packed_plan

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int32)

__all__ = ["ModuleSource", "StateDictSource"]

_WEIGHT_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "linear"),
    (nn.Conv1d, "conv1d"),
    (nn.Conv2d, "conv2d"),
    (nn.Conv3d, "conv3d"),
    (nn.ConvTranspose1d, "conv_transpose1d"),
    (nn.ConvTranspose2d, "conv_transpose2d"),
    (nn.ConvTranspose3d, "conv_transpose3d"),
    (nn.Embedding, "embedding"),
    (nn.EmbeddingBag, "embedding"),
)
#: Kinds of a TorchScript module's ``weight`` by its ``original_name`` (its Python class).
_SCRIPT_KINDS = {
    "Linear": "linear",
    "NonDynamicallyQuantizableLinear": "linear",
    "Conv1d": "conv1d",
    "Conv2d": "conv2d",
    "Conv3d": "conv3d",
    "ConvTranspose1d": "conv_transpose1d",
    "ConvTranspose2d": "conv_transpose2d",
    "ConvTranspose3d": "conv_transpose3d",
    "Embedding": "embedding",
    "EmbeddingBag": "embedding",
    "Conv1D": "conv1d_transposed",
}
#: Dimensions of the stored weight of each kind (convolutions from the conventions' table).
_EXPECTED_NDIM = {
    **dict.fromkeys(("linear", "embedding", "conv1d_transposed", "in_proj"), 2),
    **_CONV_NDIM,
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def module_param_kind(module: nn.Module, param_name: str, shape: tuple[int, ...]) -> str:
    """Kind of parameter ``param_name`` of ``module`` (its own, not a child's).

    ``nn.Linear`` (and subclasses such as attention's ``out_proj``), convolutions,
    transposed convolutions and embeddings by type; the ``weight`` of a class named
    ``Conv1D`` (GPT-2 style, detected without importing ``transformers``) as
    ``"conv1d_transposed"``; ``nn.MultiheadAttention``'s packed ``in_proj_weight`` as
    ``"in_proj"`` and its separate ``q/k/v_proj_weight`` as ``"linear"``; the fused
    mixture-of-experts weights of ``transformers`` 5 (a 3-D ``gate_up_proj``,
    ``down_proj``, ``up_proj`` or ``gate_proj`` of a module whose class name ends in
    ``Experts``, or that has a boolean ``is_transposed``, as ``@use_experts_implementation``
    sets) as ``"experts"`` (stored ``(E, out, in)``: Mixtral, Qwen2-MoE, Qwen3-MoE) or
    ``"experts_transposed"`` (``(E, in, out)``: gpt-oss, Llama 4), by the module's
    ``is_transposed``, else by the shapes of its fused tensors
    (:func:`~infospec.sources.entry.experts_transposed`), else ``"experts_transposed"``;
    any other parameter by its shape (``"matrix"`` or ``"other"``).

    A TorchScript module (``torch.jit.script`` or ``torch.jit.load``) is recognised by
    its ``original_name``, the name of the Python class it was compiled from.
    """
    kind = None
    script_name = _script_name(module)
    if len(shape) == 3 and param_name in EXPERT_LEAVES and _is_experts_module(module):
        flag = getattr(module, "is_transposed", None)
        if not isinstance(flag, bool):
            leaves = {
                n: tuple(p.shape)
                for n, p in module.named_parameters(recurse=False)
                if n in EXPERT_LEAVES and p.ndim == 3
            }
            flag = experts_transposed(leaves) is not False
        return "experts_transposed" if flag else "experts"
    if isinstance(module, nn.MultiheadAttention) or script_name == "MultiheadAttention":
        if param_name == "in_proj_weight":
            kind = "in_proj"
        elif param_name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            kind = "linear"
    elif param_name == "weight" and script_name is not None:
        kind = _SCRIPT_KINDS.get(script_name)
    elif param_name == "weight":
        for cls, k in _WEIGHT_KINDS:
            if isinstance(module, cls):
                kind = k
                break
        else:
            if type(module).__name__ == "Conv1D":
                kind = "conv1d_transposed"
    if kind is not None and len(shape) == _EXPECTED_NDIM[kind]:
        if kind != "in_proj" or shape[0] % 3 == 0:
            return kind
    return generic_kind(shape)


def _is_experts_module(module: nn.Module) -> bool:
    """Whether a module holds fused experts (``MixtralExperts``, ``GptOssExperts``...)."""
    name = _script_name(module) or type(module).__name__
    return name.lower().endswith("experts") or isinstance(
        getattr(module, "is_transposed", None), bool
    )


def _script_name(module: nn.Module) -> str | None:
    """The Python class name a TorchScript module was compiled from, or None."""
    if isinstance(module, torch.jit.ScriptModule):
        name = getattr(module, "original_name", None)
        return name if isinstance(name, str) else ""
    return None


def _storage_skip_reason(t: torch.Tensor, noun: str) -> str | None:
    """Why an in-memory tensor cannot be read as a matrix: no data, or not dense."""
    if t.is_meta:
        return f"{noun} on the meta device (no data)"
    if t.layout != torch.strided:
        return f"{t.layout} tensor (only dense tensors are analysed)"
    return None


def _param_loader(tensor: torch.Tensor):
    def load(device: Any = None) -> torch.Tensor:
        t = tensor.detach()
        return t if device is None else t.to(device)

    return load


#: Names of torch's parametrizations (``torch.nn.utils.parametrizations``), by class.
_PARAMETRIZATION_NAMES = {
    "_WeightNorm": "weight_norm",
    "_SpectralNorm": "spectral_norm",
    "_Orthogonal": "orthogonal",
}


class _Parametrized:
    """The tensors of one module computed by a parametrization (see :func:`_parametrized`).

    ``effective`` maps an attribute of the module (``"weight"``) to the function that
    computes it and the raw tensors it is computed from; ``raw`` maps the full name of
    each raw tensor to its skip reason; ``buffers`` holds the full names of those raw
    tensors that are buffers (listed although a module's buffers are not).
    """

    __slots__ = ("buffers", "effective", "raw")

    def __init__(self) -> None:
        self.effective: dict[str, tuple[Callable[[], torch.Tensor], list[torch.Tensor]]] = {}
        self.raw: dict[str, str] = {}
        self.buffers: set[str] = set()

    def add(self, attr: str, name: str, how: str, compute, raw: dict, buffers: set) -> None:
        """Record ``attr`` (full name ``name``), computed by ``compute`` from the tensors
        ``raw`` (full name to tensor) by the parametrization ``how``."""
        self.effective[attr] = (compute, list(raw.values()))
        why = f"parametrization input of {name} ({how}); the effective {attr} is analysed"
        self.raw.update(dict.fromkeys(raw, why))
        self.buffers |= buffers


def _parametrized(mod: nn.Module, prefix: str) -> _Parametrized:
    """The parametrized tensors of ``mod`` (its own, not a child's).

    ``torch.nn.utils.parametrize`` (``weight_norm``, ``spectral_norm``, ``orthogonal`` of
    ``torch.nn.utils.parametrizations``, or a user's): each tensor of
    ``mod.parametrizations``; the legacy hooks ``torch.nn.utils.weight_norm`` (``weight_g``
    and ``weight_v``) and ``torch.nn.utils.spectral_norm`` (``weight_orig``, ``weight_u``,
    ``weight_v``): the tensor each hook recomputes before a forward pass.
    """
    out = _Parametrized()
    plists = getattr(mod, "parametrizations", None)
    if isinstance(plists, nn.ModuleDict) and _script_name(mod) is None:
        for attr, plist in plists.items():
            if not isinstance(plist, nn.Module):
                continue
            steps = list(plist.children())
            how = ", ".join(
                _PARAMETRIZATION_NAMES.get(type(m).__name__, type(m).__name__) for m in steps
            )
            base = f"{prefix}parametrizations.{attr}."
            raw = {base + n: t for n, t in plist.named_parameters(remove_duplicate=False)}
            bufs = {base + n: t for n, t in plist.named_buffers(remove_duplicate=False)}
            raw.update({n: t for n, t in bufs.items() if t is not None})
            compute = lambda mod=mod, attr=attr, plist=plist: _compute_parametrized(  # noqa: E731
                mod, attr, plist
            )
            out.add(attr, prefix + attr, how or "parametrization", compute, raw, set(bufs))
    if _script_name(mod) is None:
        for hook in list(getattr(mod, "_forward_pre_hooks", {}).values()):
            _legacy_parametrization(mod, hook, prefix, out)
    return out


def _compute_parametrized(mod: nn.Module, attr: str, plist: nn.Module) -> torch.Tensor:
    """``getattr(mod, attr)`` under ``torch.no_grad()``, detached, with its parametrizations
    in eval mode for the time of the call, so that reading the weight changes nothing
    (``spectral_norm`` runs a power iteration on its buffers in training mode)."""
    modes = [(m, m.training) for m in plist.modules()]
    try:
        for m, _ in modes:
            m.training = False
        with torch.no_grad():
            return getattr(mod, attr).detach()
    finally:
        for m, was in modes:
            m.training = was


def _legacy_parametrization(mod: nn.Module, hook: Any, prefix: str, out: _Parametrized) -> None:
    """Record the tensor a legacy ``weight_norm`` or ``spectral_norm`` hook computes."""
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    if isinstance(hook, WeightNorm):
        how, suffixes = "legacy weight_norm", ("_g", "_v")

        def compute(hook=hook) -> torch.Tensor:
            with torch.no_grad():
                return hook.compute_weight(mod).detach()

    elif isinstance(hook, SpectralNorm):
        how, suffixes = "legacy spectral_norm", ("_orig", "_u", "_v")

        def compute(hook=hook) -> torch.Tensor:  # as in eval mode: no power iteration
            with torch.no_grad():
                return hook.compute_weight(mod, do_power_iteration=False).detach()

    else:
        return
    attr = getattr(hook, "name", None)
    if not isinstance(attr, str) or attr in out.effective:
        return
    tensors = {
        **dict(mod.named_parameters(recurse=False)),
        **dict(mod.named_buffers(recurse=False)),
    }
    names = [attr + s for s in suffixes]
    if not all(isinstance(tensors.get(n), torch.Tensor) for n in names):
        return
    params = dict(mod.named_parameters(recurse=False))
    raw = {prefix + n: tensors[n] for n in names}
    bufs = {prefix + n for n in names if n not in params}
    out.add(attr, prefix + attr, how, compute, raw, bufs)


def _parametrized_entry(
    mod: nn.Module, attr: str, name: str, spec: tuple, min_dim: int, origin: str
) -> WeightEntry:
    """The entry of a parametrized tensor: the tensor the layer computes with, its kind
    that of an unparametrized layer's tensor; computed once here for its shape."""
    compute, raw = spec
    reason = None
    meta = [t for t in raw if t.is_meta]
    if meta:
        t = max(meta, key=lambda t: t.numel())
        shape, dtype = tuple(t.shape), _dtype_name(t.dtype)
        reason = "parametrization inputs on the meta device (no data)"
    else:
        try:
            t = compute()
        except Exception as exc:  # a user's parametrization that fails: say so
            t = max(raw, key=lambda t: t.numel()) if raw else torch.empty(0)
            reason = f"its parametrization failed: {type(exc).__name__}: {exc}"
        shape, dtype = tuple(t.shape), _dtype_name(t.dtype)
    kind = module_param_kind(mod, attr, shape)
    reason = reason or skip_reason_for(kind, shape, dtype, min_dim=min_dim)
    reason = reason or _storage_skip_reason(t, "parametrized tensor")

    def load(device: Any = None) -> torch.Tensor:
        w = compute()
        return w if device is None else w.to(device)

    return WeightEntry(name, shape, dtype, kind, reason, origin, load)


class ModuleSource(WeightSource):
    """The parameters of a ``torch.nn.Module``, walked through ``named_modules()``.

    Only parameters are listed (buffers such as running statistics or position ids are
    not weights). Names are the full dotted names of ``model.state_dict()``. Loading a
    parameter returns it detached, without a copy.

    A parametrized tensor (``torch.nn.utils.parametrize``: ``weight_norm``,
    ``spectral_norm``, ``orthogonal`` of ``torch.nn.utils.parametrizations``, or the
    legacy hooks ``torch.nn.utils.weight_norm`` and ``torch.nn.utils.spectral_norm``) is
    listed under the module's attribute, ``0.weight``, not the state dict's
    ``0.parametrizations.weight.original0`` (or ``0.weight_g``): its loader computes the
    tensor the layer uses (``getattr(module, "weight")`` under ``torch.no_grad()``, the
    parametrizations in eval mode, detached), and its kind is that of an unparametrized
    layer's. The raw tensors (``original*``, a parametrization's buffers such as
    ``orthogonal``'s ``base``, ``weight_g``/``weight_v``) are listed, skipped with the
    reason ``parametrization input of 0.weight (weight_norm); the effective weight is
    analysed``.

    Parameters
    ----------
    module : torch.nn.Module
        The model; it must have at least one parameter.
    min_dim : int >= 1, default 10
        Matrices whose smaller side is below it are skipped.

    Raises
    ------
    SourceError
        If the module has no parameters.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Linear(16, 4))
    >>> for e in ModuleSource(net).entries():
    ...     print(e.name, e.shape, e.kind, e.skip_reason)
    0.weight (16, 3, 3, 3) conv2d None
    0.bias (16,) other 1-D tensor (bias or norm scale)
    1.weight (4, 16) linear smaller side 4 < min_dim=10 (matrix 4 x 16)
    1.bias (4,) other 1-D tensor (bias or norm scale)
    """

    def __init__(self, module: nn.Module, *, min_dim: int = DEFAULT_MIN_DIM) -> None:
        if not isinstance(module, nn.Module):
            raise SourceError(f"ModuleSource needs a torch.nn.Module; got {type(module).__name__}.")
        self.module = module
        self.min_dim = check_positive(min_dim, "min_dim", "ModuleSource", integer=True)
        self.name = _script_name(module) or type(module).__name__
        n_params = sum(1 for _ in module.parameters())
        if n_params == 0:
            raise SourceError(
                f"The module {self.name} has no parameters, so it has no weights to analyse. "
                f"Pass the model that holds the layers (not a container or an activation)."
            )
        self.description = f"module {self.name} ({n_params} parameter tensors)"
        self._origin = f"module {self.name}"

    #: Whether buffers are listed too (a TorchScript archive's tensors).
    _with_buffers = False

    def entries(self) -> list[WeightEntry]:
        origin = self._origin
        seen: dict[int, str] = {}
        out: list[WeightEntry] = []
        raw_inputs: dict[str, str] = {}  # full name of a parametrization's input: reason
        seen_computed: dict[tuple[int, str], str] = {}
        for mod_name, mod in self.module.named_modules(remove_duplicate=False):
            own = dict(mod.named_parameters(recurse=False))
            listed = list(own)
            buffers = {n: b for n, b in mod.named_buffers(recurse=False) if b is not None}
            if self._with_buffers:
                listed += [n for n in buffers if n not in own]
            computed = _parametrized(mod, f"{mod_name}." if mod_name else "")
            raw_inputs.update(computed.raw)
            listed = [n for n in computed.effective if n not in own] + listed
            for n in buffers:  # a parametrization's buffers (orthogonal's base): say why
                full = f"{mod_name}.{n}" if mod_name else n
                if n not in listed and (full in computed.buffers or full in raw_inputs):
                    listed.append(n)
            own.update({n: b for n, b in buffers.items() if n not in own})
            plan = fp8_plan(
                {
                    n: (tuple(t.shape), _dtype_name(t.dtype))
                    for n, t in own.items()
                    if not isinstance(t, nn.parameter.UninitializedParameter)
                },
                prefix=f"{mod_name}." if mod_name else "",
            )
            script = _script_name(mod) is not None
            prefix = f"{mod_name}." if mod_name else ""
            packed, saved = _module_packed(mod, own, prefix)
            for entry_name in packed.weights:
                if entry_name[len(prefix) :] not in own:  # GPTQ: codes in buffers
                    listed.append(entry_name[len(prefix) :])
            for stored, why in packed.reasons.items():  # a packed layer not read: say why
                local = stored[len(prefix) :]
                if not why.startswith("part of ") and local not in listed:
                    listed.append(local)
            for p_name in listed:
                name = f"{mod_name}.{p_name}" if mod_name else p_name
                if p_name in computed.effective and p_name not in own:
                    entry = _parametrized_entry(
                        mod, p_name, name, computed.effective[p_name], self.min_dim, origin
                    )
                    first = seen_computed.setdefault((id(mod), p_name), name)
                    if entry.skip_reason is None and first != name:
                        entry = replace(
                            entry, skip_reason=f"same tensor as '{first}' (tied weights)"
                        )
                    out.append(entry)
                    continue
                spec = packed.weights.get(name)
                if spec is not None:  # a packed weight: the matrix's shape, dequantized
                    loader = packed.loader(name, lambda n, saved=saved: _param_loader(saved[n]))
                    out.append(
                        WeightEntry(
                            name,
                            spec.shape,
                            spec.dtype,
                            "linear",
                            skip_reason_for("linear", spec.shape, spec.dtype, min_dim=self.min_dim)
                            or _storage_skip_reason(saved[spec.stored], "parameter"),
                            origin,
                            loader,
                        )
                    )
                    continue
                p = own[p_name]
                if isinstance(p, nn.parameter.UninitializedParameter):
                    out.append(
                        WeightEntry(
                            name,
                            (),
                            "unknown",
                            "other",
                            "uninitialized lazy parameter (run a forward pass first)",
                            origin,
                            _param_loader(p),
                        )
                    )
                    continue
                shape = tuple(p.shape)
                kind = module_param_kind(mod, p_name, shape)
                if script and kind in ("matrix", "other"):
                    kind = infer_kind(name, shape)  # a class it does not know: by name and shape
                dtype = _dtype_name(p.dtype)
                reason = (
                    raw_inputs.get(name) or packed.reasons.get(name) or plan.reasons.get(p_name)
                )
                reason = reason or skip_reason_for(kind, shape, dtype, min_dim=self.min_dim)
                reason = reason or _storage_skip_reason(p, "parameter")
                first = seen.setdefault(id(p), name)
                if reason is None and first != name:
                    reason = f"same tensor as '{first}' (tied weights)"
                loader = plan.loader(
                    p_name, dtype, shape, _param_loader(p), lambda n, own=own: _param_loader(own[n])
                )
                out.append(WeightEntry(name, shape, dtype, kind, reason, origin, loader))
        return out


def _module_packed(mod: nn.Module, own: dict, prefix: str) -> tuple[PackedPlan, dict]:
    """The packed weights of one module (bitsandbytes' ``Linear4bit``/``Linear8bitLt``,
    a GPTQ ``QuantLinear``), from the tensors its own ``state_dict`` saves, by full name."""
    if not any(
        isinstance(t, torch.Tensor)
        and not isinstance(t, nn.parameter.UninitializedParameter)
        and t.dtype in _INTEGER_DTYPES
        for t in own.values()
    ):
        return EMPTY_PLAN, {}
    saved: dict[str, Any] = {}
    mod._save_to_state_dict(saved, prefix, True)  # as state_dict() saves it, no copy
    saved = {n: t for n, t in saved.items() if isinstance(t, torch.Tensor)}
    plan = packed_plan(
        {n: (tuple(t.shape), _dtype_name(t.dtype)) for n, t in saved.items()},
        lambda n: saved[n].detach(),
        quantization={"checkpoint_format": "gptq_v2" if _zeros_v2(mod) else "gptq"},
    )
    kind = type(mod).__name__
    if plan.weights and _REARRANGING_KERNELS.search(kind):  # codes no longer GPTQ's layout
        for entry, spec in list(plan.weights.items()):
            if spec.dtype.startswith("gptq"):
                del plan.weights[entry]
                plan.renamed.pop(spec.stored, None)
                plan.reasons[spec.stored] = (
                    f"GPTQ module of class {kind}, whose kernel rearranges qweight when "
                    f"the model is loaded: analyse the checkpoint's files instead"
                )
    return plan, saved


#: GPTQ kernels that shuffle ``qweight`` into their own layout at load (exllama, Marlin...).
_REARRANGING_KERNELS = re.compile(r"exllama|marlin|bitblas|machete|qqq", re.IGNORECASE)


def _zeros_v2(mod: nn.Module) -> bool:
    """Whether a loaded GPTQ module holds v2 zero points (GPTQModel converts v1 files to v2
    at load for kernels that need it: ``qzero_format()`` says so, or its class's
    ``REQUIRES_FORMAT_V2``); AutoGPTQ's modules keep v1."""
    fmt = getattr(mod, "qzero_format", None)
    if callable(fmt):
        try:
            return fmt() == 2
        except Exception:  # an older signature: fall back to the class's flag
            pass
    return bool(getattr(type(mod), "REQUIRES_FORMAT_V2", False))


class StateDictSource(WeightSource):
    """A mapping from full dotted names to tensors (a ``state_dict``).

    Kinds are inferred from names and shapes, as for a file
    (see :func:`infospec.sources.entry.infer_kind`); the fused experts tensors of one
    module are read together (:func:`infospec.sources.entry.fused_experts_kinds`), so
    that the ``state_dict()`` of a Mixtral and of a gpt-oss module both get their
    orientation. NumPy arrays are accepted as values.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor or numpy.ndarray
        Not empty.
    min_dim : int >= 1, default 10
        Matrices whose smaller side is below it are skipped.

    Raises
    ------
    SourceError
        If the mapping is empty, or a key is not a string, or a value is not a tensor
        (for a checkpoint that nests the weights, the message suggests the key to pass).

    Examples
    --------
    >>> import torch
    >>> sd = {"embed_tokens.weight": torch.zeros(100, 16), "head.weight": torch.zeros(16, 16)}
    >>> [(e.name, e.kind) for e in StateDictSource(sd).entries()]
    [('embed_tokens.weight', 'embedding'), ('head.weight', 'matrix')]
    """

    def __init__(self, state_dict: Mapping[str, Any], *, min_dim: int = DEFAULT_MIN_DIM) -> None:
        if not isinstance(state_dict, Mapping):
            raise SourceError(
                f"StateDictSource needs a mapping of names to tensors; got "
                f"{type(state_dict).__name__}."
            )
        self.min_dim = check_positive(min_dim, "min_dim", "StateDictSource", integer=True)
        if len(state_dict) == 0:
            raise SourceError("The state dict is empty: it holds no tensors to analyse.")
        bad = [
            (k, v)
            for k, v in state_dict.items()
            if not isinstance(k, str) or not isinstance(v, torch.Tensor | np.ndarray)
        ]
        if bad:
            k, v = bad[0]
            nested = [key for key, val in state_dict.items() if isinstance(val, Mapping)]
            hint = (
                f" It looks like a checkpoint that nests the weights: pass "
                f"checkpoint[{nested[0]!r}]."
                if nested
                else ""
            )
            raise SourceError(
                f"The state dict must map names (str) to tensors; key {k!r} holds a "
                f"{type(v).__name__} ({len(bad)} such key(s)).{hint}"
            )
        self._tensors = dict(state_dict)
        self.name = "state dict"
        self.description = f"state dict ({len(self._tensors)} tensors)"

    def entries(self) -> list[WeightEntry]:
        from .pickle_source import _listed_shape, unread_layout  # (the rule of torch.save files)

        seen: dict[tuple, str] = {}
        unreadable: dict[str, WeightEntry] = {}
        tensors: dict[str, torch.Tensor] = {}
        metas: dict[str, TensorMeta] = {}
        for name, value in self._tensors.items():
            if isinstance(value, np.ndarray):
                try:
                    t = torch.from_numpy(value)
                except TypeError:
                    reason = f"NumPy dtype {value.dtype} has no torch equivalent"
                    unreadable[name] = WeightEntry(
                        name,
                        value.shape,
                        str(value.dtype),
                        "other",
                        reason,
                        "state dict",
                        _param_loader(value),
                    )
                    continue
            else:
                t = value
            layout = unread_layout(t)  # sparse, nested, meta: listed, not read
            if layout is not None:
                tensors[name] = t
                metas[name] = TensorMeta(
                    _listed_shape(t), _dtype_name(t.dtype), "state dict", layout
                )
                continue
            shape = tuple(t.shape)
            reason = _storage_skip_reason(t, "tensor")
            if reason is None and t.numel():
                key = (t.untyped_storage().data_ptr(), t.storage_offset(), shape, t.stride())
                first = seen.setdefault(key, name)
                if first != name:
                    reason = f"same tensor as '{first}' (tied weights)"
            tensors[name] = t
            metas[name] = TensorMeta(shape, _dtype_name(t.dtype), "state dict", reason)
        built = build_entries(
            metas,
            lambda name: _param_loader(tensors[name]),
            min_dim=self.min_dim,
            model_order=False,
        )
        # built keeps the metas' order (a packed GPTQ weight is listed under its entry name)
        by_name = dict(zip(metas, built, strict=True)) | unreadable
        experts = fused_experts_kinds({n: m.shape for n, m in metas.items()})
        for name, kind in experts.items():  # one experts module's tensors read together
            e, meta = by_name[name], metas[name]
            reason = skip_reason_for(kind, meta.shape, meta.dtype, min_dim=self.min_dim)
            reason = reason or meta.reason
            by_name[name] = WeightEntry(name, e.shape, e.dtype, kind, reason, e.origin, e.loader)
        return [by_name[name] for name in self._tensors]
