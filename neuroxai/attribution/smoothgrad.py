"""SmoothGrad and its variants (SmoothGrad², VarGrad), noise from a seeded generator, samples batched."""
from __future__ import annotations

import torch

from ..errors import AttributionError
from ._util import chunks, input_grad, repeat_target
from .base import METHODS


def noise_sd(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-volume noise SD ``sigma × (max − min)`` of each volume: ``(B, 1, 1, 1, 1)``."""
    flat = x.flatten(1)
    return (float(sigma) * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1, 1)


@METHODS.register("smoothgrad")
def smoothgrad(model, x, target, *, n_samples: int = 50, sigma: float = 0.15, squared: bool = False,
               abs: bool = False, vargrad: bool = False, seed: int = 0,
               batch_samples: int | None = None) -> torch.Tensor:
    """SmoothGrad: the mean input gradient over ``n_samples`` noisy copies ``x + ε``,
    ``ε ~ N(0, (σ·(max−min))²)`` per volume.

    Smilkov et al. (2017), "SmoothGrad: removing noise by adding noise", arXiv 1706.03825.
    Variants (Hooker et al. 2019, "A benchmark for interpretability methods in deep neural
    networks", NeurIPS; Adebayo et al. 2018, "Sanity checks for saliency maps", NeurIPS):
    ``squared=True`` — SmoothGrad², the mean of squared gradients; ``vargrad=True`` — VarGrad, the
    (population) variance of the gradients; ``abs=True`` — mean of |gradient| (applied before
    squaring/variance). Equal to Captum ``NoiseTunnel(Saliency(abs=False))`` with ``nt_type``
    ``smoothgrad`` / ``smoothgrad_sq`` / ``vargrad`` given the same noise tensors.

    ``sigma`` is a fraction of each volume's intensity range (dimensionless). Noise comes from a
    ``torch.Generator(device=x.device)`` seeded with ``seed``; sample ``i``'s noise is the ``i``-th
    ``torch.randn(x.shape, generator=gen)`` draw, so the same seed gives the same map whatever the
    chunk size. Several noisy copies go through
    one forward/backward (``batch_samples`` copies × B volumes per pass; default from the chunk
    planner), so the cost is ≈ ``n_samples`` plain passes and peak memory is bounded by the chunk,
    not by ``n_samples``. Returns ``(B, 1, D, H, W)`` of ``x``'s dtype.
    """
    n_samples = int(n_samples)
    if n_samples < 1:
        raise AttributionError("smoothgrad needs at least one sample", expected="n_samples ≥ 1", found=n_samples)
    if sigma < 0:
        raise AttributionError("smoothgrad sigma must be ≥ 0", expected="fraction of the intensity range, e.g. 0.15",
                               found=sigma)
    B = x.shape[0]
    sd = noise_sd(x, sigma).unsqueeze(0)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    s1 = torch.zeros_like(x)
    s2 = torch.zeros_like(x) if (vargrad or squared) else None
    for _, n in chunks(n_samples, B, x, batch_samples):
        # one draw per sample, in sample order: the noise (and the map) do not depend on the chunk size
        noise = torch.empty((n, *x.shape), device=x.device, dtype=x.dtype)
        for i in range(n):
            torch.randn(x.shape, generator=gen, out=noise[i])
        xn = (noise.mul_(sd).add_(x.unsqueeze(0))).view(n * B, *x.shape[1:])
        g, _ = input_grad(model, xn, repeat_target(target, n))
        g = g.view(n, *x.shape)
        if abs:
            g = g.abs()
        s1 += g.sum(0)
        if s2 is not None:
            s2 += (g * g).sum(0)
    mean = s1 / n_samples
    if vargrad:
        return (s2 / n_samples - mean * mean).clamp_min_(0)
    if squared:
        return s2 / n_samples
    return mean
