"""LoRA deltas from their factors: time and memory on Llama-7B-shaped target modules.

Writes a PEFT-format adapter folder (``adapter_config.json`` and
``adapter_model.safetensors``, rank ``--rank``) for the seven matrices of ``--layers``
Llama-7B-shaped decoder layers (q, k, v, o 4096 x 4096; gate, up 11008 x 4096; down
4096 x 11008), then in a fresh interpreter runs ``infospec.analyze(folder)`` (every
delta's singular values from QR of B and A^T and an r x r SVD) and reports its wall time
and peak RSS against the size of one materialised float64 delta, which the factor route
never allocates. With ``--check`` it also materialises one delta (the 4096 x 11008 down
projection) and compares the two spectra. Usage::

    python benchmarks/bench_lora.py [--layers 4] [--rank 16] [--check]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from llama_shapes import HIDDEN, MLP, block_shapes

SHAPES = block_shapes()

_RUN = """
import json, resource, sys, time
import infospec
t = time.perf_counter()
r = infospec.analyze(sys.argv[1], progress=False)
seconds = time.perf_counter() - t
out = {"seconds": seconds, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "rows": len(r.weights)}
if sys.argv[2] == "1":
    import numpy as np, torch
    from infospec.sources import open_source
    entry = [e for e in open_source(sys.argv[1]).entries() if "down_proj" in e.name][0]
    dense = entry.load()
    want = torch.linalg.svdvals(dense).numpy()
    got = np.sqrt(r.spectrum(entry.name))
    out["max_abs_diff_over_sigma_max"] = float(np.max(np.abs(got - want)) / want[0])
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    import torch
    from safetensors.torch import save_file

    folder = Path(tempfile.mkdtemp()) / "adapter"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(args.layers):
        for leaf, (rows, cols) in SHAPES.items():
            prefix = f"base_model.model.model.layers.{i}.{leaf}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(args.rank, cols, generator=gen)
            tensors[f"{prefix}.lora_B.weight"] = 0.01 * torch.randn(rows, args.rank, generator=gen)
    save_file(tensors, folder / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "r": args.rank,
        "lora_alpha": 2 * args.rank,
        "target_modules": [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_RUN), str(folder), "1" if args.check else "0"],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    dense_mb = MLP * HIDDEN * 8 / 1e6
    print(
        f"{res['rows']} LoRA deltas (rank {args.rank}, {args.layers} Llama-7B-shaped layers): "
        f"{res['seconds']:.2f} s, peak RSS {res['rss_mb']:.0f} MB; one materialised float64 "
        f"11008 x 4096 delta would be {dense_mb:.0f} MB"
    )
    if args.check:
        print(
            f"down_proj: factor route vs torch.linalg.svdvals of the materialised float64 "
            f"product: max |diff| / sigma_max = {res['max_abs_diff_over_sigma_max']:.1e} "
            f"(RSS then includes that check)"
        )


if __name__ == "__main__":
    main()
