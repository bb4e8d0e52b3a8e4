"""Hostile or careless data: each input gets correct handling or a named error naming the file.

Complements tests/data/test_bad_input.py (missing / non-NIfTI files, a true 4-D series, NaN voxels
read directly, a header cut at 60 bytes) and tests/data/test_manifest.py (duplicate ids, missing
required columns); nothing here repeats those.
"""
from __future__ import annotations

import gzip
import logging
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from neuroxai.data import load_volume
from neuroxai.data.dataset import LoadSubject, VolumeDataset
from neuroxai.data.manifest import discover_bids, load_manifest
from neuroxai.data.volume import MAX_VOLUME_MB_DEFAULT, max_volume_mb, read_header
from neuroxai.errors import (AffineMismatchError, ConfigError, ManifestError, NeuroXAIError,
                             VolumeFileError, VolumeShapeError, VolumeValueError)


def _header_only(path, shape, dtype=np.float32):
    """A NIfTI file whose header declares ``shape`` but which holds no voxels."""
    h = nib.Nifti1Header()
    h.set_data_shape(shape)
    h.set_data_dtype(dtype)
    h.set_sform(np.eye(4), code=1)
    raw = h.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _with_sform(path, affine):
    """A 8³ image whose stored sform is ``affine`` (nibabel would refuse to build it normally)."""
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), None)
    img.header.set_sform(np.asarray(affine, float), code=1)
    img.header.set_qform(None, code=0)
    path.write_bytes(img.to_bytes())
    return path


def _good_gz(write_nifti, name="good.nii.gz"):
    rng = np.random.default_rng(1)
    return write_nifti(rng.random((16, 16, 16)).astype(np.float32), name=name)


# --------------------------------------------------------------------------------------------
# 1. the declared size is checked before any voxel is read

@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_header_declaring_a_huge_volume_is_refused_before_reading(tmp_path, monkeypatch, name):
    monkeypatch.delenv("NEUROXAI_MAX_VOLUME_MB", raising=False)
    p = _header_only(tmp_path / name, (2000, 2000, 2000))
    assert p.stat().st_size < 1000
    with pytest.raises(VolumeFileError) as e:
        load_volume(p)
    msg = str(e.value)
    # a read attempt would have failed as "truncated"; the refusal names shape, size and limit
    assert name in msg and "(2000, 2000, 2000)" in msg and "30,518 MB" in msg
    assert "2048 MB" in msg and "NEUROXAI_MAX_VOLUME_MB" in msg and "size limit" in msg
    with pytest.raises(VolumeFileError, match="size limit"):
        read_header(p)


def test_size_limit_follows_the_env_var_and_the_argument(write_nifti, monkeypatch):
    p = _good_gz(write_nifti)  # 16³ float32 = 0.0156 MB
    monkeypatch.setenv("NEUROXAI_MAX_VOLUME_MB", "0.01")
    assert max_volume_mb() == 0.01
    with pytest.raises(VolumeFileError, match=r"good\.nii\.gz.*size limit"):
        load_volume(p)
    assert load_volume(p, max_mb=0.02).shape == (16, 16, 16)
    monkeypatch.setenv("NEUROXAI_MAX_VOLUME_MB", "0.02")
    assert load_volume(p).shape == (16, 16, 16)
    monkeypatch.delenv("NEUROXAI_MAX_VOLUME_MB")
    assert max_volume_mb() == MAX_VOLUME_MB_DEFAULT == 2048


@pytest.mark.parametrize("value", ["abc", "-5", "0", "nan"])
def test_bad_size_limit_env_var_is_a_config_error(write_nifti, monkeypatch, value):
    monkeypatch.setenv("NEUROXAI_MAX_VOLUME_MB", value)
    with pytest.raises(ConfigError, match="NEUROXAI_MAX_VOLUME_MB"):
        load_volume(_good_gz(write_nifti))


# --------------------------------------------------------------------------------------------
# 2. data types and affines that cannot become a float volume on a grid

@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_image_is_refused_not_silently_made_real(write_nifti, dtype):
    p = write_nifti((np.ones((8, 8, 8)) + 2j).astype(dtype), name="cplx.nii.gz")
    with pytest.raises(VolumeValueError) as e:
        load_volume(p)
    assert "cplx.nii.gz" in str(e.value) and "magnitude" in str(e.value)
    assert np.dtype(dtype).name in str(e.value)


def test_rgb_image_is_refused(write_nifti):
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    with pytest.raises(VolumeValueError, match=r"rgb\.nii\.gz.*RGB"):
        load_volume(write_nifti(rgb, name="rgb.nii.gz"))


@pytest.mark.parametrize("affine, what", [
    (np.zeros((4, 4)), "singular"),
    (np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),                       # one zero voxel size
    ([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "singular"),  # collinear axes
    (np.diag([np.nan, 1.0, 1.0, 1.0]), "not a finite"),
    (np.diag([1.0, np.inf, 1.0, 1.0]), "not a finite"),
])
def test_singular_or_nonfinite_affine_is_refused(tmp_path, affine, what):
    p = _with_sform(tmp_path / "aff.nii", affine)
    with pytest.raises(VolumeValueError) as e:
        load_volume(p)
    assert "aff.nii" in str(e.value) and what in str(e.value) and "fslorient" in str(e.value)


@pytest.mark.parametrize("shape, found", [((6, 6, 6, 1, 3), "5-D"), ((0, 8, 8), "empty")])
def test_five_d_and_empty_images_are_shape_errors(tmp_path, write_nifti, shape, found):
    p = (write_nifti(np.ones(shape, np.float32), name="odd.nii.gz") if 0 not in shape
         else _header_only(tmp_path / "odd.nii.gz", shape))
    with pytest.raises(VolumeShapeError, match=rf"(?s)odd\.nii\.gz.*{found}") as e:
        load_volume(p)
    assert str(shape) in str(e.value)


def _corrupt(kind, good):
    raw, data = good.read_bytes(), gzip.decompress(good.read_bytes())
    if kind == "truncated in the voxels":
        return raw[: int(len(raw) * 0.7)]
    if kind == "crc damaged":
        return raw[:-8] + bytes([raw[-8] ^ 0xFF]) + raw[-7:]
    if kind == "byte flipped in the stream":
        b = bytearray(raw)
        b[len(b) // 2] ^= 0xFF
        return bytes(b)
    if kind == "trailing garbage":
        return raw + b"this is not gzip" * 4
    if kind == "short but well-formed stream":
        return gzip.compress(data[: len(data) // 2])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated in the voxels", "crc damaged",
                                  "byte flipped in the stream", "trailing garbage",
                                  "short but well-formed stream"])
def test_corrupt_gzip_is_a_file_error_when_the_voxels_are_read(tmp_path, write_nifti, kind):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(_corrupt(kind, _good_gz(write_nifti)))
    assert read_header(bad).shape == (16, 16, 16)  # the header alone looks fine
    with pytest.raises(VolumeFileError) as e:
        load_volume(bad)
    assert "bad.nii.gz" in str(e.value)


def test_truncated_uncompressed_nii_is_a_file_error(tmp_path, write_nifti):
    good = write_nifti(np.ones((16, 16, 16), np.float32), name="good.nii")
    bad = tmp_path / "bad.nii"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(VolumeFileError, match=r"bad\.nii.*truncated") as e:
        load_volume(bad)
    assert "16736 bytes" in str(e.value) and "5000 bytes" in str(e.value)  # 352 + 16³·4


@pytest.mark.parametrize("src, dst, fix", [("good.nii.gz", "x.nii", "rename it to .nii.gz"),
                                           ("good.nii", "x.nii.gz", "rename it to .nii")])
def test_misnamed_compression_says_how_to_rename(tmp_path, write_nifti, src, dst, fix):
    good = write_nifti(np.ones((8, 8, 8), np.float32), name=src)
    (tmp_path / dst).write_bytes(good.read_bytes())
    with pytest.raises(VolumeFileError, match=dst.replace(".", r"\.")) as e:
        load_volume(tmp_path / dst)
    assert fix in str(e.value)


# --------------------------------------------------------------------------------------------
# 3. errors inside the MONAI loader come out as our named errors

def _one_subject(tmp_path, image, mask=None):
    cols = "subject_id,image" + (",brain_mask" if mask else "")
    row = f"s1,{image}" + (f",{mask}" if mask else "")
    (tmp_path / "m.csv").write_text(f"{cols}\n{row}\n")
    return load_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_nan_voxels_through_the_dataset(tmp_path, write_nifti, cache):
    a = np.ones((8, 8, 8), np.float32)
    a[2, 3, 4] = np.nan
    write_nifti(a, name="nan.nii.gz")
    with pytest.raises(VolumeValueError) as e:
        VolumeDataset(_one_subject(tmp_path, "nan.nii.gz"), cache=cache)[0]
    assert "nan.nii.gz" in str(e.value) and "1 NaN and 0 Inf" in str(e.value)
    assert isinstance(e.value.__cause__, RuntimeError)  # MONAI's wrapper, kept as the cause
    assert "applying transform" in str(e.value.__cause__)


def test_mask_off_the_image_grid_through_the_dataset(tmp_path, write_nifti):
    write_nifti(np.ones((8, 8, 8), np.float32), name="img.nii.gz")
    shifted = np.eye(4)
    shifted[1, 3] = 3.0
    write_nifti(np.ones((8, 8, 8), np.uint8), shifted, name="brain.nii.gz")
    ds = VolumeDataset(_one_subject(tmp_path, "img.nii.gz", "brain.nii.gz"), keys=("brain_mask",))
    with pytest.raises(AffineMismatchError) as e:
        ds[0]
    assert "brain.nii.gz" in str(e.value) and "3 mm" in str(e.value)


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_corrupt_file_through_the_dataset(tmp_path, write_nifti, cache):
    good = _good_gz(write_nifti, "good.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(_corrupt("crc damaged", good))
    with pytest.raises(VolumeFileError) as e:
        VolumeDataset(_one_subject(tmp_path, "bad.nii.gz"), cache=cache)[0]
    assert "bad.nii.gz" in str(e.value) and "CRC" in str(e.value)


def test_unexpected_exception_while_loading_names_the_subject(tmp_path, write_nifti, monkeypatch):
    write_nifti(np.ones((8, 8, 8), np.float32), name="img.nii.gz")
    m = _one_subject(tmp_path, "img.nii.gz")

    def boom(*a, **k):
        raise ValueError("something deep in a library")

    monkeypatch.setattr("neuroxai.data.dataset.normalize_intensity", boom)
    with pytest.raises(VolumeFileError) as e:
        VolumeDataset(m)[0]
    msg = str(e.value)
    assert "subject 's1'" in msg and "img.nii.gz" in msg and "something deep in a library" in msg


def test_file_gone_before_disk_caching_names_the_subject(tmp_path, write_nifti):
    write_nifti(np.ones((8, 8, 8), np.float32), name="img.nii.gz")
    m = _one_subject(tmp_path, "img.nii.gz")
    os.remove(tmp_path / "img.nii.gz")  # the content key hashes the file before loading it
    with pytest.raises(VolumeFileError) as e:
        VolumeDataset(m, cache="disk", cache_dir=tmp_path / "cache")[0]
    assert "subject 's1'" in str(e.value) and "img.nii.gz" in str(e.value)


# --------------------------------------------------------------------------------------------
# 4. probabilistic masks: the threshold is a parameter, and a non-binary mask is logged once

def _probabilistic(write_nifti, name):
    m = np.zeros(512, np.float32)
    m[:100], m[100:150], m[150:180], m[180:200] = 0.2, 0.5, 0.6, 0.9
    return write_nifti(m.reshape(8, 8, 8), name=name)


@pytest.mark.parametrize("threshold, inside", [(0.3, 100), (0.5, 50), (0.7, 20)])
def test_probabilistic_mask_threshold(tmp_path, write_nifti, caplog, threshold, inside):
    write_nifti(np.ones((8, 8, 8), np.float32), name="a.nii.gz")
    write_nifti(np.ones((8, 8, 8), np.float32) * 2, name="b.nii.gz")
    _probabilistic(write_nifti, "a_lesion.nii.gz")
    _probabilistic(write_nifti, "b_lesion.nii.gz")
    (tmp_path / "m.csv").write_text("subject_id,image,lesion_mask\n"
                                    "a,a.nii.gz,a_lesion.nii.gz\nb,b.nii.gz,b_lesion.nii.gz\n")
    ds = VolumeDataset(load_manifest(tmp_path / "m.csv"), keys=("lesion_mask",), normalize=None,
                       mask_threshold=threshold)
    with caplog.at_level(logging.WARNING, logger="neuroxai.data.dataset"):
        items = [ds[0], ds[1]]
    for it in items:
        assert it["lesion_mask"].dtype == torch.bool and int(it["lesion_mask"].sum()) == inside
    warnings = [r.getMessage() for r in caplog.records if "not binary" in r.getMessage()]
    assert len(warnings) == 1  # once per dataset, naming the first file and the threshold
    assert "a_lesion.nii.gz" in warnings[0] and f"voxels > {threshold:g}" in warnings[0]


def test_binary_mask_is_not_logged_and_threshold_is_in_the_cache_key(tmp_path, write_nifti, caplog):
    write_nifti(np.ones((8, 8, 8), np.float32), name="a.nii.gz")
    m = np.zeros((8, 8, 8), np.uint8)
    m[:2] = 1
    write_nifti(m, name="mask.nii.gz")
    (tmp_path / "m.csv").write_text("subject_id,image,signal_mask\ns1,a.nii.gz,mask.nii.gz\n")
    with caplog.at_level(logging.WARNING, logger="neuroxai.data.dataset"):
        it = VolumeDataset(load_manifest(tmp_path / "m.csv"), keys=("signal_mask",))[0]
    assert int(it["signal_mask"].sum()) == 128 and not caplog.records
    assert LoadSubject(mask_threshold=0.3).params() != LoadSubject(mask_threshold=0.7).params()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "half", None, True])
def test_bad_mask_threshold_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="mask_threshold"):
        LoadSubject(mask_threshold=bad)


def test_common_shape_uses_the_canonical_axis_order(tmp_path, write_nifti):
    """A subject stored with permuted axes is reoriented before cropping; the grid shape must
    be computed in that order too (it was computed in file order, padding/cropping wrongly)."""
    write_nifti(np.ones((8, 10, 12), np.float32), name="ras.nii.gz")
    perm = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    write_nifti(np.ones((12, 8, 10), np.float32), perm, name="perm.nii.gz")
    (tmp_path / "m.csv").write_text("subject_id,image\na,ras.nii.gz\nb,perm.nii.gz\n")
    ds = VolumeDataset(load_manifest(tmp_path / "m.csv"), normalize=None)
    assert ds[0]["image"].shape == ds[1]["image"].shape == (1, 8, 10, 12)
    assert float(ds[1]["image"].min()) == 1.0  # no zero padding


# --------------------------------------------------------------------------------------------
# 5. manifests

def test_dotdot_resolves_from_the_manifest_folder_whatever_the_cwd(tmp_path, write_nifti, monkeypatch):
    img = write_nifti(np.ones((4, 4, 4), np.float32), name="imgs/x.nii.gz")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.csv").write_text("subject_id,image\ns1,../imgs/x.nii.gz\n")
    (tmp_path / "elsewhere").mkdir()
    for cwd, arg in [(tmp_path / "sub", "m.csv"), (tmp_path, "sub/m.csv"),
                     (tmp_path / "elsewhere", "../sub/m.csv")]:
        monkeypatch.chdir(cwd)
        df = load_manifest(arg)
        assert df.loc[0, "image"] == str(img)  # absolute, so a later chdir cannot move it
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_volume(df.loc[0, "image"]).shape == (4, 4, 4)


def test_dotdot_out_of_a_symlinked_folder_is_a_problem(tmp_path, write_nifti):
    # real/sub/m.csv says ../imgs/x.nii.gz; view/link -> real/sub. From view/link/m.csv,
    # "../imgs" is view/imgs as written but real/imgs on disk: two different files.
    write_nifti(np.ones((4, 4, 4), np.float32), name="real/imgs/x.nii.gz")
    write_nifti(np.zeros((4, 4, 4), np.float32), name="view/imgs/x.nii.gz")
    (tmp_path / "real" / "sub").mkdir()
    (tmp_path / "real" / "sub" / "m.csv").write_text("subject_id,image\ns1,../imgs/x.nii.gz\n")
    (tmp_path / "view" / "link").symlink_to(tmp_path / "real" / "sub")
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path / "view" / "link" / "m.csv")
    msg = str(e.value)
    assert "symlinked folder" in msg and "m.csv" in msg
    assert str(tmp_path / "view" / "imgs" / "x.nii.gz") in msg
    assert str(tmp_path / "real" / "imgs" / "x.nii.gz") in msg


@pytest.mark.parametrize("second, what", [
    ("./a.nii.gz", "same image file"),
    ("sub/../a.nii.gz", "same image file"),
    ("link.nii.gz", "same image file"),     # a symlink to a.nii.gz
    ("copy.nii.gz", "identical bytes"),     # a byte-identical copy
])
def test_same_scan_under_two_subject_ids_is_a_problem(tmp_path, write_nifti, second, what):
    a = write_nifti(np.arange(64, dtype=np.float32).reshape(4, 4, 4), name="a.nii.gz")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.nii.gz").symlink_to(a)
    (tmp_path / "copy.nii.gz").write_bytes(a.read_bytes())
    (tmp_path / "m.csv").write_text(f"subject_id,image\ns1,a.nii.gz\ns2,{second}\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path / "m.csv")
    msg = str(e.value)
    assert "1 problem(s)" in msg and what in msg and "'s1', 's2'" in msg and "rows 2, 3" in msg


def test_different_scans_of_equal_size_are_accepted(tmp_path, write_nifti):
    write_nifti(np.full((4, 4, 4), 1.0, np.float32), name="a.nii.gz")
    write_nifti(np.full((4, 4, 4), 2.0, np.float32), name="b.nii.gz")
    (tmp_path / "m.csv").write_text("subject_id,image\ns1,a.nii.gz\ns2,b.nii.gz\n")
    assert len(load_manifest(tmp_path / "m.csv")) == 2


def test_subject_ids_equal_after_stripping_are_duplicates(tmp_path, write_nifti):
    write_nifti(np.full((4, 4, 4), 1.0, np.float32), name="a.nii.gz")
    write_nifti(np.full((4, 4, 4), 2.0, np.float32), name="b.nii.gz")
    (tmp_path / "m.csv").write_text('subject_id,image\ns1,a.nii.gz\n" s1 ",b.nii.gz\n')
    with pytest.raises(ManifestError, match=r"(?s)m\.csv.*'s1' appears on rows 2, 3"):
        load_manifest(tmp_path / "m.csv")


def test_sex_codes_are_mapped_and_documented_values_accepted(tmp_path, write_nifti):
    rows = []
    for i, sex in enumerate(["M", "F", "male", "Female", "0", "1.0"]):
        write_nifti(np.full((4, 4, 4), float(i), np.float32), name=f"{i}.nii.gz")
        rows.append(f"s{i},{i}.nii.gz,{sex},{20 + i}.5,{1400 + i}")
    (tmp_path / "m.csv").write_text("subject_id,image,sex,age,tiv\n" + "\n".join(rows) + "\n")
    df = load_manifest(tmp_path / "m.csv")
    assert df["sex"].tolist() == [1, 0, 1, 0, 0, 1]
    assert df["age"].tolist() == [20.5, 21.5, 22.5, 23.5, 24.5, 25.5]
    # numeric as read (integers stay integers, so manifest_hash of old manifests is unchanged)
    assert (df["sex"].dtype.kind, df["age"].dtype.kind, df["tiv"].dtype.kind) == ("i", "f", "i")


@pytest.mark.parametrize("col, value, problem", [
    ("sex", "X", "sex 'X' is not one of 0, 1, M, F, male, female"),
    ("sex", "2", "sex '2' is not one of"),
    ("sex", "", "sex is empty"),
    ("age", "unknown", "age 'unknown' is not a finite number"),
    ("age", "inf", "age inf is not a finite number"),  # pandas already parsed it as a float
    ("age", "250", "age 250 is not in 0–130 years"),
    ("age", "-1", "age -1 is not in 0–130 years"),
    ("age", "", "age is empty"),
    ("tiv", "-1500", "tiv -1500 is not > 0"),
])
def test_bad_covariate_values_are_listed_problems(tmp_path, write_nifti, col, value, problem):
    write_nifti(np.full((4, 4, 4), 1.0, np.float32), name="a.nii.gz")
    write_nifti(np.full((4, 4, 4), 2.0, np.float32), name="b.nii.gz")
    good = {"sex": "F", "age": "40", "tiv": "1500"}
    bad = {**good, col: value}
    (tmp_path / "m.csv").write_text(
        "subject_id,image,sex,age,tiv\n"
        f"s1,a.nii.gz,{good['sex']},{good['age']},{good['tiv']}\n"
        f"s2,b.nii.gz,{bad['sex']},{bad['age']},{bad['tiv']}\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path / "m.csv")
    msg = str(e.value)
    assert "m.csv" in msg and "1 problem(s)" in msg and f"row 3 (s2): {problem}" in msg


def test_all_covariate_problems_come_at_once(tmp_path, write_nifti):
    write_nifti(np.full((4, 4, 4), 1.0, np.float32), name="a.nii.gz")
    (tmp_path / "m.csv").write_text("subject_id,image,sex,age\ns1,a.nii.gz,U,old\ns2,nope.nii.gz,M,30\n")
    with pytest.raises(ManifestError, match=r"3 problem\(s\)"):
        load_manifest(tmp_path / "m.csv")


def _bids(tmp_path, write_nifti, root="study"):
    for i, sub in enumerate(["sub-01", "sub-02"]):
        write_nifti(np.full((4, 4, 4), float(i), np.float32),
                    name=f"{root}/{sub}/anat/{sub}_T1w.nii.gz")
    return tmp_path / root


def test_bids_folder_given_as_a_relative_path(tmp_path, write_nifti, monkeypatch):
    root = _bids(tmp_path, write_nifti, "data/study")
    (root / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t30\tM\nsub-02\t40\tF\n")
    monkeypatch.chdir(tmp_path / "data")
    df = discover_bids("study")
    assert df["image"].tolist() == [str(root / "sub-01/anat/sub-01_T1w.nii.gz"),
                                    str(root / "sub-02/anat/sub-02_T1w.nii.gz")]
    assert df["age"].tolist() == [30, 40] and df["sex"].tolist() == [1, 0]
    monkeypatch.chdir(tmp_path)
    assert load_manifest("data/study")["image"].tolist() == df["image"].tolist()


def test_bids_one_scan_copied_into_two_subjects_is_refused(tmp_path, write_nifti):
    for sub in ("sub-01", "sub-02"):
        write_nifti(np.ones((4, 4, 4), np.float32), name=f"study/{sub}/anat/{sub}_T1w.nii.gz")
    with pytest.raises(ManifestError, match="identical bytes") as e:
        discover_bids(tmp_path / "study")
    assert "sub-02_T1w" in str(e.value)


@pytest.mark.parametrize("content, expect", [
    (b"participant_id,age\nsub-01,30\nsub-02,40\n", "separated by ','; BIDS requires tabs"),
    (b"id\tage\nsub-01\t30\nsub-02\t40\n", "has no participant_id column"),
    (b"\x00\x01\x02binary\x00" * 20, "not a text table"),
    (b"participant_id\tage\nsub-01\t30\nsub-01\t31\n", "'sub-01' appears on rows 2, 3"),
    (b"participant_id\tage\n01\t30\n02\t40\n", "no participant_id matches a subject folder"),
    (b"participant_id\tage\nsub-01\t30\nsub-02\t40\t1\t2\n", "cannot parse"),
    (b"participant_id\timage\nsub-01\tx\n", "clash with the manifest's own columns"),
])
def test_bad_participants_tsv_is_a_manifest_error(tmp_path, write_nifti, content, expect):
    root = _bids(tmp_path, write_nifti)
    (root / "participants.tsv").write_bytes(content)
    with pytest.raises(ManifestError) as e:
        discover_bids(root)
    assert e.value.path == str(root / "participants.tsv") and expect in str(e.value)


@pytest.mark.parametrize("content, expect", [
    (b"", "the manifest file is empty"),
    (b"  \n\n", "the manifest file is empty"),
    (b"subject_id,image\n", "the manifest has no subjects"),
    (bytes(range(256)) * 4, "binary data"),
    (gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 400), "gzip-compressed data"),
    (b"PK\x03\x04" + b"\x14\x00" * 50, "Excel .xlsx"),
    ("subject_id,image,notes\ns1,a.nii.gz,M\u00fcller\n".encode("latin-1"), "not UTF-8 text"),
    (b"subject_id,image\ns1,a.nii.gz\ns2,b.nii.gz,extra\n", "cannot parse"),
    (b"subject_id,image\ns1,a.nii.gz,\ns2,b.nii.gz,\n", "more fields than the header"),
])
def test_manifest_that_is_not_a_usable_csv(tmp_path, write_nifti, content, expect):
    write_nifti(np.full((4, 4, 4), 1.0, np.float32), name="a.nii.gz")
    (tmp_path / "m.csv").write_bytes(content)
    with pytest.raises(ManifestError) as e:
        load_manifest(tmp_path / "m.csv")
    assert e.value.path == str(tmp_path / "m.csv") and expect in str(e.value)


@pytest.mark.parametrize("encode", [
    lambda t: t.encode("utf-8-sig"),                    # Excel's "CSV UTF-8" (BOM)
    lambda t: t.encode("utf-16"),                       # "Unicode text" (UTF-16 with BOM)
    lambda t: t.replace(",", ";").encode(),             # European-locale CSV
    lambda t: t.replace(",", " , ").encode(),           # padded header and cells
], ids=["utf8-bom", "utf16-bom", "semicolon", "padded"])
def test_manifest_encodings_and_separators_are_read_correctly(tmp_path, write_nifti, encode):
    a = write_nifti(np.full((4, 4, 4), 1.0, np.float32), name="a.nii.gz")
    (tmp_path / "m.csv").write_bytes(encode("subject_id,image,age\ns1,a.nii.gz,40\n"))
    df = load_manifest(tmp_path / "m.csv")
    assert list(df.columns) == ["subject_id", "image", "age"]
    assert df.loc[0, "subject_id"] == "s1" and df.loc[0, "image"] == str(a) and df.loc[0, "age"] == 40


def test_every_error_here_is_a_neuroxai_error():
    """The classes asserted above are all NeuroXAIError subclasses (what the CLI catches)."""
    for cls in (VolumeFileError, VolumeValueError, VolumeShapeError, AffineMismatchError,
                ManifestError, ConfigError):
        assert issubclass(cls, NeuroXAIError)
