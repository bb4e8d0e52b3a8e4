"""DeepLIFT with the Rescale rule, batched with its reference input in one pass.

Shrikumar, Greenside & Kundaje (2017), "Learning important features through propagating
activation differences", ICML; the Rescale multipliers as Ancona et al. (2018), "Towards better
understanding of gradient-based attribution methods for deep neural networks", ICLR, wrote them
as a modified gradient. The map is ``(x − x') ⊙ m`` where ``m`` is the chain rule of *multipliers*:
a linear layer's multiplier is its weight (its gradient); a non-linearity ``y = f(a)`` has
``Δy/Δa`` (``Δ`` = value at ``x`` minus value at ``x'``) instead of ``f'(a)``. It sums to
``f(x) − f(x')`` exactly ("summation to delta") for networks of linear layers, element-wise
non-linearities and max pooling.

The input and its reference run through the model as one ``2B`` batch; forward hooks (removed
before returning, also on error) replace the output of each non-linear module by an autograd
function that returns the same values and whose backward applies the multiplier. The user's
module is never modified (an in-place ReLU is fed a copy of its input).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AttributionError
from ._util import select
from .base import METHODS
from .gradients import ig_baseline

#: |Δa| below this uses the plain gradient (Captum's ``eps``)
EPS = 1e-10
_ELEMENTWISE = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus)
_MAXPOOLS = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}


def _halves_delta(t: torch.Tensor) -> torch.Tensor:
    """``Δt`` (input half minus reference half), repeated for both halves: ``(2B, ...)``."""
    a, ref = t.chunk(2)
    d = a - ref
    return torch.cat([d, d])


def _plain_vjp(module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The module's own input gradient at ``a`` for the output gradient ``g``."""
    with torch.enable_grad():
        leaf = a.detach().requires_grad_(True)
        (out,) = torch.autograd.grad(type(module).forward(module, leaf.clone()), leaf, g)
    return out


class _Rescale(torch.autograd.Function):
    """Forward: the module's output ``y`` (values only). Backward: the Rescale multiplier
    ``g · Δy/Δa``, or the plain gradient where ``|Δa| < EPS`` (as Captum's ``nonlinear``)."""

    @staticmethod
    def forward(ctx, a, y, module):
        ctx.module = module
        ctx.save_for_backward(a, y)
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        module = ctx.module
        da, dy = _halves_delta(a), _halves_delta(y)
        plain = _plain_vjp(module, a, g)
        if isinstance(module, nn.Softmax):
            # Captum's softmax rule: the rescaled gradient, centred over the whole tensor
            un = torch.where(da.abs() < EPS, plain, g * dy / da)
            return un - un.sum() / plain.numel(), None, None
        return torch.where(da.abs() < EPS, plain, g * dy / da), None, None


class _MaxPoolRescale(torch.autograd.Function):
    """Max pooling's multiplier (Shrikumar et al. 2017, §3.5; Captum's ``maxpool``): the output
    difference is split between the input's and the reference's winners, ``max(y, y') − y'`` to
    the input's argmax and ``y − max(y, y')`` to the reference's, summed over both halves and
    divided by ``Δa``. Overlapping windows accumulate (``scatter_add``, the chain rule); Captum
    uses ``max_unpool``, which keeps one of the colliding values, so the two agree for
    non-overlapping windows only."""

    @staticmethod
    def forward(ctx, a, y, module, pool):
        ctx.module, ctx.pool = module, pool
        ctx.save_for_backward(a, y)
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        a, y = ctx.saved_tensors
        m = ctx.module
        y_in, y_ref = y.chunk(2)
        ymax = torch.maximum(y_in, y_ref)
        dout = torch.cat([ymax - y_ref, y_in - ymax])
        _, idx = ctx.pool(a, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
        flat = torch.zeros_like(a).flatten(2)
        flat.scatter_add_(2, idx.flatten(2), (g * dout).flatten(2))
        un_in, un_ref = flat.view_as(a).chunk(2)
        un = un_in + un_ref
        un = torch.cat([un, un])
        da = _halves_delta(a)
        plain = _plain_vjp(m, a, g)
        return torch.where(da.abs() < EPS, plain, un / da), None, None, None


def _hooks(model: nn.Module):
    """Pre-hooks feed each non-linear module a copy of its input (an in-place ReLU must not
    overwrite ``a``); forward hooks swap its output for the rescaled one."""
    handles = []

    def pre(mod, inp):
        mod_inputs[mod].append(inp[0])
        return (inp[0].clone(),) + tuple(inp[1:])

    def post(mod, inp, out):
        a = mod_inputs[mod].pop()
        if type(mod) in _MAXPOOLS:
            return _MaxPoolRescale.apply(a, out, mod, _MAXPOOLS[type(mod)])
        return _Rescale.apply(a, out, mod)

    mod_inputs: dict = {}
    for m in model.modules():
        # exact types, as Captum's DeepLift: a subclass may compute something else
        if type(m) in _ELEMENTWISE or type(m) in _MAXPOOLS or type(m) is nn.Softmax:
            mod_inputs[m] = []
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
    return handles


@METHODS.register("deeplift")
def deeplift(model, x, target, *, baseline="zeros") -> torch.Tensor:
    """DeepLIFT (Rescale rule): ``(x − x') ⊙ m`` with Rescale multipliers ``m`` (see the module
    docstring); sums to ``f(x) − f(x')`` per volume.

    ``baseline`` (the reference ``x'``): ``"zeros"`` (the study's ``DeepLift``); ``"train_mean"``,
    the *mean image*: the voxel-wise mean of the task's training-split subjects' model inputs
    (normalized, on the model grid, after the task's image modification), the study's
    ``DeepLift_mean_img`` — a protocol's ``baseline: train_mean`` is resolved to that
    ``(1,1,D,H,W)`` tensor by the attribute stage (``protocol.stages.attribute.train_mean_image``);
    called directly, pass the tensor; ``"mean"`` (each volume's own mean intensity, a constant
    image — not the mean image), ``"blurred"``, a number, or a tensor broadcastable to ``x``
    (as for integrated gradients). Checked against Captum with the same baseline tensor in
    ``tests/protocol/test_metric_scoring.py``.

    Equal to Captum ``DeepLift(model).attribute(x, baselines, target)`` (same multipliers for
    ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus, Softmax and max-pooling *modules*; functional
    calls keep their gradient, as in Captum) wherever Captum follows the chain rule. It does not in
    three cases, where ours does and still sums to ``f(x) − f(x')`` while Captum's map does not:

    * two hooked modules in a row (``ReLU → MaxPool``, the stem of the study's ResNets and
      DenseNets; ``MaxPool → ReLU`` in SFCN): Captum reads the first module's output gradient
      with a tensor hook that runs *before* the second module's hook rescales it, so the first
      multiplier is applied to the plain gradient;
    * max pooling with overlapping windows: Captum's ``max_unpool`` keeps one of two colliding
      values, ours adds them (see :class:`_MaxPoolRescale`);
    * a module used twice in one forward (MONAI's ``act`` in a ResNet block): Captum keeps one
      call's input and output on the module, ours keeps each call's.

    Cost: one forward and one backward of a ``2B`` batch.
    Returns ``(B, 1, D, H, W)`` of ``x``'s dtype, output units.
    """
    base = ig_baseline(x, baseline)
    if base.shape != x.shape:
        raise AttributionError("DeepLift baseline does not match the input", expected=f"shape {tuple(x.shape)}",
                               found=f"shape {tuple(base.shape)}")
    handles = _hooks(model)
    try:
        with torch.enable_grad():
            xin = x.detach().requires_grad_(True)
            both = torch.cat([xin, base.detach()])
            t2 = None if target is None else torch.cat([target, target])
            y = select(model(both), t2)
            (g,) = torch.autograd.grad(y.sum(), xin)
    finally:
        for h in handles:
            h.remove()
    return ((x - base) * g).detach()
