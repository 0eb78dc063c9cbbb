"""Pieces the ``infospec`` verbs share: options, the example source and texts, output.

Argument groups added the same way to every verb that takes them, the built-in example's
files, and the writing of a report in the format asked for (nothing is half-written:
outputs go through a temporary file renamed into place).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ._errors import InputError, SourceError
from ._text import printable

FORMATS = ("table", "csv", "json", "html")


def add_conv(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--conv",
        choices=("pooled", "flatten", "per_position"),
        default="pooled",
        help="conv kernel: one row pooling the spectra of its positions' out x in matrices "
        "(default, WeightWatcher's), one out x (in*k) matrix, or one row per position",
    )


def add_spectrum_options(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--conv``, ``--rel-distortion``, ``--min-dim``, ``--no-fits``."""
    p.add_argument("--device", default=None, help="cpu or cuda (default cpu)")
    add_conv(p)
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


def add_output(
    p: argparse.ArgumentParser,
    default_html: str,
    tables: tuple[str, ...] = ("weights", "skipped"),
) -> None:
    """``--format``, ``--table`` (one of ``tables``), ``--out``, ``--force`` and ``--verbose``
    of a verb that prints a report."""
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="table (default), csv, json or html (default from --out's suffix)",
    )
    p.add_argument(
        "--table",
        choices=tables,
        default="weights",
        help="which table --format csv writes (default weights)",
    )
    p.add_argument(
        "--out",
        help=f"output file (written atomically); default stdout, or {default_html} for "
        "--format html",
    )
    add_force(p)
    p.add_argument(
        "--verbose",
        action="store_true",
        help="list every skipped tensor by name (default: counted per reason)",
    )


def add_force(p: argparse.ArgumentParser) -> None:
    """``--force``: replace an existing output that infospec did not write."""
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output file (or fill an existing folder) that infospec "
        "did not write; an input file is never replaced",
    )


def check_out(args: argparse.Namespace, out: str | None, *inputs: Any) -> None:
    """``out`` is neither an input nor, without ``--force``, a file infospec did not write."""
    if out:
        from ._io import check_output

        check_output(out, inputs, force=getattr(args, "force", False))


def add_progress(p: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress``: progress=True, False, or None (bars on a terminal)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const=True,
        default=None,
        help="show progress even without a terminal (plain lines on stderr)",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const=False,
        help="no progress (default: bars on a terminal only)",
    )


def spectrum_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The options ``compare`` and ``track`` pass on as :func:`infospec.analyze` names them."""
    return {
        "device": args.device,
        "conv": args.conv,
        "min_dim": args.min_dim,
        "fits": not args.no_fits,
        "rel_distortion": args.rel_distortion,
        "progress": args.progress,
        "workers": args.workers,
    }


def example_source() -> Path:
    from .sources.example import minilm_path

    return minilm_path()


def read_texts(data: str, max_texts: int) -> list[str]:
    """The first ``max_texts`` non-empty lines of ``--data``, read lazily and cut short.

    The file is read line by line until ``max_texts`` texts are found (a 300 MB file
    whose first lines suffice costs those lines), and each line is kept to its first
    :data:`~infospec.example.MAX_TEXT_CHARS` characters, the rest of a longer line read
    in pieces and dropped: memory stays bounded by ``max_texts`` x 8192 characters
    whatever the file holds.
    """
    if data == "example":
        from .example import example_corpus

        return example_corpus(max_texts)
    from .example import MAX_TEXT_CHARS

    path = Path(data)
    if not path.is_file():
        raise InputError(
            f"--data: no such file '{path}'. Give a text file with one text per "
            f"line, or 'example' for the bundled corpus."
        )
    texts: list[str] = []
    try:
        with path.open(encoding="utf-8") as fh:
            while len(texts) < max_texts:
                line = fh.readline(MAX_TEXT_CHARS)
                if not line:
                    break
                if not line.endswith("\n"):
                    while (rest := fh.readline(MAX_TEXT_CHARS)) and not rest.endswith("\n"):
                        pass  # the rest of an over-long line: read in pieces, dropped
                text = line.strip()
                if text:
                    texts.append(text)
    except UnicodeDecodeError as exc:
        raise InputError(f"--data: '{path}' is not UTF-8 text ({exc}).") from exc
    if not texts:
        raise InputError(f"--data: '{path}' holds no non-empty line.")
    return texts


def load_hf_model(folder: Path, device: str | None):
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


def on_ranks(verb: str, compute: Any) -> tuple[Any, bool]:
    """``compute(None)``, or under torchrun ``compute(pg)`` on every rank; and who writes.

    Under torchrun (or srun with ``RANK`` and ``WORLD_SIZE`` set) a process group is
    started for the verb and destroyed after it (:mod:`infospec.analysis.distributed`):
    every rank computes its share and gets the same report, and only rank 0 writes it.
    """
    from .analysis.distributed import launched_by_torchrun, process_group

    if not launched_by_torchrun():
        return compute(None), True
    with process_group(verb) as pg:
        report = compute(pg)
    return report, pg.rank == 0


def output_format(args: argparse.Namespace, default_html: str) -> tuple[str, str | None]:
    """``--format`` (default from ``--out``'s suffix, else table) and the output path."""
    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
        fmt = {"csv": "csv", "json": "json", "html": "html", "htm": "html"}.get(suffix, "table")
    return fmt, args.out or (default_html if fmt == "html" else None)


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def emit(report: Any, fmt: str, out: str | None, *, table: str, verbose: bool) -> int:
    """Print or write (atomically) a report as a table, CSV, JSON or an HTML page.

    Names from a file reach a terminal escaped (:func:`~infospec._text.printable`): the
    table always; CSV on a terminal (into a file or a pipe it is written raw, so the
    names stay exact); JSON always carries them as ``\\uXXXX`` escapes
    (``ensure_ascii``), which a JSON reader turns back into the exact names.
    """
    start = time.perf_counter()
    if fmt == "table":
        text = report.summary(max_rows=None, verbose=verbose)
        if report.skipped and not verbose:
            text += "\n(--verbose lists the skipped tensors by name)"
    elif fmt == "json":
        text = report.to_json()
    elif fmt == "csv":
        frame = report.to_dataframe(table)
        if not out and stdout_is_terminal():
            # on a terminal every text cell is escaped (no control characters or bidi
            # overrides from a file's names reach it); into a file or a pipe, raw
            frame = frame.map(lambda v: printable(v) if isinstance(v, str) else v)
        text = frame.to_csv(index=False)
    else:
        report.to_html(out)
        print(f"wrote {out} in {time.perf_counter() - start:.2f} s", file=sys.stderr)
        return 0
    if out:
        from ._io import atomic_write

        with atomic_write(out) as fh:
            fh.write(text if text.endswith("\n") else text + "\n")
        print(f"wrote {out} in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
