"""Spectra and full weight measures of a Llama-7B-shaped checkpoint, generated on the device.

224 matrices (32 layers x {q, k, v, o: 4096x4096; gate, up: 11008x4096; down: 4096x11008}),
each generated on the device by a seeded generator when the analysis asks for it (so the
7B parameters never sit in memory together), analysed with every measure and fit by
:func:`infospec.analyze` through a custom :class:`~infospec.sources.WeightSource`.

The issue's target is <= 35 s on one H100 (``--device cuda``). On a GPU, ``analyze``
computes the spectra one after another on the device while CPU threads make the fits of
the matrices before (``--workers``); if the fits keep up, the run takes about the floor
printed below (expected, not yet measured on a GPU). On a CPU, use ``--layers 1`` and
``--scale 0.125`` for a smoke run.

Usage::

    python benchmarks/bench_llama_gpu.py --device cuda [--layers 32] [--dtype bfloat16]
        [--workers N] [--linalg default|cusolver|magma]
"""

from __future__ import annotations

import argparse
import time

import torch
from llama_shapes import block_shapes

import infospec
from infospec.sources import WeightEntry, WeightSource

SHAPES = block_shapes()  # name -> (rows, cols) of a Llama-7B block, out x in


class RandomLlama(WeightSource):
    """Llama-shaped random weights (N(0, 0.02^2)), generated on ``device`` on each load."""

    def __init__(self, layers: int, device: str, dtype: torch.dtype, scale: float) -> None:
        self.layers, self.device, self.dtype, self.scale = layers, device, dtype, scale
        self.name = "random-llama-7b-shape"
        self.description = f"{layers} Llama-7B-shaped blocks of random {dtype} weights"
        self.min_dim = 10

    def _loader(self, seed: int, shape: tuple[int, int]):
        def load(device=None):
            g = torch.Generator(device=self.device).manual_seed(seed)
            w = torch.randn(shape, generator=g, device=self.device, dtype=torch.float32)
            return (w * 0.02).to(self.dtype)

        return load

    def entries(self) -> list[WeightEntry]:
        out = []
        for i in range(self.layers):
            for j, (name, (r, c)) in enumerate(SHAPES.items()):
                shape = (max(16, int(r * self.scale)), max(16, int(c * self.scale)))
                out.append(
                    WeightEntry(
                        name=f"model.layers.{i}.{name}.weight",
                        shape=shape,
                        dtype=str(self.dtype).replace("torch.", ""),
                        kind="linear",
                        origin=self.name,
                        loader=self._loader(1000 * i + j, shape),
                    )
                )
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink every side (CPU smoke)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--workers", type=int, default=None, help="CPU threads for the fits")
    ap.add_argument(
        "--check", type=int, default=3, help="matrices whose spectra are checked on the CPU"
    )
    ap.add_argument(
        "--linalg",
        default="default",
        choices=["default", "cusolver", "magma"],
        help="torch's CUDA linear-algebra backend for eigvalsh (try both if over target)",
    )
    args = ap.parse_args()
    if args.linalg != "default":
        torch.backends.cuda.preferred_linalg_library(args.linalg)
    src = RandomLlama(args.layers, args.device, getattr(torch, args.dtype), args.scale)
    n = len(src.entries())
    # warm-up: kernels, cuSOLVER handles
    infospec.analyze(
        RandomLlama(1, args.device, src.dtype, 1 / 32), device=args.device, progress=False
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    report = infospec.analyze(src, device=args.device, progress=False, workers=args.workers)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    # the floor: the same matrices generated the same way, float64 Gram + eigvalsh only
    t0 = time.perf_counter()
    for entry in src.entries():
        w = entry.load().to(torch.float64)
        g = w.mT @ w if w.shape[1] <= w.shape[0] else w @ w.mT
        torch.linalg.eigvalsh(g)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    floor = time.perf_counter() - t0
    # correctness on the device: a few spectra against the same matrices on the CPU
    worst = 0.0
    for entry in src.entries()[: args.check]:
        w = entry.load().cpu()
        ref = infospec.singular_values(w, device="cpu") ** 2
        got = torch.from_numpy(report.spectra[f"weights/{entry.name}"])
        worst = max(worst, float(((got - ref).abs() / ref.max()).max()))
    df = report.to_dataframe()
    ok = int((df["status"] == "ok").sum())
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"device {name}, torch {torch.__version__}, {args.dtype}, scale {args.scale}, "
        f"linalg {args.linalg}"
    )
    print(
        f"{n} matrices ({ok} ok) analysed with full measures in {seconds:.2f} s "
        f"({seconds / n * 1000:.1f} ms per matrix); target on an H100 at scale 1: <= 35 s"
    )
    meta = report.meta
    if args.check:
        print(
            f"  check: ESDs of the first {args.check} matrices against the CPU: max |diff| / "
            f"lambda_max = {worst:.1e}"
        )
    print(
        f"  pipeline={meta['pipeline']}, {meta['workers']} CPU workers; summed over tensors: "
        f"spectra {meta['spectrum_seconds']:.2f} s, fits {meta['fit_seconds']:.2f} s"
    )
    print(
        f"floor (generate + float64 Gram + eigvalsh of the same matrices): {floor:.2f} s; "
        f"infospec / floor = {seconds / floor:.2f}"
    )
    print(
        df[["rows", "cols", "alpha", "mp_num_spikes", "bits_per_param"]]
        .describe()
        .loc[["mean", "min", "max"]]
        .to_string()
    )


if __name__ == "__main__":
    main()
