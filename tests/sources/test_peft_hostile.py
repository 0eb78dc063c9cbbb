"""Hostile ``adapter_config.json`` files: every one a one-line SourceError, never a hang.

The config and the weights file come from the internet: a wrong type, a huge integer, deep
nesting, a key given twice or a regular expression that backtracks exponentially (PEFT
matches ``target_modules`` and the keys of ``rank_pattern`` / ``alpha_pattern`` as regular
expressions on module names, and Python's ``re`` has no time limit) must each be refused
naming the file and the field. Real patterns (PEFT's, Unsloth's) still work, with PEFT's
own matching.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from infospec import SourceError
from infospec.cli import main
from infospec.sources import open_source, peft_source
from infospec.sources.peft_source import MAX_MATCHED_NAME, _pattern_value

MODULE = "base_model.model.model.layers.0.self_attn.q_proj"
BASE = '"peft_type": "LORA", "r": 8, "lora_alpha": 16'


def _folder(tmp_path, config_text: str, module: str = MODULE, r: int = 8):
    """An adapter folder: ``config_text`` verbatim, and one module's factors."""
    folder = tmp_path / "adapter"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(config_text)
    save_file(
        {
            f"{module}.lora_A.weight": torch.randn(r, 64),
            f"{module}.lora_B.weight": torch.randn(64, r),
        },
        folder / "adapter_model.safetensors",
    )
    return folder


def _config(**fields) -> str:
    return json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, **fields})


HOSTILE = {
    "deep_nesting": (
        f'{{{BASE}, "x": {"[" * 100_000}{"]" * 100_000}}}',
        r"is nested too deeply",
    ),
    "huge_int": (f'{{"peft_type": "LORA", "r": {"9" * 5000}, "lora_alpha": 16}}', r"digits"),
    "duplicate_key": (f'{{{BASE}, "r": 4}}', r"has the key 'r' twice"),
    "target_bad_regex": (
        _config(target_modules="(q_proj"),
        r"target_modules '\(q_proj', which is not a valid regular expression",
    ),
    "target_int": (
        _config(target_modules=5),
        r"target_modules=5 \(an integer\); target_modules must",
    ),
    "target_list_int": (
        _config(target_modules=[5]),
        r"target_modules=a list holding 5 \(an integer\); target_modules must",
    ),
    "rank_pattern_list": (
        _config(rank_pattern=[1, 2]),
        r"rank_pattern=\[1, 2\] \(an array\); rank_pattern must be an object",
    ),
    "rank_pattern_bad_regex": (
        _config(rank_pattern={"(": 8}),
        r"rank_pattern key '\(', which is not a valid regular expression",
    ),
    "rank_pattern_str": (
        _config(rank_pattern={"q_proj": "eight"}),
        r"rank_pattern\['q_proj'\]='eight'; each value of rank_pattern must be an int > 0",
    ),
    "rank_pattern_inf": (
        f'{{{BASE}, "rank_pattern": {{"q_proj": Infinity}}}}',
        r"rank_pattern\['q_proj'\]=inf; each value of rank_pattern must be an int > 0",
    ),
    "rank_pattern_float": (
        _config(rank_pattern={"q_proj": 8.5}),
        r"rank_pattern\['q_proj'\]=8\.5; each value",
    ),
    "alpha_pattern_str": (
        _config(alpha_pattern={"q_proj": "x"}),
        r"alpha_pattern\['q_proj'\]='x'; each value of alpha_pattern must be a finite number > 0",
    ),
    "alpha_pattern_huge": (
        _config(alpha_pattern={"q_proj": 10**400}),
        r"alpha_pattern\['q_proj'\]=1000.*\.\.\.; each value of alpha_pattern must be a finite",
    ),
    "r_nan": (
        '{"peft_type": "LORA", "r": NaN, "lora_alpha": 16}',
        r"has r=nan; r .* must be an int > 0",
    ),
    "r_bool": (_config(r=True), r"has r=True; r .* must be an int > 0"),
    "alpha_nan": (
        '{"peft_type": "LORA", "r": 8, "lora_alpha": NaN}',
        r"lora_alpha=nan; lora_alpha must",
    ),
    "use_rslora_str": (
        _config(use_rslora="yes"),
        r"use_rslora='yes'; use_rslora must be true, false",
    ),
    "use_dora_int": (_config(use_dora=1), r"use_dora=1; use_dora must be true, false or null"),
    "peft_type_list": (
        _config(peft_type=["LORA"]),
        r"peft_type=\['LORA'\]; peft_type must be a string",
    ),
    "not_an_object": ("[1, 2, 3]", r"must be a JSON object; got an array"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_config_is_a_source_error_naming_the_file(tmp_path, case):
    text, message = HOSTILE[case]
    folder = _folder(tmp_path, text)
    with pytest.raises(SourceError, match=message) as info:
        open_source(folder)
    assert str(folder / "adapter_config.json") in str(info.value)
    assert len(str(info.value)) < 600  # values are shown bounded, never the file


@pytest.mark.parametrize("case", ["deep_nesting", "target_int", "rank_pattern_inf", "r_nan"])
def test_cli_hostile_config_exits_2_with_one_line(tmp_path, capsys, case):
    folder = _folder(tmp_path, HOSTILE[case][0])
    assert main(["describe", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infospec: error: The adapter config ") and err.count("\n") == 1
    assert "Traceback" not in err


CATASTROPHIC = [
    "(x+x+)+y",  # the reproducer: exponential on 'xxx...x'
    "(a+)+$",
    "(a|ab)*c",
    r"(\w+\s?)*$",
    "(a?){25}a{25}",  # a bounded repeat of an optional part
    "(.*a){20}",
    r"(?:(?=.*x).)*y",  # a lookahead with a repeat, inside a repeat
]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_catastrophic_target_modules_is_refused_before_matching(tmp_path, pattern):
    # a module name on which each of these patterns takes years to fail
    folder = _folder(tmp_path, _config(target_modules=pattern), module="x" * 40 + "a" * 40)
    with pytest.raises(SourceError, match=r"target_modules .*repeats a part that can itself"):
        open_source(folder)


@pytest.mark.parametrize("field", ["rank_pattern", "alpha_pattern"])
def test_catastrophic_pattern_key_is_refused(tmp_path, field):
    folder = _folder(tmp_path, _config(**{field: {"(x+x+)+y": 8}}), module="x" * 60)
    with pytest.raises(SourceError, match=rf"has the {field} key '\(x\+x\+\)\+y', a regular"):
        open_source(folder)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"(q_proj)\1", r"refers back to a group"),
        (r"(q)?(?(1)_proj|k_proj)", r"refers back to a group"),
        ("q" * 1001, r"is 1001 characters long, over the 1000"),
        ("a?" * 7 + "q_proj", r"has 7 variable-width repeats"),
        ("(" * 497 + "q" + ")" * 497, r"groups nested too deeply"),
        ("q{99999999999}", r"the repetition number is too large"),
    ],
    ids=["backreference", "conditional", "too_long", "optional_chain", "deep_groups", "huge_count"],
)
def test_other_refused_patterns(tmp_path, pattern, message):
    folder = _folder(tmp_path, _config(target_modules=pattern))
    with pytest.raises(SourceError, match=message):
        open_source(folder)


REAL = [
    (r".*\.(q_proj|v_proj)$", MODULE),
    (r"^(?!.*vision).*\.(q_proj|k_proj)", MODULE),
    (r"model.layers.\d+.self_attn.q_proj", MODULE),
    (
        r".*decoder.*(SelfAttention|EncDecAttention).*(q|v)$",
        "base_model.model.decoder.block.0.layer.0.SelfAttention.q",
    ),
    (r"model.layers.*.self_attn.q_proj", MODULE),
    (r"model\.layers\.(0|1|2)\.self_attn\.(q|k)_proj", MODULE),
    (r"(?:(?!vision).)*q_proj", MODULE),
    ("all-linear", MODULE),
    # Unsloth's FastVisionModel.get_peft_model
    (
        r"(?:.*?(?:language|text).*?(?:self_attn|attention|attn|mlp|feed_forward|ffn|dense).*?"
        r"(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj).*?)|(?:\bmodel\.layers\."
        r"[\d]{1,}\.(?:self_attn|attention|attn|mlp|feed_forward|ffn|dense)\.(?:(?:q_proj|k_proj|"
        r"v_proj|o_proj|gate_proj|up_proj|down_proj)))",
        "base_model.model.model.language_model.layers.0.self_attn.q_proj",
    ),
]


@pytest.mark.parametrize(("pattern", "module"), REAL, ids=[f"real{i}" for i in range(len(REAL))])
def test_real_patterns_are_accepted(tmp_path, pattern, module):
    folder = _folder(
        tmp_path, _config(target_modules=pattern, rank_pattern={pattern: 8}), module=module
    )
    (entry,) = open_source(folder).entries()
    assert (
        entry.rank == 8 and entry.name == module.removeprefix("base_model.model.") + ".weight[lora]"
    )


def test_a_pattern_matching_no_module_still_says_so(tmp_path):
    folder = _folder(tmp_path, _config(target_modules=r".*\.(k_proj|v_proj)$"))
    with pytest.raises(SourceError, match=r"which matches none of the modules with factors"):
        open_source(folder)


def test_a_long_module_name_is_not_matched(tmp_path):
    module = "base_model.model." + "x." * MAX_MATCHED_NAME + "q_proj"
    folder = _folder(tmp_path, _config(target_modules=r".*\.(q_proj|v_proj)$"), module=module)
    with pytest.raises(SourceError, match=rf"characters long .*at most {MAX_MATCHED_NAME} char"):
        open_source(folder)
    # a list of names is matched without regular expressions: no limit
    (tmp_path / "adapter" / "adapter_config.json").write_text(_config(target_modules=["q_proj"]))
    assert len(open_source(tmp_path / "adapter").entries()) == 1


def test_matching_that_takes_too_long_stops_with_an_error(tmp_path, monkeypatch):
    # allowed patterns are polynomial, not free: all the matching of one listing shares a
    # time budget (MATCH_SECONDS), past which the listing is refused
    folder = _folder(tmp_path, _config(target_modules=r".*\.(q_proj|v_proj)$"))
    assert len(open_source(folder).entries()) == 1
    monkeypatch.setattr(peft_source, "MATCH_SECONDS", -1.0)
    with pytest.raises(SourceError, match=r"target_modules against the module names .* takes over"):
        open_source(folder)


def test_pattern_value_is_peft_get_pattern_key():
    """infospec's per-module override chooses the key PEFT's ``get_pattern_key`` chooses."""
    from peft.utils.other import get_pattern_key

    from infospec.sources.peft_source import _compile_pattern

    keys = [
        "q_proj",
        r"layers\.0\..*",
        r"layers\.1\.self_attn\.q_proj",
        "self_attn.v_proj",
        "o",
        "a+b",
    ]
    patterns = tuple(
        (k, _compile_pattern(k, rf"(.*\.)?({k})$", lambda: "key"), i) for i, k in enumerate(keys)
    )
    names = [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
        "model.layers.1.self_attn.o",
        "model.layers.1.self_attn.xo",
        "model.layers.0.mlp.up",
        "q_proj",
        "xq_proj",
        "model.layers.2.mlp.up",
        "a+b",  # no key matches it as a pattern; PEFT then looks the name up as a key
    ]
    for name in names:
        key = get_pattern_key(keys, name)
        want = keys.index(key) if key in keys else -1
        assert _pattern_value(name, patterns, -1) == want, name


def test_peft_adapter_with_a_regex_and_rank_and_alpha_patterns(tmp_path):
    """A string ``target_modules`` and regex pattern keys: the ranks, scales and deltas of
    every module are those peft itself loads (``PeftModel.from_pretrained``)."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from infospec.sources.example import minilm_path

    torch.manual_seed(0)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*\.(query|value)$",
        rank_pattern={r"layer\.[13]\..*query": 8, "value": 2},
        alpha_pattern={r"layer\.2\.attention\.self\.(query|value)": 32},
    )
    wrapped = peft.get_peft_model(transformers.AutoModel.from_pretrained(minilm_path()), config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    wrapped.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert isinstance(saved["target_modules"], str)

    loaded = peft.PeftModel.from_pretrained(
        transformers.AutoModel.from_pretrained(minilm_path()), tmp_path / "adapter"
    )
    modules = {
        n.removeprefix("base_model.model."): m
        for n, m in loaded.named_modules()
        if hasattr(m, "lora_A") and "default" in getattr(m, "r", {})
    }
    entries = {
        e.name.removesuffix(".weight[lora]"): e for e in open_source(tmp_path / "adapter").entries()
    }
    assert set(entries) == set(modules) and len(entries) == 12
    for name, module in modules.items():
        entry = entries[name]
        assert entry.rank == module.r["default"], name
        assert entry.scale == pytest.approx(module.scaling["default"]), name
        want = module.get_delta_weight("default").detach().double().numpy()
        np.testing.assert_allclose(entry.load().numpy(), want, atol=1e-6)
    ranks = {n: e.rank for n, e in entries.items()}
    assert ranks["encoder.layer.1.attention.self.query"] == 8
    assert ranks["encoder.layer.0.attention.self.query"] == 4
    assert ranks["encoder.layer.0.attention.self.value"] == 2
    assert entries["encoder.layer.2.attention.self.value"].scale == pytest.approx(32 / 2)


def test_adapter_files_that_link_out_of_the_folder_are_refused(tmp_path):
    # the config and the weights are found by name in the adapter folder: confined to it
    folder = _folder(tmp_path, _config(target_modules=["q_proj"]))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    weights = folder / "adapter_model.safetensors"
    weights.rename(outside / "w.safetensors")
    weights.symlink_to(outside / "w.safetensors")
    with pytest.raises(SourceError, match=r"adapter weights file .* is a link to .*outside"):
        open_source(folder)
    weights.unlink()
    (outside / "w.safetensors").rename(weights)
    config = folder / "adapter_config.json"
    config.rename(outside / "c.json")
    config.symlink_to(outside / "c.json")
    with pytest.raises(SourceError, match=r"adapter config .* is a link to .*outside"):
        open_source(folder)
