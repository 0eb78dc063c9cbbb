"""Fused mixture-of-experts weights (``transformers`` 5): one row per expert, out x in.

Mixtral, Qwen2-MoE and Qwen3-MoE modules hold ``experts.gate_up_proj`` ``(E, 2I, H)`` and
``experts.down_proj`` ``(E, H, I)``, expert ``e`` computing ``F.linear(x, T[e])``
(kind ``"experts"``); gpt-oss holds ``(E, H, 2I)`` and ``(E, I, H)``, computing
``x @ T[e]`` (``is_transposed=True``, kind ``"experts_transposed"``), and its checkpoint
stores the same fused tensors. Mixtral's and Qwen's checkpoints store one 2-D matrix
per expert instead.
"""

import re
import warnings

import pytest
import torch

import infospec
from infospec.cli import main
from infospec.sources import ModuleSource, StateDictSource

transformers = pytest.importorskip("transformers")

E = 4
COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=100,
    num_experts_per_tok=2,
)


def _mixtral():
    cfg = transformers.MixtralConfig(**COMMON, intermediate_size=48, num_local_experts=E)
    return transformers.MixtralForCausalLM(cfg)


def _qwen2_moe():
    cfg = transformers.Qwen2MoeConfig(
        **COMMON,
        intermediate_size=48,
        moe_intermediate_size=16,  # gate_up (E, 32, 32): 2I == H, square per expert
        shared_expert_intermediate_size=32,
        num_experts=E,
    )
    return transformers.Qwen2MoeForCausalLM(cfg)


def _qwen3_moe():
    cfg = transformers.Qwen3MoeConfig(
        **COMMON, intermediate_size=48, moe_intermediate_size=24, num_experts=E
    )
    return transformers.Qwen3MoeForCausalLM(cfg)


def _gpt_oss():
    cfg = transformers.GptOssConfig(**COMMON, intermediate_size=48, num_local_experts=E, head_dim=8)
    return transformers.GptOssForCausalLM(cfg)


#: family: (builder, kind of its fused tensors, expert e's out x in matrix from T)
FAMILIES = {
    "mixtral": (_mixtral, "experts", lambda t, e: t[e]),
    "qwen2_moe": (_qwen2_moe, "experts", lambda t, e: t[e]),
    "qwen3_moe": (_qwen3_moe, "experts", lambda t, e: t[e]),
    "gpt_oss": (_gpt_oss, "experts_transposed", lambda t, e: t[e].T),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    torch.manual_seed(0)
    build, kind, matrix_of = FAMILIES[request.param]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build().eval()
    return request.param, model, kind, matrix_of


def _fused(model):
    return {n: p for n, p in model.named_parameters() if p.ndim == 3 and re.search(r"experts\.", n)}


def _sigma(report, label):
    lam = torch.as_tensor(report.spectra[f"weights/{label}"], dtype=torch.float64)
    return lam.clamp_min(0).sqrt()


def _analyze(source):
    return infospec.analyze(source, progress=False, fits=False, workers=1)


def test_every_expert_matrix_is_a_row_with_its_spectrum(family):
    _, model, kind, matrix_of = family
    fused = _fused(model)
    assert len(fused) == 2 * 2  # gate_up_proj and down_proj of each of the 2 layers
    report = _analyze(model)
    assert not [s for s in report.skipped if len(s["shape"]) == 3], report.skipped
    rows = {r["name"]: r for r in report.weights}
    for pname, p in fused.items():
        for e in range(E):
            w = matrix_of(p.detach(), e).double()
            row = rows[f"{pname}[{e}]"]
            assert row["status"] == "ok" and row["kind"] == kind and row["tensor"] == pname
            assert (row["rows"], row["cols"]) == tuple(w.shape)
            expected = torch.linalg.svdvals(w)
            torch.testing.assert_close(_sigma(report, row["name"]), expected, rtol=1e-10, atol=0)
        assert f"{pname}[{E}]" not in rows


def test_orientation_is_the_one_the_model_computes_with(family):
    """rows = the expert's outputs: gate_up gives 2I outputs from H inputs, down H from I."""
    _, model, kind, _ = family
    cfg = model.config
    inter = getattr(cfg, "moe_intermediate_size", None) or cfg.intermediate_size
    hidden = cfg.hidden_size
    entries = {e.name: e for e in ModuleSource(model).entries()}
    for pname in _fused(model):
        entry = entries[pname]
        assert entry.kind == kind and entry.skip_reason is None
        out_in = (2 * inter, hidden) if pname.endswith("gate_up_proj") else (hidden, inter)
        assert entry.matrix_shape == out_in


def test_a_gpt_oss_expert_matrix_maps_its_input_as_the_module_does():
    """gpt-oss computes ``x @ T[e] + b[e]``: the row's matrix W_e = T[e].T gives W_e x."""
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experts = _gpt_oss().model.layers[0].mlp.experts
    assert experts.is_transposed is True
    from infospec.spectra.conventions import as_matrices

    x = torch.randn(5, 32)
    for leaf in ("gate_up_proj", "down_proj"):
        t = getattr(experts, leaf).detach()
        x_in = x if leaf == "gate_up_proj" else torch.randn(5, t.shape[1])
        for e, (label, w) in enumerate(as_matrices("experts_transposed", t, name=leaf)):
            assert label == f"{leaf}[{e}]"
            torch.testing.assert_close(x_in @ w.T, x_in @ t[e])


def test_the_state_dict_gives_the_module_s_rows(family):
    """A state dict has no classes: the fused tensors of one module are read together."""
    _, model, kind, _ = family
    sd_entries = {e.name: e for e in StateDictSource(model.state_dict()).entries()}
    for pname in _fused(model):
        assert sd_entries[pname].kind == kind
    by_module = {r["name"]: r for r in _analyze(model).weights}
    by_dict = {r["name"]: r for r in _analyze(model.state_dict()).weights}
    experts_rows = [n for n in by_module if "experts." in n]
    assert experts_rows and all(n in by_dict for n in experts_rows)
    for n in experts_rows:
        assert (by_dict[n]["rows"], by_dict[n]["cols"]) == (
            by_module[n]["rows"],
            by_module[n]["cols"],
        )


def _describe_counts(folder, capsys):
    capsys.readouterr()
    assert main(["describe", str(folder)]) == 0
    out = capsys.readouterr().out
    m = re.search(r"(\d+) analysed, (\d+) skipped", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def test_file_route_and_describe(family, tmp_path, capsys):
    """The saved folder: describe and analyze agree on counts; where the checkpoint stores
    per-expert 2-D matrices (Mixtral, Qwen), each down projection's spectrum equals the
    module's row of that expert (another name: ``experts.<e>.down_proj.weight``)."""
    name, model, _, _ = family
    if name == "gpt_oss":
        pytest.skip("see test_gpt_oss_file_route_gives_the_module_s_rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(tmp_path)
    report = _analyze(tmp_path)
    analysed, skipped = _describe_counts(tmp_path, capsys)
    assert analysed == len({r["tensor"] for r in report.weights})
    assert skipped == len(report.skipped)
    module_report = _analyze(model)
    file_rows = {r["name"] for r in report.weights}
    down = "w2" if name == "mixtral" else "down_proj"
    block = "block_sparse_moe" if name == "mixtral" else "mlp"
    for layer in range(2):
        for e in range(E):
            label = f"model.layers.{layer}.mlp.experts.down_proj[{e}]"
            stored = f"model.layers.{layer}.{block}.experts.{e}.{down}.weight"
            if stored not in file_rows:  # another naming in this transformers' save
                pytest.skip(f"no {stored} in the saved folder")
            torch.testing.assert_close(
                _sigma(report, stored), _sigma(module_report, label), rtol=1e-10, atol=0
            )


def test_gpt_oss_file_route_gives_the_module_s_rows(tmp_path, capsys):
    """gpt-oss's checkpoint stores the module's fused tensors: the same rows by name."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _gpt_oss().eval()
        model.save_pretrained(tmp_path)
    by_module = _analyze(model)
    by_file = _analyze(tmp_path)
    analysed, skipped = _describe_counts(tmp_path, capsys)
    assert analysed == len({r["tensor"] for r in by_file.weights})
    assert skipped == len(by_file.skipped)
    module_rows = {r["name"]: r for r in by_module.weights if "experts." in r["name"]}
    file_rows = {r["name"]: r for r in by_file.weights}
    assert len(module_rows) == 2 * 2 * E
    for label, row in module_rows.items():
        assert label in file_rows, label
        assert (file_rows[label]["rows"], file_rows[label]["cols"]) == (row["rows"], row["cols"])
        torch.testing.assert_close(
            _sigma(by_file, label), _sigma(by_module, label), rtol=1e-10, atol=0
        )
