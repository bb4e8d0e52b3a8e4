"""Our metrics against Quantus 0.6 on the same maps.

Quantus rejects 3-D input, but its localization metrics ignore voxel order, so a volume reshaped
to ``(B, 1, D·H, W)`` is scored fairly. Quantus is called with ``abs=False, normalise=False`` so
that both sides score the raw map. Where the definitions differ (signed maps for mass accuracy,
tie rules), the difference itself is asserted.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from neuroxai.scoring import score

quantus = pytest.importorskip("quantus")

B, N = 3, 24


def _q(metric_cls, a: torch.Tensor, m: torch.Tensor, **kw) -> np.ndarray:
    """Run a Quantus localization metric through its public ``__call__`` on (B,1,D·H,W) copies."""
    a2 = a.reshape(a.shape[0], 1, -1, a.shape[-1]).numpy().astype(np.float32).copy()
    s2 = m.reshape(m.shape[0], 1, -1, m.shape[-1]).numpy().astype(np.float32).copy()
    metric = metric_cls(abs=False, normalise=False, disable_warnings=True, display_progressbar=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=None, x_batch=np.zeros_like(a2), y_batch=np.zeros(a.shape[0], int),
                     a_batch=a2, s_batch=s2, channel_first=True)
    return np.asarray(out, dtype=np.float64)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(B, 1, N, N, N, generator=g)  # non-negative, continuous: no ties
    m = torch.zeros(B, 1, N, N, N, dtype=torch.bool)
    m[..., 6:14, 4:16, 8:20] = True
    m |= torch.rand(B, 1, N, N, N, generator=g) < 0.05  # scattered voxels too
    a = a + 0.5 * m  # some localization, so scores are away from chance
    return a, m


def test_mass_rank_auc_pointing_topk_coincide(data):
    a, m = data
    k = 0.05
    ours = score(a, m, {"relevance_mass_accuracy": {}, "relevance_rank_accuracy": {}, "auroc": {},
                        "pointing_game": {}, "top_k_intersection": {"k": k}})
    n_top = int(round(k * N ** 3))
    refs = {
        "relevance_mass_accuracy": _q(quantus.RelevanceMassAccuracy, a, m),
        "relevance_rank_accuracy": _q(quantus.RelevanceRankAccuracy, a, m),
        "auroc": _q(quantus.AUC, a, m),
        "pointing_game": _q(quantus.PointingGame, a, m),
        "top_k_intersection": _q(quantus.TopKIntersection, a, m, k=n_top),
    }
    for name, ref in refs.items():
        assert np.allclose(ours[name].numpy(), ref, atol=1e-6, rtol=0), (name, ours[name], ref)
    # the scores are informative (a test on constant 1.0s would prove little)
    assert 0.3 < ours["relevance_rank_accuracy"].mean() < 0.95


def test_auc_coincides_with_ties(data):
    a, m = data
    q = torch.round(a * 3) / 3  # four-ish levels: massive ties
    ours = score(q, m, ["auroc"])["auroc"].numpy()
    assert np.allclose(ours, _q(quantus.AUC, q, m), atol=1e-9)


def test_pointing_game_tie_rule_any_matches_quantus():
    m = torch.zeros(2, 1, 8, 8, 8, dtype=torch.bool)
    m[:, :, :2] = True
    a = torch.zeros(2, 1, 8, 8, 8)
    a[:, 0, 0, 0, 0] = 1.0  # inside
    a[:, 0, 7, 7, 7] = 1.0  # tied maximum outside
    ref = _q(quantus.PointingGame, a, m)
    assert ref.tolist() == [1.0, 1.0]
    assert score(a, m, {"pointing_game": {"ties": "any"}})["pointing_game"].tolist() == [1.0, 1.0]
    # our default scores the tie as a coin flip between the two maxima
    assert score(a, m, ["pointing_game"])["pointing_game"].tolist() == [0.5, 0.5]


def test_mass_accuracy_differs_on_signed_maps_as_documented(data):
    a, m = data
    signed = a - 0.6
    ref = _q(quantus.RelevanceMassAccuracy, signed, m)  # Σ_mask a / Σ a, negatives included
    flat_a, flat_m = signed.reshape(B, -1).double(), m.reshape(B, -1)
    quantus_def = (flat_a * flat_m).sum(1) / flat_a.sum(1)
    assert np.allclose(ref, quantus_def.numpy(), rtol=1e-4)
    ours = score(signed, m, ["relevance_mass_accuracy"])["relevance_mass_accuracy"]
    pos = flat_a.clamp_min(0)
    assert torch.allclose(ours, (pos * flat_m).sum(1) / pos.sum(1))
    assert not np.allclose(ours.numpy(), ref, atol=1e-3)
