"""Saved maps as the input source of a run: a prior study's NIfTI maps and ground-truth masks,
one subject at a time on the scoring grid, scored like the attribute stage's chunks
(:func:`neuroxai.scoring.chunk.score_chunk`) — what ``neuroxai audit`` judges.

**Grids.** Scores are computed on the *mask's* grid by default (``grid="mask"``): the ground truth
is never altered and each map is resampled onto it by trilinear interpolation (zero outside the
map's field of view). With ``grid="map"`` the masks are resampled onto the map's grid by nearest
neighbour instead. Maps and masks share a world space, or ``transform`` maps points from the
mask's world space to the map's (:func:`neuroxai.data.spaces.read_transform`).

The random map (floor) and the oracle (the mask itself, ceiling) are computed on the audited
masks. Maps that cannot be scored as intended are flagged (:func:`map_flags`), never dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..attribution.baselines import needs, role
from ..data.bids import raise_problems
from ..data.spaces import check_overlap
from ..data.transforms import resample_to_grid
from ..data.volume import Grid, load_volume
from ..errors import ConfigError, ScoringError
from ..report.scores import ScoreTable, ScoreWriter
from ..scoring.profile import ProfileMeans
from ..report.figure_inputs import SubjectFigures, TaskFigures

log = logging.getLogger(__name__)

#: Flags of saved maps that cannot be scored as intended (``results.audit.flags``, the report):
#: a field of view covering less than this share of the brain mask (or, without one, of the
#: ground truth) — a wrong affine, e.g. the identity, or a crop;
FOV_MIN_COVERAGE = 0.5
#: less than this share of |relevance| inside the brain mask, and less than a uniform map would put
#: there (the brain's share of the map's voxels) — the map sits elsewhere than the brain;
IN_BRAIN_MIN_SHARE = 0.5
#: the positive part holding less than this share of |relevance| — a negative-only map (its sign
#: flipped?) scores below chance under ``polarity: positive``.
POSITIVE_MIN_SHARE = 0.01


@dataclass
class AuditInputs:
    """The files of an audit, by subject: ``maps[method][subject]``, ``masks[subject]``, and the
    optional brain masks (per subject, or one for all), anatomical images and atlases."""

    maps: dict[str, dict[str, Path]]
    masks: dict[str, Path]
    layout: str
    mask_kind: str
    brain: dict[str, Path] = field(default_factory=dict)
    brain_single: Path | None = None
    anat: dict[str, Path] = field(default_factory=dict)
    atlas: dict[str, Path] = field(default_factory=dict)
    true_region: list[int] | None = None


@dataclass(frozen=True)
class SavedMapsTask:
    """The task of an audit, as the verdict reads a task: the subjects whose saved maps were scored
    against their masks. No labels and no split: every subject is a scored test subject."""

    subject_ids: list[str]
    info: dict
    name: str = "audit"
    kind: str = "saved maps"
    confound: dict = field(default_factory=dict)
    region_ids: list[int] = field(default_factory=list)

    @property
    def scorable(self) -> list[bool]:
        return [True] * len(self.subject_ids)

    @property
    def split(self) -> list[str]:
        return ["test"] * len(self.subject_ids)

    def summary(self) -> dict:
        return dict(self.info)


@dataclass(frozen=True)
class NoModel:
    """An audit has no model: no test-split performance (the verdict reads ``metrics``)."""

    metrics: dict = field(default_factory=dict)


@dataclass
class SavedMapScores:
    """What scoring the saved maps gives: the long score table (streamed to a file: a
    :class:`~neuroxai.report.scores.ScoreTable`), the scored subjects, per-method cohort distance
    profiles ``{method: (relevance (1,K), volume (1,K))}``, the flags, every file read, the figure
    inputs, and per subject the atlas region(s) taken as the true region."""

    scores: ScoreTable
    subject_ids: list[str]
    profiles: dict
    flags: list[dict]
    files: list[Path]
    figures: TaskFigures
    n_subjects: int
    n_resampled: int
    n_on_common_grid: int
    true_regions: dict[str, list[int]]


@dataclass
class _Subject:
    """One subject on the scoring grid ``grid``: the mask, brain mask and atlas as bool/int tensors
    ``(D,H,W)`` on the CPU, and each method's map resampled onto the grid."""

    grid: Grid
    mask: torch.Tensor
    brain: torch.Tensor | None
    atlas: torch.Tensor | None
    true_region: list[int] | None
    maps: dict[str, torch.Tensor]
    n_resampled: int


def _on_grid(vol, affine_to_target_world: np.ndarray, grid, mode: str) -> torch.Tensor:
    return resample_to_grid(vol.data[0], affine_to_target_world @ vol.affine, grid, mode=mode)


def _majority_label(atlas: torch.Tensor, mask: torch.Tensor, path) -> list[int]:
    """The atlas label holding most of the subject's ground-truth voxels (the region a study would
    name), when no ``true_region`` is given."""
    lab = atlas[mask]
    lab = lab[lab > 0]
    if not lab.numel():
        raise ScoringError("the ground truth lies outside every atlas region", path=path,
                           expected="atlas labels > 0 inside the mask", found="only background",
                           fix="check that the atlas is in the masks' space, or give --true-region")
    return [int(torch.bincount(lab).argmax())]


def _check_brain_on_grid(brain, mask, bpath, bvol, g) -> None:
    """A brain mask in another space than the masks lands (almost) outside the scoring grid: named
    with its file and both grids, not as an empty brain in the scoring."""
    n_in = int((brain & mask).sum())
    if not bool(brain.any()) or n_in == 0:
        raise ScoringError("the brain mask does not cover the ground truth on the scoring grid: is it in another "
                           "space?", path=bpath, expected="a brain mask in the masks' space, covering the mask",
                           found=f"brain mask {tuple(bvol.shape)} voxels, affine origin "
                                 f"{tuple(round(float(v), 1) for v in bvol.affine[:3, 3])}; scoring grid {tuple(g.shape)}, "
                                 f"origin {tuple(round(float(v), 1) for v in g.affine[:3, 3])}; "
                                 f"{int(brain.sum())} brain voxels, {n_in} of them in the mask",
                           fix="give the brain mask in the masks' space (the same grid or a correct affine)")


def coverage_flags(mask_flags: list[dict], inp: AuditInputs, subjects: list[str]) -> list[dict]:
    """Flags naming the subjects whose ground-truth mask has no map: of any method (not scored at
    all) or of one method (not scored for it). Appended to ``mask_flags``, which is returned."""
    scored = set(subjects)
    for sid in sorted(set(inp.masks) - scored):
        mask_flags.append({"subject_id": sid, "method": "all methods", "file": str(inp.masks[sid]),
                           "flag": "mask without maps: no method has a map of this subject; it is not scored"})
    for m in sorted(inp.maps):
        for sid in subjects:
            if sid not in inp.maps[m]:
                mask_flags.append({"subject_id": sid, "method": m, "file": str(inp.masks[sid]),
                                   "flag": f"mask without a {m} map: this subject is not scored for {m}"})
    return mask_flags


def map_flags(vol, *, to_mask_world: np.ndarray, mask_grid, reference: torch.Tensor, reference_name: str,
              brain_on_map: torch.Tensor | None) -> list[str]:
    """What is wrong with one saved map ``vol`` (as saved, before resampling), as sentences:

    * its field of view covers < :data:`FOV_MIN_COVERAGE` of ``reference`` (the brain mask, or the
      ground truth, on the mask grid ``mask_grid``; ``to_mask_world`` maps the map's world to the
      masks');
    * < :data:`IN_BRAIN_MIN_SHARE` of its |relevance| lies inside the brain (``brain_on_map``: the
      brain mask on the map's own grid, bool), and less than a uniform map would put there;
    * its positive part holds < :data:`POSITIVE_MIN_SHARE` of |relevance| (negative everywhere).

    A constant or all-zero map is flagged by the caller and gets none of these."""
    out = []
    a = vol.data[0].float()
    fov = resample_to_grid(torch.ones(a.shape), to_mask_world @ vol.affine, mask_grid, mode="nearest") > 0.5
    ref = reference.bool().cpu()
    cov = float((fov & ref).sum()) / max(1, int(ref.sum()))
    if cov < FOV_MIN_COVERAGE:
        out.append(f"field of view covers {100 * cov:.0f} % of the {reference_name} (wrong affine, e.g. the "
                   "identity, or a cropped map?): the rest scores as zero")
    mag = a.abs()
    total = float(mag.sum())
    if brain_on_map is not None and total > 0:
        inside = float(mag[brain_on_map].sum()) / total
        uniform = float(brain_on_map.float().mean())
        if inside < IN_BRAIN_MIN_SHARE and inside < uniform:
            out.append(f"{100 * inside:.0f} % of its |relevance| lies inside the brain mask, less than a uniform "
                       f"map would put there ({100 * uniform:.0f} %): check the map's affine; if it is right, "
                       "the method points outside the brain")
    pos = float(a.clamp_min(0).sum())
    if total > 0 and pos < POSITIVE_MIN_SHARE * total:
        what = "negative everywhere" if pos == 0 else f"almost only negative (positive part {100 * pos / total:.2g} %)"
        out.append(f"{what}: under polarity 'positive' it scores below chance (a flipped sign, or an explained "
                   "output below zero; scoring.polarity: absolute scores |attribution|)")
    return out


def _saved_map_flags(vol, mvol, bvol, brain, mask, Tinv, T, grid: str, same: bool) -> list[str]:
    """:func:`map_flags` of one saved map: the reference (brain mask, else ground truth) on the mask
    grid, and the brain mask on the map's grid."""
    mask_grid = Grid(mvol.shape, mvol.affine)
    if bvol is not None:
        ref = _on_grid(bvol, np.eye(4), mask_grid, "nearest") > 0.5 if grid == "map" else brain
        brain_on_map = brain if same and grid == "mask" else _on_grid(bvol, T, Grid(vol.shape, vol.affine),
                                                                       "nearest") > 0.5
        name = "brain mask"
    else:
        ref = mvol.data[0] > 0 if grid == "map" else mask
        brain_on_map, name = None, "ground-truth mask"
    return map_flags(vol, to_mask_world=Tinv, mask_grid=mask_grid, reference=ref, reference_name=name,
                     brain_on_map=brain_on_map)


class _Reader:
    """Reads one subject's files onto its scoring grid, recording every file read and every flag."""

    def __init__(self, inp: AuditInputs, *, grid: str, transform: np.ndarray | None, mask_threshold: float,
                 labels: list[int] | None):
        if grid not in ("mask", "map"):
            raise ConfigError("unknown target grid", expected="'mask' or 'map'", found=grid,
                              fix="--grid mask (default: masks never resampled) or --grid map")
        self.inp, self.grid, self.threshold, self.labels = inp, grid, mask_threshold, labels
        self.T = np.eye(4) if transform is None else np.asarray(transform, float)  # mask world -> map world
        self.Tinv = np.linalg.inv(self.T)
        self.files: list[Path] = []
        self.flags: list[dict] = []

    def _to_grid(self) -> np.ndarray:
        """World of a file in the masks' space → world of the scoring grid."""
        return np.eye(4) if self.grid == "mask" else self.T

    def subject(self, sid: str) -> _Subject:
        inp = self.inp
        mvol = load_volume(inp.masks[sid])
        self.files.append(inp.masks[sid])
        paths = {m: inp.maps[m][sid] for m in sorted(inp.maps) if sid in inp.maps[m]}
        first_path = next(iter(paths.values()))
        first = load_volume(first_path)
        check_overlap(first, mvol, self.Tinv, map_path=first_path, mask_path=inp.masks[sid])
        g = Grid(mvol.shape, mvol.affine) if self.grid == "mask" else Grid(first.shape, first.affine)
        raw = mvol.data[0] if self.grid == "mask" else _on_grid(mvol, self.T, g, "nearest")
        mask = (torch.isin(raw.round().long(), torch.tensor(self.labels)) if self.labels else raw > self.threshold)
        if not bool(mask.any()):
            raise ScoringError("the mask is empty on the target grid", path=inp.masks[sid],
                               expected=f"voxels > {self.threshold}" if not self.labels else f"labels {self.labels}",
                               found="none", fix="check --mask-threshold / --label, or drop this subject")
        brain, bvol = self._brain(sid, g, mask)
        atlas = true = None  # region ranking needs an atlas (--atlas) in the masks' space
        if inp.atlas:
            atlas = _on_grid(load_volume(inp.atlas[sid]), self._to_grid(), g, "nearest").round().long()
            self.files.append(inp.atlas[sid])
            true = inp.true_region or _majority_label(atlas, mask, inp.atlas[sid])
        maps, n_resampled = {}, 0
        for method, path in paths.items():
            vol = first if path == first_path else load_volume(path)
            maps[method], resampled = self._map(sid, method, path, vol, mvol, bvol, brain, mask, g)
            n_resampled += resampled
        return _Subject(g, mask, brain, atlas, true, maps, n_resampled)

    def _brain(self, sid: str, g: Grid, mask: torch.Tensor):
        bpath = self.inp.brain.get(sid) or self.inp.brain_single
        if bpath is None:
            return None, None
        bvol = load_volume(bpath)
        brain = _on_grid(bvol, self._to_grid(), g, "nearest") > 0.5  # masks' space
        _check_brain_on_grid(brain, mask, bpath, bvol, g)
        self.files.append(bpath)
        return brain, bvol

    def _map(self, sid, method, path, vol, mvol, bvol, brain, mask, g) -> tuple[torch.Tensor, int]:
        """One saved map on the scoring grid (float), and 1 if it was resampled; its flags recorded."""
        self.files.append(path)
        to_target = self.Tinv if self.grid == "mask" else np.eye(4)
        same = self.grid == "map" or (vol.shape == tuple(g.shape) and np.allclose(to_target @ vol.affine, g.affine,
                                                                                 atol=1e-4))
        hi, lo = float(vol.data.max()), float(vol.data.min())  # the file as saved, before resampling
        if hi == lo:
            self.flags.append({"subject_id": sid, "method": method, "flag": "all-zero map" if hi == 0
                               else f"constant map ({hi:.3g})", "file": str(path)})
        else:  # field of view, relevance outside the brain, sign
            self.flags += [{"subject_id": sid, "method": method, "flag": f, "file": str(path)} for f in
                           _saved_map_flags(vol, mvol, bvol, brain, mask, self.Tinv, self.T, self.grid, same)]
        a = vol.data[0] if same else _on_grid(vol, to_target, g, "bilinear")
        return a.float(), 0 if same else 1

    def anat(self, sid: str, g: Grid) -> torch.Tensor | None:
        """The subject's anatomical image on the scoring grid (figures only), if one was given."""
        path = self.inp.anat.get(sid)
        return _on_grid(load_volume(path), self._to_grid(), g, "bilinear") if path else None


#: The baselines an audit draws without a model or an image: the chance map and the ceiling.
AUDIT_ROLES = ("chance", "ceiling")


def _baseline_maps(proto, subj: _Subject, index: int, dev: torch.device) -> dict[str, torch.Tensor]:
    """The protocol's model-free maps of one subject, by their registered role: the chance map (a
    seeded one gets one reproducible draw per subject: its seed mixed with the subject's index) and
    the ceiling (one that needs the mask gets the subject's)."""
    from ..attribution import METHODS

    x = torch.zeros((1, 1, *subj.grid.shape), device=dev)
    out = {}
    for b in (m for m in proto.methods if role(m.name) in AUDIT_ROLES):
        params = dict(b.params)
        if "mask" in needs(b.name):
            params["mask"] = subj.mask[None, None].to(dev)
        if "seed" in (METHODS.params(b.name) or ()):
            params["seed"] = int(params.get("seed", 0)) * 1_000_003 + index
        out[b.key] = METHODS[b.name](None, x, None, **params)[0, 0].float()
    return out


class _FigureMeans:
    """Cohort means for the figures while every subject shares one grid (the image, or without one
    the ground-truth frequency; each method's map at unit mass), and the first subject as example."""

    def __init__(self):
        self.grid: Grid | None = None
        self.n = 0
        self.maps: dict[str, np.ndarray] = {}
        self.mask = self.image = None
        self.example: SubjectFigures | None = None

    def add(self, sid: str, subj: _Subject, maps: dict, unit: dict, image: torch.Tensor | None) -> None:
        g = subj.grid
        if self.grid is None:
            self.grid = g
            self.example = SubjectFigures(subject_id=sid,
                                          image=(image if image is not None else subj.mask.float()).numpy(),
                                          mask=subj.mask.float().numpy(),
                                          maps={k: v.cpu().numpy() for k, v in maps.items()})
        if g.shape != self.grid.shape or not np.allclose(g.affine, self.grid.affine, atol=1e-3):
            return
        self.n += 1
        for k, v in unit.items():
            self.maps[k] = v if k not in self.maps else self.maps[k] + v
        mm = subj.mask.float().numpy()
        self.mask = mm if self.mask is None else self.mask + mm
        if image is not None:
            self.image = image.numpy() if self.image is None else self.image + image.numpy()

    def inputs(self) -> TaskFigures:
        n = self.n
        return TaskFigures(image=(self.image / n) if self.image is not None else (self.mask / n), mask=self.mask / n,
                           spacing=tuple(self.grid.spacing), maps={k: v / n for k, v in self.maps.items()},
                           example=self.example,
                           background="anatomical image" if self.image is not None else "ground-truth frequency")


def _subjects(inp: AuditInputs) -> list[str]:
    """The subjects with a map; a map without a mask is an error, a subject without some
    method's map a warning (each method is scored on its own subjects)."""
    subjects = sorted({s for v in inp.maps.values() for s in v})
    missing = [f"{inp.maps[m][s]}: no mask for subject {s!r}" for m in sorted(inp.maps) for s in sorted(inp.maps[m])
               if s not in inp.masks]
    raise_problems(missing, None, "map(s) without a mask", "provide one mask per subject (matched by sub-<id> or "
                   "the name's prefix before '_')")
    incomplete = [f"subject {s!r} has no {m} map" for m in sorted(inp.maps) for s in subjects if s not in inp.maps[m]]
    if incomplete:
        log.warning("%d subject/method pairs have no map (%s); each method is scored on its own subjects, "
                    "paired tests on the shared ones", len(incomplete), "; ".join(incomplete[:3]))
    return subjects


def score_saved_maps(inp: AuditInputs, proto, *, grid: str = "mask", transform: np.ndarray | None = None,
                     mask_threshold: float = 0.5, labels: list[int] | None = None,
                     lateral_pairs: dict[int, int] | None = None, device: str = "cpu",
                     progress=None, table: Path, task_id: str = "audit") -> SavedMapScores:
    """Score every subject's maps (and the protocol's random and oracle baselines) one subject at a
    time, on ``device``, with the protocol's metrics and scoring, the rows streamed to the score
    table ``table`` (task ``task_id``) every :data:`ROWS_BATCH` subjects: never held whole.
    ``lateral_pairs``: left/right atlas label pairs (``scoring.contralateral``, merged region
    rankings)."""
    from ..scoring.chunk import score_chunk
    from ..scoring.localization import metric_params

    dev = torch.device(device)
    sc = proto.scoring
    specs = {m.name: m.params for m in proto.metrics}
    subjects = _subjects(inp)
    reader = _Reader(inp, grid=grid, transform=transform, mask_threshold=mask_threshold, labels=labels)
    reader.flags = coverage_flags([], inp, subjects)  # masks without maps, named
    rows, profiles, true_regions, figs, n_resampled = [], ProfileMeans(), {}, _FigureMeans(), 0
    with ScoreWriter(table) as writer:
        for i, sid in enumerate(subjects):
            subj = reader.subject(sid)
            n_resampled += subj.n_resampled
            atlas = None if subj.atlas is None else subj.atlas[None, None].to(dev)
            if atlas is not None:
                true_regions[sid] = subj.true_region
            metrics = metric_params(specs, sc, atlas=atlas, true_region=subj.true_region, lateral_pairs=lateral_pairs)
            mask = subj.mask[None, None].to(dev)
            brain = None if subj.brain is None else subj.brain[None, None].to(dev)
            maps = {**subj.maps, **_baseline_maps(proto, subj, i, dev)}
            unit = {}
            for method, a in maps.items():
                out = score_chunk(a[None, None].to(dev), mask, {k: dict(v) for k, v in metrics.items()}, sc,
                                  brain=brain, spacing=subj.grid.spacing, atlas=atlas, true_region=subj.true_region,
                                  lateral_pairs=lateral_pairs)
                rows += [(task_id, sid, method, k, float(v[0])) for k, v in out.scores.items()]
                profiles.add(method, out.profile_relevance.cpu().numpy(), out.profile_volume.cpu().numpy())
                unit[method] = out.mean_map_sum.cpu().numpy()
            figs.add(sid, subj, maps, unit, reader.anat(sid, subj.grid))
            if (i + 1) % ROWS_BATCH == 0 or i + 1 == len(subjects):
                writer.write(pd.DataFrame(rows, columns=["task", "subject_id", "method", "metric", "value"]))
                rows = []
            if progress is not None:
                progress(i + 1, len(subjects))
    return SavedMapScores(
        scores=ScoreTable(table), subject_ids=list(subjects), profiles=profiles.means(), flags=reader.flags,
        files=reader.files, figures=figs.inputs(), n_subjects=len(subjects), n_resampled=n_resampled,
        n_on_common_grid=figs.n, true_regions=true_regions)


#: subjects whose score rows are written to the table together (row groups of ~256 × 9 rows)
ROWS_BATCH = 256

