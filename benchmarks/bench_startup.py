"""Time to first output of the command line, against the cost of importing torch.

Runs each command in a fresh interpreter, interleaved round-robin over ``--rounds``
rounds, and prints the median wall time (and the spread) of

* ``infospec --help``;
* ``infospec describe`` (the MiniLM example's safetensors header and config);
* ``infospec describe`` of a generated header of ``--tensors`` tensors;
* ``python -c "import torch"``, what every command paid before imports were made lazy;
* ``python -c "pass"``, the interpreter alone;

with the time to the first byte on stdout for the two ``describe`` runs. Usage::

    python benchmarks/bench_startup.py [--rounds 5] [--tensors 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _first_output(cmd: list[str]) -> tuple[float, float]:
    """(seconds to the first stdout byte, seconds to exit) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.read(1)
    first = time.perf_counter() - start
    proc.stdout.read()
    proc.wait()
    return first, time.perf_counter() - start


def _header(n: int, folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path = folder / "many.safetensors"
    save_file({f"model.layers.{i}.mlp.weight": torch.zeros(2, 2) for i in range(n)}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tensors", type=int, default=20000)
    args = parser.parse_args()
    exe = [sys.executable, "-m", "infospec.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        many = _header(args.tensors, Path(tmp))
        commands = {
            "infospec --help": [*exe, "--help"],
            "infospec describe (MiniLM)": [*exe, "describe"],
            f"infospec describe ({args.tensors} tensors)": [*exe, "describe", str(many)],
            "python -c 'import torch'": [sys.executable, "-c", "import torch; print()"],
            "python -c 'pass'": [sys.executable, "-c", "print()"],
        }
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for _ in range(args.rounds):
            for name, cmd in commands.items():
                times[name].append(_first_output(cmd))
    load = os.getloadavg()[0]
    torch_s = statistics.median(t[1] for t in times["python -c 'import torch'"])
    print(f"median of {args.rounds} interleaved rounds; load average {load:.2f}")
    print(f"{'command':<36} {'first output':>13} {'exit':>9} {'spread':>9} {'/ import torch':>15}")
    for name, runs in times.items():
        first = statistics.median(r[0] for r in runs)
        total = statistics.median(r[1] for r in runs)
        spread = max(r[1] for r in runs) - min(r[1] for r in runs)
        print(f"{name:<36} {first:>12.3f}s {total:>8.3f}s {spread:>8.3f}s {total / torch_s:>15.2f}")


if __name__ == "__main__":
    main()
