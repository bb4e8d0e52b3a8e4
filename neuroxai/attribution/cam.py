"""Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM, EigenCAM, guided backpropagation and Guided Grad-CAM
for 3-D CNNs.

The target layer is a module name from ``model.named_modules()`` (default: see
:func:`default_layer`); an unknown name raises an error listing the Conv3d layers.
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


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the ``Conv3d`` modules, in registration order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]


def default_layer(model: nn.Module) -> str:
    """The last ``Conv3d`` in registration order — unless it has a 1×1×1 kernel, in which case the
    one before it: a final 1×1×1 conv is SFCN's classifier after global pooling (a 1-voxel "map")
    or a ResNet's residual projection, neither a useful CAM layer. Pass ``layer=`` to choose."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv3d)]
    if not convs:
        raise AttributionError("Grad-CAM needs a Conv3d layer", expected="a 3-D CNN", found=type(model).__name__)
    # A final 1×1×1 conv classifier (SFCN) sits after global pooling: its "map" is 1 voxel.
    mods = dict(model.named_modules())
    for name in reversed(convs):
        if mods[name].kernel_size != (1, 1, 1) or name != convs[-1]:
            return name
    return convs[-1]


def _layer(model, layer: str | None) -> tuple[str, torch.nn.Module]:
    """The CAM layer's name and module (``layer``, else :func:`default_layer`); a name the model
    does not have is a named error listing its Conv3d layers."""
    name = layer or default_layer(model)
    mods = dict(model.named_modules())
    if name not in mods:
        raise AttributionError(f"no layer named {name!r} in the model",
                               expected=f"a module name; the Conv3d layers are {conv_layers(model)}",
                               found=repr(name), fix="use a name from model.named_modules()")
    return name, mods[name]


def _activation_and_grad(model, x, target, layer: str | None):
    name, module = _layer(model, layer)
    store = {}

    def hook(mod, inp, out):
        leaf = out.detach().requires_grad_(True)
        store["a"] = leaf
        return leaf.clone()  # a later in-place op (ReLU(inplace=True)) must not touch the leaf

    h = module.register_forward_hook(hook)
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


INTERPOLATIONS = ("trilinear", "nearest")


def _upsample(cam: torch.Tensor, x: torch.Tensor, mode: str = "trilinear") -> torch.Tensor:
    """The layer-grid map resized to the input grid: ``trilinear`` (``align_corners=False``) or
    ``nearest`` (each voxel takes its layer cell: the study's Guided Grad-CAM)."""
    if mode not in INTERPOLATIONS:
        raise AttributionError("unknown CAM interpolation", expected=list(INTERPOLATIONS), found=repr(mode),
                               fix="use interpolate: trilinear | nearest")
    if mode == "nearest":
        return F.interpolate(cam, size=x.shape[2:], mode="nearest")
    return F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)


class _GuidedReLU(torch.autograd.Function):
    """Identity on a ReLU's output whose backward keeps only positive gradients at active units."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad.clamp_min(0) * (y > 0)


def _guided_backprop(model, x, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015, "Striving for simplicity", ICLR workshop):
    at every ``nn.ReLU`` module only positive gradients pass back (as Captum ``GuidedBackprop``).

    Forward hooks (removed before returning) wrap each ReLU's output in :class:`_GuidedReLU`;
    unlike module backward hooks this works with ``ReLU(inplace=True)`` (MONAI) and leaves the
    module's ``inplace`` flag alone. Functional ``F.relu`` calls are not guided."""
    hooks = [m.register_forward_hook(lambda mod, inp, out: _GuidedReLU.apply(out))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        g, _ = input_grad(model, x, target)
    finally:
        for h in hooks:
            h.remove()
    return g


@METHODS.register("guided_backprop")
def guided_backprop(model, x, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015, "Striving for simplicity: the all
    convolutional net", ICLR workshop): the input gradient with only positive gradients passed back
    through every ``nn.ReLU`` module. Equal to Captum ``GuidedBackprop``. Cost: one forward and one
    backward. Returns ``(B, 1, D, H, W)`` of ``x``'s dtype."""
    return _guided_backprop(model, x, target)


@METHODS.register("gradcam")
def gradcam(model, x, target, *, layer: str | None = None, relu: bool = True, guided: bool = False,
            interpolate: str = "trilinear"):
    """Grad-CAM: ``ReLU(Σ_k mean_voxels(∂y/∂A_k) · A_k)`` at ``layer`` (activation ``A: (B,K,d,h,w)``),
    upsampled trilinearly to the input grid (``align_corners=False``).

    Selvaraju et al. (2017), "Grad-CAM: visual explanations from deep networks via gradient-based
    localization", ICCV. ``relu=False`` keeps negative evidence. ``guided=True``: Guided Grad-CAM,
    the product with guided backpropagation (Springenberg et al. 2015), as Captum ``GuidedGradCam``
    with ``interpolate_mode="trilinear"``. Only the gradient to the layer's activation is computed
    (the backward stops there), so it costs about one forward plus part of one backward.

    Equal to Captum ``LayerGradCam(relu_attributions=True)`` + ``LayerAttribution.interpolate(...,
    "trilinear")``; equal to MONAI ``visualize.GradCAM`` *before* its postprocessing — MONAI's
    default normalizer rescales each map to [0, 1] flipped (min → 1, max → 0), so MONAI's output
    is ``1 − minmax(ours)``. ``layer`` is any module name (``layer1``, ``layer4.1``,
    ``features.denseblock3``...). ``interpolate``: ``trilinear`` or ``nearest`` (to the input grid).
    Returns ``(B, 1, D, H, W)`` of ``x``'s dtype, output units.
    """
    a, g, _ = _activation_and_grad(model, x, target, layer)
    w = g.mean(dim=(2, 3, 4), keepdim=True)
    cam = (w * a).sum(1, keepdim=True)
    if relu:
        cam = F.relu(cam)
    cam = _upsample(cam, x, interpolate)
    if guided:
        cam = cam * _guided_backprop(model, x, target)
    return cam.to(x.dtype)


@METHODS.register("gradcam_pp")
def gradcam_pp(model, x, target, *, layer: str | None = None):
    """Grad-CAM++: channel weights ``Σ α · ReLU(∂exp(y)/∂A)`` with the closed-form ``α`` of an
    exponential score, then ``ReLU(Σ_k w_k A_k)``, upsampled trilinearly (``align_corners=False``).

    Chattopadhay et al. (2018), "Grad-CAM++: generalized gradient-based visual explanations for
    deep convolutional networks", WACV. Same formula (including the ``1e-7`` guard) as MONAI
    ``visualize.GradCAMpp``, which equals ``1 − minmax(ours)`` after its default normalizer. Unlike
    MONAI (whose score broadcast is only right for batch 1), each volume uses its own score.
    Returns ``(B, 1, D, H, W)`` of ``x``'s dtype.
    """
    a, g, score = _activation_and_grad(model, x, target, layer)
    b, c = g.shape[:2]
    g2 = g.pow(2)
    dr = 2 * g2 + (a * g.pow(3)).view(b, c, -1).sum(-1).view(b, c, 1, 1, 1)
    dr = torch.where(dr != 0.0, dr, torch.ones_like(dr))
    alpha = g2 / (dr + 1e-7)
    w = (alpha * F.relu(score.exp().view(b, 1, 1, 1, 1) * g)).view(b, c, -1).sum(-1).view(b, c, 1, 1, 1)
    cam = F.relu((w * a).sum(1, keepdim=True))
    return _upsample(cam, x).to(x.dtype)


@METHODS.register("guided_gradcam")
def guided_gradcam(model, x, target, *, layer: str | None = None, interpolate: str = "nearest"):
    """Guided Grad-CAM (Selvaraju et al. 2017): the Grad-CAM map (ReLU'd) at ``layer`` resized to
    the input grid, times guided backpropagation. Equal to Captum ``GuidedGradCam(model, layer)
    .attribute(x, target, interpolate_mode=interpolate)``; the default ``nearest`` is the study's
    setting (``gradcam`` with ``guided: true`` keeps Grad-CAM's trilinear default).
    Returns ``(B, 1, D, H, W)`` of ``x``'s dtype."""
    return gradcam(model, x, target, layer=layer, relu=True, guided=True, interpolate=interpolate)


@METHODS.register("hirescam")
def hirescam(model, x, target, *, layer: str | None = None, interpolate: str = "trilinear"):
    """HiResCAM: ``ReLU(Σ_k ∂y/∂A_k ⊙ A_k)`` (the gradient times the activation voxel by voxel,
    not Grad-CAM's channel-mean gradient), resized to the input grid.

    Draelos & Carin (2020), "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", arXiv 2011.08891. pytorch-grad-cam's ``HiResCAM`` before its
    min-max rescaling and resize. Cost: one forward and part of one backward (to ``layer``).
    Returns ``(B, 1, D, H, W)`` of ``x``'s dtype."""
    a, g, _ = _activation_and_grad(model, x, target, layer)
    return _upsample(F.relu((g * a).sum(1, keepdim=True)), x, interpolate).to(x.dtype)


@METHODS.register("layercam")
def layercam(model, x, target, *, layer: str | None = None, interpolate: str = "trilinear"):
    """LayerCAM: ``ReLU(Σ_k ReLU(∂y/∂A_k) ⊙ A_k)``, resized to the input grid.

    Jiang et al. (2021), "LayerCAM: exploring hierarchical class activation maps for
    localization", IEEE TIP 30. pytorch-grad-cam's ``LayerCAM`` before its min-max rescaling and
    resize. Cost: one forward and part of one backward. Returns ``(B, 1, D, H, W)`` of ``x``'s dtype."""
    a, g, _ = _activation_and_grad(model, x, target, layer)
    return _upsample(F.relu((F.relu(g) * a).sum(1, keepdim=True)), x, interpolate).to(x.dtype)


def first_component(a: torch.Tensor) -> torch.Tensor:
    """EigenCAM's projection per volume: the activations ``(B, K, d, h, w)`` as ``(dhw, K)``
    centred over voxels, projected on their first right singular vector ``v``: ``(B, 1, d, h, w)``.

    A singular vector's sign is arbitrary (LAPACK's choice in pytorch-grad-cam); ours has
    ``Σ_k v_k ≥ 0``, so the map points where the channels are jointly *more* active."""
    b, k = a.shape[:2]
    m = a.reshape(b, k, -1).transpose(1, 2)
    m = m - m.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    v = vh[:, 0, :]
    v = v * torch.where(v.sum(1, keepdim=True) >= 0, 1.0, -1.0).to(v.dtype)
    return (m @ v.unsqueeze(-1)).transpose(1, 2).reshape(b, 1, *a.shape[2:])


@METHODS.register("eigencam")
def eigencam(model, x, target, *, layer: str | None = None, interpolate: str = "trilinear"):
    """EigenCAM: ``ReLU`` of the layer's activations projected on their first principal component
    (see :func:`first_component`), resized to the input grid. Class-agnostic: ``target`` and
    gradients are not used (one forward pass).

    Muhammad & Yeasin (2020), "Eigen-CAM: class activation map using principal components",
    IJCNN. pytorch-grad-cam's ``EigenCAM`` before its min-max rescaling and resize, up to the
    sign of the singular vector. Returns ``(B, 1, D, H, W)`` of ``x``'s dtype."""
    name, module = _layer(model, layer)
    store = {}
    h = module.register_forward_hook(lambda mod, inp, out: store.__setitem__("a", out.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    if "a" not in store or store["a"].ndim != 5:
        raise AttributionError(f"layer {name!r} does not output a 3-D feature map", expected="(B, C, d, h, w)",
                               found="not used in the forward pass" if "a" not in store
                               else f"shape {tuple(store['a'].shape)}", fix="choose a convolutional layer")
    return _upsample(F.relu(first_component(store["a"])), x, interpolate).to(x.dtype)
