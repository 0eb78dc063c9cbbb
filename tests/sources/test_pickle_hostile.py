"""Hostile torch.save files: zip bombs, re-zipped or forged archives, sparse and nested
tensors, deep nesting, truncation. Each is a SourceError naming the file (exit 2, one
line) or a skipped entry with its reason; real checkpoints keep loading."""

import struct
import zipfile

import pytest
import torch
from torch import nn

from infospec import SourceError, analyze
from infospec.cli import main
from infospec.sources import PickleSource, open_source, pickle_source
from infospec.sources.formats import check_torch_archive, sniff


@pytest.fixture
def state_dict():
    torch.manual_seed(0)
    return {"a.weight": torch.randn(20, 16), "b.weight": torch.randn(32, 24)}


@pytest.fixture
def no_torch_load(monkeypatch):
    """torch.load fails the test if called: a refusal must come before any decompression."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)


def _one_error_line(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("infospec: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    return err


def _rezip(src, out, compression=zipfile.ZIP_STORED):
    """Re-pack every member of ``src`` into ``out`` with ``compression`` (as zip -r does)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", compression=compression) as zo:
        for name in zin.namelist():
            zo.writestr(name, zin.read(name))


def _patch_central(raw: bytes, member: str, offset: int, value: int) -> bytes:
    """``raw`` with a 4-byte field of ``member``'s central directory entry set to ``value``."""
    b = bytearray(raw)
    at = b.find(b"PK\x01\x02")
    while at >= 0:
        n = struct.unpack_from("<H", b, at + 28)[0]
        if b[at + 46 : at + 46 + n].decode() == member:
            struct.pack_into("<L", b, at + offset, value)
            return bytes(b)
        at = b.find(b"PK\x01\x02", at + 1)
    raise KeyError(member)


# --- what PyTorch writes, and that it still loads


@pytest.mark.parametrize(
    "name, wrap",
    [
        ("w.pt", lambda sd: sd),
        ("last.ckpt", lambda sd: {"state_dict": sd, "epoch": 3, "hyper": {"lr": 0.1}}),
        ("pytorch_model.bin", lambda sd: sd),
    ],
)
def test_torch_save_writes_only_stored_members_and_they_pass(tmp_path, state_dict, name, wrap):
    path = tmp_path / name
    torch.save(wrap(state_dict), path)
    with zipfile.ZipFile(path) as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    check_torch_archive(path, "torch-zip")
    entries = {e.name: e for e in open_source(path).entries()}
    for key, t in state_dict.items():
        assert torch.equal(entries[key].load(), t)


def test_many_members_and_an_empty_checkpoint_pass(tmp_path):
    many = {f"layer.{i}.weight": torch.zeros(2) for i in range(3000)}
    torch.save(many, tmp_path / "many.pt")
    check_torch_archive(tmp_path / "many.pt", "torch-zip")
    assert len(open_source(tmp_path / "many.pt").entries()) == 3000


def test_a_stored_rezip_still_loads_the_same_values(tmp_path, state_dict):
    torch.save(state_dict, tmp_path / "src.pt")
    _rezip(tmp_path / "src.pt", tmp_path / "stored.pt")  # unaligned, but stored: readable
    entries = {e.name: e for e in open_source(tmp_path / "stored.pt").entries()}
    assert torch.equal(entries["a.weight"].load(), state_dict["a.weight"])


# --- compressed members: refused before torch.load reads anything


def test_zip_bomb_data_pkl_is_refused_before_torch_load(
    tmp_path, state_dict, no_torch_load, capsys
):
    torch.save(state_dict, tmp_path / "src.pt")
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(tmp_path / "src.pt") as zin, zipfile.ZipFile(bomb, "w") as zo:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith("/data.pkl"):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zo.open(info, "w", force_zip64=True) as fh:
                    fh.write(data)
                    for _ in range(4):  # 64 MiB of padding deflates to ~65 kB
                        fh.write(bytes(1 << 24))
            else:
                zo.writestr(name, data)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(
        SourceError,
        match=r"'.*bomb\.pt' is a zip archive with 1 compressed member\(s\) \(first: "
        r"'src/data\.pkl', deflated, \d+ bytes that inflate to 671\d+\), which torch\.save "
        r"never writes .*re-zipped.*re-save it with: python -c .*torch\.save",
    ):
        open_source(bomb)
    _one_error_line(capsys, ["describe", str(bomb)], "compressed member", "never writes")


def test_zip_bomb_cli_is_one_line_exit_2(tmp_path, state_dict, no_torch_load, capsys):
    torch.save(state_dict, tmp_path / "src.pt")
    _rezip(tmp_path / "src.pt", tmp_path / "bomb.pt", zipfile.ZIP_DEFLATED)
    _one_error_line(
        capsys, ["describe", str(tmp_path / "bomb.pt")], "compressed member", "torch.save"
    )


def test_deflated_storage_is_refused_not_read_as_garbage(
    tmp_path, state_dict, no_torch_load, capsys
):
    # torch.load(mmap=True) would map data/0's compressed bytes as the tensor
    torch.save(state_dict, tmp_path / "src.pt")
    path = tmp_path / "model.pt"
    _rezip(tmp_path / "src.pt", path, zipfile.ZIP_DEFLATED)
    with pytest.raises(SourceError, match=r"'.*model\.pt' is a zip archive with \d+ compressed"):
        PickleSource(path)
    _one_error_line(
        capsys,
        ["analyze", str(path), "--format", "csv", "--no-progress"],
        "compressed member",
        "re-save it with",
    )


@pytest.mark.parametrize("method", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2])
def test_other_compressions_are_refused_without_a_resave_command(tmp_path, state_dict, method):
    torch.save(state_dict, tmp_path / "src.pt")
    _rezip(tmp_path / "src.pt", tmp_path / "m.pt", method)
    with pytest.raises(
        SourceError, match=r"compressed member.*save it again with torch\.save"
    ) as e:
        open_source(tmp_path / "m.pt")
    assert "python -c" not in str(e.value)


def test_the_resave_command_reads_a_deflated_checkpoint_right(tmp_path, state_dict):
    torch.save(state_dict, tmp_path / "src.pt")
    _rezip(tmp_path / "src.pt", tmp_path / "m.pt", zipfile.ZIP_DEFLATED)
    again = torch.load(tmp_path / "m.pt", weights_only=True, map_location="cpu")  # no mmap
    torch.save(again, tmp_path / "m.pt.resaved.pt")
    entries = {e.name: e for e in open_source(tmp_path / "m.pt.resaved.pt").entries()}
    assert torch.equal(entries["a.weight"].load(), state_dict["a.weight"])


# --- headers that lie


@pytest.mark.parametrize(
    "forge, message",
    [
        (
            lambda raw, d0, d1: _patch_central(raw, d0.filename, 20, d0.file_size + 64),
            r"member '.*data/0' is stored \(uncompressed\) yet declares \d+ bytes",
        ),
        (
            lambda raw, d0, d1: _patch_central(
                _patch_central(raw, d0.filename, 20, 10**9), d0.filename, 24, 10**9
            ),
            r"member '.*data/0' declares 1000000000 bytes of data .*past the \d+ bytes",
        ),
        (
            lambda raw, d0, d1: _patch_central(
                _patch_central(raw, d0.filename, 20, d0.file_size + 800),
                d0.filename,
                24,
                d0.file_size + 800,
            ),
            r"member '.*data/1' starts at byte \d+, inside the member '.*data/0' \(overlapping",
        ),
        (
            lambda raw, d0, d1: _patch_central(raw, d1.filename, 42, d0.header_offset),
            r"member '.*data/1' has no local header of its own name",
        ),
        (
            lambda raw, d0, d1: _patch_central(raw, d1.filename, 42, len(raw) - 10),
            r"member '.*data/1' starts at byte \d+, past the file's end",
        ),
    ],
    ids=["stored-sizes-differ", "past-the-end", "overlap", "offset-elsewhere", "offset-past-end"],
)
def test_lying_zip_headers_are_refused_before_torch_load(
    tmp_path, no_torch_load, capsys, forge, message
):
    src = tmp_path / "src.pt"
    torch.save({"a.weight": torch.randn(20, 16), "b.weight": torch.randn(16, 16)}, src)
    raw = src.read_bytes()
    with zipfile.ZipFile(src) as archive:
        by_name = {i.filename.rsplit("/", 2)[-2:][-1]: i for i in archive.infolist()}
        d0, d1 = by_name["0"], by_name["1"]
    path = tmp_path / "forged.pt"
    path.write_bytes(forge(raw, d0, d1))
    with pytest.raises(
        SourceError, match=r"'.*forged\.pt' is a corrupt zip archive: its " + message
    ):
        open_source(path)
    _one_error_line(capsys, ["describe", str(path)], "corrupt zip archive")


def test_local_header_of_another_compression_is_refused(tmp_path, state_dict, no_torch_load):
    torch.save(state_dict, tmp_path / "src.pt")
    raw = bytearray((tmp_path / "src.pt").read_bytes())
    with zipfile.ZipFile(tmp_path / "src.pt") as archive:
        (d0,) = [i for i in archive.infolist() if i.filename.endswith("data/0")]
    struct.pack_into("<H", raw, d0.header_offset + 8, zipfile.ZIP_DEFLATED)
    (tmp_path / "m.pt").write_bytes(bytes(raw))
    with pytest.raises(SourceError, match=r"'.*data/0' has no local header of its own name and"):
        open_source(tmp_path / "m.pt")


# --- truncated files say so


def test_truncated_zip_checkpoint_says_truncated(tmp_path, state_dict, capsys):
    torch.save(state_dict, tmp_path / "w.pt")
    raw = (tmp_path / "w.pt").read_bytes()
    path = tmp_path / "cut.pt"
    for n in (len(raw) // 2, len(raw) - 1, 40):
        path.write_bytes(raw[:n])
        assert sniff(path) == "zip-corrupt"
        with pytest.raises(SourceError, match=r"'.*cut\.pt' is a truncated or corrupt zip") as e:
            open_source(path)
        assert "neither a PyTorch checkpoint" not in str(e.value)
    _one_error_line(capsys, ["describe", str(path)], "truncated or corrupt zip archive")


@pytest.mark.parametrize("n", [3, 5, 13, 40, 100])
def test_truncated_legacy_checkpoint_says_truncated(tmp_path, state_dict, capsys, n):
    torch.save(state_dict, tmp_path / "w.pt", _use_new_zipfile_serialization=False)
    path = tmp_path / "cut.pt"
    path.write_bytes((tmp_path / "w.pt").read_bytes()[:n])
    with pytest.raises(SourceError, match=r"'.*cut\.pt' .*truncated or corrupt") as e:
        open_source(path)
    assert "plain Python pickle" not in str(e.value) and "weights_only=False" not in str(e.value)
    err = _one_error_line(capsys, ["describe", str(path)], "truncated")
    assert "weights_only=False" not in err


def test_a_legacy_checkpoint_cut_inside_a_global_name_is_not_a_refused_global(tmp_path):
    torch.save(
        {"a.weight": torch.randn(4, 4)}, tmp_path / "w.pt", _use_new_zipfile_serialization=False
    )
    raw = (tmp_path / "w.pt").read_bytes()
    at = raw.index(b"collections\nOrderedDict\n")
    for n in (at + len("collections\n"), at + len("collections\nOrd")):
        (tmp_path / "cut.pt").write_bytes(raw[:n])
        with pytest.raises(
            SourceError,
            match=r"breaks off inside its pickle \(a global named "
            r"'collections\.\w*', cut short\): it is truncated",
        ):
            open_source(tmp_path / "cut.pt")


# --- sparse and nested tensors: skipped with their layout


@pytest.mark.parametrize(
    "layout, make",
    [
        ("sparse_coo", lambda t: t.to_sparse()),
        ("sparse_csr", lambda t: t.to_sparse_csr()),
        ("sparse_csc", lambda t: t.to_sparse_csc()),
        ("sparse_bsr", lambda t: t.to_sparse_bsr((2, 2))),
        ("sparse_bsc", lambda t: t.to_sparse_bsc((2, 2))),
    ],
)
def test_sparse_tensors_are_skipped_with_their_layout(tmp_path, state_dict, capsys, layout, make):
    path = tmp_path / "sparse.pt"
    torch.save({"s.weight": make(state_dict["a.weight"]), "b.weight": state_dict["b.weight"]}, path)
    source = open_source(path)
    entries = {e.name: e for e in source.entries()}
    s = entries["s.weight"]
    assert s.shape == (20, 16) and s.skip_reason == f"sparse tensor (layout {layout}), not read"
    assert not entries["b.weight"].skipped
    with pytest.raises(SourceError, match=rf"'s\.weight' .*sparse tensor \(layout {layout}\)"):
        s.load()
    report = analyze(source, progress=False)
    assert [r["tensor"] for r in report.weights] == ["b.weight"]
    assert main(["describe", str(path)]) == 0
    assert f"sparse tensor (layout {layout}), not read" in capsys.readouterr().out


def test_nested_tensors_are_skipped_with_their_padded_shape(tmp_path, state_dict, capsys):
    path = tmp_path / "nested.pt"
    nested = torch.nested.nested_tensor([torch.randn(3, 4), torch.randn(5, 4)])
    torch.save({"n.weight": nested, "b.weight": state_dict["b.weight"]}, path)
    entries = {e.name: e for e in open_source(path).entries()}
    n = entries["n.weight"]
    assert n.shape == (2, 5, 4) and n.kind == "other"
    assert (
        n.skip_reason == "nested tensor (layout strided, 2 tensors of their own shapes), not read"
    )
    with pytest.raises(SourceError, match=r"'n\.weight' .*it is a nested tensor"):
        n.load()
    assert [r["tensor"] for r in analyze(path, progress=False).weights] == ["b.weight"]
    assert main(["analyze", str(path), "--format", "csv", "--no-progress"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_meta_tensors_are_skipped_as_having_no_data(tmp_path, state_dict):
    path = tmp_path / "meta.pt"
    torch.save({"m.weight": torch.empty(20, 16, device="meta"), **state_dict}, path)
    entries = {e.name: e for e in open_source(path).entries()}
    assert entries["m.weight"].skip_reason == "tensor on the meta device (no data)"
    with pytest.raises(SourceError, match=r"'m\.weight' .*meta device"):
        entries["m.weight"].load()
    assert {r["tensor"] for r in analyze(path, progress=False).weights} == set(state_dict)


# --- nesting: unwrapped up to MAX_NESTING keys, else "holds no tensors" saying where


def _nest(sd, keys):
    for key in reversed(keys):
        sd = {key: sd}
    return sd


@pytest.mark.parametrize("depth", [5, pickle_source.MAX_NESTING])
def test_state_dicts_nested_up_to_max_nesting_are_unwrapped(tmp_path, state_dict, depth):
    torch.save(_nest(state_dict, ["state_dict"] * depth), tmp_path / "n.pt")
    source = open_source(tmp_path / "n.pt")
    assert [e.name for e in source.entries()] == list(state_dict)
    assert "unwrapped checkpoint" + "['state_dict']" * depth in source.description


def test_deeper_nesting_is_refused_saying_where_the_tensors_are(tmp_path, state_dict, capsys):
    depth = pickle_source.MAX_NESTING + 1
    path = tmp_path / "n.pt"
    torch.save(_nest(state_dict, ["state_dict"] * depth), path)
    with pytest.raises(
        SourceError,
        match=r"'.*n\.pt' holds no tensors at checkpoint nor under any of the keys .*tensors "
        r"were found at checkpoint(\['state_dict'\]){9} \(2 tensors\), which the rule does "
        r"not reach \(it unwraps only those keys, at most 8 deep\)",
    ):
        open_source(path)
    _one_error_line(capsys, ["describe", str(path)], "holds no tensors", "tensors were found at")


def test_tensors_under_other_keys_are_refused_saying_where(tmp_path, state_dict):
    torch.save({"a": {"b": {"c": {"d": {"e": state_dict}}}}}, tmp_path / "n.pt")
    with pytest.raises(
        SourceError,
        match=r"holds no tensors at checkpoint .*keys found: 'a'\); tensors were found at "
        r"checkpoint\['a'\]\['b'\]\['c'\]\['d'\]\['e'\] \(2 tensors\)",
    ):
        open_source(tmp_path / "n.pt")
    torch.save({"epoch": 1}, tmp_path / "empty.pt")  # nothing anywhere: no hint
    with pytest.raises(SourceError, match=r"holds no tensors") as e:
        open_source(tmp_path / "empty.pt")
    assert "were found" not in str(e.value)


def test_shared_and_cyclic_nesting_is_searched_in_bounded_time(tmp_path):
    # every key of every level points to the same next level: 11**8 paths, 9 mappings
    level: dict = {"epoch": 1}
    for _ in range(pickle_source.MAX_NESTING):
        level = dict.fromkeys(pickle_source.NESTED_KEYS, level)
    cyclic: dict = {}
    for key in pickle_source.NESTED_KEYS:
        cyclic[key] = cyclic
    for name, obj in (("shared.pt", level), ("cyclic.pt", cyclic)):
        torch.save(obj, tmp_path / name)
        with pytest.raises(SourceError, match=r"holds no tensors"):
            open_source(tmp_path / name)


def test_real_checkpoints_still_load(tmp_path):
    net = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 16))
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "l.ckpt"
    )
    assert [e.name for e in open_source(tmp_path / "l.ckpt").entries()] == [
        f"model.{k}" for k in net.state_dict()
    ]
    torch.save(
        {"module": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "d.pt"
    )
    assert [e.name for e in open_source(tmp_path / "d.pt").entries()] == list(net.state_dict())
