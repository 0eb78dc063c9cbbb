import numpy as np
import pytest
import torch

from infospec import InputError, singular_values


def _spectrum_matrix(rng, m, n, sigma):
    u, _ = np.linalg.qr(rng.standard_normal((m, len(sigma))))
    v, _ = np.linalg.qr(rng.standard_normal((n, len(sigma))))
    return (u * sigma) @ v.T


@pytest.mark.parametrize("method", ["auto", "gram", "svd"])
@pytest.mark.parametrize("shape", [(40, 25), (25, 40), (30, 30), (1, 7), (7, 1)])
def test_matches_numpy_svd(method, shape, rng):
    W = rng.standard_normal(shape)
    expected = np.linalg.svd(W, compute_uv=False)
    np.testing.assert_allclose(singular_values(W, method=method).numpy(), expected, rtol=1e-10)


def test_float32_input_gives_float64_accuracy(rng):
    # a float32 matrix with a spectrum spanning 3.5 decades: the float64 Gram route keeps the
    # small singular values to ~1e-10 relative; a float32 Gram matrix would not.
    sigma = np.logspace(0, -3.5, 64)
    W32 = torch.tensor(_spectrum_matrix(rng, 200, 64, sigma), dtype=torch.float32)
    exact = np.linalg.svd(W32.double().numpy(), compute_uv=False)
    got = singular_values(W32)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), exact, rtol=1e-9)
    g32 = torch.linalg.eigvalsh(W32.T @ W32).clamp_min(0).sqrt().flip(0).numpy()
    assert np.max(np.abs(g32 - exact) / exact) > 1e-2  # why float32 Gram is forbidden


def test_auto_falls_back_to_svd_for_ill_conditioned(rng):
    sigma = np.array([1.0, 1e-3, 1e-7, 1e-9])
    W = _spectrum_matrix(rng, 50, 4, sigma)
    got = singular_values(W, method="auto").numpy()
    np.testing.assert_allclose(got, sigma, rtol=1e-5)
    gram = singular_values(W, method="gram").numpy()
    assert abs(gram[-1] - 1e-9) / 1e-9 > 1e-3  # the Gram route cannot resolve it


def test_batched_equals_looped_and_mixed_conditioning(rng):
    good = rng.standard_normal((20, 6))
    bad = _spectrum_matrix(rng, 20, 6, np.array([1, 1e-1, 1e-2, 1e-4, 1e-8, 1e-9]))
    batch = np.stack([good, bad])
    out = singular_values(batch)
    for i in range(2):
        np.testing.assert_allclose(
            out[i].numpy(), np.linalg.svd(batch[i], compute_uv=False), rtol=1e-6
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_low_precision_dtypes(dtype):
    W = torch.randn(16, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    expected = np.linalg.svd(W.double().numpy(), compute_uv=False)
    np.testing.assert_allclose(singular_values(W).numpy(), expected, rtol=1e-10)


def test_does_not_track_gradients():
    W = torch.randn(5, 4, requires_grad=True)
    assert not singular_values(W).requires_grad


@pytest.mark.parametrize(
    ("W", "kwargs", "match"),
    [
        (np.ones(4), {}, "at least 2 dimensions"),
        (np.ones((0, 3)), {}, "empty side"),
        (np.array([[1.0, np.inf]]), {}, "must be finite"),
        (np.eye(2), {"method": "qr"}, "must be one of 'auto', 'gram', 'svd'. Got 'qr'"),
    ],
)
def test_errors(W, kwargs, match):
    with pytest.raises(InputError, match=match):
        singular_values(W, **kwargs)


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e170, 1e300])
@pytest.mark.parametrize("method", ["auto", "gram", "svd"])
def test_extreme_scales_are_rescaled_not_lost(scale, method):
    """Entries whose squares underflow or overflow float64 still give the right spectrum."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 4))
    want = np.linalg.svd(base, compute_uv=False) * scale
    got = singular_values(base * scale, method=method).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all(np.isfinite(got)) and np.all(got > 0)


def test_zero_matrix_gives_zero_singular_values():
    assert singular_values(np.zeros((3, 2))).tolist() == [0.0, 0.0]


def test_batch_with_one_extreme_matrix_keeps_each_scale():
    batch = np.stack([np.eye(3) * 2.0, np.eye(3) * 1e-300])
    got = singular_values(batch).numpy()
    np.testing.assert_allclose(got, [[2.0] * 3, [1e-300] * 3], rtol=1e-14)
