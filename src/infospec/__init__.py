"""infospec: measure and shape deep networks through their spectra, in bits.

Every question goes the same way: a source (weights, activations, a signal) gives a
spectrum, the spectrum gives measures in bits, the measures serve a use (a report, a loss,
a monitor). Information measures return nats unless ``bits=True``.

The package imports lazily (:pep:`562`): ``import infospec`` loads only the exceptions,
and the first use of a name (``infospec.analyze``, ``infospec.spectral_flatness``) imports
the subpackage that defines it, with PyTorch. So ``infospec --help`` and
``infospec describe`` start without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._errors import InfospecError as InfospecError
from ._errors import InfospecWarning as InfospecWarning
from ._errors import InputError as InputError
from ._errors import SourceError as SourceError
from ._lazy import lazy_attribute

__version__ = "0.1.0"

#: Public names defined outside :mod:`infospec.measures`, and the subpackage of each.
_HOME: dict[str, str] = {
    "Report": "analysis",
    "analyze": "analysis",
    "compare": "analysis",
    "track": "analysis",
    "Track": "analysis",
    "StreamingCovariance": "spectra",
    "covariance_eigenvalues": "spectra",
    "ledoit_wolf_shrinkage": "spectra",
    "singular_values": "spectra",
    "TransformCoder": "transforms",
    "rate_distortion_curve": "transforms",
    "truncation_curve": "transforms",
    "compress": "transforms",
    "load_compressed": "transforms",
    "svd_smooth": "transforms",
    "svd_sharpen": "transforms",
    "rmt_project": "transforms",
    "rope_feasibility": "tools.rope",
    "minimal_rope_base": "tools.rope",
    "entropy_patches": "tools.patching",
}

#: Subpackages reachable as attributes (``infospec.sources.open_source``).
_SUBPACKAGES = frozenset(
    {
        "analysis",
        "cli",
        "demo",
        "example",
        "measures",
        "sources",
        "spectra",
        "tools",
        "training",
        "transforms",
    }
)

_EAGER = ["InfospecError", "InfospecWarning", "InputError", "SourceError", "__version__"]


def _measures_all() -> list[str]:
    return list(importlib.import_module(".measures", __name__).__all__)


def __getattr__(name: str) -> Any:
    if name == "__all__":
        # computed on demand (``from infospec import *``, documentation tools)
        return sorted([*_EAGER, *_HOME, *_measures_all()])
    if name in _HOME:
        return lazy_attribute(__name__, globals(), _HOME, name)
    if name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    elif not name.startswith("__") and name in _measures_all():
        value = getattr(importlib.import_module(".measures", __name__), name)
    else:
        raise AttributeError(f"module 'infospec' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME, *_SUBPACKAGES, *_measures_all()})
