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


# ---------------------------------------------------------------- AtlasOcclusion (Siegel et al. 2025)


class _Linear(torch.nn.Module):
    """Two logits ±w·x: occluding a region changes the class-1 logit by w·(x − fill) over it."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        v = (x * self.w).flatten(1).sum(1, keepdim=True)
        return torch.cat([-v, v], 1)


def test_atlas_occlusion_is_the_output_change_per_region_voxel():
    from neuroxai.attribution import attribute

    g = torch.Generator().manual_seed(0)
    B, shape = 3, (10, 9, 8)
    x = torch.randn(B, 1, *shape, generator=g, dtype=torch.float64)
    w = torch.randn(1, 1, *shape, generator=g, dtype=torch.float64)
    mean_image = torch.randn(1, 1, *shape, generator=g, dtype=torch.float64)
    atlas = torch.randint(0, 6, (B, 1, *shape), generator=g)  # per-subject labels, 0 = background
    out = attribute(_Linear(w), x, torch.tensor([1, 1, 1]), "atlas_occlusion", atlas=atlas, mean_image=mean_image)
    for b in range(B):
        for r in range(1, 6):
            m = atlas[b, 0] == r
            fill = mean_image[0, 0][m].mean()
            want = (w[0, 0][m] * (x[b, 0][m] - fill)).sum().abs() / m.sum()
            assert torch.allclose(out[b, 0][m], want.expand(int(m.sum())), atol=1e-12)
        assert (out[b, 0][atlas[b, 0] == 0] == 0).all()
    # chunking the regions changes nothing
    again = attribute(_Linear(w), x, torch.tensor([1, 1, 1]), "atlas_occlusion", atlas=atlas, mean_image=mean_image,
                      batch_regions=1)
    assert torch.allclose(out, again, atol=1e-12)


def test_atlas_occlusion_ranks_first_the_region_the_model_reads():
    from neuroxai.attribution import attribute

    shape = (1, 1, 8, 8, 8)
    atlas = torch.zeros(shape, dtype=torch.long)
    atlas[..., :4, :, :], atlas[..., 4:, :4, :], atlas[..., 4:, 4:, :] = 1, 2, 3
    w = torch.zeros(shape)
    w[..., 6, 6, 0] = 1.0  # the model reads one voxel of region 3
    out = attribute(_Linear(w), torch.ones(shape), torch.tensor([1]), "atlas_occlusion", atlas=atlas,
                    mean_image=0.0)
    per_region = {r: float(out[atlas == r].mean()) for r in (1, 2, 3)}
    assert max(per_region, key=per_region.get) == 3 and per_region[1] == per_region[2] == 0.0
    assert per_region[3] == pytest.approx(1.0 / (4 * 4 * 8))


def test_atlas_occlusion_without_its_inputs_says_what_it_needs():
    from neuroxai.attribution import attribute
    from neuroxai.errors import AttributionError

    with pytest.raises(AttributionError, match="atlas and the mean image"):
        attribute(_Linear(torch.ones(1, 1, 4, 4, 4)), torch.ones(1, 1, 4, 4, 4), torch.tensor([1]), "atlas_occlusion")
