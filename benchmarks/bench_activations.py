"""Cost of the activation pass of ``infospec analyze`` on the MiniLM example, and its accuracy.

The quickstart's job (``infospec analyze`` without arguments): MiniLM-L6, the first 256
texts of the bundled corpus, batches of 32 (by length, as :func:`infospec.example.example_batches`
makes them), every layer owning an analysed weight observed (39 modules). Contenders, run
round-robin in one process (so that a drift of the machine's load hits them alike):

* ``bare``: the forward passes alone (``torch.no_grad``, eval mode), no hook;
* ``fast``: the same passes through analyze's activation code at its defaults
  (``ActivationCovariances(linear_inputs=True, precision="auto")``: float64 Grams of the
  float32 activations, linear layers no wider at their input accumulated through it, one
  Gram for the layers fed the same tensor);
* ``float64``: the earlier path (every output accumulated as it is, float64 Grams);
* ``float32`` (with ``--float32``): ``fast`` with float32 Gram products
  (``precision="float32"``), the speed a float32 Gram would give and what it costs in
  accuracy;
* ``bare unsorted`` (with ``--padding``): the forward passes of the texts batched in corpus
  order, for the cost of padding (issue 16).

Prints per contender the median wall and CPU time over the rounds with the spread
(min-max), the ratios of the medians to ``bare`` and the median of the per-round ratios
(each round's contenders ran back to back), the load average before and after, and the
accuracy of ``fast`` against ``float64``: per layer the relative difference of the
effective rank, flatness and Gaussian entropy of the covariance eigenvalues (through
:func:`infospec.analysis.activation_record`), and whether the ranks agree. With
``--analyze``, one full ``infospec.analyze`` run with its ``report.meta`` timings.

Usage::

    python benchmarks/bench_activations.py [--rounds 5] [--threads 2] [--texts 256]
        [--float32] [--padding] [--analyze]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from infospec.analysis.activations import activation_record
from infospec.analysis.analyze import _forward, _observed_modules
from infospec.example import example_batches, example_corpus, load_minilm
from infospec.sources import open_source
from infospec.spectra.activations import ActivationCovariances


def _bare(model, batches):
    with torch.no_grad():
        for batch in batches:
            model(**batch)


def _hooked(model, modules, batches, **kwargs):
    with ActivationCovariances(modules, **kwargs) as acts, torch.no_grad():
        for i, batch in enumerate(batches):
            _forward(model, batch, None, acts, i)
        accumulators = acts.accumulators  # the mapping of linear layers is part of the cost
    return accumulators, acts.seconds


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default)")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--padding", action="store_true", help="add the unsorted batches")
    parser.add_argument("--float32", action="store_true", help="add float32 Gram products")
    parser.add_argument("--analyze", action="store_true", help="one full analyze run too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_minilm()
    texts = example_corpus(args.texts)
    batches = example_batches(tokenizer, texts, batch_size=args.batch_size)
    names = [e.name for e in open_source(model).select(None) if not e.skipped]
    modules = _observed_modules(model, names, None)
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    positions = sum(b["attention_mask"].numel() for b in batches)
    print(
        f"MiniLM-L6, {len(texts)} texts, {len(batches)} batches of {args.batch_size}, "
        f"{len(modules)} observed modules, {real} tokens in {positions} positions "
        f"({100 * real / positions:.0f} % real); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )

    contenders = {
        "bare": lambda: _bare(model, batches),
        "fast": lambda: _hooked(model, modules, batches, linear_inputs=True),
        "float64": lambda: _hooked(model, modules, batches, precision="float64"),
    }
    if args.float32:
        contenders["float32"] = lambda: _hooked(
            model, modules, batches, linear_inputs=True, precision="float32"
        )
    if args.padding:
        unsorted = example_batches(tokenizer, texts, batch_size=args.batch_size, by_length=False)
        contenders["bare unsorted"] = lambda: _bare(model, unsorted)

    _bare(model, batches[:1])  # warm-up: first-call allocations and kernel selection
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    hooks: dict[str, list[float]] = {k: [] for k in ("fast", "float64", "float32")}
    results: dict[str, dict] = {}
    load_before = _load()
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]  # ABBA
        for name in order:
            wall, cpu, out = _timed(contenders[name])
            times[name].append((wall, cpu))
            if name in hooks:
                results[name], seconds = out
                hooks[name].append(seconds)
    load_after = _load()

    bare_wall = statistics.median(w for w, _ in times["bare"])
    bare_cpu = statistics.median(c for _, c in times["bare"])
    print(f"\nload average before: {load_before}; after: {load_after}; {args.rounds} rounds\n")
    print(
        "| contender | wall s (median) | wall min-max | CPU s (median) | wall / bare "
        "| per-round wall / bare (median, min-max) | CPU / bare | in hooks s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, ts in times.items():
        walls = [w for w, _ in ts]
        cpus = [c for _, c in ts]
        per_round = [w / b for w, (b, _) in zip(walls, times["bare"], strict=True)]
        hook = f"{statistics.median(hooks[name]):.2f}" if name in hooks else ""
        print(
            f"| {name} | {statistics.median(walls):.2f} | {min(walls):.2f}-{max(walls):.2f} "
            f"| {statistics.median(cpus):.2f} | {statistics.median(walls) / bare_wall:.2f} "
            f"| {statistics.median(per_round):.2f} ({min(per_round):.2f}-{max(per_round):.2f}) "
            f"| {statistics.median(cpus) / bare_cpu:.2f} | {hook} |"
        )

    keys = ("effective_rank", "flatness", "entropy_bits_per_dim")
    reference = {
        name: activation_record(acc.eigenvalues(), acc.count, input_dtype=torch.float32)
        for name, acc in results["float64"].items()
    }
    for contender in ("fast", "float32"):
        if contender not in results:
            continue
        worst = dict.fromkeys(keys, (0.0, ""))
        rank_equal = 0
        for name, ref in reference.items():
            acc = results[contender][name]
            got = activation_record(acc.eigenvalues(), acc.count, input_dtype=torch.float32)
            rank_equal += ref["rank"] == got["rank"]
            for key in keys:
                rel = abs(got[key] - ref[key]) / abs(ref[key])
                if rel > worst[key][0]:
                    worst[key] = (rel, name)
        print(
            f"\naccuracy, {contender} against float64: ranks equal on {rank_equal}/"
            f"{len(reference)} layers"
        )
        for key in keys:
            rel, name = worst[key]
            print(f"  max relative difference of {key}: {rel:.1e} ({name})")

    if args.analyze:
        from infospec import analyze

        wall, _, report = _timed(lambda: analyze(model, batches, progress=False))
        meta = report.meta
        print(
            f"\nanalyze(model, batches): {wall:.2f} s; weights {meta['weight_seconds']:.2f} s, "
            f"activations {meta['activation_seconds']:.2f} s (forward "
            f"{meta['activation_forward_seconds']:.2f} s, accumulate "
            f"{meta['activation_accumulate_seconds']:.2f} s)"
        )


if __name__ == "__main__":
    main()
