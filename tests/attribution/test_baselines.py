"""Model-free baselines: seeded random maps and the 3-D Sobel edge detector (vs scipy)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from neuroxai.attribution import attribute
from neuroxai.errors import AttributionError

from ._models import sfcn_like, small_cnn


def _x(shape=(2, 1, 10, 12, 9), seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_random_is_seeded_uniform_and_ignores_model_input_and_target():
    x = _x()
    a = attribute(small_cnn().double(), x, torch.tensor([0, 1]), "random", seed=3)
    b = attribute(sfcn_like().double(), 5 * x, torch.tensor([1, 0]), "random", seed=3)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == torch.float64
    assert torch.equal(a, torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    assert not torch.equal(a, attribute(small_cnn().double(), x, 0, "random", seed=4))
    assert 0 <= a.min() and a.max() < 1 and abs(a.mean().item() - 0.5) < 0.02


def test_edge_detector_equals_scipy_sobel_magnitude():
    x = _x()
    e = attribute(None, x, None, "edge_detector")
    for b in range(2):
        v = x[b, 0].numpy()
        ref = np.sqrt(sum(ndimage.sobel(v, axis=a, mode="nearest") ** 2 for a in range(3)))
        np.testing.assert_allclose(e[b, 0].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_edge_detector_on_a_ramp_and_a_constant():
    ramp = torch.arange(8, dtype=torch.float64).view(1, 1, 8, 1, 1).expand(1, 1, 8, 8, 8).contiguous()
    e = attribute(small_cnn().double(), ramp, 0, "edge_detector")
    # central difference 2 × smoothing weights (1+2+1)² = 16 → 32 inside; half at the clamped border
    assert torch.allclose(e[0, 0, 1:-1], torch.full((6, 8, 8), 32.0, dtype=torch.float64))
    assert torch.allclose(e[0, 0, 0], torch.full((8, 8), 16.0, dtype=torch.float64))
    assert attribute(None, torch.full((1, 1, 5, 5, 5), 3.0), None, "edge_detector").abs().max() == 0


def test_baselines_reject_unknown_params():
    with pytest.raises(AttributionError, match="unknown parameter"):
        attribute(None, _x(), None, "edge_detector", seed=1)
