"""Map preprocessing before scoring, on the device: polarity and Gaussian smoothing in mm.

Both steps act on ``attr: (B, 1, D, H, W)`` float and keep its shape, dtype and device.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

POLARITIES = ("positive", "absolute", "negative", "raw")

#: σ = FWHM / FWHM_PER_SIGMA for a Gaussian; FWHM_PER_SIGMA = 2 √(2 ln 2) ≈ 2.3548.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def apply_polarity(attr: torch.Tensor, polarity: str = "positive") -> torch.Tensor:
    """Select which sign of relevance counts as evidence.

    ``positive``: max(a, 0) (evidence *for* the target, the convention of Arras et al. 2022);
    ``absolute``: |a| (evidence of either sign, as in Adebayo et al. 2018's comparisons);
    ``negative``: max(−a, 0) (evidence *against*); ``raw``: unchanged.
    """
    if polarity == "positive":
        return attr.clamp_min(0)
    if polarity == "absolute":
        return attr.abs()
    if polarity == "negative":
        return (-attr).clamp_min(0)
    if polarity == "raw":
        return attr
    raise ConfigError("unknown polarity", path="scoring.polarity", expected=list(POLARITIES),
                      found=repr(polarity), fix="use one of the listed polarities")


def gaussian_kernel_1d(sigma_vox: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalized 1-D Gaussian of standard deviation ``sigma_vox`` voxels, truncated at ±⌈3σ⌉
    (at least ±1 voxel), sampled at integer offsets: ``(2r+1,)``."""
    r = max(1, int(math.ceil(3.0 * sigma_vox)))
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (t / sigma_vox) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_smooth(x: torch.Tensor, fwhm_mm: float, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Separable 3-D Gaussian smoothing of ``x: (B, 1, D, H, W)`` (or any ``(..., D, H, W)``).

    The kernel has full width at half maximum ``fwhm_mm`` in millimetres; on axis i its standard
    deviation in voxels is ``σ_i = FWHM / (2 √(2 ln 2)) / spacing[i]`` (the SPM/FSL convention).
    Three 1-D convolutions with zero padding: mass that would leave the volume is lost, so
    relevance near the border is not mirrored back in. ``fwhm_mm = 0`` returns ``x`` unchanged.
    """
    if fwhm_mm == 0:
        return x
    if not (fwhm_mm > 0 and math.isfinite(fwhm_mm)):
        raise ConfigError("smoothing FWHM must be a finite number ≥ 0 (mm)", path="scoring.smooth_fwhm_mm",
                          expected="≥ 0", found=fwhm_mm, fix="use 0 for no smoothing")
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ConfigError("voxel spacing must be three positive numbers (mm)", expected="(sd, sh, sw) > 0",
                          found=spacing)
    sigma_mm = fwhm_mm / FWHM_PER_SIGMA
    out = x.reshape(-1, 1, *x.shape[-3:])
    for axis, sp in enumerate(spacing):
        k = gaussian_kernel_1d(sigma_mm / sp, dtype=x.dtype, device=x.device)
        r = (k.numel() - 1) // 2
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0]
        pad[axis] = r
        out = F.conv3d(out, k.view(shape), padding=tuple(pad))
    return out.reshape(x.shape)
