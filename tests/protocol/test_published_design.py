"""The CPU-sized published design (protocols/siegel2025-cpu.yaml) runs end to end at test size."""
import pytest

from neuroxai.protocol.runner import run_protocol
from neuroxai.protocol.schema import load_protocol


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    p = load_protocol("siegel2025-cpu")
    small = p.model_copy(deep=True)
    small.data.cohort.n, small.data.cohort.spacing_mm = 48, 8.0
    small.model.training.update(epochs=2)
    for m in small.methods:
        if m.name == "smoothgrad":
            m.params["n_samples"] = 2
    small.statistics.bootstrap = 200
    small.sanity.model_randomization.n_subjects = 2
    small.validity.n_placements = 2
    small.run.device = "cpu"
    return run_protocol(small, tmp_path_factory.mktemp("s25cpu"), report=False)


def test_published_design_keeps_its_tasks_methods_and_baselines(run):
    r = run.results
    assert [t.id for t in r.tasks] == ["hippocampus_volume", "lesion_presence", "positive_control"]
    names = {m.name for m in r.methods}
    assert {"gradcam", "lrp", "smoothgrad", "random", "oracle"} == names
    for t in r.tasks:
        assert t.validity is not None and t.validity.criteria
        prof = t.distance_profile
        assert prof.distances_mm[0] == 0.0 and len(prof.volume_share) == len(prof.distances_mm)
        assert prof.methods["oracle"][0] == pytest.approx(1.0)
    for m in r.methods:
        if m.name == "oracle":
            assert m.metrics["relevance_rank_accuracy"].mean == pytest.approx(1.0)
            assert m.metrics["relevance_rank_accuracy"].scaled_mean == pytest.approx(1.0)
        assert m.verdict in ("PASS", "FAIL", "INCONCLUSIVE")
    gt = r.task("hippocampus_volume").ground_truth
    assert "hippocampus" in gt.lower() or "signal support" in gt
