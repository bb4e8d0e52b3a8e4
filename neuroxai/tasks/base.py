"""What a known-signal task is: labels, a subject-level split and a ground-truth mask per subject.

A task is built from a manifest (``TASKS[name](manifest, seed=..., **params)``) and returns a
:class:`TaskData`. Masks are not stored: ``ground_truth(batch)`` derives them on the device from
the batch's segmentation / lesion mask on the model grid, so they are exactly what the model saw.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, TaskError
from ..registry import Registry

TASKS: Registry = Registry("task", inputs=("manifest", "seed"))
SPLITS = ("train", "val", "test")


@dataclass
class TaskData:
    """The output of a task builder.

    Attributes:
        name: registry key (``region_volume``, ``lesion``, ...).
        subject_ids, labels, split: one entry per kept subject (``split`` in train/val/test).
        kind: ``"classification"`` (labels are class indices) or ``"regression"``.
        n_classes: number of classes (1 for regression).
        scorable: per subject, whether it has ground-truth voxels (localization is scored only
            on scorable test subjects; the others still train the model).
        required_keys: manifest columns the task needs on the model grid.
        gt_fn: ``batch → (B,1,D,H,W) bool`` ground truth; ``image_fn``: ``batch → image``.
        metric_params: ``{metric: params}`` the task gives its metrics over the protocol's (the
            brain-age task's true ordering as ``rank_biased_overlap``'s ``reference``).
    """

    name: str
    subject_ids: list[str]
    labels: np.ndarray
    split: np.ndarray
    kind: str
    n_classes: int
    scorable: np.ndarray
    required_keys: tuple[str, ...]
    gt_fn: Callable[[dict], torch.Tensor]
    image_fn: Callable[[dict], torch.Tensor] | None = None
    region_ids: list[int] | None = None
    covariates: list[str] = field(default_factory=list)
    confound: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    metric_params: dict = field(default_factory=dict)

    def ground_truth(self, batch: dict) -> torch.Tensor:
        """``(B,1,D,H,W)`` bool mask of where the label's signal lives, on the batch's device."""
        return self.gt_fn(batch)

    def modify_image(self, batch: dict) -> torch.Tensor:
        """The image the model sees (only the positive control alters it)."""
        return batch["image"] if self.image_fn is None else self.image_fn(batch)

    def summary(self) -> dict:
        sp = pd.Series(self.split)
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "n_classes": int(self.n_classes),
                               "n_subjects": len(self.subject_ids),
                               "n_per_split": {s: int((sp == s).sum()) for s in SPLITS},
                               "n_scorable": int(np.asarray(self.scorable).sum()),
                               "covariates": list(self.covariates), "confound": self.confound,
                               "region_ids": self.region_ids, **self.info}
        if self.kind == "classification":
            out["class_counts"] = {str(c): int((self.labels == c).sum()) for c in range(self.n_classes)}
        else:
            out["label_mean"] = float(np.mean(self.labels))
            out["label_sd"] = float(np.std(self.labels))
        return _jsonable(out)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def build_task(task_type: str, manifest: pd.DataFrame, *, seed: int = 0, **params) -> TaskData:
    """Build ``TASKS[task_type]`` with ``params`` (unknown parameters name the allowed ones)."""
    fn = TASKS[task_type]
    TASKS.check(task_type, params, path="tasks[].params")
    return fn(manifest, seed=seed, **params)


def make_split(labels: np.ndarray, *, seed: int = 0, fractions=(0.6, 0.15, 0.25),
               stratify: bool = True) -> np.ndarray:
    """A seeded split by subject into train/val/test, stratified by ``labels`` (class or bin).

    Each subject is in exactly one split; within every stratum the order is a seeded permutation
    and the first ``round(f·n)`` go to train, the next to val, the rest to test.
    """
    labels = np.asarray(labels)
    if abs(sum(fractions) - 1) > 1e-6 or len(fractions) != 3:
        raise ConfigError("split fractions must be three numbers summing to 1",
                          expected="(train, val, test)", found=fractions)
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=object)
    strata = np.unique(labels) if stratify else [None]
    for s in strata:
        idx = np.flatnonzero(labels == s) if s is not None else np.arange(len(labels))
        idx = idx[rng.permutation(len(idx))]
        n_tr = int(round(fractions[0] * len(idx)))
        n_va = int(round(fractions[1] * len(idx)))
        out[idx[:n_tr]] = "train"
        out[idx[n_tr:n_tr + n_va]] = "val"
        out[idx[n_tr + n_va:]] = "test"
    return out.astype(str)


def quantile_bins(x: np.ndarray, n_bins: int = 3) -> np.ndarray:
    """Bin index (0..n_bins-1) of each value by its quantile (for stratifying continuous labels)."""
    qs = np.quantile(x, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(qs, x, side="right")


def residualize(y: np.ndarray, covs: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS residuals of ``y`` on ``[1, covs]``, fitted on the ``train`` rows only.

    Returns ``(residuals for all rows, coefficients)``. Fitting on the training split only keeps
    test labels free of information from the test subjects.
    """
    X = np.column_stack([np.ones(len(y)), covs]) if covs.size else np.ones((len(y), 1))
    if train.sum() < X.shape[1] + 2:
        raise TaskError("too few training subjects to residualize", expected=f"> {X.shape[1] + 2}",
                        found=int(train.sum()), fix="use more subjects or fewer covariates")
    beta, *_ = np.linalg.lstsq(X[train], y[train], rcond=None)
    return y - X @ beta, beta


def confound_check(covs: pd.DataFrame, labels: np.ndarray, split: np.ndarray, kind: str) -> dict:
    """How well covariates alone (TIV, age, sex) predict the label on the test split.

    A logistic (or linear) regression on the covariates, fitted on train, scored on test: an AUROC
    near 0.5 (R² near 0) means a model cannot get the label from global features alone.
    """
    if covs.shape[1] == 0:
        return {"covariates": [], "note": "no covariates in the manifest"}
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import r2_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = covs.to_numpy(float)
    tr, te = split == "train", split == "test"
    if te.sum() < 4 or len(np.unique(labels[tr])) < 2:
        return {"covariates": list(covs.columns), "note": "too few subjects for the check"}
    if kind == "classification":
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X[tr], labels[tr])
        if len(np.unique(labels[te])) < 2:
            return {"covariates": list(covs.columns), "note": "one class in the test split"}
        p = clf.predict_proba(X[te])
        score = roc_auc_score(labels[te], p[:, 1]) if p.shape[1] == 2 else roc_auc_score(
            labels[te], p, multi_class="ovr")
        return {"covariates": list(covs.columns), "metric": "auroc", "value": float(score),
                "note": "AUROC of a logistic regression on covariates alone (0.5 = no shortcut)"}
    reg = make_pipeline(StandardScaler(), LinearRegression()).fit(X[tr], labels[tr])
    return {"covariates": list(covs.columns), "metric": "r2",
            "value": float(r2_score(labels[te], reg.predict(X[te]))),
            "note": "R² of a linear regression on covariates alone (≤ 0 = no shortcut)"}


def covariate_frame(manifest: pd.DataFrame, names: list[str] | None) -> pd.DataFrame:
    """The numeric covariate columns to adjust for (default: those of tiv/age/sex present)."""
    default = [c for c in ("tiv", "age", "sex") if c in manifest.columns]
    names = default if names is None else list(names)
    missing = [c for c in names if c not in manifest.columns]
    if missing:
        raise TaskError(f"covariate(s) {missing} not in the manifest", path=manifest.attrs.get("source"),
                        expected=f"columns {list(manifest.columns)}", found=missing,
                        fix="add the column or remove it from the task's covariates")
    cov = manifest[names].apply(pd.to_numeric, errors="coerce")
    bad = cov.columns[cov.isna().any()].tolist()
    if bad:
        rows = {c: [int(i) + 2 for i in cov.index[cov[c].isna()]][:10] for c in bad}
        raise TaskError("covariates must be numeric and complete", path=manifest.attrs.get("source"),
                        expected="numbers in every row", found=f"missing/non-numeric at CSV rows {rows}",
                        fix="fill or drop those rows (sex as 0/1)")
    return cov
