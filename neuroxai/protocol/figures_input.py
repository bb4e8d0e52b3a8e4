"""Arrays the report's figures need, gathered from the run directory (small: cohort means)."""
from __future__ import annotations

import numpy as np
import torch

from ..report.figure_inputs import FigureInputs, SubjectFigures, TaskFigures
from .stages.tasks import is_null, scored_subjects


def figure_inputs(ctx, tasks: dict, store, attributed) -> FigureInputs:
    """The report's :class:`~neuroxai.report.figure_inputs.FigureInputs`, one entry per task.

    ``image``: mean image of the scored subjects; ``mask``: fraction of them with ground truth at
    each voxel; ``maps``: cohort-mean of each method's map, every map first scaled to unit
    positive mass; ``example``: the first scored subject's image, mask and maps. The run's tail
    (:func:`~neuroxai.protocol.conclude.write_results`) saves it to ``figures.npz`` so
    ``neuroxai report`` can rebuild the report.
    """
    out = FigureInputs()
    for tid, task in tasks.items():
        if is_null(tid):
            continue
        ids = scored_subjects(ctx, task)
        if not ids:
            continue
        # mean image and ground-truth frequency over (up to) 64 subjects, read 8 at a time
        img_sum = gt_sum = None
        first = None
        for c in range(0, min(len(ids), 64), 8):
            b = store.batch(ids[c:min(c + 8, 64)], torch.device("cpu"))
            img, gt = task.modify_image(b).float(), task.ground_truth(b).float()
            img_sum = img.sum(0) if img_sum is None else img_sum + img.sum(0)
            gt_sum = gt.sum(0) if gt_sum is None else gt_sum + gt.sum(0)
            first = first or (img[0, 0].numpy(), gt[0, 0].numpy())
        n_fig = min(len(ids), 64)
        entry = TaskFigures(image=(img_sum / n_fig)[0].numpy(), mask=(gt_sum / n_fig)[0].numpy(),
                            spacing=tuple(store.spacing),
                            example=SubjectFigures(subject_id=ids[0], image=first[0], mask=first[1]))
        for mspec in ctx.protocol.methods:
            d = attributed.folder(tid, mspec.key)
            chunks = sorted(d.glob("chunk_*.npz")) if d is not None else []
            if not chunks:
                continue
            total, n = None, 0
            for f in chunks:
                z = np.load(f)
                total = z["mean_map_sum"] if total is None else total + z["mean_map_sum"]
                n += len(z["subject_id"])
            entry.maps[mspec.key] = total / max(n, 1)
            z0 = np.load(chunks[0])
            if "maps" in z0.files:
                entry.example.maps[mspec.key] = z0["maps"][0].astype(np.float32)
        out.tasks[tid] = entry
    return out
