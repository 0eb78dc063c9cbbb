"""PEFT LoRA adapters: deltas from the factors, merged weights, the folder format's errors.

The adapters are made by the real ``peft`` package (installed with ``--no-deps``, so that
it cannot change torch) on the bundled MiniLM-L6, with random ``lora_B`` (peft starts
it at zero), and checked against peft's own ``get_delta_weight`` and
``merge_and_unload``; hand-built factors are checked against the materialised product.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import infospec
from infospec import InputError, SourceError
from infospec.cli import main
from infospec.sources import open_source
from infospec.sources.peft_source import LoraEntry, PeftSource, lora_singular_values

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm():
    from infospec.sources.example import minilm_path

    return minilm_path()


def _randomise_lora_b(wrapped):
    """peft starts lora_B at zero (a zero delta): seeded random factors instead."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, minilm):
    """(folder, peft model) of a LoRA adapter with rsLoRA and per-module overrides."""
    torch.manual_seed(0)
    model = transformers.AutoModel.from_pretrained(minilm)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["query", "value", "intermediate.dense"],
        use_rslora=True,
        rank_pattern={"layer.1.attention.self.query": 8},
        alpha_pattern={"layer.2.attention.self.value": 32},
    )
    wrapped = peft.get_peft_model(model, config)
    _randomise_lora_b(wrapped)
    folder = tmp_path_factory.mktemp("peft") / "adapter"
    wrapped.save_pretrained(folder)
    return folder, wrapped


def _peft_delta(wrapped, entry_name: str) -> np.ndarray:
    module = dict(wrapped.named_modules())[
        "base_model.model." + entry_name.removesuffix(".weight[lora]")
    ]
    return module.get_delta_weight("default").detach().double().numpy()


def test_deltas_equal_peft_get_delta_weight(adapter):
    folder, wrapped = adapter
    report = infospec.analyze(folder, progress=False)
    names = [r["name"] for r in report.weights]
    assert len(names) == 6 * 3 and all(n.endswith(".weight[lora]") for n in names)
    for name in [n for n in names if ".layer.0." in n or ".layer.2." in n]:
        want = np.linalg.svd(_peft_delta(wrapped, name), compute_uv=False)
        got = np.sqrt(report.spectrum(name))
        # peft forms B A in float32: agreement to its round-off
        np.testing.assert_allclose(got, want, atol=1e-6 * want[0])
    ranks = {e.name: e.rank for e in open_source(folder).entries()}
    assert ranks["encoder.layer.1.attention.self.query.weight[lora]"] == 8
    assert ranks["encoder.layer.0.attention.self.query.weight[lora]"] == 4


def test_factor_route_equals_the_materialised_product_to_1e10(adapter):
    folder, _ = adapter
    entries = open_source(folder).entries()
    assert all(isinstance(e, LoraEntry) for e in entries)
    for entry in [e for e in entries if ".layer.1." in e.name]:  # ranks 8 and 4
        dense = entry.load().numpy()  # s * B @ A in float64
        want = np.linalg.svd(dense, compute_uv=False)
        ((_, rows, cols, sigma, err),) = entry.factor_spectra()
        assert (rows, cols) == dense.shape and err == ""
        np.testing.assert_allclose(sigma.numpy(), want, atol=1e-10 * want[0], rtol=0)
        assert int((sigma > 0).sum()) == entry.rank  # the rest are exact zeros
    scales = {e.name: e.scale for e in open_source(folder).entries()}
    assert scales["encoder.layer.0.attention.self.query.weight[lora]"] == pytest.approx(8 / 2)
    assert scales["encoder.layer.2.attention.self.value.weight[lora]"] == pytest.approx(32 / 2)
    assert scales["encoder.layer.1.attention.self.query.weight[lora]"] == pytest.approx(
        8 / np.sqrt(8)
    )


def test_merged_weights_equal_peft_merge_and_unload(adapter, minilm):
    folder, wrapped = adapter
    source = PeftSource(folder, base=minilm)
    merged = {e.name: e for e in source.entries() if not e.name.endswith("[lora]")}
    assert len(merged) == 18
    import copy

    reference = copy.deepcopy(wrapped).merge_and_unload().state_dict()
    for name, entry in merged.items():
        got = entry.load()
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), reference[name].double().numpy(), atol=2e-6)
    report = infospec.analyze(source, layers=r"layer\.0\.attention\.self\.query", progress=False)
    assert [r["name"] for r in report.weights] == [
        "encoder.layer.0.attention.self.query.weight[lora]",
        "encoder.layer.0.attention.self.query.weight",
    ]
    ref = np.linalg.svd(
        reference["encoder.layer.0.attention.self.query.weight"].double().numpy(),
        compute_uv=False,
    )
    np.testing.assert_allclose(
        np.sqrt(report.spectrum("encoder.layer.0.attention.self.query.weight")),
        ref,
        atol=1e-5 * ref[0],
    )


def test_hand_built_factors_against_the_product(rng):
    for rows, cols, r in ((50, 30, 4), (12, 40, 7), (20, 15, 18)):  # r > min side too
        b = rng.standard_normal((rows, r))
        a = rng.standard_normal((r, cols))
        got = lora_singular_values(torch.from_numpy(b), torch.from_numpy(a), scale=-0.25)
        want = np.linalg.svd(-0.25 * b @ a, compute_uv=False)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-10 * want[0], rtol=0)
        assert got.shape == (min(rows, cols),)


def _write_adapter(folder, tensors, **config):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 4, "target_modules": ["proj"]}
    cfg.update(config)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    save_file(tensors, folder / "adapter_model.safetensors")
    return folder


def test_hand_built_embedding_and_linear_adapter(tmp_path, gen):
    p = "base_model.model."
    tensors = {
        f"{p}embed.lora_embedding_A": torch.randn(4, 50, generator=gen, dtype=torch.float64),
        f"{p}embed.lora_embedding_B": torch.randn(16, 4, generator=gen, dtype=torch.float64),
        f"{p}block.proj.lora_A.weight": torch.randn(4, 24, generator=gen, dtype=torch.float64),
        f"{p}block.proj.lora_B.weight": torch.randn(32, 4, generator=gen, dtype=torch.float64),
        f"{p}head.modules_to_save.default.weight": torch.randn(3, 32),
    }
    folder = _write_adapter(tmp_path / "ad", tensors, target_modules=["proj", "embed"])
    entries = {e.name: e for e in open_source(folder).entries()}
    emb = entries["embed.weight[lora]"]
    assert (emb.kind, emb.shape) == ("embedding", (50, 16))
    dense = (tensors[f"{p}embed.lora_embedding_B"] @ tensors[f"{p}embed.lora_embedding_A"]).T
    np.testing.assert_allclose(emb.load().numpy(), dense.numpy(), rtol=1e-14)
    report = infospec.analyze(folder, progress=False)
    want = np.linalg.svd(dense.numpy(), compute_uv=False) ** 2
    np.testing.assert_allclose(report.spectrum("embed.weight[lora]"), want, rtol=1e-10, atol=1e-12)
    skipped = {r["name"]: r["reason"] for r in report.skipped}
    assert skipped["base_model.model.head.modules_to_save.default.weight"].startswith(
        "not a LoRA factor"
    )
    base = {
        "embed.weight": torch.randn(50, 16, generator=gen),
        "block.proj.weight": torch.randn(32, 24, generator=gen),
    }
    merged = {e.name: e for e in PeftSource(folder, base=base).entries()}
    want = (
        base["block.proj.weight"].double()
        + tensors[f"{p}block.proj.lora_B.weight"] @ tensors[f"{p}block.proj.lora_A.weight"]
    )
    np.testing.assert_allclose(merged["block.proj.weight"].load().numpy(), want.numpy(), rtol=1e-12)


def test_adapter_errors(tmp_path, gen, minilm, adapter):
    a, b = torch.randn(4, 24, generator=gen), torch.randn(32, 4, generator=gen)
    good = {"m.proj.lora_A.weight": a, "m.proj.lora_B.weight": b}
    with pytest.raises(SourceError, match=r"names the target module 'gate'.*no LoRA factors"):
        open_source(_write_adapter(tmp_path / "t1", good, target_modules=["proj", "gate"]))
    with pytest.raises(SourceError, match=r"has 'm\.proj\.lora_A\.weight' but not its other"):
        open_source(_write_adapter(tmp_path / "t2", {"m.proj.lora_A.weight": a}))
    with pytest.raises(SourceError, match=r"gives module 'm\.proj' rank 8, but its factors"):
        open_source(_write_adapter(tmp_path / "t3", good, r=8))
    with pytest.raises(SourceError, match=r"use_dora: true"):
        open_source(_write_adapter(tmp_path / "t4", good, use_dora=True))
    with pytest.raises(SourceError, match=r"peft_type PREFIX_TUNING; infospec reads LoRA"):
        open_source(_write_adapter(tmp_path / "t5", good, peft_type="PREFIX_TUNING"))
    with pytest.raises(SourceError, match=r"has lora_alpha=0"):
        open_source(_write_adapter(tmp_path / "t6", good, lora_alpha=0))
    folder = _write_adapter(tmp_path / "t7", good)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(SourceError, match=r"has adapter_config\.json but no adapter_model"):
        open_source(folder)
    (folder / "adapter_config.json").write_text("{nope")
    with pytest.raises(SourceError, match=r"adapter config .* is not valid JSON"):
        open_source(folder)
    folder = _write_adapter(tmp_path / "t8", good)
    with pytest.raises(SourceError, match=r"has no tensor 'm\.proj\.weight', which the adapter"):
        PeftSource(folder, base={"other.weight": torch.randn(32, 24)})
    with pytest.raises(SourceError, match=r"'m\.proj\.weight' .* has shape \(24, 32\), but"):
        PeftSource(folder, base={"m.proj.weight": torch.randn(24, 32)})
    with pytest.raises(SourceError, match=r"is not a PEFT adapter folder"):
        PeftSource(tmp_path)


def test_cli_adapter_with_base(adapter, minilm, capsys, tmp_path):
    folder, _ = adapter
    out = tmp_path / "r.json"
    args = ["analyze", str(folder), "--base", str(minilm), "--layers", r"layer\.0\.", "--out"]
    assert main([*args, str(out)]) == 0
    names = [r["name"] for r in json.loads(out.read_text())["weights"]]
    assert "encoder.layer.0.intermediate.dense.weight" in names
    assert "encoder.layer.0.intermediate.dense.weight[lora]" in names
    assert main(["analyze", str(minilm), "--base", str(minilm), "--no-activations"]) == 2
    assert "--base needs a PEFT adapter folder" in capsys.readouterr().err
    assert main(["describe", str(folder)]) == 0
    assert "18 analysed" in capsys.readouterr().out


def test_nonfinite_factor_is_an_error_row(tmp_path, gen):
    a = torch.randn(4, 24, generator=gen)
    a[0, 0] = float("inf")
    folder = _write_adapter(
        tmp_path / "nan", {"m.proj.lora_A.weight": a, "m.proj.lora_B.weight": torch.randn(32, 4)}
    )
    (row,) = infospec.analyze(folder, progress=False).weights
    assert row["status"] == "error" and "1 NaN or infinite" in row["warning"]
    shutil.rmtree(folder)
    with pytest.raises(InputError, match="layers"):
        infospec.analyze(
            _write_adapter(
                tmp_path / "ok",
                {
                    "m.proj.lora_A.weight": a.abs().clamp(max=1),
                    "m.proj.lora_B.weight": torch.randn(32, 4),
                },
            ),
            layers="nothing-like-this",
            progress=False,
        )


def test_gpt2_fan_in_fan_out_adapter_against_peft(tmp_path):
    """GPT-2's Conv1D stores (in, out); peft's delta and merged weights are in that layout.

    infospec lists both as the (out, in) matrix: equal to the transpose of peft's, which
    matters for the square c_proj (an untransposed comparison differs by about 0.2 there).
    """
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=64, vocab_size=100)
    model = transformers.GPT2Model(cfg)
    model.save_pretrained(tmp_path / "base")
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], fan_in_fan_out=True
    )
    wrapped = peft.get_peft_model(model, config)
    _randomise_lora_b(wrapped)
    wrapped.save_pretrained(tmp_path / "adapter")
    modules = dict(wrapped.named_modules())
    deltas = {
        n: modules[f"base_model.model.{n}"].get_delta_weight("default").detach().double()
        for n in ("h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_proj")
    }
    merged = {k: v.double() for k, v in wrapped.merge_and_unload().state_dict().items()}
    entries = {
        e.name: e for e in PeftSource(tmp_path / "adapter", base=tmp_path / "base").entries()
    }
    assert set(entries) == {f"{n}.weight{s}" for n in deltas for s in ("", "[lora]")}
    for module, ref in deltas.items():
        delta, full = entries[f"{module}.weight[lora]"], entries[f"{module}.weight"]
        assert delta.shape == full.shape == tuple(ref.T.shape)  # (out, in)
        # peft forms its products in float32: agreement to float32 round-off
        torch.testing.assert_close(delta.load().double(), ref.T, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            full.load().double(), merged[f"{module}.weight"].T, rtol=0, atol=1e-6
        )
    square = entries["h.0.attn.c_proj.weight[lora]"].load().double()
    assert float((square - deltas["h.0.attn.c_proj"]).abs().max()) > 0.05  # orientation matters
