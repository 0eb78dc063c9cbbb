"""The page of :meth:`infospec.analysis.track.Track.to_html`: heatmaps and lines by step.

Heatmaps of layer x step (alpha, flatness, the subspace overlap of consecutive
checkpoints) and every metric against step, one line per layer, in one self-contained
HTML file (figures inlined as PNG).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from .track import Track

__all__ = ["render_track_html"]


def _heatmap(Figure, table: pd.DataFrame, title: str, cmap: str = "viridis"):
    from .plots import short_name

    rows = max(1, len(table))
    fig = Figure(figsize=(min(14, 3 + 0.35 * table.shape[1]), min(16, 1.5 + 0.22 * rows)))
    ax = fig.add_subplot()
    im = ax.imshow(table.to_numpy(dtype=float), aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_yticks(range(rows), [short_name(str(n), 40) for n in table.index], fontsize=7)
    steps = list(table.columns)
    every = max(1, len(steps) // 12)
    ax.set_xticks(range(0, len(steps), every), [str(s) for s in steps[::every]], fontsize=7)
    ax.set_xlabel("step")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def _lines(Figure, result: Track, metrics: Sequence[str]):
    from .plots import short_name

    have = [m for m in metrics if (result.frame["metric"] == m).any()]
    fig = Figure(figsize=(12, 3.2 * math.ceil(max(1, len(have)) / 2)))
    for i, metric in enumerate(have):
        ax = fig.add_subplot(math.ceil(len(have) / 2), 2, i + 1)
        table = result.pivot(metric)
        for name, series in table.iterrows():
            ax.plot(
                list(table.columns),
                series.to_numpy(dtype=float),
                lw=1,
                label=short_name(str(name), 30),
            )
        ax.set_title(metric)
        ax.set_xlabel("step")
        if len(table) <= 10:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def render_track_html(result: Track, *, title: str | None = None) -> str:
    """The page of :meth:`Track.to_html`: heatmaps (alpha, flatness, overlap) and lines."""
    import html

    from .html import _figure
    from .plots import _matplotlib

    _, Figure = _matplotlib()
    title = title or f"infospec track: {result.meta.get('source') or result.store or ''}"
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    frame = result.frame
    steps = sorted(frame["step"].dropna().unique()) if not frame.empty else []
    parts.append(
        f"<p>{frame['checkpoint'].nunique() if not frame.empty else 0} checkpoints, "
        f"steps {steps[0] if steps else '-'} to {steps[-1] if steps else '-'}, "
        f"{frame['tensor'].nunique() if not frame.empty else 0} tensors.</p>"
    )
    for metric, what in (
        ("alpha", "power-law exponent of each matrix's ESD tail"),
        ("flatness", "spectral flatness of the singular values (1 = flat)"),
        (
            "overlap_left",
            "mean cos² of the principal angles between the top-k left singular "
            "subspaces of consecutive checkpoints (1 = unchanged)",
        ),
    ):
        if frame.empty or not (frame["metric"] == metric).any():
            continue
        fig = _heatmap(
            Figure,
            result.pivot(metric),
            f"{metric}: layer x step",
            "magma" if metric.startswith("overlap") else "viridis",
        )
        parts.append(f"<h2>{metric}</h2>" + _figure(fig, metric, html.escape(what)))
    if not frame.empty:
        fig = _lines(
            Figure,
            result,
            ("alpha", "flatness", "effective_rank", "stable_rank", "rel_delta", "overlap_right"),
        )
        parts.append(
            "<h2>Every metric against step</h2>" + _figure(fig, "lines", "one line per layer")
        )
    return "\n".join(parts) + "\n"
