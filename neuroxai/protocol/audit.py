"""Re-evaluate a prior study: score its saved NIfTI attribution maps against masks, no model needed.

``maps_dir`` holds either NIfTI files (one method) or one sub-folder per method. Files are matched
to masks by subject id: the part of the file name before the first ``_`` (BIDS: ``sub-01_...``),
or the whole stem when there is no ``_``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import ManifestError
from .rundir import atomic_write_json

log = logging.getLogger(__name__)

NII = re.compile(r"\.nii(\.gz)?$")


def subject_key(path: Path) -> str:
    stem = NII.sub("", path.name)
    return stem.split("_")[0] if "_" in stem else stem


def _index(folder: Path, what: str) -> dict[str, Path]:
    files = sorted(p for p in Path(folder).iterdir() if NII.search(p.name))
    out: dict[str, Path] = {}
    dups = []
    for f in files:
        k = subject_key(f)
        if k in out:
            dups.append(f"{out[k].name} and {f.name} both map to subject {k!r}")
        out[k] = f
    if dups:
        raise ManifestError(f"ambiguous {what} files", path=folder, found="; ".join(dups),
                            fix="keep one file per subject, named SUBJECT_... .nii.gz")
    return out


def discover_maps(maps_dir: str | Path) -> dict[str, dict[str, Path]]:
    """``{method: {subject: path}}`` from a folder of maps or a folder of per-method folders."""
    maps_dir = Path(maps_dir)
    if not maps_dir.is_dir():
        raise ManifestError("maps folder not found", path=maps_dir, expected="a folder of NIfTI maps",
                            found="no such folder")
    subdirs = sorted(p for p in maps_dir.iterdir() if p.is_dir())
    if subdirs:
        out = {d.name: _index(d, "map") for d in subdirs}
        out = {k: v for k, v in out.items() if v}
    else:
        out = {maps_dir.name: _index(maps_dir, "map")}
    if not any(out.values()):
        raise ManifestError("no NIfTI maps found", path=maps_dir, expected="*.nii or *.nii.gz files",
                            found="none", fix="point --maps to the folder holding the maps")
    return out


def audit_maps(maps_dir: str | Path, masks_dir: str | Path, *, brain_mask: str | Path | None = None,
               metrics: list[str] | None = None, polarity: str = "positive",
               device: str = "cpu", n_boot: int = 2000, seed: int = 0,
               mask_threshold: float = 0.5) -> tuple[pd.DataFrame, dict]:
    """Score every map against its subject's mask. Returns (scores table, summary per method/metric).

    Mask voxels ``> mask_threshold`` are in the mask (a probabilistic mask is cut there; a
    non-binary mask is logged with the threshold used).

    The summary holds the mean, a percentile-bootstrap CI and the chance level per metric.
    """
    from ..data import check_same_grid, load_volume
    from ..data.manifest import check_mask
    from ..scoring import score
    from ..scoring.stats import bootstrap_ci

    metrics = metrics or ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc",
                          "average_precision", "pointing_game"]
    methods = discover_maps(maps_dir)
    masks = _index(Path(masks_dir), "mask")
    brain_single = None
    brain_masks: dict[str, Path] = {}
    if brain_mask is not None:
        bm = Path(brain_mask)
        if bm.is_dir():
            brain_masks = _index(bm, "brain mask")
        else:
            brain_single = load_volume(bm)
    dev = torch.device(device)
    rows = []
    problems = []
    for method, files in methods.items():
        for sid, mpath in files.items():
            if sid not in masks:
                problems.append(f"{mpath}: no mask for subject {sid!r} in {masks_dir}")
                continue
            amap = load_volume(mpath)
            mask = load_volume(masks[sid])
            check_same_grid(amap, mask, what="mask")
            m = mask.data > mask_threshold
            if not bool(((mask.data == 0) | (mask.data == 1)).all()):
                log.warning("%s is not binary (values in [%.3g, %.3g]); voxels > %g are the mask",
                            masks[sid], float(mask.data.min()), float(mask.data.max()), mask_threshold)
            check_mask(m, masks[sid])
            brain = None
            if brain_single is not None or sid in brain_masks:
                bv = brain_single if brain_single is not None else load_volume(brain_masks[sid])
                check_same_grid(amap, bv, what="brain mask")
                brain = (bv.data > mask_threshold)[None].to(dev)
            s = score(amap.data[None].to(dev), m[None].to(dev), metrics, brain_mask=brain,
                      spacing=amap.spacing, polarity=polarity)
            for k, v in s.items():
                rows.append((sid, method, k, float(v[0])))
    if problems:
        raise ManifestError("maps without masks:\n  " + "\n  ".join(problems), path=masks_dir,
                            fix="provide a mask per subject (same subject prefix as the map)")
    df = pd.DataFrame(rows, columns=["subject_id", "method", "metric", "value"])
    summary: dict = {}
    for (method, metric), g in df.groupby(["method", "metric"]):
        if metric.endswith("_chance") or metric.endswith("_norm"):
            continue
        vals = torch.tensor(g["value"].to_numpy(dtype=np.float64))
        est, lo, hi = (bootstrap_ci(vals, n_boot=n_boot, level=0.95, method="percentile", seed=seed)
                       if len(vals) > 1 else (vals.mean(), float("nan"), float("nan")))
        ch = df[(df.method == method) & (df.metric == f"{metric}_chance")]["value"]
        summary.setdefault(method, {})[metric] = {
            "mean": float(est), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(vals)),
            "chance": float(ch.mean()) if len(ch) else None}
    return df, summary


def write_audit(df: pd.DataFrame, summary: dict, out_dir: str | Path, *, mask_threshold: float = 0.5) -> Path:
    from ..outdir import claim_dir
    from ..report.build import scores_csv
    from .rundir import atomic_write_bytes

    out = claim_dir(out_dir, "audit")  # never over a user's own scores.csv
    atomic_write_bytes(out / "scores.csv", scores_csv({c: df[c].tolist() for c in df.columns}).encode())
    atomic_write_json(out / "audit.json", {"schema_version": "1.0", "kind": "audit",
                                           "mask_threshold": mask_threshold, "summary": summary})
    return out
