"""The attribution API: one registry, one call signature.

Every method is registered in ``METHODS`` under the name YAML uses and is called as
``fn(model, x, target, **params) -> (B, 1, D, H, W)`` with ``x: (B, 1, D, H, W)`` and
``target: (B,)`` long class indices (or ``None`` for a single regression output).
"""
from __future__ import annotations

import torch

from ..errors import AttributionError
from ..registry import Registry

METHODS: Registry = Registry("attribution method", inputs=("model", "x", "target"), error=AttributionError)


def attribute(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor | int | None,
              method: str, **params) -> torch.Tensor:
    """Attribute ``model``'s output for ``target`` to the input voxels of ``x``.

    Args:
        model: a module in eval mode (it is not modified; methods that need to modify it work
            on a temporary copy or with hooks that are removed before returning).
        x: ``(B, 1, D, H, W)`` float32/float64 on the model's device.
        target: ``(B,)`` class indices, an int for all, or ``None`` for a regression output.
        method: a key of ``METHODS`` (e.g. ``"smoothgrad"``, ``"lrp"``, ``"gradcam"``).
        **params: the method's parameters (names are part of the API; see each method).

    Returns:
        ``(B, 1, D, H, W)`` map, same dtype and device as ``x``.
    """
    if x.ndim != 5:
        raise AttributionError("input must be a batch of 3-D volumes",
                               expected="x of shape (B, 1, D, H, W)", found=f"shape {tuple(x.shape)}",
                               fix="add batch/channel dims, e.g. x[None, None]")
    fn = METHODS[method]
    METHODS.check(method, params)  # a misspelt YAML key must not be silently ignored
    target = normalize_target(target, x.shape[0], x.device)
    return fn(model, x, target, **params)


def normalize_target(target, batch: int, device) -> torch.Tensor | None:
    """``None`` stays ``None`` (regression); an int or sequence becomes a ``(B,)`` long tensor."""
    if target is None:
        return None
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise AttributionError("one target per volume is needed", expected=f"{batch} targets",
                               found=f"{t.numel()}", fix="pass target of shape (B,)")
    return t
