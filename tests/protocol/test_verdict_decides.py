"""A verdict depends only on the method's maps and the truth (issue 21): its correction family is
its own acceptance comparisons, the data must be able to decide before a method FAILs, the oracle
failing makes a task undecidable, and the overall verdict and exit code add up."""
from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from neuroxai.cli import app
from neuroxai.protocol.audit import run_audit
from neuroxai.protocol.schema import Protocol, load_protocol
from neuroxai.protocol.verdict import min_attainable_p, overall_verdict, subjects_needed

runner = CliRunner()
AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def _audit_protocol(**stats) -> Protocol:
    """audit.yaml with the sign-flip permutation test (deterministic, fast at small n)."""
    p = load_protocol("audit")
    return p.model_copy(update={"statistics": p.statistics.model_copy(
        update={"test": "permutation", "bootstrap": 300, **stats})})


def _mask(i: int) -> np.ndarray:
    m = np.zeros((16, 16, 16), np.uint8)
    m[3 + i % 3:8 + i % 3, 4:9, 5 + i % 2:10 + i % 2] = 1
    return m


def _write_study(root: Path, n: int, methods=("truth", "good", "noise"), seed: int = 0) -> Path:
    """``n`` subjects: masks, and per-method map folders. ``truth``: the mask itself as a map;
    ``good``: a blob on the mask plus noise; ``noise``: noise; ``shifted``: a blob elsewhere."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        m = _mask(i)
        nib.save(nib.Nifti1Image(m, AFF), _mk(root / "masks" / f"sub-{i:02d}_mask.nii.gz"))
        for kind in methods:
            if kind == "truth":
                a = m.astype(np.float32)
            elif kind == "good":
                a = (m * (1 + rng.random(m.shape)) + 0.3 * rng.random(m.shape)).astype(np.float32)
            elif kind == "shifted":
                a = np.roll(m, 6, axis=0).astype(np.float32) + 0.01 * rng.random(m.shape).astype(np.float32)
            else:
                a = rng.random(m.shape).astype(np.float32)
            nib.save(nib.Nifti1Image(a, AFF), _mk(root / "maps" / kind / f"sub-{i:02d}_map.nii.gz"))
    return root


def _mk(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _audit(root: Path, out: Path, proto=None):
    return run_audit(root / "maps", root / "masks", out, protocol=proto or _audit_protocol())


def _method(res, key: str):
    return next(m for m in res.results.methods if m.method == key)


def _criteria(m) -> list[tuple]:
    return [(c.kind, c.passed, c.observed, c.decidable, c.n_needed) for c in m.criteria]


# ------------------------------------------------------------------ the smallest attainable p


def test_the_smallest_attainable_p_is_the_tests_own():
    # Wilcoxon, exact: all n differences positive gives 1/2^n.
    for n in range(1, 13):
        assert min_attainable_p(n, "wilcoxon") == pytest.approx(0.5 ** n, rel=1e-12)
    p = load_protocol("quick")  # holm over a method's two comparisons (random, null model), alpha 0.01
    # 2 · 1/2^n < 0.01  <=>  n ≥ 8 ;  1 · 1/2^n < 0.01  <=>  n ≥ 7
    assert subjects_needed(2, 0.01, p) == 8
    assert subjects_needed(1, 0.01, p) == 7
    assert subjects_needed(20, 0.01, p) == 11  # the old task-wide family of 20 comparisons


# ------------------------------------------------------------------ n = 2 … 12


@pytest.mark.parametrize("n", list(range(2, 13)))
def test_maps_equal_to_the_truth_and_the_oracle_never_fail(tmp_path, n):
    """Audit (one acceptance test per method: alpha 0.01 needs 2^-n < 0.01, n ≥ 7): below that the
    truth-as-map and the oracle are INCONCLUSIVE naming 7 subjects, from 7 on they PASS."""
    res = _audit(_write_study(tmp_path / "s", n, methods=("truth",)), tmp_path / "o")
    for key in ("truth", "oracle"):
        m = _method(res, key)
        assert m.verdict != "FAIL"
        if n >= 7:
            assert m.verdict == "PASS", (key, n, m.verdict_reason)
        else:
            assert m.verdict == "INCONCLUSIVE", (key, n)
            c = next(c for c in m.criteria if c.kind == "beats_random")
            assert c.decidable is False and c.n_needed == 7 and c.passed is None
            assert f"{n} subjects cannot reach p < 0.01" in m.verdict_reason and "7 can" in m.verdict_reason
    # the overall verdict and its exit code follow: INCONCLUSIVE (3) below n = 7, PASS (0) from it
    assert (res.results.overall.verdict, res.exit_code) == (("PASS", 0) if n >= 7 else ("INCONCLUSIVE", 3))
    assert res.results.overall.n_fail == 0


def test_validate_needs_one_more_subject_for_two_acceptance_tests():
    """A method judged against the random map and the null model: Holm over its own 2 tests; the
    family never includes other methods, so n = 8 decides, as 2/2^8 < 0.01 ≤ 2/2^7."""
    from neuroxai.protocol.verdict import _correct, _criterion
    from neuroxai.report.schema import Comparison, MethodResult, MetricSummary

    proto = load_protocol("quick")
    for n, expect in ((7, None), (8, True)):
        p_min = min_attainable_p(n, "wilcoxon")
        rec = MetricSummary(mean=1, ci_low=1, ci_high=1, n=n, comparisons={
            "chance_map": Comparison(p=p_min, n_pairs=n), "null_model": Comparison(p=p_min, n_pairs=n)})
        e = MethodResult(task="t", method="m", name="gradient", is_baseline=False,
                         metrics={"relevance_rank_accuracy": rec}, criteria=[], verdict="INCONCLUSIVE")
        _correct([e], proto, no_model=False)
        crit = [_criterion(c, e, proto, {}) for c in proto.acceptance if c.kind.startswith("beats")]
        assert [c.passed for c in crit] == [expect, expect]
        if expect is None:
            assert all(c.n_needed == 8 and not c.decidable for c in crit)


# ------------------------------------------------------------------ independence


def test_an_audit_verdict_does_not_move_with_other_map_folders_or_metrics(tmp_path):
    base = _write_study(tmp_path / "s", 10, methods=("good", "noise", "shifted", "truth"))
    alone = tmp_path / "alone"
    shutil.copytree(base / "maps" / "good", alone / "maps" / "good")
    shutil.copytree(base / "masks", alone / "masks")
    r_alone = _audit(alone, tmp_path / "o1")
    r_all = _audit(base, tmp_path / "o2")
    proto = _audit_protocol()
    fewer = proto.model_copy(update={"metrics": [m for m in proto.metrics if m.name == "relevance_rank_accuracy"]})
    r_fewer = _audit(base, tmp_path / "o3", fewer)
    ref = _method(r_alone, "good")
    assert ref.verdict == "PASS"
    for r in (r_all, r_fewer):
        m = _method(r, "good")
        assert m.verdict == ref.verdict and _criteria(m) == _criteria(ref)
        c, c0 = (m.metrics["relevance_rank_accuracy"].comparisons["chance_map"],
                 ref.metrics["relevance_rank_accuracy"].comparisons["chance_map"])
        assert (c.p, c.p_adjusted, c.family_size) == (c0.p, c0.p_adjusted, 1)
    # at n = 10 the old task-wide family (4 metrics × 5 maps) could not reach p < 0.01 at all
    assert subjects_needed(4 * 5, 0.01, proto) > 10


def test_family_task_is_explicit_and_corrects_across_methods(tmp_path):
    base = _write_study(tmp_path / "s", 10, methods=("good", "noise", "truth"))
    r = _audit(base, tmp_path / "o", _audit_protocol(family="task"))
    fam = {m.method: m.metrics["relevance_rank_accuracy"].comparisons["chance_map"].family_size
           for m in r.results.methods if "chance_map" in m.metrics["relevance_rank_accuracy"].comparisons}
    assert fam == {"good": 3, "noise": 3, "truth": 3, "oracle": 1}  # baselines stay in their own
    # a metric no criterion uses is descriptive: uncorrected, and it decides nothing
    d = _method(r, "good").metrics["auroc"].comparisons["chance_map"]
    assert d.p_adjusted is None and d.family_size == 0


def test_a_validate_verdict_does_not_move_with_other_methods_or_metrics(tmp_path, tiny_protocol):
    """The same trained model (resumed run folder), scored with 2 or 3 methods and 1 or 2 metrics:
    the gradient's verdict, criteria and p values are the same."""
    import yaml

    from neuroxai.protocol.runner import run_protocol

    spec = yaml.safe_load(Path(tiny_protocol).read_text())
    variants = {
        "three": spec,
        "two": {**spec, "methods": [m for m in spec["methods"] if m["name"] != "smoothgrad"]},
        "metric": {**spec, "metrics": [m for m in spec["metrics"] if m["name"] != "auroc"]},
    }
    out = {}
    for name, s in variants.items():
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(s))
        res = run_protocol(p, tmp_path / f"run_{name}", report=False)
        m = next(x for x in res.results.methods if x.task == "hippo" and x.method == "gradient")
        rec = m.metrics["relevance_mass_accuracy"]
        out[name] = (m.verdict, _criteria(m), {k: (c.p, c.p_adjusted, c.family_size)
                                                for k, c in rec.comparisons.items()})
    assert out["two"] == out["three"] == out["metric"]


# ------------------------------------------------------------------ the oracle and the exit codes


def test_the_oracle_failing_makes_a_fail_inconclusive():
    from neuroxai.protocol.verdict import _ceiling_rule
    from neuroxai.report.schema import MethodResult

    def mr(key, verdict, base):
        return MethodResult(task="t", method=key, name=key, is_baseline=base, metrics={}, criteria=[],
                            verdict=verdict, verdict_reason="failed: x")

    es = [mr("oracle", "FAIL", True), mr("gradcam", "FAIL", False), mr("sg", "PASS", False)]
    _ceiling_rule(es, "oracle")
    assert [e.verdict for e in es] == ["FAIL", "INCONCLUSIVE", "PASS"]
    assert "the oracle" in es[1].verdict_reason and "cannot decide" in es[1].verdict_reason
    es = [mr("oracle", "PASS", True), mr("gradcam", "FAIL", False)]
    _ceiling_rule(es, "oracle")
    assert es[1].verdict == "FAIL"


@pytest.mark.parametrize("verdicts, expected", [
    (["PASS", "PASS"], ("PASS", 0)),
    (["PASS", "FAIL"], ("FAIL", 1)),
    (["INCONCLUSIVE", "FAIL"], ("FAIL", 1)),
    (["PASS", "INCONCLUSIVE"], ("INCONCLUSIVE", 3)),
    (["INCONCLUSIVE", "INCONCLUSIVE"], ("INCONCLUSIVE", 3)),
    ([], ("INCONCLUSIVE", 3)),
])
def test_the_exit_code_table(verdicts, expected):
    assert overall_verdict(verdicts) == expected


def test_every_method_inconclusive_is_exit_3_through_the_cli(tmp_path):
    root = _write_study(tmp_path / "s", 4, methods=("truth", "good"))
    r = runner.invoke(app, ["audit", "--maps", str(root / "maps"), "--masks", str(root / "masks"),
                            "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 3, r.output
    from neuroxai.report.schema import read_results

    res = read_results(tmp_path / "o" / "results.json")
    assert res.overall.verdict == "INCONCLUSIVE" and res.overall.n_fail == 0
    assert res.overall.n_inconclusive == 2


def test_an_interval_straddling_the_threshold_is_undecided_and_names_the_n():
    from neuroxai.protocol.verdict import _ci_decision
    from neuroxai.report.schema import Criterion

    c = Criterion(kind="scaled_ci_above", text="x")
    _ci_decision(c, 0.15, 0.08, 0.22, 0.1, 40)
    # the lower side 0.07 must shrink to |0.15 − 0.1| = 0.05: n · (0.07/0.05)² = 78.4 → 79
    assert c.passed is None and c.decidable is False and c.n_needed == 79
    # an asymmetric interval below the threshold: its upper side (0.025) against the gap (0.024),
    # never fewer subjects than now
    c2 = Criterion(kind="scaled_ci_above", text="x")
    _ci_decision(c2, 0.076, 0.054, 0.101, 0.1, 50)
    assert c2.n_needed == 55
    c3 = Criterion(kind="scaled_ci_above", text="x")
    _ci_decision(c3, 0.08, 0.05, 0.10, 0.1, 50)  # the estimate alone would say 50: one more
    assert c3.n_needed == 51
    assert c.margin == pytest.approx(-0.02)
    c = Criterion(kind="scaled_ci_above", text="x")
    _ci_decision(c, 0.05, 0.01, 0.09, 0.1, 40)
    assert c.passed is False and c.decidable
    c = Criterion(kind="scaled_ci_above", text="x")
    _ci_decision(c, 0.3, 0.12, 0.5, 0.1, 40)
    assert c.passed is True and c.margin == pytest.approx(0.02)


def test_criteria_that_can_never_pass_are_refused_at_load(tmp_path):
    from neuroxai.errors import ConfigError

    base = (Path(__file__).parents[2] / "protocols" / "quick.yaml").read_text()
    for bad, word in (("threshold: 0.1}", "threshold: 5}"), ("threshold: 0.1}", "threshold: .nan}")):
        p = tmp_path / "p.yaml"
        p.write_text(base.replace(bad, word, 1))
        with pytest.raises(ConfigError) as e:
            load_protocol(p)
        assert "threshold" in str(e.value)


def test_holds_share_is_the_share_of_resamples_on_the_passing_side():
    from neuroxai.protocol.verdict import _share_mean_at_least

    p = load_protocol("quick")
    assert _share_mean_at_least(np.ones(10), 0.1, p) == 1.0
    assert _share_mean_at_least(np.zeros(10), 0.1, p) == 0.0
    v = np.r_[np.zeros(50), np.ones(50)]  # mean 0.5: a threshold at the mean holds about half the time
    assert 0.35 < _share_mean_at_least(v, 0.5, p) < 0.65


def test_scores_per_class_show_a_sign_convention_that_parts_the_classes():
    from neuroxai.protocol.verdict import _by_class

    ids = [f"s{i:02d}" for i in range(20)]
    lab = [i % 2 for i in range(20)]
    rows = []
    for s, y in zip(ids, lab):
        rows += [(s, "m", "rra", 0.5 if y else 0.02, y), (s, "m", "rra_chance", 0.01, y),
                 (s, "flat", "rra", 0.3 + 0.001 * int(s[1:]), y), (s, "flat", "rra_chance", 0.01, y),
                 (s, "oracle", "rra", 1.0, y), (s, "oracle", "rra_chance", 0.01, y)]
    df = pd.DataFrame(rows, columns=["subject_id", "method", "metric", "value", "label"])
    from neuroxai.protocol.task_scores import TaskScores
    from neuroxai.report.scores import ScoreTable

    ts = TaskScores(ScoreTable.from_frame(df.assign(task="t")), "t")
    out = {(x.method, x.label): x for x in _by_class(ts, ["m", "flat"], "rra", "oracle")}
    assert out[("m", 1)].mean == pytest.approx(0.5) and out[("m", 0)].mean == pytest.approx(0.02)
    assert out[("m", 1)].scaled_mean == pytest.approx((0.5 - 0.01) / 0.99)
    assert out[("m", 0)].n == 10 and out[("m", 0)].p_classes_differ < 0.001
    assert out[("flat", 0)].p_classes_differ > 0.3  # an even map: the classes agree


# ------------------------------------------------------------------ a lower-is-better criterion


def _rank_table(n: int, n_regions: int, seed: int = 0) -> pd.DataFrame:
    """``region_rank`` per subject: ``on_target`` ranks the true region first (as the oracle),
    ``elsewhere`` last, the random map anywhere; chance (R + 1) / 2 for every map."""
    rng = np.random.default_rng(seed)
    ranks = {"oracle": np.ones(n), "on_target": np.ones(n) + (rng.random(n) < 0.2),
             "elsewhere": np.full(n, float(n_regions)) - (rng.random(n) < 0.2),
             "random": rng.integers(1, n_regions + 1, n).astype(float)}
    rows = []
    for key, r in ranks.items():
        for i, v in enumerate(r):
            rows += [(f"sub-{i:02d}", key, "region_rank", v),
                     (f"sub-{i:02d}", key, "region_rank_chance", (n_regions + 1) / 2)]
    return pd.DataFrame(rows, columns=["subject_id", "method", "metric", "value"])


@pytest.mark.parametrize("kind, margin", [("ci_above_chance", 2.0), ("scaled_ci_above", 0.1), ("beats_random", None)])
def test_a_lower_is_better_criterion_is_judged_the_right_way(kind, margin):
    """region_rank (1 = best) as the acceptance criterion: a map on the target PASSes, a map
    elsewhere FAILs (the old verdict read every metric as higher-is-better: the reverse)."""
    from types import SimpleNamespace

    from neuroxai.protocol.schema import MethodSpec, MetricSpec
    from neuroxai.protocol.verdict import assemble_results

    crit = {"kind": kind, "metric": "region_rank"}
    crit.update({"ci_above_chance": {"margin": margin}, "scaled_ci_above": {"threshold": margin},
                 "beats_random": {"alpha": 0.01}}[kind])
    base = _audit_protocol()
    proto = Protocol.model_validate({**base.model_dump(), "metrics": [{"name": "region_rank"}],
                                     "methods": [{"name": "random", "params": {"seed": 0}}, {"name": "oracle"},
                                                 {"name": "gradient", "label": "on_target"},
                                                 {"name": "gradient", "label": "elsewhere"}],
                                     "acceptance": [crit]})
    n = 30
    task = SimpleNamespace(name="audit", kind="audit", info={}, scorable=np.ones(n, bool),
                           subject_ids=[f"sub-{i:02d}" for i in range(n)], summary=dict)
    res = assemble_results(proto, {}, {"t": task}, {"t": SimpleNamespace(metrics={})}, {"t": _rank_table(n, 40)},
                           {}, data_info={"source": "test", "n_subjects": n}, kind="audit")
    verdicts = {m.method: m.verdict for m in res.methods}
    assert res.metric_facts["region_rank"].higher_is_better is False  # recorded for the report
    assert verdicts["on_target"] == "PASS" and verdicts["elsewhere"] == "FAIL"
    assert verdicts["oracle"] == "PASS" and verdicts["random"] == "FAIL"
    c = res.method("t", "on_target").criteria[0]
    if kind == "ci_above_chance":  # written in the metric's own units: upper bound ≤ 20.5 − 2
        assert c.threshold == pytest.approx(18.5) and c.observed < 2 and c.margin > 16
        assert "upper CI bound ≤ chance − 2" in c.text
    if kind == "beats_random":
        assert "lower (better) than the random map" in c.text and c.observed == pytest.approx(1 / 10001)  # the floor
    # the scaled read-out runs from chance (0) to the oracle (1) whichever way the metric runs
    rec = res.method("t", "elsewhere").metrics["region_rank"]
    assert rec.scaled_mean < -0.8 and res.method("t", "oracle").metrics["region_rank"].scaled_mean == 1.0
