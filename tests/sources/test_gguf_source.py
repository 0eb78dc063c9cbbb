"""GGUF files written by the real writer (gguf.GGUFWriter): orientation, dequantization,
the analysis verbs, and hostile files that must be one SourceError naming the file."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize, quantize  # noqa: E402

from infospec import SourceError, analyze  # noqa: E402
from infospec.cli import main  # noqa: E402
from infospec.sources import open_source  # noqa: E402
from infospec.sources.gguf_source import GGUFSource, read_gguf_header  # noqa: E402

T = gguf.GGMLQuantizationType


def _write(path, tensors, *, arch="llama", kv=None):
    """A GGUF file; each value is a float array, or (bytes array, ggml type) for raw data."""
    writer = gguf.GGUFWriter(path, arch)
    for key, value in (kv or {}).items():
        writer.add_string(key, value)
    for name, value in tensors.items():
        if isinstance(value, tuple):
            writer.add_tensor(name, value[0], raw_dtype=value[1])
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- orientation and plain types ---------------------------------------------------------------
def test_plain_types_load_as_the_array_written_in_its_orientation(tmp_path):
    rng = _rng()
    w32 = rng.standard_normal((48, 80)).astype(np.float32)  # not square: a transpose fails
    w16 = rng.standard_normal((24, 40)).astype(np.float16)
    w64 = rng.standard_normal((12, 20))
    wbf = rng.standard_normal((16, 64)).astype(np.float32)
    path = _write(
        tmp_path / "m.gguf",
        {
            "blk.0.attn_q.weight": w32,
            "blk.0.attn_k.weight": w16,
            "blk.0.attn_v.weight": w64,
            "blk.0.ffn_up.weight": (quantize(wbf, T.BF16), T.BF16),
        },
    )
    header = read_gguf_header(path)
    assert header.tensors["blk.0.attn_q.weight"].ne == (80, 48)  # ggml's ne: reversed
    src = open_source(path)
    assert isinstance(src, GGUFSource)
    e = {x.name: x for x in src.entries()}
    assert (e["blk.0.attn_q.weight"].shape, e["blk.0.attn_q.weight"].dtype) == ((48, 80), "float32")
    got = e["blk.0.attn_q.weight"].load()
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), w32)
    got = e["blk.0.attn_k.weight"].load()
    assert got.dtype == torch.float16 and np.array_equal(got.numpy(), w16)
    got = e["blk.0.attn_v.weight"].load()
    assert got.dtype == torch.float64 and np.array_equal(got.numpy(), w64)
    got = e["blk.0.ffn_up.weight"].load()
    assert e["blk.0.ffn_up.weight"].dtype == "bfloat16" and got.dtype == torch.bfloat16
    assert torch.equal(got, torch.from_numpy(wbf).bfloat16())


def test_header_agrees_with_gguf_reader(tmp_path):
    rng = _rng(1)
    tensors = {
        "token_embd.weight": rng.standard_normal((100, 64)).astype(np.float16),
        "blk.0.ffn_down.weight": (quantize(rng.standard_normal((64, 128)), T.Q4_0), T.Q4_0),
        "blk.0.attn_norm.weight": np.ones(64, dtype=np.float32),
    }
    path = _write(tmp_path / "m.gguf", tensors, kv={"general.name": "tiny"})
    mine = read_gguf_header(path)
    reader = gguf.GGUFReader(path)
    assert [t.name for t in reader.tensors] == list(mine.tensors)
    for t in reader.tensors:
        info = mine.tensors[t.name]
        assert info.ne == tuple(int(d) for d in t.shape)
        assert info.type_name == t.tensor_type.name
        assert mine.data_start + info.offset == t.data_offset
        assert info.n_bytes == t.n_bytes
    assert mine.metadata["general.name"] == "tiny"
    assert mine.metadata["general.architecture"] == "llama"


# -- block-quantized types ---------------------------------------------------------------------
# (type, bound on the relative Frobenius error of a Gaussian matrix)
_ROUND_TRIP = [
    (T.Q8_0, 0.01),
    (T.Q5_0, 0.05),
    (T.Q5_1, 0.05),
    (T.Q4_0, 0.1),
    (T.Q4_1, 0.1),
    (T.MXFP4, 0.2),
    (T.TQ2_0, 1.0),  # ternary: a code, not an approximation of a Gaussian
    (T.TQ1_0, 1.0),
]


@pytest.mark.parametrize(("qtype", "bound"), _ROUND_TRIP, ids=lambda v: getattr(v, "name", ""))
def test_quantized_types_dequantize_to_the_matrix_they_encode(tmp_path, qtype, bound):
    w = _rng(2).standard_normal((40, 512)).astype(np.float32)
    q = quantize(w, qtype)
    path = _write(tmp_path / "q.gguf", {"blk.0.ffn_gate.weight": (q, qtype)})
    (entry,) = open_source(path).entries()
    assert (entry.shape, entry.dtype, entry.skip_reason) == ((40, 512), qtype.name, None)
    got = entry.load()
    assert got.dtype == torch.float32 and tuple(got.shape) == (40, 512)
    np.testing.assert_array_equal(got.numpy(), dequantize(q, qtype))
    rel = np.linalg.norm(got.numpy() - w) / np.linalg.norm(w)
    assert rel < bound
    if bound < 1:  # row i of the file is row i of the matrix (a transpose is far off)
        assert np.linalg.norm(got.numpy()[:5] - w[:5]) / np.linalg.norm(w[:5]) < bound


def _f16(x):
    return np.asarray(x, np.float16).tobytes()


def _scale_min_k4(j, q):
    """ggml-quants.c get_scale_min_k4: the 6-bit scale and min of sub-block j."""
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def _ref_q4_k(block):
    """dequantize_row_q4_K of ggml-quants.c, for one 144-byte block."""
    d, dmin = np.frombuffer(block[:4], np.float16).astype(np.float32)
    scales, qs = block[4:16], block[16:144]
    y = np.empty(256, np.float32)
    for k, j in enumerate(range(0, 256, 64)):
        sc1, m1 = _scale_min_k4(2 * k, scales)
        sc2, m2 = _scale_min_k4(2 * k + 1, scales)
        q = qs[32 * k : 32 * k + 32]
        y[j : j + 32] = d * sc1 * (q & 0xF) - dmin * m1
        y[j + 32 : j + 64] = d * sc2 * (q >> 4) - dmin * m2
    return y


def _ref_q5_k(block):
    """dequantize_row_q5_K of ggml-quants.c, for one 176-byte block."""
    d, dmin = np.frombuffer(block[:4], np.float16).astype(np.float32)
    scales, qh, ql = block[4:16], block[16:48], block[48:176]
    y = np.empty(256, np.float32)
    for k, j in enumerate(range(0, 256, 64)):
        sc1, m1 = _scale_min_k4(2 * k, scales)
        sc2, m2 = _scale_min_k4(2 * k + 1, scales)
        q = ql[32 * k : 32 * k + 32]
        hi1 = np.where(qh & (1 << (2 * k)), 16, 0)
        hi2 = np.where(qh & (2 << (2 * k)), 16, 0)
        y[j : j + 32] = d * sc1 * ((q & 0xF) + hi1) - dmin * m1
        y[j + 32 : j + 64] = d * sc2 * ((q >> 4) + hi2) - dmin * m2
    return y


def _ref_q6_k(block):
    """dequantize_row_q6_K of ggml-quants.c, for one 210-byte block."""
    ql, qh = block[:128].astype(np.int32), block[128:192].astype(np.int32)
    sc = block[192:208].view(np.int8).astype(np.float32)
    d = np.frombuffer(block[208:210], np.float16).astype(np.float32)[0]
    y = np.empty(256, np.float32)
    for half in range(2):
        L, H, S, out = ql[64 * half :], qh[32 * half :], sc[8 * half :], 128 * half
        for lane in range(32):
            s = lane // 16
            q1 = ((L[lane] & 0xF) | (((H[lane] >> 0) & 3) << 4)) - 32
            q2 = ((L[lane + 32] & 0xF) | (((H[lane] >> 2) & 3) << 4)) - 32
            q3 = ((L[lane] >> 4) | (((H[lane] >> 4) & 3) << 4)) - 32
            q4 = ((L[lane + 32] >> 4) | (((H[lane] >> 6) & 3) << 4)) - 32
            y[out + lane] = d * S[s] * q1
            y[out + lane + 32] = d * S[s + 2] * q2
            y[out + lane + 64] = d * S[s + 4] * q3
            y[out + lane + 96] = d * S[s + 6] * q4
    return y


def _k_blocks(qtype, n_blocks, rng):
    """Random blocks of a K-quant type, with finite half-precision scales."""
    size = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    scales = _f16(rng.uniform(0.001, 0.01, (n_blocks, 2)))
    if qtype == T.Q6_K:  # d last
        blocks[:, 208:210] = np.frombuffer(scales, np.uint8).reshape(n_blocks, 2, 2)[:, 0]
    else:  # d, dmin first
        blocks[:, :4] = np.frombuffer(scales, np.uint8).reshape(n_blocks, 4)
    return blocks


@pytest.mark.parametrize(
    ("qtype", "ref"), [(T.Q4_K, _ref_q4_k), (T.Q5_K, _ref_q5_k), (T.Q6_K, _ref_q6_k)]
)
def test_k_quants_match_ggml_reference_decoder(tmp_path, qtype, ref):
    rows, cols = 12, 512  # two 256-element super-blocks per row; 12 >= min_dim
    blocks = _k_blocks(qtype, rows * cols // 256, _rng(3))
    data = blocks.reshape(rows, -1)
    path = _write(tmp_path / "k.gguf", {"blk.0.ffn_up.weight": (data, qtype)})
    (entry,) = open_source(path).entries()
    assert (entry.shape, entry.dtype, entry.skip_reason) == ((rows, cols), qtype.name, None)
    expected = np.concatenate([ref(b) for b in blocks]).reshape(rows, cols)
    np.testing.assert_allclose(entry.load().numpy(), expected, rtol=1e-6, atol=1e-7)


def test_other_types_are_listed_as_skipped_with_the_reason(tmp_path):
    rng = _rng(4)
    iq = rng.integers(0, 256, (16, 2 * gguf.GGML_QUANT_SIZES[T.IQ2_XXS][1]), dtype=np.uint8)
    path = _write(
        tmp_path / "m.gguf",
        {
            "blk.0.ffn_up.weight": (iq, T.IQ2_XXS),
            "blk.0.attn_q.weight": rng.integers(0, 9, (16, 16)).astype(np.int32),
            "blk.0.ffn_gate_exps.weight": rng.standard_normal((4, 16, 32)).astype(np.float32),
            "blk.0.attn_norm.weight": np.ones(32, np.float32),
            "token_embd.weight": rng.standard_normal((50, 32)).astype(np.float32),
        },
    )
    e = {x.name: x for x in open_source(path).entries()}
    reason = e["blk.0.ffn_up.weight"].skip_reason
    assert reason.startswith("GGUF type IQ2_XXS is not read") and "Q8_0" in reason
    assert e["blk.0.ffn_up.weight"].shape == (16, 512)
    assert "non-floating dtype int32" in e["blk.0.attn_q.weight"].skip_reason
    assert e["blk.0.ffn_gate_exps.weight"].skip_reason == "3-D tensor with no known matrix layout"
    assert e["blk.0.attn_norm.weight"].skip_reason == "1-D tensor (bias or norm scale)"
    assert e["token_embd.weight"].kind == "embedding" and not e["token_embd.weight"].skipped


def test_entries_are_in_model_order(tmp_path):
    w = np.zeros((16, 32), np.float32)
    names = [
        "output.weight",
        "blk.10.ffn_down.weight",
        "blk.2.ffn_up.weight",
        "blk.2.attn_output.weight",
        "blk.2.attn_q.weight",
        "token_embd.weight",
    ]
    path = _write(tmp_path / "m.gguf", dict.fromkeys(names, w))
    assert [e.name for e in open_source(path).entries()] == [
        "token_embd.weight",
        "blk.2.attn_q.weight",
        "blk.2.attn_output.weight",
        "blk.2.ffn_up.weight",
        "blk.10.ffn_down.weight",
        "output.weight",
    ]


# -- analyze, describe, compare ----------------------------------------------------------------
@pytest.fixture
def pair(tmp_path):
    """A Q8_0 GGUF file and the float32 matrices it was made from."""
    rng = _rng(5)
    ws = {
        "blk.0.attn_q.weight": rng.standard_normal((64, 96)).astype(np.float32),
        "blk.0.ffn_up.weight": (rng.standard_normal((96, 64)) * np.logspace(-1, 0, 64)).astype(
            np.float32
        ),
    }
    q = {n: (quantize(w, T.Q8_0), T.Q8_0) for n, w in ws.items()}
    return _write(tmp_path / "q8.gguf", q, kv={"general.name": "pair"}), ws


def test_analyze_describe_and_compare_read_gguf(pair, tmp_path, capsys):
    path, ws = pair
    report = analyze(path, progress=False)
    rows = {r["name"]: r for r in report.weights}
    ref = {r["name"]: r for r in analyze(ws, progress=False).weights}
    for name in ws:
        assert rows[name]["status"] == "ok" and rows[name]["dtype"] == "Q8_0"
        # Q8_0 rounds each weight to 1/254 of its block's largest: about 1e-3 here
        assert rows[name]["stable_rank"] == pytest.approx(ref[name]["stable_rank"], rel=3e-3)
        deq = {name: dequantize(quantize(ws[name], T.Q8_0), T.Q8_0)}
        exact = analyze(deq, progress=False).weights[0]
        assert rows[name]["stable_rank"] == pytest.approx(exact["stable_rank"], rel=1e-12)
    assert main(["describe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "GGUF file" in out and "name pair" in out and "types Q8_0 x 2" in out
    assert "Q8_0" in out.splitlines()[1] and "64x96" in out
    from infospec.analysis.compare import compare

    same = compare(path, path, progress=False)
    assert all(r["status"] == "ok" for r in same.weights) and len(same.weights) == 2
    assert all(r["rel_delta"] == 0 and r["numerical_rank"] == 0 for r in same.weights)


# -- hostile files -----------------------------------------------------------------------------
def _s(text):
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _gguf_bytes(*, version=3, kvs=b"", n_kv=0, infos=b"", n_tensors=0, data=b"", align=32):
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + kvs + infos
    pad = -len(head) % align
    return head + bytes(pad) + data


def _info(name, ne, code=0, offset=0):
    return _s(name) + struct.pack(f"<I{len(ne)}Q", len(ne), *ne) + struct.pack("<IQ", code, offset)


def _valid():
    data = np.arange(16 * 16, dtype=np.float32).tobytes()
    return _gguf_bytes(infos=_info("w", (16, 16)), n_tensors=1, data=data)


def _refused(tmp_path, raw, *matches, name="h.gguf"):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(SourceError) as info:
        GGUFSource(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for m in matches:
        assert m in message, message
    return message


def test_hand_built_file_is_valid(tmp_path):
    path = tmp_path / "ok.gguf"
    path.write_bytes(_valid())
    (entry,) = open_source(path).entries()
    assert np.array_equal(entry.load().numpy().ravel(), np.arange(256, dtype=np.float32))


def test_every_truncation_is_a_source_error(tmp_path):
    raw = _valid()
    for cut in [*range(0, 80), len(raw) - 1]:
        _refused(tmp_path, raw[:cut], "GGUF file")


def test_bad_magic_version_and_endianness(tmp_path):
    raw = _valid()
    _refused(tmp_path, b"GGUX" + raw[4:], "magic bytes 'GGUF'")
    _refused(tmp_path, _gguf_bytes(version=1) + bytes(64), "version 1", "convert it again")
    _refused(tmp_path, _gguf_bytes(version=7) + bytes(64), "GGUF version 7")
    big = b"GGUF" + struct.pack(">IQQ", 3, 0, 0) + bytes(32)
    _refused(tmp_path, big, "big-endian")
    with pytest.raises(SourceError, match="no format infospec reads"):
        open_source(_write_raw(tmp_path, b"GGUX" + raw[4:]))


def _write_raw(tmp_path, raw):
    path = tmp_path / "raw.gguf"
    path.write_bytes(raw)
    return path


def test_bogus_counts_and_sizes_fail_at_once(tmp_path):
    _refused(
        tmp_path, _gguf_bytes(n_tensors=2**63) + bytes(64), "declares 9223372036854775808 tensors"
    )
    _refused(tmp_path, _gguf_bytes(n_kv=2**40) + bytes(64), "1099511627776 key-value pairs")
    huge_str = _s("k")[:0] + struct.pack("<Q", 2**62) + b"k"
    _refused(
        tmp_path, _gguf_bytes(kvs=huge_str, n_kv=1) + bytes(64), "truncated", "key of metadata"
    )
    array = _s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 2**60)  # float32 x 2**60
    _refused(tmp_path, _gguf_bytes(kvs=array, n_kv=1) + bytes(64), "truncated", "scores")
    strings = _s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**59)
    _refused(
        tmp_path, _gguf_bytes(kvs=strings, n_kv=1) + bytes(64), "of 576460752303423488 strings"
    )
    value = _s("general.name") + struct.pack("<I", 8) + struct.pack("<Q", 2**50)
    _refused(tmp_path, _gguf_bytes(kvs=value, n_kv=1) + bytes(64), "truncated", "general.name")
    long_key = _s("k" * 70_000) + struct.pack("<IB", 0, 1)
    _refused(tmp_path, _gguf_bytes(kvs=long_key, n_kv=1) + bytes(64), "over the 65535 bytes")


def test_bad_tensor_infos(tmp_path):
    def one(info, data=b"", **kw):
        return _gguf_bytes(infos=info, n_tensors=1, data=data, **kw)

    _refused(tmp_path, one(_info("w", (2**40, 2**20))), "truncated", "tensor 'w'")
    _refused(tmp_path, one(_info("w", (2**32, 2**32, 2**32))), "more than 2**63 elements")
    _refused(tmp_path, one(_info("w", (1, 1, 1, 1, 1))), "5 dimensions")
    _refused(
        tmp_path,
        one(_info("w", (16, 16), offset=3), bytes(2048)),
        "not a multiple of the alignment",
    )
    _refused(
        tmp_path, one(_info("w", (33, 2), code=8), bytes(4096)), "not a multiple of the Q8_0 block"
    )
    two = _info("a", (16, 16)) + _info("b", (16, 16), offset=512)
    _refused(tmp_path, _gguf_bytes(infos=two, n_tensors=2, data=bytes(2048)), "overlaps")
    dup = _info("a", (16,)) + _info("a", (16,), offset=64)
    _refused(tmp_path, _gguf_bytes(infos=dup, n_tensors=2, data=bytes(128)), "'a' twice")
    key = _s("general.name") + struct.pack("<I", 8) + _s("x")
    _refused(tmp_path, _gguf_bytes(kvs=key + key, n_kv=2), "metadata key 'general.name' twice")
    _refused(
        tmp_path,
        _gguf_bytes(kvs=_s("k") + struct.pack("<I", 99), n_kv=1) + bytes(8),
        "value type 99",
    )
    align = _s("general.alignment") + struct.pack("<II", 4, 48)
    _refused(tmp_path, _gguf_bytes(kvs=align, n_kv=1) + bytes(8), "power of two")
    nested = _s("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 20 + bytes(64)
    _refused(tmp_path, _gguf_bytes(kvs=nested, n_kv=1) + bytes(64), "nests arrays more than 8 deep")
    _refused(tmp_path, _gguf_bytes() + bytes(8), "holds no tensors")
    unknown = one(_info("w", (16, 16), code=77), bytes(1024))
    path = _write_raw(tmp_path, unknown)
    (entry,) = GGUFSource(path).entries()
    assert "GGUF type 77 is unknown to the installed gguf package" in entry.skip_reason


def test_file_changed_after_opening_is_a_source_error(tmp_path):
    path = _write_raw(tmp_path, _valid())
    (entry,) = GGUFSource(path).entries()
    path.write_bytes(_valid()[:100])
    with pytest.raises(SourceError, match=r"Cannot read tensor 'w' from the GGUF file .*open it"):
        entry.load()
