"""``infospec compare`` and ``infospec track``: two models layer by layer, checkpoints over time."""

from __future__ import annotations

import argparse
import sys

from ._errors import InputError
from .cli_options import (
    add_force,
    add_output,
    add_progress,
    add_spectrum_options,
    check_out,
    emit,
    on_ranks,
    output_format,
    spectrum_kwargs,
)

__all__ = ["add_parser", "run"]


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="what fine-tuning changed: the spectrum of every weight delta",
        description="Match the tensors of two checkpoints by name and report, per weight "
        "matrix, the measures of the delta W_tuned - W_base (ranks, alpha, flatness, bits), "
        "its size relative to W_base, the change of every single-model measure, and the "
        "overlap of the top-k singular subspaces. Both checkpoints stream one pair of "
        "tensors at a time.",
    )
    p.add_argument("base", help="the base checkpoint (file, sharded index or model folder)")
    p.add_argument("tuned", help="the fine-tuned checkpoint")
    p.add_argument(
        "--rename",
        action="append",
        metavar="PATTERN=REPL",
        help="regular-expression rename applied to both sides' names before matching "
        "(repeatable, in order), e.g. '^base_model\\.model\\.='",
    )
    p.add_argument(
        "--k",
        type=int,
        default=10,
        help="dimension of the compared top singular subspaces (default 10; 0: none)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on a tensor present on one side only or with different shapes",
    )
    p.add_argument(
        "--layers",
        action="append",
        metavar="REGEX",
        help="compare tensors whose (renamed) name matches (repeatable)",
    )
    add_spectrum_options(p)
    p.add_argument("--workers", type=int, default=None, help="CPU threads (as for analyze)")
    add_output(p, "infospec-compare.html")
    add_progress(p)


def _add_track(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "track",
        help="the spectra of a training run's checkpoints, incrementally, in one table",
        description="Analyse every checkpoint of RUN_DIR (subfolders or files named "
        "checkpoint-<step>, step-<step>, ...; or several checkpoints listed in order) into "
        "one long table (checkpoint, step, tensor, metric, value) in an SQLite store, each "
        "checkpoint against the one before (subspace overlaps, relative change). A re-run "
        "analyses only new or changed checkpoints.",
    )
    p.add_argument("run", nargs="+", metavar="RUN_DIR", help="the run folder, or checkpoints")
    p.add_argument("--store", help="the SQLite store (default RUN_DIR/infospec-track.sqlite)")
    p.add_argument("--html", help="write the page of heatmaps and curves here (atomically)")
    p.add_argument(
        "--out", help="write the long table as CSV here (atomically); default: a summary"
    )
    add_force(p)
    p.add_argument(
        "--no-overlap",
        action="store_true",
        help="one spectrum per matrix, no comparison with the previous checkpoint",
    )
    p.add_argument("--k", type=int, default=10, help="compared subspace dimension (default 10)")
    p.add_argument(
        "--layers",
        action="append",
        metavar="REGEX",
        help="track tensors whose full dotted name matches (repeatable)",
    )
    add_spectrum_options(p)
    p.add_argument("--workers", type=int, default=None, help="CPU threads (as for analyze)")
    add_progress(p)


def _run_track(args: argparse.Namespace) -> int:
    from .analysis.track import track

    if args.k is not None and args.k < 1:
        raise InputError(f"--k must be an int >= 1 for track; got {args.k}.")
    run = args.run[0] if len(args.run) == 1 else args.run
    check_out(args, args.out, *args.run, args.store)
    if args.html:
        from ._io import check_output

        check_output(args.html, args.run, force=args.force, flag="--html")
    result, writes = on_ranks(
        "track",
        lambda pg: track(
            run,
            store=args.store,
            layers=args.layers,
            overlap=not args.no_overlap,
            k=args.k,
            distributed=pg is not None,
            **spectrum_kwargs(args),
        ),
    )
    if not writes:
        return 0
    frame = result.frame
    lines = [
        f"infospec track: {len(result.analysed)} checkpoints analysed, "
        f"{len(result.unchanged)} unchanged, in {result.meta['seconds']:.2f} s; "
        f"store {result.store}"
    ]
    for metric in ("alpha", "flatness", "overlap_left"):
        rows = frame[frame["metric"] == metric]
        if not rows.empty:
            medians = rows.groupby("step")["value"].median()
            lines.append(
                f"median {metric} by step: "
                + ", ".join(f"{step}: {value:.4g}" for step, value in medians.items())
            )
    if args.html:
        result.to_html(args.html)
        lines.append(f"wrote {args.html}")
    if args.out:
        from ._io import atomic_write

        with atomic_write(args.out) as fh:
            frame.to_csv(fh, index=False)
        lines.append(f"wrote {args.out} ({len(frame)} rows)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _parse_rename(items: list[str] | None) -> list[tuple[str, str]] | None:
    """``--rename PATTERN=REPL`` items as (pattern, replacement) pairs."""
    if not items:
        return None
    rules = []
    for item in items:
        if "=" not in item:
            raise InputError(
                f"--rename must be PATTERN=REPLACEMENT (an empty replacement deletes); got "
                f"{item!r}. Example: --rename '^base_model\\.model\\.='."
            )
        pattern, repl = item.split("=", 1)
        rules.append((pattern, repl))
    return rules


def _run_compare(args: argparse.Namespace) -> int:
    from .analysis.compare import compare

    fmt, out = output_format(args, "infospec-compare.html")
    check_out(args, out, args.base, args.tuned)
    report, writes = on_ranks(
        "compare",
        lambda pg: compare(
            args.base,
            args.tuned,
            layers=args.layers,
            rename=_parse_rename(args.rename),
            k=args.k,
            strict=args.strict,
            distributed=pg is not None,
            **spectrum_kwargs(args),
        ),
    )
    return emit(report, fmt, out, table=args.table, verbose=args.verbose) if writes else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``compare`` and ``track`` (see :data:`infospec.cli._COMMAND_MODULES`)."""
    _add_compare(sub)
    _add_track(sub)


def run(args: argparse.Namespace) -> int:
    """Run the verb of ``args`` (one of this module's)."""
    if args.command == "compare":
        return _run_compare(args)
    if args.command == "track":
        return _run_track(args)
    raise InputError(f"no such command here: {args.command!r}")
