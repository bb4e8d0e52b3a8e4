"""Region names → label values, for the embedded cohort's AAL3 labels and for users' label maps."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ConfigError, TaskError

# FreeSurfer / FastSurfer aseg labels most used for volume tasks (FreeSurferColorLUT.txt).
ASEG = {"Left-Lateral-Ventricle": 4, "Left-Thalamus": 10, "Left-Caudate": 11, "Left-Putamen": 12,
        "Left-Pallidum": 13, "Left-Hippocampus": 17, "Left-Amygdala": 18, "Left-Accumbens-area": 26,
        "Right-Lateral-Ventricle": 43, "Right-Thalamus": 49, "Right-Caudate": 50, "Right-Putamen": 51,
        "Right-Pallidum": 52, "Right-Hippocampus": 53, "Right-Amygdala": 54, "Right-Accumbens-area": 58}


def label_table(manifest: pd.DataFrame, path: str | Path | None = None) -> dict[str, int]:
    """Name → value: from ``path`` (TSV with ``index``/``name``, BIDS dseg.tsv style), else from a
    ``dseg.tsv`` next to the segmentations, else AAL3 (the embedded cohort) plus FreeSurfer aseg."""
    if path is None and "segmentation" in manifest.columns and manifest["segmentation"].notna().any():
        p = Path(str(manifest["segmentation"].dropna().iloc[0]))
        for d in [p.parent, *p.parents][:5]:
            if (d / "dseg.tsv").is_file():
                path = d / "dseg.tsv"
                break
    if path is not None:
        t = pd.read_csv(path, sep="\t")
        if not {"index", "name"} <= set(t.columns):
            raise ConfigError("label table needs columns 'index' and 'name'", path=path,
                              found=list(t.columns))
        return {str(n): int(i) for i, n in zip(t["index"], t["name"])}
    from ..data.cohort import atlas_labels

    return {**ASEG, **atlas_labels()}


def resolve_regions(regions: Sequence[str | int] | str | int, table: dict[str, int]) -> list[int]:
    """Label values of ``regions`` (names or numbers); unknown names suggest close matches."""
    if isinstance(regions, (str, int)):
        regions = [regions]
    out = []
    for r in regions:
        if isinstance(r, int) or (isinstance(r, str) and r.strip().isdigit()):
            out.append(int(r))
        elif r in table:
            out.append(table[r])
        else:
            close = difflib.get_close_matches(str(r), list(table), n=5, cutoff=0.4)
            raise ConfigError(f"unknown region {r!r}", expected=f"a label name, e.g. {close}", found=r,
                              fix="use a name from the label table (dseg.tsv) or the label number")
    if not out:
        raise ConfigError("no regions given", expected="≥ 1 region name or label", found=regions)
    return out


# Spellings of a hemisphere in label names: AAL3 (``Hippocampus_L``), FreeSurfer aseg
# (``Left-Hippocampus``), FreeSurfer cortical (``ctx-lh-…``, ``ctx_lh_…``) and UK Biobank IDP
# names as Siegel et al. 2025 use them (``Hippocampus (left hemisphere)``).
_SIDES = ((r"_L$", "_R"), (r"_R$", "_L"), (r"^Left-", "Right-"), (r"^Right-", "Left-"),
          (r"([-_])lh([-_])", r"\1rh\2"), (r"([-_])rh([-_])", r"\1lh\2"),
          (r"\(left hemisphere\)", "(right hemisphere)"), (r"\(right hemisphere\)", "(left hemisphere)"))


def lateral_pairs(table: dict[str, int]) -> dict[int, int]:
    """Label value → the value of the same region in the other hemisphere, from the names of a
    label table (name → value): ``Hippocampus_L`` ↔ ``Hippocampus_R``, ``Left-Putamen`` ↔
    ``Right-Putamen``, ``ctx-lh-insula`` ↔ ``ctx-rh-insula``, ``X (left hemisphere)`` ↔
    ``X (right hemisphere)``. Regions without a counterpart (midline, vermis) are absent."""
    out: dict[int, int] = {}
    for name, value in table.items():
        for pat, rep in _SIDES:
            other, n = re.subn(pat, rep, name)
            if n and other in table and table[other] != value:
                out[int(value)] = int(table[other])
                break
    return out

def check_integer_labels(data: np.ndarray, path) -> None:
    """A label map must hold integer labels: one resampled with trilinear interpolation (labels
    + 0.6) would be rounded to the neighbouring label, so another region silently becomes the
    ground truth. Refused, naming the file."""
    if np.issubdtype(data.dtype, np.integer):
        return
    frac = np.abs(data - np.round(data))
    bad = frac > 1e-3
    if bad.any():
        v = float(data[bad].flat[0])
        raise TaskError("the label map is not integer-valued", path=path,
                        expected="integer labels (a segmentation resampled with nearest-neighbour interpolation)",
                        found=f"{int(bad.sum())} voxels with fractional labels, e.g. {v:g}",
                        fix="resample the segmentation with nearest-neighbour interpolation (or give the "
                            "original), never trilinear")
