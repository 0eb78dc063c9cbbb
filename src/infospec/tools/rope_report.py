r"""The RoPE verdict as a figure of Men et al.'s :math:`B(m)` and as a self-contained HTML page.

:func:`plot_long_term_decay` draws

.. math:: B(m) = \frac{2}{d} \sum_{i=0}^{d/2-1} \cos(m\,\theta_i)

(Men et al. 2024, "Base of RoPE Bounds Context Length", arXiv 2405.14591, eq. for the
long-term decay of token discrimination) over ``m = 0 .. M-1`` with the context ``L`` marked:
the criterion asks ``B(m) >= 0`` for every ``m < L``, so the curve left of the line must stay
above zero. Past a few thousand positions one pixel column covers many ``m``; the curve is then
drawn as its envelope (the minimum and maximum of ``B`` over each column's positions), so a dip
below zero is never lost between samples.

:func:`render_rope_html` writes the verdict table and that figure in the style of the report's
HTML page (:mod:`infospec.analysis.html`: the same inline style sheet, value format and
embedded PNG figures; no script, nothing loaded from elsewhere).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import shown_str
from .._errors import InputError
from .._text import figure_text
from .rope import RopeVerdict, long_term_decay

__all__ = ["plot_long_term_decay", "render_rope_html", "write_rope_html", "write_rope_plot"]

#: Above this many positions the curve is drawn as a per-column min/max envelope.
_ENVELOPE_COLUMNS = 2000


def _curve_positions(context: int, extent: float) -> int:
    if not extent >= 1.0:
        raise InputError(
            f"The 'extent' parameter must be a float >= 1. Got {shown_str(extent)} instead."
        )
    return max(2, math.ceil(context * extent))


def plot_long_term_decay(verdict: RopeVerdict, *, extent: float = 1.25, title: str | None = None):
    """Figure of :math:`B(m)` for ``m < extent * L`` with the context ``L`` marked.

    Parameters
    ----------
    verdict : RopeVerdict
        From :func:`~infospec.tools.rope.rope_feasibility` (it carries ``theta`` and ``L``).
    extent : float >= 1, default 1.25
        How far past the context the curve is drawn, as a multiple of ``L``.
    title : str, optional
        The axes title; default ``"Men et al. B(m), L = <L>"``.

    Returns
    -------
    matplotlib.figure.Figure
        Made directly (no :mod:`matplotlib.pyplot` state); save it with ``fig.savefig``.

    Raises
    ------
    InputError
        If the verdict has no frequencies, or ``extent < 1``.
    """
    from matplotlib.figure import Figure

    if verdict.theta is None or verdict.context < 1:
        raise InputError(
            "The 'verdict' has no frequencies: make it with rope_feasibility(config, ...)."
        )
    L = int(verdict.context)
    n = _curve_positions(L, extent)
    curve = long_term_decay(verdict.theta, n, return_curve=True)
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.add_subplot()
    if n > _ENVELOPE_COLUMNS:
        width = -(-n // _ENVELOPE_COLUMNS)
        padded = np.pad(curve, (0, width * _ENVELOPE_COLUMNS - n), mode="edge")
        cols = padded.reshape(_ENVELOPE_COLUMNS, width)
        x = (np.arange(_ENVELOPE_COLUMNS) + 0.5) * width
        ax.fill_between(
            x,
            cols.min(axis=1),
            cols.max(axis=1),
            color="#2456a6",
            lw=0.6,
            label=f"B(m), min/max over {width} positions",
        )
    else:
        ax.plot(np.arange(n), curve, color="#2456a6", lw=1.0, label="B(m)")
    ax.axhline(0.0, color="#555", lw=0.8)
    ax.axvline(L, color="#b26a00", lw=1.4, ls="--", label=f"context L = {L}")
    bmin, where = long_term_decay(verdict.theta, L)
    ok = bmin >= 0
    ax.plot(
        [where],
        [bmin],
        marker="v",
        color="#1a7f37" if ok else "#c62828",
        ls="none",
        label=f"min over m < L: {bmin:.4g} at m = {where} ({'pass' if ok else 'FAIL'})",
    )
    ax.set_xlim(0, n)
    ax.set_xlabel("relative distance m (tokens)")
    ax.set_ylabel("B(m) = (2/d) Σ cos(m θ_i)")
    ax.set_title(figure_text(title if title is not None else f"Men et al. B(m), L = {L}"))
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def write_rope_plot(verdict: RopeVerdict, path, *, extent: float = 1.25, title: str | None = None):
    """Save :func:`plot_long_term_decay` as a PNG at ``path``, atomically (never half-written).

    Raises
    ------
    InputError
        From :func:`plot_long_term_decay`, or if ``path`` cannot be written (names the path).
    """
    from .._io import atomic_write

    fig = plot_long_term_decay(verdict, extent=extent, title=title)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100, facecolor="white")


_READ = (
    "Each row is one bound on the RoPE base b for the context L: aliasing L < 2πb, "
    "DC stability b ≥ L / arccos(ε), depth b ≥ L / arccos(ε^(1/N)) for N layers (as stated "
    "for arXiv 2602.10959), the precision ceiling L ≤ 2^p of the dtype in which the angles "
    "m·θ are computed (p significand bits), and Men et al.'s long-term decay B(m) ≥ 0 for "
    "every m < L (arXiv 2405.14591). b is the effective base after rope_scaling: the one whose "
    "lowest frequency b^(−(d−2)/d) equals the scaled lowest frequency. The margin is "
    "actual / required (for Men et al.'s row, the minimum of B itself)."
)


def render_rope_html(
    verdict: RopeVerdict, *, title: str | None = None, meta: dict[str, Any] | None = None
) -> str:
    """The verdict as one self-contained HTML page: the bounds table and the B(m) figure.

    Parameters
    ----------
    verdict : RopeVerdict
    title : str, optional
        Page heading; default ``"RoPE feasibility at L = <L>"``.
    meta : dict, optional
        Shown above the table as name/value pairs (the config file, dtype, eps ...).

    Returns
    -------
    str
        The page, in the report's style (:mod:`infospec.analysis.html`); without matplotlib
        the figure is left out and the page says how to get it.
    """
    from ..analysis.html import _CSS, _NO_MATPLOTLIB, _esc, _figure, _have_matplotlib
    from ..analysis.html import format_value as fmt

    heading = title if title is not None else f"RoPE feasibility at L = {verdict.context}"
    verdict_word = "every bound passes" if verdict.passed else "a bound fails"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(heading)}</h1>",
        f'<p class="counts">{_esc(verdict_word)} '
        f"({sum(r['passed'] for r in verdict.rows)} of {len(verdict.rows)})</p>",
    ]
    if meta:
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(fmt(v))}</dd>" for k, v in meta.items())
        out.append(f'<div class="meta"><section><h3>Input</h3><dl>{items}</dl></section></div>')
    out.append(f'<p class="read">{_esc(_READ)}</p>')
    head = "".join(
        f'<th class="{"text" if c in ("bound", "pass") else ""}">{c}</th>'
        for c in ("bound", "required", "actual", "pass", "margin")
    )
    body = []
    for r in verdict.rows:
        cls = "" if r["passed"] else ' class="error"'
        body.append(
            f'<tr{cls}><td class="text first">{_esc(r["bound"])}</td>'
            f'<td class="num">{_esc(fmt(float(r["required"])))}</td>'
            f'<td class="num">{_esc(fmt(float(r["actual"])))}</td>'
            f'<td class="text">{"yes" if r["passed"] else "NO"}</td>'
            f'<td class="num">{_esc(fmt(float(r["margin"])))}</td></tr>'
        )
    out.append(
        f'<h2 id="bounds">Bounds</h2><div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
    out.append('<h2 id="decay">Long-term decay B(m)</h2>')
    if verdict.theta is None:
        out.append('<p class="note">The verdict has no frequencies to draw B(m) from.</p>')
    elif not _have_matplotlib():
        out.append(_NO_MATPLOTLIB)
    else:
        caption = (
            "B(m) over the relative distance m, with the context L dashed; the criterion holds "
            "where the curve left of the line stays at or above zero. Wide spans are drawn as "
            "the minimum and maximum of B over each pixel column's positions."
        )
        out.append(_figure(plot_long_term_decay(verdict), "B(m) over m", _esc(caption)))
    from .. import __version__

    out.append(f"<footer>Made by infospec {_esc(__version__)} (infospec rope).</footer>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_rope_html(verdict: RopeVerdict, path, **kwargs) -> None:
    """Write :func:`render_rope_html` to ``path`` atomically (never half-written).

    Raises
    ------
    InputError
        If ``path`` cannot be written; the message names the path.
    """
    from .._io import atomic_write

    page = render_rope_html(verdict, **kwargs)
    with atomic_write(path) as fh:
        fh.write(page)
