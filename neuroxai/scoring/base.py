"""``score()``: every localization metric of a batch of maps, on the device, in one call."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..errors import MaskError, ScoringError
from ..registry import Registry
from .preprocess import apply_polarity, gaussian_smooth

METRICS: Registry = Registry("metric")


def score(attr: torch.Tensor, mask: torch.Tensor, metrics: Sequence[str] | Mapping[str, dict],
          brain_mask: torch.Tensor | None = None, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
          polarity: str = "positive", smooth_fwhm_mm: float = 0.0) -> dict[str, torch.Tensor]:
    """Score maps against ground-truth masks.

    Args:
        attr: ``(B,1,D,H,W)`` float maps.
        mask: ``(B,1,D,H,W)`` bool ground truth (every subject needs ≥ 1 voxel).
        metrics: names, or ``{name: params}`` (e.g. ``{"pointing_game": {"tolerance_mm": 4}}``).
        brain_mask: bool, ``(B,1,D,H,W)`` or ``(1,1,D,H,W)``; voxels outside take no part.
        spacing: voxel size in mm (smoothing, pointing-game tolerance).
        polarity: ``positive`` | ``absolute`` | ``negative`` | ``raw``.
        smooth_fwhm_mm: Gaussian smoothing of the maps before scoring (0 = none).

    Returns:
        ``{name: (B,), name_chance: (B,), name_norm: (B,)}`` float64 on the device, where
        ``norm = (score − chance) / (1 − chance)`` (1 = perfect, 0 = chance).
    """
    if attr.ndim != 5 or attr.shape[1] != 1:
        raise ScoringError("maps must be (B, 1, D, H, W)", expected="5-D, one channel", found=tuple(attr.shape))
    if mask.shape != attr.shape:
        raise ScoringError("mask and map shapes differ", expected=tuple(attr.shape), found=tuple(mask.shape),
                           fix="resample the mask onto the map's grid (nearest)")
    if not torch.isfinite(attr).all():
        bad = (~torch.isfinite(attr)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ScoringError("maps contain NaN/Inf", expected="finite values", found=f"subjects at batch index {bad}",
                           fix="check the attribution method (e.g. division by zero in a custom map)")
    mask = mask.bool()
    valid = torch.ones_like(mask) if brain_mask is None else brain_mask.bool().expand_as(mask)
    empty = ((mask & valid).flatten(1).sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise MaskError("empty ground-truth mask (inside the brain mask)", expected="≥ 1 voxel",
                        found=f"0 voxels for batch index {empty}",
                        fix="exclude subjects without ground truth (e.g. no lesion) from scoring")
    a = apply_polarity(attr, polarity)
    if smooth_fwhm_mm > 0:
        a = gaussian_smooth(a, smooth_fwhm_mm, spacing)
    items = metrics.items() if isinstance(metrics, Mapping) else ((m, {}) for m in metrics)
    out: dict[str, torch.Tensor] = {}
    for name, params in items:
        fn = METRICS[name]
        res = fn(a, mask, valid, spacing=spacing, **(params or {}))
        extra = res[2] if len(res) == 3 else {}
        for key, (s, ch) in {name: res[:2], **extra}.items():
            s, ch = s.double(), ch.double()
            out[key] = s
            out[f"{key}_chance"] = ch
            if key == "region_rank":
                out[f"{key}_norm"] = (ch - s) / (ch - 1).clamp_min(1e-12)
            else:
                out[f"{key}_norm"] = (s - ch) / (1 - ch).clamp_min(1e-12)
    return out
