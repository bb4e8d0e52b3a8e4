"""Spatial and intensity transforms on tensors with their affines.

Every spatial transform goes through one world-coordinate resampler,
:func:`resample_to_grid`: for each voxel of the target grid, find its world position, map it into
the source grid's voxel coordinates and interpolate (``torch.nn.functional.grid_sample``). So
reorientation, resampling to a spacing, crop/pad and writing back to native space are all exact
inverses of each other up to interpolation, and they run on whatever device the tensor is on.

Units: spacings and margins are in millimetres, shapes in voxels.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, MaskError, VolumeShapeError
from .volume import Grid, Volume, save_volume


def _voxel_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """4×4 matrix mapping destination voxel indices to source voxel indices."""
    return np.linalg.inv(np.asarray(src_affine, np.float64)) @ np.asarray(dst_affine, np.float64)


def resample_to_grid(data: torch.Tensor, src_affine: np.ndarray, dst: Grid, *,
                     mode: str = "bilinear", padding_value: float = 0.0) -> torch.Tensor:
    """Resample ``data: (..., D, H, W)`` from ``src_affine`` onto grid ``dst``.

    Args:
        data: ``(D,H,W)``, ``(C,D,H,W)`` or ``(B,C,D,H,W)`` on any device.
        src_affine: 4×4 voxel→world of ``data``.
        dst: the target grid (shape + affine).
        mode: ``"bilinear"`` (trilinear, for intensities and maps) or ``"nearest"`` (label maps).
        padding_value: value outside the source field of view.

    Returns:
        tensor with the same leading dims and spatial shape ``dst.shape``.
    """
    if mode not in ("bilinear", "nearest"):
        raise ConfigError("unknown interpolation mode", expected="'bilinear' or 'nearest'", found=mode)
    lead = data.shape[:-3]
    src_shape = data.shape[-3:]
    x = data.reshape(-1, 1, *src_shape)
    m = _voxel_map(src_affine, dst.affine)
    if np.allclose(m, np.eye(4), atol=1e-6) and tuple(src_shape) == tuple(dst.shape):
        return data.clone()
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dev = x.device
    d, h, w = dst.shape
    # Source voxel coordinates of every destination voxel, built separably: M @ [i, j, k, 1].
    mt = torch.as_tensor(m, dtype=torch.float64, device=dev)
    ii = torch.arange(d, dtype=torch.float64, device=dev)
    jj = torch.arange(h, dtype=torch.float64, device=dev)
    kk = torch.arange(w, dtype=torch.float64, device=dev)
    coords = (mt[:3, 0].view(3, 1, 1, 1) * ii.view(1, d, 1, 1)
              + mt[:3, 1].view(3, 1, 1, 1) * jj.view(1, 1, h, 1)
              + mt[:3, 2].view(3, 1, 1, 1) * kk.view(1, 1, 1, w)
              + mt[:3, 3].view(3, 1, 1, 1))
    # Normalize to [-1, 1] with align_corners=True (index 0 -> -1, index n-1 -> +1);
    # grid_sample wants the last dim ordered (W, H, D).
    sizes = torch.tensor([max(s - 1, 1) for s in src_shape], dtype=torch.float64, device=dev)
    norm = coords / sizes.view(3, 1, 1, 1) * 2 - 1
    for axis, s in enumerate(src_shape):
        if s == 1:  # a singleton axis: sample its only plane, out-of-range is outside
            norm[axis] = torch.where(coords[axis].abs() <= 0.5, 0.0, 2.0)
    grid = norm.flip(0).permute(1, 2, 3, 0).unsqueeze(0).to(compute_dtype)
    grid = grid.expand(x.shape[0], d, h, w, 3)
    xs = x.to(compute_dtype)
    if padding_value != 0.0:
        xs = xs - padding_value
    out = F.grid_sample(xs, grid, mode=mode, padding_mode="zeros", align_corners=True)
    if padding_value != 0.0:
        out = out + padding_value
    return out.to(data.dtype).reshape(*lead, d, h, w)


def target_grid(grid: Grid, spacing: float | Sequence[float] | None = None,
                shape: Sequence[int] | None = None, *, source=None) -> Grid:
    """The grid covering ``grid``'s field of view with a new ``spacing`` (mm) and/or ``shape``.

    Directions are kept; the field-of-view centre is kept. With only ``shape``, the spacing
    is chosen so the same extent is covered; with both, the grid is centred on the old centre.
    A grid too large to hold is a :class:`VolumeShapeError` naming ``source`` (the volume's file).
    """
    old_sp = np.array(grid.spacing)
    old_shape = np.array(grid.shape, dtype=float)
    if spacing is None and shape is None:
        return grid
    if spacing is not None:
        sp = np.broadcast_to(np.asarray(spacing, float), (3,)).copy()
        if (sp <= 0).any():
            raise ConfigError("spacing must be positive (mm)", expected="> 0", found=tuple(sp))
    else:
        sp = old_sp * old_shape / np.asarray(shape, float)
    new_shape = (np.asarray(shape, int) if shape is not None
                 else np.maximum(1, np.round(old_shape * old_sp / sp - 1e-6)).astype(int))
    _check_target_size(old_shape, old_sp, new_shape, sp, source)
    direction = grid.affine[:3, :3] / old_sp
    centre_vox_old = (old_shape - 1) / 2
    centre_world = grid.affine[:3, :3] @ centre_vox_old + grid.affine[:3, 3]
    aff = np.eye(4)
    aff[:3, :3] = direction * sp
    aff[:3, 3] = centre_world - aff[:3, :3] @ ((new_shape - 1) / 2)
    return Grid(tuple(int(s) for s in new_shape), aff)


def _check_target_size(old_shape, old_sp, new_shape, sp, source=None) -> None:
    """A volume whose voxels are absurdly large (8,000 mm: a header in µm or a broken affine)
    resampled to a few mm would allocate terabytes: refused before, naming both spacings."""
    from .. import limits as L

    n = int(np.prod(np.asarray(new_shape, dtype=float)))
    if n > L.grid_voxels_limit() or max(new_shape) > L.MAX_GRID_SIDE:
        raise VolumeShapeError(
            "resampling this volume would make a grid no machine can hold", path=source,
            expected=f"a grid of at most {L.grid_voxels_limit():,} voxels and {L.MAX_GRID_SIDE} per side "
                     "($NEUROXAI_MAX_VOLUME_MB)",
            found=f"{tuple(int(s) for s in old_shape)} voxels of {tuple(round(float(v), 4) for v in old_sp)} mm → "
                  f"{tuple(int(s) for s in new_shape)} voxels of {tuple(round(float(v), 4) for v in sp)} mm ({n:,} voxels)",
            fix="check the image's voxel size in its header (mm, not µm) and its affine; or fix the protocol's "
                "data.spacing_mm / data.shape")


def resample(vol: Volume, spacing: float | Sequence[float] | None = None,
             shape: Sequence[int] | None = None, *, mode: str = "bilinear") -> Volume:
    """Resample ``vol`` to a spacing (mm) and/or shape (voxels); see :func:`target_grid`.

    Use ``mode="nearest"`` for label maps and masks, ``"bilinear"`` (trilinear) for intensities.
    """
    g = target_grid(vol.grid, spacing, shape, source=vol.path)
    return vol.with_data(resample_to_grid(vol.data, vol.affine, g, mode=mode), g.affine)


def resample_like(vol: Volume, like: Volume | Grid, *, mode: str = "nearest") -> Volume:
    """Resample ``vol`` onto the grid of ``like`` (default nearest: masks and label maps)."""
    g = like.grid if isinstance(like, Volume) else like
    return vol.with_data(resample_to_grid(vol.data, vol.affine, g, mode=mode), g.affine)


def crop_or_pad(vol: Volume, shape: Sequence[int], *, value: float = 0.0) -> Volume:
    """Centre-crop or zero-pad ``vol`` to ``shape`` voxels; the affine follows (no resampling)."""
    data = vol.data
    shape = tuple(int(s) for s in shape)
    offsets = []
    pads = []
    slices = [slice(None)] * (data.ndim - 3)
    for n_old, n_new in zip(vol.shape, shape):
        diff = n_old - n_new
        if diff >= 0:  # crop
            start = diff // 2
            slices.append(slice(start, start + n_new))
            pads.append((0, 0))
            offsets.append(start)
        else:
            before = (-diff) // 2
            slices.append(slice(None))
            pads.append((before, -diff - before))
            offsets.append(-before)
    out = data[tuple(slices)]
    flat = [p for pair in reversed(pads) for p in pair]
    if any(flat):
        out = F.pad(out, flat, value=value)
    aff = vol.affine.copy()
    aff[:3, 3] = vol.affine[:3, :3] @ np.asarray(offsets, float) + vol.affine[:3, 3]
    return vol.with_data(out.contiguous(), aff)


def normalize_intensity(x: torch.Tensor, brain_mask: torch.Tensor | None = None, *,
                        method: str = "zscore", percentiles: tuple[float, float] = (0.5, 99.5),
                        eps: float = 1e-6) -> torch.Tensor:
    """Normalize intensities per volume.

    Args:
        x: ``(..., D, H, W)`` float; each leading index is one volume.
        brain_mask: bool, same shape (or broadcastable); statistics come from inside it.
        method: ``"zscore"`` (mean 0, sd 1 inside the mask; voxels outside are set to 0) or
            ``"percentile"`` (``percentiles`` map to 0 and 1, clipped).
    """
    lead = x.shape[:-3]
    flat = x.reshape(-1, int(np.prod(x.shape[-3:])))
    if brain_mask is None:
        m = torch.ones_like(flat, dtype=torch.bool)
    else:
        m = brain_mask.expand_as(x).reshape(flat.shape).bool()
        if (m.sum(1) == 0).any():
            raise MaskError("the brain mask is empty for at least one volume",
                            expected="a mask with brain voxels", found="0 voxels",
                            fix="check the brain mask file, or normalize without one")
    if method == "zscore":
        n = m.sum(1, keepdim=True).clamp_min(1)
        mean = (flat * m).sum(1, keepdim=True) / n
        var = (((flat - mean) * m) ** 2).sum(1, keepdim=True) / n
        out = (flat - mean) / (var.sqrt() + eps)
        if brain_mask is not None:
            out = out * m
    elif method == "percentile":
        lo_q, hi_q = percentiles[0] / 100, percentiles[1] / 100
        los, his = [], []
        for row, mr in zip(flat, m):
            vals = row[mr]
            q = torch.quantile(vals.float() if vals.numel() <= 16_000_000 else vals[:: max(1, vals.numel() // 16_000_000)].float(),
                               torch.tensor([lo_q, hi_q], device=x.device))
            los.append(q[0])
            his.append(q[1])
        lo = torch.stack(los).view(-1, 1).to(flat.dtype)
        hi = torch.stack(his).view(-1, 1).to(flat.dtype)
        out = ((flat - lo) / (hi - lo + eps)).clamp(0, 1)
    else:
        raise ConfigError("unknown intensity normalization", expected="'zscore' or 'percentile'",
                          found=method)
    return out.reshape(*lead, *x.shape[-3:])


def dilate_mm(mask: torch.Tensor, margin_mm: float, spacing: Sequence[float]) -> torch.Tensor:
    """Dilate bool ``mask: (B,1,D,H,W)`` by an ellipsoid of radius ``margin_mm`` (per-axis spacing).

    One 3-D max-pool over the ellipsoid's bounding box would over-dilate, so this is a
    convolution with the ellipsoidal kernel, thresholded (exact for any spacing).
    """
    if margin_mm <= 0:
        return mask.bool()
    radii = [int(math.floor(margin_mm / s + 1e-9)) for s in spacing]
    zz, yy, xx = torch.meshgrid(*[torch.arange(-r, r + 1, dtype=torch.float32) for r in radii],
                                indexing="ij")
    ker = ((zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2
           <= margin_mm ** 2 + 1e-6).float().to(mask.device)
    x = mask.float().reshape(-1, 1, *mask.shape[-3:])
    out = F.conv3d(x, ker[None, None], padding=tuple(radii)) > 0.5
    return out.reshape(mask.shape)


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
