"""``user_label``: the data's own label (a diagnosis, sex, a score), with no known signal.

A prior study's model was trained on such a label, so no ground truth exists for its maps; the
task exists for ``kind: reference`` protocols, whose reference is the model's causal atlas
occlusion, not a mask (:mod:`neuroxai.protocol.stages.occlusion_reference`). Its ground truth is
empty and its registration says so (``known_signal=False``): a validation protocol refuses it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, TaskError
from .base import TASKS, TaskData, confound_check, covariate_frame, make_split, quantile_bins

TARGETS = ("classification", "regression")
#: More distinct values than this in a classification label column is most likely a number
MAX_CLASSES = 20


def no_truth(info: dict) -> str:
    """``user_label``: there is none; the reference is causal occlusion."""
    return (f"none: the label is the data's own ({info.get('column', '?')}), with no known location; "
            "methods are compared with the model's causal atlas occlusion instead (a reference, not a "
            "ground truth)")


def _no_mask(batch: dict) -> torch.Tensor:
    return torch.zeros_like(batch["image"], dtype=torch.bool)


@TASKS.register("user_label", ground_truth=no_truth, known_signal=False)
def user_label(manifest: pd.DataFrame, *, seed: int = 0, column: str = "label", target: str = "classification",
               covariates: Sequence[str] | None = None,
               split: Sequence[float] = (0.6, 0.15, 0.25)) -> TaskData:
    """Label = the manifest's ``column`` as it is. Subjects without a value are left out.

    Args:
        column: the manifest column holding the label (e.g. ``diagnosis``, ``sex``).
        target: ``"classification"`` (the column's distinct values, sorted, become classes 0…K−1;
            their names are in the task summary) or ``"regression"`` (the value, z-scored with the
            training split's mean and SD).
        covariates: columns for the confound check (default: ``tiv``, ``age``, ``sex`` present,
            the label column itself left out).
        split: train / val / test fractions (stratified by class, or by tercile for regression).

    Every subject needs a ``segmentation`` (the atlas whose regions are occluded and ranked).
    """
    if target not in TARGETS:
        raise ConfigError("unknown user_label target", path="tasks[].params.target", expected=list(TARGETS),
                          found=repr(target))
    src = manifest.attrs.get("source")
    if column not in manifest.columns:
        raise TaskError(f"the label column {column!r} is not in the manifest", path=src,
                        expected=f"one of {list(manifest.columns)}", found=repr(column),
                        fix="name the manifest's label column in tasks[].params.column")
    if "segmentation" not in manifest.columns or manifest["segmentation"].isna().any():
        raise TaskError("kind: reference occludes and ranks atlas regions: every subject needs a segmentation",
                        path=src, expected="a 'segmentation' column (an atlas label image per subject, in "
                        "the image's space)", found="missing" if "segmentation" not in manifest.columns
                        else "rows without one", fix="add each subject's atlas (e.g. AAL3 warped to the subject)")
    keep = manifest[column].notna().to_numpy()
    df = manifest[keep].reset_index(drop=True)
    raw = df[column]
    info: dict = {"column": column, "target": target, "n_without_label": int((~keep).sum())}
    if target == "classification":
        values = sorted(raw.astype(str).unique()) if raw.dtype == object else sorted(raw.unique())
        if not 2 <= len(values) <= MAX_CLASSES:
            raise TaskError(f"the label column {column!r} has {len(values)} distinct values", path=src,
                            expected=f"2 to {MAX_CLASSES} classes", found=[str(v) for v in values[:10]],
                            fix="use target: regression for a continuous label, or a column with classes")
        code = {v: i for i, v in enumerate(values)}
        labels = np.asarray([code[v if raw.dtype != object else str(v)] for v in raw], int)
        strat, n_classes, kind = labels, len(values), "classification"
        info["classes"] = [str(v) for v in values]
    else:
        y = pd.to_numeric(raw, errors="coerce").to_numpy(float)
        if not np.isfinite(y).all():
            raise TaskError(f"the label column {column!r} is not numeric", path=src, expected="numbers",
                            found=raw[~np.isfinite(y)].astype(str).tolist()[:5],
                            fix="use target: classification, or fix those rows")
        strat, n_classes, kind = quantile_bins(y, 3), 1, "regression"
    sp = make_split(strat, seed=seed, fractions=tuple(split))
    if kind == "regression":
        tr = y[sp == "train"]
        labels = ((y - tr.mean()) / (tr.std() + 1e-12)).astype(np.float32)
        info["label"] = f"{column}, z-scored (train mean {tr.mean():.4g}, SD {tr.std():.4g})"
    names = [c for c in ("tiv", "age", "sex") if c in df.columns and c != column] if covariates is None \
        else [c for c in covariates if c != column]
    cov = covariate_frame(df, names)
    task = TaskData("user_label", df["subject_id"].astype(str).tolist(), labels, sp, kind, n_classes,
                    np.ones(len(df), bool), ("segmentation",), _no_mask, covariates=list(cov.columns), info=info)
    task.confound = confound_check(cov, labels, sp, kind)
    return task
