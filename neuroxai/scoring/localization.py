"""Localization metrics: how much of a map lies on the known signal, batched on the device.

``score()`` is the entry point. Each metric is a pure function registered in ``METRICS``::

    fn(attr, mask, valid, *, spacing, **params) -> (score, chance)            # or
    fn(attr, mask, valid, *, spacing, **params) -> (score, chance, {key: (score, chance)})

with ``attr: (B,1,D,H,W)`` already preprocessed (polarity, smoothing), ``mask`` the ground truth and
``valid`` the brain mask (both bool ``(B,1,D,H,W)``); voxels outside ``valid`` take no part in any
metric (they are excluded, not zeroed). Every metric returns its *chance level*: the expected score
of a map that ignores the mask (i.i.d. values), from which ``score()`` derives the chance-normalized
form ``(score − chance) / (1 − chance)`` (1 = perfect, 0 = chance, < 0 = worse than chance).

Ranks and ties: AUROC and AP sort each volume once and give tied values one shared rank/threshold
(exact, as scikit-learn). Top-K metrics break ties deterministically by a stable descending
sort: among equal values the voxel with the lower flat C-order index ``(d·H + h)·W + w`` ranks first.
The pointing game averages over tied maxima (see ``pointing_game``).

Relation to Quantus 0.6 (``quantus.RelevanceMassAccuracy`` …), which scores the same numbers on
maps reshaped to ``(B,1,D·H,W)`` where the definitions coincide — the differences are listed in
each docstring and checked in ``tests/scoring/test_quantus_reference.py``.
"""
from __future__ import annotations

import inspect
from typing import Mapping, Sequence

import torch

from ..data.transforms import dilate_mm
from ..errors import ConfigError, MaskError, ScoringError
from ..registry import Registry
from .preprocess import apply_polarity, gaussian_smooth

METRICS: Registry = Registry("metric")

_F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# score(): validation, preprocessing, dispatch
def score(attr: torch.Tensor, mask: torch.Tensor, metrics: Sequence[str] | Mapping[str, dict],
          brain_mask: torch.Tensor | None = None, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
          polarity: str = "positive", smooth_fwhm_mm: float = 0.0) -> dict[str, torch.Tensor]:
    """Score a batch of maps against ground-truth masks, on the maps' device.

    Args:
        attr: ``(B,1,D,H,W)`` float maps (any sign).
        mask: ``(B,1,D,H,W)`` bool ground truth; every subject needs ≥ 1 voxel inside the brain.
        metrics: names (``["auroc", "pointing_game"]``) or ``{name: params}``, e.g.
            ``{"pointing_game": {"tolerance_mm": 4.0}, "top_k_intersection": {"k": 0.05},
            "region_rank": {"atlas": LongTensor (B,1,D,H,W), "true_region": [41, 42]}}``.
        brain_mask: bool ``(B,1,D,H,W)`` or ``(1,1,D,H,W)``; voxels outside take no part.
        spacing: voxel size in mm ``(sd, sh, sw)``, for smoothing and the pointing-game tolerance.
        polarity: ``positive`` | ``absolute`` | ``negative`` | ``raw`` (``preprocess.apply_polarity``).
        smooth_fwhm_mm: Gaussian smoothing FWHM in mm applied to the maps first (0 = none).

    Returns:
        For each metric ``NAME`` (and extra keys such as ``region_rank_auroc``): ``NAME``,
        ``NAME_chance`` and ``NAME_norm = (NAME − chance) / (1 − chance)``, each float64 ``(B,)``
        on the device. For ``region_rank`` (1 = best) the same formula gives 1 at rank 1 and 0 at
        the chance rank.

    Raises:
        ScoringError: bad shapes/dtypes/devices, NaN/Inf in ``attr``.
        MaskError: a subject's mask is empty inside the brain mask.
        ConfigError: unknown metric, polarity or metric parameter.
    """
    _check_inputs(attr, mask, brain_mask)
    mask = mask.bool()
    valid = (torch.ones_like(mask) if brain_mask is None
             else brain_mask.to(attr.device).bool().expand_as(mask))
    inside = (mask & valid).flatten(1).sum(1)
    empty = (inside == 0).nonzero().flatten().tolist()
    if empty:
        raise MaskError("empty ground-truth mask (inside the brain mask)", expected="≥ 1 mask voxel per subject",
                        found=f"0 voxels for batch index {empty}",
                        fix="exclude subjects without ground truth (e.g. no lesion) from scoring, "
                            "or check that the mask and brain mask overlap")
    items = list(metrics.items()) if isinstance(metrics, Mapping) else [(m, {}) for m in metrics]
    fns = [(name, METRICS[name], dict(params or {})) for name, params in items]  # unknown → ConfigError
    for name, fn, params in fns:
        _check_params(name, fn, params)
    a = apply_polarity(attr, polarity)
    if smooth_fwhm_mm:
        a = gaussian_smooth(a, smooth_fwhm_mm, spacing)
    out: dict[str, torch.Tensor] = {}
    for name, fn, params in fns:
        res = fn(a, mask, valid, spacing=tuple(float(s) for s in spacing), **params)
        extra = res[2] if len(res) == 3 else {}
        for key, (s, ch) in {name: (res[0], res[1]), **extra}.items():
            s, ch = s.to(_F64), ch.to(_F64)
            out[key] = s
            out[f"{key}_chance"] = ch
            den = 1 - ch
            # A chance of exactly 1 (mask = whole brain) leaves nothing to normalize against.
            out[f"{key}_norm"] = torch.where(den != 0, (s - ch) / torch.where(den != 0, den, 1),
                                             torch.full_like(s, float("nan")))
    return out


def _check_inputs(attr, mask, brain_mask):
    if not torch.is_tensor(attr) or attr.ndim != 5 or attr.shape[1] != 1:
        raise ScoringError("maps must be a (B, 1, D, H, W) tensor", expected="5-D, one channel",
                           found=tuple(attr.shape) if torch.is_tensor(attr) else type(attr).__name__,
                           fix="add the channel axis: attr[:, None]")
    if not attr.is_floating_point():
        raise ScoringError("maps must be floating point", expected="float", found=attr.dtype)
    if not torch.is_tensor(mask) or mask.shape != attr.shape:
        raise ScoringError("mask and map shapes differ", expected=tuple(attr.shape),
                           found=tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__,
                           fix="resample the mask onto the map's grid (nearest neighbour)")
    if mask.device != attr.device:
        raise ScoringError("mask and map are on different devices", expected=str(attr.device),
                           found=str(mask.device), fix="move both to one device")
    if brain_mask is not None:
        ok = (torch.is_tensor(brain_mask) and brain_mask.ndim == 5 and brain_mask.shape[1] == 1
              and brain_mask.shape[2:] == attr.shape[2:] and brain_mask.shape[0] in (1, attr.shape[0]))
        if not ok:
            raise ScoringError("brain mask shape does not fit the maps",
                               expected=f"(1 or {attr.shape[0]}, 1, {tuple(attr.shape[2:])})",
                               found=tuple(brain_mask.shape) if torch.is_tensor(brain_mask) else type(brain_mask),
                               fix="resample the brain mask onto the map's grid (nearest neighbour)")
    finite = torch.isfinite(attr).flatten(1).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise ScoringError("maps contain NaN/Inf", expected="finite values", found=f"subjects at batch index {bad}",
                           fix="check the attribution method (e.g. a division by zero) before scoring")


def _check_params(name, fn, params):
    sig = inspect.signature(fn)
    allowed = [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "spacing"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown parameter(s) for metric {name!r}", path=f"metrics.{name}.params",
                          expected=f"some of {allowed}", found=unknown, fix="remove or rename the parameter")


# ----------------------------------------------------------------------------------------------
# batched, tie-aware ranking (one sort per volume)
def _flat(*xs):
    return [x.reshape(x.shape[0], -1) for x in xs]


def tie_bounds(vs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows of sorted values ``vs: (B, N)``, the first and last 0-based position of each
    element's run of equal values, both ``(B, N)`` long. Runs never cross rows."""
    B, N = vs.shape
    pos = torch.arange(N, device=vs.device).expand(B, N)
    start = torch.ones_like(vs, dtype=torch.bool)
    start[:, 1:] = vs[:, 1:] != vs[:, :-1]
    end = torch.ones_like(start)
    end[:, :-1] = start[:, 1:]
    first = torch.cummax(torch.where(start, pos, 0), dim=1).values
    last = torch.cummin(torch.where(end, pos, N).flip(1), dim=1).values.flip(1)
    return first, last


def average_ranks(x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """1-based ranks along the last axis of ``x: (B, N)``, ties sharing their average rank
    (``scipy.stats.rankdata(method="average")``), computed among the ``valid`` entries only
    (others get rank 0). One sort per row. Returns float64 ``(B, N)``."""
    x = x.to(_F64)
    if valid is None:
        valid = torch.ones_like(x, dtype=torch.bool)
    vs, order = torch.sort(torch.where(valid, x, float("-inf")), dim=1)
    first, last = tie_bounds(vs)
    n_out = (~valid).sum(1, keepdim=True)
    r_sorted = (first + last).to(_F64) / 2 + 1 - n_out
    r = torch.empty_like(r_sorted).scatter_(1, order, r_sorted)
    return torch.where(valid, r, 0.0)


def auroc_batched(a: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Exact AUROC per row of ``a: (B, N)`` for labels ``pos`` among ``valid`` entries: the
    Mann–Whitney U / (n⁺ n⁻) with average ranks for ties (= ``sklearn.metrics.roc_auc_score``).
    NaN where a row has no positive or no negative."""
    r = average_ranks(a, valid)
    pos = pos & valid
    npos = pos.sum(1).to(_F64)
    nneg = valid.sum(1).to(_F64) - npos
    u = (r * pos).sum(1) - npos * (npos + 1) / 2
    den = npos * nneg
    return torch.where(den > 0, u / torch.where(den > 0, den, 1), float("nan"))


def average_precision_batched(a: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Average precision per row (= ``sklearn.metrics.average_precision_score``):
    AP = Σₜ (Rₜ − Rₜ₋₁) Pₜ over the distinct values t in descending order, tied values entering as
    one threshold. Equivalently the mean over positives of the precision at the end of the
    positive's tie run. Invalid entries sort last and never count. NaN where a row has no positive."""
    vs, order = torch.sort(torch.where(valid, a.to(_F64), float("-inf")), dim=1, descending=True)
    lab = torch.gather(pos & valid, 1, order)
    _, last = tie_bounds(vs)
    tp = lab.cumsum(1).to(_F64)
    prec_at_end = torch.gather(tp, 1, last) / (last + 1).to(_F64)
    npos = lab.sum(1).to(_F64)
    s = (prec_at_end * lab).sum(1)
    return torch.where(npos > 0, s / npos.clamp_min(1), float("nan"))


def topk_in_mask(a: torch.Tensor, m: torch.Tensor, v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Fraction of the ``k[b]`` highest valid entries of row b of ``a: (B, N)`` that lie in ``m``.
    Ties: stable descending sort, so among equal values the lower flat index ranks first."""
    vals = torch.where(v, a.to(_F64), float("-inf"))
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    ms = torch.gather(m & v, 1, order)
    rank = torch.arange(a.shape[1], device=a.device).view(1, -1)
    hits = (ms & (rank < k.view(-1, 1))).sum(1).to(_F64)
    return hits / k.clamp_min(1).to(_F64)


def _share(m, v):
    """Fraction of valid voxels inside ``m``: the chance level of most metrics."""
    return (m & v).sum(1).to(_F64) / v.sum(1).to(_F64)


# ----------------------------------------------------------------------------------------------
# the metrics
@METRICS.register("relevance_mass_accuracy")
def relevance_mass_accuracy(attr, mask, valid, *, spacing=None):
    """Positive relevance inside the mask / total positive relevance, over valid voxels
    (Arras, Osman & Samek 2022, "CLEVR-XAI", Information Fusion 81:14–40). A map without any
    positive relevance scores 0. Chance: the mask's share of the valid voxels (the expected
    score of i.i.d. relevance).

    Quantus 0.6 divides by the plain sum Σa (negatives included); for non-negative maps (our
    default ``polarity="positive"``) the two coincide.
    """
    a, m, v = _flat(attr.to(_F64).clamp_min(0), mask, valid)
    a = a * v
    tot = a.sum(1)
    inside = (a * m).sum(1)
    s = torch.where(tot > 0, inside / torch.where(tot > 0, tot, 1), 0.0)
    return s, _share(m, v)


@METRICS.register("relevance_rank_accuracy")
def relevance_rank_accuracy(attr, mask, valid, *, spacing=None):
    """Fraction of the K highest-relevance valid voxels that lie in the mask, K = number of mask
    voxels inside the brain (Arras et al. 2022). Ties: stable descending sort (lower flat index
    first). Chance: K / valid voxels.

    Quantus 0.6 uses the same K but ``np.argsort(-a)`` (not stable), so tied values may be broken
    differently; without ties the two coincide.
    """
    a, m, v = _flat(attr, mask, valid)
    k = (m & v).sum(1)
    return topk_in_mask(a, m, v, k), _share(m, v)


@METRICS.register("top_k_intersection")
def top_k_intersection(attr, mask, valid, *, spacing=None, k: float = 0.05):
    """Fraction of the top ``k`` (a fraction of the valid voxels, n = round(k·N_valid) ≥ 1) voxels
    that lie in the mask (Theiner, Müller-Budack & Ewerth 2022, "Interpretable semantic photo
    geolocation", WACV; Quantus' ``TopKIntersection``). Ties as in rank accuracy.
    Chance: the mask's share of the valid voxels.

    Quantus 0.6 takes an absolute count ``k`` of features and divides by k; with our n it matches.
    """
    if not 0 < float(k) <= 1:
        raise ConfigError("top_k_intersection k is a fraction of the brain voxels", path="metrics.top_k_intersection.k",
                          expected="0 < k ≤ 1", found=k)
    a, m, v = _flat(attr, mask, valid)
    n = (v.sum(1).to(_F64) * float(k)).round().long().clamp_min(1)
    return topk_in_mask(a, m, v, n), _share(m, v)


@METRICS.register("auroc")
def auroc(attr, mask, valid, *, spacing=None):
    """Voxel-level area under the ROC curve of the map as a detector of mask voxels, over valid
    voxels: exact, rank-based (Mann–Whitney U), average ranks for ties (Fawcett 2006, "An
    introduction to ROC analysis", Pattern Recognit. Lett. 27:861; = sklearn ``roc_auc_score`` and
    Quantus' ``AUC``). One sort per volume. Chance 0.5. A mask covering the whole brain has no
    negatives: NaN."""
    a, m, v = _flat(attr, mask, valid)
    s = auroc_batched(a, m, v)
    return s, torch.full_like(s, 0.5)


@METRICS.register("average_precision")
def average_precision(attr, mask, valid, *, spacing=None):
    """Voxel-level average precision of the map against the mask over valid voxels, tie-aware as
    sklearn ``average_precision_score`` (Zhu 2004; Everingham et al. 2010 without interpolation).
    One sort per volume. Chance: the mask's share of the valid voxels (the precision of a random
    ranking)."""
    a, m, v = _flat(attr, mask, valid)
    return average_precision_batched(a, m, v), _share(m, v)


@METRICS.register("pointing_game")
def pointing_game(attr, mask, valid, *, spacing=(1.0, 1.0, 1.0), tolerance_mm: float = 0.0,
                  ties: str = "average"):
    """Hit if the map's maximum (over valid voxels) lies in the mask dilated by ``tolerance_mm``
    (Zhang et al. 2018, "Top-down neural attention by excitation backprop", IJCV 126:1084; their
    15-pixel tolerance becomes an ellipsoid in mm from the voxel spacing, ``dilate_mm``).

    Ties at the maximum (``ties``): ``"average"`` (default) scores the share of tied maxima inside
    the dilated mask (the expected hit under random tie-breaking), so a flat map scores chance
    rather than an arbitrary hit or miss; ``"first"`` takes the tied maximum with the lowest flat
    index; ``"any"`` counts a hit if any tied maximum is inside (Quantus 0.6). With a unique
    maximum all three give 0 or 1.
    Chance: the probability that a random valid voxel falls in the dilated mask.
    """
    if tolerance_mm < 0:
        raise ConfigError("pointing-game tolerance must be ≥ 0 mm", path="metrics.pointing_game.tolerance_mm",
                          expected="≥ 0", found=tolerance_mm)
    if ties not in ("average", "first", "any"):
        raise ConfigError("pointing-game tie rule", path="metrics.pointing_game.ties",
                          expected=["average", "first", "any"], found=repr(ties))
    dil = dilate_mm(mask, float(tolerance_mm), spacing) if tolerance_mm > 0 else mask
    a, d, v = _flat(attr.to(_F64), dil, valid)
    x = torch.where(v, a, float("-inf"))
    if ties == "first":  # torch.argmax returns the first maximal index
        hit = torch.gather(d & v, 1, x.argmax(1, keepdim=True))[:, 0].to(_F64)
        return hit, _share(d, v)
    top = (x == x.amax(1, keepdim=True)) & v
    n_in = (top & d).sum(1).to(_F64)
    hit = (n_in > 0).to(_F64) if ties == "any" else n_in / top.sum(1).to(_F64)
    return hit, _share(d, v)


def bounding_box(mask: torch.Tensor) -> torch.Tensor:
    """Axis-aligned bounding box of each subject's mask ``(B,1,D,H,W)`` bool, vectorized (the
    interval between the first and last True of each axis projection)."""
    m = mask[:, 0]

    def interval(p):  # (B, L) bool -> filled between first and last True
        return torch.cummax(p.int(), 1).values.bool() & torch.cummax(p.flip(1).int(), 1).values.bool().flip(1)

    pd = interval(m.any(3).any(2))
    ph = interval(m.any(3).any(1))
    pw = interval(m.any(2).any(1))
    return (pd[:, :, None, None] & ph[:, None, :, None] & pw[:, None, None, :])[:, None]


@METRICS.register("energy_pointing_game")
def energy_pointing_game(attr, mask, valid, *, spacing=None, region: str = "box"):
    """Energy-based pointing game (Wang et al. 2020, "Score-CAM", CVPR Workshops): the share of
    positive energy inside the target's bounding box, Σ_box a⁺ / Σ a⁺ over valid voxels.
    ``region="box"`` (default, as in the paper) uses the mask's 3-D bounding box;
    ``region="mask"`` the mask itself (then equal to relevance mass accuracy).
    Chance: the region's share of the valid voxels."""
    if region not in ("box", "mask"):
        raise ConfigError("energy_pointing_game region", path="metrics.energy_pointing_game.region",
                          expected=["box", "mask"], found=region)
    target = bounding_box(mask) if region == "box" else mask
    return relevance_mass_accuracy(attr, target, valid)
