"""Hostile and broken input files (issues 9 and 15): each case is a file the test writes.

Shard paths that leave the index's folder, headers that would hang or exhaust memory,
JSON that crashes a naive reader, headers laxer than safetensors' own check, content
echoed in messages, and names that drive a terminal or matplotlib's mathtext.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import pytest

from infospec import SourceError
from infospec.cli import main
from infospec.sources import open_source, read_safetensors_header


def _write(path, header, data=b"", *, raw=False):
    """A safetensors file with ``header`` (a dict, or JSON text when ``raw``) and ``data``."""
    text = header.encode() if raw else json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _matrix(name="w", rows=16, cols=16, begin=0):
    size = rows * cols * 4
    return {name: {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, begin + size]}}


def _index(folder, weight_map, name="model.safetensors.index.json"):
    path = folder / name
    path.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


# -- shard paths stay inside the index's folder ------------------------------------------------
@pytest.fixture
def outside(tmp_path):
    """A valid shard outside the checkpoint folder, and the (empty) checkpoint folder."""
    secret = tmp_path / "elsewhere" / "x.safetensors"
    secret.parent.mkdir()
    _write(secret, _matrix(), bytes(16 * 16 * 4))
    folder = tmp_path / "ckpt" / "sub"
    folder.mkdir(parents=True)
    return secret, folder


def test_index_with_dotdot_shard_is_refused_naming_the_entry(outside):
    _, folder = outside
    index = _index(folder, {"w": "../../elsewhere/x.safetensors"})
    with pytest.raises(
        SourceError, match=r"maps tensor 'w' to the shard '\.\./\.\./elsewhere"
    ) as e:
        open_source(index)
    assert "outside the index's folder" in str(e.value)
    with pytest.raises(SourceError, match="outside the index's folder"):
        open_source(folder)  # the folder route reads the same index


def test_index_with_absolute_shard_is_refused(outside):
    secret, folder = outside
    index = _index(folder, {"w": str(secret)})
    with pytest.raises(SourceError, match=r"maps tensor 'w' to the shard .*an absolute path"):
        open_source(index)


def test_shard_that_links_outside_is_refused_and_one_that_links_inside_is_read(outside):
    secret, folder = outside
    (folder / "link.safetensors").symlink_to(secret)
    index = _index(folder, {"w": "link.safetensors"})
    with pytest.raises(SourceError, match=r"which is a link to .*outside the index's folder"):
        open_source(index)
    (folder / "link.safetensors").unlink()
    real = _write(folder / "real.safetensors", _matrix(), bytes(16 * 16 * 4))
    (folder / "inner.safetensors").symlink_to(real.name)
    index = _index(folder, {"w": "inner.safetensors"})
    assert [e.name for e in open_source(index).entries()] == ["w"]
    index = _index(folder, {"w": "./sub2/../real.safetensors"})  # a detour that stays inside
    (folder / "sub2").mkdir()
    assert [e.name for e in open_source(index).entries()] == ["w"]


def test_pickle_index_shards_are_confined_too(outside):
    _, folder = outside
    index = _index(folder, {"w": "../../elsewhere/x.bin"}, name="pytorch_model.bin.index.json")
    with pytest.raises(SourceError, match="outside the index's folder"):
        open_source(index)


def test_hugging_face_cache_snapshot_links_into_its_blobs_are_read(tmp_path):
    repo = tmp_path / "models--org--tiny"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    blob = _write(repo / "blobs" / "f00d", _matrix(), bytes(16 * 16 * 4))
    (snapshot / "model-00001-of-00001.safetensors").symlink_to(os.path.relpath(blob, snapshot))
    _index(snapshot, {"w": "model-00001-of-00001.safetensors"})
    assert [e.name for e in open_source(snapshot).entries()] == ["w"]


def test_files_a_folder_holds_are_confined_to_it_like_its_shards(outside, tmp_path):
    # a model folder's checkpoint, index, config.json and quantize_config.json that are
    # links out of it are refused (the index's link echoed the outside file's keys)
    secret, folder = outside
    (folder / "model.safetensors").symlink_to(secret)
    with pytest.raises(SourceError, match=r"The checkpoint '.*model\.safetensors' is a link to"):
        open_source(folder)
    assert main(["describe", str(folder)]) == 2
    assert [e.name for e in open_source(folder / "model.safetensors").entries()] == ["w"]
    (folder / "model.safetensors").unlink()  # named by the user: read where it leads
    outside_json = tmp_path / "elsewhere" / "secrets.json"
    outside_json.write_text(json.dumps({"aws_access_key_id": 1}))
    (folder / "model.safetensors.index.json").symlink_to(outside_json)
    with pytest.raises(SourceError, match=r"checkpoint index .* is a link to .*secrets\.json") as e:
        open_source(folder)
    assert "aws_access_key_id" not in str(e.value)
    (folder / "model.safetensors.index.json").unlink()
    _write(folder / "model.safetensors", _matrix(), bytes(16 * 16 * 4))
    (folder / "config.json").symlink_to(outside_json)
    with pytest.raises(SourceError, match=r"The model config .* is a link to .*outside the folder"):
        open_source(folder)
    (folder / "config.json").unlink()
    (folder / "config.json").write_text("{}")
    (folder / "quantize_config.json").symlink_to(outside_json)
    with pytest.raises(SourceError, match=r"The quantization config .* is a link to"):
        open_source(folder)
    (folder / "quantize_config.json").unlink()
    inner = folder / "real_config.json"
    inner.write_text('{"model_type": "bert"}')
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(inner.name)  # a link that stays inside is read
    assert open_source(folder).model_type == "bert"


def test_a_pickle_folder_s_checkpoint_is_confined_and_reads_the_config_beside_it(tmp_path):
    import torch

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    gpt2 = {"h.0.attn.c_attn.weight": torch.randn(16, 48), "wte.weight": torch.randn(50, 16)}
    torch.save(gpt2, outside / "w.bin")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "pytorch_model.bin").symlink_to(outside / "w.bin")
    with pytest.raises(SourceError, match=r"The checkpoint '.*pytorch_model\.bin' is a link to"):
        open_source(folder)
    (folder / "pytorch_model.bin").unlink()
    torch.save(gpt2, folder / "sd.pt")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    # the file passed alone reads the config beside it, as the folder does
    kinds = {e.name: e.kind for e in open_source(folder / "sd.pt").entries()}
    assert kinds["h.0.attn.c_attn.weight"] == "conv1d_transposed"
    assert kinds == {e.name: e.kind for e in open_source(folder).entries()}


@pytest.mark.parametrize("kind", ["folder", "fifo", "dangling", "loop"])
def test_a_shard_that_is_not_a_file_is_named_for_what_it_is(tmp_path, kind):
    index = _index(tmp_path, {"w": "s.safetensors"})
    shard = tmp_path / "s.safetensors"
    expected = {
        "folder": r"is not readable as a file \('.*s\.safetensors' is a folder, not a file\)",
        "fifo": r"is not readable as a file \(.*a FIFO",
        "dangling": r"is a link that leads nowhere",
        "loop": r"is a link that leads nowhere \(dangling, or a loop of links\)",
    }[kind]
    if kind == "folder":
        shard.mkdir()
    elif kind == "fifo":
        os.mkfifo(shard)
    elif kind == "dangling":
        shard.symlink_to("nothing.safetensors")
    else:
        shard.symlink_to("s.safetensors")
    with pytest.raises(SourceError, match=expected) as e:
        open_source(index)
    assert "missing" not in str(e.value) and "Put the shard's file itself" in str(e.value)


# -- crashes that must be one SourceError ------------------------------------------------------
def _deep(depth):
    return "[" * depth + "]" * depth


def test_deeply_nested_json_in_header_index_and_config(tmp_path):
    deep = _deep(100_000)
    path = _write(tmp_path / "deep.safetensors", '{"w":' + deep + "}", raw=True)
    with pytest.raises(SourceError, match="header that is nested too deeply"):
        open_source(path)
    folder = tmp_path / "f"
    folder.mkdir()
    _write(folder / "model.safetensors", _matrix(), bytes(16 * 16 * 4))
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ' + deep + "}")
    with pytest.raises(SourceError, match=r"checkpoint index .* is nested too deeply"):
        open_source(folder)
    (folder / "model.safetensors.index.json").unlink()
    (folder / "config.json").write_text('{"model_type": ' + deep + "}")
    with pytest.raises(SourceError, match=r"model config .* is nested too deeply"):
        open_source(folder)


def test_integer_of_5000_digits_in_a_shape(tmp_path):
    text = '{"w":{"dtype":"F32","shape":[' + "9" * 5000 + '],"data_offsets":[0,4]}}'
    path = _write(tmp_path / "digits.safetensors", text, bytes(4), raw=True)
    with pytest.raises(SourceError, match="holds an integer of more than 4300 digits"):
        open_source(path)


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": ["gpt2"]},
        {"model_type": {"a": 1}},
        {"model_type": 3, "quantization_config": [1]},
        {"quantization_config": {"weight_block_size": {"a": 1}}},
        {"quantization_config": {"weight_block_size": [True, 1e400]}},
    ],
)
def test_config_fields_of_the_wrong_type_are_ignored(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    _write(tmp_path / "model.safetensors", _matrix("c_attn.weight"), bytes(16 * 16 * 4))
    source = open_source(tmp_path)
    assert source.model_type is None
    assert [e.kind for e in source.entries()] == ["matrix"]
    assert main(["describe", str(tmp_path)]) == 0


def test_config_that_is_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    _write(tmp_path / "model.safetensors", _matrix(), bytes(16 * 16 * 4))
    with pytest.raises(SourceError, match="must be a JSON object; got an array"):
        open_source(tmp_path)


def test_cli_exit_2_with_one_line_for_each_crash(tmp_path, capsys):
    cases = [
        _write(tmp_path / "a.safetensors", '{"w":' + _deep(50_000) + "}", raw=True),
        _write(
            tmp_path / "b.safetensors",
            '{"w":{"dtype":"F32","shape":[' + "1" * 5000 + '],"data_offsets":[0,4]}}',
            bytes(4),
            raw=True,
        ),
    ]
    for path in cases:
        for command in ("describe", "analyze"):
            assert main([command, str(path)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("infospec: error: ") and err.count("\n") == 1, err


# -- header strictness: at least safetensors' own ----------------------------------------------
_ENTRY = '"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
_STRICT = [
    ('{"__metadata__":0,' + _ENTRY + "}", r"malformed __metadata__ block .*got an integer"),
    ('{"__metadata__":{"a":1},' + _ENTRY + "}", "malformed __metadata__ block"),
    (
        '{"w":{"dtype":"U8","shape":[18446744073709551616,0],"data_offsets":[0,0]}}',
        "an element of 2\\*\\*64 or more",
    ),
    (
        '{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}',
        "got an element that is a number with a fraction",
    ),
    ('{"w":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}', "element that is a boolean"),
    ('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', "a negative element"),
    ('{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}', "an offset outside 0 to 2"),
    (
        '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551616]}}',
        "an offset outside 0 to 2",
    ),
    ('{"w":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "key 'dtype' twice"),
    ("{" + _ENTRY + "," + _ENTRY + "}", "has the key 'w' twice"),
    (
        '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}',
        "unexpected key 'x'",
    ),
    (
        '{"w":{"dtype":"U8","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}',
        "product of its shape's 3 dimensions overflows 64 bits",
    ),
    ('{"w":{"dtype":"F32","shape":null,"data_offsets":[0,4]}}', "got null"),
    ('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}', "of 3 elements"),
    ('{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "lone surrogate"),
    ('{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', "needs 1.5 bytes"),
]


@pytest.mark.parametrize(("text", "match"), _STRICT, ids=range(len(_STRICT)))
def test_headers_safetensors_refuses_are_refused_at_listing(tmp_path, text, match):
    path = _write(tmp_path / "h.safetensors", text, bytes(4 if "[0,4" in text else 2), raw=True)
    with pytest.raises(SourceError, match=match):
        read_safetensors_header(path)
    with pytest.raises(SourceError, match=match):
        open_source(path)
    from safetensors import safe_open

    lax = ("twice" in match and "dtype" not in match) or "unexpected key" in match
    if not lax:  # safetensors accepts a name given twice (the last wins) and unknown keys
        with pytest.raises(Exception):  # noqa: B017 - safetensors' own error type
            with safe_open(str(path), framework="pt") as fh:
                for k in fh.keys():
                    fh.get_slice(k)


def test_what_safetensors_accepts_lists_and_loads(tmp_path):
    """The edges safetensors accepts are accepted: null metadata, huge dims with a 0."""
    path = _write(
        tmp_path / "ok.safetensors",
        '{"__metadata__":null,"a":{"dtype":"U8","shape":[0,4294967296,4294967296],'
        '"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}',
        bytes(4),
        raw=True,
    )
    entries = {e.name: e for e in open_source(path).entries()}
    assert entries["a"].shape == (0, 2**32, 2**32)
    assert entries["b"].load().item() == 0.0


# -- disclosure: a file's bytes are never echoed -----------------------------------------------
def test_text_file_named_safetensors_is_not_echoed(tmp_path, capsys):
    content = b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin\n"
    path = tmp_path / "passwd.safetensors"
    path.write_bytes(content)
    with pytest.raises(
        SourceError, match=r"is not a safetensors file.*\(it looks like text\)"
    ) as e:
        open_source(path)
    message = str(e.value)
    assert str(struct.unpack("<Q", content[:8])[0]) not in message  # 3475222254926655346
    assert "root" not in message.replace(str(path), "")
    assert main(["describe", str(path)]) == 2
    assert "3475222254926655346" not in capsys.readouterr().err


def test_binary_file_is_not_echoed(tmp_path):
    content = bytes([0xFE, 0x01, 0x9C, 0x33, 0x10, 0x20, 0x7F, 0x42, 0xAA]) * 4
    path = tmp_path / "blob.safetensors"
    path.write_bytes(content)
    with pytest.raises(SourceError, match="looks like binary data") as e:
        open_source(path)
    assert str(struct.unpack("<Q", content[:8])[0]) not in str(e.value)


def test_index_keys_and_config_are_not_echoed_beyond_names(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({f"k{i}": 0 for i in range(50)})
    )
    with pytest.raises(SourceError, match=r"keys found: 'k0', .*'k9' and 40 more"):
        open_source(tmp_path)


# -- names that drive a terminal ---------------------------------------------------------------
_ANSI = "enc.\x1b[31mred\x1b[0m.\x07.weight"


@pytest.fixture
def hostile_names(tmp_path):
    header = {}
    offset = 0
    for name in (_ANSI, "tail.\u202eevil.weight", "x.\r\n.bias", "$\\frac{a$.weight"):
        entry = _matrix(name, begin=offset)
        if name.endswith("bias"):
            entry = {name: {"dtype": "F32", "shape": [16], "data_offsets": [offset, offset + 64]}}
        header.update(entry)
        offset = next(iter(entry.values()))["data_offsets"][1]
    import numpy as np

    data = np.random.default_rng(0).standard_normal(offset // 4).astype(np.float32).tobytes()
    return _write(tmp_path / "names.safetensors", header, data)


def _no_control(text):
    return not any(not (c.isprintable() or c == "\n") for c in text)


def test_describe_escapes_non_printable_names(hostile_names, capsys):
    assert main(["describe", str(hostile_names)]) == 0
    out = capsys.readouterr().out
    assert _no_control(out)
    assert "enc.\\x1b[31mred\\x1b[0m.\\x07.weight" in out and "\\u202e" in out
    assert "x.\\r\\n.bias" in out


def test_analyze_summary_and_verbose_skips_escape_names(hostile_names, capsys):
    assert main(["analyze", str(hostile_names), "--no-progress", "--no-fits", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert _no_control(out)
    assert "\\x1b[31m" in out and "x.\\r\\n.bias" in out


def test_error_messages_escape_names(tmp_path, capsys):
    _index(tmp_path, {"\x1b]0;pwned\x07": "missing\x1b[2J.safetensors"})
    assert main(["describe", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert _no_control(err) and "\\x1b[2J" in err


def test_lone_surrogate_name_in_a_pickle_is_printed_escaped(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    path = tmp_path / "s.pt"
    torch.save({"w\ud800.weight": torch.zeros(16, 16)}, path)
    assert main(["describe", str(path)]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")  # no UnicodeEncodeError
    assert "w\\ud800.weight" in out


def test_mathtext_names_render_as_plain_text(hostile_names, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.html"
    assert main(["analyze", str(hostile_names), "--no-progress", "--out", str(out)]) == 0
    page = out.read_text()
    assert "$\\frac{a$.weight" in page and "\x1b" not in page and "\\x1b[31m" in page
    import infospec

    report = infospec.analyze(hostile_names, progress=False)
    for kind in ("overview", "layers", "esd"):
        report.plot(kind).savefig(tmp_path / f"{kind}.png")


# -- hangs and memory --------------------------------------------------------------------------
_LIST = textwrap.dedent(
    """
    import os, sys, time
    from infospec.cli import main
    from infospec.sources import open_source
    start = time.perf_counter()
    entries = open_source(sys.argv[1]).entries()
    listed = time.perf_counter() - start
    assert len(entries) > 0 and entries[-1].name and entries[0].shape
    start = time.perf_counter()
    main(["describe", sys.argv[1]])
    described = time.perf_counter() - start
    # VmHWM: this process's peak RSS (ru_maxrss would count the parent's, from the fork)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak = int(status.split()[0]) / 1024
    print(f"RESULT {listed:.3f} {described:.3f} {peak:.1f}", file=sys.stderr)
    """
)


@pytest.fixture(autouse=False)
def _proc():
    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc/self/status (Linux) to read the peak RSS")


def _describe_in_subprocess(path):
    """(seconds to list the entries, seconds of ``infospec describe``, peak RSS in MB,
    stdout) in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", _LIST, str(path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("RESULT "))
    listed, described, peak = map(float, line.split()[1:])
    return listed, described, peak, proc.stdout


def _many_tensors(path, n, leaf="", shape="1", dtype="U8"):
    """``n`` one-element tensors ``m.<i><leaf>`` in a compact header (as safetensors writes)."""
    width = {"U8": 1, "BF16": 2}[dtype]
    entry = f'"m.{{}}{leaf}":{{{{"dtype":"{dtype}","shape":[{shape}],"data_offsets":[{{}},{{}}]}}}}'
    parts = [entry.format(i, i * width, (i + 1) * width) for i in range(n)]
    return _write(path, "{" + ",".join(parts) + "}", bytes(n * width), raw=True)


def test_header_of_a_million_tiny_tensors_lists_in_a_second_and_bounded_memory(tmp_path, _proc):
    n = 1_000_000  # a 69 MB header, as safetensors would write it
    listed, described, peak, out = _describe_in_subprocess(
        _many_tensors(tmp_path / "many.safetensors", n)
    )
    lines = out.splitlines()
    assert "1000000 tensors" in lines[0] and "in file order" in lines[0]
    assert len(lines) == 1 + 1000 + 2 and lines[1].split()[0] == "m.0"
    assert lines[-2] == (
        "  (999000 more tensors not listed: --all lists every one, --layers REGEX the ones "
        "whose names match)"
    )
    assert lines[-1] == (
        "0 analysed, 1000000 skipped: non-floating dtype (an index, mask or quantized buffer)"
        " x 1000000"
    )
    # 1.0 s and 1.3 s of CPU each on a 2-core machine under load 6 (12 s and 15 s before):
    # loose for a loaded one
    assert listed < 5 and described < 5, (listed, described)
    assert peak < 150 + n * 0.25e-3, peak  # MB: 320 MB measured, both in one process (930)


@pytest.mark.slow
def test_header_of_a_million_tiny_matrices_named_weight(tmp_path, _proc):
    """Every name is looked at (a 2-D ``weight``'s kind depends on it): still linear."""
    n = 1_000_000
    path = _many_tensors(tmp_path / "many.safetensors", n, ".weight", "1,1", "BF16")
    listed, described, peak, out = _describe_in_subprocess(path)
    assert "0 analysed, 1000000 skipped: smaller side < min_dim=10 x 1000000" in out
    assert listed < 20 and described < 20, (listed, described)
    assert peak < 150 + n * 0.4e-3, peak


def test_describe_all_lists_every_tensor(tmp_path, capsys):
    path = _many_tensors(tmp_path / "many.safetensors", 1500)
    assert main(["describe", str(path), "--all"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 1500 + 1 and lines[-2].split()[0] == "m.1499"
    assert main(["describe", str(path), "--layers", r"^m\.14\d\d$"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "100 tensors match --layers" in lines[0] and len(lines) == 1 + 100 + 1


def test_long_names_list_fast_and_print_short_lines(tmp_path, _proc):
    n, length = 900, 100_000  # a 90 MB header
    header = {
        f"{i:04d}" + "a" * length: {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]}
        for i in range(n)
    }
    path = _write(tmp_path / "long.safetensors", header, bytes(n))
    listed, described, peak, out = _describe_in_subprocess(path)
    lines = out.splitlines()
    assert len(lines) == n + 3 and max(len(ln) for ln in lines) < 300
    assert f"({n} names longer than 120 characters are shortened with …" in lines[-1]
    assert listed < 5 and described < 5, (listed, described)  # 0.5 s each, under load 6
    assert peak < 150 + 3 * n * length / 1e6, peak  # MB: a few copies of the header at most
