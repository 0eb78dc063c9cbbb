"""svd_smooth, svd_sharpen, rmt_project on planted spike + noise matrices and activations."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import infospec
from infospec import InputError
from infospec.transforms import rmt_project, svd_sharpen, svd_smooth

SPIKES = (40.0, 30.0, 20.0)


def _spiked_linear(n_out=120, n_in=80, seed=0):
    """W = sum_i s_i u_i v_i^T + G with G iid N(0, 1): 3 spikes far above the bulk edge."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n_out, 3, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n_in, 3, generator=g, dtype=torch.float64))
    w = (u * torch.tensor(SPIKES, dtype=torch.float64)) @ v.T
    w = w + torch.randn(n_out, n_in, generator=g, dtype=torch.float64)
    lin = nn.Linear(n_in, n_out).double()
    with torch.no_grad():
        lin.weight.copy_(w)
    return nn.Sequential(lin)


def _same_state(a, b):
    return all(torch.equal(v, b[k]) for k, v in a.items()) and a.keys() == b.keys()


def test_svd_smooth_keeps_the_spikes_and_leaves_the_input():
    model = _spiked_linear()
    before = copy.deepcopy(model.state_dict())
    s = torch.linalg.svdvals(model[0].weight.detach())
    out = svd_smooth(model, keep="mp_edge")
    assert _same_state(model.state_dict(), before)
    s_new = torch.linalg.svdvals(out[0].weight.detach())
    assert out.spectral_changes[0]["kept"] == 3
    torch.testing.assert_close(s_new[:3], s[:3], rtol=1e-10, atol=1e-10)
    assert float(s_new[3:].abs().max()) < 1e-9
    assert svd_smooth(model, keep=5).spectral_changes[0]["kept"] == 5
    assert svd_smooth(model, keep=0.1).spectral_changes[0]["kept"] == 8  # ceil(0.1 * 80)
    torch.testing.assert_close(out[0].bias, model[0].bias, rtol=0, atol=0)


def test_svd_sharpen_clips_or_removes_the_spikes():
    model = _spiked_linear()
    before = copy.deepcopy(model.state_dict())
    s = torch.linalg.svdvals(model[0].weight.detach())
    clipped = svd_sharpen(model)
    change = clipped.spectral_changes[0]
    # bulk edge of iid N(0,1) 120 x 80: sqrt(N) (1 + sqrt(q)) = sqrt(120) + sqrt(80) ~ 19.9
    assert change["spikes"] == 3
    assert change["edge"] == pytest.approx(120**0.5 + 80**0.5, rel=0.1)
    s_clip = torch.linalg.svdvals(clipped[0].weight.detach())
    torch.testing.assert_close(s_clip[:3], torch.full((3,), change["edge"], dtype=s.dtype))
    torch.testing.assert_close(s_clip[3:], s[3:], rtol=1e-9, atol=1e-9)
    removed = svd_sharpen(model, mode="remove")
    s_rem = torch.linalg.svdvals(removed[0].weight.detach())
    torch.testing.assert_close(s_rem[:-3], s[3:], rtol=1e-9, atol=1e-9)  # WeightWatcher's
    assert _same_state(model.state_dict(), before)


def test_half_precision_weights_are_upcast_and_cast_back():
    model = _spiked_linear().to(torch.bfloat16)
    out = svd_smooth(model, keep=3)
    assert out[0].weight.dtype == torch.bfloat16
    s = torch.linalg.svdvals(out[0].weight.detach().double())
    assert float(s[3] / s[0]) < 0.02  # rank 3 up to bf16 rounding


def test_rmt_project_keeps_the_planted_directions():
    torch.manual_seed(0)
    d, n = 40, 4000
    g = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x = x + (torch.randn(n, 2, generator=g, dtype=torch.float64) * 8) @ basis.T + 2.0
    model = nn.Sequential(nn.Linear(d, d)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(d, dtype=torch.float64))
        model[0].bias.zero_()
    before = copy.deepcopy(model.state_dict())
    out = rmt_project(model, [x[:2000], x[2000:]])
    assert _same_state(model.state_dict(), before)
    rec = out.spectral_changes[0]
    assert rec["kept"] == 2 and rec["q"] == pytest.approx(d / n)
    # the projection is onto the top-2 eigenvectors of the output covariance
    cov = torch.cov(x.T)
    evecs = torch.linalg.eigh(cov).eigenvectors[:, -2:]
    mu = x.mean(0)
    y = torch.randn(7, d, dtype=torch.float64)
    want = mu + (y - mu) @ evecs @ evecs.T
    torch.testing.assert_close(out(y), want, rtol=1e-8, atol=1e-8)
    assert isinstance(out[0], nn.Sequential) and out[0][0].out_features == 2


def test_rmt_project_wraps_other_modules():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), nn.Tanh()).double()
    x = [torch.randn(300, 10, dtype=torch.float64)]
    out = rmt_project(model, x, layers=r"^1$")
    assert isinstance(out[1], infospec.transforms.ProjectedOutput)
    y = out(x[0])
    v = out[1].basis
    assert v.shape[1] == out.spectral_changes[0]["kept"]
    torch.testing.assert_close((y - out[1].mean) @ v @ v.T, y - out[1].mean)


def test_bad_input():
    model = _spiked_linear()
    with pytest.raises(InputError, match="keep"):
        svd_smooth(model, keep=0)
    with pytest.raises(InputError, match="fractional keep"):
        svd_smooth(model, keep=1.5)
    with pytest.raises(InputError, match="mode"):
        svd_sharpen(model, mode="soft")
    with pytest.raises(InputError, match="nothing"):
        svd_smooth(model, layers="nothing")
    with pytest.raises(InputError, match="forward"):
        rmt_project(model, [torch.randn(3, 7, dtype=torch.float64)])


@pytest.mark.parametrize("func", [svd_smooth, svd_sharpen])
def test_a_non_finite_weight_is_named_and_a_zero_weight_left_alone(func):
    """A NaN weight raised torch's LinAlgError from inside the SVD; an all-zero weight
    raised fit_marchenko_pastur's error about 'eigvals' (an argument the caller never
    passed)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 20))
    with torch.no_grad():
        net[0].weight[1, 2] = float("nan")
    with pytest.raises(InputError, match=r"weight of layer '0' holds NaN or Inf"):
        func(net)
    with torch.no_grad():
        net[0].weight.zero_()
    out = func(net)
    assert torch.equal(out[0].weight, torch.zeros(30, 40))
    assert out.spectral_changes[0] == {"name": "0", "shape": [30, 40], "skipped": "all-zero weight"}
    assert "skipped" not in out.spectral_changes[1]


@pytest.mark.parametrize("scale", [0.0, 1e-30])
def test_rmt_project_names_a_layer_with_a_constant_output(scale):
    """float32 outputs 1e-30 W x + b round to b: the error named fit_marchenko_pastur's
    'eigvals', an argument the caller never passed."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 20))
    with torch.no_grad():
        net[0].weight.mul_(scale)
    data = [torch.randn(64, 40) for _ in range(3)]
    with pytest.raises(InputError, match=r"layer '0' gives the same output for every row"):
        rmt_project(net, data, layers="^0$")


def test_rmt_project_is_scale_free_in_the_kept_directions():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 30, dtype=torch.float64))
    data = [torch.randn(64, 40, dtype=torch.float64) for _ in range(3)]
    ref = rmt_project(net, data).spectral_changes[0]
    with torch.no_grad():
        net[0].weight.mul_(1e-120)
        net[0].bias.mul_(1e-120)
    got = rmt_project(net, data).spectral_changes[0]
    assert got["kept"] == ref["kept"]
    assert got["edge"] == pytest.approx(ref["edge"] * 1e-240, rel=1e-9)
