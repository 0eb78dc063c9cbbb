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

**An untrusted config.** ``adapter_config.json`` is read as every JSON file beside a
checkpoint is (a regular file of at most 100 MB, no key twice, no deep nesting, no huge
integer) and each field infospec uses is checked. ``target_modules`` (a string) and the keys
of ``rank_pattern`` / ``alpha_pattern`` are regular expressions matched, as PEFT matches
them, against the module names of the weights file; Python's ``re`` has no time limit, so a
pattern that can backtrack exponentially (a repeat of a part that itself repeats or
alternates, ``(a+)+``, ``(a|ab)*``, ``(a?){20}``), a backreference, more than
:data:`MAX_PATTERN_REPEATS` variable-width repeats in a row or over
:data:`MAX_PATTERN_CHARS` characters is refused, and so is a module name of over
:data:`MAX_MATCHED_NAME` characters that a pattern would be matched against.

References
----------
E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.
D. Kalajdzievski, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
arXiv:2312.03732 (2023). PEFT's ``LoraConfig`` documentation for the file format.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import SourceError
from .._text import printable
from .base import WeightSource
from .entry import DEFAULT_MIN_DIM, WeightEntry, skip_reason_for
from .safetensors_header import _json_type
from .safetensors_source import _read_json, confined

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


#: The longest regular expression (``target_modules``, a ``rank_pattern`` or
#: ``alpha_pattern`` key) infospec matches.
MAX_PATTERN_CHARS = 1000
#: The most variable-width repeats (``*``, ``+``, ``?``, ``{m,n}``) along one path through a
#: pattern: bounds the degree of the polynomial a match may take (and ``a?a?a?...``, which
#: is exponential in their number without any nesting). Real patterns have at most 4
#: (Unsloth's ``.*?(?:language).*?(?:self_attn|mlp).*?(?:q_proj|v_proj).*?``).
MAX_PATTERN_REPEATS = 4
#: The longest module name infospec matches against a pattern of the config (real names
#: are under 150 characters; a match of an allowed pattern is polynomial in the length).
MAX_MATCHED_NAME = 300
#: Seconds that matching the config's patterns against every module name may take in all:
#: past it the listing stops with an error (real adapters take milliseconds; a hostile
#: one with thousands of long names and costly allowed patterns would take hours).
MATCH_SECONDS = 10.0
#: PEFT's shorthand for every linear layer (expanded to a list when it saves the adapter).
_ALL_LINEAR = "all-linear"


class _Refused(Exception):
    """Why a pattern is refused (a phrase for the message)."""


def _regex_parser():
    try:
        from re import _parser
    except ImportError:  # pragma: no cover - Python < 3.11 named it sre_parse
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import sre_parse as _parser
    return _parser


def _walk(items: Any, sre: Any) -> tuple[int, bool]:
    """(variable-width repeats along the costliest path, whether it alternates) of a parsed
    pattern; raises :class:`_Refused` at a construct that can backtrack exponentially."""
    repeats = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", None)}
    total, alternates = 0, False
    for op, av in items:
        if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            raise _Refused("refers back to a group (a backreference or a conditional)")
        if op in repeats:
            low, high, body = av
            inner, branch = _walk(body, sre)
            if high > 1 and (inner or branch):
                raise _Refused(
                    "repeats a part that can itself repeat or alternate (like '(a+)+' or "
                    "'(a|ab)*'), which can take a time exponential in the name's length"
                )
            total += (low != high) + inner
            alternates |= branch
        elif op == sre.BRANCH:
            walked = [_walk(b, sre) for b in av[1]]
            total += max(n for n, _ in walked)
            alternates = True
        elif op == sre.SUBPATTERN:
            n, branch = _walk(av[-1], sre)
            total, alternates = total + n, alternates or branch
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            n, branch = _walk(av[1], sre)
            total, alternates = total + n, alternates or branch
        elif op == getattr(sre, "ATOMIC_GROUP", None):
            n, branch = _walk(av, sre)
            total, alternates = total + n, alternates or branch
    return total, alternates


def _compile_pattern(pattern: str, expression: str, what: Callable[[], str]) -> re.Pattern:
    """``expression`` (``pattern`` as PEFT matches it) compiled, after checking that
    ``pattern`` cannot backtrack exponentially; ``what()`` starts the message."""
    from .._checks import shown

    try:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise _Refused(
                f"is {len(pattern)} characters long, over the {MAX_PATTERN_CHARS} infospec matches"
            )
        sre = _regex_parser()
        repeats, _ = _walk(sre.parse(pattern), sre)
        if repeats > MAX_PATTERN_REPEATS:
            raise _Refused(
                f"has {repeats} variable-width repeats (*, +, ?, {{m,n}}) one after another, "
                f"over the {MAX_PATTERN_REPEATS} infospec matches (each can multiply the time "
                f"a match takes by the name's length)"
            )
        return re.compile(expression)
    except _Refused as exc:
        raise SourceError(
            f"{what()} {shown(pattern)}, a regular expression that {exc}; infospec refuses "
            f"it (Python's re has no time limit). Name the modules in a list, or write a "
            f"pattern of at most {MAX_PATTERN_CHARS} characters that repeats no repeated or "
            f"alternating part and has no backreference."
        ) from None
    except re.error as exc:
        at = f" at position {exc.pos}" if exc.pos is not None else ""
        problem = f"{exc.msg}{at}"
    except RecursionError:
        problem = "groups nested too deeply for Python's re to parse"
    except (OverflowError, ValueError, TypeError) as exc:  # a{99999999999}
        problem = printable(exc, 100)
    raise SourceError(
        f"{what()} {shown(pattern)}, which is not a valid regular expression ({problem}); "
        f"PEFT could not have used it either."
    )


def _rank(value: Any) -> int | None:
    """``value`` if it is an int > 0 (PEFT sizes layers with it), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _alpha(value: Any) -> float | None:
    """``value`` as a finite positive float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        v = float(value)
    except OverflowError:  # an int beyond float64
        return None
    return v if math.isfinite(v) and v > 0 else None


@dataclass(frozen=True)
class _Settings:
    """What infospec reads of ``adapter_config.json``, checked."""

    r: int
    alpha: float
    rslora: bool
    #: None (no check), a compiled ``target_modules`` regex, or the module names
    targets: re.Pattern | tuple[str, ...] | None
    #: (key, PEFT's ``(.*\.)?(key)$`` compiled, value), in the file's order
    ranks: tuple[tuple[str, re.Pattern, int], ...]
    alphas: tuple[tuple[str, re.Pattern, float], ...]


def _matched_name(module: str, field_name: str, weights: Path, deadline: float) -> str:
    """``module``, checked before a pattern is matched against it: its length, and the time
    spent matching so far (``deadline``, a :func:`time.monotonic` time)."""
    if time.monotonic() > deadline:
        raise SourceError(
            f"Matching the adapter config's {field_name} against the module names of "
            f"'{weights}' takes over {MATCH_SECONDS:g} s: its patterns are too costly for "
            f"these names (real adapters take milliseconds). Name the modules in a list."
        )
    if len(module) > MAX_MATCHED_NAME:
        raise SourceError(
            f"The adapter weights file '{weights}' has LoRA factors of a module whose name is "
            f"{len(module)} characters long ('{printable(module, 80)}'); infospec matches "
            f"module names of at most {MAX_MATCHED_NAME} characters against the config's "
            f"{field_name}, and no model has such names."
        )
    return module


def _pattern_value(
    module: str, patterns: tuple[tuple[str, re.Pattern, Any], ...], default: Any
) -> Any:
    r"""PEFT's per-module override (``get_pattern_key``): the first key matching the whole
    name or its dotted tail, as ``re.match(rf"(.*\.)?({key})$", module)``; else the key
    equal to the name; else ``default``."""
    for _, compiled, value in patterns:
        if compiled.match(module):
            return value
    for key, _, value in patterns:
        if key == module:
            return value
    return default


def _shown_names(names: list[str]) -> str:
    listed = ", ".join(f"'{printable(n, 80)}'" for n in names[:3])
    return listed + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _read_config(path: Path) -> tuple[dict[str, Any], _Settings]:
    """``adapter_config.json`` read as untrusted JSON (see ``_read_json``) and checked."""
    from .._checks import shown

    config = _read_json(path, "adapter config")
    where = f"The adapter config '{path}'"
    if not isinstance(config, dict):
        raise SourceError(f"{where} must be a JSON object; got {_json_type(config)}.")
    peft_type = config.get("peft_type", "LORA")
    if not isinstance(peft_type, str):
        raise SourceError(
            f"{where} has peft_type={shown(peft_type)}; peft_type must be a string (LORA)."
        )
    if peft_type.upper() != "LORA":
        raise SourceError(
            f"{where} is of peft_type {printable(peft_type, 60)}; infospec reads LoRA "
            f"adapters only (merge the adapter with peft's merge_and_unload and analyse "
            f"the merged model)."
        )
    for key in ("use_dora", "use_rslora"):
        flag = config.get(key)
        if flag is not None and not isinstance(flag, bool):
            raise SourceError(
                f"{where} has {key}={shown(flag)}; {key} must be true, false or null."
            )
    if config.get("use_dora"):
        raise SourceError(
            f"{where} has use_dora: true; a DoRA update rescales the "
            f"merged weight's columns and is not s*B*A. Merge it with peft's "
            f"merge_and_unload and compare the merged model with infospec compare."
        )
    r = _rank(config.get("r"))
    if r is None:
        raise SourceError(
            f"{where} has r={shown(config.get('r'))}; r (the LoRA rank) must be an int > 0."
        )
    alpha = _alpha(config.get("lora_alpha"))
    if alpha is None:
        raise SourceError(
            f"{where} has lora_alpha={shown(config.get('lora_alpha'))}; lora_alpha must be a "
            f"finite number > 0."
        )
    targets = config.get("target_modules")
    if targets is None or targets == _ALL_LINEAR:
        checked_targets = None
    elif isinstance(targets, str):
        checked_targets = _compile_pattern(targets, targets, lambda: f"{where} has target_modules")
    elif isinstance(targets, list) and all(isinstance(t, str) for t in targets):
        checked_targets = tuple(targets)
    else:
        if isinstance(targets, list):
            bad = next(t for t in targets if not isinstance(t, str))
            got = f"a list holding {shown(bad)} ({_json_type(bad)})"
        else:
            got = f"{shown(targets)} ({_json_type(targets)})"
        raise SourceError(
            f"{where} has target_modules={got}; target_modules must be a regular expression "
            f"(a string), a list of module names (strings) or null."
        )
    patterns = {}
    for key, check, must, values in (
        ("rank_pattern", _rank, "an int > 0 (a rank)", "ranks"),
        ("alpha_pattern", _alpha, "a finite number > 0 (an alpha)", "alphas"),
    ):
        given = config.get(key)
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise SourceError(
                f"{where} has {key}={shown(given)} ({_json_type(given)}); {key} must be an "
                f"object mapping module-name patterns to {values}, or null."
            )
        compiled = []
        for pattern, value in given.items():
            v = check(value)
            if v is None:
                raise SourceError(
                    f"{where} has {key}[{shown(pattern)}]={shown(value)}; each value of "
                    f"{key} must be {must}."
                )
            expression = _compile_pattern(
                pattern,
                rf"(.*\.)?({pattern})$",
                lambda key=key: f"{where} has the {key} key",
            )
            compiled.append((pattern, expression, v))
        patterns[key] = tuple(compiled)
    settings = _Settings(
        r=r,
        alpha=alpha,
        rslora=bool(config.get("use_rslora")),
        targets=checked_targets,
        ranks=patterns["rank_pattern"],
        alphas=patterns["alpha_pattern"],
    )
    return config, settings


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
        # the config and the weights are found by name in the folder: confined to it
        self.config_path = confined(folder / CONFIG, "adapter config", folder)
        self.config, self._settings = _read_config(self.config_path)
        files = [folder / f for f in _WEIGHT_FILES if (folder / f).is_file()]
        if not files:
            raise SourceError(
                f"The adapter folder '{folder}' has {CONFIG} but no "
                f"{' or '.join(_WEIGHT_FILES)}; copy the adapter's weights file next to it."
            )
        self.weights_path = confined(files[0], "adapter weights file", folder)
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
        self._deadline = time.monotonic() + MATCH_SECONDS  # for all the matching below
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
        """Every module ``target_modules`` names has factors (PEFT's rule: the name or its
        dotted tail); a regex must match (``re.fullmatch``, as PEFT) at least one."""
        targets = self._settings.targets
        if targets is None:
            return
        if isinstance(targets, re.Pattern):
            if not any(
                targets.fullmatch(
                    _matched_name(m, "target_modules", self.weights_path, self._deadline)
                )
                for m in modules
            ):
                raise SourceError(
                    f"The adapter config '{self.config_path}' has target_modules "
                    f"'{printable(targets.pattern, 80)}', which matches none of the modules with "
                    f"factors in '{self.weights_path}' ({_shown_names(modules)}); the config and "
                    f"the weights file do not belong together."
                )
            return
        # m == t or m.endswith("." + t), for every t, by bisection in the reversed names
        reversed_names = sorted(m[::-1] for m in modules)

        def found(target: str) -> bool:
            rt = target[::-1]
            i = bisect.bisect_left(reversed_names, rt)
            if i < len(reversed_names) and reversed_names[i] == rt:
                return True
            i = bisect.bisect_left(reversed_names, rt + ".")
            return i < len(reversed_names) and reversed_names[i].startswith(rt + ".")

        for target in targets:
            if target != _ALL_LINEAR and not found(target):
                raise SourceError(
                    f"The adapter config '{self.config_path}' names the target module "
                    f"'{printable(target, 80)}', but '{self.weights_path}' has no LoRA factors "
                    f"for a module of that name (it has {_shown_names(modules)}); the config "
                    f"and the weights file do not belong together: save the adapter again."
                )

    def _module_entries(
        self, module: str, factors: dict[str, WeightEntry], base_entries: dict[str, WeightEntry]
    ) -> list[WeightEntry]:
        settings = self._settings
        mod = printable(module, 200)  # for messages
        embedding = "lora_embedding_A" in factors or "lora_embedding_B" in factors
        ka, kb = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B")
        a, b = factors.get(ka), factors.get(kb)
        where = f"'{self.weights_path}'"
        if a is None or b is None:
            have = (a or b).name
            raise SourceError(
                f"The adapter weights file {where} has '{printable(have, 200)}' but not its "
                f"other LoRA factor ({kb if a is not None else ka}) for module '{mod}'; the "
                f"file is incomplete."
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
                f"The adapter weights file {where} has LoRA factors of module '{mod}' of "
                f"shapes {printable(a.name, 200)} {a.shape} and {printable(b.name, 200)} "
                f"{b.shape}, whose ranks differ; the file is corrupt."
            )
        if settings.ranks or settings.alphas:
            _matched_name(
                module, "rank_pattern and alpha_pattern", self.weights_path, self._deadline
            )
        r_cfg = _pattern_value(module, settings.ranks, settings.r)
        if r_cfg != r:
            raise SourceError(
                f"The adapter config '{self.config_path}' gives module '{mod}' rank "
                f"{r_cfg}, but its factors in {where} have rank {r}; the config and the "
                f"weights file do not belong together."
            )
        alpha = _pattern_value(module, settings.alphas, settings.alpha)
        scale = alpha / math.sqrt(r) if settings.rslora else alpha / r
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
                f"The base {self._base.description} has no tensor '{printable(name, 200)}', "
                f"which the adapter {where} changes (module '{mod}'); pass the base model "
                f"the adapter was trained on."
            )
        from ..spectra.conventions import matrix_layout

        layout = matrix_layout(base.kind, base.shape) if base.kind != "other" else None
        if layout is None or layout.count != 1 or (layout.rows, layout.cols) != shape:
            raise SourceError(
                f"The base tensor '{printable(name, 200)}' ({base.origin}) has shape "
                f"{base.shape}, but the adapter {where} changes it by a {shape[0]} x "
                f"{shape[1]} delta; pass the base model the adapter was trained on."
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
