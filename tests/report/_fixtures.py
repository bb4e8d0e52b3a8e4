"""Realistic results (as ``neuroxai.protocol.verdict.assemble_results`` builds them) and small
figure inputs, for the report tests: ``results_dict()`` is the JSON form as a file would hold it
(only the keys a writer must give), ``make_results()`` the typed :class:`Results` read from it.

Two tasks × three methods (gradcam, lrp, random):
- ``hippocampus_volume``: model fine; gradcam PASS, lrp FAIL (CI not above chance + margin),
  random FAIL (cannot beat itself);
- ``lesion``: model at chance → all INCONCLUSIVE; 3 subjects excluded from scoring.
Per-metric means / CIs are computed from the per-subject scores; the p values are fixed numbers
chosen to exercise the formatting (< 0.001, 3 decimals, missing).
"""
from __future__ import annotations

import copy

import numpy as np

TASKS = ("hippocampus_volume", "lesion")
METHODS = ("gradcam", "lrp", "random")
METRICS = ("relevance_mass_accuracy", "auroc")
CHANCE = {"relevance_mass_accuracy": 0.05, "auroc": 0.5}
N = 20
# (task, method) → per-subject mean score of each metric
LEVEL = {("hippocampus_volume", "gradcam"): {"relevance_mass_accuracy": 0.40, "auroc": 0.85},
         ("hippocampus_volume", "lrp"): {"relevance_mass_accuracy": 0.12, "auroc": 0.66},
         ("hippocampus_volume", "random"): {"relevance_mass_accuracy": 0.05, "auroc": 0.50},
         ("lesion", "gradcam"): {"relevance_mass_accuracy": 0.07, "auroc": 0.55},
         ("lesion", "lrp"): {"relevance_mass_accuracy": 0.06, "auroc": 0.52},
         ("lesion", "random"): {"relevance_mass_accuracy": 0.05, "auroc": 0.50}}
# (task, method, metric) → (p vs random adjusted, p vs null model adjusted)
P = {("hippocampus_volume", "gradcam", "relevance_mass_accuracy"): (2.5e-4, 0.0041),
     ("hippocampus_volume", "gradcam", "auroc"): (1e-6, 0.0009),
     ("hippocampus_volume", "lrp", "relevance_mass_accuracy"): (0.0234, 0.2),
     ("hippocampus_volume", "lrp", "auroc"): (0.0312, 0.4567),
     ("lesion", "gradcam", "relevance_mass_accuracy"): (0.3, 0.61),
     ("lesion", "gradcam", "auroc"): (0.25, 0.5),
     ("lesion", "lrp", "relevance_mass_accuracy"): (0.45, 0.7),
     ("lesion", "lrp", "auroc"): (0.5, 0.8)}
MARGIN = 0.1
ALPHA = 0.01
CREDITS = ("ICBM 2009a MNI152 template (Fonov et al. 2011), see https://www.bic.mni.mcgill.ca; "
           "AAL3 atlas (Rolls et al. 2020)")


def _scores(rng) -> dict:
    cols = {"subject_id": [], "method": [], "metric": [], "value": [], "task": []}
    for (tid, meth), lv in LEVEL.items():
        for s in range(N):
            for met in METRICS:
                v = float(np.clip(lv[met] + 0.08 * rng.standard_normal(), 0, 1))
                for name, val in ((met, v), (f"{met}_chance", CHANCE[met]),
                                  (f"{met}_norm", (v - CHANCE[met]) / (1 - CHANCE[met]))):
                    cols["subject_id"].append(f"sub-{s:03d}")
                    cols["method"].append(meth)
                    cols["metric"].append(name)
                    cols["value"].append(val)
                    cols["task"].append(tid)
    return cols


def _summary(scores: dict, tid: str, meth: str, met: str) -> dict:
    sel = [i for i in range(len(scores["value"])) if scores["task"][i] == tid
           and scores["method"][i] == meth and scores["metric"][i] == met]
    v = np.array([scores["value"][i] for i in sel])
    boots = np.random.default_rng(1).choice(v, size=(200, len(v))).mean(1)
    rec = {"mean": float(v.mean()), "ci_low": float(np.quantile(boots, 0.025)),
           "ci_high": float(np.quantile(boots, 0.975)), "ci_method": "percentile", "ci_level": 0.95,
           "n": int(len(v)), "chance": CHANCE[met],
           "normalized_mean": float((v.mean() - CHANCE[met]) / (1 - CHANCE[met])),
           "median": float(np.median(v)), "comparisons": {}}
    if meth != "random":
        pr, pn = P[(tid, meth, met)]
        rec["comparisons"] = {
            "chance_map": {"p": pr / 2, "n_pairs": N, "baseline_mean": LEVEL[(tid, "random")][met],
                       "p_adjusted": pr},
            "null_model": {"p": pn / 2, "n_pairs": N, "baseline_mean": CHANCE[met], "p_adjusted": pn}}
    return rec


def _criteria(e: dict) -> list[dict]:
    rma = e["metrics"]["relevance_mass_accuracy"]
    thr = rma["chance"] + MARGIN
    out = [{"kind": "ci_above_chance", "text": f"relevance_mass_accuracy: lower CI bound ≥ chance + {MARGIN}",
            "metric": "relevance_mass_accuracy", "observed": rma["ci_low"], "threshold": thr,
            "passed": bool(rma["ci_low"] >= thr), "applicable": True}]
    for kind, comp, text in (("beats_random", "chance_map", "higher than the random map"),
                             ("beats_null_model", "null_model", "higher than on the null model")):
        c = {"kind": kind, "text": f"relevance_mass_accuracy: {text} (p < {ALPHA}, corrected)",
             "metric": "relevance_mass_accuracy", "observed": None, "threshold": ALPHA,
             "passed": None, "applicable": True}
        cmp = rma["comparisons"].get(comp)
        if e["name"] == "random" and comp == "chance_map":
            c.update(passed=False, text=c["text"] + " (the random map cannot beat itself)")
        elif cmp is None:
            c["applicable"] = False
        else:
            c.update(observed=cmp["p_adjusted"], passed=bool(cmp["p_adjusted"] < ALPHA))
        out.append(c)
    s = e["sanity"]
    out.append({"kind": "model_randomization", "text": "maps change under model-parameter randomization",
                "metric": None, "observed": None if s is None else s["final_similarity"],
                "threshold": None if s is None else s["threshold"],
                "passed": None if s is None else s["passed"], "applicable": s is not None})
    return out


def make_results(seed: int = 0):
    """The fixture as the typed :class:`~neuroxai.report.schema.Results`, its score table attached
    (held in memory, as the audit's)."""
    from neuroxai.report.schema import validate_results
    from neuroxai.report.scores import ScoreTable

    return validate_results(results_dict(seed)).with_table(ScoreTable.from_frame(scores_frame(seed)))


def scores_frame(seed: int = 0):
    """The fixture's long score table (what scores.parquet holds)."""
    import pandas as pd

    return pd.DataFrame(_scores(np.random.default_rng(seed)))


def results_dict_1x(seed: int = 0) -> dict:
    """The fixture as a results.json of schema 1.x held it: the score table embedded as columns,
    the comparison with the chance map keyed "random"."""
    d = results_dict(seed)
    d["schema_version"] = "1.6"
    d["scores"] = _scores(np.random.default_rng(seed))
    for m in d["methods"]:
        for rec in m["metrics"].values():
            rec["comparisons"] = {("random" if k == "chance_map" else k): v for k, v in rec["comparisons"].items()}
    return d


def results_dict(seed: int = 0) -> dict:
    """The JSON form of schema 2.0 (the score table is a file beside it: :func:`scores_frame`)."""
    rng = np.random.default_rng(seed)
    scores = _scores(rng)
    tasks = []
    for tid in TASKS:
        at_chance = tid == "lesion"
        model = ({"auroc": 0.912, "auroc_ci_low": 0.85, "auroc_ci_high": 0.96, "accuracy": 0.85,
                  "balanced_accuracy": 0.84, "at_chance": False, "n_test": N} if not at_chance else
                 {"auroc": 0.531, "auroc_ci_low": 0.38, "auroc_ci_high": 0.68, "accuracy": 0.5,
                  "balanced_accuracy": 0.52, "at_chance": True, "n_test": N})
        confound = {"metric": "auroc", "value": 0.54, "covariates": ["age", "sex", "tiv"],
                    "note": "AUROC of a logistic regression on covariates alone (0.5 = no shortcut)"}
        tasks.append({"id": tid, "type": "region_volume" if not at_chance else "lesion",
                      "kind": "classification",
                      "summary": {"n_per_split": {"train": 60, "val": 16, "test": N}, "confound": confound},
                      "n_subjects": 96, "n_scored": N - (3 if at_chance else 0),
                      "n_excluded_from_scoring": 3 if at_chance else 0,
                      "excluded_reason": "no ground-truth voxels (e.g. no lesion); kept for training"
                      if at_chance else "",
                      "confound": confound, "model": model,
                      "null_model": {"auroc": 0.49, "auroc_ci_low": 0.33, "auroc_ci_high": 0.65,
                                     "accuracy": 0.5, "balanced_accuracy": 0.5, "at_chance": True,
                                     "n_test": N}})
    methods = []
    for tid in TASKS:
        at_chance = tid == "lesion"
        for meth in METHODS:
            base = meth == "random"
            e = {"task": tid, "method": meth, "name": meth,
                 "params": {"seed": 0} if base else ({"composite": "epsilon_plus_flat"} if meth == "lrp" else {}),
                 "is_baseline": base,
                 "metrics": {met: _summary(scores, tid, meth, met) for met in METRICS}}
            e["sanity"] = None if base else {
                "layers": ["fc", "conv3", "conv2", "conv1"], "measure": "spearman",
                "similarity": [0.8, 0.5, 0.3, 0.2] if meth == "gradcam" else [0.9, 0.85, 0.7, 0.62],
                "final_similarity": 0.2 if meth == "gradcam" else 0.62, "threshold": 0.5,
                "passed": meth == "gradcam"}
            e["criteria"] = _criteria(e)
            if at_chance:
                e["verdict"] = "INCONCLUSIVE"
                e["verdict_reason"] = ("the model is at chance on the test split (its AUROC CI includes "
                                       "0.5): its explanations cannot be validated")
            else:
                failed = [c["text"] for c in e["criteria"] if c["passed"] is False]
                e["verdict"] = "FAIL" if failed else "PASS"
                e["verdict_reason"] = "failed: " + "; ".join(failed) if failed else "all criteria hold"
            methods.append(e)
    non_base = [m for m in methods if not m["is_baseline"]]
    acceptance_spec = [{"kind": "ci_above_chance", "metric": "relevance_mass_accuracy", "margin": MARGIN, "alpha": ALPHA},
                       {"kind": "beats_random", "metric": "relevance_mass_accuracy", "margin": 0.0, "alpha": ALPHA},
                       {"kind": "beats_null_model", "metric": "relevance_mass_accuracy", "margin": 0.0, "alpha": ALPHA},
                       {"kind": "model_randomization", "metric": None, "margin": 0.0, "alpha": ALPHA}]
    return {
        "schema_version": "2.0",
        "protocol": {"id": "fixture", "version": "1.2", "title": "Fixture audit",
                     "description": "Two tasks, three methods.", "hash": "ab" * 32,
                     "acceptance": [c["text"] for c in methods[0]["criteria"]],
                     "spec": {"id": "fixture", "version": "1.2",
                              "data": {"source": "embedded", "cohort": {"n": 96}},
                              "tasks": [{"id": t, "type": "region_volume"} for t in TASKS],
                              "model": {"architecture": "small_cnn", "checkpoint": None},
                              "methods": [{"name": m, "label": None, "params": {}} for m in METHODS],
                              "metrics": [{"name": m, "params": {}} for m in METRICS],
                              "statistics": {"bootstrap": 200, "ci_level": 0.95, "ci_method": "percentile",
                                             "test": "wilcoxon", "correction": "holm", "seed": 0},
                              "acceptance": acceptance_spec}},
        "provenance": {"packages": {"python": "3.11.7", "neuroxai": "0.1.0", "torch": "2.13.0+cpu"},
                       "git_commit": "0123456789abcdef0123456789abcdef01234567",
                       "device": {"device": "cpu", "torch_threads": 2},
                       "protocol_hash": "ab" * 32, "manifest_hash": "cafebabe12345678",
                       "seeds": {"run": 0, "cohort": 0, "statistics": 0},
                       "command": "neuroxai validate protocols/fixture.yaml",
                       "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:03:00+00:00",
                       "timings_s": {"cohort_s": 1.5, "train_hippocampus_volume_s": 12.25, "total_s": 42.0}},
        "data": {"source": "embedded", "n_subjects": 96, "manifest_hash": "cafebabe12345678",
                 "grid": {"spacing_mm": 4.0, "shape": None, "normalize": "zscore"},
                 "cohort": {"n": 96, "seed": 0}, "credits": CREDITS},
        "tasks": tasks,
        "methods": methods,
        "overall": {"verdict": "FAIL", "n_pass": sum(m["verdict"] == "PASS" for m in non_base),
                    "n_fail": sum(m["verdict"] == "FAIL" for m in non_base),
                    "n_inconclusive": sum(m["verdict"] == "INCONCLUSIVE" for m in non_base),
                    "exit_code": 1},
    }


def _ball(shape, centre, r):
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return (np.linalg.norm(g - np.asarray(centre), axis=-1) <= r).astype(np.float32)


def make_figures(shape=(12, 12, 12)) -> dict:
    """Task 1: mean image/mask/maps and an example subject; task 2: image and mask only (no maps,
    so its overlays are skipped)."""
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, shape[0])
    image = np.exp(-(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2)).astype(np.float32)
    mask = _ball(shape, (3, 7, 5), 2.0) * 0.9
    maps = {"gradcam": _ball(shape, (3, 7, 5), 3.0) * 2.0 + 0.01,
            "lrp": _ball(shape, (8, 4, 6), 2.5) - 0.5 * _ball(shape, (3, 7, 5), 1.0),
            "random": rng.random(shape).astype(np.float32)}
    ex_maps = {k: (v + 0.1 * rng.random(shape)).astype(np.float32) for k, v in maps.items()}
    return {"tasks": {
        "hippocampus_volume": {"image": image, "mask": mask, "spacing": (4.0, 4.0, 4.0), "maps": maps,
                               "example": {"subject_id": "sub-007", "image": image * 1.1,
                                           "mask": (mask > 0).astype(np.float32), "maps": ex_maps}},
        "lesion": {"image": image, "mask": _ball(shape, (6, 6, 6), 2.0), "spacing": (4.0, 4.0, 4.0)},
    }}


def flatten_figures(figures: dict) -> dict[str, np.ndarray]:
    """The ``figures.npz`` layout runs wrote before ``FigureInputs`` (format 2): ``|``-joined keys."""
    flat = {}
    for tid, t in figures["tasks"].items():
        for k in ("image", "mask"):
            if k in t:
                flat[f"{tid}|{k}"] = t[k]
        if "spacing" in t:
            flat[f"{tid}|spacing"] = np.asarray(t["spacing"])
        for k, v in t.get("maps", {}).items():
            flat[f"{tid}|maps|{k}"] = v
        ex = t.get("example")
        if ex:
            flat[f"{tid}|example|image"] = ex["image"]
            flat[f"{tid}|example|mask"] = ex["mask"]
            flat[f"{tid}|example|subject_id"] = np.asarray(ex["subject_id"])
            for k, v in ex["maps"].items():
                flat[f"{tid}|example|maps|{k}"] = v
    return flat


def with_changes(results, fn) -> dict:
    """A changed copy, as the JSON form (a dict): ``results`` may be typed or a dict."""
    r = results.to_dict() if hasattr(results, "to_dict") else copy.deepcopy(results)
    fn(r)
    return r
