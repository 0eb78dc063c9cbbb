r"""A PEFT LoRA adapter folder as a weight source: the low-rank deltas, read from their factors.

A folder saved by ``peft`` (``model.save_pretrained``) holds ``adapter_config.json`` and
``adapter_model.safetensors`` (or the older ``adapter_model.bin``). For every target module
the weights file has the factors ``<prefix><module>.lora_A.weight`` (:math:`A`, ``r x in``)
and ``<prefix><module>.lora_B.weight`` (:math:`B`, ``out x r``), and the adapter adds

.. math:: \Delta W = s\,B A, \qquad s = \frac{\alpha}{r}
   \quad\text{or}\quad s = \frac{\alpha}{\sqrt r}\ \text{(rsLoRA, ``use_rslora``)},

to the module's ``out x in`` weight, with :math:`\alpha` = ``lora_alpha`` and :math:`r`
the rank, each overridden per module by ``alpha_pattern`` and ``rank_pattern`` (PEFT's
rule: a key matches a module whose name is the key or ends in ``.key``, as a regular
expression). An embedding's factors are ``lora_embedding_A`` (``r x vocab``) and
``lora_embedding_B`` (``dim x r``) with :math:`\Delta W = s\,(BA)^\top` (``vocab x dim``).
``fan_in_fan_out`` (GPT-2's ``Conv1D``) stores the base weight transposed; the delta's
matrix is the same ``out x in`` one.

**Exact singular values from the factors.** With the thin QR factorisations
:math:`B = Q_B R_B` and :math:`A^\top = Q_A R_A`,

.. math:: \Delta W = s\, Q_B\,(R_B R_A^\top)\,Q_A^\top ,

and :math:`Q_B, Q_A` have orthonormal columns, so the nonzero singular values of
:math:`\Delta W` are :math:`|s|` times those of the ``r x r`` matrix :math:`R_B R_A^\top`;
the other :math:`\min(\text{out}, \text{in}) - r` are exactly zero. Cost
:math:`O((\text{out} + \text{in})\,r^2)` in float64, never forming the ``out x in``
matrix; both QR and the small SVD are backward stable, so the values are accurate to
:math:`\epsilon\,\sigma_{\max}` (a materialised float64 product is no better).

**Merged weights.** ``PeftSource(folder, base=...)`` also lists, for every target module,
the merged :math:`W + \Delta W` (read from the base checkpoint and formed in float64 one
module at a time: a full-rank matrix has no shortcut), named as the base weight; the
deltas are named ``<module>.weight[lora]``.

References
----------
E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.
D. Kalajdzievski, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
arXiv:2312.03732 (2023). PEFT's ``LoraConfig`` documentation for the file format.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import SourceError
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, WeightEntry, skip_reason_for
from .formats import regular_file

__all__ = ["LoraEntry", "PeftSource", "is_adapter_folder", "lora_singular_values"]

CONFIG = "adapter_config.json"
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
#: ``<module>.lora_A.weight``, ``<module>.lora_embedding_B``, with an optional adapter name
_FACTOR = re.compile(
    r"^(?P<module>.+)\.(?P<which>lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
    r"(?:\.(?P<adapter>[^.]+))?(?:\.weight)?$"
)


def is_adapter_folder(path: Path) -> bool:
    """Whether ``path`` is a PEFT adapter folder (or its ``adapter_config.json``)."""
    return (path.is_dir() and (path / CONFIG).is_file()) or (path.name == CONFIG and path.is_file())


def lora_singular_values(b, a, scale: float = 1.0):
    r"""Singular values of :math:`s\,BA` from the factors, exactly (module docstring).

    Parameters
    ----------
    b : torch.Tensor, shape (out, r)
    a : torch.Tensor, shape (r, in)
        The LoRA factors, any floating dtype (computed in float64, on their device).
    scale : float
        :math:`s`, e.g. ``lora_alpha / r``.

    Returns
    -------
    torch.Tensor, shape (min(out, in),)
        Descending, float64; all but the first ``min(r, out, in)`` are exact zeros.

    Examples
    --------
    >>> import torch
    >>> b = torch.tensor([[2.0], [0.0], [0.0]])
    >>> a = torch.tensor([[0.0, 3.0, 4.0, 0.0]])
    >>> lora_singular_values(b, a, scale=0.5).tolist()
    [5.0, 0.0, 0.0]
    """
    import torch

    b = b.to(torch.float64)
    a = a.to(torch.float64)
    rb = torch.linalg.qr(b).R  # (min(out, r), r)
    ra = torch.linalg.qr(a.mT).R  # (min(in, r), r)
    core = torch.linalg.svdvals(rb @ ra.mT) * abs(float(scale))
    m = min(b.shape[0], a.shape[1])
    out = torch.zeros(m, dtype=torch.float64, device=core.device)
    n = min(m, core.shape[0])
    out[:n] = core[:n]
    return out


@dataclass(frozen=True)
class LoraEntry(WeightEntry):
    r"""The delta :math:`\Delta W = s\,BA` of one target module, as an entry.

    :meth:`factor_spectra` gives its singular values from the factors (what
    :func:`infospec.analyze` reads); :meth:`load` materialises it (``out x in``, float64).

    Attributes
    ----------
    scale : float
        :math:`s` (``lora_alpha / r``, or ``/ sqrt(r)`` for rsLoRA).
    rank : int
    factors : callable
        ``factors(device)`` returns ``(B, A)`` as stored.
    transpose : bool
        Whether the matrix is :math:`(BA)^\top` (an embedding's delta).
    """

    scale: float = 1.0
    rank: int = 0
    factors: Callable[[Any], tuple[Any, Any]] | None = field(
        default=None, repr=False, compare=False
    )
    transpose: bool = False

    def factor_spectra(self, *, device=None) -> list[tuple]:
        """One spectrum item of :func:`infospec.analyze`'s first stage, from the factors."""
        import torch

        b, a = self.factors(device)
        rows, cols = self.shape
        if not (bool(torch.isfinite(b).all()) and bool(torch.isfinite(a).all())):
            bad = int((~torch.isfinite(b)).sum()) + int((~torch.isfinite(a)).sum())
            return [
                (
                    self.name,
                    rows,
                    cols,
                    None,
                    f"LoRA factors hold {bad} NaN or infinite value(s); not analysed",
                )
            ]
        sigma = lora_singular_values(b, a, self.scale)
        return [(self.name, rows, cols, sigma.cpu(), "")]


def _pattern_value(module: str, patterns: dict[str, Any], default: Any) -> Any:
    """PEFT's per-module override: a key matching the whole name or its dotted tail."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _read_config(path: Path) -> dict[str, Any]:
    regular_file(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"The adapter config '{path}' cannot be read: {exc}.") from exc
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"The adapter config '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); "
            f"save the adapter again with peft's save_pretrained."
        ) from exc
    if not isinstance(config, dict):
        raise SourceError(f"The adapter config '{path}' is not a JSON object.")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise SourceError(
            f"The adapter config '{path}' is of peft_type {peft_type}; infospec reads LoRA "
            f"adapters only (merge the adapter with peft's merge_and_unload and analyse "
            f"the merged model)."
        )
    if config.get("use_dora"):
        raise SourceError(
            f"The adapter config '{path}' has use_dora: true; a DoRA update rescales the "
            f"merged weight's columns and is not s*B*A. Merge it with peft's "
            f"merge_and_unload and compare the merged model with infospec compare."
        )
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise SourceError(
                f"The adapter config '{path}' has {key}={value!r}; a LoRA config needs a "
                f"positive number there."
            )
    return config


class PeftSource(WeightSource):
    """The LoRA deltas of a PEFT adapter folder (and, with ``base``, the merged weights).

    Parameters
    ----------
    path : str or path-like
        The adapter folder, or its ``adapter_config.json``.
    base : str, path-like, Module or state dict, optional
        The base model (anything :func:`~infospec.sources.open_source` reads): adds the
        merged :math:`W + \\Delta W` of every target module.
    min_dim : int, default 10
        As for every source.

    Raises
    ------
    SourceError
        If the folder has no config or weights file, the config is not a LoRA config
        (or is DoRA), a target module has only one factor or factors of mismatched
        shapes or a rank other than the config's, a module the config's
        ``target_modules`` names has no factors in the weights file, or (with ``base``)
        a target module's weight is missing from the base or has another shape.
    """

    def __init__(
        self, path: str | os.PathLike, *, base: Any = None, min_dim: int = DEFAULT_MIN_DIM
    ) -> None:
        from .dispatch import open_source

        path = Path(path).expanduser()
        folder = path.parent if path.name == CONFIG else path
        if not (folder / CONFIG).is_file():
            raise SourceError(
                f"'{folder}' is not a PEFT adapter folder: it has no {CONFIG}. Pass the "
                f"folder that peft's save_pretrained wrote."
            )
        self.config_path = folder / CONFIG
        self.config = _read_config(self.config_path)
        files = [folder / f for f in _WEIGHT_FILES if (folder / f).is_file()]
        if not files:
            raise SourceError(
                f"The adapter folder '{folder}' has {CONFIG} but no "
                f"{' or '.join(_WEIGHT_FILES)}; copy the adapter's weights file next to it."
            )
        self.weights_path = files[0]
        self.min_dim = min_dim
        self.name = folder.name
        self._weights = open_source(self.weights_path, min_dim=1)
        self._base = None if base is None else open_source(base, min_dim=min_dim)
        self._entries = self._build()
        rank = ", ".join(sorted({str(e.rank) for e in self._entries if isinstance(e, LoraEntry)}))
        self.description = (
            f"PEFT LoRA adapter '{folder}' ({sum(isinstance(e, LoraEntry) for e in self._entries)}"
            f" target modules, r={rank or '?'}"
            + (f", merged into {self._base.description}" if self._base is not None else "")
            + ")"
        )

    def entries(self) -> list[WeightEntry]:
        return list(self._entries)

    def _build(self) -> list[WeightEntry]:
        stored = {e.name: e for e in self._weights.entries()}
        groups: dict[str, dict[str, WeightEntry]] = {}
        others: list[WeightEntry] = []
        for name, entry in stored.items():
            m = _FACTOR.match(name)
            if m is None:
                others.append(entry)
                continue
            groups.setdefault(m["module"], {})[m["which"]] = entry
        if not groups:
            raise SourceError(
                f"The adapter weights file '{self.weights_path}' holds no LoRA factor "
                f"(no '*.lora_A.weight' / '*.lora_B.weight' tensors); it is not a LoRA adapter."
            )
        # peft saves the wrapped model's names: base_model.model.<the base's name>
        wrapped = all(m.startswith("base_model.model.") for m in groups)
        strip = "base_model.model." if wrapped else ""
        self._check_targets([m[len(strip) :] for m in groups])
        out: list[WeightEntry] = []
        base_entries = {e.name: e for e in self._base.entries()} if self._base is not None else {}
        for module, factors in groups.items():
            out.extend(self._module_entries(module[len(strip) :], factors, base_entries))
        for entry in others:
            out.append(
                WeightEntry(
                    entry.name,
                    entry.shape,
                    entry.dtype,
                    "other",
                    "not a LoRA factor (a modules_to_save copy or another adapter tensor)",
                    str(self.weights_path),
                    entry.loader,
                )
            )
        return out

    def _check_targets(self, modules: list[str]) -> None:
        targets = self.config.get("target_modules")
        if isinstance(targets, str):
            if not any(re.fullmatch(targets, m) for m in modules):
                raise SourceError(
                    f"The adapter config '{self.config_path}' has target_modules "
                    f"{targets!r}, which matches none of the modules with factors in "
                    f"'{self.weights_path}' ({modules[:3]}); the config and the weights file "
                    f"do not belong together."
                )
            return
        for target in targets or ():
            if target == "all-linear":
                continue
            if not any(m == target or m.endswith("." + target) for m in modules):
                raise SourceError(
                    f"The adapter config '{self.config_path}' names the target module "
                    f"'{target}', but '{self.weights_path}' has no LoRA factors for a module "
                    f"of that name (it has {modules[:3]}); the config and the weights file do "
                    f"not belong together: save the adapter again."
                )

    def _module_entries(
        self, module: str, factors: dict[str, WeightEntry], base_entries: dict[str, WeightEntry]
    ) -> list[WeightEntry]:
        cfg = self.config
        embedding = "lora_embedding_A" in factors or "lora_embedding_B" in factors
        ka, kb = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B")
        a, b = factors.get(ka), factors.get(kb)
        where = f"'{self.weights_path}'"
        if a is None or b is None:
            have = (a or b).name
            raise SourceError(
                f"The adapter weights file {where} has '{have}' but not its other LoRA "
                f"factor ({kb if a is not None else ka}) for module '{module}'; the file is "
                f"incomplete."
            )
        if len(a.shape) != 2 or len(b.shape) != 2:
            return [
                WeightEntry(
                    f"{module}.weight[lora]",
                    tuple(b.shape),
                    a.dtype,
                    "other",
                    f"LoRA of a convolution (factor shapes {a.shape}, {b.shape}); not read",
                    str(self.weights_path),
                    None,
                )
            ]
        r = a.shape[0]
        if b.shape[1] != r:
            raise SourceError(
                f"The adapter weights file {where} has LoRA factors of module '{module}' of "
                f"shapes {a.name} {a.shape} and {b.name} {b.shape}, whose ranks differ; the "
                f"file is corrupt."
            )
        r_cfg = _pattern_value(module, cfg.get("rank_pattern") or {}, cfg["r"])
        if int(r_cfg) != r:
            raise SourceError(
                f"The adapter config '{self.config_path}' gives module '{module}' rank "
                f"{r_cfg}, but its factors in {where} have rank {r}; the config and the "
                f"weights file do not belong together."
            )
        alpha = float(_pattern_value(module, cfg.get("alpha_pattern") or {}, cfg["lora_alpha"]))
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        shape = (a.shape[1], b.shape[0]) if embedding else (b.shape[0], a.shape[1])
        kind = "embedding" if embedding else "linear"

        def load_factors(device, a=a, b=b, embedding=embedding):
            fb, fa = b.load(device=device), a.load(device=device)
            # an embedding's delta is (s B A)^T = s A^T B^T: factors (A^T, B^T)
            return (fa.mT, fb.mT) if embedding else (fb, fa)

        def load_delta(device, load_factors=load_factors, scale=scale):
            import torch

            fb, fa = load_factors(device)
            return torch.mm(fb.to(torch.float64), fa.to(torch.float64)).mul_(scale)

        name = f"{module}.weight"
        reason = skip_reason_for(kind, shape, a.dtype, min_dim=self.min_dim)
        delta = LoraEntry(
            f"{name}[lora]",
            shape,
            a.dtype,
            kind,
            reason,
            str(self.weights_path),
            load_delta,
            scale=scale,
            rank=r,
            factors=load_factors,
            transpose=embedding,
        )
        if self._base is None:
            return [delta]
        base = base_entries.get(name)
        if base is None:
            raise SourceError(
                f"The base {self._base.description} has no tensor '{name}', which the "
                f"adapter {where} changes (module '{module}'); pass the base model the "
                f"adapter was trained on."
            )
        from ..spectra.conventions import matrix_layout

        layout = matrix_layout(base.kind, base.shape) if base.kind != "other" else None
        if layout is None or layout.count != 1 or (layout.rows, layout.cols) != shape:
            raise SourceError(
                f"The base tensor '{name}' ({base.origin}) has shape {base.shape}, but the "
                f"adapter {where} changes it by a {shape[0]} x {shape[1]} delta; pass the "
                f"base model the adapter was trained on."
            )

        def load_merged(device, base=base, load_factors=load_factors, scale=scale):
            import torch

            from ..spectra.conventions import as_matrices

            ((_, matrix),) = as_matrices(base, base.load(device=device))
            merged = matrix.to(torch.float64, copy=True)
            fb, fa = load_factors(device)
            return merged.addmm_(fb.to(torch.float64), fa.to(torch.float64), alpha=scale)

        merged = WeightEntry(
            name, shape, base.dtype, kind, base.skip_reason, base.origin, load_merged
        )
        return [delta, merged]
