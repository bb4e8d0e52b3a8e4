"""Stage ``tasks``: the known-signal tasks (labels, splits and ground-truth masks per subject).

Each protocol task is built from the manifest (plus its null control, the same task on permuted
labels, as ``<id>__null``); its summary is written under a key of the task's spec and the
manifest's content hash. Tasks are cheap to build and are rebuilt on every run; what the later
stages key on is ``task.summary()``.
"""
from __future__ import annotations

from typing import Any

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
        if spec.null_control:
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


def targets(task, ids: list[str], device) -> torch.Tensor | None:
    """The class labels of ``ids`` as attribution targets ``(B,)`` long (None for regression)."""
    if task.kind != "classification":
        return None
    pos = {s: i for i, s in enumerate(task.subject_ids)}
    return torch.tensor([int(task.labels[pos[s]]) for s in ids], device=device)
