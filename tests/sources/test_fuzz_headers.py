"""Fuzzing safetensors headers: no exception but SourceError, whatever the file holds.

Random JSON, random entries (known and unknown dtypes, shapes of every kind of number,
random offsets), consistent headers with one field broken, and random data lengths, each
written as a real file and read by ``read_safetensors_header``, ``open_source``,
``infospec describe`` and, for headers that pass, every entry's ``load()``, which then
must succeed (a header that lists never fails later), but for the dtypes torch has not.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from infospec import SourceError  # noqa: E402
from infospec.cli import main  # noqa: E402
from infospec.sources import open_source, read_safetensors_header  # noqa: E402
from infospec.sources.safetensors_format import _DTYPES  # noqa: E402

_TORCH_DTYPES = {torch_name for torch_name, _ in _DTYPES.values() if torch_name}
_INTS = st.one_of(
    st.integers(0, 40),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63, 2**64 - 1, 2**64, -1]),
)
_NUMBERS = st.one_of(_INTS, st.floats(allow_nan=False), st.booleans())
_JSON = st.recursive(
    st.none() | st.booleans() | _INTS | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_NAMES = st.text(max_size=12) | st.sampled_from(["w", "a.weight", "\x1b[31m", "$\\frac{a$", ""])
_DTYPE = st.sampled_from([*_DTYPES, "Q7", "f32", ""]) | _JSON
_SHAPE = st.lists(_NUMBERS, max_size=4) | _JSON
_OFFSETS = st.lists(_NUMBERS, min_size=0, max_size=3) | _JSON


@st.composite
def _random_entry(draw):
    entry = {}
    for key, value in (("dtype", _DTYPE), ("shape", _SHAPE), ("data_offsets", _OFFSETS)):
        if draw(st.integers(0, 9)):  # now and then a key is missing
            entry[key] = draw(value)
    if not draw(st.integers(0, 7)):
        entry[draw(st.text(max_size=5))] = draw(_JSON)
    return entry if draw(st.integers(0, 9)) else draw(_JSON)


@st.composite
def _consistent(draw):
    """A valid header and data length, then maybe one thing broken."""
    n = draw(st.integers(0, 5))
    names = draw(st.lists(_NAMES, min_size=n, max_size=n, unique=True))
    header, offset = {}, 0
    for name in names:
        dtype = draw(st.sampled_from(sorted(_DTYPES)))
        shape = draw(st.lists(st.integers(0, 6), max_size=3))
        bits = math.prod(shape) * _DTYPES[dtype][1]
        if bits % 8:
            shape = [*shape, 8] if shape else [8]
            bits = math.prod(shape) * _DTYPES[dtype][1]
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + bits // 8],
        }
        offset += bits // 8
    if draw(st.booleans()):
        header["__metadata__"] = draw(
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2) | _JSON
        )
    size = offset
    if names and draw(st.booleans()):
        victim = header[draw(st.sampled_from(names))]
        victim[draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(
            st.one_of(_DTYPE, _SHAPE, _OFFSETS)
        )
    if draw(st.integers(0, 4)) == 0:
        size = max(0, size + draw(st.integers(-8, 8)))
    return header, size


@st.composite
def _files(draw):
    """The bytes of a file: a random or consistent header, then data."""
    kind = draw(st.integers(0, 5))
    if kind == 0:
        header, size = (
            draw(st.dictionaries(_NAMES, _random_entry(), max_size=4)),
            draw(st.integers(0, 64)),
        )
    elif kind == 1:
        header, size = draw(_JSON), draw(st.integers(0, 16))
    else:
        header, size = draw(_consistent())
    text = json.dumps(header).encode()
    if draw(st.integers(0, 9)) == 0:  # a damaged text or length field
        text = draw(st.binary(max_size=40)) if draw(st.booleans()) else text[: len(text) // 2]
    length = len(text) if draw(st.integers(0, 9)) else draw(st.integers(0, 2**64 - 1))
    return struct.pack("<Q", length) + text + bytes(size)


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(_files())
def test_no_exception_but_source_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.safetensors"
        path.write_bytes(content)
        try:
            read_safetensors_header(path)
        except SourceError:
            pass
        try:
            entries = open_source(path).entries()
        except SourceError:
            entries = []
        for entry in entries[:8]:
            if entry.dtype in _TORCH_DTYPES:  # a header that lists loads: no later failure
                assert tuple(entry.load().shape) == entry.shape
            else:  # F4, F6_*: listed as skipped ("cannot be read as a torch tensor")
                assert entry.skipped
                with contextlib.suppress(SourceError):  # safetensors reads F4 packed in pairs
                    entry.load()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["describe", str(path)])
        assert code in (0, 2)
        assert code == 0 or err.getvalue().startswith("infospec: error: ")
        (out.getvalue() + err.getvalue()).encode("utf-8")  # printable: no lone surrogate


_TRICKY = st.sampled_from(
    [
        "",
        ".",
        "..",
        "/",
        "/etc/passwd",
        "../x.safetensors",
        "a" * 5000,
        "/".join(["b" * 300] * 3),
        "sub/../model.safetensors",
        "model.safetensors",
        "loop.safetensors",
        "\x00",
    ]
)
_SHARDS = _TRICKY | st.text(max_size=20)
_WEIGHT_MAPS = st.one_of(
    st.dictionaries(_NAMES, _TRICKY, min_size=1, max_size=3),
    st.dictionaries(_NAMES, _SHARDS | _JSON, max_size=4),
    _JSON,
)


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(_WEIGHT_MAPS)
def test_index_weight_maps_raise_no_exception_but_source_error(weight_map):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
        (root / "loop.safetensors").symlink_to("loop.safetensors")
        index = root / "model.safetensors.index.json"
        index.write_text(json.dumps({"weight_map": weight_map}))
        for target in (index, root):
            try:
                open_source(target).entries()
            except SourceError:
                pass
