"""Pure measures on spectra and samples: torch in, torch out, float64 by default."""

from .flatness import log_spectrum_variance, spectral_flatness
from .information import (
    DistortionRate,
    RateDistortion,
    WaterFilling,
    coding_rate,
    distortion_rate,
    gaussian_capacity,
    gaussian_entropy,
    rate_distortion,
    rate_reduction,
    water_filling_capacity,
)
from .latent import LatentCapacity, latent_capacity
from .marchenko_pastur import (
    MarchenkoPasturEdges,
    MarchenkoPasturFit,
    fit_marchenko_pastur,
    marchenko_pastur_cdf,
    marchenko_pastur_edges,
    marchenko_pastur_pdf,
)
from .mixture import (
    MixtureEntropyBounds,
    MonteCarloEstimate,
    mixture_entropy_bounds,
    mixture_entropy_monte_carlo,
    mixture_entropy_series,
)
from .perception import (
    DistortionRatePerception,
    RateDistortionPerception,
    distortion_rate_perception,
    rate_distortion_perception,
)
from .power_law import PowerLawFit, fit_power_law
from .rank import effective_rank, participation_ratio, stable_rank
from .representation import AlphaReq, alpha_req, eigen_decay, entropy_rank, lidar, nesum, rankme

__all__ = [
    "AlphaReq",
    "DistortionRate",
    "DistortionRatePerception",
    "LatentCapacity",
    "MarchenkoPasturEdges",
    "MarchenkoPasturFit",
    "MixtureEntropyBounds",
    "MonteCarloEstimate",
    "PowerLawFit",
    "RateDistortion",
    "RateDistortionPerception",
    "WaterFilling",
    "alpha_req",
    "coding_rate",
    "distortion_rate",
    "distortion_rate_perception",
    "effective_rank",
    "eigen_decay",
    "entropy_rank",
    "fit_marchenko_pastur",
    "fit_power_law",
    "gaussian_capacity",
    "gaussian_entropy",
    "latent_capacity",
    "lidar",
    "log_spectrum_variance",
    "marchenko_pastur_cdf",
    "marchenko_pastur_edges",
    "marchenko_pastur_pdf",
    "mixture_entropy_bounds",
    "mixture_entropy_monte_carlo",
    "mixture_entropy_series",
    "nesum",
    "participation_ratio",
    "rankme",
    "rate_distortion",
    "rate_distortion_perception",
    "rate_reduction",
    "spectral_flatness",
    "stable_rank",
    "water_filling_capacity",
]
