"""compare(base, tuned): delta spectra, subspace overlaps, matching, CLI."""

import importlib
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file

import infospec
from infospec import InputError
from infospec.analysis.compare import (
    CHANGE_COLUMNS,
    rename_names,
)
from infospec.analysis.subspaces import principal_cosines, top_singular_subspaces
from infospec.cli import main


def _with_spectrum(rng, rows, cols, sigma):
    u = np.linalg.qr(rng.standard_normal((rows, len(sigma))))[0]
    v = np.linalg.qr(rng.standard_normal((cols, len(sigma))))[0]
    return (u * sigma) @ v.T


@pytest.fixture
def pair(rng):
    """A base with a gapped spectrum and a tuned copy with a planted rank-3 delta."""
    base = _with_spectrum(rng, 80, 48, np.linspace(10.0, 1.0, 48))
    delta = 0.05 * rng.standard_normal((80, 3)) @ rng.standard_normal((3, 48))
    return base, delta


def test_planted_rank_r_delta_has_exactly_r_nonzero_singular_values(pair):
    base, delta = pair
    report = infospec.compare(
        {"l.weight": torch.from_numpy(base)},
        {"l.weight": torch.from_numpy(base + delta)},
        progress=False,
    )
    row = report.weights[0]
    assert row["status"] == "ok"
    assert row["numerical_rank"] == 3
    # the delta's ESD is that of NumPy's float64 SVD of the same difference
    expected = np.linalg.svd((base + delta) - base, compute_uv=False) ** 2
    lam = report.spectrum("l.weight")
    np.testing.assert_allclose(lam[:3], expected[:3], rtol=1e-10)
    assert np.all(lam[3:] <= 1e-20 * lam[0])
    assert row["rel_delta"] == pytest.approx(
        np.linalg.norm(delta) / np.linalg.norm(base), rel=1e-10
    )
    assert row["stable_rank"] == pytest.approx(expected.sum() / expected[0], rel=1e-9)


def test_changes_are_the_difference_of_analyze_columns(pair):
    base, delta = pair
    b = {"l.weight": torch.from_numpy(base)}
    t = {"l.weight": torch.from_numpy(base + 3 * delta)}
    row = infospec.compare(b, t, progress=False).weights[0]
    rb = infospec.analyze(b, progress=False).weights[0]
    rt = infospec.analyze(t, progress=False).weights[0]
    for col in ("alpha", "flatness", "effective_rank", "stable_rank", "bits_per_param"):
        assert row[f"change_{col}"] == pytest.approx(rt[col] - rb[col], abs=1e-12)
    assert set(f"change_{c}" for c in CHANGE_COLUMNS) <= set(row)


def test_overlaps_match_scipy_subspace_angles(rng):
    base = _with_spectrum(rng, 60, 40, np.geomspace(20.0, 0.5, 40))
    tuned = base + 0.5 * rng.standard_normal((60, 40))
    k = 5
    row = infospec.compare(
        {"w": torch.from_numpy(base)}, {"w": torch.from_numpy(tuned)}, k=k, progress=False
    ).weights[0]
    ub, _, vbt = np.linalg.svd(base)
    ut, _, vtt = np.linalg.svd(tuned)
    cos_l = np.cos(scipy.linalg.subspace_angles(ub[:, :k], ut[:, :k]))
    cos_r = np.cos(scipy.linalg.subspace_angles(vbt[:k].T, vtt[:k].T))
    assert row["overlap_k"] == k
    assert row["overlap_left"] == pytest.approx(np.mean(cos_l**2), abs=1e-10)
    assert row["overlap_right"] == pytest.approx(np.mean(cos_r**2), abs=1e-10)
    assert row["overlap_min_cos"] == pytest.approx(min(cos_l.min(), cos_r.min()), abs=1e-8)
    assert 0.0 < row["overlap_left"] < 1.0


def test_principal_cosines_and_subspaces_against_scipy(rng):
    a = np.linalg.qr(rng.standard_normal((30, 4)))[0]
    b = np.linalg.qr(rng.standard_normal((30, 4)))[0]
    got = principal_cosines(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.sort(np.cos(scipy.linalg.subspace_angles(a, b)))[::-1]
    np.testing.assert_allclose(got, want, atol=1e-12)
    w = _with_spectrum(rng, 20, 50, np.linspace(5.0, 1.0, 20))  # wide: the other side
    sigma, left, right = top_singular_subspaces(torch.from_numpy(w), 3)
    np.testing.assert_allclose(sigma.numpy(), np.linalg.svd(w, compute_uv=False), rtol=1e-12)
    u, _, vt = np.linalg.svd(w)
    assert np.max(scipy.linalg.subspace_angles(left.numpy(), u[:, :3])) < 1e-7
    assert np.max(scipy.linalg.subspace_angles(right.numpy(), vt[:3].T)) < 1e-7
    np.testing.assert_allclose(right.numpy().T @ right.numpy(), np.eye(3), atol=1e-12)


def test_invariances(pair):
    base, delta = pair
    b, t = torch.from_numpy(base), torch.from_numpy(base + delta)
    fwd = infospec.compare({"w": b}, {"w": t}, progress=False).weights[0]
    back = infospec.compare({"w": t}, {"w": b}, progress=False).weights[0]
    # -dW has the spectrum of dW; every change changes sign
    assert back["sigma_max"] == pytest.approx(fwd["sigma_max"], rel=1e-12)
    assert back["change_alpha"] == pytest.approx(-fwd["change_alpha"], abs=1e-12)
    # subspaces do not depend on scale
    scaled = infospec.compare({"w": b}, {"w": 3.0 * t}, progress=False).weights[0]
    assert scaled["overlap_left"] == pytest.approx(fwd["overlap_left"], abs=1e-10)
    same = infospec.compare({"w": b}, {"w": b.clone()}, progress=False).weights[0]
    assert same["numerical_rank"] == 0 and same["rel_delta"] == 0.0
    assert same["overlap_left"] == pytest.approx(1.0, abs=1e-12)
    assert "zero matrix" in same["warning"]


def test_bf16_checkpoints_give_the_exact_difference(tmp_path, gen):
    w = torch.randn(40, 24, generator=gen)
    b16, t16 = w.bfloat16(), (w + 0.01 * torch.randn(40, 24, generator=gen)).bfloat16()
    save_file({"w": b16}, tmp_path / "b.safetensors")
    save_file({"w": t16}, tmp_path / "t.safetensors")
    report = infospec.compare(
        tmp_path / "b.safetensors", tmp_path / "t.safetensors", progress=False
    )
    exact = t16.double() - b16.double()
    want = np.linalg.svd(exact.numpy(), compute_uv=False) ** 2
    np.testing.assert_allclose(report.spectrum("w"), want, rtol=1e-10)
    assert report.weights[0]["dtype"] == "bfloat16"


def test_one_sided_shape_mismatch_and_skips_are_listed(gen):
    base = {
        "a.weight": torch.randn(20, 20, generator=gen),
        "b.weight": torch.randn(20, 20),
        "c.weight": torch.randn(20, 30),
        "a.bias": torch.randn(20),
    }
    tuned = {
        "a.weight": torch.randn(20, 20),
        "b.weight": torch.randn(20, 21),
        "d.weight": torch.randn(20, 20),
        "a.bias": torch.randn(20),
    }
    report = infospec.compare(base, tuned, progress=False)
    assert [r["name"] for r in report.weights] == ["a.weight"]
    reasons = {r["name"]: r["reason"] for r in report.skipped}
    assert reasons["b.weight"] == "shape differs (base 20x20, tuned 20x21)"
    assert reasons["c.weight"] == "only in base"
    assert reasons["d.weight"] == "only in tuned"
    assert reasons["a.bias"].startswith("1-D tensor")
    with pytest.raises(InputError, match=r"'b\.weight' has shape \(20, 20\) in the base"):
        infospec.compare(base, tuned, strict=True, progress=False)
    with pytest.raises(InputError, match=r"'c\.weight' of the base .* no match in the tuned"):
        infospec.compare(base, tuned, layers="c.weight", strict=True, progress=False)


def test_rename_rules_and_their_errors(gen):
    w = torch.randn(16, 16, generator=gen)
    base = {"model.layer.weight": w}
    tuned = {"base_model.model.layer.weight": w + 1e-3}
    with pytest.raises(
        InputError, match=r"matched no tensor name.*tuned names carry the prefix 'base_model\.'"
    ):
        infospec.compare(base, tuned, progress=False)
    report = infospec.compare(
        base, tuned, rename={r"^base_model\.": "", r"^model\.": ""}, progress=False
    )
    assert [r["name"] for r in report.weights] == ["layer.weight"]
    assert report.meta["rename"] == [[r"^base_model\.", ""], [r"^model\.", ""]]
    with pytest.raises(InputError, match=r"map two base tensors .* to the same name 'w'"):
        rename_names(["a.w", "b.w"], [(r"^\w+\.", "")], side="base", where="x")
    with pytest.raises(InputError, match=r"rename' pattern '\(' of compare is not a valid"):
        infospec.compare(base, tuned, rename=[("(", "")], progress=False)
    with pytest.raises(InputError, match=r"must hold \(pattern, replacement\) pairs"):
        infospec.compare(base, tuned, rename=[("a",)], progress=False)
    with pytest.raises(InputError, match=r"'k' parameter of compare must be an int >= 0"):
        infospec.compare(base, base, k=-1, progress=False)


def test_nonfinite_layer_is_an_error_row_and_k0_skips_overlaps(gen):
    a = torch.randn(16, 16, generator=gen)
    bad = a.clone()
    bad[0, 0] = float("nan")
    report = infospec.compare({"x": a, "y": a.clone()}, {"x": bad, "y": a * 2}, k=0, progress=False)
    rows = {r["name"]: r for r in report.weights}
    assert rows["x"]["status"] == "error" and "1 NaN" in rows["x"]["warning"]
    assert rows["y"]["status"] == "ok" and math.isnan(rows["y"]["overlap_left"])
    assert rows["y"]["rel_delta"] == pytest.approx(1.0, rel=1e-12)


def test_pooled_conv_and_module_source(gen):
    base = torch.nn.Conv2d(12, 16, 3)
    tuned = torch.nn.Conv2d(12, 16, 3)
    report = infospec.compare(base, tuned, progress=False, min_dim=10)
    row = next(r for r in report.weights if r["name"] == "weight")
    kd = (tuned.weight.double() - base.weight.double()).detach().numpy()
    per_position = [
        np.linalg.svd(kd[:, :, i, j], compute_uv=False) for i in range(3) for j in range(3)
    ]
    want = np.sort(np.concatenate(per_position) ** 2)[::-1]
    np.testing.assert_allclose(report.spectrum("weight"), want, rtol=1e-9)
    assert (row["rows"], row["cols"], row["params"]) == (16, 12, 16 * 12 * 9)


def test_sharded_checkpoints(tmp_path, gen):
    tensors = {
        f"layers.{i}.weight": torch.randn(24, 24, generator=gen, dtype=torch.float64)
        for i in range(3)
    }
    for side, scale in (("b", 0.0), ("t", 0.1)):
        folder = tmp_path / side
        folder.mkdir()
        shard = {}
        for i, (name, w) in enumerate(tensors.items()):
            file = f"model-{i % 2 + 1:05d}-of-00002.safetensors"
            shard.setdefault(file, {})[name] = w + scale * torch.ones_like(w)
        for file, part in shard.items():
            save_file(part, folder / file)
        index = {"weight_map": {n: f for f, part in shard.items() for n in part}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    report = infospec.compare(tmp_path / "b", tmp_path / "t", progress=False)
    assert [r["name"] for r in report.weights] == list(tensors)
    # a constant shift is rank one
    assert all(r["numerical_rank"] == 1 for r in report.weights)
    assert report.meta["matched"] == 3


def test_cli_compare(tmp_path, gen, capsys):
    w = torch.randn(32, 24, generator=gen, dtype=torch.float64)
    save_file({"model.l.weight": w}, tmp_path / "b.safetensors")
    save_file({"l.weight": w + 0.1}, tmp_path / "t.safetensors")
    b, t = str(tmp_path / "b.safetensors"), str(tmp_path / "t.safetensors")
    assert main(["compare", b, t]) == 2
    err = capsys.readouterr().err
    assert "prefix 'model.'" in err and "--rename '^model\\.='" in err
    assert main(["compare", b, t, "--rename", "^model\\.=", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "l.weight" in out and "rel_delta" in out
    out_json = tmp_path / "c.json"
    assert main(["compare", b, t, "--rename", "^model\\.=", "--out", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert data["weights"][0]["numerical_rank"] == 1
    assert data["meta"]["verb"] == "compare"
    assert main(["compare", b, t, "--rename", "nope"]) == 2
    assert "--rename must be PATTERN=REPLACEMENT" in capsys.readouterr().err
    assert main(["compare", b, t, "--k", "-2"]) == 2
    assert "--k must be an int >= 0" in capsys.readouterr().err


def test_lanczos_route_gives_the_same_subspaces(rng, monkeypatch):
    subspaces = importlib.import_module("infospec.analysis.subspaces")
    w = _with_spectrum(rng, 70, 50, np.geomspace(30.0, 0.1, 50))
    full = top_singular_subspaces(torch.from_numpy(w), 6)
    monkeypatch.setattr(subspaces, "_EIGH_MAX", 0)  # every Gram matrix through ARPACK
    lanczos = top_singular_subspaces(torch.from_numpy(w), 6)
    np.testing.assert_allclose(lanczos[0].numpy(), full[0].numpy(), rtol=1e-13)
    for a, b in zip(full[1:], lanczos[1:], strict=True):
        assert np.max(scipy.linalg.subspace_angles(a.numpy(), b.numpy())) < 1e-8


def test_subspaces_of_tiny_huge_and_nonfinite_matrices(rng):
    w = _with_spectrum(rng, 30, 20, np.linspace(4.0, 1.0, 20))
    sigma, left, _ = top_singular_subspaces(torch.from_numpy(w), 3)
    for factor in (1e-300, 1e200):
        s2, l2, _ = top_singular_subspaces(torch.from_numpy(w * factor), 3)
        np.testing.assert_allclose(s2.numpy(), sigma.numpy() * factor, rtol=1e-12)
        assert np.max(scipy.linalg.subspace_angles(l2.numpy(), left.numpy())) < 1e-8
    bad = w.copy()
    bad[1, 2] = np.nan
    with pytest.raises(InputError, match=r"The matrix tensor contains 1 NaN"):
        top_singular_subspaces(torch.from_numpy(bad), 3)


@pytest.mark.parametrize("rows, cols", [(90, 60), (60, 90)])
def test_subspaces_of_an_ill_conditioned_matrix_take_the_refined_route(rng, rows, cols):
    """Base and tuned spectra follow singular_values' routes: at the Gram route's limit
    the small values are refined from W (no full SVD), and the route is reported."""
    sigma = np.r_[np.linspace(3.0, 1.0, 55), np.full(5, 1e-7)]
    w = torch.from_numpy(_with_spectrum(rng, rows, cols, sigma))
    got, left, right, route = top_singular_subspaces(w, 4, return_method=True)
    assert route == "gram+refine"
    want = np.linalg.svd(w.numpy(), compute_uv=False)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-7)
    u, _, vt = np.linalg.svd(w.numpy(), full_matrices=False)
    assert np.max(scipy.linalg.subspace_angles(left.numpy(), u[:, :4])) < 1e-8
    assert np.max(scipy.linalg.subspace_angles(right.numpy(), vt[:4].T)) < 1e-8
    assert top_singular_subspaces(w, 4, method="svd", return_method=True)[3] == "svd"
    assert len(top_singular_subspaces(w, 4)) == 3  # the route only when asked


def test_compare_rows_name_the_route_of_their_spectra(rng):
    sigma = np.r_[np.linspace(3.0, 1.0, 43), np.full(5, 1e-7)]
    ill = _with_spectrum(rng, 80, 48, sigma)
    well = _with_spectrum(rng, 80, 48, np.linspace(10.0, 1.0, 48))
    delta = 0.05 * rng.standard_normal((80, 48))
    base = {"ill.weight": torch.from_numpy(ill), "well.weight": torch.from_numpy(well)}
    tuned = {name: w + torch.from_numpy(delta) for name, w in base.items()}
    report = infospec.compare(base, tuned, k=4, progress=False)
    routes = {row["name"]: row["spectrum_method"] for row in report.weights}
    assert routes == {"ill.weight": "gram+refine", "well.weight": "gram"}
    again = infospec.compare(base, tuned, k=0, progress=False)  # no subspaces: same routes
    assert {row["name"]: row["spectrum_method"] for row in again.weights} == routes
    assert "spectrum_method" in importlib.import_module("infospec.analysis.compare").COMPARE_COLUMNS


def test_a_conv1d_checkpoint_pairs_with_its_bare_state_dict(tmp_path):
    # GPT-2's Conv1D weights are transposed when a config says so (a folder, a module) and
    # plain matrices in a bare state dict: the pair reads the known layout on both sides
    # (the identical square matrices had a false delta, the others a size mismatch)
    torch.manual_seed(0)
    tensors = {
        "h.0.attn.c_attn.weight": torch.randn(32, 96),
        "h.0.attn.c_proj.weight": torch.randn(32, 32),
        "h.0.mlp.c_fc.weight": torch.randn(32, 128),
    }
    folder = tmp_path / "base"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "elsewhere").mkdir()
    same = tmp_path / "elsewhere" / "same.pt"
    torch.save(tensors, same)
    report = infospec.compare(folder, same, progress=False)
    assert [r["rel_delta"] for r in report.weights] == [0.0, 0.0, 0.0]
    assert {r["kind"] for r in report.weights} == {"conv1d_transposed"}
    tuned = {k: v + 0.01 * torch.randn_like(v) for k, v in tensors.items()}
    torch.save(tuned, tmp_path / "elsewhere" / "tuned.pt")
    both = infospec.compare(folder, tmp_path / "elsewhere" / "tuned.pt", progress=False)
    folders = infospec.compare(folder, folder, progress=False)  # (the same file: delta 0)
    assert len(both.weights) == 3 and len(folders.weights) == 3
    for row in both.weights:
        base = tensors[row["name"]]
        delta = (tuned[row["name"]] - base).double()
        assert row["rel_delta"] == pytest.approx(float(delta.norm() / base.double().norm()))
        assert (row["rows"], row["cols"]) == tuple(base.T.shape)  # out x in, as GPT-2 reads it


def test_strict_errors_speak_the_cli_s_words(tmp_path, capsys):
    # --strict is a switch: the advice is to drop it, never "--strict False"
    torch.manual_seed(0)
    save_file({"a.weight": torch.randn(16, 16)}, tmp_path / "b.safetensors")
    save_file(
        {"a.weight": torch.randn(16, 16), "x.weight": torch.randn(16, 16)},
        tmp_path / "t.safetensors",
    )
    b, t = str(tmp_path / "b.safetensors"), str(tmp_path / "t.safetensors")
    assert main(["compare", b, t, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "drop --strict to list it" in err and "False" not in err
    with pytest.raises(InputError, match=r"drop strict=True to list it"):
        infospec.compare(b, t, strict=True, progress=False)


def test_numerical_rank_sees_through_the_rounding_of_the_stored_dtype(tmp_path):
    # a rank-2 update merged into float32 weights: the float32 rounding of the merged
    # matrix is full rank at about 1e-8 of the update, under u/2 ||W||_F; in float64 the
    # same update is exact and rank 2 under the matrix_rank rule alone
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 40, generator=g, dtype=torch.float64)
    update = (
        0.05
        * torch.randn(48, 2, generator=g, dtype=torch.float64)
        @ torch.randn(2, 40, generator=g, dtype=torch.float64)
    )
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        name = str(dtype).split(".")[1]
        base, tuned = tmp_path / f"b_{name}.safetensors", tmp_path / f"t_{name}.safetensors"
        save_file({"w": w.to(dtype)}, base)
        save_file({"w": (w + update).to(dtype)}, tuned)
        row = infospec.compare(base, tuned, progress=False).weights[0]
        delta = ((w + update).to(dtype).double() - w.to(dtype).double()).numpy()
        full = np.linalg.matrix_rank(delta)  # NumPy's float64 rule alone
        assert row["numerical_rank"] == 2, dtype
        if dtype != torch.float64:
            assert full > 2  # the rounding is full rank under the float64 rule
            # the cut sits above the rounding's measured spectral norm, with room
            noise = np.linalg.svd(delta - update.numpy(), compute_uv=False)[0]
            u = torch.finfo(dtype).eps
            norm = float((w + update).to(dtype).double().norm())
            cut = (math.sqrt(48) + math.sqrt(40)) * u * norm / math.sqrt(3 * 48 * 40)
            assert noise < 0.8 * cut, (dtype, noise, cut)
