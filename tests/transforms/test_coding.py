"""TransformCoder: the KLT, reverse water-filling, the quantizer and the range-coded bitstream."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infospec import InputError, distortion_rate, rate_distortion
from infospec.transforms import TransformCoder, empirical_entropy_bits, truncation_curve

pytest.importorskip("constriction")

SCALAR_GAP = 0.5 * math.log2(math.pi * math.e / 6)  # 0.2546 bits


def _gaussian(n, stds, seed=0, rotate=True):
    """n draws of N(3, Q diag(stds^2) Q^T), one fixed rotation Q for every seed."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(stds))) * np.asarray(stds)
    if rotate:
        q, _ = np.linalg.qr(np.random.default_rng(99).standard_normal((len(stds), len(stds))))
        x = x @ q.T
    return torch.from_numpy(x + 3.0)


def test_high_rate_gap_is_the_scalar_quantizer_gap():
    r"""Bitstream rate minus R(D) per kept component -> 1/2 log2(pi e / 6) at high rate.

    Tolerance, per component, for n = 40000 test vectors at >= 6 bits per component
    (Delta <= sigma / 18): the high-resolution formulas for H(Q) and Delta^2/12 are exact up
    to terms in exp(-2 pi^2 sigma^2 / Delta^2) (Poisson summation), i.e. nothing; the
    code length of a symbol under the fitted Gaussian has a standard deviation of about
    1.02 bits (that of a Gaussian log-density), so its mean over n vectors is within
    4 * 1.02 / sqrt(n) = 0.02 bits; the measured error has relative standard deviation
    0.89 / sqrt(n k), moving R(D) by under 0.005 bits; the range coder's final word and the
    header add 136 bits per stream (0.0034 bits per vector), the fitted variance's error
    about 1e-5 bits and the leaky model under 1e-4 bits per symbol. Hence 0.03.
    """
    stds = [6.0, 3.0, 1.5, 0.75]
    train = _gaussian(40000, stds, seed=1)
    test = _gaussian(40000, stds, seed=2)
    coder = TransformCoder(rate=40.0).fit(train)
    assert coder.n_active_ == 4
    assert coder.step_ < 0.75 / 18
    bits = len(coder.encode(test)) * 8 / test.shape[0]
    dist = coder.distortion(test)
    bound = float(rate_distortion(coder.eigenvalues_, dist, bits=True).rate)
    gap = (bits - bound) / coder.n_active_
    assert gap == pytest.approx(SCALAR_GAP, abs=0.03)
    # the error per component is the water level: Delta^2 / 12 = theta
    assert dist / 4 == pytest.approx(coder.theta_, rel=0.02)


@pytest.mark.parametrize("model", ["gaussian", "laplace"])
def test_decode_of_encode_is_the_dequantized_quantization_exactly(model):
    train = _gaussian(3000, [5.0, 2.0, 1.0, 0.3, 0.01], seed=3)
    test = _gaussian(500, [5.0, 2.0, 1.0, 0.3, 0.01], seed=4)
    test[0] *= 1e3  # an outlier far beyond the clip range
    coder = TransformCoder(rate=12.0, model=model).fit(train)
    data = coder.encode(test)
    assert isinstance(data, bytes)
    decoded = coder.decode(data)
    assert torch.equal(decoded, coder.dequantize(coder.quantize(test)))
    assert decoded.shape == test.shape and decoded.dtype == torch.float64
    q = coder.quantize(test)
    assert bool((q.abs() <= coder.max_symbols_).all())
    assert bool((q[0].abs() == coder.max_symbols_).any())  # the outlier was clipped


def test_allocation_is_reverse_water_filling():
    train = _gaussian(5000, [4.0, 2.0, 1.0, 0.5, 0.25, 0.125], seed=5)
    coder = TransformCoder(rate=6.0).fit(train)
    lam = coder.eigenvalues_
    dr = distortion_rate(lam, 6.0, bits=True)
    assert coder.theta_ == pytest.approx(float(dr.theta), rel=1e-12)
    assert coder.distortion_ == pytest.approx(float(dr.distortion), rel=1e-12)
    assert coder.n_active_ == int((lam > dr.theta).sum())
    assert coder.step_ == pytest.approx(math.sqrt(12 * coder.theta_), rel=1e-15)
    # eigenvalues descending and equal to those of the sample covariance (ddof=0)
    x = train.numpy()
    want = np.sort(np.linalg.eigvalsh(np.cov(x.T, ddof=0)))[::-1]
    np.testing.assert_allclose(lam.numpy(), want, rtol=1e-10)
    # the distortion target gives the same operating point
    other = TransformCoder(distortion=coder.distortion_).fit(train)
    assert other.theta_ == pytest.approx(coder.theta_, rel=1e-10)
    assert other.rate_bits_ == pytest.approx(6.0, rel=1e-10)
    assert coder.at(distortion=coder.distortion_).n_active_ == coder.n_active_


def test_transform_round_trips_and_is_orthonormal():
    train = _gaussian(2000, [3.0, 1.0, 0.2], seed=6)
    coder = TransformCoder(rate=4.0).fit(train)
    U = coder.components_
    np.testing.assert_allclose((U @ U.T).numpy(), np.eye(3), atol=1e-12)
    y = coder.transform(train)
    np.testing.assert_allclose(coder.inverse_transform(y).numpy(), train.numpy(), atol=1e-12)
    # coefficients are decorrelated with the eigenvalues as variances
    cov = np.cov(y.numpy().T, ddof=0)
    np.testing.assert_allclose(np.diag(cov), coder.eigenvalues_.numpy(), rtol=1e-10)
    assert abs(cov[0, 1]) < 1e-10 * cov[0, 0]


def test_rotation_of_the_data_changes_nothing_measured():
    rng = np.random.default_rng(7)
    base = _gaussian(4000, [3.0, 1.0, 0.5, 0.1], seed=8, rotate=False)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    rotated = base @ torch.from_numpy(q.T)
    a = TransformCoder(rate=10.0).fit(base)
    b = TransformCoder(rate=10.0).fit(rotated)
    np.testing.assert_allclose(a.eigenvalues_.numpy(), b.eigenvalues_.numpy(), rtol=1e-10)
    assert a.theta_ == pytest.approx(b.theta_, rel=1e-10)
    assert a.distortion(base) == pytest.approx(b.distortion(rotated), rel=0.05)


def test_streamed_fit_equals_one_batch():
    x = _gaussian(3000, [2.0, 1.0, 0.5], seed=9)
    one = TransformCoder(rate=5.0).fit(x)
    many = TransformCoder(rate=5.0).fit([x[:1000], x[1000:1700], x[1700:]])
    np.testing.assert_allclose(many.eigenvalues_.numpy(), one.eigenvalues_.numpy(), rtol=1e-12)
    np.testing.assert_allclose(many.mean_.numpy(), one.mean_.numpy(), rtol=1e-12)
    assert many.n_samples_ == 3000


def test_uncentred_code_uses_the_second_moment():
    x = _gaussian(2000, [1.0, 0.5], seed=10, rotate=False)  # mean 3
    coder = TransformCoder(rate=4.0, center=False).fit(x)
    want = np.sort(np.linalg.eigvalsh(x.numpy().T @ x.numpy() / 2000))[::-1]
    np.testing.assert_allclose(coder.eigenvalues_.numpy(), want, rtol=1e-10)
    assert bool((coder.mean_ == 0).all())


def test_empirical_entropy_matches_scipy():
    from scipy.stats import entropy

    rng = np.random.default_rng(11)
    q = rng.integers(-5, 6, size=(1000, 3))
    q[:, 2] = 7
    got = empirical_entropy_bits(q).numpy()
    for j in range(3):
        _, counts = np.unique(q[:, j], return_counts=True)
        assert got[j] == pytest.approx(entropy(counts, base=2), rel=1e-12, abs=1e-15)
    assert got[2] == 0.0


def test_truncation_curve_klt_is_the_tail_sum_and_beats_the_prefix():
    x = _gaussian(3000, [3.0, 2.0, 1.0, 0.5], seed=12)
    curve = truncation_curve(x, [1, 2, 3, 4])
    lam = TransformCoder(rate=1.0).fit(x).eigenvalues_.numpy()
    np.testing.assert_allclose(
        curve["klt_distortion"],
        [lam[1:].sum(), lam[2:].sum(), lam[3:].sum(), 0.0],
        rtol=1e-9,
        atol=1e-9,
    )
    assert bool((curve["prefix_distortion"] >= curve["klt_distortion"] - 1e-9).all())
    # axis-aligned with decreasing variances: the prefix is the KLT
    aligned = _gaussian(3000, [3.0, 2.0, 1.0, 0.5], seed=13, rotate=False)
    c2 = truncation_curve(aligned, [2])
    assert float(c2["ratio"][0]) == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: TransformCoder(), "exactly one of 'rate'"),
        (lambda: TransformCoder(rate=1.0, distortion=1.0), "got both"),
        (lambda: TransformCoder(rate=-1.0), r"'rate' parameter .* > 0"),
        (lambda: TransformCoder(rate=1.0, model="huffman"), "'model' parameter"),
        (lambda: TransformCoder(rate=1.0).fit(torch.ones(5, 3)), "covariance is zero"),
        (lambda: TransformCoder(rate=1.0).fit(torch.randn(1, 3)), "at least 2 training vectors"),
        (lambda: TransformCoder(rate=1.0).fit(torch.randn(5)), "exactly 2 dimensions"),
        (
            lambda: TransformCoder(rate=1.0).fit([torch.randn(5, 3), torch.randn(5, 4)]),
            r"'X\[1\]' .* 4 coordinates; the coder was fitted on 3",
        ),
        (lambda: TransformCoder(rate=1.0).fit(torch.tensor([[1.0, float("nan")]] * 3)), "finite"),
        (
            lambda: TransformCoder(distortion=1e9).fit(torch.randn(50, 3)),
            "below the total variance",
        ),
        (lambda: TransformCoder(rate=1.0).encode(torch.randn(5, 3)), "call fit"),
        (
            lambda: TransformCoder(rate=1.0).fit(torch.randn(50, 3)).encode(torch.randn(5, 2)),
            "fitted on 3",
        ),
        (
            lambda: TransformCoder(rate=1.0).fit(torch.randn(50, 3)).decode(b"not a stream"),
            "not a bitstream",
        ),
        (
            lambda: TransformCoder(rate=1.0).fit(torch.randn(50, 3)).decode(b"XXXX" + bytes(13)),
            "header",
        ),
        (
            lambda: TransformCoder(rate=1.0).fit(torch.randn(50, 3)).decode("text"),
            "must be bytes",
        ),
    ],
)
def test_documented_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_a_stream_of_another_operating_point_is_refused():
    x = _gaussian(500, [3.0, 1.0, 0.1], seed=14)
    coder = TransformCoder(rate=20.0).fit(x)
    data = coder.encode(x)
    low = coder.at(rate=0.5)
    assert low.n_active_ != coder.n_active_
    with pytest.raises(InputError, match="codes 3 components; this coder keeps 1"):
        low.decode(data)


def test_quantizer_keeps_the_promised_error_at_rates_the_bitstream_cannot_code():
    """Above ~16.8 bits per component the clip range is not capped: the measured error keeps
    following D(R) (it grew to the total variance when the range was capped at 2^19)."""
    x = _gaussian(4000, [4.0, 1.0, 0.1], seed=15)
    base = TransformCoder(rate=8.0).fit(x)
    for rate in (60.0, 100.0):
        coder = base.at(rate=rate)
        assert coder.distortion(x) == pytest.approx(coder.distortion_, rel=0.05)
        assert int(coder.max_symbols_[0]) > 2**19
        with pytest.raises(InputError, match=r"codes at most \+-2\^19. Pass a rate of at most"):
            coder.encode(x)
        with pytest.raises(InputError, match=r"range coder codes at most"):
            coder.decode(base.at(rate=20.0).encode(x))


def test_the_quoted_highest_coded_rate_codes_and_round_trips():
    x = _gaussian(2000, [4.0, 1.0, 0.1], seed=16)
    high = TransformCoder(rate=8.0).fit(x).at(rate=60.0)
    with pytest.raises(InputError) as info:
        high.encode(x)
    quoted = float(str(info.value).split("at most ")[2].split(" bits")[0])
    coder = high.at(rate=quoted)
    assert 2**18 < int(coder.max_symbols_[0]) <= 2**19
    assert torch.equal(coder.decode(coder.encode(x)), coder.dequantize(coder.quantize(x)))
    assert coder.distortion(x) == pytest.approx(coder.distortion_, rel=0.05)


def test_an_outlier_far_beyond_the_range_is_clipped_not_wrapped():
    x = _gaussian(500, [3.0, 1.0], seed=17)
    coder = TransformCoder(rate=30.0).fit(x)
    y = x.clone()
    y[0] = torch.tensor([1e300, -1e300], dtype=torch.float64)
    q = coder.quantize(y)
    assert torch.equal(q[0].abs(), coder.max_symbols_)
    assert torch.equal(q[1:], coder.quantize(x)[1:])


def test_a_rate_beyond_float64_symbols_is_refused():
    x = _gaussian(500, [3.0, 1.0], seed=18)
    with pytest.raises(InputError, match=r"beyond 2\^52\). Pass a lower rate"):
        TransformCoder(rate=150.0).fit(x)


@pytest.mark.parametrize("scale", [1e-150, 1e-100, 1e100, 1e150])
def test_the_code_is_scale_covariant_to_the_edges_of_float64(scale):
    x = _gaussian(800, [3.0, 1.0, 0.5, 0.1], seed=19)
    ref = TransformCoder(rate=8.0).fit(x)
    coder = TransformCoder(rate=8.0).fit(x * scale)
    assert coder.n_active_ == ref.n_active_
    assert coder.distortion_ / scale**2 == pytest.approx(ref.distortion_, rel=1e-10)
    assert torch.allclose(coder.eigenvalues_ / scale**2, ref.eigenvalues_, rtol=1e-10)
    assert torch.equal(coder.quantize(x * scale), ref.quantize(x))


def test_training_vectors_beyond_the_float64_squares_are_named():
    x = _gaussian(200, [3.0, 1.0], seed=20)
    with pytest.raises(InputError, match=r"overflows float64 \(values up to .*e\+15[56]"):
        TransformCoder(rate=4.0).fit(x * 1e155)
    with pytest.raises(InputError, match="overflows float64"):  # each batch fine, not the sum
        TransformCoder(rate=4.0).fit([x * 1e153] * 200)
    with pytest.raises(InputError, match=r"spread is below about 1e-154"):
        TransformCoder(rate=4.0).fit(x * 1e-200)


def test_damaged_bitstreams_are_refused_not_decoded():
    """A range decoder reads whatever words it is given: the CRC-32 in the header makes a
    truncated, extended or corrupted stream an error (each used to decode into other
    vectors, and a forged header claimed 10**6 vectors from 8 bytes)."""
    import struct

    gen = torch.Generator().manual_seed(4)
    X = torch.randn(200, 4, generator=gen, dtype=torch.float64)
    coder = TransformCoder(rate=12.0).fit(X)
    data = coder.encode(X)
    torch.testing.assert_close(coder.decode(data), coder.dequantize(coder.quantize(X)))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    for damaged in (data[:-4], data + bytes(4), bytes(flipped)):
        with pytest.raises(InputError, match=r"CRC-32|truncated or corrupt"):
            coder.decode(damaged)
    forged = struct.pack("<4sBIII", b"ISTC", 2, 10**6, coder.n_active_, 0) + bytes(8)
    with pytest.raises(InputError, match="CRC-32"):
        coder.decode(forged)
    # a version-1 stream (no CRC) still decodes
    v1 = struct.pack("<4sBII", b"ISTC", 1, 200, coder.n_active_) + data[17:]
    torch.testing.assert_close(coder.decode(v1), coder.decode(data))
    with pytest.raises(InputError, match="version 1, 2 or 3"):
        coder.decode(b"ISTC" + bytes([4]) + data[5:])


def test_unfitted_measures_and_bad_symbols_are_named():
    X = torch.randn(50, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for method in ("distortion", "empirical_rate_bits"):
        with pytest.raises(InputError, match=rf"TransformCoder.{method} needs a fitted coder"):
            getattr(TransformCoder(rate=6.0), method)(X)
    coder = TransformCoder(rate=6.0).fit(X)
    k = coder.n_active_
    for bad in (
        None,
        "abc",
        [["a"] * k],
        torch.ones(3, k, dtype=torch.cfloat),
        torch.ones(3, k, dtype=torch.bool),
        torch.zeros(3, k, dtype=torch.long, device="meta"),
    ):
        with pytest.raises(InputError, match=r"'symbols' argument of TransformCoder.dequantize"):
            coder.dequantize(bad)


# -- bitstream version 3: the CRC covers the header; n is checked against the words ----------
_CLAIMED = r"more or less data than its header declares|hold at most \d+ vectors"


def _stream(n=300, rate=12.0, model="gaussian", clip_sigmas=16.0):
    """A coder fitted on 2000 vectors, ``n`` other vectors and their bitstream."""
    stds = [4.0, 2.0, 1.0, 0.3]
    coder = TransformCoder(rate=rate, model=model, clip_sigmas=clip_sigmas)
    coder.fit(_gaussian(2000, stds, seed=21))
    x = _gaussian(n, stds, seed=24)
    return coder, x, coder.encode(x)


def _as_version(data, version, n=None, k=None, crc=True):
    """The coded words of a v3 ``data`` under another header, as each encoder wrote it.

    Version 1: magic, version, n, k (13 bytes); version 2: the same and the CRC-32 of the
    coded words; version 3: the CRC-32 of the first 13 header bytes and the coded words.
    ``crc=False`` keeps the CRC of ``data`` (a header edited in place); otherwise it is
    recomputed, as a forger would.
    """
    import struct
    import zlib

    _, _, n0, k0, crc0 = struct.unpack_from("<4sBIII", data)
    n, k, payload = n0 if n is None else n, k0 if k is None else k, data[17:]
    head = struct.pack("<4sBII", b"ISTC", version, n, k)
    if version == 1:
        return head + payload
    if not crc:
        value = crc0
    elif version == 2:
        value = zlib.crc32(payload)
    else:
        value = zlib.crc32(head + payload)
    return head + struct.pack("<I", value) + payload


@pytest.mark.parametrize("model", ["gaussian", "laplace"])
@pytest.mark.parametrize(("n", "rate"), [(1, 12.0), (300, 0.5), (300, 12.0), (2000, 40.0)])
def test_v3_stream_layout_and_exact_round_trip(model, n, rate):
    import struct
    import zlib

    coder, x, data = _stream(n=n, rate=rate, model=model)
    magic, version, n_read, k, crc = struct.unpack_from("<4sBIII", data)
    assert (magic, version, n_read, k) == (b"ISTC", 3, n, coder.n_active_)
    assert (len(data) - 17) % 4 == 0
    assert crc == zlib.crc32(data[:13] + data[17:])
    assert torch.equal(coder.decode(data), coder.dequantize(coder.quantize(x)))


def test_v3_stream_with_any_byte_changed_is_refused():
    coder, _, data = _stream(n=60)
    assert len(data) > 17 + 16
    for pos in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[pos] ^= flip
            with pytest.raises(InputError, match=r"CRC-32|header|components"):
                coder.decode(bytes(damaged))


@pytest.mark.parametrize("model", ["gaussian", "laplace"])
def test_v1_and_v2_streams_still_decode(model):
    coder, x, data = _stream(model=model)
    ref = coder.dequantize(coder.quantize(x))
    for version in (1, 2):
        old = _as_version(data, version)
        assert old[4] == version and len(old) == len(data) - (4 if version == 1 else 0)
        assert torch.equal(coder.decode(old), ref)
    with pytest.raises(InputError, match="CRC-32"):  # v2: the CRC of the words is checked
        coder.decode(_as_version(data, 2)[:-4] + bytes(4))


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("delta", [-299, -150, -1, 1, 2, 10, 150, 300, 10**6])
def test_a_patched_vector_count_is_refused(version, delta):
    """The count n edited (the CRC recomputed as a forger would): the decoder, which reads
    zeros past the last word, used to return n vectors, all of them other values."""
    coder, _, data = _stream(n=300)
    forged = _as_version(data, version, n=300 + delta)
    with pytest.raises(InputError, match=_CLAIMED):
        coder.decode(forged)
    if version == 3:  # edited in place, without a new CRC
        with pytest.raises(InputError, match=r"CRC-32 check.*\(its header and its"):
            coder.decode(_as_version(data, 3, n=300 + delta, crc=False))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_header_of_zero_vectors_or_trailing_words_is_refused(version):
    coder, _, data = _stream(n=300)
    with pytest.raises(InputError, match="more or less data than its header declares"):
        coder.decode(_as_version(data, version, n=0))
    longer = _as_version(data + bytes(4), version)  # an extra word under a fresh CRC
    with pytest.raises(InputError, match=_CLAIMED):
        coder.decode(longer)


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("rate", [0.5, 24.0])
def test_a_tiny_payload_claiming_ten_million_vectors_is_refused_before_decoding(
    monkeypatch, version, rate
):
    """16 zero bytes under a header claiming 10**7 vectors (and a correct CRC) used to be
    decoded into 10**7 vectors (24 s, 1.6 GB): the count is refused from the payload's
    length before the decoder is built or any output allocated."""
    import struct
    import zlib

    import constriction

    coder, _, _ = _stream(rate=rate)
    payload = bytes(16)
    head = struct.pack("<4sBII", b"ISTC", version, 10**7, coder.n_active_)
    crc = {1: b"", 2: struct.pack("<I", zlib.crc32(payload))}
    crc[3] = struct.pack("<I", zlib.crc32(head + payload))
    data = head + crc[version] + payload

    def no_decoder(*args, **kwargs):
        raise AssertionError("the range decoder was built for a forged count")

    monkeypatch.setattr(constriction.stream.queue, "RangeDecoder", no_decoder)
    monkeypatch.setattr(torch, "empty", no_decoder)
    with pytest.raises(InputError, match=r"claims 10000000 vectors, but its 16 bytes of coded"):
        coder.decode(data)


@pytest.mark.parametrize("model", ["gaussian", "laplace"])
@pytest.mark.parametrize("clip_sigmas", [0.05, 1.0, 16.0])
@pytest.mark.parametrize("rate", [0.5, 8.0, 24.0, 60.0])
@pytest.mark.parametrize("where", ["mean", "edge", "data"])
def test_the_payload_bound_is_a_lower_bound_on_every_stream(model, clip_sigmas, rate, where):
    """The cheapest streams are all-mean vectors (symbol 0) and, when the clip range is
    narrow, all-edge ones (an edge bin holds the tail beyond it): the bound on bits per
    vector must stay below what the coder spends on them, or decode refuses genuine data."""
    x = _gaussian(3000, [8.0, 4.0, 2.0, 1.0], seed=22)
    coder = TransformCoder(rate=rate, model=model, clip_sigmas=clip_sigmas).fit(x)
    if int(coder.max_symbols_[0]) > 2**19:
        pytest.skip("beyond the bitstream's clip range")
    n = 5000
    if where == "mean":
        y = coder.mean_.expand(n, -1)
    elif where == "edge":
        y = coder.mean_ + 1e6 * coder.components_[: coder.n_active_].sum(0).expand(n, -1)
    else:
        y = _gaussian(n, [8.0, 4.0, 2.0, 1.0], seed=23)
    data = coder.encode(y)
    bits = coder._min_bits_per_vector()
    assert bits > 0
    assert n * bits <= 8 * (len(data) - 17) + 128
    assert torch.equal(coder.decode(data), coder.dequantize(coder.quantize(y)))
