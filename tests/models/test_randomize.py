"""Model-parameter randomization (Adebayo et al. 2018): order, which layers change, copies only."""
from __future__ import annotations

import math

import torch
from torch import nn

from neuroxai.models import MODELS
from neuroxai.models.randomize import (cascading_randomization, independent_randomization, layer_groups,
                                       randomize_layer, weight_layers)


def _trained_like():
    """SFCN-small with non-default weights and BN statistics everywhere (as after training)."""
    torch.manual_seed(0)
    m = MODELS["sfcn"](channels=(4, 8, 8, 8))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm3d):
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
    return m.eval()


def _eq(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_layers_and_their_batchnorms():
    m = _trained_like()
    # Sequential indices: conv at 0, 4, 8 (blocks), 12 (1×1×1), 17 (head); BN right after each block conv
    assert weight_layers(m) == ["0", "4", "8", "12", "17"]
    assert layer_groups(m) == {"0": ["0", "1"], "4": ["4", "5"], "8": ["8", "9"], "12": ["12", "13"], "17": ["17"]}
    r = MODELS["resnet"](block_inplanes=(4, 4, 4, 4))
    g = layer_groups(r)
    assert g["conv1"] == ["conv1", "bn1"] and g["layer2.0.downsample.0"] == ["layer2.0.downsample.0", "layer2.0.downsample.1"]
    assert weight_layers(r)[-1] == "fc"


def test_cascading_goes_top_down_and_keeps_what_is_below():
    m = _trained_like()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    layers = weight_layers(m)
    steps = list(cascading_randomization(m, seed=0))
    assert [n for n, _ in steps] == layers[::-1]
    groups = layer_groups(m)
    orig = dict(m.named_modules())
    for k, (name, mk) in enumerate(steps, start=1):
        mods = dict(mk.named_modules())
        for layer in layers:
            randomized = layer in layers[-k:]
            assert torch.equal(mods[layer].weight, orig[layer].weight) != randomized, (name, layer)
            for bn in groups[layer][1:]:
                if randomized:  # reset to the identity
                    assert torch.all(mods[bn].weight == 1) and torch.all(mods[bn].running_var == 1)
                    assert torch.all(mods[bn].bias == 0) and torch.all(mods[bn].running_mean == 0)
                else:
                    assert torch.equal(mods[bn].running_mean, orig[bn].running_mean)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # original untouched
    x = torch.randn(2, 1, 16, 16, 16)
    assert not torch.allclose(steps[-1][1](x), m(x))


def test_independent_changes_one_layer_with_the_same_draw_as_cascading():
    m = _trained_like()
    layers = weight_layers(m)
    ind = list(independent_randomization(m, seed=0))
    cas = list(cascading_randomization(m, seed=0))
    assert [n for n, _ in ind] == layers[::-1]
    orig = dict(m.named_modules())
    for name, mi in ind:
        mods = dict(mi.named_modules())
        assert [l for l in layers if not torch.equal(mods[l].weight, orig[l].weight)] == [name]
    # the top layer alone: both modes give the same model; a layer's draw depends on (seed, name)
    assert _eq(ind[0][1], cas[0][1])
    lower = dict(ind[2][1].named_modules())[ind[2][0]].weight
    assert torch.equal(lower, dict(cas[2][1].named_modules())[ind[2][0]].weight)
    again = list(independent_randomization(m, seed=0))
    other = list(independent_randomization(m, seed=1))
    assert _eq(again[1][1], ind[1][1]) and not _eq(other[1][1], ind[1][1])


def test_reinit_follows_pytorch_default_distribution():
    conv = nn.Sequential(nn.Conv3d(64, 64, 3))
    with torch.no_grad():
        conv[0].weight.fill_(5.0)
    randomize_layer(conv, "0", seed=0)
    w, b = conv[0].weight, conv[0].bias
    bound = 1 / math.sqrt(64 * 27)  # kaiming_uniform_(a=√5): U(±1/√fan_in)
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.01 * bound
    assert b.abs().max() <= bound
