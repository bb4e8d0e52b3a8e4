"""Stage ``tasks``: the known-signal tasks (labels, splits and ground-truth masks per subject).

Each protocol task is built from the manifest (plus its null control, the same task on permuted
labels, as ``<id>__null``); its summary is written under a key of the task's spec and the
manifest's content hash. Tasks are cheap to build and are rebuilt on every run; what the later
stages key on is ``task.summary()``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..context import RunContext
from ..rundir import atomic_write_json, stable_hash


def build_tasks(ctx: RunContext) -> dict[str, Any]:
    """``{task_id: task}`` in protocol order, each null control right after its task."""
    from ...tasks import build_task

    out = {}
    for spec in ctx.protocol.tasks:
        task = build_task(spec.type, ctx.manifest, seed=ctx.protocol.run.seed, **spec.params)
        out[spec.id] = task
        if spec.null_control and ctx.protocol.kind != "reference":  # the reference is the model's own occlusion
            out[f"{spec.id}__null"] = build_task("null_control", ctx.manifest, seed=ctx.protocol.run.seed,
                                                 base=spec.type, permutation_seed=ctx.protocol.run.seed + 1,
                                                 **spec.params)
        atomic_write_json(ctx.rd.stage("tasks", stable_hash([spec.model_dump(), ctx.manifest_hash]))
                          / "summary.json", task.summary())
    return out


def is_null(task_id: str) -> bool:
    """Whether ``task_id`` is a null control (``<id>__null``)."""
    return task_id.endswith("__null")


def scored_subjects(ctx: RunContext, task) -> list[str]:
    """The test subjects a task scores (those with a ground truth), at most ``run.n_test_subjects``."""
    ids = [s for s, sp, ok in zip(task.subject_ids, task.split, task.scorable) if sp == "test" and ok]
    cap = ctx.protocol.run.n_test_subjects
    return ids[:cap] if cap else ids


#: ``run.target``: which output a map explains (see :class:`~neuroxai.protocol.schema.RunSpec`)
TARGET_MODES = ("label", "predicted", "positive")


@torch.no_grad()
def predictions(model: torch.nn.Module, x: torch.Tensor, kind: str) -> np.ndarray:
    """The model's prediction per subject of ``x: (B,1,D,H,W)``: the argmax class ``(B,)`` int64
    (classification; for a single-logit binary model, z > 0 ⇔ sigmoid(z) > 0.5) or the output
    ``(B,)`` float64 (regression)."""
    out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    out = out.float().reshape(out.shape[0], -1)
    if kind == "classification":
        return out.argmax(1).cpu().numpy().astype(np.int64)
    return out[:, 0].cpu().double().numpy()


def explained(task, ids: list[str], predicted: np.ndarray | None, mode: str,
              device) -> tuple[torch.Tensor | None, dict[str, np.ndarray]]:
    """The attribution targets of ``ids`` under ``run.target`` = ``mode``, and the per-subject
    record ``{label, prediction, target}`` that ``scores.csv`` carries.

    ``label``: the true class; ``predicted``: the model's class (``predicted`` from
    :func:`predictions`); ``positive``: class 1 for every subject. Regression explains the single
    output (target None; the record's target is NaN)."""
    if mode not in TARGET_MODES:
        raise ValueError(f"run.target must be one of {TARGET_MODES}, found {mode!r}")
    pos = {s: i for i, s in enumerate(task.subject_ids)}
    labels = np.asarray([task.labels[pos[s]] for s in ids])
    n = len(ids)
    pred = np.full(n, np.nan) if predicted is None else np.asarray(predicted)
    if task.kind != "classification":
        return None, {"label": labels.astype(np.float64), "prediction": pred.astype(np.float64),
                      "target": np.full(n, np.nan)}
    if mode == "label":
        tgt = labels.astype(np.int64)
    elif mode == "positive":
        tgt = np.ones(n, np.int64)
    else:
        if predicted is None:
            raise ValueError("run.target 'predicted' needs the model's predictions")
        tgt = pred.astype(np.int64)
    return (torch.as_tensor(tgt, device=device),
            {"label": labels.astype(np.int64), "prediction": pred, "target": tgt})
