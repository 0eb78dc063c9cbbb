"""Low-rank compression and spectral interventions on MiniLM-L6, measured on held-out text.

Calibrates on the first ``--calib`` paragraphs of the built-in corpus (the input second
moments of every ``nn.Linear`` of the encoder: attention query/key/value/output and both
FFN layers, 36 matrices; not the embeddings, not the pooler) and measures on the remaining
paragraphs, which were not used for the covariances:

* ``cos``: mean cosine similarity of the compressed model's sentence embeddings (mean of
  the last hidden states over real tokens, L2-normalised, as sentence-transformers does for
  all-MiniLM-L6-v2) to the original model's, over the held-out paragraphs;
* ``top10``: mean overlap of the top-10 nearest neighbours (cosine, the query itself
  excluded) of each held-out paragraph among the held-out paragraphs, compressed against
  original (1 = the same ten neighbours);
* ``out err``: the mean over layers of the measured relative output error
  :math:`\\mathbb E\\|(W - AB)x\\|^2 / \\mathbb E\\|Wx\\|^2` on the held-out inputs
  (:meth:`CompressionResult.evaluate`), and ``pred``: the same predicted on the
  calibration data.

Four methods at each ratio: plain SVD (``weights``) and whitened SVD-LLM (``activations``),
each with a uniform ratio per matrix or ranks allocated by equal slope. Then WeightWatcher's
and RMT-KD's interventions (``svd_smooth``, ``svd_sharpen``, ``rmt_project``) with the same
quality columns. Also the time split of one ``compress`` + ``save`` (covariance, SVD,
writing) and the peak resident memory of the process.

Usage::

    python benchmarks/compress_minilm.py [--calib 256] [--ratios 0.9 0.8 ...] [--plot PNG]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

import infospec
from infospec.example import example_batches, example_corpus, load_minilm
from infospec.transforms import lowrank

ENCODER = r"^encoder\."
METHODS = [
    ("plain SVD, uniform", "weights", "uniform", "relative"),
    ("plain SVD, allocated", "weights", "allocated", "relative"),
    ("whitened, uniform", "activations", "uniform", "relative"),
    ("whitened, allocated", "activations", "allocated", "relative"),
    ("whitened, allocated, sensitivity", "activations", "allocated", "sensitivity"),
]


def memoise_statistics() -> None:
    """Compute each input second moment and each SVD once for the whole table.

    Every ``compress`` call of the table sees the same model and the same calibration (or
    held-out) batches, so the moments, the SVDs of ``W L`` / ``W`` and the end-to-end
    sensitivities are the same each time; caching them leaves the results unchanged and
    the table about 3x faster. The time split above is measured before this is switched
    on.
    """
    moments, svds = {}, {}
    first_moments, first_svd = lowrank.input_second_moments, lowrank.whitened_factors

    def cached_moments(model, modules, data, **kwargs):
        key = (id(model), id(data), tuple(modules))
        if key not in moments:
            moments[key] = first_moments(model, modules, data, **kwargs)
        return moments[key]

    def cached_svd(weight, factor):
        key = (weight.data_ptr(), None if factor is None else factor.data_ptr())
        if key not in svds:
            svds[key] = (first_svd(weight, factor), factor)  # factor kept: its address stays
        return svds[key][0]

    cholesky = {}
    first_cholesky = lowrank._cholesky

    def cached_cholesky(c, ridge, name):
        key = (c.data_ptr(), ridge)
        if key not in cholesky:
            cholesky[key] = (first_cholesky(c, ridge, name), c)
        return cholesky[key][0]

    gains = {}
    first_gains = lowrank.output_sensitivities

    def cached_gains(model, modules, batches, **kwargs):
        key = (id(model), tuple(modules))
        if key not in gains:
            gains[key] = first_gains(model, modules, batches, **kwargs)
        return gains[key]

    lowrank.output_sensitivities = cached_gains
    lowrank.input_second_moments = cached_moments
    lowrank.whitened_factors = cached_svd
    lowrank._cholesky = cached_cholesky


def embed(model, batches) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for batch in batches:
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(mean.double(), dim=-1))
    return torch.cat(out)


def neighbours(emb: torch.Tensor, k: int = 10) -> torch.Tensor:
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    return sim.topk(k, dim=1).indices


def quality(emb: torch.Tensor, ref: torch.Tensor, ref_nn: torch.Tensor) -> dict:
    cos = float((emb * ref).sum(1).mean())
    nn_c = neighbours(emb)
    overlap = [
        len(set(a.tolist()) & set(b.tolist())) / ref_nn.shape[1]
        for a, b in zip(nn_c, ref_nn, strict=True)
    ]
    return {"cos": cos, "top10": sum(overlap) / len(overlap)}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=256, help="paragraphs for covariances")
    parser.add_argument(
        "--ratios", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("timing", "table", "bits", "interventions"),
        default=["timing", "table", "bits", "interventions"],
        help="which parts to run (default all)",
    )
    parser.add_argument(
        "--bits", type=float, nargs="+", default=[8, 6, 5, 4, 3.5, 3, 2.5, 2], dest="budgets"
    )
    labels = sorted({m[0] for m in METHODS + BIT_METHODS})
    parser.add_argument(
        "--methods",
        nargs="+",
        default=labels,
        choices=labels,
        metavar="LABEL",
        help="methods of the tables (default all): " + "; ".join(labels),
    )
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of cos/top10")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    torch.manual_seed(0)

    t0 = time.perf_counter()
    model, tokenizer = load_minilm()
    texts = example_corpus(None)
    calib_texts, held_texts = texts[: args.calib], texts[args.calib :]
    calib = example_batches(tokenizer, calib_texts, batch_size=32)
    held = example_batches(tokenizer, held_texts, batch_size=32, by_length=False)
    ref = embed(model, held)
    ref_nn = neighbours(ref)
    print(
        f"MiniLM-L6: {len(calib_texts)} calibration paragraphs, {len(held_texts)} held out; "
        f"load + reference embeddings {time.perf_counter() - t0:.1f} s"
    )

    if "timing" in args.parts:
        timing(model, calib)
    chosen = set(args.methods)
    rows = (
        table(model, calib, held, ref, ref_nn, args.ratios, chosen) if "table" in args.parts else []
    )
    if "bits" in args.parts:
        rows += bits_table(model, calib, held, ref, ref_nn, args.budgets, chosen)
    if "interventions" in args.parts:
        rows += interventions(model, calib, held, ref, ref_nn)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; peak RSS {peak_rss_mib():.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot and rows:
        _plot(rows, args.ratios, args.plot)


def timing(model, calib) -> None:
    """One compress + save (whitened, allocated, ratio 0.5) with its time split."""
    with tempfile.TemporaryDirectory() as tmp:
        res = infospec.compress(model, calib, ratio=0.5, layers=ENCODER)
        res.save(Path(tmp) / "minilm-0.5")
        sec = res.seconds
        size = (Path(tmp) / "minilm-0.5" / "factors.safetensors").stat().st_size
    print(
        f"\ncompress(ratio=0.5, whitened, allocated) + save: covariance {sec['covariance']:.2f} s,"
        f" SVD + allocation {sec['svd']:.2f} s, writing {sec['write']:.2f} s; factors "
        f"{size / 2**20:.1f} MiB; {res.params_before} -> {res.params_after} parameters; "
        f"allocator gap bound {res.settings['gap_bound']:.3g} of a loss of "
        f"{res.settings['predicted_loss']:.4g}; peak RSS so far {peak_rss_mib():.0f} MiB"
    )


def table(model, calib, held, ref, ref_nn, ratios, chosen) -> list[dict]:
    """The four methods at each ratio."""
    memoise_statistics()
    rows = []
    print("\n| ratio | method | params kept | cos | top-10 overlap | pred err | out err |")
    print("|---|---|---|---|---|---|---|")
    for ratio in ratios:
        for label, method, allocation, weighting in METHODS:
            if label not in chosen:
                continue
            r = infospec.compress(
                model,
                calib,
                ratio=ratio,
                method=method,
                allocation=allocation,
                weighting=weighting,
                layers=ENCODER,
            )
            r.evaluate(held)
            fact = [p for p in r.plan if p["status"] == "factorised"]
            layers = [p for p in r.plan if p["status"] != "skipped"]
            pred_out = _mean(
                [p["predicted_relative"] for p in layers]
                if method == "activations"  # = the relative output error on the calibration
                else [_calib_relative(r, p["name"], calib) for p in layers]
            )
            meas = _mean([p["measured_relative"] if p in fact else 0.0 for p in layers])
            q = quality(embed(r.model, held), ref, ref_nn)
            row = {
                "ratio": ratio,
                "method": label,
                "kept": r.params_after / r.params_before,
                **q,
                "pred_err": pred_out,
                "out_err": meas,
            }
            rows.append(row)
            print(
                f"| {ratio:.1f} | {label} | {row['kept']:.3f} | {q['cos']:.4f} | "
                f"{q['top10']:.3f} | {pred_out:.4f} | {meas:.4f} |"
            )

    return rows


BIT_METHODS = [
    ("plain, uniform", "weights", "uniform", "relative"),
    ("plain, allocated", "weights", "allocated", "relative"),
    ("whitened, uniform", "activations", "uniform", "relative"),
    ("whitened, allocated", "activations", "allocated", "relative"),
    ("whitened, allocated, sensitivity", "activations", "allocated", "sensitivity"),
]


def bits_table(model, calib, held, ref, ref_nn, budgets, chosen) -> list[dict]:
    """compress(bits=...) at each mean bit width: group-wise quantization, group size 128.

    ``uniform`` gives every matrix the same width (integer budgets only); ``allocated``
    chooses each matrix's width in 2..8 by equal slope on its measured relative output
    error, with the input second moments (``whitened``: the output error under the
    calibration inputs) or without (``plain``: the Frobenius error of the weights).
    """
    memoise_statistics()
    rows = []
    print("\n| mean bits | method | stored bits/weight | cos | top-10 overlap | out err | widths |")
    print("|---|---|---|---|---|---|---|")
    for bits in budgets:
        for label, method, allocation, weighting in BIT_METHODS:
            if (allocation == "uniform" and bits != int(bits)) or label not in chosen:
                continue
            start = time.perf_counter()
            r = infospec.compress(
                model,
                calib,
                bits=bits,
                method=method,
                allocation=allocation,
                weighting=weighting,
                layers=ENCODER,
            )
            seconds = time.perf_counter() - start
            r.evaluate(held)
            q = quality(embed(r.model, held), ref, ref_nn)
            meas = _mean([p["measured_relative"] for p in r.plan])
            widths = sorted(p["bits"] for p in r.plan)
            spread = f"{widths[0]}..{widths[-1]}" if widths[0] != widths[-1] else f"{widths[0]}"
            row = {
                "bits": bits,
                "method": label,
                "stored_bits": r.settings["mean_stored_bits"],
                **q,
                "out_err": meas,
                "seconds": seconds,
            }
            rows.append(row)
            print(
                f"| {bits:g} | {label} | {row['stored_bits']:.2f} | {q['cos']:.4f} | "
                f"{q['top10']:.3f} | {meas:.5f} | {spread} |"
            )
    return rows


def interventions(model, calib, held, ref, ref_nn) -> list[dict]:
    """WeightWatcher's and RMT-KD's interventions with the same quality columns."""
    rows = []
    print("\nSpectral interventions (every encoder nn.Linear):")
    print("| intervention | params | cos | top-10 overlap | kept per layer (mean) |")
    print("|---|---|---|---|---|")
    dense = sum(m.weight.numel() for n, m in model.named_modules() if _is_encoder_linear(n, m))
    for label, make in [
        ("svd_smooth(keep='mp_edge')", lambda: infospec.svd_smooth(model, layers=ENCODER)),
        ("svd_smooth(keep=0.5)", lambda: infospec.svd_smooth(model, 0.5, layers=ENCODER)),
        ("svd_sharpen(mode='clip')", lambda: infospec.svd_sharpen(model, layers=ENCODER)),
        (
            "svd_sharpen(mode='remove')",
            lambda: infospec.svd_sharpen(model, mode="remove", layers=ENCODER),
        ),
        (
            "rmt_project (calibration data)",
            lambda: infospec.rmt_project(model, calib, layers=ENCODER),
        ),
    ]:
        start = time.perf_counter()
        out = make()
        took = time.perf_counter() - start
        changes = out.spectral_changes
        key = "spikes" if "spikes" in changes[0] else "kept"
        mean_kept = sum(c[key] for c in changes) / len(changes)
        params = sum(
            p.numel()
            for n, p in out.named_parameters()
            if n.startswith("encoder.") and n.endswith("weight") and p.ndim == 2
        )
        q = quality(embed(out, held), ref, ref_nn)
        rows.append({"method": label, **q, "params": params / dense, "seconds": took})
        print(
            f"| {label} | {params / dense:.3f} | {q['cos']:.4f} | {q['top10']:.3f} | "
            f"{key} {mean_kept:.1f} |"
        )
    return rows


def _is_encoder_linear(name, module) -> bool:
    return name.startswith("encoder.") and isinstance(module, torch.nn.Linear)


def _mean(values) -> float:
    return sum(values) / len(values) if values else 0.0


_MOMENTS: dict = {}


def _calib_relative(result, name, calib) -> float:
    """Predicted relative output error of a plain-SVD layer on the calibration inputs."""
    if not _MOMENTS:  # the same model and calibration data in every run: computed once
        named = dict(result._source.named_modules())
        names = [p["name"] for p in result.plan if p["status"] != "skipped"]
        _MOMENTS.update(
            infospec.transforms.lowrank.input_second_moments(
                result._source, {n: named[n] for n in names}, calib
            )
        )
    cache = _MOMENTS
    if name not in result.factors:
        return 0.0
    c = cache[name][0]
    w = result._source.get_submodule(name).weight.detach().double()
    a, b = (t.double() for t in result.factors[name])
    d = w - a @ b
    return float(torch.einsum("ij,jk,ik->", d, c, d) / torch.einsum("ij,jk,ik->", w, c, w))


def _plot(rows, ratios, path: Path) -> None:
    """Cosine and top-10 overlap against the kept ratio (low rank) and the mean bit width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("ratio", METHODS, "kept parameter ratio"), ("bits", BIT_METHODS, "mean code bits")]
    panels = [p for p in panels if any(p[0] in r for r in rows)]
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 4 * len(panels)), squeeze=False)
    for (key_x, methods, xlabel), row_axes in zip(panels, axes, strict=True):
        for label, *_ in methods:
            pts = [r for r in rows if r["method"] == label and key_x in r]
            for ax, key in zip(row_axes, ("cos", "top10"), strict=True):
                ax.plot([r[key_x] for r in pts], [r[key] for r in pts], marker="o", label=label)
        for ax, title in zip(
            row_axes, ("cosine to original", "top-10 neighbour overlap"), strict=True
        ):
            ax.set_xlabel(xlabel)
            ax.set_title(f"MiniLM-L6, held-out: {title}", fontsize=10)
            ax.invert_xaxis()
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
