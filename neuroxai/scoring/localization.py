"""Localization metrics: how much of a map lies on the known signal. Pure functions
``(attr, mask, valid, **params) -> (score, chance)``, each ``(B,)`` float64, batched on the device.

``attr`` is already preprocessed (polarity, smoothing); ``valid`` is the brain mask (voxels
outside it take no part). Every metric returns its chance level (the expected score of a map
that ignores the mask), from which ``score()`` derives the chance-normalized form.
"""
from __future__ import annotations

import torch

from ..data.transforms import dilate_mm
from ._rank import auroc_1d, average_precision_1d
from .base import METRICS


def _flat(*xs):
    return [x.reshape(x.shape[0], -1) for x in xs]


@METRICS.register("relevance_mass_accuracy")
def relevance_mass_accuracy(attr, mask, valid, **_):
    """Positive relevance inside the mask / total positive relevance (Arras, Osman & Samek 2022,
    "CLEVR-XAI", Information Fusion 81). A map with no positive relevance scores 0.
    Chance: the mask's share of the valid voxels."""
    a, m, v = _flat(attr.clamp_min(0).double(), mask, valid)
    tot = (a * v).sum(1)
    inside = (a * (m & v)).sum(1)
    score = torch.where(tot > 0, inside / tot.clamp_min(1e-300), torch.zeros_like(tot))
    return score, (m & v).sum(1).double() / v.sum(1).double()


def _topk_in_mask(a, m, v, k):
    """Fraction of the top-``k[b]`` valid voxels of each row that lie in ``m``. Ties are broken by
    a stable descending sort: among equal values the lower flat index (C order) ranks first."""
    neg = torch.finfo(a.dtype).min
    vals = torch.where(v, a, torch.full_like(a, neg))
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    ms = torch.gather(m, 1, order)
    pos = torch.arange(a.shape[1], device=a.device).view(1, -1)
    hits = (ms & (pos < k.view(-1, 1))).sum(1)
    return hits / k.clamp_min(1)


@METRICS.register("relevance_rank_accuracy")
def relevance_rank_accuracy(attr, mask, valid, **_):
    """Fraction of the K highest-relevance voxels inside the mask, K = mask size (Arras et al.
    2022). Chance: the mask's share of the valid voxels."""
    a, m, v = _flat(attr.double(), mask, valid)
    mv = m & v
    k = mv.sum(1)
    return _topk_in_mask(a, mv, v, k), k.double() / v.sum(1).double()


@METRICS.register("top_k_intersection")
def top_k_intersection(attr, mask, valid, *, k: float = 0.05, **_):
    """Fraction of the top ``k`` (a fraction of the valid voxels) inside the mask (Theiner et al.
    2021 as in Quantus' TopKIntersection). Chance: the mask's share of the valid voxels."""
    a, m, v = _flat(attr.double(), mask, valid)
    n = (v.sum(1).double() * k).round().long().clamp_min(1)
    return _topk_in_mask(a, m & v, v, n), (m & v).sum(1).double() / v.sum(1).double()


@METRICS.register("auroc")
def auroc(attr, mask, valid, **_):
    """Voxel-level AUROC of the map against the mask over valid voxels: exact, rank-based with
    average ranks for ties (Mann–Whitney). Chance 0.5."""
    a, m, v = _flat(attr.double(), mask, valid)
    out = torch.stack([auroc_1d(a[b][v[b]], m[b][v[b]]) for b in range(a.shape[0])])
    return out, torch.full_like(out, 0.5)


@METRICS.register("average_precision")
def average_precision(attr, mask, valid, **_):
    """Voxel-level average precision (as scikit-learn's, tie-aware). Chance: the mask's share."""
    a, m, v = _flat(attr.double(), mask, valid)
    out = torch.stack([average_precision_1d(a[b][v[b]], m[b][v[b]]) for b in range(a.shape[0])])
    return out, (m & v).sum(1).double() / v.sum(1).double()


@METRICS.register("pointing_game")
def pointing_game(attr, mask, valid, *, tolerance_mm: float = 0.0, spacing=(1.0, 1.0, 1.0), **_):
    """Hit (1) if the maximum of the map lies in the mask dilated by ``tolerance_mm`` (Zhang et al.
    2018, "Top-down neural attention by excitation backprop", IJCV). Ties: the lowest flat index.
    Chance: the dilated mask's share of the valid voxels."""
    dil = dilate_mm(mask, tolerance_mm, spacing) if tolerance_mm > 0 else mask
    a, d, v = _flat(attr.double(), dil, valid)
    neg = torch.finfo(a.dtype).min
    idx = torch.where(v, a, torch.full_like(a, neg)).argmax(1)
    hit = torch.gather(d & v, 1, idx.view(-1, 1))[:, 0].double()
    return hit, (d & v).sum(1).double() / v.sum(1).double()


@METRICS.register("energy_pointing_game")
def energy_pointing_game(attr, mask, valid, **_):
    """Share of positive energy inside the mask's bounding box (Wang et al. 2020, "Score-CAM",
    CVPR workshops). Chance: the box's share of the valid voxels."""
    box = torch.zeros_like(mask)
    for b in range(mask.shape[0]):
        nz = torch.nonzero(mask[b, 0])
        lo, hi = nz.min(0).values, nz.max(0).values + 1
        box[b, 0, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return relevance_mass_accuracy(attr, box, valid)
