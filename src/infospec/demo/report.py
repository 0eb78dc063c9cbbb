"""Figures and the self-contained HTML page of the demo.

The page follows :mod:`infospec.analysis.html`: inline style, figures as PNG ``data:`` URIs,
no script, every piece of text HTML-escaped. Figures are matplotlib
:class:`~matplotlib.figure.Figure` objects created without :mod:`matplotlib.pyplot`.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.html import _CSS, _esc, _have_matplotlib, format_value
from ..analysis.plots import _matplotlib, figure_to_png_bytes
from .continual import CONTINUAL_ARMS
from .experiment import ACTIVATION_METRICS, METHODS, MODEL_METRICS, WEIGHT_METRICS
from .stats import Interval

__all__ = ["FIGURES", "make_figures", "render_demo_html"]

_COLORS = {
    "baseline": "#4d4d4d",
    "coding_rate": "#1f77b4",
    "info_spec": "#d62728",
    "spectral": "#2ca02c",
}
_LABELS = {
    "baseline": "baseline",
    "coding_rate": "coding-rate",
    "info_spec": "info-spec",
    "spectral": "spectral",
}

#: Metrics drawn over training (row order of the training figure).
_TRAINING_ROWS = (
    ("act_flatness", "activation flatness"),
    ("act_entropy_bits_per_dim", "entropy, bits / dim"),
    ("act_coding_rate_bits", "coding rate, bits"),
    ("act_effective_rank", "activation eff. rank"),
    ("weight_flatness", "weight flatness"),
    ("weight_log_sigma_var", "Var[log σ]"),
    ("weight_sigma_max", "σ_max"),
)

#: File name -> (alt text, caption) of each figure, in page order.
FIGURES: dict[str, tuple[str, str]] = {
    "fig_accuracy.png": (
        "test accuracy and training loss over epochs",
        "Test accuracy and training cross-entropy (without the regulariser) over epochs, "
        "per method: the mean over seeds, the band spanning the seeds' minimum and maximum.",
    ),
    "fig_training.png": (
        "per-layer measures over training",
        "Per layer (columns) and measure (rows), over epochs: the mean over seeds (line) "
        "and the seeds' range (band). Activation measures are of each layer's output on the "
        "test split (after the ReLU for hidden layers, the logits for the output layer); "
        "weight measures of the layer's weight matrix.",
    ),
    "fig_scatter.png": (
        "activation flatness against bits",
        "Every run at every checkpoint: activation flatness (x) against the coding rate at "
        "fixed energy (top) and the Gaussian entropy per dimension (bottom), per layer. The "
        "seed's claim would put flatter points lower.",
    ),
    "fig_effects.png": (
        "effects of each regulariser at the last epoch",
        "Paired difference from the baseline at the last epoch (mean over seeds and its "
        "confidence interval), per method and layer. The dotted line is no change.",
    ),
    "fig_continual.png": (
        "continual learning: plasticity and forgetting",
        "Left: accuracy on each new task right after training on it (mean and confidence "
        "band over seeds). Right: accuracy on the first task as later tasks are learned.",
    ),
}


def _band(ax, x, values: np.ndarray, color: str, label: str) -> None:
    """Mean line and min-max band of ``values`` (seeds x points)."""
    mean = np.nanmean(values, axis=0)
    ax.plot(x, mean, color=color, lw=1.6, label=label)
    if values.shape[0] > 1:
        ax.fill_between(
            x, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=color, alpha=0.15, lw=0
        )


def _series(results: pd.DataFrame, layer: str, metric: str, method: str):
    sub = results[
        (results["layer"] == layer) & (results["metric"] == metric) & (results["method"] == method)
    ]
    piv = sub.pivot_table(index="seed", columns="epoch", values="value", aggfunc="first")
    return piv.columns.to_numpy(), piv.to_numpy(float)


def _accuracy_figure(Figure, results: pd.DataFrame):
    fig = Figure(figsize=(10, 3.4))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.95, bottom=0.15, wspace=0.22)
    axes = fig.subplots(1, 2)
    for ax, metric, label in (
        (axes[0], "test_accuracy", "test accuracy"),
        (axes[1], "train_loss", "training cross-entropy"),
    ):
        for method in METHODS:
            x, v = _series(results, "model", metric, method)
            _band(ax, x, v, _COLORS[method], _LABELS[method])
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    return fig


def _training_figure(Figure, results: pd.DataFrame, layers: list[str]):
    rows, cols = len(_TRAINING_ROWS), len(layers)
    # Margins are set by hand in every figure: a constrained layout costs about a second.
    fig = Figure(figsize=(3.4 * cols, 2.1 * rows))
    fig.subplots_adjust(left=0.09, right=0.98, top=0.975, bottom=0.04, hspace=0.3, wspace=0.28)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, (metric, label) in enumerate(_TRAINING_ROWS):
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            for method in METHODS:
                x, v = _series(results, layer, metric, method)
                _band(ax, x, v, _COLORS[method], _LABELS[method])
            if i == 0:
                ax.set_title(layer, fontsize=10)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if i == rows - 1:
                ax.set_xlabel("epoch")
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return fig


def _scatter_figure(Figure, results: pd.DataFrame, layers: list[str]):
    fig = Figure(figsize=(3.4 * len(layers), 6.2))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.08, hspace=0.3, wspace=0.25)
    axes = fig.subplots(2, len(layers), squeeze=False)
    for j, layer in enumerate(layers):
        sub = results[results["layer"] == layer].pivot_table(
            index=["seed", "method", "epoch"], columns="metric", values="value", aggfunc="first"
        )
        for i, (ycol, ylabel) in enumerate(
            (
                ("act_coding_rate_bits", "coding rate (unit energy), bits"),
                ("act_entropy_bits_per_dim", "entropy, bits / dim"),
            )
        ):
            ax = axes[i, j]
            for method in METHODS:
                pts = sub.xs(method, level="method")
                ax.scatter(
                    pts["act_flatness"],
                    pts[ycol],
                    s=10,
                    alpha=0.7,
                    color=_COLORS[method],
                    label=_LABELS[method],
                )
            if i == 0:
                ax.set_title(layer, fontsize=10)
            ax.set_xlabel("activation flatness", fontsize=9)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return fig


_EFFECT_PANELS = (
    ("act_flatness", "Δ activation flatness"),
    ("act_effective_rank", "Δ activation eff. rank"),
    ("act_coding_rate_bits", "Δ coding rate, bits"),
    ("act_entropy_bits_per_dim", "Δ entropy, bits / dim"),
    ("weight_flatness", "Δ weight flatness"),
    ("weight_log_sigma_var", "Δ Var[log σ]"),
    ("weight_sigma_max", "Δ σ_max"),
    ("test_accuracy", "Δ test accuracy"),
)


def _effects_figure(Figure, dstats: dict[str, Any], layers: list[str]):
    fig = Figure(figsize=(13, 6.2))
    fig.subplots_adjust(left=0.06, right=0.99, top=0.95, bottom=0.06, hspace=0.25, wspace=0.3)
    axes = fig.subplots(2, 4).ravel()
    methods = list(METHODS[1:])
    for ax, (metric, label) in zip(axes, _EFFECT_PANELS, strict=True):
        rows = layers if metric != "test_accuracy" else ["model"]
        ticks, names = [], []
        for k, layer in enumerate(rows):
            for m_i, method in enumerate(methods):
                e = next(
                    (
                        e
                        for e in dstats["effects"]
                        if e["method"] == method and e["layer"] == layer and e["metric"] == metric
                    ),
                    None,
                )
                if e is None:
                    continue
                iv: Interval = e["interval"]
                y = k * (len(methods) + 1) + m_i
                lo = iv.lo if math.isfinite(iv.lo) else iv.value
                hi = iv.hi if math.isfinite(iv.hi) else iv.value
                ax.plot([lo, hi], [y, y], color=_COLORS[method], lw=2)
                ax.plot(
                    [iv.value],
                    [y],
                    "o",
                    color=_COLORS[method],
                    ms=4,
                    label=_LABELS[method] if k == 0 else None,
                )
            ticks.append(k * (len(methods) + 1) + (len(methods) - 1) / 2)
            names.append(layer)
        ax.axvline(0, color="#777777", ls=":", lw=1)
        ax.set_yticks(ticks, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="x")
    axes[0].legend(fontsize=7, loc="best")
    return fig


def _continual_figure(Figure, table: pd.DataFrame, cstats: dict[str, Any]):
    fig = Figure(figsize=(10, 3.4))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.95, bottom=0.15, wspace=0.22)
    axes = fig.subplots(1, 2)
    tasks = np.arange(1, cstats["tasks"] + 1)
    for arm in CONTINUAL_ARMS:
        ivs = cstats["new_task_accuracy"][arm]
        mean = np.array([iv.value for iv in ivs])
        lo = np.array([iv.lo if math.isfinite(iv.lo) else iv.value for iv in ivs])
        hi = np.array([iv.hi if math.isfinite(iv.hi) else iv.value for iv in ivs])
        axes[0].plot(tasks, mean, "o-", color=_COLORS[arm], label=_LABELS[arm], ms=4)
        axes[0].fill_between(tasks, lo, hi, color=_COLORS[arm], alpha=0.15, lw=0)
        first = table[(table["method"] == arm) & (table["eval_task"] == 1)]
        piv = first.pivot_table(
            index="seed", columns="trained_task", values="accuracy", aggfunc="first"
        )
        _band(axes[1], piv.columns.to_numpy(), piv.to_numpy(float), _COLORS[arm], _LABELS[arm])
    axes[0].set_xlabel("task")
    axes[0].set_ylabel("accuracy on the new task")
    axes[1].set_xlabel("after training on task")
    axes[1].set_ylabel("accuracy on task 1")
    for ax in axes:
        ax.set_xticks(tasks)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


def make_figures(
    results: pd.DataFrame,
    dstats: dict[str, Any],
    continual: pd.DataFrame,
    cstats: dict[str, Any],
    *,
    dpi: float = 100,
) -> dict[str, bytes]:
    """Every figure of the demo as PNG bytes, keyed by the file names of :data:`FIGURES`.

    Returns an empty dict when matplotlib is not installed.
    """
    if not _have_matplotlib():
        return {}
    _, Figure = _matplotlib()
    layers = [x for x in results["layer"].unique() if x != "model"]
    figs = {
        "fig_accuracy.png": _accuracy_figure(Figure, results),
        "fig_training.png": _training_figure(Figure, results, layers),
        "fig_scatter.png": _scatter_figure(Figure, results, layers),
        "fig_effects.png": _effects_figure(Figure, dstats, layers),
        "fig_continual.png": _continual_figure(Figure, continual, cstats),
    }
    return {name: figure_to_png_bytes(fig, dpi=dpi) for name, fig in figs.items()}


# -- HTML ------------------------------------------------------------------------------------
_EXTRA_CSS = """
p.reading { max-width: 62rem; }
section.reading { background: #f6f7f9; border-left: 4px solid #2456a6; padding: .4rem 1rem;
                  margin: .6rem 0 1rem; }
td.ci { color: #555; }
"""


def _iv_cells(iv: Interval, *, scale: float = 1.0, digits: int = 4) -> str:
    def cell(v: float) -> str:
        if not math.isfinite(v):
            return '<td class="na">—</td>'
        return f'<td class="num">{_esc(f"{v * scale:.{digits}g}")}</td>'

    return cell(iv.value) + cell(iv.lo) + cell(iv.hi) + f'<td class="num">{iv.n}</td>'


def _simple_table(head: list[str], rows: list[str]) -> str:
    th = "".join(
        f'<th class="{"text first" if i == 0 else ""}">{_esc(h)}</th>' for i, h in enumerate(head)
    )
    return (
        f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div>"
    )


def _dl(items: list[tuple[str, Any]], cls: str | None = None) -> str:
    """A definition list; ``cls="cols"`` for the glossary style, none for a setup box."""
    return (
        (f'<dl class="{cls}">' if cls else "<dl>")
        + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(format_value(v))}</dd>" for k, v in items)
        + "</dl>"
    )


def _figure_html(pngs: dict[str, bytes], name: str) -> str:
    if name not in pngs:
        return ""
    alt, caption = FIGURES[name]
    data = base64.b64encode(pngs[name]).decode("ascii")
    return (
        f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_esc(caption)} ({_esc(name)})</figcaption></figure>"
    )


def render_demo_html(summary: dict[str, Any], dstats, cstats, pngs: dict[str, bytes]) -> str:
    """The demo's report as one self-contained HTML page (a string)."""
    cfg = summary["config"]
    level = round(100 * dstats["level"])
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>infospec demo: the duality experiment</title>",
        f"<style>{_CSS}{_EXTRA_CSS}</style></head><body>",
        "<h1>infospec demo: does flattening a spectrum compress the signal?</h1>",
        '<p class="counts">Seed 001 claims: <em>“flatten the spectrum and you compress the '
        "signal; compress the signal and you flatten its spectrum.”</em> This page tests it "
        f"on scikit-learn's digits ({_esc(summary['mode'])} run, {cfg['seeds']} seed(s)).</p>",
        '<nav><a href="#reading">reading</a><a href="#setup">setup</a>'
        '<a href="#accuracy">accuracy</a><a href="#training">over training</a>'
        '<a href="#flatten">flatten → compress</a><a href="#compress">compress → flatten</a>'
        '<a href="#continual">continual learning</a><a href="#files">files</a></nav>',
        '<h2 id="reading">Reading</h2><section class="reading">',
    ]
    for para in summary["reading"]["duality"] + summary["reading"]["continual"]:
        out.append(f'<p class="reading">{_esc(para)}</p>')
    out.append(
        '<p class="reading"><small>Every sentence above is generated from the measured '
        "numbers: its words follow the sign of each estimate and whether its "
        f"{level} % interval (over seeds) excludes zero.</small></p></section>"
    )

    data = summary["data"]
    coeffs = summary["coefficients"]
    out.append('<h2 id="setup">Setup</h2><div class="meta">')
    out.append(
        "<section><h3>data and model</h3>"
        + _dl(
            [
                ("data", data["name"]),
                ("train / test", f"{data['train']} / {data['test']} (stratified, fixed)"),
                ("inputs", data["standardisation"]),
                ("model", summary["model"]["description"]),
                ("observed", summary["model"]["observed"]),
            ]
        )
        + "</section>"
    )
    out.append(
        "<section><h3>training</h3>"
        + _dl(
            [
                ("optimizer", f"Adam, lr {cfg['lr']}, no weight decay"),
                ("epochs", cfg["epochs"]),
                ("batch size", cfg["batch_size"]),
                ("seeds", cfg["seeds"]),
                ("checkpoints", ", ".join(str(c) for c in summary["checkpoints"])),
                ("torch threads", cfg["threads"]),
            ]
        )
        + "</section>"
    )
    out.append(
        "<section><h3>coefficients</h3>"
        + _dl(
            [
                (
                    "coding-rate",
                    f"−{coeffs['coding_rate']['weight']} · R(z, ε={coeffs['coding_rate']['eps']}) "
                    "on unit-norm penultimate features",
                ),
                (
                    "info-spec",
                    f"β = {coeffs['info_spec']['beta']} (H(z), nats, ridge "
                    f"{coeffs['info_spec']['ridge']}), γ = {coeffs['info_spec']['gamma']} "
                    "(Var[log σ] of every weight)",
                ),
                (
                    "spectral",
                    f"λ = {coeffs['spectral']['lambda']} · Σ (σ_max^{coeffs['spectral']['k']:g}"
                    " − 1)²",
                ),
            ]
        )
        + "</section>"
    )
    timings = summary["timings"]
    out.append(
        "<section><h3>timings</h3>"
        + _dl(
            [
                (k.removesuffix("_seconds").replace("_", " "), f"{v:.1f} s")
                for k, v in timings.items()
                if isinstance(v, (int, float))
            ]
        )
        + "</section>"
    )
    out.append(
        "<section><h3>versions</h3>" + _dl(list(summary["versions"].items())) + "</section></div>"
    )
    out.append("<details><summary>Metric meanings</summary>")
    out.append(_dl(list(summary["metrics"].items()), "cols") + "</details>")

    out.append(f'<h2 id="accuracy">Accuracy (last epoch, {level} % interval over seeds)</h2>')
    rows = []
    for method, iv in dstats["accuracy"].items():
        per = ", ".join(f"{v:.4f}" for v in iv.per_seed)
        rows.append(
            f'<tr><td class="text first">{_esc(_LABELS[method])}</td>{_iv_cells(iv)}'
            f'<td class="text">{_esc(per)}</td></tr>'
        )
    out.append(_simple_table(["method", "mean", "lo", "hi", "n", "per seed"], rows))
    out.append(_figure_html(pngs, "fig_accuracy.png"))

    out.append('<h2 id="training">Per layer over training</h2>')
    out.append(_figure_html(pngs, "fig_training.png"))

    out.append(
        '<h2 id="flatten">Flatten → compress: correlations over runs and checkpoints</h2>'
        '<p class="read">Spearman ρ per seed over every method at every checkpoint, averaged '
        f"over seeds, with a {level} % t-interval over seeds clipped to [−1, 1]. The claim "
        "predicts negative values. Layer “all” averages the layers' ρ per seed.</p>"
    )
    rows = []
    for c in dstats["correlations"]:
        iv = c["interval"]
        per = ", ".join("—" if not math.isfinite(v) else f"{v:+.3f}" for v in iv.per_seed)
        rows.append(
            f'<tr><td class="text first">{_esc(c["x"])} vs {_esc(c["y"])}</td>'
            f'<td class="text">{_esc(c["layer"])}</td>{_iv_cells(iv)}'
            f'<td class="text">{_esc(per)}</td></tr>'
        )
    out.append(_simple_table(["pair", "layer", "ρ", "lo", "hi", "n", "per seed"], rows))
    out.append(_figure_html(pngs, "fig_scatter.png"))

    out.append(
        '<h2 id="compress">Compress → flatten: effects at the last epoch</h2>'
        '<p class="read">Method minus baseline, paired by seed (same initialisation and '
        f"batches), mean with a {level} % t-interval over seeds; d<sub>z</sub> is the mean "
        "difference over its standard deviation.</p>"
    )
    rows = []
    for e in dstats["effects"]:
        iv = e["interval"]
        rows.append(
            f'<tr><td class="text first">{_esc(_LABELS[e["method"]])}</td>'
            f'<td class="text">{_esc(e["layer"])}</td><td class="text">{_esc(e["metric"])}</td>'
            f'<td class="num">{_esc(format_value(e["baseline"]))}</td>'
            f'<td class="num">{_esc(format_value(e["treated"]))}</td>{_iv_cells(iv)}'
            f'<td class="num">{_esc(format_value(e["dz"]))}</td></tr>'
        )
    out.append(
        _simple_table(
            ["method", "layer", "metric", "baseline", "method", "Δ", "lo", "hi", "n", "d_z"], rows
        )
    )
    out.append(_figure_html(pngs, "fig_effects.png"))

    out.append(
        f'<h2 id="continual">Continual learning ({cstats["tasks"]} permuted-pixel tasks, '
        f"{cfg['continual_epochs']} epoch(s) each)</h2>"
    )
    rows = []
    for t in range(cstats["tasks"]):
        cells = "".join(
            _iv_cells(cstats["new_task_accuracy"][arm][t], scale=100) for arm in CONTINUAL_ARMS
        )
        rows.append(f'<tr><td class="num first">{t + 1}</td>{cells}</tr>')
    head = ["task"]
    for arm in CONTINUAL_ARMS:
        head += [f"{arm} %", "lo", "hi", "n"]
    out.append(_simple_table(head, rows))
    out.append(_figure_html(pngs, "fig_continual.png"))
    if not pngs:
        out.append(
            '<p class="note">Figures need matplotlib, which is not installed: '
            "<code>pip install 'infospec[io]'</code>.</p>"
        )

    out.append('<h2 id="files">Files</h2><ul>')
    for name, what in summary["files"].items():
        out.append(f"<li><code>{_esc(name)}</code>: {_esc(what)}</li>")
    out.append("</ul>")
    out.append(
        f"<footer>Made by infospec {_esc(summary['versions'].get('infospec', ''))} "
        "(<code>infospec demo</code>).</footer></body></html>"
    )
    return "\n".join(out) + "\n"


def metric_meanings() -> dict[str, str]:
    """Every metric of ``results.csv`` with its meaning."""
    return {
        **{k: v[1] for k, v in ACTIVATION_METRICS.items()},
        **{k: v[1] for k, v in WEIGHT_METRICS.items()},
        **MODEL_METRICS,
    }
