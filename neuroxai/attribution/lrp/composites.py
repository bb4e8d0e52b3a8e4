"""Composites: which rule each layer gets (Zennit's ``composites.py``, same definitions).

A composite maps layer *types* to rules, with an optional special map for the first linear
layer met in ``model.named_modules()`` order. ``COMPOSITES[name](**params)`` builds one;
``RuleMapComposite`` builds one from a user mapping (``rules=``).

Base map shared by every composite (Zennit's ``layer_map_base``): activations → pass,
residual ``Sum`` → norm, average pooling → norm, BatchNorm (if left after canonization) → pass,
the single-logit wrapper's ``Negate`` (``neuroxai.models.binary``) → pass.
Layers with no rule and a known gradient (max pooling = winner-take-all, Dropout, Flatten,
Identity) keep their own forward and backward.
"""
from __future__ import annotations

from typing import Mapping

from torch import nn

from ...errors import ConfigError
from ...models.binary import Negate
from ...registry import Registry
from .canonizers import Sum
from .rules import (Alpha2Beta1, Epsilon, Flat, Gamma, Gradient, Norm, Pass, Rule, ZBox, ZPlus, make_rule)

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEARS = CONVOLUTIONS + (nn.Linear,)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU)
AVGPOOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
            nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: parameter-free layers whose plain gradient is the LRP propagation (no rule needed)
GRADIENT_LAYERS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                   nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
                   nn.AlphaDropout, nn.Flatten, nn.Unflatten, nn.Identity)

COMPOSITES: Registry = Registry("LRP composite")


class Composite:
    """Maps each module to a rule (or ``None``). ``rule_for`` is called on every module of
    ``named_modules()`` in order with a shared ``ctx`` dict (for first-layer bookkeeping)."""

    def rule_for(self, ctx: dict, name: str, module: nn.Module) -> Rule | None:  # pragma: no cover
        raise NotImplementedError


class LayerMapComposite(Composite):
    """Rules by layer type: ``layer_map = [(types, rule), ...]``, first match wins; the first
    module matching ``first_map`` gets that rule instead (Zennit's
    ``SpecialFirstLayerMapComposite``)."""

    def __init__(self, layer_map, first_map=()):
        self.layer_map = list(layer_map)
        self.first_map = list(first_map)

    def rule_for(self, ctx, name, module):
        if not ctx.get("first_layer_visited", False):
            for types, rule in self.first_map:
                if isinstance(module, types):
                    ctx["first_layer_visited"] = True
                    return rule
        return next((rule for types, rule in self.layer_map if isinstance(module, types)), None)


def layer_map_base(stabilizer: float = 1e-6):
    """Rules every composite shares (Zennit's ``layer_map_base``)."""
    # Negate (a single-logit model's class 0, −z): the whole of −z comes from z, so R_z = R_−z
    return [(ACTIVATIONS, Pass()), (Sum, Norm(stabilizer)), (AVGPOOLS, Norm(stabilizer)), (BATCHNORMS, Pass()),
            (Negate, Pass())]


@COMPOSITES.register("epsilon_plus_flat")
def epsilon_plus_flat(epsilon=1e-6, stabilizer=1e-6, **_) -> LayerMapComposite:
    """flat for the first linear layer, z⁺ for convolutions, ε for dense layers (EpsilonPlusFlat)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, ZPlus(stabilizer)), (nn.Linear, Epsilon(epsilon))],
        first_map=[(LINEARS, Flat(stabilizer))])


@COMPOSITES.register("epsilon_plus")
def epsilon_plus(epsilon=1e-6, stabilizer=1e-6, **_) -> LayerMapComposite:
    """z⁺ for convolutions, ε for dense layers (Zennit's EpsilonPlus)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, ZPlus(stabilizer)), (nn.Linear, Epsilon(epsilon))])


@COMPOSITES.register("epsilon_gamma_box")
def epsilon_gamma_box(epsilon=1e-6, gamma=0.25, stabilizer=1e-6, low=None, high=None, **_) -> LayerMapComposite:
    """z^B (bounds ``low``/``high``) for the first convolution, γ for the other convolutions, ε for
    dense layers (Zennit's EpsilonGammaBox)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, Gamma(gamma, stabilizer)), (nn.Linear, Epsilon(epsilon))],
        first_map=[(CONVOLUTIONS, ZBox(low, high, stabilizer))])


@COMPOSITES.register("epsilon_alpha2_beta1")
def epsilon_alpha2_beta1(epsilon=1e-6, stabilizer=1e-6, **_) -> LayerMapComposite:
    """α2β1 for convolutions, ε for dense layers (Zennit's EpsilonAlpha2Beta1)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, Alpha2Beta1(stabilizer)), (nn.Linear, Epsilon(epsilon))])


@COMPOSITES.register("epsilon_alpha2_beta1_flat")
def epsilon_alpha2_beta1_flat(epsilon=1e-6, stabilizer=1e-6, **_) -> LayerMapComposite:
    """flat first, α2β1 for convolutions, ε for dense layers (Zennit's EpsilonAlpha2Beta1Flat)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, Alpha2Beta1(stabilizer)), (nn.Linear, Epsilon(epsilon))],
        first_map=[(LINEARS, Flat(stabilizer))])


@COMPOSITES.register("epsilon_gamma")
def epsilon_gamma(epsilon=1e-6, gamma=0.25, stabilizer=1e-6, **_) -> LayerMapComposite:
    """γ for every convolution (the first too), ε for dense layers: the ``EpsilonGamma`` composite
    of the study's Zennit (Siegel et al. 2025, run with γ ∈ {0, 0.001, 0.01, 0.1, 1}; not in Zennit
    0.5.1). γ = 0 is LRP-0 with a stabilizer; a large γ approaches z⁺ (Montavon et al. 2019)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, Gamma(gamma, stabilizer)), (nn.Linear, Epsilon(epsilon))])


@COMPOSITES.register("excitation_backprop")
def excitation_backprop(stabilizer=1e-6, **_) -> LayerMapComposite:
    """Excitation backprop (Zhang et al. 2018, "Top-down neural attention by excitation backprop",
    IJCV 126): z⁺ for every convolution and dense layer, the norm rule for residual sums and average
    pooling, and — unlike the other composites, as Zennit's ``ExcitationBackprop`` — no base map:
    activations and BatchNorms left after canonization keep their own gradient. (The base map
    follows, shadowed for these layer types, so that a layer only it knows still gets its rule.)"""
    return LayerMapComposite([(Sum, Norm(stabilizer)), (AVGPOOLS, Norm(stabilizer)), (LINEARS, ZPlus(stabilizer)),
                              (ACTIVATIONS + BATCHNORMS, Gradient())] + layer_map_base(stabilizer))


@COMPOSITES.register("epsilon")
def epsilon_only(epsilon=1e-6, stabilizer=1e-6, **_) -> LayerMapComposite:
    """ε for every convolution and dense layer (not in Zennit; relevance is conserved up to ε
    and bias absorption — the conservation check uses it)."""
    return LayerMapComposite(layer_map_base(stabilizer) + [(LINEARS, Epsilon(epsilon))])


class RuleMapComposite(Composite):
    """Rules from a user mapping (the ``rules=`` parameter / YAML ``rules:``).

    Keys, most specific first:

    * a module path as in ``model.named_modules()`` (``"features.0"``, ``"fc"``);
    * ``"first"``: the first Conv/Linear layer in ``named_modules()`` order;
    * a layer class name (``"Conv3d"``, ``"Linear"``, ``"AvgPool3d"``; base classes count).

    Values are rule names of ``RULES`` (``epsilon``, ``zplus``, ``gamma``, ``alpha1_beta0``,
    ``alpha2_beta1``, ``flat``, ``wsquare``, ``zbox``, ``pass``, ``norm``, ``gradient``) or
    ``Rule`` instances; ``epsilon``/``gamma``/``stabilizer``/``low``/``high`` parameterize them.
    Activations, pooling, BatchNorm and residual sums keep the base map unless named. Example:
    ``rules={"Conv3d": "zplus", "Linear": "epsilon", "first": "flat"}`` (= epsilon_plus_flat).
    """

    def __init__(self, rules: Mapping[str, object], **params):
        if not isinstance(rules, Mapping) or not rules:
            raise ConfigError("LRP 'rules' must be a non-empty mapping", expected="{'Conv3d': 'zplus', ...}",
                              found=repr(rules), fix="pass rules={'Conv3d': 'zplus', 'Linear': 'epsilon'}")
        self.rules = {str(k): make_rule(v, **params) for k, v in rules.items()}
        self.base = LayerMapComposite(layer_map_base(params.get("stabilizer", 1e-6)))
        self.used: set[str] = set()

    def rule_for(self, ctx, name, module):
        if name in self.rules:
            self.used.add(name)
            return self.rules[name]
        if "first" in self.rules and not ctx.get("first_layer_visited") and isinstance(module, LINEARS):
            ctx["first_layer_visited"] = True
            self.used.add("first")
            return self.rules["first"]
        for cls in type(module).__mro__:
            if cls.__name__ in self.rules:
                self.used.add(cls.__name__)
                return self.rules[cls.__name__]
        return self.base.rule_for(ctx, name, module)

    def check_keys(self, model: nn.Module) -> None:
        """Every key must name a module path of ``model``, ``"first"`` or a layer class."""
        names = {n for n, _ in model.named_modules()}
        bad = [k for k in self.rules
               if k not in self.used and k != "first" and k not in names and not hasattr(nn, k)]
        if bad:
            classes = sorted({type(m).__name__ for m in model.modules()})
            raise ConfigError("unknown key in LRP rules", expected=f"'first', a layer class such as {classes}, "
                              "or a module path of the model", found=repr(bad),
                              fix="use names from model.named_modules() or layer class names")


def make_composite(composite: str | Composite | None = "epsilon_plus_flat",
                   rules: Mapping[str, object] | None = None, **params) -> Composite:
    """A composite from its name, an instance, or a ``rules=`` mapping (which wins)."""
    if rules is not None:
        return RuleMapComposite(rules, **params)
    if isinstance(composite, Composite):
        return composite
    return COMPOSITES[composite](**params)

