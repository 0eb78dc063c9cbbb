"""Parametrized layers (torch.nn.utils.parametrize, legacy weight_norm/spectral_norm hooks).

A parametrized tensor is analysed as the tensor the layer computes with, listed under the
module's attribute (``0.weight``); its raw inputs are listed, skipped with a reason.
"""

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as P

import infospec
from infospec.sources import ModuleSource, open_source


def _legacy(fn, module, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(module, **kw)


def _weight_norm(layer):
    layer = P.weight_norm(layer)
    with torch.no_grad():  # as after training: g != ||v||
        g = layer.parametrizations.weight.original0
        g.mul_(torch.rand(g.shape, generator=torch.Generator().manual_seed(1)) * 3 + 0.1)
    return layer


def _legacy_weight_norm(layer):
    layer = _legacy(nn.utils.weight_norm, layer)
    with torch.no_grad():
        layer.weight_g.mul_(torch.rand(layer.weight_g.shape) * 3 + 0.1)
    layer(torch.randn(2, *_input(layer)))  # the hook refreshes layer.weight
    return layer


def _spectral_norm(layer):
    layer = P.spectral_norm(layer)
    for _ in range(3):  # power iterations in training mode
        layer.weight  # noqa: B018
    return layer


def _legacy_spectral_norm(layer):
    layer = _legacy(nn.utils.spectral_norm, layer)
    for _ in range(3):
        layer(torch.randn(2, *_input(layer)))
    return layer


def _input(layer):
    return (layer.in_features,) if isinstance(layer, nn.Linear) else (layer.in_channels, 20)


_PARAMETRIZE = {
    "weight_norm": (_weight_norm, ["original0", "original1"], "weight_norm"),
    "legacy_weight_norm": (_legacy_weight_norm, ["weight_g", "weight_v"], "legacy weight_norm"),
    "spectral_norm": (_spectral_norm, ["original", "0._u", "0._v"], "spectral_norm"),
    "legacy_spectral_norm": (
        _legacy_spectral_norm,
        ["weight_orig", "weight_u", "weight_v"],
        "legacy spectral_norm",
    ),
    "orthogonal": (P.orthogonal, ["original", "0.base"], "orthogonal"),
}
_LAYERS = {
    "linear": lambda: nn.Linear(48, 40),
    "conv1d": lambda: nn.Conv1d(16, 32, kernel_size=5),
    # wav2vec2/HuBERT pos_conv_embed: weight (64, 16, 16)
    "grouped_conv1d": lambda: nn.Conv1d(64, 64, kernel_size=16, groups=4),
}


def _model(how, layer):
    torch.manual_seed(0)
    fn = _PARAMETRIZE[how][0]  # orthogonal of a conv kernel: each (in, k) slice
    model = nn.Sequential(fn(_LAYERS[layer]()), nn.ReLU())
    return model.eval()


def _raw_names(how):
    names = _PARAMETRIZE[how][1]
    if how.startswith("legacy"):
        return [f"0.{n}" for n in names]
    return [f"0.parametrizations.weight.{n}" for n in names]


def _svd(w):
    return torch.linalg.svdvals(w.detach().double().flatten(1))


CASES = [(h, la) for h in _PARAMETRIZE for la in _LAYERS]


@pytest.mark.parametrize(("how", "layer"), CASES)
def test_entry_is_the_effective_weight(how, layer):
    model = _model(how, layer)
    w = model[0].weight.detach().clone()
    entries = {e.name: e for e in open_source(model).entries()}
    e = entries["0.weight"]
    assert e.skip_reason is None
    assert e.kind == ("linear" if layer == "linear" else "conv1d")
    assert e.shape == tuple(w.shape)
    assert e.dtype == "float32"
    got = e.load()
    assert not got.requires_grad
    torch.testing.assert_close(got, w, rtol=0, atol=0)
    torch.testing.assert_close(_svd(got), _svd(w), rtol=1e-10, atol=0)
    # reading it changed nothing (spectral_norm's buffers, the layer's training flags)
    torch.testing.assert_close(model[0].weight, w, rtol=0, atol=0)


@pytest.mark.parametrize(("how", "layer"), CASES)
def test_raw_tensors_are_skipped_with_a_reason(how, layer):
    model = _model(how, layer)
    why = (
        f"parametrization input of 0.weight ({_PARAMETRIZE[how][2]}); "
        f"the effective weight is analysed"
    )
    entries = {e.name: e for e in ModuleSource(model).entries()}
    for name in _raw_names(how):
        assert entries[name].skip_reason == why, name
    report = infospec.analyze(model, progress=False, fits=False)
    skipped = {s["name"]: s["reason"] for s in report.skipped}
    for name in _raw_names(how):
        assert skipped[name] == why
    assert [r["name"] for r in report.weights] == ["0.weight"]


@pytest.mark.parametrize(("how", "layer"), CASES)
def test_analyze_row_matches_the_effective_weight(how, layer):
    model = _model(how, layer)
    w = model[0].weight.detach().clone()
    (row,) = infospec.analyze(model, progress=False).weights
    plain = _LAYERS[layer]()
    with torch.no_grad():
        plain.weight.copy_(w)
    (expected,) = infospec.analyze(nn.Sequential(plain), progress=False).weights
    assert row["name"] == "0.weight" and row["kind"] == expected["kind"]
    for key in ("sigma_max", "frobenius_norm", "stable_rank", "alpha", "rows", "cols"):
        assert row[key] == pytest.approx(expected[key], rel=1e-10), key
    if layer == "linear":
        assert row["sigma_max"] == pytest.approx(_svd(w)[0].item(), rel=1e-10)


def test_weight_norm_differs_from_its_direction():
    """The bug: the direction v (original1) was analysed, not g * v / ||v||."""
    model = _model("weight_norm", "linear")
    (row,) = infospec.analyze(model, progress=False, fits=False).weights
    v = model[0].parametrizations.weight.original1
    assert row["sigma_max"] == pytest.approx(_svd(model[0].weight)[0].item(), rel=1e-10)
    assert row["sigma_max"] != pytest.approx(_svd(v)[0].item(), rel=1e-3)


def test_spectral_norm_reads_without_power_iteration():
    model = nn.Sequential(_spectral_norm(nn.Linear(48, 40))).train()
    u = model[0].parametrizations.weight[0]._u.clone()
    (e,) = [e for e in ModuleSource(model).entries() if e.name == "0.weight"]
    e.load()
    torch.testing.assert_close(model[0].parametrizations.weight[0]._u, u, rtol=0, atol=0)
    assert model[0].training and model[0].parametrizations.weight[0].training
    got = e.load()
    model.eval()  # the weight the layer uses in eval mode, from the same u and v
    torch.testing.assert_close(got, model[0].weight.detach(), rtol=0, atol=0)
    assert _svd(got)[0].item() == pytest.approx(1.0, rel=1e-2)


def test_loader_device_and_order():
    model = nn.Sequential(_weight_norm(nn.Linear(48, 40)), nn.Linear(40, 30))
    names = [e.name for e in ModuleSource(model).entries()]
    assert names == [
        "0.weight",
        "0.bias",
        "0.parametrizations.weight.original0",
        "0.parametrizations.weight.original1",
        "1.weight",
        "1.bias",
    ]
    e = ModuleSource(model).entries()[0]
    assert e.load(device="cpu").device.type == "cpu"


def test_shared_parametrized_module_is_tied():
    layer = _weight_norm(nn.Linear(40, 40))
    model = nn.Sequential(layer, nn.ReLU(), layer)
    entries = {e.name: e for e in ModuleSource(model).entries()}
    assert entries["0.weight"].skip_reason is None
    assert entries["2.weight"].skip_reason == "same tensor as '0.weight' (tied weights)"


def test_parametrized_bias_and_small_weight_follow_the_usual_rules():
    layer = P.weight_norm(nn.Linear(48, 4))
    entries = {e.name: e for e in ModuleSource(nn.Sequential(layer)).entries()}
    assert entries["0.weight"].skip_reason.startswith("smaller side 4 < min_dim")


def test_meta_parametrized_weight_is_skipped():
    with torch.device("meta"):
        model = nn.Sequential(P.weight_norm(nn.Linear(48, 40)))
    e = {e.name: e for e in ModuleSource(model).entries()}["0.weight"]
    assert e.shape == (40, 48)
    assert "meta" in e.skip_reason


def test_unparametrized_model_is_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 40), nn.Conv1d(16, 32, 5), nn.BatchNorm1d(32))
    entries = ModuleSource(model).entries()
    assert [(e.name, e.kind, e.skip_reason) for e in entries] == [
        ("0.weight", "linear", None),
        ("0.bias", "other", "1-D tensor (bias or norm scale)"),
        ("1.weight", "conv1d", None),
        ("1.bias", "other", "1-D tensor (bias or norm scale)"),
        ("2.weight", "other", "1-D tensor (bias or norm scale)"),
        ("2.bias", "other", "1-D tensor (bias or norm scale)"),
    ]
    assert entries[0].load() is not model[0].weight  # detached
    assert entries[0].load().data_ptr() == model[0].weight.data_ptr()  # no copy


def test_wav2vec2_pos_conv_embed_is_analysed():
    transformers = pytest.importorskip("transformers")
    config = transformers.Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32, 32),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.Wav2Vec2Model(config).eval()
    conv = model.encoder.pos_conv_embed.conv
    name = "encoder.pos_conv_embed.conv.weight"
    e = {e.name: e for e in ModuleSource(model).entries()}[name]
    assert (e.kind, e.shape, e.skip_reason) == ("conv1d", (64, 16, 16), None)
    torch.testing.assert_close(e.load(), conv.weight.detach(), rtol=0, atol=0)
    report = infospec.analyze(model, progress=False, fits=False)
    assert name in [r["name"] for r in report.weights]
    assert not [s for s in report.skipped if s["name"] == name]
