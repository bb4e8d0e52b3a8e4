"""Shared pieces of the non-LRP methods: target selection, input gradients,
and the chunk planner that batches samples/steps/patches into few large passes."""
from __future__ import annotations

import logging
from typing import Iterator

import torch

from ..errors import AttributionError

log = logging.getLogger(__name__)

#: On CPU one pass holds at most this many input voxels (but always at least one item): about
#: 12 volumes of 64×80×64, one of 160×192×160. Larger CPU batches are not faster (measured: SmoothGrad
#: costs ≈ n plain passes whatever the chunk), only bigger in memory.
CPU_VOXELS_PER_PASS = 2**22
#: Fraction of the free GPU memory a chunk may use once the first chunk has been measured.
GPU_MEMORY_FRACTION = 0.6


def select(out: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The scalar per sample to explain: ``out[b, target[b]]`` or, for ``target=None``, the single
    regression output. ``out: (B, K)`` or ``(B,)``/``(B, 1)`` → ``(B,)``."""
    if target is None:
        if out.ndim > 1 and out[0].numel() != 1:
            raise AttributionError("target=None needs a model with a single output",
                                   expected="(B,) or (B, 1) output", found=f"shape {tuple(out.shape)}",
                                   fix="pass target class indices")
        return out.reshape(out.shape[0], -1)[:, 0]
    if out.ndim != 2:
        raise AttributionError("a class target needs a (B, K) model output", expected="(B, K) logits",
                               found=f"shape {tuple(out.shape)}", fix="flatten the model's output or pass target=None")
    return out.gather(1, target.view(-1, 1))[:, 0]


def input_grad(model, x: torch.Tensor, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂ out[target] / ∂x, out[target])`` for a batch: ``(B,1,D,H,W)``, ``(B,)``.

    Only the input gradient is requested from autograd, so no parameter gradient is computed or
    accumulated (``p.grad`` stays untouched)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = select(model(x), target)
        (g,) = torch.autograd.grad(y.sum(), x)
    return g, y.detach()


def repeat_target(target: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Target for ``n`` stacked copies of a batch (copy-major order: ``[b0..bB, b0..bB, ...]``)."""
    return None if target is None else target.repeat(n)


def items_per_pass(free_bytes: int, bytes_per_item: int, n_left: int) -> int:
    """How many items fit in ``GPU_MEMORY_FRACTION`` of ``free_bytes`` when one item peaked at
    ``bytes_per_item`` (measured): at least 1, at most ``n_left``."""
    return max(1, min(n_left, int(GPU_MEMORY_FRACTION * free_bytes / max(1, bytes_per_item))))


def chunks(n_items: int, volumes_per_item: int, x: torch.Tensor, requested: int | None) -> Iterator[tuple[int, int]]:
    """Yield ``(start, size)`` chunks covering ``n_items`` items (noise samples, IG steps, patches),
    each item being ``volumes_per_item`` volumes like ``x[0]`` in one pass.

    ``requested``: a fixed chunk size (items per pass). Otherwise on CPU a pass holds at most
    ``CPU_VOXELS_PER_PASS`` input voxels (at least one item); on CUDA the first chunk holds one item, its peak memory is
    measured, and later chunks are as large as ``GPU_MEMORY_FRACTION`` of the free memory allows.
    Results never depend on the chunk size (up to float summation order).
    """
    if requested is not None:
        if int(requested) < 1:
            raise AttributionError("a chunk size must be ≥ 1", found=requested, fix="pass a positive int or None")
        k = int(requested)
        for s in range(0, n_items, k):
            yield s, min(k, n_items - s)
        return
    cap = max(1, CPU_VOXELS_PER_PASS // max(1, x[0].numel() * volumes_per_item))
    if x.device.type != "cuda" or n_items <= 1:
        for s in range(0, n_items, cap):
            yield s, min(cap, n_items - s)
        return
    dev = x.device
    torch.cuda.synchronize(dev)
    free, _ = torch.cuda.mem_get_info(dev)
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    yield 0, 1
    peak = torch.cuda.max_memory_allocated(dev) - base
    k = items_per_pass(free, peak, n_items - 1)
    log.debug("chunk planner: %.1f MiB per item, %d items per pass", peak / 2**20, k)
    for s in range(1, n_items, k):
        yield s, min(k, n_items - s)
