"""A metric carries its own facts: registering it is the only edit (report help, direction, needs)."""
from __future__ import annotations

import pytest
import torch

from neuroxai.report.build import _lower_is_better, _metric_help, inspect_rows
from neuroxai.scoring import score
from neuroxai.scoring.localization import METRIC_INFO, METRICS, metric


@pytest.fixture(autouse=True)
def new_metric():
    """A metric a user adds: registered for this module's tests only (the registry stays clean)."""
    @metric("test_distance_to_peak", higher_is_better=False, help="distance of the peak to the mask (test)",
            chance="half the brain's extent", scoring_defaults={"tolerance_mm": "pointing_tolerance_mm"})
    def _distance_to_peak(attr, mask, valid, *, spacing=None, tolerance_mm: float = 0.0):
        b = attr.shape[0]
        return (torch.full((b,), 2.0 + tolerance_mm, dtype=torch.float64),
                torch.full((b,), 5.0, dtype=torch.float64))

    yield
    METRICS._entries.pop("test_distance_to_peak")
    METRIC_INFO.pop("test_distance_to_peak")


def test_a_registered_metric_reaches_scoring_report_and_direction(small_results):
    r = small_results({}, acceptance=[], metrics=[])  # results without recorded facts: the registry's
    assert METRIC_INFO["test_distance_to_peak"].scoring_defaults == (("tolerance_mm", "pointing_tolerance_mm"),)
    assert _metric_help(r, "test_distance_to_peak") == ("distance of the peak to the mask (test)",
                                                        "half the brain's extent")
    assert _lower_is_better(r, "test_distance_to_peak") and _lower_is_better(r, "region_rank")
    assert not _lower_is_better(r, "auroc")
    x = torch.rand(2, 1, 6, 6, 6)
    m = torch.zeros_like(x, dtype=torch.bool)
    m[:, :, 2:4, 2:4, 2:4] = True
    s = score(x, m, {"test_distance_to_peak": {"tolerance_mm": 1.0}})
    assert s["test_distance_to_peak"].tolist() == [3.0, 3.0]


def test_the_report_picks_best_subjects_in_the_metrics_direction(small_results):
    res = small_results({"m": {"test_distance_to_peak": {}}}, acceptance=[], metrics=["test_distance_to_peak"],
                        scores={"task": ["t"] * 3, "subject_id": ["a", "b", "c"], "method": ["m"] * 3,
                                "metric": ["test_distance_to_peak"] * 3, "value": [5.0, 1.0, 3.0]})
    (row,) = inspect_rows(res)
    assert row["best"].startswith("b") and row["worst"].startswith("a")  # lower is better


def test_metric_params_meet_needs_and_defaults_from_the_registered_facts():
    from types import SimpleNamespace

    from neuroxai.scoring.localization import metric_params

    sc = SimpleNamespace(pointing_tolerance_mm=4.0)
    specs = {"pointing_game": {}, "region_rank": {"reduce": "sum"}, "auroc": {}}
    seg = torch.tensor([[[[[0.0, 41.0], [42.0, 3.0]]]]])  # the store gives float labels
    got = metric_params(specs, sc, atlas=seg, true_region=[41, 42])
    assert got["pointing_game"] == {"tolerance_mm": 4.0} and got["auroc"] == {}
    assert got["region_rank"]["reduce"] == "sum" and got["region_rank"]["true_region"] == [41, 42]
    assert got["region_rank"]["atlas"].dtype == torch.int64
    assert "region_rank" not in metric_params(specs, sc)                            # no atlas
    assert "region_rank" not in metric_params(specs, sc, atlas=seg, true_region=None)  # a lesion task
    assert metric_params({"pointing_game": {"tolerance_mm": 1.0}}, sc)["pointing_game"] == {"tolerance_mm": 1.0}


def test_a_metric_needing_a_reference_is_skipped_without_one():
    """rank_biased_overlap needs a reference ranking (the brain-age task gives its true ordering):
    a task without one (artificial disease, lesions) leaves the metric out instead of failing."""
    import torch

    from neuroxai.scoring.localization import metric_params

    atlas = torch.ones(1, 1, 4, 4, 4, dtype=torch.long)
    specs = {"rank_biased_overlap": {}, "relevance_rank_accuracy": {}}
    assert set(metric_params(specs, atlas=atlas, true_region=[1])) == {"relevance_rank_accuracy"}
    got = metric_params({"rank_biased_overlap": {"reference": [1]}}, atlas=atlas, true_region=[1])
    assert got["rank_biased_overlap"]["reference"] == [1]
