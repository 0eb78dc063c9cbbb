"""FP8 weights: dequantized at load with their scales, NaN as an error row, never a crash."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from infospec import analyze
from infospec.sources import StateDictSource, open_source
from infospec.sources.fp8 import fp8_plan


def _quantize_blockwise(w, block=128):
    """DeepSeek-V3's scheme: one scale per block, W = W_fp8 * scale_inv."""
    rows, cols = w.shape
    nr, nc = -(-rows // block), -(-cols // block)
    scale = torch.empty(nr, nc)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    for i in range(nr):
        for j in range(nc):
            tile = w[i * block : (i + 1) * block, j * block : (j + 1) * block]
            scale[i, j] = tile.abs().max() / 448.0
            q[i * block : (i + 1) * block, j * block : (j + 1) * block] = (tile / scale[i, j]).to(
                torch.float8_e4m3fn
            )
    return q, scale


@pytest.fixture
def fp8_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 200, generator=g) * torch.logspace(-2, 1, 300)[:, None]
    q, scale = _quantize_blockwise(w)
    per_tensor = torch.randn(40, 30, generator=g)
    nan = torch.randn(64, 64, generator=g).to(torch.float8_e4m3fn)
    nan.view(torch.uint8)[3, 3] = 0x7F  # e4m3fn's NaN
    tensors = {
        "model.layers.0.mlp.down_proj.weight": q,
        "model.layers.0.mlp.down_proj.weight_scale_inv": scale,
        "model.layers.0.self_attn.o_proj.weight": (per_tensor / 0.5).to(torch.float8_e5m2),
        "model.layers.0.self_attn.o_proj.weight_scale": torch.tensor([0.5]),
        "model.layers.1.mlp.up_proj.weight": nan,
        "model.layers.1.mlp.e8": torch.ones(20, 20).to(torch.float8_e8m0fnu),
    }
    path = tmp_path / "fp8.safetensors"
    save_file(tensors, path)
    return path, w, per_tensor


def test_blockwise_and_per_tensor_scales_are_applied(fp8_file):
    path, w, per_tensor = fp8_file
    entries = {e.name: e for e in open_source(path).entries()}
    down = entries["model.layers.0.mlp.down_proj.weight"]
    assert down.dtype == "float8_e4m3fn" and down.skip_reason is None
    got = down.load()
    assert got.dtype == torch.float32
    # e4m3 keeps 3 mantissa bits: each value within 2^-4 of itself (relative), per block
    assert torch.allclose(got, w, rtol=2**-4, atol=1e-6 * float(w.abs().max()))
    # the stored values alone are far from the weight: the scales were applied
    raw = load_file(path)["model.layers.0.mlp.down_proj.weight"].float()
    assert not torch.allclose(raw, w, rtol=0.1)
    o = entries["model.layers.0.self_attn.o_proj.weight"].load()
    assert torch.allclose(o, per_tensor, rtol=2**-2, atol=1e-3)
    assert entries["model.layers.0.mlp.down_proj.weight_scale_inv"].skip_reason == (
        "scale of the FP8 weight 'model.layers.0.mlp.down_proj.weight' (applied when it is loaded)"
    )
    assert entries["model.layers.0.self_attn.o_proj.weight_scale"].skip_reason.startswith(
        "scale of the FP8 weight 'model.layers.0.self_attn.o_proj.weight'"
    )
    assert entries["model.layers.1.mlp.e8"].skip_reason.startswith(
        "dtype float8_e8m0fnu is a scale format"
    )


def test_analyze_fp8_file_nan_is_an_error_row(fp8_file):
    path, w, _ = fp8_file
    report = analyze(path, progress=False)
    rows = {r["name"]: r for r in report.weights}
    assert rows["model.layers.0.mlp.down_proj.weight"]["status"] == "ok"
    assert rows["model.layers.0.mlp.down_proj.weight"]["dtype"] == "float8_e4m3fn"
    nan_row = rows["model.layers.1.mlp.up_proj.weight"]
    assert nan_row["status"] == "error" and "1 NaN" in nan_row["warning"]
    # the spectrum of the dequantized matrix is that of the original within FP8's error
    ref = analyze({"model.layers.0.mlp.down_proj.weight": w}, progress=False).weights[0]
    got = rows["model.layers.0.mlp.down_proj.weight"]
    assert got["stable_rank"] == pytest.approx(ref["stable_rank"], rel=0.02)


def test_scale_of_unknown_layout_skips_the_weight_with_the_reason():
    sd = {
        "w.weight": torch.randn(300, 200).to(torch.float8_e4m3fn),
        "w.weight_scale_inv": torch.ones(5, 7),
    }
    entries = {e.name: e for e in StateDictSource(sd).entries()}
    assert "neither one scale, one per row nor one per 128x128 block" in (
        entries["w.weight"].skip_reason
    )
    # a config's weight_block_size changes the block
    plan = fp8_plan({n: (tuple(t.shape), str(t.dtype)[6:]) for n, t in sd.items()}, block=(60, 29))
    assert plan.scale_of == {"w.weight": "w.weight_scale_inv"}


def test_state_dict_and_module_fp8_weights():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, 32, generator=g)
    row_scale = w.abs().amax(1, keepdim=True) / 448.0
    sd = {"fc.weight": (w / row_scale).to(torch.float8_e4m3fn), "fc.weight_scale": row_scale}
    (e, s) = StateDictSource(sd).entries()
    assert torch.allclose(e.load(), w, rtol=2**-4, atol=1e-6)
    assert s.skipped
    report = analyze(sd, progress=False)
    assert report.weights[0]["status"] == "ok"

    lin = nn.Linear(32, 48, bias=False)
    lin.weight = nn.Parameter(sd["fc.weight"], requires_grad=False)
    lin.weight_scale_inv = nn.Parameter(row_scale, requires_grad=False)
    entries = {e.name: e for e in open_source(nn.Sequential(lin)).entries()}
    assert torch.allclose(entries["0.weight"].load(), w, rtol=2**-4, atol=1e-6)
    assert entries["0.weight_scale_inv"].skip_reason == (
        "scale of the FP8 weight '0.weight' (applied when it is loaded)"
    )
    # an FP8 weight without a scale is upcast alone
    plain = nn.Linear(16, 16)
    plain.weight = nn.Parameter(torch.randn(16, 16).to(torch.float8_e5m2), requires_grad=False)
    report = analyze(plain, progress=False)
    assert report.weights[0]["status"] == "ok"


def test_fp8_in_a_torch_save_checkpoint(tmp_path):
    """The zip format only: PyTorch's legacy format cannot load FP8 storages back at all."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(130, 140, generator=g)
    q, scale = _quantize_blockwise(w)
    path = tmp_path / "fp8.pt"
    sd = {"proj.weight": q, "proj.weight_scale_inv": scale}
    torch.save({"state_dict": sd}, path)
    entries = {e.name: e for e in open_source(path).entries()}
    assert torch.allclose(entries["proj.weight"].load(), w, rtol=2**-4, atol=1e-6 * 5)
    assert entries["proj.weight_scale_inv"].skipped
