"""``infospec analyze`` and ``infospec describe``: the per-layer report and the listing."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from ._errors import InfospecError, InputError
from ._text import printable
from .cli_options import (
    add_conv,
    add_output,
    add_progress,
    add_spectrum_options,
    check_out,
    emit,
    example_source,
    load_hf_model,
    on_ranks,
    read_texts,
)

__all__ = ["add_parser", "run"]

#: ``describe`` shortens longer tensor names (with an ellipsis) to keep one line per tensor.
_NAME_CHARS = 120


#: ``describe`` lists at most this many tensors unless ``--all`` (the counts cover all).
_LIST_LIMIT = 1000


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="per-layer spectral report of a model, in bits",
        description="Analyse every weight matrix of a model (and, with data, every layer's "
        "activations) into one per-layer report. With no SOURCE: the built-in "
        "MiniLM-L6 example, weights and activations on a bundled corpus. Under torchrun "
        "(torchrun --nproc-per-node N -m infospec analyze SOURCE; RANK and WORLD_SIZE set) "
        "the tensors, and the --data texts, are shared out over the ranks and rank 0 "
        "writes the report.",
    )
    p.add_argument(
        "source",
        nargs="?",
        help="a checkpoint (safetensors, torch.save .bin/.pt/.pth/.ckpt, TorchScript; told "
        "by content), a sharded index, or a model folder; default: the MiniLM example",
    )
    p.add_argument(
        "--data",
        help="text file (one text per line) fed through a Hugging Face "
        "model folder for activation measures, or 'example' for the bundled corpus",
    )
    p.add_argument(
        "--no-activations", action="store_true", help="weights only, even for the built-in example"
    )
    p.add_argument(
        "--randomize",
        nargs="?",
        type=int,
        const=0,
        default=None,
        metavar="SEED",
        help="also each matrix with its entries shuffled (WeightWatcher's randomize): "
        "rand_distance and correlation traps (num_traps); optional seed, default 0",
    )
    p.add_argument(
        "--base",
        help="with a PEFT LoRA adapter folder as SOURCE: the base model it was trained on, "
        "whose merged W + dW is analysed beside each delta",
    )
    p.add_argument(
        "--max-texts", type=int, default=256, help="texts taken from --data (default 256)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="texts per batch (default 32)")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="cap on tokens per layer per batch (default all)",
    )
    p.add_argument(
        "--layers",
        action="append",
        metavar="REGEX",
        help="analyse tensors whose full dotted name matches (repeatable)",
    )
    p.add_argument(
        "--activation-layers",
        action="append",
        metavar="REGEX",
        help="observe modules whose name matches (default: the analysed layers)",
    )
    add_spectrum_options(p)
    add_output(p, "infospec-report.html", tables=("weights", "activations", "skipped"))
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="CPU threads (default one per core, at most 4): on the CPU each analyses one "
        "tensor at a time; with --device cuda they make the fits while the GPU computes spectra",
    )
    add_progress(p)


def _add_describe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe",
        help="list the layers that would be analysed (instant)",
        description="List the tensors of SOURCE: name, shape, dtype, kind, the "
        "matrices it gives, and why it would be skipped (the first "
        f"{_LIST_LIMIT}, or every one with --all), then how many are analysed and "
        "skipped, by reason. Reads no tensor data.",
    )
    p.add_argument("source", nargs="?", help="file, index or folder; default the MiniLM example")
    p.add_argument(
        "--layers",
        action="append",
        metavar="REGEX",
        help="list tensors whose full dotted name matches (repeatable)",
    )
    add_conv(p)
    p.add_argument(
        "--min-dim",
        type=int,
        default=None,
        help="skip matrices whose smaller side is below this (default 10)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help=f"list every tensor (by default the first {_LIST_LIMIT}; the counts at the end "
        "always cover every tensor)",
    )


def _run_analyze(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
        fmt = {"csv": "csv", "json": "json", "html": "html", "htm": "html"}.get(suffix, "table")
    out = args.out or ("infospec-report.html" if fmt == "html" else None)
    data_arg = args.data
    if args.source is None and data_arg is None and not args.no_activations:
        data_arg = "example"
    if args.no_activations:
        data_arg = None
    if fmt == "csv" and args.table == "activations" and data_arg is None:
        raise InputError(
            "--table activations needs activations, and this run measures none: pass "
            "--data FILE (one text per line, or 'example') with a model folder, or use "
            "--table weights."
        )
    folder = Path(args.source) if args.source else example_source()
    data_file = data_arg if data_arg not in (None, "example") else None
    check_out(args, out, folder, data_file, args.base)
    report, writes = on_ranks("analyze", lambda pg: _analyze_report(args, folder, data_arg, pg))
    return emit(report, fmt, out, table=args.table, verbose=args.verbose) if writes else 0


def _analyze_report(args: argparse.Namespace, folder: Path, data_arg: str | None, pg: Any) -> Any:
    """The report of ``infospec analyze``; with ``pg``, this rank's part of a distributed run.

    Distributed, the texts of ``--data`` are dealt out to the ranks (text ``i`` to rank
    ``i % world``) and every rank returns the same report.
    """
    from .analysis import analyze

    progress = args.progress
    options: dict[str, Any] = {
        "layers": args.layers,
        "device": args.device,
        "conv": args.conv,
        "rel_distortion": args.rel_distortion,
        "fits": not args.no_fits,
        "progress": progress,
        "min_dim": args.min_dim,
        "workers": args.workers,
        "randomize": False if args.randomize is None else args.randomize,
        "distributed": pg is not None,
    }
    if data_arg is not None:
        start = time.perf_counter()
        texts = read_texts(data_arg, args.max_texts)
        model, tokenizer = load_hf_model(folder, args.device)
        load_seconds = time.perf_counter() - start
        from .example import example_batches

        mine = texts if pg is None else texts[pg.rank :: pg.world]
        batches = example_batches(tokenizer, mine, batch_size=args.batch_size)
        report = analyze(
            model,
            batches,
            activation_layers=args.activation_layers,
            max_tokens=args.max_tokens,
            **options,
        )
        report.meta["source"] = f"{folder} (+ {len(texts)} texts from {data_arg})"
        report.meta["model_load_seconds"] = load_seconds
        _add_file_only_tensors(report, folder, args.layers, args.min_dim)
        return report
    return analyze(_weight_source(folder, args.base, args.min_dim), **options)


def _weight_source(folder: Path, base: str | None, min_dim: int | None) -> Any:
    """SOURCE as analyze reads it: with ``--base``, the adapter's deltas and merged weights."""
    if base is None:
        return folder
    from .sources.peft_source import PeftSource, is_adapter_folder

    if not is_adapter_folder(folder):
        raise InputError(
            f"--base needs a PEFT adapter folder (with adapter_config.json) as SOURCE; "
            f"'{folder}' is not one. Drop --base, or compare two checkpoints with "
            f"'infospec compare BASE TUNED'."
        )
    kw = {} if min_dim is None else {"min_dim": min_dim}
    return PeftSource(folder, base=base, **kw)


def _add_file_only_tensors(
    report: Any, folder: Path, layers: list[str] | None, min_dim: int | None
) -> None:
    """Add the folder's tensors that the loaded model does not list to ``report.skipped``.

    With ``--data`` the weights come from the loaded model, whose parameters leave out
    the buffers stored in the files (``position_ids``...). Listing those as skipped, with
    the reason ``describe`` gives, makes ``analyze`` and ``describe`` count the same
    tensors. Nothing is added when the model's names are not the files' names (a class
    that drops a prefix), since the two lists cannot then be matched.
    """
    from .sources import open_source

    try:
        src = open_source(folder) if min_dim is None else open_source(folder, min_dim=min_dim)
        entries = src.select(layers)
    except InfospecError:
        return
    in_files = {e.name for e in entries}
    analysed = {r.get("tensor") or r.get("name") for r in report.weights}
    if not analysed <= in_files:
        return
    listed = (
        analysed | {r.get("name") for r in report.weights} | {r.get("name") for r in report.skipped}
    )
    for e in entries:
        if e.name not in listed:
            report.skipped.append(
                {
                    "name": e.name,
                    "shape": tuple(e.shape),
                    "dtype": e.dtype,
                    "kind": e.kind,
                    "reason": e.skip_reason or "a buffer of the loaded model, not a parameter",
                }
            )


def _run_describe(args: argparse.Namespace) -> int:
    from .sources import open_source

    source = Path(args.source) if args.source else example_source()
    src = open_source(source) if args.min_dim is None else open_source(source, min_dim=args.min_dim)
    # every entry, as the source keeps them (a header's columns: no object per tensor)
    entries = src.select(args.layers) if args.layers else src.entries()
    header = str(getattr(src, "description", None) or src)
    if args.layers:
        header += f": {len(entries)} tensors match --layers"
    elif not re.search(r"\b\d+ tensors?\b", header):
        header += f": {len(entries)} tensors"
    print(printable(header))
    from ._skips import skip_reason_class
    from ._text import ELLIPSIS
    from .sources.entry import skip_reason_under
    from .sources.listing import entry_groups
    from .spectra.conventions import matrix_layout

    shown = entries if args.all or len(entries) <= _LIST_LIMIT else entries[:_LIST_LIMIT]
    # names are escaped (no terminal control from a file) and shortened past _NAME_CHARS
    width = min(max((len(e.name) for e in shown), default=10), _NAME_CHARS)
    shortened = 0
    for e in shown:
        shape = "x".join(str(s) for s in e.shape) or "scalar"
        reason = skip_reason_under(e, min_dim=src.min_dim, conv=args.conv)
        if reason is not None:
            status = f"skip: {reason}"
        else:
            count, rows, cols = matrix_layout(e.kind, e.shape, conv=args.conv)
            status = f"{rows}x{cols}" if count == 1 else f"{count} x {rows}x{cols}"
            if args.conv == "pooled" and count > 1 and e.kind.startswith("conv"):
                status += " pooled"
        shortened += len(e.name) > _NAME_CHARS
        name, shape = printable(e.name, _NAME_CHARS), printable(shape, 40)
        print(f"  {name:<{width}}  {shape:>14}  {e.dtype:<8}  {e.kind:<17}  {printable(status)}")
    if len(shown) < len(entries):
        print(
            f"  ({len(entries) - len(shown)} more tensors not listed: --all lists every one, "
            f"--layers REGEX the ones whose names match)"
        )
    # the counts cover every entry, one skip rule per group of alike entries
    analysed = 0
    by_class: dict[str, int] = {}
    for like, count in entry_groups(entries):
        reason = skip_reason_under(like, min_dim=src.min_dim, conv=args.conv)
        if reason is None:
            analysed += count
        else:
            key = skip_reason_class(reason)
            by_class[key] = by_class.get(key, 0) + count
    line = f"{analysed} analysed, {sum(by_class.values())} skipped"
    if by_class:
        ranked = sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0]))
        line += ": " + ", ".join(f"{r} x {c}" for r, c in ranked)
    print(printable(line))
    if shortened:
        print(
            f"({shortened} names longer than {_NAME_CHARS} characters are shortened with "
            f"{ELLIPSIS}; --layers matches the full names)"
        )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``analyze`` and ``describe`` (see :data:`infospec.cli._COMMAND_MODULES`)."""
    _add_analyze(sub)
    _add_describe(sub)


def run(args: argparse.Namespace) -> int:
    """Run the verb of ``args`` (one of this module's)."""
    if args.command == "analyze":
        return _run_analyze(args)
    if args.command == "describe":
        return _run_describe(args)
    raise InputError(f"no such command here: {args.command!r}")
