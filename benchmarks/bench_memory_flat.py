"""Peak memory of ``analyze`` on sharded bf16 checkpoints of 4 GB and 8 GB: flat in model size.

Each checkpoint is Llama-7B-shaped: blocks of q, k, v, o (4096 x 4096) and gate, up
(11008 x 4096), down (4096 x 11008) in bfloat16, one block per shard (405 MB), with a
``model.safetensors.index.json``; 10 blocks make 4.05 GB and 20 blocks 8.1 GB. Each
checkpoint is written to a temporary folder, analysed in a fresh Python process, then
deleted. The child imports torch and infospec and analyses one small tensor first, so
that the interpreter's and the libraries' memory is its baseline; it then times
``infospec describe``'s listing (headers only) and runs ``analyze`` at its defaults
(``--workers N`` to set its worker threads; by default ``min(4, cores)``),
reading the peak resident set (``VmHWM`` of ``/proc/self/status``, Linux) before and
after. The table gives the peak above the baseline in MB and as a multiple of the
largest tensor's float64 size (11008 x 4096 x 8 bytes = 361 MB), and the ratio of the
8 GB peak to the 4 GB one.

Usage: ``python benchmarks/bench_memory_flat.py [GB ...] [--dir DIR]`` (default 4 8; the
largest size must be free on the disk of ``DIR``, by default the temporary folder's).
``VmHWM`` counts the pages of a memory-mapped shard that are resident while it is mapped,
so a reader that kept its shards mapped would grow with the model here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llama_shapes import HIDDEN, MLP, block_shapes

SHAPES = block_shapes(suffix=".weight")
BLOCK_BYTES = sum(r * c for r, c in SHAPES.values()) * 2
LARGEST_F64 = MLP * HIDDEN * 8

CHILD = r"""
import sys, time, torch
from infospec.analysis import analyze
from infospec.sources import open_source

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

analyze({"w": torch.randn(64, 64)}, progress=False)   # warm the libraries
before = hwm()
t = time.perf_counter()
source = open_source(sys.argv[1])
names = [e.name for e in source.entries()]
listed = time.perf_counter() - t
t = time.perf_counter()
workers = None if sys.argv[2] == "default" else int(sys.argv[2])
report = analyze(sys.argv[1], progress=False, workers=workers)
wall = time.perf_counter() - t
bad = [r["name"] for r in report.weights if r["status"] != "ok"]
assert not bad and len(report.weights) == len(names), bad
print(before, hwm() - before, listed, wall, len(report.weights))
"""


def write_checkpoint(folder: Path, blocks: int) -> None:
    import torch
    from safetensors.torch import save_file

    weight_map = {}
    g = torch.Generator().manual_seed(0)
    for b in range(blocks):
        shard = f"model-{b + 1:05d}-of-{blocks:05d}.safetensors"
        tensors = {
            f"model.layers.{b}.{name}": (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
            for name, shape in SHAPES.items()
        }
        save_file(tensors, folder / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
        del tensors
    index = {"metadata": {"total_size": blocks * BLOCK_BYTES}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def main(sizes: list[float], root: str | None, workers: int | None) -> None:
    print(
        f"{'GB':>5} {'blocks':>6} {'tensors':>7} {'write s':>8} {'list ms/shard':>13} "
        f"{'analyze s':>9} {'base MB':>8} {'peak MB':>8} {'x largest f64':>13}",
        flush=True,
    )
    peaks = {}
    for gb in sizes:
        blocks = max(1, round(gb * 1e9 / BLOCK_BYTES))
        folder = Path(tempfile.mkdtemp(prefix="infospec_flat_", dir=root))
        try:
            t = time.perf_counter()
            write_checkpoint(folder, blocks)
            written = time.perf_counter() - t
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(folder), str(workers or "default")],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        base, peak, listed, wall, n = out.stdout.split()
        peaks[gb] = int(peak)
        print(
            f"{blocks * BLOCK_BYTES / 1e9:>5.2f} {blocks:>6} {n:>7} {written:>8.1f} "
            f"{float(listed) * 1e3 / blocks:>13.2f} {float(wall):>9.1f} "
            f"{int(base) / 1e6:>8.0f} {int(peak) / 1e6:>8.0f} {int(peak) / LARGEST_F64:>13.2f}",
            flush=True,
        )
    if len(peaks) > 1:
        small, large = min(peaks), max(peaks)
        print(f"peak {large:g} GB / peak {small:g} GB = {peaks[large] / peaks[small]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=float, default=[4.0, 8.0])
    parser.add_argument("--dir", default=None, help="where to write the checkpoints")
    parser.add_argument("--workers", type=int, default=None, help="analyze's workers")
    args = parser.parse_args()
    main(args.sizes, args.dir, args.workers)
