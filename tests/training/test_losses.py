"""Tests of infospec.training.losses against the measures and float64 NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from infospec._errors import InfospecError, InputError
from infospec.measures.flatness import log_spectrum_variance
from infospec.measures.information import coding_rate, rate_reduction
from infospec.spectra.conventions import as_matrices
from infospec.training import (
    CodingRateLoss,
    InfoSpecLoss,
    coding_rate_loss,
    info_spec_loss,
    rate_reduction_loss,
)

LOG_2PI_E = math.log(2 * math.pi * math.e)


def _unit_rows(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def _coding_rate_np(z: np.ndarray, eps: float) -> float:
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (n * eps**2) * z.T @ z)[1]


def _entropy_np(x: np.ndarray, ridge: float) -> float:
    x = x.reshape(-1, x.shape[-1])
    d = x.shape[1]
    cov = np.atleast_2d(np.cov(x, rowvar=False, ddof=1))
    return 0.5 * d * LOG_2PI_E + 0.5 * np.linalg.slogdet(cov + ridge * np.eye(d))[1]


def _log_var_np(w: np.ndarray) -> float:
    return float(np.var(np.log(np.linalg.svd(w, compute_uv=False))))


# --------------------------------------------------------------------------------------
# coding_rate_loss
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d", [(5, 12), (12, 5), (7, 7)])
@pytest.mark.parametrize("eps", [0.1, 0.5, 2.0])
def test_coding_rate_loss_is_minus_coding_rate(rng, n, d, eps):
    z = rng.standard_normal((n, d))
    got = coding_rate_loss(torch.from_numpy(z), eps=eps)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(float(got), -_coding_rate_np(_unit_rows(z), eps), rtol=1e-10)
    raw = coding_rate_loss(torch.from_numpy(z), eps=eps, normalize=False)
    np.testing.assert_allclose(float(raw), -float(coding_rate(z, eps=eps)), rtol=1e-12)
    np.testing.assert_allclose(float(raw), -_coding_rate_np(z, eps), rtol=1e-10)


@pytest.mark.parametrize("views_dim", [0, 1, 2, -3])
def test_coding_rate_loss_views_mean_equals_loop(rng, views_dim):
    zs = rng.standard_normal((3, 6, 10))  # (views, n, d)
    z = torch.from_numpy(np.moveaxis(zs, 0, views_dim))
    got = coding_rate_loss(z, eps=0.5, views_dim=views_dim)
    loop = np.mean([-_coding_rate_np(_unit_rows(v), 0.5) for v in zs])
    np.testing.assert_allclose(float(got), loop, rtol=1e-10)


def test_coding_rate_loss_scale_invariant_when_normalized(rng):
    z = torch.from_numpy(rng.standard_normal((8, 5)))
    scales = torch.from_numpy(rng.uniform(0.1, 10.0, (8, 1)))
    a = coding_rate_loss(z, eps=0.5)
    b = coding_rate_loss(z * scales, eps=0.5)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("n, d", [(4, 7), (7, 4)])
def test_coding_rate_loss_gradcheck(rng, normalize, n, d):
    z = torch.from_numpy(rng.standard_normal((n, d))).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: coding_rate_loss(t, eps=0.7, normalize=normalize), (z,)
    )


def test_coding_rate_loss_gradcheck_views(rng):
    z = torch.from_numpy(rng.standard_normal((2, 4, 5))).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: coding_rate_loss(t, eps=0.5, views_dim=0), (z,))


def _degenerate_batches() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 32, generator=g)
    return {
        "n<d": torch.randn(6, 64, generator=g),
        "repeated rows": base.repeat(8, 1),
        "zero rows": torch.cat([torch.randn(5, 16, generator=g), torch.zeros(3, 16)]),
        "all equal": torch.ones(10, 8),
        "rank one": torch.randn(12, 1, generator=g) @ torch.randn(1, 9, generator=g),
    }


@pytest.mark.parametrize("case", list(_degenerate_batches()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("normalize", [True, False])
def test_coding_rate_loss_finite_for_degenerate_low_precision(case, dtype, normalize):
    z = _degenerate_batches()[case].to(dtype).requires_grad_()
    loss = coding_rate_loss(z, eps=0.5, normalize=normalize)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    assert z.grad is not None and z.grad.dtype == dtype
    assert torch.isfinite(z.grad.float()).all()
    # Same value as float64 on the same (rounded) numbers.
    ref = coding_rate_loss(z.detach().double(), eps=0.5, normalize=normalize)
    np.testing.assert_allclose(float(loss.detach()), float(ref), rtol=1e-4, atol=1e-5)


def test_coding_rate_loss_zero_row_gets_zero_gradient():
    z = torch.cat([torch.eye(3), torch.zeros(1, 3)]).double().requires_grad_()
    coding_rate_loss(z, eps=0.5).backward()
    assert torch.all(z.grad[-1] == 0)


def test_coding_rate_loss_ignores_autocast(rng):
    z = torch.from_numpy(rng.standard_normal((32, 48))).float().requires_grad_()
    plain = coding_rate_loss(z, eps=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = coding_rate_loss(z, eps=0.5)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=1e-6, atol=1e-6)


def test_coding_rate_loss_keeps_float64_and_numpy():
    z = np.eye(3)[:2]
    assert coding_rate_loss(z, eps=1.0).dtype == torch.float64
    assert coding_rate_loss(torch.eye(3)[:2], eps=1.0).dtype == torch.float32


def test_coding_rate_module_matches_function(rng):
    z = torch.from_numpy(rng.standard_normal((2, 5, 6)))
    module = CodingRateLoss(eps=0.3, weight=0.25, views_dim=0)
    expected = 0.25 * coding_rate_loss(z, eps=0.3, views_dim=0)
    torch.testing.assert_close(module(z), expected)
    assert "weight=0.25" in repr(module)
    assert list(module.parameters()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": 0.0}, "'eps' parameter of coding_rate_loss must be a float > 0"),
        ({"eps": -1}, "Got -1 instead"),
        ({"views_dim": 3}, "'views_dim' parameter of coding_rate_loss must be an int"),
        ({"views_dim": True}, "'views_dim'"),
    ],
)
def test_coding_rate_loss_bad_options(kwargs, match):
    with pytest.raises(InputError, match=match):
        coding_rate_loss(torch.ones(2, 3, 4), **kwargs)


@pytest.mark.parametrize(
    "z, kwargs, match",
    [
        (torch.ones(3), {}, "exactly 2 dimensions"),
        (torch.ones(2, 3, 4), {}, "exactly 2 dimensions"),
        (torch.ones(3, 4), {"views_dim": 0}, "3 dimensions with views_dim"),
        (torch.ones(0, 4), {}, "at least one sample"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), {}, "must be finite; got 1 NaN"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), {}, "1 infinite"),
    ],
)
def test_coding_rate_loss_bad_input(z, kwargs, match):
    with pytest.raises(InputError, match=match):
        coding_rate_loss(z, **kwargs)


def test_coding_rate_module_bad_options():
    with pytest.raises(InputError, match="'weight' parameter of CodingRateLoss"):
        CodingRateLoss(weight=-1.0)
    with pytest.raises(InputError, match="'eps' parameter of CodingRateLoss"):
        CodingRateLoss(eps=0)


# --------------------------------------------------------------------------------------
# rate_reduction_loss
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_rate_reduction_loss_is_minus_rate_reduction(rng, normalize):
    z = rng.standard_normal((20, 6))
    labels = rng.integers(0, 3, 20)
    got = rate_reduction_loss(torch.from_numpy(z), labels, eps=0.5, normalize=normalize)
    zz = _unit_rows(z) if normalize else z
    np.testing.assert_allclose(float(got), -float(rate_reduction(zz, labels, eps=0.5)), rtol=1e-12)
    # Independent float64 reference.
    ref = _coding_rate_np(zz, 0.5) - sum(
        (labels == c).mean() * _coding_rate_np(zz[labels == c], 0.5) for c in np.unique(labels)
    )
    np.testing.assert_allclose(float(got), -ref, rtol=1e-10)


def test_rate_reduction_loss_single_class_is_zero(rng):
    z = torch.from_numpy(rng.standard_normal((9, 4)))
    assert abs(float(rate_reduction_loss(z, torch.zeros(9, dtype=torch.long)))) < 1e-12


def test_rate_reduction_loss_gradcheck(rng):
    z = torch.from_numpy(rng.standard_normal((8, 5))).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0])
    assert torch.autograd.gradcheck(lambda t: rate_reduction_loss(t, labels, eps=0.6), (z,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rate_reduction_loss_finite_for_degenerate_classes(dtype):
    # A class of one sample, a class of repeated rows, n < d overall.
    z = torch.cat([torch.randn(1, 40), torch.ones(3, 40), torch.randn(2, 40)]).to(dtype)
    z.requires_grad_()
    labels = torch.tensor([0, 1, 1, 1, 2, 2])
    loss = rate_reduction_loss(z, labels)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad.float()).all()


def test_rate_reduction_loss_bad_labels():
    with pytest.raises(InputError, match="one label per row of Z"):
        rate_reduction_loss(torch.ones(4, 3), torch.tensor([0, 1, 0]))
    with pytest.raises(InputError, match="must hold integers"):
        rate_reduction_loss(torch.ones(4, 3), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="'Z' argument of rate_reduction_loss must be finite"):
        rate_reduction_loss(torch.full((4, 3), float("nan")), torch.zeros(4, dtype=torch.long))


# --------------------------------------------------------------------------------------
# info_spec_loss (functional)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, d", [(50, 6), (5, 12), (2, 3)])
@pytest.mark.parametrize("ridge", [1e-4, 0.1])
def test_info_spec_entropy_term_matches_numpy(rng, n, d, ridge):
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, d)
    got = info_spec_loss([torch.from_numpy(x)], [], beta=1.0, gamma=0.0, ridge=ridge)
    np.testing.assert_allclose(float(got), _entropy_np(x, ridge), rtol=1e-10)


def test_info_spec_entropy_flattens_leading_axes(rng):
    x = rng.standard_normal((4, 5, 3))  # (batch, seq, d): 20 rows
    got = info_spec_loss([torch.from_numpy(x)], [], beta=1.0, gamma=0.0)
    np.testing.assert_allclose(float(got), _entropy_np(x, 1e-4), rtol=1e-10)


def test_info_spec_entropy_of_constant_rows_is_the_ridge():
    got = info_spec_loss(
        [torch.ones(7, 4, dtype=torch.float64)], [], beta=1.0, gamma=0.0, ridge=0.01
    )
    np.testing.assert_allclose(float(got), 2 * (LOG_2PI_E + math.log(0.01)), rtol=1e-12)


@pytest.mark.parametrize("shape", [(6, 9), (9, 6), (5, 5)])
def test_info_spec_weight_term_matches_numpy(rng, shape):
    w = rng.standard_normal(shape)
    got = info_spec_loss([], [torch.from_numpy(w)], beta=0.0, gamma=1.0)
    np.testing.assert_allclose(float(got), _log_var_np(w), rtol=1e-10)
    sv = torch.linalg.svdvals(torch.from_numpy(w))
    np.testing.assert_allclose(float(got), float(log_spectrum_variance(sv)), rtol=1e-12)


def test_info_spec_combination_and_sums_over_layers(rng):
    xs = [rng.standard_normal((30, 4)), rng.standard_normal((30, 7))]
    ws = [rng.standard_normal((4, 8)), rng.standard_normal((7, 4))]
    got = info_spec_loss(
        [torch.from_numpy(x) for x in xs], [torch.from_numpy(w) for w in ws], beta=0.3, gamma=2.0
    )
    ref = 0.3 * sum(_entropy_np(x, 1e-4) for x in xs) + 2.0 * sum(_log_var_np(w) for w in ws)
    np.testing.assert_allclose(float(got), ref, rtol=1e-10)


def test_info_spec_orthogonal_weight_has_zero_variance(rng):
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    got = info_spec_loss([], [torch.from_numpy(3.0 * q)], beta=0.0, gamma=1.0)
    assert abs(float(got)) < 1e-20


def test_info_spec_loss_gradcheck(rng):
    a = torch.from_numpy(rng.standard_normal((6, 4))).requires_grad_()
    b = torch.from_numpy(rng.standard_normal((3, 5))).requires_grad_()  # n < d
    w = torch.from_numpy(rng.standard_normal((4, 6))).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b, w: info_spec_loss([a, b], [w], beta=0.7, gamma=1.3, ridge=0.05), (a, b, w)
    )


def test_info_spec_loss_repeated_singular_values_have_finite_gradient():
    w = torch.eye(5, dtype=torch.float64).requires_grad_()  # all singular values equal
    loss = info_spec_loss([], [w], beta=0.0, gamma=1.0)
    loss.backward()
    assert torch.isfinite(w.grad).all() and torch.allclose(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_info_spec_loss_finite_for_degenerate_low_precision(dtype):
    acts = [v.to(dtype).requires_grad_() for v in _degenerate_batches().values()]
    w = torch.zeros(4, 6)
    w[0, 0] = 1.0  # rank one: zero singular values hit the amin floor
    w = w.to(dtype).requires_grad_()
    loss = info_spec_loss(acts, [w], beta=1.0, gamma=1.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for t in [*acts, w]:
        assert torch.isfinite(t.grad.float()).all()


def test_info_spec_loss_ignores_autocast(rng):
    a = torch.from_numpy(rng.standard_normal((64, 32))).float().requires_grad_()
    w = torch.from_numpy(rng.standard_normal((32, 16))).float().requires_grad_()
    plain = info_spec_loss([a], [w], beta=1.0, gamma=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = info_spec_loss([a], [w], beta=1.0, gamma=1.0)
    torch.testing.assert_close(auto, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([], []), {"beta": 1.0, "gamma": 0.0}, "'activations' argument of info_spec_loss must"),
        (([], []), {"beta": 0.0, "gamma": 1.0}, "'weights' argument of info_spec_loss must"),
        (([torch.ones(1, 3)], []), {"beta": 1.0, "gamma": 0.0}, "at least 2 rows"),
        (([torch.ones(4)], []), {"beta": 1.0, "gamma": 0.0}, "'activations\\[0\\]' argument"),
        (([], [torch.ones(2, 2, 2)]), {"beta": 0.0, "gamma": 1.0}, "'weights\\[0\\]'.*2 dim"),
        (
            ([torch.tensor([[0.0, 1.0], [float("nan"), 0.0]])], []),
            {"beta": 1.0, "gamma": 0.0},
            "'activations\\[0\\]' argument of info_spec_loss must be finite",
        ),
        (
            ([], [torch.full((2, 2), float("inf"))]),
            {"beta": 0.0, "gamma": 1.0},
            "'weights\\[0\\]' argument of info_spec_loss must be finite",
        ),
        (([], []), {"beta": -1.0, "gamma": 0.0}, "'beta' parameter of info_spec_loss"),
        (([], []), {"beta": 0.0, "gamma": 0.0, "ridge": 0.0}, "'ridge' parameter"),
        (("nope", []), {"beta": 1.0, "gamma": 0.0}, "sequence of torch tensors"),
        (([torch.ones(3, 3, dtype=torch.long)], []), {"beta": 1.0, "gamma": 0.0}, "floating"),
    ],
)
def test_info_spec_loss_errors(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        info_spec_loss(*args, **kwargs)


# --------------------------------------------------------------------------------------
# InfoSpecLoss (hooks)
# --------------------------------------------------------------------------------------


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )


def test_info_spec_module_equals_functional():
    net = _mlp()
    x = torch.randn(32, 8)
    with InfoSpecLoss(net, beta=0.1, gamma=0.5, activation_layers=["1", r"^4$"]) as penalty:
        assert penalty.activation_names == ["1", "4"]
        assert penalty.weight_names == ["0.weight", "2.weight", "4.weight"]
        h1 = net[1](net[0](x))
        out = net(x)
        got = penalty()
        ref = info_spec_loss(
            [h1, out], [net[0].weight, net[2].weight, net[4].weight], beta=0.1, gamma=0.5
        )
    torch.testing.assert_close(got, ref)


def test_info_spec_module_gradients_reach_the_model():
    net = _mlp()
    penalty = InfoSpecLoss(net, beta=1e-2, gamma=1e-1)
    assert penalty.activation_names == ["0", "2", "4"]  # default: weight-owning modules
    net(torch.randn(16, 8))
    penalty().backward()
    for p in net.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert list(penalty.parameters()) == []
    assert penalty.state_dict() == {}
    penalty.remove()


def test_info_spec_module_hooks_removed():
    net = _mlp()
    penalty = InfoSpecLoss(net, beta=1.0, gamma=0.0)
    assert any(m._forward_hooks for m in net.modules())
    penalty.remove()
    assert not any(m._forward_hooks for m in net.modules())
    with pytest.raises(InfospecError, match="removed"):
        penalty()
    penalty.remove()  # twice is fine
    with InfoSpecLoss(net, beta=1.0, gamma=0.0):
        pass
    assert not any(m._forward_hooks for m in net.modules())


def test_info_spec_module_gamma_only_registers_no_hook():
    net = _mlp()
    penalty = InfoSpecLoss(net, beta=0.0, gamma=1.0)
    assert not any(m._forward_hooks for m in net.modules())
    ref = info_spec_loss([], [net[0].weight, net[2].weight, net[4].weight], beta=0, gamma=1)
    torch.testing.assert_close(penalty(), ref)  # no forward pass needed


def test_info_spec_module_conv_uses_channels_and_flattened_kernels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 4, 2))
    x = torch.randn(2, 3, 8, 8)
    with InfoSpecLoss(net, beta=1.0, gamma=1.0, activation_layers="^0$") as penalty:
        out0 = net[0](x)
        net(x)
        got = penalty()
    rows = out0.movedim(1, -1).reshape(-1, 5)
    mats = [as_matrices("conv2d", m.weight)[0][1] for m in (net[0], net[2])]
    assert mats[0].shape == (5, 27)
    torch.testing.assert_close(got, info_spec_loss([rows], mats, beta=1.0, gamma=1.0))


def test_info_spec_module_transformer_default_selection():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    with InfoSpecLoss(model, beta=1e-3, gamma=1e-3) as penalty:
        assert "layers.0.self_attn.in_proj_weight" in penalty.weight_names
        model(torch.randn(2, 5, 16))
        loss = penalty()  # out_proj (never called as a module) is skipped, not an error
    assert torch.isfinite(loss)
    labels = [label for label, _ in penalty.weight_matrices()]
    assert "layers.0.self_attn.in_proj_weight[q]" in labels


def test_info_spec_module_explicit_uncalled_module_is_an_error():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    with InfoSpecLoss(model, beta=1.0, gamma=0.0, activation_layers="out_proj") as penalty:
        model(torch.randn(2, 5, 16))
        with pytest.raises(InfospecError, match="no output of the chosen modules"):
            penalty()


def test_info_spec_module_before_forward_and_nan_output():
    net = _mlp()
    with InfoSpecLoss(net, beta=1.0, gamma=0.0, activation_layers="^0$") as penalty:
        with pytest.raises(InfospecError, match="call the model on a batch first"):
            penalty()
        net(torch.full((4, 8), float("nan")))
        with pytest.raises(InputError, match=r"module '0' holds .* NaN"):
            penalty()
        penalty.clear()
        with pytest.raises(InfospecError, match="call the model on a batch first"):
            penalty()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation_layers": "lyaer"}, "matches none of the 5 module names"),
        ({"weight_layers": "0.wieght"}, "close matches: '0.weight'"),
        ({"weight_layers": ["2.weight", "nope"]}, "'nope'"),
        ({"activation_layers": "("}, "not a valid regular expression"),
        ({"activation_layers": 3}, "must be a regular expression"),
        ({"activation_layers": []}, "at least one pattern; got an empty sequence"),
        ({"beta": -1.0}, "'beta' parameter of InfoSpecLoss"),
        ({"ridge": 0}, "'ridge' parameter of InfoSpecLoss"),
    ],
)
def test_info_spec_module_bad_selection(kwargs, match):
    options = {"beta": 1.0, "gamma": 1.0, **kwargs}
    with pytest.raises(InputError, match=match):
        InfoSpecLoss(_mlp(), **options)


def test_info_spec_module_close_matches_for_modules():
    model = nn.Sequential()
    model.add_module("encoder", nn.Linear(3, 3))
    model.add_module("decoder", nn.Linear(3, 3))
    with pytest.raises(InputError, match="close matches: 'encoder'"):
        InfoSpecLoss(model, beta=1.0, gamma=0.0, activation_layers="^encodr$")


def test_info_spec_module_without_weights():
    with pytest.raises(InputError, match="has no weight matrix"):
        InfoSpecLoss(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)), beta=0.0, gamma=1.0)
    with pytest.raises(InputError, match="'model' argument of InfoSpecLoss"):
        InfoSpecLoss("model", beta=1.0, gamma=1.0)


# --------------------------------------------------------------------------------------
# tiny training runs
# --------------------------------------------------------------------------------------


def test_coding_rate_loss_training_expands_features():
    torch.manual_seed(0)
    # Inputs on a 2-D subspace of R^16: the encoder's features start nearly collapsed.
    x = torch.randn(64, 2) @ torch.randn(2, 16)
    encoder = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
    loss_fn = CodingRateLoss(eps=0.5)
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-2)

    def rate() -> float:
        with torch.no_grad():
            return float(coding_rate(nn.functional.normalize(encoder(x), dim=-1), eps=0.5))

    before = rate()
    for _ in range(60):
        opt.zero_grad()
        loss_fn(encoder(x)).backward()
        opt.step()
    after = rate()
    assert after > before + 1.0, (before, after)


def test_info_spec_loss_training_lowers_entropy_and_log_variance():
    torch.manual_seed(0)
    net = _mlp()
    x = torch.randn(64, 8)
    penalty = InfoSpecLoss(net, beta=1.0, gamma=1.0, activation_layers="^2$")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net(x)
    start = float(penalty().detach())
    for _ in range(40):
        opt.zero_grad()
        net(x)
        penalty().backward()
        opt.step()
    net(x)
    end = float(penalty().detach())
    penalty.remove()
    assert end < start - 1.0, (start, end)
