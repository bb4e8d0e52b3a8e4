"""One 3-D volume with its affine, loaded from and written back to NIfTI.

Data model: a volume is a ``torch.Tensor`` of shape ``(1, D, H, W)`` (float32) whose axes are the
NIfTI voxel axes ``(i, j, k)``; ``affine`` maps voxel indices to world millimetres. Batches are
``(B, 1, D, H, W)`` with the affines ``(B, 4, 4)`` kept beside them. We never reorient silently:
:func:`load_volume` reorients to RAS+ only when asked (the default), and the original grid is kept
in ``Volume.original`` so that :func:`neuroxai.data.transforms.save_map` can write a map back in the
subject's native space (resampling lives in ``transforms``, which imports this module, never the
reverse).
"""
from __future__ import annotations

import gzip
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
import torch

from ..atomic import atomic_write
from ..safepath import describe_special
from ..errors import (AffineMismatchError, ConfigError, VolumeFileError, VolumeShapeError,
                      VolumeValueError)

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


#: Default cap on one volume's size in memory (MB); ``NEUROXAI_MAX_VOLUME_MB`` overrides it.
MAX_VOLUME_MB_DEFAULT = 2048.0
MAX_VOLUME_MB_ENV = "NEUROXAI_MAX_VOLUME_MB"
_GZIP_MAGIC = b"\x1f\x8b"


def max_volume_mb() -> float:
    """The size cap (MB) for one volume: ``$NEUROXAI_MAX_VOLUME_MB`` or :data:`MAX_VOLUME_MB_DEFAULT`.

    A NIfTI header can declare any shape: a 300 KB ``.nii.gz`` may claim gigabytes (a corrupt or
    hostile file), and reading it would end in a MemoryError or an out-of-memory kill. The cap is
    checked against the header *before* any voxel is read.
    """
    raw = os.environ.get(MAX_VOLUME_MB_ENV)
    if raw is None or raw.strip() == "":
        return MAX_VOLUME_MB_DEFAULT
    try:
        mb = float(raw)
    except ValueError:
        mb = float("nan")
    if not math.isfinite(mb) or mb <= 0:
        raise ConfigError(f"the environment variable {MAX_VOLUME_MB_ENV} is not a positive number",
                          expected="a size in MB, e.g. 4096", found=repr(raw),
                          fix=f"unset it (default {MAX_VOLUME_MB_DEFAULT:g} MB) or set a number of MB")
    return mb


def _declared_bytes(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, int]:
    """``(on_disk, in_memory)`` bytes of the data a header declares.

    In memory a volume is at least float32 (integer files are converted; scaled integer files
    may be float64 while nibabel applies the slope), so the in-memory figure uses
    ``max(itemsize, 4)`` bytes per voxel.
    """
    n = math.prod(int(s) for s in shape)
    return n * dtype.itemsize, n * max(dtype.itemsize, 4)


def _check_header(img, path: str | None, max_mb: float | None) -> None:
    """Refuse, before reading any voxel, what cannot become a float volume on a valid grid."""
    shape = tuple(int(s) for s in img.shape)
    dtype = np.dtype(img.get_data_dtype())
    if len(shape) == 0 or any(s <= 0 for s in shape):
        raise VolumeShapeError("the header declares an empty image", path=path,
                               expected="a positive size along every axis", found=f"shape {shape}",
                               fix="the file is corrupt or empty; re-export it")
    if dtype.fields is not None:
        raise VolumeValueError(
            "the image is an RGB/colour (structured) image, not an intensity volume", path=path,
            expected="one intensity per voxel (int or float)", found=f"data type {dtype}",
            fix="convert it to a single-channel intensity image (e.g. the grey-scale MRI the "
                "colour image was rendered from)")
    if dtype.kind == "c":
        raise VolumeValueError(
            "the image is complex-valued; converting it to real would drop the imaginary part",
            path=path, expected="a real-valued volume", found=f"data type {dtype}",
            fix="save the magnitude (e.g. `fslcomplex -realabs in out`, or "
                "`nib.Nifti1Image(np.abs(data), affine)`) and load that")
    if dtype.kind not in "biuf":
        raise VolumeValueError("the image's data type is not numeric", path=path,
                               expected="an integer or floating-point data type",
                               found=f"data type {dtype}", fix="re-save the image as float32")
    limit = max_volume_mb() if max_mb is None else float(max_mb)
    on_disk, in_mem = _declared_bytes(shape, dtype)
    if in_mem > limit * 2**20:
        raise VolumeFileError(
            "the header declares a volume larger than the size limit; refusing to read it",
            path=path, expected=f"at most {limit:g} MB in memory ({MAX_VOLUME_MB_ENV})",
            found=f"shape {shape} of {dtype} = {on_disk / 2**20:,.0f} MB declared, "
                  f"{in_mem / 2**20:,.0f} MB as float",
            fix=f"if the header is right and the machine has the memory, raise {MAX_VOLUME_MB_ENV}; "
                "otherwise the file is corrupt or not one brain volume (a 1 mm T1 is ~10 MB as float32)")
    affine = img.affine
    if affine is None:
        raise VolumeValueError("the image has no affine (voxel-to-world matrix)", path=path,
                               expected="a 4×4 affine", found="none",
                               fix="set the sform/qform (e.g. `fslorient`) or re-export the image")
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise VolumeValueError("the image's affine is not a finite 4×4 matrix", path=path,
                               expected="finite voxel-to-world numbers", found=f"affine\n{a}",
                               fix="repair the sform/qform (e.g. `fslorient -copyqform2sform`) or "
                                   "re-export the image")
    zooms = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    det = float(np.linalg.det(a[:3, :3]))
    if zooms.min() <= 1e-6 or abs(det) <= 1e-9 * float(np.prod(zooms)):
        raise VolumeValueError(
            "the image's affine is singular: voxels have no volume in world space", path=path,
            expected="an invertible 3×3 part with positive voxel sizes",
            found=f"voxel sizes {tuple(round(float(z), 6) for z in zooms)} mm, determinant {det:.3g}",
            fix="repair the sform/qform (e.g. `fslorient -copyqform2sform`), or check pixdim in "
                "the header")


def _read_gz_checked(path: Path, needed: int, limit_bytes: float) -> bytes:
    """Decompress ``path`` and verify the gzip trailer (CRC-32 and length).

    nibabel stops decompressing once it has the voxels, so a corrupted stream that still
    inflates, or a damaged CRC, would load as wrong numbers. Draining to the end makes the
    gzip module check the trailer; trailing data past the image is read in chunks and dropped.
    """
    with gzip.open(path, "rb") as f:
        raw = f.read(needed)
        if len(raw) < needed:
            raise VolumeFileError(
                "the file holds less data than its header declares (truncated)", path=path,
                expected=f"{needed} bytes of header + voxels", found=f"{len(raw)} bytes",
                fix="re-export or re-copy the file; `gzip -t FILE` tests a .nii.gz")
        extra = 0
        while chunk := f.read(1 << 22):
            extra += len(chunk)
            if extra > limit_bytes:
                raise VolumeFileError(
                    "the file holds far more data than its header declares", path=path,
                    expected=f"{needed} bytes of header + voxels", found=f"> {needed + extra} bytes",
                    fix="the file is corrupt or not NIfTI; re-export it")
    return raw


def _open_image(path_or_img: PathOrImage, max_mb: float | None = None):
    """``(img, path)``: the nibabel image with its header checked, its voxels not yet read."""
    if isinstance(path_or_img, nib.spatialimages.SpatialImage):
        img = path_or_img
        path = img.get_filename()
        _check_header(img, path, max_mb)
        return img, path
    path = Path(path_or_img)
    special = describe_special(path)  # checked before any open: a FIFO or /dev/zero never ends
    if special is not None and special != "a folder":
        raise VolumeFileError(f"is {special}, not a NIfTI file", path=path, expected="a regular .nii or .nii.gz file",
                              found=special, fix="point to the image file itself")
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
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as exc:
        raise VolumeFileError("cannot open the file", path=path, expected="a readable file",
                              found=f"{type(exc).__name__}: {exc}",
                              fix="check the file's permissions") from exc
    is_gz = path.name.lower().endswith(".gz")
    if is_gz and magic and magic != _GZIP_MAGIC:
        raise VolumeFileError("the file is named .nii.gz but is not gzip-compressed", path=path,
                              expected="gzip data (starting 1f 8b)", found=f"first bytes {magic.hex()}",
                              fix="if it is an uncompressed NIfTI, rename it to .nii; otherwise "
                                  "re-export it")
    if not is_gz and magic == _GZIP_MAGIC:
        raise VolumeFileError("the file is named .nii but is gzip-compressed", path=path,
                              expected="uncompressed NIfTI", found="gzip data (starts 1f 8b)",
                              fix="rename it to .nii.gz")
    try:
        img = nib.load(str(path))  # reads the header only
    except Exception as exc:  # nibabel raises many types on bad headers
        raise VolumeFileError(
            "cannot read the image header: the file is truncated, corrupt or not NIfTI",
            path=path, expected="a complete NIfTI-1/2 file", found=f"{type(exc).__name__}: {exc}",
            fix="re-export or re-copy the file; `gzip -t FILE` tests a .nii.gz") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeFileError("not a NIfTI image", path=path, expected="NIfTI-1 or NIfTI-2",
                              found=type(img).__name__, fix="convert the image to NIfTI")
    _check_header(img, str(path), max_mb)
    return img, str(path)


def _read_data(img, path: str | None, max_mb: float | None = None, *,
               from_file: bool = True) -> np.ndarray:
    """The voxels of an image returned by :func:`_open_image`; read problems are VolumeFileErrors.

    ``from_file=False``: the caller passed an image object, whose own data proxy is read.
    """
    if not from_file:
        try:
            return np.asanyarray(img.dataobj)
        except Exception as exc:
            raise VolumeFileError("cannot read the image's data", path=path,
                                  expected="an image whose voxels can be read",
                                  found=f"{type(exc).__name__}: {exc}",
                                  fix="re-load the image from an intact file") from exc
    p = Path(path)
    on_disk, _ = _declared_bytes(img.shape, np.dtype(img.get_data_dtype()))
    # the proxy's offset is the file's vox_offset (the image's header copy has it reset to 0)
    needed = int(getattr(img.dataobj, "offset", 0) or img.header.get_data_offset()) + on_disk
    limit = (max_volume_mb() if max_mb is None else float(max_mb)) * 2**20
    try:
        if p.name.lower().endswith(".gz"):
            # Read now and in full: a truncated or corrupted .nii.gz only fails when decompressed.
            img = type(img).from_bytes(_read_gz_checked(p, needed, limit))
        elif p.stat().st_size < needed:
            raise VolumeFileError(
                "the file holds less data than its header declares (truncated)", path=p,
                expected=f"{needed} bytes of header + voxels", found=f"{p.stat().st_size} bytes",
                fix="re-export or re-copy the file")
        arr = np.asanyarray(img.dataobj)
        # a copy, never a memory map onto a file that may change or be truncated under us
        return np.array(arr) if isinstance(arr, np.memmap) else arr
    except VolumeFileError:
        raise
    except MemoryError as exc:
        raise VolumeFileError(
            "not enough memory to read the image", path=p, expected="a volume that fits in memory",
            found=f"shape {tuple(img.shape)} of {img.get_data_dtype()}",
            fix=f"lower {MAX_VOLUME_MB_ENV} to refuse such files early, or use a larger machine") from exc
    except Exception as exc:  # EOFError, zlib.error, BadGzipFile, OSError, ValueError, ...
        raise VolumeFileError(
            "cannot read the image: the file is truncated, corrupt or not NIfTI",
            path=p, expected="a complete NIfTI-1/2 file", found=f"{type(exc).__name__}: {exc}",
            fix="re-export or re-copy the file; `gzip -t FILE` tests a .nii.gz") from exc


def read_header(path_or_img: PathOrImage, *, max_mb: float | None = None):
    """The nibabel image of a NIfTI file with its header checked and no voxel read.

    Raises the same named errors as :func:`load_volume` does for the header (missing file,
    not NIfTI, complex/RGB data, singular or non-finite affine, declared size over the cap).
    """
    return _open_image(path_or_img, max_mb)[0]


def _read_image(path_or_img: PathOrImage, max_mb: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, object, str | None]:
    """Return ``(array, affine, header, path)``; every read problem becomes a named error."""
    img, path = _open_image(path_or_img, max_mb)
    from_file = not isinstance(path_or_img, nib.spatialimages.SpatialImage)
    arr = _read_data(img, path, max_mb, from_file=from_file)
    return arr, np.asarray(img.affine, dtype=np.float64), img.header, path


def _check_fits_float32(arr: np.ndarray, path, allow_nonfinite: bool) -> None:
    """Finite float64 voxels beyond float32's range (|x| > 3.4e38) are named as such: cast to
    float32 they would turn into Inf and be reported as non-finite voxels."""
    fin = np.isfinite(arr)
    big = fin & (np.abs(np.where(fin, arr, 0.0)) > np.finfo(np.float32).max)
    if big.any():
        raise VolumeValueError(
            "the image holds values too large for float32", path=path,
            expected=f"|values| ≤ {float(np.finfo(np.float32).max):.3g} (neuroxai computes in float32)",
            found=f"{int(big.sum())} finite voxels up to {float(np.abs(arr[big]).max()):.3g} (float64)",
            fix="rescale the map (only its ranking matters for most metrics), e.g. divide by its maximum")


def load_volume(path_or_img: PathOrImage, *, canonical: bool = True, dtype=torch.float32,
                allow_nonfinite: bool = False, max_mb: float | None = None) -> Volume:
    """Load a NIfTI file (or nibabel image) as a :class:`Volume`.

    Args:
        path_or_img: ``.nii``/``.nii.gz`` path or an in-memory nibabel image.
        canonical: reorient to RAS+ by exact axis permutation/flips (no interpolation).
        dtype: tensor dtype (float32 for images; label maps stay exact in float32 up to 2**24).
        allow_nonfinite: accept NaN/Inf voxels (otherwise a :class:`VolumeValueError`).
        max_mb: refuse a file whose header declares more than this many MB in memory, before
            reading it (default :func:`max_volume_mb`: ``$NEUROXAI_MAX_VOLUME_MB`` or 2048).

    Returns:
        ``Volume`` with ``data: (1, D, H, W)``. A 4-D file holding a single volume is squeezed;
        a true 4-D (several volumes), 2-D or 5-D+ file is a :class:`VolumeShapeError`.

    Raises:
        VolumeFileError: missing, unreadable, truncated or corrupt file (the gzip CRC is checked),
            or a header declaring more than ``max_mb``.
        VolumeValueError: complex or RGB data, a singular or non-finite affine, NaN/Inf voxels.
        VolumeShapeError: not one 3-D volume.
    """
    arr, affine, hdr, path = _read_image(path_or_img, max_mb)
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
    if dtype != torch.float64 and np.issubdtype(arr.dtype, np.floating) and arr.dtype.itemsize > 4:
        _check_fits_float32(arr, path, allow_nonfinite)  # 1e300 would become Inf and be called Inf
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
    img = to_nifti(data, affine, dtype)
    return atomic_write(path, write=lambda tmp: nib.save(img, str(tmp)))
