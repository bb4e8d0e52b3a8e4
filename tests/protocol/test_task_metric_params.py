"""A task gives its own metric parameters (the brain-age task: the true aging order as
rank_biased_overlap's reference); the attribute stage hands them to the scoring."""
from __future__ import annotations

import pytest
import torch

from neuroxai.protocol.schema import load_protocol
from neuroxai.protocol.stages.attribute import score_metrics


def _scores(task_params):
    """siegel2025-tasks' metrics on one map over an atlas of three regions (171 most relevant,
    then 41, then 42), with the task's metric parameters."""
    proto = load_protocol("siegel2025-tasks")
    atlas = torch.zeros((1, 1, 6, 6, 6), dtype=torch.long)
    atlas[..., 0:2, :, :], atlas[..., 2:4, :, :], atlas[..., 4:6, :, :] = 171, 41, 42
    attr = (atlas == 171) * 3.0 + (atlas == 41) * 2.0 + (atlas == 42) * 1.0
    attr = attr.float() + 0.01 * torch.rand(attr.shape, generator=torch.Generator().manual_seed(0))
    gt = atlas == 171
    return score_metrics(attr, gt, proto.metrics, proto.scoring, spacing=(4.0, 4.0, 4.0), atlas=atlas,
                         true_region=[171], lateral_pairs={41: 42, 42: 41}, task_params=task_params)


def test_the_tasks_reference_reaches_the_metric_and_is_skipped_without_one():
    right = _scores({"rank_biased_overlap": {"reference": [171, 41]}})
    wrong = _scores({"rank_biased_overlap": {"reference": [41, 171]}})
    # the map ranks 171 first: the reference that agrees scores higher than the one that does not
    assert right["rank_biased_overlap"].item() > wrong["rank_biased_overlap"].item()
    assert right["rank_biased_overlap"].item() == pytest.approx(1.0)
    none = _scores({})
    assert "rank_biased_overlap" not in none and "relevance_rank_accuracy" in none
