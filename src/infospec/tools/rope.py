"""RoPE base feasibility: effective frequencies from a Hugging Face config and the bounds.

The frequencies follow ``transformers.modeling_rope_utils`` (``ROPE_INIT_FUNCTIONS``) for the
``rope_scaling`` types ``default``, ``linear``, ``dynamic``, ``yarn``, ``llama3`` and
``longrope``, computed here in float64 (transformers computes them in float32, so the two agree
to float32 round-off, about 1e-7 relative, not better).

The bounds are those stated in issue 14 for "Rotary Positional Embeddings as Phase Modulation"
(arXiv 2602.10959): aliasing ``L < 2 pi b``, DC stability ``b >= L / arccos(eps)`` and depth
``b >= L / arccos(eps ** (1 / N))``. They were not checked against the paper's text (it could
not be read in this session). The long-term-decay criterion is Men et al. 2024, "Base of RoPE
Bounds Context Length" (arXiv 2405.14591): ``B(m) = (2/d) sum_i cos(m theta_i) >= 0`` for every
``m < L``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_choice, check_probability, count_in_range, real_above
from .._errors import InputError, SourceError

__all__ = [
    "RopeConfig",
    "RopeVerdict",
    "long_term_decay",
    "minimal_rope_base",
    "published_rope_models",
    "rope_config",
    "rope_feasibility",
    "rope_frequencies",
    "rope_table",
]

#: Longest context judged: ``B(m)`` is evaluated at every position, linear in ``L`` (about
#: 1 s per 10 million positions at d = 128 on one core), in memory-bounded blocks.
MAX_CONTEXT = 2**28
#: Widest rotary dimension accepted (models use 32 to 256).
MAX_HEAD_DIM = 2**16
#: Entries of one piece of the ``B(m)`` products (memory: 16 bytes each, twice).
_PIECE = 2**22


#: Significand bits (with the implicit one) of the dtypes in which angles may be computed.
_SIGNIFICAND_BITS = {"bf16": 8, "fp16": 11, "fp32": 24, "fp64": 53}
_SCALING_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


@dataclass(frozen=True)
class RopeConfig:
    """The RoPE fields of a model config (see :func:`rope_config`)."""

    rope_theta: float
    head_dim: int
    rotary_dim: int
    max_position_embeddings: int
    num_hidden_layers: int | None = None
    rope_scaling: dict[str, Any] = field(default_factory=dict)

    @property
    def scaling_type(self) -> str:
        s = self.rope_scaling or {}
        return str(s.get("rope_type", s.get("type", "default")))


def _field(cfg: dict, name: str, where: str) -> Any:
    if cfg.get(name) is None:
        raise InputError(
            f"{where} has no {name!r} field; RoPE feasibility needs it. Add {name!r} to the config."
        )
    return cfg[name]


def rope_config(config: dict | str | Path) -> RopeConfig:
    """Parse the RoPE fields of a Hugging Face ``config.json`` (dict, file or model folder).

    ``head_dim`` is the config's ``qk_rope_head_dim`` (DeepSeek-V2/V3), else ``head_dim``, else
    ``hidden_size // num_attention_heads``; the rotary dimension is
    ``int(head_dim * partial_rotary_factor)`` as in transformers. For the ``llama3``, ``yarn``
    and ``longrope`` types a top-level ``original_max_position_embeddings`` (Phi-3's configs)
    takes priority over the one inside ``rope_scaling``, as in transformers.

    Raises
    ------
    SourceError
        The file or folder cannot be read as JSON.
    InputError
        The config has no RoPE (no ``rope_theta`` nor ``rope_scaling``/``rope_parameters``), or a
        needed field is missing; the message names the field.
    """
    where = "config"
    if not isinstance(config, dict):
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        where = str(path)
        # read as untrusted text, as a checkpoint's config: a regular file (not a FIFO) of
        # bounded size, UTF-8, no key twice, no deep nesting, no huge integers
        from ..sources.safetensors_source import _read_json

        config = _read_json(path, "config")
        if not isinstance(config, dict):
            raise SourceError(f"{path} does not hold a JSON object")
    cfg = dict(config)
    if cfg.get("text_config") and "rope_theta" not in cfg and "rope_scaling" not in cfg:
        if not isinstance(cfg["text_config"], dict):
            raise InputError(f"{where}: the 'text_config' field must be an object (a dict).")
        cfg = dict(cfg["text_config"])
    params = cfg.get("rope_parameters") or {}
    raw_scaling = cfg.get("rope_scaling") or {}
    if not isinstance(raw_scaling, dict):
        raise InputError(
            f"{where}: the 'rope_scaling' field must be an object (a dict) or null. "
            f"Got {type(raw_scaling).__name__} instead."
        )
    scaling = dict(raw_scaling)
    if isinstance(params, dict) and params:
        scaling = {**params, **scaling}
    theta = cfg.get("rope_theta", scaling.get("rope_theta"))
    if theta is None:
        if cfg.get("position_embedding_type") not in (None, "rotary"):
            kind = cfg["position_embedding_type"]
            raise InputError(f"{where} uses position_embedding_type={kind!r}, not RoPE")
        raise InputError(
            f"{where} has no 'rope_theta' field: the model has no RoPE or the base is implicit; "
            "add 'rope_theta' (for example 10000.0) to the config."
        )
    # DeepSeek-V2/V3 (multi-head latent attention): only qk_rope_head_dim dimensions rotate;
    # transformers sets head_dim = qk_rope_head_dim for them
    # a base <= 1 gives frequencies b^{-2i/d} that do not decrease: no RoPE the bounds judge
    theta = real_above(theta, f"{where}: the 'rope_theta' field", above=1.0)
    head_name = "qk_rope_head_dim" if "qk_rope_head_dim" in cfg else "head_dim"
    head_dim = cfg.get(head_name)
    if head_dim is None:
        hidden = _field(cfg, "hidden_size", where)
        hidden = count_in_range(hidden, f"{where}: the 'hidden_size' field")
        heads = _field(cfg, "num_attention_heads", where)
        heads = count_in_range(heads, f"{where}: the 'num_attention_heads' field")
        head_dim, head_name = hidden // heads, "hidden_size // num_attention_heads"
    head_dim = count_in_range(head_dim, f"{where}: the {head_name!r} field", high=MAX_HEAD_DIM)
    prf = cfg.get("partial_rotary_factor", scaling.get("partial_rotary_factor", 1.0))
    prf = real_above(prf, f"{where}: the 'partial_rotary_factor' field")
    if prf > 1.0:
        raise InputError(f"{where}: 'partial_rotary_factor' must be in (0, 1]. Got {prf}.")
    rotary = int(head_dim * prf)
    if rotary < 4:
        raise InputError(
            f"{where}: rotary dimension {rotary} < 4 (head_dim x partial factor): with one "
            f"frequency pair, b^0 = 1 whatever the base, there is no base to judge"
        )
    kind = str(scaling.get("rope_type", scaling.get("type", "default")))
    if kind not in _SCALING_TYPES:
        raise InputError(
            f"{where}: rope_scaling type {kind!r} is not supported; choose one of {_SCALING_TYPES}"
        )
    if kind in ("llama3", "yarn", "longrope") and cfg.get("original_max_position_embeddings"):
        # Phi-3 keeps the pre-training length outside rope_scaling; transformers gives the
        # top-level field priority (PreTrainedConfig.standardize_rope_params)
        scaling["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
    layers = cfg.get("num_hidden_layers")
    if layers is not None:  # (eps ** (1/N) reaches 1, and the depth bound infinity, past ~1e15)
        layers = count_in_range(layers, f"{where}: the 'num_hidden_layers' field", high=2**20)
    longest = _field(cfg, "max_position_embeddings", where)
    longest = count_in_range(longest, f"{where}: the 'max_position_embeddings' field")
    return RopeConfig(
        rope_theta=theta,
        head_dim=head_dim,
        rotary_dim=rotary,
        max_position_embeddings=longest,
        num_hidden_layers=layers,
        rope_scaling=scaling if kind != "default" else {},
    )


def rope_frequencies(config: RopeConfig | dict, *, seq_len: int | None = None) -> np.ndarray:
    r"""Effective inverse frequencies :math:`\theta_i = b^{-2i/d}` after ``rope_scaling``.

    Follows ``transformers.modeling_rope_utils`` per type, in float64: ``linear`` divides by
    ``factor``; ``dynamic`` (NTK) uses ``b' = b (f s / L_0 - (f - 1))^{d/(d-2)}`` with
    ``s = max(seq_len, L_0)``; ``yarn`` blends interpolated and extrapolated frequencies with
    the linear ramp between the correction dimensions of ``beta_fast``/``beta_slow``;
    ``llama3`` divides low frequencies by ``factor`` with the smooth band in between;
    ``longrope`` divides by ``long_factor`` when ``seq_len > original_max_position_embeddings``
    else by ``short_factor``.

    Returns
    -------
    ndarray, shape (rotary_dim // 2,), float64, radians per token.
    """
    cfg = config if isinstance(config, RopeConfig) else rope_config(config)
    d = cfg.rotary_dim
    base = cfg.rope_theta
    s = cfg.rope_scaling
    kind = cfg.scaling_type
    exps = np.arange(0, d, 2, dtype=np.float64) / d
    inv = 1.0 / base**exps
    if kind == "default":
        return inv

    def need(name: str) -> Any:
        if s.get(name) is None:
            raise InputError(f"rope_scaling of type {kind!r} needs the field {name!r}")
        return s[name]

    def number(name: str, default: float | None = None) -> float:
        value = need(name) if default is None else (s.get(name) or default)
        return real_above(value, f"rope_scaling's {name!r} field (type {kind!r})")

    def factor() -> float:
        f = number("factor")
        if f < 1:  # transformers' validation: a factor stretches the context, >= 1
            raise InputError(f"rope_scaling's 'factor' (type {kind!r}) must be >= 1. Got {f:g}.")
        return f

    def length(name: str) -> int:
        return count_in_range(need(name), f"rope_scaling's {name!r} field (type {kind!r})")

    if kind == "linear":
        return _finite_frequencies(inv / factor(), kind)
    if kind == "dynamic":
        f = factor()
        l0 = cfg.max_position_embeddings
        n = l0 if seq_len is None else max(int(seq_len), l0)
        with np.errstate(all="ignore"):  # an overflow is named below
            b2 = base * ((f * n / l0) - (f - 1)) ** (d / (d - 2))
            return _finite_frequencies(1.0 / np.float64(b2) ** exps, kind)
    if kind == "yarn":
        l0 = length("original_max_position_embeddings")
        f = cfg.max_position_embeddings / l0 if s.get("factor") is None else factor()
        beta_fast = number("beta_fast", 32)
        beta_slow = number("beta_slow", 1)

        def corr(rot: float) -> float:
            return (d * math.log(l0 / (rot * 2 * math.pi))) / (2 * math.log(base))

        low, high = corr(beta_fast), corr(beta_slow)
        if s.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        extra = 1.0 - ramp
        return _finite_frequencies((inv / f) * (1 - extra) + inv * extra, kind)
    if kind == "llama3":
        f = factor()
        lo = number("low_freq_factor")
        hi = number("high_freq_factor")
        if hi <= lo:
            raise InputError(
                f"rope_scaling's 'high_freq_factor' ({hi:g}) must exceed its 'low_freq_factor' "
                f"({lo:g}) (type 'llama3': the smooth band lies between them)"
            )
        l0 = float(length("original_max_position_embeddings"))
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > l0 / lo, inv / f, inv)
        smooth = (l0 / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / f + smooth * out
        medium = ~(wavelen < l0 / hi) & ~(wavelen > l0 / lo)
        return _finite_frequencies(np.where(medium, smoothed, out), kind)
    # longrope
    l0 = length("original_max_position_embeddings")
    key = "long_factor" if seq_len and seq_len > l0 else "short_factor"
    raw = need(key)
    try:
        ext = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        ext = None
    if ext is None or raw is True or raw is False or ext.ndim != 1:
        raise InputError(f"rope_scaling {key!r} must be a list of numbers; got {raw!r:.80}")
    if ext.shape != inv.shape:
        raise InputError(f"rope_scaling {key!r} has {ext.size} entries; expected {inv.size}")
    if not (np.isfinite(ext).all() and (ext > 0).all()):
        raise InputError(f"rope_scaling {key!r} must hold finite numbers > 0")
    return _finite_frequencies(inv / ext, kind)


def _finite_frequencies(theta: np.ndarray, kind: str) -> np.ndarray:
    """``theta`` if every frequency is a finite float64 > 0, else a named error."""
    if not (np.isfinite(theta).all() and (theta > 0).all()):
        raise InputError(
            f"rope_scaling of type {kind!r} gives frequencies outside float64 (0 or "
            f"infinite) for this config: its factors are too large for its base"
        )
    return theta


def long_term_decay(theta: np.ndarray, context: int, *, block: int = 1024, return_curve=False):
    r"""Men et al.'s :math:`B(m) = \frac{2}{d}\sum_i \cos(m\theta_i)` for ``m = 0 .. context-1``.

    Vectorised by the angle-addition formula: with ``m = m_0 + k`` (``0 <= k < block``),
    :math:`\cos(m\theta) = \cos(k\theta)\cos(m_0\theta) - \sin(k\theta)\sin(m_0\theta)`,
    so all of ``B`` is two float64 matrix products of shapes (block, d/2) x (d/2, context/block);
    the round-off is that of the angles themselves (about ``L * 1e-16`` absolute: 6e-12 at
    ``L = 1e6``, as for the direct ``cos(m * theta)``).

    Parameters
    ----------
    theta : array, shape (d/2,), radians per token.
    context : int >= 1, the number ``L`` of positions ``m = 0 .. L-1``.

    Returns
    -------
    (min_value, argmin) or, with ``return_curve``, the array ``B`` of shape (context,).
    """
    func = "long_term_decay"
    try:
        theta = np.asarray(theta, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(f"The 'theta' parameter of {func} must be an array of numbers.") from None
    context = count_in_range(context, f"The 'context' parameter of {func}", high=MAX_CONTEXT)
    if theta.size == 0 or not np.isfinite(theta).all():
        raise InputError(
            f"The 'theta' parameter of {func} must hold at least one frequency, all finite."
        )
    block = max(1, min(count_in_range(block, f"The 'block' parameter of {func}"), context))
    k = np.arange(block, dtype=np.float64)[:, None] * theta
    cos_k, sin_k = np.cos(k), np.sin(k)
    # the (block x starts) products in pieces of at most 2**22 entries: bounded memory
    # whatever the context (the whole curve is kept only when asked for)
    per_piece = max(1, _PIECE // block)
    pieces, best = [], (math.inf, 0)
    for first in range(0, context, block * per_piece):
        last = min(context, first + block * per_piece)
        starts = np.arange(first, last, block, dtype=np.float64)[None, :] * theta[:, None]
        piece = (cos_k @ np.cos(starts) - sin_k @ np.sin(starts)) / theta.size
        piece = piece.T.ravel()[: last - first]
        if return_curve:
            pieces.append(piece)
            continue
        where = int(np.argmin(piece))
        if piece[where] < best[0]:
            best = (float(piece[where]), first + where)
    return np.concatenate(pieces) if return_curve else best


def _decay_holds(theta: np.ndarray, context: int) -> bool:
    """``B(m) >= 0`` for every ``m < context``, checked on growing prefixes (exact, stops early)."""
    n = min(context, 1024)
    while True:
        if long_term_decay(theta, n)[0] < 0:
            return False
        if n == context:
            return True
        n = min(context, n * 8)


def minimal_rope_base(
    context: int, *, head_dim: int = 128, grid: np.ndarray | None = None
) -> float:
    r"""The first base on ``grid`` for which ``B(m) >= 0`` for all ``m < context`` (Men et al.).

    Men et al. 2024 (arXiv 2405.14591, eq. 11) define the lower bound of the base for a context
    length ``L`` as :math:`\inf\{b : B_{m,\theta} \ge 0\ \forall m \in [0, L]\}` with
    :math:`\theta_i = b^{-2i/d}` and solve it numerically. The criterion is not monotone in the
    base: below the point from which every base passes, the passing bases form narrow intervals
    between failing ones, so the result is the *first passing grid value* of this scan and
    depends on the grid, not a threshold. Their eq. 11 includes ``m = L``: their
    ``base_L`` is ``minimal_rope_base(L + 1)``.

    Parameters
    ----------
    context : int in [1, 2**28]
        The number of positions ``m = 0 .. context-1`` that must satisfy ``B(m) >= 0``
        (each base tried costs up to one scan of them: :data:`MAX_CONTEXT`).
    head_dim : even int in [4, 65536], default 128
        The rotary dimension ``d``.
    grid : array of float > 1, optional
        The bases tried, in order; default ``10 ** np.arange(2, 12.001, 0.01)``.

    Returns
    -------
    float, the first grid value that passes.

    Raises
    ------
    InputError
        If ``context`` is not an int in [1, 2**28], ``head_dim`` not an even int in
        [4, 65536], ``grid`` not finite bases > 1, or no grid value passes.

    Examples
    --------
    Against Men et al.'s Table 2 (``1k`` = 1000 positions; 4.3e3 published):

    >>> round(minimal_rope_base(1001), -1)
    4270.0
    """
    func = "minimal_rope_base"
    context = count_in_range(context, f"The 'context' parameter of {func}", high=MAX_CONTEXT)
    what = f"The 'head_dim' parameter of {func}"
    head_dim = count_in_range(head_dim, what, low=4, high=MAX_HEAD_DIM)
    if head_dim % 2:
        raise InputError(f"{what} must be an even int >= 4. Got {head_dim} instead.")
    if grid is None:
        grid = 10.0 ** np.arange(2, 12.001, 0.01)
    try:
        grid = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):
        grid = np.array([np.nan])
    if grid.ndim != 1 or grid.size == 0 or not (np.isfinite(grid).all() and (grid > 1).all()):
        raise InputError(
            f"The 'grid' parameter of {func} must be a non-empty 1-D array of finite bases > 1."
        )
    exps = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    for b in grid:
        if _decay_holds(1.0 / b**exps, context):
            return float(b)
    raise InputError(f"no base on the grid passes for context={context}; extend 'grid'")


@dataclass
class RopeVerdict:
    """One row per bound: name, required value, actual value, pass, margin (actual/required).

    ``context`` is the context length ``L`` judged and ``theta`` the effective frequencies
    (radians per token) at that length, from which :func:`long_term_decay` gives ``B(m)``.
    """

    rows: list[dict]
    context: int = 0
    theta: np.ndarray | None = field(default=None, repr=False)

    def to_json(self) -> str:
        return json.dumps(self.rows, indent=2)

    def to_text(self) -> str:
        lines = [f"{'bound':<28}{'required':>14}{'actual':>14}  {'pass':<5}{'margin':>10}"]
        for r in self.rows:
            lines.append(
                f"{r['bound']:<28}{r['required']:>14.6g}{r['actual']:>14.6g}  "
                f"{('yes' if r['passed'] else 'NO'):<5}{r['margin']:>10.4g}"
            )
        return "\n".join(lines)

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.rows)


def rope_feasibility(
    config: RopeConfig | dict | str | Path,
    *,
    context: int | None = None,
    dtype: str = "fp32",
    eps: float = 0.01,
) -> RopeVerdict:
    """Verdict of each bound for ``config`` at ``context`` (default ``max_position_embeddings``).

    The precision ceiling: angles ``m * theta`` are computed in ``dtype`` (transformers: float32,
    autocast disabled); integer positions are exact only up to ``2 ** p`` with ``p`` the
    significand bits (bf16 8, fp16 11, fp32 24), so ``L <= 2 ** p`` is required.

    Raises
    ------
    InputError
        If ``context`` is not an int in [1, 2**28] (``None``: the config's
        ``max_position_embeddings``, which must then be within it), ``dtype`` is not one of
        ``bf16``, ``fp16``, ``fp32``, ``fp64``, ``eps`` not in (0, 1), or a config field is
        missing or not a valid number (the message names it).
    """
    func = "rope_feasibility"
    cfg = config if isinstance(config, RopeConfig) else rope_config(config)
    check_choice(dtype, "dtype", func, tuple(_SIGNIFICAND_BITS))
    eps = check_probability(eps, "eps", func, high_open=True)
    if context is None:
        L = cfg.max_position_embeddings
        if L > MAX_CONTEXT:
            raise InputError(
                f"The config's max_position_embeddings ({L}) is over the {MAX_CONTEXT} "
                f"positions {func} judges; pass a shorter context=."
            )
    else:
        L = count_in_range(context, f"The 'context' parameter of {func}", high=MAX_CONTEXT)
    theta = rope_frequencies(cfg, seq_len=L)
    # effective base: the one whose lowest frequency b^{-(d-2)/d} equals the scaled lowest
    # one, from logs (the power of a tiny frequency under- or overflows first)
    log_b = -math.log(float(theta.min())) * cfg.rotary_dim / (cfg.rotary_dim - 2)
    if not log_b < math.log(np.finfo(np.float64).max):
        raise InputError(
            f"The effective base of this config (e^{log_b:.4g}, after rope_scaling) is "
            f"beyond float64; {func} cannot judge it."
        )
    b = math.exp(log_b)
    rows = [
        dict(bound="aliasing L < 2 pi b", required=float(L), actual=2 * math.pi * b),
        dict(bound="DC b >= L/arccos(eps)", required=L / math.acos(eps), actual=b),
    ]
    if cfg.num_hidden_layers:
        n = int(cfg.num_hidden_layers)
        rows.append(dict(bound=f"depth N={n}", required=L / math.acos(eps ** (1 / n)), actual=b))
    rows.append(
        dict(
            bound=f"precision {dtype}",
            required=float(L),
            actual=float(2 ** _SIGNIFICAND_BITS[dtype]),
        )
    )
    bmin, _ = long_term_decay(theta, L)
    rows.append(dict(bound="Men B(m) >= 0, m < L", required=0.0, actual=bmin))
    for r in rows:
        if r["bound"].startswith("Men"):
            r["passed"] = r["actual"] >= 0
            r["margin"] = r["actual"]
        elif r["bound"].startswith("aliasing"):
            r["passed"] = r["required"] < r["actual"]
            r["margin"] = r["actual"] / r["required"]
        else:
            r["passed"] = r["actual"] >= r["required"]
            r["margin"] = r["actual"] / r["required"]
    return RopeVerdict(rows, context=L, theta=theta)


def published_rope_models() -> list[dict]:
    """The shipped table of published models' RoPE settings (``infospec/data/rope_models.json``).

    Each row has ``name``, ``hub_url`` (the model's ``config.json`` on the Hugging Face Hub),
    ``model_type``, ``config`` (the RoPE fields of that ``config.json``, copied as found) and
    ``source`` (the copy the values were read from: the Hub was not reachable when the table
    was made, so every row names a public copy of the file and its commit).

    Returns
    -------
    list of dict, a fresh copy on every call.
    """
    from importlib.resources import files

    text = files("infospec").joinpath("data", "rope_models.json").read_text(encoding="utf-8")
    return json.loads(text)["models"]


def rope_table(*, context: int | None = None, dtype: str = "fp32", eps: float = 0.01) -> list[dict]:
    """:func:`rope_feasibility` of every model of :func:`published_rope_models`.

    Parameters
    ----------
    context : int >= 1, optional
        One context length for all models; default each model's ``max_position_embeddings``.
    dtype, eps
        As for :func:`rope_feasibility`.

    Returns
    -------
    list of dict
        Per model: ``name``, ``hub_url``, ``source``, ``context`` (the ``L`` judged),
        ``rope_theta``, ``effective_base`` (after ``rope_scaling``, see :func:`rope_feasibility`),
        ``rotary_dim``, ``scaling`` (the ``rope_scaling`` type), ``passed``
        (every bound) and ``verdict`` (the :class:`RopeVerdict`).
    """
    if context is not None:
        context = count_in_range(context, "The 'context' parameter of rope_table", high=MAX_CONTEXT)
    out = []
    for model in published_rope_models():
        cfg = rope_config(model["config"])
        v = rope_feasibility(cfg, context=context, dtype=dtype, eps=eps)
        out.append(
            dict(
                name=model["name"],
                hub_url=model["hub_url"],
                source=model["source"],
                context=v.context,
                rope_theta=cfg.rope_theta,
                effective_base=next(r["actual"] for r in v.rows if r["bound"].startswith("DC")),
                rotary_dim=cfg.rotary_dim,
                scaling=cfg.scaling_type,
                passed=v.passed,
                verdict=v,
            )
        )
    return out
