"""Group-wise quantization and bit widths allocated across matrices (compress(bits=...))."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import infospec
from infospec import InputError
from infospec.transforms.allocation import allocate_choices
from infospec.transforms.quantization import (
    dequantize,
    pack_codes,
    quantize_groups,
    unpack_codes,
)


def _reference(w: np.ndarray, bits: int, group: int):
    """An independent NumPy float64 version of the quantizer, with float32 scales."""
    m, n = w.shape
    out = np.empty_like(w)
    levels = 2**bits - 1
    for i in range(m):
        for start in range(0, n, group):
            g = w[i, start : start + group]
            lo = np.float32(g.min())
            if np.float64(lo) > g.min():  # the stored minimum is rounded down
                lo = np.nextafter(lo, np.float32(-np.inf))
            s = np.float32((g.max() - np.float64(lo)) / levels)
            if np.float64(lo) + levels * np.float64(s) < g.max():  # and the step up
                s = np.nextafter(s, np.float32(np.inf))
            if s == 0:
                out[i, start : start + group] = lo
                continue
            q = np.clip(np.round((g - np.float64(lo)) / np.float64(s)), 0, levels)
            out[i, start : start + group] = np.float64(lo) + q * np.float64(s)
    return out


@pytest.mark.parametrize("bits", [1, 3, 8])
@pytest.mark.parametrize("group", [1, 7, 16, 100])
def test_quantizer_matches_a_numpy_reference(bits, group):
    rng = np.random.default_rng(bits * 100 + group)
    w = rng.standard_normal((5, 37))
    q = quantize_groups(torch.from_numpy(w), bits, group_size=group, scale_dtype=torch.float32)
    assert q.scale.shape == (5, math.ceil(37 / group))
    np.testing.assert_allclose(
        dequantize(q).numpy(), _reference(w, bits, group), rtol=0, atol=1e-12
    )


def test_error_is_at_most_half_a_step_and_grid_values_are_exact():
    rng = np.random.default_rng(0)
    w = torch.from_numpy(rng.standard_normal((8, 256)))
    q = quantize_groups(w, 4, group_size=64, scale_dtype=torch.float32)
    step = q.scale.to(torch.float64).repeat_interleave(64, dim=1)
    err = (w - dequantize(q)).abs()
    assert bool((err <= step / 2 * (1 + 1e-12)).all())
    # values already on a 2-bit grid come back exactly
    grid = torch.tensor([[0.0, 0.5, 1.0, 1.5, 1.5, 0.0]])
    assert torch.equal(dequantize(quantize_groups(grid, 2, group_size=6)), grid.double())


def test_constant_groups_have_zero_scale_and_exact_values():
    w = torch.full((3, 10), 0.25)
    q = quantize_groups(w, 3, group_size=4)
    assert bool((q.scale == 0).all()) and bool((q.codes == 0).all())
    assert torch.equal(dequantize(q), w.double())


def test_error_falls_by_about_four_per_bit_at_high_rate():
    # uniform data: the error of a b-bit grid is step^2 / 12 with step = range / (2^b - 1)
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.uniform(-1, 1, (64, 1024)))
    mse = {}
    for b in (5, 6, 7):
        q = quantize_groups(w, b, group_size=1024, scale_dtype=torch.float32)
        mse[b] = float(((w - dequantize(q)) ** 2).mean())
        step = 2.0 / (2**b - 1)
        assert mse[b] == pytest.approx(step**2 / 12, rel=0.05)
    assert mse[5] / mse[6] == pytest.approx((63 / 31) ** 2, rel=0.06)
    assert mse[6] / mse[7] == pytest.approx((127 / 63) ** 2, rel=0.06)


@pytest.mark.parametrize("bits", range(1, 9))
def test_packing_round_trips_and_takes_bits_over_eight_bytes(bits):
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (7, 13), generator=gen, dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(91 * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, (7, 13)), codes)


def test_unpack_refuses_the_wrong_number_of_bytes():
    packed = pack_codes(torch.zeros(10, dtype=torch.uint8), 3)
    with pytest.raises(InputError, match=r"need 4 uint8 bytes; got 5"):
        unpack_codes(torch.cat([packed, packed[:1]]), 3, (10,))


def test_quantizer_errors_name_the_argument():
    w = torch.randn(4, 8)
    with pytest.raises(InputError, match=r"bits must be an int in 1\.\.8"):
        quantize_groups(w, 9)
    with pytest.raises(InputError, match="'group_size' argument of quantize_groups must be"):
        quantize_groups(w, 4, group_size=0)
    with pytest.raises(InputError, match="2-D floating-point tensor"):
        quantize_groups(torch.ones(8, dtype=torch.int64).reshape(2, 4), 4)
    with pytest.raises(InputError, match="NaN or infinite"):
        quantize_groups(torch.tensor([[1.0, float("nan")]]), 4)
    with pytest.raises(InputError, match=r"scale_dtype=torch\.float32"):
        quantize_groups(torch.tensor([[-1e6, 1e6]]), 4)


# -- allocation -------------------------------------------------------------------------------
def _brute(menus, budget):
    best = math.inf
    for combo in itertools.product(*menus):
        if sum(c for c, _ in combo) <= budget:
            best = min(best, sum(v for _, v in combo))
    return best


def test_allocate_choices_is_within_its_gap_of_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(40):
        menus = []
        for _item in range(3):
            n = int(rng.integers(2, 5))
            costs = np.sort(rng.choice(np.arange(1, 20), n, replace=False)).astype(float)
            losses = np.sort(rng.uniform(0, 10, n))[::-1]
            menus.append(list(zip(costs, losses, strict=True)))
        cheapest = sum(m[0][0] for m in menus)
        budget = float(rng.integers(int(cheapest), int(cheapest) + 30))
        a = allocate_choices(menus, budget)
        assert a.cost <= budget
        assert a.loss == pytest.approx(sum(menus[j][i][1] for j, i in enumerate(a.choices)))
        best = _brute(menus, budget)
        assert best - 1e-9 <= a.loss <= best + a.gap_bound + 1e-9


def test_allocate_choices_errors():
    with pytest.raises(InputError, match="below the cheapest allocation"):
        allocate_choices([[(4, 1.0)], [(4, 1.0)]], 7)
    with pytest.raises(InputError, match="item 1 has no option"):
        allocate_choices([[(4, 1.0)], []], 7)
    with pytest.raises(InputError, match="cost is not a finite number > 0"):
        allocate_choices([[(0, 1.0)]], 7)


# -- compress(bits=...) ------------------------------------------------------------------------
def _mlp_and_data(seed=0):
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(32, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 48),
        torch.nn.ReLU(),
        torch.nn.Linear(48, 8),
    )
    with torch.no_grad():  # layers of very different scales, so allocation matters
        mlp[2].weight.mul_(torch.logspace(-2, 0, 48)[:, None])
    data = [torch.randn(128, 32) * torch.logspace(0, -1, 32) for _ in range(4)]
    return mlp, data


def test_allocated_widths_beat_uniform_at_the_same_bits():
    mlp, data = _mlp_and_data()
    uni = infospec.compress(mlp, data, bits=3, allocation="uniform", weighting="absolute")
    alloc = infospec.compress(mlp, data, bits=3, weighting="absolute")
    assert {r["bits"] for r in uni.plan} == {3}
    assert alloc.settings["mean_code_bits"] <= 3 + 1e-12
    assert len({r["bits"] for r in alloc.plan}) > 1
    # the uniform widths are one allocation within the budget: allocated is no worse
    # than it by more than its own optimality gap
    assert (
        alloc.settings["predicted_loss"]
        <= uni.settings["predicted_loss"] + alloc.settings["gap_bound"] + 1e-12
    )
    assert alloc.settings["predicted_loss"] < uni.settings["predicted_loss"]


def test_predicted_loss_is_the_measured_output_error_on_the_calibration_data():
    mlp, data = _mlp_and_data(1)
    res = infospec.compress(mlp, data, bits=4.5, eval_data=data)
    for r in res.plan:
        assert r["measured_loss"] == pytest.approx(r["predicted_loss"], rel=1e-9)
        x = torch.cat(data)
        # and it is E||(W - W_hat) x||^2 over the rows that reach the layer
        if r["name"] == "0":
            w = mlp[0].weight.detach().double()
            wq = res.model[0].weight.detach().double()
            direct = float((((w - wq) @ x.double().T) ** 2).sum(0).mean())
            assert r["measured_loss"] == pytest.approx(direct, rel=1e-6)


def test_weights_method_needs_no_data_and_uses_the_frobenius_error():
    mlp, _ = _mlp_and_data(2)
    res = infospec.compress(mlp, None, bits=4, method="weights", allocation="uniform")
    w = mlp[0].weight.detach().double()
    wq = res.model[0].weight.detach().double()
    assert res.plan[0]["predicted_loss"] == pytest.approx(float(((w - wq) ** 2).sum()), rel=1e-9)
    assert mlp[0].weight.data_ptr() != res.model[0].weight.data_ptr()  # the input is untouched


def test_save_and_load_round_trip_with_packed_codes(tmp_path):
    mlp, data = _mlp_and_data(3)
    res = infospec.compress(mlp, data, bits=3.5, group_size=16)
    out = res.save(tmp_path / "q")
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "quantized.safetensors"]
    code_bytes = sum(math.ceil(r["bits"] * r["params_before"] / 8) for r in res.plan)
    assert (out / "quantized.safetensors").stat().st_size < code_bytes + 2 * 2 * sum(
        r["shape"][0] * math.ceil(r["shape"][1] / 16) for r in res.plan
    ) + 4096
    fresh, _ = _mlp_and_data(3)
    infospec.load_compressed(fresh, out)
    for a, b in zip(res.model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    # packed codes, then a float16 scale and minimum per group of 16 columns
    groups = sum(r["shape"][0] * math.ceil(r["shape"][1] / 16) for r in res.plan)
    assert res.bits_after == sum(r["bits"] * r["params_before"] for r in res.plan) + 32 * groups
    assert res.bits_before == 32 * sum(r["params_before"] for r in res.plan)


def test_compress_bits_errors_name_the_argument():
    mlp, data = _mlp_and_data()
    with pytest.raises(InputError, match="exactly one of them"):
        infospec.compress(mlp, data, ratio=0.5, bits=4)
    with pytest.raises(InputError, match="exactly one of them"):
        infospec.compress(mlp, data)
    with pytest.raises(InputError, match=r"bits must be one of \[2, 3, 4, 5, 6, 7, 8\]"):
        infospec.compress(mlp, data, bits=3.5, allocation="uniform")
    with pytest.raises(InputError, match=r"outside the bit widths 2..8"):
        infospec.compress(mlp, data, bits=1.5)
    with pytest.raises(InputError, match="bits must be a number"):
        infospec.compress(mlp, data, bits="4")
    with pytest.raises(InputError, match="'mp_edge' argument of compress caps ranks"):
        infospec.compress(mlp, data, bits=4, mp_edge=True)
    with pytest.raises(InputError, match="'group_size' argument of compress must be an int"):
        infospec.compress(mlp, data, bits=4, group_size=0)


def test_load_refuses_a_model_of_another_shape(tmp_path):
    mlp, data = _mlp_and_data()
    out = infospec.compress(mlp, data, bits=4).save(tmp_path / "q")
    other = torch.nn.Sequential(torch.nn.Linear(32, 65))
    before = other[0].weight.detach().clone()
    with pytest.raises(InputError, match=r"layer '0' is \(65, 32\) in the model"):
        infospec.load_compressed(other, out)
    assert torch.equal(other[0].weight, before)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (None, "'options' argument of allocate_choices must be a list"),
        ([[(1,)]], r"Option 0 of item 0 .* got \(1,\)"),
        ([[(1, 2, 3)]], r"Option 0 of item 0 .* got \(1, 2, 3\)"),
        ([[("a", 1.0)]], r"Option 0 of item 0 .* got \('a', 1.0\)"),
        ([[(1, "2.0")]], r"Option 0 of item 0 .* got \(1, '2.0'\)"),
        ([[(10**5000, 1.0)]], r"Option 0 of item 0 .* got a tuple holding an int too long"),
        ([[(1e308, 1.0), (1.7e308, 0.0)]] * 2, "the costs add up beyond the float64 range"),
        ([[(1, 1e308)]] * 2, "the losses add up beyond the float64 range"),
    ],
)
def test_allocate_choices_refuses_bad_options(options, match):
    with pytest.raises(InputError, match=match):
        allocate_choices(options, 8)


@pytest.mark.parametrize("budget", [None, "abc", float("nan"), float("inf"), 1e309, -1])
def test_allocate_choices_refuses_a_bad_budget(budget):
    with pytest.raises(InputError, match="'budget' argument of allocate_choices must be a finite"):
        allocate_choices([[(1, 1.0)]], budget)


@pytest.mark.parametrize(
    "dtype",
    [
        torch.int8,
        torch.int32,
        torch.uint8,
        torch.float8_e4m3fn,
        torch.bool,
        torch.complex64,
        "float16",
        0,
        np.float16,
    ],
)
def test_quantize_groups_refuses_a_bad_scale_dtype(dtype):
    with pytest.raises(InputError, match=r"'scale_dtype' argument .* floating torch dtype of 16"):
        quantize_groups(torch.randn(4, 8), 4, scale_dtype=dtype)


def test_quantize_groups_refuses_meta_and_huge_bits_and_takes_a_huge_group():
    with pytest.raises(InputError, match="'weight' argument of quantize_groups is a meta"):
        quantize_groups(torch.empty(4, 4, device="meta"), 4)
    with pytest.raises(InputError, match=r"bits must be an int in 1..8; got an int of about"):
        quantize_groups(torch.randn(4, 4), 10**5000)
    w = torch.randn(4, 10)
    whole = quantize_groups(w, 4, group_size=10)
    huge = quantize_groups(w, 4, group_size=10**30)  # one group per row
    assert torch.equal(dequantize(huge), dequantize(whole))
    for dtype in (torch.bfloat16, torch.float32, torch.float64):
        q = quantize_groups(w, 4, scale_dtype=dtype)
        assert q.scale.dtype == dtype


def test_dequantize_errors_name_the_argument():
    q = quantize_groups(torch.randn(4, 8), 4, group_size=4)
    for dtype in ("float32", np.float16, torch.int32):
        with pytest.raises(InputError, match="'dtype' argument of dequantize must be a floating"):
            dequantize(q, dtype)
    with pytest.raises(InputError, match="'q' argument of dequantize must be a QuantizedMatrix"):
        dequantize(None)
    for gs in (0, -1, "4", None):
        with pytest.raises(InputError, match="'group_size' field of q must be an int >= 1"):
            dequantize(q._replace(group_size=gs))
    with pytest.raises(InputError, match=r"q.scale and q.minimum must have shape \(4, 1\)"):
        dequantize(q._replace(group_size=8))
    assert dequantize(q, torch.float32).dtype == torch.float32


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        (None, "'codes' argument of pack_codes must be a torch.Tensor; got NoneType"),
        ([1, 2, 3], "'codes' argument of pack_codes must be a torch.Tensor; got list"),
        (torch.empty(3, device="meta"), "'codes' argument of pack_codes is a meta tensor"),
        (torch.tensor([300, -1]), r"codes in \[0, 15\] for bits=4; got 300 \(2 code"),
        (torch.tensor([20]), r"codes in \[0, 15\] for bits=4; got 20"),
        (torch.tensor([1.7, math.nan]), "must be an integer tensor .* got dtype float32"),
        (torch.tensor([1 + 0j]), "must be an integer tensor .* got dtype complex64"),
    ],
)
def test_pack_codes_refuses_non_codes(codes, match):
    with pytest.raises(InputError, match=match):
        pack_codes(codes, 4)


@pytest.mark.parametrize(
    ("packed", "shape", "match"),
    [
        (None, (4,), "'packed' argument of unpack_codes must be a torch.Tensor; got NoneType"),
        (np.zeros(2, np.uint8), (4,), "'packed' argument .* must be a torch.Tensor; got ndarray"),
        (torch.empty(2, dtype=torch.uint8, device="meta"), (4,), "'packed' argument .* meta"),
        (torch.zeros(2, dtype=torch.uint8), None, "'shape' argument of unpack_codes must be a"),
        (torch.zeros(2, dtype=torch.uint8), "ab", "'shape' argument of unpack_codes must be a"),
        (torch.zeros(2, dtype=torch.uint8), (-4, -10), "Each size in the 'shape' .* Got -4"),
        (torch.zeros(2, dtype=torch.uint8), (4, 10.5), "Each size in the 'shape' .* Got 10.5"),
    ],
)
def test_unpack_codes_errors_name_the_argument(packed, shape, match):
    with pytest.raises(InputError, match=match):
        unpack_codes(packed, 4, shape)


def test_unpack_codes_takes_an_integral_float_size():
    packed = pack_codes(torch.tensor([[1, 2], [3, 15]]), 4)
    assert unpack_codes(packed, 4, (2, 2.0)).tolist() == [[1, 2], [3, 15]]


def test_compress_with_a_group_larger_than_the_rows(tmp_path):
    mlp, data = _mlp_and_data()
    res = infospec.compress(mlp, data, bits=4, group_size=10**30)
    ref = infospec.compress(mlp, data, bits=4, group_size=64)  # >= every row length
    for a, b in zip(res.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(a, b)
    fresh, _ = _mlp_and_data()
    infospec.load_compressed(fresh, res.save(tmp_path / "q"))
    for a, b in zip(res.model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match=r"bits must be a number .* got an int of about"):
        infospec.compress(mlp, data, bits=10**5000)


# -- load_compressed of a damaged folder -----------------------------------------------------
def _saved(tmp_path, bits):
    mlp, data = _mlp_and_data()
    kwargs = {"bits": 4, "group_size": 16} if bits else {"ratio": 0.5}
    return infospec.compress(mlp, data, **kwargs).save(tmp_path / "saved")


def _edited(folder, plan_edit=None, tensor_edit=None):
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    out = folder.parent / f"edited{len(list(folder.parent.iterdir()))}"
    shutil.copytree(folder, out)
    plan = json.loads((out / "plan.json").read_text())
    if plan_edit:
        plan_edit(plan)
        (out / "plan.json").write_text(json.dumps(plan))
    if tensor_edit:
        quant = plan["format"] == "infospec-quant-1"
        file = out / ("quantized.safetensors" if quant else "factors.safetensors")
        tensors = load_file(str(file))
        tensor_edit(tensors)
        save_file(tensors, str(file), metadata={"format": plan["format"]})
    return out


def _set(key, value):
    return lambda plan: [rec.__setitem__(key, value) for rec in plan["layers"]]


def _drop(key):
    return lambda plan: [rec.pop(key) for rec in plan["layers"]]


@pytest.mark.parametrize("directory", [None, 5, ["a"]])
def test_load_compressed_refuses_a_non_path(directory):
    mlp, _ = _mlp_and_data()
    with pytest.raises(InputError, match="'directory' argument of load_compressed must be a path"):
        infospec.load_compressed(mlp, directory)


def test_load_compressed_takes_a_bytes_path_and_refuses_a_non_model(tmp_path):
    folder = _saved(tmp_path, bits=True)
    mlp, _ = _mlp_and_data()
    infospec.load_compressed(mlp, bytes(folder))
    with pytest.raises(InputError, match="'model' argument of load_compressed must be a torch"):
        infospec.load_compressed(None, folder)


@pytest.mark.parametrize("bits", [True, False])
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda plan: plan.pop("layers"), "'layers' must be a list of layer records; got None"),
        (lambda plan: plan.__setitem__("layers", 5), "'layers' must be a list .* got 5"),
        (lambda plan: plan.__setitem__("layers", {}), r"'layers' must be a list .* got \{\}"),
        (lambda plan: plan.__setitem__("layers", [5]), r"layers\[0\] must be a record"),
        (_drop("name"), r"layers\[0\] \(\w+\) lacks its 'name' field"),
        (_drop("shape"), r"layers\[0\] \(\w+\) lacks its 'shape' field"),
        (_drop("status"), r"layers\[0\] needs a 'status' string .* got None"),
        (_set("status", [1]), r"layers\[0\] needs a 'status' string .* got \[1\]"),
        (_set("shape", None), r"layers\[0\] 'shape' must be \[out, in\], two ints >= 1"),
        (_set("shape", [32]), r"layers\[0\] 'shape' must be \[out, in\].* got \[32\]"),
        (_set("shape", [64, 32.0]), r"layers\[0\] 'shape' must be \[out, in\].* got \[64, 32.0\]"),
        (_set("name", [1]), r"layers\[0\] 'name' must be a string; got \[1\]"),
    ],
)
def test_load_compressed_names_the_bad_plan_field(tmp_path, bits, edit, match):
    from infospec import SourceError

    folder = _edited(_saved(tmp_path, bits), edit)
    mlp, _ = _mlp_and_data()
    with pytest.raises(SourceError, match=r"plan\.json: " + match):
        infospec.load_compressed(mlp, folder)


@pytest.mark.parametrize(
    ("bits", "edit", "match"),
    [
        (False, _drop("rank"), "lacks its 'rank' field"),
        (False, _set("rank", 0), "'rank' must be an int >= 1; got 0"),
        (True, _drop("bits"), "lacks its 'bits' field"),
        (True, _set("bits", 9), "'bits' must be an int in 1..8; got 9"),
        (True, _drop("group_size"), "lacks its 'group_size' field"),
        (True, _set("group_size", 0), "'group_size' must be an int >= 1; got 0"),
        (True, _set("group_size", "a"), "'group_size' must be an int >= 1; got 'a'"),
        (True, _set("group_size", None), "'group_size' must be an int >= 1; got None"),
    ],
)
def test_load_compressed_names_the_bad_record_field(tmp_path, bits, edit, match):
    from infospec import SourceError

    folder = _edited(_saved(tmp_path, bits), edit)
    mlp, _ = _mlp_and_data()
    with pytest.raises(SourceError, match=match):
        infospec.load_compressed(mlp, folder)


def _each(suffix, fn):
    def edit(tensors):
        for key in list(tensors):
            if key.endswith(suffix):
                tensors[key] = fn(tensors[key].clone())

    return edit


def _first_nan(t):
    t.view(-1)[0] = math.nan
    return t


@pytest.mark.parametrize(
    ("bits", "edit", "match"),
    [
        (False, _each(".A", _first_nan), r"factors\.safetensors: NaN or infinite values in "),
        (False, _each(".B", lambda t: t.double() * 1e300), r"the factor '0\.B' in torch.float32"),
        (True, _each(".scale", _first_nan), "NaN or infinite values in the scales of '0'"),
        (True, _each(".minimum", _first_nan), "NaN or infinite values in the minima of '0'"),
        (True, _each(".scale", lambda t: t.double() * 1e40), "the dequantized weight of '0'"),
        (True, _each(".scale", lambda t: t.to(torch.int64)), "scales of '0' must be floating"),
        (True, _each(".minimum", lambda t: t > 0), "minima of '0' must be floating .* bool"),
    ],
)
def test_load_compressed_refuses_non_finite_tensors(tmp_path, bits, edit, match):
    from infospec import SourceError

    folder = _edited(_saved(tmp_path, bits), tensor_edit=edit)
    mlp, _ = _mlp_and_data()
    before = [p.detach().clone() for p in mlp.parameters()]
    with pytest.raises(SourceError, match=match):
        infospec.load_compressed(mlp, folder)
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.parameters(), strict=True))
