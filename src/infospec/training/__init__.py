"""Training with spectra: differentiable losses and regularisers, a monitor, callbacks.

The framework callbacks (:class:`InfospecLightningCallback`,
:class:`InfospecTrainerCallback`) are loaded on first access, so that importing
``infospec.training`` imports neither Lightning nor transformers.
"""

from typing import Any

from .info_spec import InfoSpecLoss, info_spec_loss
from .losses import CodingRateLoss, coding_rate_loss, rate_reduction_loss
from .matryoshka import MatryoshkaLoss
from .monitor import DEFAULT_ALERTS, MONITOR_COLUMNS, Monitor, MonitorAlert
from .regularizers import SpectralRegularizer
from .sigreg import epps_pulley, sigreg_loss

_CALLBACKS = ("InfospecLightningCallback", "InfospecTrainerCallback")

__all__ = [
    "DEFAULT_ALERTS",
    "MONITOR_COLUMNS",
    "CodingRateLoss",
    "InfoSpecLoss",
    "InfospecLightningCallback",
    "InfospecTrainerCallback",
    "MatryoshkaLoss",
    "Monitor",
    "MonitorAlert",
    "SpectralRegularizer",
    "coding_rate_loss",
    "epps_pulley",
    "info_spec_loss",
    "rate_reduction_loss",
    "sigreg_loss",
]


def __getattr__(name: str) -> Any:
    if name in _CALLBACKS:
        from . import callbacks

        return getattr(callbacks, name)
    raise AttributeError(f"module 'infospec.training' has no attribute {name!r}")
