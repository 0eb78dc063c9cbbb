"""Random-matrix theory of weight spectra: a re-export of its two subjects.

The Marchenko-Pastur law of noise bulks lives in :mod:`infospec.measures.marchenko_pastur`
and the heavy-tail power-law fit (WeightWatcher's ``alpha``) in
:mod:`infospec.measures.power_law`; this module keeps ``infospec.measures.rmt`` imports
working.
"""

from __future__ import annotations

from .marchenko_pastur import (
    MarchenkoPasturEdges,
    MarchenkoPasturFit,
    fit_marchenko_pastur,
    marchenko_pastur_cdf,
    marchenko_pastur_edges,
    marchenko_pastur_pdf,
)
from .power_law import WW_EIGENVALUE_THRESHOLD, PowerLawFit, fit_power_law

__all__ = [
    "WW_EIGENVALUE_THRESHOLD",
    "MarchenkoPasturEdges",
    "MarchenkoPasturFit",
    "PowerLawFit",
    "fit_marchenko_pastur",
    "fit_power_law",
    "marchenko_pastur_cdf",
    "marchenko_pastur_edges",
    "marchenko_pastur_pdf",
]
