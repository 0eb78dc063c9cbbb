"""infospec: measure and shape deep networks through their spectra, in bits.

Every question goes the same way: a source (weights, activations, a signal) gives a
spectrum, the spectrum gives measures in bits, the measures serve a use (a report, a loss,
a monitor). Information measures return nats unless ``bits=True``.
"""

from ._errors import InfospecError, InfospecWarning, InputError, SourceError
from .analysis import Report, analyze
from .measures import *  # noqa: F403
from .measures import __all__ as _measures_all
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
    "Report",
    "SourceError",
    "StreamingCovariance",
    "__version__",
    "analyze",
    "covariance_eigenvalues",
    "ledoit_wolf_shrinkage",
    "singular_values",
    *_measures_all,
]
