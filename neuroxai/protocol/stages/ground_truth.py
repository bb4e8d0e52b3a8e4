"""Stage ``validity``: does each task's model use the ground truth? (No attribution involved.)

Runs :func:`neuroxai.protocol.validity.validity_check` on the test split, with the training
split's mean image as the fill, keyed on the task, the model's fingerprint, the test subjects,
the protocol's ``validity`` section, the batch size, the manifest's content hash and the grid.
A task whose model fails it makes every method on it INCONCLUSIVE (see the verdicts).
"""
from __future__ import annotations

import time

import numpy as np

from ..context import RunContext, chunks
from ..rundir import atomic_write_json, read_json, stable_hash
from ..store import SubjectStore
from .tasks import is_null


def validity_stage(ctx: RunContext, tasks: dict, models: dict, store: SubjectStore) -> dict:
    """``{task_id: Validity}`` (:class:`neuroxai.report.schema.Validity`) for every non-null task
    (``{}`` when disabled)."""
    from ...report.schema import Validity
    from ..validity import mean_image, validity_check

    spec = ctx.protocol.validity
    if not spec.enabled:
        return {}
    out: dict = {}
    bs = ctx.protocol.run.batch_size
    for task_id, task in tasks.items():
        if is_null(task_id):
            continue
        tm = models[task_id]
        test = [s for s, sp in zip(task.subject_ids, task.split) if sp == "test"]
        train = [s for s, sp in zip(task.subject_ids, task.split) if sp == "train"]
        key = stable_hash([task_id, task.summary(), tm.fingerprint, test, spec.model_dump(), bs,
                           ctx.manifest_hash, ctx.grid])
        d = ctx.rd.stage("validity", key)
        if not ctx.rd.is_done("validity", key):
            t = time.perf_counter()
            fill = mean_image(task.modify_image(store.batch(c, ctx.device)) for c in chunks(train, bs))
            pos = {s: i for i, s in enumerate(task.subject_ids)}

            def batches():
                with ctx.progress.task(f"ground-truth validity on {task_id}", len(test)) as bar:
                    for c in chunks(test, bs):
                        b = store.batch(c, ctx.device)
                        yield {"image": task.modify_image(b), "gt": task.ground_truth(b),
                               "brain": b.get("brain_mask"),
                               "label": np.asarray([task.labels[pos[s]] for s in c])}
                        bar.advance(len(c))

            res = validity_check(tm.model, batches(), fill, task.kind, n_placements=spec.n_placements,
                                 seed=spec.seed, min_drop_share=spec.min_drop_share,
                                 min_kept_share=spec.min_kept_share, min_effect_ratio=spec.min_effect_ratio)
            ctx.timings[f"validity_{task_id}_s"] = time.perf_counter() - t
            atomic_write_json(d / "validity.json", res)
            ctx.rd.mark_done("validity", key)
        out[task_id] = Validity.model_validate(read_json(d / "validity.json"))
    return out
