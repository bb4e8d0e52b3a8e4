"""Bad input gives an error that names the file, what was expected, what was found and the fix."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from neuroxai.data import check_same_grid, load_volume
from neuroxai.data.dataset import VolumeDataset
from neuroxai.data.manifest import load_manifest
from neuroxai.errors import (AffineMismatchError, VolumeFileError, VolumeShapeError, VolumeValueError)


def test_truncated_gzip_names_file_and_fix(tmp_path, write_nifti):
    p = write_nifti(np.ones((8, 8, 8), np.float32), name="good.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(p.read_bytes()[:60])
    with pytest.raises(VolumeFileError) as e:
        load_volume(bad)
    assert "bad.nii.gz" in str(e.value) and "gzip -t" in str(e.value)


def test_not_nifti_and_missing(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(VolumeFileError, match="x.txt"):
        load_volume(tmp_path / "x.txt")
    with pytest.raises(VolumeFileError, match="nope.nii.gz"):
        load_volume(tmp_path / "nope.nii.gz")


def test_true_4d_is_an_error_single_volume_4d_is_squeezed(write_nifti):
    v = load_volume(write_nifti(np.ones((4, 5, 6, 1), np.float32), name="one.nii.gz"))
    assert v.data.shape == (1, 4, 5, 6)
    with pytest.raises(VolumeShapeError, match="4-D series of 3 volumes"):
        load_volume(write_nifti(np.ones((4, 5, 6, 3), np.float32), name="series.nii.gz"))


def test_nan_voxels_are_counted(write_nifti):
    a = np.ones((6, 6, 6), np.float32)
    a[1, 2, 3] = np.nan
    a[0, 0, 0] = np.inf
    with pytest.raises(VolumeValueError, match="1 NaN and 1 Inf"):
        load_volume(write_nifti(a, name="nan.nii.gz"))
    assert load_volume(write_nifti(a, name="nan2.nii.gz"), allow_nonfinite=True).data.isnan().sum() == 1


def test_mask_on_another_grid(write_nifti):
    img = load_volume(write_nifti(np.ones((6, 6, 6), np.float32), name="img.nii.gz"))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    with pytest.raises(AffineMismatchError, match="2 mm"):
        check_same_grid(img, load_volume(write_nifti(np.ones((6, 6, 6), np.uint8), shifted, "m.nii.gz")))
    with pytest.raises(VolumeShapeError, match=r"\(6, 6, 6\)"):
        check_same_grid(img, load_volume(write_nifti(np.ones((6, 6, 5), np.uint8), name="m2.nii.gz")))


def _manifest(tmp_path, write_nifti, value=1.0):
    rng = np.random.default_rng(0)
    img = (rng.random((10, 12, 8)) * value).astype(np.float32)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    write_nifti(img, aff, "s1_T1w.nii.gz")
    write_nifti((img > 0.5).astype(np.uint8), aff, "s1_brain.nii.gz")
    (tmp_path / "m.csv").write_text("subject_id,image,brain_mask\ns1,s1_T1w.nii.gz,s1_brain.nii.gz\n")
    return load_manifest(tmp_path / "m.csv")


def test_dataset_resamples_normalizes_and_masks(tmp_path, write_nifti):
    m = _manifest(tmp_path, write_nifti)
    it = VolumeDataset(m, keys=("image", "brain_mask"), spacing=4.0)[0]
    assert it["image"].shape == (1, 5, 6, 4) and it["brain_mask"].dtype == torch.bool
    x, b = it["image"][it["brain_mask"]], it["image"][~it["brain_mask"]]
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-3
    assert float(b.abs().max()) == 0.0  # outside the brain set to 0 by z-scoring
    assert np.allclose(it["affine"].numpy()[:3, :3], np.diag([4.0, 4.0, 4.0]))


def test_disk_cache_is_keyed_on_file_content(tmp_path, write_nifti):
    m = _manifest(tmp_path, write_nifti, 1.0)
    cache = tmp_path / "cache"
    a = VolumeDataset(m, keys=("image",), normalize=None, cache="disk", cache_dir=cache)[0]["image"]
    n_files = len(list(cache.iterdir()))
    again = VolumeDataset(m, keys=("image",), normalize=None, cache="disk", cache_dir=cache)[0]["image"]
    assert len(list(cache.iterdir())) == n_files and np.array_equal(a.numpy(), again.numpy())
    _manifest(tmp_path, write_nifti, 3.0)  # same path, new content
    b = VolumeDataset(m, keys=("image",), normalize=None, cache="disk", cache_dir=cache)[0]["image"]
    assert len(list(cache.iterdir())) == n_files + 1
    assert np.allclose(b.numpy(), 3 * a.numpy(), rtol=1e-5)
