"""Ground-truth validity: the stage says whether the model's evidence lies in the ground truth."""
import numpy as np
import pytest
import torch

from neuroxai.protocol.validity import mean_image, random_placements, validity_check

S = 16


def _box(lo, hi):
    m = torch.zeros(1, 1, S, S, S, dtype=torch.bool)
    m[..., lo:hi, lo:hi, lo:hi] = True
    return m


A = _box(3, 7)    # where the signal is
B = _box(9, 13)   # somewhere else, same size


class RegionMean(torch.nn.Module):
    """Logits (0, mean of x inside ``region``): a model that uses exactly that region."""

    def __init__(self, region):
        super().__init__()
        self.register_buffer("r", region.float())

    def forward(self, x):
        m = (x * self.r).flatten(1).sum(1) / self.r.sum()
        return torch.stack([torch.zeros_like(m), m], 1)


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, S, S, S, generator=g) * 0.5 + y.view(-1, 1, 1, 1, 1) * A.float()
    return x, y.numpy()


def _batches(x, y, gt, bs=8):
    for i in range(0, len(x), bs):
        yield {"image": x[i:i + bs], "gt": gt.expand(len(x[i:i + bs]), -1, -1, -1, -1),
               "brain": None, "label": y[i:i + bs]}


def test_a_model_that_uses_the_ground_truth_passes():
    x, y = _data()
    fill = mean_image(iter([x]))
    r = validity_check(RegionMean(A), _batches(x, y, A), fill, "classification", n_placements=3)
    assert r["passed"] is True
    assert r["performance"]["original"] == pytest.approx(1.0)
    assert r["performance"]["removed"] == pytest.approx(0.5)  # the fill is the same for everyone
    assert r["performance"]["kept"] == pytest.approx(1.0)
    assert r["drop_share"] == pytest.approx(1.0) and r["kept_share"] == pytest.approx(1.0)
    assert r["mean_abs_delta"]["elsewhere"] == pytest.approx(0.0, abs=1e-9)


def test_a_model_that_ignores_the_ground_truth_is_not_valid():
    # The model reads region A; the ground truth claims region B: removing B changes nothing.
    x, y = _data()
    fill = mean_image(iter([x]))
    r = validity_check(RegionMean(A), _batches(x, y, B), fill, "classification", n_placements=3)
    assert r["passed"] is False
    assert r["drop_share"] == pytest.approx(0.0, abs=1e-9)
    assert r["kept_share"] == pytest.approx(0.0, abs=1e-9)
    assert "does not rely on the ground-truth region" in r["reason"]


def test_a_model_at_chance_cannot_be_judged():
    x, _ = _data()
    y = np.random.default_rng(0).permutation(np.arange(len(x)) % 2)
    r = validity_check(RegionMean(_box(0, 2)), _batches(x, y, A), mean_image(iter([x])), "classification",
                       n_placements=2)
    assert r["passed"] in (None, False)


def test_random_placements_keep_size_avoid_the_ground_truth_and_stay_in_the_brain():
    gt = torch.cat([A, torch.zeros_like(A)])
    brain = torch.ones_like(A)
    brain[..., :2, :, :] = False
    outs = random_placements(gt, brain, 4, torch.Generator().manual_seed(1))
    for m in outs:
        assert int(m[0].sum()) == int(A.sum())
        assert not (m[0] & A[0]).any()
        assert not (m[0] & ~brain[0]).any()
        assert not m[1].any()  # an empty mask stays empty
    assert len({tuple(torch.nonzero(m[0])[0].tolist()) for m in outs}) > 1
