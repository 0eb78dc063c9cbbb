"""Convolutions against WeightWatcher 0.7.7: pooled spectra, its normalisation, its skips.

``tests/data/weightwatcher_conv.json`` holds WeightWatcher 0.7.7's own output on the
seeded net below, written by running this file as a script
(``python tests/analysis/test_weightwatcher_conv.py``); the stored tests compare infospec
with it, and where WeightWatcher is installed the live test runs it again and checks that
the stored values are still what it computes.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from infospec import analyze

DATA = Path(__file__).resolve().parents[1] / "data" / "weightwatcher_conv.json"
LOG2 = math.log10(2.0)

#: WeightWatcher details columns kept in the stored file.
WW_COLUMNS = (
    "layer_type",
    "N",
    "M",
    "rf",
    "num_evals",
    "alpha",
    "xmin",
    "D",
    "num_pl_spikes",
    "log_norm",
    "log_spectral_norm",
    "alpha_weighted",
    "log_alpha_norm",
    "stable_rank",
)


def _layers() -> list[tuple[str, nn.Module]]:
    """Conv2d with an odd and an even number of positions, one with out < in and an even
    number (WeightWatcher's N/M swap), a Conv1d long enough for WeightWatcher to read
    (k >= 8), a first conv of 16 x 1 position matrices (WeightWatcher analyses it,
    infospec skips it), a Linear, and recurrent layers (WeightWatcher skips them)."""
    return [
        ("c1", nn.Conv2d(12, 16, 3)),
        ("c2", nn.Conv2d(16, 24, 2)),
        ("c3", nn.Conv2d(24, 12, (2, 1))),
        ("c4", nn.Conv1d(12, 20, 9)),
        ("c5", nn.Conv2d(1, 16, (8, 1))),
        ("fc", nn.Linear(30, 20)),
        ("lstm", nn.LSTM(16, 12)),
        ("gru", nn.GRU(16, 12)),
    ]


def conv_net(*, conv1d_as_conv2d: bool = False) -> nn.Module:
    """The seeded test net; ``conv1d_as_conv2d`` replaces ``c4`` by its Conv2d twin
    (kernel ``(out, in, k, 1)``, the same weights), which WeightWatcher pools."""
    g = torch.Generator().manual_seed(20261201)
    net = nn.Module()
    for name, layer in _layers():
        for p_name, p in layer.named_parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
            if p_name.startswith("weight") and p.ndim > 2:
                with torch.no_grad():  # a few heavy rows, so the tails are not all MP
                    p[:2].mul_(4.0)
        net.add_module(name, layer)
    if conv1d_as_conv2d:
        twin = nn.Conv2d(12, 20, (9, 1))
        with torch.no_grad():
            twin.weight.copy_(net.c4.weight.unsqueeze(-1))
            twin.bias.copy_(net.c4.bias)
        net.c4 = twin
    return net


def weightwatcher_rows(net: nn.Module) -> dict[str, dict]:
    """WeightWatcher 0.7.7's default ``analyze()`` rows, by layer name."""
    import weightwatcher

    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            details = weightwatcher.WeightWatcher(model=net).analyze(plot=False)
    finally:
        logging.disable(logging.NOTSET)
    rows = {}
    for rec in details.to_dict(orient="records"):
        row = {c: rec[c] for c in WW_COLUMNS}
        row["layer_type"] = str(row["layer_type"])
        rows[rec["longname"]] = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    return rows


def weightwatcher_expected() -> dict:
    import weightwatcher

    net = conv_net()
    return {
        "weightwatcher": weightwatcher.__version__,
        "sum_of_squares": {
            n: float((p.detach().double() ** 2).sum()) for n, p in net.named_parameters()
        },
        "net": weightwatcher_rows(net),
        "conv1d_as_conv2d": weightwatcher_rows(conv_net(conv1d_as_conv2d=True)),
    }


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(DATA.read_text())


@pytest.fixture(scope="module")
def report():
    return analyze(conv_net(), progress=False)


def test_the_seeded_weights_are_those_of_the_stored_run(stored):
    for name, p in conv_net().named_parameters():
        assert float((p.detach().double() ** 2).sum()) == pytest.approx(
            stored["sum_of_squares"][name], rel=1e-12
        ), f"{name}: torch's generator no longer gives the stored weights; regenerate"


@pytest.mark.parametrize("layer", ["c1", "c2", "c3", "c4", "fc"])
def test_pooled_rows_equal_weightwatcher(stored, report, layer):
    """alpha, its tail and stable_rank equal WeightWatcher's; the norms differ by its
    conv2d_norm factor 1/2 on conv eigenvalues, exactly."""
    ww = (stored["conv1d_as_conv2d"] if layer == "c4" else stored["net"])[layer]
    row = {r["name"]: r for r in report.weights}[f"{layer}.weight"]
    assert row["status"] == "ok"
    conv = ww["layer_type"] == "conv2d"
    scale = 2.0 if conv else 1.0
    shift = LOG2 if conv else 0.0
    positions = ww["rf"]
    assert positions * min(row["rows"], row["cols"]) == ww["num_evals"]
    assert row["alpha"] == pytest.approx(ww["alpha"], rel=1e-10)
    assert row["alpha_xmin"] == pytest.approx(scale * ww["xmin"], rel=1e-10)
    assert row["alpha_ks"] == pytest.approx(ww["D"], rel=1e-8, abs=1e-12)
    assert row["alpha_num_tail"] == ww["num_pl_spikes"]
    assert row["stable_rank"] == pytest.approx(ww["stable_rank"], rel=1e-10)
    assert row["log_norm"] == pytest.approx(ww["log_norm"] + shift, rel=1e-10)
    assert row["log_spectral_norm"] == pytest.approx(ww["log_spectral_norm"] + shift, rel=1e-10)
    a = row["alpha"]
    assert row["alpha_weighted"] == pytest.approx(ww["alpha_weighted"] + a * shift, rel=1e-10)
    assert row["log_alpha_norm"] == pytest.approx(ww["log_alpha_norm"] + a * shift, rel=1e-10)


def test_where_weightwatcher_differs(stored, report):
    """The differences the conventions docstring states, on the stored run."""
    ww = stored["net"]
    # recurrent layers: no WeightWatcher row; infospec reads each gate stack as one matrix
    assert not any(name.startswith(("lstm", "gru")) for name in ww)
    rows = {r["name"]: r for r in report.weights}
    assert (rows["lstm.weight_ih_l0"]["rows"], rows["lstm.weight_ih_l0"]["cols"]) == (48, 16)
    assert (rows["gru.weight_hh_l0"]["rows"], rows["gru.weight_hh_l0"]["cols"]) == (36, 12)
    # a (16, 1, 8, 1) kernel: WeightWatcher pools 8 eigenvalues; infospec skips it
    assert ww["c5"]["num_evals"] == 8
    skipped = {s["name"]: s["reason"] for s in report.skipped}
    assert skipped["c5.weight"] == (
        "smaller side 1 < min_dim=10 (8 kernel-position matrices 16 x 1)"
    )
    # out < in with an even number of positions: WeightWatcher reports N < M
    assert (ww["c3"]["N"], ww["c3"]["M"]) == (12, 24)
    assert rows["c3.weight"]["mp_q"] == pytest.approx(0.5)
    # Conv1d: the largest min(out, in, k) singular values of the out matrices in x k
    w = conv_net().c4.weight.detach().double().numpy()
    sv = np.sort(np.linalg.svd(w, compute_uv=False).ravel())[-min(w.shape) :]
    assert ww["c4"]["layer_type"] == "conv1d" and ww["c4"]["num_evals"] == 9
    assert ww["c4"]["log_norm"] == pytest.approx(math.log10((sv**2).sum()), rel=1e-10)
    # infospec pools all 9 x 12 eigenvalues: the whole kernel's energy (WW keeps 9)
    assert rows["c4.weight"]["log_norm"] == pytest.approx(math.log10((w**2).sum()), rel=1e-12)
    assert ww["c4"]["log_norm"] < rows["c4.weight"]["log_norm"]


def test_live_weightwatcher_reproduces_the_stored_run(stored):
    pytest.importorskip("weightwatcher")
    live = weightwatcher_expected()
    if live["weightwatcher"] != stored["weightwatcher"]:
        pytest.skip(f"stored run is of WeightWatcher {stored['weightwatcher']}")
    for part in ("net", "conv1d_as_conv2d"):
        assert live[part].keys() == stored[part].keys()
        for layer, row in stored[part].items():
            for column, value in row.items():
                if isinstance(value, str):
                    assert live[part][layer][column] == value
                else:
                    assert live[part][layer][column] == pytest.approx(value, rel=1e-9), (
                        part,
                        layer,
                        column,
                    )


if __name__ == "__main__":
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(weightwatcher_expected(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {DATA}", file=sys.stderr)
