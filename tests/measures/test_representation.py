"""RankMe, LiDAR, alpha-ReQ, NESum against closed forms, float64 references and the peers.

reptrix 0.1.0 (installed by CI with --no-deps: its metadata asks for torchvision) is called
where installed; the stable-pretraining 0.1.8 conventions are written out from its
callbacks (rankme.py: uncentred ``svdvals``, p = s / sum(s) + 1e-5; lidar.py: the scatter
matrices over C - 1 and sum(n_c - 1), delta 1e-4, eps 1e-8 added before normalising).
"""

import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from infospec import InputError
from infospec.measures import effective_rank
from infospec.measures.representation import (
    alpha_req,
    eigen_decay,
    entropy_rank,
    lidar,
    nesum,
    rankme,
)


@pytest.fixture
def emb(rng):
    """Anisotropic embeddings with a power-law spectrum (exponent 1.3) and an offset."""
    n, d = 600, 128
    scales = np.arange(1, d + 1) ** -0.65  # eigenvalues ~ k^-1.3
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return rng.standard_normal((n, d)) * scales @ q.T + 3.0


def _entropy_rank_np(s, eps):
    p = s / s.sum() + eps
    return math.exp(-np.sum(p * np.log(p)))


def test_entropy_rank_closed_forms_and_effective_rank():
    assert float(entropy_rank(np.ones(7))) == pytest.approx(7, rel=1e-14)
    assert float(entropy_rank([3.0, 0, 0])) == 1.0
    v = np.array([5.0, 2.0, 1.0, 0.5, 0.0])
    assert float(entropy_rank(v)) == pytest.approx(float(effective_rank(v)), rel=1e-14)
    assert float(entropy_rank(v, eps=1e-3)) == pytest.approx(_entropy_rank_np(v, 1e-3), rel=1e-14)
    assert float(entropy_rank(1e-200 * v)) == pytest.approx(float(entropy_rank(v)), rel=1e-13)


def test_rankme_paper_and_stable_pretraining_conventions(emb):
    s = np.linalg.svd(emb, compute_uv=False)
    assert float(rankme(emb)) == pytest.approx(_entropy_rank_np(s, 1e-7), rel=1e-12)
    # stable-pretraining: torch.linalg.svdvals of the (uncentred) embeddings, eps 1e-5
    assert float(rankme(emb, eps=1e-5)) == pytest.approx(_entropy_rank_np(s, 1e-5), rel=1e-12)
    sc = np.linalg.svd(emb - emb.mean(0), compute_uv=False)
    assert float(rankme(emb, center=True)) == pytest.approx(_entropy_rank_np(sc, 1e-7), rel=1e-12)
    # the uncentred offset adds one dominant direction: centring changes the number
    assert float(rankme(emb)) < float(rankme(emb, center=True))
    # invariances: rotation of the features, scale, row order
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((128, 128)))
    base = float(rankme(emb))
    assert float(rankme(emb @ q)) == pytest.approx(base, rel=1e-10)
    assert float(rankme(1e5 * emb)) == pytest.approx(base, rel=1e-12)
    assert float(rankme(emb[::-1].copy())) == pytest.approx(base, rel=1e-12)


def _reptrix_rankme_reference(z):
    """reptrix 0.1.0's get_rankme, step by step: PCA explained-variance ratios, eps 1e-7."""
    feats = z - z.mean(0)
    pca = PCA(n_components=min(2048, *feats.shape), svd_solver="full").fit(feats)
    return _entropy_rank_np(pca.explained_variance_ratio_, 1e-7)


def test_rankme_reptrix_convention(emb):
    ours = float(rankme(emb, center=True, values="eigen"))
    assert ours == pytest.approx(_reptrix_rankme_reference(emb), rel=1e-10)
    reptrix = pytest.importorskip("reptrix.rankme")
    assert ours == pytest.approx(reptrix.get_rankme(torch.from_numpy(emb)), rel=1e-10)
    # a different number from the paper's definition (squared values are more peaked)
    assert ours < 0.8 * float(rankme(emb, center=True))


def test_nesum():
    assert float(nesum([2.0, 2.0, 2.0, 2.0])) == 4.0
    assert float(nesum([1.0, 0.0, 0.0])) == 1.0
    lam = np.array([0.3, 5.0, 1.0])
    assert float(nesum(lam)) == pytest.approx(6.3 / 5.0, rel=1e-15)


def test_eigen_decay_closed_form_and_reptrix(emb):
    for a in (0.7, 1.0, 2.3):
        lam = 4.0 * np.arange(1, 301) ** -a
        fit = eigen_decay(np.random.default_rng(0).permutation(lam))  # any order
        assert float(fit.alpha) == pytest.approx(a, rel=1e-12)
        assert float(fit.intercept) == pytest.approx(math.log(4.0), rel=1e-12)
        assert float(fit.r2) == pytest.approx(1.0, abs=1e-12) and fit.num_fitted == 90
    # against an independent weighted least squares (numpy lstsq on sqrt-weighted rows)
    rng = np.random.default_rng(3)
    lam = np.arange(1, 201) ** -1.1 * np.exp(0.1 * rng.standard_normal(200))
    lam_sorted = np.sort(lam)[::-1]
    k = np.arange(21, 81)
    x = np.stack([-np.log(k), np.ones_like(k, dtype=float)], 1)
    w = np.sqrt(1 / k)[:, None]
    (a_ref, b_ref), *_ = np.linalg.lstsq(x * w, np.log(lam_sorted[20:80]) * w[:, 0], rcond=None)
    fit = eigen_decay(lam, fit_range=(20, 80))
    assert float(fit.alpha) == pytest.approx(a_ref, rel=1e-12)
    assert float(fit.intercept) == pytest.approx(b_ref, rel=1e-12)
    y = np.log(lam_sorted[20:80])
    r2 = 1 - np.sum((y - x @ [a_ref, b_ref]) ** 2) / np.sum((y - y.mean()) ** 2)
    assert float(fit.r2) == pytest.approx(r2, rel=1e-12)
    # alpha_req on samples: the covariance's decay, close to the planted 1.3
    got = alpha_req(emb)
    assert 1.0 < float(got.alpha) < 1.6
    reptrix = pytest.importorskip("reptrix.alpha")
    ref_alpha, _, _, _ = reptrix.get_alpha(torch.from_numpy(emb), fit_range=np.arange(10, 100))
    # reptrix's weights are 1 / k rounded to float32: agreement to about 1e-9
    assert float(got.alpha) == pytest.approx(float(ref_alpha), rel=1e-8)


def _stable_pretraining_lidar(z, groups, delta=1e-4, eps=1e-8):
    """stable-pretraining 0.1.8's _compute_lidar on equal-sized classes, in float64."""
    classes = np.unique(groups)
    zc = np.stack([z[groups == c] for c in classes])  # (C, q, d)
    mu = zc.mean(1)
    cm = mu - mu.mean(0)
    sb = cm.T @ cm / (len(classes) - 1)
    cs = (zc - mu[:, None]).reshape(-1, z.shape[1])
    sw = cs.T @ cs / (len(classes) * (zc.shape[1] - 1)) + delta * np.eye(z.shape[1])
    ew, vw = np.linalg.eigh(sw)
    isq = (vw / np.sqrt(np.clip(ew, eps, None))) @ vw.T
    lam = np.clip(np.linalg.eigvalsh(isq @ sb @ isq), 0, None) + eps
    p = lam / lam.sum()
    return math.exp(-np.sum(p * np.log(p)))


def test_lidar_against_the_definition_and_stable_pretraining(rng):
    n_cls, views, d = 80, 5, 16
    centres = rng.standard_normal((n_cls, d)) * np.linspace(3, 0.1, d)
    z = np.repeat(centres, views, 0) + 0.5 * rng.standard_normal((n_cls * views, d))
    groups = np.repeat(np.arange(n_cls), views)
    ours = float(lidar(z, groups))
    ref = _stable_pretraining_lidar(z, groups)
    assert ours == pytest.approx(ref, rel=1e-6)  # eps added after vs before normalising
    ours_eps0 = float(lidar(z, groups, eps=0.0))
    assert ours_eps0 == pytest.approx(_stable_pretraining_lidar(z, groups, eps=0.0), rel=1e-10)
    # invariant to the labels' values and order, and to an invertible linear map of Z
    # (LDA is affine-invariant) up to the ridge delta
    perm = rng.permutation(len(z))
    assert float(lidar(z[perm], groups[perm] * 7 + 3)) == pytest.approx(ours, rel=1e-10)
    a = rng.standard_normal((d, d)) + 4 * np.eye(d)
    assert float(lidar(z @ a, groups, delta=1e-12)) == pytest.approx(
        float(lidar(z, groups, delta=1e-12)), rel=1e-6
    )
    # informative directions: between-class structure in only 3 of 16 dimensions
    centres3 = np.zeros((n_cls, d))
    centres3[:, :3] = 5 * rng.standard_normal((n_cls, 3))
    z3 = np.repeat(centres3, views, 0) + rng.standard_normal((n_cls * views, d))
    assert float(lidar(z3, groups)) < float(lidar(z, groups))


def test_a_collapsed_representation(rng):
    z = np.outer(rng.standard_normal(50), rng.standard_normal(8))  # rank 1
    assert float(rankme(z, eps=0.0)) == pytest.approx(1.0, abs=1e-6)
    assert float(nesum(np.linalg.eigvalsh(np.cov(z.T)).clip(0))) == pytest.approx(1, abs=1e-9)


def test_errors_name_the_argument():
    with pytest.raises(InputError, match="'Z' argument of rankme needs at least 2 samples"):
        rankme(np.ones((1, 4)))
    with pytest.raises(InputError, match="'Z' argument of rankme must have shape"):
        rankme(np.ones(4))
    with pytest.raises(InputError, match="constant"):
        rankme(np.ones((5, 3)), center=True)
    with pytest.raises(InputError, match="'values' argument of rankme"):
        rankme(np.eye(3), values="squared")
    with pytest.raises(InputError, match="'eps' argument of entropy_rank"):
        entropy_rank([1.0, 2.0], eps=-1)
    with pytest.raises(InputError, match="all zeros"):
        nesum([0.0, 0.0])
    with pytest.raises(InputError, match="'fit_range' argument of eigen_decay"):
        eigen_decay(np.ones(50), fit_range=(10, 11))
    with pytest.raises(InputError, match="needs at least 2"):
        eigen_decay(np.r_[np.ones(5), np.zeros(100)], fit_range=(10, 100))
    z = np.random.default_rng(0).standard_normal((12, 3))
    with pytest.raises(InputError, match="one integer label per row"):
        lidar(z, np.arange(11))
    with pytest.raises(InputError, match="one integer label per row"):
        lidar(z, np.zeros(12) + 0.5)
    with pytest.raises(InputError, match="at least 2 classes"):
        lidar(z, np.zeros(12, dtype=int))
    with pytest.raises(InputError, match="at least 2 classes"):
        lidar(z, np.arange(12))  # every class one view: no within-class scatter
    with pytest.raises(InputError, match="'delta' argument of lidar"):
        lidar(z, np.repeat(np.arange(4), 3), delta=0.0)


@pytest.mark.parametrize("scale", [1e-300, 1e-170, 1e-3, 1e3, 1e170, 1e300])
def test_rankme_and_alpha_req_are_scale_free_to_the_edges_of_float64(emb, scale):
    z = np.asarray(emb)
    ref_rank = float(rankme(z))
    ref = alpha_req(z, fit_range=(5, 100))
    assert float(rankme(z * scale)) == pytest.approx(ref_rank, rel=1e-12)
    got = alpha_req(z * scale, fit_range=(5, 100))
    assert float(got.alpha) == pytest.approx(float(ref.alpha), rel=1e-10)
    # the eigenvalues scale by scale^2: the intercept (log lambda at rank 1) by 2 log scale
    assert float(got.intercept) == pytest.approx(
        float(ref.intercept) + 2 * math.log(scale), abs=1e-9
    )


def test_lidar_is_scale_free_with_a_covariant_ridge_and_has_the_right_limits(rng):
    n_cls, views, d = 40, 4, 6
    centres = rng.standard_normal((n_cls, d)) * np.linspace(3, 0.1, d)
    z = np.repeat(centres, views, 0) + 0.5 * rng.standard_normal((n_cls * views, d))
    groups = np.repeat(np.arange(n_cls), views)
    ref = float(lidar(z, groups, delta=0.01))
    for scale in (1e-140, 1e140):
        assert float(lidar(z * scale, groups, delta=0.01 * scale**2)) == pytest.approx(
            ref, rel=1e-9
        )
    # a ridge negligible against the within-class scatter: LiDAR without it
    no_ridge = float(lidar(z, groups, delta=1e-300))
    assert float(lidar(z * 1e300, groups)) == pytest.approx(no_ridge, rel=1e-9)
    # a ridge that dominates: Sigma_w ~ delta I, the entropy rank of Sigma_b alone
    means = z.reshape(n_cls, views, d).mean(axis=1)
    sigma_b = np.cov(means.T)
    want = float(entropy_rank(np.linalg.eigvalsh(sigma_b).clip(0), eps=1e-8))
    assert float(lidar(z * 1e-300, groups)) == pytest.approx(want, rel=1e-9)


def test_lidar_takes_class_names_and_names_bad_labels(rng):
    z = rng.standard_normal((12, 3))
    names = np.array(["cat", "dog", "emu"])[np.arange(12) % 3]
    assert float(lidar(z, names)) == pytest.approx(float(lidar(z, np.arange(12) % 3)), rel=1e-14)
    assert float(lidar(z, list(names))) == pytest.approx(float(lidar(z, names)), rel=1e-14)
    for bad in (None, "abc", {1: 2}, 5, [[1, 2]] * 12):
        with pytest.raises(InputError, match=r"'groups' argument of lidar must be one label"):
            lidar(z, bad)


def test_the_scaled_measures_keep_exact_gradients():
    """The scale c = max |Z| is detached; the measures' gradients stay those of the formula."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(30, 6, generator=g, dtype=torch.float64, requires_grad=True)
    groups = torch.arange(10).repeat_interleave(3)
    assert torch.autograd.gradcheck(lambda t: rankme(t), (z,))
    assert torch.autograd.gradcheck(lambda t: alpha_req(t, fit_range=(1, 6)).intercept, (z,))
    assert torch.autograd.gradcheck(lambda t: lidar(t, groups), (z,))
