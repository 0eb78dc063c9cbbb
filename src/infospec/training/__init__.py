"""Training with spectra: differentiable losses and regularisers."""

from .losses import (
    CodingRateLoss,
    InfoSpecLoss,
    coding_rate_loss,
    info_spec_loss,
    rate_reduction_loss,
)
from .regularizers import SpectralRegularizer

__all__ = [
    "CodingRateLoss",
    "InfoSpecLoss",
    "SpectralRegularizer",
    "coding_rate_loss",
    "info_spec_loss",
    "rate_reduction_loss",
]
