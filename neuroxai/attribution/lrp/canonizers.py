"""Canonizers: rewrite a *temporary copy* of the model into a form the LRP rules apply to.

* ``MergeBatchNorm`` folds every BatchNorm that directly follows a Conv/Linear (in the
  depth-first order of leaf modules, Zennit's ``SequentialMergeBatchNorm`` semantics) into that
  layer, exactly: ``W' = W·γ/√(σ²+ε)``, ``b' = (b − μ)·γ/√(σ²+ε) + β``, and replaces the
  BatchNorm by ``nn.Identity`` (Zennit keeps a BatchNorm that computes ``x/√(1+ε)``; ours is
  the identity, so the canonized model's outputs equal the original's).
* ``MonaiResNetCanonizer`` rewrites MONAI's ``ResNetBlock``/``ResNetBottleneck`` forward so that
  the residual addition ``out += identity`` goes through a ``Sum`` module, which the composites
  map to the norm rule: relevance is split in proportion to the two contributions (what
  Zennit's ``ResNetCanonizer`` does for torchvision's blocks).

The user's model is never touched: ``canonize`` deep-copies it first.
"""
from __future__ import annotations

import copy
import types

import torch
from torch import nn

from ...errors import UnsupportedLayerError


class Sum(nn.Module):
    """``forward(*xs) = xs[0] + xs[1] + ...`` (a residual addition as a module)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    @staticmethod
    def vjp(g: torch.Tensor, xs) -> tuple[torch.Tensor, ...]:
        return tuple(g.sum_to_size(x.shape) if g.shape != x.shape else g for x in xs)


class Canonizer:
    """Rewrites a model (in place: the caller passes a copy)."""

    def apply(self, model: nn.Module) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError


def _leaves(module: nn.Module, prefix: str = ""):
    """Leaf modules depth-first in child order, with their paths (Zennit's ``collect_leaves``)."""
    children = list(module.named_children())
    if not children:
        yield prefix, module
    for name, child in children:
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


class MergeBatchNorm(Canonizer):
    """Fold each BatchNorm directly following a Conv/Linear leaf into it (exact, float64 math)."""

    linear_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    batch_norm_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

    def apply(self, model):
        pairs, last = [], None
        for path, leaf in _leaves(model):
            if isinstance(last, self.linear_types) and isinstance(leaf, self.batch_norm_types):
                pairs.append((last, path, leaf))
            last = leaf
        for linear, path, bn in pairs:
            self.merge(linear, bn, path)
            _set_submodule(model, path, nn.Identity())
        return model

    @staticmethod
    def merge(linear: nn.Module, bn: nn.Module, path: str = "?") -> None:
        if bn.running_mean is None or bn.running_var is None:
            raise UnsupportedLayerError(
                f"BatchNorm '{path}' has no running statistics, so it cannot be merged",
                expected="track_running_stats=True", found="track_running_stats=False",
                fix="train with running statistics or pass canonize=False")
        w = linear.weight.detach()
        f64 = dict(dtype=torch.float64)
        scale = (bn.running_var.to(**f64) + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.detach().to(**f64)
        shift = -bn.running_mean.to(**f64) * scale
        if bn.bias is not None:
            shift = shift + bn.bias.detach().to(**f64)
        bias = torch.zeros(w.shape[0], **f64, device=w.device) if linear.bias is None else linear.bias.detach().to(**f64)
        with torch.no_grad():
            new_w = (w.to(**f64) * scale.reshape(-1, *([1] * (w.ndim - 1)))).to(w.dtype)
            linear.weight = nn.Parameter(new_w, requires_grad=False)
            linear.bias = nn.Parameter((bias * scale + shift).to(w.dtype), requires_grad=False)


def _monai_block_forward(self, x):
    """MONAI ``ResNetBlock.forward`` with the residual addition routed through ``self.lrp_sum``."""
    residual = x
    out = self.act(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
        residual = self.downsample(x)
    return self.act(self.lrp_sum(residual, out))


def _monai_bottleneck_forward(self, x):
    """MONAI ``ResNetBottleneck.forward`` with the residual addition routed through ``self.lrp_sum``."""
    residual = x
    out = self.act(self.bn1(self.conv1(x)))
    out = self.act(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        residual = self.downsample(x)
    return self.act(self.lrp_sum(residual, out))


class MonaiResNetCanonizer(Canonizer):
    """Route the residual additions of MONAI ResNet blocks through a ``Sum`` module."""

    def apply(self, model):
        try:
            from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
        except ImportError:  # pragma: no cover - monai is a dependency
            return model
        for module in model.modules():
            if isinstance(module, ResNetBottleneck):
                fn = _monai_bottleneck_forward
            elif isinstance(module, ResNetBlock):
                fn = _monai_block_forward
            else:
                continue
            module.lrp_sum = Sum()
            module.forward = types.MethodType(fn, module)
        return model


DEFAULT_CANONIZERS: tuple[Canonizer, ...] = (MonaiResNetCanonizer(), MergeBatchNorm())


def canonize(model: nn.Module, canonizers=DEFAULT_CANONIZERS) -> nn.Module:
    """A deep copy of ``model`` in eval mode, parameters frozen, with ``canonizers`` applied.
    The input model is left unchanged."""
    work = copy.deepcopy(model).eval()
    work.requires_grad_(False)
    for canonizer in canonizers:
        work = canonizer.apply(work)
    return work
