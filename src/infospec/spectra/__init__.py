"""How a spectrum is obtained from a source: matrices, samples, signals.

The names load on first use (:pep:`562`), so that :mod:`infospec.spectra.conventions`
(shapes only) can be imported without torch, as ``infospec describe`` does.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    if name not in _HOME:
        raise AttributeError(f"module 'infospec.spectra' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
