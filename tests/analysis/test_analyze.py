import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import infospec
from infospec import InputError, Report, SourceError, analyze, singular_values
from infospec.analysis.activations import activation_record
from infospec.analysis.weights import WEIGHT_COLUMNS, weight_record


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 24), nn.Tanh(), nn.Linear(24, 12)
    )


def test_weight_rows_match_direct_measures():
    model = _mlp()
    report = analyze(model, progress=False)
    df = report.to_dataframe()
    assert df["name"].tolist() == ["0.weight", "2.weight", "4.weight"]
    W = model[2].weight.detach().double()
    s = np.linalg.svd(W.numpy(), compute_uv=False)
    row = df.set_index("name").loc["2.weight"]
    assert (row["rows"], row["cols"], row["params"]) == (24, 32, 24 * 32)
    assert row["sigma_max"] == pytest.approx(s[0], rel=1e-10)
    assert row["frobenius_norm"] == pytest.approx(np.linalg.norm(W.numpy()), rel=1e-10)
    assert row["stable_rank"] == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-10)
    assert row["flatness"] == pytest.approx(float(infospec.spectral_flatness(s)), rel=1e-10)
    assert row["log_sigma_var"] == pytest.approx(np.log(s).var(), rel=1e-9)
    assert row["log_norm"] == pytest.approx(math.log10((s**2).sum()), rel=1e-10)
    assert row["alpha_weighted"] == pytest.approx(row["alpha"] * math.log10(s[0] ** 2), rel=1e-10)
    fit = infospec.fit_power_law(s**2)
    assert row["alpha"] == pytest.approx(float(fit.alpha), rel=1e-12)
    # bits: R(D) of the columns at 1% distortion, by the measure itself
    lam = s**2 / 32
    rd = infospec.rate_distortion(lam, 0.01 * lam.sum(), bits=True)
    assert row["rate_bits"] == pytest.approx(float(rd.rate), rel=1e-12)
    assert row["bits_per_param"] == pytest.approx(float(rd.rate) / 24, rel=1e-12)
    np.testing.assert_allclose(report.spectrum("2.weight"), s**2, rtol=1e-10)
    assert [r["name"] for r in report.skipped] == ["0.bias", "2.bias", "4.bias"]
    assert all("1-D" in r["reason"] for r in report.skipped)


def test_weight_record_bits_closed_form():
    # an orthogonal-like matrix: all sigma equal -> R(D) = rows/2 log2(1/rel) per column
    W = torch.eye(16) * 3.0
    rec = weight_record(singular_values(W), rows=16, cols=16, rel_distortion=0.25)
    assert rec["rate_bits"] == pytest.approx(16 / 2 * math.log2(4), rel=1e-12)
    assert rec["flatness"] == pytest.approx(1.0)
    assert rec["effective_rank"] == pytest.approx(16.0)
    assert math.isnan(rec["alpha"]) and "power-law fit" in rec["warning"]


def test_nan_tensor_reported_and_others_analysed():
    model = _mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
        model[2].weight[1, 1] = float("inf")
    report = analyze(model, progress=False)
    df = report.to_dataframe().set_index("name")
    assert df.loc["2.weight", "status"] == "error"
    assert "1 NaN and 1 infinite" in df.loc["2.weight", "warning"]
    assert df.loc["0.weight", "status"] == "ok" and df.loc["4.weight", "status"] == "ok"


def test_safetensors_file_equals_module(tmp_path):
    model = _mlp()
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    cols = ["name", "flatness", "alpha", "rate_bits", "mp_sigma2"]
    a = analyze(model, progress=False).to_dataframe()[cols]
    b = analyze(path, progress=False).to_dataframe()[cols]
    assert a["name"].tolist() == b["name"].tolist()
    np.testing.assert_allclose(
        a.iloc[:, 1:].to_numpy(float), b.iloc[:, 1:].to_numpy(float), rtol=1e-12
    )


def test_bf16_checkpoint(tmp_path):
    torch.manual_seed(1)
    w = torch.randn(64, 48).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    save_file({"layer.weight": w}, str(path))
    row = analyze(path, progress=False).weights[0]
    assert row["status"] == "ok" and row["dtype"] == "bfloat16"
    s = np.linalg.svd(w.double().numpy(), compute_uv=False)
    assert row["sigma_max"] == pytest.approx(s[0], rel=1e-10)


def test_layers_regex_and_errors():
    model = _mlp()
    assert [r["name"] for r in analyze(model, layers=r"^[24]\.", progress=False).weights] == [
        "2.weight",
        "4.weight",
    ]
    with pytest.raises(InputError, match="matches no"):
        analyze(model, layers="attention", progress=False)
    with pytest.raises(InputError, match="regular expression"):
        analyze(model, layers="([", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"conv": "slices"}, "'conv' parameter of analyze must be one of"),
        (
            {"rel_distortion": 0.0},
            r"'rel_distortion' parameter of analyze must be a float in \(0, 1\]",
        ),
        ({"eps": -1.0}, "'eps' parameter of analyze must be a float > 0"),
        ({"device": "gpu0"}, "'device' parameter of analyze"),
        ({"method": "qr"}, "'method' parameter"),
    ],
)
def test_option_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        analyze(_mlp(), progress=False, **kwargs)


def test_missing_file_is_source_error(tmp_path):
    with pytest.raises(SourceError, match="No such file"):
        analyze(tmp_path / "nope.safetensors", progress=False)


def test_data_needs_module(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(20, 20)}, str(path))
    with pytest.raises(InputError, match=r"needs a torch\.nn\.Module"):
        analyze(path, [torch.randn(3, 20)], progress=False)


# ---- activations --------------------------------------------------------------------------


def _data(n_batches=4, batch=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 40, generator=g) for _ in range(n_batches)]


def test_activation_rows_match_direct_computation():
    model = _mlp()
    data = _data()
    report = analyze(model, data, progress=False)
    names = [r["name"] for r in report.activations]
    assert names == ["0", "2", "4"]
    with torch.no_grad():
        h = model[0](torch.cat(data)).double()
    eig = infospec.covariance_eigenvalues(h)
    row = report.to_dataframe("activations").set_index("name").loc["0"]
    assert row["samples"] == 256 and row["dim"] == 32
    assert row["flatness"] == pytest.approx(float(infospec.spectral_flatness(eig)), rel=1e-9)
    assert row["entropy_bits_per_dim"] == pytest.approx(
        float(infospec.gaussian_entropy(eig, bits=True)) / 32, rel=1e-9
    )
    unit = eig / eig.sum()
    # the coding rate of unit-energy features equals coding_rate on rescaled samples
    hc = (h - h.mean(0)) / math.sqrt(float(eig.sum()) * 255 / 256)
    assert row["coding_rate_bits"] == pytest.approx(
        float(infospec.coding_rate(hc, eps=0.5, bits=True)), rel=1e-6
    )
    assert row["capacity_bits"] == pytest.approx(
        float(infospec.gaussian_capacity(eig, 0.1 * float(eig.mean()), bits=True)), rel=1e-9
    )
    np.testing.assert_allclose(report.spectrum("0", "activations"), eig.numpy(), rtol=1e-9)
    del unit


@pytest.mark.parametrize("splits", [[256], [1, 255], [100, 100, 56], [32] * 8])
def test_activations_independent_of_batching(splits):
    # float64 model: a float32 forward pass rounds differently with the batch size, which
    # would hide what this tests (the accumulator's independence of the split)
    model = _mlp().double()
    full = torch.cat(_data()).double()
    data = list(torch.split(full, splits))
    ref = analyze(model, [full], progress=False).to_dataframe("activations")
    got = analyze(model, data, progress=False).to_dataframe("activations")
    cols = [
        "flatness",
        "effective_rank",
        "entropy_bits_per_dim",
        "coding_rate_bits",
        "rate_bits",
        "capacity_bits",
    ]
    np.testing.assert_allclose(got[cols].to_numpy(float), ref[cols].to_numpy(float), rtol=1e-9)


def test_hooks_removed_even_on_error():
    model = _mlp()
    bad = [torch.randn(8, 40), torch.randn(8, 41)]
    with pytest.raises(InputError, match="Batch 1 of 'data'"):
        analyze(model, bad, progress=False)
    assert all(not m._forward_hooks for m in model.modules())
    analyze(model, _data(1), progress=False)
    assert all(not m._forward_hooks for m in model.modules())


def test_training_mode_restored():
    model = _mlp().train()
    analyze(model, _data(1), progress=False)
    assert model.training


def test_nan_activation_layer_reported():
    model = _mlp()
    with torch.no_grad():
        model[2].bias[0] = float("nan")
    report = analyze(model, _data(1), progress=False)
    df = report.to_dataframe("activations").set_index("name")
    assert df.loc["0", "status"] == "ok"
    assert df.loc["2", "status"] == "error" and "NaN/Inf" in df.loc["2", "warning"]


def test_token_mask_excludes_padding():
    class Tok(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.proj = nn.Linear(16, 16)

        def forward(self, input_ids, attention_mask):
            return self.proj(self.emb(input_ids))

    torch.manual_seed(0)
    model = Tok()
    ids = torch.randint(1, 50, (4, 10))
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[:, 6:] = 0
    report = analyze(
        model,
        [{"input_ids": ids, "attention_mask": mask}],
        activation_layers=["proj"],
        progress=False,
    )
    assert report.activations[0]["samples"] == 24  # 4 x 6 real tokens, padding dropped


def test_activation_layers_regex_errors():
    msg = "'activation_layers' pattern 'encoder' of analyze matches none of the 5 module"
    with pytest.raises(InputError, match=msg):
        analyze(_mlp(), _data(1), activation_layers="encoder", progress=False)


def test_empty_data_and_bad_batch_type():
    with pytest.raises(InputError, match="yielded no batch"):
        analyze(_mlp(), [], progress=False)
    with pytest.raises(InputError, match="a batch must be a tensor"):
        analyze(_mlp(), ["text"], progress=False)


def test_activation_record_rank_deficient_up_projection():
    torch.manual_seed(0)
    up = nn.Linear(8, 32)
    with torch.no_grad():
        h = up(torch.randn(500, 8)).double()
    eig = infospec.covariance_eigenvalues(h)
    rec = activation_record(eig, 500)
    assert rec["rank"] == 8
    # flatness and entropy are of the support: the 8 nonzero eigenvalues
    top = eig[:8]
    assert rec["flatness"] == pytest.approx(float(infospec.spectral_flatness(top)), rel=1e-9)
    assert rec["entropy_bits_per_dim"] == pytest.approx(
        float(infospec.gaussian_entropy(top, bits=True)) / 8, rel=1e-9
    )
    # rank-independent measures read every eigenvalue (zeros contribute nothing)
    assert rec["effective_rank"] == pytest.approx(float(infospec.effective_rank(top)), rel=1e-9)
    assert rec["warning"] == ""


def test_layernorm_output_has_rank_d_minus_1():
    torch.manual_seed(0)
    ln = nn.LayerNorm(16)
    with torch.no_grad():
        h = ln(torch.randn(400, 16) * 3 + 1).double()
    eig = infospec.covariance_eigenvalues(h)
    rec = activation_record(eig, 400, input_dtype=torch.float32)
    assert rec["rank"] == 15 and rec["dim"] == 16
    # in float64 the same spectrum keeps its float32 rounding eigenvalue
    assert activation_record(eig, 400)["rank"] == 16


# ---- report output ------------------------------------------------------------------------


def test_report_files(tmp_path):
    report = analyze(_mlp(), _data(2), progress=False)
    csv = tmp_path / "w.csv"
    report.to_csv(csv)
    import pandas as pd

    back = pd.read_csv(csv)
    assert back["name"].tolist() == ["0.weight", "2.weight", "4.weight"]
    assert set(WEIGHT_COLUMNS) <= set(back.columns)
    js = tmp_path / "r.json"
    report.to_json(js)
    data = json.loads(js.read_text())
    assert len(data["weights"]) == 3 and len(data["activations"]) == 3
    assert data["meta"]["rel_distortion"] == 0.01
    assert "[weights]" in report.summary() and "[activations]" in report.summary()
    assert isinstance(report, Report)


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    report = analyze(_mlp(), progress=False)
    target = tmp_path / "r.csv"
    import pandas as pd

    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(KeyboardInterrupt):
        report.to_csv(target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_to_missing_directory(tmp_path):
    report = analyze(_mlp(), progress=False)
    with pytest.raises(InputError, match="does not exist"):
        report.to_csv(tmp_path / "no" / "r.csv")


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_give_identical_reports_in_order(workers):
    torch.manual_seed(3)
    model = nn.Sequential(*[nn.Linear(24, 24) for _ in range(5)])
    before = torch.get_num_threads()
    ref = analyze(model, workers=1, progress=False).to_dataframe()
    got = analyze(model, workers=workers, progress=False)
    assert got.meta["workers"] == workers
    assert torch.get_num_threads() == before
    df = got.to_dataframe()
    assert df["name"].tolist() == [f"{i}.weight" for i in range(5)]
    cols = ["sigma_max", "flatness", "alpha", "mp_sigma2", "rate_bits"]
    np.testing.assert_array_equal(df[cols].to_numpy(float), ref[cols].to_numpy(float))


def test_workers_error_and_source_error_propagate(tmp_path):
    with pytest.raises(InputError, match="'workers' parameter of analyze must be an int > 0"):
        analyze(_mlp(), workers=0, progress=False)
    from infospec.sources import open_source

    path = tmp_path / "m.safetensors"
    save_file({f"l{i}.weight": torch.randn(20, 20) for i in range(4)}, str(path))
    source = open_source(path)  # header read now, tensors later
    path.write_bytes(path.read_bytes()[:200])  # the file is cut under the analysis
    before = torch.get_num_threads()
    with pytest.raises(SourceError, match=r"m\.safetensors"):
        analyze(source, workers=2, progress=False)
    assert torch.get_num_threads() == before


def _as_if_on_gpu(monkeypatch):
    """Make analyze take its GPU route (spectra in the calling thread, fits in the pool).

    The spectra are still computed on the CPU (``device`` is left unset); only the
    scheduling changes, which is what these tests check.
    """
    import importlib

    analyze_module = importlib.import_module("infospec.analysis.analyze")
    monkeypatch.setattr(analyze_module, "_data_device", lambda source: torch.device("cuda"))


@pytest.mark.parametrize("workers", [1, 3])
def test_pipeline_gives_identical_report_in_order(monkeypatch, workers):
    torch.manual_seed(4)
    model = nn.Sequential(*[nn.Linear(24 + i, 24) for i in range(6)])
    ref = analyze(model, workers=1, progress=False)
    assert ref.meta["pipeline"] is False
    _as_if_on_gpu(monkeypatch)
    before = torch.get_num_threads()
    got = analyze(model, workers=workers, progress=False)
    assert got.meta["pipeline"] is True and got.meta["workers"] == workers
    assert torch.get_num_threads() == before
    df, ref_df = got.to_dataframe(), ref.to_dataframe()
    assert df["name"].tolist() == [f"{i}.weight" for i in range(6)]
    cols = ["rows", "cols", "sigma_max", "flatness", "alpha", "mp_sigma2", "rate_bits"]
    np.testing.assert_array_equal(df[cols].to_numpy(float), ref_df[cols].to_numpy(float))
    assert list(got.spectra) == list(ref.spectra)
    for key, esd in ref.spectra.items():
        np.testing.assert_array_equal(got.spectra[key], esd)


def test_pipeline_reports_nan_rows_and_propagates_source_errors(monkeypatch, tmp_path):
    _as_if_on_gpu(monkeypatch)
    model = _mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    df = analyze(model, progress=False).to_dataframe().set_index("name")
    assert df.loc["2.weight", "status"] == "error"
    assert "1 NaN and 0 infinite" in df.loc["2.weight", "warning"]
    assert (df.drop(index="2.weight")["status"] == "ok").all()

    from infospec.sources import open_source

    path = tmp_path / "m.safetensors"
    save_file({f"l{i}.weight": torch.randn(20, 20) for i in range(4)}, str(path))
    source = open_source(path)
    path.write_bytes(path.read_bytes()[:200])
    before = torch.get_num_threads()
    with pytest.raises(SourceError, match=r"m\.safetensors"):
        analyze(source, workers=2, progress=False)
    assert torch.get_num_threads() == before


def test_map_in_order_runs_fits_beside_the_spectra():
    """In the pipeline the second stage of item i runs while the first stage of i+1 does."""
    import threading

    from infospec.analysis.stages import _map_in_order

    started = threading.Event()
    log = []

    def first(i):
        if i == 1:
            # the fit of item 0 must be able to start while this spectrum is computed
            assert started.wait(5), "the second stage did not run beside the first"
        log.append(("first", i))
        return i * 10

    def second(i, x):
        if i == 0:
            started.set()
        return (i, x, threading.current_thread() is threading.main_thread())

    out = list(_map_in_order(first, second, range(4), workers=2, pipeline=True))
    assert [o[:2] for o in out] == [(0, 0), (1, 10), (2, 20), (3, 30)]
    assert not any(o[2] for o in out)  # fits ran in the pool
    assert log == [("first", i) for i in range(4)]
    serial = list(_map_in_order(first, second, range(4), workers=1, pipeline=False))
    assert [o[:2] for o in serial] == [o[:2] for o in out]


def test_data_device_and_stage_times():
    from infospec.analysis.analyze import _data_device

    assert _data_device(nn.Linear(3, 3)) == torch.device("cpu")
    assert _data_device({"w": torch.empty(3, 3, device="meta")}) == torch.device("meta")
    assert _data_device(nn.Linear(3, 3).to("meta")) == torch.device("meta")
    assert _data_device("model.safetensors") == torch.device("cpu")
    report = analyze(_mlp(), progress=False)
    meta = report.meta
    assert 0 < meta["spectrum_seconds"] and 0 < meta["fit_seconds"]
    assert meta["weight_seconds"] <= meta["seconds"]
    assert "summed over tensors: spectra" in report.summary()


def _mha_with_overflowing_v():
    """A packed in_proj_weight whose v block is marked (1e200) for a failing solver."""
    torch.manual_seed(0)
    m = nn.MultiheadAttention(32, 4).double()
    with torch.no_grad():
        m.in_proj_weight[64:, :] *= 1e200
    return m


def _solver_failing_on_huge(monkeypatch):
    """singular_values raises LinAlgError (as a non-converging solver does) on |w| > 1e100."""
    import importlib

    module = importlib.import_module("infospec.analysis.analyze")
    real = module.singular_values

    def failing(matrix, **kwargs):
        if float(matrix.abs().max()) > 1e100:
            raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")
        return real(matrix, **kwargs)

    monkeypatch.setattr(module, "singular_values", failing)


@pytest.mark.parametrize("gpu_route", [False, True])
def test_failing_matrix_keeps_the_tensors_earlier_matrices(monkeypatch, gpu_route):
    if gpu_route:
        _as_if_on_gpu(monkeypatch)
    _solver_failing_on_huge(monkeypatch)
    report = analyze(_mha_with_overflowing_v(), workers=1, progress=False)
    got = [(w["name"], w["status"]) for w in report.weights]
    assert got == [
        ("in_proj_weight[q]", "ok"),
        ("in_proj_weight[k]", "ok"),
        ("in_proj_weight", "error"),
        ("out_proj.weight", "ok"),
    ]
    assert "failed to converge" in report.weights[2]["warning"]
    assert sorted(report.spectra) == [
        "weights/in_proj_weight[k]",
        "weights/in_proj_weight[q]",
        "weights/out_proj.weight",
    ]


def test_failed_tensor_is_not_held_by_the_error(monkeypatch):
    """Only the message of a failure travels to the fit stage, not its traceback's tensor."""
    import gc
    import weakref

    from infospec.analysis.analyze import _spectra
    from infospec.sources import WeightEntry

    alive = []

    def load(device=None):
        t = torch.full((12, 12), 1e200, dtype=torch.float64)
        alive.append(weakref.ref(t))
        return t

    entry = WeightEntry(
        name="w", shape=(12, 12), dtype="float64", kind="linear", origin="test", loader=load
    )
    _solver_failing_on_huge(monkeypatch)
    out = _spectra(entry, conv="flatten", split_in_proj=True, method="auto", device=None)
    assert [(o[0], o[3]) for o in out] == [("w", None)]
    assert isinstance(out[0][4], str) and "failed to converge" in out[0][4]
    gc.collect()
    assert alive[0]() is None


@pytest.mark.parametrize("gpu_route", [False, True])
def test_interrupt_in_the_consumer_stops_the_workers(monkeypatch, gpu_route):
    import importlib
    import threading

    stages_module = importlib.import_module("infospec.analysis.stages")
    if gpu_route:
        _as_if_on_gpu(monkeypatch)

    def interrupting_bar(iterable, **kwargs):
        for i, item in enumerate(iterable):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(stages_module, "_progress", interrupting_bar)
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(12)])
    before = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt) as excinfo:
        analyze(model, workers=2, progress=False)
    # excinfo keeps the traceback, and so analyze's frame, alive (as a REPL's
    # sys.last_traceback does): the workers must be stopped without the frame being freed
    assert excinfo.traceback
    assert torch.get_num_threads() == before
    pool = [t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")]
    assert pool == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_report_matches_cpu_report(tmp_path):
    model = _mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    cpu = analyze(model, progress=False)
    on_device = analyze(model, device="cuda", progress=False)
    model_on_gpu = analyze(model.cuda(), progress=False)  # device left to the model
    for gpu in (on_device, model_on_gpu):
        assert gpu.meta["pipeline"] is True
        df, ref = gpu.to_dataframe(), cpu.to_dataframe()
        assert df["name"].tolist() == ref["name"].tolist()
        assert df["status"].tolist() == ref["status"].tolist()
        cols = ["sigma_max", "flatness", "alpha", "mp_sigma2", "rate_bits"]
        np.testing.assert_allclose(df[cols].to_numpy(float), ref[cols].to_numpy(float), rtol=1e-9)
        assert set(gpu.spectra) == set(cpu.spectra)


def _conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(12, 16, 3), nn.ReLU(), nn.Conv1d(16, 20, 4))


def test_conv_default_is_pooled_over_kernel_positions():
    """One row per conv layer whose ESD is the per-position spectra concatenated (to
    1e-12), with rows x cols of one position, params of the kernel and bits per weight."""
    model = _conv_net()
    pooled = analyze(model, progress=False)
    assert pooled.meta["conv"] == "pooled"
    per = analyze(model, conv="per_position", progress=False)
    assert [r["name"] for r in pooled.weights] == ["0.weight", "2.weight"]
    assert len(per.weights) == 9 + 4
    for name, positions in (("0.weight", 9), ("2.weight", 4)):
        row = {r["name"]: r for r in pooled.weights}[name]
        parts = [per.spectrum(r["name"]) for r in per.weights if r["tensor"] == name]
        assert len(parts) == positions
        lam = np.sort(np.concatenate(parts))[::-1]
        np.testing.assert_allclose(pooled.spectrum(name), lam, rtol=1e-12, atol=0)
        kernel = dict(model.named_parameters())[name].detach().double()
        out, inp = kernel.shape[:2]
        assert (row["rows"], row["cols"], row["params"]) == (out, inp, kernel.numel())
        assert row["frobenius_norm"] == pytest.approx(float(kernel.norm()), rel=1e-12)
        assert row["mp_q"] == pytest.approx(min(out, inp) / max(out, inp))
        fit = infospec.fit_power_law(lam)
        assert row["alpha"] == pytest.approx(float(fit.alpha), rel=1e-12)
        assert row["stable_rank"] == pytest.approx(lam.sum() / lam.max(), rel=1e-12)
        # bits: the input channel's weights at every position (dimension P * out) are
        # the samples, their second moment block-diagonal with eigenvalues lam / in
        rd = infospec.rate_distortion(lam / inp, 0.01 * lam.sum() / inp, bits=True)
        assert row["rate_bits"] == pytest.approx(float(rd.rate), rel=1e-12)
        assert row["bits_per_param"] == pytest.approx(float(rd.rate) / (positions * out))
        assert row["bits_per_param"] * row["params"] == pytest.approx(row["rate_bits"] * inp)


@pytest.mark.parametrize("conv", ["pooled", "per_position"])
def test_min_dim_applies_to_each_kernel_position(conv):
    """CREPE's first conv (1024, 1, 512, 1): 512 matrices 1024 x 1 are skipped with the
    reason, not 512 rows of NaN fits; flattened (1024 x 512) it is analysed."""
    model = nn.Sequential(nn.Conv2d(1, 1024, (512, 1)), nn.ReLU(), nn.Conv2d(1024, 12, 1))
    report = analyze(model, conv=conv, progress=False)
    assert [r["tensor"] for r in report.weights] == ["2.weight"]
    reasons = {r["name"]: r["reason"] for r in report.skipped}
    assert reasons["0.weight"] == (
        "smaller side 1 < min_dim=10 (512 kernel-position matrices 1024 x 1)"
    )
    flat = analyze(model, conv="flatten", progress=False, layers=r"^0\.weight")
    assert [(r["rows"], r["cols"], r["status"]) for r in flat.weights] == [(1024, 512, "ok")]
    # min_dim=1 admits it: one row of 512 eigenvalues (the 512 filters' squared norms)
    low = analyze(model, conv=conv, min_dim=1, progress=False, layers=r"^0\.weight")
    expected = (model[0].weight.detach().double() ** 2).sum(dim=(0, 1, 3)).sort().values
    got = np.sort(np.concatenate([low.spectrum(r["name"]) for r in low.weights]))
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12)


def test_a_bad_conv_mode_names_the_choices():
    with pytest.raises(
        InputError,
        match=r"'conv' parameter of analyze must be one of 'pooled', 'flatten', "
        r"'per_position'\. Got 'ww' instead",
    ):
        analyze(_conv_net(), conv="ww", progress=False)


def test_a_nan_in_a_pooled_kernel_is_one_error_row():
    g = torch.Generator().manual_seed(1)
    bad = torch.randn(16, 12, 3, 3, generator=g)
    bad[3, 2, 1, 0] = float("nan")
    report = analyze({"bad.weight": bad, "good.weight": bad.nan_to_num()}, progress=False)
    assert [(r["name"], r["status"]) for r in report.weights] == [
        ("bad.weight", "error"),
        ("good.weight", "ok"),
    ]
    assert report.weights[0]["warning"] == (
        "tensor contains 1 NaN and 0 infinite value(s); not analysed"
    )


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-160, 1e160, 1e200, 1e300])
def test_weights_beyond_the_float64_squares_keep_their_scale_free_measures(scale):
    """Singular values past 1e+-154 have squares outside float64: read in units of a
    power of two, the scale-free columns are those of the unit-scale matrix and the logs
    move by 2 log10(scale); eigenvalue columns outside float64 are NaN with the reason
    (the 1e-200 matrix was reported as a zero matrix, the 1e200 one as an error row)."""
    W = torch.randn(40, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = infospec.analyze({"w": W}).to_dataframe("weights").iloc[0]
    row = infospec.analyze({"w": W * scale}).to_dataframe("weights").iloc[0]
    assert row["status"] == "ok"
    for column in (
        "stable_rank",
        "effective_rank",
        "flatness",
        "log_sigma_var",
        "mp_ks",
        "mp_num_spikes",
        "rate_bits",
        "bits_per_param",
    ):
        assert row[column] == pytest.approx(ref[column], rel=1e-12), column
    shift = 2 * math.log10(scale)
    for column in ("log_norm", "log_spectral_norm"):
        assert row[column] == pytest.approx(ref[column] + shift, abs=1e-9), column
    assert row["sigma_max"] == pytest.approx(ref["sigma_max"] * scale, rel=1e-12)
    assert row["frobenius_norm"] == pytest.approx(ref["frobenius_norm"] * scale, rel=1e-12)
    assert math.isnan(row["mp_sigma2"]) and "outside the float64 range" in row["warning"]
    if scale > 1:  # every eigenvalue above WeightWatcher's absolute threshold: same fit
        assert row["alpha"] == pytest.approx(ref["alpha"], rel=1e-12)
        assert row["log_alpha_norm"] == pytest.approx(
            ref["log_alpha_norm"] + ref["alpha"] * shift, rel=1e-9
        )
    else:  # every eigenvalue below it: no tail, as WeightWatcher
        assert math.isnan(row["alpha"]) and "below WeightWatcher's threshold" in row["warning"]


@pytest.mark.parametrize("value", ["yes", None, [1], 2, float("nan")])
@pytest.mark.parametrize(
    ("verb", "flag"),
    [
        ("analyze", "split_in_proj"),
        ("analyze", "fits"),
        ("analyze", "linear_inputs"),
        ("compare", "strict"),
        ("compare", "tuned_values"),
        ("compare", "fits"),
        ("track", "overlap"),
        ("track", "fits"),
    ],
)
def test_flags_of_the_verbs_are_booleans(tmp_path, verb, flag, value):
    """A flag given 'yes', None, a list, 2 or NaN is refused by name (NaN used to land in
    report.meta)."""
    w = {"w": torch.randn(12, 12, dtype=torch.float64)}
    match = rf"'{flag}' parameter of {verb} must be True or False"
    with pytest.raises(InputError, match=match):
        if verb == "analyze":
            infospec.analyze(w, **{flag: value})
        elif verb == "compare":
            infospec.compare(w, w, **{flag: value})
        else:
            infospec.track([tmp_path / "a", tmp_path / "b"], store=tmp_path / "s", **{flag: value})


def test_track_and_device_arguments_of_the_wrong_kind(tmp_path):
    w = {"w": torch.randn(12, 12, dtype=torch.float64)}
    with pytest.raises(InputError, match="'device' parameter of analyze must be a torch device"):
        infospec.analyze(w, device=10**30)
    with pytest.raises(InputError, match="'run' argument of track must be a run folder"):
        infospec.track(None, store=tmp_path / "s")
    with pytest.raises(InputError, match=r"'run' argument of track .* got list"):
        infospec.track([w, w], store=tmp_path / "s")
    with pytest.raises(InputError, match="'store' parameter of track must be a path"):
        infospec.track([tmp_path / "a"], store=3.5)
    with pytest.raises(InputError, match="'method' parameter of track"):
        infospec.track([tmp_path / "a"], store=tmp_path / "s", method=10**30)
    assert not (tmp_path / "s").exists()  # refused before the store is written
