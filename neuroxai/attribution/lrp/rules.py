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

from typing import Callable

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ...errors import ConfigError
from ...registry import Registry
from .ops import linear_op, vjp_autograd

RULES: Registry = Registry("LRP rule")


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


class Rule:
    """Base class. ``bind`` returns the forward installed on the module (``None``: keep the
    module's own forward, i.e. plain gradient). Subclasses implement ``prepare`` (per-call state:
    the operator and modified weights), ``forward(ctx, state, *x) -> z`` and
    ``backward(ctx, state, R_out) -> (R_in, ...)``."""

    name = "rule"

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

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def _register(name: str):
    def deco(cls):
        cls.name = name
        return RULES.register(name)(cls)
    return deco


# --------------------------------------------------------------------------------------- linear
@_register("epsilon")
class Epsilon(Rule):
    """LRP-ε (Bach et al. 2015): ``R_in = x ⊙ Wᵀ(R_out / stab_ε(z))``; the gradient's cost."""

    def __init__(self, epsilon: float = 1e-6):
        self.epsilon = float(epsilon)

    @classmethod
    def from_params(cls, epsilon=1e-6, **_):
        return cls(epsilon)

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


class _SignSplitRule(Rule):
    """Rules built from terms ``T_k = A_k x⁺ + B_k x⁻ + c_k`` (z⁺, α-β, γ; Zennit's generalized
    forms, valid for inputs of both signs). Several terms are stacked along the output channels
    into one convolution; when the input has no negative entry (after a ReLU) the ``B_k x⁻``
    half is skipped, which changes nothing but the cost."""

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = float(stabilizer)

    def terms(self, w, b):  # -> list of (A, B, c)
        raise NotImplementedError

    def ratios(self, r, z, outs):  # -> list of s_k, same length as terms
        raise NotImplementedError

    needs_output = False

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
class ZPlus(_SignSplitRule):
    """LRP-z⁺ (Bach et al. 2015; Montavon et al. 2017): only positive contributions
    ``w⁺x⁺ + w⁻x⁻ + b⁺`` carry relevance (= α1β0). Zennit's ``ZPlus``."""

    @classmethod
    def from_params(cls, stabilizer=1e-6, **_):
        return cls(stabilizer)

    def terms(self, w, b):
        return [(_pos(w), _neg(w), _pos(b))]

    def ratios(self, r, z, outs):
        return [r / stabilize(outs[0], self.stabilizer)]


@_register("alpha_beta")
class AlphaBeta(_SignSplitRule):
    """LRP-αβ (Bach et al. 2015): ``R_in = α R⁺ − β R⁻`` with α − β = 1. Zennit's ``AlphaBeta``."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6):
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
            raise ConfigError("invalid LRP alpha-beta parameters", expected="alpha >= 0, beta >= 0, alpha - beta = 1",
                              found=f"alpha={alpha}, beta={beta}", fix="use alpha=1, beta=0 or alpha=2, beta=1")
        super().__init__(stabilizer)
        self.alpha, self.beta = float(alpha), float(beta)

    @classmethod
    def from_params(cls, alpha=2.0, beta=1.0, stabilizer=1e-6, **_):
        return cls(alpha, beta, stabilizer)

    def terms(self, w, b):
        return [(_pos(w), _neg(w), _pos(b)), (_neg(w), _pos(w), _neg(b))]

    def ratios(self, r, z, outs):
        pos, neg = outs
        return [r * self.alpha / stabilize(pos, self.stabilizer),
                r * (-self.beta) / stabilize(neg, self.stabilizer)]


@_register("alpha1_beta0")
class Alpha1Beta0(AlphaBeta):
    """LRP-α1β0 (= z⁺ up to the zero β term)."""

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__(1.0, 0.0, stabilizer)

    @classmethod
    def from_params(cls, stabilizer=1e-6, **_):
        return cls(stabilizer)


@_register("alpha2_beta1")
class Alpha2Beta1(AlphaBeta):
    """LRP-α2β1."""

    def __init__(self, stabilizer: float = 1e-6):
        super().__init__(2.0, 1.0, stabilizer)

    @classmethod
    def from_params(cls, stabilizer=1e-6, **_):
        return cls(stabilizer)


@_register("gamma")
class Gamma(_SignSplitRule):
    """Generalized LRP-γ (Montavon et al. 2019; Andéol et al. 2021): weights ``w + γw⁺`` for the
    positive part of positive outputs, ``w + γw⁻`` for negative outputs. Zennit's ``Gamma``."""

    needs_output = True

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6):
        super().__init__(stabilizer)
        self.gamma = float(gamma)

    @classmethod
    def from_params(cls, gamma=0.25, stabilizer=1e-6, **_):
        return cls(gamma, stabilizer)

    def terms(self, w, b):
        g = self.gamma
        wp, wn = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        bp = None if b is None else b + g * b.clamp(min=0)
        bn = None if b is None else b + g * b.clamp(max=0)
        return [(wp, wn, bp), (wn, wp, bn)]

    def ratios(self, r, z, outs):
        pos, neg = outs
        return [(z > 0).to(r.dtype) * r / stabilize(pos, self.stabilizer),
                (z < 0).to(r.dtype) * r / stabilize(neg, self.stabilizer)]


# ----------------------------------------------------------------------------- first layer
def _ones_like_input(x):
    return x.new_ones((1, *x.shape[1:]))


@_register("flat")
class Flat(Rule):
    """LRP-flat (Lapuschkin et al. 2019): all weights 1, no bias, input ignored; relevance is
    spread uniformly over each output's receptive field. Zennit's ``Flat``. With all-ones
    weights every output channel has the same denominator (the number of in-bounds taps), so
    the relevance is summed over channels first and spread by box sums."""

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = float(stabilizer)

    @classmethod
    def from_params(cls, stabilizer=1e-6, **_):
        return cls(stabilizer)

    def prepare(self, module, path):
        op = linear_op(module, path)
        if op.groups != 1:
            op.ones = torch.ones_like(op.weight)
        return op

    def forward(self, ctx, op, x):
        z = op.forward(x, op.weight, op.bias)
        ctx.x_shape = x.shape
        if op.groups == 1:
            zf = op.ones_forward(x.shape, x)
        else:
            zf = op.forward(_ones_like_input(x), op.ones)
        ctx.save_for_backward(zf)
        return z

    def backward(self, ctx, op, r):
        (zf,) = ctx.saved_tensors
        if op.groups != 1:
            return (op.vjp(r / stabilize(zf, self.stabilizer), op.ones, ctx.x_shape),)
        s = r.sum(dim=op.channel_dim, keepdim=True) / stabilize(zf, self.stabilizer)
        return (op.ones_vjp(s, ctx.x_shape),)


@_register("wsquare")
class WSquare(Rule):
    """LRP-w² (Montavon et al. 2017): weights squared (bias too, as Zennit), input ignored."""

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = float(stabilizer)

    @classmethod
    def from_params(cls, stabilizer=1e-6, **_):
        return cls(stabilizer)

    def prepare(self, module, path):
        op = linear_op(module, path)
        op.w2 = op.weight ** 2
        op.b2 = None if op.bias is None else op.bias ** 2
        return op

    def forward(self, ctx, op, x):
        z = op.forward(x, op.weight, op.bias)
        ctx.x_shape = x.shape
        ctx.save_for_backward(op.forward(_ones_like_input(x), op.w2, op.b2))
        return z

    def backward(self, ctx, op, r):
        (zw,) = ctx.saved_tensors
        return (op.vjp(r / stabilize(zw, self.stabilizer), op.w2, ctx.x_shape),)


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
class ZBox(Rule):
    """LRP-z^B (Montavon et al. 2017) for inputs bounded in ``[low, high]``. Zennit's ``ZBox``."""

    def __init__(self, low, high, stabilizer: float = 1e-6):
        self.low, self.high, self.stabilizer = low, high, float(stabilizer)

    @classmethod
    def from_params(cls, low=None, high=None, stabilizer=1e-6, **_):
        return cls(low, high, stabilizer)

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
        s = r / stabilize(d, self.stabilizer)
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
class Pass(Rule):
    """Pass-through: relevance crosses the layer unchanged (element-wise activations; BatchNorm
    left after canonization). For ReLU this equals the gradient, since relevance is zero where
    the ReLU output is zero. LeakyReLU/ELU are treated like ReLU (Zennit's ``Pass``)."""

    @classmethod
    def from_params(cls, **_):
        return cls()

    def prepare(self, module, path):
        return _own_forward(module)

    def forward(self, ctx, fn, x):
        return fn(x)

    def backward(self, ctx, fn, r):
        return (r,)


@_register("norm")
class Norm(Rule):
    """Norm: the ε rule for parameter-free linear maps (average pooling, residual sums):
    ``R_in = x ⊙ Jᵀ(R_out / stab(z))``. Zennit's ``Norm``."""

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = float(stabilizer)

    @classmethod
    def from_params(cls, stabilizer=1e-6, **_):
        return cls(stabilizer)

    def prepare(self, module, path):
        return (module, _own_forward(module))

    def forward(self, ctx, state, *xs):
        z = state[1](*xs)
        ctx.save_for_backward(z, *xs)
        return z

    def backward(self, ctx, state, r):
        module, fn = state
        z, *xs = ctx.saved_tensors
        s = r / stabilize(z, self.stabilizer)
        if hasattr(module, "vjp"):  # our Sum: the VJP is known
            grads = module.vjp(s, xs)
        else:
            grads = (vjp_autograd(fn, xs[0], s),)
        return tuple(x * g for x, g in zip(xs, grads))


@_register("gradient")
class Gradient(Rule):
    """No rule: the layer's own gradient (max pooling = winner-take-all, Flatten, Dropout)."""

    @classmethod
    def from_params(cls, **_):
        return cls()

    def bind(self, module, path):
        # the module is on the temporary copy: an in-place activation must not overwrite a tensor
        # that the rule of the layer before it saved
        if getattr(module, "inplace", False):
            module.inplace = False
        return None


def make_rule(rule, **params) -> Rule:
    """A rule from its registry name (``"epsilon"``, ``"zplus"``...) or a ``Rule`` instance;
    ``params`` (epsilon, gamma, stabilizer, low, high) go to the rules that use them."""
    if isinstance(rule, Rule):
        return rule
    return RULES[rule].from_params(**params)
