"""Localization metrics against analytic answers, scikit-learn and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sst
from sklearn.metrics import average_precision_score, roc_auc_score

from neuroxai.errors import MaskError, ScoringError
from neuroxai.scoring import score
from neuroxai.scoring.preprocess import gaussian_smooth
from neuroxai.scoring.sanity import similarity
from neuroxai.scoring.stats import bootstrap_ci, holm, paired_test

ALL = ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc", "average_precision", "pointing_game",
       "energy_pointing_game", "top_k_intersection"]


def _masks(n=8, shape=(14, 16, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(n, 1, *shape, dtype=torch.bool)
    for i in range(n):
        a, b, c = (int(torch.randint(0, s - 5, (1,), generator=g)) for s in shape)
        m[i, 0, a:a + 4, b:b + 5, c:c + 3] = True
    return m


def test_oracle_map_scores_one_everywhere():
    m = _masks()
    s = score(m.float() + 0.0, m, {**{k: {} for k in ALL}, "top_k_intersection": {"k": 60 / (14 * 16 * 12)}})
    for k in ALL:
        assert torch.allclose(s[k], torch.ones(8, dtype=torch.float64)), k
        assert torch.allclose(s[f"{k}_norm"], torch.ones(8, dtype=torch.float64)), k


def test_random_map_scores_chance():
    m = _masks(64)
    g = torch.Generator().manual_seed(1)
    s = score(torch.rand(m.shape, generator=g), m, ["relevance_mass_accuracy", "relevance_rank_accuracy", "auroc",
                                                   "average_precision"])
    for k in ("relevance_mass_accuracy", "relevance_rank_accuracy", "auroc", "average_precision"):
        assert abs(float(s[k].mean() - s[f"{k}_chance"].mean())) < 0.02, k
        assert abs(float(s[f"{k}_norm"].mean())) < 0.05, k
    assert torch.allclose(s["relevance_mass_accuracy_chance"], torch.full((64,), 60 / (14 * 16 * 12), dtype=torch.float64))


def test_auroc_and_ap_match_sklearn_with_ties():
    m = _masks(4)
    g = torch.Generator().manual_seed(2)
    a = (torch.rand(m.shape, generator=g) * 4).round() + m.float() * (torch.rand(m.shape, generator=g) > 0.5)
    s = score(a, m, ["auroc", "average_precision"], polarity="raw")
    for i in range(4):
        y, p = m[i].flatten().numpy(), a[i].flatten().numpy()
        assert s["auroc"][i].item() == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert s["average_precision"][i].item() == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_brain_mask_restricts_every_metric():
    m = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    m[0, 0, 0, 0, :2] = True
    brain = torch.zeros_like(m)
    brain[0, 0, 0] = True  # 16 voxels; the mask's 2 are inside
    a = torch.zeros(1, 1, 4, 4, 4)
    a[0, 0, 0, 0, 0] = 1.0
    a[0, 0, 0, 1, 0] = 1.0
    a[0, 0, 3, 3, 3] = 100.0  # outside the brain: ignored
    s = score(a, m, ["relevance_mass_accuracy", "pointing_game", "auroc"], brain_mask=brain)
    assert s["relevance_mass_accuracy"].item() == pytest.approx(0.5)
    assert s["relevance_mass_accuracy_chance"].item() == pytest.approx(2 / 16)
    assert s["pointing_game"].item() == 0.5  # two tied maxima, one inside: the share inside (ties="average")
    first = score(a, m, {"pointing_game": {"ties": "first"}}, brain_mask=brain)["pointing_game"]
    assert first.item() == 1.0  # the lower flat index is inside
    y = np.zeros(16, bool)
    y[:2] = True
    p = a[0, 0, 0].flatten().numpy()
    assert s["auroc"].item() == pytest.approx(roc_auc_score(y, p))
    assert score(a, m, ["relevance_mass_accuracy"])["relevance_mass_accuracy"].item() == pytest.approx(1 / 102)


def test_rank_accuracy_ties_prefer_lower_index():
    m = torch.zeros(1, 1, 1, 1, 6, dtype=torch.bool)
    m[..., 4:] = True  # K = 2
    a = torch.ones(1, 1, 1, 1, 6)  # all tied: the first two flat indices win, both outside
    assert score(a, m, ["relevance_rank_accuracy"])["relevance_rank_accuracy"].item() == 0.0
    a[..., 5] = 2.0
    assert score(a, m, ["relevance_rank_accuracy"])["relevance_rank_accuracy"].item() == 0.5


def test_pointing_game_tolerance_in_mm():
    m = torch.zeros(1, 1, 9, 9, 9, dtype=torch.bool)
    m[0, 0, 4, 4, 4] = True
    a = torch.zeros(1, 1, 9, 9, 9)
    a[0, 0, 4, 4, 6] = 1.0  # 2 voxels away along the last axis
    sp = (1.0, 1.0, 2.0)  # = 4 mm
    pg = lambda tol: score(a, m, {"pointing_game": {"tolerance_mm": tol}}, spacing=sp)["pointing_game"].item()  # noqa
    assert pg(3.9) == 0.0 and pg(4.0) == 1.0


def test_gaussian_smoothing_has_the_analytic_width():
    x = torch.zeros(1, 1, 41, 41, 41, dtype=torch.float64)
    x[0, 0, 20, 20, 20] = 1.0
    sp = (1.0, 2.0, 0.5)
    y = gaussian_smooth(x, 6.0, sp)[0, 0]
    assert float(y.sum()) == pytest.approx(1.0, rel=1e-6)
    sigma_mm = 6.0 / (2 * math.sqrt(2 * math.log(2)))
    idx = torch.arange(41, dtype=torch.float64) - 20
    for axis, s in enumerate(sp):
        marg = y.sum(dim=tuple(d for d in range(3) if d != axis))
        var_vox = float((marg * idx ** 2).sum())
        assert math.sqrt(var_vox) * s == pytest.approx(sigma_mm, rel=0.02), axis


def test_region_rank_on_a_hand_built_atlas():
    atlas = torch.zeros(1, 1, 2, 2, 4, dtype=torch.long)
    atlas[..., 0] = 1
    atlas[..., 1] = 2
    atlas[..., 2] = 3
    atlas[..., 3] = 4
    a = torch.zeros(1, 1, 2, 2, 4)
    a[..., 0] = 5.0
    a[..., 1] = 1.0
    a[..., 2] = 3.0
    a[..., 3] = 2.0
    m = atlas == 3
    s = score(a, m, {"region_rank": {"atlas": atlas, "true_region": [3]}})
    assert s["region_rank"].item() == 2.0  # only region 1 has a higher mean
    assert s["region_rank_auroc"].item() == pytest.approx(2 / 3)
    assert s["region_rank_chance"].item() == 2.5


def test_errors_name_the_subject():
    m = _masks(3)
    m[1] = False
    with pytest.raises(MaskError, match=r"\[1\]"):
        score(torch.rand(m.shape), m, ["auroc"])
    a = torch.rand(3, 1, 14, 16, 12)
    a[2, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ScoringError, match=r"\[2\]"):
        score(a, _masks(3), ["auroc"])


def test_bootstrap_matches_scipy():
    rng = np.random.default_rng(0)
    v = rng.gamma(2.0, 1.0, 60)
    for method, sp in (("percentile", "percentile"), ("bca", "BCa")):
        est, lo, hi = bootstrap_ci(torch.tensor(v), n_boot=20000, method=method, seed=0)
        ref = sst.bootstrap((v,), np.mean, n_resamples=20000, method=sp, random_state=0).confidence_interval
        assert est == pytest.approx(v.mean())
        assert lo == pytest.approx(ref.low, abs=0.03) and hi == pytest.approx(ref.high, abs=0.03)


def test_paired_tests_and_holm():
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 1, 40)
    y = rng.normal(0.0, 1, 40)
    pw = paired_test(torch.tensor(x), torch.tensor(y), "wilcoxon")
    assert pw == pytest.approx(sst.wilcoxon(x - y, alternative="greater").pvalue)
    pp = paired_test(torch.tensor(x), torch.tensor(y), "permutation", n_perm=20000)
    ref = sst.permutation_test((x - y,), np.mean, permutation_type="samples", alternative="greater",
                               n_resamples=20000, random_state=0).pvalue
    assert pp == pytest.approx(ref, abs=0.01)
    assert holm(torch.tensor([0.01, 0.04, 0.03, 0.5])).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_spearman_similarity_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(2, 1, 6, 6, 6, generator=g) * 5).round()
    b = a + torch.rand(2, 1, 6, 6, 6, generator=g) * 3
    s = similarity(a, b, "spearman")
    for i in range(2):
        assert s[i].item() == pytest.approx(sst.spearmanr(a[i].flatten(), b[i].flatten().abs()).statistic)
    assert similarity(a, a, "ssim")[0].item() == pytest.approx(1.0)
    assert similarity(a, a, "topk", k=0.1)[0].item() == 1.0
