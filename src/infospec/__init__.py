"""infospec: measure and shape deep networks through their spectra, in bits.

Every question goes the same way: a source (weights, activations, a signal) gives a
spectrum, the spectrum gives measures in bits, the measures serve a use (a report, a loss,
a monitor). Information measures return nats unless ``bits=True``.
"""

from ._errors import InfospecError, InfospecWarning, InputError, SourceError
from .measures import (
    effective_rank,
    log_spectrum_variance,
    participation_ratio,
    spectral_flatness,
    stable_rank,
)
from .spectra import (
    StreamingCovariance,
    covariance_eigenvalues,
    ledoit_wolf_shrinkage,
    singular_values,
)

__version__ = "0.1.0"

__all__ = [
    "InfospecError",
    "InfospecWarning",
    "InputError",
    "SourceError",
    "StreamingCovariance",
    "__version__",
    "covariance_eigenvalues",
    "effective_rank",
    "ledoit_wolf_shrinkage",
    "log_spectrum_variance",
    "participation_ratio",
    "singular_values",
    "spectral_flatness",
    "stable_rank",
]
