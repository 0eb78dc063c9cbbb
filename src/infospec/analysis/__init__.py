"""Per-layer reports: ``analyze(source, data) -> Report``."""

from .activations import ACTIVATION_COLUMNS, activation_record
from .analyze import analyze
from .compare import compare
from .report import Report
from .track import Track, track
from .weights import WEIGHT_COLUMNS, weight_record

__all__ = [
    "ACTIVATION_COLUMNS",
    "WEIGHT_COLUMNS",
    "Report",
    "Track",
    "activation_record",
    "analyze",
    "compare",
    "track",
    "weight_record",
]
