"""One chunk of maps scored against its masks: the scores, the distance profiles and the sum of
the maps at unit mass (the cohort-mean figure), as the validation run's attribute stage and the
audit of saved maps both need them.

``scoring`` is read as attributes (a protocol's ``scoring:`` section,
:class:`neuroxai.protocol.schema.ScoringSpec`, or any object with the same attributes):
``restrict_to_brain``, ``polarity``, ``profile_distances_mm``, ``score_options()`` (the keyword
arguments of :func:`~neuroxai.scoring.score`) and ``evidence(attr)`` (the map as the scoring
reads its sign).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .localization import score
from .profile import distance_profile


@dataclass(frozen=True)
class ChunkScores:
    """What :func:`score_chunk` returns, on the maps' device.

    Attributes:
        scores: ``{metric: (B,)}`` (and ``<metric>_chance``, ``<metric>_norm`` where a metric has them).
        profile_relevance, profile_volume: ``(B, K)`` shares within each of the K distances.
        mean_map_sum: ``(D, H, W)`` the sum over the chunk of each map at unit positive mass
            (:func:`unit_mass`); divided by the number of maps it is their mean.
    """

    scores: dict[str, torch.Tensor]
    profile_relevance: torch.Tensor
    profile_volume: torch.Tensor
    mean_map_sum: torch.Tensor


def unit_mass(evidence: torch.Tensor, brain: torch.Tensor | None) -> torch.Tensor:
    """Each map ``evidence: (B,1,D,H,W)`` (already read with the scoring's sign convention), its
    positive part inside ``brain`` scaled to sum 1: maps of different scale then average into a
    cohort mean where each subject weighs the same. An all-zero map stays zero."""
    a = evidence.clamp_min(0)
    if brain is not None:
        a = a * brain
    s = a.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1, 1)
    return a / s


def score_chunk(attr: torch.Tensor, mask: torch.Tensor, metrics: Mapping[str, dict], scoring, *,
                brain: torch.Tensor | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                atlas: torch.Tensor | None = None, true_region: Sequence[int] | None = None,
                lateral_pairs: Mapping[int, int] | None = None) -> ChunkScores:
    """Score the maps ``attr: (B,1,D,H,W)`` float against ``mask: (B,1,D,H,W)`` bool.

    Args:
        metrics: ``{name: params}`` (:func:`~neuroxai.scoring.localization.metric_params`).
        scoring: the scoring settings (see the module doc).
        brain: bool ``(B or 1,1,D,H,W)``: the voxels scored when ``scoring.restrict_to_brain``,
            and always the support of the unit-mass maps.
        spacing: voxel size in mm.
        atlas, true_region, lateral_pairs: for region metrics and the contralateral ground truth
            (:func:`~neuroxai.scoring.score`).
    """
    restricted = brain if scoring.restrict_to_brain else None
    s = score(attr, mask, metrics, brain_mask=restricted, spacing=spacing, **scoring.score_options(),
              atlas=atlas, true_region=true_region, lateral_pairs=lateral_pairs)
    return chunk_profiles(attr, mask, scoring, brain=brain, spacing=spacing, scores=s)


def chunk_profiles(attr: torch.Tensor, mask: torch.Tensor, scoring, *, brain: torch.Tensor | None = None,
                   spacing: Sequence[float] = (1.0, 1.0, 1.0), scores: dict | None = None) -> ChunkScores:
    """The distance profiles and the unit-mass sum of a chunk under ``scoring``, beside ``scores``
    computed elsewhere (a protocol whose metrics carry scorings of their own scores them per
    scoring)."""
    restricted = brain if scoring.restrict_to_brain else None
    rel, vol = distance_profile(attr, mask, restricted, spacing=spacing,
                                distances_mm=scoring.profile_distances_mm, polarity=scoring.polarity)
    unit = unit_mass(scoring.evidence(attr), brain)
    return ChunkScores(scores=dict(scores or {}), profile_relevance=rel, profile_volume=vol,
                       mean_map_sum=unit.sum(0)[0])
