"""Model-free baselines: maps any method must beat (Adebayo et al. 2018, "Sanity checks for
saliency maps", showed an edge detector can look like a saliency map)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import METHODS


@METHODS.register("random")
def random(model, x, target, *, seed: int = 0) -> torch.Tensor:
    """Uniform noise in [0, 1) from a seeded generator; ignores the model and the input."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)


@METHODS.register("edge_detector")
def edge_detector(model, x, target) -> torch.Tensor:
    """3-D Sobel gradient magnitude of the input; ignores the model."""
    d = torch.tensor([-1.0, 0.0, 1.0], dtype=x.dtype, device=x.device)
    s = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    out = torch.zeros_like(x)
    for axis in range(3):
        k = [s, s, s]
        k[axis] = d
        ker = k[0].view(3, 1, 1) * k[1].view(1, 3, 1) * k[2].view(1, 1, 3)
        out = out + F.conv3d(F.pad(x, (1,) * 6, mode="replicate"), ker[None, None]) ** 2
    return out.sqrt()
