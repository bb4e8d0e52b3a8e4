"""Model-free baselines: maps that ignore the model — the floor any method must beat and the
ceiling no method can exceed.

Adebayo et al. (2018), "Sanity checks for saliency maps", NeurIPS, showed that an edge detector
of the input can look like (and score like) a saliency map; a uniform random map is the chance
level of every localization metric.
"""
from __future__ import annotations

import torch

from .base import METHODS


#: A method's ``role`` (its registration fact): ``under_test`` (the default: a candidate), or a
#: model-free map it is judged against — ``chance`` (the chance level of every metric: the paired
#: "beats the random map" criterion compares with it), ``floor`` (a map that looks plausible but
#: ignores the model) or ``ceiling`` (the best any map can do). ``needs: ("mask",)``: the runner
#: passes the task's ground truth as ``mask=``.
ROLES = ("under_test", "chance", "floor", "ceiling")


def role(name: str) -> str:
    """The registered role of method ``name`` (``under_test`` unless registered otherwise; a prior
    study's saved maps, named by their folder, are under test)."""
    return _facts(name).get("role", "under_test")


def is_baseline(name: str) -> bool:
    """A model-free map a method is judged against, never a candidate itself."""
    return role(name) != "under_test"


def needs(name: str) -> tuple[str, ...]:
    """What method ``name`` needs beyond the model, the input and the target (``"mask"``)."""
    return tuple(_facts(name).get("needs", ()))


def _facts(name: str) -> dict:
    return METHODS.facts(name) if name in METHODS else {}


@METHODS.register("random", role="chance")
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


@METHODS.register("edge_detector", role="floor")
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


@METHODS.register("oracle", role="ceiling", needs=("mask",))
def oracle(model, x, target, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The ground truth itself as a map (1 inside ``mask``, 0 outside): the ceiling of every
    localization metric (rank and mass accuracy, AUROC and AP are 1). The protocol runner passes the
    task's ground truth as ``mask`` (bool ``(B,1,D,H,W)``). Ignores the model and the target."""
    if mask is None:
        from ..errors import AttributionError

        raise AttributionError("the oracle map needs the ground truth", expected="mask=(B,1,D,H,W) bool",
                               found="mask=None", fix="pass the task's ground-truth mask as mask=")
    return mask.to(device=x.device, dtype=x.dtype)


#: The registered model-free maps (kept for callers of the tuple; :func:`is_baseline` also knows
#: maps registered later).
BASELINES = tuple(n for n in METHODS if is_baseline(n))
