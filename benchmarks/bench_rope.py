"""RoPE verdict time for long contexts (vectorised B(m)) against a plain NumPy full-matrix peer.

Run: python benchmarks/bench_rope.py
"""

from __future__ import annotations

import os
import time

import numpy as np

from infospec.tools.rope import long_term_decay, minimal_rope_base, rope_feasibility, rope_table

CFG = dict(
    rope_theta=500000.0,
    hidden_size=4096,
    num_attention_heads=32,
    max_position_embeddings=131072,
    num_hidden_layers=32,
)


def main() -> None:
    print("load before", os.getloadavg())
    print(f"{'context':>10} {'verdict s':>10} {'peer s':>10} {'ratio':>7}")
    for L in (131072, 1_000_000):
        t = time.perf_counter()
        rope_feasibility(CFG, context=L)
        ours = time.perf_counter() - t
        th = 500000.0 ** (-np.arange(0, 128, 2) / 128)
        t = time.perf_counter()
        peer = np.cos(np.arange(L, dtype=np.float64)[:, None] * th).mean(axis=1).min()
        tp = time.perf_counter() - t
        assert abs(peer - long_term_decay(th, L)[0]) < 1e-12
        print(f"{L:>10} {ours:>10.3f} {tp:>10.3f} {tp / ours:>7.2f}")
    t = time.perf_counter()
    rows = rope_table()
    print(
        f"rope --table: {len(rows)} published models at their max_position_embeddings "
        f"in {time.perf_counter() - t:.3f} s"
    )
    for L in (4001, 32001):
        t = time.perf_counter()
        b = minimal_rope_base(L)
        print(f"minimal_rope_base({L}) = {b:.4g} in {time.perf_counter() - t:.3f} s")
    print("load after", os.getloadavg())


if __name__ == "__main__":
    main()
