r"""The written reading of the demo, generated from the measured numbers.

No sentence here states a conclusion in advance: each one is a template whose words are
chosen from the sign of an estimate and from whether its confidence interval excludes
zero (:func:`direction`). When the data contradict seed 001's claim ("flatten the spectrum
and you compress the signal; compress the signal and you flatten its spectrum"), the text
says so.

The one piece of theory the text quotes is an identity, not a finding: on the support of
a Gaussian's covariance (rank :math:`r`, eigenvalues :math:`\lambda_i > 0`),

.. math::

    \frac{H}{r} = \tfrac12\log_2(2\pi e) + \tfrac12\log_2 \bar\lambda
        + \tfrac12\log_2 \mathrm{SFM}(\lambda)

so at fixed energy :math:`\bar\lambda` a flatter spectrum has *more* entropy per dimension,
and the coding rate at fixed trace is likewise largest for a flat spectrum (it is a
Schur-concave function of the eigenvalues).
"""

from __future__ import annotations

import math
from typing import Any

from .stats import Interval

__all__ = ["continual_reading", "direction", "duality_reading"]

_NAMES = {
    "baseline": "baseline",
    "coding_rate": "coding-rate",
    "info_spec": "info-spec",
    "spectral": "spectral",
}
_METRIC_UNITS = {
    "act_flatness": ("activation flatness", 3, ""),
    "act_effective_rank": ("activation effective rank", 2, ""),
    "act_coding_rate_bits": ("coding rate", 2, " bits"),
    "act_entropy_bits_per_dim": ("Gaussian entropy", 2, " bits/dim"),
    "act_energy": ("energy (mean eigenvalue)", 3, ""),
    "weight_flatness": ("weight flatness", 3, ""),
    "weight_log_sigma_var": ("Var[log σ]", 3, ""),
    "weight_sigma_max": ("σ_max", 2, ""),
    "test_accuracy": ("test accuracy", 1, " points"),
}


def direction(iv: Interval) -> str:
    """``"+"`` or ``"-"`` when the interval excludes 0, ``"0"`` when it holds 0, ``"?"``
    without an interval (one seed).

    Examples
    --------
    >>> direction(Interval(0.5, 0.2, 0.8, 3, ())), direction(Interval(0.5, -0.2, 0.8, 3, ()))
    ('+', '0')
    """
    if not all(math.isfinite(v) for v in (iv.value, iv.lo, iv.hi)):
        return "?"
    if iv.lo > 0:
        return "+"
    if iv.hi < 0:
        return "-"
    return "0"


def _fmt(iv: Interval, digits: int, *, scale: float = 1.0, signed: bool = False) -> str:
    """``+0.123 [0.050, 0.190]``; the bracket is left out without an interval."""
    sign = "+" if signed else ""

    def f(v: float) -> str:
        return f"{v * scale:{sign}.{digits}f}" if math.isfinite(v) else "n/a"

    if math.isfinite(iv.lo) and math.isfinite(iv.hi):
        return f"{f(iv.value)} [{f(iv.lo)}, {f(iv.hi)}]"
    return f"{f(iv.value)} (one seed, no interval)"


def _effect(stats: dict[str, Any], method: str, layer: str, metric: str) -> dict[str, Any] | None:
    for e in stats["effects"]:
        if e["method"] == method and e["layer"] == layer and e["metric"] == metric:
            return e
    return None


def _corr(stats: dict[str, Any], x: str, y: str, layer: str) -> Interval | None:
    for c in stats["correlations"]:
        if c["x"] == x and c["y"] == y and c["layer"] == layer:
            return c["interval"]
    return None


def _effect_value(stats: dict[str, Any], method: str, layer: str, metric: str) -> str:
    """The paired difference with its interval and unit: ``+0.12 [0.05, 0.19] bits``."""
    e = _effect(stats, method, layer, metric)
    if e is None:
        return "not measured"
    _, digits, unit = _METRIC_UNITS[metric]
    scale = 100.0 if metric == "test_accuracy" else 1.0
    return f"{_fmt(e['interval'], digits, scale=scale, signed=True)}{unit}"


def _effect_text(stats: dict[str, Any], method: str, layer: str, metric: str) -> str:
    """``coding rate +0.12 [0.05, 0.19] bits``."""
    return f"{_METRIC_UNITS[metric][0]} {_effect_value(stats, method, layer, metric)}"


def _strength(iv: Interval | None) -> str:
    """A correlation's size in Cohen's words, with its sign: ``"a strong positive correlation"``."""
    if iv is None or not math.isfinite(iv.value):
        return "no correlation measured"
    a = abs(iv.value)
    size = "negligible" if a < 0.1 else "weak" if a < 0.3 else "moderate" if a < 0.5 else "strong"
    sign = "positive" if iv.value > 0 else "negative" if iv.value < 0 else "zero"
    return f"a {size} {sign} correlation"


def _mixed(stats: dict[str, Any], x: str, y: str, layers: list[str]) -> bool:
    """Whether some layers' correlations are settled positive and others settled negative."""
    dirs = {direction(iv) for layer in layers if (iv := _corr(stats, x, y, layer)) is not None}
    return {"+", "-"} <= dirs


def _dir(stats: dict[str, Any], method: str, layer: str, metric: str) -> str:
    e = _effect(stats, method, layer, metric)
    return "?" if e is None else direction(e["interval"])


def _moved(e: dict[str, Any] | None, up: str, down: str, flat: str) -> str:
    """The verb for an effect: ``up``/``down`` when its interval excludes 0, else ``flat``;
    with one seed (no interval), the verb of the value's sign."""
    if e is None:
        return flat
    d = direction(e["interval"])
    if d == "?":
        value = e["interval"].value
        d = "+" if value > 0 else "-" if value < 0 else "0"
    return {"+": up, "-": down, "0": flat}[d]


def _count(stats: dict[str, Any], method: str, metric: str, layers: list[str]) -> str:
    """``"up in 2, down in 0, unclear in 1 of 3 layers"``."""
    dirs = [_dir(stats, method, layer, metric) for layer in layers]
    return (
        f"up in {dirs.count('+')}, down in {dirs.count('-')}, unclear in "
        f"{len(dirs) - dirs.count('+') - dirs.count('-')} of {len(dirs)} layers"
    )


def duality_reading(stats: dict[str, Any], *, features_layer: str) -> list[str]:
    """Paragraphs reading the duality experiment's statistics (plain text).

    Parameters
    ----------
    stats : dict
        The result of :func:`~infospec.demo.stats.duality_statistics`.
    features_layer : str
        The layer whose output the coding-rate and info-spec terms act on.
    """
    level = round(100 * stats["level"])
    n = stats["seeds"]
    layers = sorted({c["layer"] for c in stats["correlations"] if c["layer"] != "all"})
    out: list[str] = []

    accs = "; ".join(
        f"{_NAMES[m]} {_fmt(iv, 1, scale=100)} %" for m, iv in stats["accuracy"].items()
    )
    costs = []
    for m in stats["accuracy"]:
        if m == "baseline":
            continue
        d = _dir(stats, m, "model", "test_accuracy")
        if d in "+-":
            word = "raised" if d == "+" else "lowered"
            costs.append(
                f"the {_NAMES[m]} term {word} it by "
                f"{_effect_value(stats, m, 'model', 'test_accuracy')}"
            )
    cost_text = (
        "Compared with the baseline (paired by seed), " + "; ".join(costs) + "."
        if costs
        else "No regulariser changed the accuracy by an amount its interval separates from 0."
    )
    out.append(
        f"Test accuracy after {stats['last_epoch']} epochs (mean over {n} seed(s), {level} % "
        f"interval): {accs}; chance is 10 %. {cost_text}"
    )

    # (a) flatten -> compress
    key = _corr(stats, "act_flatness", "act_coding_rate_bits", "all")
    ent = _corr(stats, "act_flatness", "act_entropy_bits_per_dim", "all")
    energy = _corr(stats, "act_flatness", "act_energy", "all")
    wcr = _corr(stats, "weight_flatness", "act_coding_rate_bits", "all")

    def per_layer_text(y: str) -> str:
        return ", ".join(
            f"{layer} {_fmt(iv, 2, signed=True)}"
            for layer in layers
            if (iv := _corr(stats, "act_flatness", y, layer)) is not None
        )

    per_layer = per_layer_text("act_coding_rate_bits")
    verdict_a = {
        "+": "flatter spectra carried MORE bits, which contradicts the claim's first half "
        "at fixed energy, as theory expects (at a fixed trace the Gaussian entropy and the "
        "coding rate are largest for a flat spectrum)",
        "-": "flatter spectra carried fewer bits, which supports the claim's first half",
        "0": "the sign is not settled by these seeds, so the data neither support nor "
        "contradict the claim's first half",
        "?": "with one seed there is no interval, so no conclusion is drawn",
    }[direction(key)]
    if _mixed(stats, "act_flatness", "act_coding_rate_bits", layers):
        verdict_a += " (but the layers disagree in sign: see each layer's value)"
    out.append(
        "Flatten → compress. The claim predicts that a flatter spectrum goes with fewer bits "
        "(a negative correlation). Over every method and checkpoint, Spearman's ρ between the "
        "activation flatness and the coding rate at fixed (unit) energy was "
        f"{_fmt(key, 2, signed=True)} pooled over layers ({per_layer}), {_strength(key)}: "
        f"{verdict_a}."
    )
    ent_dir, energy_dir = direction(ent), direction(energy)
    ent_words = {
        "+": "flatter spectra also had more entropy",
        "-": "flatter spectra had less entropy",
        "0": "its sign is not settled",
        "?": "no interval with one seed",
    }[ent_dir]
    if _mixed(stats, "act_flatness", "act_entropy_bits_per_dim", layers):
        ent_words = "the layers disagree in sign, so no single direction holds across layers"
    if ent_dir == "-" and energy_dir == "-":
        why = (
            f" Flatter layers also had less energy (ρ flatness–energy "
            f"{_fmt(energy, 2, signed=True)}, {_strength(energy)}); by the identity, entropy "
            "can fall while the spectrum flattens only if the energy falls faster, so the "
            "sign here is set by how the features' energy moves, about which the claim says "
            "nothing."
        )
    else:
        why = f" Flatness and energy had ρ = {_fmt(energy, 2, signed=True)}, {_strength(energy)}."
    wcr_words = {
        "+": "flatter weights went with more bits",
        "-": "flatter weights went with fewer bits, as the claim would have it",
        "0": "no settled sign",
        "?": "no interval",
    }[direction(wcr)]
    out.append(
        "With the energy free to change: the Gaussian entropy per dimension is exactly "
        "½ log2(2πe) + ½ log2(mean eigenvalue) + ½ log2(flatness) on the covariance's "
        "support, so at fixed energy it rises with flatness. Measured, flatness and entropy "
        f"had ρ = {_fmt(ent, 2, signed=True)} pooled over layers "
        f"({per_layer_text('act_entropy_bits_per_dim')}), {_strength(ent)}: "
        f"{ent_words}.{why} Weight "
        "flatness and the coding rate of the layer's output had ρ = "
        f"{_fmt(wcr, 2, signed=True)}, {_strength(wcr)}: {wcr_words}."
    )

    # (b) compress -> flatten: info-spec
    fl = features_layer
    cr_d = _dir(stats, "info_spec", fl, "act_coding_rate_bits")
    h_d = _dir(stats, "info_spec", fl, "act_entropy_bits_per_dim")
    flat_d = _dir(stats, "info_spec", fl, "act_flatness")
    compressed = "-" in (cr_d, h_d)
    if not compressed:
        verdict_b = (
            "info-spec did not measurably compress these features at this β, so this run "
            "cannot test the claim's second half"
        )
    else:
        verdict_b = {
            "+": "compressing went with a flatter spectrum, which supports the claim's second half",
            "-": "compressing went with a LESS flat spectrum, which contradicts the claim's "
            "second half (consistent with the gradient of the log-determinant, 1/λ, being "
            "largest for the weakest directions, which an entropy penalty shrinks first)",
            "0": "compressing left the flatness without a settled change, so the data neither "
            "support nor contradict the claim's second half",
            "?": "with one seed there is no interval, so no conclusion is drawn",
        }[flat_d]
    out.append(
        f"Compress → flatten. At the last epoch, paired by seed, info-spec (β H(z) on "
        f"{fl}'s output plus γ Var[log σ] on every weight) changed {fl}'s "
        f"{_effect_text(stats, 'info_spec', fl, 'act_coding_rate_bits')}, its "
        f"{_effect_text(stats, 'info_spec', fl, 'act_entropy_bits_per_dim')} and its "
        f"{_effect_text(stats, 'info_spec', fl, 'act_flatness')} "
        f"({_effect_text(stats, 'info_spec', fl, 'act_effective_rank')}): {verdict_b}. "
        "Activation flatness over all layers: "
        f"{_count(stats, 'info_spec', 'act_flatness', layers)}. "
        f"Its weight flatness was {_count(stats, 'info_spec', 'weight_flatness', layers)}; "
        "the γ term flattens weight spectra by construction, so that is not evidence for "
        "the duality. Both terms act together in this method, so its effect on the "
        "activations cannot be credited to β H(z) alone."
    )

    # coding-rate expansion
    exp_d = _dir(stats, "coding_rate", fl, "act_coding_rate_bits")
    cflat_d = _dir(stats, "coding_rate", fl, "act_flatness")
    expanded = _moved(
        _effect(stats, "coding_rate", fl, "act_coding_rate_bits"),
        "raised",
        "lowered",
        "did not clearly change",
    )
    if exp_d == "+" and cflat_d == "+":
        tail = (
            "more bits and a flatter spectrum went together, so here flatness tracked "
            "expansion, not compression"
        )
    elif exp_d == "+" and cflat_d == "-":
        tail = "more bits went with a less flat spectrum, in line with the claim's duality"
    else:
        tail = "this comparison does not separate the two readings"
    out.append(
        f"The coding-rate term (SimDINO's expansion) {expanded} {fl}'s coding rate "
        f"({_effect_value(stats, 'coding_rate', fl, 'act_coding_rate_bits')}); its "
        f"{_effect_text(stats, 'coding_rate', fl, 'act_flatness')} and its "
        f"{_effect_text(stats, 'coding_rate', fl, 'act_effective_rank')}: {tail}."
    )

    # spectral regulariser
    out.append(
        "The spectral regulariser (which pulls each σ_max toward 1) left σ_max "
        f"{_count(stats, 'spectral', 'weight_sigma_max', layers)} (on {fl}: "
        f"{_effect_value(stats, 'spectral', fl, 'weight_sigma_max')}); weight flatness was "
        f"{_count(stats, 'spectral', 'weight_flatness', layers)} and activation flatness "
        f"{_count(stats, 'spectral', 'act_flatness', layers)}; on {fl} the "
        f"{_effect_text(stats, 'spectral', fl, 'act_coding_rate_bits')}."
    )

    first = {
        "+": "did not hold (flatter went with more bits at fixed energy)",
        "-": "held (flatter went with fewer bits)",
        "0": "was not settled",
        "?": "was not tested (one seed)",
    }[direction(key)]
    if not compressed:
        second = "was not tested (no measurable compression)"
    else:
        second = {
            "+": "held (compression flattened the spectrum)",
            "-": "did not hold (compression made the spectrum less flat)",
            "0": "was not settled",
            "?": "was not tested (one seed)",
        }[flat_d]
    out.append(
        f"In short, on this data and at these coefficients, “flatten the spectrum and you "
        f"compress the signal” {first}, and “compress the signal and you flatten its "
        f"spectrum” {second}."
    )
    return out


def continual_reading(stats: dict[str, Any], *, epochs_per_task: int) -> list[str]:
    """Paragraphs reading the continual-learning check (plain text)."""
    level = round(100 * stats["level"])
    n, tasks = stats["seeds"], stats["tasks"]
    out = []

    def arm_text(arm: str) -> str:
        accs = stats["new_task_accuracy"][arm]
        return (
            f"{_NAMES[arm]}: task 1 {_fmt(accs[0], 1, scale=100)} %, task {tasks} "
            f"{_fmt(accs[-1], 1, scale=100)} %, trend "
            f"{_fmt(stats['plasticity_slope'][arm], 2, scale=100, signed=True)} points per "
            f"task, mean over tasks 2-{tasks} minus task 1 "
            f"{_fmt(stats['plasticity_change'][arm], 1, scale=100, signed=True)} points"
        )

    out.append(
        f"Continual learning: {tasks} permuted-pixel tasks, {epochs_per_task} epoch(s) each, "
        f"{n} seed(s), {level} % intervals. Accuracy on each new task right after training on "
        f"it: {arm_text('baseline')}; {arm_text('spectral')}. The trend (the least-squares "
        "slope over tasks, per seed) is the test of plasticity: a progressive loss makes it "
        "negative."
    )
    b = direction(stats["plasticity_slope"]["baseline"])
    s = direction(stats["plasticity_slope"]["spectral"])
    diff = stats["spectral_minus_baseline"]
    dd = direction(diff)
    fall = -100 * stats["plasticity_slope"]["baseline"].value
    size = f"about {fall:.2f} points per task, {fall * (tasks - 1):.1f} over the sequence"
    if b == "-" and s in "0+":
        verdict = (
            f"the baseline lost plasticity (its new-task accuracy fell by {size}) and the "
            "spectral regulariser kept it"
        )
    elif b == "-" and s == "-":
        verdict = f"both arms lost plasticity (the baseline {size})"
    elif b in "0+" and s in "0+":
        verdict = (
            f"neither arm showed a measurable loss of plasticity over {tasks} tasks, so this "
            "check cannot show the regulariser preventing one"
        )
    elif b in "0+" and s == "-":
        verdict = "the regulariser's arm lost plasticity while the baseline did not"
    elif b == "-":
        verdict = "the baseline lost plasticity; with one seed of the other arm no comparison"
    else:
        verdict = "with one seed no conclusion on plasticity is drawn"
    diff_words = {
        "+": "higher with the regulariser",
        "-": "lower with the regulariser",
        "0": "not clearly different between the arms",
        "?": "not compared (one seed)",
    }[dd]
    out.append(
        f"Reading: {verdict}. New-task accuracy over tasks 2-{tasks} was {diff_words} "
        f"(spectral minus baseline {_fmt(diff, 1, scale=100, signed=True)} points; on task 1, "
        "learned from a fresh network, "
        f"{_fmt(stats['spectral_minus_baseline_task1'], 1, scale=100, signed=True)} points). "
        "The mean "
        f"largest singular value after the last task was "
        f"{_fmt(stats['sigma_max_end']['baseline'], 2)} without and "
        f"{_fmt(stats['sigma_max_end']['spectral'], 2)} with the regulariser. Accuracy on "
        f"task 1 after the last task (forgetting; chance 10 %): baseline "
        f"{_fmt(stats['first_task_end']['baseline'], 1, scale=100)} %, spectral "
        f"{_fmt(stats['first_task_end']['spectral'], 1, scale=100)} %."
    )
    return out
