"""Faults in training (issues 9, 15): NaN weights, replaced layers, overflowing activations."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from infospec import InfospecWarning, InputError, StreamingCovariance
from infospec.training.monitor import Monitor
from infospec.training.regularizers import SpectralRegularizer


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 6))


# -- SpectralRegularizer --------------------------------------------------------------------
def test_a_nan_weight_is_left_out_once_warned_and_the_vectors_recover():
    net = _net()
    reg = SpectralRegularizer(net)
    clean = reg().detach()
    good = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.warns(InfospecWarning, match=r"'0\.weight' holds NaN or Inf; its term is left out"):
        penalty = reg()
    assert torch.isfinite(penalty)
    penalty.backward()
    assert torch.isfinite(net[2].weight.grad).all()  # training is not poisoned
    assert torch.isfinite(reg.u_0).all() and torch.isfinite(reg.v_0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per matrix
        reg()
    with torch.no_grad():
        net[0].weight.copy_(good)  # repaired
    repaired = reg().detach()
    assert torch.isfinite(repaired)
    assert repaired == pytest.approx(float(clean), rel=1e-3)


def test_every_matrix_nan_gives_a_zero_penalty():
    net = _net()
    reg = SpectralRegularizer(net)
    with torch.no_grad():
        for m in (net[0], net[2]):
            m.weight.fill_(float("nan"))
    with pytest.warns(InfospecWarning):
        assert float(reg()) == 0.0


def test_a_replaced_layer_is_followed_by_name():
    net = _net()
    reg = SpectralRegularizer(net)
    old = net[2]
    net[2] = nn.Linear(12, 6)
    with pytest.warns(InfospecWarning, match=r"module of '2\.weight' was replaced"):
        reg().backward()
    assert net[2].weight.grad is not None and old.weight.grad is None
    with torch.no_grad():
        net[2].weight.copy_(torch.eye(6, 12) * 3.0)
    reg()  # one power-iteration step on the new module's weight
    assert reg.sigmas()["2.weight"] == pytest.approx(3.0, rel=1e-4)


def test_a_replaced_layer_of_another_shape_gets_new_vectors():
    net = _net()
    reg = SpectralRegularizer(net)
    net[2] = nn.Linear(12, 20)
    net.append(nn.Linear(20, 6))
    with pytest.warns(InfospecWarning, match=r"weight \(20, 12\)"):
        penalty = reg()
    assert reg.u_1.shape == (20,) and torch.isfinite(penalty)


def test_a_removed_layer_is_a_clear_error():
    net = _net()
    reg = SpectralRegularizer(net)
    net[2] = nn.Identity()
    with pytest.raises(InputError, match=r"the weight '2\.weight' is no longer in the model"):
        reg()


# -- Monitor --------------------------------------------------------------------------------
def test_monitor_records_an_overflowing_layer_instead_of_raising():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16).double())
    with torch.no_grad():
        model[0].weight.mul_(1e160)  # finite outputs ~1e160, whose squares overflow
    monitor = Monitor(model, every=1, window=1, alerts=None, weights=False)
    with pytest.warns(InfospecWarning, match="overflowed float64"):
        model(torch.randn(64, 16, dtype=torch.float64))
        monitor.step()
    row = monitor.history().iloc[0]
    assert row["status"] == "error" and "overflowed float64" in row["warning"]
    monitor.remove()


def test_monitor_rehooks_a_replaced_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 16))
    monitor = Monitor(model, every=2, window=1, alerts=None, weights=False)
    model(torch.randn(64, 16))
    monitor.step()  # step 1: the window of step 2 starts, hooks on the old modules
    model(torch.randn(64, 16))
    monitor.step()  # step 2 measured
    model[2] = nn.Linear(32, 16)
    model(torch.randn(64, 16))
    with pytest.warns(InfospecWarning, match="layer '2' was replaced by a new Linear"):
        monitor.step()  # step 3: the next window starts on the live modules
    model(torch.randn(64, 16))
    monitor.step()  # step 4 measured
    table = monitor.history()
    assert set(table[table["step"] == 4]["layer"]) == {"0", "2"}
    assert model[2]._forward_hooks == {} and not any(m._forward_hooks for m in model.modules())
    monitor.remove()


def test_streaming_covariance_scales_before_eigvalsh():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    ref = StreamingCovariance(5)
    ref.update(x)
    big = StreamingCovariance(5)
    big.update(x * 1e140)
    assert torch.allclose(big.eigenvalues() / 1e280, ref.eigenvalues(), rtol=1e-12)
    huge = StreamingCovariance(5)
    with pytest.raises(InputError, match="whose squares overflow beyond about 1e154"):
        huge.update(x * 1e160)  # refused at once: nothing is added
    assert huge.count == 0
    huge.update(x)
    assert torch.allclose(huge.eigenvalues(), ref.eigenvalues(), rtol=1e-12)
