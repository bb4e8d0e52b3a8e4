"""LRP maps against Zennit 0.5.1 on the same models and inputs (float64, CPU, 16³, batch 2).

Two references per case: stock Zennit (``SequentialMergeBatchNorm``), and Zennit with an exact
BatchNorm merge. Zennit's merge leaves each BatchNorm computing ``x/√(1+ε)`` (running_var set to
1, eps kept), a 5e-6 scale per BN that ours removes; with that artefact removed the maps agree to
rounding (≤ 1e-10), with it to ≤ 1e-5 (the issue's bound).
"""
from __future__ import annotations

import pytest
import torch

from neuroxai.attribution.lrp import lrp

from ._models import monai_resnet, sfcn_like, small_cnn

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import (EpsilonAlpha2Beta1, EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlus,  # noqa: E402
                               EpsilonPlusFlat, LayerMapComposite, SpecialFirstLayerMapComposite,
                               layer_map_base)
from zennit.layer import Sum as ZennitSum  # noqa: E402
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZPlus  # noqa: E402
from zennit.types import Convolution, Linear  # noqa: E402

DT = torch.float64
LOW, HIGH = -4.0, 4.0


class ExactMergeBatchNorm(SequentialMergeBatchNorm):
    """Zennit's merge with the BatchNorm left as the exact identity (eps → 0 while merged)."""

    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        self.saved_eps, batch_norm.eps = batch_norm.eps, 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.saved_eps


def _zennit_composite(name, merge):
    c = [merge()]
    return {
        "epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=c),
        "epsilon_plus": lambda: EpsilonPlus(canonizers=c),
        "epsilon_alpha2_beta1": lambda: EpsilonAlpha2Beta1(canonizers=c),
        "epsilon_alpha2_beta1_flat": lambda: EpsilonAlpha2Beta1Flat(canonizers=c),
        "epsilon_gamma_box": lambda: EpsilonGammaBox(low=LOW, high=HIGH, canonizers=c),
    }[name]()


def zennit_lrp(model, x, target, composite, scale):
    """Zennit's map started from ``scale`` (B,) on the target class (logit-scaled one-hot)."""
    out = model(x)
    onehot = torch.zeros_like(out)
    onehot[torch.arange(len(target)), target] = 1
    with Gradient(model, composite) as attributor:
        _, attr = attributor(x, onehot * scale[:, None])
    return attr


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _input(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, 16, 16, 16, generator=g, dtype=DT)


COMPOSITES = ["epsilon_plus_flat", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat",
              "epsilon_gamma_box"]


@pytest.mark.parametrize("make_model", [small_cnn, sfcn_like], ids=["small_cnn", "sfcn_like"])
@pytest.mark.parametrize("name", COMPOSITES)
def test_composites_match_zennit(make_model, name):
    model, x, t = make_model().double(), _input(), torch.tensor([0, 1])
    kw = dict(low=LOW, high=HIGH) if name == "epsilon_gamma_box" else {}
    ours = lrp(model, x, t, composite=name, **kw)
    logits = model(x)[torch.arange(2), t].detach()
    exact = zennit_lrp(model, x, t, _zennit_composite(name, ExactMergeBatchNorm), logits)
    stock = zennit_lrp(model, x, t, _zennit_composite(name, SequentialMergeBatchNorm), logits)
    assert ours.shape == x.shape and ours.dtype == DT
    assert ours.abs().max() > 0
    assert rel_err(ours, exact) <= 1e-10
    assert rel_err(ours, stock) <= 1e-5
    # start="one_hot" is Zennit's default seed (a one-hot of 1)
    ours_1 = lrp(model, x, t, composite=name, start="one_hot", **kw)
    assert rel_err(ours_1, zennit_lrp(model, x, t, _zennit_composite(name, ExactMergeBatchNorm),
                                      torch.ones(2, dtype=DT))) <= 1e-10


def _grouped_cnn():
    """Grouped convolution, LeakyReLU and ELU (both pass-through, as Zennit's ``Pass``)."""
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 4, 3, padding=1, groups=2),
        torch.nn.LeakyReLU(0.1), torch.nn.MaxPool3d(2), torch.nn.Conv3d(4, 4, 3, stride=2), torch.nn.ELU(),
        torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(4, 6), torch.nn.ReLU(),
        torch.nn.Linear(6, 3)).double().eval()


# custom rule maps (rules=) against Zennit composites built from the same rules: covers w², α1β0,
# γ on inputs of both signs, multi-term rules on dense layers and grouped convolutions
CUSTOM = {
    "wsquare_a1b0": ({"first": "wsquare", "Conv3d": "alpha1_beta0", "Linear": "epsilon"},
                     lambda: SpecialFirstLayerMapComposite(
                         layer_map_base() + [(Convolution, AlphaBeta(1, 0)), (torch.nn.Linear, Epsilon())],
                         first_map=[(Linear, WSquare())])),
    "gamma_everywhere": ({"Conv3d": "gamma", "Linear": "epsilon"},
                         lambda: LayerMapComposite(
                             layer_map_base() + [(Convolution, Gamma(0.25)), (torch.nn.Linear, Epsilon())])),
    "dense_alpha_beta": ({"first": "flat", "Conv3d": "zplus", "Linear": "alpha2_beta1"},
                         lambda: SpecialFirstLayerMapComposite(
                             layer_map_base() + [(Convolution, ZPlus()), (torch.nn.Linear, AlphaBeta(2, 1))],
                             first_map=[(Linear, Flat())])),
    "dense_gamma": ({"Conv3d": "epsilon", "Linear": "gamma"},
                    lambda: LayerMapComposite(
                        layer_map_base() + [(Convolution, Epsilon()), (torch.nn.Linear, Gamma(0.25))])),
}


@pytest.mark.parametrize("case", sorted(CUSTOM))
def test_rule_maps_match_zennit(case):
    rules, zc = CUSTOM[case]
    model, x, t = _grouped_cnn(), _input(1), torch.tensor([2, 0])
    ours = lrp(model, x, t, rules=rules)
    logits = model(x)[torch.arange(2), t].detach()
    assert rel_err(ours, zennit_lrp(model, x, t, zc(), logits)) <= 1e-10


def _randomize_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def _zennit_monai_block_forward(self, x):
    """MONAI's ResNetBlock.forward with the residual sum through Zennit's Sum (as Zennit's
    torchvision ResNetBasicBlockCanonizer does for torchvision's BasicBlock)."""
    residual = x
    out = self.act(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
        residual = self.downsample(x)
    return self.act(self.canonizer_sum(torch.stack([residual, out], dim=-1)))


def _zennit_monai_canonizer():
    from monai.networks.nets.resnet import ResNetBlock

    def attribute_map(name, module):
        if isinstance(module, ResNetBlock):
            return {"forward": _zennit_monai_block_forward.__get__(module), "canonizer_sum": ZennitSum()}
        return None

    return CompositeCanonizer([ExactMergeBatchNorm(), AttributeCanonizer(attribute_map)])


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_gamma_box"])
def test_monai_resnet_matches_zennit_resnet_canonizer(name):
    model = _randomize_bn(monai_resnet().double())
    x, t = _input(2), torch.tensor([1, 0])
    kw = dict(low=LOW, high=HIGH) if name == "epsilon_gamma_box" else {}
    ours = lrp(model, x, t, composite=name, **kw)
    comp = {"epsilon_plus_flat": EpsilonPlusFlat, "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
            "epsilon_gamma_box": lambda canonizers: EpsilonGammaBox(LOW, HIGH, canonizers=canonizers)}[name]
    logits = model(x)[torch.arange(2), t].detach()
    ref = zennit_lrp(model, x, t, comp(canonizers=[_zennit_monai_canonizer()]), logits)
    assert rel_err(ours, ref) <= 1e-10


def _odd_cnn(first):
    """Convolutions off the beaten path: anisotropic kernels, no padding, stride 2, dilation 2."""
    torch.manual_seed(5)
    firsts = {"aniso": torch.nn.Conv3d(1, 3, (3, 5, 1), padding=(0, 2, 0)),
              "stride2": torch.nn.Conv3d(1, 3, 3, stride=2),
              "dilated": torch.nn.Conv3d(1, 3, 3, padding=1, dilation=2)}
    return torch.nn.Sequential(
        firsts[first], torch.nn.ReLU(), torch.nn.Conv3d(3, 4, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Conv3d(4, 4, 3, padding=2, dilation=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 2)).double().eval()


@pytest.mark.parametrize("first", ["aniso", "stride2", "dilated", "dense"])
def test_flat_and_box_first_layers_match_zennit(first):
    if first == "dense":
        torch.manual_seed(6)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 ** 3, 5), torch.nn.ReLU(),
                                    torch.nn.Linear(5, 2)).double().eval()
    else:
        model = _odd_cnn(first)
    x, t = _input(4), torch.tensor([0, 1])
    logits = model(x)[torch.arange(2), t].detach()
    for name in ("epsilon_plus_flat", "epsilon_gamma_box"):
        kw = dict(low=LOW, high=HIGH) if name == "epsilon_gamma_box" else {}
        ours = lrp(model, x, t, composite=name, **kw)
        ref = zennit_lrp(model, x, t, _zennit_composite(name, ExactMergeBatchNorm), logits)
        assert rel_err(ours, ref) <= 1e-10, name
