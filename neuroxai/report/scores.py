"""The run's long per-subject score table, kept out of ``results.json`` (schema 2.0).

One row per task × subject × method × metric (and model seed): ``task, subject_id, method,
metric, value`` plus, for a validation run, ``label, prediction, target`` (and ``seed``). At the
published study's size (45,000 subjects × 6 methods × 3 metrics × 3 columns ≈ 2.4 M rows) the table
held as Python objects took ~2 GB and made a 188 MB ``results.json``, so it is streamed instead:

* :class:`ScoreWriter` appends it chunk by chunk to ``scores.parquet`` beside ``results.json``
  (Apache Parquet through ``pyarrow``: typed columns, dictionary-encoded names, one row group per
  task × method run, so a reader skips the rest by the row groups' statistics);
* :class:`ScoreTable` reads it back one task × method at a time (:meth:`ScoreTable.frame`) or in
  batches (:meth:`ScoreTable.batches`), never whole; the statistics and the report read it so;
* ``results.json`` holds a :class:`ScoresRef` to it (file, rows, columns, SHA-256).

A table given as pandas frames (a 1.x ``results.json``'s embedded table, a test) is the same
:class:`ScoreTable` held in memory.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Iterator, Literal, Optional

import numpy as np
import pandas as pd

from pydantic import BaseModel, ConfigDict, Field

from ..atomic import AtomicStream
from ..errors import RunError

log = logging.getLogger(__name__)

#: The file beside ``results.json``.
SCORES_FILE = "scores.parquet"
#: Every table has these columns, in this order.
BASE_COLUMNS = ("task", "subject_id", "method", "metric", "value")
#: A validation run's per-subject columns (true label, the model's prediction, the explained
#: class), and a several-seed run's model seed; all numeric (NaN: none).
EXTRA_COLUMNS = ("label", "prediction", "target", "seed")
_STRINGS = ("task", "subject_id", "method", "metric")
#: the (task, method) of each row group, in order: a reader reads just a method's row groups (and
#: the table's keys are these, in order of first appearance)
_GROUPS_META = b"neuroxai.row_groups"


def _arrow():
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def _schema(columns: tuple[str, ...]):
    pa, _ = _arrow()
    return pa.schema([(c, pa.string() if c in _STRINGS else pa.float64()) for c in columns])


def _columns(extra) -> tuple[str, ...]:
    unknown = [c for c in extra if c not in EXTRA_COLUMNS]
    if unknown:
        raise ValueError(f"unknown score-table columns {unknown}; known: {EXTRA_COLUMNS}")
    return BASE_COLUMNS + tuple(c for c in EXTRA_COLUMNS if c in extra)


def _typed(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """``df`` with exactly ``columns``: names as text, numbers as float64 (a missing column or
    value is NaN)."""
    out = {}
    for c in columns:
        v = df[c] if c in df.columns else pd.Series(np.nan, index=df.index)
        out[c] = v.astype(str) if c in _STRINGS else pd.to_numeric(v, errors="coerce").astype(np.float64)
    return pd.DataFrame(out, index=df.index)


class ScoreWriter:
    """Append a score table to a Parquet file chunk by chunk; on :meth:`close` the file appears at
    ``path`` at once (written to a temporary file, then renamed: :class:`~neuroxai.atomic.AtomicStream`): a killed run never leaves half a
    table under the final name. Use as a context manager.

    ``extra``: which of :data:`EXTRA_COLUMNS` the table has. Rows are buffered up to
    ``row_group_rows`` and flushed when the task or method changes, so each row group holds one
    task × method (the reader's filter skips the others)."""

    def __init__(self, path: str | Path, extra=(), *, row_group_rows: int = 1 << 14):
        self.path = Path(path)
        self.columns = _columns(extra)
        self._out = AtomicStream(self.path)
        self._tmp = self._out.tmp
        self._rows = row_group_rows
        self._buf: list[pd.DataFrame] = []
        self._n_buf = 0
        self._key = None
        self._groups: list[list[str]] = []
        self._w = None
        self.n_rows = 0
        self.ref: ScoresRef | None = None

    def __enter__(self) -> "ScoreWriter":
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.ref = self.close()
        else:
            self.abort()

    def write(self, df: pd.DataFrame) -> None:
        """Append ``df`` (columns: :data:`BASE_COLUMNS` and this writer's extras)."""
        if not len(df):
            return
        df = _typed(df, self.columns)
        for (task, method), part in df.groupby(["task", "method"], sort=False):
            key = [str(task), str(method)]
            if key != self._key or self._n_buf >= self._rows:
                self._flush()
                self._key = key
            self._buf.append(part)
            self._n_buf += len(part)

    def _flush(self) -> None:
        if not self._buf:
            return
        pa, pq = _arrow()
        if self._w is None:
            self._tmp.parent.mkdir(parents=True, exist_ok=True)
            self._w = pq.ParquetWriter(self._tmp, _schema(self.columns), compression="zstd")
        tab = pa.Table.from_pandas(pd.concat(self._buf, ignore_index=True), schema=_schema(self.columns),
                                   preserve_index=False)
        self._w.write_table(tab, row_group_size=max(tab.num_rows, 1))  # one row group per flush
        self._groups.append(self._key)
        self.n_rows += tab.num_rows
        self._buf, self._n_buf = [], 0

    def close(self) -> "ScoresRef":
        """Finish the file and return what ``results.json`` records of it."""
        self._flush()
        pa, pq = _arrow()
        if self._w is None:  # no rows: an empty table with the columns
            self._tmp.parent.mkdir(parents=True, exist_ok=True)
            self._w = pq.ParquetWriter(self._tmp, _schema(self.columns), compression="zstd")
        self._w.add_key_value_metadata({_GROUPS_META: json.dumps(self._groups).encode()})
        self._w.close()
        self._out.commit()
        return ScoresRef(file=self.path.name, n_rows=self.n_rows, columns=list(self.columns),
                         sha256=file_sha256(self.path))

    def abort(self) -> None:
        if self._w is not None:
            self._w.close()
        self._out.abort()


class ScoresRef(BaseModel):
    """Where the run's per-subject score table is (``results.json``'s ``scores``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    file: str = Field(description="Parquet file beside results.json")
    format: Literal["parquet"] = "parquet"
    n_rows: int = Field(ge=0)
    columns: list[str] = Field(description="task, subject_id, method, metric, value, then label, "
                               "prediction, target (a validation run) and seed (several model seeds)")
    sha256: str = Field(description="the file's SHA-256: a table of another run is refused")


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ScoreTable:
    """The score table, read a part at a time: from a Parquet file (:class:`ScoreWriter`'s), or
    from a DataFrame held in memory (:meth:`from_frame`)."""

    def __init__(self, path: str | Path | None = None, *, frame: pd.DataFrame | None = None,
                 seed: int | None = None):
        if (path is None) == (frame is None):
            raise ValueError("a ScoreTable reads a Parquet file or a DataFrame, one of them")
        self.path = Path(path) if path is not None else None
        self._frame = frame
        self._seed = seed
        if self.path is not None:
            _, pq = _arrow()
            try:
                self._meta = pq.ParquetFile(self.path).metadata
            except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
                raise RunError("the score table cannot be read", path=self.path,
                               expected="the scores.parquet a run wrote beside its results.json",
                               found=str(exc).splitlines()[0][:200],
                               fix="rebuild it: neuroxai validate PROTOCOL --out RUN_DIR --resume") from exc
            self.columns = tuple(self._meta.schema.names)
            self._stat = _stat(self.path)
        else:
            self.columns = _columns([c for c in frame.columns if c in EXTRA_COLUMNS])
        if seed is not None:
            self.columns = tuple(c for c in self.columns if c != "seed")

    def for_seed(self, seed: int) -> "ScoreTable":
        """The rows of one model seed (a several-seed run's table), without the ``seed`` column."""
        return ScoreTable(self.path, frame=self._frame, seed=seed) if self.path is None else \
            ScoreTable(self.path, seed=seed)

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> "ScoreTable":
        """A table held in memory (columns as :class:`ScoreWriter`'s; a missing ``task`` is '')."""
        df = df if "task" in df.columns else df.assign(task="")
        return cls(frame=_typed(df, _columns([c for c in df.columns if c in EXTRA_COLUMNS])).reset_index(drop=True))

    @classmethod
    def from_frames(cls, frames: dict[str, pd.DataFrame]) -> "ScoreTable":
        """``{task: its rows}`` held in memory (what :func:`assemble_results` accepted before 2.0)."""
        parts = [df.assign(task=tid) for tid, df in frames.items() if len(df)]
        cols = sorted({c for p in parts for c in p.columns if c in EXTRA_COLUMNS})
        return cls.from_frame(pd.concat(parts, ignore_index=True) if parts else
                              pd.DataFrame(columns=list(BASE_COLUMNS + tuple(cols))))

    @property
    def n_rows(self) -> int:
        if self._seed is not None:
            return sum(len(b) for b in self.batches())
        return int(self._meta.num_rows) if self.path is not None else len(self._frame)

    def ref(self) -> "ScoresRef | None":
        """What ``results.json`` records of this table's file (None for a table held in memory)."""
        if self.path is None or self._seed is not None:
            return None
        return ScoresRef(file=self.path.name, n_rows=self.n_rows, columns=list(self.columns),
                         sha256=file_sha256(self.path))

    def keys(self) -> list[tuple[str, str]]:
        """The ``(task, method)`` pairs the table holds, in writing order."""
        if self.path is None:
            return list(dict.fromkeys(zip(self._frame["task"], self._frame["method"])))
        raw = (self._meta.metadata or {}).get(_GROUPS_META)
        if raw is not None:
            return list(dict.fromkeys(tuple(k) for k in json.loads(raw)))
        keys: dict = {}
        for df in self.parts():
            keys.update(dict.fromkeys(zip(df["task"].astype(str), df["method"].astype(str))))
        return list(keys)

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.keys()))

    def methods(self, task: str) -> list[str]:
        return [m for t, m in self.keys() if t == task]

    def frame(self, task: str | None = None, method: str | list[str] | None = None,
              metric: str | None = None) -> pd.DataFrame:
        """The rows of ``task`` (and ``method``, a name or a list of names; and ``metric``), as a
        DataFrame with the table's columns (names as categoricals when read from the file)."""
        parts = list(self.parts(task, method, metric))
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=str if c in _STRINGS else np.float64) for c in self.columns})
        return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)

    def parts(self, task: str | None = None, method: str | list[str] | None = None,
              metric: str | None = None) -> Iterator[pd.DataFrame]:
        """:meth:`frame`'s rows a row group at a time (a method's 400,000 rows at 45,000 subjects
        are never decoded at once)."""
        methods = None if method is None else ([method] if isinstance(method, str) else list(method))
        if self.path is None:
            df = self._selected(self._frame, task, methods, metric)
            if df is not None:
                yield df
            return
        self._check_unchanged()
        _, pq = _arrow()
        groups = self._groups_of(task, methods)
        # names read as dictionaries (pandas categoricals): no Python string per row
        pf = pq.ParquetFile(self.path, read_dictionary=list(_STRINGS))
        if groups is None:  # a file without the row-group index: every row group, filtered
            groups = range(pf.metadata.num_row_groups)
        for g in groups:
            df = self._selected(pf.read_row_group(g, use_threads=False).to_pandas(), task, methods, metric)
            if df is not None:
                yield df
        release_arrow_memory()

    def _selected(self, df: pd.DataFrame, task, methods, metric) -> pd.DataFrame | None:
        """The rows of ``df`` of ``task``, ``methods``, ``metric`` (and this table's seed, whose
        column is dropped); None when there are none."""
        sel = np.ones(len(df), bool)
        if task is not None:
            sel &= (df["task"] == task).to_numpy()
        if methods is not None:
            sel &= df["method"].isin(methods).to_numpy()
        if metric is not None:
            sel &= (df["metric"] == metric).to_numpy()
        if self._seed is not None:
            sel &= (df["seed"] == self._seed).to_numpy()
        if not sel.any():
            return None
        df = df[sel] if not sel.all() else df
        return (df.drop(columns=["seed"]) if self._seed is not None else df).reset_index(drop=True)
    def _check_unchanged(self) -> None:
        """A later run in the same folder replaces scores.parquet: never read it as this one's."""
        if _stat(self.path) != self._stat:
            raise RunError("the score table changed since these results were built", path=self.path,
                           expected="the scores.parquet written with these results",
                           found="a file replaced since (another run in the same folder?)",
                           fix="read the results again (neuroxai report RUN_DIR), or give each run its own folder")

    def _groups_of(self, task, methods) -> list[int] | None:
        """The row groups holding ``task`` × ``methods`` (None: the file does not say)."""
        raw = (self._meta.metadata or {}).get(_GROUPS_META)
        if raw is None or task is None:
            return None
        return [i for i, (t, m) in enumerate(json.loads(raw)) if t == task and (methods is None or m in methods)]

    def batches(self, rows: int = 1 << 16) -> Iterator[pd.DataFrame]:
        """The whole table in order, ``rows`` at a time."""
        if self.path is None:
            frame = self._frame if self._seed is None else self.frame()
            for i in range(0, len(frame), rows):
                yield frame.iloc[i:i + rows]
            return
        self._check_unchanged()
        _, pq = _arrow()
        for b in pq.ParquetFile(self.path).iter_batches(batch_size=rows):
            df = self._selected(b.to_pandas(), None, None, None)
            if df is not None:
                yield df

    def write(self, path: str | Path) -> "ScoresRef":
        """This table as a Parquet file at ``path`` (copied in batches)."""
        with ScoreWriter(path, [c for c in self.columns if c in EXTRA_COLUMNS]) as w:
            for b in self.batches():
                w.write(b)
        return w.ref


def open_table(ref: Optional[ScoresRef], base: Path, *, missing_ok: bool = False) -> ScoreTable | None:
    """The table ``ref`` names, beside ``base`` (the folder of the ``results.json`` holding ``ref``);
    its SHA-256 is checked, so a table of another run is never read as this one's. A missing file
    is an error, or with ``missing_ok`` a warning and None."""
    if ref is None:
        return None
    path = base / ref.file
    if not path.is_file() and missing_ok:
        log.warning("%s: not found; the per-subject parts (score distributions, subjects to inspect, "
                    "scores.csv) are left out", path)
        return None
    if not path.is_file():
        raise RunError("results.json names a score table that is not there", path=path,
                       expected=f"{ref.file} beside results.json ({ref.n_rows} rows)", found="missing",
                       fix="copy the run folder whole (results.json and scores.parquet), or rebuild it "
                           "with neuroxai validate PROTOCOL --out RUN_DIR --resume")
    if file_sha256(path) != ref.sha256:
        raise RunError("the score table is not the one results.json was written with", path=path,
                       expected=f"SHA-256 {ref.sha256[:16]}…", found=f"SHA-256 {file_sha256(path)[:16]}…",
                       fix="keep a run's results.json and scores.parquet together, or rebuild the run")
    return ScoreTable(path)


def release_arrow_memory() -> None:
    """Hand Arrow's freed buffers back to the system (its allocator keeps them otherwise, so a
    read of a larger table would stay resident after it is done)."""
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
