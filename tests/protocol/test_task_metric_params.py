"""A task gives its own metric parameters (the brain-age task: the true aging order as
rank_biased_overlap's reference); the attribute stage hands them to the scoring."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import torch

from neuroxai.protocol.schema import load_protocol
from neuroxai.protocol.stages.attribute import _metric_kwargs


def test_the_tasks_reference_reaches_the_metric_and_is_skipped_without_one():
    proto = load_protocol("siegel2025-tasks")
    ctx = SimpleNamespace(protocol=proto, manifest=pd.DataFrame({"subject_id": ["s1"]}))
    store = SimpleNamespace(spacing=(4.0, 4.0, 4.0))
    batch = {"segmentation": torch.full((1, 1, 4, 4, 4), 41.0)}
    age = SimpleNamespace(region_ids=[171, 41], metric_params={"rank_biased_overlap": {"reference": [171, 41]}})
    kw = _metric_kwargs(ctx, store, batch, age)
    rbo = kw["metrics"]["rank_biased_overlap"]
    assert rbo["reference"] == [171, 41] and rbo["lateral_pairs"][41] == 42
    disease = SimpleNamespace(region_ids=[41, 42], metric_params={})
    assert "rank_biased_overlap" not in _metric_kwargs(ctx, store, batch, disease)["metrics"]
    assert "relevance_rank_accuracy" in _metric_kwargs(ctx, store, batch, disease)["metrics"]
