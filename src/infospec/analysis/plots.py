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
* ``mp_ks`` > :data:`MP_MAX_KS`: the bulk is not Marchenko–Pastur (a trained conv kernel,
  an embedding);
* the bulk :math:`[\lambda_-, \lambda_+]` spans fewer than :data:`MP_MIN_BINS` histogram
  bins: with a tiny :math:`q` (a conv kernel ``out x (in k)`` with few outputs) the law
  is a narrow spike that no histogram of a spread-out spectrum can be compared with.

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
from ..measures.marchenko_pastur import marchenko_pastur_pdf

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

#: The MP curve is not drawn above this KS distance between the bulk and the fitted law
#: (pure noise gives a few hundredths; see the module docstring).
MP_MAX_KS = 0.25
#: ... nor when the MP bulk spans fewer histogram bins than this.
MP_MIN_BINS = 2.0

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


# -- the ESD figure --------------------------------------------------------------------------
def _finite(record: dict[str, Any], *columns: str) -> bool:
    return all(math.isfinite(_value(record, c)) for c in columns)


def _positive_spectrum(report, record) -> tuple[np.ndarray, int] | None:
    """The eigenvalues to histogram and how many numerical zeros were left out."""
    if record.get("status", "ok") != "ok":
        return None
    lam = report.spectra.get(f"weights/{record.get('name')}")
    if lam is None:
        return None
    lam = np.asarray(lam, dtype=np.float64).ravel()
    lam = lam[np.isfinite(lam)]
    if lam.size == 0 or lam.max() <= 0:
        return None
    # numerical zeros (round-off of a rank-deficient matrix) carry no information
    keep = lam > lam.max() * lam.size * np.finfo(np.float64).eps
    return lam[keep], int(lam.size - keep.sum())


def _evenly(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return [items[i] for i in idx]


def _esd_figure(Figure, report, weights, max_panels):
    drawable = [(r, got) for r in weights if (got := _positive_spectrum(report, r)) is not None]
    if not drawable:
        return _empty_figure(Figure, "No weight spectrum to show (no analysed matrix).")
    shown = drawable if max_panels is None else _evenly(drawable, max_panels)
    n = len(shown)
    ncols = n if n <= 6 else min(6, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    fig = Figure(
        figsize=(max(6.0, _PANEL_SIZE[0] * ncols), _PANEL_SIZE[1] * nrows + 0.9),
        layout="constrained",
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (record, (lam, zeros)) in zip(axes, shown, strict=False):
        _esd_panel(ax, record, lam, zeros)
        shuffled = report.spectra.get(f"randomized/{record.get('name')}")
        if shuffled is not None:  # analyze(randomize=True): the shuffled matrix's ESD
            _randomized_overlay(ax, np.asarray(shuffled, dtype=float), lam)
    for ax in axes[n:]:
        fig.delaxes(ax)
    notes = []
    if len(shown) < len(drawable):
        notes.append(f"{len(shown)} of {len(drawable)} matrices, evenly spaced")
    skipped = len(weights) - len(drawable)
    if skipped:
        notes.append(f"{skipped} row(s) without a spectrum not drawn")
    title = "Empirical spectral densities of λ = σ² (log-log)"
    if notes:
        title += "\n" + "; ".join(notes)
    fig.suptitle(title, fontsize=10 if n < 3 else 11)
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=len(handles) if ncols >= 3 else 2,
            fontsize=8,
            frameon=False,
        )
    return fig


def _randomized_overlay(ax, shuffled: np.ndarray, lam: np.ndarray) -> None:
    """The ESD of the element-wise shuffled matrix, as an outline over the panel's ESD."""
    shuffled = shuffled[shuffled > 0]
    if shuffled.size == 0:
        return
    lo = float(min(shuffled.min(), lam.min()))
    hi = float(max(shuffled.max(), lam.max()))
    bins = np.geomspace(lo, hi * 1.0001, int(np.clip(round(2 * math.sqrt(lam.size)), 8, 60)) + 1)
    ax.hist(
        shuffled,
        bins=bins,
        density=True,
        histtype="step",
        color="#c0392b",
        lw=1.0,
        label="shuffled W (randomize)",
        gid="randomized",
    )


def _esd_panel(ax, record: dict[str, Any], lam: np.ndarray, zeros: int) -> None:
    n = lam.size
    lo, hi = float(lam.min()), float(lam.max())
    if hi < lo * 1.01:  # (nearly) one value, e.g. an orthogonal matrix: bins around it
        mid = math.sqrt(lo * hi)
        lo, hi = mid / 1.1, mid * 1.1
    n_bins = int(np.clip(round(2 * math.sqrt(n)), 8, 60))
    bins = np.geomspace(lo, hi, n_bins + 1)
    heights, _, _ = ax.hist(
        lam,
        bins=bins,
        density=True,
        histtype="stepfilled",
        color=_COLORS["hist"],
        edgecolor=_COLORS["hist_edge"],
        lw=0.6,
        label="ESD (histogram)",
        gid="esd",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    positive = heights[heights > 0]
    y_lo, y_hi = float(positive.min()) / 5, float(positive.max()) * 5
    notes = []
    right = hi
    shape = [_value(record, "rows"), _value(record, "cols")]
    big = max((v for v in shape if math.isfinite(v)), default=0.0)
    if _finite(record, "mp_sigma2", "mp_q") and big > 0:
        sigma2, q = _value(record, "mp_sigma2"), _value(record, "mp_q")
        spikes = _value(record, "mp_num_spikes")
        bulk = (n - spikes) / n if math.isfinite(spikes) and spikes < n else 1.0
        lower, upper = sigma2 * (1 - math.sqrt(q)) ** 2, sigma2 * (1 + math.sqrt(q)) ** 2
        start = max(lower, lo / big / 2)
        why_not = _mp_not_drawn(record, lam, big, lower, upper, bins)
        if why_not == "scale":
            notes.append("no MP curve: fit scale ≠ rows × cols")
        elif why_not:
            notes.append(f"no MP curve: {why_not}")
        if why_not is None and upper > start:
            xs = np.geomspace(start, upper, 300)
            dens = marchenko_pastur_pdf(xs, q, sigma2).numpy() * bulk / big
            keep = dens > 0
            ax.plot(
                xs[keep] * big,
                dens[keep],
                color=_COLORS["mp"],
                lw=1.4,
                label="Marchenko–Pastur fit",
                gid="mp",
            )
        if why_not != "scale":
            right = max(right, upper * big)  # drawn even when no eigenvalue is near
            ax.axvline(
                upper * big,
                color=_COLORS["mp_edge"],
                lw=1.0,
                ls="--",
                label="MP bulk edge",
                gid="mp_edge",
            )
    else:
        notes.append("no MP fit")
    if _finite(record, "alpha", "alpha_xmin", "alpha_num_tail") and _value(record, "alpha") > 1:
        alpha, xmin = _value(record, "alpha"), _value(record, "alpha_xmin")
        share = min(1.0, _value(record, "alpha_num_tail") / n)
        xs = np.geomspace(xmin, max(hi, xmin * 1.01), 100)
        dens = share * (alpha - 1) / xmin * (xs / xmin) ** (-alpha)
        ax.plot(
            xs,
            dens,
            color=_COLORS["power_law"],
            lw=1.4,
            label="power-law tail fit",
            gid="power_law",
        )
        notes.append(f"α = {alpha:.3g}")
    else:
        notes.append("no power-law fit")
    ax.set_ylim(y_lo, y_hi)
    if zeros:
        notes.append(f"{zeros} zero eigenvalue(s) not drawn")
    ax.set_xlim(lo / 1.5, right * 1.5)
    ax.set_title(figure_text(short_name(str(record.get("name", "")), 34)), fontsize=8)
    ax.text(
        0.97,
        0.96,
        "\n".join(notes),
        transform=ax.transAxes,
        fontsize=7.5,
        va="top",
        ha="right",
        color="#222222",
        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "none", "alpha": 0.75},
    )
    _sparse_log_ticks(ax)
    ax.tick_params(labelsize=7)


def _mp_not_drawn(
    record: dict[str, Any],
    lam: np.ndarray,
    big: float,
    lower: float,
    upper: float,
    bins: np.ndarray,
) -> str | None:
    """Why the MP curve would not describe this panel's histogram, or None to draw it.

    ``"scale"`` when the fit was made on another normalisation than ``lambda / N``;
    otherwise a short reason for the panel (see the module docstring for the rules).
    """
    spikes = _value(record, "mp_num_spikes")
    n = lam.size
    if math.isfinite(spikes):
        above = int(np.count_nonzero(lam / big > upper))
        if abs(above - spikes) > max(1.0, 0.01 * n):
            return "scale"
        if spikes >= n / 2:
            return f"{int(spikes)} of {n} above the edge"
    ks = _value(record, "mp_ks")
    if math.isfinite(ks) and ks > MP_MAX_KS:
        return f"KS {ks:.2f} > {MP_MAX_KS:g}"
    bin_width = math.log(bins[1] / bins[0])  # bins are log-spaced
    low = max(lower, float(bins[0]) / big)
    if math.log(upper / low) < MP_MIN_BINS * bin_width:
        return f"bulk < {MP_MIN_BINS:g} bins (q = {_value(record, 'mp_q'):.2g})"
    return None


def _sparse_log_ticks(ax) -> None:
    """At most a few decades labelled per axis and no minor ticks: readable small panels,
    and fast (a log axis over many decades otherwise lays out hundreds of tick labels)."""
    from matplotlib.ticker import LogLocator, NullLocator

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=5))
        axis.set_minor_locator(NullLocator())
