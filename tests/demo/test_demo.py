"""The duality demo: files, table layout, statistics against independent references, the
generated reading, determinism and bad input."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from infospec import InputError
from infospec.cli import main
from infospec.demo import METHODS, DemoConfig, load_digits_split, run_demo
from infospec.demo.continual import CONTINUAL_ARMS, task_permutations
from infospec.demo.experiment import (
    ACTIVATION_METRICS,
    RESULT_COLUMNS,
    WEIGHT_METRICS,
    build_mlp,
    measure,
)
from infospec.demo.reading import continual_reading, direction, duality_reading
from infospec.demo.stats import (
    CORRELATION_PAIRS,
    EFFECT_METRICS,
    Interval,
    correlation_interval,
    mean_interval,
)

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYERS = {"hidden1", "hidden2", "output"}
FIGURES = {
    "fig_accuracy.png",
    "fig_training.png",
    "fig_scatter.png",
    "fig_effects.png",
    "fig_continual.png",
}


# -- one quick run through the CLI, shared -------------------------------------------------
@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    threads = torch.get_num_threads()
    status = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    assert torch.get_num_threads() == threads  # the run restores the thread count
    assert status == 0
    return out


@pytest.fixture(scope="module")
def results(quick_run) -> pd.DataFrame:
    return pd.read_csv(quick_run / "results.csv")


@pytest.fixture(scope="module")
def summary(quick_run) -> dict:
    return json.loads((quick_run / "summary.json").read_text(encoding="utf-8"))


def test_files_exist(quick_run):
    names = {p.name for p in quick_run.iterdir()}
    assert {"results.csv", "continual.csv", "summary.json", "report.html"} | FIGURES <= names
    assert not [n for n in names if n.endswith(".tmp")]  # atomic writes leave nothing behind
    for fig in FIGURES:
        assert (quick_run / fig).read_bytes()[:8] == PNG_MAGIC


def test_results_table_layout(results):
    assert tuple(results.columns) == RESULT_COLUMNS
    assert set(results["method"]) == set(METHODS)
    assert set(results["seed"]) == {0, 1}
    assert set(results["layer"]) == LAYERS | {"model"}
    assert sorted(results["epoch"].unique()) == DemoConfig.quick().checkpoints() == [0, 2, 4]
    per_layer = results[results["layer"] != "model"].groupby("layer")["metric"].agg(set)
    for layer in LAYERS:
        assert per_layer[layer] == set(ACTIVATION_METRICS) | set(WEIGHT_METRICS)
    assert set(results.loc[results["layer"] == "model", "metric"]) == {
        "test_accuracy",
        "train_loss",
    }
    assert np.isfinite(results["value"]).all()
    key = ["run", "epoch", "layer", "metric"]
    assert not results.duplicated(key).any()
    assert (results["run"] == results["method"] + "-s" + results["seed"].astype(str)).all()


def test_same_seed_same_start(results):
    """Every method starts from the same initialisation for a given seed (paired design)."""
    init = results[results["epoch"] == 0].pivot_table(
        index=["seed", "layer", "metric"], columns="method", values="value"
    )
    for method in METHODS[1:]:
        np.testing.assert_allclose(init[method], init["baseline"], rtol=1e-12)


def test_summary_accuracies_and_coefficients(summary):
    cfg = DemoConfig.quick()
    assert summary["mode"] == "quick"
    assert summary["coefficients"] == json.loads(json.dumps(cfg.coefficients()))
    for method in METHODS:
        acc = summary["accuracy"][method]
        assert 0.0 <= acc["lo"] <= acc["value"] <= acc["hi"] <= 1.0
        assert all(0.0 <= v <= 1.0 for v in acc["per_seed"])
    assert summary["accuracy"]["baseline"]["value"] > 0.5  # chance is 0.1
    assert summary["timings"]["total_seconds"] > 0
    assert {"infospec", "torch", "scikit-learn"} <= set(summary["versions"])


def test_summary_correlations_and_effects_are_intervals(summary):
    pairs = {(c["x"], c["y"]) for c in summary["correlations"]}
    assert pairs == {(x, y) for x, y, _ in CORRELATION_PAIRS}
    assert {c["layer"] for c in summary["correlations"]} == LAYERS | {"all"}
    for c in summary["correlations"]:
        assert -1.0 <= c["lo"] <= c["value"] <= c["hi"] <= 1.0, c
        assert c["n"] == 2 and c["claim_predicts"] == "negative"
    methods = {e["method"] for e in summary["effects"]}
    assert methods == set(METHODS[1:])
    for e in summary["effects"]:
        assert e["lo"] <= e["value"] <= e["hi"], e


def test_correlations_match_an_independent_computation(results, summary):
    """Spearman per seed with scipy on the CSV, then the mean and t-interval by hand."""
    x, y = "act_flatness", "act_coding_rate_bits"
    sub = results[results["layer"] == "hidden2"]
    rs = []
    for seed in (0, 1):
        s = sub[sub["seed"] == seed].pivot_table(
            index=["method", "epoch"], columns="metric", values="value"
        )
        rs.append(sps.spearmanr(s[x], s[y]).statistic)
    mean = np.mean(rs)
    half = sps.t.ppf(0.975, 1) * np.std(rs, ddof=1) / np.sqrt(2)
    got = next(
        c for c in summary["correlations"] if (c["x"], c["y"], c["layer"]) == (x, y, "hidden2")
    )
    assert got["per_seed"] == pytest.approx(rs, abs=1e-12)
    assert got["value"] == pytest.approx(mean, abs=1e-12)
    assert got["lo"] == pytest.approx(max(-1.0, mean - half), abs=1e-12)
    assert got["hi"] == pytest.approx(min(1.0, mean + half), abs=1e-12)


def test_effects_are_paired_differences_at_the_last_epoch(results, summary):
    last = results[results["epoch"] == 4]
    piv = last[(last["layer"] == "hidden2") & (last["metric"] == "act_flatness")].pivot_table(
        index="seed", columns="method", values="value"
    )
    diff = (piv["info_spec"] - piv["baseline"]).to_numpy()
    lo, hi = sps.t.interval(0.95, 1, loc=diff.mean(), scale=sps.sem(diff))
    got = next(
        e
        for e in summary["effects"]
        if (e["method"], e["layer"], e["metric"]) == ("info_spec", "hidden2", "act_flatness")
    )
    assert got["value"] == pytest.approx(diff.mean(), abs=1e-12)
    assert (got["lo"], got["hi"]) == pytest.approx((lo, hi), abs=1e-9)
    assert got["dz"] == pytest.approx(diff.mean() / diff.std(ddof=1), rel=1e-9)


def test_continual_table(quick_run, summary):
    table = pd.read_csv(quick_run / "continual.csv")
    assert set(table["method"]) == set(CONTINUAL_ARMS)
    # the full accuracy matrix: 3 tasks trained x 3 tasks evaluated per seed and arm
    counts = table.groupby(["method", "seed"]).size()
    assert (counts == 9).all()
    assert table["accuracy"].between(0, 1).all() and (table["sigma_max_mean"] > 0).all()
    cont = summary["continual"]
    assert cont["tasks"] == 3
    for arm in CONTINUAL_ARMS:
        diag = table[(table["method"] == arm) & (table["trained_task"] == table["eval_task"])]
        means = diag.groupby("trained_task")["accuracy"].mean().tolist()
        assert [iv["value"] for iv in cont["new_task_accuracy"][arm]] == pytest.approx(means)
        assert means[0] > 0.3  # the first task is learned
        slopes = []
        for seed in (0, 1):
            acc = diag[diag["seed"] == seed].sort_values("trained_task")["accuracy"].to_numpy()
            slopes.append(sps.linregress(np.arange(1, 4), acc).slope)
        assert cont["plasticity_slope"][arm]["value"] == pytest.approx(np.mean(slopes))


def test_reading_mentions_every_method_and_both_directions(summary, capsys):
    text = " ".join(summary["reading"]["duality"] + summary["reading"]["continual"])
    for name in ("baseline", "coding-rate", "info-spec", "spectral"):
        assert name in text
    assert "Flatten → compress" in text and "Compress → flatten" in text
    assert "plasticity" in text


def test_report_html_is_self_contained(quick_run, summary):
    page = (quick_run / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(base64.b64decode(b)[:8] == PNG_MAGIC for b in images)
    for paragraph in summary["reading"]["duality"]:
        assert paragraph.replace("'", "&#x27;")[:60] in page
    for value in ("0.001", "0.02", "0.01"):  # the coefficients are shown
        assert value in page


def test_two_quick_runs_give_the_same_numbers(quick_run, summary, tmp_path):
    out = tmp_path / "again"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    for name in ("results.csv", "continual.csv"):
        assert (out / name).read_bytes() == (quick_run / name).read_bytes()
    again = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for d in (again, summary):
        d.pop("timings")
    assert again == summary


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("seeds", ["0", "-2"])
def test_cli_rejects_bad_seeds(tmp_path, capsys, seeds):
    assert main(["demo", "--quick", "--seeds", seeds, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "infospec: error: --seeds must be an int >= 1" in err
    assert not (tmp_path / "o").exists()


def test_cli_rejects_an_out_path_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    assert main(["demo", "--quick", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and str(target) in err
    assert target.read_text() == "keep me"


def test_run_demo_rejects_config_with_quick(tmp_path):
    with pytest.raises(InputError, match="either 'config' or 'quick'/'seeds'"):
        run_demo(tmp_path, quick=True, config=DemoConfig.quick())
    with pytest.raises(InputError, match="'config' parameter of run_demo must be a DemoConfig"):
        run_demo(tmp_path, config={"seeds": 2})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seeds": 0}, "'seeds' parameter of DemoConfig must be an int > 0"),
        ({"batch_size": 1}, "'batch_size' parameter of DemoConfig must be an int >= 2"),
        ({"continual_tasks": 1}, "'continual_tasks' parameter of DemoConfig must be an int >= 2"),
        ({"lr": -1.0}, "'lr' parameter of DemoConfig must be a float > 0"),
        ({"info_spec_beta": -1.0}, "'info_spec_beta' parameter of DemoConfig must be a float >= 0"),
        ({"hidden": ()}, "'hidden' parameter of DemoConfig must be a non-empty tuple"),
        ({"test_fraction": 1.0}, "'test_fraction' parameter of DemoConfig must be a float"),
        ({"mode": "slow"}, "'mode' parameter of DemoConfig must be one of"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        DemoConfig(**kwargs)


# -- pieces against independent references -------------------------------------------------
def test_digits_split_is_stratified_and_standardised():
    data = load_digits_split(test_fraction=0.2, seed=0)
    assert len(data.y_train) + len(data.y_test) == 1797
    for c in range(10):
        n_c = int((data.y_train == c).sum() + (data.y_test == c).sum())
        assert int((data.y_test == c).sum()) == round(0.2 * n_c)
    mean = data.X_train.double().mean(0)
    assert float(mean.abs().max()) < 1e-5
    std = data.X_train.double().std(0, unbiased=False)
    varying = std > 0.5
    assert torch.allclose(std[varying], torch.ones_like(std[varying]), atol=1e-5)
    again = load_digits_split(test_fraction=0.2, seed=0)
    assert torch.equal(again.X_test, data.X_test)


def test_measure_matches_numpy(capsys):
    """Activation and weight measures of one layer against a float64 NumPy computation."""
    data = load_digits_split()
    model = build_mlp(seed=3)
    rows = {(layer, metric): v for layer, metric, v in measure(model, data, (128, 64))}
    with torch.no_grad():
        h = model.act2(model.fc2(model.act1(model.fc1(data.X_test)))).double().numpy()
    lam = np.linalg.eigvalsh(np.cov(h, rowvar=False))
    lam = np.clip(lam, 0, None)
    d = lam.size
    support = lam[lam > d * np.finfo(float).eps * lam.max()]
    flat = np.exp(np.mean(np.log(support))) / np.mean(support)
    unit = lam / lam.sum()
    rate = 0.5 * np.sum(np.log2(1 + d / 0.25 * unit))
    assert rows[("hidden2", "act_flatness")] == pytest.approx(flat, rel=1e-6)
    assert rows[("hidden2", "act_coding_rate_bits")] == pytest.approx(rate, rel=1e-6)
    assert rows[("hidden2", "act_energy")] == pytest.approx(lam.mean(), rel=1e-6)
    sigma = np.linalg.svd(model.fc2.weight.detach().double().numpy(), compute_uv=False)
    assert rows[("hidden2", "weight_flatness")] == pytest.approx(
        np.exp(np.log(sigma).mean()) / sigma.mean(), rel=1e-9
    )
    assert rows[("hidden2", "weight_log_sigma_var")] == pytest.approx(np.log(sigma).var(), rel=1e-9)
    with torch.no_grad():
        acc = (model(data.X_test).argmax(1) == data.y_test).double().mean().item()
    assert rows[("model", "test_accuracy")] == acc


def test_task_permutations_are_fixed():
    a = task_permutations(4, 64, seed=0)
    b = task_permutations(4, 64, seed=0)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert np.array_equal(a[0], np.arange(64))
    assert all(sorted(p.tolist()) == list(range(64)) for p in a)


def test_mean_interval_matches_scipy():
    x = [0.3, 0.5, 0.2, 0.9]
    iv = mean_interval(x, level=0.9)
    lo, hi = sps.t.interval(0.9, 3, loc=np.mean(x), scale=sps.sem(x))
    assert (iv.value, iv.lo, iv.hi, iv.n) == pytest.approx((np.mean(x), lo, hi, 4))
    one = mean_interval([0.4])
    assert one.value == 0.4 and math.isnan(one.lo) and math.isnan(one.hi)
    assert math.isnan(mean_interval([math.nan]).value)
    clipped = correlation_interval([0.99, 0.2])
    assert clipped.hi == 1.0 and clipped.lo == -1.0


# -- the reading follows the data ----------------------------------------------------------
def _iv(value, lo, hi):
    return Interval(value, lo, hi, 5, (value,) * 5)


def _fake_stats(*, corr, flat, compress, layer_corr=None):
    """Duality statistics with chosen signs: correlation, info-spec's Δflatness and Δbits."""
    effects = []
    for method in METHODS[1:]:
        for layer in sorted(LAYERS):
            for metric in EFFECT_METRICS:
                iv = _iv(0.01, -0.1, 0.1)
                if method == "info_spec" and metric == "act_flatness":
                    iv = flat
                if method == "info_spec" and metric == "act_coding_rate_bits":
                    iv = compress
                effects.append({"method": method, "layer": layer, "metric": metric, "interval": iv})
        effects.append(
            {
                "method": method,
                "layer": "model",
                "metric": "test_accuracy",
                "interval": _iv(0.0, -0.01, 0.01),
            }
        )
    layer_corr = layer_corr or {}
    correlations = [
        {"x": x, "y": y, "tests": t, "layer": layer, "interval": layer_corr.get(layer, corr)}
        for x, y, t in CORRELATION_PAIRS
        for layer in [*sorted(LAYERS), "all"]
    ]
    return {
        "level": 0.95,
        "seeds": 5,
        "last_epoch": 30,
        "accuracy": {m: _iv(0.97, 0.96, 0.98) for m in METHODS},
        "correlations": correlations,
        "effects": effects,
    }


@pytest.mark.parametrize(
    ("corr", "expected"),
    [
        (_iv(0.8, 0.7, 0.9), "contradicts the claim's first half"),
        (_iv(-0.8, -0.9, -0.7), "supports the claim's first half"),
        (_iv(0.1, -0.3, 0.5), "neither support nor contradict the claim's first half"),
        (Interval(0.5, math.nan, math.nan, 1, (0.5,)), "no conclusion is drawn"),
    ],
)
def test_reading_first_half_follows_the_correlation(corr, expected):
    text = " ".join(
        duality_reading(
            _fake_stats(corr=corr, flat=_iv(0, -1, 1), compress=_iv(-1, -2, -0.5)),
            features_layer="hidden2",
        )
    )
    assert expected in text


def test_reading_says_when_layers_disagree():
    stats = _fake_stats(
        corr=_iv(0.2, 0.1, 0.3),
        flat=_iv(0, -1, 1),
        compress=_iv(-1, -2, -0.5),
        layer_corr={"hidden1": _iv(-0.5, -0.6, -0.4)},
    )
    text = " ".join(duality_reading(stats, features_layer="hidden2"))
    assert "the layers disagree in sign" in text
    assert "hidden1 -0.50 [-0.60, -0.40]" in text


@pytest.mark.parametrize(
    ("flat", "compress", "expected"),
    [
        (_iv(0.1, 0.05, 0.15), _iv(-3, -4, -2), "supports the claim's second half"),
        (_iv(-0.1, -0.15, -0.05), _iv(-3, -4, -2), "contradicts the claim's second half"),
        (_iv(0.0, -0.1, 0.1), _iv(-3, -4, -2), "neither support nor contradict the claim's"),
        (_iv(0.1, 0.05, 0.15), _iv(1, -1, 3), "cannot test the claim's second half"),
    ],
)
def test_reading_second_half_follows_the_effects(flat, compress, expected):
    text = " ".join(
        duality_reading(
            _fake_stats(corr=_iv(0.8, 0.7, 0.9), flat=flat, compress=compress),
            features_layer="hidden2",
        )
    )
    assert expected in text


def test_reading_of_the_continual_check_follows_the_data():
    def stats(base, spec):
        return {
            "level": 0.95,
            "seeds": 5,
            "tasks": 4,
            "new_task_accuracy": {a: [_iv(0.9, 0.85, 0.95)] * 4 for a in CONTINUAL_ARMS},
            "plasticity_slope": {"baseline": base, "spectral": spec},
            "plasticity_change": {"baseline": base, "spectral": spec},
            "spectral_minus_baseline": _iv(0.05, 0.02, 0.08),
            "spectral_minus_baseline_task1": _iv(0.0, -0.01, 0.01),
            "first_task_end": {a: _iv(0.5, 0.4, 0.6) for a in CONTINUAL_ARMS},
            "sigma_max_end": {a: _iv(2.0, 1.8, 2.2) for a in CONTINUAL_ARMS},
        }

    lost, kept = _iv(-0.1, -0.15, -0.05), _iv(0.0, -0.02, 0.02)
    text = " ".join(continual_reading(stats(lost, kept), epochs_per_task=5))
    assert "the baseline lost plasticity (its new-task accuracy fell by about 10.00 points " in text
    assert "30.0 over the sequence) and the spectral regulariser kept it" in text
    assert "higher with the regulariser" in text
    text = " ".join(continual_reading(stats(kept, kept), epochs_per_task=5))
    assert "neither arm showed a measurable loss of plasticity" in text
    assert direction(lost) == "-" and direction(kept) == "0"


@pytest.mark.slow
def test_full_run_within_budget(tmp_path):
    result = run_demo(tmp_path / "full", progress=False)
    assert result.summary["timings"]["total_seconds"] < 300
    for method in METHODS:
        assert result.summary["accuracy"][method]["value"] > 0.9
