"""Every shipped protocol's criteria are calibrated: the oracle map (the ground truth itself) passes
and the random map fails, scored with the protocol's own metrics and statistics."""
import numpy as np
import pandas as pd
import pytest
import torch

from neuroxai.protocol.schema import list_protocols
from neuroxai.protocol.stages.attribute import score_metrics
from neuroxai.protocol.verdict import assemble_results
from neuroxai.report.schema import Sanity, Validity
from neuroxai.scoring import score
from neuroxai.scoring.localization import METRIC_INFO
from neuroxai.tasks.base import TaskData

N, S = 24, 16


def _masks():
    g = torch.Generator().manual_seed(0)
    m = torch.zeros(N, 1, S, S, S, dtype=torch.bool)
    for i in range(N):
        c = torch.randint(3, S - 5, (3,), generator=g)
        m[i, 0, c[0]:c[0] + 3, c[1]:c[1] + 3, c[2]:c[2] + 2] = True
    return m


class _Model:
    metrics = {"auroc": 0.95, "auroc_ci_low": 0.9, "auroc_ci_high": 1.0, "at_chance": False}


def _results(proto):
    mask = _masks()
    # metrics that need an atlas (region_rank, region_match) are not scored on these masks; each
    # metric under its own scoring (the protocol's, or the entry's own), as the attribute stage does
    metrics = [m for m in proto.metrics if "atlas" not in METRIC_INFO[m.name].needs]
    ids = [f"s{i:02d}" for i in range(N)]
    rows = []
    for mspec in proto.methods:
        if mspec.name not in ("oracle", "random"):
            continue
        attr = mask.float() if mspec.name == "oracle" else torch.rand(mask.shape, generator=torch.Generator().manual_seed(1))
        s = score_metrics(attr, mask, metrics, proto.scoring, spacing=(2.0, 2.0, 2.0))
        for k, v in s.items():
            rows += [(sid, mspec.key, k, float(x)) for sid, x in zip(ids, v)]
    df = pd.DataFrame(rows, columns=["subject_id", "method", "metric", "value"])
    task = TaskData("region_volume", ids, np.arange(N) % 2, np.array(["test"] * N), "classification", 2,
                    np.ones(N, bool), ("segmentation",), lambda b: None)
    return assemble_results(proto, {}, {"t": task}, {"t": _Model()}, {"t": df}, {},
                            data_info={"source": "test", "n_subjects": N})


# a reference protocol has no ground truth: its calibration (the occlusion map itself scores the
# maximum, a random map near chance) is tests/scoring/test_reference_ranking.py's
@pytest.mark.parametrize("proto", [p for p in list_protocols() if p.kind != "reference"], ids=lambda p: p.id)
def test_oracle_passes_and_random_fails_every_shipped_protocol(proto):
    names = {m.name for m in proto.methods}
    assert {"oracle", "random"} <= names, "every shipped protocol carries both baselines"
    by = {m.name: m for m in _results(proto).methods}
    oracle, rnd = by["oracle"], by["random"]
    applicable = [c for c in oracle.criteria if c.applicable]
    assert applicable and all(c.passed is True for c in applicable), oracle.criteria
    assert oracle.verdict == "PASS"
    assert rnd.verdict == "FAIL"
    assert any(c.passed is False and c.kind != "beats_random" for c in rnd.criteria), \
        "the random map must fail on its score, not only because it cannot beat itself"


def _two_task_results(proto, validity, good_method_on_pc: bool):
    """Tasks ``t`` (region volume) and ``pc`` (positive control); the method under test
    (``gradient``) gives a random map on ``t`` and, if asked, the oracle map on ``pc``."""
    mask = _masks()
    metrics = {m.name: dict(m.params) for m in proto.metrics}
    ids = [f"s{i:02d}" for i in range(N)]
    frames, tasks, models = {}, {}, {}
    for tid, tname in (("t", "region_volume"), ("pc", "positive_control")):
        rows = []
        for key in ("gradient", "random", "oracle"):
            if key == "oracle" or (key == "gradient" and tid == "pc" and good_method_on_pc):
                attr = mask.float() + 0.01 * torch.rand(mask.shape, generator=torch.Generator().manual_seed(3))
            else:
                attr = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1 if key == "random" else 2))
            s = score(attr, mask, metrics, spacing=(2.0, 2.0, 2.0))
            rows += [(sid, key, k, float(x)) for k, v in s.items() for sid, x in zip(ids, v)]
        frames[tid] = pd.DataFrame(rows, columns=["subject_id", "method", "metric", "value"])
        tasks[tid] = TaskData(tname, ids, np.arange(N) % 2, np.array(["test"] * N), "classification", 2,
                              np.ones(N, bool), ("segmentation",), lambda b: None)
        models[tid] = _Model()
    sanity = {tid: {"gradient": Sanity(layers=["a"], similarity=[0.1], final_similarity=0.1,
                                       threshold=0.5, passed=True, measure="spearman")} for tid in tasks}
    return assemble_results(proto, {}, tasks, models, frames, sanity,
                            data_info={"source": "test", "n_subjects": N}, validity=validity)


def _valid(passed=True) -> Validity:
    return Validity(metric="auroc", chance=0.5, n_subjects=N, performance={}, mean_abs_delta={},
                    criteria=[], passed=passed,
                    reason="the model relies on the ground truth" if passed else
                    "the model does not rely on the ground-truth region, so localization cannot be judged")


def _by(results):
    return {(m.task, m.method): m for m in results.methods}


@pytest.fixture(scope="module")
def quick_no_null():
    from neuroxai.protocol.schema import load_protocol

    p = load_protocol("quick").model_copy(deep=True)
    p.methods = [m for m in p.methods if m.name in ("gradient", "random", "oracle")]
    return p


def test_a_method_never_fails_for_the_models_fault(quick_no_null):
    r = _two_task_results(quick_no_null, {"t": _valid(False), "pc": _valid(True)}, good_method_on_pc=True)
    by = _by(r)
    assert by[("t", "gradient")].verdict == "INCONCLUSIVE"
    assert "does not rely on the ground-truth region" in by[("t", "gradient")].verdict_reason
    assert by[("t", "oracle")].verdict == "PASS" and by[("t", "random")].verdict == "FAIL"
    assert by[("pc", "gradient")].verdict == "PASS"
    assert r.overall.criteria_reachable is True


def test_criteria_unreachable_on_the_positive_control_turn_fails_into_inconclusive(quick_no_null):
    r = _two_task_results(quick_no_null, {"t": _valid(), "pc": _valid()}, good_method_on_pc=False)
    by = _by(r)
    assert by[("pc", "gradient")].verdict == "FAIL"  # the positive control itself stays a FAIL
    assert by[("t", "gradient")].verdict == "INCONCLUSIVE"
    assert "criteria unreachable" in by[("t", "gradient")].verdict_reason
    assert r.overall.criteria_reachable is False
    # With a method that passes the positive control, the same random-level map FAILs on t.
    r2 = _two_task_results(quick_no_null, {"t": _valid(), "pc": _valid()}, good_method_on_pc=True)
    assert _by(r2)[("t", "gradient")].verdict == "FAIL"
    reason = _by(r2)[("t", "gradient")].verdict_reason
    assert "at fault: the method" in reason and "relies on the ground truth" in reason
    assert "criteria are reachable" in reason
