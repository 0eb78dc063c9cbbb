"""The VAE experiment: capacity against the KL rate over beta, statistics and the reading."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("sklearn")

from infospec import InputError
from infospec.cli import main
from infospec.demo.vae import run_vae, vae_reading, vae_statistics


@pytest.fixture(scope="module")
def results():
    return run_vae(betas=(0.5, 4.0, 16.0), seeds=2, latent_dim=6, epochs=12)


def test_capacity_is_bounded_by_the_rate_and_falls_with_beta(results):
    assert (results["capacity_bits"] <= results["kl_rate_bits"] + 1e-9).all()
    assert (results["capacity_bits"] >= 0).all() and (results["active_dims"] <= 6).all()
    mean = results.groupby("beta").mean(numeric_only=True)
    assert mean["capacity_bits"].is_monotonic_decreasing
    assert mean["recon_mse"].is_monotonic_increasing
    assert mean.loc[0.5, "capacity_bits"] > 5 > 0.5 > mean.loc[16.0, "capacity_bits"]
    assert mean.loc[16.0, "active_dims"] <= 1  # posterior collapse at a large beta


def test_statistics_and_reading_come_from_the_numbers(results):
    stats = vae_statistics(results)
    assert sorted(stats) == [0.5, 4.0, 16.0]
    s = stats[0.5]
    part = results[results["beta"] == 0.5]
    assert s["capacity_bits"].value == pytest.approx(part["capacity_bits"].mean())
    assert 0 < s["capacity_share"].value <= 1
    reading = vae_reading(results, stats)
    assert reading[0].startswith("Capacity never exceeded the KL rate (every run")
    assert "lowered the capacity" in reading[0] and len(reading) == 4
    # a made-up table where capacity does not move: the reading says so
    flat = pd.DataFrame(
        {
            "beta": [1.0, 1.0, 2.0, 2.0],
            "seed": [0, 1, 0, 1],
            "capacity_bits": [3.0, 5.0, 4.0, 3.5],
            "kl_rate_bits": [4.0, 6.0, 5.0, 4.0],
            "active_dims": [4, 4, 4, 4],
            "recon_mse": [0.5, 0.4, 0.45, 0.5],
        }
    )
    text = vae_reading(flat, vae_statistics(flat))[0]
    assert "intervals overlap" in text and "did not rise measurably" in text


def test_errors():
    with pytest.raises(InputError, match="'betas' argument of run_vae"):
        run_vae(betas=(0.0,))
    with pytest.raises(InputError, match="seeds"):
        run_vae(seeds=0)


@pytest.mark.slow
def test_cli_demo_vae_writes_its_files(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["demo", "vae", "--quick", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "summary.json", "vae.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == "vae" and summary["reading"]
    assert "Capacity never exceeded" in capsys.readouterr().out
