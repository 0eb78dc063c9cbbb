"""How a spectrum is obtained from a source: matrices, samples, signals.

The names load on first use (:pep:`562`), so that :mod:`infospec.spectra.conventions`
(shapes only) can be imported without torch, as ``infospec describe`` does.
"""

from __future__ import annotations

from typing import Any

from .._lazy import lazy_attribute

__all__ = [
    "StreamingCovariance",
    "covariance_eigenvalues",
    "ledoit_wolf_shrinkage",
    "singular_values",
]

_HOME = {
    "StreamingCovariance": "covariance",
    "covariance_eigenvalues": "covariance",
    "ledoit_wolf_shrinkage": "covariance",
    "singular_values": "matrices",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _HOME, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
