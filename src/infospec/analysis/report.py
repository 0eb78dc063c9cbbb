"""The result of :func:`infospec.analyze`: per-layer records first, tables and pages last."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputError
from .._io import atomic_write
from .._skips import skip_reason_class, skipped_by_reason
from .._text import printable
from .._validation import check_choice
from .activations import ACTIVATION_COLUMNS
from .columns import (
    ACTIVATION_HEADLINE,
    ACTIVATION_ID_COLUMNS,
    SKIPPED_COLUMNS,
    WEIGHT_HEADLINE,
    WEIGHT_ID_COLUMNS,
)
from .weights import WEIGHT_COLUMNS

__all__ = ["Report", "skip_reason_class", "skipped_by_reason"]

_TABLES = ("weights", "activations", "skipped")

_SUMMARY_WEIGHTS = tuple(
    c
    for h in WEIGHT_HEADLINE
    if h != "tensor"
    for c in (("rows", "cols") if h == "shape" else (h,))
)
_SUMMARY_ACTIVATIONS = ACTIVATION_HEADLINE


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, (int, float)) and math.isfinite(value) else "?"


def _clean(value: Any) -> Any:
    """JSON-safe scalar: NaN and infinities become None/strings, numpy scalars Python ones."""
    if isinstance(value, (np.floating, float)):
        v = float(value)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass
class Report:
    """Per-layer spectral measures of a model, in bits.

    Attributes
    ----------
    weights : list of dict
        One record per weight matrix (columns: ``name``, ``tensor``, ``kind``, ``dtype``,
        ``status`` then :data:`~infospec.analysis.weights.WEIGHT_COLUMNS` and ``warning``).
        ``status`` is ``"ok"``, or ``"error"`` with the reason in ``warning`` (for example
        a tensor holding NaN); a measure that could not be made is NaN with its reason in
        ``warning``.
    activations : list of dict
        One record per observed module when data was given
        (:data:`~infospec.analysis.activations.ACTIVATION_COLUMNS`).
    skipped : list of dict
        Every tensor that was not analysed, with its reason.
    spectra : dict of str to numpy.ndarray
        The eigenvalues behind each row (``lambda = sigma^2`` of each weight matrix under
        ``"weights/<name>"``, covariance eigenvalues under ``"activations/<name>"``),
        descending, for plots and further measures.
    meta : dict
        Source, options, timings and versions.
    """

    weights: list[dict[str, Any]] = field(default_factory=list)
    activations: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    spectra: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- tables --------------------------------------------------------------------------
    def to_dataframe(self, table: str = "weights") -> pd.DataFrame:
        """One table as a DataFrame: ``"weights"`` (default), ``"activations"`` or ``"skipped"``."""
        check_choice(table, "table", "Report.to_dataframe", _TABLES)
        if table == "weights":
            cols = [*WEIGHT_ID_COLUMNS, *WEIGHT_COLUMNS, "warning"]
        elif table == "activations":
            cols = [*ACTIVATION_ID_COLUMNS, *ACTIVATION_COLUMNS, "warning"]
        else:
            cols = list(SKIPPED_COLUMNS)
        records = getattr(self, table)
        # columns a verb adds (compare's deltas and changes), in order of appearance
        known = set(cols)
        extra = list(dict.fromkeys(k for r in records for k in r if k not in known))
        if extra:
            cols = [*cols[:-1], *extra, cols[-1]] if table != "skipped" else [*cols, *extra]
        df = pd.DataFrame.from_records(records, columns=cols)
        return df

    def summary(self, *, max_rows: int | None = 60, verbose: bool = False) -> str:
        """A plain-text overview: counts, time, medians and the main columns of each table.

        Parameters
        ----------
        max_rows : int, optional
            The most rows printed per table (60 by default, ``None`` for all).
        verbose : bool, default False
            List every skipped tensor under its reason; by default the skipped tensors
            are only counted per reason class (see :func:`skip_reason_class`).

        Returns
        -------
        str
            Lines: the source; the counts; the time (``seconds``, the wall time of
            :func:`~infospec.analyze`, then the weights' wall time with the spectra and
            fits summed over tensors, which exceeds it when several threads ran, and the
            activations' when measured);
            per table the medians and the main columns; the skipped tensors by reason.
        """
        lines = [f"infospec report: {self.meta.get('source', '?')}"]
        ok = [r for r in self.weights if r.get("status") == "ok"]
        lines.append(
            f"weights: {len(ok)} matrices analysed, "
            f"{len(self.weights) - len(ok)} with errors, "
            f"{len(self.skipped)} tensors skipped"
        )
        if "seconds" in self.meta:
            lines.append(self._time_line())
        # a verb other than analyze names its own headline (compare: the delta's columns)
        weight_cols = tuple(self.meta.get("summary_columns") or _SUMMARY_WEIGHTS)
        for table, cols in (("weights", weight_cols), ("activations", _SUMMARY_ACTIVATIONS)):
            records = getattr(self, table)
            if not records:
                continue
            df = self.to_dataframe(table)
            df = df[[c for c in cols if c in df.columns]]
            names = df.columns.intersection(["name", "tensor", "module"])  # from files: escaped
            df = df.assign(**{c: df[c].map(lambda v: printable(v, 120)) for c in names})
            numeric = df.select_dtypes("number")
            lines.append("")
            lines.append(
                f"[{table}] medians: "
                + ", ".join(
                    f"{c}={numeric[c].median():.4g}"
                    for c in numeric.columns
                    if c not in ("rows", "cols", "dim", "samples")
                )
            )
            with pd.option_context(
                "display.width",
                200,
                "display.max_columns",
                20,
                "display.float_format",
                "{:.4g}".format,
            ):
                shown = df if max_rows is None or len(df) <= max_rows else df.head(max_rows)
                lines.append(shown.to_string(index=False))
                if shown is not df:
                    lines.append(f"... {len(df) - len(shown)} more rows (to_dataframe() has all)")
        if self.skipped:
            lines.append("")
            groups = skipped_by_reason(self.skipped)
            lines.append(
                f"[skipped] {len(self.skipped)} tensors: "
                + ", ".join(f"{reason} x {len(recs)}" for reason, recs in groups)
            )
            if verbose:
                for reason, recs in groups:
                    lines.append(f"  {reason} ({len(recs)}):")
                    lines.extend(
                        f"    {printable(r['name'], 120)} {tuple(r['shape'])}: {r['reason']}"
                        for r in recs
                    )
        return "\n".join(printable(part) for line in lines for part in line.split("\n"))

    def _time_line(self) -> str:
        """``time: ...`` of :meth:`summary`: total wall time, then each stage's."""
        meta = self.meta
        line = f"time: {_seconds(meta['seconds'])} wall in analyze"
        parts = []
        if "weight_seconds" in meta:
            part = f"weights {_seconds(meta['weight_seconds'])}"
            if "spectrum_seconds" in meta:
                threads = meta.get("workers")
                part += (
                    f" (summed over tensors: spectra {_seconds(meta['spectrum_seconds'])}, "
                    f"fits {_seconds(meta.get('fit_seconds'))}"
                    + (
                        f", on {threads} threads"
                        if isinstance(threads, int) and threads > 1
                        else ""
                    )
                    + ")"
                )
            parts.append(part)
        if "activation_seconds" in meta:
            part = f"activations {_seconds(meta['activation_seconds'])}"
            stages = [
                f"{label} {_seconds(meta[key])}"
                for key, label in (
                    ("activation_forward_seconds", "forward passes"),
                    ("forward_seconds", "forward passes"),
                    ("activation_accumulate_seconds", "covariance updates"),
                    ("accumulate_seconds", "covariance updates"),
                )
                if key in meta
            ]
            if "activation_forward_seconds" in meta and "activation_accumulate_seconds" in meta:
                rest = (
                    meta["activation_seconds"]
                    - meta["activation_forward_seconds"]
                    - meta["activation_accumulate_seconds"]
                )
                stages.append(f"spectra, measures and set-up {_seconds(rest)}")
            if stages:
                part += f" ({', '.join(stages)})"
            parts.append(part)
        if "load_seconds" in meta:
            parts.append(f"loading {_seconds(meta['load_seconds'])}")
        line += (": " + "; ".join(parts)) if parts else ""
        if "model_load_seconds" in meta:  # set by the CLI: before analyze, not in its total
            line += f"; before it, loading the model {_seconds(meta['model_load_seconds'])}"
        return line

    def __str__(self) -> str:
        return self.summary()

    # -- files ---------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike, table: str = "weights") -> None:
        """Write one table as CSV, atomically."""
        df = self.to_dataframe(table)
        with atomic_write(path, "w", encoding="utf-8") as fh:
            df.to_csv(fh, index=False)

    def to_dict(self) -> dict[str, Any]:
        """Records and metadata as JSON-safe Python objects (NaN -> None, inf -> "inf")."""

        def clean(records):
            return [{k: _clean(v) for k, v in r.items()} for r in records]

        return {
            "meta": {k: _clean(v) for k, v in self.meta.items()},
            "weights": clean(self.weights),
            "activations": clean(self.activations),
            "skipped": clean(self.skipped),
        }

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int = 1) -> str:
        """The report as JSON (without the spectra); written atomically when ``path`` is given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with atomic_write(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    def to_html(self, path: str | os.PathLike, **kwargs: Any) -> None:
        """Write a single self-contained HTML page (tables and embedded figures), atomically."""
        from .html import render_html

        text = render_html(self, **kwargs)
        with atomic_write(path, "w", encoding="utf-8") as fh:
            fh.write(text)

    def plot(self, kind: str = "overview", **kwargs: Any):
        """Matplotlib figures of the report; see :func:`infospec.analysis.plots.plot_report`."""
        from .plots import plot_report

        return plot_report(self, kind, **kwargs)

    def spectrum(self, name: str, table: str = "weights") -> np.ndarray:
        """The eigenvalues behind one row (see :attr:`spectra`)."""
        key = f"{table}/{name}"
        if key not in self.spectra:
            names = [k.split("/", 1)[1] for k in self.spectra if k.startswith(table + "/")]
            raise InputError(
                f"No {table} spectrum named '{name}' in this report; "
                f"available: {names[:5]}{' ...' if len(names) > 5 else ''}"
            )
        return self.spectra[key]
