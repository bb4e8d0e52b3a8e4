"""One task's scores as the statistics read them: a method at a time from the run's score table
(:class:`~neuroxai.report.scores.ScoreTable`), never the whole table, each method held as a
subjects × metrics array. At 45,000 subjects a method's rows are ~400,000 (3 metrics × value,
chance, normalized); as an array they are 3 MB."""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..report.scores import ScoreTable


@dataclass(frozen=True)
class _Method:
    """One method's scores on one task: ``values[metric]`` per subject (the task's subjects in the
    table's order, ``present`` those this method has; several seeds: their mean), ``per_seed`` the
    ``(seeds, subjects, metrics)`` cube (None for one model), and each subject's label."""

    present: np.ndarray
    metrics: dict[str, int]
    values: np.ndarray  # (subjects, metrics)
    seeds: tuple
    per_seed: np.ndarray | None
    label: np.ndarray | None


class _Subjects:
    """The task's subject ids in order of first appearance, shared by its methods (one index, not
    one per method), and each id's position."""

    def __init__(self):
        self.pos: dict[str, int] = {}
        self._index: pd.Index | None = None

    def positions(self, col: pd.Series) -> np.ndarray:
        """Each row's subject position (new ids appended in order of appearance)."""
        cat = col.astype("category")
        codes = cat.cat.codes.to_numpy()
        _, first = np.unique(codes, return_index=True)
        cats = cat.cat.categories
        for c in codes[np.sort(first)]:  # the part's new ids, in order of appearance
            sid = str(cats[c])
            if sid not in self.pos:
                self.pos[sid] = len(self.pos)
                self._index = None
        lookup = np.fromiter((self.pos[str(x)] for x in cats), np.int64, len(cats))
        return lookup[codes]

    @property
    def index(self) -> pd.Index:
        if self._index is None or len(self._index) != len(self.pos):
            self._index = pd.Index(list(self.pos), dtype=object)
        return self._index


def _as_method(parts, subjects: _Subjects) -> _Method:
    """One method's rows (an iterable of frames, a row group each) as its arrays."""
    si, mi, vals, seed_col, labels = [], [], [], [], []
    metrics: dict[str, int] = {}
    for raw in parts:
        si.append(subjects.positions(raw["subject_id"]))
        names = raw["metric"].astype("category")
        cats = [metrics.setdefault(str(m), len(metrics)) for m in names.cat.categories]
        mi.append(np.asarray(cats, np.int64)[names.cat.codes.to_numpy()])
        vals.append(raw["value"].to_numpy(np.float64))
        if "seed" in raw.columns:
            seed_col.append(raw["seed"].to_numpy(np.float64))
        if "label" in raw.columns:
            labels.append(pd.to_numeric(raw["label"], errors="coerce").to_numpy(np.float64))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    si, mi, value = cat(si, np.int64), cat(mi, np.int64), cat(vals, np.float64)
    n_sub = int(si.max()) + 1 if si.size else 0
    seeds: tuple = ()
    cube = None
    seed = cat(seed_col, np.float64) if seed_col else None
    if seed is not None and len(np.unique(seed[~np.isnan(seed)])) > 1:
        uniq, seed_i = np.unique(seed, return_inverse=True)
        seeds = tuple(int(x) for x in uniq)
        cube = np.full((len(seeds), n_sub, len(metrics)), np.nan)
        cube[seed_i, si, mi] = value
        with warnings.catch_warnings():  # a subject × metric no seed has: NaN, as pandas' mean
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(cube, axis=0)
    else:
        mean = np.full((n_sub, len(metrics)), np.nan)
        mean[si, mi] = value
    label = None
    if labels:
        label = np.full(n_sub, np.nan)
        first = np.unique(si, return_index=True)[1]  # each subject's first row (the first seed's)
        label[si[first]] = cat(labels, np.float64)[first]
    present = np.zeros(n_sub, bool)
    present[si] = True
    return _Method(present, metrics, mean, seeds, cube, label)


class TaskScores:
    """The rows of one task, loaded per method and kept for the last ``keep`` methods (the method
    being judged and the chance and ceiling maps it is compared with). With several model seeds
    (a ``seed`` column with more than one value), :meth:`values` gives each subject's mean over the
    seeds, the unit of the paired tests, and :meth:`seed_table` the seed × subject table."""

    def __init__(self, table: ScoreTable, task: str, keep: int = 4):
        self.table, self.task, self.keep = table, task, keep
        self._cache: OrderedDict[str, _Method] = OrderedDict()
        self._subjects = _Subjects()
        self._methods: list[str] | None = None

    def methods(self) -> list[str]:
        if self._methods is None:
            self._methods = self.table.methods(self.task)
        return self._methods

    def __bool__(self) -> bool:
        return bool(self.methods())

    def _load(self, method: str) -> _Method:
        if method in self._cache:
            self._cache.move_to_end(method)
            return self._cache[method]
        m = _as_method(self.table.parts(self.task, method), self._subjects)
        self._cache[method] = m
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return m

    @property
    def has_seeds(self) -> bool:
        ms = self.methods()
        return bool(ms) and self._load(ms[0]).per_seed is not None

    def values(self, method: str | None, metric: str) -> pd.Series:
        """``method``'s ``metric`` per subject (indexed by subject id; the seeds' mean)."""
        if method is None or method not in self.methods():
            return pd.Series(dtype=float)
        m = self._load(method)
        j = m.metrics.get(metric)
        if j is None:
            return pd.Series(dtype=float)
        return self._series(m, m.values[:, j])

    def seed_table(self, method: str | None, metric: str) -> pd.DataFrame:
        """``seed × subject`` values of one method and metric, seeds and subjects sorted (empty
        without the method or seeds)."""
        if method is None or method not in self.methods():
            return pd.DataFrame()
        m = self._load(method)
        j = m.metrics.get(metric)
        if m.per_seed is None or j is None:
            return pd.DataFrame()
        idx = self._subjects.index[:len(m.present)][m.present]
        t = pd.DataFrame(m.per_seed[:, m.present, j], index=pd.Index(m.seeds, name="seed"), columns=idx)
        return t.sort_index().sort_index(axis=1).dropna(axis=1, how="all")

    def _series(self, m: _Method, col: np.ndarray) -> pd.Series:
        """``col`` (one value per task subject the method has loaded) as a Series by subject id."""
        idx = self._subjects.index[:len(m.present)]
        if m.present.all():
            return pd.Series(col, index=idx, name="value")
        return pd.Series(col[m.present], index=idx[m.present], name="value")

    def n_subjects(self) -> int:
        """The scored subjects of the task (any method)."""
        for name in self.methods():
            if name not in self._cache:
                self._load(name)
        return len(self._subjects.pos)

    def labels(self) -> pd.Series:
        """Each subject's label (empty when the table has none)."""
        ms = self.methods()
        m = self._load(ms[0]) if ms else None
        if m is None or m.label is None:
            return pd.Series(dtype=float)
        lab = self._series(m, m.label)
        return lab[lab.notna()]

