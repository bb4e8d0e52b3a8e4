"""Similarity of two map batches, for model-parameter randomization (Adebayo et al. 2018,
"Sanity checks for saliency maps", NeurIPS): a method whose maps barely change when the model's
weights are randomized does not explain the model. The randomize → re-attribute → compare loop is
orchestrated in ``protocol``; here are only the measures, batched on the device.

All functions take ``a, b: (B,1,D,H,W)`` float and return float64 ``(B,)``. ``mask`` (bool,
``(B,1,D,H,W)`` or ``(1,1,D,H,W)``) restricts a measure to the brain.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError, ScoringError
from .localization import average_ranks

MEASURES = ("spearman", "pearson", "ssim", "topk")
_F64 = torch.float64


def _prep(a, b, mask):
    if a.shape != b.shape or a.ndim != 5:
        raise ScoringError("maps to compare must share one (B,1,D,H,W) shape", expected=tuple(a.shape),
                           found=tuple(b.shape), fix="attribute both models on the same inputs")
    B = a.shape[0]
    x, y = a.reshape(B, -1).to(_F64), b.reshape(B, -1).to(_F64)
    v = (torch.ones_like(x, dtype=torch.bool) if mask is None
         else mask.to(a.device).bool().expand(B, *mask.shape[1:]).reshape(B, -1))
    return x, y, v


def pearson_masked(x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pearson's r per row of ``x, y: (B, K)`` over the entries where ``v`` (bool) holds; a
    constant row gives 0. ``(B,)``."""
    w = v.to(_F64)
    n = w.sum(1, keepdim=True).clamp_min(1)
    xc = (x - (x * w).sum(1, keepdim=True) / n) * w
    yc = (y - (y * w).sum(1, keepdim=True) / n) * w
    den = xc.norm(dim=1) * yc.norm(dim=1)
    # A constant map has no ranking to compare; 0 ("no similarity") rather than NaN.
    return torch.where(den > 0, (xc * yc).sum(1) / torch.where(den > 0, den, 1), 0.0)


def pearson(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation of the raw maps per volume (over ``mask`` voxels)."""
    x, y, v = _prep(a, b, mask)
    return pearson_masked(x, y, v)


def spearman(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation of |a| and |b| per volume, as in Adebayo et al. 2018 (absolute
    maps, since randomization may flip signs): the Pearson correlation of average ranks (ties
    share their mean rank, = ``scipy.stats.spearmanr``), ranks taken among ``mask`` voxels only."""
    x, y, v = _prep(a, b, mask)
    return pearson_masked(average_ranks(x.abs(), v), average_ranks(y.abs(), v), v)


def ssim3d(a: torch.Tensor, b: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004, IEEE TIP 13:600) of 3-D maps with a uniform
    ``window``³ box (clipped to the volume), each map min–max scaled to [0, 1] first (data range 1,
    K1 = 0.01, K2 = 0.03, population variances). Means over the windows that fit entirely inside
    the volume — equal to ``skimage.metrics.structural_similarity(x, y, win_size=window,
    data_range=1, use_sample_covariance=False)`` on the scaled maps."""
    if a.shape != b.shape or a.ndim != 5:
        raise ScoringError("maps to compare must share one (B,1,D,H,W) shape", expected=tuple(a.shape),
                           found=tuple(b.shape))

    def scale(x):
        lo = x.flatten(1).amin(1).view(-1, 1, 1, 1, 1)
        hi = x.flatten(1).amax(1).view(-1, 1, 1, 1, 1)
        return (x - lo) / (hi - lo).clamp_min(1e-12)

    x, y = scale(a.to(_F64)), scale(b.to(_F64))
    k = min(window, *x.shape[2:])
    mx, my = F.avg_pool3d(x, k, 1), F.avg_pool3d(y, k, 1)
    vx = F.avg_pool3d(x * x, k, 1) - mx ** 2
    vy = F.avg_pool3d(y * y, k, 1) - my ** 2
    cxy = F.avg_pool3d(x * y, k, 1) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: float = 0.05, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Share of the top-``k`` fraction of voxels (by |value|, n = round(k·N) ≥ 1 of the ``mask``
    voxels) common to both maps — the "top-k intersection" of Adebayo et al. 2018's follow-ups.
    Ties: stable descending sort (lower flat index first)."""
    if not 0 < float(k) <= 1:
        raise ConfigError("top-k overlap k is a fraction", expected="0 < k ≤ 1", found=k)
    x, y, v = _prep(a, b, mask)
    n = (v.sum(1).to(_F64) * float(k)).round().long().clamp_min(1)
    rank = torch.arange(x.shape[1], device=x.device).view(1, -1)

    def top(z):
        order = torch.sort(torch.where(v, z.abs(), float("-inf")), dim=1, descending=True, stable=True).indices
        sel = torch.zeros_like(v)
        return sel.scatter_(1, order, rank < n.view(-1, 1))

    return (top(x) & top(y)).sum(1).to(_F64) / n.to(_F64)


def similarity(a: torch.Tensor, b: torch.Tensor, measure: str = "spearman", mask: torch.Tensor | None = None,
               k: float = 0.05) -> torch.Tensor:
    """Per-volume similarity of maps ``a`` and ``b`` (``(B,1,D,H,W)``) by ``measure``:
    ``spearman`` (|maps|, ranks), ``pearson``, ``ssim`` (3-D; ignores ``mask``) or ``topk``."""
    if measure == "spearman":
        return spearman(a, b, mask)
    if measure == "pearson":
        return pearson(a, b, mask)
    if measure == "ssim":
        return ssim3d(a, b)
    if measure == "topk":
        return topk_overlap(a, b, k, mask)
    raise ConfigError("unknown similarity measure", path="sanity.model_randomization.measure",
                      expected=list(MEASURES), found=repr(measure))
