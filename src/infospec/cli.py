"""The ``infospec`` command: a thin shell over :func:`infospec.analyze` and friends.

``infospec analyze [SOURCE]`` prints or writes a per-layer report; with no SOURCE it
analyses the built-in MiniLM-L6 example, weights and activations. ``infospec describe
SOURCE`` lists what would be analysed, instantly. Errors print one line naming the file,
layer or option in the command line's words (``--min-dim``, not ``min_dim``) and exit with
status 2; numeric options are checked before anything is read. Ctrl-C exits with 130 and
leaves no partial file. Skipped tensors are counted per reason (``--verbose`` names them);
``--progress`` shows progress even when stderr is not a terminal. Under torchrun
(``RANK`` and ``WORLD_SIZE`` set) ``analyze`` runs distributed and only rank 0 writes
(:mod:`infospec.analysis.distributed`).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from pathlib import Path
from typing import Any

from ._checks import shown_str
from ._errors import InfospecError, InputError, SourceError
from ._text import printable

__all__ = ["main"]

_FORMATS = ("table", "csv", "json", "html")

#: Subcommands defined in modules of their own: (command, module). Each module defines
#: ``add_parser(sub)`` (registering the subcommand named here) and ``run(args) -> int``,
#: and imports nothing heavy (torch) at module level, so ``infospec --help`` stays fast.
#: A new verb is one line here, not a new branch of :func:`main`.
_COMMAND_MODULES: tuple[tuple[str, str], ...] = (
    ("rope", "infospec.tools.rope_cli"),
    ("patches", "infospec.tools.patches_cli"),
    ("spectrum", "infospec.tools.spectrum_cli"),
)
#: ``describe`` shortens longer tensor names (with an ellipsis) to keep one line per tensor.
_NAME_CHARS = 120
#: ``describe`` lists at most this many tensors unless ``--all`` (the counts cover all).
_LIST_LIMIT = 1000


def _add_conv(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--conv",
        choices=("pooled", "flatten", "per_position"),
        default="pooled",
        help="conv kernel: one row pooling the spectra of its positions' out x in matrices "
        "(default, WeightWatcher's), one out x (in*k) matrix, or one row per position",
    )


def _add_spectrum_options(p: argparse.ArgumentParser) -> None:
    """``--device``, ``--conv``, ``--rel-distortion``, ``--min-dim``, ``--no-fits``."""
    p.add_argument("--device", default=None, help="cpu or cuda (default cpu)")
    _add_conv(p)
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
    _add_spectrum_options(p)
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
    _add_force(p)
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="CPU threads (default one per core, at most 4): on the CPU each analyses one "
        "tensor at a time; with --device cuda they make the fits while the GPU computes spectra",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="list every skipped tensor by name (default: counted per reason)",
    )
    _add_progress(p)


def _add_output(p: argparse.ArgumentParser, default_html: str) -> None:
    """``--format``, ``--table``, ``--out`` and ``--verbose`` of a verb that prints a report."""
    p.add_argument(
        "--format",
        choices=_FORMATS,
        default=None,
        help="table (default), csv, json or html (default from --out's suffix)",
    )
    p.add_argument(
        "--table",
        choices=("weights", "skipped"),
        default="weights",
        help="which table --format csv writes (default weights)",
    )
    p.add_argument(
        "--out",
        help=f"output file (written atomically); default stdout, or {default_html} for "
        "--format html",
    )
    _add_force(p)
    p.add_argument(
        "--verbose",
        action="store_true",
        help="list every skipped tensor by name (default: counted per reason)",
    )


def _add_force(p: argparse.ArgumentParser) -> None:
    """``--force``: replace an existing output that infospec did not write."""
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output file (or fill an existing folder) that infospec "
        "did not write; an input file is never replaced",
    )


def _check_out(args: argparse.Namespace, out: str | None, *inputs: Any) -> None:
    """``out`` is neither an input nor, without ``--force``, a file infospec did not write."""
    if out:
        from ._io import check_output

        check_output(out, inputs, force=getattr(args, "force", False))


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
    _add_spectrum_options(p)
    p.add_argument("--workers", type=int, default=None, help="CPU threads (as for analyze)")
    _add_output(p, "infospec-compare.html")
    _add_progress(p)


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
    _add_force(p)
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
    _add_spectrum_options(p)
    p.add_argument("--workers", type=int, default=None, help="CPU threads (as for analyze)")
    _add_progress(p)


def _run_track(args: argparse.Namespace) -> int:
    from .analysis.track import track

    if args.k is not None and args.k < 1:
        raise InputError(f"--k must be an int >= 1 for track; got {args.k}.")
    run = args.run[0] if len(args.run) == 1 else args.run
    _check_out(args, args.out, *args.run, args.store)
    if args.html:
        from ._io import check_output

        check_output(args.html, args.run, force=args.force, flag="--html")
    result, writes = _on_ranks(
        "track",
        lambda pg: track(
            run,
            store=args.store,
            layers=args.layers,
            overlap=not args.no_overlap,
            k=args.k,
            distributed=pg is not None,
            **_spectrum_kwargs(args),
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


def _spectrum_kwargs(args: argparse.Namespace) -> dict[str, Any]:
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

    fmt, out = _output_format(args, "infospec-compare.html")
    _check_out(args, out, args.base, args.tuned)
    report, writes = _on_ranks(
        "compare",
        lambda pg: compare(
            args.base,
            args.tuned,
            layers=args.layers,
            rename=_parse_rename(args.rename),
            k=args.k,
            strict=args.strict,
            distributed=pg is not None,
            **_spectrum_kwargs(args),
        ),
    )
    return _emit(report, fmt, out, table=args.table, verbose=args.verbose) if writes else 0


def _add_progress(p: argparse.ArgumentParser) -> None:
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
    _add_conv(p)
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


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the duality experiment: does flattening a spectrum compress the signal?",
        description="Train one MLP on scikit-learn's digits four ways (no regulariser, "
        "coding rate, info-spec, spectral regulariser), measure every layer's spectra over "
        "training, test 'flatten the spectrum and you compress the signal' both ways with "
        "intervals over seeds, run a continual-learning check, and write results.csv, "
        "summary.json, figures and report.html. A few minutes on 2 CPU cores. "
        "'infospec demo matryoshka' instead trains an encoder with and without the "
        "Matryoshka loss and measures how close its prefixes come to the KLT truncation "
        "(the water-filling optimum); 'infospec demo vae' trains a VAE at several beta and "
        "measures its latent capacity (seed 002) against its KL rate and reconstruction error.",
    )
    p.add_argument(
        "experiment",
        nargs="?",
        choices=("duality", "matryoshka", "vae"),
        default="duality",
        help="which experiment (default duality)",
    )
    p.add_argument("--quick", action="store_true", help="fewer epochs, seeds and tasks (< 1 min)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default ./infospec-demo, ./infospec-demo-matryoshka or "
        "./infospec-demo-vae)",
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (full 8, quick 2)")
    _add_force(p)
    _add_progress(p)


def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="compress a model's linear layers: low rank at a parameter budget, or "
        "quantized at a mean bit width",
        description="Replace each chosen nn.Linear W by two thinner ones A B of rank k: "
        "the truncated SVD of W L with L the Cholesky factor of the layer's input second "
        "moment on --data (SVD-LLM's whitening; 'weights': plain SVD of W), ranks chosen "
        "across layers by equal slope at the budget ('allocated') or the same ratio per "
        "layer ('uniform'). Writes DIR/factors.safetensors and DIR/plan.json (rank, "
        "parameters, predicted and measured output error per layer), atomically; reload "
        "with infospec.load_compressed(model, DIR). With --bits instead of --ratio: "
        "group-wise uniform quantization, each layer's width in 2..8 bits allocated by "
        "equal slope on its measured output error (DIR/quantized.safetensors, packed codes).",
    )
    p.add_argument("source", help="a Hugging Face model folder, or 'example' (MiniLM-L6)")
    p.add_argument("--data", required=True, help="text file (one text per line), or 'example'")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--ratio", type=float, help="low rank: kept parameters, in (0, 1]")
    budget.add_argument("--bits", type=float, help="quantize: mean code bits per weight, in [2, 8]")
    p.add_argument(
        "--group-size",
        type=int,
        default=128,
        help="with --bits: input columns per float16 scale (default 128)",
    )
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--method", choices=("activations", "weights"), default="activations")
    p.add_argument("--allocation", choices=("allocated", "uniform"), default="allocated")
    p.add_argument(
        "--layers",
        action="append",
        metavar="REGEX",
        help="compress the nn.Linear modules whose name matches (repeatable; default all)",
    )
    p.add_argument("--ridge", type=float, default=1e-6, help="Cholesky ridge (default 1e-6)")
    p.add_argument(
        "--mp-edge", action="store_true", help="cap ranks at the Marchenko-Pastur spike count"
    )
    p.add_argument(
        "--weighting",
        choices=("relative", "absolute", "sensitivity"),
        default="relative",
        help="what the allocator adds up: relative layer errors (default), absolute ones, "
        "or relative errors times each layer's measured end-to-end gain",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="fraction of the texts held out to measure the output errors (default 0.2; 0: none)",
    )
    p.add_argument("--max-texts", type=int, default=512, help="texts to read (default 512)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per batch (default 32)")
    p.add_argument("--device", default=None, help="device to run on (default cpu)")


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
    _add_compare(sub)
    _add_track(sub)
    _add_demo(sub)
    _add_compress(sub)
    for _name, module in _COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return parser


def _example_source() -> Path:
    from .sources.example import minilm_path

    return minilm_path()


#: Numeric options checked before anything is loaded: (attribute, flag, kind, rule).
_NUMERIC = (
    ("max_texts", "--max-texts", "an int >= 1", lambda v: v >= 1),
    ("batch_size", "--batch-size", "an int >= 1", lambda v: v >= 1),
    ("max_tokens", "--max-tokens", "an int >= 1", lambda v: v >= 1),
    ("workers", "--workers", "an int >= 1", lambda v: v >= 1),
    ("min_dim", "--min-dim", "an int >= 1", lambda v: v >= 1),
    ("rel_distortion", "--rel-distortion", "a number in (0, 1]", lambda v: 0 < v <= 1),
    ("seeds", "--seeds", "an int >= 1", lambda v: v >= 1),
    ("k", "--k", "an int >= 0", lambda v: v >= 0),
    ("randomize", "--randomize", "a seed (an int >= 0)", lambda v: v >= 0),
)

#: Python parameter names of the library -> the flags that set them, for error messages.
_FLAGS = {
    "layers": "--layers",
    "activation_layers": "--activation-layers",
    "device": "--device",
    "conv": "--conv",
    "rel_distortion": "--rel-distortion",
    "min_dim": "--min-dim",
    "workers": "--workers",
    "max_tokens": "--max-tokens",
    "batch_size": "--batch-size",
    "max_texts": "--max-texts",
    "rename": "--rename",
    "k": "--k",
    "strict": "--strict",
    "bits": "--bits",
    "group_size": "--group-size",
    "allocation": "--allocation",
    "mp_edge": "--mp-edge",
    "weighting": "--weighting",
}


def _check_numbers(args: argparse.Namespace) -> None:
    """Every numeric option in range, or an error in the words of the command line.

    Raises
    ------
    InputError
        Naming the first option out of range, its rule and the value given.
    """
    for attr, flag, kind, rule in _NUMERIC:
        value = getattr(args, attr, None)
        if value is None:
            continue
        if not (value == value and rule(value)):  # value != value: NaN
            raise InputError(f"{flag} must be {kind}; got {shown_str(value)}.")


def _cli_words(message: str) -> str:
    """A library error message with its Python parameter names replaced by the CLI's flags.

    ``The 'min_dim' parameter of SafetensorsSource must be an int > 0. Got 0 instead.``
    becomes ``--min-dim must be an int > 0; got 0.``, and ``Use device='cpu'.`` becomes
    ``Use --device cpu.``; names that no flag sets are left as they are.

    Examples
    --------
    >>> _cli_words("The 'device' parameter of analyze is 'cuda' but no CUDA device is "
    ...            "available here. Use device='cpu'.")
    "--device is 'cuda' but no CUDA device is available here. Use --device cpu."
    """

    def parameter(m: re.Match) -> str:
        flag = _FLAGS.get(m[1])
        if flag is None:
            return m[0]
        return f"The {flag} pattern" if m[2] == "pattern" else flag

    text = re.sub(r"The '(\w+)' (parameter|argument|pattern)(?: of \w+)?", parameter, message)
    text = re.sub(
        r"\b(\w+)=(?:'([^']*)'|(\S+?))(?=[\s.,;)]|$)",
        lambda m: (
            f"{_FLAGS[m[1]]} {m[2] if m[2] is not None else m[3]}" if m[1] in _FLAGS else m[0]
        ),
        text,
    )
    return re.sub(r"\. Got (.+?) instead\.", r"; got \1.", text)


def _read_texts(data: str, max_texts: int) -> list[str]:
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
    folder = Path(args.source) if args.source else _example_source()
    data_file = data_arg if data_arg not in (None, "example") else None
    _check_out(args, out, folder, data_file, args.base)
    report, writes = _on_ranks("analyze", lambda pg: _analyze_report(args, folder, data_arg, pg))
    return _emit(report, fmt, out, table=args.table, verbose=args.verbose) if writes else 0


def _on_ranks(verb: str, compute: Any) -> tuple[Any, bool]:
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
        texts = _read_texts(data_arg, args.max_texts)
        model, tokenizer = _load_hf_model(folder, args.device)
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


def _output_format(args: argparse.Namespace, default_html: str) -> tuple[str, str | None]:
    """``--format`` (default from ``--out``'s suffix, else table) and the output path."""
    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
        fmt = {"csv": "csv", "json": "json", "html": "html", "htm": "html"}.get(suffix, "table")
    return fmt, args.out or (default_html if fmt == "html" else None)


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def _emit(report: Any, fmt: str, out: str | None, *, table: str, verbose: bool) -> int:
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
        if not out and _stdout_is_terminal():
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

    source = Path(args.source) if args.source else _example_source()
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


def _check_demo_folder(out: str, force: bool) -> None:
    """An existing ``demo --out`` folder is empty or an earlier demo's, unless ``--force``.

    An earlier demo's folder is told by its ``summary.json`` (JSON with the demo's
    ``"reading"``); the demo then replaces its own files there.
    """
    folder = Path(out)
    if force or not folder.is_dir():
        return
    try:
        empty = not any(folder.iterdir())
    except OSError:
        return  # the demo's own error says why the folder cannot be used
    summary = folder / "summary.json"
    if empty or (
        summary.is_file()
        and '"reading"' in summary.read_text(encoding="utf-8", errors="replace")[:65536]
    ):
        return
    raise InputError(
        f"--out '{folder}' is a folder with other files in it (not one an earlier "
        f"'infospec demo' wrote); pass --force to write the demo's files into it, or give "
        f"a new folder."
    )


#: ``infospec demo EXPERIMENT`` beside the duality demo: module, runner, default folder,
#: figure file.
_EXPERIMENTS = {
    "matryoshka": ("infospec.demo.matryoshka", "run_matryoshka_demo", "matryoshka.png"),
    "vae": ("infospec.demo.vae", "run_vae_demo", "vae.png"),
}


def _run_demo(args: argparse.Namespace) -> int:
    if args.experiment in _EXPERIMENTS:
        module, runner, figure = _EXPERIMENTS[args.experiment]
        out = args.out or f"infospec-demo-{args.experiment}"
        _check_demo_folder(out, args.force)
        run = getattr(importlib.import_module(module), runner)
        summary = run(out, quick=args.quick, seeds=args.seeds)
        for paragraph in summary["reading"]:
            print(paragraph + "\n")
        print(f"wrote results.csv, summary.json and {figure} in {out}", file=sys.stderr)
        return 0
    from .demo import run_demo

    _check_demo_folder(args.out or "infospec-demo", args.force)
    result = run_demo(
        args.out or "infospec-demo",
        quick=args.quick,
        seeds=args.seeds,
        progress=args.progress,
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


def _run_compress(args: argparse.Namespace) -> int:
    from .example import example_batches
    from .transforms.lowrank import compress

    if not 0 <= args.holdout < 1:
        raise InputError(f"--holdout must be a fraction in [0, 1); got {args.holdout}.")
    folder = _example_source() if args.source == "example" else Path(args.source)
    texts = _read_texts(args.data, args.max_texts)
    held = int(len(texts) * args.holdout)
    if len(texts) - held < 1:
        raise InputError(f"--data: {len(texts)} texts leave none for calibration.")
    model, tokenizer = _load_hf_model(folder, args.device)
    calib = example_batches(tokenizer, texts[: len(texts) - held], batch_size=args.batch_size)
    evaluation = (
        example_batches(tokenizer, texts[len(texts) - held :], batch_size=args.batch_size)
        if held
        else None
    )
    result = compress(
        model,
        calib,
        ratio=args.ratio,
        bits=args.bits,
        group_size=args.group_size,
        method=args.method,
        allocation=args.allocation,
        layers=args.layers,
        ridge=args.ridge,
        mp_edge=args.mp_edge,
        weighting=args.weighting,
        eval_data=evaluation,
    )
    out = result.save(args.out)
    if args.bits is not None:
        return _print_quantized(result, out, len(texts) - held, held)
    _print_plan(
        result.plan,
        [
            ("rank", 5, lambda r: "dense" if r["rank"] is None else str(r["rank"])),
            ("params", 9, lambda r: str(r["params_after"])),
        ],
        digits=4,
    )
    s = result.seconds
    print(
        f"{result.params_before} -> {result.params_after} parameters "
        f"({result.params_after / result.params_before:.3f}); {len(texts) - held} texts for the "
        f"covariances, {held} held out; covariance {s['covariance']:.1f} s, SVD "
        f"{s['svd']:.1f} s, writing {s['write']:.1f} s; written to {out}"
    )
    return 0


def _print_plan(plan: list[dict], columns: list[tuple[str, int, Any]], digits: int) -> None:
    """One line per layer of a compression plan: name, shape, ``columns``, the errors."""
    head = "".join(f" {title:>{width}}" for title, width, _ in columns)
    print(f"{'layer':<48} {'shape':>11}{head} {'pred rel':>9} {'meas rel':>9}")
    for r in plan:
        if r["status"] == "skipped":
            print(f"{r['name']:<48} skipped: {r['reason']}")
            continue
        shape = "x".join(map(str, r["shape"]))
        cells = "".join(f" {cell(r):>{width}}" for _, width, cell in columns)
        meas = r.get("measured_relative")
        meas_s = "" if meas is None else f"{meas:.{digits}f}"
        pred = f"{r['predicted_relative']:.{digits}f}"
        print(f"{r['name']:<48} {shape:>11}{cells} {pred:>9} {meas_s:>9}")


def _print_quantized(result: Any, out: Path, calibration: int, held: int) -> int:
    _print_plan(result.plan, [("bits", 4, lambda r: str(r["bits"]))], digits=5)
    st, s = result.settings, result.seconds
    print(
        f"{result.bits_before / 8e6:.2f} MB -> {result.bits_after / 8e6:.2f} MB of weights "
        f"({st['mean_code_bits']:.2f} code bits per weight, {st['mean_stored_bits']:.2f} with "
        f"the scales); {calibration} texts for the covariances, {held} held out; covariance "
        f"{s['covariance']:.1f} s, quantizing {s['quantize']:.1f} s, writing "
        f"{s['write']:.1f} s; written to {out}"
    )
    return 0


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as an interrupt so that it unwinds like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _install_sigterm() -> Any:
    """Make SIGTERM raise :class:`_Terminated`; returns the previous handler (or None)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``infospec`` command; returns the exit status.

    Errors print one ``infospec: error:`` line and return 2 (an operating-system error
    included, such as a read-only or full output filesystem). Ctrl-C, at any point after
    the command line starts (while torch or a model is imported and loaded too), prints
    one line and returns 130; SIGTERM does the same and returns 143 (128 + 15). Either
    way no output file is left, complete or partial: outputs are written to a temporary
    file renamed into place only when complete.
    """
    previous = None
    terminated = False
    try:
        previous = _install_sigterm()
        parser = build_parser()
        args = parser.parse_args(argv)
        _check_numbers(args)
        if args.command == "analyze":
            return _run_analyze(args)
        if args.command == "demo":
            return _run_demo(args)
        if args.command == "compare":
            return _run_compare(args)
        if args.command == "track":
            return _run_track(args)
        if args.command == "compress":
            return _run_compress(args)
        for name, module in _COMMAND_MODULES:
            if args.command == name:
                return int(importlib.import_module(module).run(args))
        return _run_describe(args)
    except InfospecError as exc:
        print(f"infospec: error: {printable(_cli_words(str(exc)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"infospec: {what}; no output file was written.", file=sys.stderr)
        return 143 if terminated else 130
    except BrokenPipeError:  # the reader went away (`infospec describe | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file the system refused: one line, not a traceback
        where = f" '{exc.filename}'" if exc.filename else ""
        print(
            f"infospec: error: {printable(exc.strerror or exc)}{printable(where)}; check the "
            f"path and its permissions, or the free space.",
            file=sys.stderr,
        )
        return 2
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
