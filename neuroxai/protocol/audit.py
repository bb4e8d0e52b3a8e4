"""Re-evaluate a prior study: score its saved NIfTI maps against ground-truth masks, no model needed,
and give the same verdicts, ``results.json`` (``kind: audit``) and HTML report as ``validate``.

**Layouts** (:func:`discover_maps`, :func:`discover_masks`):

* maps: one folder per method (``maps/gradcam/sub-01_map.nii.gz``), one flat folder (one method,
  named after the folder; or BIDS names with ``desc-<method>``), or BIDS derivatives
  (``derivatives/<pipeline>/sub-*/[ses-*/]anat/*_desc-<method>_saliency.nii.gz``);
* masks: one file per subject (``sub-01_*.nii.gz``), BIDS masks ``*_desc-<label>_mask.nii.gz``
  (``mask_desc`` picks one label when there are several) or a segmentation ``*_dseg.nii.gz`` with
  ``labels`` (the voxels of those label values are the mask).

Files are matched by subject: ``sub-<id>[_ses-<id>]`` for BIDS names, else the part of the name
before the first ``_``. A NIfTI that fits no layout, a map without a mask, and two files of one
subject are named errors: nothing is ignored silently. Sidecars (``.json``, ``.tsv``, ``.md``,
``.txt``) and hidden files are skipped.

**Grids.** Scores are computed on the *mask's* grid by default (``grid="mask"``): the ground truth
is never altered and each map is resampled onto it by trilinear interpolation (zero outside the
map's field of view). With ``grid="map"`` the masks are resampled onto the map's grid by nearest
neighbour instead. Maps and masks must share a world space, or ``transform`` maps points from the
mask's world space to the map's (:func:`read_transform`). World extents that do not overlap are
refused with the distance between them.

The random map (floor) and the oracle (the mask itself, ceiling) are computed on the audited
masks; model-dependent checks (ground-truth validity, model randomization, the null model) are
"not applicable: no model" in the report.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from ..errors import ConfigError, ManifestError, ScoringError

log = logging.getLogger(__name__)

NII = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_SKIP_SUFFIX = (".json", ".tsv", ".md", ".txt", ".csv", ".bvec", ".bval")
_BIDS_SUB = re.compile(r"^(sub-[A-Za-z0-9]+)(_ses-[A-Za-z0-9]+)?")
_DESC = re.compile(r"_desc-([A-Za-z0-9]+)_")
_SALIENCY = re.compile(r"_desc-([A-Za-z0-9]+)_saliency\.nii(\.gz)?$", re.IGNORECASE)
_MASK = re.compile(r"_desc-([A-Za-z0-9]+)_mask\.nii(\.gz)?$", re.IGNORECASE)
_DSEG = re.compile(r"_dseg\.nii(\.gz)?$", re.IGNORECASE)
NOT_APPLICABLE = "not applicable: no model"


def bids_label(text: str) -> str:
    """A BIDS label (letters and digits only), as the ``desc-<label>`` patterns above read it."""
    from ..safepath import safe_label

    return safe_label(text)


def file_safe(subject_id: str) -> str:
    """A file-name-safe subject id (``../../x`` must not leave its folder)."""
    from ..safepath import safe_name

    return safe_name(subject_id)


def saliency_name(subject_id: str, method: str) -> str:
    """``<subject>_desc-<method>_saliency.nii.gz``: the name a map must have for the BIDS layout."""
    return f"{file_safe(subject_id)}_desc-{bids_label(method)}_saliency.nii.gz"


def subject_key(path: Path) -> str:
    """``sub-01_ses-2`` for BIDS names, else the part of the name before the first ``_``."""
    m = _BIDS_SUB.match(path.name)
    if m:
        return m.group(1) + (m.group(2) or "")
    stem = NII.sub("", path.name)
    return stem.split("_")[0] if "_" in stem else stem


def _skipped(p: Path) -> bool:
    return p.name.startswith(".") or p.name.lower().endswith(_SKIP_SUFFIX) or p.name.upper().startswith(
        ("README", "CHANGES", "LICENSE"))


def _files(folder: Path, depth: int = 8) -> list[Path]:
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not _skipped(p) and not any(part.startswith(".") for part in
                                                        p.relative_to(folder).parts[:-1]):
            if len(p.relative_to(folder).parts) > depth:
                raise ManifestError("the folder is nested too deep", path=p, expected=f"≤ {depth} levels",
                                    found=len(p.relative_to(folder).parts), fix="point at the study folder")
            out.append(p)
    return out


def _put(out: dict, key: str, f: Path, what: str, problems: list) -> None:
    if key in out:
        problems.append(f"{out[key]} and {f} are both the {what} of subject {key!r}")
    out[key] = f


def _raise(problems: list, path, what: str, fix: str) -> None:
    if problems:
        body = "\n  ".join(problems[:20]) + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ManifestError(f"{len(problems)} {what}:\n  {body}", path=path, fix=fix)


def discover_maps(maps_dir: str | Path) -> tuple[str, dict[str, dict[str, Path]]]:
    """``(layout, {method: {subject: path}})``; layout is ``bids``, ``per-method`` or ``flat``."""
    root = Path(maps_dir)
    if not root.is_dir():
        raise ManifestError("maps folder not found", path=root, expected="a folder of NIfTI maps",
                            found="no such folder" if not root.exists() else "a file",
                            fix="point --maps at the folder holding the maps")
    files = _files(root)
    problems: list[str] = []
    out: dict[str, dict[str, Path]] = {}
    top_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    bids = any(_SALIENCY.search(f.name) for f in files) and any(
        part.startswith("sub-") for f in files for part in f.relative_to(root).parts[:-1])
    if bids:
        layout = "bids"
        for f in files:
            m = _SALIENCY.search(f.name)
            if not m or not _BIDS_SUB.match(f.name):
                problems.append(f"{f}: not a BIDS saliency map (expected sub-<id>[_ses-<id>]_..._desc-<method>"
                                f"_saliency.nii.gz)")
                continue
            _put(out.setdefault(m.group(1), {}), subject_key(f), f, f"{m.group(1)} map", problems)
    elif top_dirs:
        layout = "per-method"
        for f in files:
            rel = f.relative_to(root).parts
            if len(rel) != 2 or not NII.search(f.name):
                where = "beside the per-method folders" if len(rel) == 1 else "nested below a method folder"
                problems.append(f"{f}: {where}" + ("" if NII.search(f.name) else " (and not NIfTI)")
                                + "; each map goes into its method's folder")
                continue
            _put(out.setdefault(rel[0], {}), subject_key(f), f, f"{rel[0]} map", problems)
    else:
        layout = "flat"
        with_desc = [f for f in files if _DESC.search(f.name)]
        for f in files:
            if not NII.search(f.name):
                problems.append(f"{f}: not a NIfTI file (.nii or .nii.gz)")
                continue
            if with_desc and not _DESC.search(f.name):
                problems.append(f"{f}: no desc-<method> in its name while other maps here have one")
                continue
            method = _DESC.search(f.name).group(1) if with_desc else root.name
            _put(out.setdefault(method, {}), subject_key(f), f, f"{method} map", problems)
    _raise(problems, root, "map file(s) fit no layout", "one folder per method, one flat folder, or BIDS "
           "derivatives (sub-*/anat/*_desc-<method>_saliency.nii.gz); remove or move the files named")
    if not any(out.values()):
        raise ManifestError("no NIfTI maps found", path=root, expected="*.nii or *.nii.gz files",
                            found="none", fix="point --maps at the folder holding the maps")
    return layout, out


def discover_masks(masks_dir: str | Path, *, mask_desc: str | None = None,
                   labels: list[int] | None = None) -> tuple[str, dict[str, Path]]:
    """``(kind, {subject: path})``: kind ``mask`` (binary or probabilistic) or ``dseg`` (label image,
    used with ``labels``)."""
    root = Path(masks_dir)
    if not root.is_dir():
        raise ManifestError("masks folder not found", path=root, expected="a folder of NIfTI masks",
                            found="no such folder" if not root.exists() else "a file",
                            fix="point --masks at the folder holding the masks")
    files = [f for f in _files(root) if NII.search(f.name)]
    problems: list[str] = []
    if labels:
        chosen = [f for f in files if _DSEG.search(f.name)]
        if not chosen:
            raise ManifestError("--label was given but no *_dseg.nii.gz segmentation was found", path=root,
                                expected="sub-*_dseg.nii.gz files", found=f"{len(files)} other NIfTI files",
                                fix="drop --label to use mask files, or point --masks at the segmentations")
        kind = "dseg"
    else:
        descs = sorted({m.group(1) for f in files if (m := _MASK.search(f.name))})
        if mask_desc is not None:
            chosen = [f for f in files if (m := _MASK.search(f.name)) and m.group(1) == mask_desc]
            if not chosen:
                raise ManifestError(f"no mask with desc-{mask_desc}", path=root, expected=descs or "desc-<label>",
                                    found=mask_desc, fix="choose one of the desc labels found")
        elif len(descs) > 1:
            raise ManifestError("several kinds of masks are here", path=root, expected="one desc-<label>",
                                found=descs, fix="choose one with --mask-desc LABEL")
        else:
            chosen = [f for f in files if not _DSEG.search(f.name)]
            if not chosen and any(_DSEG.search(f.name) for f in files):
                raise ManifestError("only segmentations (*_dseg) found", path=root, expected="masks, or --label",
                                    found=f"{len(files)} dseg files",
                                    fix="pass --label N (repeatable) to make the mask from those label values")
        kind = "mask"
    out: dict[str, Path] = {}
    for f in chosen:
        _put(out, subject_key(f), f, "mask", problems)
    _raise(problems, root, "ambiguous mask file(s)", "keep one mask per subject (or choose with --mask-desc)")
    if not out:
        raise ManifestError("no NIfTI masks found", path=root, expected="*.nii or *.nii.gz files", found="none",
                            fix="point --masks at the folder holding the masks")
    return kind, out


# ------------------------------------------------------------------------------- spaces and grids
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _itk_numbers(text: str, key: str, path: Path, default=None) -> np.ndarray:
    """The numbers of an ITK transform file's ``key:`` line; a missing line (unless ``default``) or
    a word that is not a number is a :class:`ConfigError` naming it."""
    m = re.search(rf"^{key}:(.*)$", text, re.M)
    if m is None:
        if default is not None:
            return default
        raise ConfigError(f"the ITK transform has no '{key}:' line", path=path, expected=f"a line '{key}: n1 n2 ...'",
                          found="none", fix="write it with antsRegistration / ITK, or give a 4×4 text matrix")
    try:
        return np.array(m.group(1).split(), float)
    except ValueError:
        bad = next(w for w in m.group(1).split() if not _is_float(w))
        raise ConfigError(f"the ITK transform's '{key}:' line holds a word that is not a number", path=path,
                          expected="numbers (e.g. 1 0 0 0 1 0 0 0 1 0 0 0)", found=repr(bad[:80]),
                          fix="rewrite the transform with antsRegistration / ITK") from None


def _is_float(w: str) -> bool:
    try:
        float(w)
        return True
    except ValueError:
        return False


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


def read_transform(path: str | Path) -> np.ndarray:
    """A 4×4 world→world matrix (RAS mm) mapping a point of the *mask's* space to the *map's* space.

    Accepted: a 4×4 text matrix (whitespace separated, RAS, the above direction), or an ITK/ANTs
    affine (``.mat`` written by antsRegistration, or an ITK ``.txt`` "Insight Transform File")
    — ITK transforms map points of the *fixed* image to the *moving* one in LPS, so the ANTs
    registration of a template (moving) to a subject (fixed) is the one to pass. Nonlinear warps
    are not supported: resample the maps with ``antsApplyTransforms`` first.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("transform file not found", path=p, expected="a .mat / ITK .txt / 4×4 text file",
                          found="no such file", fix="check the path")
    if p.suffix.lower() == ".mat":
        try:
            from scipy.io import loadmat

            m = loadmat(str(p))
        except Exception as exc:  # noqa: BLE001 - any parse failure is one named error
            raise ConfigError("cannot read the ITK/ANTs .mat transform", path=p, found=f"{type(exc).__name__}: {exc}",
                              fix="write it with antsRegistration, or give a 4×4 text matrix") from exc
        key = next((k for k in m if k.startswith("AffineTransform") or k.startswith("MatrixOffsetTransform")), None)
        if key is None or "fixed" not in m:
            raise ConfigError("the .mat file holds no 3-D affine transform", path=p,
                              expected="AffineTransform_double_3_3 and fixed", found=sorted(k for k in m if not k.startswith("__")),
                              fix="nonlinear warps are not supported: resample the maps with antsApplyTransforms first")
        params, center = np.asarray(m[key], float).ravel(), np.asarray(m["fixed"], float).ravel()
        return _itk_to_ras(params, center, p)
    text = p.read_text(errors="replace")
    if text.lstrip().startswith("#Insight Transform File"):
        kinds = re.findall(r"^Transform:\s*(\S+)", text, re.M)
        if len(kinds) != 1 or not re.match(r"(Affine|MatrixOffset|Euler3D|Rigid3D|Similarity3D)Transform", kinds[0]):
            raise ConfigError("only one linear ITK transform is supported", path=p, expected="AffineTransform_double_3_3",
                              found=kinds, fix="resample the maps with antsApplyTransforms first")
        params = _itk_numbers(text, "Parameters", p)
        center = _itk_numbers(text, "FixedParameters", p, default=np.zeros(3))
        if len(params) != 12:
            raise ConfigError("unsupported ITK transform parameters", path=p, expected="12 (3×3 matrix + translation)",
                              found=len(params), fix="convert it to an AffineTransform_double_3_3")
        return _itk_to_ras(params, center, p)
    try:
        a = np.array([[float(x) for x in line.split()] for line in text.splitlines() if line.strip()
                      and not line.lstrip().startswith("#")])
    except ValueError:
        a = np.zeros(0)
    if a.shape == (3, 4):
        a = np.vstack([a, [0, 0, 0, 1]])
    if a.shape != (4, 4) or not np.isfinite(a).all() or abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise ConfigError("not a 4×4 affine matrix", path=p, expected="4 rows of 4 numbers, invertible",
                          found=f"shape {a.shape}", fix="write the matrix as 4 lines of 4 numbers (RAS mm)")
    return a


def _itk_to_ras(params: np.ndarray, center: np.ndarray, path: Path) -> np.ndarray:
    if len(params) != 12 or len(center) != 3:
        raise ConfigError("unsupported ITK transform", path=path, expected="3×3 matrix + translation + center",
                          found=f"{len(params)} parameters, {len(center)} fixed", fix="use a 3-D affine transform")
    mat, trans = params[:9].reshape(3, 3), params[9:]
    lps = np.eye(4)
    lps[:3, :3] = mat
    lps[:3, 3] = trans + center - mat @ center
    return _LPS @ lps @ _LPS


def _bounds(shape, affine) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    w = (affine @ corners.T).T[:, :3]
    return w.min(0), w.max(0)


def check_overlap(map_vol, mask_vol, to_mask_world: np.ndarray, *, map_path, mask_path) -> None:
    """Refuse maps and masks whose world extents do not overlap, saying how far apart they are."""
    lo1, hi1 = _bounds(map_vol.shape, to_mask_world @ map_vol.affine)
    lo2, hi2 = _bounds(mask_vol.shape, mask_vol.affine)
    gap = np.maximum(0.0, np.maximum(lo1 - hi2, lo2 - hi1))
    if (gap > 0).any():
        raise ScoringError("the map and the mask do not overlap in world space", path=map_path,
                           expected=f"extents that overlap the mask {mask_path}",
                           found=f"{np.linalg.norm(gap):.1f} mm apart (per axis {np.round(gap, 1).tolist()} mm; "
                                 f"map x,y,z [{np.round(lo1, 1).tolist()} … {np.round(hi1, 1).tolist()}] mm, "
                                 f"mask [{np.round(lo2, 1).tolist()} … {np.round(hi2, 1).tolist()}] mm)",
                           fix="are they in the same space? give --transform (mask space → map space), "
                               "or check the affines (`neuroxai info FILE`)")


# ------------------------------------------------------------------------------- the audit
@dataclass
class AuditInputs:
    maps: dict[str, dict[str, Path]]
    masks: dict[str, Path]
    layout: str
    mask_kind: str
    brain: dict[str, Path] = field(default_factory=dict)
    brain_single: Path | None = None
    anat: dict[str, Path] = field(default_factory=dict)
    atlas: dict[str, Path] = field(default_factory=dict)
    true_region: list[int] | None = None


class _AuditTask(SimpleNamespace):
    """What the verdict assembly needs to know of a task, for saved maps."""

    def summary(self) -> dict:
        return dict(self.info)


#: BIDS entities that pick the brain mask and the anatomical image among a subject's files (a
#: ``neuroxai cohort`` folder holds ``desc-brain_mask``, ``desc-signal_mask``, ``label-lesion_mask``,
#: ``dseg`` and ``T1w`` files side by side)
BRAIN_MASK_DESC = "brain"
ANAT_SUFFIX = "T1w"


def bids_pick(files: list[Path], what: str, *, desc: str | None = None, suffix: str | None = None,
              explicit: bool = False, root: Path | None = None) -> list[Path]:
    """The files among ``files`` whose BIDS name carries ``_desc-<desc>_`` (masks) or ends in
    ``_<suffix>.nii[.gz]`` (images). When none does: all of them if the entity was a default
    (``explicit=False``: a folder of plain per-subject files), a named error if it was asked for."""
    if desc is not None:
        pat = re.compile(rf"_desc-{re.escape(desc)}_[A-Za-z0-9]+\.nii(\.gz)?$", re.IGNORECASE)
        entity = f"desc-{desc}"
    else:
        pat = re.compile(rf"_{re.escape(str(suffix))}\.nii(\.gz)?$", re.IGNORECASE)
        entity = f"_{suffix}"
    chosen = [f for f in files if pat.search(f.name)]
    if chosen or not explicit:
        return chosen or files
    found = sorted({m.group(0) for f in files for m in [re.search(r"(_desc-[A-Za-z0-9]+)?_[A-Za-z0-9]+\.nii", f.name)]
                    if m})
    raise ManifestError(f"no {what} file with {entity}", path=root, expected=f"*{entity}* NIfTI files",
                        found=found[:10] or f"{len(files)} NIfTI files", fix="choose one of the entities found")


def _per_subject(path: Path | None, what: str, *, desc: str | None = None, suffix: str | None = None,
                 explicit: bool = False) -> tuple[dict[str, Path], Path | None]:
    """``({subject: file}, None)`` for a folder, ``({}, file)`` for one file. In a folder holding
    several kinds of files per subject, ``desc`` / ``suffix`` pick them by BIDS entity
    (:func:`bids_pick`)."""
    if path is None:
        return {}, None
    path = Path(path)
    if path.is_dir():
        out: dict[str, Path] = {}
        problems: list[str] = []
        files = [f for f in _files(path) if NII.search(f.name)]
        if desc is not None or suffix is not None:
            files = bids_pick(files, what, desc=desc, suffix=suffix, explicit=explicit, root=path)
        for f in files:
            _put(out, subject_key(f), f, what, problems)
        opt = {"brain mask": "--brain-mask-desc", "anatomical image": "--anat-suffix"}.get(what)
        _raise(problems, path, f"ambiguous {what} file(s)",
               f"keep one {what} per subject" + (f", or choose them with {opt}" if opt else ""))
        return out, None
    if not path.is_file():
        raise ManifestError(f"{what} not found", path=path, expected="a NIfTI file or a folder of them",
                            found="no such file", fix="check the path")
    return {}, path


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


def read_labels(path: str | Path | None) -> dict[int, str]:
    """``index → name`` from a TSV (``index<TAB>name``, a header row allowed; BIDS dseg.tsv too)."""
    if path is None:
        return {}
    p = Path(path)
    try:
        rows = [line.split("\t") for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError("cannot read the labels table", path=p, found=f"{type(exc).__name__}: {exc}",
                            fix="a UTF-8 TSV of index<TAB>name lines") from exc
    out = {}
    for i, r in enumerate(rows):
        try:
            out[int(r[0])] = r[1].strip()
        except (ValueError, IndexError):
            if i:  # the first row may be a header
                raise ManifestError("bad row in the labels table", path=p, expected="index<TAB>name",
                                    found=f"line {i + 1}: {rows[i]}", fix="one label per line") from None
    return out


def _load(path: Path):
    from ..data import load_volume

    return load_volume(path)


def _on_grid(vol, affine_to_target_world: np.ndarray, grid, mode: str) -> torch.Tensor:
    from ..data.transforms import resample_to_grid

    return resample_to_grid(vol.data[0], affine_to_target_world @ vol.affine, grid, mode=mode)


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
    from ..data.transforms import resample_to_grid

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
    from ..data.volume import Grid

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


def audit_subjects(inp: AuditInputs, proto, *, grid: str = "mask", transform: np.ndarray | None = None,
                   mask_threshold: float = 0.5, labels: list[int] | None = None, device: str = "cpu",
                   progress=None) -> dict:
    """Score every subject's maps (and the random and oracle baselines) one subject at a time, on
    ``device``. Returns the scores table, distance profiles, flags and figure inputs."""
    from ..attribution import METHODS
    from ..data.volume import Grid
    from ..scoring import distance_profile, score
    from ..scoring.localization import metric_params

    if grid not in ("mask", "map"):
        raise ConfigError("unknown target grid", expected="'mask' or 'map'", found=grid,
                          fix="--grid mask (default: masks never resampled) or --grid map")
    dev = torch.device(device)
    T = np.eye(4) if transform is None else np.asarray(transform, float)  # mask world -> map world
    Tinv = np.linalg.inv(T)
    sc = proto.scoring
    specs = {m.name: m.params for m in proto.metrics}
    true_regions: dict[str, list[int]] = {}
    baselines = [m for m in proto.methods if m.name in ("random", "oracle")]
    subjects = sorted({s for v in inp.maps.values() for s in v})
    missing = [f"{inp.maps[m][s]}: no mask for subject {s!r}" for m in sorted(inp.maps) for s in sorted(inp.maps[m])
               if s not in inp.masks]
    _raise(missing, None, "map(s) without a mask", "provide one mask per subject (matched by sub-<id> or the "
           "name's prefix before '_')")
    incomplete = [f"subject {s!r} has no {m} map" for m in sorted(inp.maps) for s in subjects if s not in inp.maps[m]]
    if incomplete:
        log.warning("%d subject/method pairs have no map (%s); each method is scored on its own subjects, "
                    "paired tests on the shared ones", len(incomplete), "; ".join(incomplete[:3]))
    rows, profiles, files = [], {}, []
    flags: list[dict] = coverage_flags([], inp, subjects)  # masks without maps, named
    means: dict[str, np.ndarray] = {}
    mean_mask = mean_img = None
    common_grid = None
    n_mean = 0
    example: dict = {}
    resampled = 0
    for i, sid in enumerate(subjects):
        mvol = _load(inp.masks[sid])
        files.append(inp.masks[sid])
        maps = {m: inp.maps[m][sid] for m in sorted(inp.maps) if sid in inp.maps[m]}
        first = _load(next(iter(maps.values())))
        check_overlap(first, mvol, Tinv, map_path=next(iter(maps.values())), mask_path=inp.masks[sid])
        if grid == "mask":
            g = Grid(mvol.shape, mvol.affine)
            raw_mask = mvol.data[0]
        else:
            g = Grid(first.shape, first.affine)
            raw_mask = _on_grid(mvol, T, g, "nearest")
        mask = (torch.isin(raw_mask.round().long(), torch.tensor(labels)) if labels
                else raw_mask > mask_threshold)
        if not bool(mask.any()):
            raise ScoringError("the mask is empty on the target grid", path=inp.masks[sid],
                               expected=f"voxels > {mask_threshold}" if not labels else f"labels {labels}",
                               found="none", fix="check --mask-threshold / --label, or drop this subject")
        brain = bvol = None
        bpath = inp.brain.get(sid) or inp.brain_single
        if bpath is not None:
            bvol = _load(bpath)
            brain = _on_grid(bvol, np.eye(4) if grid == "mask" else T, g, "nearest") > 0.5  # masks' space
            _check_brain_on_grid(brain, mask, bpath, bvol, g)
            files.append(bpath)
        mask_b = mask[None, None].to(dev)
        brain_b = brain[None, None].to(dev) if brain is not None and sc.restrict_to_brain else None
        atl = true = None  # region ranking needs an atlas (--atlas) in the masks' space
        if inp.atlas:
            atl = _on_grid(_load(inp.atlas[sid]), np.eye(4) if grid == "mask" else T, g, "nearest").round().long()
            files.append(inp.atlas[sid])
            true = inp.true_region or _majority_label(atl, mask, inp.atlas[sid])
            true_regions[sid] = true
            atl = atl[None, None].to(dev)
        subj_metrics = metric_params(specs, sc, atlas=atl, true_region=true)
        spacing = g.spacing
        subj_maps: dict[str, torch.Tensor] = {}
        for method, path in maps.items():
            vol = first if path == next(iter(maps.values())) else _load(path)
            files.append(path)
            to_target = Tinv if grid == "mask" else np.eye(4)
            same = grid == "map" or (vol.shape == tuple(g.shape) and np.allclose(to_target @ vol.affine, g.affine,
                                                                                atol=1e-4))
            hi, lo = float(vol.data.max()), float(vol.data.min())  # the file as saved, before resampling
            if hi == lo:
                flags.append({"subject_id": sid, "method": method, "flag": "all-zero map" if hi == 0
                              else f"constant map ({hi:.3g})", "file": str(path)})
            else:  # field of view, relevance outside the brain, sign
                flags += [{"subject_id": sid, "method": method, "flag": f, "file": str(path)}
                          for f in _saved_map_flags(vol, mvol, bvol, brain, mask, Tinv, T, grid, same)]
            a = vol.data[0] if same else _on_grid(vol, to_target, g, "bilinear")
            resampled += 0 if same else 1
            a = a.float()
            subj_maps[method] = a
        x = torch.zeros((1, 1, *g.shape), device=dev)
        for b in baselines:
            params = {**b.params, "mask": mask_b} if b.name == "oracle" else dict(b.params)
            if b.name == "random":  # one reproducible draw per subject
                params["seed"] = int(params.get("seed", 0)) * 1_000_003 + i
            subj_maps[b.key] = METHODS[b.name](None, x, None, **params)[0, 0].float()
        for method, a in subj_maps.items():
            attr = a[None, None].to(dev)
            # no left/right pairs here (the audit reads label numbers only): contralateral is a no-op
            s = score(attr, mask_b, {k: dict(v) for k, v in subj_metrics.items()}, brain_mask=brain_b, spacing=spacing,
                      **sc.score_options(), atlas=atl, true_region=true)
            for k, v in s.items():
                rows.append((sid, method, k, float(v[0])))
            rel, vol_share = distance_profile(attr, mask_b, brain_b, spacing=spacing,
                                              distances_mm=sc.profile_distances_mm, polarity=sc.polarity)
            prof = profiles.setdefault(method, ([], []))
            prof[0].append(rel[0].cpu().numpy())
            prof[1].append(vol_share[0].cpu().numpy())
        # figures: cohort means while every subject shares one grid, and the first subject as example
        anat = inp.anat.get(sid)
        img = _on_grid(_load(anat), np.eye(4) if grid == "mask" else T, g, "bilinear") if anat else None
        if common_grid is None:
            common_grid = g
            example = {"subject_id": sid, "image": (img if img is not None else mask.float()).numpy(),
                       "mask": mask.float().numpy(), "maps": {k: v.cpu().numpy() for k, v in subj_maps.items()}}
        if common_grid is not None and g.shape == common_grid.shape and np.allclose(g.affine, common_grid.affine, atol=1e-3):
            n_mean += 1
            for k, v in subj_maps.items():
                pos = sc.evidence(v).clamp_min(0)
                if brain is not None:
                    pos = pos * brain
                pos = (pos / pos.sum().clamp_min(1e-12)).cpu().numpy()
                means[k] = pos if k not in means else means[k] + pos
            mm = mask.float().numpy()
            mean_mask = mm if mean_mask is None else mean_mask + mm
            if img is not None:
                mean_img = img.numpy() if mean_img is None else mean_img + img.numpy()
        if progress is not None:
            progress(i + 1, len(subjects))
    df = pd.DataFrame(rows, columns=["subject_id", "method", "metric", "value"])
    figures = {"image": (mean_img / n_mean) if mean_img is not None else (mean_mask / n_mean),
               "mask": mean_mask / n_mean, "spacing": tuple(common_grid.spacing),
               "maps": {k: v / n_mean for k, v in means.items()}, "example": example,
               "background": "anatomical image" if mean_img is not None else "ground-truth frequency"}
    return {"scores": df, "profiles": {k: (np.stack(r), np.stack(v)) for k, (r, v) in profiles.items()},
            "flags": flags, "files": files, "figures": figures, "n_subjects": len(subjects),
            "n_resampled": resampled, "n_on_common_grid": n_mean, "true_regions": true_regions}


def grid_orders(scores: dict[str, pd.DataFrame], methods: list[str], metric: str) -> dict:
    """The methods ordered by their mean ``metric`` on each grid (``scores``: ``{grid: score table}``),
    best first: ``{"metric", "order": {grid: [method]}, "means": {grid: {method: mean}}, "same_order"}``.
    Two methods that swap places between the grids are not separable on these data (a user saw
    Saliency and LRP swap between 2 mm masks and 4 mm maps)."""
    means, order = {}, {}
    for g, df in scores.items():
        sel = df[(df["metric"] == metric) & df["method"].isin(methods)]
        m = sel.groupby("method")["value"].mean()
        means[g] = {k: float(v) for k, v in m.items()}
        order[g] = sorted(means[g], key=lambda k: -means[g][k])
    return {"metric": metric, "order": order, "means": means,
            "same_order": len({tuple(v) for v in order.values()}) == 1}


def _digest_table(files: list[Path], root: Path | None = None) -> pd.DataFrame:
    from ..data.manifest import file_digest

    seen, rows = set(), []
    for f in files:
        if f in seen:
            continue
        seen.add(f)
        rows.append({"file": str(f), "bytes": f.stat().st_size, "blake2b": file_digest(str(f))})
    return pd.DataFrame(rows)


def run_audit(maps_dir, masks_dir, out_dir, *, protocol="audit", brain_mask=None, anat=None,
              transform=None, grid: str = "mask", mask_threshold: float = 0.5, mask_desc: str | None = None,
              labels: list[int] | None = None, atlas=None, atlas_labels=None, true_region=None,
              task_id: str = "audit", device: str = "cpu", report: bool = True, progress=None,
              brain_mask_desc: str | None = None, anat_suffix: str | None = None, check_grid: bool = True):
    """The whole audit: discover, score, apply the protocol's criteria, write ``OUT/results.json``,
    ``OUT/inputs.csv`` and the report in ``OUT/report/``. In folders of several kinds of files per
    subject the brain masks are the ``desc-<brain_mask_desc>`` files (default ``desc-brain``) and
    the anatomical images the ``_<anat_suffix>`` files (default ``_T1w``). With ``check_grid`` and maps
    on another grid than the masks, the maps are also scored on the other grid and the method order
    on both grids is reported (:func:`grid_orders`; the verdicts use ``grid``). Returns a :class:`~neuroxai.protocol.context.RunResult`."""
    from ..outdir import claim_dir
    from .provenance import now, provenance
    from .context import RunResult
    from ..atomic import atomic_write
    from .rundir import stable_hash
    from .schema import MethodSpec, Protocol, load_protocol
    from ..report.schema import AtlasInfo, AuditInfo, main_metric
    from .verdict import assemble_results, cohort_profile

    from ..safepath import refuse_out_inside_inputs

    refuse_out_inside_inputs(out_dir, {"--maps": maps_dir, "--masks": masks_dir})  # before anything is created
    out = claim_dir(out_dir, "audit")
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    layout, maps = discover_maps(maps_dir)
    mask_kind, masks = discover_masks(masks_dir, mask_desc=mask_desc, labels=labels)
    # by BIDS entity: desc-brain masks and _T1w images unless told otherwise (a cohort folder holds more)
    brain, brain_single = _per_subject(brain_mask, "brain mask", desc=brain_mask_desc or BRAIN_MASK_DESC,
                                       explicit=brain_mask_desc is not None)
    anat_map, anat_single = _per_subject(anat, "anatomical image", suffix=anat_suffix or ANAT_SUFFIX,
                                         explicit=anat_suffix is not None)
    if anat_single is not None:
        anat_map = {s: anat_single for s in masks}
    atlas_map, atlas_single = _per_subject(atlas, "atlas")
    if atlas_single is not None:
        atlas_map = {s: atlas_single for s in masks}
    names = read_labels(atlas_labels)
    true_ids = None
    if true_region:
        by_name = {v: k for k, v in names.items()}
        try:
            true_ids = sorted({int(t) if str(t).isdigit() else by_name[str(t)] for t in true_region})
        except KeyError as exc:
            raise ConfigError(f"unknown region {exc.args[0]!r}", path=atlas_labels, expected=sorted(by_name)[:30],
                              found=exc.args[0], fix="give a label index or a name from --labels") from None
    if atlas_map and set(masks) - set(atlas_map):
        raise ManifestError("subjects without an atlas", path=atlas, found=sorted(set(masks) - set(atlas_map))[:10],
                            fix="one atlas for all (a file) or one per subject (a folder)")
    inp = AuditInputs(maps, masks, layout, mask_kind, brain, brain_single, anat_map, atlas_map, true_ids)
    if atlas_map and not any(m.name == "region_rank" for m in proto.metrics):
        from .schema import MetricSpec

        proto = proto.model_copy(update={"metrics": [*proto.metrics, MetricSpec(name="region_rank")]})
    # The audited maps are the methods; the protocol's baselines (random, oracle) are added.
    base = [m for m in proto.methods if m.name in ("random", "oracle")]
    if not any(m.name == "random" for m in base):
        base.append(MethodSpec(name="random", params={"seed": 0}))
    if not any(m.name == "oracle" for m in base):
        base.append(MethodSpec(name="oracle"))
    clash = sorted(set(maps) & {m.key for m in base})
    if clash:
        raise ManifestError(f"a method folder is named like a baseline: {clash}", path=maps_dir,
                            fix="rename that method's folder or desc label")
    methods = [MethodSpec.model_construct(name=m, label=None, params={}) for m in sorted(maps)] + base
    proto = proto.model_copy(update={"methods": methods})
    T = read_transform(transform) if transform is not None else None
    res = audit_subjects(inp, proto, grid=grid, transform=T, mask_threshold=mask_threshold, labels=labels,
                         device=device, progress=progress)
    orders = None
    if check_grid and res["n_resampled"]:
        # maps and masks on different grids: does the method order depend on which grid scores them?
        other = "map" if grid == "mask" else "mask"
        metric = main_metric([c.metric for c in proto.acceptance], [m.name for m in proto.metrics])
        try:
            res_other = audit_subjects(inp, proto, grid=other, transform=T, mask_threshold=mask_threshold,
                                       labels=labels, device=device)
            orders = grid_orders({grid: res["scores"], other: res_other["scores"]}, sorted(maps), metric)
        except ScoringError as exc:  # e.g. a mask empty on a coarse map grid: the check only, not the audit
            orders = {"metric": metric, "order": {}, "means": {}, "same_order": None,
                      "note": f"not comparable on the {other} grid: {exc.args[0]}"}
    inputs = _digest_table(res["files"])
    inputs_hash = stable_hash(inputs[["bytes", "blake2b"]].to_dict(orient="list"))
    atomic_write(out / "inputs.csv", inputs.to_csv(index=False))
    sids = sorted(res["scores"]["subject_id"].unique())
    info = {"audit": True, "maps_layout": layout, "mask_kind": mask_kind, "n_methods": len(maps),
            "methods": sorted(maps)}
    task = _AuditTask(name="audit", kind="saved maps", subject_ids=sids, scorable=[True] * len(sids),
                      split=["test"] * len(sids), info=info, confound={}, region_ids=[])
    prov = provenance(torch.device(device), protocol_hash=proto.content_hash(), manifest_hash=inputs_hash,
                      seeds={"statistics": proto.statistics.seed})
    prov["finished"] = now()
    grid_info = {"target": f"each subject's {'mask' if grid == 'mask' else 'map'} grid",
                 "maps_interpolation": "trilinear" if grid == "mask" else "none",
                 "masks_interpolation": "none" if grid == "mask" else "nearest neighbour",
                 "mask_threshold": None if labels else mask_threshold, "labels": labels,
                 "transform": str(transform) if transform is not None else None,
                 "n_maps_resampled": res["n_resampled"], "orders": orders}
    data_info = {"source": "audit", "n_subjects": len(sids), "manifest_hash": inputs_hash, "grid": grid_info,
                 "maps": str(maps_dir), "masks": str(masks_dir), "brain_mask": str(brain_mask) if brain_mask else None,
                 "restricted_to_brain": bool(brain_mask) and proto.scoring.restrict_to_brain}
    audit_info = AuditInfo(maps_layout=layout, mask_kind=mask_kind, flags=res["flags"], inputs_hash=inputs_hash,
                           n_input_files=int(len(inputs)),
                           not_applicable={"ground-truth validity": NOT_APPLICABLE,
                                           "model randomization": NOT_APPLICABLE, "null model": NOT_APPLICABLE},
                           figures_background=res["figures"]["background"],
                           n_on_common_grid=res["n_on_common_grid"])
    if atlas_map:
        counts: dict = {}
        for t in res["true_regions"].values():
            key = " + ".join(names.get(i, str(i)) for i in t)
            counts[key] = counts.get(key, 0) + 1
        audit_info.atlas = AtlasInfo(path=str(atlas), labels=str(atlas_labels) if atlas_labels else None,
                                     true_region="given" if true_ids else "the atlas label holding most of "
                                     "each subject's ground truth", true_regions=counts)
    profiles = {task_id: cohort_profile(proto.scoring.profile_distances_mm, res["profiles"])}
    results = assemble_results(proto, prov, {task_id: task}, {task_id: SimpleNamespace(metrics={})},
                               {task_id: res["scores"]}, {}, data_info=data_info, profiles=profiles,
                               kind="audit", audit=audit_info)
    atomic_write(out / "results.json", results.to_json())
    report_dir = None
    if report:
        from ..report import build_report

        figs = res["figures"]
        report_dir = out / "report"
        build_report(results, {"tasks": {task_id: figs}}, report_dir)
    return RunResult(out, report_dir, results, results.overall.exit_code)
