"""Wall time and peak memory per rank of ``analyze`` in one process and on 2 (or more) ranks.

A safetensors file of Llama-shaped blocks (per block: q, k, v, o of ``hidden x hidden``,
gate and up of ``ffn x hidden``, down of ``hidden x ffn``, ``ffn = 2.6875 hidden`` as in
Llama-7B's 11008 / 4096) is written to a temporary folder, then analysed

* in one process with one worker thread (``workers=1``),
* in one process with one worker thread per rank of the distributed run
  (``workers=N``: the same cores, shared by threads),
* by ``N`` gloo ranks on the CPU launched by torchrun (``python -m torch.distributed.run
  --nproc-per-node N``), ``workers=1`` each,

each in a fresh process, ``--repeats`` times in turn (the least time is printed: on a
shared machine the others' load only ever adds). The first and the last run have
``OMP_NUM_THREADS=1`` (torchrun sets it for each rank), so each process computes on one
core. Per run: the time of the ``analyze`` call (rank 0's, which ends with the gather, so
every rank's share is in it), the wall time of the whole command (interpreter, imports
and, for torchrun, the rendezvous), and each process's peak resident set (``VmHWM``,
Linux) in all and above what it held after importing torch and analysing one small
tensor. Ratios are against the first run; the balance line gives each rank's time in
its share; ``max rel diff`` is the largest relative
difference of a report column from the first run's, which the distributed run must keep
within 1e-12 (it computes every matrix as the one-thread process does; threads of one
process may round differently).

Usage: ``python benchmarks/bench_distributed.py [--hidden 1024] [--blocks 2] [--ranks 2]
[--repeats 2]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, sys, time, torch
from infospec.analysis import analyze

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

path, workers, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
distributed = "RANK" in os.environ
analyze({"w": torch.randn(64, 64)}, progress=False, workers=1)   # warm the libraries
base = hwm()
start = time.perf_counter()
report = analyze(path, progress=False, workers=workers, distributed=distributed)
seconds = time.perf_counter() - start
rank = int(os.environ.get("RANK", 0))
result = {"rank": rank, "seconds": seconds, "hwm": hwm(), "base": base,
          "items": report.meta.get("rank_items"), "rank_seconds": report.meta.get("rank_seconds")}
if rank == 0:
    result["weights"] = report.weights
with open(f"{out}.{rank}", "w") as fh:
    json.dump(result, fh)
if distributed:
    torch.distributed.destroy_process_group()
"""


def _checkpoint(path: Path, hidden: int, blocks: int) -> int:
    """Write the blocks in bfloat16; returns the number of matrices."""
    import torch
    from llama_shapes import block_shapes
    from safetensors.torch import save_file

    shapes = block_shapes(hidden)
    g = torch.Generator().manual_seed(0)
    tensors = {
        f"model.layers.{b}.{name}.weight": (
            torch.randn(*shape, generator=g) / math.sqrt(shape[1])
        ).bfloat16()
        for b in range(blocks)
        for name, shape in shapes.items()
    }
    save_file(tensors, str(path))
    return len(tensors)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str], out: Path, ranks: int, env: dict[str, str]) -> dict:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    results = [json.loads(Path(f"{out}.{r}").read_text()) for r in range(ranks)]
    return {"wall": wall, "results": results}


def _same(got: list[dict], want: list[dict]) -> float:
    """The largest relative difference of the numeric columns (rows and names must match)."""
    assert [r["name"] for r in got] == [r["name"] for r in want], "rows differ"
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            if isinstance(value, float) and math.isfinite(value):
                worst = max(worst, abs(g[key] - value) / max(abs(value), 1e-300))
            elif not isinstance(value, float):
                assert g[key] == value, (w["name"], key)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024, help="hidden width (default 1024)")
    parser.add_argument("--blocks", type=int, default=2, help="Llama blocks (default 2)")
    parser.add_argument("--ranks", type=int, default=2, help="distributed ranks (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (default 2)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    one_thread = {**env, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llama.safetensors"
        count = _checkpoint(path, args.hidden, args.blocks)
        child = Path(tmp) / "child.py"
        child.write_text(CHILD)
        print(
            f"{count} Llama-shaped bf16 matrices ({args.blocks} blocks at hidden {args.hidden}), "
            f"{path.stat().st_size / 1e6:.0f} MB; {os.cpu_count()} CPU cores; "
            f"load average {os.getloadavg()[0]:.2f} at the start"
        )
        plans = {}
        for workers in (1, args.ranks):
            out = Path(tmp) / f"single{workers}"
            command = [sys.executable, str(child), str(path), str(workers), str(out)]
            plans[f"1 process, workers={workers}"] = (
                command,
                out,
                1,
                one_thread if workers == 1 else env,
            )
        out = Path(tmp) / "dist"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={args.ranks}",
            f"--master-port={_free_port()}",
            str(child),
            str(path),
            "1",
            str(out),
        ]
        plans[f"{args.ranks} gloo ranks, workers=1"] = (command, out, args.ranks, one_thread)
        runs: dict[str, dict] = {}
        for _ in range(args.repeats):
            for label, plan in plans.items():
                run = _run(*plan)
                best = runs.get(label)
                if best is None:
                    runs[label] = run
                else:  # the least of each time; the memory of the last
                    best["wall"] = min(best["wall"], run["wall"])
                    for b_res, r_res in zip(best["results"], run["results"], strict=True):
                        r_res["seconds"] = min(r_res["seconds"], b_res["seconds"])
                    best["results"] = run["results"]
        print(f"load average {os.getloadavg()[0]:.2f} at the end")

    first = next(iter(runs.values()))
    reference = first["results"][0]["weights"]
    header = (
        f"{'run':<26} {'analyze s':>10} {'x':>6} {'command s':>10} {'x':>6} "
        f"{'peak MB/rank':>13} {'above base':>11} {'tensors/rank':>13} {'max rel diff':>13}"
    )
    print(header)
    print("-" * len(header))
    for label, run in runs.items():
        res = run["results"]
        seconds = res[0]["seconds"]
        peaks = "/".join(f"{r['hwm'] / 1e6:.0f}" for r in res)
        above = "/".join(f"{(r['hwm'] - r['base']) / 1e6:.0f}" for r in res)
        items = res[0]["items"]
        share = "/".join(str(n) for n in items) if items else str(count)
        print(
            f"{label:<26} {seconds:>10.2f} {seconds / first['results'][0]['seconds']:>6.2f} "
            f"{run['wall']:>10.2f} {run['wall'] / first['wall']:>6.2f} {peaks:>13} "
            f"{above:>11} {share:>13} {_same(res[0]['weights'], reference):>13.1e}"
        )
    dist_run = list(runs.values())[-1]["results"][0]["weights"]
    worst = _same(dist_run, reference)
    assert worst <= 1e-12, f"the distributed report differs by {worst:.1e} from one process"
    seconds = list(runs.values())[-1]["results"][0]["rank_seconds"]
    print(
        "balance: each rank's seconds in the stages "
        + ", ".join(f"{t:.2f}" for t in seconds)
        + f" (the slowest {max(seconds) / (sum(seconds) / len(seconds)):.2f}x their mean)"
    )
    print("the distributed report: the rows of one process, in order, every column within 1e-12")


if __name__ == "__main__":
    main()
