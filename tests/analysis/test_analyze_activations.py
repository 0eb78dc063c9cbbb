"""analyze's activation pass: timing keys, progress lines, precision and linear-input options."""

import pytest
import torch
from torch import nn

from infospec import InputError, analyze


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 40), nn.GELU(), nn.Linear(40, 12))


def _data(n=4):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(64, 12, generator=g) * 3 + 10 for _ in range(n)]


def test_activation_timing_in_meta():
    report = analyze(_mlp(), _data(), progress=False)
    meta = report.meta
    for key in (
        "activation_seconds",
        "activation_forward_seconds",
        "activation_accumulate_seconds",
        "activation_measure_seconds",
    ):
        assert meta[key] > 0, key
    assert meta["activation_accumulate_seconds"] < meta["activation_seconds"] < meta["seconds"]
    assert meta["weight_seconds"] + meta["activation_seconds"] <= meta["seconds"]
    assert meta["activation_precision"] == "auto" and meta["linear_inputs"] is True


def test_options_give_the_same_report_up_to_round_off():
    data = _data()
    base = analyze(_mlp(), data, progress=False).activations
    for kwargs in ({"linear_inputs": False}, {"activation_precision": "float64"}):
        other = analyze(_mlp(), data, progress=False, **kwargs).activations
        for a, b in zip(base, other, strict=True):
            assert (a["name"], a["rank"], a["samples"]) == (b["name"], b["rank"], b["samples"])
            for key in ("flatness", "effective_rank", "entropy_bits_per_dim"):
                assert b[key] == pytest.approx(a[key], rel=1e-6), (a["name"], key)
    fast = analyze(_mlp(), data, progress=False, activation_precision="float32").activations
    for a, b in zip(base, fast, strict=True):
        assert b["effective_rank"] == pytest.approx(a["effective_rank"], rel=1e-4)


def test_bad_activation_precision():
    with pytest.raises(InputError, match="'activation_precision' parameter of analyze"):
        analyze(_mlp(), _data(1), activation_precision="bf16", progress=False)


def test_progress_lines_count_batches_without_a_terminal(capfd):
    analyze(_mlp(), _data(3), progress=True)
    err = capfd.readouterr().err
    assert "activations: 3/3 batch in " in err
    assert "layer/s" not in err


def test_default_progress_is_quiet_without_a_terminal(capfd):
    analyze(_mlp(), _data(2))
    assert capfd.readouterr().err == ""


def test_measures_on_one_thread_workers_restore_the_thread_count():
    before = torch.get_num_threads()
    report = analyze(_mlp(), _data(2), workers=2, progress=False)
    assert torch.get_num_threads() == before
    assert [r["status"] for r in report.activations] == ["ok", "ok"]
