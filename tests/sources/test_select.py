"""Layer selection by regular expression or name."""

import pytest
import torch
from torch import nn

from infospec import InputError
from infospec.sources import open_source, select


@pytest.fixture
def entries():
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32)
    enc = nn.TransformerEncoder(layer, num_layers=12, enable_nested_tensor=False)
    return open_source(enc).entries()


def names(entries):
    return [e.name for e in entries]


def test_none_keeps_everything(entries):
    assert select(entries, None) == entries


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (
            r"layers\.1\.linear",
            [
                "layers.1.linear1.weight",
                "layers.1.linear1.bias",
                "layers.1.linear2.weight",
                "layers.1.linear2.bias",
            ],
        ),
        (r"layers\.11\..*in_proj_weight$", ["layers.11.self_attn.in_proj_weight"]),
        (
            r"^layers\.(0|10)\.linear2\.weight$",
            ["layers.0.linear2.weight", "layers.10.linear2.weight"],
        ),
        (
            "norm2.weight|out_proj.weight$",
            [
                f"layers.{i}.{n}"
                for i in range(12)
                for n in ("self_attn.out_proj.weight", "norm2.weight")
            ],
        ),
    ],
)
def test_regex_is_searched_in_the_full_dotted_name(entries, layers, expected):
    assert names(select(entries, layers)) == expected


def test_skipped_entries_are_kept_with_their_reason(entries):
    chosen = select(entries, r"layers\.3\.norm1")
    assert [e.skip_reason for e in chosen] == ["1-D tensor (bias or norm scale)"] * 2


def test_list_of_names_and_patterns_keeps_the_union_in_order(entries):
    chosen = select(
        entries, ["layers.10.linear1.weight", r"layers\.1\.linear1\.weight", "layers.0.norm1.bias"]
    )
    assert names(chosen) == [
        "layers.0.norm1.bias",
        "layers.1.linear1.weight",
        "layers.10.linear1.weight",
    ]
    # as a pattern, "1.weight" is searched in every name; as an exact name, it is one tensor
    sd = {"1.weight": torch.ones(12, 12), "11.weight": torch.ones(12, 12)}
    flat = open_source(sd).entries()
    assert names(select(flat, "1.weight")) == ["1.weight", "11.weight"]
    assert names(select(flat, ["1.weight"])) == ["1.weight"]


def test_source_select_method(entries):
    enc = nn.Sequential(nn.Linear(12, 12), nn.Linear(12, 12))
    assert names(open_source(enc).select(r"^1\.")) == ["1.weight", "1.bias"]


def test_regex_matching_nothing_lists_available_names(entries):
    with pytest.raises(
        InputError,
        match=r"The 'layers' pattern 'query' matches none of the "
        r"144 tensor names .* close matches: "
        r"'layers.0.self_attn.in_proj_weight', "
        r"'layers.0.self_attn.out_proj.weight', .* and 139 more",
    ):
        select(entries, "query")
    with pytest.raises(InputError, match=r"pattern 'layers\.99' matches none"):
        select(entries, ["layers.0.norm1.bias", "layers.99"])


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        (
            "enc[",
            r"pattern 'enc\[' is not a valid regular expression: unterminated character "
            r"set at position 3",
        ),
        ("(a", r"missing \), unterminated subpattern"),
        (["ok", "*x"], r"'\*x' is not a valid regular expression: nothing to repeat"),
    ],
)
def test_invalid_regex_gives_re_message(entries, layers, match):
    with pytest.raises(InputError, match=match):
        select(entries, layers)


@pytest.mark.parametrize("layers", [3, [1, 2], ["a", None], {"a": 1}])
def test_wrong_types(entries, layers):
    with pytest.raises(InputError, match="'layers' parameter must be a regular expression"):
        select(entries, layers)


def test_empty_list_and_empty_source():
    with pytest.raises(InputError, match=r"empty sequence\. Pass None"):
        select(open_source(nn.Linear(12, 12)).entries(), [])
    with pytest.raises(InputError, match="the source has no tensors"):
        select([], "x")
    assert select([], None) == []


def test_select_accepts_generators():
    src = open_source(nn.Linear(12, 12))
    assert names(select(iter(src.entries()), "weight")) == ["weight"]
    assert torch.equal(select(src.entries(), "weight")[0].load(), src.module.weight.detach())


def test_a_file_listing_is_matched_on_names_without_building_every_entry(tmp_path, monkeypatch):
    """select on a file's EntryTable: the same entries as on a list, only those built."""
    from safetensors.torch import save_file

    from infospec.sources.listing import EntryTable

    tensors = {f"blocks.{i}.{part}": torch.zeros(12, 12) for i in range(40) for part in "ab"}
    tensors.update({f"blocks.{i}.bias": torch.zeros(12) for i in range(40)})
    save_file(tensors, str(tmp_path / "m.safetensors"))
    table = open_source(tmp_path / "m.safetensors").entries()
    assert isinstance(table, EntryTable)
    want = select(list(table), r"blocks\.3\d?\.")
    built = []
    original = EntryTable._entry
    monkeypatch.setattr(EntryTable, "_entry", lambda self, i: built.append(i) or original(self, i))
    got = select(table, r"blocks\.3\d?\.")
    assert got == want and names(got)[:3] == ["blocks.3.a", "blocks.3.b", "blocks.3.bias"]
    assert len(built) == len(got) == 33  # blocks 3 and 30-39, three tensors each
    # close matches still put analysed tensors first, skipped biases after
    with pytest.raises(InputError, match=r"matches none of the 120 tensor.*'blocks\.\d+\.[ab]'"):
        select(table, "block_4")
