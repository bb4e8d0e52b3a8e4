"""Atlas-region ranking: is the true region the one the map points at, among all regions?"""
from __future__ import annotations

import torch

from ..errors import ScoringError
from .base import METRICS


def region_means(attr: torch.Tensor, atlas: torch.Tensor, valid: torch.Tensor, n_labels: int) -> torch.Tensor:
    """Mean relevance per label ``(B, n_labels)`` with one ``scatter_add`` per volume batch
    (label 0 = background; labels absent from a volume get NaN)."""
    B = attr.shape[0]
    a = attr.reshape(B, -1).double()
    lab = torch.where(valid.reshape(B, -1), atlas.reshape(B, -1).long(), torch.zeros_like(atlas.reshape(B, -1).long()))
    s = torch.zeros(B, n_labels, dtype=torch.float64, device=attr.device).scatter_add_(1, lab, a)
    c = torch.zeros(B, n_labels, dtype=torch.float64, device=attr.device).scatter_add_(1, lab, torch.ones_like(a))
    means = s / c
    means[c == 0] = float("nan")
    means[:, 0] = float("nan")
    return means


@METRICS.register("region_rank")
def region_rank(attr, mask, valid, *, atlas=None, true_region=None, **_):
    """Rank (1 = best) of the true region by mean relevance among all atlas regions; the true
    region(s) count as one region (their union). Also region-level AUROC (share of other regions
    with a lower mean, ties ½) in ``region_rank_auroc``. Chance rank: (R + 1) / 2 for R regions.
    Normalized: (chance − rank) / (chance − 1), 1 at rank 1, 0 at chance."""
    if atlas is None or true_region is None:
        raise ScoringError("region_rank needs atlas= (label map on the same grid) and true_region=",
                           expected="atlas (B,1,D,H,W) long, true_region list of labels", found=None)
    atlas = atlas.long().clone()
    true = torch.as_tensor(list(true_region), device=atlas.device)
    union = int(atlas.max().item()) + 1
    atlas[torch.isin(atlas, true)] = union
    means = region_means(attr, atlas, valid, union + 1)
    t = means[:, union]
    others = means[:, :union].clone()
    others[:, true] = float("nan")
    ok = ~torch.isnan(others)
    greater = ((others > t.view(-1, 1)) & ok).sum(1).double()
    ties = ((others == t.view(-1, 1)) & ok).sum(1).double()
    n_other = ok.sum(1).double()
    rank = 1 + greater + 0.5 * ties
    chance = (n_other + 2) / 2
    auc = (n_other - greater - 0.5 * ties) / n_other.clamp_min(1)
    return rank, chance, {"region_rank_auroc": (auc, torch.full_like(auc, 0.5))}
