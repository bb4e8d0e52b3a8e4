"""Model-free baselines: maps that ignore the model — the floor any method must beat and the
ceiling no method can exceed.

Adebayo et al. (2018), "Sanity checks for saliency maps", NeurIPS, showed that an edge detector
of the input can look like (and score like) a saliency map; a uniform random map is the chance
level of every localization metric.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import METHODS


#: The model-free maps (registered below): floors and a ceiling a method is judged against, never
#: candidates themselves. The one list of them: the runner, the verdict and the report read it.
BASELINES = ("random", "edge_detector", "oracle")


@METHODS.register("random")
def random(model, x, target, *, seed: int = 0) -> torch.Tensor:
    """Uniform noise in [0, 1) from ``torch.Generator(device=x.device)`` seeded with ``seed``.
    Ignores the model, the input values and the target. Returns ``(B, 1, D, H, W)``, x's dtype."""
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    return torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def sobel_kernels(dtype, device) -> torch.Tensor:
    """``(3, 1, 3, 3, 3)``: the 3-D Sobel–Feldman kernels, derivative ``[-1, 0, 1]`` along one axis
    (D, H, W in turn) and smoothing ``[1, 2, 1]`` along the other two."""
    d = torch.tensor([-1.0, 0.0, 1.0], dtype=dtype, device=device)
    s = torch.tensor([1.0, 2.0, 1.0], dtype=dtype, device=device)
    ks = []
    for axis in range(3):
        k = [s, s, s]
        k[axis] = d
        ks.append(k[0].view(3, 1, 1) * k[1].view(1, 3, 1) * k[2].view(1, 1, 3))
    return torch.stack(ks).unsqueeze(1)


@METHODS.register("edge_detector")
def edge_detector(model, x, target) -> torch.Tensor:
    """3-D Sobel gradient magnitude ``sqrt(Gd² + Gh² + Gw²)`` of the input (edge-replicated border),
    per input channel. Ignores the model and the target. Returns ``(B, 1, D, H, W)``, x's dtype;
    units: intensity per voxel × 16 (the Sobel smoothing weights)."""
    B, C, *shape = x.shape
    xp = F.pad(x.reshape(B * C, 1, *shape), (1,) * 6, mode="replicate")
    g = F.conv3d(xp, sobel_kernels(x.dtype, x.device))
    return g.pow(2).sum(1).sqrt().view(B, C, *shape)


@METHODS.register("oracle")
def oracle(model, x, target, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The ground truth itself as a map (1 inside ``mask``, 0 outside): the ceiling of every
    localization metric (rank and mass accuracy, AUROC and AP are 1). The protocol runner passes the
    task's ground truth as ``mask`` (bool ``(B,1,D,H,W)``). Ignores the model and the target."""
    if mask is None:
        from ..errors import AttributionError

        raise AttributionError("the oracle map needs the ground truth", expected="mask=(B,1,D,H,W) bool",
                               found="mask=None", fix="pass the task's ground-truth mask as mask=")
    return mask.to(device=x.device, dtype=x.dtype)
