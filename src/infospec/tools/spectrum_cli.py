"""``infospec spectrum IMAGES``: radial power spectra of images and a diffusion schedule's floors.

Dieleman's "Diffusion is spectral autoregression" picture: each image's radially averaged
power spectrum (:func:`infospec.spectra.radial_power_spectrum`, orthonormal FFT, pixels
mapped to DDPM's [-1, 1]), its fitted power law, and the white-noise floors
:math:`\\sigma_t^2 = (1 - \\bar\\alpha_t)/\\bar\\alpha_t` of a schedule
(:func:`infospec.spectra.diffusion_noise_levels`) as horizontal lines on the same axes,
with the cutoff frequency and the bits per pixel left at each level printed. IMAGES are
image files (PNG natively, JPEG and others through Pillow) or the images scikit-learn ships:
``sklearn:china`` and ``sklearn:flower`` (``load_sample_image``, 427 x 640 RGB JPEGs) and
``sklearn:digits`` (``load_digits``: 1797 8 x 8 images, one ensemble spectrum).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._checks import shown, shown_str

#: Built-in image names: name -> (what it is, loader name in sklearn.datasets, argument).
BUILTIN = {
    "sklearn:china": ("scikit-learn sample image china.jpg", "load_sample_image", "china.jpg"),
    "sklearn:flower": ("scikit-learn sample image flower.jpg", "load_sample_image", "flower.jpg"),
    "sklearn:digits": ("scikit-learn load_digits, 1797 images", "load_digits", None),
}
_DEFAULT_TIMESTEPS = "50,200,500,800,950"
#: The most diffusion steps ``--steps`` takes: infospec.spectra.diffusion.MAX_STEPS (kept
#: here so that ``--help`` does not import torch; a test checks that they agree).
MAX_STEPS = 100_000
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "spectrum",
        help="radial power spectra of images against a diffusion schedule's noise floors",
        description="Radially averaged power spectrum of each image (pixels mapped to "
        "[-1, 1], orthonormal FFT), its power law P = K f^-alpha, and the noise floors "
        "sigma_t^2 = (1 - alpha_bar_t) / alpha_bar_t of a diffusion schedule: where each "
        "floor buries the spectrum (f_c) and the bits per pixel left. Draws a PNG.",
    )
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (PNG; JPEG etc. with Pillow) or sklearn:china, sklearn:flower, "
        "sklearn:digits",
    )
    p.add_argument("--schedule", choices=("cosine", "linear"), default="cosine")
    p.add_argument(
        "--steps",
        type=int,
        default=1000,
        help=f"diffusion steps T (default 1000, at most {MAX_STEPS})",
    )
    p.add_argument(
        "--timesteps",
        default=_DEFAULT_TIMESTEPS,
        help=f"comma-separated timesteps whose floors are drawn (default {_DEFAULT_TIMESTEPS})",
    )
    p.add_argument(
        "--f-min",
        type=float,
        default=None,
        help="lowest frequency of the power-law fit, cycles/pixel (default the first ring)",
    )
    p.add_argument(
        "--out",
        default="infospec-spectrum.png",
        help="the figure, a PNG written atomically (default infospec-spectrum.png)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing --out file that infospec did not write",
    )


def _timesteps(text: str, steps: int) -> list[int]:
    from .._errors import InputError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not 1 <= v <= steps for v in values):
        raise InputError(
            f"--timesteps must be comma-separated ints in [1, {steps}] (--steps); got "
            f"{shown(text)}."
        )
    return sorted(set(values))


def _to_unit_range(pixels: Any, name: str):
    """Pixels as float64 in [-1, 1]: uint8 / 127.5 - 1, floats in [0, 1] as 2 x - 1."""
    import numpy as np

    from .._errors import SourceError

    a = np.asarray(pixels)
    if a.dtype == np.uint8:
        return a / 127.5 - 1.0
    if a.dtype == np.uint16:
        return a / 32767.5 - 1.0
    a = a.astype(np.float64)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise SourceError(f"Cannot read the image '{name}': float pixels outside [0, 1].")
    return 2.0 * a - 1.0


def load_image(name: str) -> tuple[str, Any, str]:
    """``(label, pixels, description)``: pixels in [-1, 1], shape (N, H, W, C) or (H, W, C).

    Raises
    ------
    SourceError
        If the file is missing or not an image matplotlib (or Pillow) can read, or a
        ``sklearn:`` name is unknown; the message names it.
    """
    from .._errors import SourceError

    if name.startswith("sklearn:"):
        if name not in BUILTIN:
            raise SourceError(f"Unknown built-in image '{name}'; use one of {', '.join(BUILTIN)}.")
        what, loader, arg = BUILTIN[name]
        try:
            from sklearn import datasets
        except ImportError as exc:
            raise SourceError(
                f"The built-in image '{name}' needs scikit-learn: pip install 'infospec[demo]'."
            ) from exc
        if arg is None:  # the digits: 1797 images of 8 x 8 pixels in 0..16
            images = datasets.load_digits().images / 8.0 - 1.0
            return name, images[..., None], f"{what}, 8x8"
        pixels = getattr(datasets, loader)(arg)
        return name, _to_unit_range(pixels, name), f"{what}, {pixels.shape[0]}x{pixels.shape[1]}"
    path = Path(name)
    if not path.is_file():
        raise SourceError(f"Cannot read the image '{name}': no such file.")
    try:
        from matplotlib import image as mpimg

        pixels = mpimg.imread(path)
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError
        raise SourceError(
            f"Cannot read the image '{name}': {type(exc).__name__}: {exc}. Give a PNG, or a "
            f"JPEG with Pillow installed."
        ) from exc
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 2, 3, 4):
        raise SourceError(f"Cannot read the image '{name}': pixel array of shape {pixels.shape}.")
    if pixels.shape[-1] in (2, 4):  # drop the alpha channel
        pixels = pixels[..., :-1]
    label = path.name
    return label, _to_unit_range(pixels, name), f"file, {pixels.shape[0]}x{pixels.shape[1]}"


def _figure(rows: list[dict[str, Any]], levels, args: argparse.Namespace) -> bytes:
    import io

    import numpy as np
    from matplotlib.figure import Figure

    from .. import __version__

    fig = Figure(figsize=(8, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        colour = _COLOURS[i % len(_COLOURS)]
        f = row["spectrum"].frequency.numpy()[1:]
        p = row["spectrum"].power.numpy()[1:]
        ax.loglog(f, p, color=colour, lw=1.4, label=f"{row['label']}  (alpha {row['alpha']:.2f})")
        fit = row["fit"]
        ax.loglog(f, float(fit.K) * f ** -float(fit.alpha), color=colour, lw=0.8, ls="--")
    lo = min(float(r["spectrum"].frequency[1]) for r in rows)
    hi = max(float(r["spectrum"].frequency[-1]) for r in rows)
    greys = np.linspace(0.75, 0.15, len(levels.timestep))
    for grey, t, var in zip(
        greys, levels.timestep.tolist(), levels.noise_var.tolist(), strict=True
    ):
        ax.axhline(var, color=str(grey), lw=1.0, ls=":")
        ax.annotate(
            f"t={t}: sigma^2={var:.3g}",
            (hi, var),
            xytext=(-2, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
            color=str(grey),
        )
    ax.set_xlim(lo, hi)
    top = max(float(r["spectrum"].power[1:].max()) for r in rows)
    bottom = min(float(r["spectrum"].power[1:].min()) for r in rows)
    ax.set_ylim(bottom / 3, top * 3)
    ax.set_xlabel("spatial frequency |f| (cycles/pixel)")
    ax.set_ylabel("power |FFT_ortho(x)|^2, pixels in [-1, 1]")
    ax.set_title(
        f"Radially averaged power spectra and the noise floors of the {args.schedule} "
        f"schedule (T={args.steps}); dashed: power-law fits",
        fontsize=9,
    )
    ax.legend(fontsize=8, frameon=False, loc="lower left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": f"infospec {__version__}"})
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    import torch

    from .._errors import InputError
    from .._io import atomic_write, check_output
    from ..spectra import (
        diffusion_noise_levels,
        fit_radial_power_law,
        noise_cutoff_frequency,
        noise_level_information,
        radial_power_spectrum,
    )

    least = 21 if args.schedule == "linear" else 1
    if not least <= args.steps <= MAX_STEPS:
        raise InputError(
            f"--steps must be an int in [{least}, {MAX_STEPS}] for the {args.schedule} "
            f"schedule; got {shown_str(args.steps)}."
        )
    chosen = _timesteps(args.timesteps, args.steps)
    if args.f_min is not None and not args.f_min > 0:
        raise InputError(f"--f-min must be a frequency > 0 (cycles/pixel); got {args.f_min}.")
    files = [n for n in args.images if not n.startswith("sklearn:")]
    check_output(args.out, files, force=args.force)
    levels = diffusion_noise_levels(args.schedule, args.steps, timesteps=chosen)
    rows = []
    for name in args.images:
        label, pixels, what = load_image(name)
        spectrum = radial_power_spectrum(
            torch.as_tensor(pixels), channels="last", average=True
        )  # the ensemble over channels (and images, for the digits)
        fit = fit_radial_power_law(spectrum, f_min=args.f_min)
        rows.append(
            dict(
                label=label,
                what=what,
                spectrum=spectrum,
                fit=fit,
                alpha=float(fit.alpha),
                cutoff=noise_cutoff_frequency(fit, levels.noise_var)
                if float(fit.alpha) > 0
                else None,
                bits=noise_level_information(spectrum, levels.noise_var, bits=True)
                / (spectrum.power_2d.shape[-2] * spectrum.power_2d.shape[-1]),
            )
        )
    for row in rows:
        fit = row["fit"]
        print(
            f"{row['label']} ({row['what']}): alpha {row['alpha']:.3f}  K {float(fit.K):.4g}  "
            f"R^2 {float(fit.r2):.4f}  over f in [{fit.f_min:.4g}, {fit.f_max:g}] cycles/pixel "
            f"({fit.n_bins} rings)"
        )
        print(
            f"  {'t':>5} {'sigma^2':>10} {'f_c':>9} {'bits/pixel':>11}   (f_c > 0.5: none buried)"
        )
        for k, (t, var) in enumerate(
            zip(levels.timestep.tolist(), levels.noise_var.tolist(), strict=True)
        ):
            fc = "-" if row["cutoff"] is None else f"{float(row['cutoff'][k]):.4g}"
            print(f"  {t:>5} {var:>10.4g} {fc:>9} {float(row['bits'][k]):>11.4f}")
    png = _figure(rows, levels, args)
    with atomic_write(args.out, "wb", encoding=None) as fh:
        fh.write(png)
    print(f"wrote {args.out}")
    return 0
