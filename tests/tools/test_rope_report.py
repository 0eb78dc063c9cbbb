import json

import numpy as np
import pytest

from infospec._errors import InputError
from infospec.cli import main
from infospec.tools.rope import RopeVerdict, long_term_decay, rope_feasibility
from infospec.tools.rope_report import (
    plot_long_term_decay,
    render_rope_html,
    write_rope_html,
    write_rope_plot,
)

CFG = {"rope_theta": 10000.0, "head_dim": 128, "max_position_embeddings": 4096}


def test_plot_draws_b_of_m_with_the_context_marked():
    v = rope_feasibility(CFG, context=1000)
    fig = plot_long_term_decay(v, extent=1.5)
    ax = fig.axes[0]
    (line, marker) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) != 2][:2]
    np.testing.assert_allclose(line.get_ydata(), long_term_decay(v.theta, 1500, return_curve=True))
    bmin, where = long_term_decay(v.theta, 1000)
    assert marker.get_xdata()[0] == where and marker.get_ydata()[0] == pytest.approx(bmin)
    vlines = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [1000, 1000]]
    assert len(vlines) == 1  # the context L


def test_plot_envelope_keeps_every_dip():
    # past 2000 positions the curve is a per-column min/max band: its lowest point is the
    # curve's minimum, never lost between samples
    v = rope_feasibility(CFG, context=100_000)
    fig = plot_long_term_decay(v, extent=1.0)
    band = fig.axes[0].collections[0]
    lowest = min(p.vertices[:, 1].min() for p in band.get_paths())
    assert lowest == pytest.approx(long_term_decay(v.theta, 100_000)[0], abs=1e-12)


def test_plot_errors():
    with pytest.raises(InputError, match="extent"):
        plot_long_term_decay(rope_feasibility(CFG), extent=0.5)
    with pytest.raises(InputError, match="rope_feasibility"):
        plot_long_term_decay(RopeVerdict([]))


def test_write_plot_is_a_png_and_atomic(tmp_path):
    out = tmp_path / "b.png"
    write_rope_plot(rope_feasibility(CFG), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["b.png"]
    with pytest.raises(InputError, match="does not exist"):
        write_rope_plot(rope_feasibility(CFG), tmp_path / "no" / "b.png")


def test_html_page_has_the_verdict_and_figure(tmp_path):
    v = rope_feasibility(dict(CFG, num_hidden_layers=32), context=4096)
    page = render_rope_html(v, title="<script>x</script>", meta={"config": "a&b"})
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "a&amp;b" in page and 'src="data:image/png;base64,' in page
    assert page.count('<tr class="error">') == sum(not r["passed"] for r in v.rows) == 1
    assert "−0.1307" in page or "-0.1307" in page  # min B(m) at base 1e4, L = 4096
    out = tmp_path / "v.html"
    write_rope_html(v, out)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_cli_table(capsys):
    assert main(["rope", "--table"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("model") and "Llama 3.1 8B" in "\n".join(out)
    assert main(["rope", "--table", "--json", "--context", "2048"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["context"] for r in rows} == {2048} and all("hub_url" in r for r in rows)
    assert rows[0]["bounds"][0]["bound"].startswith("aliasing")


def test_cli_plot_html_and_errors(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CFG))
    png, page = tmp_path / "b.png", tmp_path / "v.html"
    assert main(["rope", str(cfg), "--plot", str(png), "--html", str(page)]) == 1
    assert png.read_bytes()[:4] == b"\x89PNG" and "Bounds" in page.read_text()
    capsys.readouterr()
    assert main(["rope", "--table", str(cfg)]) == 2
    assert "--table" in capsys.readouterr().err
    assert main(["rope"]) == 2
    assert "needs a CONFIG" in capsys.readouterr().err
    assert main(["rope", str(cfg), "--plot", str(tmp_path / "no" / "b.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
