"""Region names → label values, for the embedded cohort's AAL3 labels and for users' label maps."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import ConfigError

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
