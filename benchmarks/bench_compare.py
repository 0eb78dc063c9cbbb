"""``infospec compare`` on two sharded Llama-7B-shaped checkpoints, against modeldelta 0.4.4.

Writes two bf16 checkpoints of ``--layers`` decoder layers shaped as Llama-7B's (hidden
4096, MLP 11008: q, k, v, o 4096 x 4096, gate and up 11008 x 4096, down 4096 x 11008;
405 MB a layer in bf16), each as two safetensors shards with a
``model.safetensors.index.json``. The base's entries are N(0, 0.02^2); the tuned copy
adds a full-rank N(0, 0.002^2) perturbation and a rank-8 update of the same energy
(what full fine-tuning looks like), rounded to bf16 like a saved checkpoint.

Each tool runs in a fresh interpreter, one after the other; peak RSS is the child's own
``VmHWM`` (``/proc/self/status``; it counts the memory-mapped checkpoint pages read, as
both tools read safetensors through a memory map):

* ``infospec.compare(base, tuned, k=10, workers=W)`` (``--workers``, default 1: memory
  is then one pair at a time);
* ``modeldelta.core.weight_diff.compare_models`` with its CLI's defaults (``top_k=20``),
  the library call behind ``modeldelta A B``;

then reports wall time, peak RSS, and the exactness difference on the matrices both
report: modeldelta forms the delta and its SVD in float32; infospec in float64.
Usage::

    python benchmarks/bench_compare.py [--layers 1] [--workers 1] [--dir /tmp/bench_compare]
        [--only 'q_proj|down_proj'] [--skip-modeldelta] [--reuse]

Each tool's result is saved as JSON in ``--dir``; ``--reuse`` takes it from there instead
of running that tool again (the tools can then be run at different times, each alone).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

from llama_shapes import block_shapes

SHAPES = block_shapes(suffix=".weight")


def write_pair(folder: Path, layers: int) -> int:
    """The two checkpoints under ``folder/base`` and ``folder/tuned``; bytes per checkpoint."""
    import torch
    from safetensors.torch import save_file

    names = [f"model.layers.{i}.{leaf}" for i in range(layers) for leaf in SHAPES]
    half = max(1, len(names) // 2)
    shards = {n: f"model-{1 + (j >= half):05d}-of-00002.safetensors" for j, n in enumerate(names)}
    gen = torch.Generator().manual_seed(0)
    parts: dict[str, dict[str, dict[str, torch.Tensor]]] = {"base": {}, "tuned": {}}
    size = 0
    for name in names:
        rows, cols = SHAPES[name.split(".", 3)[3]]
        w = 0.02 * torch.randn(rows, cols, generator=gen)
        noise = 0.002 * torch.randn(rows, cols, generator=gen)
        low = torch.randn(rows, 8, generator=gen) @ torch.randn(8, cols, generator=gen)
        low *= noise.norm() / low.norm()
        parts["base"].setdefault(shards[name], {})[name] = w.bfloat16()
        parts["tuned"].setdefault(shards[name], {})[name] = (w + noise + low).bfloat16()
        size += rows * cols * 2
    for side, files in parts.items():
        out = folder / side
        out.mkdir(parents=True, exist_ok=True)
        for file, tensors in files.items():
            save_file(tensors, str(out / file))
        index = {"metadata": {"total_size": size}, "weight_map": shards}
        (out / "model.safetensors.index.json").write_text(json.dumps(index))
    return size


#: Peak RSS of the child itself: /proc/self/status VmHWM, which a new process image starts
#: afresh (ru_maxrss is inherited across fork and exec on Linux, so it would report this
#: script's own peak from writing the checkpoints).
_PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

_INFOSPEC = (
    _PEAK
    + """
import json, sys, time
import infospec
t = time.perf_counter()
r = infospec.compare(sys.argv[1], sys.argv[2], k=10, workers=int(sys.argv[3]),
                     layers=sys.argv[4] or None, progress=False)
seconds = time.perf_counter() - t
rows = {x["name"]: {"sigma_max": x["sigma_max"], "frobenius_norm": x["frobenius_norm"],
                    "effective_rank": x["effective_rank"], "stable_rank": x["stable_rank"],
                    "top": [float(v) ** 0.5 for v in r.spectrum(x["name"])[:20]],
                    "overlap_left": x["overlap_left"]} for x in r.weights}
print(json.dumps({"seconds": seconds, "rss_mb": peak_mb(), "rows": rows}))
"""
)

_MODELDELTA = (
    _PEAK
    + """
import json, re, sys, time
from modeldelta.core.weight_diff import compare_models
from modeldelta.utils.model_loader import get_tensor_map
t = time.perf_counter()
keep = re.compile(sys.argv[3]) if sys.argv[3] else None
maps = [{k: v for k, v in get_tensor_map(p).items() if keep is None or keep.search(k)}
        for p in sys.argv[1:3]]
results, skipped = compare_models(*maps, top_k=20)
seconds = time.perf_counter() - t
rows = {x["name"]: {"frobenius_norm": x["frob_norm"], "effective_rank": x["effective_rank"],
                    "top": x["top_singular_values"]} for x in results}
print(json.dumps({"seconds": seconds, "rss_mb": peak_mb(), "rows": rows}))
"""
)


def run(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _result(path: Path, reuse: bool, code: str, *args: str) -> dict:
    """One tool's run, saved to ``path`` (JSON); with ``reuse``, read from there if present."""
    if reuse and path.exists():
        print(f"(reusing {path})")
        return json.loads(path.read_text())
    out = run(code, *args)
    path.write_text(json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--dir", default="/tmp/bench_compare")
    parser.add_argument("--skip-modeldelta", action="store_true")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take a tool's result from an earlier run's JSON in --dir where there is one",
    )
    parser.add_argument("--only", default="", help="regex: compare only the matching tensors")
    args = parser.parse_args()
    folder = Path(args.dir)
    marker = folder / f"layers-{args.layers}.done"
    if not marker.exists():
        size = write_pair(folder, args.layers)
        marker.write_text(str(size))
    size = int(marker.read_text())
    base, tuned = str(folder / "base"), str(folder / "tuned")
    print(
        f"pair: {args.layers} Llama-7B-shaped layers, {7 * args.layers} matrices, "
        f"2 x {size / 1e9:.2f} GB bf16 in 2 shards each"
    )
    if args.only:
        print(f"tensors matching {args.only!r} only")
    tag = f"layers-{args.layers}-workers-{args.workers}-only-{args.only or 'all'}"
    ours = _result(
        folder / f"infospec-{tag}.json",
        args.reuse,
        _INFOSPEC,
        base,
        tuned,
        str(args.workers),
        args.only,
    )
    largest = max(math.prod(s) for s in SHAPES.values()) * 2 / 1e6
    print(
        f"infospec compare (k=10, workers={args.workers}): {ours['seconds']:.1f} s, "
        f"peak RSS {ours['rss_mb']:.0f} MB (largest stored tensor {largest:.0f} MB)"
    )
    if args.skip_modeldelta:
        return
    theirs = _result(
        folder / f"modeldelta-{tag}.json", args.reuse, _MODELDELTA, base, tuned, args.only
    )
    print(
        f"modeldelta 0.4.4 compare_models (top_k=20): {theirs['seconds']:.1f} s, "
        f"peak RSS {theirs['rss_mb']:.0f} MB; speed ratio {theirs['seconds'] / ours['seconds']:.2f}"
    )
    worst_top = worst_fro = worst_er = 0.0
    for name, mine in ours["rows"].items():
        other = theirs["rows"].get(name)
        if other is None:
            continue
        top = [abs(a - b) / a for a, b in zip(mine["top"], other["top"], strict=False)]
        worst_top = max(worst_top, *top)
        worst_fro = max(
            worst_fro,
            abs(mine["frobenius_norm"] - other["frobenius_norm"]) / mine["frobenius_norm"],
        )
        worst_er = max(worst_er, abs(mine["effective_rank"] - other["effective_rank"]))
    print(
        f"modeldelta vs infospec on the same deltas: top-20 singular values differ by up to "
        f"{worst_top:.2e} (relative), ||dW||_F by {worst_fro:.2e}, effective rank by "
        f"{worst_er:.3g}"
    )


if __name__ == "__main__":
    main()
