"""Packed weights: listing time per layer count, and dequantization time and memory.

* **Listing.** One safetensors file of ``K`` tiny packed layers of each format
  (bitsandbytes nf4 with its quant_state, int8 with ``weight_format``, GPTQ 4-bit),
  timed through ``open_source(path).entries()``: what every command lists first, reading
  each bitsandbytes quant_state while it lists.
* **Dequantization.** One 11008 x 4096 layer of each format (a Llama-7B MLP matrix),
  dequantized by its entry's loader in a fresh process: wall time and peak RSS above the
  inputs (``ru_maxrss``), against the 172 MiB of the float32 result; where bitsandbytes is
  installed, its own dequantization of the same codes in the same process
  (``dequantize_4bit``, ``int8_vectorwise_dequant``), with the ratio.

Usage: ``python benchmarks/bench_packed.py [--layers 1000 4000]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT, IN = 11008, 4096

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from infospec.sources import StateDictSource
kind = sys.argv[1]; out, n_in = int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
n = out * n_in
if kind == "bnb_nf4":
    state = {"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [out, n_in],
             "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.01}
    sd = {"l.weight": torch.randint(0, 256, (n // 2, 1), dtype=torch.uint8, generator=g),
          "l.weight.absmax": torch.randint(0, 256, (n // 64,), dtype=torch.uint8, generator=g),
          "l.weight.quant_map": torch.linspace(-1, 1, 16),
          "l.weight.nested_absmax": torch.rand(-(-n // 64 // 256), generator=g),
          "l.weight.nested_quant_map": torch.linspace(-1, 1, 256),
          "l.weight.quant_state.bitsandbytes__nf4":
              torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)}
elif kind == "bnb_int8":
    sd = {"l.weight": torch.randint(-127, 128, (out, n_in), dtype=torch.int8, generator=g),
          "l.SCB": torch.rand(out, generator=g) * 10}
else:
    sd = {"l.qweight": torch.randint(-2**31, 2**31 - 1, (n_in // 8, out), generator=g).int(),
          "l.qzeros": torch.randint(-2**31, 2**31 - 1, (n_in // 128, out // 8), generator=g).int(),
          "l.scales": torch.rand(n_in // 128, out, generator=g).half(),
          "l.g_idx": (torch.arange(n_in) // 128).int()}
entry = {e.name: e for e in StateDictSource(sd).entries()}["l.weight"]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); w = entry.load(); ours = time.perf_counter() - t
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
del w
peer = None
try:
    import bitsandbytes.functional as F
except ImportError:
    F = None
if F is not None and kind == "bnb_nf4":
    from bitsandbytes.functional import QuantState
    parts = {k[len("l.weight."):]: v for k, v in sd.items() if k.startswith("l.weight.")}
    qs = QuantState.from_dict(parts, device="cpu")
    t = time.perf_counter(); F.dequantize_4bit(sd["l.weight"], qs); peer = time.perf_counter() - t
elif F is not None and kind == "bnb_int8":
    t = time.perf_counter(); F.int8_vectorwise_dequant(sd["l.weight"], sd["l.SCB"])
    peer = time.perf_counter() - t
print(ours, peak, "" if peer is None else peer)
"""


def _listing_file(path: Path, kind: str, layers: int) -> None:
    import torch
    from safetensors.torch import save_file

    state = torch.tensor(
        list(json.dumps({"quant_type": "nf4", "blocksize": 64, "shape": [4, 4]}).encode()),
        dtype=torch.uint8,
    )
    sd = {}
    for k in range(layers):
        p = f"model.layers.{k}.mlp"
        if kind == "bnb_nf4":
            sd[f"{p}.weight"] = torch.zeros(8, 1, dtype=torch.uint8)
            sd[f"{p}.weight.absmax"] = torch.ones(1)
            sd[f"{p}.weight.quant_map"] = torch.zeros(16)
            sd[f"{p}.weight.quant_state.bitsandbytes__nf4"] = state.clone()
        elif kind == "bnb_int8":
            sd[f"{p}.weight"] = torch.zeros(2, 2, dtype=torch.int8)
            sd[f"{p}.SCB"] = torch.ones(2)
            sd[f"{p}.weight_format"] = torch.tensor(0, dtype=torch.uint8)
        else:
            sd[f"{p}.qweight"] = torch.zeros(1, 8, dtype=torch.int32)
            sd[f"{p}.qzeros"] = torch.zeros(1, 1, dtype=torch.int32)
            sd[f"{p}.scales"] = torch.ones(1, 8)
    save_file(sd, path)


def main(layer_counts: list[int]) -> None:
    from infospec.sources import open_source

    kinds = ("bnb_nf4", "bnb_int8", "gptq_int4")
    print(f"{'format':>10} {'layers':>7} {'tensors':>8} {'listing s':>10} {'ms/layer':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for layers in layer_counts:
                path = Path(tmp) / f"{kind}_{layers}.safetensors"
                _listing_file(path, kind, layers)
                t = time.perf_counter()
                n = len(open_source(path).entries())
                s = time.perf_counter() - t
                print(f"{kind:>10} {layers:>7} {n:>8} {s:>10.3f} {s * 1e3 / layers:>9.3f}")
                path.unlink()
    print()
    print(f"{'format':>10} {'matrix':>12} {'load s':>7} {'peak MiB':>9} {'x result':>9} "
          f"{'bnb s':>7} {'bnb / ours':>11}")  # fmt: skip
    result = OUT * IN * 4 / 2**20
    for kind in kinds:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, kind, str(OUT), str(IN)],
            capture_output=True,
            text=True,
            check=True,
        )
        fields = out.stdout.split()
        ours, peak = float(fields[0]), float(fields[1])
        peer = float(fields[2]) if len(fields) > 2 else None
        ratio = f"{peer / ours:>11.2f}" if peer else f"{'-':>11}"
        print(
            f"{kind:>10} {f'{OUT}x{IN}':>12} {ours:>7.2f} {peak:>9.0f} {peak / result:>9.2f} "
            + (f"{peer:>7.2f}" if peer else f"{'-':>7}")
            + f" {ratio}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1000, 4000])
    main(parser.parse_args().layers)
