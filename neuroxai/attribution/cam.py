"""Grad-CAM and Grad-CAM++ for 3-D CNNs.

The target layer is a module name from ``model.named_modules()`` (default: the last Conv3d).
A forward hook replaces the layer's output by a detached leaf, so the backward pass stops at
that layer: no gradient is computed below it (cheaper than a plain backward to the input).
The hook is removed before returning, also on error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttributionError
from ._util import input_grad, select
from .base import METHODS


def default_layer(model: nn.Module) -> str:
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]
    if not convs:
        raise AttributionError("Grad-CAM needs a Conv3d layer", expected="a 3-D CNN", found=type(model).__name__)
    # A final 1×1×1 conv classifier (SFCN) sits after global pooling: its "map" is 1 voxel.
    mods = dict(model.named_modules())
    for name in reversed(convs):
        if mods[name].kernel_size != (1, 1, 1) or name != convs[-1]:
            return name
    return convs[-1]


def _activation_and_grad(model, x, target, layer: str | None):
    name = layer or default_layer(model)
    mods = dict(model.named_modules())
    if name not in mods:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]
        raise AttributionError(f"no layer named {name!r}", expected=f"one of the Conv3d layers {convs}",
                               found=name, fix="use a name from model.named_modules()")
    store = {}

    def hook(mod, inp, out):
        leaf = out.detach().requires_grad_(True)
        store["a"] = leaf
        return leaf.clone()  # a later in-place op (ReLU(inplace=True)) must not touch the leaf

    h = mods[name].register_forward_hook(hook)
    try:
        with torch.enable_grad():
            y = select(model(x), target)
            if "a" not in store:
                raise AttributionError(f"layer {name!r} was not used in the forward pass", found=name)
            (g,) = torch.autograd.grad(y.sum(), store["a"])
    finally:
        h.remove()
    a = store["a"].detach()
    if a.ndim != 5:
        raise AttributionError(f"layer {name!r} does not output a 3-D feature map",
                               expected="(B, C, d, h, w)", found=f"shape {tuple(a.shape)}",
                               fix="choose a convolutional layer")
    return a, g, y.detach()


def _upsample(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)


def _guided_backprop(model, x, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): ReLUs pass only positive gradients."""
    hooks = [m.register_full_backward_hook(lambda m, gi, go: (gi[0].clamp_min(0),))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        g, _ = input_grad(model, x, target)
    finally:
        for h in hooks:
            h.remove()
    return g


@METHODS.register("gradcam")
def gradcam(model, x, target, *, layer: str | None = None, relu: bool = True, guided: bool = False):
    """Grad-CAM (Selvaraju et al. 2017, ICCV): ``ReLU(Σ_k mean(∂y/∂A_k) A_k)`` at ``layer``,
    upsampled trilinearly to the input grid (``align_corners=False``, as MONAI and Captum).
    ``guided=True``: Guided Grad-CAM, the product with guided backpropagation."""
    a, g, _ = _activation_and_grad(model, x, target, layer)
    w = g.mean(dim=(2, 3, 4), keepdim=True)
    cam = (w * a).sum(1, keepdim=True)
    if relu:
        cam = F.relu(cam)
    cam = _upsample(cam, x)
    if guided:
        cam = cam * _guided_backprop(model, x, target)
    return cam.to(x.dtype)


@METHODS.register("gradcam_pp")
def gradcam_pp(model, x, target, *, layer: str | None = None):
    """Grad-CAM++ (Chattopadhay et al. 2018, WACV), with the exponential-score closed form for the
    weights as in MONAI's ``GradCAMpp``."""
    a, g, score = _activation_and_grad(model, x, target, layer)
    b, c = g.shape[:2]
    g2 = g.pow(2)
    dr = 2 * g2 + (a * g.pow(3)).view(b, c, -1).sum(-1).view(b, c, 1, 1, 1)
    dr = torch.where(dr != 0.0, dr, torch.ones_like(dr))
    alpha = g2 / (dr + 1e-7)
    w = (alpha * F.relu(score.exp().view(b, 1, 1, 1, 1) * g)).view(b, c, -1).sum(-1).view(b, c, 1, 1, 1)
    cam = F.relu((w * a).sum(1, keepdim=True))
    return _upsample(cam, x).to(x.dtype)
