import math
from collections import Counter

import numpy as np
import pytest

from infospec._errors import InputError
from infospec.tools.ngram import ByteNgram
from infospec.tools.patching import entropy_patches

H = [0.1, 2.0, 0.3, 0.2, 3.0, 2.9, 0.1, 1.6]


def test_global_cuts():
    assert entropy_patches(entropies=H, threshold=1.5).tolist() == [0, 1, 4, 5, 7]


def test_monotonic_cuts():
    # rises: 1.9, -1.7, -0.1, 2.8, -0.1, -2.8, 1.5 ; > 1.5 at t = 1, 4
    assert entropy_patches(entropies=H, threshold=1.5, mode="monotonic").tolist() == [0, 1, 4]


def test_both_cuts():
    got = entropy_patches(entropies=H, threshold=1.5, threshold_add=1.0, mode="both")
    assert got.tolist() == [0, 1, 4, 7]


def test_max_patch_length_splits():
    got = entropy_patches(entropies=np.zeros(10), max_patch_length=4)
    assert got.tolist() == [0, 4, 8]
    got = entropy_patches(entropies=H, threshold=1.5, mode="monotonic", max_patch_length=2)
    assert got.tolist() == [0, 1, 3, 4, 6]


def test_callable_model_entropies_in_nats():
    data = b"abcd"
    uniform = entropy_patches(data, lambda d: np.full((len(d), 256), 1 / 256), threshold=5.0)
    assert uniform.tolist() == [0, 1, 2, 3]  # log 256 = 5.545 nats > 5
    assert entropy_patches(
        data, lambda d: np.full((len(d), 256), 1 / 256), threshold=6
    ).tolist() == [0]


def _direct_bpb(train: bytes, test: bytes, order: int, alpha: float) -> float:
    pad = b"\0" * (order - 1)
    tr, te = pad + train, pad + test
    pair, ctx = Counter(), Counter()
    for t in range(len(train)):
        c = tr[t : t + order - 1]
        pair[c, tr[t + order - 1]] += 1
        ctx[c] += 1
    total = 0.0
    for t in range(len(test)):
        c = te[t : t + order - 1]
        total -= math.log2((pair[c, te[t + order - 1]] + alpha) / (ctx[c] + 256 * alpha))
    return total / len(test)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_bits_per_byte_matches_direct_count(order):
    train = b"the quick brown fox jumps over the lazy dog; the dog sleeps. " * 3
    test = b"the lazy fox sleeps over the quick dog!"
    m = ByteNgram(order, alpha=0.5).fit(train)
    assert m.bits_per_byte(test) == pytest.approx(_direct_bpb(train, test, order, 0.5), rel=1e-12)


def test_ngram_entropies_match_direct_and_partial_fit():
    train = b"abracadabra abracadabra"
    # each fit() is its own document (the context restarts), so two fits add their counts
    two = ByteNgram(2, alpha=0.3).fit(train[:10]).fit(train[10:])
    a, b = ByteNgram(2).fit(train[:10]), ByteNgram(2).fit(train[10:])
    assert two._pair_counts.sum() == len(train)
    merged = Counter(dict(zip(a._pair_keys.tolist(), a._pair_counts.tolist(), strict=True)))
    merged.update(dict(zip(b._pair_keys.tolist(), b._pair_counts.tolist(), strict=True)))
    assert dict(zip(two._pair_keys.tolist(), two._pair_counts.tolist(), strict=True)) == dict(
        merged
    )
    m = ByteNgram(2, alpha=0.3).fit(train)
    h = m.entropies(b"ab")
    # context of 'b' is 'a': counts after 'a' in train
    after_a = Counter(train[i + 1] for i in range(len(train) - 1) if train[i] == ord("a"))
    n = sum(after_a.values())
    p = np.full(256, 0.3 / (n + 256 * 0.3))
    for b, c in after_a.items():
        p[b] = (c + 0.3) / (n + 256 * 0.3)
    assert p.sum() == pytest.approx(1.0)
    assert h[1] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)
    assert ByteNgram(2).fit(b"xy").entropies(b"qq")[1] == pytest.approx(math.log(256))


def test_errors():
    with pytest.raises(InputError, match="mode"):
        entropy_patches(entropies=H, mode="local")
    with pytest.raises(InputError, match="threshold_add"):
        entropy_patches(entropies=H, mode="both")
    with pytest.raises(InputError, match="max_patch_length"):
        entropy_patches(entropies=H, max_patch_length=0)
    with pytest.raises(InputError, match="entropies"):
        entropy_patches(entropies=[1.0, float("nan")])
    with pytest.raises(InputError, match="order"):
        ByteNgram(7)
    with pytest.raises(InputError, match="alpha"):
        ByteNgram(2, alpha=0)
    with pytest.raises(InputError, match="expected"):
        entropy_patches(b"ab", lambda d: np.ones((1, 256)))
