"""Region-ranking agreement with a causal reference (scoring/reference.py): Spearman equals scipy's
on the regions both vectors have, RBO equals a direct implementation of Webber et al.'s sum, a map
equal to the occlusion map scores the maximum and a random map scores near chance."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from neuroxai.errors import ScoringError
from neuroxai.scoring.reference import (causal_ranks, excess_over_median, ranked, rbo_chance, rbo_max, region_rbo,
                                        region_spearman, region_vector)


def _vectors(B=6, L=12, seed=0, ties=True):
    g = np.random.default_rng(seed)
    a = g.normal(size=(B, L))
    b = g.normal(size=(B, L))
    if ties:
        a[:, 3:6] = 0.5  # tied values share their average rank
    a[:, 0] = b[:, 0] = np.nan  # label 0 (background)
    a[1, 7] = np.nan  # a label absent from one subject's map
    b[2, 9] = np.nan
    return a, b


def test_spearman_equals_scipy_on_the_common_regions():
    a, b = _vectors()
    got = region_spearman(torch.tensor(a), torch.tensor(b)).numpy()
    for i in range(a.shape[0]):
        ok = np.isfinite(a[i]) & np.isfinite(b[i])
        assert got[i] == pytest.approx(spearmanr(a[i, ok], b[i, ok]).statistic, abs=1e-12)


def _rbo_direct(s: list, t: list, k: int, p: float, ext: bool = False) -> float:
    """Webber, Moffat & Zobel 2010 eq. 7 truncated at k (p = 1: the average overlap), + eq. 32."""
    agree = [len(set(s[:d]) & set(t[:d])) / d for d in range(1, k + 1)]
    if p == 1:
        return sum(agree) / k
    out = (1 - p) * sum(p ** (d - 1) * a for d, a in enumerate(agree, 1))
    return out + (agree[-1] * p ** k if ext else 0.0)


def _order(v):
    """Labels present in ``v``, largest value first, ties by ascending label."""
    return [int(i) for i in sorted(np.flatnonzero(np.isfinite(v)), key=lambda i: (-v[i], i))]


@pytest.mark.parametrize("p,ext,depth", [(1.0, False, 5), (0.9, False, 5), (0.8, True, 4), (1.0, False, 50)])
def test_rbo_equals_the_direct_sum(p, ext, depth):
    a, b = _vectors(ties=False)
    got = region_rbo(torch.tensor(a), torch.tensor(b), depth=depth, p=p, ext=ext).numpy()
    for i in range(a.shape[0]):
        both = np.isfinite(a[i]) & np.isfinite(b[i])
        s = _order(np.where(both, a[i], np.nan))
        t = _order(np.where(both, b[i], np.nan))
        k = min(depth, len(s))
        assert got[i] == pytest.approx(_rbo_direct(s, t, k, p, ext), abs=1e-12)


def test_a_map_equal_to_the_occlusion_map_scores_the_maximum():
    # the occlusion map is constant inside each region (effect / size); a method whose map equals it
    # has the same region vector under the study's percentile reduction
    g = torch.Generator().manual_seed(0)
    atlas = torch.randint(0, 9, (3, 1, 10, 10, 10), generator=g)
    effect = torch.rand(3, 9, generator=g, dtype=torch.float64)
    occ_map = effect.gather(1, atlas.flatten(1)).view(3, 1, 10, 10, 10)
    ref = region_vector(occ_map, atlas)
    assert torch.allclose(ref[:, 1:], effect[:, 1:])  # the reduction of the occlusion map is the effect
    same = region_vector(occ_map.clone(), atlas)
    assert torch.equal(region_spearman(same, ref), torch.ones(3, dtype=torch.float64))
    for p, ext in ((1.0, False), (0.9, False), (0.9, True)):
        top = rbo_max(same, ref, depth=5, p=p, ext=ext)
        assert torch.allclose(region_rbo(same, ref, depth=5, p=p, ext=ext), top)
        assert float(top[0]) == pytest.approx(1.0 if p == 1 or ext else 1 - 0.9 ** 5)
    # reversing the ranking gives the minimum ρ
    assert torch.allclose(region_spearman(-same, ref), -torch.ones(3, dtype=torch.float64))


def test_a_random_ranking_scores_near_chance():
    g = np.random.default_rng(1)
    B, L = 400, 41
    ref = torch.tensor(g.normal(size=(B, L)))
    rnd = torch.tensor(g.normal(size=(B, L)))
    ref[:, 0] = rnd[:, 0] = float("nan")
    rho = region_spearman(rnd, ref)
    assert abs(float(rho.mean())) < 3 * float(rho.std()) / B ** 0.5 + 1e-3
    for p in (1.0, 0.9):
        rbo = region_rbo(rnd, ref, depth=10, p=p)
        ch = rbo_chance(rnd, ref, depth=10, p=p)
        # E[A_d] = d / R with R = 40 regions: the average overlap to 10 is 11 / 80
        if p == 1:
            assert float(ch[0]) == pytest.approx(11 / 80)
        assert float(rbo.mean()) == pytest.approx(float(ch.mean()), abs=3 * float(rbo.std()) / B ** 0.5)
        assert float(ch.mean()) < 0.3 * float(rbo_max(rnd, ref, depth=10, p=p).mean())


def test_ranked_puts_absent_regions_last_and_breaks_ties_by_label():
    v = torch.tensor([[float("nan"), 0.2, 0.5, 0.2, float("nan"), 0.9]], dtype=torch.float64)
    ids, n = ranked(v)
    assert ids[0, :4].tolist() == [5, 2, 1, 3] and int(n[0]) == 4


def test_causal_ranks_and_excess():
    nan = float("nan")
    eff = torch.tensor([[nan, 0.1, 0.5, 0.2, nan], [nan, 0.3, 0.7, 0.1, nan]], dtype=torch.float64)
    assert causal_ranks(eff).tolist() == [0, 2, 1, 3, 0]  # means 0.2, 0.6, 0.15; label 4 absent
    # subject medians 0.2 and 0.3
    assert torch.allclose(excess_over_median(eff, 2), torch.tensor([0.3, 0.4], dtype=torch.float64))


def test_mismatched_vectors_are_refused():
    with pytest.raises(ScoringError, match="share one"):
        region_spearman(torch.zeros(2, 5), torch.zeros(2, 6))
    with pytest.raises(ScoringError, match="atlas"):
        region_vector(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 5, dtype=torch.long))


def test_a_region_few_subjects_have_counts_zero_where_absent():
    nan = float("nan")
    eff = torch.tensor([[nan, 0.3, 0.5], [nan, 0.3, nan]], dtype=torch.float64)
    # label 2: 0.5 in one subject, absent (0) in the other → mean 0.25 < label 1's 0.3
    assert causal_ranks(eff).tolist() == [0, 1, 2]
    assert torch.allclose(excess_over_median(eff, 2), torch.tensor([0.1, -0.3], dtype=torch.float64))
