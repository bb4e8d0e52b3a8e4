"""Statistics and acceptance: per task × method × metric summaries, tests against the floors,
multiple-comparison correction, and the PASS / FAIL / INCONCLUSIVE verdict of each method."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .schema import Protocol

BASELINES = ("random", "edge_detector")


def _is_null(tid: str) -> bool:
    return tid.endswith("__null")


def _vals(df: pd.DataFrame, method: str, metric: str) -> pd.Series:
    sel = df[(df["method"] == method) & (df["metric"] == metric)]
    return sel.set_index("subject_id")["value"].astype(float)


def _paired_p(a: pd.Series, b: pd.Series, proto: Protocol) -> tuple[float, int]:
    """One-sided p that ``a`` > ``b`` on the subjects both have (paired), else rank-sum."""
    from scipy import stats as sst

    from ..scoring.stats import paired_test

    common = a.index.intersection(b.index)
    st = proto.statistics
    if len(common) >= 5:
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


def _ci(values: np.ndarray, proto: Protocol) -> tuple[float, float, float]:
    from ..scoring.stats import bootstrap_ci

    st = proto.statistics
    if len(values) < 2:
        v = float(values.mean()) if len(values) else float("nan")
        return v, float("nan"), float("nan")
    est, lo, hi = bootstrap_ci(torch.tensor(np.asarray(values, dtype=np.float64)), n_boot=st.bootstrap,
                               level=st.ci_level, method=st.ci_method, seed=st.seed)
    return float(est), float(lo), float(hi)


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


def assemble_results(proto: Protocol, prov: dict, grid: dict, tasks: dict, models: dict,
                     scores: dict, sanity: dict, *, data_info: dict) -> dict:
    """Build the ``results.json`` content (schema: :mod:`neuroxai.report.schema`)."""
    metrics = [m.name for m in proto.metrics]
    task_out, method_out = [], []
    all_rows = []
    for tid, task in tasks.items():
        df = scores[tid]
        if len(df):
            all_rows.append(df.assign(task=tid))
        if _is_null(tid):
            continue
        tm = models[tid]
        perf = tm.metrics
        null_id = f"{tid}__null"
        null_df = scores.get(null_id)
        summary = task.summary()
        n_excluded = int((~np.asarray(task.scorable, bool)).sum())
        task_out.append({
            "id": tid, "type": task.name, "kind": task.kind, "summary": summary,
            "n_subjects": int(len(task.subject_ids)),
            "n_scored": int(df["subject_id"].nunique()) if len(df) else 0,
            "n_excluded_from_scoring": n_excluded,
            "excluded_reason": "no ground-truth voxels (e.g. no lesion); kept for training" if n_excluded else "",
            "confound": getattr(task, "confound", {}) or {},
            "model": perf,
            "null_model": models[null_id].metrics if null_id in models else None,
        })
        at_chance = bool(perf.get("at_chance", False))
        # First pass: statistics; collect p-values for the correction across this task.
        entries, pvals, p_index = [], [], []
        for mspec in proto.methods:
            key = mspec.key
            m_entry = {"task": tid, "method": key, "name": mspec.name, "params": mspec.params,
                       "is_baseline": mspec.name in BASELINES, "metrics": {}}
            for met in metrics:
                v = _vals(df, key, met)
                if not len(v):
                    continue
                est, lo, hi = _ci(v.to_numpy(), proto)
                ch = _vals(df, key, f"{met}_chance")
                chance = float(ch.mean()) if len(ch) else None
                norm = _vals(df, key, f"{met}_norm")
                rec = {"mean": _f(est), "ci_low": _f(lo), "ci_high": _f(hi),
                       "ci_method": proto.statistics.ci_method, "ci_level": proto.statistics.ci_level,
                       "n": int(len(v)), "chance": _f(chance),
                       "normalized_mean": _f(norm.mean()) if len(norm) else None,
                       "median": _f(v.median()), "comparisons": {}}
                if mspec.name != "random":
                    rv = _vals(df, _random_key(proto), met) if _random_key(proto) else pd.Series(dtype=float)
                    if len(rv):
                        p, n = _paired_p(v, rv, proto)
                        rec["comparisons"]["random"] = {"p": _f(p), "n_pairs": n,
                                                        "baseline_mean": _f(rv.mean())}
                        pvals.append(p)
                        p_index.append((len(entries), met, "random"))
                    if null_df is not None and len(null_df) and mspec.name not in BASELINES:
                        nv = _vals(null_df, key, met)
                        if len(nv):
                            p, n = _paired_p(v, nv, proto)
                            rec["comparisons"]["null_model"] = {"p": _f(p), "n_pairs": n,
                                                                "baseline_mean": _f(nv.mean())}
                            pvals.append(p)
                            p_index.append((len(entries), met, "null_model"))
                m_entry["metrics"][met] = rec
            entries.append(m_entry)
        adj = _holm(pvals) if proto.statistics.correction == "holm" else pvals
        for (ei, met, comp), pa in zip(p_index, adj):
            entries[ei]["metrics"][met]["comparisons"][comp]["p_adjusted"] = _f(pa)
        # Second pass: criteria and verdicts.
        san = sanity.get(tid, {})
        for e in entries:
            e["sanity"] = san.get(e["method"])
            e["criteria"] = [_criterion(c, e, proto) for c in proto.acceptance]
            results_ok = [c["passed"] for c in e["criteria"] if c["passed"] is not None]
            if at_chance:
                e["verdict"] = "INCONCLUSIVE"
                e["verdict_reason"] = ("the model is at chance on the test split (its AUROC CI includes "
                                       "0.5): its explanations cannot be validated")
            elif any(c["passed"] is None and c["applicable"] for c in e["criteria"]):
                e["verdict"] = "INCONCLUSIVE"
                e["verdict_reason"] = "a criterion could not be evaluated (too few subjects)"
            else:
                e["verdict"] = "PASS" if all(results_ok) else "FAIL"
                failed = [c["text"] for c in e["criteria"] if c["passed"] is False]
                e["verdict_reason"] = "all criteria hold" if not failed else "failed: " + "; ".join(failed)
            method_out.append(e)
    non_base = [m for m in method_out if not m["is_baseline"]]
    overall = "PASS" if non_base and all(m["verdict"] == "PASS" for m in non_base) else "FAIL"
    scores_df = pd.concat(all_rows, ignore_index=True) if all_rows else pd.DataFrame()
    return {
        "schema_version": "1.0",
        "protocol": {"id": proto.id, "version": proto.version, "title": proto.title,
                     "description": proto.description, "hash": proto.content_hash(),
                     "acceptance": [c.describe() for c in proto.acceptance],
                     "spec": proto.model_dump(mode="json")},
        "provenance": prov,
        "data": data_info,
        "tasks": task_out,
        "methods": method_out,
        "overall": {"verdict": overall,
                    "n_pass": sum(m["verdict"] == "PASS" for m in non_base),
                    "n_fail": sum(m["verdict"] == "FAIL" for m in non_base),
                    "n_inconclusive": sum(m["verdict"] == "INCONCLUSIVE" for m in non_base),
                    "exit_code": 0 if overall == "PASS" else 1},
        "scores": scores_df.to_dict(orient="list") if len(scores_df) else {},
    }


def _random_key(proto: Protocol) -> str | None:
    for m in proto.methods:
        if m.name == "random":
            return m.key
    return None


def _criterion(c, e: dict, proto: Protocol) -> dict:
    text = c.describe()
    out = {"kind": c.kind, "text": text, "metric": c.metric, "observed": None, "threshold": None,
           "passed": None, "applicable": True}
    if c.kind == "model_randomization":
        s = e.get("sanity")
        if e["is_baseline"] or s is None:
            out["applicable"] = s is not None
            if e["is_baseline"]:
                out["applicable"] = False
            return out
        out.update(observed=s["final_similarity"], threshold=s["threshold"], passed=bool(s["passed"]))
        return out
    rec = e["metrics"].get(c.metric)
    if rec is None:
        out["applicable"] = False
        return out
    if c.kind == "ci_above_chance":
        thr = (rec["chance"] or 0.0) + c.margin
        out.update(observed=rec["ci_low"], threshold=thr,
                   passed=None if rec["ci_low"] is None else bool(rec["ci_low"] >= thr))
        return out
    comp = {"beats_random": "random", "beats_null_model": "null_model"}[c.kind]
    if e["name"] == "random" and comp == "random":
        out.update(applicable=True, passed=False, observed=None, threshold=c.alpha)
        out["text"] += " (the random map cannot beat itself)"
        return out
    cmp = rec["comparisons"].get(comp)
    if cmp is None:
        # A model-free baseline has no null-model counterpart; for a real method a missing
        # comparison (e.g. no null model trained) leaves the criterion unevaluated.
        out["applicable"] = not e["is_baseline"]
        return out
    p = cmp.get("p_adjusted", cmp["p"])
    out.update(observed=p, threshold=c.alpha, passed=None if p is None else bool(p < c.alpha))
    return out
