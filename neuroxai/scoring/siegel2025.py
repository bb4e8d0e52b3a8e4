"""The read-outs of Siegel et al. 2025 ("Benchmarking explanation methods on brain MRI",
arXiv 2508.02560; code: brain-tools/brain-xai-benchmark), batched on the device.

* ``false_positive`` — ``4-xai_validation/metrics.py: check_false_positive``: 1 if any brain voxel
  outside the ground truth dilated by 20 iterations is more relevant than the 99th percentile of
  the relevance inside it.
* ``region_match`` — ``metrics.py: check_true_positive`` with ``atlas_methods.py:
  get_roi_ranking_with_warped_atlas(score_mode="percentile")``: atlas regions ranked by the 99th
  percentile of the relevance inside each; "strong" = the top one is the target, "weak" = the
  target is among the top three (top two / top six for two-region targets).
* ``rank_biased_overlap`` — ``brain_age_ranking/compute_aging_marker_overlap.py``: regions ranked
  as above, left and right merged (``discard_worse_lateral_roi``), against a reference ranking by
  rank-biased overlap (Webber, Moffat & Zobel 2010) as the ``rbo`` package computes it.

Used with ``preset: siegel2025`` (``presets.SIEGEL2025``) the maps they see are the study's
processed maps; ``tests/scoring/test_siegel2025.py`` holds the study's own numbers for them.
"""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import torch

from ..errors import ConfigError, MaskError, ScoringError
from .groundtruth import binary_dilation
from .localization import _count, metric
from .preprocess import percentile as _percentile

_F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# false positives
@metric("false_positive", higher_is_better=False, own_dilation=True, best=0.0,
        help=("1 if any brain voxel outside the ground truth dilated by gt_dilation voxels is more "
              "relevant than the 99th percentile inside it (Siegel et al. 2025)"),
        chance="the probability for i.i.d. relevance (exchangeable voxels)")
def false_positive(attr, mask, valid, *, spacing=None, gt_dilation: int = 20, percentile: float = 99.0):
    """Per-subject false-positive test of Siegel et al. 2025 (``check_false_positive``): with
    ``D`` = the ground truth dilated by ``gt_dilation`` iterations of a 6-connected binary dilation
    (``groundtruth.binary_dilation``; the study: 20), the subject scores 1 if
    ``max(attr[brain \\ D]) > percentile(attr[brain ∩ D], percentile)`` (numpy's linear
    percentile), else 0; 0 when ``D`` covers the brain. Lower is better.

    It receives the ground truth before the scoring's own dilation (``own_dilation``), the
    contralateral region already added.

    Chance (i.i.d. relevance; n voxels, n_in inside D, h = 0.99 (n_in − 1), r = n_in − 1 − ⌊h⌋
    inside values above the percentile's lower order statistic, f = h − ⌊h⌋): no false positive
    needs every outside value below the threshold, P₀ ≈ P_{r+1} + f (P_r − P_{r+1}) with
    P_k = C(n_in, k) / C(n, k) the probability that the k largest values all lie inside;
    chance = 1 − P₀.
    """
    n_it = int(gt_dilation)
    if n_it < 0 or n_it != gt_dilation:
        raise ConfigError("false_positive gt_dilation is a number of iterations", path="metrics.false_positive.gt_dilation",
                          expected="integer ≥ 0", found=gt_dilation)
    if not 0 <= float(percentile) <= 100:
        raise ConfigError("false_positive percentile", path="metrics.false_positive.percentile",
                          expected="0–100", found=percentile)
    d = binary_dilation(mask, n_it) if n_it else mask.bool()
    inside = d & valid
    outside = valid & ~d
    thr = _percentile(attr, float(percentile), inside)
    B = attr.shape[0]
    out_max = torch.where(outside, attr, float("-inf")).reshape(B, -1).amax(1).to(_F64)
    fp = (out_max > thr).to(_F64)  # -inf (no outside voxel) is never above
    n_in = _count(inside).to(_F64)
    n = _count(valid).to(_F64)
    h = (n_in - 1) * float(percentile) / 100
    r = n_in - 1 - h.floor()
    f = h - h.floor()

    def p_top(k):  # C(n_in, k) / C(n, k)
        ok = k <= n_in
        lg = (torch.lgamma(n_in + 1) - torch.lgamma((n_in - k).clamp_min(0) + 1)
              - torch.lgamma(n + 1) + torch.lgamma(n - k + 1))
        return torch.where(ok, lg.exp(), 0.0)

    p0 = p_top(r + 1) + f * (p_top(r) - p_top(r + 1))
    chance = torch.where(n > n_in, 1 - p0, 0.0)
    return fp, chance


# ----------------------------------------------------------------------------------------------
# regions ranked by a percentile of the relevance inside each
def false_positive_sets(attr: torch.Tensor, mask: torch.Tensor, brain: torch.Tensor | None, *,
                        gt_dilation: int = 20, fp_dilation: int = 4, percentile: float = 99.0,
                        smooth_sigma_vox: float = 1.699, lr_axis: int = 2) -> dict[str, torch.Tensor]:
    """The voxels of a map's "false positives" and their hemisphere-flipped control, as the false-
    positive perturbation of Siegel et al. 2025 (2026 revision; ``main_fp_perturb.py:
    test_step``) builds them, batched. ``attr, mask, brain: (B,1,D,H,W)``.

    ``e`` = ``|attr|`` smoothed with a Gaussian of ``smooth_sigma_vox`` voxels (the study: 1.699,
    FWHM 4 mm on its 1 mm grid; scipy's ``gaussian_filter``, reflecting borders); ``G`` = the ground
    truth dilated by ``gt_dilation`` 6-connected iterations; the threshold is the ``percentile``-th
    percentile of ``e`` inside ``G`` (the whole of ``G``, as the study takes it); the false
    positives are the voxels above it outside ``G``, dilated by ``fp_dilation`` iterations
    ("to capture suppressor information broadly"). ``fp``: those voxels in the brain and outside
    ``G``; ``flip``: the dilated set mirrored along ``lr_axis`` (the array axis of left-right, 2 =
    the first spatial axis), in the brain and outside ``G`` — a set of about the same size in the
    other hemisphere. Returns ``{"fp", "flip"}`` bool ``(B,1,D,H,W)`` and ``"overlap"`` ``(B,)``
    float64, the share of ``flip`` also in ``fp`` (0 without a flipped voxel)."""
    from .preprocess import gaussian_smooth

    if attr.shape != mask.shape or attr.ndim != 5:
        raise ScoringError("false-positive sets need a map and a mask of one shape", expected="(B,1,D,H,W) both",
                           found={"attr": tuple(attr.shape), "mask": tuple(mask.shape)},
                           fix="pass the map and its ground truth on the same grid")
    e = attr.abs().to(torch.float64 if attr.dtype == torch.float64 else torch.float32)
    if smooth_sigma_vox > 0:
        fwhm_vox = float(smooth_sigma_vox) * 2 * (2 * torch.log(torch.tensor(2.0))).sqrt().item()
        e = gaussian_smooth(e, fwhm_vox, (1.0, 1.0, 1.0), kernel="nilearn")
    g = binary_dilation(mask.bool(), int(gt_dilation)) if gt_dilation else mask.bool()
    thr = _percentile(e, float(percentile), g).to(e.dtype).view(-1, 1, 1, 1, 1)
    fp = (e > thr) & ~g  # a subject without ground truth has a NaN threshold: no false positive
    fp = binary_dilation(fp, int(fp_dilation)) if fp_dilation else fp
    keep = ~g if brain is None else brain.bool() & ~g
    flip = fp.flip(lr_axis) & keep
    fp = fp & keep
    n_flip = flip.flatten(1).sum(1)
    overlap = torch.where(n_flip > 0, (flip & fp).flatten(1).sum(1).to(_F64) / n_flip.clamp_min(1), 0.0)
    return {"fp": fp, "flip": flip, "overlap": overlap.to(_F64)}


def region_percentiles(attr: torch.Tensor, atlas: torch.Tensor, valid: torch.Tensor, q: float = 99.0,
                       n_labels: int | None = None) -> torch.Tensor:
    """The ``q``-th percentile (numpy's linear) of the relevance inside each atlas label, over
    valid voxels: float64 ``(B, n_labels)``, NaN for label 0 and labels absent from a subject's
    brain. Two stable sorts of the whole batch (by value, then by label), whatever the number of
    regions."""
    B = attr.shape[0]
    lab = atlas.to(attr.device).long().expand(B, *atlas.shape[1:]).reshape(B, -1)
    lab = torch.where(valid.expand(B, *valid.shape[1:]).reshape(B, -1), lab, torch.zeros_like(lab))
    L = int(n_labels if n_labels is not None else int(lab.max()) + 1)
    v = attr.reshape(B, -1).to(_F64)
    order = torch.sort(v, dim=1, stable=True).indices
    lab_o = lab.gather(1, order)
    order2 = torch.sort(lab_o, dim=1, stable=True).indices
    vs = v.gather(1, order.gather(1, order2))  # values sorted by (label, value)
    c = torch.zeros(B, L, dtype=torch.long, device=v.device).scatter_add_(1, lab, torch.ones_like(lab))
    start = c.cumsum(1) - c
    qq = float(q) / 100
    virt = (c - 1).to(_F64) * qq  # numpy's virtual index for "linear"
    lo = virt.floor().clamp_min(0)
    t = virt - lo
    last = (c - 1).clamp_min(0)
    lo_i = torch.minimum(lo.long(), last)
    hi_i = torch.minimum(lo_i + 1, last)
    a = vs.gather(1, (start + lo_i).clamp(max=v.shape[1] - 1))
    b = vs.gather(1, (start + hi_i).clamp(max=v.shape[1] - 1))
    dba = b - a
    out = torch.where(t >= 0.5, b - dba * (1 - t), a + dba * t)
    out = torch.where(c > 0, out, float("nan"))
    out[:, 0] = float("nan")
    return out


def _check_atlas(attr, atlas, name):
    if (not torch.is_tensor(atlas) or atlas.ndim != 5 or atlas.shape[2:] != attr.shape[2:]
            or atlas.shape[0] not in (1, attr.shape[0]) or atlas.is_floating_point()):
        raise ScoringError(f"{name}: atlas does not fit the maps", expected=f"integer (B or 1, 1, {tuple(attr.shape[2:])})",
                           found=(tuple(atlas.shape), atlas.dtype) if torch.is_tensor(atlas) else type(atlas),
                           fix="resample the atlas onto the map grid with nearest-neighbour interpolation")


def _merge_map(n_lab: int, pairs: Mapping[int, int] | None, device) -> torch.Tensor:
    """label → merged id (the smaller label of its left/right pair), ``(n_lab,)`` long."""
    ids = torch.arange(n_lab, device=device)
    for a, b in (pairs or {}).items():
        if 0 < a < n_lab and 0 < b < n_lab:
            ids[a] = ids[b] = min(a, b)
    return ids


def ranked_regions(attr, atlas, valid, *, q: float = 99.0, lateral: str = "separate",
                   lateral_pairs: Mapping[int, int] | None = None, last: torch.Tensor | None = None,
                   n_labels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Regions of each subject in descending order of their ``q``-th percentile of relevance.

    ``lateral="merged"``: a left/right pair (``lateral_pairs``) is one region, scored by the
    better of its two sides (the study's ``discard_worse_lateral_roi`` keeps the first of the two
    in the ranking); its id is the smaller label. Ties: regions flagged in ``last`` (bool over
    ids, e.g. the targets — a pessimistic rule) after the others, then ascending id (the study
    sorts with pandas' unstable quicksort, so its order among ties is arbitrary).

    Returns ``(ids, n_present)``: long ``(B, L)`` ids, the present regions first, and the number
    of regions present in each subject's brain ``(B,)``."""
    if lateral not in ("separate", "merged"):
        raise ConfigError("lateral", path="metrics.region_match.lateral", expected=["separate", "merged"],
                          found=repr(lateral))
    n_lab = int(n_labels if n_labels is not None else int(atlas.max()) + 1)
    sc = region_percentiles(attr, atlas, valid, q, n_lab)  # (B, L), NaN = absent
    if lateral == "merged":
        m = _merge_map(n_lab, lateral_pairs, attr.device).expand_as(sc)
        sc = torch.full_like(sc, float("-inf")).scatter_reduce(
            1, m, torch.nan_to_num(sc, nan=float("-inf")), reduce="amax")
        sc = torch.where(sc == float("-inf"), float("nan"), sc)
    present = ~sc.isnan()
    key = torch.nan_to_num(sc, nan=float("-inf"))
    ids = torch.arange(n_lab, device=attr.device).expand_as(sc)
    if last is not None:  # stable sorts, least significant key first
        o = torch.sort(last[:n_lab].long().expand_as(sc), dim=1, stable=True).indices
        ids = ids.gather(1, o)
        key = key.gather(1, o)
        present = present.gather(1, o)
    o = torch.sort(key, dim=1, descending=True, stable=True).indices
    return ids.gather(1, o), present.sum(1)


def _groups(true_region, targets) -> list[list[int]]:
    if targets is not None:
        gs = [[int(x) for x in ([g] if isinstance(g, int) else g)] for g in targets]
    else:
        gs = [[int(x) for x in ([true_region] if isinstance(true_region, int) else true_region)]]
    if not gs or any(not g or min(g) <= 0 for g in gs):
        raise ConfigError("region_match needs target labels > 0", path="metrics.region_match.targets",
                          expected="true_region, or targets: [[labels of target 1], [labels of target 2]]",
                          found=gs)
    return gs


def _comb_ratio(a: torch.Tensor, k: int, n: torch.Tensor) -> torch.Tensor:
    """C(a, k) / C(n, k), float64, 0 where a < k."""
    lg = torch.lgamma(a + 1) - torch.lgamma((a - k).clamp_min(0) + 1) - torch.lgamma(n + 1) + torch.lgamma(n - k + 1)
    return torch.where(a >= k, lg.exp(), 0.0)


@metric("region_match", needs=("atlas",),
        help=("1 if the atlas region with the highest 99th-percentile relevance is the target "
              "(region_match_weak: among the top 3) (Siegel et al. 2025)"),
        chance="the targets' share of the regions (weak: of drawing one in 3)")
def region_match(attr, mask, valid, *, spacing=None, atlas=None, true_region=None, targets=None,
                 percentile: float = 99.0, lateral: str = "separate",
                 lateral_pairs: Mapping[int, int] | None = None):
    """Strong and weak region match of Siegel et al. 2025 (``check_true_positive``, "percentile"
    ranking): every atlas region present in the brain is scored by the ``percentile``-th
    percentile of the relevance inside it and ranked (:func:`ranked_regions`). With T target
    regions (``targets``: a list of label groups; default one group, ``true_region``), the
    subject's strong match is 1 if all of the top T regions are targets (the study: top 1, or top 2
    for its two-region "dummy disease" targets) and its weak match (``region_match_weak``) is 1
    if every target has a region among the top 3T.

    ``lateral="separate"`` (default) ranks each hemisphere's region on its own, as
    ``check_true_positive`` does: it computes the merged list but matches on the unmerged ranking,
    so a left-hippocampus target is missed when the right hippocampus ranks first (give both labels
    in the target to count either). ``lateral="merged"`` merges each left/right pair
    (``lateral_pairs``) as the study's brain-age ranking does. The study matches region *names*
    by substring, so its "Cortex (left hemisphere)" also matches a "Cerebellum-Cortex (left
    hemisphere)" target; labels here match only themselves.

    Ties: a target tied with a non-target is ranked after it (a match must be earned), then by
    label. Chance (regions ranked at random, R present, U the present targets, G_j target j):
    strong C(|U|, T) / C(R, T); weak Σ_S (−1)^|S| C(R − |∪_S G_j|, 3T) / C(R, 3T).
    """
    if atlas is None or (true_region is None and targets is None):
        raise ConfigError("region_match needs atlas= (label map on the map grid) and true_region= or targets=",
                          path="metrics.region_match.params",
                          expected="atlas: (B,1,D,H,W) integer tensor, true_region: list of labels",
                          found={"atlas": None if atlas is None else "given", "true_region": true_region})
    _check_atlas(attr, atlas, "region_match")
    gs = _groups(true_region, targets)
    B = attr.shape[0]
    n_lab = max(int(atlas.max()), max(max(g) for g in gs)) + 1
    dev = attr.device
    merge = _merge_map(n_lab, lateral_pairs, dev) if lateral == "merged" else torch.arange(n_lab, device=dev)
    gid = [sorted({int(merge[x]) for x in g}) for g in gs]
    is_t = torch.zeros(n_lab, dtype=torch.bool, device=dev)
    for g in gid:
        is_t[g] = True
    ids, n_present = ranked_regions(attr, atlas, valid, q=percentile, lateral=lateral,
                                    lateral_pairs=lateral_pairs, last=is_t, n_labels=n_lab)
    T = len(gs)
    k_weak = 3 * T
    pos = torch.arange(ids.shape[1], device=dev).view(1, -1)
    inrank = pos < n_present.view(-1, 1)
    top_t = ids[:, :T]
    strong = ((is_t[top_t] & inrank[:, :T]).all(1) & (n_present >= T)).to(_F64)
    weak = torch.ones(B, dtype=torch.bool, device=dev)
    for g in gid:
        gm = torch.zeros(n_lab, dtype=torch.bool, device=dev)
        gm[g] = True
        weak &= (gm[ids[:, :k_weak]] & inrank[:, :k_weak]).any(1)
    # chance from the present regions
    present = torch.zeros(B, n_lab, dtype=torch.bool, device=dev).scatter_(1, ids, inrank)
    R = n_present.to(_F64)
    if bool((present & is_t).sum(1).eq(0).any()):
        bad = ((present & is_t).sum(1) == 0).nonzero().flatten().tolist()
        raise MaskError("region_match: no target region inside the brain", expected=f"labels {gs}",
                        found=f"none for batch index {bad}", fix="check the atlas labels and the brain mask")
    n_u = (present & is_t).sum(1).to(_F64)
    ch_strong = _comb_ratio(n_u, T, R)
    ch_weak = torch.zeros(B, dtype=_F64, device=dev)
    for size in range(len(gid) + 1):
        for S in itertools.combinations(range(len(gid)), size):
            um = torch.zeros(n_lab, dtype=torch.bool, device=dev)
            for j in S:
                um[gid[j]] = True
            n_s = (present & um).sum(1).to(_F64)
            ch_weak += (-1) ** size * _comb_ratio(R - n_s, k_weak, R)
    ch_weak = torch.where(R >= k_weak, ch_weak, 1.0)
    return strong, ch_strong, {"region_match_weak": (weak.to(_F64), ch_weak)}


# ----------------------------------------------------------------------------------------------
# rank-biased overlap
def rbo_weights(depth: int, p: float) -> torch.Tensor:
    """Weights w_d (d = 1…depth) of the agreements A_d in RBO: ``(1 − p) p^(d−1)`` (Webber et al.
    2010, eq. 7 truncated at the depth); ``p = 1``: ``1/depth`` each (the average overlap, which
    the ``rbo`` package returns for its default ``p=1.0``)."""
    if not 0 < p <= 1:
        raise ConfigError("rank-biased overlap persistence p", path="metrics.rank_biased_overlap.p",
                          expected="0 < p ≤ 1", found=p)
    d = torch.arange(depth, dtype=_F64)
    return torch.full((depth,), 1.0 / depth, dtype=_F64) if p == 1 else (1 - p) * p ** d


def rank_biased_overlap_batch(ranked: torch.Tensor, reference: torch.Tensor, p: float = 1.0,
                              ext: bool = False) -> torch.Tensor:
    """RBO of each row of ``ranked: (B, k)`` (ids, no repeats within a row) against
    ``reference: (k,)``, both evaluated to depth k (Webber, Moffat & Zobel 2010, "A similarity
    measure for indefinite rankings", ACM TOIS 28(4):20): with A_d = |S_{:d} ∩ T_{:d}| / d,
    ``Σ_d w_d A_d`` (:func:`rbo_weights`); ``ext=True`` (p < 1) adds the extrapolation
    ``A_k p^k`` (eq. 32). Equal to ``rbo.RankingSimilarity(S, T).rbo(p=p, ext=ext)`` for lists of
    equal length. Float64 ``(B,)``."""
    k = ranked.shape[1]
    if reference.numel() != k or k == 0:
        raise ConfigError("rank-biased overlap compares rankings of equal depth", expected=k,
                          found=reference.numel())
    eq = (ranked[:, :, None] == reference.to(ranked.device)[None, None, :]).to(_F64)
    x = eq.cumsum(1).cumsum(2).diagonal(dim1=1, dim2=2)  # X_d = |S_{:d} ∩ T_{:d}|
    a = x / torch.arange(1, k + 1, dtype=_F64, device=ranked.device)
    s = (a * rbo_weights(k, p).to(ranked.device)).sum(1)
    if ext and p < 1:
        s = s + a[:, -1] * p ** k
    return s


def rank_biased_overlap(s: Sequence, t: Sequence, p: float = 1.0, ext: bool = False) -> float:
    """RBO of two ranked lists (any hashable items, no repeats), to the depth of the shorter one,
    as ``rbo.RankingSimilarity(s, t).rbo(p=p, ext=ext)`` (what Siegel et al. 2025 use, p = 1):
    see :func:`rank_biased_overlap_batch`. Two empty lists: 1; one empty: 0."""
    if not s and not t:
        return 1.0
    if not s or not t:
        return 0.0
    k = min(len(s), len(t))
    index = {x: i for i, x in enumerate(dict.fromkeys([*s[:k], *t[:k]]))}
    return float(rank_biased_overlap_batch(torch.tensor([[index[x] for x in s[:k]]]),
                                           torch.tensor([index[x] for x in t[:k]]), p, ext)[0])


@metric("rank_biased_overlap", needs=("atlas", "reference"),
        help=("rank-biased overlap of the regions ranked by 99th-percentile relevance (left/right "
              "merged) with a reference ranking (Webber et al. 2010; Siegel et al. 2025)"),
        chance="the expected overlap of a random region ranking")
def rank_biased_overlap_metric(attr, mask, valid, *, spacing=None, atlas=None, true_region=None,
                               reference: Sequence[int] = (), depth: int | None = None, p: float = 1.0,
                               ext: bool = False, percentile: float = 99.0,
                               lateral: str = "merged", lateral_pairs: Mapping[int, int] | None = None):
    """Regions ranked as in :func:`region_match` (left/right merged by default, ties by label),
    the top ``depth`` (default: the reference's length) against ``reference`` (labels, best
    first; a label of a merged pair stands for the pair) by :func:`rank_biased_overlap_batch` —
    the brain-age read-out of Siegel et al. 2025 (top 17 regions against the aging markers of
    Walhovd et al. 2011, p = 1). ``mask`` and ``true_region`` are not used.

    Chance (a random ranking of the R present regions): E[A_d] = m_d / R, with m_d the reference's
    first d entries present in the brain, weighted as the score."""
    if atlas is None or not reference:
        raise ConfigError("rank_biased_overlap needs atlas= and reference= (labels, best first)",
                          path="metrics.rank_biased_overlap.params", expected="reference: [17, 53, …]",
                          found={"atlas": None if atlas is None else "given", "reference": list(reference)})
    _check_atlas(attr, atlas, "rank_biased_overlap")
    ref = [int(x) for x in reference]
    n_lab = max(int(atlas.max()), max(ref)) + 1
    dev = attr.device
    merge = _merge_map(n_lab, lateral_pairs, dev) if lateral == "merged" else torch.arange(n_lab, device=dev)
    ref_m = list(dict.fromkeys(int(merge[x]) if x < n_lab else x for x in ref))
    k = int(depth or len(ref_m))
    ids, n_present = ranked_regions(attr, atlas, valid, q=percentile, lateral=lateral,
                                    lateral_pairs=lateral_pairs, n_labels=n_lab)
    k = min(k, len(ref_m))
    B = attr.shape[0]
    pos = torch.arange(k, device=dev).view(1, -1)
    top = torch.where(pos < n_present.view(-1, 1), ids[:, :k], -1)  # absent regions match nothing
    refk = torch.tensor(ref_m[:k], device=dev)
    s = rank_biased_overlap_batch(top, refk, p, ext)
    present = torch.zeros(B, n_lab, dtype=torch.bool, device=dev)
    full = torch.arange(ids.shape[1], device=dev).view(1, -1) < n_present.view(-1, 1)
    present.scatter_(1, ids, full)
    in_brain = present[:, refk.clamp(max=n_lab - 1)] & (refk < n_lab)  # (B, k)
    m_d = in_brain.to(_F64).cumsum(1)
    e_a = m_d / n_present.to(_F64).clamp_min(1).view(-1, 1)
    ch = (e_a * rbo_weights(k, p).to(dev)).sum(1)
    if ext and p < 1:
        ch = ch + e_a[:, -1] * p ** k
    return s, ch
