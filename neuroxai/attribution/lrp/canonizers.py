"""Canonizers: rewrite a *temporary copy* of the model into a form the LRP rules apply to.

* ``MergeBatchNorm`` folds every BatchNorm that directly follows a Conv/Linear (in the
  depth-first order of leaf modules, Zennit's ``SequentialMergeBatchNorm`` semantics) into that
  layer, exactly: ``W' = W·γ/√(σ²+ε)``, ``b' = (b − μ)·γ/√(σ²+ε) + β``, and replaces the
  BatchNorm by ``nn.Identity`` (Zennit keeps a BatchNorm that computes ``x/√(1+ε)``; ours is
  the identity, so the canonized model's outputs equal the original's).
* ``MonaiResNetCanonizer`` rewrites MONAI's ``ResNetBlock``/``ResNetBottleneck`` forward so that
  the residual addition ``out += identity`` goes through a ``Sum`` module, which the composites
  map to the norm rule: relevance is split in proportion to the two contributions (what
  Zennit's ``ResNetCanonizer`` does for torchvision's blocks); ``TorchvisionResNetCanonizer``
  does the same for torchvision-style ``BasicBlock``/``Bottleneck`` (and Hara et al.'s 3-D ResNet).
* DenseNet concatenations need no rewrite: a concatenation's gradient routes each slice's
  relevance back to the tensor it came from, which is the LRP rule for a concatenation; only the
  merge must not pair a convolution with the BatchNorm of the next concatenation (see
  ``MergeBatchNorm``). ``DenseNetHeadCanonizer`` turns the functional ReLU and pooling of a
  torchvision-style DenseNet head into modules.

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


class MergedBatchNorm(nn.Identity):
    """What a merged BatchNorm becomes: the identity, remembering the layer it was folded into
    (``source``, a module path) so that the LRP pass can check that the BatchNorm really read that
    layer's output (:func:`check_merges`)."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source


class MergeBatchNorm(Canonizer):
    """Fold each BatchNorm directly following a Conv/Linear leaf into it (exact, float64 math).

    "Following" is the order of leaves, which is not always the order of computation: in a
    DenseNet a dense layer's last convolution (``growth_rate`` channels) is followed, among the
    leaves, by the next layer's BatchNorm, which normalizes the *concatenation* (more channels).
    A pair is merged only when the BatchNorm has as many channels as the layer has outputs (the
    test of the study's ``CorrectSequentialMergeBatchNorm``, Siegel et al. 2025); the LRP pass
    then checks every merge against the real data flow (:func:`check_merges`)."""

    linear_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    batch_norm_types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

    def apply(self, model):
        pairs, last, last_path = [], None, ""
        for path, leaf in _leaves(model):
            if isinstance(last, self.linear_types) and isinstance(leaf, self.batch_norm_types) \
                    and last.weight.shape[0] == leaf.num_features:
                pairs.append((last, last_path, path, leaf))
            last, last_path = leaf, path
        for linear, linear_path, path, bn in pairs:
            self.merge(linear, bn, path)
            _set_submodule(model, path, MergedBatchNorm(linear_path))
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


def _torchvision_block_forward(self, x):
    """A torchvision / Hara et al. 3-D ResNet ``BasicBlock`` or ``Bottleneck`` forward with the
    residual addition routed through ``self.lrp_sum``; ``self.lrp_acts`` are the block's ReLUs in
    call order (``relu`` used 2 or 3 times in torchvision, ``relu1..3`` in Hara's 3-D ResNet)."""
    acts = self.lrp_acts
    out = acts[0](self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if hasattr(self, "conv3"):
        out = self.bn3(self.conv3(acts[1](out)))
    residual = x if self.downsample is None else self.downsample(x)
    return acts[-1](self.lrp_sum(residual, out))


class TorchvisionResNetCanonizer(Canonizer):
    """Route the residual additions of torchvision-style ResNet blocks through a ``Sum`` module:
    modules of a class named ``BasicBlock`` or ``Bottleneck`` with ``conv1, bn1, conv2, bn2``
    (``conv3, bn3`` for a bottleneck), ``downsample`` (a module or ``None``) and either one ``relu``
    or ``relu1, relu2[, relu3]`` — torchvision's 2-D blocks and the 3-D ResNet of Hara et al.
    (2018, "Can spatiotemporal 3D CNNs retrace the history of 2D CNNs and ImageNet?", CVPR) that
    Siegel et al. 2025 trained. The same construction as Zennit's ``ResNetCanonizer`` and the
    study's ``ResNet3DCanonizer``. A block of another layout is left alone (and its ``out +=
    identity`` is then refused by the LRP pass, never silently mis-propagated)."""

    names = ("BasicBlock", "Bottleneck")

    @staticmethod
    def _acts(module):
        n = 3 if hasattr(module, "conv3") else 2
        if all(isinstance(getattr(module, f"relu{i}", None), nn.Module) for i in range(1, n + 1)):
            return [getattr(module, f"relu{i}") for i in range(1, n + 1)]
        if isinstance(getattr(module, "relu", None), nn.Module):
            return [module.relu] * n
        return None

    def apply(self, model):
        for module in model.modules():
            if type(module).__name__ not in self.names:
                continue
            needed = ("conv1", "bn1", "conv2", "bn2") + (("bn3",) if hasattr(module, "conv3") else ())
            acts = self._acts(module)
            down = getattr(module, "downsample", "missing")
            if acts is None or not all(hasattr(module, a) for a in needed) or \
                    not (down is None or isinstance(down, nn.Module)):
                continue
            module.lrp_sum = Sum()
            object.__setattr__(module, "lrp_acts", acts)  # a plain list: no second registration
            module.forward = types.MethodType(_torchvision_block_forward, module)
        return model


def _densenet_forward(self, x):
    """torchvision's / Hara et al.'s ``DenseNet.forward`` with its functional ReLU and global
    average pooling replaced by the modules ``lrp_relu`` and ``lrp_pool``."""
    return self.classifier(torch.flatten(self.lrp_pool(self.lrp_relu(self.features(x))), 1))


class DenseNetHeadCanonizer(Canonizer):
    """Make the head of a torchvision-style DenseNet LRP-visible: its forward applies the final
    ReLU and the global average pooling as *functions* (``F.relu``, ``F.adaptive_avg_pool3d``),
    so the pooling would propagate relevance by its gradient (spread uniformly) instead of the
    norm rule. Modules of a class named ``DenseNet`` with ``features`` and a ``nn.Linear``
    ``classifier`` (torchvision's 2-D DenseNet, the 3-D DenseNet of Hara et al. that Siegel et al.
    2025 trained) get ``lrp_relu``/``lrp_pool`` modules and a forward through them — the
    construction of Zennit's DenseNet canonizer and the study's ``DenseNetAdaptiveAvgPool3DCanonizer``.
    MONAI's DenseNet already has these as modules (``class_layers``) and is left alone."""

    def apply(self, model):
        for module in model.modules():
            if type(module).__name__ != "DenseNet" or hasattr(module, "class_layers") \
                    or not isinstance(getattr(module, "features", None), nn.Module) \
                    or not isinstance(getattr(module, "classifier", None), nn.Linear):
                continue
            convs = [m for m in module.features.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
            if not convs:
                continue
            module.lrp_relu = nn.ReLU()
            module.lrp_pool = nn.AdaptiveAvgPool3d(1) if isinstance(convs[0], nn.Conv3d) else nn.AdaptiveAvgPool2d(1)
            module.forward = types.MethodType(_densenet_forward, module)
        return model


def check_merges(model: nn.Module):
    """Forward hooks (returned, to be removed) that raise ``UnsupportedLayerError`` when a merged
    BatchNorm did not read the output of the layer it was folded into: the merge assumed leaf
    order is data order, and the data said otherwise."""
    mods = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for path, m in mods.items():
        if not isinstance(m, MergedBatchNorm):
            continue
        src = m.source

        def save(mod, inp, out, src=src):
            outputs[src] = out

        def check(mod, inp, src=src, path=path):
            # same storage, not the same object: a full backward hook left on the model (MONAI's
            # GradCAM leaves one) hands the next layer an alias of the output
            out = outputs.get(src)
            if out is None or out.data_ptr() != inp[0].data_ptr() or out.shape != inp[0].shape:
                raise UnsupportedLayerError(
                    f"BatchNorm '{path}' follows '{src}' among the modules but does not read its output",
                    expected="a BatchNorm merged into the layer whose output it normalizes",
                    found=f"'{path}' reads another tensor", fix="pass canonize=False (BatchNorm then passes relevance)")

        handles.append(mods[src].register_forward_hook(save))
        handles.append(m.register_forward_pre_hook(check))
    return handles


#: the rewrites every LRP pass applies (they change no output); ``MergeBatchNorm`` is the optional one
STRUCTURAL_CANONIZERS: tuple[Canonizer, ...] = (MonaiResNetCanonizer(), TorchvisionResNetCanonizer(),
                                                DenseNetHeadCanonizer())
DEFAULT_CANONIZERS: tuple[Canonizer, ...] = STRUCTURAL_CANONIZERS + (MergeBatchNorm(),)


def canonize(model: nn.Module, canonizers=DEFAULT_CANONIZERS) -> nn.Module:
    """A deep copy of ``model`` in eval mode, parameters frozen, with ``canonizers`` applied.
    The input model is left unchanged."""
    work = copy.deepcopy(model).eval()
    work.requires_grad_(False)
    for canonizer in canonizers:
        work = canonizer.apply(work)
    return work
