"""Similarity measures for model-parameter randomization against scipy, numpy and scikit-image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from skimage.metrics import structural_similarity

from neuroxai.errors import ConfigError, ScoringError
from neuroxai.scoring.sanity import similarity, ssim3d, topk_overlap


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 1, 10, 10, 10, generator=g)
    b = 0.6 * a + 0.8 * torch.randn(3, 1, 10, 10, 10, generator=g)
    b[0] = torch.round(b[0])  # ties in one map
    mask = torch.rand(1, 1, 10, 10, 10, generator=g) < 0.5
    return a, b, mask


def test_spearman_of_absolute_maps_matches_scipy_with_ties_and_mask(maps):
    a, b, mask = maps
    s = similarity(a, b, "spearman", mask=mask)
    s_all = similarity(a, b, "spearman")
    m = mask[0, 0].flatten().numpy()
    for i in range(3):
        x, y = a[i].flatten().abs().numpy(), b[i].flatten().abs().numpy()
        assert s[i].item() == pytest.approx(spearmanr(x[m], y[m]).statistic, abs=1e-12)
        assert s_all[i].item() == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    # sign flips leave the Spearman of |maps| unchanged (Adebayo et al. compare absolute maps)
    assert torch.allclose(similarity(a, -b, "spearman"), s_all)


def test_pearson_matches_scipy(maps):
    a, b, mask = maps
    p = similarity(a, b, "pearson", mask=mask)
    m = mask[0, 0].flatten().numpy()
    for i in range(3):
        assert p[i].item() == pytest.approx(pearsonr(a[i].flatten().numpy()[m], b[i].flatten().numpy()[m]).statistic,
                                            abs=1e-6)


def test_ssim3d_matches_skimage(maps):
    a, b, _ = maps
    s = ssim3d(a, b, window=7)
    for i in range(3):
        x, y = a[i, 0].double().numpy(), b[i, 0].double().numpy()
        x = (x - x.min()) / (x.max() - x.min())
        y = (y - y.min()) / (y.max() - y.min())
        ref = structural_similarity(x, y, win_size=7, data_range=1.0, use_sample_covariance=False,
                                    gaussian_weights=False)
        assert s[i].item() == pytest.approx(ref, abs=1e-9)
    assert torch.allclose(ssim3d(a, a), torch.ones(3, dtype=torch.float64))
    # unrelated maps are far less similar than a map and its noisy copy
    noise = torch.randn_like(a)
    assert (ssim3d(a, noise) < s).all()


def test_topk_overlap_by_hand():
    a = torch.zeros(1, 1, 4, 4, 4)
    b = torch.zeros(1, 1, 4, 4, 4)
    a.view(-1)[[0, 1, 2, 3]] = torch.tensor([4.0, -3.0, 2.0, 1.0])
    b.view(-1)[[0, 1, 5, 6]] = torch.tensor([1.0, 2.0, 3.0, -4.0])
    # k = 4/64: top-4 of |a| = {0,1,2,3}; of |b| = {6,5,1,0} → overlap 2 of 4
    assert topk_overlap(a, b, k=4 / 64).item() == pytest.approx(0.5)
    assert similarity(a, b, "topk", k=4 / 64).item() == pytest.approx(0.5)
    assert similarity(a, a, "topk", k=0.1).item() == 1.0
    # restricted to a mask of 8 voxels (indices 0..7): k=0.25 → top-2: a {0,1}, b {6,5} → 0
    mask = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    mask.view(-1)[:8] = True
    assert topk_overlap(a, b, k=0.25, mask=mask).item() == 0.0


def test_errors():
    a = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(ConfigError, match="spearman"):
        similarity(a, a, "kendall")
    with pytest.raises(ScoringError):
        similarity(a, a[..., :3], "spearman")
