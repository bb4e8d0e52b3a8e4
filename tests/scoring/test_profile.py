"""Relevance-by-distance profile: oracle and uniform maps, exact agreement of the distance bands
with scipy's Euclidean distance transform (isotropic and anisotropic), a point map at a known
distance, brain-mask restriction, NaN for maps without positive mass, and input errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from neuroxai.data.transforms import dilate_mm
from neuroxai.errors import ConfigError, MaskError, ScoringError
from neuroxai.scoring import distance_profile
from neuroxai.scoring.profile import DEFAULT_DISTANCES_MM, _squared_distance_mm

N = 32


def _blob(n=N):
    """A small irregular blob (an off-centre ball plus a protrusion) on an n³ grid: (1,1,n,n,n)."""
    z, y, x = np.mgrid[:n, :n, :n]
    m = (z - 15.3) ** 2 + (y - 16.0) ** 2 + (x - 16.6) ** 2 <= 6.5
    m[17:19, 16, 16:20] = True
    return torch.from_numpy(m)[None, None]


def _brain(n=N):
    b = torch.zeros(1, 1, n, n, n, dtype=torch.bool)
    b[..., 2:n - 2, 3:n - 3, 2:n - 1] = True
    return b


def test_oracle_map_has_share_one_at_every_distance():
    m = _blob().expand(2, 1, N, N, N).clone()
    m[1, 0, 5:8, 5:8, 5:8] = True  # a second component in subject 1
    rel, vol = distance_profile(m.float(), m, _brain(), spacing=(2.0, 2.0, 2.0))
    assert rel.dtype == vol.dtype == torch.float64 and rel.shape == vol.shape == (2, len(DEFAULT_DISTANCES_MM))
    assert torch.equal(rel, torch.ones_like(rel))
    assert (vol[:, 0] < 0.01).all() and (vol.diff(dim=1) > 0).all()  # chance grows with the distance


def test_uniform_map_has_share_equal_to_volume_share():
    m = _blob()
    for spacing in [(2.0, 2.0, 2.0), (1.0, 1.5, 2.0)]:
        rel, vol = distance_profile(torch.full((1, 1, N, N, N), 0.37), m, _brain(), spacing=spacing)
        assert torch.allclose(rel, vol, rtol=0, atol=1e-12)
        assert 0 < vol[0, 0] < vol[0, -1] < 1


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (1.0, 1.5, 2.0), (0.9375, 0.9375, 1.2)])
def test_volume_share_is_exact_against_scipy_edt(spacing):
    # Exact at every distance, not only the first: the bands come from an exact (truncated)
    # Euclidean distance transform, not from successive dilations (which miss 13-42 % of the
    # voxels at 8-24 mm on this grid, see the docstring of distance_profile).
    m = _blob()
    edt = distance_transform_edt(~m[0, 0].numpy(), sampling=spacing)
    d = (0.0, 2.0, 3.0, 4.0, 8.0, 10.0, 12.0, 16.0, 24.0)
    _, vol = distance_profile(torch.zeros(1, 1, N, N, N), m, spacing=spacing, distances_mm=d)
    expected = [float((edt <= dk + 1e-9).mean()) for dk in d]
    assert vol[0].tolist() == pytest.approx(expected, abs=1e-15)
    dist2 = _squared_distance_mm(m, spacing, d[-1])[0, 0].numpy()
    for dk in d:  # the same voxel sets, and the same as the pointing-game tolerance band
        band = dist2 <= dk * dk * (1 + 1e-6) + 1e-6
        assert np.array_equal(band, edt <= dk + 1e-9)
        assert np.array_equal(band, dilate_mm(m, dk, spacing)[0, 0].numpy())
    inside = edt <= d[-1]
    assert np.allclose(np.sqrt(dist2[inside]), edt[inside], rtol=1e-6, atol=1e-6)


def test_point_map_at_known_distance_is_a_step():
    m = torch.zeros(1, 1, 16, 16, 16, dtype=torch.bool)
    m[0, 0, 3, 8, 8] = True
    a = torch.zeros(1, 1, 16, 16, 16)
    a[0, 0, 8, 8, 8] = 2.5  # 5 voxels × 2 mm = 10 mm along axis 0
    d = (0.0, 4.0, 8.0, 9.9, 10.0, 12.0, 24.0)
    rel, _ = distance_profile(a, m, spacing=(2.0, 2.0, 2.0), distances_mm=d)
    assert rel[0].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    # 10 mm along axis 2 at 1 × 1 × 2.5 mm is 4 voxels; along axis 0 it would be 10
    a2 = torch.zeros(1, 1, 16, 16, 16)
    a2[0, 0, 3, 8, 12] = 1.0
    rel2, _ = distance_profile(a2, m, spacing=(1.0, 1.0, 2.5), distances_mm=d)
    assert rel2[0].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_relevance_outside_the_brain_is_ignored():
    m = torch.zeros(2, 1, 16, 16, 16, dtype=torch.bool)
    m[:, 0, 6:9, 6:9, 6:9] = True
    brain = torch.zeros(1, 1, 16, 16, 16, dtype=torch.bool)
    brain[..., :, :, :12] = True
    a = torch.zeros(2, 1, 16, 16, 16)
    a[:, 0, 7, 7, 7] = 1.0  # inside the mask
    a[0, 0, 7, 7, 14] = 100.0  # outside the brain, 12 mm from the mask: must not count
    a[1, 0, 7, 7, 10] = 3.0  # inside the brain, 4 mm from the mask edge (at 2 mm spacing)
    rel, vol = distance_profile(a, m, brain, spacing=(2.0, 2.0, 2.0), distances_mm=(0.0, 4.0, 8.0))
    assert rel[0].tolist() == [1.0, 1.0, 1.0]
    assert rel[1].tolist() == [0.25, 1.0, 1.0]
    assert vol[0, 0].item() == 27 / (16 * 16 * 12)
    # without the brain mask, subject 0's far voxel counts, from 12 mm on
    rel_all, _ = distance_profile(a, m, spacing=(2.0, 2.0, 2.0), distances_mm=(0.0, 10.0, 12.0))
    assert rel_all[0].tolist() == pytest.approx([1 / 101, 1 / 101, 1.0], rel=1e-15)


def test_polarity_and_no_positive_mass_gives_nan():
    m = _blob()
    a = -m.float()  # all relevance negative, on the mask
    rel, vol = distance_profile(a, m)
    assert torch.isnan(rel).all() and not torch.isnan(vol).any()
    rel_neg, _ = distance_profile(a, m, polarity="negative")
    assert torch.equal(rel_neg, torch.ones_like(rel_neg))
    rel_abs, _ = distance_profile(a, m, polarity="absolute")
    assert torch.equal(rel_abs, torch.ones_like(rel_abs))


@pytest.mark.parametrize("bad", [(4.0, 0.0), (0.0, 4.0, 4.0), (-1.0, 4.0), (), (0.0, float("nan")),
                                 (0.0, float("inf")), "far"])
def test_bad_distances_raise_config_error(bad):
    m = _blob()
    with pytest.raises(ConfigError) as err:
        distance_profile(m.float(), m, distances_mm=bad)
    assert err.value.path == "distances_mm" and err.value.expected and err.value.fix


def test_bad_inputs_raise():
    m = _blob()
    with pytest.raises(ScoringError):
        distance_profile(m.float()[0], m[0])
    with pytest.raises(ConfigError):
        distance_profile(m.float(), m, polarity="signed")
    with pytest.raises(ConfigError):
        distance_profile(m.float(), m, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(MaskError):
        distance_profile(m.float(), torch.zeros_like(m))
