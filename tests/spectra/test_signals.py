import itertools
import math
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from infospec import InputError, spectral_flatness
from infospec.spectra import frame_entropy, frame_flatness, power_spectrogram

#: A real recording that CPython's own test suite ships (a plucked string, 16-bit stereo
#: at 11025 Hz, 3307 samples): Lib/test/audiodata/pluck-pcm16.wav.
PLUCK = Path(sysconfig.get_paths()["stdlib"]) / "test" / "audiodata" / "pluck-pcm16.wav"


def _signal(rng, n=6000):
    t = np.arange(n)
    return rng.standard_normal(n) * np.linspace(0, 1, n) + np.sin(0.3 * t) + 0.5 * (t > n // 2)


def _librosa_flatness(y, **kw):
    librosa = pytest.importorskip("librosa")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # librosa: n_fft too large for the signal
        return librosa.feature.spectral_flatness(y=y, **kw)


def _pluck():
    if not PLUCK.is_file():
        pytest.skip(f"CPython's test audio {PLUCK} is not installed here")
    from scipy.io import wavfile

    rate, data = wavfile.read(PLUCK)
    assert rate == 11025 and data.dtype == np.int16
    return data.T.astype(np.float64) / 32768.0  # (channels, samples)


_GRID = list(
    itertools.product(
        [7, 64, 255],  # n_fft (odd ones too)
        [3, 48, 200],  # hop: shorter and longer than the frame
        [None, 40],  # win_length
        ["constant", "edge", "linear_ramp", "reflect", "symmetric"],
        [True, False],
    )
)


@pytest.mark.parametrize(("n_fft", "hop", "win", "mode", "center"), _GRID)
def test_equals_librosa_over_the_framing_options(rng, n_fft, hop, win, mode, center):
    if win is not None and win > n_fft:
        win = n_fft
    y = _signal(rng, 1500)
    for n in (5, 300, 1500):  # shorter than a frame, a few frames, many
        if not center and n < n_fft:
            continue
        ref = _librosa_flatness(
            y[:n], n_fft=n_fft, hop_length=hop, win_length=win, center=center, pad_mode=mode
        )
        got = frame_flatness(
            y[:n], n_fft=n_fft, hop_length=hop, win_length=win, center=center, pad_mode=mode
        )
        assert got.shape == ref.shape
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    ("window", "amin", "power"),
    [
        ("hann", 1e-10, 2.0),
        ("hamming", 1e-3, 1.0),
        (("kaiser", 6.0), 1e-6, 0.5),
        ("blackmanharris", 1e-10, 3.0),
        (np.bartlett(300), 1e-10, 2.0),  # an array of win_length samples
    ],
)
def test_equals_librosa_on_real_audio(window, amin, power):
    y = _pluck()
    kw = dict(n_fft=512, hop_length=128, win_length=300, window=window, amin=amin, power=power)
    ref = _librosa_flatness(y, **kw)  # stereo: librosa's leading channel axis
    got = frame_flatness(y, **kw)
    assert got.shape == ref.shape == (2, 1, 1 + 3307 // 128)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-13)
    assert 0 < float(got.min()) < float(got.max()) < 1


def test_defaults_equal_librosa_defaults():
    # hop_length 512 (librosa.feature's), not win_length // 4
    y = np.concatenate([_pluck()[0]] * 3)
    ref = _librosa_flatness(y)
    got = frame_flatness(y)
    assert got.shape == ref.shape == (1, 1 + len(y) // 512)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-13)
    ref = _librosa_flatness(y, n_fft=1024)  # the pitfall: the hop stays 512
    np.testing.assert_allclose(frame_flatness(y, n_fft=1024).numpy(), ref, rtol=1e-10)


def test_float32_audio_matches_librosa_float32_to_1e6():
    y = _pluck().astype(np.float32)
    ref = _librosa_flatness(y, n_fft=256, hop_length=64)
    assert ref.dtype == np.float32
    got = frame_flatness(y, n_fft=256, hop_length=64)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-6)


def test_from_magnitude_spectrogram_equals_librosa(rng):
    librosa = pytest.importorskip("librosa")
    y = _signal(rng)
    S = np.abs(librosa.stft(y, n_fft=128, hop_length=32))
    for power in (1.0, 2.0):
        ref = librosa.feature.spectral_flatness(S=S, power=power)
        np.testing.assert_allclose(frame_flatness(S=S, power=power).numpy(), ref, rtol=1e-12)


def test_power_spectrogram_equals_librosa_stft(rng):
    librosa = pytest.importorskip("librosa")
    y = _signal(rng, 3000)
    for kw in (
        dict(n_fft=256),
        dict(n_fft=100, hop_length=7, win_length=61, window="hamming", pad_mode="reflect"),
        dict(n_fft=64, hop_length=90, center=False),
    ):
        ref = np.abs(librosa.stft(y, **kw)) ** 2
        got = power_spectrogram(y, **kw).numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9 * ref.max())
    assert power_spectrogram(y, n_fft=256).shape[-1] == 1 + 3000 // 64  # hop win_length // 4


def test_leading_batch_axes_are_independent_signals(rng):
    y = np.stack([[_signal(rng, 2000) for _ in range(3)] for _ in range(2)])  # (2, 3, n)
    got = frame_flatness(y, n_fft=128, hop_length=64, pad_mode="reflect")
    assert got.shape == (2, 3, 1, 1 + 2000 // 64)
    for i, j in itertools.product(range(2), range(3)):
        one = frame_flatness(y[i, j], n_fft=128, hop_length=64, pad_mode="reflect")
        torch.testing.assert_close(got[i, j], one, rtol=1e-13, atol=0)
    h = frame_entropy(y, n_fft=128, hop_length=64)
    assert h.shape == got.shape


def test_closed_forms_tone_impulse_and_silence():
    n_fft, f = 256, 1 + 256 // 2
    t = np.arange(4096)
    tone = np.sin(2 * np.pi * 16 * t / n_fft)  # exactly on bin 16 with a boxcar window
    kw = dict(n_fft=n_fft, hop_length=n_fft, window="boxcar", center=False)
    # |X| = n_fft / 2 on bin 16 and 0 elsewhere: only amin remains in the other 128 bins
    peak = (n_fft / 2) ** 2
    gm = math.exp((math.log(peak) + 128 * math.log(1e-10)) / f)
    np.testing.assert_allclose(frame_flatness(tone, **kw).numpy(), gm / ((peak + 128e-10) / f))
    assert float(frame_entropy(tone, **kw).max()) < 1e-8  # all the mass in one bin
    impulse = np.zeros(4096)
    impulse[3 * n_fft + 10 :: n_fft] = 3.0  # one impulse per frame: |X|^2 = 9 in every bin
    flat = frame_flatness(impulse, **kw)[0, 3:]
    torch.testing.assert_close(flat, torch.ones_like(flat), rtol=1e-12, atol=0)
    h = frame_entropy(impulse, **kw)[0, 3:]
    torch.testing.assert_close(h, torch.full_like(h, math.log2(f)), rtol=1e-12, atol=0)
    hn = frame_entropy(impulse, normalize=True, **kw)[0, 3:]
    torch.testing.assert_close(hn, torch.ones_like(hn), rtol=1e-12, atol=0)
    nats = frame_entropy(impulse, bits=False, **kw)[0, 3:]
    torch.testing.assert_close(nats, torch.full_like(nats, math.log(f)), rtol=1e-12, atol=0)
    silence = frame_flatness(np.zeros(1000), n_fft=64)  # amin in every bin
    torch.testing.assert_close(silence, torch.ones_like(silence), rtol=1e-13, atol=0)


def test_entropy_against_a_direct_float64_reference(rng):
    y = _signal(rng, 3000)
    S = power_spectrogram(y, n_fft=200, hop_length=50).numpy().clip(1e-10)
    q = S / S.sum(axis=0, keepdims=True)
    ref = -(q * np.log2(q)).sum(axis=0, keepdims=True)
    got = frame_entropy(y, n_fft=200, hop_length=50)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert float(got.min()) > 0 and float(got.max()) < math.log2(101)


def test_gain_and_shift_invariance(rng):
    y = _signal(rng, 4000)
    kw = dict(n_fft=256, hop_length=64, center=False)
    base = frame_flatness(y, **kw)
    torch.testing.assert_close(frame_flatness(7.5 * y, **kw), base, rtol=1e-10, atol=0)
    torch.testing.assert_close(frame_entropy(7.5 * y, **kw), frame_entropy(y, **kw))
    shifted = frame_flatness(y[64:], **kw)  # dropping one hop drops the first frame
    torch.testing.assert_close(shifted, base[..., 1:], rtol=1e-12, atol=0)
    assert torch.equal(
        frame_flatness(y.astype(np.int64), **kw),
        frame_flatness(torch.as_tensor(y.astype(np.int64), dtype=torch.float64), **kw),
    )


def test_is_the_measure_spectral_flatness_of_the_spectrogram(rng):
    y = _signal(rng, 3000)
    S = power_spectrogram(y, n_fft=128, hop_length=32, pad_mode="edge")
    ref = spectral_flatness(S, dim=-2, amin=1e-10).unsqueeze(-2)
    got = frame_flatness(y, n_fft=128, hop_length=32, pad_mode="edge")
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=0)


def test_overflow_is_an_error_not_inf():
    with pytest.raises(InputError, match="overflows float64 when raised to the power"):
        frame_flatness(np.full(4096, 1e200))
    with pytest.raises(InputError, match="'y' \\(or 'S'\\) argument of frame_entropy overflows"):
        frame_entropy(np.full(4096, 1e200))


def test_gradient_flows_in_float32(rng):
    y = torch.tensor(_signal(rng, 2048), dtype=torch.float32, requires_grad=True)
    flat = frame_flatness(y, n_fft=256, hop_length=128)
    assert flat.dtype == torch.float32
    flat.mean().backward()
    assert torch.isfinite(y.grad).all() and float(y.grad.abs().sum()) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_signal_device(rng):
    y = _signal(rng, 8000)
    for mode in ("constant", "reflect", "linear_ramp"):
        kw = dict(n_fft=512, hop_length=128, pad_mode=mode)
        got = frame_flatness(torch.as_tensor(y, device="cuda"), **kw)
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), frame_flatness(y, **kw), rtol=1e-9, atol=1e-12)
        assert frame_entropy(torch.as_tensor(y, device="cuda"), **kw).device.type == "cuda"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(), "needs exactly one of 'y'.*got neither"),
        (dict(y=np.ones(100), S=np.ones((5, 3))), "got both"),
        (dict(S=-np.ones((5, 3))), "'S' argument of frame_flatness must be non-negative"),
        (dict(S=np.ones(5)), "'S' argument of frame_flatness must have at least 2 dim"),
        (dict(y=np.ones(100), amin=0.0), "'amin' parameter of frame_flatness must be a float > 0"),
        (dict(y=np.ones(100), power=-1), "'power' parameter of frame_flatness must be a float > 0"),
        (dict(y=np.ones(100), n_fft=64.5), "'n_fft' parameter of power_spectrogram must be an int"),
        (dict(y=np.ones(100), n_fft=64, win_length=65), r"'win_length'.*in \[1, 64\]"),
        (dict(y=np.ones(100), hop_length=0), "'hop_length' parameter of power_spectrogram"),
        (dict(y=np.ones(100), window="nope"), "'window' parameter of power_spectrogram must be"),
        (dict(y=np.ones(100), n_fft=64, window=np.ones(10)), "win_length = 64 samples"),
        (dict(y=np.ones(100), pad_mode="wrap"), "'pad_mode' parameter of power_spectrogram"),
        (dict(y=np.ones(100), center=1), "'center' parameter of power_spectrogram must be True"),
        (dict(y=np.ones(100), center=False), "100 samples, fewer than n_fft = 2048"),
        (dict(y=np.ones((2, 0))), "'y' argument of power_spectrogram must have at least 1"),
        (dict(y=np.float64(1.0)), "'y' argument of power_spectrogram must have at least 1 dim"),
        (dict(y=np.ones(100) * 1j), "'y' argument of power_spectrogram must be real"),
        (dict(y=np.array([1.0, np.nan])), "'y' argument of power_spectrogram must be finite"),
    ],
)
def test_documented_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        frame_flatness(**kwargs)


def test_entropy_flag_errors():
    with pytest.raises(InputError, match="'bits' parameter of frame_entropy must be True"):
        frame_entropy(np.ones(100), bits=1)
    with pytest.raises(InputError, match="'normalize' parameter of frame_entropy must be True"):
        frame_entropy(np.ones(100), normalize="yes")


@pytest.mark.parametrize("exponent", [-1000, -520, 500, 1000])
def test_a_magnitude_spectrogram_covers_the_float64_range_bit_for_bit(exponent):
    """The squares of the coefficients overflowed beyond ~1e154 (a magnitude of inf) and
    underflowed below ~1e-154 (0): the frames are now taken in units of a power of two."""
    y = torch.randn(2048, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = 2.0**exponent
    ref = power_spectrogram(y, n_fft=256, power=1)
    assert torch.equal(power_spectrogram(y * s, n_fft=256, power=1) / s, ref)
    if abs(exponent) < 510:  # the power itself is representable
        power = power_spectrogram(y * s, n_fft=256) / (s * s)
        assert torch.equal(power, power_spectrogram(y, n_fft=256))


def test_a_power_beyond_float64_is_named_not_inf():
    y = torch.randn(2048, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with pytest.raises(InputError, match="power_spectrogram overflows float64 when raised"):
        power_spectrogram(y * 1e160, n_fft=256)
    with pytest.raises(InputError, match="frame_flatness overflows float64"):
        frame_flatness(y * 1e200, n_fft=256)


def test_frame_and_hop_sizes_past_the_signal():
    """n_fft beyond both the signal and 2**16 is refused (10**8 took 27 s and gigabytes);
    a hop beyond the signal gives its one frame (10**30 overflowed inside unfold)."""
    import torch

    from infospec import InputError
    from infospec.spectra import power_spectrogram

    y = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(InputError, match=r"'n_fft' parameter of power_spectrogram is 100000000"):
        power_spectrogram(y, n_fft=10**8)
    one = power_spectrogram(y, n_fft=256, hop_length=10**30)
    torch.testing.assert_close(one, power_spectrogram(y, n_fft=256, hop_length=5000))
    assert one.shape[-1] == 1
    assert power_spectrogram(y[:100], n_fft=1024).shape == (513, 1)  # padded, as librosa
