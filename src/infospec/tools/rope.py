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
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {path} as a JSON config: {exc}") from exc
        if not isinstance(config, dict):
            raise SourceError(f"{path} does not hold a JSON object")
    cfg = dict(config)
    if cfg.get("text_config") and "rope_theta" not in cfg and "rope_scaling" not in cfg:
        cfg = dict(cfg["text_config"])
    params = cfg.get("rope_parameters") or {}
    scaling = dict(cfg.get("rope_scaling") or {})
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
    head_dim = cfg.get("qk_rope_head_dim", cfg.get("head_dim"))
    if head_dim is None:
        hidden = _field(cfg, "hidden_size", where)
        heads = _field(cfg, "num_attention_heads", where)
        head_dim = int(hidden) // int(heads)
    prf = float(cfg.get("partial_rotary_factor", scaling.get("partial_rotary_factor", 1.0)))
    if not 0.0 < prf <= 1.0:
        raise InputError(f"{where}: 'partial_rotary_factor' must be in (0, 1]. Got {prf}.")
    rotary = int(int(head_dim) * prf)
    if rotary < 2:
        raise InputError(f"{where}: rotary dimension {rotary} < 2 (head_dim x partial factor)")
    kind = str(scaling.get("rope_type", scaling.get("type", "default")))
    if kind not in _SCALING_TYPES:
        raise InputError(
            f"{where}: rope_scaling type {kind!r} is not supported; choose one of {_SCALING_TYPES}"
        )
    if kind in ("llama3", "yarn", "longrope") and cfg.get("original_max_position_embeddings"):
        # Phi-3 keeps the pre-training length outside rope_scaling; transformers gives the
        # top-level field priority (PreTrainedConfig.standardize_rope_params)
        scaling["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
    return RopeConfig(
        rope_theta=float(theta),
        head_dim=int(head_dim),
        rotary_dim=rotary,
        max_position_embeddings=int(_field(cfg, "max_position_embeddings", where)),
        num_hidden_layers=cfg.get("num_hidden_layers"),
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

    if kind == "linear":
        return inv / float(need("factor"))
    if kind == "dynamic":
        f = float(need("factor"))
        l0 = cfg.max_position_embeddings
        n = l0 if seq_len is None else max(int(seq_len), l0)
        b2 = base * ((f * n / l0) - (f - 1)) ** (d / (d - 2))
        return 1.0 / b2**exps
    if kind == "yarn":
        l0 = int(need("original_max_position_embeddings"))
        f = s.get("factor")
        f = cfg.max_position_embeddings / l0 if f is None else float(f)
        beta_fast = s.get("beta_fast") or 32
        beta_slow = s.get("beta_slow") or 1

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
        return (inv / f) * (1 - extra) + inv * extra
    if kind == "llama3":
        f = float(need("factor"))
        lo = float(need("low_freq_factor"))
        hi = float(need("high_freq_factor"))
        l0 = float(need("original_max_position_embeddings"))
        wavelen = 2 * math.pi / inv
        out = np.where(wavelen > l0 / lo, inv / f, inv)
        smooth = (l0 / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / f + smooth * out
        medium = ~(wavelen < l0 / hi) & ~(wavelen > l0 / lo)
        return np.where(medium, smoothed, out)
    # longrope
    l0 = int(need("original_max_position_embeddings"))
    key = "long_factor" if seq_len and seq_len > l0 else "short_factor"
    ext = np.asarray(need(key), dtype=np.float64)
    if ext.shape != inv.shape:
        raise InputError(f"rope_scaling {key!r} has {ext.size} entries; expected {inv.size}")
    return inv / ext


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
    theta = np.asarray(theta, dtype=np.float64).ravel()
    context = int(context)
    if context < 1:
        raise InputError(f"The 'context' parameter must be an int >= 1. Got {context} instead.")
    if theta.size == 0:
        raise InputError("The 'theta' parameter must hold at least one frequency.")
    block = max(1, min(int(block), context))
    k = np.arange(block, dtype=np.float64)[:, None] * theta
    starts = np.arange(0, context, block, dtype=np.float64)[None, :] * theta[:, None]
    curve = (np.cos(k) @ np.cos(starts) - np.sin(k) @ np.sin(starts)) / theta.size
    curve = curve.T.ravel()[:context]
    if return_curve:
        return curve
    where = int(np.argmin(curve))
    return float(curve[where]), where


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
    context : int >= 1
        The number of positions ``m = 0 .. context-1`` that must satisfy ``B(m) >= 0``.
    head_dim : even int >= 2, default 128
        The rotary dimension ``d``.
    grid : array of float, optional
        The bases tried, in order; default ``10 ** np.arange(2, 12.001, 0.01)``.

    Returns
    -------
    float, the first grid value that passes.

    Raises
    ------
    InputError
        If ``context < 1``, ``head_dim`` is not an even int >= 2, or no grid value passes.

    Examples
    --------
    Against Men et al.'s Table 2 (``1k`` = 1000 positions; 4.3e3 published):

    >>> round(minimal_rope_base(1001), -1)
    4270.0
    """
    context = int(context)
    if context < 1:
        raise InputError(f"The 'context' parameter must be an int >= 1. Got {context} instead.")
    if int(head_dim) != head_dim or head_dim < 2 or head_dim % 2:
        raise InputError(f"The 'head_dim' parameter must be an even int >= 2. Got {head_dim}.")
    if grid is None:
        grid = 10.0 ** np.arange(2, 12.001, 0.01)
    exps = np.arange(0, int(head_dim), 2, dtype=np.float64) / int(head_dim)
    for b in np.asarray(grid, dtype=np.float64):
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
    """
    cfg = config if isinstance(config, RopeConfig) else rope_config(config)
    if dtype not in _SIGNIFICAND_BITS:
        raise InputError(f"The 'dtype' parameter must be one of {tuple(_SIGNIFICAND_BITS)}.")
    if not 0.0 < eps < 1.0:
        raise InputError(f"The 'eps' parameter must be a float in (0, 1). Got {eps} instead.")
    L = int(context or cfg.max_position_embeddings)
    theta = rope_frequencies(cfg, seq_len=L)
    # effective base: the one whose lowest frequency b^{-(d-2)/d} equals the scaled lowest one
    b = 1.0 / float(theta.min()) ** (cfg.rotary_dim / (cfg.rotary_dim - 2))
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
    if context is not None and int(context) < 1:
        raise InputError(f"The 'context' parameter must be an int >= 1. Got {context} instead.")
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
