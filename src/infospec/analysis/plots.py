r"""Figures of a :class:`~infospec.analysis.report.Report` (matplotlib, no pyplot state).

Two figures answer the first two questions about a model:

* ``"layers"`` (also ``"overview"``): how the measures change along depth, one curve per
  measure, x = the report's row order. Weight panels show flatness, ``alpha``, effective rank
  and ``bits_per_param``; activation panels (when the report has them) show flatness,
  effective rank, entropy in bits per dimension and coding rate. A row whose value is NaN, or
  whose ``status`` is not ``"ok"``, is a gap in the curve. When the names have a few distinct
  roles (``query``, ``key``, ``dense`` ...), markers are coloured by role.
* ``"esd"``: each weight matrix's empirical spectral density (ESD) on log-log axes: a
  density histogram of :math:`\lambda_i = \sigma_i^2` over log-spaced bins, the fitted
  power-law tail, the fitted Marchenko–Pastur density and its upper edge.

The curves drawn over an ESD, for a matrix of shape ``rows x cols`` with
:math:`N = \max(\text{rows}, \text{cols})`, :math:`M = \min(\text{rows}, \text{cols})`
eigenvalues of which :math:`n_+` are above round-off (:math:`\lambda > M\,\epsilon\,
\lambda_{\max}`, float64 :math:`\epsilon`; the others are numerical zeros of a
rank-deficient matrix, counted in the panel but not drawn):

* power law: :math:`p(\lambda) = f\,\frac{\alpha - 1}{x_{\min}}
  (\lambda / x_{\min})^{-\alpha}` for :math:`\lambda \ge x_{\min}`, with
  :math:`f = \texttt{alpha\_num\_tail} / n_+`, the tail's share of the histogram, so the
  line integrates to that share;
* Marchenko–Pastur: the fit is on :math:`x = \lambda / N` (see
  :mod:`infospec.analysis.weights`), so the density in :math:`\lambda` is
  :math:`p(\lambda) = g\,p_{MP}(\lambda / N;\, q, \sigma^2) / N`, with
  :math:`g = (n_+ - \texttt{mp\_num\_spikes}) / n_+`, the bulk's share;
* the vertical line: the bulk edge :math:`N\,\lambda_+` in :math:`\lambda` units.

The histogram and both curves are densities in the same variable :math:`\lambda`, each
normalised to its share of the :math:`n_+` eigenvalues drawn: the histogram's area is 1,
the power law's is the tail's share and the MP curve's the bulk's share, so where a fit is
good its curve lies on the histogram. The MP curve is left out, with the reason in the
panel, where it would not describe the histogram:

* the record's scale is not the panel's: counted with :math:`N = \max(\text{rows},
  \text{cols})`, the eigenvalues above the edge are not ``mp_num_spikes`` (a fit made on
  another normalisation, such as eigenvalues pooled over kernel positions);
* ``mp_num_spikes`` is half the eigenvalues or more: there is no noise bulk;
* ``mp_ks`` > :data:`~.plots_esd.MP_MAX_KS`: the bulk is not Marchenko–Pastur (a trained
  conv kernel, an embedding);
* the bulk :math:`[\lambda_-, \lambda_+]` spans fewer than :data:`~.plots_esd.MP_MIN_BINS`
  histogram bins: with a tiny :math:`q` (a conv kernel ``out x (in k)`` with few outputs)
  the law is a narrow spike that no histogram of a spread-out spectrum can be compared
  with.

The bulk edge is drawn in every case where the fit was made, since ``mp_num_spikes`` counts
the eigenvalues right of it.

Every figure is a :class:`matplotlib.figure.Figure` created directly, never through
:mod:`matplotlib.pyplot`: nothing is shown, no global figure is left open, and figures can
be drawn from several threads. Save one with ``fig.savefig(path)``.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from .._text import figure_text
from .._validation import check_choice, check_positive

__all__ = ["figure_to_png_bytes", "plot_report"]

_KINDS = ("overview", "esd", "layers")

#: Measures along depth: (column, axis label) per table.
WEIGHT_CURVES = (
    ("flatness", "flatness of σ"),
    ("alpha", "power-law α"),
    ("effective_rank", "effective rank"),
    ("bits_per_param", "bits / parameter"),
)
ACTIVATION_CURVES = (
    ("flatness", "flatness of λ"),
    ("effective_rank", "effective rank"),
    ("entropy_bits_per_dim", "entropy, bits / dim"),
    ("coding_rate_bits", "coding rate, bits"),
    ("rankme", "RankMe"),
    ("alpha_req", "α-ReQ decay"),
)


#: WeightWatcher's range of alpha for well-trained layers, shaded on the alpha panel.
_ALPHA_BAND = (2.0, 6.0)
_MAX_ROLES = 10
_MAX_TICKS = 40
_PANEL_SIZE = (2.9, 2.35)  # inches per ESD panel
_COLORS = {
    "hist": "#9bb7d4",
    "hist_edge": "#4a6f96",
    "power_law": "#d62728",
    "mp": "#2a7d2a",
    "mp_edge": "#555555",
    "curve": "#9a9a9a",
}


def _matplotlib():
    """Import matplotlib's Figure lazily; a clear error when the extra is missing."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise InputError(
            "The report's figures need matplotlib, which is not installed: "
            "pip install 'infospec[io]'"
        ) from exc
    return matplotlib, Figure


# -- names -----------------------------------------------------------------------------------
def short_name(name: str, max_chars: int = 30) -> str:
    """A layer name short enough for a panel title or a tick label.

    ``.weight`` is dropped. While the name is longer than ``max_chars``, the non-numeric
    components in front of the last block index are dropped first (so the index and what
    follows it stay), then leading components; an ellipsis marks the cut. A single
    component that is still too long keeps its end.

    Examples
    --------
    >>> short_name("encoder.layer.11.attention.self.query.weight", 26)
    '…11.attention.self.query'
    >>> short_name("embeddings.position_embeddings.weight", 26)
    '…position_embeddings'
    >>> short_name("0.weight")
    '0'
    """
    parts = name.split(".")
    if len(parts) > 1 and parts[-1] == "weight":
        parts = parts[:-1]
    if len(".".join(parts)) <= max_chars:
        return ".".join(parts)

    def too_long(keep: list[str]) -> bool:
        return len(".".join(keep)) + 1 > max_chars  # +1: the ellipsis

    numeric = [i for i, p in enumerate(parts) if p.isdigit()]
    anchor = numeric[-1] if numeric else len(parts) - 1
    tail = len(parts) - anchor  # the last block index and what follows it
    keep = list(parts)
    i = 0
    while too_long(keep) and i < len(keep) - tail:
        if keep[i].isdigit():
            i += 1
        else:
            del keep[i]
    while len(keep) > 1 and too_long(keep):
        del keep[0]
    text = "…" + ".".join(keep)
    return text if len(text) <= max_chars else "…" + text[-(max_chars - 1) :]


def _role(name: str) -> str:
    """What a layer is, for colouring: the name after its last block index.

    ``encoder.layer.3.attention.self.query.weight`` -> ``attention.self.query``; a name
    without a numeric component (an embedding, a head) is ``"other"``.
    """
    base = re.sub(r"\[[\d,]+\]$", "", name)  # per-position slices share a role
    parts = [p for p in base.split(".") if p]
    if parts and parts[-1] == "weight":
        parts = parts[:-1]
    numeric = [i for i, p in enumerate(parts) if p.isdigit()]
    if not numeric:
        return "other"
    return ".".join(parts[numeric[-1] + 1 :]) or "other"


def _select(records: list[dict[str, Any]], names: Any) -> list[dict[str, Any]]:
    """Rows whose name matches ``names`` (a regex searched, or a list of exact names)."""
    if names is None:
        return list(records)
    if isinstance(names, str):
        try:
            rx = re.compile(names)
        except re.error as exc:
            raise InputError(
                f"The 'names' pattern {names!r} of plot_report is not a valid regular "
                f"expression: {exc}."
            ) from exc
        return [r for r in records if rx.search(str(r.get("name", "")))]
    if isinstance(names, Sequence):
        wanted = {str(n) for n in names}
        return [r for r in records if str(r.get("name", "")) in wanted]
    raise InputError(
        f"The 'names' parameter of plot_report must be a regular expression (str) or a list "
        f"of layer names. Got a {type(names).__name__} instead."
    )


def _no_match(report, names: Any) -> InputError:
    sample = [r.get("name") for r in report.weights[:4]] + [
        r.get("name") for r in report.activations[:2]
    ]
    return InputError(
        f"The 'names' parameter of plot_report ({names!r}) matches no layer of the report; "
        f"names look like {sample}."
    )


def _value(record: dict[str, Any], column: str) -> float:
    """A record's number for a curve: NaN when absent, not finite, or the row is not ok."""
    if record.get("status", "ok") != "ok":
        return math.nan
    v = record.get(column)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


# -- public ----------------------------------------------------------------------------------
def plot_report(report, kind: str = "overview", *, names: Any = None, max_panels: int | None = 36):
    """Draw a report's figures.

    Parameters
    ----------
    report : Report
        The result of :func:`infospec.analyze`.
    kind : {"overview", "layers", "esd"}, default "overview"
        ``"layers"``: the measures along depth (weights, and activations when present);
        ``"overview"`` is the same figure; ``"esd"``: a grid of per-matrix spectral
        densities with the power-law and Marchenko–Pastur fits (see the module docstring).
    names : str or list of str, optional
        Rows to draw: a regular expression searched in each row's name, or exact names.
        Default: every row.
    max_panels : int > 0, optional
        ``"esd"`` only: the most panels in the grid (36 by default, ``None`` for all). With
        more matrices than that, panels are taken evenly along the report's order and the
        figure's title says how many are shown.

    Returns
    -------
    matplotlib.figure.Figure
        A figure not registered with :mod:`matplotlib.pyplot`; save it with ``savefig`` or
        :func:`figure_to_png_bytes`. A report with nothing to draw gives a figure saying so.

    Raises
    ------
    InputError
        If ``kind`` is unknown, ``names`` matches no row or is not a valid pattern,
        ``max_panels`` is not a positive int, or matplotlib is not installed.

    Examples
    --------
    >>> import torch
    >>> from infospec import analyze
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.Linear(48, 32))
    >>> report = analyze(model, progress=False)
    >>> fig = plot_report(report, "esd")
    >>> len(fig.axes)
    2
    >>> figure_to_png_bytes(fig)[:4]
    b'\\x89PNG'
    """
    check_choice(kind, "kind", "plot_report", _KINDS)
    if max_panels is not None:
        max_panels = check_positive(max_panels, "max_panels", "plot_report", integer=True)
    _, Figure = _matplotlib()
    weights = _select(report.weights, names)
    activations = _select(report.activations, names)
    if names is not None and not weights and not activations:
        raise _no_match(report, names)
    if kind == "esd":
        from .plots_esd import _esd_figure  # (it imports this module's pieces)

        return _esd_figure(Figure, report, weights, max_panels)
    return _layers_figure(Figure, weights, activations)


def figure_to_png_bytes(fig, *, dpi: float = 100) -> bytes:
    """The figure as PNG bytes (white background), e.g. for a ``data:`` URI.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    dpi : float > 0, default 100

    Returns
    -------
    bytes
        A PNG file's contents.
    """
    dpi = check_positive(dpi, "dpi", "figure_to_png_bytes")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


# -- the layers figure -----------------------------------------------------------------------
def _empty_figure(Figure, message: str):
    fig = Figure(figsize=(6, 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        fontsize=11,
        color="#444444",
        transform=ax.transAxes,
    )
    return fig


def _layers_figure(Figure, weights, activations):
    columns = [
        (t, recs, curves)
        for t, recs, curves in (
            ("weights", weights, WEIGHT_CURVES),
            ("activations", activations, ACTIVATION_CURVES),
        )
        if recs
    ]
    if not columns:
        return _empty_figure(
            Figure, "No layer to show: the report has no weight or activation rows."
        )
    n_rows = max(len(c[2]) for c in columns)
    longest = max(len(r) for _, recs, _ in columns for r in recs)
    # wide enough for the tick labels, narrow enough that a page shows it near 1:1
    width_per_col = float(np.clip(0.2 * longest + 4.0, 6.0, 12.0 if len(columns) == 1 else 8.0))
    fig = Figure(figsize=(width_per_col * len(columns), 1.9 * n_rows + 1.9), layout="constrained")
    grid = fig.subplots(n_rows, len(columns), sharex="col", squeeze=False)
    for j, (table, records, curves) in enumerate(columns):
        ok = sum(r.get("status", "ok") == "ok" for r in records)
        header = (
            f"{table}: {ok} of {len(records)} rows"
            if ok < len(records)
            else f"{table}: {len(records)} rows"
        )
        _depth_column(grid[:, j], records, curves, header)
    return fig


def _depth_column(axes, records, curves, header: str) -> None:
    x = np.arange(len(records))
    roles = [_role(str(r.get("name", ""))) for r in records]
    distinct = list(dict.fromkeys(roles))
    colour_roles = 1 < len(distinct) <= _MAX_ROLES
    for i, ax in enumerate(axes):
        if i >= len(curves):
            ax.set_axis_off()
            continue
        column, label = curves[i]
        y = np.array([_value(r, column) for r in records], dtype=float)
        ax.plot(x, y, "-", color=_COLORS["curve"], lw=1.0, zorder=1, gid="curve", label="_curve")
        if colour_roles:
            named = [rl for rl in distinct if rl != "other"]
            for role in distinct:
                mask = np.array([rl == role for rl in roles])
                colour = "#444444" if role == "other" else f"C{named.index(role)}"
                ax.plot(
                    x[mask],
                    y[mask],
                    "o",
                    ms=4,
                    color=colour,
                    zorder=2,
                    gid=f"role:{role}",
                    label=figure_text(role, 60),
                )
        else:
            ax.plot(x, y, "o", ms=4, color="C0", zorder=2, gid="role:", label="_markers")
        if column == "alpha":
            ax.axhspan(
                *_ALPHA_BAND,
                color="#2a7d2a",
                alpha=0.08,
                lw=0,
                zorder=0,
                label="2 ≤ α ≤ 6 (well trained, WeightWatcher)",
            )
        if np.isnan(y).all():
            ax.text(
                0.5,
                0.5,
                "no value",
                ha="center",
                va="center",
                color="#888888",
                transform=ax.transAxes,
            )
        ax.set_ylabel(label, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, axis="y", color="#e4e4e4", lw=0.6)
        ax.set_axisbelow(True)
        ax.margins(x=0.01)
    top = axes[0]
    top.set_title(header, fontsize=10, loc="left")
    if colour_roles:
        top.legend(
            fontsize=7,
            ncol=min(len(distinct), 4),
            loc="lower left",
            bbox_to_anchor=(0, 1.12),
            frameon=False,
            handletextpad=0.2,
            columnspacing=0.8,
            borderaxespad=0,
        )
    # tick labels along depth, thinned to at most _MAX_TICKS, on the bottom axis only
    last = axes[min(len(curves), len(axes)) - 1]
    step = max(1, math.ceil(len(records) / _MAX_TICKS))
    ticks = x[::step]
    last.set_xticks(ticks)
    last.set_xticklabels(
        [figure_text(short_name(str(records[t].get("name", "")), 26)) for t in ticks],
        rotation=90,
        fontsize=7,
    )
    for ax in axes:
        if ax is not last:
            ax.tick_params(labelbottom=False)
    last.set_xlabel(
        "layer (report order)" + (f", every {step}th labelled" if step > 1 else ""), fontsize=8
    )
