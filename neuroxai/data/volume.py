"""One 3-D volume with its affine, loaded from and written back to NIfTI.

Data model: a volume is a ``torch.Tensor`` of shape ``(1, D, H, W)`` (float32) whose axes are the
NIfTI voxel axes ``(i, j, k)``; ``affine`` maps voxel indices to world millimetres. Batches are
``(B, 1, D, H, W)`` with the affines ``(B, 4, 4)`` kept beside them. We never reorient silently:
:func:`load_volume` reorients to RAS+ only when asked (the default), and the original grid is kept
in ``Volume.original`` so that :func:`save_map` can write a map back in the subject's native space.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
import torch

from ..errors import AffineMismatchError, VolumeFileError, VolumeShapeError, VolumeValueError

PathOrImage = Union[str, Path, nib.spatialimages.SpatialImage]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class Grid:
    """A voxel grid in world space: ``shape (D, H, W)`` and ``affine (4, 4)`` float64."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def orientation(self) -> str:
        return "".join(nib.orientations.aff2axcodes(self.affine))


@dataclass
class Volume:
    """``data: (1, D, H, W)``, ``affine: (4, 4)`` float64 numpy, plus where it came from.

    ``original`` is the grid of the file as stored on disk (before reorientation, resampling
    or cropping) so that maps can be written back to native space.
    """

    data: torch.Tensor
    affine: np.ndarray
    path: str | None = None
    original: Grid | None = None
    header: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[-3:])

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, self.affine)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    @property
    def orientation(self) -> str:
        return self.grid.orientation

    def with_data(self, data: torch.Tensor, affine: np.ndarray | None = None) -> "Volume":
        return replace(self, data=data, affine=self.affine if affine is None else affine)


def _is_nifti_path(p: Path) -> bool:
    name = p.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _read_image(path_or_img: PathOrImage) -> tuple[np.ndarray, np.ndarray, object, str | None]:
    """Return ``(array, affine, header, path)``; every read problem becomes a VolumeFileError."""
    if isinstance(path_or_img, nib.spatialimages.SpatialImage):
        img = path_or_img
        return np.asanyarray(img.dataobj), np.asarray(img.affine, float), img.header, img.get_filename()
    path = Path(path_or_img)
    if not path.exists():
        raise VolumeFileError(
            "file not found", path=path, expected="an existing .nii or .nii.gz file",
            found="no such file", fix="check the path (relative paths in a manifest resolve "
            "against the manifest's folder)")
    if path.is_dir():
        raise VolumeFileError("is a folder, not a NIfTI file", path=path,
                              expected="a .nii or .nii.gz file", found="a directory",
                              fix="point to the image file inside the folder")
    if not _is_nifti_path(path):
        raise VolumeFileError(
            "not a NIfTI file name", path=path, expected="a name ending in .nii or .nii.gz",
            found=f"suffix {''.join(path.suffixes) or '(none)'}",
            fix="convert the image to NIfTI (e.g. dcm2niix for DICOM, mri_convert for .mgz)")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeFileError("not a NIfTI image", path=path, expected="NIfTI-1 or NIfTI-2",
                                  found=type(img).__name__, fix="convert the image to NIfTI")
        # Read now: a truncated .nii.gz only fails when the data are decompressed.
        arr = np.asanyarray(img.dataobj)
    except VolumeFileError:
        raise
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError,
            nib.filebasedimages.ImageFileError) as exc:
        raise VolumeFileError(
            "cannot read the image: the file is truncated, corrupt or not NIfTI",
            path=path, expected="a complete NIfTI-1/2 file", found=f"{type(exc).__name__}: {exc}",
            fix="re-export or re-copy the file; `gzip -t FILE` tests a .nii.gz") from exc
    return arr, np.asarray(img.affine, dtype=np.float64), img.header, str(path)


def load_volume(path_or_img: PathOrImage, *, canonical: bool = True, dtype=torch.float32,
                allow_nonfinite: bool = False) -> Volume:
    """Load a NIfTI file (or nibabel image) as a :class:`Volume`.

    Args:
        path_or_img: ``.nii``/``.nii.gz`` path or an in-memory nibabel image.
        canonical: reorient to RAS+ by exact axis permutation/flips (no interpolation).
        dtype: tensor dtype (float32 for images; label maps stay exact in float32 up to 2**24).
        allow_nonfinite: accept NaN/Inf voxels (otherwise a :class:`VolumeValueError`).

    Returns:
        ``Volume`` with ``data: (1, D, H, W)``. A 4-D file holding a single volume is squeezed;
        a true 4-D (several volumes), 2-D or 5-D+ file is a :class:`VolumeShapeError`.
    """
    arr, affine, hdr, path = _read_image(path_or_img)
    shape = arr.shape
    if arr.ndim > 3 and all(s == 1 for s in shape[3:]):
        arr = arr.reshape(shape[:3])
    elif arr.ndim != 3:
        what = f"a {arr.ndim}-D image"
        if arr.ndim == 4:
            what = f"a 4-D series of {shape[3]} volumes"
        raise VolumeShapeError(
            "expected a single 3-D volume", path=path, expected="shape (X, Y, Z)",
            found=f"{what} of shape {tuple(shape)}",
            fix="split the series (e.g. `fslsplit`) and pass one volume per subject"
            if arr.ndim == 4 else "pass a 3-D NIfTI volume")
    original = Grid(tuple(int(s) for s in arr.shape), affine)
    if canonical:
        ornt = nib.orientations.io_orientation(affine)
        if not np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
            arr = nib.orientations.apply_orientation(arr, ornt)
            affine = affine @ nib.orientations.inv_ornt_aff(ornt, original.shape)
    src_dtype = str(arr.dtype)
    arr = np.asarray(arr, dtype=np.float64 if dtype == torch.float64 else np.float32)
    if not allow_nonfinite:
        bad = ~np.isfinite(arr)
        if bad.any():
            n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            raise VolumeValueError(
                "the image holds non-finite voxels", path=path, expected="finite intensities",
                found=f"{n_nan} NaN and {n_inf} Inf voxels of {arr.size}",
                fix="fix the preprocessing that produced them, or replace them "
                    "(e.g. `fslmaths in -nan out`)")
    data = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype).unsqueeze(0)
    header = {"source_dtype": src_dtype, "zooms": tuple(float(z) for z in hdr.get_zooms()[:3]),
              "original_orientation": original.orientation}
    return Volume(data=data, affine=affine, path=path,
                  original=original, header=header)


def check_same_grid(a: Volume, b: Volume, *, atol_mm: float = 1e-3, what: str = "mask") -> None:
    """Raise if ``b`` (e.g. a mask) does not lie on ``a``'s voxel grid.

    The affine tolerance is in world millimetres: the largest displacement of any corner voxel.
    """
    if a.shape != b.shape:
        raise VolumeShapeError(
            f"the {what} does not have the image's shape", path=b.path,
            expected=f"{a.shape} (the shape of {a.path})", found=f"{b.shape}",
            fix=f"resample the {what} onto the image grid (nearest neighbour), e.g. with "
                "`neuroxai.data.resample_like`")
    err = max_world_distance(a.grid, b.affine)
    if err > atol_mm:
        raise AffineMismatchError(
            f"the {what}'s affine does not match the image's", path=b.path,
            expected=f"the affine of {a.path} (tolerance {atol_mm} mm)",
            found=f"corner voxels differ by up to {err:.4g} mm in world coordinates",
            fix=f"register/resample the {what} to the image, or check that both come from the "
                "same preprocessing run")


def max_world_distance(grid: Grid, other_affine: np.ndarray) -> float:
    """Largest world distance (mm) between the corners of ``grid`` under two affines."""
    d, h, w = grid.shape
    corners = np.array([[i, j, k, 1.0] for i in (0, d - 1) for j in (0, h - 1) for k in (0, w - 1)])
    diff = corners @ (np.asarray(grid.affine) - np.asarray(other_affine)).T
    return float(np.sqrt((diff[:, :3] ** 2).sum(axis=1)).max())


def to_nifti(data: torch.Tensor | np.ndarray, affine: np.ndarray, dtype=np.float32) -> nib.Nifti1Image:
    """A NIfTI image from ``(D, H, W)`` or ``(1, D, H, W)`` data and a 4×4 affine."""
    arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    arr = arr.reshape(arr.shape[-3:]).astype(dtype)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    return img


def save_volume(data: torch.Tensor | np.ndarray, affine: np.ndarray, path: str | Path,
                dtype=np.float32) -> Path:
    """Write ``data`` on the grid ``affine`` to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name}.tmp{suffix}")
    nib.save(to_nifti(data, affine, dtype), str(tmp))
    tmp.replace(path)
    return path


def save_map(tensor: torch.Tensor, like: Volume, path: str | Path, *, mode: str = "bilinear",
             native: bool = True) -> Path:
    """Write an attribution map back as NIfTI.

    Args:
        tensor: ``(D, H, W)``, ``(1, D, H, W)`` or ``(1, 1, D, H, W)`` map on ``like``'s grid.
        like: the volume the map was computed on (its current grid and its original file grid).
        path: output ``.nii``/``.nii.gz``.
        mode: interpolation when resampling back (``"bilinear"`` = trilinear, ``"nearest"``).
        native: resample into the original file's space and affine (default); ``False`` writes
            the map on the model's grid.
    """
    from .transforms import resample_to_grid

    t = tensor.detach().reshape(1, *tensor.shape[-3:]).float()
    if tuple(t.shape[-3:]) != like.shape:
        raise VolumeShapeError("the map is not on the volume's grid", path=path,
                               expected=f"spatial shape {like.shape}", found=f"{tuple(t.shape[-3:])}",
                               fix="pass the Volume the map was computed on as `like`")
    if native and like.original is not None:
        t = resample_to_grid(t, like.affine, like.original, mode=mode)
        affine = like.original.affine
    else:
        affine = like.affine
    return save_volume(t, affine, path)
