"""analyze(randomize=True): shuffled ESDs, rand_distance and correlation traps."""

import numpy as np
import pytest
import scipy.spatial.distance
import torch

import infospec
from infospec import InputError
from infospec.analysis.randomize import rand_distance, randomized_record, shuffled
from infospec.cli import main


def test_no_trap_in_gaussian_matrices_of_several_shapes():
    # a bare MP edge would count the largest eigenvalue's own finite-size fluctuation
    state = {
        f"{rows}x{cols}/{seed}": torch.randn(
            rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        for rows, cols in ((300, 200), (128, 128), (64, 500))
        for seed in range(6)
    }
    report = infospec.analyze(state, randomize=True, fits=False, progress=False)
    assert [r["num_traps"] for r in report.weights] == [0] * len(state)


def test_gaussian_has_no_trap_and_a_planted_entry_makes_one(gen):
    w = torch.randn(300, 200, generator=gen, dtype=torch.float64)
    planted = w.clone()
    planted[3, 7] = 200.0  # one huge entry: a shuffle keeps it, and it alone is a spike
    report = infospec.analyze({"gauss": w, "planted": planted}, randomize=True, progress=False)
    rows = {r["name"]: r for r in report.weights}
    assert rows["gauss"]["num_traps"] == 0 and np.isnan(rows["gauss"]["trap_ratio"])
    assert rows["planted"]["num_traps"] == 1
    assert rows["planted"]["trap_ratio"] > 1.0
    # the trap is the planted entry: its eigenvalue is about 200^2
    assert rows["planted"]["rand_max_eval"] == pytest.approx(200.0**2, rel=0.05)
    # an unstructured matrix looks like its shuffle
    assert rows["gauss"]["rand_distance"] < 0.05


def test_shuffled_spectrum_and_distance_against_numpy_and_scipy(gen):
    w = torch.randn(60, 40, generator=gen, dtype=torch.float64) @ torch.diag(
        torch.linspace(0.1, 3.0, 40, dtype=torch.float64)
    )
    report = infospec.analyze({"w": w}, randomize=7, progress=False)
    row = report.weights[0]
    mixed = shuffled(w, 7, "w")
    assert sorted(mixed.flatten().tolist()) == sorted(w.flatten().tolist())  # a permutation
    want = np.linalg.svd(mixed.numpy(), compute_uv=False) ** 2
    np.testing.assert_allclose(report.spectrum("w", "randomized"), want, rtol=1e-10)
    lam = report.spectrum("w")
    assert report.spectrum("w", "randomized").sum() == pytest.approx(lam.sum(), rel=1e-12)
    # WeightWatcher's definition: JS distance of the sorted ESDs as probability vectors
    ref = scipy.spatial.distance.jensenshannon(np.sort(lam), np.sort(want))
    assert row["rand_distance"] == pytest.approx(ref, rel=1e-10)
    assert row["rand_max_eval"] == pytest.approx(want.max(), rel=1e-10)
    assert rand_distance(lam, lam) == 0.0


def test_against_weightwatchers_own_function(rng):
    rmt = pytest.importorskip("weightwatcher.RMT_Util")
    p, q = rng.random(50) ** 3, rng.random(50)
    ww = rmt.jensen_shannon_distance(np.sort(p), np.sort(q))
    assert rand_distance(p, q) == pytest.approx(ww, rel=1e-12)


def test_seeds_workers_and_pooled_convs(gen):
    state = {f"l{i}.weight": torch.randn(40, 30, generator=gen) for i in range(4)}
    a = infospec.analyze(state, randomize=3, workers=1, progress=False)
    b = infospec.analyze(state, randomize=3, workers=2, progress=False)
    c = infospec.analyze(state, randomize=4, workers=1, progress=False)
    for name in state:
        # the same permutation whatever the workers; the Gram products themselves are
        # equal to round-off only (one worker runs torch's multi-threaded products, each
        # of two workers SciPy's single-threaded syrk)
        np.testing.assert_allclose(
            a.spectrum(name, "randomized"), b.spectrum(name, "randomized"), rtol=1e-13
        )
        assert not np.array_equal(a.spectrum(name, "randomized"), c.spectrum(name, "randomized"))
    conv = torch.nn.Conv2d(16, 24, 3)
    report = infospec.analyze(conv, randomize=True, progress=False)
    kernel = conv.weight.detach().double()
    stack = kernel.reshape(24, 16, 9).permute(2, 0, 1)  # the pooled positions' matrices
    per_position = shuffled(stack, 0, "weight")
    want = np.sort((np.linalg.svd(per_position.numpy(), compute_uv=False) ** 2).ravel())[::-1]
    np.testing.assert_allclose(report.spectrum("weight", "randomized"), want, rtol=1e-9)
    with pytest.raises(InputError, match=r"'randomize' parameter of analyze must be True"):
        infospec.analyze(state, randomize=-1, progress=False)


def test_degenerate_and_html_overlay(tmp_path, gen):
    rec = randomized_record(torch.zeros(5), torch.zeros(5), rows=5, cols=8)
    assert np.isnan(rec["rand_distance"])
    report = infospec.analyze(
        {"w": torch.randn(64, 48, generator=gen)}, randomize=True, progress=False
    )
    fig = report.plot("esd")
    gids = {p.get_gid() for ax in fig.axes for p in ax.patches}
    assert "randomized" in gids
    assert "rand_distance" in report.to_dataframe().columns


def test_cli_randomize(tmp_path, gen, capsys):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(64, 48, generator=gen)}, path)
    assert main(["analyze", str(path), "--randomize", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "num_traps" in out.splitlines()[0]
    assert main(["analyze", str(path), "--randomize", "-3"]) == 2
    assert "--randomize must be a seed" in capsys.readouterr().err
