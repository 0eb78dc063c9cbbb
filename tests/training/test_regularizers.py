"""Tests of infospec.training.regularizers.SpectralRegularizer against NumPy SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infospec._errors import InputError
from infospec.training import SpectralRegularizer
from infospec.training.regularizers import WARMUP_ITERATIONS, _spectral_penalty


def _sigma_max(w: torch.Tensor) -> float:
    return float(np.linalg.svd(w.detach().double().numpy(), compute_uv=False)[0])


def _buffers(reg: SpectralRegularizer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in reg.state_dict().items()}


def test_value_of_known_matrices():
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.1])))
        net[1].weight.copy_(0.5 * torch.eye(3, 4))
    for k, expected in [(1, 4.0 + 0.25), (2, 64.0 + 0.5625), (3, 676.0 + 0.765625)]:
        reg = SpectralRegularizer(net, k=k)
        np.testing.assert_allclose(float(reg().detach()), expected, rtol=1e-5)
    assert reg.matrix_names == ["0.weight", "1.weight"]


def test_power_iteration_converges_to_numpy_sigma_max(rng):
    lin = nn.Linear(30, 20).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(rng.standard_normal((20, 30))))
    reg = SpectralRegularizer(lin)
    for _ in range(300):
        reg()
    est = reg.sigmas()["weight"]
    np.testing.assert_allclose(est, _sigma_max(lin.weight), rtol=1e-8)
    # The penalty uses the converged estimate.
    np.testing.assert_allclose(float(reg().detach()), (est**2 - 1) ** 2, rtol=1e-10)


def test_estimate_improves_with_steps(rng):
    lin = nn.Linear(40, 40, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(rng.standard_normal((40, 40))))
    true = _sigma_max(lin.weight)
    reg = SpectralRegularizer(lin)
    errors = []
    for _ in range(4):
        errors.append(abs(reg.sigmas()["weight"] - true))
        for _ in range(50):
            reg()
    assert errors[-1] <= errors[0]
    assert errors[-1] / true < 1e-3
    # Estimates from power iteration never exceed the true value.
    assert reg.sigmas()["weight"] <= true * (1 + 1e-12)


def test_buffers_frozen_in_eval_mode(rng):
    net = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 5))
    reg = SpectralRegularizer(net)
    before = _buffers(reg)
    net.eval()
    for _ in range(5):
        reg()
    after = _buffers(reg)
    assert before.keys() == after.keys() == {"u_0", "v_0", "u_1", "v_1"}
    for key in before:
        assert torch.equal(before[key], after[key])
    net.train()
    reg.eval()  # the regulariser's own mode freezes them too
    reg()
    assert all(torch.equal(before[k], v) for k, v in _buffers(reg).items())
    reg.train()
    reg()
    assert any(not torch.equal(before[k], v) for k, v in _buffers(reg).items())


def test_penalty_in_eval_mode_equals_functional_with_buffers():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4).double()
    reg = SpectralRegularizer(lin, k=3).eval()
    expected = _spectral_penalty([lin.weight], [reg.u_0], [reg.v_0], 3)
    torch.testing.assert_close(reg(), expected)


@pytest.mark.parametrize("k", [1, 2, 2.5])
def test_penalty_gradcheck_with_fixed_vectors(rng, k):
    w = torch.from_numpy(rng.standard_normal((5, 7))).requires_grad_()
    u = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal(5)), dim=0)
    v = torch.nn.functional.normalize(w.detach().T @ u, dim=0)
    w2 = torch.from_numpy(rng.standard_normal((3, 3))).requires_grad_()
    u2 = torch.nn.functional.normalize(w2.detach() @ torch.ones(3, dtype=torch.float64), dim=0)
    v2 = torch.nn.functional.normalize(w2.detach().T @ u2, dim=0)
    assert torch.autograd.gradcheck(
        lambda a, b: _spectral_penalty([a, b], [u, u2], [v, v2], k), (w, w2)
    )


def test_gradient_is_the_closed_form(rng):
    lin = nn.Linear(8, 6, bias=False).double()
    reg = SpectralRegularizer(lin, k=2).eval()
    reg().backward()
    u, v = reg.u_0, reg.v_0
    s = float(u @ lin.weight.detach() @ v)
    expected = 2 * (s**2 - 1) * 2 * s * torch.outer(u, v)
    torch.testing.assert_close(lin.weight.grad, expected)


def test_conv_kernel_is_flattened_and_in_proj_split():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 8, kernel_size=3))
    model.add_module("attn", nn.MultiheadAttention(8, 2))
    reg = SpectralRegularizer(model)
    assert reg.matrix_names == [
        "conv.weight",
        "attn.in_proj_weight[q]",
        "attn.in_proj_weight[k]",
        "attn.in_proj_weight[v]",
        "attn.out_proj.weight",
    ]
    for _ in range(300):
        reg()
    sig = reg.sigmas()
    np.testing.assert_allclose(
        sig["conv.weight"], _sigma_max(model.conv.weight.reshape(8, 27)), rtol=1e-4
    )
    q = model.attn.in_proj_weight[:8]
    np.testing.assert_allclose(sig["attn.in_proj_weight[q]"], _sigma_max(q), rtol=1e-4)
    assert reg.u_0.shape == (8,) and reg.v_0.shape == (27,)


def test_layers_selection_and_errors():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert SpectralRegularizer(net, layers=r"^2\.").matrix_names == ["2.weight"]
    assert SpectralRegularizer(net, layers=["0.weight"]).matrix_names == ["0.weight"]
    with pytest.raises(InputError, match=r"close matches: '0\.weight'"):
        SpectralRegularizer(net, layers="0.wieght")
    with pytest.raises(InputError, match="not a valid regular expression"):
        SpectralRegularizer(net, layers="[")


def test_embedding_only_when_named():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))
    assert SpectralRegularizer(model).matrix_names == ["1.weight"]
    assert SpectralRegularizer(model, layers="^0").matrix_names == ["0.weight"]


@pytest.mark.parametrize(
    "model", [nn.ReLU(), nn.Sequential(nn.LayerNorm(4), nn.Tanh()), nn.Embedding(5, 3)]
)
def test_module_without_weight_matrix(model):
    with pytest.raises(InputError, match="has no weight matrix"):
        SpectralRegularizer(model)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "'k' parameter of SpectralRegularizer must be a float > 0"),
        ({"n_power_iterations": 0}, "'n_power_iterations' parameter .* an int > 0"),
        ({"n_power_iterations": 1.5}, "'n_power_iterations'"),
        ({"eps": -1.0}, "'eps' parameter"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        SpectralRegularizer(nn.Linear(3, 3), **kwargs)
    with pytest.raises(InputError, match="'model' argument of SpectralRegularizer"):
        SpectralRegularizer(torch.ones(3, 3))


def test_state_dict_holds_only_buffers_and_survives_dtype_change():
    net = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 2))
    reg = SpectralRegularizer(net)
    assert list(reg.parameters()) == []
    assert set(reg.state_dict()) == {"u_0", "v_0", "u_1", "v_1"}
    net.double()
    out = reg()
    assert out.dtype == torch.float64 and reg.u_0.dtype == torch.float64
    reg2 = SpectralRegularizer(net)
    reg2.load_state_dict(reg.state_dict())
    torch.testing.assert_close(reg2.eval()(), reg.eval()())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).to(dtype)
    reg = SpectralRegularizer(net)
    assert reg.u_0.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty = reg()
    assert penalty.dtype == torch.float32 and torch.isfinite(penalty)
    penalty.backward()
    for m in (net[0], net[2]):
        assert m.weight.grad.dtype == dtype and torch.isfinite(m.weight.grad.float()).all()


def test_two_calls_before_backward():
    # Gradient accumulation: the in-place buffer update must not break the first graph.
    net = nn.Linear(6, 6)
    reg = SpectralRegularizer(net)
    a = reg()
    b = reg()
    (a + b).backward()
    assert torch.isfinite(net.weight.grad).all()


def test_zero_weight_gives_penalty_one():
    lin = nn.Linear(3, 3, bias=False)
    nn.init.zeros_(lin.weight)
    reg = SpectralRegularizer(lin)
    out = reg()
    assert float(out.detach()) == 1.0
    out.backward()
    assert torch.isfinite(lin.weight.grad).all()


def test_warmup_gives_a_close_first_estimate(rng):
    lin = nn.Linear(50, 50, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(rng.standard_normal((50, 50))))
    reg = SpectralRegularizer(lin)
    assert WARMUP_ITERATIONS >= 10
    assert abs(reg.sigmas()["weight"] / _sigma_max(lin.weight) - 1) < 0.1


def test_training_pulls_sigma_max_toward_one():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    with torch.no_grad():
        net[0].weight.mul_(3.0)  # sigma_max well above 1
        net[2].weight.mul_(0.1)  # and well below
    start = [_sigma_max(net[0].weight), _sigma_max(net[2].weight)]
    assert start[0] > 3 and start[1] < 0.1
    reg = SpectralRegularizer(net)
    opt = torch.optim.SGD(net.parameters(), lr=5e-3)
    for _ in range(600):
        opt.zero_grad()
        reg().backward()
        opt.step()
    end = [_sigma_max(net[0].weight), _sigma_max(net[2].weight)]
    # Several singular values of the first layer exceed 1 and crowd together as they are
    # pushed down, so one power step per training step lags: the approach is gradual.
    for s0, s1 in zip(start, end, strict=True):
        assert abs(s1 - 1) < 0.2 and abs(s1 - 1) < 0.1 * abs(s0 - 1), (start, end)


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [
        (1e-20, torch.float32),
        (1e-30, torch.float32),
        (1e30, torch.float32),
        (1e-300, torch.float64),
        (1e150, torch.float64),
    ],
)
def test_sigma_is_estimated_at_any_weight_scale(scale, dtype):
    """The power iteration normalised with a 1e-12 floor: weights of 1e-20 gave sigma 0.

    Where sigma^2 overflows the dtype (1e30 in float32, 1e150 in float64) the penalty is
    refused by name, after the vectors were updated."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6)).to(dtype)
    with torch.no_grad():
        net[0].weight.mul_(scale)
    reg = SpectralRegularizer(net)
    if scale > 1:
        with pytest.raises(InputError, match="penalty overflows"):
            reg()
    else:
        reg()
    want = float(torch.linalg.matrix_norm(net[0].weight.double(), ord=2))
    assert reg.sigmas()["0.weight"] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("k", [0.5, 1.0, 2.0])
def test_a_zero_initialised_layer_gets_a_finite_gradient(k):
    """For k < 1 the slope k sigma^(k-1) is infinite at sigma = 0: it was -inf times a zero
    vector, NaN in the weight's gradient."""
    net = nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 4))
    nn.init.zeros_(net[0].weight)
    reg = SpectralRegularizer(net, k=k)
    loss = reg()
    loss.backward()
    assert bool(torch.isfinite(net[0].weight.grad).all())
    assert bool(torch.isfinite(net[1].weight.grad).all())
    assert float(net[1].weight.grad.abs().max()) > 0  # the live layer is still regularised
    assert float(loss) >= 1.0  # the zero layer's term is (0 - 1)^2 = 1
