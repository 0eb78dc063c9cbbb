"""Safetensors files, sharded checkpoints and model folders: lazy reading and bad input."""

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from infospec import SourceError
from infospec.sources import (
    SafetensorsSource,
    open_source,
    read_safetensors_header,
)
from infospec.sources import safetensors_source as st_module


def _tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.layer.0.attention.self.query.weight": torch.randn(16, 12, generator=g),
        "encoder.layer.0.attention.self.query.bias": torch.randn(16, generator=g),
        "encoder.layer.10.output.dense.weight": torch.randn(12, 20, generator=g).bfloat16(),
        "encoder.layer.2.output.dense.weight": torch.randn(12, 20, generator=g).half(),
        "embeddings.word_embeddings.weight": torch.randn(50, 12, generator=g),
        "embeddings.position_ids": torch.arange(30).unsqueeze(0),
        "conv.weight": torch.randn(14, 3, 3, 3, generator=g, dtype=torch.float64),
        "attn.in_proj_weight": torch.randn(36, 12, generator=g),
        "tiny.weight": torch.randn(4, 12, generator=g),
    }


@pytest.fixture
def tensors():
    return _tensors()


@pytest.fixture
def st_file(tmp_path, tensors):
    path = tmp_path / "model.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def _header_bytes(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, n


# --------------------------------------------------------------------------- a single file


def test_file_entries_names_shapes_dtypes_kinds(st_file, tensors):
    src = open_source(st_file)
    assert isinstance(src, SafetensorsSource)
    got = {e.name: (e.shape, e.dtype, e.kind, e.skip_reason) for e in src.entries()}
    assert got == {
        "attn.in_proj_weight": ((36, 12), "float32", "in_proj", None),
        "conv.weight": ((14, 3, 3, 3), "float64", "conv2d", None),
        "embeddings.position_ids": (
            (1, 30),
            "int64",
            "matrix",
            "non-floating dtype int64 (an index, mask or quantized buffer, not a weight)",
        ),
        "embeddings.word_embeddings.weight": ((50, 12), "float32", "embedding", None),
        "encoder.layer.0.attention.self.query.bias": (
            (16,),
            "float32",
            "other",
            "1-D tensor (bias or norm scale)",
        ),
        "encoder.layer.0.attention.self.query.weight": ((16, 12), "float32", "matrix", None),
        "encoder.layer.2.output.dense.weight": ((12, 20), "float16", "matrix", None),
        "encoder.layer.10.output.dense.weight": ((12, 20), "bfloat16", "matrix", None),
        "tiny.weight": (
            (4, 12),
            "float32",
            "matrix",
            "smaller side 4 < min_dim=10 (matrix 4 x 12)",
        ),
    }
    # natural order: layer.2 before layer.10
    names = [e.name for e in src.entries()]
    assert names.index("encoder.layer.2.output.dense.weight") < names.index(
        "encoder.layer.10.output.dense.weight"
    )
    assert all(e.origin == str(st_file) for e in src.entries())
    assert src.metadata == {"format": "pt"} and src.files == [st_file] and src.index is None
    assert src.name == "model.safetensors"
    assert src.description.startswith(f"safetensors file '{st_file}' (9 tensors")


def test_file_values_equal_the_saved_ones_in_every_dtype(st_file, tensors):
    for e in open_source(st_file).entries():
        loaded = e.load()
        assert loaded.dtype == tensors[e.name].dtype
        assert torch.equal(loaded, tensors[e.name]), e.name


def test_header_reader(st_file, tensors):
    header = read_safetensors_header(str(st_file))
    assert set(header.tensors) == set(tensors)
    info = header.tensors["encoder.layer.10.output.dense.weight"]
    assert (info.dtype, info.shape, info.end - info.begin) == ("BF16", (12, 20), 12 * 20 * 2)
    assert header.file_size == st_file.stat().st_size
    assert header.metadata == {"format": "pt"}


def test_entries_read_no_tensor_data(st_file, monkeypatch):
    """Listing never opens the file through safetensors; load() does."""

    def forbidden(*args, **kwargs):
        raise AssertionError("tensor data read while listing")

    import safetensors

    monkeypatch.setattr(safetensors, "safe_open", forbidden)
    src = open_source(st_file)
    assert len(src.entries()) == 9
    (attn,) = [e for e in src.entries() if e.name == "attn.in_proj_weight"]
    assert attn.matrix_shape == (12, 12)
    with pytest.raises(SourceError, match=r"Cannot read tensor 'attn\.in_proj_weight'"):
        attn.load()


def test_huge_sparse_file_is_listed_instantly_and_loaded_one_tensor_at_a_time(tmp_path):
    """A 16 GB checkpoint (sparse on disk): listing reads 8 bytes + the header only."""
    big = 65536 * 32768 * 2  # a bf16 65536 x 32768 matrix: 4 GiB
    header = {
        "huge.0.weight": {"dtype": "BF16", "shape": [65536, 32768], "data_offsets": [0, big]},
        "huge.1.weight": {"dtype": "BF16", "shape": [65536, 32768], "data_offsets": [big, 2 * big]},
        "huge.2.weight": {
            "dtype": "BF16",
            "shape": [65536, 32768],
            "data_offsets": [2 * big, 3 * big],
        },
        "huge.3.weight": {
            "dtype": "BF16",
            "shape": [65536, 32768],
            "data_offsets": [3 * big, 4 * big],
        },
        "small.weight": {
            "dtype": "F32",
            "shape": [12, 12],
            "data_offsets": [4 * big, 4 * big + 576],
        },
    }
    text = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        fh.truncate(8 + len(text) + 4 * big + 576)
    if getattr(path.stat(), "st_blocks", None) is None or path.stat().st_blocks * 512 > 2**20:
        pytest.skip("this filesystem does not store sparse files")
    src = open_source(path)
    entries = {e.name: e for e in src.entries()}
    assert entries["huge.3.weight"].shape == (65536, 32768)
    assert entries["huge.3.weight"].dtype == "bfloat16"
    assert entries["huge.3.weight"].skip_reason is None
    assert "17179.9 MB" in src.description
    small = entries["small.weight"].load()  # memory-mapped: only this tensor is read
    assert torch.equal(small, torch.zeros(12, 12))


def test_nan_and_inf_are_not_source_errors(tmp_path):
    w = torch.randn(12, 12)
    w[0, 0] = float("nan")
    w[3, 4] = float("inf")
    save_file({"w": w}, tmp_path / "nan.safetensors")
    (e,) = open_source(tmp_path / "nan.safetensors").entries()
    assert e.skip_reason is None
    assert torch.equal(torch.isnan(e.load()), torch.isnan(w))


def test_other_float_dtypes_and_unreadable_ones(tmp_path):
    w8 = torch.randn(12, 12).to(torch.float8_e4m3fn)
    save_file({"w8": w8}, tmp_path / "f8.safetensors")
    (e,) = open_source(tmp_path / "f8.safetensors").entries()
    assert e.dtype == "float8_e4m3fn" and e.skip_reason is None
    assert torch.equal(e.load().float(), w8.float())
    # a 4-bit tensor has no plain torch dtype: listed, skipped with the reason
    header = json.dumps({"q": {"dtype": "F4", "shape": [12, 12], "data_offsets": [0, 72]}})
    path = tmp_path / "f4.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(72))
    (e,) = open_source(path).entries()
    assert e.dtype == "F4" and e.skip_reason == "dtype F4 cannot be read as a torch tensor"


def test_min_dim_for_files(st_file):
    reasons = {e.name: e.skip_reason for e in open_source(st_file, min_dim=3).entries()}
    assert reasons["tiny.weight"] is None
    reasons = {e.name: e.skip_reason for e in open_source(st_file, min_dim=13).entries()}
    assert reasons["encoder.layer.2.output.dense.weight"] == (
        "smaller side 12 < min_dim=13 (matrix 12 x 20)"
    )


# --------------------------------------------------------------------------- sharded checkpoints


@pytest.fixture
def sharded(tmp_path, tensors):
    names = sorted(tensors)
    first, second = names[:4], names[4:]
    save_file({n: tensors[n] for n in first}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({n: tensors[n] for n in second}, tmp_path / "model-00002-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in first}
    weight_map |= {n: "model-00002-of-00002.safetensors" for n in second}
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    return index


def test_sharded_checkpoint_equals_the_single_file(sharded, st_file, tensors):
    st_file.rename(sharded.parent.parent / "single.safetensors")
    single = open_source(sharded.parent.parent / "single.safetensors")
    src = open_source(sharded)
    assert src.index == sharded and len(src.files) == 2
    strip = [(e.name, e.shape, e.dtype, e.kind, e.skip_reason) for e in src.entries()]
    assert strip == [(e.name, e.shape, e.dtype, e.kind, e.skip_reason) for e in single.entries()]
    for e in src.entries():
        assert torch.equal(e.load(), tensors[e.name])
        assert e.origin.endswith(
            sharded.parent.name
            + "/"
            + (
                "model-00001-of-00002.safetensors"
                if e.name in sorted(tensors)[:4]
                else "model-00002-of-00002.safetensors"
            )
        )
    assert "sharded checkpoint" in src.description and "2 shard(s)" in src.description
    # the folder resolves to the index
    folder = open_source(sharded.parent)
    assert folder.index == sharded.resolve() or folder.index == sharded
    assert [e.name for e in folder.entries()] == [e.name for e in src.entries()]


def test_missing_shard_names_the_shard_and_the_index(sharded):
    (sharded.parent / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(SourceError) as info:
        open_source(sharded)
    msg = str(info.value)
    assert "shard 'model-00002-of-00002.safetensors'" in msg
    assert f"checkpoint index '{sharded}'" in msg
    assert "for 5 tensors" in msg and "is missing" in msg


def test_index_that_is_not_json_or_lacks_weight_map(sharded):
    sharded.write_text('{"weight_map": {"a": "x.safetensors"')
    with pytest.raises(
        SourceError,
        match=r"index '.*model.safetensors.index.json' is not valid "
        r"JSON \(Expecting",
    ):
        open_source(sharded)
    sharded.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(SourceError, match=r"has no 'weight_map' \(keys found: 'metadata'\)"):
        open_source(sharded)
    sharded.write_text(json.dumps({"weight_map": {"a": 3}}))
    with pytest.raises(SourceError, match="must map tensor names"):
        open_source(sharded)
    sharded.write_text(json.dumps({"weight_map": {}}))
    with pytest.raises(SourceError, match="lists no tensors"):
        open_source(sharded)


def test_index_naming_a_tensor_its_shard_lacks(sharded):
    data = json.loads(sharded.read_text())
    data["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors"
    sharded.write_text(json.dumps(data))
    with pytest.raises(
        SourceError,
        match=r"maps tensor 'ghost\.weight' to the shard "
        r"'model-00001-of-00002\.safetensors', whose header",
    ):
        open_source(sharded)


# --------------------------------------------------------------------------- model folders


def test_model_folder_with_config(st_file):
    (st_file.parent / "config.json").write_text(json.dumps({"model_type": "bert"}))
    src = open_source(st_file.parent)
    assert src.config == {"model_type": "bert"} and src.model_type == "bert"
    assert src.description.startswith(f"model folder '{st_file.parent}' (model_type bert")
    # the config.json itself points at its folder
    assert open_source(st_file.parent / "config.json").files == [st_file]


def test_gpt2_folder_marks_conv1d_weights_transposed(tmp_path):
    tensors = {
        "h.0.attn.c_attn.weight": torch.randn(16, 48),
        "h.0.mlp.c_fc.weight": torch.randn(16, 64),
        "h.0.mlp.c_proj.weight": torch.randn(64, 16),
        "wte.weight": torch.randn(100, 16),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    alone = {e.name: e.kind for e in open_source(tmp_path / "model.safetensors").entries()}
    assert alone["h.0.attn.c_attn.weight"] == "matrix"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    entries = {e.name: e for e in open_source(tmp_path).entries()}
    assert entries["h.0.attn.c_attn.weight"].kind == "conv1d_transposed"
    assert entries["h.0.attn.c_attn.weight"].matrix_shape == (48, 16)
    # the file itself, passed beside its config.json (as save_pretrained writes them),
    # reads the same config: the same kinds and shapes as the folder
    beside = {e.name: e for e in open_source(tmp_path / "model.safetensors").entries()}
    assert {n: (e.kind, e.matrix_shape) for n, e in beside.items()} == {
        n: (e.kind, e.matrix_shape) for n, e in entries.items()
    }
    assert entries["h.0.mlp.c_proj.weight"].matrix_shape == (16, 64)
    assert entries["wte.weight"].kind == "embedding"


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match=r"folder '.*' holds no \.safetensors file\.$"):
        open_source(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(
        SourceError,
        match=r"holds no \.safetensors file\. It holds PyTorch "
        r"pickle checkpoint\(s\) \(pytorch_model\.bin\), which SafetensorsSource does not "
        r"read: pass the folder to open_source",
    ):
        SafetensorsSource(tmp_path)
    # open_source reads the folder's pickle, and says that this one is not a checkpoint
    with pytest.raises(SourceError, match=r"pytorch_model\.bin' is in no format infospec reads"):
        open_source(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    (tmp_path / "unet").mkdir()
    save_file({"w": torch.ones(12, 12)}, tmp_path / "unet" / "diffusion.safetensors")
    with pytest.raises(SourceError, match="Subfolders with safetensors files: unet; pass one"):
        open_source(tmp_path)
    save_file({"w": torch.ones(12, 12)}, tmp_path / "a.safetensors")
    assert [e.name for e in open_source(tmp_path).entries()] == ["w"]
    save_file({"w": torch.ones(12, 12)}, tmp_path / "b.safetensors")
    with pytest.raises(
        SourceError,
        match=r"holds 2 safetensors files \(a.safetensors, "
        r"b.safetensors\) and no index",
    ):
        open_source(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "a.safetensors").read_bytes())
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"model config '.*config.json' is not valid JSON"):
        open_source(tmp_path)


# --------------------------------------------------------------------------- bad files


def test_missing_file_and_unsupported_formats(tmp_path):
    with pytest.raises(SourceError, match=r"No such file or folder: '.*nope.safetensors'"):
        open_source(tmp_path / "nope.safetensors")
    with pytest.raises(SourceError, match="infospec reads local files only"):
        open_source("some-org/some-model")
    for name, match in [
        ("w.bin", "is in no format infospec reads"),
        ("w.pt", "is in no format infospec reads"),
        ("w.gguf", "is in no format infospec reads"),
        ("w.onnx", "looks like an ONNX model"),
    ]:
        (tmp_path / name).write_bytes(b"\0" * 16)
        with pytest.raises(SourceError, match=match):
            open_source(tmp_path / name)
    with pytest.raises(SourceError, match="No such file"):
        read_safetensors_header(tmp_path / "nope.safetensors")
    with pytest.raises(SourceError, match="is a folder, not a file"):
        read_safetensors_header(tmp_path)


def _write(path, data):
    path.write_bytes(data)
    return path


def _corrupt_cases(st_file):
    raw, n = _header_bytes(st_file)
    header = json.loads(raw[8 : 8 + n])
    d = st_file.parent

    def with_header(obj, data=raw[8 + n :]):
        text = json.dumps(obj).encode()
        return struct.pack("<Q", len(text)) + text + data

    first = next(k for k in header if k != "__metadata__")
    shifted = dict(header)
    shifted[first] = dict(
        header[first],
        data_offsets=[header[first]["data_offsets"][0] + 4, header[first]["data_offsets"][1] + 4],
    )
    wrong_shape = dict(header)
    wrong_shape[first] = dict(header[first], shape=[3, 3])
    return [
        (_write(d / "empty.safetensors", b""), "is 0 bytes long, too short"),
        (_write(d / "short.safetensors", raw[:5]), "is 5 bytes long, too short"),
        (
            _write(d / "cut_header.safetensors", raw[: 8 + n // 2]),
            f"declares a header of {n} bytes but only {n // 2} bytes follow",
        ),
        (
            _write(d / "text.safetensors", b"hello world, this is not safetensors at all"),
            r"is not a safetensors file: .* \(it looks like text\)",
        ),
        (_write(d / "zero.safetensors", bytes(16)), "declares an empty header"),
        (
            _write(d / "cut_data.safetensors", raw[:-100]),
            f"is truncated: tensor '.*' ends at byte {len(raw)} but the file has only "
            f"{len(raw) - 100} bytes",
        ),
        (
            _write(d / "json.safetensors", raw[:8] + b"{" + b"x" * (n - 1) + raw[8 + n :]),
            "header that is not valid JSON",
        ),
        (
            _write(d / "utf8.safetensors", raw[:8] + b"{" + b"\xff" * (n - 1) + raw[8 + n :]),
            "header that is not UTF-8",
        ),
        (_write(d / "list.safetensors", with_header([1, 2])), "is an array, not an object"),
        (
            _write(d / "trailing.safetensors", raw + bytes(8)),
            "has 8 bytes after the last tensor's data",
        ),
        (
            _write(d / "gap.safetensors", with_header(shifted, raw[8 + n :] + bytes(4))),
            "leaves a gap after",
        ),
        (
            _write(d / "shape.safetensors", with_header(wrong_shape)),
            f"malformed header entry for tensor '{first}': shape \\(3, 3\\)",
        ),
        (
            _write(
                d / "dtype.safetensors",
                with_header({**header, first: dict(header[first], dtype="Q7")}),
            ),
            "unknown dtype 'Q7'",
        ),
        (
            _write(d / "keys.safetensors", with_header({**header, first: {"dtype": "F32"}})),
            "missing 'shape', 'data_offsets'",
        ),
        (
            _write(
                d / "offsets.safetensors",
                with_header({**header, first: dict(header[first], data_offsets=[10, 2])}),
            ),
            r"data_offsets must be \[begin, end\]",
        ),
        (
            _write(d / "meta.safetensors", with_header({**header, "__metadata__": {"a": 1}})),
            "malformed __metadata__",
        ),
    ]


def test_corrupt_files_fail_with_the_file_and_the_problem(st_file):
    for path, match in _corrupt_cases(st_file):
        with pytest.raises(SourceError, match=match) as info:
            open_source(path)
        assert f"'{path}'" in str(info.value), path.name


def test_our_checks_agree_with_safetensors_on_corrupt_files(st_file):
    """Every file we reject, safetensors rejects too (we only fail earlier, more clearly)."""
    from safetensors import safe_open

    for path, _ in _corrupt_cases(st_file):
        with pytest.raises(Exception):  # noqa: B017 - safetensors' own error types
            with safe_open(str(path), framework="pt") as fh:
                for k in fh.keys():
                    fh.get_tensor(k)


def test_file_changed_after_opening_is_reported_at_load(st_file):
    src = open_source(st_file)
    entry = src.entries()[0]
    st_file.write_bytes(st_file.read_bytes()[:100])
    with pytest.raises(
        SourceError,
        match=f"Cannot read tensor '{entry.name}' from the safetensors file '{st_file}'",
    ):
        entry.load()


def test_load_to_another_device_keeps_values(st_file, tensors):
    entry = open_source(st_file).entries()[0]
    assert torch.equal(entry.load(device="cpu"), tensors[entry.name])
    assert entry.load(device=torch.device("meta")).device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_straight_to_the_gpu(st_file, tensors):
    for e in open_source(st_file).entries():
        t = e.load(device="cuda")
        assert t.device.type == "cuda" and torch.equal(t.cpu(), tensors[e.name])


def test_module_and_file_sources_agree(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.ReLU(), torch.nn.Linear(24, 12))
    save_file(model.state_dict(), tmp_path / "m.safetensors")
    from_module = {e.name: e for e in open_source(model).entries()}
    from_file = {e.name: e for e in open_source(tmp_path / "m.safetensors").entries()}
    assert set(from_module) == set(from_file)
    for name, e in from_file.items():
        assert e.shape == from_module[name].shape and e.skip_reason == from_module[name].skip_reason
        assert torch.equal(e.load(), from_module[name].load())
    assert load_file(tmp_path / "m.safetensors").keys() == from_file.keys()


def test_safe_open_is_looked_up_at_load_time():
    # what makes test_entries_read_no_tensor_data meaningful
    assert not hasattr(st_module, "safe_open")
