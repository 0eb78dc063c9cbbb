import numpy as np
import pytest
import torch

from infospec import (
    InputError,
    StreamingCovariance,
    covariance_eigenvalues,
    ledoit_wolf_shrinkage,
)


@pytest.mark.parametrize(("n", "d"), [(50, 10), (10, 50), (20, 20)])
@pytest.mark.parametrize("ddof", [0, 1])
def test_matches_numpy_cov(n, d, ddof, rng):
    X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    expected = np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False, ddof=ddof)))[::-1]
    got = covariance_eigenvalues(X, ddof=ddof).numpy()
    assert got.shape == (d,)
    np.testing.assert_allclose(got, expected.clip(0), rtol=1e-9, atol=1e-10 * expected[0])


def test_n_less_than_d_structural_zeros(rng):
    n, d = 8, 30
    X = rng.standard_normal((n, d))
    eig = covariance_eigenvalues(X)
    assert int((eig == 0).sum()) == d - n + 1
    assert int((covariance_eigenvalues(X, center=False) == 0).sum()) == d - n
    nz = covariance_eigenvalues(X, nonzero=True)
    assert nz.shape == (n - 1,) and bool((nz > 0).all())
    torch.testing.assert_close(nz, eig[: n - 1])


def test_uncentered_is_second_moment(rng):
    X = rng.standard_normal((40, 5)) + 3.0
    expected = np.sort(np.linalg.eigvalsh(X.T @ X / 40))[::-1]
    np.testing.assert_allclose(
        covariance_eigenvalues(X, center=False, ddof=0).numpy(), expected, rtol=1e-12
    )


@pytest.mark.parametrize(("n", "d"), [(40, 25), (15, 60)])
def test_ledoit_wolf_matches_sklearn(n, d, rng):
    sk = pytest.importorskip("sklearn.covariance")
    X = rng.standard_normal((n, d)) * np.linspace(0.2, 3.0, d)
    cov, rho = sk.ledoit_wolf(X)
    assert float(ledoit_wolf_shrinkage(X)) == pytest.approx(rho, rel=1e-10)
    expected = np.sort(np.linalg.eigvalsh(cov))[::-1]
    got = covariance_eigenvalues(X, ddof=0, shrinkage="ledoit-wolf").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_fixed_shrinkage_moves_toward_mean(rng):
    X = rng.standard_normal((30, 6)) * np.arange(1, 7)
    raw = covariance_eigenvalues(X)
    full = covariance_eigenvalues(X, shrinkage=1.0)
    torch.testing.assert_close(full, torch.full_like(raw, float(raw.mean())))
    torch.testing.assert_close(covariance_eigenvalues(X, shrinkage=0.0), raw)


@pytest.mark.parametrize(
    ("kwargs", "X", "match"),
    [
        ({}, np.ones(5), "exactly 2 dimensions"),
        ({}, np.ones((0, 3)), "is empty"),
        ({}, np.array([[1.0, np.nan], [0.0, 1.0]]), "must be finite"),
        ({"ddof": 1}, np.ones((1, 3)), "more samples than ddof"),
        ({"ddof": -1}, np.ones((3, 3)), "'ddof' parameter"),
        ({"shrinkage": "oas"}, np.ones((3, 3)), "'ledoit-wolf' or a float"),
        ({"shrinkage": 1.5}, np.ones((3, 3)), r"in \[0, 1\]"),
        ({"shrinkage": 0.5, "nonzero": True}, np.ones((3, 3)), "cannot be combined"),
    ],
)
def test_errors(kwargs, X, match):
    with pytest.raises(InputError, match=match):
        covariance_eigenvalues(X, **kwargs)


# ---- streaming accumulator -------------------------------------------------------------


@pytest.mark.parametrize("splits", [[100], [1] * 100, [37, 1, 62], [50, 50], [3, 97]])
def test_streaming_independent_of_batching(splits, rng):
    X = rng.standard_normal((100, 12)) * 5 + 1e4  # a large mean: raw moments would cancel
    acc = StreamingCovariance(12)
    for chunk in np.split(X, np.cumsum(splits)[:-1]):
        acc.update(torch.from_numpy(chunk))
    assert acc.count == 100
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(X, rowvar=False), rtol=1e-9)
    np.testing.assert_allclose(acc.mean.numpy(), X.mean(0), rtol=1e-14)


def test_streaming_merge_equals_single(rng):
    X = rng.standard_normal((60, 7))
    a, b, full = StreamingCovariance(7), StreamingCovariance(7), StreamingCovariance(7)
    a.update(X[:25])
    b.update(X[25:])
    full.update(X)
    a.merge(b)
    torch.testing.assert_close(a.scatter, full.scatter)
    torch.testing.assert_close(a.eigenvalues(), covariance_eigenvalues(X))


def test_streaming_flattens_leading_axes_and_reset(rng):
    X = rng.standard_normal((4, 5, 3))  # (batch, tokens, features)
    acc = StreamingCovariance(3)
    acc.update(X)
    assert acc.count == 20
    torch.testing.assert_close(
        acc.eigenvalues(ddof=0), covariance_eigenvalues(X.reshape(20, 3), ddof=0)
    )
    acc.reset()
    assert acc.count == 0 and float(acc.scatter.abs().sum()) == 0.0


def test_streaming_errors():
    acc = StreamingCovariance(4)
    with pytest.raises(InputError, match="last dimension 4"):
        acc.update(torch.ones(3, 5))
    with pytest.raises(InputError, match="must be finite"):
        acc.update(torch.tensor([[1.0, 2.0, float("nan"), 0.0]]))
    with pytest.raises(InputError, match="not enough for ddof=1"):
        acc.covariance()
    with pytest.raises(InputError, match="another StreamingCovariance of dimension 4"):
        acc.merge(StreamingCovariance(3))
    with pytest.raises(
        InputError, match="'dim' parameter of StreamingCovariance must be an int > 0"
    ):
        StreamingCovariance(0)


def test_activation_covariances_training_only_skips_eval_passes():
    from torch import nn

    from infospec.spectra.activations import ActivationCovariances

    layer = nn.Linear(4, 3)
    with ActivationCovariances({"l": layer}, training_only=True) as acts, torch.no_grad():
        layer.eval()
        layer(torch.randn(5, 4))
        assert "l" not in acts.accumulators
        layer.train()
        layer(torch.randn(7, 4))
    assert acts.accumulators["l"].count == 7
    assert not layer._forward_hooks
