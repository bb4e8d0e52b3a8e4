"""Model-free baselines: maps that ignore the model — the floor any method must beat and the
ceiling no method can exceed.

Adebayo et al. (2018), "Sanity checks for saliency maps", NeurIPS, showed that an edge detector
of the input can look like (and score like) a saliency map; a uniform random map is the chance
level of every localization metric.
"""
from __future__ import annotations

import torch

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


def _neighbours(t: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t[i + 1], t[i - 1])`` along ``axis``, the border replicated (scipy's ``mode="nearest"``)."""
    n = t.shape[axis]
    p = torch.cat([t.narrow(axis, 0, 1), t, t.narrow(axis, n - 1, 1)], axis)
    return p.narrow(axis, 2, n), p.narrow(axis, 0, n)


@METHODS.register("edge_detector")
def edge_detector(model, x, target) -> torch.Tensor:
    """3-D Sobel gradient magnitude ``sqrt(Gd² + Gh² + Gw²)`` of the input (edge-replicated border),
    per input channel. Ignores the model and the target. Returns ``(B, 1, D, H, W)``, x's dtype;
    units: intensity per voxel × 16 (the Sobel smoothing weights).

    Separable and elementwise, in the order of ``scipy.ndimage.sobel(mode="nearest")``: the
    derivative ``[-1, 0, 1]`` along one axis, then the smoothing ``[1, 2, 1]`` along each other
    axis in turn. No convolution kernel and no BLAS, so the result does not depend on the library's
    blocking or thread count (a float64 ``conv3d`` differed from scipy by up to 1e-9 in one run),
    and it is faster on the CPU (0.28 s vs 0.36 s for 8 volumes of 96×112×96)."""
    out = torch.zeros_like(x)
    for a in (2, 3, 4):
        nxt, prv = _neighbours(x, a)
        g = nxt - prv
        for b in (2, 3, 4):
            if b != a:
                nxt, prv = _neighbours(g, b)
                g = g * 2 + (nxt + prv)
        out = out + g * g
    return out.sqrt()


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
