"""Occlusion (Zeiler & Fergus 2014): the output drop when a 3-D patch is replaced by a baseline."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..errors import AttributionError
from ._util import select
from .base import METHODS


def _triple(v, name) -> tuple[int, int, int]:
    t = (v,) * 3 if isinstance(v, (int, float)) else tuple(v)
    if len(t) != 3:
        raise AttributionError(f"{name} needs 1 or 3 values", found=v)
    return t


@METHODS.register("occlusion")
@torch.no_grad()
def occlusion(model, x, target, *, patch=4, stride=2, baseline: float = 0.0, unit: str = "voxel",
              spacing: Sequence[float] | None = None, batch_patches: int = 32) -> torch.Tensor:
    """Each voxel gets the mean of ``f(x) − f(x with patch occluded)`` over the patches covering it
    (Captum's ``Occlusion`` convention). Patches slide with ``stride`` from the corner until one
    reaches the far border (that last one clipped), so every voxel is covered. ``unit="mm"`` converts
    ``patch``/``stride`` with ``spacing``. Patches are batched ``batch_patches`` at a time."""
    if unit == "mm":
        if spacing is None:
            raise AttributionError("unit='mm' needs spacing", expected="(sx, sy, sz) in mm", found=None)
        patch = tuple(max(1, round(p / s)) for p, s in zip(_triple(patch, "patch"), spacing))
        stride = tuple(max(1, round(p / s)) for p, s in zip(_triple(stride, "stride"), spacing))
    p, st = _triple(patch, "patch"), _triple(stride, "stride")
    B, C, *shape = x.shape
    # As Captum: windows start at 0, t, 2t, ... until one reaches the border (the last one is
    # clipped there), so every voxel is covered.
    n = [math.ceil((s - k) / t) + 1 if s >= k else 0 for s, k, t in zip(shape, p, st)]
    if min(n) < 1:
        raise AttributionError("patch larger than the volume", expected=f"≤ {shape}", found=p)
    starts = [(i * st[0], j * st[1], k * st[2]) for i in range(n[0]) for j in range(n[1]) for k in range(n[2])]
    ref = select(model(x), target)
    total = torch.zeros_like(x)
    count = torch.zeros((1, 1, *shape), dtype=x.dtype, device=x.device)
    for c0 in range(0, len(starts), batch_patches):
        chunk = starts[c0:c0 + batch_patches]
        m = len(chunk)
        xs = x.unsqueeze(0).repeat(m, 1, 1, 1, 1, 1)
        for q, (a, b, c) in enumerate(chunk):
            xs[q, :, :, a:a + p[0], b:b + p[1], c:c + p[2]] = baseline
        tgt = None if target is None else target.repeat(m)
        y = select(model(xs.view(m * B, C, *shape)), tgt).view(m, B)
        drop = ref.unsqueeze(0) - y
        for q, (a, b, c) in enumerate(chunk):
            total[:, :, a:a + p[0], b:b + p[1], c:c + p[2]] += drop[q].view(B, 1, 1, 1, 1)
            count[:, :, a:a + p[0], b:b + p[1], c:c + p[2]] += 1
    return total / count.clamp_min(1)
