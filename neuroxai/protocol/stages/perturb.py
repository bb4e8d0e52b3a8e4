"""Stage ``fp_perturbation``: is a method's off-target relevance used by the model?

The causal test of the claim "LRP produces extensive, artifactual relevance" (Siegel et al. 2025,
2026 revision, ``4-xai_validation/fp_perturbation``): per scored test subject, the voxels of the
method's map that the study calls false positives (:func:`~neuroxai.scoring.siegel2025.
false_positive_sets`) are set to the training images' mean brain intensity, and, as the control,
so is the same set mirrored into the other hemisphere. The model's decision score (class-1 minus
class-0 logit, or the regression output) is compared with the original's. If it moves more when
the false positives go than when the control goes, those voxels carry information the model uses
(suppressors, Haufe et al. 2014) — they are not artefacts of the method.

One stage folder per (task, method), keyed on the model, the method, the subjects, the settings,
the images and the grid; the per-subject changes are saved, the summary
(:class:`~neuroxai.report.schema.OffTarget`) is computed from them.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..context import RunContext, chunks
from ..rundir import atomic_write_json, read_json, stable_hash
from ..store import SubjectStore
from .tasks import explained, is_null, predictions, scored_subjects


def _iterations(mm: float, spacing) -> int:
    """Millimetres as 6-connected dilation steps at the grid's finest spacing."""
    return int(round(float(mm) / float(min(spacing))))


def lr_axis(affine: np.ndarray) -> int:
    """The array axis (2, 3 or 4 of ``(B,1,D,H,W)``) that runs left-right: the voxel axis whose
    direction has the largest world-x component (RAS or LAS alike)."""
    a = np.asarray(affine, float)[:3, :3]
    return 2 + int(np.argmax(np.abs(a[0])))


def fp_perturbation_stage(ctx: RunContext, tasks: dict, models: dict, store: SubjectStore) -> dict:
    """``{task_id: {method_key: OffTarget}}`` for the non-null tasks and the methods under test
    that ``sanity.fp_perturbation`` names (``{}`` when disabled)."""
    from ...attribution.baselines import is_baseline

    spec = ctx.protocol.sanity.fp_perturbation
    if not spec.enabled:
        return {}
    out: dict = {}
    for tid, task in tasks.items():
        if is_null(tid):
            continue
        tm = models[tid]
        ids = scored_subjects(ctx, task)[:spec.n_subjects]
        for mspec in ctx.protocol.methods:
            if is_baseline(mspec.name) or (spec.methods is not None and mspec.key not in spec.methods):
                continue
            key = stable_hash([tid, task.summary(), tm.fingerprint, mspec.model_dump(), ids, spec.model_dump(),
                               ctx.manifest_hash, ctx.grid, ctx.protocol.run.target, ctx.protocol.run.batch_size])
            d = ctx.rd.stage("fp_perturbation", key)
            if not ctx.rd.is_done("fp_perturbation", key):
                t = time.perf_counter()
                rows = _perturb(ctx, tid, task, tm, mspec, store, ids)
                ctx.timings[f"fp_perturbation_{tid}_{mspec.key}_s"] = time.perf_counter() - t
                atomic_write_json(d / "subjects.json", rows)
                ctx.rd.mark_done("fp_perturbation", key)
            out.setdefault(tid, {})[mspec.key] = summarize(read_json(d / "subjects.json"), ctx.protocol)
    return out


def _perturb(ctx: RunContext, tid: str, task, tm, mspec, store: SubjectStore, ids: list[str]) -> dict:
    """Per subject: the output changes with the false positives and with the control replaced,
    the number of replaced voxels and the control's overlap with the false positives."""
    from ...attribution import attribute
    from .attribute import method_params, train_mean_image

    spec, bs = ctx.protocol.sanity.fp_perturbation, ctx.protocol.run.batch_size
    train = [s for s, sp in zip(task.subject_ids, task.split) if sp == "train"]
    fill_img = train_mean_image(ctx, task, store)  # computed once per task, shared with the methods
    brain0 = store.batch(train[:1], ctx.device).get("brain_mask") if train else None
    # the study fills with the mean image's mean brain intensity (one number)
    inside = fill_img != 0 if brain0 is None else brain0[:1].bool().expand_as(fill_img)
    fill = float(fill_img[inside].mean()) if bool(inside.any()) else 0.0
    sigma = spec.smooth_fwhm_mm / (2 * math.sqrt(2 * math.log(2))) / float(min(store.spacing))
    rows: dict = {k: [] for k in ("subject_id", "delta_fp", "delta_flip", "fp_voxels", "flip_voxels", "overlap")}
    with ctx.progress.task(f"false-positive perturbation: {mspec.key} on {tid}", len(ids)) as bar:
        for sids in chunks(ids, bs):
            b = store.batch(sids, ctx.device)
            x = task.modify_image(b)
            target, _ = explained(task, sids, predictions(tm.model, x, task.kind), ctx.protocol.run.target,
                                  ctx.device)
            attr = attribute(tm.model, x, target, mspec.name,
                             **method_params(ctx, task, store, mspec, task.ground_truth(b), b)).float()
            moved, sets = perturbation_deltas(
                tm.model, x, attr, task.ground_truth(b), b.get("brain_mask"), fill, task.kind,
                gt_dilation=_iterations(spec.gt_dilation_mm, store.spacing),
                fp_dilation=_iterations(spec.fp_dilation_mm, store.spacing), percentile=spec.percentile,
                smooth_sigma_vox=sigma, lr_axis=lr_axis(b["affine"][0].cpu().numpy()))
            rows["subject_id"] += [str(s) for s in sids]
            rows["delta_fp"] += moved["fp"].cpu().tolist()
            rows["delta_flip"] += moved["flip"].cpu().tolist()
            rows["fp_voxels"] += sets["fp"].flatten(1).sum(1).cpu().tolist()
            rows["flip_voxels"] += sets["flip"].flatten(1).sum(1).cpu().tolist()
            rows["overlap"] += sets["overlap"].cpu().tolist()
            bar.advance(len(sids))
    rows["fill"] = fill
    return rows


def perturbation_deltas(model: torch.nn.Module, x: torch.Tensor, attr: torch.Tensor, gt: torch.Tensor,
                        brain: torch.Tensor | None, fill: float, kind: str, **sets) -> tuple[dict, dict]:
    """``|score(x with the set replaced by fill) − score(x)|`` per subject ``(B,)`` for the false
    positives (``"fp"``) and the mirrored control (``"flip"``), and the sets themselves
    (:func:`~neuroxai.scoring.siegel2025.false_positive_sets` with ``sets`` as its settings).
    ``score``: :func:`~neuroxai.protocol.validity.model_score` (class-1 minus class-0 logit, or the
    regression output)."""
    from ...scoring.siegel2025 import false_positive_sets
    from ..validity import model_score

    s = false_positive_sets(attr, gt, brain, **sets)
    base = model_score(model, x, kind)
    moved = {k: (model_score(model, torch.where(s[k], torch.full_like(x, fill), x), kind) - base).abs()
             for k in ("fp", "flip")}
    return moved, s


def summarize(rows: dict, proto):
    """The :class:`~neuroxai.report.schema.OffTarget` of one method on one task: the mean output
    changes, the mean paired difference with its bootstrap CI, and the protocol's one-sided paired
    test that the false positives move the output more than the mirrored control."""
    from ...report.schema import OffTarget
    from ...scoring.stats import bootstrap_ci, paired_test

    spec, st = proto.sanity.fp_perturbation, proto.statistics
    fp, flip = np.asarray(rows["delta_fp"], float), np.asarray(rows["delta_flip"], float)
    n_vox = np.asarray(rows["fp_voxels"], float)
    has = n_vox > 0
    out = OffTarget(n=int(fp.size), n_with_fp=int(has.sum()), alpha=spec.alpha,
                    fp_voxels_mean=_f(n_vox.mean()) if n_vox.size else None,
                    overlap_mean=_f(np.asarray(rows["overlap"], float)[has].mean()) if has.any() else None,
                    delta_fp_mean=_f(fp.mean()) if fp.size else None,
                    delta_flip_mean=_f(flip.mean()) if flip.size else None)
    if not has.any():
        out.reading = "no false positives on these subjects: nothing to test"
        return out
    diff = fp[has] - flip[has]
    est, lo, hi = bootstrap_ci(torch.tensor(diff), n_boot=st.bootstrap, level=st.ci_level, method="percentile",
                               seed=st.seed)
    p = 1.0 if np.allclose(diff, 0) else float(paired_test(torch.tensor(fp[has]), torch.tensor(flip[has]),
                                                           method=st.test, alternative="greater",
                                                           n_perm=st.n_permutations, seed=st.seed))
    out.difference_mean, out.difference_ci_low, out.difference_ci_high, out.p = _f(est), _f(lo), _f(hi), _f(p)
    out.used = bool(p < spec.alpha)
    out.reading = ("used by the model: replacing the off-target relevance moves the output more than the "
                   "mirrored control — information the model uses (suppressor-like), not an artefact"
                   if out.used else
                   "not shown to be used: replacing it moves the output no more than the mirrored control — "
                   "consistent with artefactual relevance")
    return out


def _f(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
