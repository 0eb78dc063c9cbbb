"""Report.summary: skipped tensors counted by reason class, and every timed stage named."""

from __future__ import annotations

import pytest

from infospec.analysis import Report
from infospec.analysis.html import render_html
from infospec.analysis.report import skip_reason_class, skipped_by_reason


def _skipped(name: str, reason: str, shape=(384,)) -> dict:
    return {"name": name, "shape": shape, "dtype": "float32", "kind": "other", "reason": reason}


@pytest.fixture
def skipped() -> list[dict]:
    """What a 6-layer BERT gives: 62 biases and norm scales, 2 narrow matrices, 1 index."""
    out = [
        _skipped(f"encoder.layer.{i // 10}.b{i % 10}.bias", "1-D tensor (bias or norm scale)")
        for i in range(62)
    ]
    out.insert(
        3,
        _skipped(
            "embeddings.token_type_embeddings.weight",
            "smaller side 2 < min_dim=10 (matrix 2 x 384)",
            (2, 384),
        ),
    )
    out.append(_skipped("head.weight", "smaller side 4 < min_dim=10 (matrix 4 x 384)", (4, 384)))
    out.append(
        _skipped(
            "embeddings.position_ids",
            "non-floating dtype int64 (an index, mask or quantized buffer, not a weight)",
            (1, 512),
        )
    )
    return out


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("1-D tensor (bias or norm scale)", "1-D tensor (bias or norm scale)"),
        ("0-D tensor (scalar)", "0-D tensor (scalar)"),
        ("smaller side 4 < min_dim=10 (matrix 4 x 64)", "smaller side < min_dim=10"),
        ("smaller side 1 < min_dim=3 (matrix 1 x 9)", "smaller side < min_dim=3"),
        (
            "same tensor as 'wte.weight' (tied weights)",
            "same tensor as another name (tied weights)",
        ),
        ("empty tensor (shape (0, 5))", "empty tensor"),
        (
            "non-floating dtype uint8 (an index, mask or quantized buffer, not a weight)",
            "non-floating dtype (an index, mask or quantized buffer)",
        ),
        ("dtype float4_e2m1 cannot be read as a torch tensor", "dtype that torch cannot read"),
        ("3-D tensor with no known matrix layout", "tensor with no known matrix layout"),
        # unknown reasons: details with digits and quoted names dropped, the rest kept
        ("parameter on the meta device (no data)", "parameter on the meta device (no data)"),
        ("file 'a.bin' refused (needs 3 globals)", "file '…' refused"),
    ],
)
def test_skip_reason_class(reason, cls):
    assert skip_reason_class(reason) == cls


def test_skipped_by_reason_counts_classes_largest_first(skipped):
    groups = skipped_by_reason(skipped)
    assert [(reason, len(recs)) for reason, recs in groups] == [
        ("1-D tensor (bias or norm scale)", 62),
        ("smaller side < min_dim=10", 2),
        ("non-floating dtype (an index, mask or quantized buffer)", 1),
    ]
    assert [r["name"] for r in groups[1][1]] == [
        "embeddings.token_type_embeddings.weight",
        "head.weight",
    ]


def test_summary_counts_skipped_by_reason_and_names_them_only_when_verbose(skipped):
    report = Report(skipped=skipped, meta={"source": "bert"})
    text = report.summary()
    assert (
        "[skipped] 65 tensors: 1-D tensor (bias or norm scale) x 62, "
        "smaller side < min_dim=10 x 2, "
        "non-floating dtype (an index, mask or quantized buffer) x 1"
    ) in text
    assert "bias" not in text.replace("(bias or norm scale)", "")
    assert len(text.splitlines()) == 4  # source, counts, blank, skipped

    verbose = report.summary(verbose=True)
    assert "  smaller side < min_dim=10 (2):" in verbose
    assert "    head.weight (4, 384): smaller side 4 < min_dim=10 (matrix 4 x 384)" in verbose
    assert sum("encoder.layer." in line for line in verbose.splitlines()) == 62


def test_summary_time_names_each_stage():
    meta = {"seconds": 290.4, "weight_seconds": 4.24, "spectrum_seconds": 6.5, "fit_seconds": 1.2}
    line = Report(meta=dict(meta)).summary().splitlines()[2]
    assert line == (
        "time: 290.40 s wall in analyze: weights 4.24 s "
        "(summed over tensors: spectra 6.50 s, fits 1.20 s)"
    )
    meta["workers"] = 4
    assert "(summed over tensors: spectra 6.50 s, fits 1.20 s, on 4 threads)" in (
        Report(meta=dict(meta)).summary()
    )
    meta |= {
        "activation_seconds": 285.9,
        "forward_seconds": 120.0,
        "accumulate_seconds": 160.5,
        "model_load_seconds": 3.1,
    }
    line = Report(meta=meta).summary().splitlines()[2]
    assert line.endswith(
        "; activations 285.90 s (forward passes 120.00 s, covariance updates 160.50 s)"
        "; before it, loading the model 3.10 s"
    )
    only = Report(meta={"seconds": 2.0, "activation_seconds": 1.5}).summary().splitlines()[2]
    assert only == "time: 2.00 s wall in analyze: activations 1.50 s"
    # the names analyze gives them
    meta = {
        "seconds": 9.0,
        "activation_seconds": 8.0,
        "activation_forward_seconds": 3.0,
        "activation_accumulate_seconds": 4.5,
    }
    line = Report(meta=meta).summary().splitlines()[2]
    assert line.endswith(
        "activations 8.00 s (forward passes 3.00 s, covariance updates 4.50 s, "
        "spectra, measures and set-up 0.50 s)"
    )


def test_html_counts_skipped_by_reason_class(skipped):
    page = render_html(Report(skipped=skipped))
    assert "<li>62 × 1-D tensor (bias or norm scale)</li>" in page
    assert "<li>2 × smaller side &lt; min_dim=10</li>" in page
    assert "head.weight" in page  # the names stay in the folded table below
