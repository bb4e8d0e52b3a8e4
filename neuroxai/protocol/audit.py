"""Re-evaluate a prior study: score its saved NIfTI maps against ground-truth masks, no model needed,
and give the same verdicts, ``results.json`` (``kind: audit``) and HTML report as ``validate``.

An audit is one more input source of the pipeline: the files are found by the BIDS reader
(:mod:`neuroxai.data.bids`: layouts of maps and masks), read onto the scoring grid and scored
chunk by chunk like the attribute stage's maps (:mod:`neuroxai.protocol.saved_maps`), and judged by
the tail every run shares (:func:`neuroxai.protocol.conclude.conclude`). The protocol gives the
metrics, scoring, statistics, criteria and ``data.mask_threshold``.

Model-dependent checks (ground-truth validity, model randomization, the null model) are
"not applicable: no model" in the report.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from ..data.bids import ANAT_SUFFIX, BRAIN_MASK_DESC, discover_maps, discover_masks, per_subject, read_labels
from ..data.spaces import read_transform
from ..errors import ConfigError, ManifestError, ScoringError
from ..report.figure_inputs import FigureInputs
from ..report.scores import SCORES_FILE, ScoreTable
from .saved_maps import AuditInputs, NoModel, SavedMapsTask, score_saved_maps

log = logging.getLogger(__name__)

NOT_APPLICABLE = "not applicable: no model"


def grid_orders(scores: dict[str, pd.DataFrame | ScoreTable], methods: list[str], metric: str) -> dict:
    """The methods ordered by their mean ``metric`` on each grid (``scores``: ``{grid: score table}``),
    best first: ``{"metric", "order": {grid: [method]}, "means": {grid: {method: mean}}, "same_order"}``.
    Two methods that swap places between the grids are not separable on these data (a user saw
    Saliency and LRP swap between 2 mm masks and 4 mm maps)."""
    means, order = {}, {}
    for g, df in scores.items():
        if isinstance(df, ScoreTable):
            df = df.frame(method=methods, metric=metric)
        sel = df[(df["metric"] == metric) & df["method"].isin(methods)]
        m = sel.groupby("method", observed=True)["value"].mean()
        means[g] = {k: float(v) for k, v in m.items()}
        order[g] = sorted(means[g], key=lambda k: -means[g][k])
    return {"metric": metric, "order": order, "means": means,
            "same_order": len({tuple(v) for v in order.values()}) == 1}


def _digest_table(files: list[Path]) -> pd.DataFrame:
    from ..data.manifest import file_digest

    seen, rows = set(), []
    for f in files:
        if f in seen:
            continue
        seen.add(f)
        rows.append({"file": str(f), "bytes": f.stat().st_size, "blake2b": file_digest(str(f))})
    return pd.DataFrame(rows)


def _true_region_ids(true_region, names: dict[int, str], atlas_labels) -> list[int] | None:
    """The given true region(s) as label values (a name from the labels table, or a number)."""
    if not true_region:
        return None
    by_name = {v: k for k, v in names.items()}
    try:
        return sorted({int(t) if str(t).isdigit() else by_name[str(t)] for t in true_region})
    except KeyError as exc:
        raise ConfigError(f"unknown region {exc.args[0]!r}", path=atlas_labels, expected=sorted(by_name)[:30],
                          found=exc.args[0], fix="give a label index or a name from --labels") from None


def _lateral_pairs(proto, atlas, names: dict[int, str]) -> dict[int, int] | None:
    """Left/right label pairs of the atlas, from the names of its labels table (as the validate path
    reads them from the segmentation's): ``scoring.contralateral`` and merged region rankings."""
    from ..tasks.regions import lateral_pairs

    pairs = lateral_pairs({name: i for i, name in names.items()}) or None
    if proto.scoring.contralateral and pairs is None:
        log.warning("scoring.contralateral needs an atlas (--atlas) whose labels table (--labels) names left "
                    "and right regions: the ground truth is scored as given")
    return pairs if atlas else None


def _inputs(maps_dir, masks_dir, *, mask_desc, labels, brain_mask, brain_mask_desc, anat, anat_suffix, atlas,
            atlas_labels, true_region) -> tuple[AuditInputs, dict[int, str]]:
    """Every file of the audit, by subject (:mod:`neuroxai.data.bids`), and the atlas' label names."""
    layout, maps = discover_maps(maps_dir)
    mask_kind, masks = discover_masks(masks_dir, mask_desc=mask_desc, labels=labels)
    # by BIDS entity: desc-brain masks and _T1w images unless told otherwise (a cohort folder holds more)
    brain, brain_single = per_subject(brain_mask, "brain mask", desc=brain_mask_desc or BRAIN_MASK_DESC,
                                      explicit=brain_mask_desc is not None)
    anat_map, anat_single = per_subject(anat, "anatomical image", suffix=anat_suffix or ANAT_SUFFIX,
                                        explicit=anat_suffix is not None)
    if anat_single is not None:
        anat_map = {s: anat_single for s in masks}
    atlas_map, atlas_single = per_subject(atlas, "atlas")
    if atlas_single is not None:
        atlas_map = {s: atlas_single for s in masks}
    names = read_labels(atlas_labels)
    true_ids = _true_region_ids(true_region, names, atlas_labels)
    if atlas_map and set(masks) - set(atlas_map):
        raise ManifestError("subjects without an atlas", path=atlas, found=sorted(set(masks) - set(atlas_map))[:10],
                            fix="one atlas for all (a file) or one per subject (a folder)")
    return AuditInputs(maps, masks, layout, mask_kind, brain, brain_single, anat_map, atlas_map, true_ids), names


def _audit_protocol(proto, inp: AuditInputs, maps_dir):
    """The protocol as the audit runs it: the audited maps are the methods, the protocol's chance
    and ceiling baselines are added (the first registered of each role if it lists none), and the
    scoring layer's region read-out with an atlas."""
    from ..attribution import METHODS
    from ..scoring.region import REGION_METRIC
    from ..attribution.baselines import role
    from .saved_maps import AUDIT_ROLES
    from .schema import MethodSpec, MetricSpec

    if inp.atlas and not any(m.name == REGION_METRIC for m in proto.metrics):
        proto = proto.model_copy(update={"metrics": [*proto.metrics, MetricSpec(name=REGION_METRIC)]})
    base = [m for m in proto.methods if role(m.name) in AUDIT_ROLES]
    for r in AUDIT_ROLES:
        if not any(role(m.name) == r for m in base):
            name = next(n for n in METHODS if role(n) == r)
            base.append(MethodSpec(name=name, params={"seed": 0} if "seed" in (METHODS.params(name) or ()) else {}))
    clash = sorted(set(inp.maps) & {m.key for m in base})
    if clash:
        raise ManifestError(f"a method folder is named like a baseline: {clash}", path=maps_dir,
                            fix="rename that method's folder or desc label")
    methods = [MethodSpec.model_construct(name=m, label=None, params={}) for m in sorted(inp.maps)] + base
    return proto.model_copy(update={"methods": methods})


def _grid_check(inp, proto, res, *, grid: str, out: Path, **score_kw) -> dict | None:
    """With maps on another grid than the masks: does the method order depend on which grid scores
    them? Scored once more on the other grid (:func:`grid_orders`; the verdicts use ``grid``)."""
    from ..report.schema import main_metric

    if not res.n_resampled:
        return None
    other = "map" if grid == "mask" else "mask"
    metric = main_metric([c.metric for c in proto.acceptance], [m.name for m in proto.metrics])
    scratch = out / f".scores-{other}-grid.parquet"  # the check's own table, removed after it
    try:
        res_other = score_saved_maps(inp, proto, grid=other, table=scratch, **score_kw)
        return grid_orders({grid: res.scores, other: res_other.scores}, sorted(inp.maps), metric)
    except ScoringError as exc:  # e.g. a mask empty on a coarse map grid: the check only, not the audit
        return {"metric": metric, "order": {}, "means": {}, "same_order": None,
                "note": f"not comparable on the {other} grid: {exc.args[0]}"}
    finally:
        scratch.unlink(missing_ok=True)


def _audit_info(inp, res, inputs: pd.DataFrame, inputs_hash: str, *, atlas, atlas_labels, names):
    from ..report.schema import AtlasInfo, AuditInfo

    info = AuditInfo(maps_layout=inp.layout, mask_kind=inp.mask_kind, flags=res.flags, inputs_hash=inputs_hash,
                     n_input_files=int(len(inputs)),
                     not_applicable={"ground-truth validity": NOT_APPLICABLE,
                                     "model randomization": NOT_APPLICABLE, "null model": NOT_APPLICABLE},
                     figures_background=res.figures.background, n_on_common_grid=res.n_on_common_grid)
    if inp.atlas:
        counts: dict = {}
        for t in res.true_regions.values():
            key = " + ".join(names.get(i, str(i)) for i in t)
            counts[key] = counts.get(key, 0) + 1
        info.atlas = AtlasInfo(path=str(atlas), labels=str(atlas_labels) if atlas_labels else None,
                               true_region="given" if inp.true_region else "the atlas label holding most of "
                               "each subject's ground truth", true_regions=counts)
    return info


def _data_info(proto, res, inputs_hash, *, grid, threshold, labels, transform, orders, maps_dir, masks_dir,
               brain_mask) -> dict:
    grid_info = {"target": f"each subject's {'mask' if grid == 'mask' else 'map'} grid",
                 "maps_interpolation": "trilinear" if grid == "mask" else "none",
                 "masks_interpolation": "none" if grid == "mask" else "nearest neighbour",
                 "mask_threshold": None if labels else threshold, "labels": labels,
                 "transform": str(transform) if transform is not None else None,
                 "n_maps_resampled": res.n_resampled, "orders": orders}
    return {"source": "audit", "n_subjects": len(res.subject_ids), "manifest_hash": inputs_hash,
            "grid": grid_info, "maps": str(maps_dir), "masks": str(masks_dir),
            "brain_mask": str(brain_mask) if brain_mask else None,
            "restricted_to_brain": bool(brain_mask) and proto.scoring.restrict_to_brain}


def run_audit(maps_dir, masks_dir, out_dir, *, protocol="audit", brain_mask=None, anat=None,
              transform=None, grid: str = "mask", mask_threshold: float | None = None, mask_desc: str | None = None,
              labels: list[int] | None = None, atlas=None, atlas_labels=None, true_region=None,
              task_id: str = "audit", device: str = "cpu", report: bool = True, progress=None,
              brain_mask_desc: str | None = None, anat_suffix: str | None = None, check_grid: bool = True):
    """The whole audit: discover, score, apply the protocol's criteria, write ``OUT/results.json``,
    ``OUT/inputs.csv`` and the report in ``OUT/report/``. Mask voxels above ``mask_threshold`` are
    the ground truth (default: the protocol's ``data.mask_threshold``). In folders of several kinds
    of files per subject the brain masks are the ``desc-<brain_mask_desc>`` files (default
    ``desc-brain``) and the anatomical images the ``_<anat_suffix>`` files (default ``_T1w``). With
    ``check_grid`` and maps on another grid than the masks, the maps are also scored on the other
    grid and the method order on both grids is reported (:func:`grid_orders`; the verdicts use
    ``grid``). Returns a :class:`~neuroxai.protocol.context.RunResult`."""
    from ..atomic import atomic_write
    from ..outdir import claim_dir
    from ..safepath import refuse_out_inside_inputs
    from .conclude import conclude
    from .provenance import now, provenance
    from .rundir import stable_hash
    from .schema import Protocol, load_protocol
    from .verdict import cohort_profile

    refuse_out_inside_inputs(out_dir, {"--maps": maps_dir, "--masks": masks_dir})  # before anything is created
    out = claim_dir(out_dir, "audit")
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    threshold = proto.data.mask_threshold if mask_threshold is None else float(mask_threshold)
    inp, names = _inputs(maps_dir, masks_dir, mask_desc=mask_desc, labels=labels, brain_mask=brain_mask,
                         brain_mask_desc=brain_mask_desc, anat=anat, anat_suffix=anat_suffix, atlas=atlas,
                         atlas_labels=atlas_labels, true_region=true_region)
    proto = _audit_protocol(proto, inp, maps_dir)
    score_kw = dict(transform=read_transform(transform) if transform is not None else None, mask_threshold=threshold,
                    labels=labels, lateral_pairs=_lateral_pairs(proto, inp.atlas, names), device=device)
    res = score_saved_maps(inp, proto, grid=grid, progress=progress, table=out / SCORES_FILE, task_id=task_id,
                           **score_kw)
    orders = _grid_check(inp, proto, res, grid=grid, out=out, **score_kw) if check_grid else None
    inputs = _digest_table(res.files)
    inputs_hash = stable_hash(inputs[["bytes", "blake2b"]].to_dict(orient="list"))
    atomic_write(out / "inputs.csv", inputs.to_csv(index=False))
    sids = sorted(res.subject_ids)
    task = SavedMapsTask(subject_ids=sids, info={"audit": True, "maps_layout": inp.layout, "mask_kind": inp.mask_kind,
                                                 "n_methods": len(inp.maps), "methods": sorted(inp.maps)})
    prov = provenance(torch.device(device), protocol_hash=proto.content_hash(), manifest_hash=inputs_hash,
                      seeds={"statistics": proto.statistics.seed})
    prov["finished"] = now()
    return conclude(out, proto, prov, {task_id: task}, {task_id: NoModel()}, res.scores,
                    figures=lambda: FigureInputs({task_id: res.figures}), report=report, kind="audit",
                    data_info=_data_info(proto, res, inputs_hash, grid=grid, threshold=threshold, labels=labels,
                                         transform=transform, orders=orders, maps_dir=maps_dir, masks_dir=masks_dir,
                                         brain_mask=brain_mask),
                    audit=_audit_info(inp, res, inputs, inputs_hash, atlas=atlas, atlas_labels=atlas_labels,
                                      names=names),
                    profiles={task_id: cohort_profile(proto.scoring.profile_distances_mm, res.profiles)})
