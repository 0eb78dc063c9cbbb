"""``infospec compress`` and ``infospec demo``: compression at a budget, the duality experiments."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from ._errors import InputError
from .cli_options import add_force, add_progress, example_source, load_hf_model, read_texts

__all__ = ["add_parser", "run"]


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
    add_force(p)
    add_progress(p)


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
    folder = example_source() if args.source == "example" else Path(args.source)
    texts = read_texts(args.data, args.max_texts)
    held = int(len(texts) * args.holdout)
    if len(texts) - held < 1:
        raise InputError(f"--data: {len(texts)} texts leave none for calibration.")
    model, tokenizer = load_hf_model(folder, args.device)
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` and ``compress`` (see :data:`infospec.cli._COMMAND_MODULES`)."""
    _add_demo(sub)
    _add_compress(sub)


def run(args: argparse.Namespace) -> int:
    """Run the verb of ``args`` (one of this module's)."""
    if args.command == "demo":
        return _run_demo(args)
    if args.command == "compress":
        return _run_compress(args)
    raise InputError(f"no such command here: {args.command!r}")
