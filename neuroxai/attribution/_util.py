"""Shared pieces of the gradient-based methods."""
from __future__ import annotations

import torch

from ..errors import AttributionError


def select(out: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The scalar per sample to explain: ``out[b, target[b]]``, or the single regression output."""
    if target is None:
        if out.ndim > 1 and out[0].numel() != 1:
            raise AttributionError("target=None needs a model with a single output",
                                   expected="(B,) or (B,1) output", found=f"shape {tuple(out.shape)}",
                                   fix="pass target class indices")
        return out.reshape(out.shape[0], -1)[:, 0]
    return out.gather(1, target.view(-1, 1))[:, 0]


def input_grad(model, x: torch.Tensor, target: torch.Tensor | None, *, create_graph: bool = False):
    """``(d out[target] / dx, out[target])`` for a batch; the model's parameters get no grads."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = select(model(x), target)
        (g,) = torch.autograd.grad(y.sum(), x, create_graph=create_graph)
    return g, y.detach()


def check_params(name: str, given: dict, allowed: tuple[str, ...]) -> None:
    bad = sorted(set(given) - set(allowed))
    if bad:
        raise AttributionError(f"unknown parameter(s) {bad} for {name}", expected=list(allowed), found=bad,
                               fix="fix the method's params in the protocol")


def repeat_target(target: torch.Tensor | None, n: int) -> torch.Tensor | None:
    return None if target is None else target.repeat(n)
