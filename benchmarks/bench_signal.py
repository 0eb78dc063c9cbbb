"""Framewise spectral flatness: infospec's ``frame_flatness`` against librosa, same inputs.

Both compute ``librosa.feature.spectral_flatness`` (the outputs are checked equal in the
run); the signal is CPython's test recording ``pluck-pcm16.wav`` tiled to the length
shown, or a generated chirp in noise where that file is not installed. librosa is timed on
float64 input (the precision infospec computes in) and on float32 (librosa's usual). Best
of ``--repeat`` runs each; ratio = librosa time / infospec time (> 1: infospec faster), with
torch on one thread (librosa's numpy work is single-threaded) and on its default count. On
a machine with CUDA the GPU time is printed too (synchronised).

Run: python benchmarks/bench_signal.py [--seconds 60] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from infospec.spectra import frame_flatness

RATE = 22050


def _audio(seconds: float) -> tuple[np.ndarray, str]:
    pluck = Path(sysconfig.get_paths()["stdlib"]) / "test" / "audiodata" / "pluck-pcm16.wav"
    n = int(seconds * RATE)
    if pluck.is_file():
        from scipy.io import wavfile

        _, data = wavfile.read(pluck)
        mono = data.mean(axis=1) / 32768.0
        return np.resize(mono, n), f"{pluck.name} tiled"
    t = np.arange(n) / RATE
    rng = np.random.default_rng(0)
    chirp = np.sin(2 * np.pi * (100 + 2000 * t / seconds) * t)
    return chirp + 0.1 * rng.standard_normal(n), "generated chirp in noise"


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    import librosa

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    y, what = _audio(args.seconds)
    print(f"load before {os.getloadavg()}")
    print(f"signal: {what}, {len(y)} samples ({args.seconds:g} s at {RATE} Hz)")
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)  # librosa's numpy work is single-threaded
        print(f"torch threads {threads}:")
        _compare(librosa, y, args.repeat)
    torch.set_num_threads(default_threads)
    print(f"load after {os.getloadavg()}")


def _compare(librosa, y: np.ndarray, repeat: int) -> None:
    for kw in (
        dict(n_fft=2048, hop_length=512),
        dict(n_fft=512, hop_length=128, pad_mode="reflect"),
        dict(n_fft=256, hop_length=64, window="hamming", center=False),
    ):
        ref = librosa.feature.spectral_flatness(y=y, **kw)
        got = frame_flatness(y, **kw).numpy()
        diff = float(np.abs(got - ref).max())
        assert diff < 1e-10, diff
        y32 = y.astype(np.float32)
        t_ours = _best(lambda: frame_flatness(y, **kw), repeat)  # noqa: B023
        t_lib = _best(lambda: librosa.feature.spectral_flatness(y=y, **kw), repeat)  # noqa: B023
        t_lib32 = _best(lambda: librosa.feature.spectral_flatness(y=y32, **kw), repeat)  # noqa: B023
        line = (
            f"  {kw}: frames {ref.shape[-1]}  |diff| {diff:.1e}  infospec {t_ours * 1e3:7.1f} ms"
            f"  librosa f64 {t_lib * 1e3:7.1f} ms (ratio {t_lib / t_ours:5.2f})"
            f"  librosa f32 {t_lib32 * 1e3:7.1f} ms (ratio {t_lib32 / t_ours:5.2f})"
        )
        if torch.cuda.is_available():
            yg = torch.as_tensor(y, device="cuda")
            frame_flatness(yg, **kw)

            def gpu() -> None:
                frame_flatness(yg, **kw)  # noqa: B023
                torch.cuda.synchronize()

            t_gpu = _best(gpu, repeat)
            line += f"  cuda {t_gpu * 1e3:6.2f} ms (librosa f64 / cuda {t_lib / t_gpu:6.1f})"
        print(line)


if __name__ == "__main__":
    main()
