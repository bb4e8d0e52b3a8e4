"""The study's LRP (Siegel et al. 2025) against Zennit 0.5.1 in float64: its composites
(ExcitationBackprop, EpsilonAlpha2Beta1(Flat), EpsilonGamma with γ), through DenseNet
concatenations (MONAI) and torchvision-style 3-D ResNet blocks (the study's resnet.py layout),
with Zennit canonizers of the same construction written here; and relevance conservation.

Zennit references use an exact BatchNorm merge (see test_lrp_reference.py): ours agrees to
rounding (≤ 1e-10 relative to the largest value).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from neuroxai.attribution.lrp import lrp, lrp_conservation

from ._models import hara_densenet, monai_densenet, sfcn_like, small_cnn, torchvision_resnet

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import (EpsilonAlpha2Beta1, EpsilonAlpha2Beta1Flat, EpsilonPlusFlat,  # noqa: E402
                               ExcitationBackprop, LayerMapComposite, layer_map_base)
from zennit.core import collect_leaves  # noqa: E402
from zennit.layer import Sum as ZennitSum  # noqa: E402
from zennit.rules import Epsilon, Gamma  # noqa: E402
from zennit.types import Convolution  # noqa: E402

DT = torch.float64


class ExactMergeBatchNorm(SequentialMergeBatchNorm):
    """Zennit's merge, the merged BatchNorm the exact identity (eps → 0), and — as the study's
    ``CorrectSequentialMergeBatchNorm`` — only where the channel counts match (a DenseNet's last
    convolution is followed among the leaves by the BatchNorm of the next concatenation)."""

    def apply(self, root_module):
        instances, last = [], None
        for leaf in collect_leaves(root_module):
            if isinstance(last, self.linear_type) and isinstance(leaf, self.batch_norm_type) \
                    and last.weight.shape[0] == leaf.weight.shape[0]:
                inst = self.copy()
                inst.register((last,), leaf)
                instances.append(inst)
            last = leaf
        return instances

    def register(self, linears, batch_norm):
        super().register(linears, batch_norm)
        self.saved_eps, batch_norm.eps = batch_norm.eps, 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.saved_eps


def _zennit_block_forward(self, x):
    """The block's forward with the residual sum through Zennit's Sum (Zennit's ResNetCanonizer,
    the study's ResNet3DCanonizer), for relu1..3 (Hara) or one relu (torchvision)."""
    acts = [getattr(self, f"relu{i}", None) or getattr(self, "relu", None) for i in (1, 2, 3)]
    out = acts[0](self.bn1(self.conv1(x)))
    if hasattr(self, "conv3"):
        out = self.bn3(self.conv3(acts[1](self.bn2(self.conv2(out)))))
        last = acts[2]
    else:
        out = self.bn2(self.conv2(out))
        last = acts[1]
    identity = x if self.downsample is None else self.downsample(x)
    return last(self.canonizer_sum(torch.stack([identity, out], dim=-1)))


def _zennit_resnet_canonizer(merge=True):
    def attribute_map(name, module):
        if type(module).__name__ in ("BasicBlock", "Bottleneck"):
            return {"forward": _zennit_block_forward.__get__(module), "canonizer_sum": ZennitSum()}
        return None

    return [CompositeCanonizer(([ExactMergeBatchNorm()] if merge else []) + [AttributeCanonizer(attribute_map)])]


def _zennit_epsilon_gamma(gamma, canonizers):
    """The study's EpsilonGamma (its Zennit fork): γ on every convolution, ε on dense layers."""
    return LayerMapComposite(layer_map_base() + [(Convolution, Gamma(gamma)), (nn.Linear, Epsilon())],
                             canonizers=canonizers)


ZENNIT = {
    "epsilon_plus_flat": lambda c, g: EpsilonPlusFlat(canonizers=c),
    "epsilon_alpha2_beta1": lambda c, g: EpsilonAlpha2Beta1(canonizers=c),
    "epsilon_alpha2_beta1_flat": lambda c, g: EpsilonAlpha2Beta1Flat(canonizers=c),
    "excitation_backprop": lambda c, g: ExcitationBackprop(canonizers=c),
    "epsilon_gamma": lambda c, g: _zennit_epsilon_gamma(g, c),
}


def zennit_lrp(model, x, target, composite):
    out = model(x)
    seed = torch.zeros_like(out)
    seed[torch.arange(len(target)), target] = out[torch.arange(len(target)), target].detach()
    with Gradient(model, composite) as attributor:
        _, attr = attributor(x, seed)
    return attr


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _x(shape=(2, 1, 16, 16, 16), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


CASES = [("excitation_backprop", None), ("epsilon_alpha2_beta1", None), ("epsilon_alpha2_beta1_flat", None),
         ("epsilon_gamma", 0.0), ("epsilon_gamma", 0.01), ("epsilon_gamma", 1.0)]


@pytest.mark.parametrize("make_model", [small_cnn, sfcn_like], ids=["small_cnn", "sfcn_like"])
@pytest.mark.parametrize("name,gamma", CASES)
def test_study_composites_match_zennit(make_model, name, gamma):
    model, x, t = make_model().double(), _x(), torch.tensor([0, 1])
    kw = {} if gamma is None else {"gamma": gamma}
    ours = lrp(model, x, t, composite=name, **kw)
    ref = zennit_lrp(model, x, t, ZENNIT[name]([ExactMergeBatchNorm()], gamma))
    assert ours.abs().max() > 0
    assert rel_err(ours, ref) <= 1e-10


def test_epsilon_gamma_moves_from_lrp0_towards_zplus():
    model, x, t = small_cnn().double(), _x(seed=1), torch.tensor([1, 0])
    maps = [lrp(model, x, t, composite="epsilon_gamma", gamma=g) for g in (0.0, 0.1, 1.0, 1e4)]
    zplus = lrp(model, x, t, rules={"Conv3d": "zplus", "Linear": "epsilon"})
    dist = [rel_err(m, zplus) for m in maps]
    assert dist == sorted(dist, reverse=True) and dist[-1] < 1e-3 < dist[0]


@pytest.mark.parametrize("block,hara", [("basic", True), ("bottleneck", True), ("basic", False)],
                         ids=["hara_basic", "hara_bottleneck", "torchvision_basic"])
@pytest.mark.parametrize("name,gamma", [("epsilon_plus_flat", None), ("excitation_backprop", None),
                                        ("epsilon_gamma", 0.1)])
def test_torchvision_style_resnet_matches_zennit_resnet_canonizer(block, hara, name, gamma):
    model = torchvision_resnet(block, hara).double()
    x, t = _x(seed=2), torch.tensor([1, 0])
    kw = {} if gamma is None else {"gamma": gamma}
    ours = lrp(model, x, t, composite=name, **kw)
    ref = zennit_lrp(model, x, t, ZENNIT[name](_zennit_resnet_canonizer(), gamma))
    assert rel_err(ours, ref) <= 1e-10


@pytest.mark.parametrize("name,gamma", [("epsilon_plus_flat", None), ("epsilon_alpha2_beta1", None),
                                        ("excitation_backprop", None), ("epsilon_gamma", 0.01)])
@pytest.mark.parametrize("canonize", [True, False], ids=["merged_bn", "study_canonizer"])
def test_densenet_matches_zennit(name, gamma, canonize):
    """canonize=False is the study's DefaultDenseNetCanonizer3D construction: no BatchNorm merged
    (every BatchNorm passes relevance; MONAI's head already has its ReLU and pooling as modules,
    which is what the study's canonizer adds to its DenseNet)."""
    model = monai_densenet().double()
    x, t = _x(seed=3), torch.tensor([0, 1])
    kw = {} if gamma is None else {"gamma": gamma}
    ours = lrp(model, x, t, composite=name, canonize=canonize, **kw)
    ref = zennit_lrp(model, x, t, ZENNIT[name]([ExactMergeBatchNorm()] if canonize else [], gamma))
    assert ours.abs().max() > 0
    assert rel_err(ours, ref) <= 1e-10


def _zennit_densenet_head_forward(self, x):
    return self.classifier(torch.flatten(self.canonizer_pool(self.canonizer_relu(self.features(x))), 1))


def _zennit_densenet_canonizer(merge):
    """The study's DenseNetAdaptiveAvgPool3DCanonizer construction: the head's functional ReLU and
    global average pooling as modules (so the pooling gets the norm rule)."""
    def attribute_map(name, module):
        if type(module).__name__ == "DenseNet":
            return {"forward": _zennit_densenet_head_forward.__get__(module), "canonizer_relu": nn.ReLU(),
                    "canonizer_pool": nn.AdaptiveAvgPool3d(1)}
        return None

    return [CompositeCanonizer(([ExactMergeBatchNorm()] if merge else []) + [AttributeCanonizer(attribute_map)])]


@pytest.mark.parametrize("name,gamma,canonize", [("epsilon_plus_flat", None, True), ("excitation_backprop", None, False),
                                                 ("epsilon_gamma", 0.1, False)])
def test_hara_densenet_head_is_canonized_as_the_study_did(name, gamma, canonize):
    """The study's own DenseNet (Hara et al. layout) pools with F.adaptive_avg_pool3d in forward:
    without the head canonizer the pooling's gradient would spread relevance uniformly."""
    model = hara_densenet().double()
    x, t = _x(seed=6), torch.tensor([1, 0])
    kw = {} if gamma is None else {"gamma": gamma}
    ours = lrp(model, x, t, composite=name, canonize=canonize, **kw)
    ref = zennit_lrp(model, x, t, ZENNIT[name](_zennit_densenet_canonizer(canonize), gamma))
    assert rel_err(ours, ref) <= 1e-10
    if name == "epsilon_plus_flat":
        plain = zennit_lrp(model, x, t, ZENNIT[name]([ExactMergeBatchNorm()] if canonize else [], gamma))
        assert rel_err(plain, ref) > 1e-3  # the head rewrite matters


def test_a_merge_against_the_data_flow_is_refused():
    """A conv followed among the leaves by a BatchNorm of equal width that reads another tensor:
    the merge would be wrong, and the LRP pass says so instead of returning a wrong map."""
    from neuroxai.errors import UnsupportedLayerError

    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv3d(1, 2, 3, padding=1)
            self.bn = nn.BatchNorm3d(2)  # normalizes b's output, though it follows a
            self.b = nn.Conv3d(1, 2, 3, padding=1)
            self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 2))

        def forward(self, x):
            return self.head(torch.cat([self.a(x), self.bn(self.b(x))], 2))

    m = TwoBranch().double().eval()
    x = _x((1, 1, 6, 6, 6))
    with pytest.raises(UnsupportedLayerError, match="does not read its output"):
        lrp(m, x, torch.tensor([0]))
    assert lrp(m, x, torch.tensor([0]), canonize=False).abs().max() > 0


def _no_offsets(model, head):
    """Zero the head's bias and every BatchNorm's shift (mean 0, bias 0, |γ|): no layer then adds
    an offset that a rule would absorb, so any relevance lost is lost by the propagation."""
    with torch.no_grad():
        dict(model.named_modules())[head].bias.zero_()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.zero_()
                m.bias.zero_()
                m.weight.abs_()
    return model


@pytest.mark.parametrize("canonize", [True, False], ids=["merged_bn", "bn_passes"])
@pytest.mark.parametrize("name", ["densenet121", "hara_densenet", "hara_resnet_bottleneck", "hara_resnet_basic"])
def test_lrp_conserves_relevance_through_concatenations_and_residual_sums(name, canonize):
    """Sum of input relevance = target logit within 1e-5 relative (float64) for EpsilonGamma,
    with no offsets in the model and stabilizers of 1e-12 (what biases and stabilizers absorb is
    known and not the question): the concatenations (DenseNet121) and residual sums (ResNet) must
    pass all the relevance, whether BatchNorm is merged or passes it. (Not z⁺: where all of a unit's
    contributions are negative but a residual sum still gives it relevance, z⁺ has nothing to
    spread it over — 3-4 % of the logit in the toy bottleneck, in Zennit as here.)"""
    if name == "densenet121":
        if not canonize:
            pytest.skip("one DenseNet121 pass is enough (10 s)")
        model, x = _no_offsets(monai_densenet(full=True).double(), "class_layers.out"), _x((1, 1, 32, 32, 32), 5)
    elif name == "hara_densenet":
        model, x = _no_offsets(hara_densenet().double(), "classifier"), _x((2, 1, 16, 16, 16), 5)
    else:
        model, x = _no_offsets(torchvision_resnet(name.rsplit("_", 1)[1]).double(), "fc"), _x((2, 1, 16, 16, 16), 5)
    t = torch.tensor([1] * x.shape[0])
    cons = lrp_conservation(model, x, t, composite="epsilon_gamma", canonize=canonize, epsilon=1e-12,
                            stabilizer=1e-12)
    assert cons.start.abs().min() > 0
    assert cons.relative_error.max() <= 1e-5, cons.relative_error


def test_merge_check_accepts_an_alias_from_a_leftover_backward_hook():
    """MONAI's GradCAM leaves a full backward hook on its target layer, which hands the next
    layer an alias of the output: the merge check compares storage, not objects, and the map is
    the one without the hook."""
    monai_vis = pytest.importorskip("monai.visualize")
    model, x, t = sfcn_like().double(), _x(seed=4), torch.tensor([0, 1])
    clean = lrp(model, x, t)
    monai_vis.GradCAM(nn_module=model, target_layers="12")(x, class_idx=1)
    assert any(m._backward_hooks for m in model.modules())
    assert torch.equal(lrp(model, x, t), clean)
