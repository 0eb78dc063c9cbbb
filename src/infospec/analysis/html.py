"""A report as one self-contained HTML page: tables, column meanings and embedded figures.

The page loads nothing from anywhere: the style is inline, the figures are PNG images in
``data:`` URIs, and there is no script. Every piece of text from the report (layer names,
warnings, metadata) is HTML-escaped. Numbers are shown with 4 significant digits; a measure
that could not be made (NaN) is shown as "—", with the row's warning as its tooltip and in
the row's ``warning`` column.
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

import numpy as np

from .._skips import skipped_by_reason
from .._text import printable
from .._validation import check_positive
from .activations import ACTIVATION_COLUMNS
from .columns import (
    ACTIVATION_HEADLINE,
    ACTIVATION_ID_COLUMNS,
    SKIPPED_COLUMNS,
    WEIGHT_HEADLINE,
    WEIGHT_ID_COLUMNS,
)
from .weights import WEIGHT_COLUMNS

__all__ = ["render_html"]

_DASH = "—"
#: Longer lists of skipped tensors are folded (their reasons are counted above them).
_OPEN_ROWS = 20
#: Longer lists of rows with warnings start folded.
_OPEN_WARNINGS = 10

#: Meanings of the identifying columns, shown as header tooltips and in the glossary.
_ID_DOCS = {
    "name": "full dotted name of the matrix (or observed module)",
    "tensor": "the stored tensor the matrix comes from (differs for split or per-position "
    "matrices)",
    "kind": "the weight convention applied (linear, conv, embedding, ...)",
    "dtype": "storage dtype of the tensor (spectra are computed in float64)",
    "module": "class of the observed module",
    "status": "ok, or error when the row could not be analysed (reason in warning)",
    "warning": "why a cell is empty, or a numerical caveat; empty when all went well",
    "shape": "shape of the stored tensor (in the weight table: rows × cols of W, out × in)",
    "reason": "why the tensor was not analysed",
}

#: Metadata shown in the header, grouped; keys not listed go under "other".
_META_GROUPS = (
    ("source", ("source", "layers")),
    (
        "options",
        (
            "device",
            "conv",
            "split_in_proj",
            "method",
            "rel_distortion",
            "eps",
            "rel_noise",
            "max_tokens",
        ),
    ),
    ("timings", ()),  # drawn by _timings_html from _TIMINGS and every other *_seconds key
    ("versions", ("infospec", "torch", "python")),
)

#: The timing card: (meta key, label, indented under the line before). Wall times are
#: elapsed time; the stage times of the weights are summed over tensors and threads.
_TIMINGS = (
    ("model_load_seconds", "loading the model, before the analysis (wall)", False),
    ("load_seconds", "loading (wall)", False),
    ("weight_seconds", "weights: opening the source, spectra and fits (wall)", False),
    ("spectrum_seconds", "spectra, summed over tensors and threads", True),
    ("fit_seconds", "power-law and MP fits, summed over tensors and threads", True),
    ("activation_seconds", "activations: forward passes, covariances, spectra (wall)", False),
    ("activation_forward_seconds", "forward passes, without the covariance updates", True),
    ("forward_seconds", "forward passes", True),
    ("activation_accumulate_seconds", "covariance updates (in the forward hooks)", True),
    ("accumulate_seconds", "covariance updates", True),
    ("seconds", "total of the analysis (wall)", False),
    ("batches", "batches of data fed through the model", False),
    ("workers", "worker threads for the weights", False),
)
_TIMING_NOTE = (
    "Wall times are elapsed time. The spectra and fits are summed over tensors, so with "
    "several worker threads they can exceed the weights' wall time. Writing this page "
    "(drawing the figures) comes after and is not included."
)

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; margin: 1.5rem auto; max-width: 1400px; padding: 0 1rem; color: #1d1d1f;
       line-height: 1.45; }
h1 { font-size: 1.5rem; margin: 0 0 .2rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #ddd;
     padding-bottom: .2rem; }
nav { font-size: .9rem; margin: .4rem 0 1rem; }
nav a { margin-right: 1rem; color: #2456a6; text-decoration: none; }
.counts { color: #444; margin: .2rem 0 1rem; }
.meta { display: grid; grid-template-columns: repeat(auto-fit, minmax(250px, 1fr));
        gap: .4rem 1.5rem; font-size: .85rem; }
.meta section { background: #f6f7f9; border-radius: 6px; padding: .5rem .7rem; }
.meta h3 { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: #666;
           margin: 0 0 .3rem; }
.meta dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem .8rem;
           margin: 0; }
.meta dt { color: #555; }
.meta dd { margin: 0; overflow-wrap: anywhere; font-family: ui-monospace, SFMono-Regular,
           Menlo, Consolas, monospace; }
p.read { max-width: 60rem; }
dl.cols { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem;
          font-size: .88rem; margin: .3rem 0 1rem; }
dl.cols dt { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
             font-weight: 600; }
dl.cols dd { margin: 0; }
details summary { cursor: pointer; color: #2456a6; }
details.all { margin: .4rem 0; font-size: .88rem; }
details.all > summary { margin-bottom: .3rem; }
.meta section.timings { grid-column: span 2; }
.meta section.timings dl { grid-template-columns: minmax(0, 1fr) max-content; }
.meta section.timings dd { text-align: right; }
.meta dt.sub { padding-left: 1.2rem; }
.meta p.hint { font-size: .78rem; color: #666; margin: .4rem 0 0; }
.scroll { display: inline-block; max-width: 100%; overflow: auto; max-height: 75vh;
          border: 1px solid #ddd; border-radius: 4px; vertical-align: top; }
table { border-collapse: collapse; font-size: .8rem; }
th, td { padding: .2rem .5rem; border-bottom: 1px solid #eee; white-space: nowrap; }
th { position: sticky; top: 0; background: #eef1f5; text-align: right; z-index: 1;
     white-space: normal; vertical-align: bottom;
     cursor: help; }
th.text, td.text { text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums;
         font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
td.na { text-align: center; color: #999; }
td.first, th.first { position: sticky; left: 0; background: #fff; z-index: 2; }
th.first { background: #eef1f5; z-index: 3; }
td.warning { max-width: 36rem; overflow: hidden; text-overflow: ellipsis; color: #8a5a00; }
tr.error td { background: #fdecea; }
tr.error td.first { background: #fdecea; }
tr:hover td { background: #f3f7ff; }
figure { margin: .5rem 0 1.5rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; max-width: 60rem; }
.note { color: #8a5a00; }
span.mark { color: #b26a00; }
details.warnings { margin: .5rem 0; font-size: .88rem; }
details.warnings li { color: #8a5a00; }
ul.reasons { margin: .2rem 0 .6rem; padding-left: 1.2rem; font-size: .9rem; }
footer { margin-top: 2.5rem; font-size: .8rem; color: #777; }
"""


# -- formatting ------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def format_value(value: Any) -> str:
    """A cell's text (not escaped): 4 significant digits, "—" for NaN/None, ∞ for infinities.

    Examples
    --------
    >>> [format_value(v) for v in (3.14159265, 1234567.0, 42, float("nan"), None, (3, 4))]
    ['3.142', '1.235e+06', '42', '—', '—', '3 × 4']
    """
    if value is None:
        return _DASH
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if _is_int(value):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return _DASH
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.4g}"
    if isinstance(value, (tuple, list)):
        return " × ".join(format_value(v) for v in value)
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


# -- pieces ----------------------------------------------------------------------------------
def _timing_text(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.3g} s"
    return format_value(value)


def _activation_rest(meta: dict[str, Any]) -> float | None:
    """``activation_seconds`` less its forward passes and covariance updates, if known."""
    try:
        return float(
            meta["activation_seconds"]
            - meta["activation_forward_seconds"]
            - meta["activation_accumulate_seconds"]
        )
    except (KeyError, TypeError):
        return None


def _timings_html(meta: dict[str, Any]) -> str:
    """The timing card: every stage that the report timed, labelled, with a note on sums."""
    known = {k for k, _, _ in _TIMINGS}
    rows = []
    for key, label, sub in _TIMINGS:
        if key not in meta:
            continue
        value = meta[key]
        text = _timing_text(value) if key.endswith("seconds") else format_value(value)
        cls = ' class="sub"' if sub else ""
        rows.append(
            f'<dt{cls} title="report.meta[{_esc(repr(key))}]">{_esc(label)}</dt>'
            f"<dd>{_esc(text)}</dd>"
        )
        if key == "activation_accumulate_seconds" and "activation_forward_seconds" in meta:
            rest = _activation_rest(meta)
            if rest is not None:
                label = "the rest: set-up, then the covariances' spectra and measures"
                rows.append(
                    f'<dt class="sub">{_esc(label)}</dt><dd>{_esc(_timing_text(rest))}</dd>'
                )
    for key in meta:  # stages timed by newer code: shown under their own name
        if key.endswith("_seconds") and key not in known:
            rows.append(f"<dt>{_esc(key)}</dt><dd>{_esc(_timing_text(meta[key]))}</dd>")
    if not rows:
        return ""
    return (
        f'<section class="timings"><h3>timings</h3><dl>{"".join(rows)}</dl>'
        f'<p class="hint">{_esc(_TIMING_NOTE)}</p></section>'
    )


def _meta_html(meta: dict[str, Any]) -> str:
    listed = {k for _, keys in _META_GROUPS for k in keys} | {k for k, _, _ in _TIMINGS}
    groups = [(g, [k for k in keys if k in meta]) for g, keys in _META_GROUPS]
    groups.append(("other", [k for k in meta if k not in listed and not k.endswith("_seconds")]))
    parts = []
    for group, keys in groups:
        if group == "timings":
            parts.append(_timings_html(meta))
            continue
        if not keys:
            continue
        rows = []
        for k in keys:
            v = meta[k]
            text = format_value(v)
            rows.append(f"<dt>{_esc(k)}</dt><dd>{_esc(text)}</dd>")
        parts.append(f"<section><h3>{_esc(group)}</h3><dl>{''.join(rows)}</dl></section>")
    return f'<div class="meta">{"".join(parts)}</div>'


def _glossary(columns: dict[str, str], id_columns: tuple[str, ...]) -> str:
    items = [(c, _ID_DOCS.get(c, "")) for c in id_columns] + list(columns.items())
    items.append(("warning", _ID_DOCS["warning"]))
    return (
        '<dl class="cols">'
        + "".join(f"<dt>{_esc(c)}</dt><dd>{_esc(doc)}</dd>" for c, doc in items)
        + "</dl>"
    )


def _table(
    records: list[dict[str, Any]],
    columns: list[str],
    docs: dict[str, str],
    *,
    text_columns: set[str],
) -> str:
    head = []
    for i, c in enumerate(columns):
        cls = ["text"] if c in text_columns else []
        if i == 0:
            cls.append("first")
        label = _esc(c).replace("_", "_<wbr>")  # long names wrap after an underscore
        head.append(f'<th class="{" ".join(cls)}" title="{_esc(docs.get(c, c))}">{label}</th>')
    body = []
    for r in records:
        warning = str(r.get("warning") or "")
        status = r.get("status", "ok")
        cells = []
        for i, c in enumerate(columns):
            v = r.get(c)
            first = " first" if i == 0 else ""
            if c == "warning":
                cells.append(
                    f'<td class="text warning{first}" title="{_esc(warning)}">{_esc(warning)}</td>'
                )
            elif _missing(v):
                tip = warning or ("row not analysed" if status != "ok" else "not computed")
                cells.append(f'<td class="na{first}" title="{_esc(tip)}">{_DASH}</td>')
            elif c == "status" and warning:
                cells.append(
                    f'<td class="text{first}" title="{_esc(warning)}">{_esc(format_value(v))}'
                    ' <span class="mark">⚠</span></td>'
                )
            elif c in text_columns or isinstance(v, str):
                # names come from files: non-printables escaped, then HTML-escaped
                cells.append(f'<td class="text{first}">{_esc(printable(format_value(v)))}</td>')
            else:
                cells.append(f'<td class="num{first}">{_esc(format_value(v))}</td>')
        cls = ' class="error"' if status not in ("ok", None) else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{"".join(head)}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _with_shape(record: dict[str, Any]) -> dict[str, Any]:
    """A weight record with ``shape`` = (rows, cols) for the headline table."""
    rows, cols = record.get("rows"), record.get("cols")
    if _missing(rows) or _missing(cols):
        return {**record, "shape": None}
    return {**record, "shape": (int(rows), int(cols))}


def _tables(
    records: list[dict[str, Any]],
    headline: list[str],
    columns: list[str],
    docs: dict[str, str],
    text_columns: set[str],
    noun: str,
) -> str:
    """The headline columns as a table that fits the page, every column behind a toggle."""
    shown = _table(records, headline, docs, text_columns=text_columns)
    rest = [c for c in columns if c not in headline]
    full = _table(records, columns, docs, text_columns=text_columns)
    return (
        f'<div class="headline">{shown}</div>'
        f'<details class="all"><summary>All {len(columns)} columns of the {noun} table '
        f"({len(rest)} more: {_esc(', '.join(rest))})</summary>{full}</details>"
    )


def _warnings(records: list[dict[str, Any]]) -> str:
    """The rows with a warning, listed under their table (the column is far to the right)."""
    rows = [r for r in records if r.get("warning")]
    if not rows:
        return ""
    items = "".join(
        f"<li><code>{_esc(printable(r.get('name', '')))}</code>: {_esc(r['warning'])}</li>"
        for r in rows
    )
    return (
        f'<details class="warnings"{" open" if len(rows) <= _OPEN_WARNINGS else ""}>'
        f"<summary>{len(rows)} row(s) with a warning</summary><ul>{items}</ul></details>"
    )


def _figure(fig, alt: str, caption: str) -> str:
    from .plots import figure_to_png_bytes

    data = base64.b64encode(figure_to_png_bytes(fig, dpi=100)).decode("ascii")
    return (
        f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


_OVERVIEW_CAPTION = (
    "Measures along the report's rows (x: layer, in report order). Gaps are rows where a "
    "measure could not be made. The shaded band on the α panel is the range 2 ≤ α ≤ 6 that "
    "WeightWatcher associates with well-trained layers; α above it suggests an "
    "under-trained (random-like) layer, below it an over-fitted one."
)
_ESD_CAPTION = (
    "Each matrix's empirical spectral density of λ = σ² (histogram over log-spaced bins, "
    "log-log axes), with the power-law fit of its tail (red, exponent α from x<sub>min</sub>, "
    "scaled to the tail's share of eigenvalues), the Marchenko–Pastur density fitted to the "
    "bulk (green) and the bulk's upper edge (dashed). Eigenvalues right of the edge are "
    "spikes: structure that random weights would not have. All three are densities in λ "
    "normalised to their share of the eigenvalues, so a good fit lies on the histogram. "
    "The Marchenko–Pastur curve is left out, with the reason in the panel, where it would "
    "not describe the histogram: a KS distance above 0.25 (the bulk is not "
    "Marchenko–Pastur), half the eigenvalues above the edge (no noise bulk), or a bulk "
    "narrower than two histogram bins (a tiny aspect ratio q)."
)


# -- public ----------------------------------------------------------------------------------
def render_html(report, *, title: str | None = None, max_esd_panels: int | None = 36) -> str:
    """The report as one self-contained HTML page.

    Parameters
    ----------
    report : Report
        The result of :func:`infospec.analyze`.
    title : str, optional
        Page heading; default ``"infospec report: <source>"``.
    max_esd_panels : int > 0, optional
        The most spectral-density panels drawn (evenly spaced along the report's order);
        ``None`` for all.

    Returns
    -------
    str
        The page: metadata, how to read it (every column's meaning), the weight table, the
        activation table (when the report has activations), the skipped tensors with their
        reasons and the figures as embedded PNG images. Without matplotlib the page is
        written without figures and says how to get them.

    Raises
    ------
    InputError
        If ``max_esd_panels`` is not a positive int.

    Examples
    --------
    >>> from infospec.analysis import Report
    >>> page = render_html(Report(meta={"source": "a <toy>"}))
    >>> "a &lt;toy&gt;" in page and "<link" not in page
    True
    """
    if max_esd_panels is not None:
        max_esd_panels = check_positive(
            max_esd_panels, "max_esd_panels", "render_html", integer=True
        )
    meta = report.meta or {}
    source = meta.get("source", "?")
    heading = title if title is not None else f"infospec report: {source}"
    has_plots = _have_matplotlib()

    n_ok = sum(r.get("status") == "ok" for r in report.weights)
    n_err = len(report.weights) - n_ok
    counts = (
        f"{n_ok} weight matrices analysed, {n_err} with errors, "
        f"{len(report.skipped)} tensors skipped"
    )
    if report.activations:
        counts += f"; {len(report.activations)} layers' activations measured"

    weight_cols = _columns(report.weights, WEIGHT_ID_COLUMNS, WEIGHT_COLUMNS)
    act_cols = _columns(report.activations, ACTIVATION_ID_COLUMNS, ACTIVATION_COLUMNS)
    text_cols = {"name", "tensor", "kind", "dtype", "status", "module", "reason"}

    nav = [("read", "how to read"), ("overview", "overview"), ("weights", "weights")]
    if report.activations:
        nav.append(("activations", "activations"))
    nav += [("esd", "spectral densities"), ("skipped", "skipped")]

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(heading)}</h1>",
        f'<p class="counts">{_esc(counts)}</p>',
        "<nav>" + "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in nav) + "</nav>",
        _meta_html(meta),
    ]

    rel = meta.get("rel_distortion")
    keep = (
        f"{100 * (1 - rel):.4g} %"
        if isinstance(rel, (int, float)) and 0 < rel <= 1
        else "1 - rel_distortion"
    )
    out.append('<h2 id="read">How to read this</h2>')
    out.append(
        '<p class="read">Each row of the weight table is one weight matrix W, read as '
        "out × in (a convolution kernel as out × (in · kernel positions)). Every measure "
        "comes from one spectrum: the singular values σ of W, or λ = σ² for the "
        "random-matrix fits. Flatness near 1 and a high effective rank mean the matrix "
        "spreads its energy over many directions; a small power-law α (a heavy tail) and "
        "spikes above the Marchenko–Pastur edge mean learned structure; "
        "<code>bits_per_param</code> is what an ideal transform code would spend per weight "
        f"to keep {keep} of the energy (the rel_distortion option). Information is in bits. "
        "The activation table, when present, measures each observed layer's output "
        "covariance over the data given. An empty cell (—) is a measure that could not be "
        "made; hover over it, or see the row's <code>warning</code>, for why. Hover over a "
        "column header for its meaning.</p>"
    )
    out.append("<details><summary>Column meanings</summary>")
    out.append(
        "<h3>Weights</h3>"
        + _glossary(
            WEIGHT_COLUMNS, tuple(c for c in weight_cols if c in _ID_DOCS and c != "warning")
        )
    )
    if report.activations:
        out.append("<h3>Activations</h3>" + _glossary(ACTIVATION_COLUMNS, ACTIVATION_ID_COLUMNS))
    out.append("</details>")

    out.append('<h2 id="overview">Overview: measures along depth</h2>')
    if not has_plots:
        out.append(_NO_MATPLOTLIB)
    else:
        from .plots import plot_report

        out.append(
            _figure(
                plot_report(report, "overview"), "measures along depth", _esc(_OVERVIEW_CAPTION)
            )
        )

    docs = {**_ID_DOCS, **WEIGHT_COLUMNS}
    out.append(f'<h2 id="weights">Weights ({len(report.weights)} rows)</h2>')
    if report.weights:
        rows = [_with_shape(r) for r in report.weights]
        headline = [c for c in WEIGHT_HEADLINE if c in weight_cols or c == "shape"]
        out.append(_tables(rows, headline, weight_cols, docs, text_cols, "weight"))
        out.append(_warnings(report.weights))
    else:
        out.append("<p>No weight matrix was analysed.</p>")

    if report.activations:
        docs = {**_ID_DOCS, **ACTIVATION_COLUMNS}
        out.append(f'<h2 id="activations">Activations ({len(report.activations)} layers)</h2>')
        headline = [c for c in ACTIVATION_HEADLINE if c in act_cols]
        out.append(_tables(report.activations, headline, act_cols, docs, text_cols, "activation"))
        out.append(_warnings(report.activations))

    out.append('<h2 id="esd">Spectral densities of the weights</h2>')
    if not has_plots:
        out.append(_NO_MATPLOTLIB)
    else:
        from .plots import plot_report

        out.append(
            _figure(
                plot_report(report, "esd", max_panels=max_esd_panels),
                "empirical spectral densities",
                _ESD_CAPTION,
            )
        )

    out.append(f'<h2 id="skipped">Skipped tensors ({len(report.skipped)})</h2>')
    if report.skipped:
        out.append(
            '<ul class="reasons">'
            + "".join(
                f"<li>{len(recs)} × {_esc(reason)}</li>"
                for reason, recs in skipped_by_reason(report.skipped)
            )
            + "</ul>"
        )
        table = _table(
            report.skipped, list(SKIPPED_COLUMNS), _ID_DOCS, text_columns=set(SKIPPED_COLUMNS)
        )
        if len(report.skipped) > _OPEN_ROWS:
            table = f"<details><summary>Every skipped tensor</summary>{table}</details>"
        out.append(table)
    else:
        out.append("<p>None: every tensor of the source was analysed.</p>")
    out.append(f"<footer>Made by infospec {_esc(meta.get('infospec', ''))}.</footer>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


_NO_MATPLOTLIB = (
    '<p class="note">Figures need matplotlib, which is not installed: '
    "<code>pip install 'infospec[io]'</code>.</p>"
)


def _have_matplotlib() -> bool:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def _columns(
    records: list[dict[str, Any]], id_columns: tuple[str, ...], measures: dict[str, str]
) -> list[str]:
    """Table columns: identifiers, measures, warning; ``tensor`` only where it adds anything."""
    cols = [
        c
        for c in id_columns
        if not (
            c == "tensor" and all(r.get("tensor", r.get("name")) == r.get("name") for r in records)
        )
    ]
    return [*cols, *measures, "warning"]
