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


# -- Gram precision ---------------------------------------------------------------------

U32 = 2.0**-24  # unit round-off of float32


def _large_mean(gen, n=4000, d=48):
    """Unit-variance correlated rows around a mean of 1e3: naive float32 moments fail here."""
    mix = torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) @ mix
    return (x + 1e3).to(torch.float32)


def _fed(x, batch, **kwargs):
    acc = StreamingCovariance(x.shape[1], **kwargs)
    for chunk in x.split(batch):
        acc.update(chunk)
    return acc


@pytest.mark.parametrize("batch", [500, 4000])
def test_float32_gram_within_its_bound_at_a_large_mean(gen, batch):
    x = _large_mean(gen)
    fast = _fed(x, batch, precision="float32")
    exact = _fed(x, batch, precision="float64")
    assert fast.scatter.dtype == torch.float64 and fast.count == exact.count == 4000
    c64, c32 = exact.covariance(), fast.covariance()
    # entrywise: |dC_ij| <= gamma_b sqrt(C_ii C_jj), gamma_b = b u / (1 - b u) (Higham 3.5)
    gamma = batch * U32 / (1 - batch * U32)
    scale = torch.sqrt(torch.outer(c64.diagonal(), c64.diagonal()))
    ratio = float(((c32 - c64).abs() / scale).max())
    assert ratio <= gamma
    assert ratio <= 2 * batch**0.5 * U32  # the typical size of random rounding errors
    # eigenvalues: |d lambda_i| <= gamma_b d mean(lambda) (Weyl), typically 2 sqrt(d) u
    lam64, lam32 = exact.eigenvalues(), fast.eigenvalues()
    err = float((lam32 - lam64).abs().max()) / float(lam64.mean())
    assert err <= gamma * 48
    assert err <= 2 * 48**0.5 * U32
    torch.testing.assert_close(fast.mean, exact.mean, rtol=1e-12, atol=0)


def test_naive_float32_moments_fail_where_the_centred_gram_does_not(gen):
    """The case the shift is for: raw float32 second moments lose the spread to the mean."""
    x = _large_mean(gen)
    exact = _fed(x, 4000, precision="float64").covariance()
    n = x.shape[0]
    m = x.mean(dim=0)
    naive = ((x.mT @ x - n * torch.outer(m, m)) / (n - 1)).to(torch.float64)
    fast = _fed(x, 4000, precision="float32").covariance()
    rel = lambda c: float((c - exact).abs().max() / exact.diagonal().max())  # noqa: E731
    assert rel(naive) > 1e-2  # the spread is lost
    assert rel(fast) < 1e-5


def test_precision_auto_follows_the_input_dtype():
    from infospec.spectra.covariance import gram_dtype

    assert gram_dtype("auto", torch.float64) == torch.float64
    assert gram_dtype("auto", torch.float32) == torch.float64  # float32 inputs stay exact
    assert gram_dtype("auto", torch.bfloat16) == torch.float32
    assert gram_dtype("auto", torch.float16) == torch.float32
    assert gram_dtype("float32", torch.float64) == torch.float32
    assert gram_dtype("float64", torch.bfloat16) == torch.float64


def test_auto_precision_of_float32_inputs_is_the_float64_path(gen):
    x = _large_mean(gen, n=600)
    auto, exact = _fed(x, 200), _fed(x, 200, precision="float64")
    assert torch.equal(auto.scatter, exact.scatter)


def test_bfloat16_rows_take_the_float32_gram(gen):
    x = (torch.randn(900, 20, generator=gen) * 3 + 50).to(torch.bfloat16)
    fast = _fed(x, 300)  # auto: float32 Gram
    exact = _fed(x.to(torch.float64), 300, precision="float64")  # the same bf16 values
    torch.testing.assert_close(fast.covariance(), exact.covariance(), rtol=1e-5, atol=1e-5)
    assert not torch.equal(fast.scatter, exact.scatter)  # a different route, not a copy


def test_float32_precision_merge_and_batching(gen):
    x = _large_mean(gen, n=1000, d=12)
    a = _fed(x[:400], 150, precision="float32")
    b = _fed(x[400:], 600, precision="float32")
    whole = _fed(x, 1000, precision="float32")
    exact = _fed(x, 1000, precision="float64")
    a.merge(b)
    assert a.count == 1000
    torch.testing.assert_close(a.mean, whole.mean, rtol=1e-12, atol=0)
    scale = float(exact.scatter.diagonal().max())
    assert float((a.scatter - whole.scatter).abs().max()) <= 1000 * U32 * scale
    # a fast accumulator merges into an exact one (the state is float64 either way)
    mixed = _fed(x[:400], 400, precision="float64").merge(b)
    assert float((mixed.scatter - exact.scatter).abs().max()) <= 1000 * U32 * scale


def test_merge_moments_equals_update(gen):
    from infospec.spectra.covariance import batch_moments

    x = torch.randn(300, 9, generator=gen, dtype=torch.float64) + 7
    a, b = StreamingCovariance(9), StreamingCovariance(9)
    a.update(x[:100])
    b.update(x[:100])
    a.update(x[100:])
    b.merge_moments(*batch_moments(x[100:]))
    torch.testing.assert_close(a.scatter, b.scatter, rtol=0, atol=0)
    assert b.count == 300


@pytest.mark.parametrize("d", [300, 1100])
def test_block_triangular_gram_equals_the_product(gen, d):
    from infospec.spectra.covariance import gram

    y = torch.randn(200, d, generator=gen, dtype=torch.float64)
    g = gram(y)
    torch.testing.assert_close(g, y.mT @ y, rtol=1e-13, atol=1e-10)
    # the blocks below the diagonal blocks are copies of those above, exactly; the diagonal
    # blocks are whole BLAS products, symmetric only to round-off (BLAS promises no more)
    from infospec.spectra.gram import triangle_blocks

    off = torch.ones(d, d, dtype=torch.bool)
    for a0, a1 in triangle_blocks(d):
        off[a0:a1, a0:a1] = False
    assert torch.equal(g[off], g.mT[off])
    torch.testing.assert_close(g, g.mT, rtol=1e-14, atol=1e-11)


def test_precision_errors():
    from infospec.spectra.activations import ActivationCovariances

    with pytest.raises(InputError, match="'precision' parameter of StreamingCovariance must be"):
        StreamingCovariance(3, precision="half")
    with pytest.raises(InputError, match=r"one of 'auto', 'float64', 'float32'\. Got None"):
        StreamingCovariance(3, precision=None)
    with pytest.raises(InputError, match="'precision' parameter of ActivationCovariances"):
        ActivationCovariances({}, precision=torch.float32)


def test_non_finite_and_overflowing_batches_add_nothing():
    acc = StreamingCovariance(2, precision="float32")
    acc.update(torch.tensor([[1.0, 2.0], [3.0, 5.0]]))
    before = acc.scatter.clone()
    with pytest.raises(InputError, match="got 0 NaN and 1 infinite"):
        acc.update(torch.tensor([[1.0, float("inf")], [0.0, 1.0]], dtype=torch.bfloat16))
    with pytest.raises(InputError, match="sums beyond the float64 range"):
        acc.update(torch.tensor([[1e308, 0.0], [1e308, 1.0]], dtype=torch.float64))
    # finite sums whose squares overflow: the scatter would be inf and NaN
    with pytest.raises(InputError, match=r"squares overflow beyond about 1e154"):
        acc.update(torch.tensor([[1e155, 0.0], [-1e155, 1.0]], dtype=torch.float64))
    assert acc.count == 2 and torch.equal(acc.scatter, before)


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1.0, 1e170, 1e300])
def test_ledoit_wolf_is_scale_invariant_and_matches_scikit_learn(scale):
    sk = pytest.importorskip("sklearn.covariance")
    g = torch.Generator().manual_seed(1)
    X = torch.randn(200, 8, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, 8)
    want = sk.ledoit_wolf(X.numpy())[1]
    assert float(ledoit_wolf_shrinkage(X * scale)) == pytest.approx(want, rel=1e-12)


def test_ledoit_wolf_of_one_feature_is_zero():
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        assert float(ledoit_wolf_shrinkage(torch.randn(30, 1, generator=g))) == 0.0


@pytest.mark.parametrize("scale", [1e-150, 1e-100, 1e100, 1e150])
def test_covariance_eigenvalues_are_scale_covariant(scale):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 6, generator=g, dtype=torch.float64)
    want = covariance_eigenvalues(X) * scale * scale
    np.testing.assert_allclose(covariance_eigenvalues(X * scale).numpy(), want.numpy(), rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-170, 1e-300, 1e170, 1e300])
def test_covariance_eigenvalues_outside_float64_are_refused_by_name(scale):
    X = torch.randn(20, 3, dtype=torch.float64) * scale
    with pytest.raises(InputError, match=r"float64 number\. Rescale X"):
        covariance_eigenvalues(X)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_batch_moments_with_counts_equal_the_repeated_rows(gen, precision):
    from infospec.spectra.covariance import batch_moments

    rows = torch.randn(7, 5, generator=gen, dtype=torch.float64) * 3 + 100
    counts = torch.tensor([1, 4, 2, 9, 1, 3, 5])
    x = rows if precision == "float64" else rows.to(torch.bfloat16)
    n, mean, scatter = batch_moments(x, precision=precision, counts=counts)
    m, ref_mean, ref = batch_moments(x.repeat_interleave(counts, dim=0), precision="float64")
    assert n == m == 25
    torch.testing.assert_close(mean, ref_mean, rtol=1e-14, atol=1e-12)
    tol = 1e-12 if precision == "float64" else 1e-6
    torch.testing.assert_close(scatter, ref, rtol=tol, atol=tol * float(ref.abs().max()))


def test_streaming_covariance_arguments_are_checked():
    with pytest.raises(InputError, match=r"'dim' parameter of StreamingCovariance is 1000000"):
        StreamingCovariance(10**6)
    with pytest.raises(InputError, match="'dtype' parameter of StreamingCovariance"):
        StreamingCovariance(4, dtype=torch.int64)
    with pytest.raises(InputError, match="'device' parameter of StreamingCovariance"):
        StreamingCovariance(4, device="abc")
    acc = StreamingCovariance(3)
    acc.update(torch.randn(50, 3, generator=torch.Generator().manual_seed(0)))
    good = (torch.zeros(3), torch.eye(3))
    for count, match in ((-50, "'count' parameter"), (2.5, "'count' parameter"), ("a", "count")):
        with pytest.raises(InputError, match=match):
            acc.merge_moments(count, *good)
    with pytest.raises(InputError, match=r"mean of shape \(3,\)"):
        acc.merge_moments(5, torch.zeros(4), torch.eye(3))
    with pytest.raises(InputError, match=r"'scatter' argument .* must be finite"):
        acc.merge_moments(5, torch.zeros(3), torch.full((3, 3), float("inf")))
    acc.merge_moments(5, [0.0, 0.0, 0.0], torch.eye(3).tolist())  # lists are tensors too
    assert acc.count == 55
