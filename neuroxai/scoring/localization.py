"""Localization metrics: how much of a map lies on the known signal, batched on the device.

``score()`` is the entry point. Each metric is a pure function registered in ``METRICS``::

    fn(attr, mask, valid, *, spacing, **params) -> (score, chance)            # or
    fn(attr, mask, valid, *, spacing, **params) -> (score, chance, {key: (score, chance)})

with ``attr: (B,1,D,H,W)`` already preprocessed (polarity, smoothing), ``mask`` the ground truth and
``valid`` the brain mask (both bool ``(B,1,D,H,W)``); voxels outside ``valid`` take no part in any
metric (they are excluded, not zeroed). Every metric returns its *chance level*: the expected score
of a map that ignores the mask (i.i.d. values), from which ``score()`` derives the chance-normalized
form ``(score − chance) / (best − chance)`` (1 = perfect, 0 = chance, < 0 = worse than chance;
``best`` = 1 but for ``false_positive``, whose perfect score is 0).

Ranks and ties: one ``score()`` call sorts each volume's valid voxels once (a stable sort of
integer keys of the values, after compacting away the voxels outside the brain) and every
rank-based metric — rank accuracy, top-K, AUROC, AP — reads that one order (``Ranking``). AUROC and
AP give tied values one shared rank/threshold (exact, as scikit-learn). Top-K metrics break ties
deterministically: among equal values the voxel with the lower flat C-order index
``(d·H + h)·W + w`` ranks first. The pointing game averages over tied maxima (see ``pointing_game``).

Relation to Quantus 0.6 (``quantus.RelevanceMassAccuracy`` …), which scores the same numbers on
maps reshaped to ``(B,1,D·H,W)`` where the definitions coincide — the differences are listed in
each docstring and checked in ``tests/scoring/test_quantus_reference.py``.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from ..data.transforms import dilate_mm
from ..errors import ConfigError, MaskError, ScoringError
from ..registry import Registry
from .groundtruth import add_contralateral, binary_dilation
from .preprocess import apply_polarity, apply_sign, gaussian_smooth, percentile_cutoff
from .presets import resolve_preset

METRICS: Registry = Registry("metric", inputs=("attr", "mask", "valid", "spacing"))


@dataclass(frozen=True)
class MetricInfo:
    """What the rest of neuroxai needs to know about a metric, given once where it is registered.

    ``higher_is_better``: the direction (``region_rank``: 1 = best). ``help``: one sentence for the
    report. ``chance``: its chance level in words. ``needs``: inputs beyond map, mask and brain
    (``"atlas"``: an integer label map plus the true region(s); ``"reference"``: a reference
    ranking, given by the protocol or the task); a metric whose needs a task cannot meet is skipped
    for that task. ``scoring_defaults``: parameter → ``scoring:`` key of the
    protocol it defaults to (e.g. the pointing game's tolerance). ``own_dilation``: the metric
    dilates the ground truth itself (``false_positive``'s ``gt_dilation``), so :func:`score` hands
    it the mask before the scoring's dilation (the contralateral region already added).
    ``best``: the score of a perfect map (1 for most; 0 for ``false_positive``), the top of the
    ``NAME_norm`` scale.
    """

    name: str
    higher_is_better: bool = True
    help: str = ""
    chance: str = ""
    needs: tuple[str, ...] = ()
    scoring_defaults: tuple[tuple[str, str], ...] = ()
    own_dilation: bool = False
    best: float = 1.0


METRIC_INFO: dict[str, MetricInfo] = {}


def metric(name: str, *, higher_is_better: bool = True, help: str = "", chance: str = "",
           needs: tuple[str, ...] = (), scoring_defaults: Mapping[str, str] | None = None,
           own_dilation: bool = False, best: float = 1.0):
    """Register a metric in ``METRICS`` with its facts (:class:`MetricInfo`): the one place to add one."""
    def deco(fn):
        METRICS.register(name)(fn)
        METRIC_INFO[name] = MetricInfo(name, higher_is_better, help, chance, tuple(needs),
                                       tuple((scoring_defaults or {}).items()), own_dilation, float(best))
        return fn
    return deco


def metric_params(specs: Mapping[str, Mapping], scoring=None, *, atlas: torch.Tensor | None = None,
                  true_region=None, lateral_pairs: Mapping[int, int] | None = None) -> dict[str, dict]:
    """Each metric's parameters for :func:`score`, from its registered facts: its own ``specs``
    (``{name: params}``), the defaults it takes from ``scoring`` (read as attributes, e.g. a
    protocol's ``scoring:``), and what it ``needs`` (``atlas`` integer labels on the map grid and
    ``true_region``; ``lateral_pairs`` to a metric that takes them). A metric whose needs are not
    given is left out."""
    out = {}
    for name, params in specs.items():
        info = METRIC_INFO.get(name)
        p = dict(params)
        for param, key in (info.scoring_defaults if info and scoring is not None else ()):
            p.setdefault(param, getattr(scoring, key))
        if info and "atlas" in info.needs:
            if atlas is None or not true_region:
                continue
            p.update(atlas=atlas.long(), true_region=list(true_region))
            if "reference" in info.needs and not p.get("reference"):
                continue
            if lateral_pairs is not None and "lateral_pairs" in (METRICS.params(name) or ()):
                p.setdefault("lateral_pairs", dict(lateral_pairs))
        out[name] = p
    return out

_F64 = torch.float64
# The rankings computed during one score() call, keyed by the identity of (map, mask, valid).
_RANKINGS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("neuroxai_rankings", default=None)


# ----------------------------------------------------------------------------------------------
# score(): validation, preprocessing, dispatch
def score(attr: torch.Tensor, mask: torch.Tensor, metrics: Sequence[str] | Mapping[str, dict],
          brain_mask: torch.Tensor | None = None, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
          polarity: str = "positive", smooth_fwhm_mm: float = 0.0, preset: str | None = None,
          sign: str | None = None, mask_maps: bool | None = None, smooth_fwhm_vox: float | None = None,
          smooth_kernel: str | None = None, percentile: float | None = None, percentile_over: str | None = None,
          post_smooth_fwhm_vox: float | None = None, gt_dilation: int | None = None,
          gt_dilation_mm: float | None = None, contralateral: bool | None = None,
          atlas: torch.Tensor | None = None, true_region: Sequence[int] | None = None,
          lateral_pairs: Mapping[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Score a batch of maps against ground-truth masks, on the maps' device.

    The map goes through sign/polarity → masking to the brain → smoothing → percentile cutoff →
    (re-smoothing); the ground truth through contralateral counterpart → dilation. Each step is
    off unless set, or set by ``preset`` (``"siegel2025"``: ``presets.SIEGEL2025``); a step given
    here overrides the preset's.

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
        preset: a named set of the steps below (``presets.PRESETS``).
        sign: ``abs`` | ``square``: replaces ``polarity`` when set (``preprocess.apply_sign``).
        mask_maps: zero the map outside ``brain_mask`` before smoothing (the study's maps are
            brain-masked vectors, so no relevance from outside the brain is smoothed in).
        smooth_fwhm_vox: Gaussian smoothing FWHM in voxels of the map grid (the mm form is
            ``smooth_fwhm_mm``; given alone it replaces a preset's voxel form).
        smooth_kernel: ``zero_pad`` (default) | ``nilearn`` (``preprocess.gaussian_smooth``).
        percentile: keep voxels at or above this percentile of each map, zero the rest
            (``preprocess.percentile_cutoff``); ``percentile_over``: ``volume`` (default, the
            whole grid as the study takes it) | ``brain``.
        post_smooth_fwhm_vox: smoothing (FWHM, voxels) after the cutoff: what the study's
            ``NiftiMasker(smoothing_fwhm=2)`` of ``0-prep/fit_masker.py`` would do when it masks the
            cut map (off in the preset: the masker the paper used is not published).
        gt_dilation: iterations of a 6-connected binary dilation of the ground truth
            (``groundtruth.binary_dilation``); ``gt_dilation_mm``: a dilation by a distance in mm
            (``data.transforms.dilate_mm``; given alone it replaces a preset's iterations).
        contralateral: add the true regions' opposite-hemisphere counterparts to the ground truth
            (needs ``atlas``, ``true_region`` and ``lateral_pairs``; a task without atlas labels,
            e.g. lesions, is left as it is — the study adds none there either).

    Returns:
        For each metric ``NAME`` (and extra keys such as ``region_rank_auroc``): ``NAME``,
        ``NAME_chance`` and ``NAME_norm = (NAME − chance) / (best − chance)`` (``MetricInfo.best``,
        1 but for ``false_positive``), each float64 ``(B,)``
        on the device. For ``region_rank`` (1 = best) the same formula gives 1 at rank 1 and 0 at
        the chance rank.

    Raises:
        ScoringError: bad shapes/dtypes/devices, NaN/Inf in ``attr``.
        MaskError: a subject's mask is empty inside the brain mask.
        ConfigError: unknown metric, polarity or metric parameter.
    """
    _check_inputs(attr, mask, brain_mask)
    mask = mask.bool()
    valid = _valid_voxels(mask, brain_mask, attr.device)
    items = list(metrics.items()) if isinstance(metrics, Mapping) else [(m, {}) for m in metrics]
    fns = [(name, METRICS[name], dict(params or {})) for name, params in items]  # unknown → ConfigError
    for name, _, params in fns:
        METRICS.check(name, params, path=f"metrics.{name}.params")
    st = _steps(preset, smooth_fwhm_mm, gt_dilation_mm, sign=sign, mask_maps=mask_maps, smooth_fwhm_vox=smooth_fwhm_vox,
                smooth_kernel=smooth_kernel, percentile=percentile, percentile_over=percentile_over,
                post_smooth_fwhm_vox=post_smooth_fwhm_vox, gt_dilation=gt_dilation, contralateral=contralateral)
    a = _processed_map(attr, st, polarity, valid if brain_mask is not None else None, smooth_fwhm_mm, spacing)
    base, gt = _ground_truth(mask, st, atlas, true_region, lateral_pairs, spacing)
    token = _RANKINGS.set({})  # rank-based metrics share one sort per volume
    try:
        results = [(name, fn(a, base if getattr(METRIC_INFO.get(name), "own_dilation", False) else gt, valid,
                             spacing=tuple(float(s) for s in spacing), **params))
                   for name, fn, params in fns]
    finally:
        _RANKINGS.reset(token)
    return _with_chance_and_norm(results)


def _valid_voxels(mask: torch.Tensor, brain_mask: torch.Tensor | None, device, *,
                  left_out_from: str = "scoring") -> torch.Tensor:
    """The voxels scored (the brain, or all), refusing a subject without ground truth inside them
    (the fix names what to leave it out of). A brain mask shared by the batch stays an expanded
    view (stride 0): ranking then compacts every volume with one index."""
    valid = (torch.ones((1, 1, *mask.shape[2:]), dtype=torch.bool, device=mask.device) if brain_mask is None
             else brain_mask.to(device).bool()).expand_as(mask)
    empty = (_count(mask & valid) == 0).nonzero().flatten().tolist()
    if empty:
        raise MaskError("empty ground-truth mask (inside the brain mask)", expected="≥ 1 mask voxel per subject",
                        found=f"0 voxels for batch index {empty}",
                        fix=f"exclude subjects without ground truth (e.g. no lesion) from {left_out_from}, "
                            "or check that the mask and brain mask overlap")
    return valid


def _ground_truth(mask, st: dict, atlas, true_region, lateral_pairs, spacing) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, gt)``: the ground truth with its contralateral counterpart (as ``st`` says), and
    that dilated (what most metrics score against; a metric that dilates itself gets ``base``)."""
    base = mask
    if st.get("contralateral") and atlas is not None and true_region:
        base = add_contralateral(mask, atlas, true_region, lateral_pairs or {})
    gt = binary_dilation(base, st["gt_dilation"]) if st.get("gt_dilation") else base
    if st.get("gt_dilation_mm"):
        gt = dilate_mm(gt, float(st["gt_dilation_mm"]), spacing)
    return base, gt


def _steps(preset: str | None, smooth_fwhm_mm: float, gt_dilation_mm: float | None, **steps) -> dict:
    """The scoring steps: the preset's, overridden by those given; a mm form given alone replaces
    the preset's voxel form."""
    given = {k: v for k, v in dict(steps, gt_dilation_mm=gt_dilation_mm).items() if v is not None}
    st = resolve_preset(preset, given)
    if smooth_fwhm_mm and "smooth_fwhm_vox" not in given:
        st["smooth_fwhm_vox"] = 0.0
    if gt_dilation_mm and "gt_dilation" not in given:
        st["gt_dilation"] = 0
    return st


def _processed_map(attr: torch.Tensor, st: dict, polarity: str, brain: torch.Tensor | None, smooth_fwhm_mm: float,
                   spacing) -> torch.Tensor:
    """The map through sign/polarity → masking to the brain → smoothing → percentile cutoff →
    re-smoothing, as ``st`` says (:func:`score`)."""
    a = apply_sign(attr, st["sign"]) if st.get("sign") else apply_polarity(attr, polarity)
    if st.get("mask_maps") and brain is not None:
        a = torch.where(brain, a, torch.zeros((), dtype=a.dtype, device=a.device))
    kernel = st.get("smooth_kernel", "zero_pad")
    if smooth_fwhm_mm:
        a = gaussian_smooth(a, smooth_fwhm_mm, spacing, kernel=kernel)
    if st.get("smooth_fwhm_vox"):
        a = gaussian_smooth(a, float(st["smooth_fwhm_vox"]), kernel=kernel)
    if st.get("percentile") is not None:
        over = st.get("percentile_over", "volume")
        if over not in ("volume", "brain"):
            raise ConfigError("percentile_over", path="scoring.percentile_over", expected=["volume", "brain"],
                              found=repr(over))
        all_voxels = brain if brain is not None else torch.ones_like(a, dtype=torch.bool)
        a = percentile_cutoff(a, float(st["percentile"]), all_voxels if over == "brain" else None)
    if st.get("post_smooth_fwhm_vox"):
        a = gaussian_smooth(a, float(st["post_smooth_fwhm_vox"]), kernel=kernel)
    return a


def _with_chance_and_norm(results: list) -> dict[str, torch.Tensor]:
    """``NAME``, ``NAME_chance`` and ``NAME_norm = (NAME − chance) / (best − chance)`` of each
    metric's result (and its extra keys), float64."""
    out: dict[str, torch.Tensor] = {}
    for name, res in results:
        extra = res[2] if len(res) == 3 else {}
        best = METRIC_INFO[name].best if name in METRIC_INFO else 1.0
        for key, (s, ch) in {name: (res[0], res[1]), **extra}.items():
            s, ch = s.to(_F64), ch.to(_F64)
            out[key] = s
            out[f"{key}_chance"] = ch
            den = best - ch
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


# ----------------------------------------------------------------------------------------------
# batched, tie-aware ranking (one sort per volume)
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


def _sort_keys(a: torch.Tensor) -> torch.Tensor:
    """Integer keys whose ascending order is the descending order of ``a`` (float32 → int32,
    float64 → int64), equal exactly where the values are equal: an integer sort is about 1.5× faster
    than a float sort on CPU. ``−a + 0.0`` turns −0.0 into +0.0 (equal floats, one bit pattern);
    flipping the magnitude bits of negative numbers makes the signed-integer order the float
    order (the usual radix-sort transform)."""
    if a.dtype not in (torch.float32, torch.float64):
        a = a.float()
    k = a.neg().add_(0.0)
    bits = k.view(torch.int32 if k.dtype == torch.float32 else torch.int64)
    width = 31 if k.dtype == torch.float32 else 63
    return bits ^ ((bits >> width) & ((1 << width) - 1))


class Ranking:
    """The valid voxels of each volume in one stable descending order of the map's values.

    Built from ``attr``, ``mask``, ``valid`` ``(B,1,D,H,W)``: the voxels outside ``valid`` are
    dropped first (a brain mask shared by the batch is one ``index_select``; per-subject brain
    masks are compacted row by row, padded), so the sort covers only the brain. The sort is an
    ascending stable sort of integer keys of ``−value`` (``_sort_keys``): descending values, ties in
    flat-index order, and ``keys`` sorted ascending for ``searchsorted``. Attributes: ``keys``
    ``(B, N)`` sorted; ``lab`` ``(B, N)`` bool — the mask flag at each sorted position (False on
    padding); ``n_valid``, ``n_pos`` ``(B,)``. ``tie_span(b)`` gives, for row b's mask voxels, their
    sorted positions and the first/last position of their run of tied values — AUROC and AP then
    cost O(n⁺ log n) per volume after the sort, however many ties there are."""

    def __init__(self, attr: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor):
        B = attr.shape[0]
        a, m = attr.reshape(B, -1), mask.reshape(B, -1)
        if valid.stride(0) == 0 or B == 1:  # one brain mask for the whole batch
            idx = valid[0].reshape(-1).nonzero().squeeze(1)
            if idx.numel() < a.shape[1]:
                a, m = a.index_select(1, idx), m.index_select(1, idx)
            self.n_valid = torch.full((B,), idx.numel(), device=a.device, dtype=torch.long)
        else:
            v = valid.reshape(B, -1)
            self.n_valid = torch.count_nonzero(v, dim=1)
            n = int(self.n_valid.max())
            # position of each valid voxel among its row's valid voxels; invalid ones go to column n
            pos = torch.where(v, v.cumsum(1) - 1, n)
            a = torch.full((B, n + 1), float("-inf"), dtype=a.dtype, device=a.device).scatter_(1, pos, a)[:, :n]
            m = torch.zeros((B, n + 1), dtype=torch.bool, device=a.device).scatter_(1, pos, m & v)[:, :n]
        self.keys, order = torch.sort(_sort_keys(a), dim=1, stable=True)  # padding (−inf) → last
        self.lab = torch.gather(m, 1, order)
        self.n_pos = torch.count_nonzero(self.lab, dim=1)
        self._spans: dict[int, tuple] = {}  # AUROC and AP in one call share them

    def tie_span(self, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row b's mask voxels: ``(p, first, last)`` — each one's sorted position and the first and
        last sorted position of its run of tied values, long ``(n⁺,)`` each, ``p`` ascending."""
        if b not in self._spans:
            n = int(self.n_valid[b])
            keys = self.keys[b, :n]
            p = self.lab[b, :n].nonzero().squeeze(1)
            k = keys[p]
            self._spans[b] = (p, torch.searchsorted(keys, k, right=False),
                              torch.searchsorted(keys, k, right=True) - 1)
        return self._spans[b]

    def top_k_hits(self, k: torch.Tensor) -> torch.Tensor:
        """Fraction of the ``k[b]`` first sorted voxels of row b in the mask, float64 ``(B,)``."""
        rank = torch.arange(self.lab.shape[1], device=self.lab.device).view(1, -1)
        hits = torch.count_nonzero(self.lab & (rank < k.view(-1, 1)), dim=1).to(_F64)
        return hits / k.clamp_min(1).to(_F64)

    def auroc(self) -> torch.Tensor:
        """Mann–Whitney U / (n⁺ n⁻) with average ranks for ties; NaN without positives or negatives.
        A voxel in a tie run at descending positions [f, l] has ascending average rank n − (f + l)/2."""
        out = []
        for b in range(self.lab.shape[0]):
            _, first, last = self.tie_span(b)
            n, npos = float(self.n_valid[b]), float(self.n_pos[b])
            u = (n - (first + last).to(_F64) / 2).sum() - npos * (npos + 1) / 2
            den = npos * (n - npos)
            out.append(u / den if den > 0 else u.new_tensor(float("nan")))
        return torch.stack(out)

    def average_precision(self) -> torch.Tensor:
        """Mean over mask voxels of the precision at the end of their tie run: TP(l) / (l + 1), with
        TP(l) the mask voxels at sorted positions ≤ l (= sklearn's Σ (Rₜ − Rₜ₋₁) Pₜ); NaN without
        positives."""
        out = []
        for b in range(self.lab.shape[0]):
            p, _, last = self.tie_span(b)
            npos = float(self.n_pos[b])
            tp = torch.searchsorted(p, last, right=True)
            ap = (tp.to(_F64) / (last + 1).to(_F64)).sum() / npos if npos > 0 else torch.tensor(
                float("nan"), dtype=_F64, device=p.device)
            out.append(ap)
        return torch.stack(out)


def ranking(attr: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> Ranking:
    """The ``Ranking`` of (attr, mask, valid); built once per ``score()`` call and shared."""
    cache = _RANKINGS.get()
    key = (id(attr), id(mask), id(valid))
    if cache is not None and key in cache:
        return cache[key]
    r = Ranking(attr, mask, valid)
    if cache is not None:
        cache[key] = r
    return r


_DIMS = (1, 2, 3, 4)


def _count(x: torch.Tensor) -> torch.Tensor:
    """Number of True voxels per subject of ``x: (B,1,D,H,W)`` bool, long ``(B,)``. Counts without
    casting to int64 first (``bool.sum`` does, a full-size copy), and once for a brain mask shared
    by the batch (an expanded view, stride 0)."""
    if x.stride(0) == 0 and x.shape[0] > 1:
        return torch.count_nonzero(x[:1], dim=_DIMS).expand(x.shape[0])
    return torch.count_nonzero(x, dim=_DIMS)


def _sum64(x: torch.Tensor) -> torch.Tensor:
    """Per-subject sum of ``x: (B,1,D,H,W)`` float as float64 ``(B,)``: float32 sums along W (a few
    hundred voxels), then float64 across rows — accurate without a float64 copy of the volume."""
    return x.sum(-1).to(_F64).sum((1, 2, 3))


def _share(m, v):
    """Fraction of valid voxels inside ``m`` (both ``(B,1,D,H,W)`` bool): the chance level of most
    metrics."""
    return _count(m & v).to(_F64) / _count(v).to(_F64)


# ----------------------------------------------------------------------------------------------
# the metrics
@metric("relevance_mass_accuracy",
        help=("share of the map's positive relevance that lies inside the ground-truth region "
              "(Arras et al. 2022)"),
        chance="the region's share of the brain voxels")
def relevance_mass_accuracy(attr, mask, valid, *, spacing=None):
    """Positive relevance inside the mask / total positive relevance, over valid voxels
    (Arras, Osman & Samek 2022, "CLEVR-XAI", Information Fusion 81:14–40). A map without any
    positive relevance scores 0. Chance: the mask's share of the valid voxels (the expected
    score of i.i.d. relevance).

    Quantus 0.6 divides by the plain sum Σa (negatives included); for non-negative maps (our
    default ``polarity="positive"``) the two coincide.
    """
    a = torch.where(valid, attr.clamp_min(0), 0)
    tot = _sum64(a)
    inside = _sum64(torch.where(mask, a, 0))
    s = torch.where(tot > 0, inside / torch.where(tot > 0, tot, 1), 0.0)
    return s, _share(mask, valid)


@metric("relevance_rank_accuracy",
        help=("share of the K most relevant voxels that lie inside the region, K = the region's "
              "size (Arras et al. 2022)"),
        chance="the region's share of the brain voxels")
def relevance_rank_accuracy(attr, mask, valid, *, spacing=None):
    """Fraction of the K highest-relevance valid voxels that lie in the mask, K = number of mask
    voxels inside the brain (Arras et al. 2022). Ties: stable descending sort (lower flat index
    first). Chance: K / valid voxels.

    Quantus 0.6 uses the same K but ``np.argsort(-a)`` (not stable), so tied values may be broken
    differently; without ties the two coincide.
    """
    r = ranking(attr, mask, valid)
    return r.top_k_hits(r.n_pos), r.n_pos.to(_F64) / r.n_valid.to(_F64)


@metric("top_k_intersection",
        help="share of the top k % most relevant voxels inside the region (Theiner et al. 2021)",
        chance="the region's share of the brain voxels")
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
    r = ranking(attr, mask, valid)
    n = (r.n_valid.to(_F64) * float(k)).round().long().clamp_min(1)
    return r.top_k_hits(n), r.n_pos.to(_F64) / r.n_valid.to(_F64)


@metric("auroc",
        help="how well voxel relevance separates region from non-region voxels (1 = perfectly)",
        chance="0.5")
def auroc(attr, mask, valid, *, spacing=None):
    """Voxel-level area under the ROC curve of the map as a detector of mask voxels, over valid
    voxels: exact, rank-based (Mann–Whitney U), average ranks for ties (Fawcett 2006, "An
    introduction to ROC analysis", Pattern Recognit. Lett. 27:861; = sklearn ``roc_auc_score`` and
    Quantus' ``AUC``). One sort per volume. Chance 0.5. A mask covering the whole brain has no
    negatives: NaN."""
    s = ranking(attr, mask, valid).auroc()
    return s, torch.full_like(s, 0.5)


@metric("average_precision",
        help="precision of voxel relevance for the region, averaged over recall levels",
        chance="the region's share of the brain voxels")
def average_precision(attr, mask, valid, *, spacing=None):
    """Voxel-level average precision of the map against the mask over valid voxels, tie-aware as
    sklearn ``average_precision_score`` (Zhu 2004; Everingham et al. 2010 without interpolation).
    One sort per volume. Chance: the mask's share of the valid voxels (the precision of a random
    ranking)."""
    r = ranking(attr, mask, valid)
    return r.average_precision(), r.n_pos.to(_F64) / r.n_valid.to(_F64)


@metric("pointing_game",
        help=("1 if the single most relevant voxel falls in the (tolerance-dilated) region, "
              "else 0 (Zhang et al. 2018)"),
        chance="the dilated region's share of the brain voxels",
        scoring_defaults={"tolerance_mm": "pointing_tolerance_mm"})
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
    x = torch.where(valid, attr, float("-inf"))
    if ties == "first":  # torch.argmax returns the first maximal index
        first = x.reshape(x.shape[0], -1).argmax(1, keepdim=True)
        hit = torch.gather((dil & valid).reshape(x.shape[0], -1), 1, first)[:, 0].to(_F64)
        return hit, _share(dil, valid)
    top = (x == x.amax(_DIMS, keepdim=True)) & valid
    n_in = _count(top & dil).to(_F64)
    hit = (n_in > 0).to(_F64) if ties == "any" else n_in / _count(top).to(_F64)
    return hit, _share(dil, valid)


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


@metric("energy_pointing_game",
        help="share of positive relevance inside the region's bounding box (Wang et al. 2020)",
        chance="the box's share of the brain voxels")
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
