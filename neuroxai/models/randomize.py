"""Model-parameter randomization (Adebayo et al. 2018, "Sanity checks for saliency maps", NeurIPS).

A *layer* is a module with a weight that maps features (Conv1/2/3d, Linear), listed in forward
(registration) order; ``weight_layers(model)`` names them. Each layer owns the BatchNorm layers
registered after it and before the next weight layer (conv → BN, the post-norm pattern of SFCN
and ResNet; in DenseNet's pre-norm layers a BN goes with the conv before it). Randomizing a layer
re-draws its weight and bias from PyTorch's default initialization (``kaiming_uniform_(a=√5)``,
bias U(±1/√fan_in)) — what the trained model started from — and resets its BatchNorms to the
identity (γ=1, β=0, running mean 0, variance 1): trained statistics belong to the trained weights.

``cascading_randomization`` goes from the output layer down, each step keeping the layers
already randomized (the paper's cascading test); ``independent_randomization`` randomizes one
layer at a time. Both yield deep copies; the model passed in is never modified. A layer's random
draw depends only on ``(seed, layer name)``, so the two modes randomize a layer identically.
"""
from __future__ import annotations

import copy
import math
import zlib
from typing import Iterator

import torch
from torch import nn

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the Conv/Linear layers of ``model`` in forward (registration) order."""
    return [n for n, m in model.named_modules() if n and isinstance(m, _WEIGHT_LAYERS)]


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """``{weight layer: [that layer, the BatchNorms that follow it]}`` in registration order."""
    groups: dict[str, list[str]] = {}
    cur = None
    for n, m in model.named_modules():
        if not n:
            continue
        if isinstance(m, _WEIGHT_LAYERS):
            cur = n
            groups[n] = [n]
        elif isinstance(m, _NORMS) and cur is not None:
            groups[cur].append(n)
    return groups


def _layer_generator(seed: int, name: str) -> torch.Generator:
    # CPU generators seed Mersenne Twister from 32 bits: mix seed and name into those bits.
    return torch.Generator().manual_seed(zlib.crc32(f"{int(seed)}:{name}".encode()))


@torch.no_grad()
def _reinit(module: nn.Module, gen: torch.Generator) -> None:
    if isinstance(module, _NORMS):
        if module.affine:
            module.weight.fill_(1.0)
            module.bias.zero_()
        if module.track_running_stats:
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
        return
    w = torch.empty(module.weight.shape, dtype=module.weight.dtype)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
    module.weight.copy_(w)
    if module.bias is not None:
        bound = 1.0 / math.sqrt(max(1, module.weight[0].numel()))
        module.bias.copy_(torch.empty(module.bias.shape, dtype=module.bias.dtype).uniform_(-bound, bound,
                                                                                             generator=gen))


def randomize_layer(model: nn.Module, name: str, seed: int = 0) -> None:
    """Re-initialize weight layer ``name`` of ``model`` **in place** (and reset its BatchNorms)."""
    groups = layer_groups(model)
    mods = dict(model.named_modules())
    gen = _layer_generator(seed, name)
    for n in groups[name]:
        _reinit(mods[n], gen)


def cascading_randomization(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer name, copy)`` from the output layer down; in the k-th copy the top k
    weight layers (and their BatchNorms) are re-initialized, the rest keep the trained weights."""
    cur = copy.deepcopy(model)
    for name in reversed(weight_layers(model)):
        randomize_layer(cur, name, seed)
        yield name, copy.deepcopy(cur)


def independent_randomization(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer name, copy)`` from the output layer down, only that layer re-initialized."""
    for name in reversed(weight_layers(model)):
        cur = copy.deepcopy(model)
        randomize_layer(cur, name, seed)
        yield name, cur
