"""The tasks of Siegel et al. 2025 built from regional measures (arXiv 2508.02560; code:
brain-tools/brain-xai-benchmark) that ``region_volume`` and ``lesion`` do not cover.

* ``artificial_disease`` — ``2-model_training/training_file_generation/artificial_diseases/
  table_and_split_for_art_dis.ipynb``: two corrected regional measures (cIDPs,
  :mod:`neuroxai.tasks.cidp`); each subject is *high* on a measure when it is in its top 40 %,
  *low* in its bottom 40 %, and dropped in the 20 % between; the label is 1 for "high on the first
  and low on the second", 0 for the other three combinations. Ground truth: both regions and their
  other-hemisphere counterparts.
* ``brain_age`` — ``4-xai_validation/brain_age_ranking/compute_aging_marker_overlap.py``: a
  regression on age, judged by the rank-biased overlap of each map's atlas-region ranking with a
  known ordering of aging markers (the study: Walhovd et al. 2011's volume changes). On the
  embedded cohort the ordering is the simulated one (``cohort.json``'s ``age_effects``), known
  exactly; on real data a table the user gives (``effects_csv``).

White-matter lesion load is the ``lesion`` task with ``target: load`` (ground truth: each
subject's lesion mask, undilated).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..data.transforms import dilate_mm
from ..errors import ConfigError, TaskError
from .base import TASKS, TaskData, confound_check, covariate_frame, make_split, quantile_bins
from .cidp import parse_correction
from .known_signal import GROUND_TRUTHS, _need, _region_gt, corrected_volume, measure_volumes
from . import describe
from .regions import label_table, lateral_pairs, resolve_regions


def markers(x: np.ndarray, train: np.ndarray, share: float = 0.4) -> np.ndarray:
    """1 for the top ``share`` of ``x`` (by the training split's quantiles), 0 for the bottom
    ``share``, −1 (dropped) between: the study's marker of one cIDP (top 40 %, bottom 40 %)."""
    lo, hi = np.quantile(x[train], [share, 1 - share])
    return np.where(x >= hi, 1, np.where(x <= lo, 0, -1))


@TASKS.register("artificial_disease", ground_truth=describe.two_measure_truth)
def artificial_disease(manifest: pd.DataFrame, *, seed: int = 0,
                       high_regions: Sequence[str | int] = ("Hippocampus_L",),
                       low_regions: Sequence[str | int] = ("Putamen_L",),
                       correction: dict | None = None, share: float = 0.4,
                       covariates: Sequence[str] | None = None, margin_mm: float = 0.0,
                       ground_truth: str = "region", labels_tsv: str | None = None,
                       split: Sequence[float] = (0.6, 0.15, 0.25)) -> TaskData:
    """Label 1 = high on the first corrected measure and low on the second (Siegel et al. 2025).

    Args:
        high_regions, low_regions: the two measures' regions (label names or numbers; each
            measure is the volume of their union).
        correction: ``{pca_components: k}`` for both measures (:mod:`neuroxai.tasks.cidp`; the study
            used its cIDPs, e.g. 426 and 26 components); default 0: covariates only.
        share: the top and bottom share of each measure (the study: 0.4; the middle is dropped).
        covariates: regressed out of both measures (default: ``tiv``, ``age``, ``sex`` present).
        ground_truth: ``"region"`` (both measures' regions and their other-hemisphere
            counterparts, + ``margin_mm``) or ``"signal_support"`` (the manifest's signal mask; the
            embedded cohort writes one covering ``regions`` and ``second_regions``).
    """
    if not 0 < share <= 0.5:
        raise ConfigError("artificial_disease share", path="tasks[].params.share",
                          expected="0 < share ≤ 0.5 (the study: 0.4)", found=share)
    if ground_truth not in GROUND_TRUTHS:
        raise ConfigError("unknown artificial_disease ground_truth", expected=list(GROUND_TRUTHS),
                          found=ground_truth)
    _need(manifest, "segmentation", "artificial_disease")
    if ground_truth == "signal_support":
        _need(manifest, "signal_mask", "artificial_disease")
    k = parse_correction(correction)
    table = label_table(manifest, labels_tsv)
    ids_h, ids_l = resolve_regions(high_regions, table), resolve_regions(low_regions, table)
    if set(ids_h) & set(ids_l):
        raise ConfigError("the two measures share regions", expected="disjoint high_regions and low_regions",
                          found=sorted(set(ids_h) & set(ids_l)))
    segs = manifest["segmentation"].tolist()
    vol_h, vol_l = measure_volumes(segs, ids_h), measure_volumes(segs, ids_l)
    for name, v in (("high_regions", vol_h), ("low_regions", vol_l)):
        if (v == 0).any():
            raise TaskError(f"the {name} are empty in some segmentations", path=manifest.attrs.get("source"),
                            found=manifest["subject_id"][v == 0].tolist()[:10],
                            fix="check the label numbers (dseg.tsv)")
    cov = covariate_frame(manifest, None if covariates is None else list(covariates))
    sp = make_split(quantile_bins(vol_h, 3), seed=seed, fractions=tuple(split))
    train = sp == "train"
    c = cov.to_numpy(float)
    m_h, info_h = corrected_volume(manifest, vol_h, ids_h, table, train, k, c)
    m_l, info_l = corrected_volume(manifest, vol_l, ids_l, table, train, k, c)
    mk_h, mk_l = markers(m_h, train, share), markers(m_l, train, share)
    keep = (mk_h >= 0) & (mk_l >= 0)
    labels = ((mk_h == 1) & (mk_l == 0)).astype(int)[keep]
    if len(np.unique(labels[sp[keep] == "train"])) < 2:
        raise TaskError("artificial_disease: one class only in the training split", found=int(keep.sum()),
                        expected="subjects high on the first and low on the second measure",
                        fix="use more subjects")
    pairs = lateral_pairs(table)
    gt_ids = sorted({*ids_h, *ids_l, *(pairs[i] for i in [*ids_h, *ids_l] if i in pairs)})
    sids = manifest["subject_id"].astype(str).to_numpy()
    info = {"high_regions": [str(r) for r in high_regions], "low_regions": [str(r) for r in low_regions],
            "rule": f"1 = top {share:.0%} of the first and bottom {share:.0%} of the second corrected measure; "
                    f"subjects in the middle {1 - 2 * share:.0%} of either dropped (Siegel et al. 2025)",
            "share": share, "correction": {"high": info_h, "low": info_l},
            "n_dropped_middle": int((~keep).sum()), "ground_truth": ground_truth,
            "ground_truth_labels": gt_ids, "margin_mm": margin_mm}
    task = TaskData("artificial_disease", sids[keep].tolist(), labels, sp[keep], "classification", 2,
                    np.ones(int(keep.sum()), bool),
                    ("segmentation", "signal_mask") if ground_truth == "signal_support" else ("segmentation",),
                    _region_gt(gt_ids, margin_mm, ground_truth), region_ids=gt_ids,
                    covariates=list(cov.columns), info=info)
    task.confound = confound_check(cov[keep].reset_index(drop=True), labels, sp[keep], "classification")
    return task


def cohort_age_effects(manifest: pd.DataFrame) -> dict[str, float] | None:
    """The embedded cohort's simulated aging (``cohort.json`` beside the manifest), or None."""
    src = manifest.attrs.get("source")
    if not src:
        return None
    meta = Path(src).parent / "cohort.json"
    if not meta.is_file():
        return None
    eff = json.loads(meta.read_text()).get("params", {}).get("age_effects")
    return {str(k): float(v) for k, v in eff.items()} if eff else None


def read_effects(path: str | Path) -> dict[str, float]:
    """A user's ordering of aging markers: a CSV with columns ``region`` (label names of the
    segmentation) and ``effect`` (signed volume change; regions are ranked by its size)."""
    try:
        t = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise TaskError("cannot read the aging-effects table", path=path, expected="a CSV file",
                        found=type(exc).__name__, fix="give a CSV with columns region, effect") from None
    if not {"region", "effect"} <= set(t.columns):
        raise TaskError("the aging-effects table needs columns 'region' and 'effect'", path=path,
                        expected=["region", "effect"], found=list(t.columns),
                        fix="one row per region: its name in the segmentation's label table and its volume change")
    eff = pd.to_numeric(t["effect"], errors="coerce")
    if eff.isna().any() or t["region"].duplicated().any():
        raise TaskError("the aging-effects table needs one numeric effect per region", path=path,
                        expected="numbers, no repeated region", found=t[eff.isna() | t["region"].duplicated()]
                        .to_dict("records")[:5])
    return dict(zip(t["region"].astype(str), eff.astype(float)))


def true_ordering(effects: dict[str, float], table: dict[str, int]) -> list[int]:
    """Label values ordered by the size of their effect, largest first (ties: by label)."""
    ids = resolve_regions(list(effects), table)
    mag = {i: abs(float(e)) for i, e in zip(ids, effects.values())}
    return sorted(mag, key=lambda i: (-mag[i], i))


@TASKS.register("brain_age", ground_truth=describe.aging_truth)
def brain_age(manifest: pd.DataFrame, *, seed: int = 0, effects: dict | None = None,
              effects_csv: str | None = None, margin_mm: float = 0.0, labels_tsv: str | None = None,
              split: Sequence[float] = (0.6, 0.15, 0.25)) -> TaskData:
    """Label = age (z-scored on the training split; regression); judged by the rank-biased overlap
    of the regions a map ranks highest with the true ordering of aging markers (Siegel et al.
    2025, against Walhovd et al. 2011).

    Args:
        effects: ``{region name: volume change}``; ranked by size. Default: the embedded cohort's
            simulated ``age_effects`` (``cohort.json`` beside the manifest), else ``effects_csv``.
        effects_csv: a CSV (columns ``region``, ``effect``) with the ordering for real data.

    Ground truth (for the localization metrics): the union of the aging regions (+ ``margin_mm``).
    The metric ``rank_biased_overlap`` gets the ordering as its ``reference``.
    """
    if effects is not None and effects_csv is not None:
        raise ConfigError("brain_age takes effects or effects_csv, not both", path="tasks[].params",
                          found=["effects", "effects_csv"])
    source = "params.effects"
    if effects is None and effects_csv is not None:
        effects, source = read_effects(effects_csv), str(effects_csv)
    if effects is None:
        effects, source = cohort_age_effects(manifest), "the embedded cohort's age_effects (cohort.json)"
    if not effects:
        raise TaskError("brain_age needs a known ordering of aging effects", path=manifest.attrs.get("source"),
                        expected="params.effects, params.effects_csv, or an embedded cohort with age_effects",
                        found="none", fix="give effects_csv: a CSV with columns region, effect")
    _need(manifest, "segmentation", "brain_age")
    if "age" not in manifest.columns:
        raise TaskError("brain_age needs an age column", path=manifest.attrs.get("source"),
                        expected="a numeric 'age' column", found=list(manifest.columns))
    age = pd.to_numeric(manifest["age"], errors="coerce").to_numpy(float)
    if np.isnan(age).any():
        raise TaskError("brain_age needs an age for every subject", path=manifest.attrs.get("source"),
                        found=f"{int(np.isnan(age).sum())} rows without one", fix="fill or drop those rows")
    table = label_table(manifest, labels_tsv)
    order = true_ordering(effects, table)
    sp = make_split(quantile_bins(age, 3), seed=seed, fractions=tuple(split))
    train = sp == "train"
    mu, sd = age[train].mean(), age[train].std() + 1e-12
    labels = ((age - mu) / sd).astype(np.float32)
    ids = sorted(order)

    def gt(batch: dict) -> torch.Tensor:
        seg = batch["segmentation"]
        m = torch.isin(seg.round().long(), torch.as_tensor(ids, device=seg.device))
        return dilate_mm(m, margin_mm, batch["spacing"]) if margin_mm > 0 else m

    inv = {v: n for n, v in table.items()}
    info = {"label": "age, z-scored (train mean/sd)", "age_mean": float(mu), "age_sd": float(sd),
            "true_ordering": [inv.get(i, str(i)) for i in order], "effects": {str(k): float(v) for k, v in effects.items()},
            "effects_source": source, "margin_mm": margin_mm}
    n = len(manifest)
    task = TaskData("brain_age", manifest["subject_id"].astype(str).tolist(), labels, sp, "regression", 1,
                    np.ones(n, bool), ("segmentation",), gt, region_ids=ids, info=info,
                    metric_params={"rank_biased_overlap": {"reference": order}})
    return task
