"""Map preprocessing before scoring, on the device: polarity or sign, Gaussian smoothing (in mm
or voxels) and a percentile cutoff.

Every step acts on ``attr: (B, 1, D, H, W)`` float and keeps its shape, dtype and device.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import ConfigError

POLARITIES = ("positive", "absolute", "negative", "raw")
SIGNS = ("abs", "square")
KERNELS = ("zero_pad", "nilearn")

#: σ = FWHM / FWHM_PER_SIGMA for a Gaussian; FWHM_PER_SIGMA = 2 √(2 ln 2) ≈ 2.3548.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def apply_polarity(attr: torch.Tensor, polarity: str = "positive") -> torch.Tensor:
    """Select which sign of relevance counts as evidence.

    ``positive``: max(a, 0) (evidence *for* the target, the convention of Arras et al. 2022);
    ``absolute``: |a| (evidence of either sign, as in Adebayo et al. 2018's comparisons);
    ``negative``: max(−a, 0) (evidence *against*); ``raw``: unchanged.
    """
    if polarity == "positive":
        return attr.clamp_min(0)
    if polarity == "absolute":
        return attr.abs()
    if polarity == "negative":
        return (-attr).clamp_min(0)
    if polarity == "raw":
        return attr
    raise ConfigError("unknown polarity", path="scoring.polarity", expected=list(POLARITIES),
                      found=repr(polarity), fix="use one of the listed polarities")


def apply_sign(attr: torch.Tensor, sign: str) -> torch.Tensor:
    """Relevance of either sign as evidence: ``abs`` → |a|, ``square`` → a² (the two options of
    Siegel et al. 2025's ``process_xpls_for_scoring``: ``np.abs`` unless ``cutoff_mode ==
    "squared"``)."""
    if sign == "abs":
        return attr.abs()
    if sign == "square":
        return attr.square()
    raise ConfigError("unknown sign", path="scoring.sign", expected=list(SIGNS), found=repr(sign))


def gaussian_kernel_1d(sigma_vox: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalized 1-D Gaussian of standard deviation ``sigma_vox`` voxels, truncated at ±⌈3σ⌉
    (at least ±1 voxel), sampled at integer offsets: ``(2r+1,)``."""
    r = max(1, int(math.ceil(3.0 * sigma_vox)))
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (t / sigma_vox) ** 2)
    return (k / k.sum()).to(dtype)


def _nilearn_kernel_1d(sigma_vox: float, dtype, device) -> torch.Tensor:
    """scipy ``gaussian_filter1d``'s weights (``truncate=4.0``): radius ``int(4σ + 0.5)``,
    ``exp(−x²/2σ²)`` normalized to sum 1."""
    r = int(4.0 * sigma_vox + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 / (sigma_vox * sigma_vox) * t * t)
    return (k / k.sum()).to(dtype)


def _reflect_index(n: int, r: int, device) -> torch.Tensor:
    """Indices of a length-n axis padded by r on each side with scipy's ``mode="reflect"``
    (half-sample symmetric, ``d c b a | a b c d | d c b a``), for any r (also r > n)."""
    i = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_smooth(x: torch.Tensor, fwhm_mm: float, spacing: Sequence[float] = (1.0, 1.0, 1.0), *,
                    kernel: str = "zero_pad") -> torch.Tensor:
    """Separable 3-D Gaussian smoothing of ``x: (B, 1, D, H, W)`` (or any ``(..., D, H, W)``).

    The kernel has full width at half maximum ``fwhm_mm`` in millimetres; on axis i its standard
    deviation in voxels is ``σ_i = FWHM / (2 √(2 ln 2)) / spacing[i]`` (the SPM/FSL convention).
    An FWHM in voxels is the same call with ``spacing=(1, 1, 1)``. ``fwhm_mm = 0`` returns ``x``.

    ``kernel``:
      * ``"zero_pad"`` (default): truncated at ±⌈3σ⌉ (at least ±1 voxel), zero padding — mass that
        would leave the volume is lost, so relevance near the border is not mirrored back in.
      * ``"nilearn"``: nilearn's ``smooth_img`` (= ``scipy.ndimage.gaussian_filter1d`` on each
        axis): truncated at ``int(4σ + 0.5)`` voxels, ``mode="reflect"`` at the borders. Equal to
        ``smooth_img(img, fwhm)`` on an image whose affine has voxel sizes ``spacing`` (Siegel et
        al. 2025 give it identity affines, so their ``fwhm=2`` is 2 voxels); checked in
        ``tests/scoring/test_siegel2025.py``.
    """
    if fwhm_mm == 0:
        return x
    if not (fwhm_mm > 0 and math.isfinite(fwhm_mm)):
        raise ConfigError("smoothing FWHM must be a finite number ≥ 0", path="scoring.smooth_fwhm_mm",
                          expected="≥ 0", found=fwhm_mm, fix="use 0 for no smoothing")
    if kernel not in KERNELS:
        raise ConfigError("unknown smoothing kernel", path="scoring.smooth_kernel", expected=list(KERNELS),
                          found=repr(kernel))
    spacing = [float(s) for s in spacing]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ConfigError("voxel spacing must be three positive numbers (mm)", expected="(sd, sh, sw) > 0",
                          found=spacing)
    sigma_mm = fwhm_mm / FWHM_PER_SIGMA
    out = x.reshape(-1, 1, *x.shape[-3:])
    for axis, sp in enumerate(spacing):
        if kernel == "nilearn":
            k = _nilearn_kernel_1d(sigma_mm / sp, torch.float64, x.device)
        else:
            k = gaussian_kernel_1d(sigma_mm / sp, dtype=x.dtype, device=x.device)
        r = (k.numel() - 1) // 2
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.numel()
        pad = [0, 0, 0]
        if kernel == "nilearn":
            # scipy filters in float64, adds the symmetric taps pairwise and rounds each axis'
            # output to the array's dtype: so do we (shifted slices, not conv3d: ~2.5× faster on CPU)
            n = out.shape[2 + axis]
            p = out.index_select(2 + axis, _reflect_index(n, r, x.device)).to(torch.float64)
            acc = p.narrow(2 + axis, r, n) * k[r]
            for j in range(1, r + 1):
                acc.add_((p.narrow(2 + axis, r + j, n) + p.narrow(2 + axis, r - j, n)).mul_(k[r + j]))
            out = acc.to(x.dtype)
            continue
        pad[axis] = r
        out = F.conv3d(out, k.view(shape), padding=tuple(pad))
    return out.reshape(x.shape)


def percentile(x: torch.Tensor, q: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The ``q``-th percentile (0–100) of each subject's values, as ``numpy.percentile`` with its
    default ``method="linear"``: float64 ``(B,)``.

    ``x: (B, ...)`` float; ``valid``: bool of the same shape (or broadcastable), the voxels it is
    taken over (default: all — the whole volume, as Siegel et al. 2025 take it). A subject without
    valid voxels gets NaN. Virtual index ``(n − 1)·q`` with ``q`` as a fraction and the
    interpolation ``a + (b − a)·t`` (``b − (b − a)(1 − t)`` for ``t ≥ 0.5``), both as numpy 2
    writes them, so the result is numpy's on the same float64 values."""
    if not 0 <= float(q) <= 100:
        raise ConfigError("percentile must lie in [0, 100]", path="scoring.percentile", expected="0–100",
                          found=q)
    B = x.shape[0]
    v = x.reshape(B, -1)
    qq = float(q) / 100.0
    top = qq >= 0.5  # read the two order statistics from the nearer end: a partial sort (topk)
    if valid is None:
        n = torch.full((B,), v.shape[1], dtype=torch.long, device=x.device)
    else:
        m = valid.expand_as(x).reshape(B, -1)
        n = m.sum(1)
        v = torch.where(m, v, float("-inf") if top else float("inf"))  # never read
    virt = (n - 1).to(torch.float64) * qq
    lo = virt.floor().clamp(0, None)
    t = (virt - lo).view(B, 1)
    last = (n - 1).clamp_min(0).view(B, 1)
    lo_i = lo.long().view(B, 1).clamp(max=last)
    hi_i = (lo_i + 1).clamp(max=last)
    if top:  # positions counted from the largest value
        lo_i, hi_i = last - lo_i, last - hi_i
    k = int(max(int(lo_i.max()), int(hi_i.max()))) + 1 if B else 1
    vs = torch.topk(v, min(k, v.shape[1]), dim=1, largest=top, sorted=True).values.to(torch.float64)
    a, b = vs.gather(1, lo_i), vs.gather(1, hi_i)
    d = b - a
    out = torch.where(t >= 0.5, b - d * (1 - t), a + d * t).view(B)
    return torch.where(n > 0, out, float("nan"))


def percentile_cutoff(x: torch.Tensor, q: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Keep each subject's voxels at or above its ``q``-th percentile (:func:`percentile`, over
    ``valid`` or the whole volume) and set the others to 0: the sparsification of Siegel et al. 2025
    (``expl[expl < np.percentile(expl, q)] = 0``)."""
    # compared in float64, as numpy compares the image's float64 data with its percentile
    cut = percentile(x, q, valid).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(x.to(torch.float64) < cut, torch.zeros((), dtype=x.dtype, device=x.device), x)
