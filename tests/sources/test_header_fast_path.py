"""The fast path of safetensors headers and the column-built entries (issue 9).

A header as safetensors writes it is checked in bulk (``_fast_header``); anything else
goes through the entry-by-entry check. The fast path must accept only what the full check
accepts, with the same tensors and metadata; entries built from columns must be the
entries the per-tensor rules give.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from infospec import SourceError
from infospec.sources import open_source, read_safetensors_header
from infospec.sources.entry import infer_kind, skip_reason_for
from infospec.sources.listing import EntryTable, TensorMeta, entry_groups, entry_table
from infospec.sources.safetensors_bulk import _fast_header, _TensorTable
from infospec.sources.safetensors_format import _DTYPES
from infospec.sources.safetensors_header import _checked_entries, _parsed_header

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SAFE = st.text(st.characters(exclude_categories=("Cc", "Cs"), exclude_characters='"\\'))
_NAMES = st.text(max_size=8) | st.sampled_from(
    ["w", "a.weight", '},"', "a,0", "x]},", "é", "\x7f", "__metadata__", '"', "\\", "\x01"]
)


def _full_check(text: str, size: int):
    """(tensors, metadata) of the entry-by-entry check, or None where it refuses."""
    path = Path("h.safetensors")
    try:
        header, metadata = _parsed_header(path, text)
        return _checked_entries(path, header, 8 + len(text), 8 + len(text) + size), metadata
    except SourceError:
        return None


#: How headers are written: as safetensors writes them, and as json.dumps does by default,
#: with an indent, or with tabs (the fast path takes whitespace between tokens too).
_LAYOUTS = [
    {"separators": (",", ":")},
    {},
    {"indent": 2},
    {"indent": "\t", "separators": (" ,\r\n", " :\t")},
]


@st.composite
def _compact_headers(draw):
    """Header text (as safetensors or json.dumps writes it), maybe with faults, and the data size.

    Half the headers are valid (then the fast path must take most of them), the others
    have faults of every kind, in the entries or in the text.
    """
    faults = draw(st.booleans())

    def fault(odds: int) -> bool:  # a fault one time in ``odds``, in a faulty header
        return faults and not draw(st.integers(0, odds - 1))

    n = draw(st.integers(1, 6))
    names = draw(st.lists(_NAMES if faults else _SAFE, min_size=n, max_size=n, unique=True))
    entries, offset = [], 0
    for name in names:
        dtype = draw(st.sampled_from([*sorted(_DTYPES), *(["Q7"] if fault(5) else [])]))
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
        if fault(5):  # past 2**64, alone or as a product
            shape.insert(draw(st.integers(0, len(shape))), draw(st.sampled_from([2**32, 2**64])))
        bits = math.prod(shape) * _DTYPES.get(dtype, ("", 8))[1]
        if bits % 8 and not fault(2):
            shape, bits = [*shape, 8], bits * 8
        nbytes = bits // 8 + 1 if fault(5) else -(-bits // 8)
        span = [offset, min(offset + nbytes, 2**64)]
        entries.append((name, {"dtype": dtype, "shape": shape, "data_offsets": span}))
        offset = span[1]
    if draw(st.booleans()):  # the data in another order than the header's
        spans = [e[1]["data_offsets"] for e in entries]
        start = 0
        for i in draw(st.permutations(range(n))):
            width = spans[i][1] - spans[i][0]
            spans[i][:] = [start, start + width]
            start += width
    header = dict(entries)
    if draw(st.booleans()):
        meta = draw(st.dictionaries(_NAMES, _NAMES, max_size=2))
        if fault(3):
            meta = draw(st.none() | st.integers() | st.just([]))
        if fault(3):  # last, where the fast path does not look for it
            header = {**header, "__metadata__": meta}
        else:
            header = {"__metadata__": meta, **header}
    layout = draw(st.sampled_from(_LAYOUTS))
    text = json.dumps(header, **layout, ensure_ascii=fault(2))
    at = draw(st.integers(0, max(len(text) - 1, 0)))
    damage = draw(st.integers(1, 4)) if fault(2) else 0
    if damage == 1:  # a leading zero, a space, a sign, a lone brace or comma
        text = text[:at] + draw(st.sampled_from(["0", " ", "-", "}", ",", '"'])) + text[at:]
    elif damage == 2:
        text = text[:at] + text[at + 1 :]
    elif damage == 3:
        text = text.replace("[0,", "[00,", 1)
    elif damage == 4:
        text = " " * draw(st.integers(0, 3)) + text + " " * draw(st.integers(0, 70))
    size = offset + draw(st.integers(-2, 2)) if fault(4) else offset
    return text, max(size, 0), faults


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(_compact_headers())
def test_fast_path_accepts_only_what_the_full_check_accepts(case):
    text, size, faults = case
    fast = _fast_header(text, size)
    assert faults or fast is not None, text  # a valid header as safetensors writes it
    if fast is None:
        return
    full = _full_check(text, size)
    assert full is not None, text
    assert dict(fast[0].items()) == full[0] and list(fast[0]) == list(full[0])
    assert fast[1] == full[1]


def test_fast_path_reads_what_safetensors_writes(tmp_path):
    tensors = {
        "b.weight": torch.zeros(3, 5, dtype=torch.bfloat16),
        "a.bias": torch.zeros(7, dtype=torch.float64),
        "a.weight": torch.ones(2, 2),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(1.5),
        "ids": torch.arange(6, dtype=torch.int64),
    }
    path = tmp_path / "w.safetensors"
    save_file(tensors, path, metadata={"format": "pt", "note": 'é\\"x'})
    header = read_safetensors_header(path)
    assert isinstance(header.tensors, _TensorTable)  # not the entry-by-entry path
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    text = path.read_bytes()[8 : 8 + n].decode()
    full = _full_check(text, path.stat().st_size - 8 - n)
    assert dict(header.tensors.items()) == full[0]
    assert header.metadata == full[1] == {"format": "pt", "note": 'é\\"x'}
    assert header.tensors["a.weight"].dtype == "F32" and "nope" not in header.tensors
    for name, t in tensors.items():
        info = header.tensors[name]
        assert info.shape == tuple(t.shape)
        assert info.end - info.begin == t.numel() * t.element_size()
    assert [e.name for e in open_source(path).entries()] == [e.name for e in open_source(path)]


def test_refusals_are_worded_as_before_on_the_fast_path_shape(tmp_path):
    """A header in safetensors' layout with one fault still gets the full check's message."""
    entry = '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    for text, data, match in (
        ("{" + entry + "," + entry + "}", 8, "has the key 'w' twice"),
        ('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', 8, "needs 12 bytes"),
        ("{" + entry + "}", 4, "is truncated: tensor 'w' ends at byte"),
        ("{" + entry + "}", 12, "has 4 bytes after the last tensor's data"),
        ('{"w":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}}', 8, "not valid JSON"),
        ('{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', 12, "leaves a gap"),
    ):
        path = tmp_path / "h.safetensors"
        path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + bytes(data))
        with pytest.raises(SourceError, match=match):
            read_safetensors_header(path)


# kinds read from names (embeddings in any case, Conv1D modules, in_proj), and names that
# the joined-names search must not misplace: a newline in a name, a letter that lowers to
# two (U+0130)
_COMPONENTS = [
    "weight", "bias", "embed_tokens", "in_proj_weight", "c_attn", "wte", "0", "x",
    "EmBed", "a\nb", "\u0130embed", "xwpe",
]  # fmt: skip


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=3).map(".".join),
            st.lists(st.integers(0, 24), max_size=6).map(tuple),
            st.sampled_from(["float32", "bfloat16", "int64", "F4"]),
        ),
        min_size=1,
        max_size=12,
        unique_by=lambda t: t[0],
    ),
    st.booleans(),
)
def test_column_entries_follow_the_per_tensor_rules(tensors, model_order):
    metas = sorted({TensorMeta(shape, dtype, "f") for _, shape, dtype in tensors})
    ids = [metas.index(TensorMeta(shape, dtype, "f")) for _, shape, dtype in tensors]
    names = [name for name, _, _ in tensors]
    table = entry_table(
        names,
        ids,
        metas,
        lambda name: name,
        min_dim=3,
        conv1d_modules=frozenset({"c_attn"}),
        model_order=model_order,
    )
    assert isinstance(table, EntryTable) and len(table) == len(tensors)
    if not model_order:
        assert table.names == names
    assert sorted(table.names) == sorted(names)
    by_name = {name: (shape, dtype) for name, shape, dtype in tensors}
    for entry in table:
        shape, dtype = by_name[entry.name]
        kind = infer_kind(entry.name, shape, conv1d_modules=frozenset({"c_attn"}))
        assert (entry.shape, entry.dtype, entry.kind) == (shape, dtype, kind)
        assert entry.skip_reason == skip_reason_for(kind, shape, dtype, min_dim=3)
        assert entry.loader == entry.name and entry.origin == "f"
    assert table[-1] == table[len(table) - 1] and table[:2] == list(table)[:2]
    groups = entry_groups(table)
    assert sum(c for _, c in groups) == len(table)
    assert sorted(((g.kind, g.shape, g.skip_reason, c) for g, c in groups), key=str) == sorted(
        ((g.kind, g.shape, g.skip_reason, c) for g, c in entry_groups(list(table))), key=str
    )
    with pytest.raises(IndexError):
        table[len(table)]


@pytest.mark.parametrize("layout", _LAYOUTS)
def test_fast_path_takes_headers_written_by_json_dumps(tmp_path, layout):
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for i in range(300):
        shape = [2, 3] if i % 2 else []
        nbytes = 4 * math.prod(shape)
        header[f"layer.{i}.w"] = {
            "dtype": "F32",
            "shape": shape,
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, **layout)
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + bytes(offset))
    read = read_safetensors_header(path)
    assert isinstance(read.tensors, _TensorTable)  # in bulk, not entry by entry
    assert read.metadata == {"format": "pt"}
    assert dict(read.tensors.items()) == _full_check(text, offset)[0]
    assert len(read.tensors.kinds) == 2  # one kind per (dtype, shape), whatever the spacing
    assert read.tensors["layer.7.w"].shape == (2, 3)


@pytest.mark.parametrize(
    ("shape_text", "match"),
    [("[1 2]", "not valid JSON"), ("[1, ]", "not valid JSON"), ("[ 0 6 ]", "not valid JSON")],
)
def test_whitespace_inside_a_shape_is_not_read_as_a_separator(tmp_path, shape_text, match):
    text = '{"w": {"dtype": "U8", "shape": ' + shape_text + ', "data_offsets": [0, 12]}}'
    assert _fast_header(text, 12) is None
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text.encode() + bytes(12))
    with pytest.raises(SourceError, match=match):
        read_safetensors_header(path)
