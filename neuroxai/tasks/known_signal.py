"""The known-signal tasks (Siegel et al. 2025): labels whose source location is known.

* ``region_volume``: the label is one or more regions' volume measured from each subject's own
  segmentation, adjusted for TIV (and age/sex) by OLS fitted on the training split only; the
  classes are the lowest vs highest quantile (middle dropped) or the value itself (regression).
  Ground truth (``ground_truth``): the region(s) in that subject, optionally dilated by
  ``margin_mm``; or, on the embedded cohort, the *signal support* (``signal_mask``: where the
  latent that drives the volume moves tissue, see :mod:`neuroxai.data.cohort`). A volume change
  shows at the region's boundary, on both sides, so the region alone misses half the evidence.
* ``lesion``: lesion presence or load from lesion masks; ground truth: the lesion mask. Subjects
  without lesion voxels train the model but are not scored.
* ``positive_control``: a signal of known shape and strength inserted into one region of half the
  subjects (the only task that alters images): shows whether a method *can* localize here.
* ``null_control``: the base task's labels permuted with a seed: the chance floor.
"""
from __future__ import annotations

import logging
from typing import Sequence

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from ..data.transforms import dilate_mm
from ..errors import ConfigError, TaskError
from .base import (TASKS, TaskData, build_task, confound_check, covariate_frame, make_split,
                   quantile_bins, residualize)
from . import describe
from .cidp import label_volumes, parse_correction, pca_correct, same_structure
from .regions import check_integer_labels, label_table, lateral_pairs, resolve_regions

log = logging.getLogger(__name__)


def _need(manifest: pd.DataFrame, col: str, task: str) -> None:
    if col not in manifest.columns or manifest[col].isna().any():
        n = int(manifest[col].isna().sum()) if col in manifest.columns else len(manifest)
        raise TaskError(f"task {task!r} needs a {col} for every subject", path=manifest.attrs.get("source"),
                        expected=f"a '{col}' column with a path in every row", found=f"{n} rows without one",
                        fix=f"add the {col} column (paths to NIfTI files) or drop those subjects")




def measure_volumes(paths: Sequence[str], values: Sequence[int]) -> np.ndarray:
    """Volume in ml of the voxels whose label is in ``values``, per label-map file."""
    out = np.empty(len(paths))
    vals = np.asarray(values)
    for i, p in enumerate(paths):
        img = nib.load(p)
        data = np.asarray(img.dataobj)
        check_integer_labels(data, p)
        vox_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
        out[i] = np.isin(np.round(data), vals).sum() * vox_ml
    return out


GROUND_TRUTHS = ("region", "signal_support")


def _region_gt(ids: list[int], margin_mm: float, ground_truth: str = "region"):
    def gt(batch: dict) -> torch.Tensor:
        if ground_truth == "signal_support":
            m = batch["signal_mask"].bool()
        else:
            seg = batch["segmentation"]
            m = torch.isin(seg.round().long(), torch.as_tensor(ids, device=seg.device))
        return dilate_mm(m, margin_mm, batch["spacing"]) if margin_mm > 0 else m
    return gt


def _classes(adj: np.ndarray, train: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Class 0 below the train ``quantiles[0]``, 1 above ``quantiles[1]``, −1 (dropped) between."""
    lo, hi = np.quantile(adj[train], quantiles)
    return np.where(adj <= lo, 0, np.where(adj >= hi, 1, -1))


@TASKS.register("region_volume", ground_truth=describe.region_truth)
def region_volume(manifest: pd.DataFrame, *, seed: int = 0,
                  regions: Sequence[str | int] = ("Hippocampus_L", "Hippocampus_R"),
                  target: str = "classification", quantiles: Sequence[float] = (1 / 3, 2 / 3),
                  covariates: Sequence[str] | None = None, margin_mm: float = 0.0,
                  ground_truth: str = "region", correction: dict | None = None,
                  labels_tsv: str | None = None, split: Sequence[float] = (0.6, 0.15, 0.25)) -> TaskData:
    """Label = the regions' volume, adjusted for covariates; ground truth = the regions.

    Args:
        regions: label names (from the segmentation's ``dseg.tsv``, AAL3 or FreeSurfer aseg) or
            numbers; their union is the region.
        target: ``"classification"`` (lowest vs highest quantile; middle dropped) or ``"regression"``.
        quantiles: class thresholds, computed on the training split.
        covariates: columns to adjust for (default: ``tiv``, ``age``, ``sex`` present).
        margin_mm: dilate the ground truth by this many mm. A volume change is seen at the region's
            boundary on both sides (on the embedded cohort the evidence reaches ~6-8 mm beyond
            the region), so on real data where the signal support is unknown use a margin of
            about 2 voxels of the model grid (and read the report's distance profile, which shows
            every margin at once).
        ground_truth: ``"region"`` (the segmented region, + ``margin_mm``) or ``"signal_support"``
            (the manifest's ``signal_mask``: where the latent variable moved tissue; the embedded
            cohort writes it; + ``margin_mm``).
        correction: ``{pca_components: k}``: the corrected measure (cIDP) of Siegel et al. 2025
            (:mod:`neuroxai.tasks.cidp`): the volume is also regressed on the first ``k``
            principal components of every other label's volume (the regions' other hemisphere
            left out), fitted on the training split. ``k = 0`` (default) is the uncorrected task.
    """
    if target not in ("classification", "regression"):
        raise ConfigError("unknown target", expected=["classification", "regression"], found=target)
    if ground_truth not in GROUND_TRUTHS:
        raise ConfigError("unknown region_volume ground_truth", expected=list(GROUND_TRUTHS),
                          found=ground_truth, fix="use 'region' (+ margin_mm) on your own data")
    _need(manifest, "segmentation", "region_volume")
    if ground_truth == "signal_support":
        if "signal_mask" not in manifest.columns or manifest["signal_mask"].isna().any():
            raise TaskError("ground_truth 'signal_support' needs a signal_mask for every subject",
                            path=manifest.attrs.get("source"),
                            expected="a 'signal_mask' column (the embedded cohort writes one)",
                            found="no signal_mask column" if "signal_mask" not in manifest.columns
                            else "rows without one",
                            fix="use ground_truth: region with a margin_mm on your own data")
    k = parse_correction(correction)
    table = label_table(manifest, labels_tsv)
    ids = resolve_regions(regions, table)
    vol = measure_volumes(manifest["segmentation"].tolist(), ids)
    if (vol == 0).any():
        bad = manifest["subject_id"][vol == 0].tolist()[:10]
        raise TaskError("the region is empty in some segmentations", expected=f"labels {ids} present",
                        found=f"0 voxels for {bad}", fix="check the label numbers (dseg.tsv) or the files")
    cov = covariate_frame(manifest, None if covariates is None else list(covariates))
    sp = make_split(quantile_bins(vol, 3), seed=seed, fractions=tuple(split))
    train = sp == "train"
    if k:
        adj, corr = corrected_volume(manifest, vol, ids, table, train, k, cov.to_numpy(float))
        beta = np.zeros(0)
    else:
        adj, beta = residualize(vol, cov.to_numpy(float), train)
    info = {"regions": [str(r) for r in (regions if not isinstance(regions, str) else [regions])],
            "volume_ml_mean": float(vol.mean()), "volume_ml_sd": float(vol.std()),
            "residualization": {"covariates": list(cov.columns), "coef": beta.tolist(),
                                "fitted_on": "train split only"},
            "margin_mm": margin_mm, "ground_truth": ground_truth, "target": target}
    if k:  # absent at k = 0, so an uncorrected task's summary (and its stage keys) stay as before
        info["correction"] = corr
    ids_all = manifest["subject_id"].astype(str).to_numpy()
    if target == "classification":
        cls = _classes(adj, train, quantiles)
        keep = cls >= 0
        labels, n_classes, kind = cls[keep].astype(int), 2, "classification"
        info["quantiles"] = list(quantiles)
        info["n_dropped_middle"] = int((~keep).sum())
    else:
        keep = np.ones(len(vol), bool)
        mu, sd = adj[train].mean(), adj[train].std() + 1e-12
        labels, n_classes, kind = ((adj - mu) / sd).astype(np.float32), 1, "regression"
        info["label"] = "z-scored residual volume (train mean/sd)"
    labels_cov = cov[keep].reset_index(drop=True)
    task = TaskData("region_volume", ids_all[keep].tolist(), labels, sp[keep], kind, n_classes,
                    np.ones(int(keep.sum()), bool),
                    ("segmentation", "signal_mask") if ground_truth == "signal_support" else ("segmentation",),
                    _region_gt(ids, margin_mm, ground_truth),
                    region_ids=ids, covariates=list(cov.columns), info=info)
    task.confound = confound_check(labels_cov, labels, sp[keep], kind)
    task.info["raw_volume_ml"] = dict(zip(ids_all.tolist(), vol.round(4).tolist()))
    return task


def corrected_volume(manifest: pd.DataFrame, vol: np.ndarray, ids: Sequence[int], table: dict[str, int],
                     train: np.ndarray, k: int, covs: np.ndarray) -> tuple[np.ndarray, dict]:
    """``vol`` corrected on the first ``k`` principal components of every other label's volume
    (the labels ``ids`` and their other hemisphere left out) and ``covs``, fitted on ``train``:
    ``(corrected values, info)`` (:func:`neuroxai.tasks.cidp.pca_correct`)."""
    labs, vols = label_volumes(manifest["segmentation"].tolist())
    left_out = same_structure(ids, lateral_pairs(table))
    others = vols[:, ~np.isin(labs, sorted(left_out))]
    adj, info = pca_correct(vol, others, train, k, covs)
    info["left_out_labels"] = sorted(int(x) for x in left_out if x in set(labs.tolist()))
    info["fitted_on"] = "train split only"
    return adj, info


@TASKS.register("lesion", ground_truth=describe.lesion_truth)
def lesion(manifest: pd.DataFrame, *, seed: int = 0, target: str = "presence",
           min_volume_ml: float = 0.0, covariates: Sequence[str] | None = None,
           split: Sequence[float] = (0.6, 0.15, 0.25)) -> TaskData:
    """Label = lesion presence (``target="presence"``) or load in ml (``"load"``, regression).

    Ground truth: the subject's lesion mask. Subjects without lesion voxels are kept for
    training but excluded from localization scoring (``scorable`` False; stated in the report).
    """
    if target not in ("presence", "load"):
        raise ConfigError("unknown lesion target", expected=["presence", "load"], found=target)
    _need(manifest, "lesion_mask", "lesion")
    load = np.empty(len(manifest))
    for i, p in enumerate(manifest["lesion_mask"]):
        img = nib.load(p)
        load[i] = (np.asarray(img.dataobj) > 0.5).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
    present = load > min_volume_ml
    if target == "presence":
        if present.all() or (~present).all():
            raise TaskError("lesion presence needs subjects with and without lesions",
                            expected="both classes", found=f"{int(present.sum())} of {len(present)} with lesions",
                            fix="use target: load (regression) instead")
        labels, kind, n_classes = present.astype(int), "classification", 2
        strat = labels
    else:
        labels, kind, n_classes = np.log1p(load).astype(np.float32), "regression", 1
        strat = quantile_bins(load, 3)
    sp = make_split(strat, seed=seed, fractions=tuple(split))
    cov = covariate_frame(manifest, None if covariates is None else list(covariates))

    def gt(batch: dict) -> torch.Tensor:
        return batch["lesion_mask"].bool()

    task = TaskData("lesion", manifest["subject_id"].astype(str).tolist(), labels, sp, kind, n_classes,
                    present, ("lesion_mask",), gt, covariates=list(cov.columns),
                    info={"target": target, "n_with_lesion": int(present.sum()),
                          "lesion_ml_mean": float(load[present].mean()) if present.any() else 0.0})
    task.confound = confound_check(cov, labels, sp, kind)
    return task


@TASKS.register("positive_control", control="positive", ground_truth=describe.inserted_truth)
def positive_control(manifest: pd.DataFrame, *, seed: int = 0,
                     region: Sequence[str | int] = ("Hippocampus_L", "Hippocampus_R"),
                     strength: float = 0.5, labels_tsv: str | None = None,
                     split: Sequence[float] = (0.6, 0.15, 0.25)) -> TaskData:
    """Half the subjects (seeded) get ``+strength`` (in normalized intensity units, i.e. SDs of the
    brain) added inside ``region``; the label says which. Ground truth: the region."""
    _need(manifest, "segmentation", "positive_control")
    ids = resolve_regions(region, label_table(manifest, labels_tsv))
    rng = np.random.default_rng(seed)
    n = len(manifest)
    labels = np.zeros(n, int)
    labels[rng.permutation(n)[: n // 2]] = 1
    sp = make_split(labels, seed=seed, fractions=tuple(split))
    sids = manifest["subject_id"].astype(str).tolist()
    lab_of = dict(zip(sids, labels))
    gt = _region_gt(ids, 0.0)

    def image(batch: dict) -> torch.Tensor:
        m = gt(batch).to(batch["image"].dtype)
        on = torch.tensor([lab_of[s] for s in batch["subject_id"]], dtype=m.dtype, device=m.device)
        return batch["image"] + strength * on.view(-1, 1, 1, 1, 1) * m

    return TaskData("positive_control", sids, labels, sp, "classification", 2, np.ones(n, bool),
                    ("segmentation",), gt, image_fn=image, region_ids=ids,
                    info={"strength": strength, "strength_unit": "SD of brain intensity (z-score units)",
                          "regions": [str(r) for r in region],
                          "note": "the only task that alters images"})


@TASKS.register("null_control", control="null", ground_truth=describe.region_truth)
def null_control(manifest: pd.DataFrame, *, seed: int = 0, base: str = "region_volume",
                 permutation_seed: int = 1, **params) -> TaskData:
    """The ``base`` task with its labels permuted (seeded) within each split: any model trained on
    it must be at chance, and localization on it is the chance floor. Same subjects, same split,
    same ground truth as the base task."""
    if base == "null_control":
        raise ConfigError("null_control cannot be its own base", expected="a task name", found=base)
    t = build_task(base, manifest, seed=seed, **params)
    rng = np.random.default_rng(permutation_seed)
    labels = np.asarray(t.labels).copy()
    for s in np.unique(t.split):
        idx = np.flatnonzero(t.split == s)
        labels[idx] = labels[idx[rng.permutation(len(idx))]]
    out = TaskData("null_control", list(t.subject_ids), labels, t.split.copy(), t.kind, t.n_classes,
                   t.scorable.copy(), t.required_keys, t.gt_fn, t.image_fn, t.region_ids,
                   list(t.covariates), {"note": "labels permuted"}, {**t.info, "base": base,
                                                                     "permutation_seed": permutation_seed},
                   dict(t.metric_params))
    return out
