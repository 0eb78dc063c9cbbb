"""Entropy patching throughput with the byte n-gram model (fit + entropies + cuts).

Peer: a pure-Python dict n-gram scoring of the same text (first 100 kB), measured in the same
run. Run: python benchmarks/bench_patches.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from infospec.tools.ngram import ByteNgram, corpus_ngram
from infospec.tools.patching import entropy_patches
from infospec.tools.tokens import minilm_tokenizer, token_starts


def main() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_bytes()
    text = (readme * (2**21 // len(readme) + 1))[: 2**21]  # real English/Markdown, 2 MiB
    print("load before", os.getloadavg())
    for order in (2, 3, 4):
        t = time.perf_counter()
        model = ByteNgram(order).fit(text[: 2**20])
        fit = time.perf_counter() - t
        t = time.perf_counter()
        starts = entropy_patches(text, model, threshold=2.0)
        run = time.perf_counter() - t
        mb = len(text) / 1e6
        print(
            f"order {order}: fit {mb / 2 / fit:6.1f} MB/s  patch {mb / run:6.1f} MB/s  "
            f"patches {starts.size}  mean length {len(text) / starts.size:.2f}"
        )
    model = corpus_ngram()
    t = time.perf_counter()
    starts = entropy_patches(text, model, threshold=3.0)
    run = time.perf_counter() - t
    print(
        f"shipped corpus model (order 3): patch {len(text) / 1e6 / run:6.1f} MB/s  "
        f"patches {starts.size}  bits/byte {model.bits_per_byte(text):.3f}"
    )
    tok = minilm_tokenizer()
    t = time.perf_counter()
    tokens = token_starts(text, tok)
    run = time.perf_counter() - t
    print(f"MiniLM token starts: {len(text) / 1e6 / run:6.2f} MB/s  tokens {tokens.size}")
    sample = text[:100_000]
    t = time.perf_counter()
    counts: dict = {}
    for i in range(2, len(sample)):
        counts[sample[i - 2 : i + 1]] = counts.get(sample[i - 2 : i + 1], 0) + 1
    peer = len(sample) / 1e6 / (time.perf_counter() - t)
    print(f"peer pure-Python trigram counting: {peer:.1f} MB/s")
    print("load after", os.getloadavg())


if __name__ == "__main__":
    main()
