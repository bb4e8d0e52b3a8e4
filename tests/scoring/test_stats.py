"""Statistics against scipy (bootstrap, Wilcoxon), exact enumeration (sign-flip test) and hand
calculation (Holm)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats as sst

from neuroxai.errors import ConfigError
from neuroxai.scoring.stats import bootstrap_ci, holm, paired_test


@pytest.fixture
def skewed():
    return torch.from_numpy(np.random.default_rng(0).exponential(1.0, 30))


def test_bootstrap_percentile_matches_scipy_within_mc_error(skewed):
    est, lo, hi = bootstrap_ci(skewed, n_boot=4000, method="percentile", seed=1)
    ref = sst.bootstrap((skewed.numpy(),), np.mean, n_resamples=4000, method="percentile",
                        random_state=np.random.default_rng(1)).confidence_interval
    assert est == pytest.approx(float(skewed.mean()))
    se = float(skewed.std()) / np.sqrt(30)
    assert lo == pytest.approx(ref.low, abs=0.1 * se)
    assert hi == pytest.approx(ref.high, abs=0.1 * se)


def test_bootstrap_bca_matches_scipy_and_differs_from_percentile(skewed):
    # 50 000 resamples: the Monte-Carlo sd of a 97.5 % endpoint is then ≈ 0.03 se per method
    _, lo, hi = bootstrap_ci(skewed, n_boot=50000, method="bca", seed=2)
    ref = sst.bootstrap((skewed.numpy(),), np.mean, n_resamples=50000, method="BCa",
                        random_state=np.random.default_rng(2)).confidence_interval
    se = float(skewed.std()) / np.sqrt(30)
    assert lo == pytest.approx(ref.low, abs=0.1 * se)
    assert hi == pytest.approx(ref.high, abs=0.1 * se)
    # a right-skewed sample: BCa shifts the interval right of the percentile one
    _, plo, phi = bootstrap_ci(skewed, n_boot=50000, method="percentile", seed=2)
    assert lo > plo and hi > phi


def test_bootstrap_is_seeded_and_covers_the_mean():
    v = torch.linspace(0, 1, 21)
    assert bootstrap_ci(v, seed=7) == bootstrap_ci(v, seed=7)
    assert bootstrap_ci(v, seed=7) != bootstrap_ci(v, seed=8)
    est, lo, hi = bootstrap_ci(v, n_boot=2000, level=0.95)
    # normal theory: mean ± 1.96 σ/√n, σ of the bootstrap = population sd
    half = 1.96 * float(v.std(unbiased=False)) / np.sqrt(21)
    assert lo == pytest.approx(est - half, abs=0.015) and hi == pytest.approx(est + half, abs=0.015)
    assert bootstrap_ci(torch.full((5,), 0.3)) == pytest.approx((0.3, 0.3, 0.3))
    assert np.isnan(bootstrap_ci(torch.tensor([1.0]))[1])
    assert np.isnan(bootstrap_ci(torch.tensor([1.0, float("nan"), 2.0]))[0])
    with pytest.raises(ConfigError, match="bca"):
        bootstrap_ci(v, method="student")


def test_wilcoxon_equals_scipy():
    rng = np.random.default_rng(3)
    x = rng.normal(0.3, 1, 25)
    y = rng.normal(0.0, 1, 25)
    for alt in ("greater", "less", "two-sided"):
        p = paired_test(torch.from_numpy(x), torch.from_numpy(y), method="wilcoxon", alternative=alt)
        assert p == pytest.approx(sst.wilcoxon(x - y, alternative=alt).pvalue, rel=1e-12)
    assert paired_test(torch.ones(8), torch.ones(8)) == 1.0


def test_sign_flip_test_matches_exact_enumeration():
    d = np.array([0.9, 0.4, -0.2, 1.3, 0.7, -0.5, 0.8, 0.1, 0.6, -0.3])
    flips = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    null = (flips * d).mean(1)
    exact = {"greater": np.mean(null >= d.mean() - 1e-12), "less": np.mean(null <= d.mean() + 1e-12),
             "two-sided": np.mean(np.abs(null) >= abs(d.mean()) - 1e-12)}
    x, y = torch.from_numpy(d), torch.zeros(len(d), dtype=torch.float64)
    for alt, pe in exact.items():
        p = paired_test(x, y, method="permutation", alternative=alt, n_perm=20000, seed=0)
        assert p == pytest.approx(pe, abs=4 * np.sqrt(pe * (1 - pe) / 20000) + 1e-4), alt
    assert paired_test(x, y, method="permutation", seed=5) == paired_test(x, y, method="permutation", seed=5)
    with pytest.raises(ConfigError, match="wilcoxon"):
        paired_test(x, y, method="ttest")


def test_holm_by_hand():
    p = torch.tensor([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → cummax 0.06
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(torch.tensor([0.5, 0.9])).tolist() == pytest.approx([1.0, 1.0])
    assert holm(torch.tensor([0.2])).tolist() == pytest.approx([0.2])


def test_block_draws_equal_one_whole_draw_so_blocking_changes_no_number():
    """The bootstrap and the sign-flip test draw their indices in blocks (memory bounded at
    45,000 subjects); the blocks continue one generator stream, so every statistic equals the
    one computed from a single whole draw, here recomputed by hand."""
    from neuroxai.scoring import stats

    g = torch.Generator().manual_seed(0)
    v = torch.randn(301, dtype=torch.float64, generator=g)
    whole = torch.randint(0, 301, (500, 301), generator=torch.Generator().manual_seed(7))
    blocks = torch.cat([b for _, b in stats.draws(500, 301, torch.Generator().manual_seed(7), block_elements=1000)])
    assert torch.equal(whole, blocks)
    ref = torch.quantile(v[whole].mean(1), torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    old = stats.BLOCK_ELEMENTS
    try:
        stats.BLOCK_ELEMENTS = 1000  # many small blocks
        _, lo, hi = stats.bootstrap_ci(v, n_boot=500, seed=7)
        small = stats.paired_test(v, torch.zeros_like(v), method="permutation", n_perm=999, seed=3)
        seeds_small = stats.seed_subject_means(torch.stack([v, v + 1]), n_boot=300, seed=5)
    finally:
        stats.BLOCK_ELEMENTS = old
    assert (lo, hi) == pytest.approx(ref, abs=1e-15)
    assert small == stats.paired_test(v, torch.zeros_like(v), method="permutation", n_perm=999, seed=3)
    # the two-level bootstrap: subjects drawn first (all of them), then the seeds, as one draw would
    gen = torch.Generator().manual_seed(5)
    subj = torch.randint(0, 301, (300, 301), generator=gen)
    seeds = torch.randint(0, 2, (300, 2), generator=gen)
    table = torch.stack([v, v + 1])
    by_hand = table[:, subj].mean(2).T.gather(1, seeds).mean(1)
    assert torch.allclose(seeds_small, by_hand, rtol=0, atol=1e-12)
    assert torch.allclose(stats.seed_subject_means(table, n_boot=300, seed=5), by_hand, rtol=0, atol=1e-12)
