"""The folder of a compressed model: written atomically, loaded onto the original model.

:meth:`~infospec.transforms.CompressionResult.save` writes ``plan.json`` and either
``factors.safetensors`` (low rank: ``<module>.A``, ``<module>.B``) or
``quantized.safetensors`` (``bits=``: ``<module>.codes``, packed, with ``.scale`` and
``.minimum``); :func:`load_compressed` puts either back into the original architecture.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import shown
from .._errors import InputError, SourceError
from .._validation import check_module
from .quantization import QUANT_FILE, QuantizedMatrix, dequantize, quantized_tensors, unpack_codes

__all__ = ["FACTORS_FILE", "PLAN_FILE", "load_compressed", "save_folder"]

FACTORS_FILE = "factors.safetensors"
PLAN_FILE = "plan.json"
_FORMAT = "infospec-lowrank-1"
_QUANT_FORMAT = "infospec-quant-1"


def factorised(linear: nn.Linear, a: torch.Tensor, b: torch.Tensor) -> nn.Sequential:
    k = a.shape[1]
    dev, dt = linear.weight.device, linear.weight.dtype
    first = nn.Linear(linear.in_features, k, bias=False, device=dev, dtype=dt)
    second = nn.Linear(k, linear.out_features, bias=linear.bias is not None, device=dev, dtype=dt)
    with torch.no_grad():
        first.weight.copy_(b)
        second.weight.copy_(a)
        if linear.bias is not None:
            second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _planned_linear(named: dict[str, nn.Module], name: str, what: str) -> nn.Linear:
    """The ``nn.Linear`` named in a plan, or an error saying what the model has there."""
    lin = named.get(name)
    if type(lin) not in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear):
        found = "missing" if lin is None else f"a {type(lin).__name__}"
        raise InputError(
            f"load_compressed: layer '{name}' of the plan is {found} in the model; pass "
            f"the original ({what}) model."
        )
    return lin


def _layers(plan: dict, where: str, status: str, fields: tuple[str, ...]) -> list[dict]:
    """The records of ``plan`` with this ``status``, their fields checked (``where``: the
    plan file). A record whose status is another string (``"skipped"``, ``"dense"``) is
    not loaded."""
    layers = plan.get("layers")
    if not isinstance(layers, list):
        raise SourceError(
            f"{where}: 'layers' must be a list of layer records; got {shown(layers)}."
        )
    out = []
    for i, rec in enumerate(layers):
        if not isinstance(rec, dict):
            raise SourceError(
                f"{where}: layers[{i}] must be a record (a JSON object); got {shown(rec)}."
            )
        if not isinstance(rec.get("status"), str):
            raise SourceError(
                f"{where}: layers[{i}] needs a 'status' string ('{status}', 'skipped', ...); "
                f"got {shown(rec.get('status'))}."
            )
        if rec["status"] != status:
            continue
        for key in ("name", "shape", *fields):
            if key not in rec:
                raise SourceError(f"{where}: layers[{i}] ({status}) lacks its '{key}' field.")
        if not isinstance(rec["name"], str):
            raise SourceError(
                f"{where}: layers[{i}] 'name' must be a string; got {shown(rec['name'])}."
            )
        shape = rec["shape"]
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_count(v) for v in shape)):
            raise SourceError(
                f"{where}: layers[{i}] 'shape' must be [out, in], two ints >= 1; got "
                f"{shown(shape)}."
            )
        for key in fields:
            high = 8 if key == "bits" else None
            if not _is_count(rec[key], high):
                bound = "in 1..8" if high else ">= 1"
                raise SourceError(
                    f"{where}: layers[{i}] '{key}' must be an int {bound}; got {shown(rec[key])}."
                )
        out.append(rec)
    return out


def _is_count(value: Any, high: int | None = None) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 1
        and (high is None or value <= high)
    )


def _finite(t: torch.Tensor, what: str, where: str) -> torch.Tensor:
    """``t`` if it is a floating tensor of finite values, else a :class:`SourceError`."""
    if not t.is_floating_point():
        raise SourceError(
            f"{where}: {what} must be floating point; got dtype "
            f"{str(t.dtype).removeprefix('torch.')}."
        )
    if not bool(torch.isfinite(t).all()):
        raise SourceError(
            f"{where}: NaN or infinite values in {what} (or values beyond the model's "
            f"dtype); the file is damaged or was not written by infospec."
        )
    return t


def load_quantized(
    model: nn.Module, plan: dict, tensors: dict[str, torch.Tensor], where: str
) -> nn.Module:
    """Write the dequantized weights of a quantized-model folder into ``model``'s linears.

    Every layer is checked (present, an ``nn.Linear`` of the planned shape, its tensors
    there and of the right sizes) before any weight changes.

    Raises
    ------
    InputError
        If a listed layer is missing or of another shape, or its tensors are missing or
        inconsistent.
    SourceError
        If a layer record of the plan lacks a field or has one of the wrong type, or the
        scales, minima or dequantized weights are not finite floating values.
    """
    named = dict(model.named_modules())
    updates = []
    plan_file = str(Path(where).with_name(PLAN_FILE))
    for rec in _layers(plan, plan_file, "quantized", ("bits", "group_size")):
        name, (m, n), b, gs = rec["name"], rec["shape"], rec["bits"], rec["group_size"]
        lin = _planned_linear(named, name, "unquantized")
        if tuple(lin.weight.shape) != (m, n):
            raise InputError(
                f"load_compressed: layer '{name}' is {tuple(lin.weight.shape)} in the model; "
                f"the plan has {(m, n)}."
            )
        parts = [tensors.get(f"{name}.{k}") for k in ("codes", "scale", "minimum")]
        if any(p is None for p in parts):
            raise InputError(f"load_compressed: {where} lacks the tensors of '{name}'.")
        packed, scale, minimum = parts
        groups = -(-n // gs)
        if tuple(scale.shape) != (m, groups) or tuple(minimum.shape) != (m, groups):
            raise InputError(
                f"load_compressed: the scales of '{name}' in {where} are "
                f"{tuple(scale.shape)}, not {(m, groups)} for group size {gs}."
            )
        _finite(scale, f"the scales of '{name}'", where)
        _finite(minimum, f"the minima of '{name}'", where)
        codes = unpack_codes(packed, b, (m, n))
        q = QuantizedMatrix(codes, scale, minimum, b, gs)
        w = _finite(dequantize(q, lin.weight.dtype), f"the dequantized weight of '{name}'", where)
        updates.append((lin, w))
    with torch.no_grad():
        for lin, w in updates:
            lin.weight.copy_(w.to(lin.weight.device))
    return model


def save_folder(result: Any, directory: str | os.PathLike) -> Path:
    """Write ``result`` into the new folder ``directory`` (see ``CompressionResult.save``)."""
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(
            f"The output folder '{target}' exists and is not empty; give a new folder."
        )
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"Cannot write '{target}': the directory '{parent}' does not exist.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        _write_folder(tmp, result)
        if target.exists():
            target.rmdir()
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write_folder(folder: Path, result: Any) -> None:
    from safetensors.torch import save_file

    if result.quantized:
        tensors, file, fmt = quantized_tensors(result.quantized), QUANT_FILE, _QUANT_FORMAT
    else:
        tensors, file, fmt = {}, FACTORS_FILE, _FORMAT
        for name, (a, b) in result.factors.items():
            tensors[f"{name}.A"] = a.detach().cpu().contiguous()
            tensors[f"{name}.B"] = b.detach().cpu().contiguous()
    save_file(tensors, str(folder / file), metadata={"format": fmt})
    plan = {"format": fmt, "settings": result.settings, "layers": result.plan}
    (folder / PLAN_FILE).write_text(json.dumps(plan, indent=1, allow_nan=True) + "\n")


def load_compressed(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Swap each layer listed in a :meth:`CompressionResult.save` folder for its factors.

    A folder written after ``compress(..., bits=...)`` (``quantized.safetensors``) instead
    sets each listed ``nn.Linear``'s weight to its dequantized value, in place.

    Each factorised ``nn.Linear`` named in ``plan.json`` becomes
    ``nn.Sequential(nn.Linear(in, k, bias=False), nn.Linear(k, out, bias=...))`` holding
    ``B`` and ``A`` from ``factors.safetensors`` and the layer's own bias. ``model`` is
    modified in place (pass the original, uncompressed architecture) and returned.

    Raises
    ------
    InputError
        If ``model`` is not an ``nn.Module``, ``directory`` is not a path, the folder's
        files are missing or not of this format, a listed layer is not an ``nn.Linear`` of
        ``model``, or a factor's shape does not fit the layer.
    SourceError
        If ``plan.json`` is not a regular file of at most 100 MB (a FIFO, a device, a link
        to one), is not UTF-8 JSON, has a key twice in one object, is nested deeper than
        Python's recursion limit or holds an integer of more than 4300 digits; or if it
        has no list of layer records, a record lacks a field (``status``,
        ``name``, ``shape``, ``rank``, ``bits``, ``group_size``) or has one of the wrong
        type, or the stored factors, scales or minima are not finite floating values (or
        overflow the model's dtype).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_module(model, "load_compressed")
    try:
        folder = Path(os.fsdecode(directory))
    except TypeError as exc:
        raise InputError(
            f"The 'directory' argument of load_compressed must be a path (str or "
            f"os.PathLike) of a folder written by CompressionResult.save; got "
            f"{type(directory).__name__}."
        ) from exc
    from ..sources.safetensors_header import read_safetensors_header
    from ..sources.safetensors_source import _read_json

    not_folder = (
        f"load_compressed: '{folder}' is not a compressed-model folder ({PLAN_FILE} and "
        f"{FACTORS_FILE} or {QUANT_FILE})"
    )
    if not os.path.lexists(folder / PLAN_FILE):
        raise InputError(f"{not_folder}: it has no {PLAN_FILE}.")
    # read as untrusted text: a regular file of at most 100 MB, no key twice, no nesting
    # past the recursion limit, no integer of thousands of digits (a SourceError naming it)
    plan = _read_json(folder / PLAN_FILE, "compressed-model plan")
    quant = isinstance(plan, dict) and plan.get("format") == _QUANT_FORMAT
    stored = folder / (QUANT_FILE if quant else FACTORS_FILE)
    if os.path.lexists(stored):
        # its header checked first: a regular file (not a FIFO that would block), whose
        # header does not lie (a SourceError naming it)
        read_safetensors_header(stored)
    try:
        tensors = load_file(str(stored))
    except (OSError, ValueError, SafetensorError) as exc:
        raise InputError(f"{not_folder}: {exc}") from exc
    if not isinstance(plan, dict) or plan.get("format") not in (_FORMAT, _QUANT_FORMAT):
        raise InputError(f"load_compressed: '{folder / PLAN_FILE}' is not an infospec plan.")
    if quant:
        return load_quantized(model, plan, tensors, str(folder / QUANT_FILE))
    named = dict(model.named_modules())
    swaps = []
    for rec in _layers(plan, str(folder / PLAN_FILE), "factorised", ("rank",)):
        name, (m, n), k = rec["name"], rec["shape"], rec["rank"]
        lin = _planned_linear(named, name, "uncompressed")
        a, b = tensors.get(f"{name}.A"), tensors.get(f"{name}.B")
        if a is None or b is None:
            raise InputError(f"load_compressed: {FACTORS_FILE} lacks the factors of '{name}'.")
        if (
            tuple(lin.weight.shape) != (m, n)
            or tuple(a.shape) != (m, k)
            or tuple(b.shape) != (k, n)
        ):
            raise InputError(
                f"load_compressed: layer '{name}' is {tuple(lin.weight.shape)} in the model; "
                f"the plan has {(m, n)} at rank {k} with factors {tuple(a.shape)} and "
                f"{tuple(b.shape)}."
            )
        where = str(folder / FACTORS_FILE)
        _finite(a, f"the factor '{name}.A'", where)
        _finite(b, f"the factor '{name}.B'", where)
        a = _finite(a.to(lin.weight), f"the factor '{name}.A' in {lin.weight.dtype}", where)
        b = _finite(b.to(lin.weight), f"the factor '{name}.B' in {lin.weight.dtype}", where)
        swaps.append((name, lin, a, b))
    for name, lin, a, b in swaps:  # checked first: a bad folder leaves the model as it was
        set_module(model, name, factorised(lin, a, b))
    return model
