"""The report's table layout: identifying and headline columns of each table.

Its own module so that :mod:`~infospec.analysis.report` (the :class:`Report`) and
:mod:`~infospec.analysis.html` (its page) both read it without importing each other:
``report`` loads ``html`` only when a page is written, and ``html`` needs no ``Report``.
"""

__all__ = [
    "ACTIVATION_HEADLINE",
    "ACTIVATION_ID_COLUMNS",
    "SKIPPED_COLUMNS",
    "WEIGHT_HEADLINE",
    "WEIGHT_ID_COLUMNS",
]

#: Columns of the weight table that identify a row, in front of the measures.
WEIGHT_ID_COLUMNS = ("name", "tensor", "kind", "dtype", "status")
ACTIVATION_ID_COLUMNS = ("name", "module", "status")
SKIPPED_COLUMNS = ("name", "shape", "dtype", "kind", "reason")

#: The headline columns of each table, in order: the terminal summary shows them (``shape``
#: as ``rows``, ``cols``; without ``tensor``) and the HTML page shows them first, the other
#: columns behind a toggle. ``shape`` is ``rows x cols`` of the matrix.
WEIGHT_HEADLINE = (
    "name",
    "tensor",
    "shape",
    "alpha",
    "flatness",
    "effective_rank",
    "stable_rank",
    "bits_per_param",
    "mp_num_spikes",
    "status",
)
ACTIVATION_HEADLINE = (
    "name",
    "dim",
    "samples",
    "flatness",
    "effective_rank",
    "entropy_bits_per_dim",
    "coding_rate_bits",
    "capacity_bits",
    "mp_num_spikes",
    "status",
)
