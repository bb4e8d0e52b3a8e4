"""The LRP attribution pass: one forward and one backward through a canonized copy.

Layer-wise relevance propagation (Bach et al. 2015, "On pixel-wise explanations for non-linear
classifier decisions by layer-wise relevance propagation", PLoS ONE; rules and composites as in
Montavon et al. 2019 and Zennit, Anders et al. 2021, arXiv 2106.13200).

How it works: the model is deep-copied and canonized (BatchNorm merged, residual sums made
modules), each layer of the copy gets its rule's forward (``rules.py``) and ``autograd.grad``
of the output, seeded with the start relevance, returns the relevance at the input. The user's
model is never modified and no hook is ever registered on it, so nothing can leak across calls
or survive an exception.

Where relevance starts (``start=``):

* ``"logit"`` (default, as Captum's LRP and the LRP papers): ``R_out`` is the target logit on
  the target class and zero elsewhere, so the relevance map sums to (about) the logit.
* ``"one_hot"`` (Zennit's examples): ``R_out`` is 1 on the target class; maps are the logit
  version divided by the logit.

Regression (``target=None``): the single output is the target.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from ...errors import AttributionError, ConfigError, UnsupportedLayerError
from .canonizers import DEFAULT_CANONIZERS, STRUCTURAL_CANONIZERS, canonize as _canonize, check_merges
from .composites import GRADIENT_LAYERS, Composite, RuleMapComposite, make_composite

log = logging.getLogger(__name__)

STARTS = ("logit", "one_hot")


@dataclass(frozen=True)
class Conservation:
    """Relevance conservation per sample: ``total`` (sum of the map, ``(B,)``) against
    ``start`` (sum of the start relevance: the target logit, or 1 for ``one_hot``, ``(B,)``).
    The gap is what biases and stabilizers absorb."""

    start: torch.Tensor
    total: torch.Tensor

    @property
    def relative_error(self) -> torch.Tensor:
        """``|total − start| / |start|``, ``(B,)``."""
        return (self.total - self.start).abs() / self.start.abs().clamp_min(torch.finfo(self.start.dtype).tiny)


def bind_rules(work: nn.Module, composite: Composite) -> dict[str, str]:
    """Install each module's rule on ``work`` (a canonized copy). Returns ``{path: rule name}``.

    Raises ``UnsupportedLayerError`` naming the path and type of any module that has parameters
    or is a leaf of unknown type (e.g. Sigmoid, GroupNorm, Upsample) and gets no rule."""
    ctx: dict = {}
    plan: dict[str, str] = {}
    for path, module in work.named_modules():
        rule = composite.rule_for(ctx, path, module)
        if rule is not None:
            fwd = rule.bind(module, path)
            if fwd is not None:
                module.forward = fwd
            plan[path] = rule.name
            continue
        has_params = any(True for _ in module.parameters(recurse=False))
        is_leaf = not any(True for _ in module.children())
        if isinstance(module, GRADIENT_LAYERS) and not has_params:
            continue
        if has_params or is_leaf:
            where = path or "<root>"
            hint = ("map it in rules= (e.g. rules={'%s': 'epsilon'})" % type(module).__name__
                    if isinstance(composite, RuleMapComposite) else
                    "replace the layer, or use a gradient-based method (e.g. 'smoothgrad') for this model")
            raise UnsupportedLayerError(
                f"LRP has no rule for layer '{where}' of type {type(module).__name__}",
                expected="Conv1d/2d/3d, Linear, BatchNorm (merged), ReLU/LeakyReLU/ELU, MaxPool, AvgPool, "
                         "AdaptiveAvgPool, Dropout, Flatten, Identity, MONAI ResNet and DenseNet blocks, "
                         "torchvision-style BasicBlock/Bottleneck",
                found=f"{where}: {type(module).__module__}.{type(module).__name__}", fix=hint)
    if isinstance(composite, RuleMapComposite):
        composite.check_keys(work)
    return plan


# autograd ops that are non-linear: their gradient is not an LRP rule
_NONLINEAR_OPS = ("Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Gelu", "Silu", "Elu", "LeakyRelu", "Hardtanh",
                  "Softplus", "Mish", "Hardswish", "Hardsigmoid", "Prelu", "Exp", "Log", "Pow", "Sqrt", "Rsqrt",
                  "Abs", "Sin", "Cos", "Erf", "Clamp")
# ops whose gradient mis-assigns relevance when two relevance-carrying branches meet
_BRANCH_OPS = ("Add", "Sub", "Mul", "Div")


def check_graph(out: torch.Tensor) -> None:
    """Reject operations outside any module that LRP cannot propagate through: functional
    non-linearities (``torch.sigmoid`` in ``forward``) and additions/products of two branches
    that no canonizer routed through a ``Sum`` module (a residual ``out += x``). Functional
    ReLU, max pooling and reshapes are fine (their gradient is the LRP propagation)."""
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        nxt = [n for n, _ in fn.next_functions if n is not None]
        op = fn.name().split("::")[-1]
        base = op[: op.find("Backward")] if "Backward" in op else op
        if base in _NONLINEAR_OPS:
            raise UnsupportedLayerError(
                f"the model's forward applies the non-linear function '{base.lower()}' outside a module",
                expected="non-linearities as nn.ReLU / nn.LeakyReLU / nn.ELU modules", found=f"autograd op {op}",
                fix="use a module for the activation, or a gradient-based method for this model")
        if base in _BRANCH_OPS and len(nxt) > 1:
            raise UnsupportedLayerError(
                f"the model's forward combines two branches with '{base.lower()}' outside a module "
                "(e.g. a residual 'out += identity' in a block no canonizer knows)",
                expected="residual additions through neuroxai.attribution.lrp.Sum (MONAI and torchvision-style "
                         "BasicBlock/Bottleneck ResNet blocks are rewritten automatically)", found=f"autograd op {op}",
                fix="route the addition through a Sum() module in the block's forward")
        stack.extend(nxt)


def _start_relevance(out: torch.Tensor, target: torch.Tensor | None, start: str):
    """``(R_out, start value per sample (B,))``."""
    b = out.shape[0]
    flat = out.reshape(b, -1)
    if target is None:
        if flat.shape[1] != 1:
            raise AttributionError("target=None is for a single regression output",
                                   expected="model output of shape (B,) or (B, 1)",
                                   found=f"output shape {tuple(out.shape)}", fix="pass target class indices (B,)")
        sel = torch.ones_like(flat)
    else:
        if out.ndim != 2:
            raise AttributionError("LRP needs class scores of shape (B, C)", expected="output (B, C)",
                                   found=f"output shape {tuple(out.shape)}", fix="flatten the model's head")
        if target.min() < 0 or target.max() >= out.shape[1]:
            raise AttributionError("target class index out of range", expected=f"indices in [0, {out.shape[1]})",
                                   found=f"{target.tolist()}", fix="pass valid class indices")
        sel = torch.zeros_like(flat)
        sel[torch.arange(b, device=out.device), target] = 1
    if start == "logit":
        r = sel * flat.detach()
    else:
        r = sel
    return r.reshape(out.shape), r.sum(1)


def lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, *,
        composite: str | Composite = "epsilon_plus_flat", rules: Mapping[str, object] | None = None,
        epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6, low=None, high=None,
        start: str = "logit", canonize: bool = True, return_conservation: bool = False):
    """Layer-wise relevance propagation map of ``model`` for ``target``.

    Args:
        model: a 3-D CNN (eval mode is used; the model itself is not modified).
        x: ``(B, C, D, H, W)`` float32/float64 input on the model's device (C = 1 for MRI).
        target: ``(B,)`` long class indices, or ``None`` for a single regression output.
        composite: ``epsilon_plus_flat`` (default), ``epsilon_plus``, ``epsilon_gamma_box``,
            ``epsilon_alpha2_beta1``, ``epsilon_alpha2_beta1_flat``, ``excitation_backprop``,
            ``epsilon_gamma`` (γ from ``gamma``), ``epsilon`` (see ``composites.py``; identical to
            Zennit's composites of the same name, ``epsilon_gamma`` to the study's Zennit).
        rules: instead of a composite, ``{key: rule}`` with keys a module path, ``"first"`` or a
            layer class name, e.g. ``{"Conv3d": "zplus", "Linear": "epsilon", "first": "flat"}``;
            a rule with its own parameters is ``{"rule": "gamma", "gamma": 0.5}`` (see
            ``RuleMapComposite``; a parameter the rule does not have is a ``ConfigError``).
        epsilon: ε of the ε rule (dense layers). gamma: γ of the γ rule. These and
            ``stabilizer``/``low``/``high`` go to every rule with a parameter of that name.
        stabilizer: the small ε of every other rule (Zennit's ``stabilizer``).
        low, high: input bounds for the z^B rule (``epsilon_gamma_box``): floats or tensors
            broadcastable to ``x``; default: the minimum / maximum of the batch.
        start: ``"logit"`` (relevance sums to the target logit; default) or ``"one_hot"``.
        canonize: merge BatchNorm into the preceding Conv/Linear (on a copy). With ``False``,
            BatchNorm passes relevance unchanged (the study's DenseNet setting). Residual blocks
            and DenseNet heads are always canonized.
        return_conservation: also return a ``Conservation`` (map sum vs start value per sample).

    Returns:
        ``attr: (B, C, D, H, W)`` relevance (same dtype/device as ``x``), or
        ``(attr, Conservation)`` with ``return_conservation=True``.

    Raises:
        UnsupportedLayerError: a layer with parameters, or an unknown non-linearity, has no rule.
    """
    if start not in STARTS:
        raise ConfigError("unknown LRP start", expected=f"one of {list(STARTS)}", found=repr(start),
                          fix="use start='logit' or start='one_hot'")
    if not torch.is_floating_point(x):
        raise AttributionError("LRP input must be floating point", expected="float32/float64 x",
                               found=str(x.dtype), fix="x = x.float()")
    comp = make_composite(composite, rules, epsilon=epsilon, gamma=gamma, stabilizer=stabilizer,
                          low=low, high=high)
    work = _canonize(model, DEFAULT_CANONIZERS if canonize else STRUCTURAL_CANONIZERS)
    plan = bind_rules(work, comp)
    log.debug("LRP rules: %s", plan)

    with torch.inference_mode(False), torch.enable_grad():
        xin = (x.clone() if x.is_inference() else x).detach().requires_grad_(True)
        handles = check_merges(work)  # on the temporary copy; removed with it
        try:
            out = work(xin)
        finally:
            for h in handles:
                h.remove()
        check_graph(out)
        r_out, start_value = _start_relevance(out, target, start)
        (attr,) = torch.autograd.grad(out, xin, r_out)
    attr = attr.detach()
    if not return_conservation:
        return attr
    cons = Conservation(start=start_value.detach(), total=attr.reshape(attr.shape[0], -1).sum(1))
    return attr, cons


def lrp_conservation(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None, **params) -> Conservation:
    """``Conservation`` of the LRP map with ``params`` (sum of relevance vs start, per sample)."""
    params["return_conservation"] = True
    return lrp(model, x, target, **params)[1]
