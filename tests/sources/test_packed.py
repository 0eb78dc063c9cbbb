"""Packed bitsandbytes and GPTQ weights: listed as matrices, dequantized exactly, parts skipped.

The folders under ``tests/data/packed`` were written by the real writers (``transformers``
with ``bitsandbytes`` 0.50, GPTQModel 7.7's packer: ``tests/data/packed/write_packed.py``),
each with the writer's own dequantized matrices beside it. Tests that need
``bitsandbytes`` itself quantize fresh matrices and are skipped where it is not installed.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from infospec import InfospecError, analyze
from infospec.sources import StateDictSource, open_source
from infospec.sources.listing import TensorMeta, entry_table, meta_columns
from infospec.sources.packed import PACKED_DTYPES, packed_plan

DATA = Path(__file__).parents[1] / "data" / "packed"
MATRICES = [
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.self_attn.o_proj.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
]
SHAPES = [(64, 64), (32, 64), (32, 64), (64, 64), (96, 64), (96, 64), (64, 96)]
FOLDERS = {
    "bnb_nf4_double": "bnb_nf4",
    "bnb_fp4": "bnb_fp4",
    "bnb_int8": "bnb_int8",
    "gptq_2bit_asym": "gptq_int2",
    "gptq_3bit_sym_act": "gptq_int3",
    "gptq_4bit_sym": "gptq_int4",
    "gptq_4bit_asym_act": "gptq_int4",
    "gptq_8bit_asym_v2": "gptq_int8",
}


def _entries(source):
    return {e.name: e for e in open_source(source).entries()}


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_written_files_dequantize_as_their_writers_do(folder):
    entries = _entries(DATA / folder)
    ref = load_file(DATA / f"{folder}.reference.safetensors")
    assert sorted(ref) == sorted(MATRICES)
    for name, shape in zip(MATRICES, SHAPES, strict=True):
        e = entries[name]
        assert (e.shape, e.dtype, e.kind, e.skip_reason) == (shape, FOLDERS[folder], "matrix", None)
        got = e.load()
        assert got.dtype == torch.float32 and tuple(got.shape) == shape
        if folder.startswith("gptq"):
            # GPTQModel dequantizes in float16; float32 rounded to float16 is its value
            assert torch.equal(got.half().float(), ref[name])
            assert torch.allclose(got, ref[name], rtol=2**-10, atol=0)
        else:
            assert torch.equal(got, ref[name])


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_companion_tensors_are_skipped_naming_their_weight(folder):
    entries = _entries(DATA / folder)
    packed = {n for n, e in entries.items() if e.dtype in PACKED_DTYPES}
    assert packed == set(MATRICES)
    parts = [e for e in entries.values() if e.skip_reason and e.skip_reason.startswith("part ")]
    assert parts
    for e in parts:
        weight = e.skip_reason.split("'")[1]
        assert weight in packed and e.skip_reason.endswith("(dequantized with it)")
    if folder.startswith("gptq"):  # the entry is named as the unquantized weight
        assert not [n for n in entries if n.endswith(".qweight")]
        assert {n.rsplit(".", 1)[1] for n in entries if n.startswith(MATRICES[0][:-7])} == {
            "weight",
            "qzeros",
            "scales",
            "g_idx",
        }
    # model order: the packed matrices keep attention before the MLP
    names = [n for n in entries if n in packed]
    assert names == MATRICES


def test_analyze_a_packed_folder_equals_its_dequantized_matrices():
    report = analyze(DATA / "bnb_nf4_double", progress=False)
    rows = {r["name"]: r for r in report.weights}
    assert all(rows[n]["status"] == "ok" and rows[n]["dtype"] == "bnb_nf4" for n in MATRICES)
    ref = analyze(load_file(DATA / "bnb_nf4_double.reference.safetensors"), progress=False)
    for r in ref.weights:
        got = rows[r["name"]]
        for column in ("stable_rank", "effective_rank", "spectral_norm", "log_spectral_norm"):
            if column in r:
                assert got[column] == pytest.approx(r[column], rel=1e-12), column


def test_packed_state_dict_and_torch_save_checkpoint(tmp_path):
    tensors = load_file(DATA / "gptq_4bit_asym_act" / "model.safetensors")
    ref = load_file(DATA / "gptq_4bit_asym_act.reference.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    # a state dict: no config, so the v1 zero convention (the default) and bits from shapes
    sd_entries = {e.name: e for e in StateDictSource(tensors).entries()}
    assert sd_entries[name].dtype == "gptq_int4"
    assert torch.equal(sd_entries[name].load().half().float(), ref[name])
    path = tmp_path / "pytorch_model.bin"
    torch.save(tensors, path)
    assert torch.equal(_entries(path)[name].load().half().float(), ref[name])


def test_gptq_v2_read_as_v1_is_off_by_one_zero(tmp_path):
    """The checkpoint format decides the zero point: the config is what says it."""
    folder = tmp_path / "m"
    folder.mkdir()
    tensors = load_file(DATA / "gptq_8bit_asym_v2" / "model.safetensors")
    save_file(tensors, folder / "m.safetensors")
    ref = load_file(DATA / "gptq_8bit_asym_v2.reference.safetensors")
    name = MATRICES[0]
    v1 = _entries(folder)[name].load()  # no config: read as v1
    (folder / "config.json").write_text(
        '{"quantization_config": {"quant_method": "gptq", "bits": 8, '
        '"checkpoint_format": "gptq_v2"}}'
    )
    v2 = _entries(folder)[name].load()
    assert torch.equal(v2.half().float(), ref[name])
    # v1 reads every zero one higher: one scale lower per element
    scales = tensors["model.layers.0.self_attn.q_proj.scales"].float()
    g_idx = tensors["model.layers.0.self_attn.q_proj.g_idx"].long()
    assert torch.allclose(v2 - v1, scales[g_idx].T, rtol=1e-5, atol=1e-9)
    # AutoGPTQ's quantize_config.json is read when config.json has no quantization_config
    (folder / "config.json").write_text("{}")
    (folder / "quantize_config.json").write_text('{"bits": 8, "checkpoint_format": "gptq_v2"}')
    assert torch.equal(_entries(folder)[name].load(), v2)


def _gptq_layer(bits=4, out=64, n_in=64, groups=2, gen=0):
    g = torch.Generator().manual_seed(gen)
    words = torch.randint(-(2**31), 2**31 - 1, (n_in * bits // 32, out), generator=g)
    zeros = torch.randint(-(2**31), 2**31 - 1, (groups, out * bits // 32), generator=g)
    return {
        "m.qweight": words.to(torch.int32),
        "m.qzeros": zeros.to(torch.int32),
        "m.scales": torch.rand(groups, out, generator=g).half(),
        "m.g_idx": (torch.arange(n_in) // (n_in // groups)).to(torch.int32),
    }


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_codes_unpack_by_bit_position(bits):
    """Code j of an input column sits at bits [j*bits, (j+1)*bits) of the column's stream."""
    sd = _gptq_layer(bits=bits)
    w = StateDictSource(sd).entries()[0].load()
    stream = sd["m.qweight"].to(torch.int64) & 0xFFFFFFFF  # (words, out)
    zstream = sd["m.qzeros"].to(torch.int64) & 0xFFFFFFFF  # (groups, words)
    if 32 % bits == 0:  # v1: the writer took one from every field of a word at once
        zstream = (zstream + sum(1 << (bits * j) for j in range(32 // bits))) & 0xFFFFFFFF

    def code(column_words, j):
        value = 0
        for b in range(bits):
            pos = j * bits + b
            value |= ((int(column_words[pos // 32]) >> (pos % 32)) & 1) << b
        return value

    for o, i in [(o, i) for o in (0, 5, 63) for i in range(64)]:  # 3 bits: some cross words
        group = i // 32
        q = code(stream[:, o], i)
        z = code(zstream[group], o) + (1 if bits == 3 else 0)
        expect = float(sd["m.scales"][group, o]) * (q - z)
        assert float(w[o, i]) == pytest.approx(expect, rel=1e-6, abs=1e-7)


def test_gptq_without_g_idx_uses_contiguous_groups():
    sd = _gptq_layer()
    with_g = StateDictSource(sd).entries()[0].load()
    del sd["m.g_idx"]
    assert torch.equal(StateDictSource(sd).entries()[0].load(), with_g)


def _reasons(sd, quantization=None):
    shapes = {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in sd.items()}
    return packed_plan(shapes, sd.__getitem__, quantization=quantization).reasons


def test_layers_that_cannot_be_read_are_skipped_with_the_reason():
    sd = _gptq_layer()
    assert set(_reasons(sd)) == {"m.qzeros", "m.scales", "m.g_idx"}  # parts only
    five = dict(sd, **{"m.qzeros": torch.zeros(2, 10, dtype=torch.int32)})
    assert (
        "qzeros (2, 10) for 64 outputs give 5 bits (read: 2, 3, 4, 8)"
        in (_reasons(five)["m.qweight"])
    )
    assert "the config says 8" in _reasons(sd, {"quant_method": "gptq", "bits": 8})["m.qweight"]
    awq = {
        "m.qweight": torch.zeros(64, 8, dtype=torch.int32),
        "m.qzeros": torch.zeros(2, 8, dtype=torch.int32),
        "m.scales": torch.ones(2, 64).half(),
    }
    assert "AWQ's (in, out*bits/32)" in _reasons(awq)["m.qweight"]
    bad_g = dict(sd, **{"m.g_idx": torch.zeros(10, dtype=torch.int32)})
    assert "g_idx has shape (10,), not (64,)" in _reasons(bad_g)["m.qweight"]
    wide = dict(sd, **{"m.qzeros": sd["m.qzeros"].to(torch.int64)})
    assert "qzeros (int64) are not int32 words" in _reasons(wide)["m.qweight"]
    empty = {
        "m.qweight": torch.zeros(8, 3, dtype=torch.int32),
        "m.qzeros": torch.zeros(2, 1, dtype=torch.int32),
        "m.scales": torch.zeros(2, 0),
    }
    assert "scales (2, 0) are empty" in _reasons(empty)["m.qweight"]
    no_groups = dict(sd, **{"m.qzeros": torch.zeros(0, 8, dtype=torch.int32)})
    no_groups["m.scales"] = torch.zeros(0, 64)
    del no_groups["m.g_idx"]
    assert "scales (0, 64) are empty" in _reasons(no_groups)["m.qweight"]
    uneven = dict(sd, **{"m.qzeros": torch.zeros(2, 9, dtype=torch.int32)})
    assert (
        "do not hold a whole number of bits for each of its 64 outputs"
        in (_reasons(uneven)["m.qweight"])
    )
    int_scales = dict(sd, **{"m.scales": torch.ones(2, 64, dtype=torch.int32)})
    assert "scales have dtype int32" in _reasons(int_scales)["m.qweight"]
    float_g = dict(sd, **{"m.g_idx": torch.zeros(64)})
    assert "g_idx has dtype float32" in _reasons(float_g)["m.qweight"]
    no_scales = {k: v for k, v in sd.items() if k != "m.scales"}
    assert "without its 'scales' tensor" in _reasons(no_scales)["m.qweight"]
    # every reason reaches the entries, and the layer's parts are skipped as parts
    entries = {e.name: e for e in StateDictSource(awq).entries()}
    assert "only GPTQ's layout is read" in entries["m.qweight"].skip_reason
    assert entries["m.qzeros"].skip_reason.startswith("part of the GPTQ-packed weight 'm.weight'")


def test_gptq_g_idx_out_of_range_is_an_error_row():
    sd = _gptq_layer()
    sd["m.g_idx"][3] = 7
    (entry, *_rest) = StateDictSource(sd).entries()
    with pytest.raises(InfospecError, match=r"g_idx outside \[0, 2\) \(found 0\.\.7\)"):
        entry.load()
    row = analyze(sd, progress=False).weights[0]
    assert row["status"] == "error" and "g_idx outside" in row["warning"]


def _bnb4_state(state_json: bytes, n_codes=2048, blocks=64, nested=False):
    sd = {
        "l.weight": torch.zeros(n_codes, 1, dtype=torch.uint8),
        "l.weight.absmax": torch.ones(blocks, dtype=torch.uint8 if nested else torch.float32),
        "l.weight.quant_map": torch.linspace(-1, 1, 16),
        "l.weight.quant_state.bitsandbytes__nf4": torch.tensor(list(state_json), dtype=torch.uint8),
    }
    if nested:
        sd["l.weight.nested_absmax"] = torch.ones(1)
        sd["l.weight.nested_quant_map"] = torch.linspace(-1, 1, 256)
    return sd


def test_bnb4_hostile_quant_states_are_skip_reasons_not_crashes():
    good = b'{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [64, 64]}'
    entries = {e.name: e for e in StateDictSource(_bnb4_state(good)).entries()}
    assert entries["l.weight"].skip_reason is None and entries["l.weight"].shape == (64, 64)
    cases = {
        b"\xff\xfe not json": "is not JSON",
        b"[1, 2]": "is not a JSON object",
        b'{"shape": [64, 64]}': "lacks a 2-D 'shape' and a 'blocksize' in [1, 65536]",
        b'{"shape": [64, 64], "blocksize": 1099511627775}': "a 'blocksize' in [1, 65536]",
        b'{"shape": [64, -1], "blocksize": 64}': "lacks a 2-D 'shape'",
        b'{"shape": [64, 65], "blocksize": 64}': "do not hold the 2080 bytes",
        b'{"shape": [64, 64], "blocksize": 32}': "has 64 elements, not 128",
        b"[" * 60000: "is not JSON",
    }
    for state, why in cases.items():
        entry = {e.name: e for e in StateDictSource(_bnb4_state(state)).entries()}["l.weight"]
        assert why in entry.skip_reason, (state, entry.skip_reason)
        assert entry.skip_reason.startswith("bitsandbytes nf4 weight whose")
    nested = _bnb4_state(good, nested=True)
    entry = {e.name: e for e in StateDictSource(nested).entries()}["l.weight"]
    assert "lacks the 'nested_blocksize' and 'nested_offset'" in entry.skip_reason
    float_codes = _bnb4_state(good)
    float_codes["l.weight.absmax"] = torch.ones(64, dtype=torch.uint8)  # not double-quantized
    entry = {e.name: e for e in StateDictSource(float_codes).entries()}["l.weight"]
    assert "'l.weight.absmax' has dtype uint8, not floating" in entry.skip_reason
    overflow = b'{"shape": [64, 64], "blocksize": 64, "nested_blocksize": 256, '
    overflow += b'"nested_offset": 1' + b"0" * 400 + b"}"
    entry = {e.name: e for e in StateDictSource(_bnb4_state(overflow, nested=True)).entries()}
    assert "lacks the 'nested_blocksize' and 'nested_offset'" in entry["l.weight"].skip_reason
    huge = _bnb4_state(good)
    huge["l.weight.quant_state.bitsandbytes__nf4"] = torch.zeros(1 << 17, dtype=torch.uint8)
    entry = {e.name: e for e in StateDictSource(huge).entries()}["l.weight"]
    assert "is not a uint8 vector of at most 64 KiB" in entry.skip_reason


def test_bnb_int8_tiled_layout_and_bad_scale_are_skipped():
    sd = {
        "l.weight": torch.ones(32, 16, dtype=torch.int8),
        "l.SCB": torch.full((32,), 127.0),
        "l.weight_format": torch.tensor(2, dtype=torch.uint8),
    }
    entries = {e.name: e for e in StateDictSource(sd).entries()}
    assert "'l.weight_format' is [2], a tiled GPU layout" in entries["l.weight"].skip_reason
    sd["l.weight_format"] = torch.tensor(0, dtype=torch.uint8)
    entries = {e.name: e for e in StateDictSource(sd).entries()}
    assert torch.equal(entries["l.weight"].load(), torch.ones(32, 16))
    assert entries["l.SCB"].skip_reason.startswith("part of the bitsandbytes int8 weight")
    scalar = {"l.weight": torch.tensor(1, dtype=torch.int8), "l.SCB": torch.ones(1)}
    reason = {e.name: e for e in StateDictSource(scalar).entries()}["l.weight"].skip_reason
    assert "not one per row of a 2-D weight" in reason
    int_scb = dict(sd, **{"l.SCB": torch.ones(32, dtype=torch.int32)})
    reason = {e.name: e for e in StateDictSource(int_scb).entries()}["l.weight"].skip_reason
    assert "'l.SCB' is not floating" in reason
    sd["l.SCB"] = torch.ones(31)
    entries = {e.name: e for e in StateDictSource(sd).entries()}
    assert "row scale 'l.SCB' has shape (31,), not (32,)" in entries["l.weight"].skip_reason


def test_plain_integer_tensors_are_left_alone():
    sd = {"ids": torch.arange(100).reshape(10, 10), "w": torch.randn(20, 20)}
    entries = {e.name: e for e in StateDictSource(sd).entries()}
    assert entries["ids"].skip_reason.startswith("non-floating dtype int64")
    assert entries["w"].skip_reason is None


@pytest.mark.parametrize(
    ("quant_type", "blocksize", "nested", "shape", "storage"),
    [
        ("nf4", 64, True, (96, 80), torch.uint8),
        ("fp4", 128, False, (33, 70), torch.uint8),
        ("nf4", 256, True, (300, 17), torch.bfloat16),
        ("fp4", 64, True, (1000, 40), torch.float16),
    ],
)
def test_bnb4_fresh_quantizations_match_bitsandbytes(quant_type, blocksize, nested, shape, storage):
    F = pytest.importorskip("bitsandbytes.functional")
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    w = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    q, state = F.quantize_4bit(
        w,
        blocksize=blocksize,
        quant_type=quant_type,
        compress_statistics=nested,
        quant_storage=storage,
    )
    sd = {"l.weight": q, **{f"l.weight.{k}": v for k, v in state.as_dict(packed=True).items()}}
    entry = {e.name: e for e in StateDictSource(sd).entries()}["l.weight"]
    assert (entry.shape, entry.dtype) == (shape, f"bnb_{quant_type}")
    absmax = state.absmax
    if state.nested:
        absmax = F.dequantize_blockwise(absmax, state.state2) + state.offset
    ref = _dequantize_4bit_compute(
        q.view(torch.uint8).reshape(-1), absmax.float(), state.code, blocksize, shape, torch.float32
    )
    assert torch.equal(entry.load(), ref)


class _GptqLinear(torch.nn.Module):
    """A module holding GPTQ's buffers, as GPTQModel's and AutoGPTQ's QuantLinear do."""

    def __init__(self, tensors, prefix):
        super().__init__()
        for part in ("qweight", "qzeros", "scales", "g_idx"):
            self.register_buffer(part, tensors[f"{prefix}.{part}"])
        self.bias = torch.nn.Parameter(torch.zeros(tensors[f"{prefix}.scales"].shape[1]))


def test_a_module_with_gptq_buffers_lists_its_weight():
    tensors = load_file(DATA / "gptq_3bit_sym_act" / "model.safetensors")
    ref = load_file(DATA / "gptq_3bit_sym_act.reference.safetensors")
    prefix = "model.layers.0.mlp.up_proj"
    model = torch.nn.Sequential()
    model.add_module("up", _GptqLinear(tensors, prefix))
    entries = {e.name: e for e in open_source(model).entries()}
    assert list(entries) == ["up.bias", "up.weight"]
    assert (entries["up.weight"].shape, entries["up.weight"].dtype) == ((96, 64), "gptq_int3")
    assert torch.equal(entries["up.weight"].load().half().float(), ref[f"{prefix}.weight"])


@pytest.mark.parametrize("folder", ["bnb_nf4_double", "bnb_int8"])
def test_a_model_loaded_with_bitsandbytes(folder):
    pytest.importorskip("bitsandbytes")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(DATA / folder, device_map="cpu")
    entries = {e.name: e for e in open_source(model).entries()}
    ref = load_file(DATA / f"{folder}.reference.safetensors")
    for name, r in ref.items():
        assert entries[name].dtype == FOLDERS[folder] and entries[name].shape == tuple(r.shape)
        assert torch.equal(entries[name].load(), r)
    report = analyze(model, progress=False)
    assert {r["status"] for r in report.weights} == {"ok"} and len(report.weights) == 9


def test_the_packed_gate_looks_at_names_and_dtypes():
    from infospec.sources.packed import may_hold_packed

    assert not may_hold_packed({"float32"}, ["a.qweight"])
    assert not may_hold_packed({"uint8", "float32"}, ["a.weight", "a.qweights", "SCB.x"])
    assert may_hold_packed({"int32"}, ["a.weight", "a.qweight"])
    assert may_hold_packed({"int8"}, ["a.SCB", "b"])
    assert may_hold_packed({"uint8"}, ["w.quant_state.bitsandbytes__nf4"])


def _v2_to_v1_words(qzeros, bits):
    """GPTQModel's v2 -> v1 conversion of qzeros: one subtracted from every field of each
    int32 word at once (``convert_gptq_v2_to_v1_format_module``), borrows included."""
    ones = sum(1 << (bits * j) for j in range(32 // bits))
    return ((qzeros.to(torch.int64) - ones) & 0xFFFFFFFF).to(torch.int32)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_gptq_v1_zeros_of_zero_borrow_and_are_restored(bits):
    """Asymmetric zeros of 0 borrow from the next field in v1 words; the read undoes it."""
    g = torch.Generator().manual_seed(bits)
    out, n_in, groups = 64, 64, 2
    zeros = torch.randint(0, 2**bits, (groups, out), generator=g)
    zeros[:, ::3] = 0  # many zero points of 0: every word has a borrow
    per = 32 // bits
    words = torch.zeros(groups, out // per, dtype=torch.int64)
    for j in range(per):
        words |= zeros[:, j::per] << (bits * j)
    qzeros_v2 = words.to(torch.int64).where(words < 2**31, words - 2**32).to(torch.int32)
    sd = _gptq_layer(bits=bits, out=out, n_in=n_in, groups=groups)
    sd["m.qzeros"] = qzeros_v2
    quant = {"quant_method": "gptq", "checkpoint_format": "gptq_v2"}
    names, ids, metas = meta_columns(
        {n: TensorMeta(tuple(t.shape), str(t.dtype)[6:], "state dict") for n, t in sd.items()}
    )
    v2 = entry_table(names, ids, metas, lambda n: lambda device=None, t=sd[n]: t, min_dim=1,
                     model_order=False, quantization=quant)[0].load()  # fmt: skip
    sd["m.qzeros"] = _v2_to_v1_words(qzeros_v2, bits)
    v1 = StateDictSource(sd).entries()[0].load()  # no config: v1
    assert torch.equal(v1, v2)
    # the zero points are the ones written: q - z at a zero of 0 is the code itself
    q = StateDictSource({**sd, "m.scales": torch.ones(groups, out).half()}).entries()[0]
    w = q.load()
    codes_row0 = w[0] + float(zeros[0, 0])
    assert torch.equal(codes_row0, codes_row0.round()) and float(codes_row0.min()) >= 0


class TorchQuantLinear(_GptqLinear):
    """As GPTQModel's CPU kernel: v1 files are converted to v2 zeros when loaded."""

    REQUIRES_FORMAT_V2 = True


class MarlinQuantLinear(_GptqLinear):
    """A kernel whose qweight is rearranged at load."""


def test_loaded_gptq_modules_follow_their_zero_format_and_kernel():
    tensors = load_file(DATA / "gptq_8bit_asym_v2" / "model.safetensors")  # v2 zeros
    ref = load_file(DATA / "gptq_8bit_asym_v2.reference.safetensors")
    prefix = "model.layers.0.mlp.up_proj"
    v2 = torch.nn.Sequential(TorchQuantLinear(tensors, prefix))
    entry = {e.name: e for e in open_source(v2).entries()}["0.weight"]
    assert torch.equal(entry.load().half().float(), ref[f"{prefix}.weight"])

    class Reports(_GptqLinear):
        def qzero_format(self, format=None):
            return 2

    entry = {e.name: e for e in open_source(Reports(tensors, prefix)).entries()}["weight"]
    assert torch.equal(entry.load().half().float(), ref[f"{prefix}.weight"])
    marlin = {e.name: e for e in open_source(MarlinQuantLinear(tensors, prefix)).entries()}
    assert "weight" not in marlin
    assert "class MarlinQuantLinear, whose kernel rearranges qweight" in (
        marlin["qweight"].skip_reason
    )


def test_packed_tensors_without_data_are_skipped_not_crashes():
    sd = load_file(DATA / "bnb_nf4_double" / "model.safetensors")
    meta = {n: torch.empty_like(t, device="meta") for n, t in sd.items()}
    entries = {e.name: e for e in StateDictSource(meta).entries()}
    reason = entries[MATRICES[0]].skip_reason
    assert "cannot be read" in reason, reason
    int8 = load_file(DATA / "bnb_int8" / "model.safetensors")
    meta = {n: torch.empty_like(t, device="meta") for n, t in int8.items()}
    reason = {e.name: e for e in StateDictSource(meta).entries()}[MATRICES[0]].skip_reason
    assert "weight_format' cannot be read" in reason, reason
    gptq = {n: torch.empty_like(t, device="meta") for n, t in _gptq_layer().items()}
    entry = {e.name: e for e in StateDictSource(gptq).entries()}["m.weight"]
    assert entry.skip_reason and "meta" in entry.skip_reason
    row = analyze(gptq, progress=False)
    assert all(r["name"] != "m.weight" or r["status"] != "ok" for r in row.weights)
