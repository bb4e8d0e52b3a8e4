"""Occlusion: the output drop when a 3-D patch of the input is replaced by a baseline value."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import AttributionError
from ._util import chunks, select
from .base import METHODS

UNITS = ("voxel", "mm")
BORDERS = ("clip", "shift")


def _triple(v, name: str) -> tuple[float, float, float]:
    t = (v,) * 3 if isinstance(v, (int, float)) else tuple(v)
    if len(t) != 3 or any(float(a) <= 0 for a in t):
        raise AttributionError(f"occlusion {name} needs 1 or 3 positive values", expected="e.g. 4 or (4, 4, 4)",
                               found=v)
    return t


def window_sizes(patch, stride, unit: str, spacing) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Patch and stride in voxels. ``unit="mm"`` divides by ``spacing`` (mm per voxel along D, H, W,
    e.g. the affine's column norms) and rounds, at least 1 voxel."""
    p, st = _triple(patch, "patch"), _triple(stride, "stride")
    if unit == "voxel":
        if any(float(a) != int(a) for a in p + st):
            raise AttributionError("voxel patch/stride must be whole numbers", found=(patch, stride),
                                   fix="use integers or unit='mm' with spacing")
        return tuple(int(a) for a in p), tuple(int(a) for a in st)
    if unit == "mm":
        if spacing is None:
            raise AttributionError("occlusion with unit='mm' needs the voxel spacing",
                                   expected="spacing=(sd, sh, sw) in mm", found=None,
                                   fix="pass spacing (e.g. from the volume's affine) or use unit='voxel'")
        sp = _triple(spacing, "spacing")
        return (tuple(max(1, round(float(a) / s)) for a, s in zip(p, sp)),
                tuple(max(1, round(float(a) / s)) for a, s in zip(st, sp)))
    raise AttributionError("unknown occlusion unit", expected=list(UNITS), found=repr(unit))


def _indicators(size: int, k: int, t: int, border: str, device) -> torch.Tensor:
    """``(n, size)`` bool: row ``i`` marks the voxels of window ``i``. Windows start at 0, t, 2t, …
    until one reaches the far border; that last one is clipped there (``border="clip"``, Captum's
    ``Occlusion``) or shifted back to end at the border (``"shift"``, MONAI's sliding windows)."""
    n = math.ceil((size - k) / t) + 1
    pos = torch.arange(size, device=device)
    start = torch.arange(n, device=device).unsqueeze(1) * t
    if border == "shift":
        start = start.clamp_max(size - k)
    return (pos >= start) & (pos < start + k)


@METHODS.register("occlusion")
@torch.no_grad()
def occlusion(model, x, target, *, patch=4, stride=2, baseline: float = 0.0, unit: str = "voxel",
              spacing: Sequence[float] | None = None, batch_patches: int | None = None,
              border: str = "clip") -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014, "Visualizing and understanding convolutional
    networks", ECCV): each voxel gets the mean of ``f(x) − f(x with a patch set to baseline)`` over
    the patches that cover it.

    Windows of ``patch`` voxels slide with ``stride`` along D, H, W from the corner until one
    reaches the far border, so every voxel is covered. ``border="clip"`` (default) clips that last
    window at the border — the convention of Captum ``Occlusion(sliding_window_shapes=(1, *patch),
    strides=(1, *stride))``, which this equals; ``border="shift"`` moves it back to end at the border
    — MONAI ``OcclusionSensitivity(mask_size=patch, mode=baseline, activate=False)`` with
    ``int(patch·(1 − overlap)) = stride``, whose map is ``f(x) − ours``.

    ``unit="mm"`` converts ``patch``/``stride`` with ``spacing`` (mm per voxel). ``batch_patches``
    occluded copies (× B volumes) go through one forward (``None``: the chunk planner, ≤ 2²²
    voxels per pass on CPU, sized to free memory on a GPU). Masks are built and results scattered
    with separable indicator products and one ``einsum`` (no Python loop over patches). No
    autograd. Cost: ``n_patches × B`` forward-only volumes. Returns ``(B, 1, D, H, W)``, output units.
    """
    p, st = window_sizes(patch, stride, unit, spacing)
    B, C, *shape = x.shape
    if any(k > s for k, s in zip(p, shape)):
        raise AttributionError("occlusion patch larger than the volume", expected=f"≤ {tuple(shape)} voxels",
                               found=p, fix="use a smaller patch")
    if border not in BORDERS:
        raise AttributionError("unknown occlusion border rule", expected=list(BORDERS), found=repr(border))
    ind = [_indicators(s, k, t, border, x.device) for s, k, t in zip(shape, p, st)]
    ni, nj, nk = (m.shape[0] for m in ind)
    n_patches = ni * nj * nk
    ref = select(model(x), target)
    drops = torch.empty((n_patches, B), dtype=x.dtype, device=x.device)
    for s, m in chunks(n_patches, B, x, batch_patches):
        q = torch.arange(s, s + m, device=x.device)
        i, j, k = q // (nj * nk), (q // nk) % nj, q % nk
        mask = ind[0][i][:, :, None, None] & ind[1][j][:, None, :, None] & ind[2][k][:, None, None, :]
        xs = torch.where(mask[:, None, None], torch.as_tensor(baseline, dtype=x.dtype, device=x.device),
                         x.unsqueeze(0))
        tgt = None if target is None else target.repeat(m)
        drops[s:s + m] = ref.unsqueeze(0) - select(model(xs.view(m * B, C, *shape)), tgt).view(m, B)
    f = [a.to(x.dtype) for a in ind]
    total = torch.einsum("ijkb,id,jh,kw->bdhw", drops.view(ni, nj, nk, B), *f)
    count = torch.einsum("d,h,w->dhw", *(a.sum(0) for a in f))
    return (total / count).unsqueeze(1).expand(B, C, *shape).contiguous()


@METHODS.register("atlas_occlusion", needs=("atlas", "mean_image"))
@torch.no_grad()
def atlas_occlusion(model, x, target, *, atlas: torch.Tensor | None = None, mean_image: torch.Tensor | None = None,
                    batch_regions: int | None = None) -> torch.Tensor:
    """AtlasOcclusion (Siegel et al. 2025, ``3-compute_explanations/xai_methods.py``): a causal
    reference map. For each atlas region ``r`` (label > 0) the region is set to the mean of
    ``mean_image`` over it, and every voxel of ``r`` gets ``|f(x) − f(x with r replaced)| / |r|``
    — the output change per voxel of the region, so large regions are not favoured.

    ``atlas: (B or 1, 1, D, H, W)`` integer labels on ``x``'s grid (0 = background); ``mean_image``:
    ``(1, 1, D, H, W)`` (the training-split mean image: the runner passes it) or a number. The
    study takes the replacement from its MNI atlas on the mean image, one value per region; with a
    per-subject atlas here it is the mean image's mean over that subject's region (the same when
    the atlas is shared). ``f``: the target's logit (the study's regression output). Voxels in no
    region get 0. ``batch_regions`` occluded copies (× B) per forward (``None``: the chunk
    planner). No autograd. Cost: ``n_regions × B`` forward-only volumes. Returns ``(B, 1, D, H, W)``.
    """
    if atlas is None or mean_image is None:
        raise AttributionError("atlas_occlusion needs an atlas and the mean image",
                               expected="atlas=(B,1,D,H,W) int labels, mean_image=(1,1,D,H,W) or a number",
                               found={"atlas": None if atlas is None else tuple(atlas.shape),
                                      "mean_image": None if mean_image is None else "given"},
                               fix="run it from a protocol (the runner passes both), or pass them")
    B, C, *shape = x.shape
    lab = atlas.to(x.device).long()
    if lab.ndim != 5 or tuple(lab.shape[2:]) != tuple(shape) or lab.shape[0] not in (1, B):
        raise AttributionError("atlas_occlusion's atlas must be on the input's grid",
                               expected=f"(1 or {B}, 1, {', '.join(map(str, shape))})", found=tuple(lab.shape),
                               fix="resample the atlas to the model grid (nearest neighbour)")
    lab = lab.expand(B, 1, *shape)
    fill = torch.as_tensor(mean_image, dtype=x.dtype, device=x.device).expand(B, 1, *shape)
    regions = torch.unique(lab)
    regions = regions[regions > 0]
    ref = select(model(x), target)
    out = torch.zeros((B, 1, *shape), dtype=x.dtype, device=x.device)
    for s, m in chunks(int(regions.numel()), B, x, batch_regions):
        r = regions[s:s + m]
        masks = lab.unsqueeze(0) == r.view(m, 1, 1, 1, 1, 1)  # (m, B, 1, D, H, W)
        size = masks.flatten(2).sum(2).to(x.dtype)  # (m, B)
        value = (fill.unsqueeze(0) * masks).flatten(2).sum(2) / size.clamp_min(1)
        xs = torch.where(masks, value.view(m, B, 1, 1, 1, 1), x.unsqueeze(0))
        tgt = None if target is None else target.repeat(m)
        delta = (ref.unsqueeze(0) - select(model(xs.view(m * B, C, *shape)), tgt).view(m, B)).abs()
        per_voxel = torch.where(size > 0, delta / size.clamp_min(1), 0.0)
        out += (masks * per_voxel.view(m, B, 1, 1, 1, 1)).sum(0)
    return out.expand(B, C, *shape).contiguous() if C != 1 else out
