r"""``compare(base, tuned)``: what fine-tuning changed, matrix by matrix, in the spectrum.

Tensors of the two checkpoints are matched by name (after the ``rename`` rules), and for
every matched weight matrix the report row holds

* the measures of the **delta** :math:`\Delta W = W_\text{tuned} - W_\text{base}`, formed
  in float64 from the stored values (bf16 and fp16 upcast exactly, so the difference of
  two bf16 checkpoints loses nothing): every column of
  :data:`~infospec.analysis.weights.WEIGHT_COLUMNS` (stable and effective rank, flatness,
  alpha, ``rate_bits`` at the distortion, ...), its ``numerical_rank`` (singular values
  above :math:`\max(m, n)\,\epsilon\,\sigma_{\max}`, NumPy's ``matrix_rank`` rule, and
  above twice the spectral norm of the rounding of storing the weights in a dtype of
  epsilon :math:`u` (float32, bf16, fp16), :math:`(\sqrt m + \sqrt n)\,u\,\|W\|_F /
  \sqrt{3mn}` with errors uniform within half an ulp) and
  ``rel_delta`` :math:`= \|\Delta W\|_F / \|W_\text{base}\|_F`;
* ``change_<column>``: the tuned matrix's value of each single-model column minus the
  base matrix's (``change_alpha``, ``change_flatness``, ...);
* the **subspace overlap** of the top-:math:`k` singular vectors: with orthonormal bases
  :math:`U_b, U_t \in \mathbb{R}^{m\times k}` of the top-:math:`k` left singular
  subspaces, the cosines of the principal angles are the singular values of
  :math:`U_b^\top U_t` (Björck & Golub 1973), and ``overlap_left`` is their mean square,
  :math:`\frac1k\sum_i\cos^2\theta_i = \|U_b^\top U_t\|_F^2/k \in [0, 1]` (1: the same
  subspace, :math:`k/m` on average for random ones); ``overlap_right`` is the same for the
  right (input) singular vectors, ``overlap_min_cos`` the smallest cosine of the two.

Both checkpoints stream: each matched pair is loaded, its three spectra (base, tuned,
delta) computed and the tensors released before the next, so memory is about two stored
tensors and one float64 matrix per worker. The stages, workers and progress are
:func:`~infospec.analysis.stages.run_stages`, the spectra
:func:`~infospec.analysis.analyze.tensor_spectra`'s and
:func:`infospec.singular_values`'s, the records :func:`~infospec.analysis.weights.weight_record`'s:
the pipeline of :func:`infospec.analyze`, not a copy of it.

References
----------
Å. Björck and G. H. Golub, "Numerical methods for computing angles between linear
subspaces", *Mathematics of Computation* 27 (1973) 579-594.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .._checks import check_positive, shown
from .._errors import InfospecError, InputError, SourceError
from .._names import match_names
from .._validation import check_bool, check_choice, check_device, check_probability
from ..sources import open_source
from ..sources.entry import WeightEntry, skip_reason_under
from ..spectra.conventions import ANALYSIS_CONV, CONV_MODES, as_matrices
from ..spectra.matrices import SPECTRUM_METHODS, singular_values
from .analyze import (
    _data_device,
    _records,
    _version,
    nonfinite_error,
    skipped_record,
)
from .report import Report
from .subspaces import principal_cosines, top_singular_subspaces
from .weights import WEIGHT_COLUMNS, weight_record

__all__ = [
    "CHANGE_COLUMNS",
    "COMPARE_COLUMNS",
    "compare",
    "principal_cosines",
    "rename_names",
    "top_singular_subspaces",
]

#: Single-model columns whose change (tuned minus base) ``compare`` reports as ``change_<c>``.
CHANGE_COLUMNS: tuple[str, ...] = tuple(
    c for c in WEIGHT_COLUMNS if c not in ("rows", "cols", "params", "mp_q")
)

#: Columns ``compare`` adds to the delta's :data:`WEIGHT_COLUMNS`, with their meaning.
COMPARE_COLUMNS: dict[str, str] = {
    "numerical_rank": (
        "singular values of dW above max(m, n) * eps * sigma_max (matrix_rank) and twice "
        "the spectral norm of the stored dtype's rounding, (sqrt m + sqrt n) u ||W||_F / "
        "sqrt(3 m n)"
    ),
    "rel_delta": "||W_tuned - W_base||_F / ||W_base||_F",
    "overlap_k": "k of the subspace overlaps (min(k, rows, cols))",
    "overlap_left": "mean cos^2 of the principal angles of the top-k left singular subspaces",
    "overlap_right": "mean cos^2 of the principal angles of the top-k right singular subspaces",
    "overlap_min_cos": "smallest cosine of a principal angle, left or right",
    "spectrum_method": "costliest route of the delta's, base's and tuned spectra (gram, "
    "gram+refine, svd)",
    **{f"change_{c}": f"tuned minus base: {WEIGHT_COLUMNS[c]}" for c in CHANGE_COLUMNS},
}

#: The terminal summary's columns for a comparison.
_SUMMARY = (
    "name",
    "rows",
    "cols",
    "rel_delta",
    "numerical_rank",
    "stable_rank",
    "alpha",
    "overlap_left",
    "overlap_right",
    "change_alpha",
    "change_flatness",
    "status",
)

_EPS64 = float(torch.finfo(torch.float64).eps)


def _storage_eps(dtype: str) -> float:
    """Machine epsilon of a stored floating dtype (``"bfloat16"``...); 0 for float64 and
    for formats whose values are not one rounding of the weight (packed quantized codes)."""
    t = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if isinstance(t, torch.dtype) and t.is_floating_point and t != torch.float64:
        return float(torch.finfo(t).eps)
    return 0.0


def rename_names(names: Sequence[str], rename: Any, *, side: str, where: str) -> dict[str, str]:
    """New name -> original name, after the ``rename`` rules of :func:`compare`.

    Parameters
    ----------
    names : sequence of str
        One checkpoint's tensor names.
    rename : mapping or sequence of (pattern, replacement), or None
        Regular-expression substitutions (:func:`re.sub`), applied in order to every name.
    side, where : str
        ``"base"`` or ``"tuned"`` and the source's description, for error messages.

    Raises
    ------
    InputError
        If a rule is not a (pattern, replacement) pair of strings or not a valid regular
        expression, or two names of one checkpoint become the same name.

    Examples
    --------
    >>> rename_names(["model.a.weight", "lm_head.weight"], {r"^model\\.": ""},
    ...              side="base", where="x")
    {'a.weight': 'model.a.weight', 'lm_head.weight': 'lm_head.weight'}
    """
    rules = _rules(rename)
    out: dict[str, str] = {}
    for name in names:
        new = name
        for pattern, repl in rules:
            new = pattern.sub(repl, new)
        if new in out:
            raise InputError(
                f"The 'rename' rules of compare map two {side} tensors of {where}, "
                f"'{out[new]}' and '{name}', to the same name '{new}'; anchor the patterns "
                f"(^model\\.) so that each name stays distinct."
            )
        out[new] = name
    return out


def _suggest_rename(names_b: list[str], names_t: list[str]) -> str:
    """A rename rule that would match the two sides when one only adds a prefix."""
    for longer, shorter, side in ((names_b, names_t, "base"), (names_t, names_b, "tuned")):
        short = set(shorter)
        for name in longer[:200]:
            parts = name.split(".")
            for i in range(1, len(parts)):
                if ".".join(parts[i:]) in short:
                    prefix = re.escape(".".join(parts[:i]) + ".")
                    return (
                        f"The {side} names carry the prefix '{'.'.join(parts[:i])}.': pass "
                        f"the rename rule {{'^{prefix}': ''}} (CLI: --rename '^{prefix}=')."
                    )
    return (
        "Map one onto the other with rename rules {PATTERN: REPLACEMENT} (CLI: --rename "
        "'PATTERN=REPLACEMENT'), or compare checkpoints of one architecture."
    )


def _rules(rename: Any) -> list[tuple[re.Pattern[str], str]]:
    if rename is None:
        return []
    items = list(rename.items()) if isinstance(rename, Mapping) else rename
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise InputError(
            "The 'rename' parameter of compare must be a mapping or a sequence of "
            f"(pattern, replacement) pairs of strings; got {type(rename).__name__}."
        )
    rules = []
    for item in items:
        if not (
            isinstance(item, (tuple, list))
            and len(item) == 2
            and all(isinstance(x, str) for x in item)
        ):
            raise InputError(
                "The 'rename' parameter of compare must hold (pattern, replacement) pairs "
                f"of strings; got {shown(item)}. Example: rename={{'^base_model\\\\.model\\\\.': "
                f"''}}."
            )
        try:
            rules.append((re.compile(item[0]), item[1]))
        except re.error as exc:
            raise InputError(
                f"The 'rename' pattern {item[0]!r} of compare is not a valid regular "
                f"expression: {exc}."
            ) from exc
    return rules


@dataclass(frozen=True)
class MatchedPair:
    """A tensor of both checkpoints, under its (renamed) common name.

    ``name``, ``kind``, ``dtype`` and ``shape`` are those a report row and a skip record
    read; ``base`` and ``tuned`` are the two :class:`~infospec.sources.WeightEntry`.
    """

    name: str
    base: WeightEntry
    tuned: WeightEntry

    @property
    def kind(self) -> str:
        return self.base.kind

    @property
    def dtype(self) -> str:
        b, t = self.base.dtype, self.tuned.dtype
        return b if b == t else f"{b}->{t}"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape


#: One matrix of a pair: (label, rows, cols, sigma_delta, sigma_base, sigma_tuned,
#: overlaps {left, right, min_cos, k} or None, error, route: the costliest of the three
#: spectra's routes, "" for an error).
PairSpectrum = tuple


def _pair_spectra(
    pair: MatchedPair, *, conv: str, split_in_proj: bool, method: str, device, k: int
) -> list[PairSpectrum]:
    """The first stage of :func:`compare`: both tensors loaded, three spectra per matrix."""
    out: list[PairSpectrum] = []
    try:
        base = pair.base.load(device=device)
        tuned = pair.tuned.load(device=device)
        kw = {"conv": conv, "split_in_proj": split_in_proj, "name": pair.name}
        for (label, mb), (_, mt) in zip(
            as_matrices(pair.base, base, **kw),
            as_matrices(pair.tuned, tuned, **kw),
            strict=True,
        ):
            rows, cols = mb.shape[-2:]
            bad = nonfinite_error(mb) or nonfinite_error(mt)
            if bad is not None:
                out.append((label, rows, cols, None, None, None, None, bad, ""))
                continue
            delta = mt.to(torch.float64, copy=True)
            delta -= mb  # float64: bf16 and fp16 values and their differences are exact
            sigma_d, route_d = singular_values(
                delta, method=method, device=device, return_method=True
            )
            sigma_d = sigma_d.cpu()
            del delta
            if k > 0:
                sb, lb, rb, route_b = top_singular_subspaces(
                    mb, k, method=method, device=device, return_method=True
                )
                st, lt, rt, route_t = top_singular_subspaces(
                    mt, k, method=method, device=device, return_method=True
                )
                cos_l = principal_cosines(lb, lt)
                cos_r = principal_cosines(rb, rt)
                overlaps = {
                    "overlap_k": int(cos_l.shape[-1]),
                    "overlap_left": float((cos_l * cos_l).mean()),
                    "overlap_right": float((cos_r * cos_r).mean()),
                    "overlap_min_cos": float(torch.minimum(cos_l.min(), cos_r.min())),
                }
            else:
                sb, route_b = singular_values(mb, method=method, device=device, return_method=True)
                st, route_t = singular_values(mt, method=method, device=device, return_method=True)
                overlaps = None
            route = max((route_d, route_b, route_t), key=SPECTRUM_METHODS.index)
            out.append((label, rows, cols, sigma_d, sb.cpu(), st.cpu(), overlaps, "", route))
    except SourceError:
        raise
    except (InfospecError, torch.linalg.LinAlgError) as exc:
        out.append((pair.name, None, None, None, None, None, None, str(exc), ""))
    return out


def _pair_records(
    pair: MatchedPair,
    spectra: list[PairSpectrum],
    *,
    rel_distortion: float,
    fits: bool,
    tuned_values: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The second stage of :func:`compare`: the delta's rows (via ``_records``) and changes."""
    rows_out, esds = _records(
        pair,
        [(label, r, c, sd, err) for label, r, c, sd, _, _, _, err, _ in spectra],
        rel_distortion=rel_distortion,
        fits=fits,
    )
    for row, (_, r, c, sd, sb, st, overlaps, _, route) in zip(rows_out, spectra, strict=True):
        if row["status"] != "ok":
            continue
        row["spectrum_method"] = route
        recs = [
            weight_record(
                s, rows=r, cols=c, rel_distortion=rel_distortion, fit_power=fits, fit_mp=fits
            )
            for s in (sb, st)
        ]
        sd64 = sd.flatten()
        # NumPy's matrix_rank rule on the float64 delta, and the rounding of the stored
        # values (a rank-4 LoRA merged in float32 read as rank 32 under the float64 rule
        # alone): storing W in a dtype of epsilon u moves each entry by a rounding error
        # of about u |w| / (2 sqrt 3) at random (uniform within half an ulp), whose
        # spectral norm is about (sqrt m + sqrt n) u ||W||_F / (2 sqrt(3 m n)); twice that
        # is the cut (the worst case, u/2 ||W||_F, is sqrt(min(m, n)) times looser)
        stored = max(_storage_eps(pair.base.dtype), _storage_eps(pair.tuned.dtype))
        norms = max(recs[0]["frobenius_norm"], recs[1]["frobenius_norm"])
        rounding = (math.sqrt(r) + math.sqrt(c)) * stored * norms / math.sqrt(3.0 * r * c)
        tol = max(max(r, c) * _EPS64 * float(sd64.max()), rounding)
        base_norm = recs[0]["frobenius_norm"]
        row["numerical_rank"] = int((sd64 > tol).sum()) if float(sd64.max()) > 0 else 0
        row["rel_delta"] = row["frobenius_norm"] / base_norm if base_norm > 0 else math.nan
        row.update(
            overlaps
            or dict.fromkeys(
                ("overlap_k", "overlap_left", "overlap_right", "overlap_min_cos"), math.nan
            )
        )
        for col in CHANGE_COLUMNS:
            row[f"change_{col}"] = float(recs[1][col]) - float(recs[0][col])
        if tuned_values:
            row.update({f"tuned_{col}": recs[1][col] for col in WEIGHT_COLUMNS})
        notes = [
            f"{side}: {rec['warning']}"
            for side, rec in zip(("base", "tuned"), recs, strict=True)
            if rec["warning"]
        ]
        row["warning"] = "; ".join(x for x in (row.get("warning", ""), *notes) if x)
    return rows_out, esds


def _pairs(
    src_b,
    src_t,
    *,
    rename,
    layers,
    min_dim: int,
    conv: str,
    strict: bool,
    skipped: list[dict[str, Any]],
) -> list[MatchedPair]:
    """Match the two sources' entries by renamed name; the rest go to ``skipped``."""
    where_b, where_t = src_b.description, src_t.description
    entries_b = {e.name: e for e in src_b.entries()}
    entries_t = {e.name: e for e in src_t.entries()}
    names_b = rename_names(list(entries_b), rename, side="base", where=where_b)
    names_t = rename_names(list(entries_t), rename, side="tuned", where=where_t)
    every = list(dict.fromkeys([*names_b, *names_t]))
    chosen = set(match_names(every, layers, param="layers", func="compare", what="tensor"))
    common = [n for n in names_b if n in names_t]
    if not common:
        raise InputError(
            f"compare matched no tensor name between the base ({where_b}) and the tuned "
            f"checkpoint ({where_t}): base names look like {list(names_b)[:2]}, tuned like "
            f"{list(names_t)[:2]}. {_suggest_rename(list(names_b), list(names_t))}"
        )
    pairs = []
    for name in every:
        if name not in chosen:
            continue
        eb = entries_b.get(names_b.get(name, ""))
        et = entries_t.get(names_t.get(name, ""))
        if eb is None or et is None:
            one = eb or et
            side, other = ("base", "tuned") if et is None else ("tuned", "base")
            if strict:
                raise InputError(
                    f"compare(strict=True): tensor '{one.name}' of the {side} checkpoint "
                    f"({one.origin or (where_b if side == 'base' else where_t)}) has no "
                    f"match in the {other}; add a rename rule, or drop strict=True to list it."
                )
            skipped.append({**skipped_record(one, f"only in {side}"), "name": name})
            continue
        if tuple(eb.shape) != tuple(et.shape):
            shape_b, shape_t = ("x".join(map(str, e.shape)) for e in (eb, et))
            reason = f"shape differs (base {shape_b}, tuned {shape_t})"
            if strict:
                raise InputError(
                    f"compare(strict=True): tensor '{name}' has shape {tuple(eb.shape)} in "
                    f"the base ({eb.origin or where_b}) but {tuple(et.shape)} in the tuned "
                    f"checkpoint ({et.origin or where_t}); compare checkpoints of one "
                    f"architecture, or drop strict=True to list it."
                )
            skipped.append({**skipped_record(eb, reason), "name": name})
            continue
        if eb.kind != et.kind and "matrix" in (eb.kind, et.kind):
            # one side read its layout from a config (GPT-2's Conv1D as a folder or a module)
            # and the other could not (a bare state dict): both read the known layout, so
            # that the same stored values pair up (a transposed pair had a false delta)
            known = et.kind if eb.kind == "matrix" else eb.kind
            eb, et = replace(eb, kind=known), replace(et, kind=known)
        pair = MatchedPair(name, eb, et)
        reason = skip_reason_under(eb, min_dim=min_dim, conv=conv) or skip_reason_under(
            et, min_dim=min_dim, conv=conv
        )
        if reason is not None:
            skipped.append({**skipped_record(eb, reason), "name": name})
            continue
        pairs.append(pair)
    return pairs


def compare(
    base: Any,
    tuned: Any,
    *,
    layers: str | Sequence[str] | None = None,
    rename: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    k: int = 10,
    strict: bool = False,
    tuned_values: bool = False,
    device: str | torch.device | None = None,
    conv: str = ANALYSIS_CONV,
    split_in_proj: bool = True,
    min_dim: int | None = None,
    method: str = "auto",
    fits: bool = True,
    rel_distortion: float = 0.01,
    progress: bool | None = None,
    workers: int | None = None,
    distributed: bool = False,
) -> Report:
    r"""Compare two checkpoints of one architecture: the spectrum of every weight change.

    For every weight matrix present in both, with the same shape: the measures of
    :math:`\Delta W = W_\text{tuned} - W_\text{base}` (the columns of
    :func:`infospec.analyze`, of the delta), ``numerical_rank`` and ``rel_delta``
    :math:`=\|\Delta W\|_F/\|W_\text{base}\|_F`, the change of every single-model column
    (``change_alpha`` = alpha of the tuned matrix minus alpha of the base one, ...), and
    the overlap of the top-``k`` singular subspaces (module docstring).

    Parameters
    ----------
    base, tuned : nn.Module, state dict, str or Path
        Any two sources :func:`infospec.sources.open_source` reads (files stream one
        tensor at a time).
    layers : str or list of str, optional
        Regular expression(s) on the (renamed) tensor names; default all.
    rename : mapping or list of (pattern, replacement), optional
        :func:`re.sub` rules applied in order to the names of both sides before matching,
        e.g. ``{r"^base_model\.model\.": "", r"^model\.": ""}`` for checkpoints saved
        with and without a wrapper's prefix.
    k : int >= 0, default 10
        Dimension of the compared singular subspaces (capped at each matrix's smaller
        side); 0 skips the overlaps (and the singular vectors they need).
    strict : bool, default False
        Raise on a tensor present on one side only or with different shapes; by default
        they are listed in ``report.skipped`` with the reason (``only in base``,
        ``only in tuned``, ``shape differs (...)``).
    tuned_values : bool, default False
        Also give the tuned matrix's own columns, as ``tuned_<column>`` (what
        :func:`infospec.track` stores for each checkpoint after the first).
    device, conv, split_in_proj, min_dim, method, fits, rel_distortion, progress, workers
        As in :func:`infospec.analyze`; each worker holds one pair of tensors at a time.
    distributed : bool, default False
        As in :func:`infospec.analyze`: the pairs shared out over the ranks of
        ``torch.distributed`` by cost, each rank reading only its own, and every rank
        returning the same report (:mod:`infospec.analysis.distributed`).

    Returns
    -------
    Report
        ``weights``: one row per matched matrix (``to_dataframe()`` has the
        :data:`~infospec.analysis.weights.WEIGHT_COLUMNS` of the delta, then
        :data:`COMPARE_COLUMNS`); ``spectra``: the delta's eigenvalues
        :math:`\sigma_i(\Delta W)^2` under ``"weights/<name>"``; ``skipped``: unmatched,
        mismatched and unanalysed tensors with their reasons; ``meta``: both sources,
        options and timings.

    Raises
    ------
    SourceError
        If a source cannot be opened or read.
    InputError
        If an option is invalid, no tensor name is common to both (the message shows
        names of each side and a ``rename`` rule), ``layers`` matches nothing, a rename
        rule merges two names, or (``strict=True``) a tensor is unmatched or its shapes
        differ.

    Examples
    --------
    >>> import torch, infospec
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> base = {"layer.weight": torch.randn(64, 32, dtype=torch.float64)}
    >>> tuned = {"layer.weight": base["layer.weight"]
    ...          + 0.01 * torch.randn(64, 2, dtype=torch.float64)
    ...          @ torch.randn(2, 32, dtype=torch.float64)}
    >>> row = infospec.compare(base, tuned, progress=False).weights[0]
    >>> row["numerical_rank"], round(row["overlap_right"], 3)
    (2, 1.0)
    """
    func = "compare"
    t0 = time.perf_counter()
    check_choice(conv, "conv", func, CONV_MODES)
    check_choice(method, "method", func, ("auto", "gram", "svd"))
    rel_distortion = check_probability(rel_distortion, "rel_distortion", func)
    k = check_positive(k, "k", func, allow_zero=True, integer=True)
    dev = check_device(device, "device", func)
    for flag, name in (
        (strict, "strict"),
        (tuned_values, "tuned_values"),
        (fits, "fits"),
        (split_in_proj, "split_in_proj"),
    ):
        check_bool(flag, name, func)
    if progress is not None:
        check_bool(progress, "progress", func)
    from .distributed import on_every_rank, setup, stages_on

    pg, dev = setup(distributed, dev, func)
    kw = {} if min_dim is None else {"min_dim": min_dim}
    src_b, src_t = on_every_rank(pg, lambda: (open_source(base, **kw), open_source(tuned, **kw)))
    report = Report(
        meta={
            "source": f"{src_b.description} -> {src_t.description}",
            "base": src_b.description,
            "tuned": src_t.description,
            "verb": "compare",
            "layers": layers,
            "rename": None if rename is None else [list(r) for r in _rules_text(rename)],
            "k": k,
            "device": str(dev or "default"),
            "conv": conv,
            "split_in_proj": split_in_proj,
            "method": method,
            "rel_distortion": rel_distortion,
            "summary_columns": list(_SUMMARY),
            "infospec": _version(),
            "torch": torch.__version__,
        }
    )
    pairs = _pairs(
        src_b,
        src_t,
        rename=rename,
        layers=layers,
        min_dim=src_b.min_dim,
        conv=conv,
        strict=strict,
        skipped=report.skipped,
    )
    report.meta["matched"] = len(pairs)

    def first(pair):
        return _pair_spectra(
            pair, conv=conv, split_in_proj=split_in_proj, method=method, device=dev, k=k
        )

    def second(pair, spectra):
        return _pair_records(
            pair, spectra, rel_distortion=rel_distortion, fits=fits, tuned_values=tuned_values
        )

    pipeline = (dev or _data_device(base)).type != "cpu"
    for rows, esds in stages_on(
        pg,
        first,
        second,
        pairs,
        report.meta,
        conv=conv,
        split_in_proj=split_in_proj,
        workers=workers,
        pipeline=pipeline,
        progress=progress,
        desc="compare",
    ):
        report.weights.extend(rows)
        report.spectra.update(esds)
    report.meta["seconds"] = report.meta["weight_seconds"] = time.perf_counter() - t0
    return report


def _rules_text(rename: Any) -> list[tuple[str, str]]:
    return [(p.pattern, r) for p, r in _rules(rename)]
