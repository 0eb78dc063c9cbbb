"""The Matryoshka experiment: measurements, statistics on log ratios, and the generated reading."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from infospec.demo.matryoshka import (
    matryoshka_reading,
    matryoshka_statistics,
    run_matryoshka,
    run_matryoshka_demo,
)


def _results(ratios: dict[str, list[float]], accs: dict[str, list[float]], k: int = 4):
    rows = []
    for arm in ("baseline", "matryoshka"):
        for seed, (r, a) in enumerate(zip(ratios[arm], accs[arm], strict=True)):
            rows.append(
                {"seed": seed, "arm": arm, "k": k, "prefix_over_klt": r, "probe_accuracy": a}
            )
            rows.append(
                {"seed": seed, "arm": arm, "k": 8, "prefix_over_klt": math.inf, "probe_accuracy": a}
            )
    return pd.DataFrame(rows)


def test_statistics_are_geometric_means_paired_by_seed():
    res = _results(
        {"baseline": [4.0, 16.0, 8.0], "matryoshka": [2.0, 8.0, 4.0]},
        {"baseline": [0.5, 0.6, 0.7], "matryoshka": [0.6, 0.7, 0.8]},
    )
    stats = matryoshka_statistics(res)
    assert sorted(stats) == [4]  # the full width (infinite ratio) is left out
    s = stats[4]
    assert s["baseline_ratio"].value == pytest.approx(8.0, rel=1e-12)  # (4*16*8)^(1/3)
    assert s["matryoshka_ratio"].value == pytest.approx(4.0, rel=1e-12)
    # every seed halves the ratio: the paired change is exactly 0.5 with no spread
    assert s["ratio_change"].value == pytest.approx(0.5, rel=1e-12)
    assert s["ratio_change"].hi == pytest.approx(0.5, rel=1e-9)
    assert s["accuracy_difference"].value == pytest.approx(0.1, rel=1e-9)


def test_reading_says_held_when_the_paired_change_is_below_one():
    res = _results(
        {"baseline": [4.0, 16.0, 8.0], "matryoshka": [2.0, 8.5, 4.1]},
        {"baseline": [0.5, 0.6, 0.7], "matryoshka": [0.6, 0.71, 0.79]},
    )
    text = " ".join(matryoshka_reading(matryoshka_statistics(res)))
    assert "claim held partly" in text and "k = 4" in text
    assert "without reaching it" in text
    assert "probe accuracy on the prefix rose at k = 4" in text


def test_reading_says_not_held_when_the_prefixes_got_worse():
    res = _results(
        {"baseline": [2.0, 2.1, 1.9], "matryoshka": [4.0, 4.3, 3.9]},
        {"baseline": [0.5, 0.6, 0.7], "matryoshka": [0.5, 0.6, 0.7]},
    )
    text = " ".join(matryoshka_reading(matryoshka_statistics(res)))
    assert "did not hold" in text
    assert "did not rise measurably" in text


def test_reading_says_it_cannot_tell_when_the_change_straddles_one():
    res = _results(
        {"baseline": [2.0, 4.0, 3.0], "matryoshka": [4.0, 2.0, 3.0]},
        {"baseline": [0.5, 0.6, 0.7], "matryoshka": [0.5, 0.6, 0.7]},
    )
    assert "do not support" in matryoshka_reading(matryoshka_statistics(res))[0]


def test_run_measures_every_prefix_of_both_arms():
    res = run_matryoshka(seeds=2, dims=(2, 4), epochs=1)
    assert set(res["arm"]) == {"baseline", "matryoshka"}
    assert sorted(set(res["k"])) == [2, 4]
    assert len(res) == 2 * 2 * 2
    part = res[res["k"] == 2]
    # the KLT truncation is the optimum: no prefix beats it
    assert bool((part["prefix_over_klt"] >= 1 - 1e-9).all())
    assert bool(((res["probe_accuracy"] >= 0) & (res["probe_accuracy"] <= 1)).all())
    full = res[res["k"] == 4]
    np.testing.assert_allclose(full["klt_rel_error"], 0.0, atol=1e-9)


@pytest.mark.slow
def test_quick_demo_writes_its_files(tmp_path):
    summary = run_matryoshka_demo(tmp_path / "out", quick=True)
    for name in ("results.csv", "summary.json", "matryoshka.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert summary["seeds"] == 2 and summary["reading"]
