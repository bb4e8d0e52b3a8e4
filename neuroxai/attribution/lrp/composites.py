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
from .rules import (SHARED_PARAMS, Alpha2Beta1, Epsilon, Flat, Gamma, Gradient, Norm, Pass, Rule, ZBox, ZPlus,
                    make_rule)

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
    norm = Norm(stabilizer=stabilizer)
    return [(ACTIVATIONS, Pass()), (Sum, norm), (AVGPOOLS, norm), (BATCHNORMS, Pass()),
            (Negate, Pass())]


@COMPOSITES.register("epsilon_plus_flat")
def epsilon_plus_flat(epsilon=1e-6, stabilizer=1e-6) -> LayerMapComposite:
    """flat for the first linear layer, z⁺ for convolutions, ε for dense layers (EpsilonPlusFlat)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, ZPlus(stabilizer=stabilizer)),
                                      (nn.Linear, Epsilon(epsilon=epsilon))],
        first_map=[(LINEARS, Flat(stabilizer=stabilizer))])


@COMPOSITES.register("epsilon_plus")
def epsilon_plus(epsilon=1e-6, stabilizer=1e-6) -> LayerMapComposite:
    """z⁺ for convolutions, ε for dense layers (Zennit's EpsilonPlus)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, ZPlus(stabilizer=stabilizer)),
                                      (nn.Linear, Epsilon(epsilon=epsilon))])


@COMPOSITES.register("epsilon_gamma_box")
def epsilon_gamma_box(epsilon=1e-6, gamma=0.25, stabilizer=1e-6, low=None, high=None) -> LayerMapComposite:
    """z^B (bounds ``low``/``high``) for the first convolution, γ for the other convolutions, ε for
    dense layers (Zennit's EpsilonGammaBox)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, Gamma(gamma=gamma, stabilizer=stabilizer)),
                                      (nn.Linear, Epsilon(epsilon=epsilon))],
        first_map=[(CONVOLUTIONS, ZBox(low=low, high=high, stabilizer=stabilizer))])


@COMPOSITES.register("epsilon_alpha2_beta1")
def epsilon_alpha2_beta1(epsilon=1e-6, stabilizer=1e-6) -> LayerMapComposite:
    """α2β1 for convolutions, ε for dense layers (Zennit's EpsilonAlpha2Beta1)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, Alpha2Beta1(stabilizer=stabilizer)),
                                      (nn.Linear, Epsilon(epsilon=epsilon))])


@COMPOSITES.register("epsilon_alpha2_beta1_flat")
def epsilon_alpha2_beta1_flat(epsilon=1e-6, stabilizer=1e-6) -> LayerMapComposite:
    """flat first, α2β1 for convolutions, ε for dense layers (Zennit's EpsilonAlpha2Beta1Flat)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, Alpha2Beta1(stabilizer=stabilizer)),
                                      (nn.Linear, Epsilon(epsilon=epsilon))],
        first_map=[(LINEARS, Flat(stabilizer=stabilizer))])


@COMPOSITES.register("epsilon_gamma")
def epsilon_gamma(epsilon=1e-6, gamma=0.25, stabilizer=1e-6) -> LayerMapComposite:
    """γ for every convolution (the first too), ε for dense layers: the ``EpsilonGamma`` composite
    of the study's Zennit (Siegel et al. 2025, run with γ ∈ {0, 0.001, 0.01, 0.1, 1}; not in Zennit
    0.5.1). γ = 0 is LRP-0 with a stabilizer; a large γ approaches z⁺ (Montavon et al. 2019)."""
    return LayerMapComposite(
        layer_map_base(stabilizer) + [(CONVOLUTIONS, Gamma(gamma=gamma, stabilizer=stabilizer)),
                                      (nn.Linear, Epsilon(epsilon=epsilon))])


@COMPOSITES.register("excitation_backprop")
def excitation_backprop(stabilizer=1e-6) -> LayerMapComposite:
    """Excitation backprop (Zhang et al. 2018, "Top-down neural attention by excitation backprop",
    IJCV 126): z⁺ for every convolution and dense layer, the norm rule for residual sums and average
    pooling, and — unlike the other composites, as Zennit's ``ExcitationBackprop`` — no base map:
    activations and BatchNorms left after canonization keep their own gradient. (The base map
    follows, shadowed for these layer types, so that a layer only it knows still gets its rule.)"""
    norm = Norm(stabilizer=stabilizer)
    return LayerMapComposite([(Sum, norm), (AVGPOOLS, norm), (LINEARS, ZPlus(stabilizer=stabilizer)),
                              (ACTIVATIONS + BATCHNORMS, Gradient())] + layer_map_base(stabilizer))


@COMPOSITES.register("epsilon")
def epsilon_only(epsilon=1e-6, stabilizer=1e-6) -> LayerMapComposite:
    """ε for every convolution and dense layer (not in Zennit; relevance is conserved up to ε
    and bias absorption — the conservation check uses it)."""
    return LayerMapComposite(layer_map_base(stabilizer) + [(LINEARS, Epsilon(epsilon=epsilon))])


class RuleMapComposite(Composite):
    """Rules from a user mapping (the ``rules=`` parameter / YAML ``rules:``).

    Keys, most specific first:

    * a module path as in ``model.named_modules()`` (``"features.0"``, ``"fc"``);
    * ``"first"``: the first Conv/Linear layer in ``named_modules()`` order;
    * a layer class name (``"Conv3d"``, ``"Linear"``, ``"AvgPool3d"``; base classes count).

    Values are rule names of ``RULES`` (``epsilon``, ``zplus``, ``gamma``, ``alpha1_beta0``,
    ``alpha2_beta1``, ``flat``, ``wsquare``, ``zbox``, ``pass``, ``norm``, ``gradient``), a rule
    with its own parameters (``{"rule": "gamma", "gamma": 0.5}``) or ``Rule`` instances;
    ``shared`` (``epsilon``/``gamma``/``stabilizer``/``low``/``high``) parameterizes the rules
    that have those parameters (:func:`~neuroxai.attribution.lrp.rules.make_rule`).
    Activations, pooling, BatchNorm and residual sums keep the base map unless named. Example:
    ``rules={"Conv3d": "zplus", "Linear": "epsilon", "first": "flat"}`` (= epsilon_plus_flat).
    """

    def __init__(self, rules: Mapping[str, object], **shared):
        if not isinstance(rules, Mapping) or not rules:
            raise ConfigError("LRP 'rules' must be a non-empty mapping", expected="{'Conv3d': 'zplus', ...}",
                              found=repr(rules), fix="pass rules={'Conv3d': 'zplus', 'Linear': 'epsilon'}")
        _check_shared(shared)
        self.rules = {str(k): _keyed(k, v, shared) for k, v in rules.items()}
        self.base = LayerMapComposite(layer_map_base(shared.get("stabilizer", 1e-6)))
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


def _check_shared(shared: Mapping) -> None:
    bad = sorted(set(shared) - set(SHARED_PARAMS))
    if bad:
        raise ConfigError(f"unknown LRP parameter(s) {bad}", expected=f"some of {list(SHARED_PARAMS)}", found=bad,
                          fix="pass a rule's own parameters with the rule: {rule: gamma, gamma: 0.5}")


def _keyed(key, spec, shared: Mapping) -> Rule:
    """``make_rule`` for the ``rules`` entry ``key``, whose name its error carries."""
    try:
        return make_rule(spec, **shared)
    except ConfigError as exc:
        raise ConfigError(f"rules.{key}: {exc.args[0].splitlines()[0]}", expected=exc.expected, found=exc.found,
                          fix=exc.fix) from None


def make_composite(composite: str | Composite | None = "epsilon_plus_flat",
                   rules: Mapping[str, object] | None = None, **shared) -> Composite:
    """A composite from its name, an instance, or a ``rules=`` mapping (which wins). ``shared``:
    ``lrp``'s rule parameters (:data:`SHARED_PARAMS`); a named composite takes those it names."""
    if rules is not None:
        return RuleMapComposite(rules, **shared)
    if isinstance(composite, Composite):
        return composite
    _check_shared(shared)
    build = COMPOSITES[composite]
    return build(**{k: v for k, v in shared.items() if k in COMPOSITES.params(composite)})


def check_params(params: Mapping) -> None:
    """Refuse what ``lrp``'s signature cannot say about its parameters, without a model: an
    unknown ``composite``, and in ``rules`` an unknown rule or a parameter the rule does not have
    (``ConfigError`` naming the rule, the key and the rule's parameters). The protocol calls it
    when it loads (the ``check`` fact of ``METHODS["lrp"]``), before any data is read."""
    shared = {k: params[k] for k in SHARED_PARAMS if k in params}
    make_composite(params.get("composite", "epsilon_plus_flat"), params.get("rules"), **shared)
