"""Occlusion: hand-computed answers on a linear model, mm units, chunk invariance, errors."""
from __future__ import annotations

import pytest
import torch

from neuroxai.attribution import attribute
from neuroxai.errors import AttributionError

from ._models import linear_model, small_cnn


def _x(shape=(2, 1, 6, 6, 6), seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _blocks(a, k):
    """Sum over non-overlapping k³ blocks, broadcast back to every voxel of the block."""
    B, C, D, H, W = a.shape
    s = a.view(B, C, D // k, k, H // k, k, W // k, k).sum((3, 5, 7), keepdim=True)
    return s.expand(B, C, D // k, k, H // k, k, W // k, k).reshape(a.shape)


def test_linear_model_non_overlapping_patches_are_hand_computable():
    m = linear_model((6, 6, 6)).double()
    x = _x()
    t = torch.tensor([1, 0])
    w = m[1].weight[t].view(2, 1, 6, 6, 6)
    # f linear: occluding patch P with value b drops the logit by Σ_P w (x − b)
    for b in (0.0, -0.5):
        ours = attribute(m, x, t, "occlusion", patch=2, stride=2, baseline=b)
        assert torch.allclose(ours, _blocks(w * (x - b), 2), rtol=0, atol=1e-12)


def test_overlapping_patches_average_the_drops_of_the_covering_patches():
    m = linear_model((5, 1, 1)).double()
    x = _x((1, 1, 5, 1, 1))
    c = (m[1].weight[0] * x.flatten()).tolist()  # per-voxel contribution, baseline 0
    # windows of 2 with stride 2 along D on 5 voxels: [0,1], [2,3], [4] (clipped); stride 1 overlaps
    ours = attribute(m, x, 0, "occlusion", patch=(2, 1, 1), stride=(2, 1, 1)).flatten().tolist()
    assert ours == pytest.approx([c[0] + c[1]] * 2 + [c[2] + c[3]] * 2 + [c[4]], abs=1e-12)
    ours = attribute(m, x, 0, "occlusion", patch=(2, 1, 1), stride=(1, 1, 1)).flatten().tolist()
    d = [c[i] + c[i + 1] for i in range(4)]  # the 4 windows
    ref = [d[0], (d[0] + d[1]) / 2, (d[1] + d[2]) / 2, (d[2] + d[3]) / 2, d[3]]
    assert ours == pytest.approx(ref, abs=1e-12)
    # border="shift" (MONAI): the last window [4] becomes [3, 4]
    ours = attribute(m, x, 0, "occlusion", patch=(2, 1, 1), stride=(2, 1, 1), border="shift").flatten().tolist()
    assert ours == pytest.approx([d[0], d[0], d[2], (d[2] + d[3]) / 2, d[3]], abs=1e-12)


def test_mm_units_convert_with_the_spacing():
    m = small_cnn().double()
    x = _x((2, 1, 12, 12, 12))
    t = torch.tensor([0, 1])
    vox = attribute(m, x, t, "occlusion", patch=(4, 2, 2), stride=(2, 1, 1))
    mm = attribute(m, x, t, "occlusion", patch=8.0, stride=4.0, unit="mm", spacing=(2.0, 4.0, 4.0))
    assert torch.equal(vox, mm)


def test_chunking_and_regression_target():
    m = small_cnn().double()
    x = _x((2, 1, 12, 12, 12))
    t = torch.tensor([1, 1])
    a = attribute(m, x, t, "occlusion", patch=4, stride=3, batch_patches=1)
    b = attribute(m, x, t, "occlusion", patch=4, stride=3, batch_patches=5)
    c = attribute(m, x, t, "occlusion", patch=4, stride=3, batch_patches=None)
    assert torch.allclose(a, b, rtol=0, atol=1e-13) and torch.allclose(a, c, rtol=0, atol=1e-13)
    lm = linear_model((6, 6, 6), n_out=1).double()
    xl = _x()
    r = attribute(lm, xl, None, "occlusion", patch=3, stride=3)
    assert torch.allclose(r, _blocks(lm[1].weight.view(1, 1, 6, 6, 6) * xl, 3), rtol=0, atol=1e-12)


def test_occlusion_errors():
    m = small_cnn().double()
    x = _x((1, 1, 8, 8, 8))
    with pytest.raises(AttributionError, match="larger than the volume"):
        attribute(m, x, 0, "occlusion", patch=9)
    with pytest.raises(AttributionError, match="spacing"):
        attribute(m, x, 0, "occlusion", unit="mm")
    with pytest.raises(AttributionError, match="unit"):
        attribute(m, x, 0, "occlusion", unit="cm")
    with pytest.raises(AttributionError, match="whole numbers"):
        attribute(m, x, 0, "occlusion", patch=2.5)
    with pytest.raises(AttributionError, match="unknown parameter"):
        attribute(m, x, 0, "occlusion", window=3)
    with pytest.raises(AttributionError, match="border"):
        attribute(m, x, 0, "occlusion", border="wrap")
