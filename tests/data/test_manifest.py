"""Manifest validation reports every problem at once; BIDS discovery; content hash."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neuroxai.data.manifest import discover_bids, load_manifest, manifest_hash, write_manifest
from neuroxai.errors import ManifestError


def _img(write_nifti, name, value=1.0):
    return write_nifti(np.full((4, 4, 4), value, np.float32), name=name)


def test_relative_paths_resolve_against_csv_folder(tmp_path, write_nifti):
    _img(write_nifti, "a.nii.gz")
    (tmp_path / "m.csv").write_text("subject_id,image,age\ns1,a.nii.gz,40\n")
    df = load_manifest(tmp_path / "m.csv")
    assert df.loc[0, "image"] == str(tmp_path / "a.nii.gz")
    assert df["age"].dtype.kind in "if" and df.loc[0, "age"] == 40


def test_all_problems_reported_at_once(tmp_path, write_nifti):
    _img(write_nifti, "a.nii.gz")
    (tmp_path / "m.csv").write_text(
        "subject_id,image,lesion_mask\ns1,a.nii.gz,missing.nii.gz\ns1,a.nii.gz,\ns3,notes.txt,\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path / "m.csv")
    msg = str(e.value)
    assert "3 problem(s)" in msg
    assert "missing.nii.gz" in msg and "'s1' appears on rows 2, 3" in msg and "notes.txt" in msg


def test_missing_required_column_names_it(tmp_path):
    (tmp_path / "m.csv").write_text("id,t1\ns1,a.nii.gz\n")
    with pytest.raises(ManifestError, match="subject_id"):
        load_manifest(tmp_path / "m.csv")


def test_bids_discovery_finds_sessions_and_derivatives(tmp_path, write_nifti):
    for i, (sub, ses) in enumerate([("sub-01", None), ("sub-02", "ses-1"), ("sub-02", "ses-2")]):
        d = f"{sub}/{ses}/anat" if ses else f"{sub}/anat"
        stem = f"{sub}_{ses}" if ses else sub
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        _img(write_nifti, f"{d}/{stem}_T1w.nii.gz", 1.0 + i)  # three scans, not one scan three times
        (tmp_path / "derivatives/seg" / d).mkdir(parents=True, exist_ok=True)
        _img(write_nifti, f"derivatives/seg/{d}/{stem}_dseg.nii.gz")
    (tmp_path / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t50\n")
    # hidden files are not scans: macOS "._" metadata, a file left half-written by a killed writer
    (tmp_path / "sub-01/anat/._sub-01_T1w.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    _img(write_nifti, "sub-01/anat/.sub-03_T1w.nii.gz.77.tmp.nii.gz", 9.0)
    (tmp_path / "derivatives/seg/sub-01/anat/._sub-01_dseg.nii.gz").write_bytes(b"\x00")
    df = discover_bids(tmp_path)
    assert df["subject_id"].tolist() == ["sub-01", "sub-02_ses-1", "sub-02_ses-2"]
    assert df["segmentation"].str.endswith("_dseg.nii.gz").all()
    assert not df["segmentation"].str.contains("/[.]_", regex=True).any()
    assert df["age"].tolist() == [30, 50, 50]


def test_hash_depends_on_content_not_folder(tmp_path, write_nifti):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    _img(write_nifti, "x/a.nii.gz", 1.0)
    _img(write_nifti, "y/a.nii.gz", 1.0)
    h1 = manifest_hash(pd.DataFrame({"subject_id": ["s"], "image": [str(tmp_path / "x/a.nii.gz")]}))
    h2 = manifest_hash(pd.DataFrame({"subject_id": ["s"], "image": [str(tmp_path / "y/a.nii.gz")]}))
    assert h1 == h2
    _img(write_nifti, "y/a.nii.gz", 2.0)
    h3 = manifest_hash(pd.DataFrame({"subject_id": ["s"], "image": [str(tmp_path / "y/a.nii.gz")]}))
    assert h3 != h1


def test_write_then_load_roundtrip(tmp_path, write_nifti):
    _img(write_nifti, "a.nii.gz")
    df = pd.DataFrame({"subject_id": ["s1"], "image": [str(tmp_path / "a.nii.gz")], "tiv": [1500.0]})
    p = write_manifest(df, tmp_path / "sub" / "m.csv")
    assert "../a.nii.gz" in p.read_text()
    back = load_manifest(p)
    assert back.loc[0, "image"] == str(tmp_path / "a.nii.gz") and back.loc[0, "tiv"] == 1500.0
