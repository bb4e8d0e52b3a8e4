"""Gradient (saliency), Input×Gradient and Integrated Gradients."""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AttributionError
from ._util import input_grad, repeat_target, select
from .base import METHODS

log = logging.getLogger(__name__)


@METHODS.register("gradient")
def gradient(model, x, target, *, abs: bool = False) -> torch.Tensor:
    """Gradient of the target output w.r.t. the input (Simonyan, Vedaldi & Zisserman 2014,
    "Deep inside convolutional networks"). ``abs=True`` gives the original saliency |∇|."""
    g, _ = input_grad(model, x, target)
    return g.abs() if abs else g


@METHODS.register("input_x_gradient")
def input_x_gradient(model, x, target) -> torch.Tensor:
    """Input × gradient (Shrikumar et al. 2016; Ancona et al. 2018, ICLR)."""
    g, _ = input_grad(model, x, target)
    return x * g


def _baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x).clone()
    if baseline == "blurred":  # heavy separable box blur (kernel 1/4 of the smallest side)
        k = max(3, (min(x.shape[2:]) // 4) | 1)
        b = x
        for d in range(3):
            size = [1, 1, 1]
            size[d] = k
            b = F.avg_pool3d(b, tuple(size), stride=1, padding=tuple(s // 2 for s in size),
                             count_include_pad=False)
        return b
    raise AttributionError("unknown IG baseline", expected=["zeros", "mean", "blurred", "a number"], found=baseline)


def _gauss_legendre(steps: int, dtype, device):
    """Nodes in [0, 1] and weights (Captum's default 'gausslegendre' rule)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (torch.as_tensor((nodes + 1) / 2, dtype=dtype, device=device),
            torch.as_tensor(weights / 2, dtype=dtype, device=device))


@METHODS.register("integrated_gradients")
def integrated_gradients(model, x, target, *, steps: int = 32, baseline="zeros", batch_steps: int | None = None,
                         method: str = "gausslegendre", return_completeness: bool = False):
    """Integrated Gradients (Sundararajan, Taly & Yan 2017, ICML): ``(x − x') ∫ ∇f(x' + α(x − x')) dα``.

    Steps are batched (``batch_steps`` interpolation points per forward/backward; default: as
    many as keep the batch ≤ 32 volumes). The completeness error ``Σ attr − (f(x) − f(x'))`` is
    logged, and returned with ``return_completeness=True``.
    """
    if method == "gausslegendre":
        alphas, w = _gauss_legendre(steps, x.dtype, x.device)
    elif method == "riemann_trapezoid":
        alphas = torch.linspace(0, 1, steps, dtype=x.dtype, device=x.device)
        w = torch.full((steps,), 1.0 / (steps - 1), dtype=x.dtype, device=x.device)
        w[0] = w[-1] = 0.5 / (steps - 1)
    else:
        raise AttributionError("unknown IG method", expected=["gausslegendre", "riemann_trapezoid"], found=method)
    base = _baseline(x, baseline)
    diff = x - base
    B = x.shape[0]
    k = batch_steps or max(1, 32 // B)
    total = torch.zeros_like(x)
    for s in range(0, steps, k):
        a = alphas[s:s + k]
        n = len(a)
        pts = base.unsqueeze(0) + a.view(n, 1, 1, 1, 1, 1) * diff.unsqueeze(0)
        g, _ = input_grad(model, pts.reshape(n * B, *x.shape[1:]), repeat_target(target, n))
        total += (g.view(n, B, *x.shape[1:]) * w[s:s + k].view(n, 1, 1, 1, 1, 1)).sum(0)
    attr = diff * total
    with torch.no_grad():
        delta = attr.flatten(1).sum(1) - (select(model(x), target) - select(model(base), target))
    log.debug("IG completeness error: %s", delta.abs().max().item())
    return (attr, delta) if return_completeness else attr
