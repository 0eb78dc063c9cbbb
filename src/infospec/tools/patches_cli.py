"""``infospec patches FILE``: entropy patches of a file's bytes with a byte n-gram model.

The model is the shipped one fitted on the built-in corpus (``--model corpus``, the default,
so bits per byte are out of sample) or one fitted on the file itself (``--model file``, in
sample). The statistics are set beside fixed-size patches of the same mean length and the
MiniLM-L6 tokenizer's tokens on the same text.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("patches", help="BLT entropy patching of a file's bytes")
    p.add_argument("file")
    p.add_argument("--threshold", type=float, default=1.5, help="nats")
    p.add_argument("--threshold-add", type=float, default=None, help="nats, for --mode both")
    p.add_argument("--mode", choices=("global", "monotonic", "both"), default="global")
    p.add_argument(
        "--max-patch-length", type=int, default=None, help="split longer patches (int >= 1)"
    )
    p.add_argument(
        "--model",
        choices=("corpus", "file"),
        default="corpus",
        help="the shipped n-gram fitted on the built-in corpus (default), or one fitted on FILE",
    )
    p.add_argument("--order", type=int, default=None, help="n-gram order for --model file (3)")
    p.add_argument("--no-tokens", action="store_true", help="skip the MiniLM token comparison")
    p.add_argument("--output", default=None, help="write the patch start offsets, one a line")


def _token_lines(data: bytes, starts) -> list[str]:
    from .._errors import InfospecError
    from .tokens import boundary_agreement, token_starts

    try:
        tokens = token_starts(data)
    except InfospecError as exc:  # not UTF-8 text, or the tokenizer's package is missing
        return [f"MiniLM tokens: skipped ({exc})"]
    if tokens.size == 0:
        return ["MiniLM tokens: none (the text has no non-space characters)"]
    agree = boundary_agreement(starts, tokens)
    return [
        f"MiniLM tokens {tokens.size}  bytes/token {len(data) / tokens.size:.3f}  "
        f"patches/token {starts.size / tokens.size:.3f}",
        f"patch starts on a token start {agree['patch_on_token']:.1%}  "
        f"token starts on a patch start {agree['token_on_patch']:.1%}",
    ]


def _check_options(args: argparse.Namespace) -> None:
    """The numeric options, in the command line's words, before the file is read."""
    import math

    from .._checks import shown_str
    from .._errors import InputError

    for flag, value in (("--threshold", args.threshold), ("--threshold-add", args.threshold_add)):
        if value is not None and not math.isfinite(value):
            raise InputError(f"{flag} must be a finite number (nats); got {shown_str(value)}.")
    mpl = args.max_patch_length
    if mpl is not None and not 1 <= mpl <= 2**63 - 1:
        raise InputError(
            f"--max-patch-length must be an int in [1, 2**63 - 1]; got {shown_str(mpl)}."
        )
    if args.order is not None and not 1 <= args.order <= 4:
        raise InputError(f"--order must be an int in [1, 4]; got {shown_str(args.order)}.")
    if args.mode == "both" and args.threshold_add is None:
        raise InputError("--mode both needs --threshold-add (the rise, in nats).")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from .._errors import InputError, SourceError
    from .._io import atomic_write
    from .ngram import ByteNgram, corpus_ngram
    from .patching import entropy_patches

    _check_options(args)
    if args.model == "corpus" and args.order is not None:
        raise InputError(
            "--order sets the order of a model fitted on FILE: use it with --model file (the "
            "shipped corpus model has order 3)."
        )
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {args.file}: {exc}") from exc
    if args.model == "file":
        model = ByteNgram(3 if args.order is None else args.order).fit(data)
        which = "in-sample, fitted on FILE"
    else:
        model = corpus_ngram()
        which = "the shipped corpus model"
    starts = entropy_patches(
        data,
        model,
        threshold=args.threshold,
        threshold_add=args.threshold_add,
        mode=args.mode,
        max_patch_length=args.max_patch_length,
    )
    if not data:
        print("empty file")
    else:
        print(
            f"bytes {len(data)}  patches {starts.size}  bits/byte "
            f"{model.bits_per_byte(data):.4f} ({which}, order {model.order})"
        )
        lengths = np.diff(np.append(starts, len(data)))
        q = np.percentile(lengths, [50, 90, 99])
        print(
            f"patch length mean {lengths.mean():.3f}  median {q[0]:g}  p90 {q[1]:g}  "
            f"p99 {q[2]:g}  max {lengths.max()}"
        )
        size = max(1, round(lengths.mean()))
        print(f"fixed-size patches of {size} bytes: {-(-len(data) // size)}")
        if not args.no_tokens:
            print("\n".join(_token_lines(data, starts)))
    if args.output:
        with atomic_write(args.output) as fh:
            fh.write("".join(f"{s}\n" for s in starts.tolist()))
    return 0
