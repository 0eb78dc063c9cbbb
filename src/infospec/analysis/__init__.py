"""Per-layer reports: ``analyze(source, data) -> Report``."""

from .activations import ACTIVATION_COLUMNS, activation_record
from .analyze import analyze
from .compare import compare
from .report import Report
from .weights import WEIGHT_COLUMNS, weight_record

__all__ = [
    "ACTIVATION_COLUMNS",
    "WEIGHT_COLUMNS",
    "Report",
    "activation_record",
    "analyze",
    "compare",
    "weight_record",
]
