"""The results of a ``kind: reference`` run: every method against the model's causal atlas
occlusion (:mod:`neuroxai.protocol.stages.occlusion_reference`), its verdict, the methods ranked,
and the claims "the model relies on region X".

Rules (``reference:`` of the protocol, :class:`~neuroxai.protocol.schema.ReferenceSpec`):

* per method, the mean over subjects of the RBO on the chance (0) → identical ranking (1) scale
  (per subject ``(rbo − chance) / (max − chance)``, so the threshold means the same whatever the
  number of regions and the depth) and of Spearman's ρ, each with its bootstrap CI
  (``statistics``); PASS when every criterion's lower bound reaches its threshold (``min_rbo``,
  ``min_spearman``; null = not a criterion), FAIL when an upper bound is below its threshold,
  INCONCLUSIVE when an interval straddles it, with fewer than ``min_subjects`` subjects, when the
  model is at chance (it learned nothing its maps could show) or when no occlusion moves its output;
* the methods are ranked by ``rank_by`` (the scaled RBO, or ρ), then by the other;
* a claimed region X: its effect per subject (CI), its rank among the regions by cohort-mean
  effect, and its *excess* per subject (its effect minus the subject's median regional effect,
  CI). Supported ⇔ rank ≤ ``top_k`` and the excess's lower CI bound > 0: occluding X moves the
  output more, per voxel, than occluding a typical region, and X is among the regions that move it
  most. The effect alone is ``|Δ|`` ≥ 0, so its CI lies above 0 for any region the model reads at
  all; the excess is what a claim of reliance needs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..attribution.baselines import is_baseline, role
from ..report.schema import (SCHEMA_VERSION, Agreement, DataInfo, MetricFacts, MetricSummary, MethodResult,
                             ModelPerf, ProtocolInfo, Provenance, ReferenceClaim, ReferenceMethod, ReferenceRegion,
                             ReferenceResult, Results, TaskResult)
from .schema import Protocol
from .stages.occlusion_reference import Effects, reference_settings
from .verdict import ground_truth_text, overall_verdict

REFERENCE_TEXT = ("causal atlas occlusion (Siegel et al. 2025's AtlasOcclusion): each atlas region of the subject "
                  "set to the training mean image, the change of the explained output divided by the region's "
                  "size. It is what this model's output depends on, measured by intervention — a reference, not "
                  "a ground truth: it says which regions the model uses, not where a disease lies")
#: the two measures as the verdict tables show them (MethodResult.metrics keys)
SPEARMAN, RBO = "reference_spearman", "reference_rbo"


def _f(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _ci(v: np.ndarray, proto: Protocol) -> tuple[float | None, float | None, float | None]:
    from ..scoring.stats import bootstrap_ci

    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return (_f(v.mean()) if len(v) else None), None, None
    st = proto.statistics
    est, lo, hi = bootstrap_ci(torch.tensor(v), n_boot=st.bootstrap, level=st.ci_level, method=st.ci_method,
                               seed=st.seed)
    return _f(est), _f(lo), _f(hi)


def criteria_text(spec) -> list[str]:
    out = []
    if spec.min_rbo is not None:
        out.append(f"mean rank-biased overlap of the top {spec.rbo_depth} regions with the causal ranking, on the "
                   f"random (0) → identical (1) scale: lower CI bound ≥ {spec.min_rbo:g}")
    if spec.min_spearman is not None:
        out.append(f"mean Spearman ρ with the causal ranking: lower CI bound ≥ {spec.min_spearman:g}")
    out.append(f"at least {spec.min_subjects} subjects, a model above chance and an output that occlusion moves")
    return out


def _ci_text(a: Agreement) -> str:
    lo, hi = a.scaled_ci_low, a.scaled_ci_high
    return "has no CI" if lo is None or hi is None else f"CI [{lo:.3f}, {hi:.3f}]"


def _decide(aggs: list[tuple[str, Agreement, float]], n: int, spec, perf: ModelPerf, moved: bool) -> tuple[str, str]:
    """A method's verdict and its reason from its agreements ``(name, Agreement, threshold)``."""
    if perf.at_chance:
        return "INCONCLUSIVE", ("the model is at chance on the test split: it learned nothing its maps could "
                                "show, whatever they agree with")
    if not moved:
        return "INCONCLUSIVE", "no atlas occlusion moves the model's output: there is no causal ranking to agree with"
    if n < spec.min_subjects:
        return "INCONCLUSIVE", f"too few subjects to decide: {n} < reference.min_subjects = {spec.min_subjects}"
    low = [f"{name} upper CI bound {a.scaled_ci_high:.3f} < {thr:g}" for name, a, thr in aggs
           if a.scaled_ci_high is not None and a.scaled_ci_high < thr]
    if low:
        return "FAIL", "disagrees with the causal ranking: " + "; ".join(low)
    open_ = [f"{name} {_ci_text(a)} reaches below {thr:g}" for name, a, thr in aggs
             if a.scaled_ci_low is None or a.scaled_ci_low < thr]
    if open_:
        return "INCONCLUSIVE", "cannot decide on these subjects: " + "; ".join(open_)
    return "PASS", "agrees with the causal ranking: " + "; ".join(
        f"{name} lower CI bound {a.scaled_ci_low:.3f} ≥ {thr:g}" for name, a, thr in aggs)


def _agreement(table: pd.DataFrame, col: str, proto: Protocol) -> Agreement:
    """The mean of ``table[col]`` with its CI, and on the chance → maximum scale (per subject, from
    the ``{col}_chance`` / ``{col}_max`` columns when the table has them; else the value itself)."""
    v = table[col].to_numpy(float)
    est, lo, hi = _ci(v, proto)
    if f"{col}_chance" in table:
        ch, mx = table[f"{col}_chance"].to_numpy(float), table[f"{col}_max"].to_numpy(float)
        span = mx - ch
        sc = np.where(span > 0, (v - ch) / np.where(span > 0, span, 1.0), np.nan)
        s_est, s_lo, s_hi = _ci(sc, proto)
        chance, max_ = (ch.mean(), mx.mean()) if len(v) else (None, None)
    else:
        (s_est, s_lo, s_hi), chance, max_ = (est, lo, hi), 0.0, 1.0
    return Agreement(mean=est, ci_low=lo, ci_high=hi, n=int(np.isfinite(v).sum()), chance=_f(chance), max=_f(max_),
                     scaled_mean=s_est, scaled_ci_low=s_lo, scaled_ci_high=s_hi)


def _region(label: int, name: str, eff: np.ndarray, ranks: np.ndarray, proto: Protocol) -> dict:
    """A region's effect over the subjects (0 where a subject lacks it, as its rank counts it;
    ``n``: the subjects that have it)."""
    col = eff[:, label] if label < eff.shape[1] else np.full(len(eff), np.nan)
    n = int(np.isfinite(col).sum())
    est, lo, hi = _ci(np.nan_to_num(col), proto) if n else (None, None, None)
    r = int(ranks[label]) if label < len(ranks) and ranks[label] > 0 else None
    return {"region": name, "label": int(label), "causal_rank": r, "effect_mean": est, "effect_ci_low": lo,
            "effect_ci_high": hi, "n": n}


def _claim(c, table: dict[str, int], eff: np.ndarray, ranks: np.ndarray, proto: Protocol) -> ReferenceClaim:
    from ..scoring.reference import excess_over_median
    from ..tasks.regions import resolve_regions

    spec = reference_settings(proto)
    label = resolve_regions(c.region, table)[0]
    names = {v: k for k, v in table.items()}
    base = _region(label, names.get(label, str(c.region)), eff, ranks, proto)
    ex = (excess_over_median(torch.as_tensor(eff), label).numpy() if label < eff.shape[1] and base["n"]
          else np.full(len(eff), np.nan))
    est, lo, hi = _ci(ex, proto)
    out = ReferenceClaim(**base, excess_mean=est, excess_ci_low=lo, excess_ci_high=hi, top_k=spec.top_k)
    where = f"causal rank {out.causal_rank}" if out.causal_rank else "absent from these subjects"
    if out.causal_rank is None or out.n < spec.min_subjects or lo is None:
        out.reading = f"cannot tell: {where}, {out.n} subjects"
    elif out.causal_rank <= spec.top_k and lo > 0:
        out.supported = True
        out.reading = (f"supported: {where} (top {spec.top_k}); occluding it moves the output more per voxel than "
                       f"a typical region (excess CI [{lo:.3g}, {hi:.3g}])")
    else:
        out.supported = False
        why = (f"{where}, outside the causal top {spec.top_k}" if out.causal_rank > spec.top_k else where)
        if lo <= 0:
            why += f"; its excess over a typical region's effect has CI [{lo:.3g}, {hi:.3g}], not above 0"
        out.reading = "not supported: " + why
    return out


def reference_result(proto: Protocol, tid: str, effects: Effects, tables: dict[str, pd.DataFrame],
                     perf: ModelPerf, label_table: dict[str, int]) -> ReferenceResult:
    """The :class:`~neuroxai.report.schema.ReferenceResult` of one task from the stages' outputs:
    ``effects`` (the causal reference) and ``tables`` (``{method: per-subject agreement}``)."""
    from ..scoring.reference import causal_ranks

    spec = reference_settings(proto)
    eff = effects.values
    moved = bool(np.nan_to_num(eff).max(initial=0.0) > 0)
    methods = []
    for mspec in proto.methods:
        t = tables[mspec.key]
        sp, rb = _agreement(t, "spearman", proto), _agreement(t, "rbo", proto)
        aggs = [(name, a, thr) for name, a, thr in (("scaled RBO", rb, spec.min_rbo),
                                                    ("Spearman ρ", sp, spec.min_spearman)) if thr is not None]
        verdict, reason = _decide(aggs, len(t), spec, perf, moved)
        methods.append(ReferenceMethod(method=mspec.key, name=mspec.name, is_baseline=is_baseline(mspec.name), rank=1,
                                       spearman=sp, rbo=rb, verdict=verdict, verdict_reason=reason))
    def key(m: ReferenceMethod):
        first, second = (m.rbo, m.spearman) if spec.rank_by == "rbo" else (m.spearman, m.rbo)
        return (-(first.scaled_mean if first.scaled_mean is not None else -2),
                -(second.scaled_mean if second.scaled_mean is not None else -2), m.method)

    methods.sort(key=key)
    for i, m in enumerate(methods, 1):
        m.rank = i
    ranks = causal_ranks(torch.as_tensor(eff)).numpy() if eff.size else np.zeros(0, int)
    names = {v: k for k, v in label_table.items()}
    top = [ReferenceRegion(**_region(int(lab), names.get(int(lab), str(int(lab))), eff, ranks, proto))
           for lab in np.argsort(np.where(ranks > 0, ranks, np.iinfo(np.int64).max), kind="stable")[:spec.top_k]
           if ranks[lab] > 0]
    claims = [_claim(c, label_table, eff, ranks, proto) for c in spec.claims]
    order = [m.method for m in methods]
    under = [m for m in methods if not m.is_baseline]
    best = under[0] if under else None
    reading = (f"closest agreement with the causal ranking: {best.method} (scaled RBO {best.rbo.scaled_mean:.3f}, "
               f"Spearman ρ {best.spearman.mean:.3f})"
               if best is not None and best.rbo.scaled_mean is not None and best.spearman.mean is not None else "")
    return ReferenceResult(reference=REFERENCE_TEXT, task=tid, n_subjects=len(effects.subject_ids),
                           n_regions=int(round(float(np.isfinite(eff).sum(1).mean()))) if eff.size else 0,
                           percentile=spec.percentile, rbo_depth=spec.rbo_depth, rbo_p=spec.rbo_p, rank_by=spec.rank_by,
                           criteria=criteria_text(spec), order=order, methods=methods, top_regions=top,
                           claims=claims, reading=reading)


def _summary(a: Agreement, proto: Protocol) -> MetricSummary:
    return MetricSummary(mean=a.mean, ci_low=a.ci_low, ci_high=a.ci_high, ci_method=proto.statistics.ci_method,
                         ci_level=proto.statistics.ci_level, n=a.n, chance=a.chance, oracle_mean=a.max,
                         scaled_mean=a.scaled_mean, scaled_ci_low=a.scaled_ci_low, scaled_ci_high=a.scaled_ci_high)


FACTS = {
    SPEARMAN: MetricFacts(higher_is_better=True, best=1.0, chance="0 (a random region ranking)",
                          help="Spearman's ρ between the method's ranking of the atlas regions and the model's causal "
                               "atlas-occlusion ranking, per subject (a reference, not a ground truth)"),
    RBO: MetricFacts(higher_is_better=True, best=1.0, chance="the expected overlap of a random region ranking",
                     help="rank-biased overlap of the method's top regions with the causal atlas-occlusion top regions "
                          "(scale: 0 = a random ranking, 1 = the occlusion ranking)"),
}


def assemble_reference(proto: Protocol, prov: dict, tasks: dict, models: dict, ref: dict, *, data_info: dict,
                       label_table: dict[str, int]) -> Results:
    """The run's :class:`~neuroxai.report.schema.Results` (``kind="reference"``): one task, each
    method's agreement as its two "metrics" (:data:`SPEARMAN`, :data:`RBO`) and its verdict, the
    :class:`ReferenceResult` in ``reference``. The score table stays empty: the per-subject values
    are the stages' ``subjects.csv``."""
    (tid, task), = tasks.items()
    effects, tables = ref[tid]
    perf = ModelPerf.model_validate(models[tid].metrics)
    rr = reference_result(proto, tid, effects, tables, perf, label_table)
    by = {m.method: m for m in rr.methods}
    spec_by = {m.key: m for m in proto.methods}
    first = RBO if reference_settings(proto).rank_by == "rbo" else SPEARMAN
    method_out = [MethodResult(task=tid, method=k, name=spec_by[k].name, params=spec_by[k].params,
                               is_baseline=by[k].is_baseline, role=role(spec_by[k].name),
                               # the ranking measure first: the verdict tables show a method's first metric
                               metrics=dict(sorted({SPEARMAN: _summary(by[k].spearman, proto),
                                                    RBO: _summary(by[k].rbo, proto)}.items(),
                                                   key=lambda kv: kv[0] != first)),
                               criteria=[], verdict=by[k].verdict, verdict_reason=by[k].verdict_reason)
                  for k in rr.order]
    non_base = [m for m in method_out if not m.is_baseline]
    verdict, code = overall_verdict([m.verdict for m in non_base])
    from ..report.schema import Overall

    overall = Overall(verdict=verdict, n_pass=sum(m.verdict == "PASS" for m in non_base),
                      n_fail=sum(m.verdict == "FAIL" for m in non_base),
                      n_inconclusive=sum(m.verdict == "INCONCLUSIVE" for m in non_base), exit_code=code,
                      reachability_note="kind: reference — judged against the model's causal atlas occlusion")
    task_out = TaskResult(id=tid, type=task.name, kind=task.kind, ground_truth=ground_truth_text(task),
                          summary=task.summary(), n_subjects=len(task.subject_ids), n_scored=rr.n_subjects,
                          n_excluded_from_scoring=0, confound=getattr(task, "confound", {}) or {}, model=perf)
    return Results(schema_version=SCHEMA_VERSION, kind="reference", reference=rr,
                   protocol=ProtocolInfo(id=proto.id, version=proto.version, title=proto.title,
                                         description=proto.description, hash=proto.content_hash(),
                                         acceptance=criteria_text(reference_settings(proto)),
                                         spec=proto.model_dump(mode="json")),
                   provenance=Provenance.model_validate(prov), data=DataInfo.model_validate(data_info),
                   tasks=[task_out], methods=method_out, overall=overall, metric_facts=dict(FACTS))
