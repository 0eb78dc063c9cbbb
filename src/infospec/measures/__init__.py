"""Pure measures on spectra and samples: torch in, torch out, float64 by default."""

from .flatness import log_spectrum_variance, spectral_flatness
from .rank import effective_rank, participation_ratio, stable_rank

__all__ = [
    "effective_rank",
    "log_spectrum_variance",
    "participation_ratio",
    "spectral_flatness",
    "stable_rank",
]
