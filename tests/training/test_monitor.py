"""Tests of infospec.training.monitor.Monitor against the report's records and NumPy."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from infospec._errors import InfospecWarning, InputError
from infospec.analysis.activations import activation_record
from infospec.analysis.weights import weight_record
from infospec.spectra.matrices import singular_values
from infospec.training.monitor import DEFAULT_ALERTS, MONITOR_COLUMNS, Monitor, MonitorAlert

LOG2_2PI_E = math.log2(2 * math.pi * math.e)


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 12), nn.ReLU())


def _has_hooks(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _train(model, monitor, steps, *, batch=32, gen=None, inputs=None, width=12):
    gen = gen if gen is not None else torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = []
    for i in range(steps):
        x = inputs[i] if inputs is not None else torch.randn(batch, width, generator=gen)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(monitor.step())
    return seen


class _Writer:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, global_step=None):
        self.calls.append((tag, value, global_step))


# -- schedule and hooks ------------------------------------------------------------------


@pytest.mark.parametrize("every,window", [(1, 1), (3, 1), (4, 2), (5, 5), (3, 10)])
def test_hooks_only_during_the_measured_window(every, window):
    model = _mlp()
    monitor = Monitor(model, every=every, window=window, alerts=None)
    w = min(window, every)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(1, 3 * every + 1):
        collecting = step % every == 0 or step % every > every - w
        assert _has_hooks(model) == collecting, (step, every, window)
        model(torch.randn(20, 12, generator=gen)).sum().backward()
        opt.step()
        metrics = monitor.step()
        assert bool(metrics) == (step % every == 0)
    steps = sorted(monitor.history()["step"].unique())
    assert steps == [every, 2 * every, 3 * every]
    # the activations of each measurement are the rows of its window only
    acts = monitor.history().query("table == 'activations' and layer == '2'")
    assert acts["samples"].tolist() == [20 * w] * 3
    monitor.remove()
    assert not _has_hooks(model)


def test_values_equal_the_report_records():
    """Activations: activation_record of the float64 covariance of the window's outputs;
    weights: weight_record of the singular values (closed form: NumPy)."""
    model = _mlp()
    gen = torch.Generator().manual_seed(3)
    inputs = [torch.randn(40, 12, generator=gen) for _ in range(4)]
    captured: list[torch.Tensor] = []
    handle = model[2].register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
    monitor = Monitor(model, every=4, window=2, max_tokens=None, alerts=None)
    _train(model, monitor, 4, inputs=inputs)
    handle.remove()
    frame = monitor.history()
    # activations of layer '2' from the last two steps' outputs (steps 3 and 4)
    out = torch.cat(captured[2:4]).double().numpy()
    eig = np.linalg.eigvalsh(np.cov(out, rowvar=False))[::-1].copy()
    ref = activation_record(torch.from_numpy(eig), out.shape[0])
    row = frame.query("table == 'activations' and layer == '2'").iloc[0]
    assert row["samples"] == 80 and row["dim"] == 12 and row["status"] == "ok"
    for key in ("flatness", "effective_rank", "entropy_bits_per_dim", "coding_rate_bits"):
        assert row[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12)
    # Gaussian entropy per dim by hand, in bits
    by_hand = 0.5 * LOG2_2PI_E + 0.5 * np.mean(np.log2(eig))
    assert row["entropy_bits_per_dim"] == pytest.approx(by_hand, rel=1e-9)
    flat = np.exp(np.mean(np.log(eig))) / np.mean(eig)
    assert row["flatness"] == pytest.approx(flat, rel=1e-9)
    # weights of layer '0' at step 4 (the model now holds them)
    w = model[0].weight.detach().double().numpy()
    sigma = np.linalg.svd(w, compute_uv=False)
    wrow = frame.query("table == 'weights' and matrix == '0.weight'").iloc[0]
    assert wrow["layer"] == "0" and (wrow["rows"], wrow["cols"]) == (16, 12)
    assert wrow["flatness"] == pytest.approx(np.exp(np.log(sigma).mean()) / sigma.mean(), 1e-9)
    assert wrow["log_sigma_var"] == pytest.approx(np.var(np.log(sigma)), rel=1e-8)
    assert wrow["sigma_max"] == pytest.approx(sigma[0], rel=1e-12)
    wref = weight_record(singular_values(model[0].weight), rows=16, cols=12, fit_mp=False)
    assert wrow["alpha"] == pytest.approx(wref["alpha"], rel=1e-12) or (
        math.isnan(wrow["alpha"]) and math.isnan(wref["alpha"])
    )


def test_history_is_long_format_with_documented_columns():
    model = _mlp()
    monitor = Monitor(model, every=2, window=2, alerts=None)
    _train(model, monitor, 4, batch=64)
    frame = monitor.history()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(MONITOR_COLUMNS)
    assert set(frame["table"]) == {"activations", "weights"}
    assert set(frame.query("table == 'activations'")["layer"]) == {"0", "2"}
    assert set(frame.query("table == 'weights'")["matrix"]) == {"0.weight", "2.weight"}
    assert frame["step"].tolist() == sorted(frame["step"].tolist())
    ok = frame.query("status == 'ok'")
    assert len(ok) == len(frame) == 8
    for col in ("flatness", "effective_rank"):
        assert np.isfinite(ok[col].to_numpy(float)).all()
    acts = frame.query("table == 'activations'")
    assert acts["log_sigma_var"].isna().all() and acts["coding_rate_bits"].notna().all()


def test_step_returns_tagged_metrics_and_writer_gets_them():
    model = _mlp()
    writer = _Writer()
    monitor = Monitor(model, every=3, window=3, writer=writer, alerts=None)
    results = _train(model, monitor, 6, batch=64)
    assert [bool(r) for r in results] == [False, False, True, False, False, True]
    metrics = results[2]
    assert "infospec/activations/0/flatness" in metrics
    assert "infospec/weights/2.weight/log_sigma_var" in metrics
    assert all(math.isfinite(v) for v in metrics.values())
    assert {(t, s) for t, _, s in writer.calls} >= {(k, 3) for k in metrics}
    assert len(writer.calls) == len(metrics) + len(results[5])
    tags = {t for t, _, _ in writer.calls}
    assert all(t.startswith("infospec/") and t.count("/") == 3 for t in tags)


def test_layer_selection_regex_and_list():
    model = _mlp()
    assert list(Monitor(model).layers) == ["0", "2"]
    assert list(Monitor(model, layers=r"^2$").layers) == ["2"]
    assert list(Monitor(model, layers=["2", "0"]).layers) == ["0", "2"]
    # a pattern matching a weightless module along with a weighted one keeps the weighted
    assert list(Monitor(model, layers=r"[0-3]").layers) == ["0", "2"]


def test_transformer_layers_and_attention_weights():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    monitor = Monitor(model, every=1, alerts=None)
    model(torch.randn(4, 10, 16))
    monitor.step()
    frame = monitor.history()
    matrices = set(frame.query("table == 'weights'")["matrix"])
    assert {"layers.0.self_attn.in_proj_weight[q]", "layers.0.linear1.weight"} <= matrices
    acts = frame.query("table == 'activations'")
    assert "layers.0.self_attn" in set(acts["layer"])
    # out_proj's forward is never called (MultiheadAttention uses its weight directly)
    assert "activations/layers.0.self_attn.out_proj" in monitor.skipped
    # linear1 is an up-projection (16 -> 32): its outputs span at most 16 directions
    up = acts.query("layer == 'layers.0.linear1'").iloc[0]
    assert up["dim"] == 32 and up["samples"] == 40 and up["rank"] <= 16
    assert np.isfinite([up["flatness"], up["effective_rank"]]).all()
    monitor.remove()


def test_bfloat16_up_projection_reads_its_exact_rank_without_alert():
    """The outputs' precision sets the rounding floor (activation_record's input_dtype)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16)).to(torch.bfloat16)
    monitor = Monitor(model, every=1, alert_callback=lambda a: pytest.fail(a.message))
    model(torch.randn(128, 16, dtype=torch.bfloat16))
    monitor.step()
    up = monitor.history().query("table == 'activations' and layer == '0'").iloc[0]
    assert (up["rank"], up["dim"]) == (16, 32) and up["flatness"] > 0.3


def test_convolution_rows_are_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    monitor = Monitor(model, every=1, max_tokens=300, alerts=None)
    model(torch.randn(4, 3, 12, 12))
    monitor.step()
    frame = monitor.history()
    acts = frame.query("table == 'activations'")
    assert acts["samples"].tolist() == [300, 256] and acts["dim"].tolist() == [16, 16]
    weights = frame.query("table == 'weights'")
    assert weights[["rows", "cols"]].to_numpy().tolist() == [[16, 27], [16, 144]]


def test_eval_mode_forwards_are_not_collected():
    model = _mlp()
    monitor = Monitor(model, every=1, alerts=None)
    model(torch.randn(20, 12))
    model.eval()
    model(torch.randn(50, 12))
    model.train()
    monitor.step()
    acts = monitor.history().query("table == 'activations'")
    assert acts["samples"].tolist() == [20, 20]


def test_max_tokens_caps_rows_per_forward():
    model = _mlp()
    monitor = Monitor(model, every=1, max_tokens=20, alerts=None)
    model(torch.randn(100, 12))
    model(torch.randn(100, 12))
    monitor.step()
    assert monitor.history().query("table == 'activations'")["samples"].tolist() == [40, 40]


def test_tables_can_be_switched_off_and_alpha_skipped():
    model = _mlp()
    mon_w = Monitor(model, every=1, activations=False, alpha=False, alerts=None)
    assert not _has_hooks(model)
    model(torch.randn(32, 12))
    mon_w.step()
    frame = mon_w.history()
    assert set(frame["table"]) == {"weights"}
    assert frame["alpha"].isna().all() and not frame["warning"].str.contains("power").any()
    mon_w.remove()
    mon_a = Monitor(model, every=1, weights=False, alerts=None)
    model(torch.randn(32, 12))
    mon_a.step()
    assert set(mon_a.history()["table"]) == {"activations"}


def test_small_weight_matrices_are_skipped_with_reason():
    model = nn.Sequential(nn.Linear(12, 16), nn.Linear(16, 3))
    monitor = Monitor(model, every=1, alerts=None)
    model(torch.randn(32, 12))
    monitor.step()
    frame = monitor.history()
    assert set(frame.query("table == 'weights'")["matrix"]) == {"0.weight"}
    assert "min_dim" in monitor.skipped["weights/1.weight"]
    assert "1" in set(frame.query("table == 'activations'")["layer"])


def test_root_module_is_named_model():
    model = nn.Linear(12, 10)
    monitor = Monitor(model, every=1, alerts=None)
    model(torch.randn(32, 12))
    metrics = monitor.step()
    assert "infospec/activations/(model)/flatness" in metrics
    assert "infospec/weights/weight/flatness" in metrics


# -- logging -----------------------------------------------------------------------------


def test_jsonl_log_appends_one_line_per_row(tmp_path):
    path = tmp_path / "spectra.jsonl"
    model = _mlp()
    monitor = Monitor(model, every=2, log_path=path, alert_callback=lambda a: None)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(32, 12, generator=gen) for _ in range(4)]
    inputs[3][0, 0] = float("nan")  # step 4: error rows, NaN measures
    _train(model, monitor, 4, inputs=inputs)
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(monitor.history())
    assert set(records[0]) == set(MONITOR_COLUMNS)
    assert {r["step"] for r in records} == {2, 4}
    # a second monitor appends to the same file
    monitor2 = Monitor(model, every=1, log_path=path, weights=False, alert_callback=print)
    model(torch.randn(32, 12))
    monitor2.step()
    assert len(path.read_text().splitlines()) == len(lines) + 2
    # every value as in the history; non-finite ones are null (valid JSON)
    hist = monitor.history().to_dict("records")
    n_null = 0
    for rec, ref in zip(records, hist, strict=False):
        for col in ("flatness", "effective_rank", "alpha", "entropy_bits_per_dim", "samples"):
            value = ref[col]
            if pd.isna(value) or (isinstance(value, float) and not math.isfinite(value)):
                assert rec[col] is None
                n_null += 1
            else:
                assert rec[col] == pytest.approx(float(value), rel=1e-15)
        assert rec["warning"] == ref["warning"] and rec["status"] == ref["status"]
    assert n_null >= 2 and {r["status"] for r in records} == {"ok", "error"}


def test_csv_log_round_trips_through_pandas(tmp_path):
    path = tmp_path / "spectra.csv"
    model = _mlp()
    monitor = Monitor(model, every=2, log_path=path, alerts=None)
    _train(model, monitor, 4, batch=64)
    with path.open(newline="") as fh:
        header = next(csv.reader(fh))
    assert header == list(MONITOR_COLUMNS)
    back = pd.read_csv(path, keep_default_na=False, na_values=["nan"])
    hist = monitor.history()
    assert len(back) == len(hist)
    np.testing.assert_allclose(
        back["flatness"].to_numpy(float), hist["flatness"].to_numpy(float), rtol=1e-12
    )
    Monitor(model, every=2, log_path=path)  # same columns: appending is fine
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"other\.csv' exists with other columns"):
        Monitor(model, log_path=other)


# -- alerts ------------------------------------------------------------------------------


def _collapsed_model() -> nn.Sequential:
    """Layer '0' maps everything onto one direction: rank-1 weight, rank-1 outputs."""
    model = nn.Sequential(nn.Linear(12, 12, bias=False), nn.Tanh(), nn.Linear(12, 12))
    with torch.no_grad():
        u = torch.ones(12, 1) / math.sqrt(12)
        model[0].weight.copy_(u @ torch.randn(1, 12, generator=torch.Generator().manual_seed(0)))
        model[0].weight.add_(1e-6 * torch.randn(12, 12))
    return model


def test_collapse_alert_once_per_layer_and_metric():
    model = _collapsed_model()
    seen: list[MonitorAlert] = []
    alerts = {"effective_rank": 2.0, "flatness": 0.01}  # flatness is opt-in
    monitor = Monitor(model, every=1, alerts=alerts, alert_callback=seen.append)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        model(torch.randn(64, 12, generator=gen))
        monitor.step()
    assert seen == monitor.alerts
    keys = [(a.table, a.layer, a.metric) for a in seen]
    assert len(keys) == len(set(keys))  # once per table, layer and metric
    assert ("activations", "0", "effective_rank") in keys
    assert ("activations", "0", "flatness") in keys
    assert ("weights", "0.weight", "flatness") in keys
    alert = next(a for a in seen if a.layer == "0" and a.metric == "effective_rank")
    assert alert.step == 1 and alert.value < alert.threshold == DEFAULT_ALERTS["effective_rank"]
    assert "'0'" in alert.message and "below" in alert.message
    assert not any(a.layer == "2.weight" for a in seen)  # a healthy random matrix


def test_alerts_warn_by_default_and_can_be_disabled():
    model = _collapsed_model()
    monitor = Monitor(model, every=1)
    model(torch.randn(64, 12))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.step()
    messages = [str(w.message) for w in caught]
    assert all(w.category is InfospecWarning for w in caught)
    assert all(w.filename == __file__ for w in caught)  # points at the caller of step()
    assert any("effective_rank of the activations of layer '0' fell to" in m for m in messages)
    assert any("effective_rank of weight matrix '0.weight' fell to" in m for m in messages)
    assert not any("flatness" in m for m in messages)  # not a default alert
    assert len(messages) == len(monitor.alerts)
    quiet = Monitor(model, every=1, alerts=None)
    model(torch.randn(64, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.step()
    assert quiet.alerts == []


def test_table_specific_alert_keys():
    model = _collapsed_model()
    monitor = Monitor(model, every=1, alerts={"weights/flatness": 0.05}, alert_callback=print)
    model(torch.randn(64, 12))
    monitor.step()
    assert {(a.table, a.metric) for a in monitor.alerts} == {("weights", "flatness")}


def test_undersampled_layer_warns_once():
    model = _mlp()
    monitor = Monitor(model, every=1, alert_callback=lambda a: None)
    model(torch.randn(8, 12))  # 8 rows for 12 features in layer '2' (16 in layer '0')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.step()
    assert [w.category for w in caught] == [InfospecWarning] * 2
    assert "layer '2' got 8 activation rows for 12 features" in str(caught[1].message)
    row = monitor.history().query("table == 'activations' and layer == '2'").iloc[0]
    assert row["rank"] <= 7 and "under-sampled: 8 rows for 12 features" in row["warning"]
    model(torch.randn(8, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor.step()  # warned once per layer


# -- NaN: recorded, never raised ---------------------------------------------------------


def test_nan_batch_is_recorded_with_the_layer_and_training_goes_on():
    model = _mlp()
    seen: list[MonitorAlert] = []
    monitor = Monitor(model, every=2, window=2, alert_callback=seen.append)
    model(torch.randn(32, 12))
    monitor.step()
    bad = torch.randn(32, 12)
    bad[3, 4] = float("nan")
    model(bad)  # a NaN batch during a measured step
    metrics = monitor.step()
    frame = monitor.history()
    errors = frame.query("status == 'error'")
    assert set(errors["layer"]) == {"0", "2"}
    assert errors["warning"].str.contains("NaN").all()
    assert {(a.layer, a.metric) for a in seen} == {("0", "nan"), ("2", "nan")}
    assert "layer '0'" in seen[0].message
    assert "infospec/weights/0.weight/flatness" in metrics  # weights still measured
    # the next window starts afresh
    for _ in range(2):
        model(torch.randn(32, 12))
        monitor.step()
    last = monitor.history().query("step == 4 and table == 'activations'")
    assert (last["status"] == "ok").all()
    assert len(seen) == 2  # once per layer


def test_nan_weights_are_recorded():
    model = _mlp()
    monitor = Monitor(model, every=1, activations=False, alert_callback=lambda a: None)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    monitor.step()
    frame = monitor.history()
    row = frame.query("matrix == '2.weight'").iloc[0]
    assert row["status"] == "error" and "NaN" in row["warning"] and "'2'" in row["warning"]
    assert [(a.layer, a.metric) for a in monitor.alerts] == [("2.weight", "nan")]


# -- lifecycle ---------------------------------------------------------------------------


def test_remove_and_context_manager_leave_the_model_as_before():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with Monitor(model, every=1) as monitor:
        assert _has_hooks(model)
        model(torch.randn(32, 12))
    assert not _has_hooks(model)
    monitor.remove()  # twice is fine
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(InputError, match=r"after Monitor.remove\(\).*attach"):
        monitor.step()
    monitor.attach()
    assert _has_hooks(model)
    model(torch.randn(32, 12))
    assert monitor.step()
    monitor.remove()
    assert not _has_hooks(model)
    # hooks are removed even when the forward pass raises inside the context
    with pytest.raises(RuntimeError), Monitor(model, every=1):
        model(torch.randn(3, 5))
    assert not _has_hooks(model)


def test_explicit_step_numbers():
    model = _mlp()
    monitor = Monitor(model, every=10, window=1, alerts=None)
    model(torch.randn(32, 12))
    assert monitor.step(9) == {}
    assert _has_hooks(model)  # step 10 is measured: collect its forward passes
    model(torch.randn(32, 12))
    assert monitor.step(10)
    assert monitor.history()["step"].unique().tolist() == [10]
    assert "every=10" in repr(monitor)


def test_measure_now():
    model = _mlp()
    monitor = Monitor(model, every=1000, window=1000, alerts=None)
    model(torch.randn(32, 12))
    metrics = monitor.measure()
    assert "infospec/activations/2/flatness" in metrics
    assert monitor.history()["step"].unique().tolist() == [0]


# -- bad input ---------------------------------------------------------------------------


def test_unknown_layer_lists_close_matches():
    model = nn.Sequential()
    model.add_module("encoder", nn.Linear(12, 12))
    model.add_module("decoder", nn.Linear(12, 12))
    with pytest.raises(InputError, match=r"'encodr' of Monitor matches none.*close matches: 'enc"):
        Monitor(model, layers=["encodr"])
    with pytest.raises(InputError, match=r"pattern 'dekoder' .*close matches: 'decoder'"):
        Monitor(model, layers="dekoder")
    with pytest.raises(InputError, match=r"not a valid regular expression"):
        Monitor(model, layers="enc(")
    with pytest.raises(InputError, match=r"'layers' parameter of Monitor must name at least"):
        Monitor(model, layers=[])
    with pytest.raises(InputError, match=r"'layers' parameter of Monitor must be a regular"):
        Monitor(model, layers=3)


def test_module_without_weights_is_rejected():
    model = _mlp()
    with pytest.raises(InputError, match=r"selects only modules without weights: '1' \(Tanh\)"):
        Monitor(model, layers=["1"])
    with pytest.raises(InputError, match=r"without weights: '3' \(ReLU\)"):
        Monitor(model, layers=r"^3$")
    with pytest.raises(InputError, match=r"has no weights to monitor.*ReLU"):
        Monitor(nn.ReLU())
    with pytest.raises(InputError, match=r"LayerNorm\) has no weight matrix"):
        Monitor(nn.LayerNorm(8))
    with pytest.raises(InputError, match=r"'model' argument of Monitor must be a torch"):
        Monitor("model")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"every": 0}, r"'every' parameter of Monitor must be an int > 0. Got 0"),
        ({"every": 2.5}, r"'every' parameter of Monitor must be an int > 0. Got 2.5"),
        ({"window": 0}, r"'window' parameter of Monitor must be an int > 0"),
        ({"max_tokens": -1}, r"'max_tokens' parameter of Monitor must be an int > 0"),
        ({"eps": 0}, r"'eps' parameter of Monitor must be a float > 0"),
        ({"weights": False, "activations": False}, r"nothing to measure"),
        ({"writer": object()}, r"'writer' parameter of Monitor must have an add_scalar"),
        ({"alert_callback": 3}, r"'alert_callback' parameter of Monitor must be callable"),
        ({"alerts": {"alpha_hat": 1.0}}, r"key 'alpha_hat', which is not a measure"),
        ({"alerts": {"weights/coding_rate_bits": 1.0}}, r"'weights/coding_rate_bits'"),
        ({"alerts": {"flatness": float("inf")}}, r"must map measures to finite numbers"),
        ({"alerts": [("flatness", 1)]}, r"'alerts' parameter of Monitor must be a mapping"),
        ({"log_path": "x.txt"}, r"'log_path' parameter of Monitor must end in '.jsonl'"),
        ({"log_path": "/no/such/dir/x.jsonl"}, r"directory '/no/such/dir' does not exist"),
        ({"spectrum_device": "gpu9"}, r"'spectrum_device' parameter of Monitor"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        Monitor(_mlp(), **kwargs)


def test_bad_step_number():
    monitor = Monitor(_mlp(), every=2)
    with pytest.raises(InputError, match=r"'step' parameter of Monitor.step must be an int >= 0"):
        monitor.step(-1)
