"""The ESD panels of the report's figure: each matrix's histogram of eigenvalues, in log space.

One panel per chosen matrix: the histogram of the eigenvalues of :math:`W^\\top W`, the
fitted power-law tail, the Marchenko-Pastur density scaled as the histogram it overlays
(or the reason it is not drawn) and, with randomized spectra, their histogram beside.
:func:`~infospec.analysis.plots.plot_report` lays them out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._text import figure_text
from ..measures.marchenko_pastur import marchenko_pastur_pdf
from .plots import _COLORS, _PANEL_SIZE, _empty_figure, _value, short_name

__all__ = ["MP_MAX_KS", "MP_MIN_BINS"]


#: The MP curve is not drawn above this KS distance between the bulk and the fitted law
#: (pure noise gives a few hundredths; see the module docstring).
MP_MAX_KS = 0.25


#: ... nor when the MP bulk spans fewer histogram bins than this.
MP_MIN_BINS = 2.0


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
