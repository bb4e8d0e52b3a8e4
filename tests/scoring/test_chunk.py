"""score_chunk: one chunk of maps scored against masks, as the attribute stage and the audit use it.
The unit-mass maps of the cohort-mean figure by hand; the scores and profiles equal score() and
distance_profile() called with the brain mask exactly when the scoring restricts to the brain."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neuroxai.protocol.schema import ScoringSpec
from neuroxai.scoring import distance_profile, score
from neuroxai.scoring.chunk import score_chunk, unit_mass

S = 12


def _data():
    g = torch.Generator().manual_seed(0)
    attr = torch.randn(3, 1, S, S, S, generator=g)
    attr[2] = 0.0  # an all-zero map stays zero, no NaN
    mask = torch.zeros(3, 1, S, S, S, dtype=torch.bool)
    mask[:, :, 4:8, 4:8, 3:9] = True
    brain = torch.zeros(1, 1, S, S, S, dtype=torch.bool)
    brain[..., 1:S - 1, 2:S - 2, 1:S - 1] = True
    return attr, mask, brain


def test_unit_mass_puts_each_map_s_positive_part_in_the_brain_at_mass_one():
    attr, _, brain = _data()
    u = unit_mass(attr, brain)
    a = attr.numpy()
    for i in range(2):
        pos = np.where(brain[0].numpy(), np.clip(a[i], 0, None), 0.0)
        np.testing.assert_allclose(u[i].numpy(), pos / pos.sum(), rtol=1e-5, atol=1e-9)
    assert float(u[:2].sum()) == pytest.approx(2.0, rel=1e-5)
    assert float(u[2].abs().sum()) == 0.0 and not torch.isnan(u).any()


@pytest.mark.parametrize("restrict", [False, True])
def test_score_chunk_equals_score_and_profile_with_the_brain_only_when_restricted(restrict):
    attr, mask, brain = _data()
    attr, mask = attr[:2], mask[:2]
    sc = ScoringSpec(polarity="absolute", restrict_to_brain=restrict, profile_distances_mm=[0.0, 2.0, 4.0])
    metrics = {"relevance_mass_accuracy": {}, "relevance_rank_accuracy": {}}
    out = score_chunk(attr, mask, metrics, sc, brain=brain, spacing=(2.0, 2.0, 2.0))
    b = brain if restrict else None
    want = score(attr, mask, metrics, brain_mask=b, spacing=(2.0, 2.0, 2.0), **sc.score_options())
    assert out.scores.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(out.scores[k], want[k])
    rel, vol = distance_profile(attr, mask, b, spacing=(2.0, 2.0, 2.0), distances_mm=[0.0, 2.0, 4.0],
                                polarity="absolute")
    torch.testing.assert_close(out.profile_relevance, rel, equal_nan=True)
    torch.testing.assert_close(out.profile_volume, vol)
    # the mean-map sum reads the sign as the scoring does (|map| here) and always within the brain
    torch.testing.assert_close(out.mean_map_sum, unit_mass(attr.abs(), brain).sum(0)[0])
    if not restrict:  # the brain mask matters to the scores only when restricting
        with_b = score(attr, mask, metrics, brain_mask=brain, spacing=(2.0, 2.0, 2.0), **sc.score_options())
        assert any(not torch.allclose(with_b[k], want[k]) for k in want)
