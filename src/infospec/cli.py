"""The ``infospec`` command: a thin shell over :func:`infospec.analyze` and friends.

``infospec analyze [SOURCE]`` prints or writes a per-layer report; with no SOURCE it
analyses the built-in MiniLM-L6 example, weights and activations. ``infospec describe
SOURCE`` lists what would be analysed, instantly. Errors print one line naming the file,
layer or argument and exit with status 2; Ctrl-C exits with 130 and leaves no partial file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._errors import InfospecError, InputError, SourceError

__all__ = ["main"]

_FORMATS = ("table", "csv", "json", "html")


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="per-layer spectral report of a model, in bits",
        description="Analyse every weight matrix of a model (and, with data, every layer's "
        "activations) into one per-layer report. With no SOURCE: the built-in "
        "MiniLM-L6 example, weights and activations on a bundled corpus.",
    )
    p.add_argument(
        "source",
        nargs="?",
        help="a .safetensors file, a *.safetensors.index.json, "
        "or a model folder (config.json + safetensors); default: the MiniLM example",
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
    p.add_argument("--device", default=None, help="cpu or cuda (default cpu)")
    p.add_argument(
        "--conv",
        choices=("pooled", "flatten", "per_position"),
        default="pooled",
        help="conv kernel: one row pooling the spectra of its positions' out x in matrices "
        "(default, WeightWatcher's), one out x (in*k) matrix, or one row per position",
    )
    p.add_argument(
        "--rel-distortion",
        type=float,
        default=0.01,
        help="relative squared error of the bits columns (default 0.01)",
    )
    p.add_argument(
        "--min-dim",
        type=int,
        default=None,
        help="skip matrices whose smaller side is below this (default 10)",
    )
    p.add_argument(
        "--no-fits", action="store_true", help="skip the power-law and Marchenko-Pastur fits"
    )
    p.add_argument(
        "--format",
        choices=_FORMATS,
        default=None,
        help="table (default), csv, json or html (default from --out's suffix)",
    )
    p.add_argument(
        "--table",
        choices=("weights", "activations", "skipped"),
        default="weights",
        help="which table --format csv writes (default weights)",
    )
    p.add_argument(
        "--out",
        help="output file (written atomically); default stdout, or "
        "infospec-report.html for --format html",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="CPU threads (default one per core, at most 4): on the CPU each analyses one "
        "tensor at a time; with --device cuda they make the fits while the GPU computes spectra",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_describe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "describe",
        help="list the layers that would be analysed (instant)",
        description="List every tensor of SOURCE: name, shape, dtype, kind, the "
        "matrices it gives, and why it would be skipped. Reads no "
        "tensor data.",
    )
    p.add_argument("source", nargs="?", help="file, index or folder; default the MiniLM example")
    p.add_argument("--layers", action="append", metavar="REGEX")
    p.add_argument("--min-dim", type=int, default=None)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the duality experiment: does flattening a spectrum compress the signal?",
        description="Train one MLP on scikit-learn's digits four ways (no regulariser, "
        "coding rate, info-spec, spectral regulariser), measure every layer's spectra over "
        "training, test 'flatten the spectrum and you compress the signal' both ways with "
        "intervals over seeds, run a continual-learning check, and write results.csv, "
        "summary.json, figures and report.html. A few minutes on 2 CPU cores.",
    )
    p.add_argument("--quick", action="store_true", help="fewer epochs, seeds and tasks (< 1 min)")
    p.add_argument("--out", default="infospec-demo", help="output folder (default ./infospec-demo)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (full 8, quick 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="infospec", description="Measure deep networks through their spectra, in bits."
    )
    parser.add_argument("--version", action="version", version=f"infospec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_analyze(sub)
    _add_describe(sub)
    _add_demo(sub)
    return parser


def _example_source() -> Path:
    from .sources.example import minilm_path

    return minilm_path()


def _read_texts(data: str, max_texts: int) -> list[str]:
    if max_texts < 1:
        raise InputError(f"--max-texts must be an int > 0. Got {max_texts} instead.")
    if data == "example":
        from .example import example_corpus

        return example_corpus(max_texts)
    path = Path(data)
    if not path.is_file():
        raise InputError(
            f"--data: no such file '{path}'. Give a text file with one text per "
            f"line, or 'example' for the bundled corpus."
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"--data: '{path}' is not UTF-8 text ({exc}).") from exc
    texts = [ln.strip() for ln in lines if ln.strip()][:max_texts]
    if not texts:
        raise InputError(f"--data: '{path}' holds no non-empty line.")
    return texts


def _load_hf_model(folder: Path, device: str | None):
    """A Hugging Face model folder as (model, tokenizer), offline."""
    if folder.is_file():
        raise InputError(
            f"--data needs a model folder (config.json, safetensors, "
            f"tokenizer.json) to run the model; '{folder}' is a file. Analyse its "
            f"weights without --data, or pass the folder."
        )
    if not (folder / "tokenizer.json").is_file():
        raise SourceError(
            f"--data: the model folder '{folder}' has no tokenizer.json; "
            f"activations need the model's tokenizer."
        )
    from .example import load_model_folder

    return load_model_folder(folder, device=device)


def _run_analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze

    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
        fmt = {"csv": "csv", "json": "json", "html": "html", "htm": "html"}.get(suffix, "table")
    out = args.out or ("infospec-report.html" if fmt == "html" else None)
    folder = Path(args.source) if args.source else _example_source()
    data_arg = args.data
    if args.source is None and data_arg is None and not args.no_activations:
        data_arg = "example"
    if args.no_activations:
        data_arg = None
    progress = False if args.no_progress else None
    options: dict[str, Any] = {
        "layers": args.layers,
        "device": args.device,
        "conv": args.conv,
        "rel_distortion": args.rel_distortion,
        "fits": not args.no_fits,
        "progress": progress,
        "min_dim": args.min_dim,
        "workers": args.workers,
    }
    if data_arg is not None:
        texts = _read_texts(data_arg, args.max_texts)
        model, tokenizer = _load_hf_model(folder, args.device)
        from .example import example_batches

        batches = example_batches(tokenizer, texts, batch_size=args.batch_size)
        report = analyze(
            model,
            batches,
            activation_layers=args.activation_layers,
            max_tokens=args.max_tokens,
            **options,
        )
        report.meta["source"] = f"{folder} (+ {len(texts)} texts from {data_arg})"
    else:
        report = analyze(folder, **options)

    if fmt == "table":
        text = report.summary(max_rows=None)
    elif fmt == "json":
        text = report.to_json()
    elif fmt == "csv":
        text = report.to_dataframe(args.table).to_csv(index=False)
    else:
        report.to_html(out)
        print(f"wrote {out}", file=sys.stderr)
        return 0
    if out:
        from ._io import atomic_write

        with atomic_write(out) as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _run_describe(args: argparse.Namespace) -> int:
    from .sources import open_source

    source = Path(args.source) if args.source else _example_source()
    src = open_source(source) if args.min_dim is None else open_source(source, min_dim=args.min_dim)
    entries = src.select(args.layers)
    print(f"{src.description if hasattr(src, 'description') else src}: {len(entries)} tensors")
    width = max((len(e.name) for e in entries), default=10)
    analysed = 0
    for e in entries:
        shape = "x".join(str(s) for s in e.shape) or "scalar"
        if e.skipped:
            status = f"skip: {e.skip_reason}"
        else:
            analysed += 1
            ms = e.matrix_shape
            status = f"{ms[0]}x{ms[1]}" if ms else "analysed"
        print(f"  {e.name:<{width}}  {shape:>14}  {e.dtype:<8}  {e.kind:<17}  {status}")
    print(f"{analysed} analysed, {len(entries) - analysed} skipped")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(
        args.out,
        quick=args.quick,
        seeds=args.seeds,
        progress=False if args.no_progress else None,
    )
    for paragraph in result.summary["reading"]["duality"] + result.summary["reading"]["continual"]:
        print(paragraph + "\n")
    seconds = result.summary["timings"]["total_seconds"]
    print(
        f"wrote {result.out_dir / 'report.html'} and {len(result.files) - 1} other files "
        f"in {seconds:.0f} s",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``infospec`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "analyze":
            return _run_analyze(args)
        if args.command == "demo":
            return _run_demo(args)
        return _run_describe(args)
    except InfospecError as exc:
        print(f"infospec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infospec: interrupted; no output file was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
