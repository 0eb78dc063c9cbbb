r"""``track(run_dir)``: the spectra of a training run's checkpoints, in one long table.

A run folder holds checkpoints as subfolders or files named with their step
(``checkpoint-500``, ``step-1000``, ``step_20.safetensors``, ``ckpt-3.pt``, ``iter_7``,
``global_step40``; :data:`CHECKPOINT_PATTERN`), or an explicit list is given. Every
checkpoint goes through the weight pipeline of :func:`infospec.analyze` (the first) or of
:func:`infospec.compare` against the checkpoint before it (the others, with
``overlap=True``: the same single-model columns plus the overlap of the top-``k``
singular subspaces and ``rel_delta``, the relative size of the change since the previous
checkpoint). The results form one long table, a row per (checkpoint, step, tensor,
metric, value).

The store is **SQLite** (:mod:`sqlite3`, in the standard library): each checkpoint's rows
and its identity are written in one transaction, so an interrupted run (Ctrl-C, a killed
job) leaves every checkpoint either complete or absent, and the next run goes on from
there; new checkpoints are appended without rewriting the file (Parquet would need
pyarrow, which infospec does not depend on, and a file rewrite or one file per
checkpoint per append). Read it with pandas::

    import sqlite3, pandas as pd
    frame = pd.read_sql("SELECT * FROM metrics", sqlite3.connect("run/infospec-track.sqlite"))

**Incremental.** A checkpoint is keyed by its files' identity: for each file, its path in
the checkpoint, size, modification time (ns) and the SHA-256 of its first 64 KiB (a
safetensors header, a zip directory's start). A re-run analyses only checkpoints whose key
is not in the store (a checkpoint overwritten under the same name gets a new key and
replaces its old rows), and, with ``overlap=True``, those whose predecessor changed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._checks import check_choice, check_positive, check_probability
from .._errors import InputError, SourceError
from .._io import atomic_write
from .._validation import check_bool
from ..spectra.conventions import ANALYSIS_CONV, CONV_MODES
from .weights import WEIGHT_COLUMNS

__all__ = [
    "CHECKPOINT_PATTERN",
    "TRACK_METRICS",
    "Track",
    "find_checkpoints",
    "read_monitor_log",
    "track",
]

#: A checkpoint's name: a prefix and its step (the first match in the name).
CHECKPOINT_PATTERN = re.compile(
    r"(?:^|[^a-z])(?:checkpoint|ckpt|step|global_step|iter|epoch)[-_=]?(\d+)", re.IGNORECASE
)

#: Metrics stored per matrix (the single-model columns), and those against the previous
#: checkpoint when ``overlap=True``.
TRACK_METRICS: tuple[str, ...] = tuple(
    c for c in WEIGHT_COLUMNS if c not in ("rows", "cols", "params", "mp_q")
)
_PAIR_METRICS = ("rel_delta", "overlap_left", "overlap_right", "overlap_min_cos")
_HEAD_BYTES = 1 << 16
_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    key TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, path TEXT NOT NULL, step INTEGER,
    bytes INTEGER, previous_key TEXT, seconds REAL, analysed_at REAL);
CREATE TABLE IF NOT EXISTS metrics (
    key TEXT NOT NULL, checkpoint TEXT NOT NULL, step INTEGER, tensor TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS metrics_key ON metrics (key);
CREATE TABLE IF NOT EXISTS options (name TEXT PRIMARY KEY, value TEXT);
"""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a run: its name, path and step (None when the name has none)."""

    name: str
    path: Path
    step: int | None


def _step_of(name: str) -> int | None:
    m = CHECKPOINT_PATTERN.search(name)
    return int(m[1]) if m else None


def find_checkpoints(run: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Checkpoint]:
    """The checkpoints of a run folder (or an explicit list), in step order.

    Parameters
    ----------
    run : path or sequence of paths
        A folder whose entries named like :data:`CHECKPOINT_PATTERN` are the
        checkpoints (a subfolder or a file each; other entries are ignored), or a list of
        checkpoints in order (their steps read from their names, else their positions).

    Returns
    -------
    list of Checkpoint

    Raises
    ------
    SourceError
        If the folder does not exist, holds no checkpoint, or a listed path is missing.
    InputError
        If two checkpoints have the same name (the store keys rows by it).
    """
    if isinstance(run, (str, os.PathLike)):
        folder = Path(run).expanduser()
        if not folder.is_dir():
            raise SourceError(
                f"The run folder '{folder}' does not exist or is not a folder; pass the "
                f"folder holding checkpoint-*/step-* subfolders or files, or a list of "
                f"checkpoints."
            )
        found = [
            Checkpoint(p.name, p, _step_of(p.name))
            for p in folder.iterdir()
            if not p.name.startswith(".")
            and _step_of(p.name) is not None
            and not p.name.endswith((".tmp", ".sqlite", ".sqlite-journal", ".html"))
        ]
        if not found:
            names = sorted(p.name for p in folder.iterdir())[:5]
            raise SourceError(
                f"The run folder '{folder}' holds no checkpoint: no entry is named like "
                f"checkpoint-<step>, step-<step>, ckpt-<step>, iter-<step> or "
                f"global_step<step> (it has {names}). Pass the checkpoints as a list instead."
            )
        found.sort(key=lambda c: (c.step, c.name))
    else:
        found = []
        for i, item in enumerate(run):
            path = Path(item).expanduser()
            if not path.exists():
                raise SourceError(f"The checkpoint '{path}' (item {i} of 'run') does not exist.")
            step = _step_of(path.name)
            found.append(Checkpoint(path.name, path, i if step is None else step))
        if not found:
            raise SourceError("The 'run' list of track is empty; give at least one checkpoint.")
    names = [c.name for c in found]
    for name in names:
        if names.count(name) > 1:
            raise InputError(
                f"track found two checkpoints named '{name}'; the store keys them by name: "
                f"rename one, or track their runs into separate stores."
            )
    return found


def checkpoint_key(path: Path) -> tuple[str, int]:
    """The identity of a checkpoint's files: (SHA-256 hex key, total bytes).

    For every regular file under ``path`` (or ``path`` itself), sorted: its relative path,
    size, modification time in ns and the SHA-256 of its first 64 KiB.
    """
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    total = 0
    for f in files:
        st = f.stat()
        total += st.st_size
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        with open(f, "rb") as fh:
            digest.update(hashlib.sha256(fh.read(_HEAD_BYTES)).digest())
    return digest.hexdigest(), total


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass
class Track:
    """The result of :func:`track`: the long table and what this run did.

    Attributes
    ----------
    frame : pandas.DataFrame
        Columns ``checkpoint``, ``step``, ``tensor``, ``metric``, ``value``: every
        checkpoint in the store, in step order.
    analysed : list of str
        Checkpoints analysed by this call.
    unchanged : list of str
        Checkpoints already in the store with the same key (not read again).
    store : pathlib.Path or None
        The SQLite file.
    meta : dict
        Options and timings.
    """

    frame: pd.DataFrame
    analysed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    store: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def pivot(self, metric: str) -> pd.DataFrame:
        """``metric`` as a tensor x step table (rows in model order, columns by step).

        Raises
        ------
        InputError
            If no row holds ``metric`` (listing the metrics there are).
        """
        rows = self.frame[self.frame["metric"] == metric]
        if rows.empty:
            have = sorted(self.frame["metric"].unique())
            raise InputError(
                f"The track has no metric '{metric}'; it has {have[:8]}"
                f"{' ...' if len(have) > 8 else ''}."
            )
        order = list(dict.fromkeys(rows["tensor"]))
        table = rows.pivot_table(index="tensor", columns="step", values="value", aggfunc="last")
        return table.reindex(order)

    def to_html(self, path: str | os.PathLike, *, title: str | None = None) -> None:
        """A self-contained page: heatmaps of layer x step and every metric against step."""
        from .track_html import render_track_html

        text = render_track_html(self, title=title)
        with atomic_write(path, "w", encoding="utf-8") as fh:
            fh.write(text)


def _connect(path: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(path)
        con.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise SourceError(
            f"The track store '{path}' is not an infospec SQLite store ({exc}); pass "
            f"another store= path or remove the file."
        ) from exc
    return con


def _check_options(con: sqlite3.Connection, path: Path, options: dict[str, str]) -> None:
    stored = dict(con.execute("SELECT name, value FROM options").fetchall())
    if not stored:
        with con:
            con.executemany("INSERT INTO options VALUES (?, ?)", options.items())
        return
    for name, value in options.items():
        if stored.get(name) != value:
            raise InputError(
                f"The track store '{path}' was written with {name}={stored.get(name)}, not "
                f"{value}; its rows would not compare. Use the same options, or another "
                f"store= path."
            )


def _load_frame(con: sqlite3.Connection) -> pd.DataFrame:
    frame = pd.read_sql_query(
        "SELECT m.checkpoint, m.step, m.tensor, m.metric, m.value FROM metrics m "
        "JOIN checkpoints c ON c.key = m.key ORDER BY m.step, c.checkpoint, m.rowid",
        con,
    )
    frame["value"] = frame["value"].astype(float)
    return frame


def _rows_of(report, checkpoint: Checkpoint, paired: bool) -> list[tuple]:
    out = []
    for row in report.weights:
        if row.get("status") != "ok":
            continue
        for metric in TRACK_METRICS:
            value = row.get(f"tuned_{metric}" if paired else metric)
            out.append(
                (checkpoint.name, checkpoint.step, row["name"], metric, _finite_or_none(value))
            )
        if paired:
            for metric in _PAIR_METRICS:
                out.append(
                    (
                        checkpoint.name,
                        checkpoint.step,
                        row["name"],
                        metric,
                        _finite_or_none(row.get(metric)),
                    )
                )
    return out


def track(
    run: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    store: str | os.PathLike | None = None,
    layers: str | Sequence[str] | None = None,
    overlap: bool = True,
    k: int = 10,
    rename: Any = None,
    device: Any = None,
    conv: str = ANALYSIS_CONV,
    min_dim: int | None = None,
    method: str = "auto",
    fits: bool = True,
    rel_distortion: float = 0.01,
    progress: bool | None = None,
    workers: int | None = None,
    distributed: bool = False,
) -> Track:
    r"""Analyse every checkpoint of a training run into one long table, incrementally.

    Parameters
    ----------
    run : path or sequence of paths
        A run folder (:func:`find_checkpoints`) or the checkpoints in order; each one
        anything :func:`infospec.sources.open_source` reads.
    store : path, optional
        The SQLite store; default ``<run>/infospec-track.sqlite`` for a folder; for a list,
        required. Re-running with the same store analyses only new or changed
        checkpoints (module docstring).
    layers : str or list of str, optional
        Regular expression(s) on tensor names.
    overlap : bool, default True
        Compare each checkpoint with the one before (:func:`infospec.compare`): adds the
        metrics ``overlap_left``, ``overlap_right``, ``overlap_min_cos`` (top-``k``
        singular subspaces, mean cos² of the principal angles) and ``rel_delta``
        (:math:`\|W_t - W_{t-1}\|_F / \|W_{t-1}\|_F`); about three spectra per matrix
        instead of one.
    k : int >= 1, default 10
        Dimension of the compared subspaces.
    rename, device, conv, min_dim, method, fits, rel_distortion, progress, workers
        As in :func:`infospec.compare` and :func:`infospec.analyze`.
    distributed : bool, default False
        Under ``torch.distributed``: each checkpoint's tensors are shared out over the
        ranks (``analyze``/``compare`` with ``distributed=True``), rank 0 alone reads and
        writes the store (what it holds is sent to the others, so every rank analyses the
        same checkpoints), and every rank returns the same :class:`Track`. A failure that
        ends the run on any rank (the store's options differ, a write fails) is raised on
        every rank.

    Returns
    -------
    Track
        The store's whole table (``frame``, one row per checkpoint, step, tensor and
        metric, :data:`TRACK_METRICS` and with ``overlap`` the pair metrics), and which
        checkpoints were analysed now and which were unchanged.

    Raises
    ------
    SourceError
        If the run holds no checkpoint, a checkpoint cannot be read, or the store is not
        an SQLite file.
    InputError
        If an option is invalid, differs from the options the store was written with
        (``conv``, ``min_dim``, ``method``, ``rel_distortion``, ``fits``, ``overlap``,
        ``k``, ``layers``), or ``store`` is missing for a list.
    """
    from .analyze import analyze
    from .compare import compare
    from .distributed import on_every_rank, on_rank_0, setup

    t0 = time.perf_counter()
    func = "track"
    k = check_positive(k, "k", func, integer=True)
    # every option checked before it is written to the store
    check_choice(conv, "conv", func, CONV_MODES)
    check_choice(method, "method", func, ("auto", "gram", "svd"))
    rel_distortion = check_probability(rel_distortion, "rel_distortion", func)
    check_bool(fits, "fits", func)
    check_bool(overlap, "overlap", func)
    if progress is not None:
        check_bool(progress, "progress", func)
    if min_dim is not None:
        min_dim = check_positive(min_dim, "min_dim", func, integer=True)
    if store is not None and not isinstance(store, (str, os.PathLike)):
        raise InputError(
            f"The 'store' parameter of track must be a path such as 'run.sqlite'; got "
            f"{type(store).__name__}."
        )
    if not isinstance(run, (str, os.PathLike)) and not (
        isinstance(run, Sequence) and all(isinstance(c, (str, os.PathLike)) for c in run)
    ):
        raise InputError(
            "The 'run' argument of track must be a run folder or a sequence of checkpoint "
            f"paths (files or folders on disk); got {type(run).__name__}. Save models and "
            "state dicts to files first (torch.save or safetensors.torch.save_file)."
        )
    pg, _ = setup(distributed, None, "track")
    writes = pg is None or pg.rank == 0
    checkpoints = on_every_rank(pg, lambda: find_checkpoints(run))
    if store is None:
        if not isinstance(run, (str, os.PathLike)):
            raise InputError(
                "The 'store' parameter of track is required when 'run' is a list of "
                "checkpoints; give a path such as 'run.sqlite'."
            )
        store = Path(run).expanduser() / "infospec-track.sqlite"
    store = Path(store).expanduser()
    if not store.parent.is_dir():
        raise InputError(
            f"The 'store' parameter of track is '{store}', whose folder does not exist; "
            f"create it first."
        )
    options = {
        "conv": conv,
        "min_dim": str(min_dim),
        "method": method,
        "rel_distortion": repr(float(rel_distortion)),
        "fits": str(bool(fits)),
        "overlap": str(bool(overlap)),
        "k": str(k),
        "layers": repr(layers),
    }
    common = {
        "layers": layers,
        "device": device,
        "conv": conv,
        "min_dim": min_dim,
        "method": method,
        "fits": fits,
        "rel_distortion": rel_distortion,
        "progress": progress,
        "workers": workers,
        "distributed": distributed,
    }
    result = Track(frame=pd.DataFrame(), store=store, meta={"options": options})
    with contextlib.closing(_connect(store)) if writes else contextlib.nullcontext() as con:

        def known_checkpoints() -> dict[str, str | None]:
            _check_options(con, store, options)
            rows = con.execute("SELECT key, previous_key FROM checkpoints").fetchall()
            return dict(rows)

        known = on_rank_0(pg, known_checkpoints)
        previous: Checkpoint | None = None
        previous_key: str | None = None
        for cp in checkpoints:
            key, size = checkpoint_key(cp.path)
            wanted_prev = previous_key if overlap else None
            if key in known and known[key] == wanted_prev:
                result.unchanged.append(cp.name)
            else:
                start = time.perf_counter()
                if overlap and previous is not None:
                    report = compare(
                        previous.path, cp.path, k=k, rename=rename, tuned_values=True, **common
                    )
                    rows = _rows_of(report, cp, paired=True)
                else:
                    report = analyze(cp.path, **common)
                    rows = _rows_of(report, cp, paired=False)
                seconds = time.perf_counter() - start
                write = (con, key, rows, seconds, cp, wanted_prev, size)
                on_rank_0(pg, functools.partial(_write_checkpoint, *write))
                result.analysed.append(cp.name)
            previous, previous_key = cp, key
        listed = {c.name for c in checkpoints}
        frame = on_rank_0(pg, functools.partial(_load_frame, con))
    # a store may hold checkpoints that left the folder; the result is the run as it is
    result.frame = frame[frame["checkpoint"].isin(listed)].reset_index(drop=True)
    result.meta["seconds"] = time.perf_counter() - t0
    return result


def _write_checkpoint(
    con: sqlite3.Connection,
    key: str,
    rows: list,
    seconds: float,
    cp: Checkpoint,
    wanted_prev: str | None,
    size: int,
) -> None:
    """Replace the checkpoint's rows in the store in one transaction (complete or absent)."""
    with con:  # one transaction: the checkpoint is complete or absent
        old = [
            r[0]
            for r in con.execute(
                "SELECT key FROM checkpoints WHERE checkpoint = ? OR key = ?",
                (cp.name, key),
            )
        ]
        con.executemany("DELETE FROM metrics WHERE key = ?", [(o,) for o in old])
        con.executemany("DELETE FROM checkpoints WHERE key = ?", [(o,) for o in old])
        con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", [(key, *r) for r in rows])
        con.execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                cp.name,
                str(cp.path),
                cp.step,
                size,
                wanted_prev,
                seconds,
                time.time(),
            ),
        )


def read_monitor_log(path: str | os.PathLike) -> Track:
    """A :class:`~infospec.training.Monitor` log (``.jsonl`` or ``.csv``) as a :class:`Track`.

    Each measured weight row becomes metrics of the tensor named by its ``matrix`` label,
    each activation row metrics of ``activations/<layer>`` (a latent row, of
    ``latent/<layer>``), at the row's ``step``; the
    checkpoint column is ``step-<step>``. The plots of :meth:`Track.to_html` then read the
    run as they read checkpoints.

    Raises
    ------
    SourceError
        If the file is missing or not a Monitor log (no ``step``, ``table``, ``layer``
        columns).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SourceError(f"The Monitor log '{path}' does not exist.")
    try:
        log = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_csv(path)
    except ValueError as exc:
        raise SourceError(f"The Monitor log '{path}' cannot be read: {exc}.") from exc
    need = {"step", "table", "layer", "matrix"}
    if not need <= set(log.columns):
        raise SourceError(
            f"The file '{path}' is not a Monitor log: it lacks the columns "
            f"{sorted(need - set(log.columns))}; pass the log_path a Monitor wrote."
        )
    if "status" in log.columns:
        log = log[log["status"] == "ok"]
    metrics = [
        c
        for c in log.columns
        if c
        not in (
            "step",
            "table",
            "layer",
            "matrix",
            "status",
            "warning",
            "dim",
            "samples",
            "rows",
            "cols",
            "rank",
        )
    ]
    matrix = log["matrix"].fillna("").astype(str)
    tensor = np.where(
        log["table"] == "weights",
        matrix.where(matrix != "", log["layer"]),
        log["table"].astype(str) + "/" + log["layer"].astype(str),
    )
    wide = log.assign(tensor=tensor, checkpoint="step-" + log["step"].astype(str))
    frame = wide.melt(
        id_vars=["checkpoint", "step", "tensor"],
        value_vars=metrics,
        var_name="metric",
        value_name="value",
    ).dropna(subset=["value"])
    frame = frame[["checkpoint", "step", "tensor", "metric", "value"]].reset_index(drop=True)
    frame["value"] = frame["value"].astype(float)
    return Track(frame=frame, meta={"source": str(path)})
