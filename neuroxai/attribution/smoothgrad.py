"""SmoothGrad and its variants, with noise from a seeded generator, samples batched."""
from __future__ import annotations

import torch

from ._util import input_grad, repeat_target
from .base import METHODS


@METHODS.register("smoothgrad")
def smoothgrad(model, x, target, *, n_samples: int = 50, sigma: float = 0.15, squared: bool = False,
               abs: bool = False, vargrad: bool = False, seed: int = 0, batch_samples: int | None = None):
    """SmoothGrad (Smilkov et al. 2017): the mean gradient over ``n_samples`` noisy copies.

    Noise is Gaussian with SD ``sigma × (max − min)`` of each volume. Variants: ``squared`` —
    SmoothGrad² (mean of squared gradients), ``vargrad`` — the variance of the gradients
    (Hooker et al. 2019; Adebayo et al. 2018), ``abs`` — mean of |gradient|. Noise comes from a
    ``torch.Generator`` seeded with ``seed`` on ``x``'s device, so maps are reproducible.
    Several noisy copies go through one forward/backward (``batch_samples``, default so that
    a pass holds ≤ 32 volumes), which makes the cost ≈ ``n_samples`` plain passes.
    """
    B = x.shape[0]
    rng = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(B, 1, 1, 1, 1)
    sd = sigma * rng
    gen = torch.Generator(device=x.device).manual_seed(seed)
    k = batch_samples or max(1, 32 // B)
    s1 = torch.zeros_like(x)
    s2 = torch.zeros_like(x) if (vargrad or squared) else None
    done = 0
    while done < n_samples:
        n = min(k, n_samples - done)
        noise = torch.randn((n, *x.shape), generator=gen, device=x.device, dtype=x.dtype)
        xn = (x.unsqueeze(0) + noise * sd.unsqueeze(0)).reshape(n * B, *x.shape[1:])
        g, _ = input_grad(model, xn, repeat_target(target, n))
        g = g.view(n, *x.shape)
        s1 += (g.abs() if abs else g).sum(0)
        if s2 is not None:
            s2 += (g * g).sum(0)
        done += n
    mean = s1 / n_samples
    if vargrad:
        return (s2 / n_samples - mean * mean).clamp_min(0)
    if squared:
        return s2 / n_samples
    return mean
