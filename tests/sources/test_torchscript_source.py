"""TorchScript archives and scripted modules: tensors only, kinds as in a live module."""

import pytest
import torch
from torch import nn

from infospec import SourceError, analyze
from infospec.sources import ModuleSource, TorchScriptSource, open_source


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(40, 16)
        self.conv = nn.Conv2d(16, 24, 3)
        self.bn = nn.BatchNorm2d(24)
        self.deconv = nn.ConvTranspose1d(24, 12, 2)
        self.fc = nn.Linear(24, 32)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def _kinds(source):
    return {e.name: e.kind for e in source.entries() if e.name.endswith("weight")}


def test_scripted_module_has_the_live_module_kinds():
    net = ConvNet()
    live = _kinds(ModuleSource(net))
    assert live["conv.weight"] == "conv2d" and live["deconv.weight"] == "conv_transpose1d"
    assert _kinds(open_source(torch.jit.script(net))) == live
    assert _kinds(open_source(torch.jit.trace(net, torch.randn(1, 16, 8, 8)))) == live


def test_analyze_of_a_scripted_conv_net_reads_its_kernels():
    net = ConvNet()
    live = analyze(net, progress=False, conv="flatten")
    scripted = analyze(torch.jit.script(net), progress=False, conv="flatten")
    assert not any("no known matrix layout" in r["reason"] for r in scripted.skipped)
    assert [r["name"] for r in scripted.weights] == [r["name"] for r in live.weights]
    assert "conv.weight" in {r["tensor"] for r in scripted.weights}
    for a, b in zip(live.weights, scripted.weights, strict=True):
        assert a["stable_rank"] == pytest.approx(b["stable_rank"], rel=1e-12)


def test_torchscript_archive_lists_parameters_and_buffers(tmp_path):
    net = ConvNet()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(net), path)
    src = open_source(path)
    assert isinstance(src, TorchScriptSource)
    assert src.description == (
        f"TorchScript archive '{path}' (module ConvNet, 9 parameter and 3 buffer tensors)"
    )
    entries = {e.name: e for e in src.entries()}
    assert _kinds(src) == _kinds(ModuleSource(net))
    assert entries["bn.running_mean"].skip_reason == "1-D tensor (bias or norm scale)"
    assert entries["bn.num_batches_tracked"].skip_reason.startswith("non-floating dtype int64")
    for name, t in net.state_dict().items():
        assert torch.equal(entries[name].load(), t), name
    assert all(e.origin == str(path) for e in entries.values())
    report = analyze(path, progress=False)
    assert {r["tensor"] for r in report.weights} == {n for n, e in entries.items() if not e.skipped}


def test_the_module_is_never_run(tmp_path, monkeypatch):
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(ConvNet()), path)
    module = torch.jit.load(str(path))

    def forbidden(*args, **kwargs):
        raise AssertionError("the module was run")

    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: module)
    monkeypatch.setattr(type(module), "__call__", forbidden)
    monkeypatch.setattr(type(module), "forward", forbidden, raising=False)
    for e in open_source(path).entries():
        e.load()


def test_unknown_script_classes_fall_back_to_name_and_shape(tmp_path):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(12, 6, 3, 3))
            self.embed_weight = nn.Parameter(torch.randn(30, 12))

        def forward(self, x):
            return x

    scripted = torch.jit.script(nn.Sequential(Custom()))
    kinds = {e.name: e.kind for e in open_source(scripted).entries()}
    assert kinds == {"0.weight": "conv2d", "0.embed_weight": "matrix"}


def test_frozen_and_broken_archives(tmp_path):
    net = ConvNet().eval()
    frozen = torch.jit.freeze(torch.jit.script(net))
    torch.jit.save(frozen, tmp_path / "frozen.pt")
    with pytest.raises(SourceError, match=r"holds no parameters or buffers .*frozen"):
        open_source(tmp_path / "frozen.pt")
    torch.jit.save(torch.jit.script(net), tmp_path / "ok.pt")
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match=r"'.*cut\.pt'"):
        open_source(tmp_path / "cut.pt")
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(SourceError, match="is not a TorchScript archive"):
        TorchScriptSource(tmp_path / "sd.pt")
