"""ModuleSource, StateDictSource and open_source on in-memory objects."""

import numpy as np
import pytest
import torch
from torch import nn

import infospec
from infospec import InputError, SourceError
from infospec.sources import (
    DEFAULT_MIN_DIM,
    ENTRY_KINDS,
    ModuleSource,
    StateDictSource,
    WeightEntry,
    WeightSource,
    infer_kind,
    open_source,
)


class Conv1D(nn.Module):
    """Stand-in for transformers.pytorch_utils.Conv1D: weight (in, out), y = x @ W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.conv1 = nn.Conv1d(16, 24, kernel_size=3)
        self.conv2 = nn.Conv2d(24, 32, kernel_size=(3, 2), bias=False)
        self.conv3 = nn.Conv3d(4, 12, kernel_size=2)
        self.deconv = nn.ConvTranspose2d(32, 20, kernel_size=2)
        self.attn = nn.MultiheadAttention(embed_dim=16, num_heads=4)
        self.c_attn = Conv1D(48, 16)
        self.fc = nn.Linear(16, 40)
        self.tiny = nn.Linear(16, 4)
        self.norm = nn.LayerNorm(16)
        self.free = nn.Parameter(torch.randn(12, 30))
        self.pos = nn.Parameter(torch.randn(1, 20, 16))
        self.odd = nn.Parameter(torch.randn(3, 12, 14))
        self.register_buffer("ids", torch.arange(20))


EXPECTED = {
    # name: (shape, kind, skip_reason or None)
    "free": ((12, 30), "matrix", None),
    "pos": ((1, 20, 16), "matrix", None),
    "odd": ((3, 12, 14), "other", "3-D tensor with no known matrix layout"),
    "embed.weight": ((100, 16), "embedding", None),
    "conv1.weight": ((24, 16, 3), "conv1d", None),
    "conv1.bias": ((24,), "other", "1-D tensor (bias or norm scale)"),
    "conv2.weight": ((32, 24, 3, 2), "conv2d", None),
    "conv3.weight": ((12, 4, 2, 2, 2), "conv3d", None),
    "conv3.bias": ((12,), "other", "1-D tensor (bias or norm scale)"),
    "deconv.weight": ((32, 20, 2, 2), "conv_transpose2d", None),
    "deconv.bias": ((20,), "other", "1-D tensor (bias or norm scale)"),
    "attn.in_proj_weight": ((48, 16), "in_proj", None),
    "attn.in_proj_bias": ((48,), "other", "1-D tensor (bias or norm scale)"),
    "attn.out_proj.weight": ((16, 16), "linear", None),
    "attn.out_proj.bias": ((16,), "other", "1-D tensor (bias or norm scale)"),
    "c_attn.weight": ((16, 48), "conv1d_transposed", None),
    "c_attn.bias": ((48,), "other", "1-D tensor (bias or norm scale)"),
    "fc.weight": ((40, 16), "linear", None),
    "fc.bias": ((40,), "other", "1-D tensor (bias or norm scale)"),
    "tiny.weight": ((4, 16), "linear", "smaller side 4 < min_dim=10 (matrix 4 x 16)"),
    "tiny.bias": ((4,), "other", "1-D tensor (bias or norm scale)"),
    "norm.weight": ((16,), "other", "1-D tensor (bias or norm scale)"),
    "norm.bias": ((16,), "other", "1-D tensor (bias or norm scale)"),
}


def test_module_entries_names_shapes_kinds_and_skips():
    model = Zoo()
    entries = open_source(model).entries()
    got = {e.name: (e.shape, e.kind, e.skip_reason) for e in entries}
    assert got == EXPECTED
    # every parameter is listed (nothing dropped silently), buffers are not
    assert [e.name for e in entries] == [n for n, _ in model.named_parameters()]
    assert all(e.kind in ENTRY_KINDS for e in entries)
    assert all(e.origin == "module Zoo" and e.dtype == "float32" for e in entries)


def test_module_names_are_full_dotted_names_of_the_state_dict():
    enc = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32),
        num_layers=2,
        enable_nested_tensor=False,
    )
    names = [e.name for e in open_source(enc).entries()]
    assert "layers.1.self_attn.in_proj_weight" in names
    assert "layers.0.linear1.weight" in names
    assert set(names) <= set(enc.state_dict())


def test_module_load_returns_the_parameter_detached_without_copy():
    model = Zoo()
    entry = next(e for e in open_source(model).entries() if e.name == "fc.weight")
    w = entry.load()
    assert not w.requires_grad
    assert w.data_ptr() == model.fc.weight.data_ptr()
    assert torch.equal(w, model.fc.weight.detach())
    assert entry.load(device="cpu").device.type == "cpu"


def test_module_reflects_later_changes_lazily():
    lin = nn.Linear(12, 12)
    entry = open_source(lin).entries()[0]
    with torch.no_grad():
        lin.weight.fill_(3.0)
    assert float(entry.load().sum()) == 3.0 * 144


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(torch.bfloat16, "bfloat16"), (torch.float16, "float16"), (torch.float64, "float64")],
)
def test_module_dtypes(dtype, name):
    entry = open_source(nn.Linear(12, 12).to(dtype)).entries()[0]
    assert entry.dtype == name and entry.skip_reason is None
    assert entry.load().dtype == dtype


def test_tied_and_shared_weights_are_listed_and_skipped_with_reason():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(50, 16)
            self.lm_head = nn.Linear(16, 50, bias=False)
            self.lm_head.weight = self.wte.weight
            self.block = nn.Linear(16, 16)
            self.again = self.block  # the same module under two names

    entries = {e.name: e for e in open_source(Tied()).entries()}
    assert entries["wte.weight"].skip_reason is None
    assert entries["lm_head.weight"].skip_reason == "same tensor as 'wte.weight' (tied weights)"
    assert entries["again.weight"].skip_reason == "same tensor as 'block.weight' (tied weights)"
    assert entries["again.bias"].skip_reason == "1-D tensor (bias or norm scale)"


def test_lazy_meta_and_empty_parameters_are_skipped_with_reason():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.lazy = nn.LazyLinear(20)
            self.meta = nn.Linear(16, 16, device="meta")
            self.empty = nn.Parameter(torch.zeros(0, 16))
            self.ints = nn.Parameter(torch.zeros(16, 16, dtype=torch.int32), requires_grad=False)

    reasons = {e.name: e.skip_reason for e in open_source(Odd()).entries()}
    assert reasons["lazy.weight"].startswith("uninitialized lazy parameter")
    assert reasons["meta.weight"] == "parameter on the meta device (no data)"
    assert reasons["empty"] == "empty tensor (shape (0, 16))"
    assert reasons["ints"].startswith("non-floating dtype int32")


def test_real_transformers_conv1d_is_detected_when_available():
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    layer = pytorch_utils.Conv1D(nf=24, nx=12)  # weight (in=12, out=24)
    (entry,) = [e for e in open_source(layer).entries() if e.name == "weight"]
    assert entry.kind == "conv1d_transposed" and entry.shape == (12, 24)
    assert entry.matrix_shape == (24, 12)


def test_min_dim_option():
    lin = nn.Linear(16, 8)
    assert open_source(lin).entries()[0].skipped
    assert open_source(lin, min_dim=8).entries()[0].skip_reason is None
    assert open_source(lin, min_dim=9).entries()[0].skip_reason == (
        "smaller side 8 < min_dim=9 (matrix 8 x 16)"
    )
    assert DEFAULT_MIN_DIM == 10
    with pytest.raises(InputError, match="'min_dim' parameter of ModuleSource must be an int"):
        open_source(lin, min_dim=0)


def test_conv_skip_uses_the_flattened_matrix():
    # (64, 3, 7, 7) flattens to 64 x 147: kept although in_channels = 3 < 10
    entry = open_source(nn.Conv2d(3, 64, 7)).entries()[0]
    assert entry.matrix_shape == (64, 147) and entry.skip_reason is None
    # depthwise 3x3: (32, 1, 3, 3) -> 32 x 9, skipped
    dw = open_source(nn.Conv2d(32, 32, 3, groups=32)).entries()[0]
    assert dw.skip_reason == "smaller side 9 < min_dim=10 (matrix 32 x 9)"


def test_empty_module_is_a_clear_error():
    with pytest.raises(SourceError, match="module ReLU has no parameters"):
        open_source(nn.ReLU())
    with pytest.raises(SourceError, match="module Sequential has no parameters"):
        open_source(nn.Sequential())


def test_entry_is_frozen_and_compares_without_loader():
    a = WeightEntry("w", (3, 3), "float32", "matrix", None, "x", loader=lambda d: 1)
    b = WeightEntry("w", (3, 3), "float32", "matrix", None, "x", loader=lambda d: 2)
    assert a == b and a.numel == 9 and not a.skipped
    with pytest.raises(AttributeError):
        a.name = "v"
    with pytest.raises(SourceError, match="has no loader"):
        WeightEntry("w", (3, 3), "float32", "matrix").load()


# --------------------------------------------------------------------------- state dicts


def test_state_dict_source_kinds_values_and_skips():
    sd = Zoo().state_dict()
    src = open_source(sd)
    assert isinstance(src, StateDictSource)
    entries = {e.name: e for e in src.entries()}
    assert list(entries) == list(sd)
    assert entries["embed.weight"].kind == "embedding"
    assert entries["conv2.weight"].kind == "conv2d"
    assert entries["attn.in_proj_weight"].kind == "in_proj"
    assert entries["fc.weight"].kind == "matrix"  # a bare 2-D tensor: role unknown
    assert entries["ids"].skip_reason.startswith("non-floating dtype int64")
    assert entries["norm.weight"].skip_reason == "1-D tensor (bias or norm scale)"
    for name, e in entries.items():
        assert torch.equal(e.load(), sd[name])


def test_state_dict_tied_tensors_and_numpy_values():
    w = torch.randn(20, 16)
    src = open_source({"a.weight": w, "b.weight": w, "c": np.ones((12, 12), np.float32)})
    reasons = {e.name: e.skip_reason for e in src.entries()}
    assert reasons == {
        "a.weight": None,
        "b.weight": "same tensor as 'a.weight' (tied weights)",
        "c": None,
    }
    c = src.entries()[2].load()
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float32
    (odd,) = open_source({"s": np.array([["a", "b"]] * 12)}).entries()
    assert odd.skip_reason == "NumPy dtype <U1 has no torch equivalent"


@pytest.mark.parametrize(
    ("state_dict", "match"),
    [
        ({}, "state dict is empty"),
        ({"w": [1, 2, 3]}, "key 'w' holds a list"),
        ({"epoch": 3, "model": {"w": torch.ones(2, 2)}}, r"pass checkpoint\['model'\]"),
        ({1: torch.ones(3, 3)}, "key 1 holds a Tensor"),
    ],
)
def test_state_dict_errors(state_dict, match):
    with pytest.raises(SourceError, match=match):
        open_source(state_dict)


@pytest.mark.parametrize(
    ("name", "shape", "kind"),
    [
        ("enc.layers.0.self_attn.in_proj_weight", (48, 16), "in_proj"),
        ("enc.layers.0.self_attn.in_proj_weight", (47, 16), "matrix"),
        ("model.embed_tokens.weight", (100, 16), "embedding"),
        ("embeddings.word_embeddings.weight", (100, 16), "embedding"),
        ("transformer.wte.weight", (100, 16), "embedding"),
        ("features.0.weight", (8, 3, 3, 3), "conv2d"),
        ("features.0.weight", (8, 3, 3), "conv1d"),
        ("features.0.weight", (8, 3, 3, 3, 3), "conv3d"),
        ("h.0.attn.c_attn.weight", (16, 48), "matrix"),
        ("h.0.attn.bias", (1, 1, 32, 32), "matrix"),
        ("experts.gate_up_proj", (4, 16, 32), "other"),
        ("cls_token", (1, 1, 16), "matrix"),
        ("scale", (), "other"),
    ],
)
def test_infer_kind(name, shape, kind):
    assert infer_kind(name, shape) == kind


def test_infer_kind_conv1d_modules():
    kw = {"conv1d_modules": frozenset({"c_attn"})}
    assert infer_kind("h.0.attn.c_attn.weight", (16, 48), **kw) == "conv1d_transposed"
    assert infer_kind("h.0.attn.c_attn.bias", (48,), **kw) == "other"


# --------------------------------------------------------------------------- dispatch


def test_open_source_returns_sources_and_passes_sources_through():
    src = open_source(nn.Linear(12, 12))
    assert isinstance(src, ModuleSource) and isinstance(src, WeightSource)
    assert open_source(src) is src
    assert len(src) == 2 and [e.name for e in src] == ["weight", "bias"]
    assert "ModuleSource" in repr(src) and src.name == "Linear"


@pytest.mark.parametrize("obj", [3.5, None, [torch.ones(3, 3)], torch.ones(3, 3), b"path"])
def test_open_source_rejects_other_types(obj):
    with pytest.raises(SourceError, match=f"type {type(obj).__name__}; it accepts a torch.nn"):
        open_source(obj)


def test_a_state_dict_with_sparse_nested_and_meta_tensors_lists_them_skipped():
    # as in a torch.save file: listed with their layout, never read (tuple(t.shape) of a
    # nested tensor raised from inside torch)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's prototype warnings for these layouts
        sd = {
            "w": torch.randn(20, 16),
            "sp": torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 0]]), torch.ones(2), (20, 16)),
            "nt": torch.nested.nested_tensor([torch.randn(3, 4), torch.randn(5, 4)]),
            "meta": torch.empty(20, 16, device="meta"),
        }
        entries = {e.name: e for e in open_source(sd).entries()}
        report = infospec.analyze(sd, progress=False)
    assert entries["sp"].skip_reason == "sparse tensor (layout sparse_coo), not read"
    assert entries["meta"].skip_reason == "tensor on the meta device (no data)"
    assert entries["nt"].skipped and entries["nt"].shape == (2, 5, 4)
    assert [r["name"] for r in report.weights] == ["w"]
