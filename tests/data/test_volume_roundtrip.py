import nibabel as nib
import numpy as np
import torch

from neuroxai.data import crop_or_pad, load_volume, resample, save_map


def _lps_aniso(write_nifti, rng):
    aff = np.diag([-1.0, -1.2, 1.5, 1.0])
    aff[:3, 3] = [40.0, 30.0, -20.0]
    arr = rng.random((30, 25, 20)).astype(np.float32)
    return write_nifti(arr, aff, "lps.nii.gz"), aff, arr


def test_load_reorients_to_ras_and_keeps_original(write_nifti, rng):
    path, aff, arr = _lps_aniso(write_nifti, rng)
    v = load_volume(path)
    assert v.orientation == "RAS"
    assert v.original.orientation == "LPS"
    assert v.data.shape == (1, 30, 25, 20) and v.data.dtype == torch.float32
    np.testing.assert_allclose(v.spacing, (1.0, 1.2, 1.5), rtol=1e-6)
    # voxel (i, j, k) of the file is at the same world position in the reoriented volume
    world = aff @ np.array([7, 11, 5, 1.0])
    ijk = np.round(np.linalg.inv(v.affine) @ world).astype(int)[:3]
    assert v.data[0, ijk[0], ijk[1], ijk[2]].item() == arr[7, 11, 5]


def test_save_map_peak_lands_on_world_coordinate(write_nifti, rng, tmp_path):
    path, aff, _ = _lps_aniso(write_nifti, rng)
    v = load_volume(path)
    r = crop_or_pad(resample(v, spacing=2.0), (16, 16, 16))
    idx = (5, 9, 6)
    m = torch.zeros(1, *r.shape)
    m[(0, *idx)] = 1.0
    out = save_map(m, r, tmp_path / "map.nii.gz")
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    assert back.shape == (30, 25, 20)
    a = back.get_fdata()
    peak = np.array(np.unravel_index(a.argmax(), a.shape))
    target_in_orig = (np.linalg.inv(aff) @ r.affine @ np.array([*idx, 1.0]))[:3]
    assert np.all(np.abs(peak - target_in_orig) <= 0.5 + 1e-6)


def test_exact_roundtrip_without_resampling(write_nifti, rng, tmp_path):
    path, _, arr = _lps_aniso(write_nifti, rng)
    v = load_volume(path)
    back = nib.load(str(save_map(v.data, v, tmp_path / "same.nii.gz"))).get_fdata()
    assert np.abs(back - arr).max() < 1e-5
