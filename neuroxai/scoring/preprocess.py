"""Map preprocessing before scoring, on the device: polarity and Gaussian smoothing in mm."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

POLARITIES = ("positive", "absolute", "negative", "raw")


def apply_polarity(attr: torch.Tensor, polarity: str = "positive") -> torch.Tensor:
    """``positive``: max(a, 0); ``absolute``: |a|; ``negative``: max(−a, 0); ``raw``: unchanged."""
    if polarity == "positive":
        return attr.clamp_min(0)
    if polarity == "absolute":
        return attr.abs()
    if polarity == "negative":
        return (-attr).clamp_min(0)
    if polarity == "raw":
        return attr
    raise ConfigError("unknown polarity", expected=list(POLARITIES), found=polarity)


def gaussian_smooth(x: torch.Tensor, fwhm_mm: float, spacing: Sequence[float]) -> torch.Tensor:
    """Separable 3-D Gaussian of full width at half maximum ``fwhm_mm`` (σ = FWHM / (2√(2 ln 2)),
    per axis in voxels = σ / spacing), zero padding, for ``x: (B, 1, D, H, W)``."""
    if fwhm_mm <= 0:
        return x
    sigma_mm = fwhm_mm / (2 * math.sqrt(2 * math.log(2)))
    out = x.reshape(-1, 1, *x.shape[-3:])
    for axis, sp in enumerate(spacing):
        s = sigma_mm / sp
        r = max(1, int(math.ceil(3 * s)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / s) ** 2)
        k = k / k.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = 2 * r + 1
        pad = [0, 0, 0]
        pad[axis] = r
        out = F.conv3d(out, k.view(shape), padding=tuple(pad))
    return out.reshape(x.shape)
