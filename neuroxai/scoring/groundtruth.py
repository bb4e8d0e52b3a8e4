"""Ground-truth preparation before scoring, on the device: the opposite-hemisphere counterpart
of the true region(s) and a dilation in voxel iterations (or mm, ``data.transforms.dilate_mm``).

Masks are bool ``(B, 1, D, H, W)``; atlases integer label maps on the same grid.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ScoringError


def binary_dilation(mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """``iterations`` steps of a 6-connected (face-neighbour) binary dilation of ``mask: (B,1,D,H,W)``
    bool, with nothing outside the volume: equal to ``scipy.ndimage.binary_dilation(m,
    iterations=n)`` with its default structuring element (``generate_binary_structure(3, 1)``) and
    ``border_value=0`` — what Siegel et al. 2025 dilate their atlas targets with. ``iterations=0``
    returns the mask unchanged."""
    n = int(iterations)
    if n < 0 or n != iterations:
        raise ConfigError("dilation iterations must be an integer ≥ 0", path="scoring.gt_dilation",
                          expected="0, 1, 2, …", found=iterations)
    m = mask.bool()
    if n > 3:
        return _l1_distance(m, n + 1) <= n
    for _ in range(n):
        p = F.pad(m.to(torch.uint8), (1, 1, 1, 1, 1, 1))
        c = p[..., 1:-1, 1:-1, 1:-1]
        m = (c | p[..., :-2, 1:-1, 1:-1] | p[..., 2:, 1:-1, 1:-1] | p[..., 1:-1, :-2, 1:-1]
             | p[..., 1:-1, 2:, 1:-1] | p[..., 1:-1, 1:-1, :-2] | p[..., 1:-1, 1:-1, 2:]).bool()
    return m


def add_contralateral(mask: torch.Tensor, atlas: torch.Tensor, true_region: Sequence[int] | int,
                      pairs: Mapping[int, int]) -> torch.Tensor:
    """``mask`` plus the atlas regions paired with the true regions in the other hemisphere
    (Siegel et al. 2025 score a left-hippocampus target against left ∪ right hippocampus).

    Args:
        mask: ``(B,1,D,H,W)`` bool ground truth.
        atlas: ``(B or 1,1,D,H,W)`` integer labels on the mask's grid.
        true_region: the label(s) carrying the signal.
        pairs: label → its counterpart (``tasks.regions.lateral_pairs``); a label without one
            (a midline region) adds nothing.
    """
    if not torch.is_tensor(atlas) or atlas.ndim != 5 or atlas.shape[2:] != mask.shape[2:]:
        raise ScoringError("atlas does not fit the ground truth", expected=f"(B or 1, 1, {tuple(mask.shape[2:])})",
                           found=tuple(atlas.shape) if torch.is_tensor(atlas) else type(atlas).__name__,
                           fix="resample the atlas onto the map grid with nearest-neighbour interpolation")
    true = [true_region] if isinstance(true_region, int) else list(true_region)
    other = sorted({int(pairs[int(t)]) for t in true if int(t) in pairs} - {int(t) for t in true})
    if not other:
        return mask.bool()
    lab = atlas.to(mask.device).long()
    return mask.bool() | torch.isin(lab, torch.tensor(other, device=mask.device)).expand_as(mask)


def _l1_distance(mask: torch.Tensor, cap: int) -> torch.Tensor:
    """City-block distance of every voxel to ``mask`` (capped at ``cap``), int16, by forward and
    backward min-plus scans along each axis (the L1 metric is separable). ``n`` iterations of a
    6-connected dilation reach exactly the voxels at L1 distance ≤ n (a shortest city-block path
    between two voxels of a box stays in the box): one pass per axis instead of n passes over
    the volume."""
    d = torch.where(mask, 0, cap).to(torch.int16)
    for dim in range(d.ndim - 3, d.ndim):
        n = d.shape[dim]
        for i in range(1, n):  # forward
            cur = d.select(dim, i)
            torch.minimum(cur, d.select(dim, i - 1) + 1, out=cur)
        for i in range(n - 2, -1, -1):  # backward
            cur = d.select(dim, i)
            torch.minimum(cur, d.select(dim, i + 1) + 1, out=cur)
    return d.clamp_max_(cap)
