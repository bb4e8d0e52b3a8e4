"""Atlas-region ranking: is the true region the one the map points at, among all regions?

Region scores come from one ``scatter_add`` per batch on the device (sums and voxel counts per
label), so a 166-region AAL3 atlas costs two passes over the volume whatever the region count.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError, MaskError, ScoringError
from .localization import metric

_F64 = torch.float64


def region_sums(attr: torch.Tensor, atlas: torch.Tensor, valid: torch.Tensor, n_labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of relevance and voxel count per label, each ``(B, n_labels)`` float64.

    ``attr: (B,1,D,H,W)`` float, ``atlas`` long labels on the same grid (0 = background),
    ``valid`` bool: voxels outside it are counted as background.
    """
    B = attr.shape[0]
    lab = atlas.reshape(B, -1).long()
    lab = torch.where(valid.reshape(B, -1), lab, torch.zeros_like(lab))
    a = attr.reshape(B, -1).to(_F64)
    s = torch.zeros(B, n_labels, dtype=_F64, device=attr.device).scatter_add_(1, lab, a)
    c = torch.zeros(B, n_labels, dtype=_F64, device=attr.device).scatter_add_(1, lab, torch.ones_like(a))
    return s, c


def region_means(attr: torch.Tensor, atlas: torch.Tensor, valid: torch.Tensor, n_labels: int) -> torch.Tensor:
    """Mean relevance per label ``(B, n_labels)``; background (label 0) and labels absent from a
    subject's brain are NaN."""
    s, c = region_sums(attr, atlas, valid, n_labels)
    means = torch.where(c > 0, s / c.clamp_min(1), float("nan"))
    means[:, 0] = float("nan")
    return means


#: The region-level read-out an audit adds when it is given an atlas.
REGION_METRIC = "region_rank"


@metric("region_rank", higher_is_better=False, needs=("atlas",),
        help="rank of the true atlas region among all regions by mean relevance (1 = best; lower is better)",
        chance="(R + 1) / 2 for R regions")
def region_rank(attr, mask, valid, *, spacing=None, atlas=None, true_region=None, reduce: str = "mean",
                combine: str = "union"):
    """Rank (1 = best) of the true atlas region among all regions present in the brain, by mean
    (``reduce="mean"``) or summed (``"sum"``) relevance — the region-level read-out used when a
    study reports "the method highlights the hippocampus" (cf. Siegel et al. 2025).

    Args:
        atlas: ``(B,1,D,H,W)`` or ``(1,1,D,H,W)`` integer labels on the map grid, 0 = background.
        true_region: label or list of labels carrying the signal (e.g. AAL3 ``[41, 42]``).
        combine: ``"union"`` (default): the true labels are merged into one region and ranked
            against the others; ``"best"``: each true label is ranked against the non-true regions
            and the best (smallest) rank is reported.

    Ties: mid-rank, ``rank = 1 + #(others above) + ½ #(others tied)``.
    Chance (i.i.d. region scores, T true regions present, n other regions):
    ``1 + n / (T + 1)`` — for the union (T = 1) this is ``(R + 1) / 2`` with R = n + 1 regions.

    Also returns ``region_rank_auroc``: the region-level AUROC of the true region(s) against the
    other regions, ``(#others below + ½ #tied) / n`` (for ``best``, of the best-ranked true label),
    chance 0.5.
    """
    if atlas is None or true_region is None:
        raise ConfigError("region_rank needs atlas= (label map on the map grid) and true_region=",
                          path="metrics.region_rank.params",
                          expected="atlas: (B,1,D,H,W) integer tensor, true_region: list of labels",
                          found={"atlas": None if atlas is None else "given",
                                 "true_region": true_region})
    if reduce not in ("mean", "sum") or combine not in ("union", "best"):
        raise ConfigError("region_rank options", path="metrics.region_rank.params",
                          expected={"reduce": ["mean", "sum"], "combine": ["union", "best"]},
                          found={"reduce": reduce, "combine": combine})
    if (not torch.is_tensor(atlas) or atlas.ndim != 5 or atlas.shape[2:] != attr.shape[2:]
            or atlas.shape[0] not in (1, attr.shape[0]) or atlas.is_floating_point()):
        raise ScoringError("atlas does not fit the maps", expected=f"integer (B or 1, 1, {tuple(attr.shape[2:])})",
                           found=(tuple(atlas.shape), atlas.dtype) if torch.is_tensor(atlas) else type(atlas),
                           fix="resample the atlas onto the map grid with nearest-neighbour interpolation")
    atlas = atlas.to(attr.device).long().expand(attr.shape[0], *atlas.shape[1:])
    true = sorted({int(t) for t in ([true_region] if isinstance(true_region, int) else true_region)})
    if not true or min(true) <= 0:
        raise ConfigError("true_region must list atlas labels > 0", path="metrics.region_rank.true_region",
                          expected="e.g. [41, 42]", found=true)
    n_lab = max(int(atlas.max()), max(true)) + 1
    true_t = torch.tensor(true, device=attr.device)
    is_true = torch.zeros(n_lab + 1, dtype=torch.bool, device=attr.device)
    is_true[true_t] = True
    if combine == "union":  # merge the true labels into one extra label n_lab
        atlas = torch.where(is_true[atlas], n_lab, atlas)
        is_true = torch.zeros_like(is_true)
        is_true[n_lab] = True
    s, c = region_sums(attr, atlas, valid, n_lab + 1)
    val = s if reduce == "sum" else s / c.clamp_min(1)
    present = c > 0
    present[:, 0] = False
    t_ok = present & is_true  # (B, L) true regions present
    o_ok = present & ~is_true  # other regions present
    missing = (t_ok.sum(1) == 0).nonzero().flatten().tolist()
    if missing:
        raise MaskError("true region absent from the atlas inside the brain", expected=f"voxels with labels {true}",
                        found=f"none for batch index {missing}",
                        fix="check the atlas labels (e.g. AAL3 41/42 = hippocampus) and the brain mask")
    # (B, L_true, L_other) comparisons: every true label against every other label
    gt = (val[:, None, :] > val[:, :, None]) & o_ok[:, None, :]
    eq = (val[:, None, :] == val[:, :, None]) & o_ok[:, None, :]
    rank = 1 + gt.sum(2).to(_F64) + 0.5 * eq.sum(2).to(_F64)  # (B, L) rank of each label vs others
    rank = torch.where(t_ok, rank, float("inf"))
    best, _ = rank.min(1)
    n_other = o_ok.sum(1).to(_F64)
    n_true = t_ok.sum(1).to(_F64)
    chance = 1 + n_other / (n_true + 1)
    auc = torch.where(n_other > 0, (n_other - (best - 1)) / n_other.clamp_min(1), float("nan"))
    return best, chance, {"region_rank_auroc": (auc, torch.full_like(auc, 0.5))}
