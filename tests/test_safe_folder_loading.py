"""The activation route (``--data``) loads a model folder under infospec's rules (issues 9, 15).

No folder code runs (``auto_map`` refused, ``trust_remote_code=False``), safetensors are
preferred, a folder with only ``pytorch_model.bin`` is read weights-only by infospec's own
route, and ``--data`` costs bounded memory however long its lines or file are.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from infospec import InputError, SourceError
from infospec.cli import main
from infospec.cli_options import read_texts
from infospec.example import MAX_TEXT_CHARS, example_batches, load_model_folder

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")


def _tiny_bert(folder, *, weights: str = "safetensors", config_extra: dict | None = None):
    """A one-layer BERT folder made here: config.json, weights, MiniLM's tokenizer.json."""
    from infospec.sources.example import minilm_path

    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    folder.mkdir()
    config.save_pretrained(folder)
    if config_extra:
        data = json.loads((folder / "config.json").read_text())
        data.update(config_extra)
        (folder / "config.json").write_text(json.dumps(data))
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors"
        )
    else:
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    shutil.copy(minilm_path() / "tokenizer.json", folder / "tokenizer.json")
    return model


def test_a_folder_with_auto_map_is_refused_before_transformers(tmp_path, monkeypatch):
    folder = tmp_path / "custom"
    _tiny_bert(folder, config_extra={"auto_map": {"AutoModel": "modeling_evil.EvilModel"}})
    (folder / "modeling_evil.py").write_text("raise SystemExit('folder code ran')\n")

    def never(*args, **kwargs):
        raise AssertionError("transformers was asked to load a folder with custom code")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", never)
    with pytest.raises(
        SourceError, match=r"ships its own model code \(config.json has 'auto_map'\)"
    ):
        load_model_folder(folder)


def test_cli_refuses_auto_map_in_one_line_naming_the_weights_only_report(tmp_path, capsys):
    folder = tmp_path / "custom"
    _tiny_bert(folder, config_extra={"auto_map": {"AutoModel": "m.M"}})
    data = tmp_path / "t.txt"
    data.write_text("a text\n")
    assert main(["analyze", str(folder), "--data", str(data), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("infospec: error: ") and "auto_map" in line
    assert "weights-only report (without --data)" in line


def test_safetensors_folder_loads_without_remote_code(tmp_path, monkeypatch):
    folder = tmp_path / "safe"
    ref = _tiny_bert(folder)
    seen = {}
    real = transformers.AutoModel.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    model, _ = load_model_folder(folder)
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True
    assert torch.equal(
        model.embeddings.word_embeddings.weight, ref.embeddings.word_embeddings.weight
    )


def test_a_pytorch_model_bin_folder_is_read_weights_only(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    ref = _tiny_bert(folder, weights="bin")
    calls = []
    real_load = torch.load

    def watched(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", watched)
    model, tokenizer = load_model_folder(folder)
    assert calls and all(c is True for c in calls)
    for name, tensor in ref.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    batch = example_batches(tokenizer, ["a short text"], batch_size=1)[0]
    with torch.no_grad():
        assert torch.allclose(model(**batch).last_hidden_state, ref(**batch).last_hidden_state)


def test_a_bin_that_pickles_code_is_refused_like_the_weights_only_route(tmp_path, capsys):
    folder = tmp_path / "evil"
    _tiny_bert(folder, weights="bin")
    torch.save({"model": torch.nn.Linear(4, 4)}, folder / "pytorch_model.bin")  # a module
    with pytest.raises(SourceError, match="cannot be read with weights_only=True"):
        load_model_folder(folder)
    data = tmp_path / "t.txt"
    data.write_text("a text\n")
    assert main(["analyze", str(folder), "--data", str(data), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "infospec never unpickles code" in line


def test_a_folder_without_config_is_one_error(tmp_path):
    folder = tmp_path / "noconf"
    _tiny_bert(folder)
    (folder / "config.json").unlink()
    with pytest.raises(SourceError, match=r"has no config\.json"):
        load_model_folder(folder)


def test_load_model_folder_refuses_the_meta_device(tmp_path):
    with pytest.raises(InputError, match="'meta', a device whose tensors hold no values"):
        load_model_folder(tmp_path, device="meta")


# -- bounded memory on --data ---------------------------------------------------------------
def test_a_huge_line_is_cut_before_tokenising(tmp_path):
    data = tmp_path / "huge.txt"
    data.write_text("word " * 400_000 + "\nsecond text\n")  # a 2 MB first line
    texts = read_texts(str(data), 8)
    assert [len(t) <= MAX_TEXT_CHARS for t in texts] == [True, True]
    assert texts[1] == "second text"


def test_data_is_read_only_as_far_as_max_texts(tmp_path, monkeypatch):
    data = tmp_path / "big.txt"
    data.write_text("".join(f"text {i}\n" for i in range(10_000)))
    with data.open("ab") as fh:
        fh.write(b"\xff\xfe not utf-8 after the lines used\n")
    assert read_texts(str(data), 3) == ["text 0", "text 1", "text 2"]
    with pytest.raises(InputError, match="is not UTF-8 text"):
        read_texts(str(data), 20_000)


def test_example_batches_cuts_texts_at_the_tokenizers_bound():
    from infospec.example import CHARS_PER_TOKEN, load_minilm

    _, tokenizer = load_minilm()
    long = "the quick brown fox " * 50_000  # 1 MB
    seen = []
    real = tokenizer.encode_batch

    class Spy:
        truncation = tokenizer.truncation

        def encode_batch(self, texts):
            seen.extend(len(t) for t in texts)
            return real(texts)

    (batch,) = example_batches(Spy(), [long, "short"], batch_size=2)
    assert max(seen) == CHARS_PER_TOKEN * 128
    assert batch["input_ids"].shape == (2, 128)
    full = tokenizer.encode(long)
    assert batch["input_ids"][0].tolist() == full.ids


def test_a_vision_model_folder_is_refused_with_data_before_running(tmp_path, capsys):
    # --data feeds token ids: a model whose main input is pixel values (or audio) is told
    # so in one line, not run into an AttributeError deep in its forward
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=16, patch_size=8,
    )  # fmt: skip
    folder = tmp_path / "vit"
    transformers.ViTModel(config).save_pretrained(folder)
    from infospec.sources.example import minilm_path

    shutil.copy(minilm_path() / "tokenizer.json", folder)  # a tokenizer beside it, as on the Hub
    with pytest.raises(SourceError, match=r"\(ViTModel\) takes 'pixel_values', not token ids"):
        load_model_folder(folder)
    data = tmp_path / "texts.txt"
    data.write_text("a text\n")
    capsys.readouterr()  # (save_pretrained's progress bar)
    assert main(["analyze", str(folder), "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without --data" in err[0]


def test_a_model_missing_an_input_fails_in_one_named_error():
    # a model given only some of its inputs fails on the missing one's None inside its
    # forward (CLIP without pixel values: an AttributeError): an InputError naming it
    from infospec.analysis.activation_pass import call_model

    class TwoInputs(torch.nn.Module):
        def forward(self, input_ids=None, pixel_values=None):
            return input_ids.float() * pixel_values.shape[0]

    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    with pytest.raises(InputError, match=r"\(TwoInputs\): AttributeError: .*holds input_ids"):
        call_model(TwoInputs(), batch, None, 0)


def test_data_reads_the_saved_class_so_weight_rows_keep_their_names(tmp_path):
    # a *ForCausalLM checkpoint run with --data is built from its own class (config's
    # 'architectures'), not AutoModel's base model: the same weight rows and names as the
    # weights-only report ('model.' prefixes, the untied lm_head)
    config = transformers.LlamaConfig(
        vocab_size=30522, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path / "llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    from infospec.sources.example import minilm_path

    shutil.copy(minilm_path() / "tokenizer.json", folder)
    model, tokenizer = load_model_folder(folder)
    assert type(model).__name__ == "LlamaForCausalLM"
    import infospec

    batches = example_batches(tokenizer, ["a short text", "another one"], batch_size=2)
    with_data = infospec.analyze(model, batches, min_dim=4, progress=False)
    weights_only = infospec.analyze(folder, min_dim=4, progress=False)
    names = [r["name"] for r in with_data.weights]
    assert names == [r["name"] for r in weights_only.weights]
    assert "lm_head.weight" in names and "model.embed_tokens.weight" in names
    assert with_data.activations  # and the text ran through it
