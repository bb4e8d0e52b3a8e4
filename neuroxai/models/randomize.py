"""Model-parameter randomization (Adebayo et al. 2018, "Sanity checks for saliency maps").

Layers with weights (Conv3d, Linear, BatchNorm3d) are re-initialized from the output down
(cascading) or one at a time (independent), each time in a deep copy: the model passed in is
never modified. A method whose maps stay similar after randomization does not explain the model.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
from torch import nn

_PARAM_LAYERS = (nn.Conv3d, nn.Linear, nn.BatchNorm3d, nn.Conv2d, nn.Conv1d)


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the layers with parameters, in forward (registration) order."""
    return [n for n, m in model.named_modules() if isinstance(m, _PARAM_LAYERS) and n]


def _reinit(module: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        if isinstance(module, nn.BatchNorm3d):
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
            module.running_mean.zero_()
            module.running_var.fill_(1.0)
            return
        fan_in = module.weight[0].numel()
        bound = 1.0 / fan_in ** 0.5
        module.weight.copy_((torch.rand(module.weight.shape, generator=gen) * 2 - 1) * bound * 3 ** 0.5)
        if module.bias is not None:
            module.bias.copy_((torch.rand(module.bias.shape, generator=gen) * 2 - 1) * bound)


def cascading_randomization(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer, copy)`` with ``layer`` and every layer above it randomized, top down."""
    names = weight_layers(model)
    gen = torch.Generator().manual_seed(seed)
    cur = copy.deepcopy(model)
    mods = dict(cur.named_modules())
    for name in reversed(names):
        _reinit(mods[name], gen)
        yield name, copy.deepcopy(cur)


def independent_randomization(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(layer, copy)`` with only ``layer`` randomized, top down."""
    for i, name in enumerate(reversed(weight_layers(model))):
        gen = torch.Generator().manual_seed(seed + i)
        cur = copy.deepcopy(model)
        _reinit(dict(cur.named_modules())[name], gen)
        yield name, cur
