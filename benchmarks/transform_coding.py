"""Transform coding of real sentence embeddings against the Gaussian bound and truncation.

Embeds the paragraphs of the built-in corpus with the MiniLM-L6 example (mean pooling over
real tokens, then L2 normalisation, as sentence-transformers does for all-MiniLM-L6-v2),
fits :class:`infospec.transforms.TransformCoder` on the first ``--train`` paragraphs and
measures on the rest (held out), printing three tables:

1. the operational rate-distortion curve: target rate, kept components, measured rate
   (plug-in entropy of the symbols and the bitstream's length, bits per embedding), the
   measured squared error (and relative to the total variance), the Gaussian R(D) of the
   training covariance at that error, and the gap per kept component (0.254 bits for a
   scalar quantizer on Gaussian data at high rate);
2. truncation at equal dimensions ``k``: keeping the first ``k`` stored coordinates (what a
   Matryoshka or prefix code keeps) against the first ``k`` KLT components, as relative
   squared errors, and the transform code with exactly ``k`` kept components (its rate
   and error);
3. the time of each step.

Usage::

    python benchmarks/transform_coding.py [--train 600] [--rates 64 128 256 512 1024]
"""

from __future__ import annotations

import argparse
import time

import torch

from infospec import rate_distortion
from infospec.example import example_batches, example_corpus, load_minilm
from infospec.transforms import TransformCoder, rate_distortion_curve, truncation_curve


def embeddings(texts: list[str]) -> torch.Tensor:
    """MiniLM sentence embeddings: mean of the last hidden states over real tokens, L2-normed."""
    model, tokenizer = load_minilm()
    out = []
    with torch.no_grad():
        for batch in example_batches(tokenizer, texts, batch_size=32, by_length=False):
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(mean, dim=-1))
    return torch.cat(out).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=600, help="paragraphs to fit on")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[32, 64, 128, 256, 512, 1024, 2048]
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    args = parser.parse_args()

    t0 = time.perf_counter()
    texts = example_corpus(None)
    emb = embeddings(texts)
    t_embed = time.perf_counter() - t0
    train, test = emb[: args.train], emb[args.train :]
    print(
        f"MiniLM-L6 embeddings of {len(texts)} corpus paragraphs (d = {emb.shape[1]}): "
        f"fit on {train.shape[0]}, measured on {test.shape[0]} held out"
    )

    t0 = time.perf_counter()
    coder = TransformCoder(rate=args.rates[0]).fit(train)
    t_fit = time.perf_counter() - t0
    total = float(((test - coder.mean_) ** 2).sum(1).mean())
    lam = coder.eigenvalues_

    t0 = time.perf_counter()
    curve = rate_distortion_curve(train, args.rates, test=test, coder=coder, bitstream=True)
    t_curve = time.perf_counter() - t0
    curve["rel_distortion"] = curve["distortion"] / total
    curve["bitstream_gap_per_component"] = (
        curve["bitstream_bits"] - curve["gaussian_rate_bits"]
    ) / curve["active"].clip(lower=1)
    print("\n1. Operational rate-distortion (bits per embedding; held-out error)")
    cols = [
        "target_rate_bits",
        "active",
        "rate_bits",
        "bitstream_bits",
        "rel_distortion",
        "gaussian_rate_bits",
        "gap_per_component",
        "bitstream_gap_per_component",
    ]
    print(curve[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))

    print("\n2. Keeping k dimensions (relative squared error on held-out embeddings)")
    trunc = truncation_curve(train, args.dims, test=test)
    rows = []
    for k, prefix, klt in zip(
        trunc["k"], trunc["prefix_distortion"], trunc["klt_distortion"], strict=True
    ):
        theta = float(lam[k]) if k < lam.numel() else float(lam[-1]) / 2
        target = float(torch.minimum(lam, torch.tensor(theta, dtype=lam.dtype)).sum())
        point = coder.at(distortion=target)
        rows.append(
            (
                k,
                prefix / total,
                klt / total,
                prefix / klt,
                point.n_active_,
                point.empirical_rate_bits(test),
                point.distortion(test) / total,
            )
        )
    print(
        f"{'k':>5} {'prefix':>9} {'KLT':>9} {'prefix/KLT':>11} {'coder k':>8} "
        f"{'coder bits':>11} {'coder err':>10}"
    )
    for k, p, q, r, a, bits, err in rows:
        print(f"{k:>5} {p:>9.4f} {q:>9.4f} {r:>11.2f} {a:>8} {bits:>11.1f} {err:>10.4f}")

    bound = rate_distortion(lam, 0.1 * float(lam.sum()), bits=True)
    print(
        f"\nGaussian R(D) at 10% relative error: {float(bound.rate):.1f} bits per embedding "
        f"({int((bound.component_rates > 0).sum())} components); float32 storage: "
        f"{32 * emb.shape[1]} bits"
    )
    print(
        f"\n3. Times: embeddings {t_embed:.1f} s, fit {t_fit * 1e3:.1f} ms, "
        f"curve of {len(args.rates)} points with bitstreams {t_curve:.2f} s"
    )


if __name__ == "__main__":
    main()
