"""How a spectrum is obtained from a source: matrices, samples, signals.

The names load on first use (:pep:`562`), so that :mod:`infospec.spectra.conventions`
(shapes only) can be imported without torch, as ``infospec describe`` does.
"""

from __future__ import annotations

from typing import Any

from .._lazy import lazy_attribute

__all__ = [
    "DiffusionNoise",
    "RadialPowerLaw",
    "RadialSpectrum",
    "StreamingCovariance",
    "covariance_eigenvalues",
    "diffusion_noise_levels",
    "fit_radial_power_law",
    "frame_entropy",
    "frame_flatness",
    "ledoit_wolf_shrinkage",
    "noise_cutoff_frequency",
    "noise_level_information",
    "power_spectrogram",
    "radial_power_spectrum",
    "singular_values",
]

_HOME = {
    "StreamingCovariance": "covariance",
    "covariance_eigenvalues": "covariance",
    "ledoit_wolf_shrinkage": "covariance",
    "singular_values": "matrices",
    "frame_entropy": "signals",
    "frame_flatness": "signals",
    "power_spectrogram": "signals",
    "RadialPowerLaw": "images",
    "RadialSpectrum": "images",
    "fit_radial_power_law": "images",
    "noise_cutoff_frequency": "images",
    "noise_level_information": "images",
    "radial_power_spectrum": "images",
    "DiffusionNoise": "diffusion",
    "diffusion_noise_levels": "diffusion",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _HOME, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
