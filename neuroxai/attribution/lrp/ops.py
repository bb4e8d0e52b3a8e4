"""Linear operators seen by the LRP rules: a forward ``z = op(x, w, b)`` and its input VJP.

A rule never differentiates through a layer with autograd: it calls ``op.forward`` with the
weights it needs (``w``, ``w⁺``, ``w²``, ones...) and ``op.vjp`` to pull a relevance ratio back
to the input. ``vjp`` is exactly the input gradient of the convolution / matrix product (a
transposed convolution), so one rule costs what one gradient step through the layer costs.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import UnsupportedLayerError


class LinearOp:
    """``nn.Linear``: ``z = x Wᵀ + b`` with ``x: (B, ..., in)``, ``w: (out, in)``."""

    def __init__(self, module: nn.Linear):
        self.weight = module.weight.detach()
        self.bias = None if module.bias is None else module.bias.detach()
        self.groups = 1
        self.channel_dim = -1

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, w, b)

    def vjp(self, g: torch.Tensor, w: torch.Tensor, x_shape) -> torch.Tensor:
        out = g @ w
        return out if tuple(out.shape) == tuple(x_shape) else out.expand(x_shape)

    def ones_forward(self, x_shape, like: torch.Tensor) -> torch.Tensor:
        """``op(ones, ones-weights)`` for one output: the fan-in, shape ``(1, 1)``."""
        return like.new_full((1, 1), float(x_shape[-1]))

    def ones_vjp(self, g: torch.Tensor, x_shape) -> torch.Tensor:
        """VJP with all-ones weights of a one-output ratio ``g: (..., 1)``."""
        return g.expand(x_shape)


class ConvOp:
    """``nn.Conv1d/2d/3d`` (zeros padding): ``z = conv(x, w) + b``, VJP = transposed convolution."""

    def __init__(self, module: nn.modules.conv._ConvNd, name: str = "?"):
        if module.padding_mode != "zeros":
            raise UnsupportedLayerError(
                f"LRP supports zero-padded convolutions only (layer '{name}')",
                expected="padding_mode='zeros'", found=f"padding_mode={module.padding_mode!r}",
                fix="use padding_mode='zeros' or explain this model with a gradient method")
        nd = module.weight.ndim - 2
        self.weight = module.weight.detach()
        self.bias = None if module.bias is None else module.bias.detach()
        self.stride = list(module.stride)
        self.dilation = list(module.dilation)
        self.groups = module.groups
        self.channel_dim = 1
        padding = module.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0,) * nd
            else:  # 'same': symmetric only for odd effective kernels
                eff = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
                if any(e % 2 for e in eff):
                    raise UnsupportedLayerError(
                        f"LRP needs symmetric padding (layer '{name}')", expected="odd kernel with padding='same'",
                        found=f"kernel_size={module.kernel_size}", fix="use explicit integer padding")
                padding = tuple(e // 2 for e in eff)
        self.padding = list(padding)
        self.nd = nd
        self.kernel_size = list(module.kernel_size)
        self._as_forward = self.groups == 1 and all(s == 1 for s in self.stride) and all(
            p <= d * (k - 1) for p, d, k in zip(self.padding, self.dilation, self.kernel_size))
        self._flipped: dict = {}

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return torch.convolution(x, w, b, self.stride, self.padding, self.dilation, False,
                                 [0] * self.nd, self.groups)

    def vjp(self, g: torch.Tensor, w: torch.Tensor, x_shape) -> torch.Tensor:
        if g.device.type == "cpu" and self._as_forward:
            # stride 1: the transposed convolution is a convolution with the flipped, transposed
            # kernel; oneDNN's forward is up to 3x faster than its backward-data on CPU
            # (measured, e.g. 4 -> 1 channels at 64x80x64), same result up to summation order
            wf = self._flipped.get(id(w))
            if wf is None or wf[0] is not w:
                wf = (w, w.flip(list(range(2, w.ndim))).transpose(0, 1).contiguous())
                self._flipped[id(w)] = wf
            pad = [d * (k - 1) - p for d, k, p in zip(self.dilation, w.shape[2:], self.padding)]
            out = torch.convolution(g, wf[1], None, [1] * self.nd, pad, self.dilation, False,
                                    [0] * self.nd, 1)
            if tuple(out.shape) == tuple(x_shape):
                return out
        dummy = g.new_empty(1).expand(x_shape)  # only the shape is read
        return torch.ops.aten.convolution_backward(
            g, dummy, w, None, self.stride, self.padding, self.dilation, False, [0] * self.nd,
            self.groups, (True, False, False))[0]

    def ones_forward(self, x_shape, like: torch.Tensor) -> torch.Tensor:
        """``op(ones, ones-weights)`` for one output channel, ``(1, 1, *out_spatial)``: the number
        of in-bounds taps, a separable product of 1-D counts (exact integers)."""
        counts = []
        for n, k, s, p, d in zip(x_shape[2:], self.kernel_size, self.stride, self.padding, self.dilation):
            n_out = (n + 2 * p - d * (k - 1) - 1) // s + 1
            idx = (torch.arange(n_out, device=like.device)[:, None] * s - p
                   + torch.arange(k, device=like.device)[None, :] * d)
            counts.append(((idx >= 0) & (idx < n)).sum(1).to(like.dtype))
        z = like.new_full((1, 1) + (1,) * self.nd, float(x_shape[1] // self.groups))
        for axis, c in enumerate(counts):
            shape = [1] * (2 + self.nd)
            shape[2 + axis] = c.numel()
            z = z * c.reshape(shape)
        return z

    def ones_vjp(self, g: torch.Tensor, x_shape) -> torch.Tensor:
        """VJP with all-ones weights of a one-channel ratio ``g: (B, 1, ...)``, expanded to
        ``x_shape``. Stride 1, no dilation: separable box sums (1-D sum pooling per axis)."""
        if self.groups == 1 and all(s == 1 for s in self.stride) and all(d == 1 for d in self.dilation) \
                and all(p <= k - 1 for p, k in zip(self.padding, self.kernel_size)) and 1 <= self.nd <= 3:
            pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[self.nd - 1]
            out = g
            for axis, (k, p) in enumerate(zip(self.kernel_size, self.padding)):
                pad = [0, 0] * self.nd
                pad[2 * (self.nd - 1 - axis)] = pad[2 * (self.nd - 1 - axis) + 1] = k - 1 - p
                kernel = [1] * self.nd
                kernel[axis] = k
                out = F.pad(out, pad)
                out = pool(out, kernel, 1, 0, False, True, 1) if self.nd > 1 else \
                    pool(out, kernel, 1, 0, False, True) * k
            if tuple(out.shape[2:]) == tuple(x_shape[2:]):
                return out.expand(x_shape)
        ones = g.new_ones((1, x_shape[1] // self.groups, *self.kernel_size))
        return self.vjp(g, ones, (x_shape[0], x_shape[1], *x_shape[2:]))


def linear_op(module: nn.Module, name: str = "?"):
    """The operator of a Conv*/Linear module (raises ``UnsupportedLayerError`` otherwise)."""
    if isinstance(module, nn.Linear):
        return LinearOp(module)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return ConvOp(module, name)
    raise UnsupportedLayerError(
        f"this LRP rule needs a linear layer, but layer '{name}' is {type(module).__name__}",
        expected="Conv1d/Conv2d/Conv3d or Linear", found=type(module).__name__,
        fix="map this layer type to 'pass', 'norm' or 'gradient' in rules=")


def vjp_autograd(fn, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Input VJP of a cheap linear function (pooling) by recomputing it with a local graph."""
    with torch.enable_grad():
        xd = x.detach().requires_grad_(True)
        (out,) = torch.autograd.grad(fn(xd), xd, g)
    return out
