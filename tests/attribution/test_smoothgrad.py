"""SmoothGrad, SmoothGrad², VarGrad: replayed noise, seeds, chunk invariance, analytic variants,
bounded passes."""
from __future__ import annotations

import pytest
import torch

from neuroxai.attribution import attribute
from neuroxai.attribution import _util
from neuroxai.errors import AttributionError

from ._models import linear_model, small_cnn


def _x(shape=(2, 1, 12, 12, 12), seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _replayed_noise(x, n, sigma, seed):
    """The documented draw: sample i is the i-th randn(x.shape) of a generator seeded with seed,
    scaled by sigma × (max − min) of each volume."""
    gen = torch.Generator().manual_seed(seed)
    sd = sigma * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1, 1)
    return [torch.randn(x.shape, generator=gen, dtype=x.dtype) * sd for _ in range(n)]


def test_smoothgrad_is_the_mean_gradient_at_the_replayed_noise():
    m = small_cnn().double()
    x = _x()
    t = torch.tensor([0, 1])
    grads = [attribute(m, x + e, t, "gradient") for e in _replayed_noise(x, 5, 0.2, seed=7)]
    ours = attribute(m, x, t, "smoothgrad", n_samples=5, sigma=0.2, seed=7, batch_samples=2)
    assert torch.allclose(ours, sum(grads) / 5, rtol=0, atol=1e-14)
    sq = attribute(m, x, t, "smoothgrad", n_samples=5, sigma=0.2, seed=7, squared=True)
    assert torch.allclose(sq, sum(g * g for g in grads) / 5, rtol=0, atol=1e-14)
    ab = attribute(m, x, t, "smoothgrad", n_samples=5, sigma=0.2, seed=7, abs=True)
    assert torch.allclose(ab, sum(g.abs() for g in grads) / 5, rtol=0, atol=1e-14)
    var = attribute(m, x, t, "smoothgrad", n_samples=5, sigma=0.2, seed=7, vargrad=True)
    assert torch.allclose(var, torch.stack(grads).var(0, unbiased=False), rtol=0, atol=1e-14)


def test_same_seed_same_map_whatever_the_chunking_other_seed_other_map():
    m = small_cnn().double()
    x = _x()
    t = torch.tensor([1, 0])
    a = attribute(m, x, t, "smoothgrad", n_samples=6, seed=3, batch_samples=1)
    b = attribute(m, x, t, "smoothgrad", n_samples=6, seed=3, batch_samples=4)
    c = attribute(m, x, t, "smoothgrad", n_samples=6, seed=3)
    assert torch.allclose(a, b, rtol=0, atol=1e-14) and torch.allclose(a, c, rtol=0, atol=1e-14)
    assert torch.equal(c, attribute(m, x, t, "smoothgrad", n_samples=6, seed=3))
    d = attribute(m, x, t, "smoothgrad", n_samples=6, seed=4)
    assert (d - c).abs().max() > 1e-3 * c.abs().max()


def test_sigma_is_a_fraction_of_each_volumes_range():
    m = small_cnn().double()
    x = _x()
    t = torch.tensor([0, 0])
    # zero noise: the plain gradient; scaling a volume scales its noise, so the map is invariant
    assert torch.allclose(attribute(m, x, t, "smoothgrad", n_samples=2, sigma=0.0), attribute(m, x, t, "gradient"),
                          rtol=0, atol=1e-14)
    from neuroxai.attribution.smoothgrad import noise_sd
    xl = torch.zeros(2, 1, 4, 4, 4, dtype=torch.float64)
    xl[0, 0, 0, 0, 0], xl[0, 0, 1, 1, 1] = -1.0, 3.0  # range 4
    xl[1, 0, 2, 2, 2] = 10.0  # range 10
    assert torch.allclose(noise_sd(xl, 0.25).flatten(), torch.tensor([1.0, 2.5], dtype=torch.float64))


def test_linear_model_variants_are_analytic():
    m = linear_model((6, 6, 6)).double()
    x = _x((2, 1, 6, 6, 6))
    t = torch.tensor([0, 1])
    w = m[1].weight[t].view(2, 1, 6, 6, 6)
    assert torch.allclose(attribute(m, x, t, "smoothgrad", n_samples=5), w, rtol=0, atol=1e-13)
    assert attribute(m, x, t, "smoothgrad", n_samples=5, vargrad=True).abs().max() < 1e-13
    assert torch.allclose(attribute(m, x, t, "smoothgrad", n_samples=5, squared=True), w * w, rtol=0, atol=1e-13)
    assert torch.allclose(attribute(m, x, t, "smoothgrad", n_samples=5, abs=True), w.abs(), rtol=0, atol=1e-13)


@pytest.mark.parametrize("n,k,B", [(10, 3, 2), (50, None, 2), (7, None, 3)])
def test_passes_are_chunked_so_memory_is_bounded(monkeypatch, n, k, B):
    monkeypatch.setattr(_util, "CPU_VOXELS_PER_PASS", 4 * 512)  # 4 volumes of 8³ per pass by default
    m = small_cnn().double()
    sizes = []
    h = m.register_forward_pre_hook(lambda mod, inp: sizes.append(inp[0].shape[0]))
    try:
        attribute(m, _x((B, 1, 8, 8, 8)), 0, "smoothgrad", n_samples=n, batch_samples=k)
    finally:
        h.remove()
    per_pass = (k or max(1, 4 // B)) * B
    assert sum(sizes) == n * B  # every sample exactly once, no extra forward
    assert max(sizes) == min(per_pass, n * B) and len(sizes) == -(-n * B // per_pass)


def test_bad_smoothgrad_params():
    m = small_cnn().double()
    x = _x((1, 1, 8, 8, 8))
    with pytest.raises(AttributionError, match="n_samples"):
        attribute(m, x, 0, "smoothgrad", n_samples=0)
    with pytest.raises(AttributionError, match="sigma"):
        attribute(m, x, 0, "smoothgrad", sigma=-1.0)
    with pytest.raises(AttributionError, match="unknown parameter.*'nsamples'"):
        attribute(m, x, 0, "smoothgrad", nsamples=3)
    with pytest.raises(AttributionError, match="chunk size"):
        attribute(m, x, 0, "smoothgrad", batch_samples=0)


def test_gpu_chunk_size_follows_free_memory():
    # measured 100 MiB per item with 10 GiB free → 0.6 · 10 GiB / 100 MiB = 61 items, capped by what is left
    assert _util.items_per_pass(10 * 2**30, 100 * 2**20, 1000) == 61
    assert _util.items_per_pass(10 * 2**30, 100 * 2**20, 20) == 20
    assert _util.items_per_pass(2**20, 2**30, 20) == 1
