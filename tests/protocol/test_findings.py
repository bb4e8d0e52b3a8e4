"""The "published findings" (Siegel et al. 2025) read under the study's scoring and under ours:
which metric each side reads, when a reading agrees, and the note where the two disagree."""
from __future__ import annotations

import pytest

from neuroxai.protocol.schema import Protocol
from neuroxai.protocol.verdict import published_findings
from neuroxai.report.schema import DistanceProfile, Finding, MethodResult, MetricSummary, ModelPerf, TaskResult

PROTO = Protocol.model_validate({
    "id": "t", "version": "1", "tasks": [{"id": "hv", "type": "positive_control"}],
    "methods": [{"name": "gradcam"}, {"name": "lrp", "label": "lrp_a"}, {"name": "lrp", "label": "lrp_b"},
                {"name": "smoothgrad"}],
    "metrics": [{"name": "relevance_mass_accuracy"}, {"name": "false_positive"}, {"name": "region_match"},
                {"name": "relevance_rank_accuracy", "scoring": {"polarity": "absolute"}},
                {"name": "relevance_mass_accuracy", "label": "rma_plain", "scoring": {"polarity": "absolute"}}],
    "scoring": {"preset": "siegel2025"},
    "acceptance": [{"kind": "scaled_ci_above", "metric": "relevance_rank_accuracy", "threshold": 0.2}],
})


def _s(scaled=None, ci=None, mean=None, n=40):
    lo, hi = ci if ci else (None, None)
    return MetricSummary(mean=mean, ci_low=lo if mean is not None else None, ci_high=hi if mean is not None else None,
                         n=n, scaled_mean=scaled, scaled_ci_low=lo if scaled is not None else None,
                         scaled_ci_high=hi if scaled is not None else None)


def _m(key, name, verdict, metrics):
    return MethodResult(task="hv", method=key, name=name, is_baseline=False, metrics=metrics, criteria=[],
                        verdict=verdict)


def _methods():
    return [
        # GradCAM: localizes under the preset's RMA, not under rank accuracy; RMA without the preset
        # does not localize either, so the preset's steps make the difference
        _m("gradcam", "gradcam", "FAIL", {
            "relevance_mass_accuracy": _s(0.45, (0.30, 0.60)), "region_match": _s(mean=0.7, ci=(0.5, 0.8)),
            "relevance_rank_accuracy": _s(0.05, (0.01, 0.15)), "rma_plain": _s(0.04, (0.0, 0.1))}),
        # LRP a: false positives in every subject (a constant rate: no bootstrap interval)
        _m("lrp_a", "lrp", "FAIL", {"false_positive": _s(mean=1.0, ci=(None, None)),
                                    "relevance_mass_accuracy": _s(0.2, (0.1, 0.3)),
                                    "relevance_rank_accuracy": _s(0.1, (0.0, 0.3))}),
        # LRP b: fewer false positives than SmoothGrad, but more far relevance
        _m("lrp_b", "lrp", "FAIL", {"false_positive": _s(mean=0.1, ci=(0.02, 0.2)),
                                    "relevance_rank_accuracy": _s(0.1, (0.0, 0.3))}),
        # SmoothGrad: accurate under ours (CI ≥ 0.2), undecided under the preset (CI straddles 0.2)
        _m("smoothgrad", "smoothgrad", "PASS", {
            "false_positive": _s(mean=0.5, ci=(0.35, 0.65)), "relevance_mass_accuracy": _s(0.3, (0.1, 0.5)),
            "relevance_rank_accuracy": _s(0.5, (0.3, 0.7))}),
    ]


def _tasks():
    prof = DistanceProfile(distances_mm=[0.0, 24.0], volume_share=[0.01, 0.5],
                           methods={"gradcam": [0.2, 0.9], "lrp_a": [0.1, 0.6], "lrp_b": [0.1, 0.7],
                                    "smoothgrad": [0.3, 0.8]})
    return [TaskResult(id="hv", type="positive_control", kind="classification", distance_profile=prof, n_subjects=40,
                       n_scored=40, n_excluded_from_scoring=0, model=ModelPerf(auroc=0.9))]


def _ev(findings, method, key):
    f = next(f for f in findings if f.method == method)
    return f, next(e for e in f.evidence if e.method == key)


def test_gradcam_read_by_the_studys_rma_and_by_our_rank_accuracy():
    fs = published_findings(_methods(), _tasks(), PROTO)
    f, e = _ev(fs, "gradcam", "gradcam")
    assert (e.study.metric, e.study.scoring_text) == ("relevance_mass_accuracy", "preset siegel2025")
    assert (e.study.value, e.study.ci_low, e.study.reference) == (0.45, 0.30, 0.2)  # the protocol's threshold
    assert e.study.agrees is False and e.study.extra == {"region_match": 0.7}  # it localizes: finding not seen
    assert (e.ours.metric, e.ours.scoring_text, e.ours.agrees) == ("relevance_rank_accuracy", "|map|", True)
    assert "the preset's steps make the difference" in e.scorings_note and "0.040" in e.scorings_note
    assert (f.level_study, f.level_ours) == ("no", "yes")
    assert f.agree is True  # the verdict-based reading is unchanged: GradCAM FAILs


def test_the_metric_makes_the_difference_when_plain_rma_agrees_with_the_preset():
    ms = _methods()
    ms[0].metrics["rma_plain"] = _s(0.5, (0.35, 0.65))
    _, e = _ev(published_findings(ms, _tasks(), PROTO), "gradcam", "gradcam")
    assert "the metric makes the difference" in e.scorings_note


def test_lrp_read_by_the_false_positive_rate_and_by_the_far_share():
    fs = published_findings(_methods(), _tasks(), PROTO)
    f, a = _ev(fs, "lrp", "lrp_a")
    # every subject a false positive (no interval) against SmoothGrad's 0.5: agrees
    assert (a.study.metric, a.study.value, a.study.reference, a.study.agrees) == ("false_positive", 1.0, 0.5, True)
    # far share: 1 − 0.6 = 0.4 against SmoothGrad's 0.2
    assert a.ours.value == pytest.approx(0.4) and a.ours.reference == pytest.approx(0.2) and a.ours.agrees is True
    assert a.ours.extra["chance_map"] == pytest.approx(0.5)
    assert a.scorings_note == ""
    _, b = _ev(fs, "lrp", "lrp_b")
    assert b.study.agrees is False and b.ours.agrees is True  # CI [0.02, 0.2] wholly below 0.5
    assert "any single voxel beyond the dilated ground truth" in b.scorings_note and "0.100" in b.scorings_note
    assert f.level_study == "partly (1 of 2 task × method readings)" and f.level_ours == "yes"


def test_smoothgrad_undecided_under_the_preset():
    f, e = _ev(published_findings(_methods(), _tasks(), PROTO), "smoothgrad", "smoothgrad")
    assert e.study.agrees is None and e.ours.agrees is True and e.scorings_note == ""
    assert (f.level_study, f.agree_study, f.level_ours, f.agree_ours) == ("cannot tell", None, "yes", True)


def test_without_a_protocol_or_a_preset_the_readings_stay_empty():
    fs = published_findings(_methods(), _tasks())
    assert all(e.study is None and e.ours is None for f in fs for e in f.evidence)
    assert all(f.level_study == "" for f in fs)
    plain = PROTO.model_copy(update={"scoring": PROTO.metrics[3].scoring})
    fs = published_findings(_methods(), _tasks(), plain)
    assert all(e.study is None for f in fs for e in f.evidence)
    assert next(f for f in fs if f.method == "smoothgrad").level_ours == "yes"


def test_a_1_4_findings_entry_is_still_read():
    """Readers of 1.x keep working: a 1.4 findings entry (no method, no readings) validates."""
    old = {"method": "gradcam", "finding": "x", "agree": True, "level": "yes", "n_tasks_judged": 1,
           "evidence": [{"task": "hv", "verdict": "FAIL", "agrees": True, "note": ""}]}
    fs = published_findings(_methods(), _tasks(), PROTO)
    f = Finding.model_validate(old)
    assert f.evidence[0].study is None and f.level_study == ""
    assert {"study", "ours", "scorings_note", "method"} <= set(fs[0].evidence[0].model_dump())


def test_the_report_shows_both_readings_and_the_note():
    import importlib.util
    from pathlib import Path

    from neuroxai.report.build import render_html

    spec = importlib.util.spec_from_file_location(
        "neuroxai_test_report_fixtures", Path(__file__).resolve().parents[1] / "report" / "_fixtures.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    results = fx.make_results()
    results.findings = published_findings(_methods(), _tasks(), PROTO)
    html = render_html(results, [])
    table = html[html.index('id="findings-scorings"'):]
    table = table[:table.index("</table>")]
    assert "relevance_mass_accuracy: 0.450 [0.300, 0.600] vs the threshold 0.200; region_match 0.700 — differs" in table
    assert "false_positive: 1.000 vs SmoothGrad&#39;s rate 0.500" in table
    assert "the preset&#39;s steps make the difference" in table
    assert "the study's scoring: no; ours: yes" in table
    results.findings = published_findings(_methods(), _tasks())  # no protocol: no second table
    assert 'id="findings-scorings"' not in render_html(results, [])


def test_lrp_whose_off_target_relevance_the_model_uses_is_not_artifactual():
    """The false-positive perturbation decides "artifactual": relevance the model uses is not."""
    from neuroxai.report.schema import OffTarget

    ms = _methods()
    before = {k: _ev(published_findings(ms, _tasks(), PROTO), "lrp", k)[1].agrees for k in ("lrp_a", "lrp_b")}
    assert before["lrp_a"] is True  # extensive: more far relevance than SmoothGrad, and it FAILs
    ms[1] = ms[1].model_copy(update={"off_target": OffTarget(n=20, n_with_fp=20, p=0.001, used=True)})
    ms[2] = ms[2].model_copy(update={"off_target": OffTarget(n=20, n_with_fp=20, p=0.4, used=False)})
    fs = published_findings(ms, _tasks(), PROTO)
    a, b = _ev(fs, "lrp", "lrp_a")[1], _ev(fs, "lrp", "lrp_b")[1]
    assert a.agrees is False and a.off_target_used is True and a.off_target_p == 0.001
    assert "used by the model" in a.note
    assert b.off_target_used is False and b.agrees == before["lrp_b"]
