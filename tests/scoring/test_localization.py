"""Localization metrics: analytic answers, hand-computed 4³ cases, scikit-learn on the same input,
chance levels by simulation, brain-mask restriction, smoothing, errors and properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from neuroxai.errors import ConfigError, MaskError, ScoringError
from neuroxai.scoring import METRICS, score
from neuroxai.scoring.localization import average_ranks, bounding_box
from neuroxai.scoring.preprocess import FWHM_PER_SIGMA, gaussian_smooth

CORE = ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc", "average_precision", "pointing_game"]


def _cube_mask(B=2, n=12, lo=3, hi=7):
    m = torch.zeros(B, 1, n, n, n, dtype=torch.bool)
    m[:, :, lo:hi, lo:hi, lo:hi] = True
    return m


def test_registry_holds_the_documented_names():
    assert METRICS.names() == sorted(["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc",
                                      "average_precision", "pointing_game", "energy_pointing_game",
                                      "top_k_intersection", "region_rank", "false_positive", "region_match",
                                      "rank_biased_overlap"])


def test_oracle_map_scores_one_and_norm_one():
    m = _cube_mask()
    brain = torch.zeros_like(m[:1])
    brain[..., 1:11, 1:11, 1:11] = True
    s = score(m.float(), m, CORE + ["energy_pointing_game"], brain_mask=brain)
    for name in CORE + ["energy_pointing_game"]:
        assert s[name].dtype == torch.float64 and s[name].shape == (2,)
        assert torch.all(s[name] == 1.0), name
        assert torch.allclose(s[f"{name}_norm"], torch.ones(2, dtype=torch.float64)), name
    share = 64 / 1000
    assert s["relevance_mass_accuracy_chance"].tolist() == pytest.approx([share, share])
    assert s["auroc_chance"].tolist() == [0.5, 0.5]
    assert s["average_precision_chance"].tolist() == pytest.approx([share, share])


def test_negated_oracle():
    m = _cube_mask(B=1)
    s = score(-m.float(), m, CORE, polarity="raw")
    assert s["auroc"].item() == 0.0  # every mask voxel below every other voxel
    assert s["relevance_rank_accuracy"].item() == 0.0
    assert s["relevance_mass_accuracy"].item() == 0.0  # no positive relevance at all
    assert s["pointing_game"].item() == 0.0  # the maximum (0) is tied outside the mask only…
    # …partly: tied maxima are all voxels outside the mask, none inside
    assert s["auroc_norm"].item() == pytest.approx(-1.0)
    # with positive polarity the map is flat 0: the pointing game averages the tie = chance
    s = score(-m.float(), m, ["pointing_game"])
    assert s["pointing_game"].item() == pytest.approx(s["pointing_game_chance"].item())
    assert s["pointing_game_chance"].item() == pytest.approx(64 / 12 ** 3)


def test_hand_computed_4x4x4():
    # mask: 4 voxels in the first row; map: values on 6 voxels, rest 0
    m = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    m[0, 0, 0, 0, :] = True  # flat indices 0..3
    a = torch.zeros(1, 1, 4, 4, 4)
    a.view(-1)[[0, 1, 2, 4, 5, 63]] = torch.tensor([3.0, 1.0, -2.0, 2.0, 4.0, 1.0])
    s = score(a, m, {n: {} for n in CORE} | {"top_k_intersection": {"k": 2 / 64}}, polarity="raw")
    # mass: positive inside 3+1 = 4 ; total positive 3+1+2+4+1 = 11
    assert s["relevance_mass_accuracy"].item() == pytest.approx(4 / 11)
    # rank: K = 4; descending (ties → lower index): 5(4), 0(3), 4(2), 1(1) [1 ties with 63, 1 first]
    assert s["relevance_rank_accuracy"].item() == pytest.approx(2 / 4)
    # top 2 of 64: voxels 5, 0 → 1 of 2 in mask
    assert s["top_k_intersection"].item() == pytest.approx(1 / 2)
    # pointing: max 4 at voxel 5, outside
    assert s["pointing_game"].item() == 0.0
    # AUROC by hand: positives {3,1,-2,0}, negatives {2,4,1, 0×57}; P(pos > neg) with ties ½
    pos = [3, 1, -2, 0]
    neg = [2, 4, 1] + [0] * 57
    u = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    assert s["auroc"].item() == pytest.approx(u / (4 * 60))
    # AP by hand (sklearn definition): thresholds 4,3,2,1,0,-2 → (tp, n) = (0,1),(1,2),(1,3),(2,5),(3,63),(4,64)
    ap = (1 / 4) * (1 / 2) + (1 / 4) * (2 / 5) + (1 / 4) * (3 / 63) + (1 / 4) * (4 / 64)
    assert s["average_precision"].item() == pytest.approx(ap)
    assert s["relevance_mass_accuracy_chance"].item() == pytest.approx(4 / 64)


def test_rank_accuracy_ties_break_by_lower_flat_index():
    m = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    m.view(-1)[[0, 1, 62, 63]] = True
    s = score(torch.ones(1, 1, 4, 4, 4), m, ["relevance_rank_accuracy"])
    assert s["relevance_rank_accuracy"].item() == 0.5  # top-4 of a flat map = flat indices 0..3


def test_pointing_game_tolerance_and_tie_rules():
    m = torch.zeros(1, 1, 8, 8, 8, dtype=torch.bool)
    m[0, 0, 4, 4, 4] = True
    a = torch.zeros(1, 1, 8, 8, 8)
    a[0, 0, 4, 4, 6] = 1.0  # 2 voxels away along W
    spacing = (1.0, 1.0, 1.5)  # → 3 mm away
    miss = score(a, m, {"pointing_game": {"tolerance_mm": 2.9}}, spacing=spacing)
    hit = score(a, m, {"pointing_game": {"tolerance_mm": 3.0}}, spacing=spacing)
    assert miss["pointing_game"].item() == 0.0 and hit["pointing_game"].item() == 1.0
    # chance = dilated ellipsoid's share: radius 3 mm → (1+2·3 along D/H, 1+2·2 along W) ellipsoid voxels
    zz, yy, xx = np.meshgrid(np.arange(-3, 4), np.arange(-3, 4), np.arange(-2, 3) * 1.5, indexing="ij")
    n_ell = int(((zz ** 2 + yy ** 2 + xx ** 2) <= 9 + 1e-6).sum())
    assert hit["pointing_game_chance"].item() == pytest.approx(n_ell / 512)
    # two tied maxima, one inside: average 0.5, any 1, first = the lower flat index (inside here)
    b = torch.zeros(1, 1, 8, 8, 8)
    b[0, 0, 4, 4, 4] = b[0, 0, 7, 7, 7] = 1.0
    for ties, want in [("average", 0.5), ("any", 1.0), ("first", 1.0)]:
        assert score(b, m, {"pointing_game": {"ties": ties}})["pointing_game"].item() == want


def test_energy_pointing_game_uses_the_bounding_box():
    m = torch.zeros(1, 1, 6, 6, 6, dtype=torch.bool)
    m[0, 0, 1, 1, 1] = m[0, 0, 3, 2, 4] = True  # box 1..3 × 1..2 × 1..4 = 3·2·4 = 24 voxels
    assert int(bounding_box(m).sum()) == 24
    a = torch.zeros(1, 1, 6, 6, 6)
    a[0, 0, 2, 2, 2] = 3.0  # inside the box, outside the mask
    a[0, 0, 5, 5, 5] = 1.0
    s = score(a, m, ["energy_pointing_game", "relevance_mass_accuracy"])
    assert s["energy_pointing_game"].item() == pytest.approx(0.75)
    assert s["energy_pointing_game_chance"].item() == pytest.approx(24 / 216)
    assert s["relevance_mass_accuracy"].item() == 0.0
    s = score(a, m, {"energy_pointing_game": {"region": "mask"}})
    assert s["energy_pointing_game"].item() == 0.0


def test_auroc_ap_match_sklearn_with_ties_and_brain_mask():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 5, (6, 1, 10, 10, 10), generator=g).float()  # heavy ties
    m = torch.rand(6, 1, 10, 10, 10, generator=g) < 0.2
    brain = torch.rand(1, 1, 10, 10, 10, generator=g) < 0.7
    s = score(a, m, ["auroc", "average_precision"], brain_mask=brain, polarity="raw")
    b = brain[0].flatten().numpy()
    for i in range(6):
        y, p = m[i].flatten().numpy()[b], a[i].flatten().numpy()[b]
        assert s["auroc"][i].item() == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert s["average_precision"][i].item() == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert s["average_precision_chance"][i].item() == pytest.approx(y.mean())


def test_brain_mask_restriction_by_hand():
    m = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    m[0, 0, 0, 0, :2] = True
    m[0, 0, 3, 3, 3] = True  # outside the brain: not part of the ground truth either
    brain = torch.zeros_like(m)
    brain[0, 0, 0] = True  # 16 voxels
    a = torch.zeros(1, 1, 4, 4, 4)
    a[0, 0, 0, 0, 0] = 1.0
    a[0, 0, 0, 1, 0] = 2.0
    a[0, 0, 3, 3, 3] = 100.0  # outside the brain: ignored
    names = ["relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game", "auroc"]
    inb = score(a, m, names, brain_mask=brain)
    assert inb["relevance_mass_accuracy"].item() == pytest.approx(1 / 3)
    assert inb["relevance_mass_accuracy_chance"].item() == pytest.approx(2 / 16)
    assert inb["relevance_rank_accuracy"].item() == pytest.approx(1 / 2)  # top-2: (0,1,0) then (0,0,0)
    assert inb["pointing_game"].item() == 0.0  # max 2.0 at (0,1,0), outside the mask
    # AUROC over 16 voxels: positives {1, 0}, negatives {2, 0×13}
    assert inb["auroc"].item() == pytest.approx(((0 + 1 * 13) + (0 + 0.5 * 13)) / (2 * 14))
    whole = score(a, m, names)
    assert whole["relevance_mass_accuracy"].item() == pytest.approx(101 / 103)
    assert whole["pointing_game"].item() == 1.0


def test_random_maps_score_chance_on_average():
    g = torch.Generator().manual_seed(0)
    B, n = 64, 16
    m = torch.zeros(B, 1, n, n, n, dtype=torch.bool)
    m[..., 4:12, 4:12, :] = True  # share 1/4, 1024 positives
    a = torch.rand(B, 1, n, n, n, generator=g)
    s = score(a, m, ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc", "average_precision",
                     "top_k_intersection"])
    assert s["relevance_mass_accuracy"].mean().item() == pytest.approx(0.25, abs=0.003)
    assert s["relevance_rank_accuracy"].mean().item() == pytest.approx(0.25, abs=0.005)
    assert s["top_k_intersection"].mean().item() == pytest.approx(0.25, abs=0.01)
    assert s["auroc"].mean().item() == pytest.approx(0.5, abs=0.005)
    # AP of a random ranking exceeds prevalence by O(log n⁺ / n⁺) ≈ 0.005 here
    assert 0.25 <= s["average_precision"].mean().item() <= 0.262
    for k in ["relevance_mass_accuracy", "auroc", "relevance_rank_accuracy"]:
        assert abs(s[f"{k}_norm"].mean().item()) < 0.01
    # pointing game: Bernoulli(chance) per subject; many tiny subjects for a tight mean
    m2 = torch.zeros(2048, 1, 4, 4, 4, dtype=torch.bool)
    m2[..., :2, :, :] = True  # share 1/2
    p = score(torch.rand(2048, 1, 4, 4, 4, generator=g), m2, ["pointing_game"])
    assert p["pointing_game"].mean().item() == pytest.approx(0.5, abs=0.04)  # 3.6 σ


def test_average_ranks_match_scipy():
    from scipy.stats import rankdata

    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 4, (3, 50), generator=g).double()
    v = torch.rand(3, 50, generator=g) < 0.6
    r = average_ranks(x, v)
    for i in range(3):
        vi = v[i].numpy()
        assert np.allclose(r[i].numpy()[vi], rankdata(x[i].numpy()[vi]))
        assert np.all(r[i].numpy()[~vi] == 0)


def test_smoothing_delta_gives_analytic_gaussian_per_axis():
    spacing = (1.0, 2.0, 1.5)
    fwhm = 6.0
    x = torch.zeros(1, 1, 23, 23, 23, dtype=torch.float64)
    x[0, 0, 11, 11, 11] = 1.0
    y = gaussian_smooth(x, fwhm, spacing)[0, 0]
    assert y.sum().item() == pytest.approx(1.0, abs=1e-12)  # support fits: no mass lost
    lines = [y[:, 11, 11], y[11, :, 11], y[11, 11, :]]
    for line, sp in zip(lines, spacing):
        sigma = fwhm / (2 * math.sqrt(2 * math.log(2))) / sp
        assert FWHM_PER_SIGMA == pytest.approx(2.354820045, abs=1e-8)
        for t in (1, 2):  # ratios of samples are exactly Gaussian, whatever the normalization
            assert (line[11 + t] / line[11]).item() == pytest.approx(math.exp(-t * t / (2 * sigma ** 2)), rel=1e-9)
        # the second moment is σ² up to truncation at ±⌈3σ⌉ (≤ 3 % low)
        t = torch.arange(23, dtype=torch.float64) - 11
        var = (line / line.sum() * t ** 2).sum().item()
        assert 0.95 * sigma ** 2 < var <= sigma ** 2 * 1.01
    # smoothing through score(): a delta off the mask gains mass inside after smoothing
    m = torch.zeros(1, 1, 23, 23, 23, dtype=torch.bool)
    m[0, 0, 11, 11, 12] = True
    s0 = score(x.float(), m, ["relevance_mass_accuracy"], spacing=spacing)
    s1 = score(x.float(), m, ["relevance_mass_accuracy"], spacing=spacing, smooth_fwhm_mm=fwhm)
    assert s0["relevance_mass_accuracy"].item() == 0.0
    assert s1["relevance_mass_accuracy"].item() == pytest.approx(y[11, 11, 12].item(), rel=1e-5)


def test_polarity_options():
    m = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    m.view(-1)[0] = True
    a = torch.zeros(1, 1, 4, 4, 4)
    a.view(-1)[0] = -3.0
    a.view(-1)[1] = 1.0
    f = lambda pol: score(a, m, ["relevance_mass_accuracy"], polarity=pol)["relevance_mass_accuracy"].item()  # noqa
    assert f("positive") == 0.0
    assert f("negative") == 1.0
    assert f("absolute") == pytest.approx(3 / 4)
    with pytest.raises(ConfigError, match="polarity"):
        f("signed")


def test_errors_name_what_is_wrong():
    m = _cube_mask(B=3, n=6, lo=1, hi=3)
    a = torch.rand(3, 1, 6, 6, 6)
    with pytest.raises(ConfigError, match="auroc"):  # lists the registered names
        score(a, m, ["aurok"])
    with pytest.raises(ConfigError, match="tolerance"):
        score(a, m, {"pointing_game": {"tolerance": 3.0}})
    m2 = m.clone()
    m2[1] = False
    with pytest.raises(MaskError, match=r"batch index \[1\]") as e:
        score(a, m2, ["auroc"])
    assert e.value.fix
    brain = torch.zeros(1, 1, 6, 6, 6, dtype=torch.bool)
    brain[..., 4:, 4:, 4:] = True  # mask and brain do not overlap
    with pytest.raises(MaskError):
        score(a, m, ["auroc"], brain_mask=brain)
    bad = a.clone()
    bad[2, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ScoringError, match=r"\[2\]"):
        score(bad, m, ["auroc"])
    with pytest.raises(ScoringError, match="one channel"):
        score(a[:, 0], m[:, 0], ["auroc"])
    with pytest.raises(ScoringError, match="shapes differ"):
        score(a, m[:2], ["auroc"])
    with pytest.raises(ScoringError, match="brain mask"):
        score(a, m, ["auroc"], brain_mask=brain[..., :5])


def test_region_rank_on_a_hand_built_atlas():
    # 4 regions along D (labels 1..4, 2 slices each of 8×4×4 volume); 0 = background slab
    atlas = torch.zeros(1, 1, 10, 4, 4, dtype=torch.long)
    for lab in range(1, 5):
        atlas[..., 2 * lab - 2:2 * lab, :, :] = lab
    a = torch.zeros(2, 1, 10, 4, 4)
    means = {1: 0.5, 2: 3.0, 3: 1.0, 4: 0.5}
    for lab, v in means.items():
        a[:, :, 2 * lab - 2:2 * lab] = v
    a[1, :, 2:4] = 0.2  # subject 1: region 2 drops to last
    a[:, :, 8:] = 50.0  # background is never a region
    m = atlas.bool().expand(2, -1, -1, -1, -1)
    p = {"atlas": atlas, "true_region": [2]}
    s = score(a, m, {"region_rank": p}, polarity="raw")
    assert s["region_rank"].tolist() == [1.0, 4.0]
    assert s["region_rank_chance"].tolist() == [2.5, 2.5]  # (R + 1) / 2, R = 4
    assert s["region_rank_norm"].tolist() == pytest.approx([1.0, -1.0])
    assert s["region_rank_auroc"].tolist() == pytest.approx([1.0, 0.0])
    # region 1 ties with region 4: mid-rank 1 + #{2, 3 above} + ½ = 3.5 for subject 0
    s = score(a, m, {"region_rank": {"atlas": atlas, "true_region": [1]}}, polarity="raw")
    assert s["region_rank"][0].item() == 3.5
    assert s["region_rank_auroc"][0].item() == pytest.approx(0.5 / 3)
    # union of {1, 3}: voxel mean (0.5·32 + 1·32)/64 = 0.75 vs {2: 3, 4: 0.5} → rank 2 of 3
    s = score(a, m, {"region_rank": {"atlas": atlas, "true_region": [1, 3]}}, polarity="raw")
    assert s["region_rank"][0].item() == 2.0 and s["region_rank_chance"][0].item() == 2.0
    # best of {1, 3}: region 3 (mean 1) vs others {2, 4} → rank 2; chance 1 + 2 / 3
    s = score(a, m, {"region_rank": {"atlas": atlas, "true_region": [1, 3], "combine": "best"}}, polarity="raw")
    assert s["region_rank"][0].item() == 2.0
    assert s["region_rank_chance"][0].item() == pytest.approx(1 + 2 / 3)
    # a brain mask hiding region 2 makes the true region absent → MaskError
    brain = (atlas != 2)
    with pytest.raises(MaskError, match="true region"):
        score(a, m & brain, {"region_rank": p}, brain_mask=brain)
    with pytest.raises(ConfigError, match="atlas"):
        score(a, m, ["region_rank"])


def test_region_rank_chance_by_simulation():
    g = torch.Generator().manual_seed(5)
    atlas = torch.arange(1, 9).repeat_interleave(8 * 16).view(1, 1, 8, 8, 16)  # 8 regions of 128 voxels
    a = torch.rand(256, 1, 8, 8, 16, generator=g)
    m = (atlas == 3).expand(256, -1, -1, -1, -1)
    s = score(a, m, {"region_rank": {"atlas": atlas, "true_region": [3]}})
    assert s["region_rank"].mean().item() == pytest.approx(4.5, abs=0.45)  # sd of mean ≈ 0.14
    assert s["region_rank_auroc"].mean().item() == pytest.approx(0.5, abs=0.065)


# ----------------------------------------------------------------------------------------------
# properties (hypothesis): invariance to positive scaling, monotone as relevance moves inside
_maps = st.integers(0, 2 ** 31 - 1)
PROP_METRICS = ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc", "average_precision",
                "pointing_game", "top_k_intersection", "energy_pointing_game"]


@settings(max_examples=25, deadline=None)
@given(seed=_maps, c=st.floats(0.01, 1000.0))
def test_scores_invariant_to_positive_scaling(seed, c):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(2, 1, 6, 6, 6, generator=g)
    m = torch.rand(2, 1, 6, 6, 6, generator=g) < 0.3
    m[:, 0, 0, 0, 0] = True
    s1, s2 = score(a, m, PROP_METRICS), score(a * c, m, PROP_METRICS)
    for k in PROP_METRICS:
        assert torch.allclose(s1[k], s2[k], atol=1e-9), k


@settings(max_examples=25, deadline=None)
@given(seed=_maps, frac=st.floats(0.05, 1.0))
def test_scores_monotone_when_relevance_moves_into_the_mask(seed, frac):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(1, 1, 6, 6, 6, generator=g)
    m = torch.zeros(1, 1, 6, 6, 6, dtype=torch.bool)
    m[..., :3, :, :] = True
    out_idx = (~m).flatten().nonzero().flatten()
    j = out_idx[int(torch.randint(0, len(out_idx), (1,), generator=g))]
    i = m.flatten().nonzero().flatten()[0]
    b = a.clone().view(-1)
    moved = frac * b[j].item()
    b[j] -= moved  # relevance leaves an outside voxel …
    b[i] += moved  # … and lands on a mask voxel
    b = b.view_as(a)
    names = ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc", "average_precision", "pointing_game"]
    s1, s2 = score(a, m, names), score(b, m, names)
    for k in names:
        assert s2[k].item() >= s1[k].item() - 1e-12, k
    assert s2["relevance_mass_accuracy"].item() > s1["relevance_mass_accuracy"].item()


def test_per_subject_brain_masks_match_sklearn_and_a_stable_numpy_ranking():
    """Brain masks that differ per subject (other voxel counts) take the row-by-row compaction
    path of the shared ranking; ties are heavy (integer maps) and every rank metric must still
    equal its reference computed on that subject's brain voxels alone."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    g = torch.Generator().manual_seed(11)
    a = torch.randint(0, 5, (3, 1, 9, 8, 7), generator=g).float()
    m = torch.rand(3, 1, 9, 8, 7, generator=g) < 0.2
    brain = torch.rand(3, 1, 9, 8, 7, generator=g) < torch.tensor([0.5, 0.8, 0.95]).view(3, 1, 1, 1, 1)
    s = score(a, m, {"auroc": {}, "average_precision": {}, "relevance_rank_accuracy": {},
                     "top_k_intersection": {"k": 0.1}}, brain_mask=brain, polarity="raw")
    for b in range(3):
        v = brain[b].flatten().numpy()
        x, y = a[b].flatten().numpy()[v], m[b].flatten().numpy()[v]
        assert s["auroc"][b].item() == pytest.approx(roc_auc_score(y, x), abs=1e-12)
        assert s["average_precision"][b].item() == pytest.approx(average_precision_score(y, x), abs=1e-12)
        order = np.argsort(-x, kind="stable")  # ties: lower flat index first
        k = int(y.sum())
        assert s["relevance_rank_accuracy"][b].item() == pytest.approx(y[order[:k]].mean(), abs=1e-12)
        n = max(1, int(round(0.1 * len(x))))
        assert s["top_k_intersection"][b].item() == pytest.approx(y[order[:n]].sum() / n, abs=1e-12)
        assert s["auroc_chance"][b].item() == 0.5
        assert s["average_precision_chance"][b].item() == pytest.approx(y.mean(), abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_integer_sort_keys_order_descending_and_keep_exact_ties(dtype):
    from neuroxai.scoring.localization import _sort_keys

    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(500, generator=g, dtype=dtype) * 10 ** torch.randint(-30, 30, (500,), generator=g),
                   torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1.5, 1.5], dtype=dtype)])
    k = _sort_keys(x)
    order = torch.sort(k, stable=True).indices
    assert (x[order][:-1] >= x[order][1:]).all()  # descending values
    assert torch.equal(k[:, None] == k[None, :], x[:, None] == x[None, :])  # equal keys ⇔ equal values (±0 too)
