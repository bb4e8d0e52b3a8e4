"""Gradient (saliency), Input×Gradient and Integrated Gradients.

All take ``x: (B, 1, D, H, W)`` and ``target: (B,)`` long (or ``None`` for a single regression
output) and return a ``(B, 1, D, H, W)`` map of ``x``'s dtype on ``x``'s device, in units of
output per input intensity (gradient) or of output (Input×Gradient, IG).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AttributionError
from ._util import chunks, input_grad, repeat_target, select
from .base import METHODS

log = logging.getLogger(__name__)

IG_BASELINES = ("zeros", "blurred", "mean", "train_mean", "a number", "a tensor broadcastable to x")
IG_RULES = ("gausslegendre", "riemann_trapezoid")


@METHODS.register("gradient")
def gradient(model, x, target, *, abs: bool = False) -> torch.Tensor:
    """Gradient of the target output w.r.t. the input voxels.

    Simonyan, Vedaldi & Zisserman (2014), "Deep inside convolutional networks: visualising image
    classification models and saliency maps", ICLR workshop. ``abs=True`` gives their |∇|.
    Same as Captum ``Saliency(abs=False)``. Cost: one forward + one backward.
    """
    g, _ = input_grad(model, x, target)
    return g.abs() if abs else g


@METHODS.register("input_x_gradient")
def input_x_gradient(model, x, target) -> torch.Tensor:
    """Input × gradient, ``x ⊙ ∂f/∂x``.

    Shrikumar et al. (2016), "Not just a black box", arXiv 1605.01713; Ancona et al. (2018),
    "Towards better understanding of gradient-based attribution methods", ICLR. For a linear
    model the map sums to the logit minus the bias. Same as Captum ``InputXGradient``.
    """
    g, _ = input_grad(model, x, target)
    return x * g


def ig_baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    """The IG reference input ``x'``: ``"zeros"``; ``"mean"`` (each volume's own mean intensity,
    a constant image); ``"train_mean"`` (in a protocol: the task's training-split mean image, the
    voxel-wise mean of the training subjects' model inputs on the model grid, resolved by
    ``protocol.stages.attribute.method_params``; here: an error, pass the tensor);
    ``"blurred"`` (separable box blur, kernel ≈ ¼ of the smallest side — Sturmfels et al. 2020,
    "Visualizing the impact of feature attribution baselines", Distill); a number; or a tensor
    broadcastable to ``x``. Returns ``(B, 1, D, H, W)``."""
    if isinstance(baseline, torch.Tensor):
        try:
            return baseline.to(device=x.device, dtype=x.dtype).expand_as(x)
        except RuntimeError:
            raise AttributionError("IG baseline tensor does not broadcast to the input",
                                   expected=f"broadcastable to {tuple(x.shape)}",
                                   found=f"shape {tuple(baseline.shape)}") from None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "mean":
        return x.mean(dim=(2, 3, 4), keepdim=True).expand_as(x)
    if baseline == "train_mean":
        # the training split is the protocol's, not the method's: the runner passes the image
        raise AttributionError("baseline 'train_mean' is the task's training-split mean image, which only a "
                               "protocol run knows", expected="a tensor broadcastable to x (the mean image)",
                               found="'train_mean' outside a protocol run",
                               fix="pass the mean image tensor as baseline (in a protocol, `baseline: train_mean` "
                                   "is resolved by the attribute stage)")
    if baseline == "blurred":
        k = max(3, (min(x.shape[2:]) // 4) | 1)
        b = x
        for d in range(3):
            size = [1, 1, 1]
            size[d] = k
            b = F.avg_pool3d(b, tuple(size), stride=1, padding=tuple(s // 2 for s in size), count_include_pad=False)
        return b
    raise AttributionError("unknown integrated_gradients baseline", expected=list(IG_BASELINES), found=repr(baseline),
                           fix="use baseline: zeros | blurred | mean | train_mean | <number>")


def ig_nodes(steps: int, rule: str, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrature nodes ``α ∈ [0, 1]`` and weights (sum 1): Gauss–Legendre (as Captum's default,
    float64 weights where Captum rounds them to float32) or the trapezoid rule on
    ``linspace(0, 1, steps)`` with weights ``1/(steps − 1)``, ends halved. Captum's
    ``riemann_trapezoid`` uses ``1/steps`` (its weights sum to ``(steps − 1)/steps``), so its map is
    ours × ``(steps − 1)/steps``."""
    if steps < 1 or (rule == "riemann_trapezoid" and steps < 2):
        raise AttributionError("too few IG steps", expected="steps ≥ 1 (≥ 2 for the trapezoid rule)", found=steps)
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        a, w = (nodes + 1) / 2, weights / 2
    elif rule == "riemann_trapezoid":
        a = np.linspace(0.0, 1.0, steps)
        w = np.full(steps, 1.0 / (steps - 1))
        w[0] = w[-1] = 0.5 / (steps - 1)
    else:
        raise AttributionError("unknown IG quadrature rule", expected=list(IG_RULES), found=repr(rule))
    return torch.as_tensor(a, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)


@METHODS.register("integrated_gradients")
def integrated_gradients(model, x, target, *, steps: int = 32, baseline="zeros", batch_steps: int | None = None,
                         rule: str = "gausslegendre", return_completeness: bool = False):
    """Integrated Gradients: ``(x − x') ⊙ ∫₀¹ ∇f(x' + α(x − x')) dα``.

    Sundararajan, Taly & Yan (2017), "Axiomatic attribution for deep networks", ICML. The
    integral uses ``steps`` nodes of the quadrature ``rule`` (``"gausslegendre"``, Captum's
    default, or ``"riemann_trapezoid"``); the result equals Captum ``IntegratedGradients`` with
    ``n_steps=steps, method=rule`` (named ``rule`` here because ``method`` names the attribution
    method in :func:`attribute`). Steps are batched: ``batch_steps`` interpolation points (× B volumes)
    per forward/backward, default chosen by the chunk planner (≤ 2²² voxels per pass on CPU;
    adapted to free memory on a GPU). Cost ≈ ``steps`` plain passes + 2 forwards.

    Completeness (the map sums to ``f(x) − f(x')``) is checked: the error ``(B,)`` is logged and,
    with ``return_completeness=True``, returned as ``(attr, error)``.
    """
    alphas, w = ig_nodes(int(steps), rule, x.dtype, x.device)
    base = ig_baseline(x, baseline)
    diff = x - base
    B = x.shape[0]
    total = torch.zeros_like(x)
    shape6 = (-1, 1, 1, 1, 1, 1)
    for s, n in chunks(len(alphas), B, x, batch_steps):
        pts = base.unsqueeze(0) + alphas[s:s + n].view(shape6) * diff.unsqueeze(0)
        g, _ = input_grad(model, pts.reshape(n * B, *x.shape[1:]), repeat_target(target, n))
        total += (g.view(n, *x.shape) * w[s:s + n].view(shape6)).sum(0)
    attr = diff * total
    with torch.no_grad():
        delta = attr.flatten(1).sum(1) - (select(model(x), target) - select(model(base), target))
    log.debug("integrated_gradients completeness error (max |Σattr − Δf|): %.3g", delta.abs().max().item())
    return (attr, delta) if return_completeness else attr
