"""Figures and the HTML page of a Report: what is drawn, what is escaped, what is embedded."""

from __future__ import annotations

import base64
import copy
import html
import itertools
import math
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from infospec import InputError, analyze
from infospec.analysis import ACTIVATION_COLUMNS, WEIGHT_COLUMNS, Report
from infospec.analysis import html as html_mod
from infospec.analysis.html import format_value, render_html
from infospec.analysis.plots import _role, figure_to_png_bytes, plot_report, short_name

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ODD_NAME = "odd<b>&\"name'.weight"
BAD_NAME = "bad<&>.weight"


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report() -> Report:
    """A real run: two Linear layers 64 -> 48 -> 32 (seeded), weights and activations."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 32))
    gen = torch.Generator().manual_seed(1)
    data = [torch.randn(200, 64, generator=gen) for _ in range(2)]
    return analyze(model, data, progress=False)


@pytest.fixture(scope="module")
def messy(report) -> Report:
    """The real run plus an error row (no spectrum) and a row whose power-law fit failed,
    both with names that need HTML escaping."""
    r = copy.deepcopy(report)
    odd = dict(r.weights[0], name=ODD_NAME, tensor=ODD_NAME)
    for c in ("alpha", "alpha_xmin", "alpha_ks", "alpha_sigma", "alpha_num_tail"):
        odd[c] = math.nan
    odd["warning"] = "power-law fit: too few eigenvalues <here>"
    r.weights.insert(1, odd)
    r.spectra[f"weights/{ODD_NAME}"] = r.spectra["weights/0.weight"]
    r.weights.append(
        {
            "name": BAD_NAME,
            "tensor": BAD_NAME,
            "kind": "linear",
            "dtype": "float32",
            "status": "error",
            "warning": "tensor contains 3 NaN and 0 infinite value(s); not analysed",
        }
    )
    r.activations.append(
        {"name": "act<&>", "module": "Linear", "status": "error", "warning": "no rows"}
    )
    return r


@pytest.fixture(scope="module")
def page(messy) -> str:
    return render_html(messy, title="Title <with> & tags")


def _gids(ax) -> list[str]:
    return [line.get_gid() for line in ax.get_lines()]


def _line(ax, gid: str):
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


# -- the ESD figure --------------------------------------------------------------------------
def test_esd_one_panel_per_matrix_with_fits(report):
    fig = plot_report(report, "esd")
    assert len(fig.axes) == len(report.weights) == 2
    for ax, rec in zip(fig.axes, report.weights, strict=True):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_title() == rec["name"].removesuffix(".weight")
        assert {"mp", "mp_edge", "power_law"} <= set(_gids(ax))
        assert any(p.get_gid() == "esd" for p in ax.patches)
        assert f"α = {rec['alpha']:.3g}" in " ".join(t.get_text() for t in ax.texts)


@pytest.mark.parametrize("index", [0, 1])
def test_esd_curves_match_the_records(report, index):
    """The drawn curves are the fitted laws, rescaled from lambda / N to lambda."""
    rec = report.weights[index]
    lam = report.spectrum(rec["name"])
    ax = plot_report(report, "esd").axes[index]
    n_big, n = max(rec["rows"], rec["cols"]), lam.size

    # histogram: a density over lambda, so its polygon's area (shoelace, data units) is 1
    (hist,) = [p for p in ax.patches if p.get_gid() == "esd"]
    xy = hist.get_xy()
    area = 0.5 * abs(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))
    assert area == pytest.approx(1.0, rel=1e-9)

    # Marchenko-Pastur: g * p_MP(lambda / N) / N, closed form evaluated here with NumPy
    x, y = _line(ax, "mp")
    s2, q = rec["mp_sigma2"], rec["mp_q"]
    lo, hi = s2 * (1 - math.sqrt(q)) ** 2, s2 * (1 + math.sqrt(q)) ** 2
    t = x / n_big
    ref = np.sqrt(np.clip((hi - t) * (t - lo), 0, None)) / (2 * math.pi * s2 * q * t)
    bulk = (n - rec["mp_num_spikes"]) / n
    # at the edges sqrt((hi - t)(t - lo)) turns a round-off of eps * hi in t into about
    # sqrt(eps) of the peak: an absolute tolerance of 1e-7 of the peak there
    np.testing.assert_allclose(y, bulk * ref / n_big, rtol=1e-10, atol=1e-7 * float(y.max()))
    # ... which integrates over lambda to the bulk's share (sqrt edges: coarse quadrature)
    assert np.trapezoid(y, x) == pytest.approx(bulk, rel=0.03)
    (edge,) = [ln for ln in ax.get_lines() if ln.get_gid() == "mp_edge"]
    assert edge.get_xdata()[0] == pytest.approx(rec["mp_upper_edge"] * n_big, rel=1e-12)

    # power law: share * (alpha - 1) / xmin * (x / xmin)^-alpha from xmin to the top
    x, y = _line(ax, "power_law")
    a, xmin, share = rec["alpha"], rec["alpha_xmin"], rec["alpha_num_tail"] / n
    assert x[0] == pytest.approx(xmin) and x[-1] == pytest.approx(lam.max())
    np.testing.assert_allclose(y, share * (a - 1) / xmin * (x / xmin) ** -a, rtol=1e-12)
    # the untruncated line's mass above xmin is the tail's share of eigenvalues
    assert share * (1 - (x[-1] / xmin) ** (1 - a)) == pytest.approx(np.trapezoid(y, x), rel=2e-3)


def _hist_bins(ax, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges of a panel's histogram (the x of its step polygon) and its heights there."""
    (hist,) = [p for p in ax.patches if p.get_gid() == "esd"]
    edges = np.unique(hist.get_xy()[:, 0])
    heights, _ = np.histogram(lam, bins=edges, density=True)
    return edges, heights


def _curve_mass(x: np.ndarray, y: np.ndarray, a: float, b: float) -> float:
    """Integral over [a, b] of the drawn curve (linear between its points, 0 outside)."""
    grid = np.union1d(np.clip(x, a, b), [a, b])
    return float(np.trapezoid(np.interp(grid, x, y, left=0, right=0), grid))


@pytest.mark.parametrize(
    ("label", "make"),
    [
        ("linear 1200 x 300", lambda g: {"noise.weight": torch.randn(1200, 300, generator=g)}),
        (
            "linear 100 x 25600 (tiny q)",
            lambda g: {"wide.weight": torch.randn(100, 25600, generator=g)},
        ),
        ("conv 64 x 48 x 3 x 3", lambda g: {"conv.weight": torch.randn(64, 48, 3, 3, generator=g)}),
    ],
)
def test_mp_curve_lies_on_the_histogram_of_pure_noise(gen, label, make):
    """On a noise matrix the MP curve and the histogram are the same density of lambda:
    the curve's area is the bulk's share (about 1), and bin by bin it carries the
    histogram's mass (total variation distance small). Any other scaling (in lambda / N,
    or an N different from the fit's) fails both by orders of magnitude."""
    rep = analyze(make(gen), progress=False)
    (rec,) = rep.weights
    (ax,) = plot_report(rep, "esd").axes
    assert "mp" in _gids(ax), label
    x, y = _line(ax, "mp")
    lam = rep.spectrum(rec["name"])
    edges, heights = _hist_bins(ax, lam)
    assert edges[0] == pytest.approx(lam.min()) and edges[-1] == pytest.approx(lam.max())
    hist_mass = heights * np.diff(edges)
    assert hist_mass.sum() == pytest.approx(1.0, rel=1e-9)
    bulk = 1 - rec["mp_num_spikes"] / lam.size
    assert bulk > 0.95
    assert np.trapezoid(y, x) == pytest.approx(bulk, rel=0.05)
    curve_mass = np.array([_curve_mass(x, y, a, b) for a, b in itertools.pairwise(edges)])
    outside = abs(bulk - curve_mass.sum())  # the support beyond the extreme eigenvalues
    # measured: 0.053, 0.058 and 0.089 for the three (a mis-scaled curve gives about 1)
    assert 0.5 * (np.abs(curve_mass - hist_mass).sum() + outside) < 0.15, label


def _edited(report, **changes) -> Report:
    r = copy.deepcopy(report)
    r.weights = [dict(r.weights[0], **changes)]
    return r


def test_mp_curve_not_drawn_where_the_fit_is_meaningless(report, gen):
    rec = report.weights[0]
    notes = lambda ax: " ".join(t.get_text() for t in ax.texts)  # noqa: E731

    # the bulk is not Marchenko-Pastur: curve left out, the edge (what mp_num_spikes counts) kept
    (ax,) = plot_report(_edited(report, mp_ks=0.5), "esd").axes
    assert "mp" not in _gids(ax) and "mp_edge" in _gids(ax)
    assert "no MP curve: KS 0.50 > 0.25" in notes(ax)
    (ax,) = plot_report(_edited(report, mp_ks=0.2), "esd").axes
    assert "mp" in _gids(ax) and "no MP curve" not in notes(ax)

    # a fit on another scale than lambda / max(rows, cols): neither curve nor edge
    (ax,) = plot_report(_edited(report, mp_sigma2=rec["mp_sigma2"] / 20), "esd").axes
    assert not {"mp", "mp_edge"} & set(_gids(ax))
    assert "no MP curve: fit scale ≠ rows × cols" in notes(ax)

    # a tiny q against a spread-out spectrum (CREPE's conv kernels as out x (in k)): 12
    # noise rows and 4 strong ones; the bulk law is a spike narrower than two bins
    scales = torch.ones(16, 1, dtype=torch.float64)
    scales[:4, 0] = torch.tensor([3.0, 6.0, 12.0, 30.0])
    w = scales * torch.randn(16, 4096, generator=gen, dtype=torch.float64)
    spread = analyze({"spread.weight": w}, progress=False)
    (srec,) = spread.weights
    assert srec["mp_num_spikes"] == 4 and srec["mp_ks"] < 0.25  # a good fit, but too narrow
    (ax,) = plot_report(spread, "esd").axes
    assert "mp" not in _gids(ax) and "mp_edge" in _gids(ax)
    assert "no MP curve: bulk < 2 bins (q = 0.0039)" in notes(ax)


def test_esd_skips_error_rows_and_draws_missing_fits_as_absent(messy):
    fig = plot_report(messy, "esd")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 3  # two real rows + the odd one; the error row has no spectrum
    assert not any("bad" in t for t in titles)
    odd = fig.axes[titles.index(short_name(ODD_NAME, 34))]
    assert "power_law" not in _gids(odd) and "mp" in _gids(odd)
    assert "no power-law fit" in " ".join(t.get_text() for t in odd.texts)
    assert "1 row(s) without a spectrum" in fig.get_suptitle()


def test_esd_degenerate_spectra(gen):
    """Equal eigenvalues, numerical zeros and an all-zero matrix are drawn (or skipped) sanely."""
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=gen, dtype=torch.float64))
    rank1 = torch.outer(torch.randn(30, generator=gen), torch.randn(20, generator=gen))
    rep = analyze(
        {"orth.weight": q, "rank1.weight": rank1, "zero.weight": torch.zeros(16, 16)},
        progress=False,
    )
    fig = plot_report(rep, "esd")
    assert [ax.get_title() for ax in fig.axes] == ["orth", "rank1"]
    notes = " ".join(t.get_text() for t in fig.axes[1].texts)
    assert "19 zero eigenvalue(s) not drawn" in notes and "no power-law fit" in notes
    lo, hi = fig.axes[0].get_xlim()
    assert lo < 1 < hi  # all eigenvalues of an orthogonal matrix are 1
    assert "1 row(s) without a spectrum" in fig.get_suptitle()
    assert figure_to_png_bytes(fig, dpi=30).startswith(PNG_MAGIC)


def test_esd_max_panels_takes_rows_evenly(messy):
    fig = plot_report(messy, "esd", max_panels=2)
    assert [ax.get_title() for ax in fig.axes] == ["0", "2"]  # first and last of 3
    assert "2 of 3 matrices" in fig.get_suptitle()
    assert len(plot_report(messy, "esd", max_panels=None).axes) == 3


# -- the layers figure -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["layers", "overview"])
def test_layers_curves_are_the_records(report, kind):
    fig = plot_report(report, kind)
    assert len(fig.axes) == 12  # 6 rows: 4 weight measures (2 blank) + 6 activation measures
    weight_axes, act_axes = fig.axes[0::2], fig.axes[1::2]
    assert [ax.axison for ax in weight_axes] == [True] * 4 + [False] * 2
    act_cols = ("flatness", "effective_rank", "entropy_bits_per_dim", "coding_rate_bits")
    for axes, records, cols in (
        (
            weight_axes[:4],
            report.weights,
            ("flatness", "alpha", "effective_rank", "bits_per_param"),
        ),
        (act_axes, report.activations, (*act_cols, "rankme", "alpha_req")),
    ):
        for ax, col in zip(axes, cols, strict=True):
            x, y = _line(ax, "curve")
            np.testing.assert_array_equal(x, np.arange(len(records)))
            np.testing.assert_array_equal(y, [r[col] for r in records])


def test_layers_weights_only_has_one_column(report):
    r = copy.deepcopy(report)
    r.activations = []
    fig = plot_report(r, "layers")
    assert len(fig.axes) == 4
    assert fig.axes[-1].get_xticklabels()[0].get_text() == "0"


def test_layers_nan_and_error_rows_are_gaps(messy):
    fig = plot_report(messy, "layers")
    names = [r["name"] for r in messy.weights]
    _, alpha = _line(fig.axes[2], "curve")  # row 1, weight column: alpha
    assert math.isnan(alpha[names.index(ODD_NAME)])
    assert math.isnan(alpha[names.index(BAD_NAME)])
    assert np.isfinite(alpha[names.index("0.weight")])
    _, flat = _line(fig.axes[0], "curve")
    assert math.isnan(flat[names.index(BAD_NAME)]) and np.isfinite(flat[names.index(ODD_NAME)])
    assert "2 of 3 rows" in fig.axes[1].get_title(loc="left")  # activations: one error row


def test_layers_colours_markers_by_role():
    recs = [
        {"name": f"enc.layer.{i}.{role}.weight", "status": "ok", "flatness": 0.5 + i / 10}
        for i in range(3)
        for role in ("attn.q", "mlp.fc")
    ]
    fig = plot_report(Report(weights=recs), "layers")
    assert set(_gids(fig.axes[0])) == {"curve", "role:attn.q", "role:mlp.fc"}
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][:2] == [
        "attn.q",
        "mlp.fc",
    ]


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("encoder.layer.3.attention.self.query.weight", "attention.self.query"),
        ("model.layers.0.mlp.down_proj.weight", "mlp.down_proj"),
        ("embeddings.word_embeddings.weight", "other"),
        ("blocks.2.conv.weight[0,1]", "conv"),
        ("blocks.2.attn.in_proj_weight[q]", "attn.in_proj_weight[q]"),
        ("0.weight", "other"),
    ],
)
def test_role(name, role):
    assert _role(name) == role


@pytest.mark.parametrize(
    ("name", "width", "short"),
    [
        ("0.weight", 30, "0"),
        ("encoder.layer.11.attention.self.query.weight", 26, "…11.attention.self.query"),
        ("encoder.layer.0.output.dense.weight", 26, "…layer.0.output.dense"),
        ("embeddings.position_embeddings.weight", 26, "…position_embeddings"),
        ("x" * 40, 10, "…xxxxxxxxx"),
    ],
)
def test_short_name(name, width, short):
    assert short_name(name, width) == short
    assert len(short_name(name, width)) <= width


# -- options and errors ----------------------------------------------------------------------
def test_names_select_rows(messy):
    assert len(plot_report(messy, "esd", names=r"^0\.").axes) == 1
    assert [ax.get_title() for ax in plot_report(messy, "esd", names=["2.weight"]).axes] == ["2"]
    _, y = _line(plot_report(messy, "layers", names="^2").axes[0], "curve")
    assert y.size == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "histogram"}, r"'kind' parameter of plot_report must be one of 'overview'"),
        ({"names": "nothing-like-this"}, r"'names' parameter of plot_report .* matches no"),
        ({"names": "("}, r"'names' pattern '\(' of plot_report is not a valid regular"),
        ({"names": 5}, r"'names' parameter of plot_report must be a regular expression"),
        ({"kind": "esd", "max_panels": 0}, r"'max_panels' parameter of plot_report must be"),
    ],
)
def test_plot_errors(report, kwargs, match):
    with pytest.raises(InputError, match=match):
        plot_report(report, **kwargs)


def test_empty_report_gives_a_message_figure():
    for kind in ("esd", "layers"):
        fig = plot_report(Report(), kind)
        assert "No " in fig.axes[0].texts[0].get_text()


def test_missing_matplotlib_is_a_clear_error(report, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(InputError, match=r"matplotlib.*pip install 'infospec\[io\]'"):
        report.plot("esd")
    page = render_html(report)
    assert "data:image/png" not in page and "pip install &#x27;infospec[io]&#x27;" not in page
    assert "pip install 'infospec[io]'" in page and "0.weight" in page


def test_no_global_figures_and_png_bytes(report):
    from matplotlib import _pylab_helpers

    before = _pylab_helpers.Gcf.get_num_fig_managers()
    fig = report.plot("esd")
    png = figure_to_png_bytes(fig, dpi=40)
    assert png.startswith(PNG_MAGIC)
    assert _pylab_helpers.Gcf.get_num_fig_managers() == before == 0
    with pytest.raises(InputError, match="'dpi' parameter of figure_to_png_bytes"):
        figure_to_png_bytes(fig, dpi=-1)


def test_figures_from_threads(report):
    with ThreadPoolExecutor(2) as pool:
        pngs = list(
            pool.map(lambda k: figure_to_png_bytes(plot_report(report, k), dpi=30), ["esd"] * 2)
        )
    assert all(p.startswith(PNG_MAGIC) for p in pngs)


# -- the HTML page ---------------------------------------------------------------------------
class _Balance(HTMLParser):
    """Counts open/close tags of the elements that must nest (tables, sections)."""

    VOID = frozenset({"meta", "img", "br", "wbr", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_page_is_well_formed(page):
    parser = _Balance()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert page.startswith("<!DOCTYPE html>")


def test_page_is_self_contained(page):
    low = page.lower()
    for bad in ('src="http', "<link", "<script", "url(", "@import", 'href="http'):
        assert bad not in low
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == 2  # the overview and the ESD grid
    assert all(base64.b64decode(u).startswith(PNG_MAGIC) for u in uris)


def test_page_escapes_every_name(page, messy):
    assert html.escape("Title <with> & tags") in page and "<with>" not in page
    for rec in messy.weights + messy.activations:
        assert html.escape(rec["name"], quote=True) in page
    assert "<b>" not in page and "<here>" not in page and "act<&>" not in page
    parser = _Balance()
    parser.feed(page)
    text = "".join(parser.text)
    assert ODD_NAME in text and BAD_NAME in text  # round-trips through an HTML parser


def test_page_documents_every_column(page):
    for doc in [*WEIGHT_COLUMNS.values(), *ACTIVATION_COLUMNS.values()]:
        assert html.escape(doc, quote=True) in page
    assert "How to read this" in page and "99 % of the energy" in page


def test_page_tables_values_and_missing_cells(page, messy):
    rec = messy.weights[0]
    for col in ("flatness", "alpha", "effective_rank", "bits_per_param", "sigma_max"):
        assert f">{rec[col]:.4g}</td>" in page
    assert f">{rec['rows']}</td>" in page
    warning = html.escape(messy.weights[1]["warning"], quote=True)
    assert f'<td class="na" title="{warning}">—</td>' in page  # NaN alpha of the odd row
    assert f">{warning}</td>" in page  # and the warning column
    assert '<tr class="error">' in page
    assert "tensor contains 3 NaN and 0 infinite value(s); not analysed" in page
    for skipped in messy.skipped:
        assert html.escape(skipped["reason"]) in page
    assert "2 × 1-D tensor (bias or norm scale)" in page
    assert "Activations (3 layers)" in page


def test_page_meta(page, messy):
    for key in ("source", "device", "rel_distortion", "torch", "python"):
        assert f"<dt>{key}</dt>" in page
    assert html.escape(messy.meta["source"]) in page
    total = f"{messy.meta['seconds']:.3g} s"
    assert (
        f'<dt title="report.meta[&#x27;seconds&#x27;]">total of the analysis (wall)</dt>'
        f"<dd>{total}</dd>"
    ) in page


def _card(page: str, title: str) -> str:
    (card,) = re.findall(rf"<section[^>]*><h3>{title}</h3>.*?</section>", page)
    return card


def test_timing_card_labels_every_stage_in_order():
    """Each timed stage gets a label a reader understands; new *_seconds keys still show."""
    meta = {
        "source": "m",
        "seconds": 290.4,
        "weight_seconds": 4.24,
        "spectrum_seconds": 6.51,
        "fit_seconds": 1.25,
        "activation_seconds": 285.9,
        "forward_seconds": 120.0,
        "accumulate_seconds": 160.5,
        "model_load_seconds": 3.1,
        "tokenize_seconds": 0.75,
        "batches": 8,
        "workers": 2,
    }
    page = render_html(Report(meta=meta))
    card = _card(page, "timings")
    labels = re.findall(r"<dt[^>]*>([^<]*)</dt><dd>([^<]*)</dd>", card)
    assert labels == [
        ("loading the model, before the analysis (wall)", "3.1 s"),
        ("weights: opening the source, spectra and fits (wall)", "4.24 s"),
        ("spectra, summed over tensors and threads", "6.51 s"),
        ("power-law and MP fits, summed over tensors and threads", "1.25 s"),
        ("activations: forward passes, covariances, spectra (wall)", "286 s"),
        ("forward passes", "120 s"),
        ("covariance updates", "160 s"),
        ("total of the analysis (wall)", "290 s"),
        ("batches of data fed through the model", "8"),
        ("worker threads for the weights", "2"),
        ("tokenize_seconds", "0.75 s"),
    ]
    assert "summed over tensors" in card and "not included" in card
    assert '<dt class="sub" title="report.meta[&#x27;forward_seconds&#x27;]">' in card
    assert "seconds" not in "".join(re.findall(r"<h3>other</h3>.*?</section>", page))
    # a report timed only in part shows only those stages
    card = _card(render_html(Report(meta={"seconds": 2.0, "weight_seconds": 2.0})), "timings")
    assert card.count("<dt") == 2 and "activations" not in card
    # the keys analyze writes for the activation pass
    meta = {
        "activation_seconds": 8.0,
        "activation_forward_seconds": 3.0,
        "activation_accumulate_seconds": 4.5,
    }
    card = _card(render_html(Report(meta=meta)), "timings")
    assert re.findall(r"<dt[^>]*>([^<]*)</dt><dd>([^<]*)</dd>", card) == [
        ("activations: forward passes, covariances, spectra (wall)", "8 s"),
        ("forward passes, without the covariance updates", "3 s"),
        ("covariance updates (in the forward hooks)", "4.5 s"),
        ("the rest: set-up, then the covariances&#x27; spectra and measures", "0.5 s"),
    ]


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<h2 id="{anchor}">')
    return page[start : page.index("<h2", start + 4)]


def _header(table_html: str) -> list[str]:
    head = table_html[table_html.index("<thead>") : table_html.index("</thead>")]
    return re.findall(r"<th[^>]*>([^<]*)</th>", head.replace("<wbr>", ""))


@pytest.mark.parametrize(
    ("anchor", "headline", "records", "measures"),
    [
        ("weights", html_mod.WEIGHT_HEADLINE, "weights", WEIGHT_COLUMNS),
        ("activations", html_mod.ACTIVATION_HEADLINE, "activations", ACTIVATION_COLUMNS),
    ],
)
def test_headline_columns_come_first_and_the_rest_behind_a_toggle(
    messy, page, anchor, headline, records, measures
):
    section = _section(page, anchor)
    toggle = section.index('<details class="all">')
    first, full = section[:toggle], section[toggle:]
    shown = _header(first)
    assert shown == [c for c in headline if c != "tensor"]  # every tensor is its name here
    assert shown.index("alpha" if anchor == "weights" else "flatness") < 5
    every = _header(full)
    assert set(measures) <= set(every) and every[0] == "name" and every[-1] == "warning"
    assert f"All {len(every)} columns" in full
    assert f"({len(set(every) - set(shown))} more: " in full
    assert first.count("<tr") == full.count("<tr") == len(getattr(messy, records)) + 1
    if anchor == "weights":
        rec = messy.weights[0]
        assert f">{rec['rows']} × {rec['cols']}</td>" in first  # shape = rows x cols
        assert f">{rec['alpha']:.4g}</td>" in first and f">{rec['mp_ks']:.4g}</td>" in full
        assert f">{rec['mp_ks']:.4g}</td>" not in first


def test_headline_keeps_tensor_when_rows_split_a_tensor():
    torch.manual_seed(0)
    rep = analyze(torch.nn.MultiheadAttention(32, 4), progress=False)
    section = _section(render_html(rep, max_esd_panels=1), "weights")
    first = section[: section.index('<details class="all">')]
    assert _header(first) == list(html_mod.WEIGHT_HEADLINE)
    assert ">in_proj_weight[q]</td>" in first and ">in_proj_weight</td>" in first


def test_page_without_activations_or_weights(report):
    r = copy.deepcopy(report)
    r.activations = []
    page = render_html(r, max_esd_panels=1)
    assert 'id="activations"' not in page and "ACTIVATION" not in page
    empty = render_html(Report(meta={"source": "nothing"}))
    assert "No weight matrix was analysed." in empty
    assert "None: every tensor of the source was analysed." in empty
    with pytest.raises(InputError, match="'max_esd_panels' parameter of render_html"):
        render_html(r, max_esd_panels=0)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.14159265, "3.142"),
        (0.000123456, "0.0001235"),
        (1234567.0, "1.235e+06"),
        (np.float32(2.5), "2.5"),
        (np.int64(7), "7"),
        (True, "True"),
        (float("nan"), "—"),
        (None, "—"),
        (float("-inf"), "−∞"),
        (float("inf"), "∞"),
        ((48, 64), "48 × 64"),
        ("a<b", "a<b"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_to_html_writes_the_page_atomically(report, tmp_path, monkeypatch):
    calls = []

    def fake_render(rep, **kwargs):  # the page itself is tested above; this is the file
        calls.append((rep, kwargs))
        return "<!DOCTYPE html>page"

    monkeypatch.setattr(html_mod, "render_html", fake_render)
    target = tmp_path / "report.html"
    report.to_html(target, max_esd_panels=1)
    assert target.read_text(encoding="utf-8") == "<!DOCTYPE html>page"
    assert calls == [(report, {"max_esd_panels": 1})]

    def boom(*args, **kwargs):
        raise RuntimeError("render failed")

    failed = tmp_path / "failed.html"
    monkeypatch.setattr(html_mod, "render_html", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        report.to_html(failed)
    with pytest.raises(RuntimeError, match="render failed"):
        report.to_html(target)
    assert not failed.exists()
    # a failure while writing (inside the temporary file) leaves the old page untouched too
    monkeypatch.setattr(html_mod, "render_html", lambda *a, **k: 12345)  # write() rejects it
    with pytest.raises(TypeError):
        report.to_html(target)
    assert target.read_text(encoding="utf-8") == "<!DOCTYPE html>page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temp files
