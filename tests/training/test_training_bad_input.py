"""Bad input to the training losses, regulariser and monitor is named (InputError).

Each case raised a raw TypeError/ValueError/OverflowError/RuntimeError/IndexError or
AttributeError from Python or torch, tried to allocate gigabytes, or returned a silent
NaN/Inf.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from infospec import InputError
from infospec.training import MatryoshkaLoss, SpectralRegularizer, info_spec_loss
from infospec.training.monitor import Monitor
from infospec.training.sigreg import MAX_N_POINTS, epps_pulley, sigreg_loss

BAD_SEEDS = [None, "abc", math.nan, math.inf, [1], 1e300, 10**30, True, -(2**63) - 1]


# -- SIGReg ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n_points", [10**7, 10**30, MAX_N_POINTS + 1, 2])
def test_epps_pulley_bounds_n_points(n_points):
    """10**7 nodes asked for 20 GB; 10**30 raised ValueError from linspace."""
    with pytest.raises(
        InputError, match=r"'n_points' argument of epps_pulley must be an integer in \[3, 10000\]"
    ):
        epps_pulley(torch.randn(32, 8), n_points=n_points)


def test_epps_pulley_takes_the_largest_n_points():
    x = torch.randn(50, 2, dtype=torch.float64)
    fine = epps_pulley(x, n_points=MAX_N_POINTS)
    assert fine.shape == (2,)
    assert torch.allclose(fine, epps_pulley(x, n_points=2001), rtol=1e-6)


@pytest.mark.parametrize("num_slices", [10**30, 10**6, 0])
def test_sigreg_bounds_num_slices(num_slices):
    with pytest.raises(
        InputError, match=r"'num_slices' argument of sigreg_loss must be an integer in \[1, 65536\]"
    ):
        sigreg_loss(torch.randn(32, 8), num_slices=num_slices)


@pytest.mark.parametrize("generator", [0, "abc", torch.randn(2)])
def test_sigreg_names_a_generator_that_is_not_one(generator):
    with pytest.raises(
        InputError, match=r"'generator' argument of sigreg_loss must be a torch.Generator"
    ):
        sigreg_loss(torch.randn(32, 8), generator=generator)


# -- info_spec_loss -------------------------------------------------------------------------
def test_info_spec_loss_names_meta_tensors():
    meta = torch.empty(8, 4, device="meta")
    with pytest.raises(
        InputError, match=r"'activations\[0\]' argument of info_spec_loss is a meta tensor"
    ):
        info_spec_loss([meta], [], beta=1.0, gamma=0.0)
    with pytest.raises(
        InputError, match=r"'weights\[0\]' argument of info_spec_loss is a meta tensor"
    ):
        info_spec_loss([], [meta], beta=0.0, gamma=1.0)


@pytest.mark.parametrize(("beta", "gamma"), [(1e300, 0.1), (0.1, 1e300)])
def test_info_spec_loss_refuses_an_overflowing_loss(beta, gamma):
    """beta=1e300 returned a silent inf."""
    torch.manual_seed(0)
    acts, ws = [torch.randn(32, 4)], [torch.randn(4, 4)]
    with pytest.raises(InputError, match=r"overflows float32 .* Use smaller 'beta' and 'gamma'"):
        info_spec_loss(acts, ws, beta=beta, gamma=gamma)
    assert math.isfinite(float(info_spec_loss(acts, ws, beta=1e3, gamma=1e3)))


# -- SpectralRegularizer --------------------------------------------------------------------
def test_spectral_regularizer_names_a_meta_weight():
    with pytest.raises(
        InputError, match=r"'model\.weight' argument of SpectralRegularizer is a meta tensor"
    ):
        SpectralRegularizer(nn.Linear(4, 4, device="meta"))
    net = nn.Sequential(nn.Linear(4, 4))
    reg = SpectralRegularizer(net)
    net.to("meta")
    with pytest.raises(
        InputError, match=r"'model\.0\.weight' argument of SpectralRegularizer is a meta"
    ):
        reg()


@pytest.mark.parametrize("seed", BAD_SEEDS)
def test_spectral_regularizer_checks_the_seed(seed):
    with pytest.raises(
        InputError, match=r"'seed' parameter of SpectralRegularizer must be an int in \[-9223"
    ):
        SpectralRegularizer(nn.Linear(4, 4), seed=seed)


def test_spectral_regularizer_takes_the_seeds_torch_takes():
    """torch.Generator.manual_seed takes [-2**63, 2**64 - 1]; torch.initial_seed() of an
    unseeded process is often past 2**63."""
    for seed in (-(2**63), -1, 2**63 - 1, 2**63, 2**64 - 1):
        assert SpectralRegularizer(nn.Linear(4, 4), seed=seed)().shape == ()


@pytest.mark.parametrize("eps", [1e300, 1e39])
def test_spectral_regularizer_bounds_eps_to_a_float32(eps):
    """eps=1e300 raised RuntimeError (float overflow) in F.normalize."""
    with pytest.raises(
        InputError,
        match=r"'eps' parameter of SpectralRegularizer must be a float in \(0, 3.403e\+38\]",
    ):
        SpectralRegularizer(nn.Linear(4, 4), eps=eps)
    assert math.isfinite(float(SpectralRegularizer(nn.Linear(4, 4), eps=1e38)()))


def test_spectral_regularizer_refuses_an_overflowing_penalty():
    """sigma ~ 1e3 and k = 100 gave a silent inf."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 16)
    with torch.no_grad():
        lin.weight.mul_(1e3)
    with pytest.raises(
        InputError, match=r"penalty overflows float32: sigma_max of 'weight' .* k=100.0"
    ):
        SpectralRegularizer(lin, k=100.0)()
    assert math.isfinite(float(SpectralRegularizer(lin, k=2.0)()))


# -- MatryoshkaLoss: construction -------------------------------------------------------------
@pytest.mark.parametrize("embed_dim", [math.nan, math.inf, "abc", [1], 8.5, 2**31, 0])
def test_matryoshka_checks_embed_dim(embed_dim):
    with pytest.raises(
        InputError,
        match=r"'embed_dim' argument of MatryoshkaLoss must be an int in \[1, 2147483647\]",
    ):
        MatryoshkaLoss((2, 4), num_classes=3, embed_dim=embed_dim)


@pytest.mark.parametrize(
    "weights", [0.5, "abc", [1.0, math.nan], [1.0, math.inf], [1.0, -1.0], [1.0]]
)
def test_matryoshka_checks_weights(weights):
    with pytest.raises(
        InputError,
        match="'weights' argument of MatryoshkaLoss must be a sequence of one finite float",
    ):
        MatryoshkaLoss((2, 4), num_classes=3, weights=weights)


def test_matryoshka_takes_weights_as_a_tensor():
    assert MatryoshkaLoss((2, 4), num_classes=3, weights=torch.tensor([1.0, 0.5])).weights == (
        1.0,
        0.5,
    )


def test_matryoshka_bounds_num_classes_dims_and_the_heads():
    with pytest.raises(
        InputError,
        match=r"'num_classes' argument of MatryoshkaLoss must be an int in \[2, 2147483647\]",
    ):
        MatryoshkaLoss((2, 4), num_classes=10**30)
    with pytest.raises(
        InputError, match=r"'dims' argument of MatryoshkaLoss must hold ints in \[1, 2147483647\]"
    ):
        MatryoshkaLoss([10**30], num_classes=3)
    with pytest.raises(
        InputError, match=r"heads of MatryoshkaLoss would hold 6\.44e\+09 parameters"
    ):
        MatryoshkaLoss([2**31 - 1], num_classes=3)


# -- MatryoshkaLoss: calls ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_matryoshka_takes_embeddings_of_any_float_dtype(dtype):
    """float64/float16/bfloat16 embeddings raised 'mat1 and mat2 must have the same dtype'."""
    torch.manual_seed(0)
    loss_fn = MatryoshkaLoss((2, 4, 8), num_classes=3)
    z, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    want = float(loss_fn(z, y))
    assert float(loss_fn(z.to(dtype), y)) == pytest.approx(want, rel=2e-2)


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (
            torch.tensor([0, 1, 2, 0, 3]),
            r"class indices in \[0, 2\] \(num_classes=3\) or -100 .*got 3 at index 4",
        ),
        (torch.tensor([0, 1, 2, 0, -1]), r"got -1 at index 4"),
        (torch.tensor([0.0, 1, 2, 0, 1]), r"class probabilities of shape \(5, 3\)"),
        (torch.full((5, 3), math.nan), r"'target' argument of MatryoshkaLoss must be finite"),
        (torch.tensor([0, 1, 2]), r"of shape \(5,\) .* got shape \(3,\)"),
        (torch.tensor([True, False, True, False, True]), "tensor of class indices"),
        ([0, 1, 2, 0, 1], "tensor of class indices .* got \\[0, 1, 2, 0, 1\\]"),
        (
            torch.zeros(5, dtype=torch.long, device="meta"),
            "'target' argument of MatryoshkaLoss is a meta",
        ),
    ],
)
def test_matryoshka_names_a_bad_target(target, match):
    loss_fn = MatryoshkaLoss((2, 4, 8), num_classes=3)
    with pytest.raises(InputError, match=match):
        loss_fn(torch.randn(5, 8), target)


@pytest.mark.parametrize(
    ("z", "match"),
    [
        (torch.randn(0, 8), "is an empty batch"),
        (torch.randn(5, 8, device="meta"), "'z' argument of MatryoshkaLoss is a meta tensor"),
        (torch.full((5, 8), math.nan), "'z' argument of MatryoshkaLoss must be finite; got 40 NaN"),
        (torch.tensor([[math.inf] * 8] * 5), "must be finite; got 0 NaN and 40 infinite"),
    ],
)
def test_matryoshka_names_bad_embeddings(z, match):
    """An empty or NaN batch gave a silent NaN loss; a meta batch a RuntimeError."""
    loss_fn = MatryoshkaLoss((2, 4, 8), num_classes=3)
    with pytest.raises(InputError, match=match):
        loss_fn(z, torch.zeros(z.shape[0], dtype=torch.long))


@pytest.mark.parametrize(
    ("criterion", "match"),
    [
        (lambda p, y: p.sum(0), r"must return a 0-d tensor .* size 2 it returned shape \(2,\)"),
        (lambda p, y: 1.0, "must return a 0-d tensor .* it returned 1.0"),
        (lambda p, y: None, "must return a 0-d tensor .* it returned None"),
    ],
)
def test_matryoshka_names_a_criterion_that_returns_no_scalar_tensor(criterion, match):
    loss_fn = MatryoshkaLoss((2, 4), criterion=criterion)
    with pytest.raises(InputError, match=match):
        loss_fn(torch.randn(3, 4), None)


# -- Monitor ------------------------------------------------------------------------------------
def _model():
    return nn.Sequential(nn.Linear(16, 12), nn.ReLU())


@pytest.mark.parametrize("seed", [*BAD_SEEDS, 2**64])
def test_monitor_checks_the_seed(seed):
    with pytest.raises(
        InputError,
        match=r"'seed' parameter of Monitor must be an int in \[-9223372036854775808, 1844",
    ):
        Monitor(_model(), seed=seed)


def test_monitor_takes_the_largest_seed():
    """seed + step is wrapped into a generator's range (10**30 raised at the first window)."""
    model = _model()
    monitor = Monitor(model, every=1, alerts=None, seed=2**64 - 1)
    for _ in range(2):
        model(torch.randn(64, 16))
        assert monitor.step()
    monitor.remove()


@pytest.mark.parametrize("log_path", [5, [1], 1.5])
def test_monitor_names_a_log_path_that_is_no_path(log_path):
    with pytest.raises(InputError, match="'log_path' parameter of Monitor must be a path"):
        Monitor(_model(), log_path=log_path)


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("meta", "'spectrum_device' parameter of Monitor is 'meta'"),
        ("abc", "'spectrum_device' parameter of Monitor must be a torch device"),
        (10**30, "'spectrum_device' parameter of Monitor must be a torch device"),
    ],
)
def test_monitor_checks_the_spectrum_device(device, match):
    with pytest.raises(InputError, match=match):
        Monitor(_model(), spectrum_device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_monitor_names_cuda_where_there_is_none():
    with pytest.raises(InputError, match="is 'cuda' but no CUDA device is available"):
        Monitor(_model(), spectrum_device="cuda")


def test_monitor_names_a_meta_model():
    model = nn.Sequential(nn.Linear(16, 12, device="meta"))
    with pytest.raises(
        InputError, match=r"holds only meta tensors in the watched layers .* Load the weights first"
    ):
        Monitor(model)


def test_matryoshka_takes_what_cross_entropy_takes():
    """ignore_index -100 rows are left out, and probability targets are read as such, as
    F.cross_entropy does (found in review: both were refused)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    loss_fn = MatryoshkaLoss((2, 4, 8), num_classes=3, weights=(1.0, 0.0, 0.0))
    z = torch.randn(6, 8)
    y = torch.tensor([0, 1, 2, -100, 1, -100])
    want = F.cross_entropy(loss_fn.logits(z, 2), y)
    assert float(loss_fn(z, y).detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    soft = torch.softmax(torch.randn(6, 3), dim=-1)
    want = F.cross_entropy(loss_fn.logits(z, 2), soft)
    assert float(loss_fn(z, soft).detach()) == pytest.approx(float(want.detach()), rel=1e-6)
