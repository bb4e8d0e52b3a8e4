"""BIDS naming and discovery: the one reader of BIDS-like trees, for manifests and audits.

Naming (BIDS 1.9, "Entities"): a subject is ``sub-<label>`` with an optional ``ses-<label>``
(``sub-01_ses-2`` as one subject id); a derivative file carries ``desc-<label>`` and ends in its
suffix (``_T1w``, ``_mask``, ``_dseg``, ``_saliency``). Labels are letters and digits only.

Readers:

* :func:`anat_images` and :func:`derivative_files`: the images and derivatives of each subject
  of a BIDS dataset (``data/manifest.py`` builds a manifest from them);
* :func:`discover_maps` and :func:`discover_masks`: saved attribution maps and ground-truth masks
  in any of the layouts a prior study may use (``neuroxai audit``);
* :func:`per_subject`: one file per subject from a folder, picked by BIDS entity (:func:`bids_pick`).

Files are matched by subject: ``sub-<id>[_ses-<id>]`` for BIDS names, else the part of the name
before the first ``_`` (:func:`subject_key`). A NIfTI that fits no layout, and two files of one
subject, are named errors: nothing is ignored silently. Sidecars (``.json``, ``.tsv``, ``.md``,
``.txt``) and hidden files are skipped.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import ManifestError
from ..safepath import safe_label, safe_name

NII = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_SKIP_SUFFIX = (".json", ".tsv", ".md", ".txt", ".csv", ".bvec", ".bval")
_BIDS_SUB = re.compile(r"^(sub-[A-Za-z0-9]+)(_ses-[A-Za-z0-9]+)?")
_DESC = re.compile(r"_desc-([A-Za-z0-9]+)_")
_SALIENCY = re.compile(r"_desc-([A-Za-z0-9]+)_saliency\.nii(\.gz)?$", re.IGNORECASE)
_MASK = re.compile(r"_desc-([A-Za-z0-9]+)_mask\.nii(\.gz)?$", re.IGNORECASE)
_DSEG = re.compile(r"_dseg\.nii(\.gz)?$", re.IGNORECASE)

#: BIDS entities that pick the brain mask and the anatomical image among a subject's files (a
#: ``neuroxai cohort`` folder holds ``desc-brain_mask``, ``desc-signal_mask``, ``label-lesion_mask``,
#: ``dseg`` and ``T1w`` files side by side)
BRAIN_MASK_DESC = "brain"
ANAT_SUFFIX = "T1w"


# ------------------------------------------------------------------------------------- naming
def bids_label(text: str) -> str:
    """A BIDS label (letters and digits only), as the ``desc-<label>`` patterns read it."""
    return safe_label(text)


def file_safe(subject_id: str) -> str:
    """A file-name-safe subject id (``../../x`` must not leave its folder)."""
    return safe_name(subject_id)


def saliency_name(subject_id: str, method: str) -> str:
    """``<subject>_desc-<method>_saliency.nii.gz``: the name a map must have for the BIDS layout."""
    return f"{file_safe(subject_id)}_desc-{bids_label(method)}_saliency.nii.gz"


def subject_id(sub: str, ses: str | None = None) -> str:
    """The subject id of a ``sub-<label>`` folder (and ``ses-<label>``): ``sub-01`` or ``sub-01_ses-2``."""
    return f"{sub}_{ses}" if ses else sub


def subject_key(path: Path) -> str:
    """``sub-01_ses-2`` for BIDS names, else the part of the name before the first ``_``."""
    m = _BIDS_SUB.match(path.name)
    if m:
        return m.group(1) + (m.group(2) or "")
    stem = NII.sub("", path.name)
    return stem.split("_")[0] if "_" in stem else stem


# ----------------------------------------------------------------------------- a BIDS dataset
def anat_images(root: Path, suffix: str = ANAT_SUFFIX) -> list[tuple[Path, str, str, Path]]:
    """``[(image, subject id, participant, subject folder)]`` of ``sub-*/[ses-*/]anat/*_<suffix>.nii*``
    under ``root``, sorted (sessionless subjects first); hidden files (a file being written, macOS
    ``._`` metadata) are not scans."""
    out = []
    for img in sorted(root.glob(f"sub-*/anat/*_{suffix}.nii*")) + sorted(root.glob(f"sub-*/ses-*/anat/*_{suffix}.nii*")):
        if img.name.startswith("."):
            continue
        rel = img.relative_to(root)
        sub = rel.parts[0]
        ses = rel.parts[1] if rel.parts[1].startswith("ses-") else None
        out.append((img, subject_id(sub, ses), sub, Path(sub, ses) if ses else Path(sub)))
    return out


def derivative_files(root: Path, sub_dir: Path) -> list[Path]:
    """The NIfTI files of one subject folder in any pipeline: ``derivatives/*/<sub_dir>/anat/*.nii*``."""
    return [p for p in root.glob(f"derivatives/*/{sub_dir}/anat/*.nii*") if not p.name.startswith(".")]


# -------------------------------------------------------------------------- folders of files
def _skipped(p: Path) -> bool:
    return p.name.startswith(".") or p.name.lower().endswith(_SKIP_SUFFIX) or p.name.upper().startswith(
        ("README", "CHANGES", "LICENSE"))


def list_files(folder: Path, depth: int = 8) -> list[Path]:
    """The files under ``folder`` (sorted), sidecars and hidden files left out; deeper than
    ``depth`` levels is a :class:`ManifestError` (a folder pointed at the wrong level)."""
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


def raise_problems(problems: list, path, what: str, fix: str) -> None:
    """One :class:`ManifestError` listing (up to 20 of) ``problems``, if there are any."""
    if problems:
        body = "\n  ".join(problems[:20]) + (f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ManifestError(f"{len(problems)} {what}:\n  {body}", path=path, fix=fix)


def _folder(root: Path, what: str, option: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{what} folder not found", path=root, expected=f"a folder of NIfTI {what}",
                            found="no such folder" if not root.exists() else "a file",
                            fix=f"point {option} at the folder holding the {what}")
    return root


# ----------------------------------------------------------------------- maps and masks
def discover_maps(maps_dir: str | Path) -> tuple[str, dict[str, dict[str, Path]]]:
    """``(layout, {method: {subject: path}})``; layout is ``bids``, ``per-method`` or ``flat``:

    * ``bids``: derivatives ``sub-*/[ses-*/]anat/*_desc-<method>_saliency.nii.gz``;
    * ``per-method``: one folder per method (``maps/gradcam/sub-01_map.nii.gz``);
    * ``flat``: one folder, one method named after it (or BIDS names with ``desc-<method>``)."""
    root = _folder(maps_dir, "maps", "--maps")
    files = list_files(root)
    problems: list[str] = []
    out: dict[str, dict[str, Path]] = {}
    top_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    bids = any(_SALIENCY.search(f.name) for f in files) and any(
        part.startswith("sub-") for f in files for part in f.relative_to(root).parts[:-1])
    layout = "bids" if bids else "per-method" if top_dirs else "flat"
    with_desc = layout == "flat" and any(_DESC.search(f.name) for f in files)
    for f in files:
        method, problem = _map_method(f, root, layout, with_desc)
        if problem:
            problems.append(problem)
        else:
            _put(out.setdefault(method, {}), subject_key(f), f, f"{method} map", problems)
    raise_problems(problems, root, "map file(s) fit no layout", "one folder per method, one flat folder, or BIDS "
                   "derivatives (sub-*/anat/*_desc-<method>_saliency.nii.gz); remove or move the files named")
    if not any(out.values()):
        raise ManifestError("no NIfTI maps found", path=root, expected="*.nii or *.nii.gz files",
                            found="none", fix="point --maps at the folder holding the maps")
    return layout, out


def _map_method(f: Path, root: Path, layout: str, with_desc: bool) -> tuple[str | None, str | None]:
    """``(method, None)`` for a map file of ``layout``, ``(None, why it fits no layout)`` otherwise."""
    if layout == "bids":
        m = _SALIENCY.search(f.name)
        if not m or not _BIDS_SUB.match(f.name):
            return None, (f"{f}: not a BIDS saliency map (expected sub-<id>[_ses-<id>]_..._desc-<method>"
                          f"_saliency.nii.gz)")
        return m.group(1), None
    if layout == "per-method":
        rel = f.relative_to(root).parts
        if len(rel) != 2 or not NII.search(f.name):
            where = "beside the per-method folders" if len(rel) == 1 else "nested below a method folder"
            return None, (f"{f}: {where}" + ("" if NII.search(f.name) else " (and not NIfTI)")
                          + "; each map goes into its method's folder")
        return rel[0], None
    if not NII.search(f.name):
        return None, f"{f}: not a NIfTI file (.nii or .nii.gz)"
    if with_desc and not _DESC.search(f.name):
        return None, f"{f}: no desc-<method> in its name while other maps here have one"
    return (_DESC.search(f.name).group(1) if with_desc else root.name), None


def discover_masks(masks_dir: str | Path, *, mask_desc: str | None = None,
                   labels: list[int] | None = None) -> tuple[str, dict[str, Path]]:
    """``(kind, {subject: path})``: kind ``mask`` (one file per subject, binary or probabilistic;
    BIDS ``*_desc-<label>_mask.nii.gz``, ``mask_desc`` picking one label when there are several)
    or ``dseg`` (a segmentation ``*_dseg.nii.gz``, used with ``labels``)."""
    root = _folder(masks_dir, "masks", "--masks")
    files = [f for f in list_files(root) if NII.search(f.name)]
    if labels:
        chosen = [f for f in files if _DSEG.search(f.name)]
        if not chosen:
            raise ManifestError("--label was given but no *_dseg.nii.gz segmentation was found", path=root,
                                expected="sub-*_dseg.nii.gz files", found=f"{len(files)} other NIfTI files",
                                fix="drop --label to use mask files, or point --masks at the segmentations")
        kind = "dseg"
    else:
        chosen, kind = _mask_files(root, files, mask_desc), "mask"
    out: dict[str, Path] = {}
    problems: list[str] = []
    for f in chosen:
        _put(out, subject_key(f), f, "mask", problems)
    raise_problems(problems, root, "ambiguous mask file(s)", "keep one mask per subject (or choose with --mask-desc)")
    if not out:
        raise ManifestError("no NIfTI masks found", path=root, expected="*.nii or *.nii.gz files", found="none",
                            fix="point --masks at the folder holding the masks")
    return kind, out


def _mask_files(root: Path, files: list[Path], mask_desc: str | None) -> list[Path]:
    descs = sorted({m.group(1) for f in files if (m := _MASK.search(f.name))})
    if mask_desc is not None:
        chosen = [f for f in files if (m := _MASK.search(f.name)) and m.group(1) == mask_desc]
        if not chosen:
            raise ManifestError(f"no mask with desc-{mask_desc}", path=root, expected=descs or "desc-<label>",
                                found=mask_desc, fix="choose one of the desc labels found")
        return chosen
    if len(descs) > 1:
        raise ManifestError("several kinds of masks are here", path=root, expected="one desc-<label>",
                            found=descs, fix="choose one with --mask-desc LABEL")
    chosen = [f for f in files if not _DSEG.search(f.name)]
    if not chosen and any(_DSEG.search(f.name) for f in files):
        raise ManifestError("only segmentations (*_dseg) found", path=root, expected="masks, or --label",
                            found=f"{len(files)} dseg files",
                            fix="pass --label N (repeatable) to make the mask from those label values")
    return chosen


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


def per_subject(path: Path | None, what: str, *, desc: str | None = None, suffix: str | None = None,
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
        files = [f for f in list_files(path) if NII.search(f.name)]
        if desc is not None or suffix is not None:
            files = bids_pick(files, what, desc=desc, suffix=suffix, explicit=explicit, root=path)
        for f in files:
            _put(out, subject_key(f), f, what, problems)
        opt = {"brain mask": "--brain-mask-desc", "anatomical image": "--anat-suffix"}.get(what)
        raise_problems(problems, path, f"ambiguous {what} file(s)",
                       f"keep one {what} per subject" + (f", or choose them with {opt}" if opt else ""))
        return out, None
    if not path.is_file():
        raise ManifestError(f"{what} not found", path=path, expected="a NIfTI file or a folder of them",
                            found="no such file", fix="check the path")
    return {}, path


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
