"""Similarity of two map batches, for model-parameter randomization (Adebayo et al. 2018):
a method whose maps barely change when the model's weights are randomized does not explain it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ._rank import average_ranks

MEASURES = ("spearman", "pearson", "ssim", "topk")


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean()
    b = b - b.mean()
    den = (a.norm() * b.norm())
    return (a @ b) / den if den > 0 else torch.zeros((), dtype=a.dtype, device=a.device)


def spearman(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation of |a| and |b| per volume (average ranks for ties), ``(B,)``."""
    out = []
    for i in range(a.shape[0]):
        m = mask[i if mask.shape[0] > 1 else 0].flatten() if mask is not None else slice(None)
        x, y = a[i].flatten()[m].abs().double(), b[i].flatten()[m].abs().double()
        out.append(_pearson(average_ranks(x), average_ranks(y)))
    return torch.stack(out)


def pearson(a, b, mask=None) -> torch.Tensor:
    out = []
    for i in range(a.shape[0]):
        m = mask[i if mask.shape[0] > 1 else 0].flatten() if mask is not None else slice(None)
        out.append(_pearson(a[i].flatten()[m].double(), b[i].flatten()[m].double()))
    return torch.stack(out)


def ssim3d(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean 3-D SSIM (Wang et al. 2004) of min-max normalized maps, uniform window, ``(B,)``."""
    def norm(x):
        lo = x.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
        hi = x.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
        return (x - lo) / (hi - lo).clamp_min(1e-12)
    x, y = norm(a.double()), norm(b.double())
    k = min(window, *x.shape[2:])
    mu = lambda t: F.avg_pool3d(t, k, 1)  # noqa: E731
    mx, my = mu(x), mu(y)
    vx, vy, cxy = mu(x * x) - mx ** 2, mu(y * y) - my ** 2, mu(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: float = 0.05, mask=None) -> torch.Tensor:
    """Share of the top-k fraction of voxels (by |value|) common to both maps, ``(B,)``."""
    out = []
    for i in range(a.shape[0]):
        m = mask[i if mask.shape[0] > 1 else 0].flatten() if mask is not None else slice(None)
        x, y = a[i].flatten()[m].abs(), b[i].flatten()[m].abs()
        n = max(1, int(round(k * x.numel())))
        ix = torch.zeros(x.numel(), dtype=torch.bool, device=x.device)
        iy = torch.zeros_like(ix)
        ix[torch.topk(x, n).indices] = True
        iy[torch.topk(y, n).indices] = True
        out.append((ix & iy).sum().double() / n)
    return torch.stack(out)


def similarity(a: torch.Tensor, b: torch.Tensor, measure: str = "spearman", mask: torch.Tensor | None = None,
               k: float = 0.05) -> torch.Tensor:
    """Per-volume similarity of maps ``a`` and ``b`` (``(B,1,D,H,W)``) by ``measure``."""
    if measure == "spearman":
        return spearman(a, b, mask)
    if measure == "pearson":
        return pearson(a, b, mask)
    if measure == "ssim":
        return ssim3d(a, b)
    if measure == "topk":
        return topk_overlap(a, b, k, mask)
    raise ConfigError("unknown similarity measure", expected=list(MEASURES), found=measure)
