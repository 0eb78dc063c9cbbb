"""Formats told by content: each refused format names a command, files are never misread."""

import os
import shlex
import struct
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from infospec import SourceError
from infospec.cli import main
from infospec.sources import (
    PickleSource,
    SafetensorsSource,
    TorchScriptSource,
    open_source,
    read_safetensors_header,
)
from infospec.sources.formats import SNIFF_BYTES, sniff


@pytest.fixture
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 16))


def test_content_wins_over_the_name(tmp_path, net):
    sd = net.state_dict()
    save_file(sd, tmp_path / "pytorch_model.bin")
    assert isinstance(open_source(tmp_path / "pytorch_model.bin"), SafetensorsSource)
    torch.save(sd, tmp_path / "model.safetensors")
    assert isinstance(open_source(tmp_path / "model.safetensors"), PickleSource)
    torch.jit.save(torch.jit.script(net), tmp_path / "weights.safetensors.bin")
    assert isinstance(open_source(tmp_path / "weights.safetensors.bin"), TorchScriptSource)
    # torch.save names the archive's root folder after the file: "code" is not TorchScript
    torch.save(sd, tmp_path / "code.pt")
    assert isinstance(open_source(tmp_path / "code.pt"), PickleSource)
    torch.jit.save(torch.jit.script(net), tmp_path / "constants.pt")
    assert isinstance(open_source(tmp_path / "constants.pt"), TorchScriptSource)
    torch.save(sd, tmp_path / "no_suffix", _use_new_zipfile_serialization=False)
    assert sniff(tmp_path / "no_suffix") == "torch-legacy"
    assert [e.name for e in open_source(tmp_path / "no_suffix").entries()] == list(sd)


def test_an_index_is_read_by_its_shards_content(tmp_path, net):
    import json

    sd = net.state_dict()
    torch.save(sd, tmp_path / "shard.bin")
    index = {"weight_map": dict.fromkeys(sd, "shard.bin")}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert isinstance(open_source(tmp_path / "model.safetensors.index.json"), PickleSource)
    save_file(sd, tmp_path / "shard.safetensors")
    index = {"weight_map": dict.fromkeys(sd, "shard.safetensors")}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    src = open_source(tmp_path / "pytorch_model.bin.index.json")
    assert isinstance(src, SafetensorsSource) and [e.name for e in src.entries()] == list(sd)


def test_sniffing_reads_only_the_first_bytes(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(100, 100)}, path)
    sizes = []
    real_open = open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            sizes.append(n)
            return self.fh.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    import infospec.sources.formats as formats

    monkeypatch.setattr(formats, "open", lambda p, m: Spy(real_open(p, m)), raising=False)
    assert sniff(path) == "safetensors"
    assert sizes == [SNIFF_BYTES]


def _refused(path, *matches):
    with pytest.raises(SourceError) as info:
        open_source(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for m in matches:
        assert m in message, message
    if "python -c " in message:  # the command is valid shell and its code valid Python
        words = shlex.split(message.split("python -c ", 1)[1])
        compile(words[0], "<command>", "exec")
    return message


def test_each_refusal_names_the_format_and_a_command(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + struct.pack("<I", 3) + bytes(24))
    _refused(tmp_path / "m.gguf", "GGUF file", "holds no tensors")  # read by GGUFSource
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(24))
    _refused(tmp_path / "m.h5", "HDF5 file", "python -c", "h5py", "then run: infospec analyze")
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07\x12\x04test" + bytes(8))
    _refused(tmp_path / "m.onnx", "ONNX model", "python -c", "numpy_helper")
    import pickle

    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    _refused(tmp_path / "plain.pkl", "plain Python pickle", "never unpickles code", "python -c")
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    _refused(tmp_path / "m.keras", "Keras archive", "unzip", "model.weights.h5")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hi")
    _refused(tmp_path / "other.zip", "zip archive that is neither")


def test_numpy_refusals_give_commands_that_work(tmp_path):
    w = np.random.default_rng(0).standard_normal((12, 14)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    np.savez(tmp_path / "a.npz", layer=w)
    for name, key in (("w.npy", "weight"), ("a.npz", "layer")):
        message = _refused(tmp_path / name, "NumPy", "python -c")
        command = message.split("convert it with: ")[1].split(" ; then run")[0]
        subprocess.run(["bash", "-c", command], check=True, timeout=120)
        (e,) = open_source(tmp_path / f"{name}.safetensors").entries()
        assert e.name == key and np.array_equal(e.load().numpy(), w)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_fifo_is_refused_at_once(tmp_path):
    for name in ("x.safetensors", "x.bin", "x.pt"):
        os.mkfifo(tmp_path / name)
        with pytest.raises(SourceError, match="is a FIFO \\(named pipe\\), not a regular file"):
            open_source(tmp_path / name)
    with pytest.raises(SourceError, match="not a regular file"):
        open_source("/dev/null")
    with pytest.raises(SourceError, match="is a FIFO"):
        read_safetensors_header(tmp_path / "x.safetensors")


def test_cli_describe_and_analyze_a_checkpoint(tmp_path, net, capsys):
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": sd, "epoch": 1}, path)
    assert main(["describe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "unwrapped checkpoint['state_dict'], prefix 'module.' stripped" in out
    assert "0.weight" in out and "32x16" in out
    assert main(["analyze", str(path), "--no-activations", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 matrices analysed" in out and "1.weight" in out
    torch.jit.save(torch.jit.script(net), tmp_path / "net.pt")
    assert main(["describe", str(tmp_path / "net.pt")]) == 0
    assert "TorchScript archive" in capsys.readouterr().out
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(28))
    assert main(["describe", str(tmp_path / "m.gguf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infospec: error: The GGUF file") and "GGUF version 0" in err
