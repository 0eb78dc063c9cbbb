import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from infospec import InputError, effective_rank, participation_ratio, stable_rank


def test_effective_rank_closed_forms():
    assert float(effective_rank(torch.ones(10))) == pytest.approx(10.0, rel=1e-14)
    assert float(effective_rank([4.0, 0.0, 0.0])) == pytest.approx(1.0, rel=1e-14)
    # two equal values among zeros: entropy log 2
    assert float(effective_rank([0.0, 3.0, 3.0, 0.0])) == pytest.approx(2.0, rel=1e-14)


def test_effective_rank_matches_scipy_entropy(rng):
    from scipy.stats import entropy

    v = rng.gamma(0.7, size=(4, 50))
    expected = np.exp(entropy(v, axis=-1))
    np.testing.assert_allclose(effective_rank(v).numpy(), expected, rtol=1e-12)


def test_participation_ratio_closed_form_and_numpy(rng):
    assert float(participation_ratio(np.full(7, 2.0))) == pytest.approx(7.0)
    v = rng.gamma(1.0, size=(3, 40))
    np.testing.assert_allclose(
        participation_ratio(v).numpy(), v.sum(-1) ** 2 / (v**2).sum(-1), rtol=1e-13
    )


@pytest.mark.parametrize("fn", [effective_rank, participation_ratio])
@pytest.mark.parametrize("scale", [1e-8, 3.0, 1e8])
def test_scale_and_permutation_invariance(fn, scale, rng):
    v = rng.gamma(1.0, size=25)
    ref = float(fn(v))
    assert float(fn(scale * v)) == pytest.approx(ref, rel=1e-12)
    assert float(fn(rng.permutation(v))) == pytest.approx(ref, rel=1e-12)


def test_stable_rank_matrix_vs_sigma_vs_numpy(rng):
    W = rng.standard_normal((30, 12))
    s = np.linalg.svd(W, compute_uv=False)
    expected = np.linalg.norm(W, "fro") ** 2 / np.linalg.norm(W, 2) ** 2
    assert float(stable_rank(W)) == pytest.approx(expected, rel=1e-12)
    assert float(stable_rank(sigma=s)) == pytest.approx(expected, rel=1e-12)
    batch = rng.standard_normal((3, 8, 5))
    looped = torch.stack([stable_rank(b) for b in batch])
    torch.testing.assert_close(stable_rank(batch), looped)


def test_stable_rank_rank_one_and_identity():
    u = torch.arange(1.0, 5.0)
    assert float(stable_rank(torch.outer(u, u))) == pytest.approx(1.0, rel=1e-12)
    assert float(stable_rank(torch.eye(6))) == pytest.approx(6.0, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(1, 30), elements=st.floats(1e-4, 1e4)))
def test_rank_bounds_property(v):
    d = v.shape[0]
    for fn in (effective_rank, participation_ratio):
        r = float(fn(v))
        assert 1.0 - 1e-9 <= r <= d + 1e-9
    assert 1.0 - 1e-9 <= float(stable_rank(sigma=v)) <= d + 1e-9
    # participation ratio never exceeds the effective rank (Renyi-2 <= Shannon entropy)
    assert float(participation_ratio(v)) <= float(effective_rank(v)) + 1e-9


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: effective_rank([0.0, 0.0]), "all-zero spectrum"),
        (lambda: participation_ratio([1.0, -3.0]), "must be non-negative"),
        (lambda: effective_rank([]), "at least 1"),
        (lambda: stable_rank(), "exactly one of 'W'"),
        (lambda: stable_rank(np.eye(2), sigma=[1.0]), "got both"),
        (lambda: stable_rank(np.ones(3)), "at least 2 dimensions"),
        (lambda: stable_rank(np.zeros((3, 3))), "zero matrix"),
        (
            lambda: stable_rank(sigma=[0.0, 0.0]),
            "'sigma' argument of stable_rank holds an all-zero",
        ),
        (lambda: stable_rank(np.array([[1.0, np.nan]])), "must be finite"),
    ],
)
def test_rank_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e-160, 1.0, 1e160, 1e170, 1e300])
def test_rank_measures_are_scale_invariant_across_the_float64_range(scale):
    """Squares of values beyond ~1e±154 over/underflow: the measures divide by the max first."""
    v = np.array([3.0, 1.0, 0.5])
    pr = v.sum() ** 2 / (v**2).sum()
    sr = (v**2).sum() / v.max() ** 2
    assert float(participation_ratio(v * scale)) == pytest.approx(pr, rel=1e-14)
    assert float(stable_rank(sigma=v * scale)) == pytest.approx(sr, rel=1e-14)
    assert float(stable_rank(np.diag(v * scale))) == pytest.approx(sr, rel=1e-12)
    assert float(effective_rank(v * scale)) == pytest.approx(float(effective_rank(v)), rel=1e-14)


def test_stable_rank_of_a_tiny_matrix_keeps_its_gradient():
    W = (torch.randn(5, 4, dtype=torch.float64) * 1e-170).requires_grad_()
    out = stable_rank(W)
    out.backward()
    assert torch.isfinite(W.grad).all()
    ref = stable_rank(W.detach() * 1e170)
    assert float(out) == pytest.approx(float(ref), rel=1e-12)
