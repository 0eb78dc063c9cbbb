"""``infospec patches FILE``: entropy patches of a file's bytes with the byte n-gram model."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("patches", help="BLT entropy patching of a file's bytes")
    p.add_argument("file")
    p.add_argument("--threshold", type=float, default=1.5, help="nats")
    p.add_argument("--threshold-add", type=float, default=None, help="nats, for --mode both")
    p.add_argument("--mode", choices=("global", "monotonic", "both"), default="global")
    p.add_argument("--max-patch-length", type=int, default=None)
    p.add_argument("--order", type=int, default=3, help="n-gram order, fitted on the file")
    p.add_argument("--output", default=None, help="write the patch start offsets, one a line")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from .._errors import SourceError
    from .._io import atomic_write
    from .ngram import ByteNgram
    from .patching import entropy_patches

    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {args.file}: {exc}") from exc
    model = ByteNgram(args.order).fit(data)
    starts = entropy_patches(
        data,
        model,
        threshold=args.threshold,
        threshold_add=args.threshold_add,
        mode=args.mode,
        max_patch_length=args.max_patch_length,
    )
    lengths = np.diff(np.append(starts, len(data)))
    print(
        f"bytes {len(data)}  patches {starts.size}  bits/byte (in-sample) "
        f"{model.bits_per_byte(data):.4f}"
        if data
        else "empty file"
    )
    if lengths.size:
        q = np.percentile(lengths, [50, 90, 99])
        print(
            f"patch length mean {lengths.mean():.3f}  median {q[0]:g}  p90 {q[1]:g}  "
            f"p99 {q[2]:g}  max {lengths.max()}"
        )
        size = max(1, round(lengths.mean()))
        print(f"fixed-size patches of {size} bytes: {-(-len(data) // size)}")
    if args.output:
        with atomic_write(args.output) as fh:
            fh.write("".join(f"{s}\n" for s in starts.tolist()))
    return 0
