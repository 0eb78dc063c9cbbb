"""How a spectrum is obtained from a source: matrices, samples, signals."""

from .covariance import StreamingCovariance, covariance_eigenvalues, ledoit_wolf_shrinkage
from .matrices import singular_values

__all__ = [
    "StreamingCovariance",
    "covariance_eigenvalues",
    "ledoit_wolf_shrinkage",
    "singular_values",
]
