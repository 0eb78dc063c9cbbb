"""Peak memory of ``analyze`` on one square float32 tensor, in a fresh process per size.

Each size runs in its own Python process: torch and infospec are imported and one small
tensor is analysed first (so that the libraries' own memory is in the baseline), then the
peak resident set (``VmHWM`` of ``/proc/self/status``, Linux) is read before and after
analysing the file's one ``n x n`` float32 tensor. The difference is the per-tensor peak,
printed in MB and as a multiple of the tensor's size.

Usage: ``python benchmarks/bench_memory.py [N ...]`` (default 1024 2048 4096).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys, torch
from infospec.analysis import analyze

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

analyze({"w": torch.randn(64, 64)}, progress=False, workers=1)   # warm the libraries
before = hwm()
report = analyze(sys.argv[1], progress=False, workers=1, fits=sys.argv[2] == "fits")
assert report.weights and report.weights[0]["status"] == "ok", report.weights
print(hwm() - before)
"""


def main(sizes: list[int]) -> None:
    import torch
    from safetensors.torch import save_file

    print(f"{'n':>6} {'tensor MB':>10} {'fits':>5} {'peak MB':>9} {'x tensor':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"w{n}.safetensors"
            g = torch.Generator().manual_seed(0)
            save_file({"w": torch.randn(n, n, generator=g)}, path)
            size = n * n * 4
            for fits in ("nofits", "fits"):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path), fits],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                peak = int(out.stdout.split()[-1])
                print(
                    f"{n:>6} {size / 1e6:>10.1f} {fits == 'fits'!s:>5} {peak / 1e6:>9.1f} "
                    f"{peak / size:>9.2f}",
                    flush=True,
                )
            path.unlink()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1024, 2048, 4096])
