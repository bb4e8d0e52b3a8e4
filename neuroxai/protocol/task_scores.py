"""One task's scores as the statistics read them: a method at a time from the run's score table
(:class:`~neuroxai.report.scores.ScoreTable`), never the whole table. At 45,000 subjects a method's
rows are ~400,000 (3 metrics × value, chance, normalized), a few MB; the table is ~2.4 M."""
from __future__ import annotations

from collections import OrderedDict

import pandas as pd

from ..report.scores import ScoreTable


class TaskScores:
    """The rows of one task, loaded per method and kept for the last ``keep`` methods (the method
    being judged and the chance and ceiling maps it is compared with). With several model seeds
    (a ``seed`` column with more than one value), :meth:`values` gives each subject's mean over the
    seeds, the unit of the paired tests, and :meth:`seed_table` the seed × subject table."""

    def __init__(self, table: ScoreTable, task: str, keep: int = 4):
        self.table, self.task, self.keep = table, task, keep
        self._cache: OrderedDict[str, tuple[pd.DataFrame, pd.DataFrame | None]] = OrderedDict()
        self._subjects: set[str] = set()

    def methods(self) -> list[str]:
        return self.table.methods(self.task)

    def __bool__(self) -> bool:
        return bool(self.methods())

    def _load(self, method: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        if method in self._cache:
            self._cache.move_to_end(method)
            return self._cache[method]
        raw = self.table.frame(self.task, method)
        raw["subject_id"] = raw["subject_id"].astype(str)
        raw["metric"] = raw["metric"].astype(str)
        reps = raw if "seed" in raw.columns and raw["seed"].nunique() > 1 else None
        df = _seed_mean(raw) if reps is not None else raw
        self._subjects.update(df["subject_id"])
        self._cache[method] = (df, reps)
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return df, reps

    @property
    def has_seeds(self) -> bool:
        ms = self.methods()
        return bool(ms) and self._load(ms[0])[1] is not None

    def values(self, method: str | None, metric: str) -> pd.Series:
        """``method``'s ``metric`` per subject (indexed by subject id; the seeds' mean)."""
        if method is None or method not in self.methods():
            return pd.Series(dtype=float)
        df = self._load(method)[0]
        sel = df[df["metric"] == metric]
        return sel.set_index("subject_id")["value"].astype(float)

    def seed_table(self, method: str | None, metric: str) -> pd.DataFrame:
        """``seed × subject`` values of one method and metric (empty without the method or seeds)."""
        if method is None or method not in self.methods():
            return pd.DataFrame()
        reps = self._load(method)[1]
        if reps is None:
            return pd.DataFrame()
        sel = reps[reps["metric"] == metric]
        return sel.pivot_table(index="seed", columns="subject_id", values="value", aggfunc="mean")

    def n_subjects(self) -> int:
        """The scored subjects of the task (any method)."""
        for m in self.methods():
            if m not in self._cache:
                self._load(m)
        return len(self._subjects)

    def labels(self) -> pd.Series:
        """Each subject's label (empty when the table has none)."""
        ms = self.methods()
        if not ms:
            return pd.Series(dtype=float)
        df = self._load(ms[0])[0]
        if "label" not in df.columns:
            return pd.Series(dtype=float)
        return pd.to_numeric(df.dropna(subset=["label"]).drop_duplicates("subject_id")
                             .set_index("subject_id")["label"], errors="coerce")


def _seed_mean(df: pd.DataFrame) -> pd.DataFrame:
    """Each subject's scores averaged over the model seeds (``seed`` column) — the unit of the
    paired tests is the subject; the other columns (label, …) are the first seed's."""
    keys = ["subject_id", "method", "metric"]
    rest = {c: "first" for c in df.columns if c not in keys + ["value", "seed"]}
    return df.groupby(keys, sort=False, as_index=False, observed=True).agg({"value": "mean", **rest})
