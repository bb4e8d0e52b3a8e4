"""Manifests: the table of subjects (a CSV, or discovered from a BIDS-like tree).

Columns: ``subject_id``, ``image`` (required); ``segmentation``, ``lesion_mask``, ``brain_mask``, ``signal_mask``
(optional paths); any other column is a covariate (e.g. ``age``, ``sex``, ``tiv``). Relative
paths resolve against the CSV's folder. Every problem is collected and reported at once, so a
user fixes the whole file in one go.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import ManifestError, MaskError

PATH_COLUMNS = ("image", "segmentation", "lesion_mask", "brain_mask", "signal_mask")
REQUIRED = ("subject_id", "image")
_NII = (".nii", ".nii.gz")
_MAX_LISTED = 20


def _is_nii(p: str) -> bool:
    return p.lower().endswith(_NII)


def _raise_all(problems: list[str], path, fix: str) -> None:
    if not problems:
        return
    listed = problems[:_MAX_LISTED]
    more = len(problems) - len(listed)
    body = "\n  ".join(listed) + (f"\n  ... and {more} more" if more > 0 else "")
    raise ManifestError(f"{len(problems)} problem(s) in the manifest:\n  {body}", path=path, fix=fix)


def validate_manifest(df: pd.DataFrame, *, base: Path | None = None, source: str | Path | None = None,
                      check_files: bool = True) -> pd.DataFrame:
    """Check a manifest table and return it with absolute paths (all problems reported at once).

    Args:
        df: the table; path columns may be relative to ``base``.
        base: folder that relative paths resolve against (the CSV's folder).
        source: where the table came from (named in the error).
        check_files: check that every referenced file exists and is NIfTI.
    """
    problems: list[str] = []
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError("the manifest lacks required columns", path=source,
                            expected=f"columns {list(REQUIRED)} (+ optional {list(PATH_COLUMNS[1:])}, covariates)",
                            found=f"columns {list(df.columns)}",
                            fix=f"add the column(s) {missing} (header row of the CSV)")
    if len(df) == 0:
        raise ManifestError("the manifest has no subjects", path=source, expected="≥ 1 row", found="0 rows")
    df = df.copy()
    df["subject_id"] = df["subject_id"].astype(str).str.strip()
    empty_id = df.index[df["subject_id"].isin(["", "nan", "None"])].tolist()
    for i in empty_id:
        problems.append(f"row {i + 2}: empty subject_id")
    dup = df["subject_id"][df["subject_id"].duplicated(keep=False)]
    for sid in sorted(set(dup)):
        rows = [str(i + 2) for i in df.index[df["subject_id"] == sid]]
        problems.append(f"subject_id {sid!r} appears on rows {', '.join(rows)} (must be unique)")
    base = Path(base) if base is not None else Path.cwd()
    for col in PATH_COLUMNS:
        if col not in df.columns:
            continue
        vals = []
        for i, v in zip(df.index, df[col]):
            if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "":
                if col == "image":
                    problems.append(f"row {i + 2} ({df.at[i, 'subject_id']}): empty image path")
                vals.append(None)
                continue
            p = Path(str(v).strip()).expanduser()
            p = p if p.is_absolute() else (base / p)
            p = Path(os.path.normpath(p))
            if check_files:
                if not _is_nii(p.name):
                    problems.append(f"row {i + 2} ({df.at[i, 'subject_id']}): {col} {p.name!r} is not "
                                    f".nii/.nii.gz")
                elif not p.is_file():
                    problems.append(f"row {i + 2} ({df.at[i, 'subject_id']}): {col} file not found: {p}")
            vals.append(str(p))
        df[col] = vals
    for col in df.columns:
        if col in PATH_COLUMNS or col == "subject_id":
            continue
        if df[col].dtype == object:
            num = pd.to_numeric(df[col], errors="coerce")
            if num.notna().sum() == df[col].notna().sum():
                df[col] = num
    _raise_all(problems, source, "correct the rows listed (paths are relative to the CSV's folder)")
    df = df.reset_index(drop=True)
    df.attrs["source"] = str(source) if source else None
    return df


def load_manifest(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a manifest CSV (or TSV); paths become absolute.

    Returns a DataFrame with ``subject_id`` (str), the path columns (absolute str or None) and
    covariates (numeric where every value parses as a number).
    """
    path = Path(path)
    if path.is_dir():
        return discover_bids(path, check_files=check_files)
    if not path.is_file():
        raise ManifestError("manifest not found", path=path, expected="a CSV file or a BIDS folder",
                            found="no such file", fix="check the path passed to --data")
    try:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        df = pd.read_csv(path, sep=sep, dtype={"subject_id": str})
    except Exception as exc:  # pandas raises many types on malformed text
        raise ManifestError("cannot parse the manifest", path=path, expected="a CSV with a header row",
                            found=f"{type(exc).__name__}: {exc}") from exc
    return validate_manifest(df, base=path.parent, source=path, check_files=check_files)


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV with paths relative to the CSV's folder (portable), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    for col in PATH_COLUMNS:
        if col in out.columns:
            out[col] = [None if v is None or (isinstance(v, float) and np.isnan(v))
                        else os.path.relpath(v, path.parent) for v in out[col]]
    tmp = path.with_name(path.name + ".tmp")
    out.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def _first(paths: list[Path]) -> str | None:
    return str(sorted(paths)[0]) if paths else None


def discover_bids(root: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Build a manifest from a BIDS-like tree.

    Images: ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` (one row per subject and session; the subject id
    is ``sub-XX`` or ``sub-XX_ses-YY``). Masks from ``derivatives/*/sub-*/[ses-*/]anat/``:
    ``*_dseg.nii*`` (segmentation), ``*lesion*_mask.nii*`` (lesion mask), ``*brain_mask.nii*``
    (brain mask), ``*desc-signal_mask.nii*`` (where a synthetic cohort's latent changed the image).
    Covariates from ``participants.tsv`` (joined on ``participant_id``).
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError("BIDS folder not found", path=root, expected="a folder with sub-*/anat/",
                            found="no such folder")
    rows = []
    for img in sorted(root.glob("sub-*/anat/*_T1w.nii*")) + sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii*")):
        rel = img.relative_to(root)
        sub = rel.parts[0]
        ses = rel.parts[1] if rel.parts[1].startswith("ses-") else None
        sid = f"{sub}_{ses}" if ses else sub
        sub_dir = Path(sub, ses) if ses else Path(sub)
        deriv = list(root.glob(f"derivatives/*/{sub_dir}/anat/*.nii*"))
        rows.append({"subject_id": sid, "participant_id": sub, "image": str(img),
                     "segmentation": _first([p for p in deriv if "_dseg." in p.name]),
                     "lesion_mask": _first([p for p in deriv if "lesion" in p.name and "_mask." in p.name]),
                     "brain_mask": _first([p for p in deriv if "brain_mask." in p.name
                                           or "desc-brain_mask" in p.name]),
                     "signal_mask": _first([p for p in deriv if "desc-signal_mask." in p.name])})
    if not rows:
        raise ManifestError("no T1w images found in the BIDS folder", path=root,
                            expected="files like sub-01/anat/sub-01_T1w.nii.gz",
                            found="none", fix="point --data to the BIDS root, or write a manifest CSV")
    df = pd.DataFrame(rows)
    for col in ("segmentation", "lesion_mask", "brain_mask", "signal_mask"):
        if df[col].isna().all():
            df = df.drop(columns=col)
    part = root / "participants.tsv"
    if part.is_file():
        cov = pd.read_csv(part, sep="\t", dtype={"participant_id": str})
        if "participant_id" in cov.columns:
            df = df.merge(cov, on="participant_id", how="left")
    df = df.drop(columns="participant_id")
    return validate_manifest(df, base=root, source=root, check_files=check_files)


def _file_digest(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def manifest_hash(df: pd.DataFrame) -> str:
    """Content hash of a manifest: ids, covariates, and every file's size + content digest.

    File *names* enter relative to nothing (only the basename), so the same data copied to
    another folder hashes the same; contents decide.
    """
    h = hashlib.sha256()
    cols = sorted(df.columns)
    for _, row in df.sort_values("subject_id").iterrows():
        for c in cols:
            v = row[c]
            if c in PATH_COLUMNS and isinstance(v, str):
                h.update(f"{c}={Path(v).name}:{os.path.getsize(v)}:{_file_digest(v)};".encode())
            else:
                h.update(f"{c}={v!r};".encode())
    return h.hexdigest()[:16]


def check_mask(mask: torch.Tensor, path: str | Path | None = None, *, what: str = "mask") -> None:
    """Raise :class:`MaskError` if a ground-truth mask has no voxels (nothing to localize)."""
    if not bool(mask.any()):
        raise MaskError(f"the {what} is empty", path=path, expected="at least one voxel > 0.5",
                        found="0 voxels",
                        fix="check the file; subjects without ground truth (e.g. no lesion) must be "
                            "excluded from localization scoring")
