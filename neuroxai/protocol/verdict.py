"""Statistics and acceptance: per task × method × metric summaries, tests against the floors,
multiple-comparison correction, and the PASS / FAIL / INCONCLUSIVE verdict of each method, built
as the typed :class:`~neuroxai.report.schema.Results`."""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import torch

from ..attribution.baselines import is_baseline, role
from ..report.schema import (SCHEMA_VERSION, AuditInfo, ClassScores, Comparison, Criterion, DataInfo, DistanceProfile,
                             Finding, FindingEvidence, FindingReading, MethodResult, MetricFacts, MetricSummary,
                             ModelPerf, Overall,
                             PairwiseTest, ProtocolInfo, Provenance, Results, Sanity, TaskResult, Validity,
                             main_metric)
from .._memory import trim
from ..report.scores import ScoreTable
from .schema import Protocol
from .task_scores import TaskScores
from .stages.tasks import is_null

UNREACHABLE = ("criteria unreachable for this model: no method passed the positive control, so a "
               "FAIL here would not tell a bad method from criteria that nothing can meet")




def registered_name(proto: Protocol | None, key: str) -> str:
    """The registered metric behind a score key: a labelled entry's key is its label
    (``rma_ours`` → ``relevance_mass_accuracy``), an extra key its label plus the metric's suffix
    (``rm_weak`` → ``region_match_weak``)."""
    for m in (proto.metrics if proto is not None else ()):
        if m.label and (key == m.label or key.startswith(m.label + "_")):
            return m.name + key[len(m.label):]
    return key


def _better(metric: str) -> float:
    """+1 when a higher ``metric`` is better, −1 when lower is (a rank where 1 = best), as
    the metric registered it. Tests and one-sided criteria run on ``_better(m) · value``, so
    "better than" reads the same for every metric."""
    from ..scoring.localization import METRIC_INFO

    info = METRIC_INFO.get(metric)
    return 1.0 if info is None or info.higher_is_better else -1.0


def _best(metric: str) -> float:
    """The score of a perfect map (the top of the chance → oracle scale without an oracle)."""
    from ..scoring.localization import METRIC_INFO

    info = METRIC_INFO.get(metric)
    return 1.0 if info is None else float(info.best)


def _vals(ts: TaskScores, method: str | None, metric: str) -> pd.Series:
    """``method``'s ``metric`` per subject on one task (the seeds' mean)."""
    return ts.values(method, metric)


def _paired_p(a: pd.Series, b: pd.Series, proto: Protocol) -> tuple[float, int]:
    """One-sided p that ``a`` > ``b`` on the subjects both have (paired; returns the number of
    pairs), else, with no subject in common, the rank-sum test (0 pairs)."""
    from scipy import stats as sst

    from ..scoring.stats import paired_test

    common = a.index.intersection(b.index)
    st = proto.statistics
    if len(common):
        x = a.loc[common].to_numpy()
        y = b.loc[common].to_numpy()
        if np.allclose(x, y):
            return 1.0, len(common)
        p = paired_test(torch.tensor(np.array(x, dtype=np.float64)), torch.tensor(np.array(y, dtype=np.float64)),
                        method=st.test, alternative="greater",
                        n_perm=st.n_permutations, seed=st.seed)
        return float(p), len(common)
    if len(a) >= 3 and len(b) >= 3:
        return float(sst.mannwhitneyu(a.to_numpy(), b.to_numpy(), alternative="greater").pvalue), 0
    return float("nan"), 0


@functools.lru_cache(maxsize=4096)
def min_attainable_p(n: int, test: str, n_permutations: int = 10000, seed: int = 0) -> float:
    """The smallest one-sided p the protocol's paired test can give on ``n`` pairs: its p on ``n``
    distinct differences all in the favoured direction (Wilcoxon, exact: 1/2ⁿ; sign-flip
    permutation: about max(1/2ⁿ, 1/(n_perm + 1))). Computed by the test itself, so it follows
    whatever the test does."""
    from ..scoring.stats import paired_test

    if n < 1:
        return 1.0
    x = torch.arange(1, n + 1, dtype=torch.float64)
    return float(paired_test(x, torch.zeros_like(x), method=test, alternative="greater",
                             n_perm=n_permutations, seed=seed))


def subjects_needed(family_size: int, alpha: float, proto: Protocol, start: int = 1,
                    limit: int = 100000) -> int | None:
    """The smallest n ≥ ``start`` at which the paired test, corrected over ``family_size``
    comparisons (Holm's first step multiplies the smallest p by the family size), can reach
    p < ``alpha``; None if none up to ``limit``."""
    st = proto.statistics
    n = max(1, start)
    while n <= limit:
        if family_size * min_attainable_p(n, st.test, st.n_permutations, st.seed) < alpha:
            return n
        n = n + 1 if n < 64 else int(n * 1.25)
    return None


def _ci(values: np.ndarray, proto: Protocol) -> tuple[float, float, float]:
    from ..scoring.stats import bootstrap_ci

    st = proto.statistics
    if len(values) < 2:
        v = float(values.mean()) if len(values) else float("nan")
        return v, float("nan"), float("nan")
    est, lo, hi = bootstrap_ci(torch.tensor(np.asarray(values, dtype=np.float64)), n_boot=st.bootstrap,
                               level=st.ci_level, method=st.ci_method, seed=st.seed)
    return float(est), float(lo), float(hi)


def _seed_matrices(ts: TaskScores, key: str, met: str, oracle_key: str | None, best: float = 1.0) -> tuple:
    """The ``seed × subject`` tables of a method's raw and chance → oracle scaled values (as
    :func:`_scaled`, cell by cell), subjects with a missing or undefined cell left out."""
    v = ts.seed_table(key, met)
    ch = ts.seed_table(key, f"{met}_chance").reindex_like(v)
    o = ts.seed_table(oracle_key, met)
    o = o.reindex_like(v) if len(o) else pd.DataFrame(best, index=v.index, columns=v.columns)
    den = (o - ch).where((o - ch).abs() > 1e-12)
    return v.dropna(axis=1), ((v - ch) / den).dropna(axis=1) if len(ch) else pd.DataFrame()


def _ci_seeds(values: np.ndarray, proto: Protocol) -> tuple[float, float, float]:
    """CI of the mean of a ``seed × subject`` table (:func:`~neuroxai.scoring.stats.bootstrap_ci_seeds`)."""
    from ..scoring.stats import bootstrap_ci_seeds

    st = proto.statistics
    return bootstrap_ci_seeds(torch.tensor(np.asarray(values, np.float64)), n_boot=st.bootstrap,
                              level=st.ci_level, seed=st.seed)


def _holm(ps: list[float]) -> list[float]:
    from ..scoring.stats import holm

    if not ps:
        return []
    arr = np.asarray(ps, float)
    ok = ~np.isnan(arr)
    out = np.full_like(arr, np.nan)
    if ok.any():
        out[ok] = np.asarray(holm(torch.as_tensor(arr[ok])), float)
    return out.tolist()


def _f(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _scaled(v: pd.Series, ch: pd.Series, oracle: pd.Series | None, best: float = 1.0) -> pd.Series:
    """Per subject ``(score − chance) / (oracle − chance)``: 0 = chance, 1 = the oracle map, for a
    metric of either direction. Without an oracle in the protocol the metric's best score stands in."""
    ch = ch.reindex(v.index)
    o = oracle.reindex(v.index) if oracle is not None and len(oracle) else pd.Series(best, index=v.index)
    den = (o - ch).where((o - ch).abs() > 1e-12)
    return ((v - ch) / den).dropna()


def _task_facts(task) -> dict:
    """The facts the task's type was registered with (``{}`` for an audit's given masks)."""
    from ..tasks import TASKS

    return TASKS.facts(task.name) if task.name in TASKS else {}


def _controls_positive(task) -> bool:
    return _task_facts(task).get("control") == "positive"


def ground_truth_text(task) -> str:
    """The ground truth of a task in words (for the report): its registration's ``ground_truth``."""
    info = task.info
    describe = _task_facts(task).get("ground_truth")
    if describe is not None:
        return describe(info)
    if task.name == "audit":
        kind = "label values of a segmentation" if info.get("mask_kind") == "dseg" else "mask files"
        return f"each subject's ground truth as given to the audit ({kind})"
    return ""


def assemble_results(proto: Protocol, prov: dict, tasks: dict, models: dict, scores: ScoreTable | dict,
                     sanity: dict, *, data_info: dict, validity: dict | None = None,
                     profiles: dict | None = None, kind: str = "validate",
                     audit: AuditInfo | None = None, off_target: dict | None = None) -> Results:
    """Build the run's :class:`~neuroxai.report.schema.Results` (what ``results.json`` holds).

    ``models[task].metrics``: the test-split performance; ``scores``: the long score table
    (:class:`~neuroxai.report.scores.ScoreTable`, read a task × method at a time; or ``{task:
    DataFrame}`` held in memory), attached to the results (:meth:`Results.score_table`);
    ``sanity``: ``{task: {method: Sanity}}``; ``validity``: ``{task: Validity}``; ``profiles``:
    ``{task: DistanceProfile}`` (dicts of the same keys are accepted and checked); ``off_target``:
    ``{task: {method: OffTarget}}`` (the false-positive perturbation, descriptive).

    Verdict rules, in order: a model at chance, or a task whose ground-truth validity check failed
    (the model does not rely on the ground truth), makes the task's methods INCONCLUSIVE; else a
    method PASSes when every acceptance criterion holds. Finally, if the protocol has a positive
    control on which the model is valid and no method under test passes, the criteria are
    unreachable for this model: FAILs on the other tasks become INCONCLUSIVE, with that reason.

    ``kind="audit"`` (saved maps, no model): criteria that need a model (null model, model
    randomization) are "not applicable: no model", and a FAIL names the method's maps.
    """
    validity = {k: Validity.model_validate(v) for k, v in (validity or {}).items() if v is not None}
    profiles = {k: DistanceProfile.model_validate(v) for k, v in (profiles or {}).items() if v is not None}
    sanity = {t: {k: Sanity.model_validate(v) for k, v in per.items()} for t, per in (sanity or {}).items()}
    oracle_key = _role_key(proto, "ceiling")  # the ceiling map; the chance map is the other baseline
    task_out: list[TaskResult] = []
    method_out: list[MethodResult] = []
    table = scores if isinstance(scores, ScoreTable) else ScoreTable.from_frames(scores)
    for tid, task in tasks.items():
        if is_null(tid):
            continue
        # several model seeds (training.seeds): tests on the subjects' seed means, CIs over both
        df = TaskScores(table, tid)
        perf = ModelPerf.model_validate(models[tid].metrics)
        null_id = f"{tid}__null"
        null_df = TaskScores(table, null_id)
        val = validity.get(tid)
        entries: list[MethodResult] = []
        data: dict = {}  # per-subject values behind each criterion, for its holds_share
        for mspec in proto.methods:
            key = mspec.key
            entries.append(MethodResult(task=tid, method=key, name=mspec.name, params=mspec.params,
                                        is_baseline=is_baseline(mspec.name), role=role(mspec.name),
                                        metrics=_method_summaries(proto, mspec, df, null_df, data),
                                        sanity=sanity.get(tid, {}).get(key), criteria=[],
                                        off_target=(off_target or {}).get(tid, {}).get(key),
                                        verdict="INCONCLUSIVE"))
            trim()  # the resamples' freed blocks back to the system: memory stays flat in N
        _correct(entries, proto, no_model=kind == "audit")
        for e in entries:
            e.criteria = [_criterion(c, e, proto, data, has_null_model=null_id in models, no_model=kind == "audit")
                          for c in proto.acceptance]
            e.verdict, e.verdict_reason = _verdict(e, perf, val)
        _ceiling_rule(entries, oracle_key)
        method_out += entries
        task_out.append(_task_result(proto, tid, task, df, entries, perf, val, profiles.get(tid),
                                     models[null_id].metrics if null_id in models else None))
    reachable, note = _reachability(tasks, method_out, validity, models)
    for m in method_out:
        if not m.is_baseline and m.verdict == "FAIL":
            m.verdict, m.verdict_reason = _whose_fault(m, tasks, validity, reachable, note, kind)
    return Results(
        schema_version=SCHEMA_VERSION, kind=kind, audit=audit,
        protocol=ProtocolInfo(id=proto.id, version=proto.version, title=proto.title,
                              description=proto.description, hash=proto.content_hash(),
                              acceptance=[c.describe() for c in proto.acceptance],
                              spec=proto.model_dump(mode="json")),
        provenance=Provenance.model_validate(prov), data=DataInfo.model_validate(data_info),
        tasks=task_out, methods=method_out, overall=_overall(method_out, reachable, note),
        findings=published_findings(method_out, task_out, proto),
        metric_facts=_metric_facts(proto), scores=table.ref()).with_table(
            table, table.path.parent if table.path is not None else None)


def _task_result(proto: Protocol, tid: str, task, df: TaskScores, entries: list[MethodResult], perf: ModelPerf,
                 val: Validity | None, profile: DistanceProfile | None, null_metrics: dict | None) -> TaskResult:
    """One task's entry: what its ground truth is, its model(s), and the comparisons between its
    methods (paired, and per class on a classification task)."""
    main = _main_metric(proto)
    n_excluded = int((~np.asarray(task.scorable, bool)).sum())
    return TaskResult(
        id=tid, type=task.name, kind=task.kind, ground_truth=ground_truth_text(task),
        summary=task.summary(), validity=val, distance_profile=profile,
        n_subjects=len(task.subject_ids), n_scored=df.n_subjects(),
        n_excluded_from_scoring=n_excluded,
        excluded_reason="no ground-truth voxels (e.g. no lesion); kept for training" if n_excluded else "",
        confound=getattr(task, "confound", {}) or {}, model=perf,
        null_model=ModelPerf.model_validate(null_metrics) if null_metrics is not None else None,
        pairwise=_pairwise(df, [e.method for e in entries if not e.is_baseline], main, proto),
        by_class=(_by_class(df, [e.method for e in entries], main, _role_key(proto, "ceiling"),
                            _best(registered_name(proto, main))) if task.kind == "classification" else []))


def _method_summaries(proto: Protocol, mspec, df: TaskScores, null_df: TaskScores,
                      data: dict) -> dict[str, MetricSummary]:
    """One method's summary per metric on one task, with its tests against the chance map and the
    null model; the per-subject values behind each criterion go into ``data`` (for its
    holds-in share). With several model seeds the CIs resample seeds and subjects."""
    key = mspec.key
    random_key, oracle_key = _role_key(proto, "chance"), _role_key(proto, "ceiling")
    criteria_metrics = {c.metric for c in proto.acceptance}
    summaries: dict[str, MetricSummary] = {}
    for met in (m.key for m in proto.metrics):  # a labelled entry's rows carry its label
        v = _vals(df, key, met)
        if not len(v):
            continue
        ch = _vals(df, key, f"{met}_chance")
        ov = _vals(df, oracle_key, met) if oracle_key else None
        reg = registered_name(proto, met)
        sc = _scaled(v, ch, ov, _best(reg)) if len(ch) else None
        mats = _seed_matrices(df, key, met, oracle_key, _best(reg)) if df.has_seeds else None
        rec = _summary(v, ch, _vals(df, key, f"{met}_norm"), ov, sc, proto, seeds=mats)
        judged = met in criteria_metrics  # per-subject values kept only where a criterion reads them
        if judged:
            data[(key, met, "values")] = (v if mats is None else mats[0], ch)
            data[(key, met, "scaled")] = sc if mats is None else mats[1]
        if role(mspec.name) != "chance":
            baselines = [(CHANCE_MAP, _vals(df, random_key, met) if random_key else None)]
            if null_df and not is_baseline(mspec.name):
                baselines.append(("null_model", _vals(null_df, key, met)))
            for comp, bv in baselines:
                if bv is None or not len(bv):
                    continue
                sgn = _better(reg)  # "better than the baseline", whichever way the metric runs
                p, n = _paired_p(sgn * v, sgn * bv, proto)
                rec.comparisons[comp] = Comparison(p=_f(p), n_pairs=n, baseline_mean=_f(bv.mean()))
                if judged:
                    data[(key, met, comp)] = (sgn * v, sgn * bv)
        summaries[met] = rec
    return summaries


def _overall(method_out: list[MethodResult], reachable: bool | None, note: str) -> Overall:
    """The run's verdict over the methods under test (baselines excluded)."""
    non_base = [m for m in method_out if not m.is_baseline]
    overall, exit_code = overall_verdict([m.verdict for m in non_base])
    return Overall(verdict=overall, n_pass=sum(m.verdict == "PASS" for m in non_base),
                   n_fail=sum(m.verdict == "FAIL" for m in non_base),
                   n_inconclusive=sum(m.verdict == "INCONCLUSIVE" for m in non_base),
                   exit_code=exit_code, criteria_reachable=reachable, reachability_note=note)


def _metric_facts(proto: Protocol) -> dict[str, MetricFacts]:
    """The registered facts of the metrics this run used, by score key (a labelled entry's label),
    written into its results."""
    from ..scoring.localization import METRIC_INFO

    return {m.key: MetricFacts(higher_is_better=i.higher_is_better, best=i.best, help=i.help, chance=i.chance)
            for m in proto.metrics if (i := METRIC_INFO.get(m.name)) is not None}


def _summary(v: pd.Series, ch: pd.Series, norm: pd.Series, ov: pd.Series | None, sc: pd.Series | None,
             proto: Protocol, seeds: tuple | None = None) -> MetricSummary:
    """Mean, CI, chance, the chance → oracle scale (``sc``: :func:`_scaled`'s values) and the
    median of one method × metric. ``seeds``: the ``seed × subject`` raw and scaled tables of a
    several-seed run (:func:`_seed_matrices`): the CIs then resample seeds and subjects."""
    ci, method = _ci, proto.statistics.ci_method
    if seeds is not None:
        ci, method = _ci_seeds, "percentile over seeds × subjects"
        v_ci, sc_ci = seeds
    else:
        v_ci, sc_ci = v, sc if sc is not None else pd.Series(dtype=float)
    est, lo, hi = ci(v_ci.to_numpy(), proto)
    s_est, s_lo, s_hi = ci(sc_ci.to_numpy(), proto) if sc_ci.size else (None, None, None)
    return MetricSummary(mean=_f(est), ci_low=_f(lo), ci_high=_f(hi), ci_method=method,
                         ci_level=proto.statistics.ci_level, n=len(v),
                         chance=_f(ch.mean()) if len(ch) else None,
                         normalized_mean=_f(norm.mean()) if len(norm) else None,
                         oracle_mean=_f(ov.mean()) if ov is not None and len(ov) else None,
                         scaled_mean=_f(s_est), scaled_ci_low=_f(s_lo), scaled_ci_high=_f(s_hi),
                         median=_f(v.median()))


def _verdict(e: MethodResult, perf: ModelPerf, val: Validity | None) -> tuple[str, str]:
    """A method's verdict on one task and its reason, before the ceiling and reachability rules:
    FAIL when a criterion is decided against it, INCONCLUSIVE when one cannot be decided on these
    data (too few subjects, an interval straddling its threshold), else PASS."""
    if perf.at_chance:
        return "INCONCLUSIVE", ("the model is at chance on the test split (its AUROC CI includes 0.5): "
                                "its explanations cannot be validated")
    if val is not None and val.passed is not True and not e.is_baseline:
        # Baselines keep their own verdict: the oracle passing and the random map failing
        # show the criteria are calibrated, whatever the model does.
        return "INCONCLUSIVE", val.reason or ("the model does not rely on the ground-truth region, so "
                                              "localization cannot be judged")
    failed = [c.text for c in e.criteria if c.passed is False]
    if failed:
        return "FAIL", "failed: " + "; ".join(failed)
    open_ = [c for c in e.criteria if c.passed is None and c.applicable]
    if open_:
        return "INCONCLUSIVE", "too few subjects to decide: " + "; ".join(
            c.note or f"{c.text} could not be evaluated" for c in open_)
    return "PASS", "all criteria hold"


def _ceiling_rule(entries: list[MethodResult], oracle_key: str | None) -> None:
    """The oracle (the ground truth itself as a map) must pass where a method is judged: if it does
    not, these masks and subjects cannot decide, so a method's FAIL becomes INCONCLUSIVE."""
    oracle = next((e for e in entries if e.method == oracle_key), None) if oracle_key else None
    if oracle is None or oracle.verdict == "PASS":
        return
    why = oracle.verdict_reason or oracle.verdict
    for e in entries:
        if not e.is_baseline and e.verdict == "FAIL":
            e.verdict, e.verdict_reason = "INCONCLUSIVE", (
                f"the oracle (the ground truth itself as a map) does not pass here ({why}), so these masks "
                f"and subjects cannot decide (this method: {e.verdict_reason})")


def overall_verdict(verdicts: list[str]) -> tuple[str, int]:
    """The run's verdict over the methods under test and its exit code: PASS (0) when every one
    passes, FAIL (1) when at least one fails, else INCONCLUSIVE (3); 2 is kept for errors."""
    if verdicts and all(v == "PASS" for v in verdicts):
        return "PASS", 0
    if any(v == "FAIL" for v in verdicts):
        return "FAIL", 1
    return "INCONCLUSIVE", 3


#: the comparison key of the paired test against the chance map (the method of role "chance")
CHANCE_MAP = "chance_map"
_COMPARED_WITH = {"beats_random": CHANCE_MAP, "beats_null_model": "null_model"}


def _acceptance_comparisons(e: MethodResult, proto: Protocol, no_model: bool) -> list[Comparison]:
    """The comparisons that decide ``e``'s acceptance criteria (each once)."""
    out: list[Comparison] = []
    for c in proto.acceptance:
        if c.kind not in _COMPARED_WITH or (no_model and c.kind == "beats_null_model"):
            continue
        rec = e.metrics.get(c.metric)
        cmp = rec.comparisons.get(_COMPARED_WITH[c.kind]) if rec is not None else None
        if cmp is not None and cmp.p is not None and all(cmp is not x for x in out):
            out.append(cmp)
    return out


def _correct(entries: list[MethodResult], proto: Protocol, *, no_model: bool) -> None:
    """Multiple-comparison correction within each family (sets ``p_adjusted`` and
    ``family_size``). ``statistics.family: method`` (default): a method's family is its own
    acceptance comparisons, so its verdict does not move when other methods, metrics or baselines
    are added; ``task``: one family of every method under test's acceptance comparisons on the task.
    Descriptive comparisons (metrics no criterion uses) are left uncorrected: they decide nothing."""
    st = proto.statistics
    families: list[list[Comparison]] = []
    shared: list[Comparison] = []
    for e in entries:
        own = _acceptance_comparisons(e, proto, no_model)
        if st.family == "task" and not e.is_baseline:
            shared += own
        else:
            families.append(own)
    families.append(shared)
    for fam in families:
        ps = [c.p for c in fam]
        adjusted = _holm(ps) if st.correction == "holm" else ps
        for c, pa in zip(fam, adjusted):
            c.p_adjusted, c.family_size = _f(pa), len(fam) if st.correction == "holm" else 1


def _whose_fault(m: MethodResult, tasks: dict, validity: dict, reachable: bool | None, note: str,
                 kind: str) -> tuple[str, str]:
    """A FAIL of a method under test, with whose fault it is; INCONCLUSIVE when the criteria were
    shown unreachable (no method passed a valid positive control)."""
    if reachable is False and not _controls_positive(tasks[m.task]):
        return "INCONCLUSIVE", UNREACHABLE + " (" + m.verdict_reason + ")"
    if kind == "audit":
        return "FAIL", m.verdict_reason + (" — at fault: the saved maps (no model, so its use of the "
                                           "ground truth cannot be checked; the oracle on the same masks "
                                           "shows what the criteria allow)")
    # say whose fault a FAIL is: the model and the criteria were checked first
    val = validity.get(m.task)
    model = ("the model relies on the ground truth" if val is not None and val.passed
             else "the model's use of the ground truth was not checked")
    crit = (f"the criteria are reachable: {note}" if reachable
            else "the criteria were not shown reachable: no positive control passed or ran")
    return "FAIL", m.verdict_reason + f" — at fault: the method ({model}; {crit})"


def cohort_profile(distances_mm, per_method: dict) -> DistanceProfile:
    """The cohort-mean :class:`~neuroxai.report.schema.DistanceProfile` of one task from
    per-subject rows ``{method: (relevance_share (N, K), volume_share (N, K))}``; a subject whose
    map has no positive relevance (a NaN row) has no profile and is left out."""
    out = DistanceProfile(distances_mm=[float(d) for d in distances_mm])
    for key, (r, vol) in per_method.items():
        ok = ~np.isnan(r).any(1)
        out.methods[key] = [float(v) for v in r[ok].mean(0)] if ok.any() else [None] * r.shape[1]
        out.volume_share = [float(v) for v in vol.mean(0)]
    return out


PUBLISHED = (
    ("gradcam", "GradCAM fails to localize the predictive features"),
    ("lrp", "LRP produces extensive, artifactual relevance"),
    ("smoothgrad", "SmoothGrad is consistently accurate"),
)


def _main_metric(proto: Protocol) -> str:
    """The metric of the verdict tables (:func:`neuroxai.report.schema.main_metric`)."""
    return main_metric([c.metric for c in proto.acceptance], [m.key for m in proto.metrics])


def _pairwise(df: TaskScores, methods: list[str], metric: str, proto: Protocol) -> list[PairwiseTest]:
    """Paired tests between the methods under test on ``metric`` (two-sided: twice the smaller
    one-sided p of the protocol's paired test; Holm-adjusted across the task's pairs)."""
    out, ps = [], []
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            va, vb = _vals(df, a, metric), _vals(df, b, metric)
            common = va.index.intersection(vb.index)
            if len(common) < 5:
                continue
            p_ab, n = _paired_p(va, vb, proto)  # two-sided below: the direction does not matter
            p_ba, _ = _paired_p(vb, va, proto)
            p = min(1.0, 2 * min(p_ab, p_ba))
            diff = float((va.loc[common] - vb.loc[common]).mean())
            out.append(PairwiseTest(a=a, b=b, metric=metric, mean_a=_f(va.loc[common].mean()),
                                    mean_b=_f(vb.loc[common].mean()), mean_difference=_f(diff),
                                    n_pairs=int(n), p=_f(p)))
            ps.append(p)
    adj = _holm(ps) if proto.statistics.correction == "holm" else ps
    for r, pa in zip(out, adj):
        r.p_adjusted = _f(pa)
        better = r.a if _better(registered_name(proto, metric)) * r.mean_difference > 0 else r.b
        r.reading = f"{better} better" if pa < 0.05 else "no difference shown"
    return out


def _by_class(df: TaskScores, methods: list[str], metric: str, oracle_key: str | None,
              best: float = 1.0) -> list[ClassScores]:
    """Each method's ``metric`` per class (raw and on the chance → oracle scale) and a two-sided
    Mann–Whitney p between the classes (descriptive): a sign convention or an explained output that
    treats the classes differently shows here."""
    from scipy import stats as sst

    labels = df.labels()
    if not len(labels):
        return []
    out = []
    for key in methods:
        v = _vals(df, key, metric)
        if not len(v):
            continue
        sc = _scaled(v, _vals(df, key, f"{metric}_chance"),
                     _vals(df, oracle_key, metric) if oracle_key else None, best)
        lab = labels.reindex(v.index)
        classes = sorted(int(c) for c in lab.dropna().unique())
        groups = {c: sc[sc.index.isin(lab.index[lab == c])] for c in classes}
        p = None
        if len(classes) == 2 and all(len(g) >= 3 for g in groups.values()):
            a, b = groups[classes[0]].to_numpy(), groups[classes[1]].to_numpy()
            p = None if np.allclose(a.mean(), b.mean()) and np.ptp(np.r_[a, b]) == 0 else \
                float(sst.mannwhitneyu(a, b, alternative="two-sided").pvalue)
        for c in classes:
            sel = v[lab == c]
            out.append(ClassScores(method=key, metric=metric, label=c, n=int(len(sel)), mean=_f(sel.mean()),
                                   scaled_mean=_f(groups[c].mean()) if len(groups[c]) else None,
                                   p_classes_differ=_f(p) if p is not None else None))
    return out


def _far_share(task: TaskResult | None, method: str) -> float | None:
    """Share of a method's positive relevance beyond the profile's largest distance."""
    prof = task.distance_profile if task is not None else None
    v = prof.methods.get(method) if prof is not None else None
    return None if not v or v[-1] is None else 1.0 - float(v[-1])


def published_findings(method_out: list[MethodResult], task_out: list[TaskResult],
                       proto: Protocol | None = None) -> list[Finding]:
    """Whether this run agrees with each finding of Siegel et al. 2025 (GradCAM fails to localize,
    LRP is extensive and artifactual, SmoothGrad is consistently accurate), from the verdicts on the
    tasks whose model uses its ground truth. Empty unless GradCAM, LRP and SmoothGrad all ran.

    Agreement per judged task (``evidence[i].agrees``): GradCAM — it FAILs; LRP — it FAILs and
    puts more of its relevance far from the ground truth (beyond the profile's largest distance)
    than SmoothGrad; SmoothGrad — it PASSes. ``agree`` is True when every judged task agrees, None
    when none could be judged; ``level`` says yes / partly (k of n tasks) / no / cannot tell.

    With ``proto``, each task × method is also read under the study's scoring and under ours
    (``evidence[i].study`` / ``.ours``, :func:`_readings`), with ``scorings_note`` saying where and
    why the two disagree, and ``agree_study`` / ``agree_ours`` over the tasks."""
    names = {m.name for m in method_out}
    if not {"gradcam", "lrp", "smoothgrad"} <= names:
        return []
    tmap = {t.id: t for t in task_out}
    keys = _finding_metrics(proto) if proto is not None else {}
    sg = {m.task: m for m in method_out if m.name == "smoothgrad"}
    out = []
    for name, claim in PUBLISHED:
        rows = [m for m in method_out if m.name == name]
        ev = []
        for m in rows:
            x = m.metrics.get("relevance_rank_accuracy") or next(iter(m.metrics.values()), None)
            task = tmap.get(m.task)
            prof = task.distance_profile if task is not None else None
            vol = prof.volume_share if prof is not None and prof.volume_share else [None]
            e = FindingEvidence(task=m.task, method=m.method, verdict=m.verdict,
                                scaled_mean=x.scaled_mean if x else None,
                                scaled_ci_low=x.scaled_ci_low if x else None,
                                scaled_ci_high=x.scaled_ci_high if x else None,
                                far_share=_far_share(task, m.method), far_share_smoothgrad=_far_share(task, "smoothgrad"),
                                far_share_random=None if vol[-1] is None else 1.0 - float(vol[-1]))
            if m.off_target is not None:
                e.off_target_used, e.off_target_p = m.off_target.used, m.off_target.p
            if e.verdict not in ("PASS", "FAIL"):
                e.agrees = None
            elif name == "smoothgrad":
                e.agrees = e.verdict == "PASS"
            elif name == "gradcam":
                e.agrees = e.verdict == "FAIL"
            else:
                # extensive (more relevance far out than SmoothGrad) and artifactual: where the
                # false-positive perturbation ran, the model must not use that relevance
                e.agrees = (e.verdict == "FAIL" and e.far_share is not None and e.far_share_smoothgrad is not None
                            and e.far_share > e.far_share_smoothgrad and e.off_target_used is not True)
            if e.agrees is False:
                e.note = _off_target_note(e) or _disagreement_note(name, e, task)
            if keys:
                e.study, e.ours = _readings(name, m, sg.get(m.task), e, keys)
                e.scorings_note = _scorings_note(name, e, m, keys, task)
            ev.append(e)
        votes = [e.agrees for e in ev if e.agrees is not None]
        f = Finding(method=name, finding=claim, agree=None if not votes else all(votes), level=_level(votes),
                    n_tasks_judged=sum(m.verdict in ("PASS", "FAIL") for m in rows), evidence=ev)
        if keys.get("study"):
            v = [e.study.agrees for e in ev if e.study is not None and e.study.agrees is not None]
            f.agree_study, f.level_study = (None if not v else all(v)), _level(v, "task × method readings")
        if keys.get("ours"):
            v = [e.ours.agrees for e in ev if e.ours is not None and e.ours.agrees is not None]
            f.agree_ours, f.level_ours = (None if not v else all(v)), _level(v, "task × method readings")
        out.append(f)
    return out


def _level(votes: list[bool], unit: str = "tasks") -> str:
    return ("cannot tell" if not votes else "yes" if all(votes) else "no" if not any(votes)
            else f"partly ({sum(votes)} of {len(votes)} {unit})")


#: the chance (0) → oracle (1) scale value a map must reach, with its CI, to "localize" (the
#: shipped protocols' scaled_ci_above threshold), unless the protocol's criterion says otherwise
LOCALIZES_AT = 0.1


def _finding_metrics(proto: Protocol) -> dict:
    """The score keys each scoring reads the findings with: the study's (the entries scored under
    ``preset: siegel2025``: RMA, the false-positive test, region match) and ours (the verdict's
    metric, or relevance rank accuracy, scored without a preset; RMA without a preset as the
    bridge between the two), the threshold of "localizes", and each side's scoring in words."""
    def pick(name, preset):
        return next((m.key for m in proto.metrics if m.name == name
                     and (m.scoring_of(proto.scoring).preset == "siegel2025") == preset), None)

    def words(key):
        m = next((m for m in proto.metrics if m.key == key), None)
        if m is None:
            return ""
        sc = m.scoring_of(proto.scoring)
        if sc.preset:
            return f"preset {sc.preset}"
        return f"|map|" if (sc.sign == "abs" or (not sc.sign and sc.polarity == "absolute")) else \
            (f"sign {sc.sign}" if sc.sign else f"polarity {sc.polarity}")

    main = _main_metric(proto)
    main_m = next((m for m in proto.metrics if m.key == main), None)
    ours = main if main_m is not None and main_m.scoring_of(proto.scoring).preset is None else \
        pick("relevance_rank_accuracy", False)
    thr = next((c.threshold for c in proto.acceptance if c.kind == "scaled_ci_above" and c.metric == ours),
               LOCALIZES_AT)
    study = pick("relevance_mass_accuracy", True)
    return {"study": study, "false_positive": pick("false_positive", True), "region_match": pick("region_match", True),
            "ours": ours, "rma_plain": pick("relevance_mass_accuracy", False), "threshold": float(thr),
            "study_text": words(study), "ours_text": words(ours)}


def _localizes(rec: MetricSummary | None, thr: float) -> bool | None:
    """True when the scaled CI lies at or above ``thr``, False when wholly below, None between."""
    if rec is None or rec.scaled_ci_low is None or rec.scaled_ci_high is None:
        return None
    return True if rec.scaled_ci_low >= thr else False if rec.scaled_ci_high < thr else None


def _readings(name: str, m: MethodResult, sg: MethodResult | None, e: FindingEvidence,
              keys: dict) -> tuple[FindingReading | None, FindingReading | None]:
    """One method on one task under the study's scoring and under ours.

    GradCAM ("fails to localize") and SmoothGrad ("consistently accurate"): the chance → oracle
    scale of the study's RMA under its preset, and of our metric; it localizes when the CI lies at
    or above the threshold (``_localizes``). LRP ("extensive, artifactual relevance"): the study's
    per-subject false-positive test, as a rate, against SmoothGrad's rate on the same task (agrees
    when LRP's CI lies above it, disagrees when wholly at or below); ours: the share of relevance
    beyond the distance profile's last distance against SmoothGrad's (agrees when larger)."""
    thr = keys["threshold"]
    study = ours = None
    if name in ("gradcam", "smoothgrad"):
        want = name == "smoothgrad"  # the finding: SmoothGrad localizes, GradCAM does not
        for side, key in (("study", keys.get("study")), ("ours", keys.get("ours"))):
            rec = m.metrics.get(key) if key else None
            if rec is None:
                continue
            loc = _localizes(rec, thr)
            r = FindingReading(scoring=side, scoring_text=keys[f"{side}_text"], metric=key,
                               statistic="mean on the chance (0) → oracle (1) scale",
                               value=rec.scaled_mean, ci_low=rec.scaled_ci_low, ci_high=rec.scaled_ci_high,
                               reference=thr, reference_text="the threshold",
                               agrees=None if loc is None else loc == want)
            if side == "study" and keys.get("region_match") in m.metrics:
                r.extra["region_match"] = m.metrics[keys["region_match"]].mean
            if side == "study":
                study = r
            else:
                ours = r
        return study, ours
    fp = keys.get("false_positive")
    rec = m.metrics.get(fp) if fp else None
    ref = sg.metrics.get(fp) if fp and sg is not None else None
    if rec is not None:
        base = ref.mean if ref is not None else None
        # every subject alike (all 0 or all 1) has no bootstrap interval: the rate itself is exact
        lo, hi = (rec.ci_low, rec.ci_high) if rec.ci_low is not None else ((rec.mean, rec.mean) if rec.n > 1
                                                                          else (None, None))
        agrees = None
        if base is not None and lo is not None and hi is not None:
            agrees = True if lo > base else False if hi <= base else None
        study = FindingReading(scoring="study", scoring_text=keys["study_text"] or "preset siegel2025", metric=fp,
                               statistic="false-positive rate (share of subjects)", value=rec.mean,
                               ci_low=rec.ci_low, ci_high=rec.ci_high, reference=base,
                               reference_text="SmoothGrad's rate", agrees=agrees)
        if keys.get("study") in m.metrics:
            study.extra["relevance_mass_accuracy_scaled"] = m.metrics[keys["study"]].scaled_mean
    if e.far_share is not None:
        ours = FindingReading(scoring="ours", scoring_text="|map|, distance profile", metric="distance_profile",
                              statistic="share of relevance beyond the profile's last distance", value=e.far_share,
                              reference=e.far_share_smoothgrad, reference_text="SmoothGrad's share",
                              agrees=None if e.far_share_smoothgrad is None else e.far_share > e.far_share_smoothgrad)
        if e.far_share_random is not None:
            ours.extra[CHANCE_MAP] = e.far_share_random
    return study, ours


def _scorings_note(name: str, e: FindingEvidence, m: MethodResult, keys: dict, task: TaskResult | None) -> str:
    """Where and why the study's reading and ours disagree on one task and method ('' when they
    agree or either cannot tell)."""
    st, ou = e.study, e.ours
    if st is None or ou is None or st.agrees is None or ou.agrees is None or st.agrees == ou.agrees:
        return ""
    if name in ("gradcam", "smoothgrad"):
        plain = m.metrics.get(keys.get("rma_plain") or "")
        side = "the study's" if st.agrees else "ours"
        why = (f"under the study's scoring RMA is {_fmt3(st.value)} [{_fmt3(st.ci_low)}, {_fmt3(st.ci_high)}] on "
               f"the chance → oracle scale, under ours {ou.metric} {_fmt3(ou.value)} [{_fmt3(ou.ci_low)}, "
               f"{_fmt3(ou.ci_high)}]; only {side} agrees with the finding")
        if plain is not None and plain.scaled_mean is not None:
            loc = _localizes(plain, keys["threshold"])
            pre = loc is not None and (loc == (name == "smoothgrad")) == ou.agrees
            why += (f". RMA without the preset's steps is {_fmt3(plain.scaled_mean)} [{_fmt3(plain.scaled_ci_low)}, "
                    f"{_fmt3(plain.scaled_ci_high)}]: " + (
                        "the preset's steps make the difference — smoothing, keeping the top 1 % of the map and "
                        "widening the ground truth (contralateral region, dilation) count a peak near the region "
                        "as inside it" if pre else
                        "the metric makes the difference — mass (a few strong voxels inside) against rank (how "
                        "many of the region-sized top voxels lie inside)"))
        return why
    fp_rate, sg_rate = st.value, st.reference
    return (f"false-positive rate {_fmt3(fp_rate)} [{_fmt3(st.ci_low)}, {_fmt3(st.ci_high)}] vs SmoothGrad "
            f"{_fmt3(sg_rate)}, far share {_fmt3(ou.value)} vs SmoothGrad {_fmt3(ou.reference)}: the study's test "
            "asks whether any single voxel beyond the dilated ground truth outranks the 99th percentile inside "
            "it (a few isolated far peaks suffice), the far share how much of the relevance mass lies far "
            "away (diffuse far relevance counts, single peaks hardly)")


def _fmt3(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def _off_target_note(e: FindingEvidence) -> str:
    return (f"its off-target relevance is used by the model (false-positive perturbation, p = {e.off_target_p:.2g}): "
            "not artefactual" if e.off_target_used and e.off_target_p is not None else "")


def _disagreement_note(name: str, e: FindingEvidence, task: TaskResult | None) -> str:
    """The facts of the run that bear on a disagreement with a published finding."""
    facts = []
    perf = task.model if task is not None else None
    val = task.validity if task is not None else None
    if perf is not None and perf.auroc is not None:
        weak = perf.auroc_ci_low is not None and perf.auroc_ci_low < 0.75
        facts.append(f"model test AUROC {perf.auroc:.2f} [{perf.auroc_ci_low or 0:.2f}, "
                     f"{perf.auroc_ci_high or 0:.2f}]" + (" (a weak model: little signal per "
                                                          "subject for any map to show)" if weak else ""))
    if val is not None and val.gt_voxels_mean is not None:
        facts.append(f"ground truth {val.gt_voxels_mean:.0f} voxels per subject on average")
    if name == "lrp" and e.far_share is not None and e.far_share_smoothgrad is not None:
        facts.append(f"far share LRP {e.far_share:.3f} vs SmoothGrad {e.far_share_smoothgrad:.3f} "
                     f"(random {e.far_share_random:.3f})" if e.far_share_random is not None else "")
        if e.verdict == "PASS":
            facts.append("LRP passed here")
    if name == "smoothgrad" and e.scaled_mean is not None:
        facts.append(f"SmoothGrad at {e.scaled_mean:.3f} on the chance → oracle scale")
    return "; ".join(f for f in facts if f)


def _reachability(tasks: dict, method_out: list[MethodResult], validity: dict,
                  models: dict) -> tuple[bool | None, str]:
    """Whether the acceptance criteria are shown reachable: some method under test passes a
    positive control on which the model is above chance and valid. ``None`` with a note when the
    protocol has no positive control or it cannot tell."""
    pcs = [tid for tid, t in tasks.items() if _controls_positive(t) and not is_null(tid)]
    if not pcs:
        return None, "no positive control in this protocol: reachability of the criteria is not shown"
    passed_on = sorted({m.method for m in method_out if m.task in pcs and not m.is_baseline
                        and m.verdict == "PASS"})
    if passed_on:
        return True, f"{', '.join(passed_on)} passed the positive control {', '.join(pcs)}"
    judged = [tid for tid in pcs if not models[tid].metrics.get("at_chance")
              and (validity.get(tid) is None or validity[tid].passed is True)]
    if not judged:
        return None, "the positive control's model did not learn it or does not use it: reachability not shown"
    return False, UNREACHABLE


def _role_key(proto: Protocol, role_: str) -> str | None:
    """The key (label or name) of the protocol's first method registered with ``role_``, if any."""
    return next((m.key for m in proto.methods if role(m.name) == role_), None)


def _criterion(c, e: MethodResult, proto: Protocol, data: dict, *, has_null_model: bool = True,
               no_model: bool = False) -> Criterion:
    """One acceptance criterion evaluated on one method's results, with its margin, the share of
    bootstrap resamples in which it holds, and whether these data can decide it at all."""
    out = Criterion(kind=c.kind, text=c.describe(), metric=c.metric)
    if no_model and c.kind in ("model_randomization", "beats_null_model"):
        out.applicable, out.text = False, out.text + " (not applicable: no model)"
        return out
    if c.kind == "model_randomization":
        s = e.sanity
        if e.is_baseline or s is None:
            out.applicable = s is not None and not e.is_baseline
            return out
        out.observed, out.threshold, out.passed = s.final_similarity, s.threshold, bool(s.passed)
        out.margin = _f(s.threshold - s.final_similarity) if s.final_similarity is not None else None
        return out
    rec = e.metrics.get(c.metric)
    if rec is None:
        out.applicable = False
        return out
    if c.kind in ("scaled_ci_above", "ci_above_chance"):
        if c.kind == "scaled_ci_above":
            est, lo, hi, thr = rec.scaled_mean, rec.scaled_ci_low, rec.scaled_ci_high, c.threshold
            vals = data.get((e.method, c.metric, "scaled"))
        else:
            # "the CI lies on the better side of chance by the margin": a lower-is-better metric's
            # upper bound ≤ chance − margin, decided on the negated values
            sgn = _better(registered_name(proto, c.metric))
            est, lo, hi = (None if x is None else sgn * x for x in (rec.mean, rec.ci_low, rec.ci_high))
            if sgn < 0:
                lo, hi = hi, lo
            thr = sgn * (rec.chance or 0.0) + c.margin
            vals = data.get((e.method, c.metric, "values"), (None,))[0]
            vals = None if vals is None else sgn * vals
        _ci_decision(out, est, lo, hi, thr, rec.n, sign=sgn if c.kind == "ci_above_chance" else 1.0)
        if vals is not None and len(vals):
            out.holds_share = _share_mean_at_least(vals.to_numpy(), thr, proto)
        return out
    comp = _COMPARED_WITH[c.kind]
    if role(e.name) == "chance" and comp == CHANCE_MAP:
        out.passed, out.threshold = False, c.alpha
        out.text += " (the random map cannot beat itself)"
        return out
    cmp = rec.comparisons.get(comp)
    if cmp is None and comp == "null_model" and not has_null_model:
        out.applicable = False
        out.text += " (the protocol trains no null model for this task)"
        return out
    if cmp is None:
        # A model-free baseline has no null-model counterpart; for a real method a missing
        # comparison (e.g. no null model trained) leaves the criterion unevaluated.
        out.applicable = not e.is_baseline
        return out
    p = cmp.p_used
    out.observed, out.threshold = p, c.alpha
    fam = max(1, cmp.family_size)
    st = proto.statistics
    if cmp.n_pairs and fam * min_attainable_p(cmp.n_pairs, st.test, st.n_permutations, st.seed) >= c.alpha:
        need = subjects_needed(fam, c.alpha, proto, start=cmp.n_pairs)
        out.decidable, out.n_needed = False, need
        out.note = (f"{cmp.n_pairs} subjects cannot reach p < {c.alpha:g} with the {st.test} test"
                    + (f" over {fam} corrected comparisons" if fam > 1 else "")
                    + (f"; {need} can" if need else ""))
        return out
    out.passed = None if p is None else bool(p < c.alpha)
    if p is not None and p > 0:
        out.margin = _f(math.log10(c.alpha) - math.log10(p))  # decades below alpha
        pair = data.get((e.method, c.metric, comp))
        if pair is not None and cmp.n_pairs:
            out.holds_share = _share_test_holds(*pair, factor=(cmp.p_used or p) / p, alpha=c.alpha, proto=proto)
    return out


def _ci_decision(out: Criterion, est, lo, hi, thr: float, n: int, sign: float = 1.0) -> None:
    """Decide a "lower CI bound ≥ threshold" criterion: PASS when the lower bound is at or above
    the threshold, FAIL when the whole interval is below it, undecided when the interval
    straddles it (then the n at which the interval's side facing the threshold would shrink to the
    distance between the estimate and the threshold, the width going as 1/√n). ``sign`` −1: the
    values were negated (a lower-is-better metric); observed, threshold and note are written in
    the metric's own units (its upper bound ≤ the threshold)."""
    out.observed, out.threshold = _f(sign * lo) if lo is not None else None, _f(sign * thr)
    if lo is None or hi is None or est is None:
        out.decidable = False
        out.n_needed = 2 if n < 2 else None
        out.note = (f"{n} subject(s): no confidence interval" + ("; 2 can" if n < 2 else "")
                    if n < 2 else "the confidence interval is undefined on these values")
        return
    out.margin = _f(lo - thr)
    if lo >= thr:
        out.passed = True
    elif hi < thr:
        out.passed = False
    else:
        out.decidable = False
        # the side of the interval that faces the threshold must shrink to the estimate's distance
        # from it (an interval such as BCa's need not be symmetric); at least one more subject
        gap = abs(est - thr)
        half = (hi - est) if est < thr else (est - lo)
        out.n_needed = max(n + 1, int(math.ceil(n * (half / gap) ** 2))) if gap > 1e-12 else None
        a, b = sorted((sign * lo, sign * hi))
        out.note = (f"{out.text}: its interval [{a:.3g}, {b:.3g}] contains the threshold {sign * thr:.3g}, so "
                    f"{n} subjects cannot tell on which side it lies"
                    + (f"; about {out.n_needed} would" if out.n_needed else ""))


def _share_mean_at_least(values: np.ndarray, thr: float, proto: Protocol) -> float | None:
    """Share of bootstrap resamples of the subjects whose mean is ≥ ``thr`` (of seeds and subjects
    for a ``seed × subject`` table)."""
    from ..scoring.stats import resample_means, seed_subject_means

    st = proto.statistics
    v = torch.tensor(np.asarray(values, np.float64))
    if st.stability_resamples == 0 or v.numel() == 0 or not bool(torch.isfinite(v).all()):
        return None
    if v.ndim == 2:
        return float((seed_subject_means(v, st.stability_resamples, st.seed) >= thr).double().mean())
    gen = torch.Generator().manual_seed(int(st.seed))
    return float((resample_means(v.flatten(), st.stability_resamples, gen) >= thr).double().mean())


def _share_test_holds(a: pd.Series, b: pd.Series, *, factor: float, alpha: float,
                      proto: Protocol) -> float | None:
    """Share of bootstrap resamples of the paired subjects in which the one-sided signed-rank test,
    with the correction factor applied to the observed p, stays below ``alpha``. Zero differences
    are dropped (as the verdict's Wilcoxon does); with up to 50 pairs left the p is exact given the
    resample's mid-ranks (so repeated subjects' ties are handled as scipy's permutation fallback
    does, without its cost), beyond that the normal approximation."""
    from scipy.stats import rankdata

    from ..scoring.stats import draws

    st = proto.statistics
    common = a.index.intersection(b.index)
    if st.stability_resamples == 0 or not len(common):
        return None
    d = a.loc[common].to_numpy(np.float64) - b.loc[common].to_numpy(np.float64)
    if not np.isfinite(d).all():
        return None
    gen = torch.Generator().manual_seed(int(st.seed))
    held = []
    for r in (d[i] for _, idx in draws(st.stability_resamples, d.size, gen) for i in idx.numpy()):
        r = r[r != 0]
        if not r.size:
            held.append(False)
            continue
        ranks = rankdata(np.abs(r))
        w = float(ranks[r > 0].sum())
        held.append(_signed_rank_sf(ranks, w) * factor < alpha)
    return float(np.mean(held))


def _signed_rank_sf(ranks: np.ndarray, w: float) -> float:
    """P(W⁺ ≥ w) under random signs, for these (mid-)ranks: exact up to 50 ranks (the
    distribution of the sum of a random subset of the doubled ranks, built one rank at a time),
    else the normal approximation."""
    from scipy.stats import norm

    n = ranks.size
    if n > 50:
        mean, sd = n * (n + 1) / 4, np.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        return float(norm.sf((w - mean) / sd))
    r2 = np.rint(2 * ranks).astype(np.int64)  # mid-ranks are multiples of 1/2
    dist = np.zeros(int(r2.sum()) + 1)
    dist[0] = 1.0
    for k in r2:
        dist[k:] = dist[k:] + dist[:-k].copy() if k else 2 * dist
    return float(dist[int(round(2 * w)):].sum() / dist.sum())
