"""LRP rules: how relevance crosses one layer, one small class per rule.

Each rule replaces the forward of one layer (on a temporary copy of the model) by an autograd
function that returns the layer's true output and whose backward maps the relevance ``R_out``
arriving at the output to the relevance ``R_in`` at the input. The whole attribution is then a
single forward and a single backward pass: a rule costs the transposed convolution a gradient
would cost, plus one extra forward convolution with modified weights for the z⁺ / α-β / γ rules
(stacked into one convolution when a rule needs several).

Notation (Montavon et al. 2019, "Layer-wise relevance propagation: an overview"):
``z = Wx + b``; ``s = R_out / stab(z)``; ``R_in = x ⊙ Wᵀ s``, where ``Wᵀ`` is the input VJP of the
layer and ``stab(z) = z + ε·sign(z)`` with sign(0) = +1 (as Zennit's ``Stabilizer``). Every rule
matches Zennit 0.5.1's rule of the same name (``zennit/rules.py``) exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Callable, ClassVar, Mapping

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ...errors import ConfigError
from ...registry import Registry
from .ops import linear_op, vjp_autograd

#: rule classes by YAML name; a rule's parameters are its dataclass fields (``RULES.params(name)``)
RULES: Registry = Registry("LRP rule")
_NONNEGATIVE = ("epsilon", "gamma", "stabilizer")


def stabilize(z: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``z + ε·sign(z)`` with sign(0) = +1 (Zennit's ``stabilize``), shape of ``z``."""
    return torch.where(z >= 0, z + epsilon, z - epsilon)


class _RuleFunction(torch.autograd.Function):
    """Forward: the layer's true output. Backward: the rule's relevance map (not a gradient)."""

    @staticmethod
    def forward(ctx, rule, state, *inputs):
        ctx.rule, ctx.state = rule, state
        return rule.forward(ctx, state, *inputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, relevance):
        return (None, None, *ctx.rule.backward(ctx, ctx.state, relevance))


@dataclass(frozen=True, kw_only=True)
class Rule:
    """A rule is data: its parameters are the (frozen, keyword-only) dataclass fields, so
    ``RULES[name](**params)`` builds it and :func:`make_rule` checks the keys first (as Zennit's
    ``BasicHook``, a rule is its parameters plus the pieces it is made of).

    ``bind`` returns the forward installed on the module (``None``: keep the module's own
    forward, i.e. plain gradient). Subclasses implement ``prepare`` (per-call state: the operator
    and modified weights), ``forward(ctx, state, *x) -> z`` and
    ``backward(ctx, state, R_out) -> (R_in, ...)``."""

    name: ClassVar[str] = "rule"

    def __post_init__(self):
        # ε, γ and the stabilizer are added to denominators or weights: a string, NaN or a negative
        # value would fail (or flip signs) mid-run, so the rule refuses it when it is built
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _NONNEGATIVE and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) and v >= 0):
                raise ConfigError(f"LRP rule {self.name!r}: {f.name} must be a finite number >= 0",
                                  expected="a number >= 0", found=repr(v), fix=f"set {f.name} to e.g. {f.default}")

    def bind(self, module: nn.Module, path: str) -> Callable | None:
        state = self.prepare(module, path)

        def forward(*inputs):
            return _RuleFunction.apply(self, state, *inputs)

        return forward

    def prepare(self, module: nn.Module, path: str):
        return module

    def forward(self, ctx, state, *inputs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, ctx, state, relevance):  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Stabilized(Rule):
    """The piece every rule with a denominator shares: ``ratio(R, z) = R / stab(z)`` with the
    rule's ``stabilizer`` (Zennit's ``Stabilizer``)."""

    stabilizer: float = 1e-6

    def ratio(self, r: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return r / stabilize(z, self.stabilizer)


def _register(name: str):
    def deco(cls):
        cls.name = name
        return RULES.register(name)(cls)
    return deco


# --------------------------------------------------------------------------------------- linear
@_register("epsilon")
@dataclass(frozen=True, kw_only=True)
class Epsilon(Rule):
    """LRP-ε (Bach et al. 2015): ``R_in = x ⊙ Wᵀ(R_out / stab_ε(z))``; the gradient's cost.
    ε is the rule's stabilizer (Zennit's ``Epsilon(epsilon)``)."""

    epsilon: float = 1e-6

    def prepare(self, module, path):
        return linear_op(module, path)

    def forward(self, ctx, op, x):
        z = op.forward(x, op.weight, op.bias)
        ctx.save_for_backward(x, z)
        return z

    def backward(self, ctx, op, r):
        x, z = ctx.saved_tensors
        return (x * op.vjp(r / stabilize(z, self.epsilon), op.weight, x.shape),)


def _pos(t):
    return None if t is None else t.clamp(min=0)


def _neg(t):
    return None if t is None else t.clamp(max=0)


@dataclass(frozen=True, kw_only=True)
class _SignSplitRule(Stabilized):
    """Rules built from terms ``T_k = A_k x⁺ + B_k x⁻ + c_k`` (z⁺, α-β, γ; Zennit's generalized
    forms, valid for inputs of both signs): a rule says its modified weights (``terms``) and how
    each term's output turns the relevance into a ratio (``ratios``); the forward and backward are
    this class's. Several terms are stacked along the output channels into one convolution; when
    the input has no negative entry (after a ReLU) the ``B_k x⁻`` half is skipped, which changes
    nothing but the cost."""

    needs_output: ClassVar[bool] = False

    def terms(self, w, b):  # -> list of (A, B, c)
        raise NotImplementedError

    def ratios(self, r, z, outs):  # -> list of s_k, same length as terms
        raise NotImplementedError

    def prepare(self, module, path):
        op = linear_op(module, path)
        terms = self.terms(op.weight, op.bias)
        op.A = [t[0] for t in terms]
        op.B = [t[1] for t in terms]
        op.c = [t[2] for t in terms]
        if op.groups == 1 and len(terms) > 1:  # one stacked convolution for all terms
            op.A_cat, op.B_cat = torch.cat(op.A), torch.cat(op.B)
            op.c_cat = None if op.c[0] is None else torch.cat(op.c)
        return op

    def _forward_terms(self, op, x, weights, biases, cat_w, cat_b):
        if len(weights) == 1:
            return [op.forward(x, weights[0], biases[0])]
        if op.groups == 1:
            return list(op.forward(x, cat_w, cat_b).chunk(len(weights), op.channel_dim))
        return [op.forward(x, w, b) for w, b in zip(weights, biases)]

    def _vjp_terms(self, op, ratios, weights, cat_w, shape):
        if len(weights) == 1:
            return op.vjp(ratios[0], weights[0], shape)
        if op.groups == 1:
            return op.vjp(torch.cat(ratios, op.channel_dim), cat_w, shape)
        return sum(op.vjp(s, w, shape) for s, w in zip(ratios, weights))

    def forward(self, ctx, op, x):
        z = op.forward(x, op.weight, op.bias)
        mixed = bool((x < 0).any())
        ctx.mixed = mixed
        xp = x.clamp(min=0) if mixed else x
        outs = self._forward_terms(op, xp, op.A, op.c, getattr(op, "A_cat", None), getattr(op, "c_cat", None))
        if mixed:
            nones = [None] * len(op.B)
            outs_n = self._forward_terms(op, x.clamp(max=0), op.B, nones, getattr(op, "B_cat", None), None)
            outs = [o + n for o, n in zip(outs, outs_n)]
        ctx.save_for_backward(x, z if self.needs_output else None, *outs)
        return z

    def backward(self, ctx, op, r):
        x, z, *outs = ctx.saved_tensors
        ratios = self.ratios(r, z, outs)
        if not ctx.mixed:
            return (x * self._vjp_terms(op, ratios, op.A, getattr(op, "A_cat", None), x.shape),)
        rel = x.clamp(min=0) * self._vjp_terms(op, ratios, op.A, getattr(op, "A_cat", None), x.shape)
        rel = rel + x.clamp(max=0) * self._vjp_terms(op, ratios, op.B, getattr(op, "B_cat", None), x.shape)
        return (rel,)


@_register("zplus")
@dataclass(frozen=True, kw_only=True)
class ZPlus(_SignSplitRule):
    """LRP-z⁺ (Bach et al. 2015; Montavon et al. 2017): only positive contributions
    ``w⁺x⁺ + w⁻x⁻ + b⁺`` carry relevance (= α1β0). Zennit's ``ZPlus``."""

    def terms(self, w, b):
        return [(_pos(w), _neg(w), _pos(b))]

    def ratios(self, r, z, outs):
        return [self.ratio(r, outs[0])]


@_register("alpha_beta")
@dataclass(frozen=True, kw_only=True)
class AlphaBeta(_SignSplitRule):
    """LRP-αβ (Bach et al. 2015): ``R_in = α R⁺ − β R⁻`` with α − β = 1. Zennit's ``AlphaBeta``."""

    alpha: float = 2.0
    beta: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ConfigError("invalid LRP alpha-beta parameters", expected="alpha >= 0, beta >= 0, alpha - beta = 1",
                              found=f"alpha={self.alpha}, beta={self.beta}",
                              fix="use alpha=1, beta=0 or alpha=2, beta=1")

    def terms(self, w, b):
        return [(_pos(w), _neg(w), _pos(b)), (_neg(w), _pos(w), _neg(b))]

    def ratios(self, r, z, outs):
        pos, neg = outs
        return [r * self.alpha / stabilize(pos, self.stabilizer),
                r * (-self.beta) / stabilize(neg, self.stabilizer)]


@_register("alpha1_beta0")
@dataclass(frozen=True, kw_only=True)
class Alpha1Beta0(AlphaBeta):
    """LRP-α1β0 (= z⁺ up to the zero β term)."""

    alpha: float = field(default=1.0, init=False)
    beta: float = field(default=0.0, init=False)


@_register("alpha2_beta1")
@dataclass(frozen=True, kw_only=True)
class Alpha2Beta1(AlphaBeta):
    """LRP-α2β1."""

    alpha: float = field(default=2.0, init=False)
    beta: float = field(default=1.0, init=False)


@_register("gamma")
@dataclass(frozen=True, kw_only=True)
class Gamma(_SignSplitRule):
    """Generalized LRP-γ (Montavon et al. 2019; Andéol et al. 2021): weights ``w + γw⁺`` for the
    positive part of positive outputs, ``w + γw⁻`` for negative outputs. Zennit's ``Gamma``."""

    needs_output: ClassVar[bool] = True
    gamma: float = 0.25

    def terms(self, w, b):
        g = self.gamma
        wp, wn = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        bp = None if b is None else b + g * b.clamp(min=0)
        bn = None if b is None else b + g * b.clamp(max=0)
        return [(wp, wn, bp), (wn, wp, bn)]

    def ratios(self, r, z, outs):
        pos, neg = outs
        return [self.ratio((z > 0).to(r.dtype) * r, pos), self.ratio((z < 0).to(r.dtype) * r, neg)]


# ----------------------------------------------------------------------------- first layer
def _ones_like_input(x):
    return x.new_ones((1, *x.shape[1:]))


@dataclass(frozen=True, kw_only=True)
class _InputFreeRule(Stabilized):
    """Rules that ignore the input values (w², flat): the layer with modified weights ``W'``
    (``weights``) applied to an all-ones input is the denominator ``z'``, and
    ``R_in = W'ᵀ(R_out / stab(z'))``. Zennit's ``input_modifiers=[torch.ones_like]``."""

    def weights(self, w, b):  # -> (W', b')
        raise NotImplementedError

    def prepare(self, module, path):
        op = linear_op(module, path)
        op.w_mod, op.b_mod = self.weights(op.weight, op.bias)
        return op

    def forward(self, ctx, op, x):
        z = op.forward(x, op.weight, op.bias)
        ctx.x_shape = x.shape
        ctx.save_for_backward(op.forward(_ones_like_input(x), op.w_mod, op.b_mod))
        return z

    def backward(self, ctx, op, r):
        (zw,) = ctx.saved_tensors
        return (op.vjp(self.ratio(r, zw), op.w_mod, ctx.x_shape),)


@_register("flat")
@dataclass(frozen=True, kw_only=True)
class Flat(_InputFreeRule):
    """LRP-flat (Lapuschkin et al. 2019): all weights 1, no bias, input ignored; relevance is
    spread uniformly over each output's receptive field. Zennit's ``Flat``. With all-ones
    weights every output channel has the same denominator (the number of in-bounds taps), so
    without groups the relevance is summed over channels first and spread by box sums."""

    def weights(self, w, b):
        return torch.ones_like(w), None

    def prepare(self, module, path):
        op = linear_op(module, path)
        if op.groups != 1:
            op.w_mod, op.b_mod = self.weights(op.weight, op.bias)
        return op

    def forward(self, ctx, op, x):
        if op.groups != 1:
            return super().forward(ctx, op, x)
        z = op.forward(x, op.weight, op.bias)
        ctx.x_shape = x.shape
        ctx.save_for_backward(op.ones_forward(x.shape, x))
        return z

    def backward(self, ctx, op, r):
        if op.groups != 1:
            return super().backward(ctx, op, r)
        (zf,) = ctx.saved_tensors
        return (op.ones_vjp(self.ratio(r.sum(dim=op.channel_dim, keepdim=True), zf), ctx.x_shape),)


@_register("wsquare")
@dataclass(frozen=True, kw_only=True)
class WSquare(_InputFreeRule):
    """LRP-w² (Montavon et al. 2017): weights squared (bias too, as Zennit), input ignored."""

    def weights(self, w, b):
        return w ** 2, None if b is None else b ** 2


def _bound(value, x: torch.Tensor, which: str) -> torch.Tensor:
    """A bound (float or tensor broadcastable to ``x``) as a tensor of ``x``'s trailing shape,
    with batch 1 unless it varies over the batch."""
    if value is None:  # default: the batch's own range
        value = x.amin() if which == "low" else x.amax()
    t = torch.as_tensor(value).to(device=x.device, dtype=x.dtype)
    while t.ndim < x.ndim:
        t = t[None]
    batch = x.shape[0] if t.shape[0] == x.shape[0] else 1
    return t.expand(batch, *x.shape[1:]).contiguous()


@_register("zbox")
@dataclass(frozen=True, kw_only=True)
class ZBox(Stabilized):
    """LRP-z^B (Montavon et al. 2017) for inputs bounded in ``[low, high]`` (floats or tensors
    broadcastable to the input; ``None``: the batch's minimum / maximum). Zennit's ``ZBox``."""

    low: float | torch.Tensor | None = None
    high: float | torch.Tensor | None = None

    def prepare(self, module, path):
        op = linear_op(module, path)
        op.wp, op.wn = op.weight.clamp(min=0), op.weight.clamp(max=0)
        op.bp, op.bn = _pos(op.bias), _neg(op.bias)
        return op

    def forward(self, ctx, op, x):
        z = op.forward(x, op.weight, op.bias)
        lo, hi = _bound(self.low, x, "low"), _bound(self.high, x, "high")
        d = z - op.forward(lo, op.wp, op.bp) - op.forward(hi, op.wn, op.bn)
        ctx.save_for_backward(x, lo, hi, d)
        return z

    def backward(self, ctx, op, r):
        x, lo, hi, d = ctx.saved_tensors
        s = self.ratio(r, d)
        return (x * op.vjp(s, op.weight, x.shape) - lo * op.vjp(s, op.wp, x.shape)
                - hi * op.vjp(s, op.wn, x.shape),)


# ------------------------------------------------------------------------ parameter-free
def _own_forward(module: nn.Module) -> Callable:
    """The module's class forward, bound, with in-place computation switched off (rules save
    tensors that an in-place activation would overwrite)."""
    if getattr(module, "inplace", False):
        module.inplace = False
    return type(module).forward.__get__(module)


@_register("pass")
@dataclass(frozen=True, kw_only=True)
class Pass(Rule):
    """Pass-through: relevance crosses the layer unchanged (element-wise activations; BatchNorm
    left after canonization). For ReLU this equals the gradient, since relevance is zero where
    the ReLU output is zero. LeakyReLU/ELU are treated like ReLU (Zennit's ``Pass``)."""

    def prepare(self, module, path):
        return _own_forward(module)

    def forward(self, ctx, fn, x):
        return fn(x)

    def backward(self, ctx, fn, r):
        return (r,)


@_register("norm")
@dataclass(frozen=True, kw_only=True)
class Norm(Stabilized):
    """Norm: the ε rule for parameter-free linear maps (average pooling, residual sums):
    ``R_in = x ⊙ Jᵀ(R_out / stab(z))``. Zennit's ``Norm``."""

    def prepare(self, module, path):
        return (module, _own_forward(module))

    def forward(self, ctx, state, *xs):
        z = state[1](*xs)
        ctx.save_for_backward(z, *xs)
        return z

    def backward(self, ctx, state, r):
        module, fn = state
        z, *xs = ctx.saved_tensors
        s = self.ratio(r, z)
        if hasattr(module, "vjp"):  # our Sum: the VJP is known
            grads = module.vjp(s, xs)
        else:
            grads = (vjp_autograd(fn, xs[0], s),)
        return tuple(x * g for x, g in zip(xs, grads))


@_register("gradient")
@dataclass(frozen=True, kw_only=True)
class Gradient(Rule):
    """No rule: the layer's own gradient (max pooling = winner-take-all, Flatten, Dropout)."""

    def bind(self, module, path):
        # the module is on the temporary copy: an in-place activation must not overwrite a tensor
        # that the rule of the layer before it saved
        if getattr(module, "inplace", False):
            module.inplace = False
        return None


#: the parameters ``lrp`` takes once for all its rules; each rule gets those it has a field for
SHARED_PARAMS = ("epsilon", "gamma", "stabilizer", "low", "high")


def make_rule(rule, **shared) -> Rule:
    """A rule from a ``Rule`` instance, its registry name (``"epsilon"``, ``"zplus"``...) or, as a
    protocol writes one with its own parameters, ``{"rule": "gamma", "gamma": 0.5}``.

    ``shared``: ``lrp``'s ``epsilon``/``gamma``/``stabilizer``/``low``/``high``, each handed to the
    rules with a parameter of that name (``RULES.params``); a mapping's own parameters override
    them, and a key the rule does not have is a ``ConfigError`` naming the rule, the key and the
    rule's parameters (:meth:`Registry.check`)."""
    if isinstance(rule, Rule):
        return rule
    own: dict = {}
    if isinstance(rule, Mapping):
        own = {str(k): v for k, v in rule.items()}
        rule = own.pop("rule", None)
    if not isinstance(rule, str):
        raise ConfigError("an LRP rule is a rule name or {rule: name, <its parameters>}",
                          expected=f"one of {RULES.names()}, or e.g. {{rule: gamma, gamma: 0.5}}",
                          found=repr(rule), fix="name the rule, e.g. 'zplus' or {rule: gamma, gamma: 0.5}")
    RULES.check(rule, own)
    fields = RULES.params(rule)
    return RULES[rule](**{**{k: v for k, v in shared.items() if k in fields}, **own})
