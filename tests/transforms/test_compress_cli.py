"""``infospec compress``: a model folder in, a compressed-factors folder out; errors exit 2."""

from __future__ import annotations

import json
import re

import pytest
import torch

from infospec.cli import main
from infospec.transforms import load_compressed

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

WORDS = ["[PAD]", "[UNK]", *"the cat sat on a mat dog ran far away from home".split()]


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(BertConfig(vocab_size=len(WORDS), max_position_embeddings=64, **cfg)).save_pretrained(
        folder
    )
    g = torch.Generator().manual_seed(0)
    lines = [
        " ".join(WORDS[2 + int(i)] for i in torch.randint(0, 12, (20,), generator=g))
        for _ in range(40)
    ]
    (folder / "texts.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_compress_writes_a_folder_that_reloads(bert_folder, tmp_path, capsys):
    from transformers import AutoModel

    out = tmp_path / "c"
    argv = ["compress", str(bert_folder), "--data", str(bert_folder / "texts.txt")]
    assert main([*argv, "--ratio", "0.5", "--out", str(out), "--layers", r"encoder\."]) == 0
    text = capsys.readouterr().out
    assert "parameters" in text and "written to" in text
    plan = json.loads((out / "plan.json").read_text())
    rows = [r for r in plan["layers"] if r["status"] == "factorised"]
    assert rows and all("measured_relative" in r for r in rows)
    assert plan["settings"]["params_after"] <= 0.5 * plan["settings"]["params_before"]
    model = load_compressed(AutoModel.from_pretrained(str(bert_folder)), out)
    assert isinstance(model.get_submodule(rows[0]["name"]), torch.nn.Sequential)


def test_compress_bits_writes_packed_codes_that_reload(bert_folder, tmp_path, capsys):
    from transformers import AutoModel

    out = tmp_path / "q"
    argv = ["compress", str(bert_folder), "--data", str(bert_folder / "texts.txt")]
    assert main([*argv, "--bits", "3.5", "--group-size", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "code bits per weight" in text and "written to" in text
    plan = json.loads((out / "plan.json").read_text())
    assert plan["format"] == "infospec-quant-1"
    rows = [r for r in plan["layers"] if r["status"] == "quantized"]
    assert rows and all("measured_relative" in r and 2 <= r["bits"] <= 8 for r in rows)
    mean = sum(r["bits"] * r["params_before"] for r in rows) / sum(r["params_before"] for r in rows)
    assert mean <= 3.5 + 1e-9 and plan["settings"]["group_size"] == 8
    original = AutoModel.from_pretrained(str(bert_folder))
    model = load_compressed(AutoModel.from_pretrained(str(bert_folder)), out)
    name = rows[0]["name"]
    w = original.get_submodule(name).weight.detach()
    wq = model.get_submodule(name).weight.detach()
    assert not torch.equal(w, wq)
    step = (w.max() - w.min()) / (2 ** rows[0]["bits"] - 1)
    assert float((w - wq).abs().max()) <= float(step) / 2 + 1e-6


def test_compress_weighting_sensitivity_records_the_gains(bert_folder, tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["compress", str(bert_folder), "--data", str(bert_folder / "texts.txt")]
    assert main([*argv, "--ratio", "0.5", "--weighting", "sensitivity", "--out", str(out)]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["settings"]["weighting"] == "sensitivity"
    gains = [r["sensitivity"] for r in plan["layers"] if r["status"] != "skipped"]
    assert gains and all(g > 0 for g in gains)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--bits", "1"], r"--bits 1\.0 is outside the bit widths 2\.\.8"),
        (["--bits", "3.5", "--allocation", "uniform"], r"--allocation uniform gives every"),
        (["--bits", "4", "--mp-edge"], r"--mp-edge caps ranks"),
        (["--bits", "4", "--group-size", "0"], r"--group-size must be an int >= 1"),
        (["--ratio", "0"], r"ratio must be a number in \(0, 1\]"),
        (["--ratio", "1.5"], r"ratio must be a number in \(0, 1\]"),
        (["--ratio", "0.5", "--layers", "no_such_layer"], "no_such_layer"),
        (["--ratio", "0.5", "--ridge", "0", "--max-texts", "1", "--holdout", "0"], "singular"),
    ],
)
def test_errors_exit_2_with_one_line_and_no_folder(bert_folder, tmp_path, extra, match, capsys):
    out = tmp_path / "c"
    argv = ["compress", str(bert_folder), "--data", str(bert_folder / "texts.txt")]
    assert main([*argv, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("infospec: error:") and "\n" not in err
    assert re.search(match, err)
    assert list(tmp_path.iterdir()) == []
