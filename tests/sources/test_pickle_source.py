"""torch.save checkpoints: new zip and legacy formats, nesting, shards, folders, refusals."""

import argparse
import json
import subprocess

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from infospec import SourceError, analyze
from infospec.sources import PickleSource, SafetensorsSource, open_source, pickle_source


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(40, 16)
        self.conv = nn.Conv1d(16, 24, 3)
        self.fc = nn.Linear(24, 32)
        self.head = nn.Linear(32, 12)


@pytest.fixture
def net():
    return Net()


def _check_equal(source, state_dict):
    entries = {e.name: e for e in source.entries()}
    assert list(entries) == list(state_dict)  # model order: the state dict's own
    for name, t in state_dict.items():
        assert torch.equal(entries[name].load(), t), name
    kinds = {n: e.kind for n, e in entries.items()}
    assert kinds["embed.weight"] == "embedding" and kinds["conv.weight"] == "conv1d"
    assert kinds["fc.weight"] == "matrix"


@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_plain_state_dict_in_both_formats(tmp_path, net, zip_format, suffix):
    path = tmp_path / f"w{suffix}"
    torch.save(net.state_dict(), path, _use_new_zipfile_serialization=zip_format)
    src = open_source(path)
    assert isinstance(src, PickleSource)
    _check_equal(src, net.state_dict())
    assert src.description.startswith(f"PyTorch checkpoint '{path}' (7 tensors")
    assert "unwrapped" not in src.description


def test_zip_checkpoint_is_memory_mapped_and_never_unpickles_code(tmp_path, net, monkeypatch):
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    open_source(path).entries()[0].load()
    assert calls and all(c["weights_only"] is True and c["mmap"] is True for c in calls)
    assert all(c["map_location"] == "cpu" for c in calls)


def test_lightning_checkpoint_and_ddp_prefix_are_unwrapped(tmp_path, net):
    sd = net.state_dict()
    ckpt = {
        "epoch": 1,
        "global_step": 10,
        "state_dict": {f"module.{k}": v for k, v in sd.items()},
        "optimizer_states": [{"lr": 0.1}],
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    src = open_source(path)
    _check_equal(src, sd)
    assert "unwrapped checkpoint['state_dict']" in src.description
    assert "prefix 'module.' stripped" in src.description
    assert "3 non-tensor entries ignored (epoch, global_step, optimizer_states)" in src.description


def test_nested_and_compiled_prefixes(tmp_path, net):
    sd = net.state_dict()
    # DeepSpeed-style {"module": ...} nested inside {"model": ...}, torch.compile prefix
    ckpt = {"model": {"module": {f"_orig_mod.{k}": v for k, v in sd.items()}}, "step": 3}
    torch.save(ckpt, tmp_path / "c.pt")
    src = open_source(tmp_path / "c.pt")
    _check_equal(src, sd)
    assert "unwrapped checkpoint['model']['module']" in src.description
    assert "prefix '_orig_mod.' stripped" in src.description
    # the priority: state_dict before ema
    ema = {k: v + 1 for k, v in sd.items()}
    torch.save({"ema": ema, "state_dict": sd}, tmp_path / "e.pt")
    _check_equal(open_source(tmp_path / "e.pt"), sd)
    # non-tensor entries beside the tensors are ignored and counted
    torch.save({**sd, "epoch": 4, "note": "x"}, tmp_path / "m.pt")
    src = open_source(tmp_path / "m.pt")
    assert [e.name for e in src.entries()] == list(sd)
    assert "2 non-tensor entries ignored (epoch, note)" in src.description


def test_checkpoints_without_weights_are_refused(tmp_path):
    torch.save({"epoch": 1, "config": {"lr": 0.1}}, tmp_path / "n.pt")
    with pytest.raises(
        SourceError,
        match=r"'.*n\.pt' holds no tensors at checkpoint .*keys found: 'epoch', 'config'",
    ):
        open_source(tmp_path / "n.pt")
    torch.save([torch.zeros(3)], tmp_path / "l.pt")
    with pytest.raises(SourceError, match="holds a list at checkpoint, not a mapping"):
        open_source(tmp_path / "l.pt")


def test_a_pickle_that_needs_weights_only_false_is_refused_with_the_command(tmp_path, net):
    path = tmp_path / "hp.ckpt"
    torch.save({"state_dict": net.state_dict(), "hparams": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(
        SourceError,
        match=r"'.*hp\.ckpt' cannot be read with weights_only=True: it pickles the global "
        r"argparse\.Namespace, and infospec never unpickles code\. If you trust the file, "
        r"convert it in a trusted environment with: python -c .*then run: infospec analyze",
    ) as info:
        open_source(path)
    # the command converts the file (here, where the file is trusted: this test wrote it)
    command = str(info.value).split("environment with: ")[1].split(" ; then run")[0]
    subprocess.run(["bash", "-c", command], check=True, timeout=300)
    converted = open_source(tmp_path / "hp.ckpt.safetensors")
    assert isinstance(converted, SafetensorsSource)
    assert {e.name for e in converted.entries()} == set(net.state_dict())


def test_a_whole_pickled_module_is_refused(tmp_path, net):
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(SourceError, match="weights_only=True: it pickles the global"):
        open_source(tmp_path / "whole.pt")


def test_the_conversion_command_writes_tied_weights_once(tmp_path):
    # the command of a refused whole-module pickle keeps a tie as one tensor (a copy of
    # each would be two identical rows where the module has one)
    torch.manual_seed(0)
    wte, lm_head = torch.nn.Embedding(40, 16), torch.nn.Linear(16, 40, bias=False)
    lm_head.weight = wte.weight  # GPT-2's tie (torch classes only: the pickle needs no test code)
    model = torch.nn.Sequential(wte, lm_head)
    torch.save(model, tmp_path / "tied.pt")
    with pytest.raises(SourceError, match="weights_only=True") as info:
        open_source(tmp_path / "tied.pt")
    command = str(info.value).split("environment with: ")[1].split(" ; then run")[0]
    subprocess.run(["bash", "-c", command], check=True, timeout=300)
    converted = open_source(tmp_path / "tied.pt.safetensors")
    assert [e.name for e in converted.entries()] == ["0.weight"]
    assert [e.name for e in open_source(model).entries() if not e.skipped] == ["0.weight"]


def test_tied_weights_are_listed_once_analysed(tmp_path):
    w = torch.randn(20, 16)
    torch.save({"embed.weight": w, "lm_head.weight": w}, tmp_path / "t.pt")
    entries = {e.name: e for e in open_source(tmp_path / "t.pt").entries()}
    assert entries["embed.weight"].skip_reason is None
    assert entries["lm_head.weight"].skip_reason == "same tensor as 'embed.weight' (tied weights)"


def _write_sharded(folder, sd, zip_format=True, n_shards=2):
    """Shards and an index as transformers' save_pretrained(safe_serialization=False) wrote."""
    names = list(sd)
    size = -(-len(names) // n_shards)
    weight_map = {}
    for i in range(n_shards):
        shard = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        keys = names[i * size : (i + 1) * size]
        part = {k: sd[k] for k in keys}
        torch.save(part, folder / shard, _use_new_zipfile_serialization=zip_format)
        weight_map.update(dict.fromkeys(keys, shard))
    # transformers writes the weight map sorted by name
    index = {"metadata": {"total_size": 0}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return folder / "pytorch_model.bin.index.json"


@pytest.mark.parametrize("zip_format", [True, False])
def test_sharded_bin_index_loads_one_shard_at_a_time(tmp_path, net, zip_format, monkeypatch):
    sd = net.state_dict()
    index = _write_sharded(tmp_path, sd, zip_format)
    src = open_source(index)
    assert isinstance(src, PickleSource) and src.index == index and len(src.files) == 2
    expected = f"sharded PyTorch checkpoint '{index}' (2 shard(s), 7 tensors"
    assert src.description.startswith(expected)
    loads = []
    real = pickle_source.load_checkpoint
    monkeypatch.setattr(pickle_source, "load_checkpoint", lambda p: loads.append(p.name) or real(p))
    entries = {e.name: e for e in src.entries()}
    for name, t in sd.items():
        assert torch.equal(entries[name].load(), t)
    # listing left shard 2 mapped; model order reads shard 1, then shard 2: one at a time
    assert loads == ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    # the folder reads the same
    folder = open_source(tmp_path)
    assert isinstance(folder, PickleSource) and [e.name for e in folder.entries()] == list(entries)
    assert folder.description.startswith(f"model folder '{tmp_path}'")


def test_sharded_index_errors(tmp_path, net):
    index = _write_sharded(tmp_path, net.state_dict())
    (tmp_path / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(SourceError, match=r"shard 'pytorch_model-00002-of-00002\.bin' listed in"):
        open_source(index)
    torch.save({"other.weight": torch.ones(3)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    with pytest.raises(SourceError, match="whose header has no such tensor"):
        open_source(index)


def test_sharded_bert_folder_in_model_order(tmp_path, tiny_bert):
    """A tiny BertModel's state dict in 5 hand-written .bin shards with its config.json.

    transformers 5 writes safetensors only, so the shards and index are written as
    transformers 4's save_pretrained(safe_serialization=False, max_shard_size=...) did.
    """
    model, config = tiny_bert()
    config.save_pretrained(tmp_path)
    sd = model.state_dict()
    _write_sharded(tmp_path, sd, n_shards=5)
    src = open_source(tmp_path)
    assert isinstance(src, PickleSource) and len(src.files) == 5
    assert "model_type" not in src.description and src.config["model_type"] == "bert"
    entries = {e.name: e for e in src.entries()}
    for name, e in entries.items():
        assert torch.equal(e.load(), sd[name]), name
    params = [n for n, p in model.named_parameters() if p.dim() == 2]
    assert [n for n in entries if n in set(params)] == params
    report = analyze(tmp_path, progress=False)
    assert {r["tensor"] for r in report.weights} == {n for n, e in entries.items() if not e.skipped}


def test_folder_prefers_safetensors_and_reads_pickles_alone(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "pytorch_model.bin")
    assert isinstance(open_source(tmp_path), PickleSource)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert isinstance(open_source(tmp_path / "config.json"), PickleSource)
    save_file({"fc.weight": torch.ones(12, 12)}, tmp_path / "model.safetensors")
    assert isinstance(open_source(tmp_path), SafetensorsSource)
    with pytest.raises(SourceError, match="several PyTorch checkpoints"):
        other = tmp_path / "o"
        other.mkdir()
        torch.save({}, other / "a.pt")
        torch.save({}, other / "b.pt")
        open_source(other)


def test_trainer_checkpoint_folder_reads_the_model_file(tmp_path, net):
    """A Trainer's checkpoint-N folder: the optimizer and arguments are not the model."""
    torch.save(net.state_dict(), tmp_path / "model.pt")
    torch.save({"state": {}, "param_groups": []}, tmp_path / "optimizer.pt")
    torch.save({"last_epoch": 3}, tmp_path / "scheduler.pt")
    (tmp_path / "training_args.bin").write_bytes(b"\x80\x04N.")
    (tmp_path / "rng_state_0.pth").write_bytes(b"\x80\x04N.")
    src = open_source(tmp_path)
    assert src.files == [tmp_path / "model.pt"]


def test_gpt2_folder_of_pickles_marks_conv1d(tmp_path):
    torch.save({"h.0.attn.c_attn.weight": torch.randn(16, 48)}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (e,) = open_source(tmp_path).entries()
    assert e.kind == "conv1d_transposed" and e.matrix_shape == (48, 16)


def test_truncated_checkpoint_is_a_source_error(tmp_path, net):
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match=r"'.*w\.pt'"):
        open_source(path)
