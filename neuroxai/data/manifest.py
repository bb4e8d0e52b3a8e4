"""Manifests: the table of subjects (a CSV, or discovered from a BIDS-like tree).

Columns: ``subject_id``, ``image`` (required); ``segmentation``, ``lesion_mask``, ``brain_mask``, ``signal_mask``
(optional paths); any other column is a covariate (e.g. ``age``, ``sex``, ``tiv``). Relative
paths resolve against the CSV's folder: ``os.path.normpath(folder / path)``, so ``..`` goes up
from the manifest's folder as written (a ``..`` that would leave a symlinked folder, where the
written and the on-disk parent differ, is a problem). Every problem is collected and reported at
once, so a user fixes the whole file in one go.

The covariates the tasks adjust for by default are checked here, so that ``check-manifest``
catches what would otherwise fail at the task stage:

* ``age``: a number of years, finite, in [0, 130], in every row;
* ``sex``: 0 or 1 in every row; ``M``/``male`` are read as 1 and ``F``/``female`` as 0
  (case-insensitive; the coding only sets the sign of a regression coefficient);
* ``tiv``: a finite number > 0 in every row.

The same scan under two subject ids (the same file, or two files with identical bytes) is a
problem too.
"""
from __future__ import annotations

import codecs
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_write
from .bids import anat_images, derivative_files
from ..safepath import describe_special
from ..errors import ConfigError, ManifestError, MaskError

log = logging.getLogger(__name__)

PATH_COLUMNS = ("image", "segmentation", "lesion_mask", "brain_mask", "signal_mask")
REQUIRED = ("subject_id", "image")
_NII = (".nii", ".nii.gz")
_MAX_LISTED = 20
#: ``sex`` values accepted in a manifest and the 0/1 code each becomes.
SEX_CODES = {"0": 0, "1": 1, "m": 1, "male": 1, "f": 0, "female": 0}
#: Plausible ``age`` range in years (inclusive).
AGE_RANGE = (0.0, 130.0)


def _is_nii(p: str) -> bool:
    return p.lower().endswith(_NII)


def _raise_all(problems: list[str], path, fix: str) -> None:
    if not problems:
        return
    listed = problems[:_MAX_LISTED]
    more = len(problems) - len(listed)
    body = "\n  ".join(listed) + (f"\n  ... and {more} more" if more > 0 else "")
    raise ManifestError(f"{len(problems)} problem(s) in the manifest:\n  {body}", path=path, fix=fix)


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""


def _where(df: pd.DataFrame, i) -> str:
    return f"row {i + 2} ({df.at[i, 'subject_id']})"


def _check_covariates(df: pd.DataFrame, problems: list[str]) -> None:
    """Validate ``age``/``sex``/``tiv`` in place: numeric codes, or a problem per bad cell."""
    if "sex" in df.columns:
        codes = []
        for i, v in zip(df.index, df["sex"]):
            if _missing(v):
                problems.append(f"{_where(df, i)}: sex is empty")
                codes.append(np.nan)
                continue
            key = str(v).strip().lower()
            try:  # 1, 1.0, "1.0" -> "1"
                if float(key) in (0.0, 1.0):
                    key = str(int(float(key)))
            except ValueError:
                pass
            if key not in SEX_CODES:
                problems.append(f"{_where(df, i)}: sex {v!r} is not one of 0, 1, M, F, male, female")
                codes.append(np.nan)
            else:
                codes.append(SEX_CODES[key])
        codes = pd.Series(codes, index=df.index, dtype=float)
        # integers when complete, as a 0/1 column read from a CSV is (manifest_hash hashes reprs)
        df["sex"] = codes.astype("int64") if codes.notna().all() else codes
    for col, what, ok, rule in (
            ("age", "years", lambda x: AGE_RANGE[0] <= x <= AGE_RANGE[1],
             f"in {AGE_RANGE[0]:g}–{AGE_RANGE[1]:g} years"),
            ("tiv", "total intracranial volume", lambda x: x > 0, "> 0")):
        if col not in df.columns:
            continue
        num = pd.to_numeric(df[col], errors="coerce")
        n_before = len(problems)
        for i, v, x in zip(df.index, df[col], num):
            if _missing(v):
                problems.append(f"{_where(df, i)}: {col} is empty")
            elif pd.isna(x) or not np.isfinite(x):
                shown = repr(v) if isinstance(v, str) else f"{v:g}"
                problems.append(f"{_where(df, i)}: {col} {shown} is not a finite number ({what})")
            elif not ok(x):
                problems.append(f"{_where(df, i)}: {col} {x:g} is not {rule}")
        df[col] = num if len(problems) == n_before else num.astype(float)


def _check_duplicate_scans(df: pd.DataFrame, problems: list[str], duplicate_content: str) -> None:
    """The same image under two subject ids: the same file (after normalisation, symlinks and
    hard links included), or two files with identical bytes (size first, then a digest)."""
    groups: dict = {}
    for i, p in zip(df.index, df["image"]):
        if p is None:
            continue
        try:
            st = os.stat(p)
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = p
        groups.setdefault(key, []).append(i)
    def n_ids(rows):  # a repeated id is its own problem (listed above)
        return len({df.at[i, "subject_id"] for i in rows})


    for rows in groups.values():
        if n_ids(rows) > 1:
            ids = ", ".join(repr(df.at[i, "subject_id"]) for i in rows)
            problems.append(f"rows {', '.join(str(i + 2) for i in rows)}: the same image file "
                            f"{df.at[rows[0], 'image']} is listed under {n_ids(rows)} subject ids ({ids})")
    by_size: dict = {}
    for key, rows in groups.items():
        if isinstance(key, tuple):
            by_size.setdefault(os.path.getsize(df.at[rows[0], "image"]), []).append(rows[0])
    for rows in by_size.values():
        if len(rows) < 2:
            continue
        by_digest: dict = {}
        for i in rows:
            by_digest.setdefault(file_digest(df.at[i, "image"]), []).append(i)
        for same in by_digest.values():
            if n_ids(same) < 2:
                continue
            msg = (f"rows {', '.join(str(i + 2) for i in same)}: the images of subjects "
                   f"{', '.join(repr(df.at[i, 'subject_id']) for i in same)} have identical bytes "
                   f"({', '.join(df.at[i, 'image'] for i in same)}); the same scan under two ids?")
            if duplicate_content == "error":
                problems.append(msg)
            else:
                log.warning("%s", msg)


def _check_image_is_not_a_mask(df: pd.DataFrame, problems: list[str]) -> None:
    """The image column naming the subject's segmentation or a mask file (the same file, links
    included) would be scored and given a verdict as if it were the scan: refuse it."""
    others = [c for c in PATH_COLUMNS if c != "image" and c in df.columns]
    for i in df.index:
        img = df.at[i, "image"]
        if img is None:
            continue
        for col in others:
            other = df.at[i, col]
            if other is None or other != other:
                continue
            try:
                same = os.path.samefile(img, other)
            except OSError:
                continue
            if same:
                problems.append(f"row {i + 2} ({df.at[i, 'subject_id']}): the image is the subject's {col} "
                                f"({img}); the image column must name the scan (e.g. *_T1w.nii.gz)")


def validate_manifest(df: pd.DataFrame, *, base: Path | None = None, source: str | Path | None = None,
                      check_files: bool = True, duplicate_content: str = "error") -> pd.DataFrame:
    """Check a manifest table and return it with absolute paths (all problems reported at once).

    Args:
        df: the table; path columns may be relative to ``base``.
        base: folder that relative paths resolve against (the CSV's folder); a relative ``base``
            is taken from the current directory now, so the returned paths are absolute.
        source: where the table came from (named in the error).
        check_files: check that every referenced file exists and is NIfTI, and that no image
            file is listed twice.
        duplicate_content: two image files with identical bytes under different subject ids:
            ``"error"`` (a problem) or ``"warn"`` (logged).

    Problems listed (all at once, in one :class:`ManifestError`): empty or duplicate subject ids,
    empty image paths, files missing or not NIfTI, a ``..`` out of a symlinked folder, the same
    image under two ids, and bad ``age``/``sex``/``tiv`` values (see the module doc).
    """
    if duplicate_content not in ("error", "warn"):
        raise ConfigError("unknown duplicate_content mode", expected="'error' or 'warn'",
                          found=repr(duplicate_content))
    problems: list[str] = []
    # row numbers below are CSV lines (i + 2), so the index must be positional
    df = df.reset_index(drop=True)
    df = df.rename(columns=lambda c: c.strip().lstrip("\ufeff") if isinstance(c, str) else c)
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
    # abspath = normpath(cwd / base): absolute now, so a later chdir cannot move the files, and
    # no symlink is resolved (``..`` goes up from the folder as written).
    base = Path(os.path.abspath(base if base is not None else os.getcwd()))
    for col in PATH_COLUMNS:
        if col not in df.columns:
            continue
        vals = []
        for i, v in zip(df.index, df[col]):
            if _missing(v):
                if col == "image":
                    problems.append(f"row {i + 2} ({df.at[i, 'subject_id']}): empty image path")
                vals.append(None)
                continue
            written = Path(str(v).strip()).expanduser()
            joined = written if written.is_absolute() else (base / written)
            p = Path(os.path.normpath(joined))
            if ".." in written.parts and os.path.realpath(joined) != os.path.realpath(p):
                problems.append(
                    f"row {i + 2} ({df.at[i, 'subject_id']}): {col} {str(v).strip()!r} goes up ('..') "
                    f"out of a symlinked folder: it names {p} from the manifest's folder but "
                    f"{os.path.realpath(joined)} on disk; write the path without '..' or absolute")
                vals.append(str(p))
                continue
            if check_files:
                if not _is_nii(p.name):
                    problems.append(f"row {i + 2} ({df.at[i, 'subject_id']}): {col} {p.name!r} is not "
                                    f".nii/.nii.gz")
                elif describe_special(p) is not None:  # a FIFO, a device, a folder, a link loop: named
                    problems.append(f"row {i + 2} ({df.at[i, 'subject_id']}): {col} {p} is {describe_special(p)}, "
                                    f"not a NIfTI file")
                elif not p.is_file():
                    problems.append(f"row {i + 2} ({df.at[i, 'subject_id']}): {col} file not found: {p}")
            vals.append(str(p))
        df[col] = vals
    if check_files:
        _check_duplicate_scans(df, problems, duplicate_content)
        _check_image_is_not_a_mask(df, problems)
    _check_covariates(df, problems)
    for col in df.columns:
        if col in PATH_COLUMNS or col == "subject_id":
            continue
        if pd.api.types.is_object_dtype(df[col]) or pd.api.types.is_string_dtype(df[col]):
            num = pd.to_numeric(df[col], errors="coerce")
            if num.notna().sum() == df[col].notna().sum():
                df[col] = num
    _raise_all(problems, source, "correct the rows listed (paths are relative to the CSV's folder; "
                                 "row numbers count the header as row 1)")
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
    df = _read_table(path, "\t" if path.suffix.lower() == ".tsv" else None, what="manifest",
                     dtype={"subject_id": str})
    return validate_manifest(df, base=path.parent, source=path, check_files=check_files)


def _read_table(path: Path, sep: str | None, *, what: str, dtype: dict) -> pd.DataFrame:
    """Read a CSV/TSV as text, or raise a :class:`ManifestError` saying what the file is instead.

    Handles a UTF-8 or UTF-16 byte-order mark; ``sep=None`` picks ``,``, tab or ``;``, whichever
    the header line holds most of (a CSV exported by a European-locale spreadsheet uses ``;``).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError as exc:
        raise ManifestError(f"cannot read the {what}", path=path, expected="a readable text file",
                            found=f"{type(exc).__name__}: {exc}", fix="check the file's permissions") from exc
    expected = "a text table (UTF-8 CSV) with a header row"
    if not head.strip():
        raise ManifestError(f"the {what} file is empty", path=path, expected=expected,
                            found=f"{len(head)} bytes" + (" of white space" if head else ""),
                            fix="write a header row and one row per subject")
    kinds = {b"\x1f\x8b": "gzip-compressed data (a .nii.gz image?)", b"PK\x03\x04": "a ZIP file "
             "(an Excel .xlsx workbook?)", b"\xd0\xcf\x11\xe0": "an OLE file (an Excel .xls workbook?)",
             b"\x5c\x01\x00\x00": "a NIfTI-1 image", b"\x00\x00\x01\x5c": "a NIfTI-1 image"}
    encoding = "utf-16" if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    found = next((k for m, k in kinds.items() if head.startswith(m)), None)
    if found is None and encoding != "utf-16" and b"\x00" in head:
        found = "binary data (NUL bytes)"
    if found:
        raise ManifestError(f"the {what} is not a text table", path=path, expected=expected, found=found,
                            fix="pass the manifest CSV (or the BIDS folder); export spreadsheets as "
                                "'CSV UTF-8'")
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"the {what} is not UTF-8 text", path=path, expected=expected,
                            found=f"byte {exc.object[exc.start:exc.start + 1]!r} at offset {exc.start}",
                            fix="save it as 'CSV UTF-8' (or convert: `iconv -f latin1 -t utf-8`)") from exc
    if sep is None:
        header = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
        counts = {c: header.count(c) for c in (",", "\t", ";")}
        sep = max(counts, key=counts.get) if max(counts.values()) > 0 else ","
    fix = "every row needs as many fields as the header; quote fields that contain the separator"
    try:
        df = pd.read_csv(path, sep=sep, dtype=dtype, encoding=encoding)
    except Exception as exc:  # pandas raises many types on malformed text
        raise ManifestError(f"cannot parse the {what}", path=path, expected=expected,
                            found=f"{type(exc).__name__}: {exc}", fix=fix) from exc
    if not isinstance(df.index, pd.RangeIndex):
        # pandas takes the first column(s) as an index when the first data row has more
        # fields than the header, shifting every column by one: refuse instead.
        raise ManifestError(f"cannot parse the {what}: the data rows have more fields than the header",
                            path=path, expected=f"{len(df.columns)} fields per row (the header's)",
                            found=f"{len(df.columns) + df.index.nlevels} fields on the first data row",
                            fix=fix + " (trailing separators count as fields)")
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as CSV with paths relative to the CSV's folder (portable), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    for col in PATH_COLUMNS:
        if col in out.columns:
            out[col] = [None if v is None or (isinstance(v, float) and np.isnan(v))
                        else os.path.relpath(v, path.parent) for v in out[col]]
    return atomic_write(path, write=lambda tmp: out.to_csv(tmp, index=False))


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
    # Absolute now: the image paths below are root/..., and validate_manifest joins relative
    # paths onto its base (root) once more, which doubled a relative root ("bids/bids/sub-01/...").
    root = Path(os.path.abspath(root))
    if not root.is_dir():
        raise ManifestError("BIDS folder not found", path=root, expected="a folder with sub-*/anat/",
                            found="no such folder")
    rows = []
    for img, sid, sub, sub_dir in anat_images(root):  # BIDS naming: data.bids, shared with the audit
        deriv = derivative_files(root, sub_dir)
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
        df = df.merge(_read_participants(part, df), on="participant_id", how="left")
    df = df.drop(columns="participant_id")
    # One scan copied into two subject folders is the same mistake as in a CSV: refused.
    return validate_manifest(df, base=root, source=root, check_files=check_files)


def _read_participants(part: Path, df: pd.DataFrame) -> pd.DataFrame:
    """``participants.tsv`` as a table keyed on ``participant_id`` (problems: ManifestError)."""
    cov = _read_table(part, "\t", what="participants.tsv", dtype={"participant_id": str})
    cov = cov.rename(columns=lambda c: c.strip().lstrip("\ufeff") if isinstance(c, str) else c)
    if "participant_id" not in cov.columns:
        cols = list(cov.columns)
        seps = [s for s in (",", ";") if any(isinstance(c, str) and s in c for c in cols)]
        raise ManifestError(
            "participants.tsv has no participant_id column", path=part,
            expected="a tab-separated header with participant_id (BIDS)", found=f"columns {cols}",
            fix=(f"the file is separated by {seps[0]!r}; BIDS requires tabs" if seps else
                 "name the column of subject labels (sub-01, ...) participant_id"))
    cov["participant_id"] = cov["participant_id"].astype(str).str.strip()
    problems = []
    for sid in sorted(set(cov["participant_id"][cov["participant_id"].duplicated()])):
        rows = [str(i + 2) for i in cov.index[cov["participant_id"] == sid]]
        problems.append(f"participant_id {sid!r} appears on rows {', '.join(rows)} (must be unique)")
    clash = [c for c in cov.columns if c != "participant_id" and c in df.columns]
    if clash:
        problems.append(f"columns {clash} clash with the manifest's own columns; rename them")
    if not set(cov["participant_id"]) & set(df["participant_id"]):
        problems.append(f"no participant_id matches a subject folder (found e.g. "
                        f"{sorted(cov['participant_id'])[:3]}, folders e.g. "
                        f"{sorted(set(df['participant_id']))[:3]}); ids must be the folder names")
    if problems:
        listed = "\n  ".join(problems)
        raise ManifestError(f"{len(problems)} problem(s) in participants.tsv:\n  {listed}", path=part,
                            fix="correct participants.tsv (rows count the header as row 1)")
    return cov


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """blake2b-128 of a file's bytes (read in 1 MB chunks)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


_file_digest = file_digest  # the old private name


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
                h.update(f"{c}={Path(v).name}:{os.path.getsize(v)}:{file_digest(v)};".encode())
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
