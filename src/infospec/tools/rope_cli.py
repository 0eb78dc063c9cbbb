"""``infospec rope CONFIG``: RoPE base feasibility verdict of a Hugging Face config."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("rope", help="RoPE base feasibility for a context length")
    p.add_argument("config", help="config.json or a model folder holding one")
    p.add_argument("--context", type=int, default=None, help="default: max_position_embeddings")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32", "fp64"), default="fp32")
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run(args: argparse.Namespace) -> int:
    from .rope import rope_feasibility

    v = rope_feasibility(args.config, context=args.context, dtype=args.dtype, eps=args.eps)
    print(v.to_json() if args.json else v.to_text())
    return 0 if v.passed else 1
