"""compress / load_compressed: the whitened loss identity, budgets, saving, reloading, errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import infospec
from infospec import InputError
from infospec.spectra.activations import ActivationCovariances
from infospec.transforms import folder as folder_module
from infospec.transforms import lowrank
from infospec.transforms.folder import FACTORS_FILE, PLAN_FILE, load_compressed
from infospec.transforms.lowrank import compress, input_second_moments, whitened_factors


def _mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.Tanh(), nn.Linear(24, 8)
    ).to(dtype)


def _correlated(n, d=16, seed=1, dtype=torch.float64):
    """Rows with a strongly non-white, non-centred distribution (so whitening matters)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.logspace(0, -2, d)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix.T + 0.5).to(dtype)


def test_whitened_loss_identity():
    """||(W - AB) X^T||_F^2 / N = sum of the dropped sigma^2 of W L, to 1e-8 (ridge 0)."""
    torch.manual_seed(0)
    w = torch.randn(12, 20, dtype=torch.float64)
    x = _correlated(500, d=20)
    c = x.T @ x / x.shape[0]  # uncentred second moment: the layer acts on raw inputs
    factor = torch.linalg.cholesky(c)
    u, s, vh_linv = whitened_factors(w, factor)
    for k in (1, 5, 11):
        a, b = lowrank._split(u, s, vh_linv, k, torch.float64)
        err = ((w - a @ b) @ x.T).pow(2).sum() / x.shape[0]
        assert float(err) == pytest.approx(float((s[k:] ** 2).sum()), rel=1e-8, abs=1e-10)
        # and no better than Eckart-Young on the whitened matrix: plain SVD does worse
        up, sp, vp = torch.linalg.svd(w, full_matrices=False)
        plain = (up[:, :k] * sp[:k]) @ vp[:k]
        assert float(((w - plain) @ x.T).pow(2).sum()) / x.shape[0] >= float(err) - 1e-9


def test_compress_plan_matches_the_identity_on_the_calibration_data():
    model = _mlp()
    data = [_correlated(128, seed=s) for s in range(3)]
    res = compress(model, data, ratio=0.4, ridge=0.0, eval_data=data)
    factorised = [r for r in res.plan if r["status"] == "factorised"]
    assert factorised
    for r in factorised:
        assert r["measured_loss"] == pytest.approx(r["predicted_loss"], rel=1e-8, abs=1e-12)
        assert r["params_after"] == r["rank"] * sum(r["shape"])
    assert res.params_after <= 0.4 * res.params_before


def test_input_moments_with_token_mask_and_observe_inputs():
    lin = nn.Linear(6, 3).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, inputs, attention_mask):
            return self.lin(inputs)

    model = Wrap()
    (c, rows) = input_second_moments(model, {"lin": lin}, [{"inputs": x, "attention_mask": mask}])[
        "lin"
    ]
    real = x[mask]
    assert rows == 8
    torch.testing.assert_close(c, real.T @ real / 8, rtol=1e-12, atol=1e-12)
    with ActivationCovariances({"lin": lin}, observe="inputs") as acts:
        lin(x[0])
    assert acts.accumulators["lin"].dim == 6 and not lin._forward_pre_hooks


@pytest.mark.parametrize("weighting", ["relative", "absolute"])
def test_allocated_beats_uniform_on_a_planted_model(weighting):
    """Layer 0 is full rank, layer 1 nearly rank 3: the budget must go to layer 0."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32)).double()
    with torch.no_grad():
        low = torch.randn(32, 3, dtype=torch.float64) @ torch.randn(3, 32, dtype=torch.float64)
        model[1].weight.copy_(low + 1e-3 * torch.randn(32, 32, dtype=torch.float64))
    data = [torch.randn(256, 32, dtype=torch.float64) for s in range(2)]
    kw = {"ratio": 0.4, "eval_data": data, "weighting": weighting}
    uni = compress(model, data, allocation="uniform", **kw)
    alloc = compress(model, data, allocation="allocated", **kw)
    assert alloc.params_after <= 0.4 * alloc.params_before
    ranks = [r["rank"] for r in alloc.plan]
    assert ranks[0] > ranks[1]
    key = "measured_relative" if weighting == "relative" else "measured_loss"
    total = {k: sum(r[key] for r in res.plan) for k, res in (("u", uni), ("a", alloc))}
    assert total["a"] < 0.75 * total["u"]


@pytest.mark.parametrize("allocation", ["allocated", "uniform"])
def test_mp_edge_caps_ranks_at_the_spike_count(allocation):
    """A 120 x 80 weight with 3 planted spikes over iid noise: rank 3 even at ratio 1."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(120, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(80, 3, generator=g, dtype=torch.float64))
    w = (u * torch.tensor([40.0, 30.0, 20.0], dtype=torch.float64)) @ v.T
    model = nn.Sequential(nn.Linear(80, 120)).double()
    with torch.no_grad():
        model[0].weight.copy_(w + torch.randn(120, 80, generator=g, dtype=torch.float64))
    res = compress(model, None, ratio=1.0, method="weights", allocation=allocation, mp_edge=True)
    assert [r["rank"] for r in res.plan] == [3]


def test_ratio_one_keeps_every_matrix_dense():
    model = _mlp()
    data = [_correlated(64)]
    for allocation in ("allocated", "uniform"):
        res = compress(model, data, ratio=1.0, allocation=allocation)
        assert all(r["status"] == "dense" for r in res.plan)
        x = _correlated(4)
        torch.testing.assert_close(res.model(x), model(x), rtol=0, atol=0)


def test_weights_method_needs_no_data_and_is_plain_svd():
    model = _mlp()
    res = compress(model, None, ratio=0.5, method="weights", allocation="uniform")
    r = next(r for r in res.plan if r["status"] == "factorised")
    s = torch.linalg.svdvals(model.get_submodule(r["name"]).weight.detach())
    assert r["predicted_loss"] == pytest.approx(float((s[r["rank"] :] ** 2).sum()), rel=1e-10)


def test_input_untouched_save_reload_runs_equal(tmp_path):
    model = _mlp(dtype=torch.float32)
    before = copy.deepcopy(model.state_dict())
    data = [_correlated(128, seed=s, dtype=torch.float32) for s in range(2)]
    res = compress(model, data, ratio=0.5, eval_data=data)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    out = res.save(tmp_path / "c")
    assert sorted(p.name for p in out.iterdir()) == [FACTORS_FILE, PLAN_FILE]
    plan = json.loads((out / PLAN_FILE).read_text())
    assert {r["name"] for r in plan["layers"]} == {"0", "2", "4"}
    assert all("measured_loss" in r for r in plan["layers"] if r["status"] == "factorised")
    loaded = load_compressed(_mlp(dtype=torch.float32), out)
    x = _correlated(9, dtype=torch.float32)
    assert torch.equal(loaded(x), res.model(x))
    for r in plan["layers"]:
        swapped = loaded.get_submodule(r["name"])
        if r["status"] == "factorised":
            assert isinstance(swapped, nn.Sequential) and swapped[0].out_features == r["rank"]
        else:
            assert isinstance(swapped, nn.Linear)
    with pytest.raises(InputError, match="exists and is not empty"):
        res.save(out)


def test_no_partial_folder_after_an_error(tmp_path, monkeypatch):
    res = compress(_mlp(), [_correlated(64)], ratio=0.5)

    def boom(folder, result):
        (folder / FACTORS_FILE).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(folder_module, "_write_folder", boom)
    with pytest.raises(KeyboardInterrupt):
        res.save(tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_load_compressed_checks_names_and_shapes(tmp_path):
    res = compress(_mlp(), [_correlated(64)], ratio=0.5)
    out = res.save(tmp_path / "c")
    wrong = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 20), nn.Tanh()).double()
    state = copy.deepcopy(wrong.state_dict())
    with pytest.raises(InputError, match=r"layer '2' is \(20, 32\)|layer '4' of the plan"):
        load_compressed(wrong, out)
    assert all(torch.equal(v, state[k]) for k, v in wrong.state_dict().items())
    with pytest.raises(InputError, match="not a compressed-model folder"):
        load_compressed(_mlp(), tmp_path)


def test_tiny_bert_compresses_saves_and_reloads(tmp_path, tiny_bert):
    bert = tiny_bert(vocab_size=50, max_position_embeddings=32)[0].eval()
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "input_ids": torch.randint(0, 50, (4, 12), generator=g),
            "attention_mask": torch.ones(4, 12, dtype=torch.long),
        }
        for _ in range(3)
    ]
    res = compress(bert, batches, ratio=0.6, layers=r"encoder\.", eval_data=batches)
    assert all(r["name"].startswith("encoder.") for r in res.plan)
    assert len(res.plan) == 2 * 6  # q, k, v, attention output, intermediate, output
    assert res.params_after <= 0.6 * res.params_before
    out = res.save(tmp_path / "bert")
    fresh = tiny_bert(vocab_size=50, max_position_embeddings=32)[0].eval()
    load_compressed(fresh, out)
    with torch.no_grad():
        a = fresh(**batches[0]).last_hidden_state
        b = res.model(**batches[0]).last_hidden_state
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 0}, "ratio must be a number in \\(0, 1\\]"),
        ({"ratio": 1.5}, "ratio must be a number in \\(0, 1\\]"),
        ({"ratio": 0.5, "layers": "nothing_here"}, "nothing_here"),
        ({"ratio": 0.5, "method": "magic"}, "method"),
        ({"ratio": 0.5, "ridge": -1.0}, "ridge must be"),
        ({"ratio": 0.5, "weighting": "loudest"}, "weighting"),
        ({"ratio": 0.001}, "below the cheapest allocation"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        compress(_mlp(), [_correlated(64)], **kwargs)


def test_bad_data_and_singular_covariance():
    with pytest.raises(InputError, match="failed in the forward pass of the model"):
        compress(_mlp(), [torch.randn(8, 5, dtype=torch.float64)], ratio=0.5)
    # 4 rows of width 16: C has rank 4, Cholesky fails without a ridge
    few = [_correlated(4)]
    with pytest.raises(InputError, match="singular"):
        compress(_mlp(), few, ratio=0.5, ridge=0.0)
    assert compress(_mlp(), few, ratio=0.5, ridge=1e-6).params_after > 0
    with pytest.raises(InputError, match="needs data"):
        compress(_mlp(), None, ratio=0.5)
    with pytest.raises(InputError, match=r"no nn\.Linear"):
        compress(nn.Sequential(nn.Conv1d(2, 2, 3)), [torch.randn(1, 2, 5)], ratio=0.5)


def test_convolutions_are_skipped_with_a_reason():
    model = nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6, 10)).double()
    res = compress(model, [torch.randn(8, 3, 8, dtype=torch.float64)], ratio=0.5, layers=".")
    by = {r["name"]: r for r in res.plan}
    assert by["0"]["status"] == "skipped" and "linear layers only" in by["0"]["reason"]
    assert by["2"]["status"] == "factorised"


def test_top_level_names():
    assert infospec.compress is compress and infospec.load_compressed is load_compressed


def test_no_rank_zero_factorisation_and_mha_out_proj_is_kept(tmp_path):
    """A matrix no rank can save (2 x 2, 8 x 1) stays dense: it used to become a rank-0
    'factorisation' that outputs only its bias. nn.MultiheadAttention reads out_proj.weight
    directly: out_proj is skipped (a factorised module there broke the forward pass)."""
    torch.manual_seed(0)
    for layer in (nn.Linear(2, 2), nn.Linear(8, 1)):
        with pytest.raises(InputError, match="below the cheapest allocation"):
            infospec.compress(nn.Sequential(layer), None, ratio=0.5, method="weights")
    model = nn.Sequential(nn.Linear(16, 2), nn.Linear(2, 2), nn.Linear(2, 16))
    plan = {p["name"]: p for p in infospec.compress(model, None, ratio=0.6, method="weights").plan}
    assert plan["1"]["status"] == "dense" and all(p["rank"] != 0 for p in plan.values())

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.MultiheadAttention(16, 2)
            self.f = nn.Linear(16, 16)

        def forward(self, x):
            return self.f(self.a(x, x, x)[0])

    x = torch.randn(5, 1, 16)
    res = infospec.compress(Attention(), None, ratio=0.5, method="weights")
    statuses = {p["name"]: p["status"] for p in res.plan}
    assert statuses == {"f": "factorised", "a.out_proj": "skipped"}
    assert res.model(x).shape == (5, 1, 16)
    with pytest.raises(InputError, match=r"out_proj of an nn\.MultiheadAttention"):
        infospec.compress(nn.MultiheadAttention(16, 2), None, ratio=0.5, method="weights")


def test_models_that_are_not_modules_or_a_bare_linear_are_named():
    for call in (
        lambda m: infospec.compress(m, None, ratio=0.5, method="weights"),
        infospec.svd_smooth,
        infospec.svd_sharpen,
        lambda m: infospec.rmt_project(m, [torch.randn(4, 16)]),
    ):
        with pytest.raises(InputError, match=r"'model' argument of .* must be a torch\.nn\.Module"):
            call("abc")
    with pytest.raises(InputError, match=r"is itself an nn\.Linear"):
        infospec.compress(nn.Linear(16, 8), None, ratio=0.5, method="weights")
    with pytest.raises(InputError, match=r"is itself an nn\.Linear"):
        infospec.rmt_project(nn.Linear(16, 8), [torch.randn(4, 16)])
    smoothed = infospec.svd_smooth(nn.Linear(16, 8), 2)  # changed in place: a bare layer works
    assert int(torch.linalg.matrix_rank(smoothed.weight.detach())) == 2


class _TiedLM(nn.Module):
    """An embedding, a hidden layer and an output layer tied to the embedding (GPT-2's)."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(50, 32)
        self.hidden = nn.Linear(32, 32)
        self.lm_head = nn.Linear(32, 50, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, ids):
        return self.lm_head(torch.relu(self.hidden(self.wte(ids))))


@pytest.mark.parametrize("kwargs", [{"ratio": 0.5}, {"bits": 4, "group_size": 16}])
def test_a_tied_output_layer_is_skipped_not_counted_as_saved(kwargs):
    # factorising a tied lm_head keeps the embedding and adds the factors (the plan
    # reported the parameters halved while the model grew); quantizing it would change
    # the embedding too
    torch.manual_seed(0)
    model = _TiedLM().eval()
    data = [torch.randint(0, 50, (4, 8)) for _ in range(3)]
    result = infospec.compress(model, data, **kwargs)
    rows = {r["name"]: r for r in result.plan}
    assert rows["lm_head"]["status"] == "skipped"
    assert "tied to 'wte'" in rows["lm_head"]["reason"]
    assert rows["hidden"]["status"] != "skipped"
    assert result.model.lm_head.weight is result.model.wte.weight  # the tie kept
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 (tied once)
    if "ratio" in kwargs:
        assert count(result.model) - count(model) == result.params_after - result.params_before
