"""Agreement of a map's atlas-region ranking with a causal reference ranking, batched.

For a model trained on its own labels (a diagnosis, sex) no ground truth exists for its maps. The
reference is then causal: Siegel et al. 2025's *AtlasOcclusion* (``3-compute_explanations/
xai_methods.py``; the map is :func:`neuroxai.attribution.occlusion.atlas_occlusion`) sets each
atlas region to the mean image and records ``|Δ output| / |region|``. A method agrees with it when
it ranks the regions as the occlusion does. Everything here works on *region vectors*
``(B, L)`` float64 (one value per atlas label, NaN = label 0 or absent from the subject), so it
takes any map, a prior study's too:

* :func:`region_vector` — the study's region reduction of a map: the ``q``-th percentile of the
  relevance inside each region (``atlas_methods.get_roi_ranking_with_warped_atlas(score_mode=
  "percentile")``); on the occlusion map, constant inside each region, it is the region's effect.
* :func:`ranked` — regions best first (ties by ascending label), the present ones first.
* :func:`region_spearman` — Spearman's ρ of two region vectors over the regions present in both
  (average ranks for ties, = ``scipy.stats.spearmanr``); chance 0, maximum 1.
* :func:`region_rbo` — rank-biased overlap (Webber, Moffat & Zobel 2010) of the two rankings to a
  depth, each subject against its own reference ranking; :func:`rbo_chance` its expectation for a
  random ranking, :func:`rbo_max` its value for identical rankings.
"""
from __future__ import annotations

import torch

from ..errors import ScoringError
from .localization import average_ranks
from .sanity import pearson_masked
from .siegel2025 import rbo_weights, region_percentiles

_F64 = torch.float64


def region_vector(attr: torch.Tensor, atlas: torch.Tensor, valid: torch.Tensor | None = None, *,
                  q: float = 99.0, n_labels: int | None = None) -> torch.Tensor:
    """The ``q``-th percentile (numpy's linear) of ``attr: (B,1,D,H,W)`` inside each label of
    ``atlas`` (integer, same grid, 0 = background), over ``valid`` voxels (default all): float64
    ``(B, n_labels)``, NaN for label 0 and labels absent from a subject. Pass the map as the
    scoring reads it (``|attr|`` for the study's ranking)."""
    if attr.ndim != 5 or atlas.ndim != 5 or tuple(atlas.shape[2:]) != tuple(attr.shape[2:]) \
            or atlas.shape[0] not in (1, attr.shape[0]) or atlas.is_floating_point():
        raise ScoringError("region vector: the atlas does not fit the maps",
                           expected=f"integer (B or 1, 1, {tuple(attr.shape[2:])})",
                           found=(tuple(atlas.shape), atlas.dtype),
                           fix="resample the atlas onto the map grid (nearest neighbour)")
    if valid is None:
        valid = torch.ones((1, 1, *attr.shape[2:]), dtype=torch.bool, device=attr.device)
    n = int(n_labels if n_labels is not None else int(atlas.max()) + 1)
    return region_percentiles(attr, atlas.to(attr.device), valid.to(attr.device).bool(), q, n)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 2:
        raise ScoringError("region vectors to compare must share one (B, L) shape",
                           expected=tuple(b.shape), found=tuple(a.shape),
                           fix="reduce both maps with the same atlas and number of labels")


def ranked(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of each row of ``v: (B, L)`` in descending order of value, ties by ascending label,
    the present (non-NaN) ones first: ``(ids (B, L) long, n_present (B,))``."""
    present = ~v.isnan()
    key = torch.nan_to_num(v.to(_F64), nan=float("-inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    return order, present.sum(1)


def region_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's ρ between two region vectors per row, over the regions present in both:
    Pearson's r of their average ranks (``scipy.stats.spearmanr`` on those regions). A row with
    fewer than two common regions, or a constant vector, gives 0 (no agreement shown). ``(B,)``
    float64."""
    _check_pair(a, b)
    v = ~a.isnan() & ~b.isnan()
    return pearson_masked(average_ranks(torch.nan_to_num(a.to(_F64)), v),
                          average_ranks(torch.nan_to_num(b.to(_F64)), v), v)


def _depths(a: torch.Tensor, b: torch.Tensor, depth: int) -> torch.Tensor:
    """Per row, the depth both rankings reach: ``min(depth, regions present in both)``."""
    common = (~a.isnan() & ~b.isnan()).sum(1)
    return common.clamp(max=int(depth))


def _weights(k: torch.Tensor, depth: int, p: float) -> torch.Tensor:
    """``(B, depth)`` weights of A_1…A_depth, zero beyond each row's depth ``k``; ``p = 1``: the
    average overlap to ``k`` (``1/k`` each), else ``(1 − p) p^(d−1)`` (Webber et al. 2010, eq. 7)."""
    d = torch.arange(1, depth + 1, device=k.device).view(1, -1)
    on = (d <= k.view(-1, 1)).to(_F64)
    if p == 1:
        return on / k.clamp_min(1).to(_F64).view(-1, 1)
    return on * rbo_weights(depth, p).to(k.device).view(1, -1)


def region_rbo(a: torch.Tensor, b: torch.Tensor, depth: int = 10, p: float = 1.0,
               ext: bool = False) -> torch.Tensor:
    """Rank-biased overlap of the ranking of ``a`` against the ranking of ``b`` (each row its own
    reference), both over the regions present in both, to depth ``k = min(depth, common regions)``:
    with ``A_d = |S_{:d} ∩ T_{:d}| / d``, ``Σ_{d≤k} w_d A_d`` (:func:`_weights`; ``p = 1`` the
    average overlap, the study's choice), ``ext=True`` adding ``A_k p^k`` (eq. 32). Equal to
    ``rbo.RankingSimilarity(S, T).rbo(p=p, ext=ext)`` on the two top-k lists (p < 1 with the
    package's truncation at k). ``(B,)`` float64; a row without a common region gives 0."""
    _check_pair(a, b)
    if depth < 1:
        raise ScoringError("rank-biased overlap depth", expected="an integer ≥ 1", found=depth)
    rbo_weights(1, p)  # checks 0 < p ≤ 1
    both = ~a.isnan() & ~b.isnan()
    # rank only the common regions: the others go last and never count within depth k
    s, _ = ranked(torch.where(both, a.to(_F64), float("nan")))
    t, _ = ranked(torch.where(both, b.to(_F64), float("nan")))
    D = min(int(depth), a.shape[1])
    k = _depths(a, b, D)
    s, t = s[:, :D], t[:, :D]
    eq = (s[:, :, None] == t[:, None, :]).to(_F64)
    x = eq.cumsum(1).cumsum(2).diagonal(dim1=1, dim2=2)  # X_d = |S_{:d} ∩ T_{:d}|
    agree = x / torch.arange(1, D + 1, dtype=_F64, device=a.device)
    out = (agree * _weights(k, D, p)).sum(1)
    if ext and p < 1:
        a_k = agree.gather(1, (k - 1).clamp_min(0).view(-1, 1))[:, 0]
        out = out + a_k * torch.pow(torch.tensor(p, dtype=_F64), k.to(_F64))
    return torch.where(k > 0, out, 0.0)


def rbo_max(a: torch.Tensor, b: torch.Tensor, depth: int = 10, p: float = 1.0, ext: bool = False) -> torch.Tensor:
    """:func:`region_rbo` of identical rankings to the same depth: 1 for ``p = 1`` or
    ``ext=True``, ``1 − p^k`` otherwise. ``(B,)`` float64."""
    D = min(int(depth), a.shape[1])
    k = _depths(a, b, D)
    full = _weights(k, D, p).sum(1)
    if ext and p < 1:
        full = full + torch.pow(torch.tensor(p, dtype=_F64), k.to(_F64))
    return torch.where(k > 0, full, 0.0)


def rbo_chance(a: torch.Tensor, b: torch.Tensor, depth: int = 10, p: float = 1.0, ext: bool = False) -> torch.Tensor:
    """Expected :func:`region_rbo` when ``a``'s ranking of the R common regions is uniformly
    random: ``E[A_d] = d / R``, weighted as the score. ``(B,)`` float64."""
    D = min(int(depth), a.shape[1])
    k = _depths(a, b, D)
    R = (~a.isnan() & ~b.isnan()).sum(1).clamp_min(1).to(_F64).view(-1, 1)
    d = torch.arange(1, D + 1, dtype=_F64, device=a.device).view(1, -1)
    e_a = d / R
    out = (e_a * _weights(k, D, p)).sum(1)
    if ext and p < 1:
        out = out + (k.to(_F64) / R[:, 0]) * torch.pow(torch.tensor(p, dtype=_F64), k.to(_F64))
    return torch.where(k > 0, out, 0.0)


def causal_ranks(effects: torch.Tensor) -> torch.Tensor:
    """Rank (1 = largest) of each label's cohort-mean effect among the labels present in any
    subject of ``effects: (N, L)`` (NaN = absent); 0 for a label present nowhere. A subject
    without the label counts as effect 0 (occluding nothing moves nothing), so a region present in
    two subjects cannot outrank one present in all by the noise of two values. Ties by ascending
    label. ``(L,)`` long."""
    present = (~effects.isnan()).any(0)
    mean = torch.where(present, torch.nan_to_num(effects.to(_F64)).mean(0), float("nan"))
    ids, _ = ranked(mean.view(1, -1))
    rank = torch.zeros(effects.shape[1], dtype=torch.long, device=effects.device)
    rank[ids[0]] = torch.arange(1, effects.shape[1] + 1, device=effects.device)
    return torch.where(present, rank, 0)


def excess_over_median(effects: torch.Tensor, label: int) -> torch.Tensor:
    """Per subject, the effect of ``label`` (0 where the subject lacks it, as in
    :func:`causal_ranks`) minus the median effect of the subject's present regions (numpy's
    median): how much more the output moves per voxel when that region is occluded than when a
    typical region is. ``(N,)`` float64."""
    e = effects.to(_F64)
    med = torch.nanquantile(e, 0.5, dim=1)
    return torch.nan_to_num(e[:, int(label)]) - med


__all__ = ["causal_ranks", "excess_over_median", "ranked", "rbo_chance", "rbo_max", "region_rbo",
           "region_spearman", "region_vector"]
