"""The audit report: one self-contained HTML page (figures inlined as PNG data URIs, inline CSS,
no scripts, fonts or external requests) for a clinical reviewer, plus files for machines:

``index.html``, ``results.json`` (schema :mod:`neuroxai.report.schema`), ``results.schema.json``,
``summary.csv`` (task × method × metric), ``scores.csv`` (subject × method × metric, long) and
``figures/*.png``. Every file is written atomically; the same inputs give byte-identical files.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..atomic import atomic_write
from ..errors import RunError
from ..outdir import MARKER, claim_dir
from ..safepath import inside, own_dir, safe_name, unique_names
from . import figures as figs
from .figure_inputs import FigureInputs, TaskFigures
from .scores import SCORES_FILE, ScoreTable
from .schema import SCORE_COLUMNS, MetricSummary, Results, json_schema, read_results, validate_results

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
MAX_FIGURE_TASKS = 3
MAX_FIGURE_METHODS = 8
MAX_FIGURE_METRICS = 6

SUMMARY_COLUMNS = ["task", "method", "metric", "mean", "ci_low", "ci_high", "chance",
                   "normalized_mean", "oracle_mean", "scaled_mean", "scaled_ci_low", "scaled_ci_high",
                   "median", "n", "p_vs_random", "p_vs_random_adjusted",
                   "p_vs_null_model", "p_vs_null_model_adjusted", "verdict"]

def metric_entry(results: Results, key: str) -> tuple[str, dict | None]:
    """The registered metric behind a score key and the entry's own scoring (None: the protocol's):
    a labelled entry's key is its label (``rma_ours`` → ``relevance_mass_accuracy``), an extra key
    its label plus the metric's suffix (``rm_weak`` → ``region_match_weak``)."""
    for m in results.protocol.spec.get("metrics", []):
        lab, name = m.get("label"), m.get("name")
        if lab and (key == lab or key.startswith(lab + "_")):
            return name + key[len(lab):], m.get("scoring")
        if not lab and key == name:
            return name, m.get("scoring")
    return key, None


def _facts(results: Results, key: str):
    """The facts of a score key as the run recorded them (by key, else by its registered metric)."""
    return results.facts(key) or results.facts(metric_entry(results, key)[0])


def _metric_help(results: Results, key: str) -> tuple[str, str]:
    """The report's "how to read" sentence and chance level, as the run recorded them (and, for an
    entry with its own scoring, that scoring)."""
    name, scoring = metric_entry(results, key)
    info = _facts(results, key)
    text, chance = (info.help, info.chance) if info and info.help else ("see the protocol's metric definition",
                                                                        "see summary.csv")
    if scoring:
        # the steps that act (a step off, or a default that changes nothing, is left out)
        quiet = {"percentile_over": "volume", "smooth_kernel": "zero_pad", "restrict_to_brain": True}
        steps = {k: v for k, v in scoring.items() if v not in (None, False, 0, 0.0)
                 and k != "profile_distances_mm" and quiet.get(k, object()) != v}
        text += f" — {name}, scored under its own scoring: " + ", ".join(f"{k}: {v}" for k, v in steps.items())
    return text, chance


def _lower_is_better(results: Results, key: str) -> bool:
    info = _facts(results, key)
    return info is not None and not info.higher_is_better


VERDICT_MEANING = {
    "PASS": ("Every method under test met every acceptance criterion of the protocol on this data "
             "and model: its maps point at the known signal more than chance, a random map and a "
             "model trained on shuffled labels, and they change when the model is randomized."),
    "FAIL": ("At least one method did not meet the acceptance criteria. Do not use a failing "
             "method's maps as evidence of where this model's signal lies; see which criterion "
             "failed below."),
    "INCONCLUSIVE": ("No method failed, but at least one could not be decided on this data (the model "
                     "is at chance or does not rely on the ground truth, the criteria were not shown "
                     "reachable, or too few subjects: each such method's reason names the number that "
                     "would decide). Those methods are neither validated nor refuted."),
}


#: The overall verdict of a ``kind: reference`` run, in words (no ground truth was involved).
REFERENCE_MEANING = {
    "PASS": ("Every method under test ranks the atlas regions as the model's causal atlas occlusion does "
             "(a reference, not a ground truth): its maps follow what this model's output depends on."),
    "FAIL": ("At least one method ranks the regions unlike the model's causal atlas occlusion: its maps do not "
             "show what this model's output depends on. Do not read such a map as the model's reasons."),
    "INCONCLUSIVE": ("No method disagreed, but at least one could not be decided (too few subjects, an interval "
                     "straddling the threshold, a model at chance): see each method's reason."),
}

REFERENCE_COLUMNS = ["rank", "task", "method", "name", "baseline", "verdict", "rbo_scaled_mean", "rbo_scaled_ci_low",
                     "rbo_scaled_ci_high", "spearman_mean", "spearman_ci_low", "spearman_ci_high", "rbo_mean",
                     "rbo_ci_low", "rbo_ci_high", "rbo_chance", "rbo_max", "n", "verdict_reason"]


def reference_rows(results: Results) -> list[dict]:
    """``reference.csv``: one row per method of a ``kind: reference`` run, closest agreement with
    the causal occlusion ranking first."""
    ref = results.reference
    if ref is None:
        return []
    return [{"rank": m.rank, "task": ref.task, "method": m.method, "name": m.name, "baseline": m.is_baseline,
             "verdict": m.verdict, "rbo_scaled_mean": m.rbo.scaled_mean, "rbo_scaled_ci_low": m.rbo.scaled_ci_low,
             "rbo_scaled_ci_high": m.rbo.scaled_ci_high, "spearman_mean": m.spearman.mean,
             "spearman_ci_low": m.spearman.ci_low,
             "spearman_ci_high": m.spearman.ci_high, "rbo_mean": m.rbo.mean, "rbo_ci_low": m.rbo.ci_low,
             "rbo_ci_high": m.rbo.ci_high, "rbo_chance": m.rbo.chance, "rbo_max": m.rbo.max, "n": m.spearman.n,
             "verdict_reason": m.verdict_reason} for m in ref.methods]


# ---------------------------------------------------------------- formatting


def fmt(v, digits: int = 3) -> str:
    """A number to ``digits`` decimals; ``—`` for missing/NaN; other values as text."""
    if v is None or isinstance(v, bool):
        return "—" if v is None else ("yes" if v else "no")
    if isinstance(v, (int, float, np.integer, np.floating)):
        v = float(v)
        return "—" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


#: AUROC above accuracy by this much: the ranking is good, the decision threshold is not
THRESHOLD_GAP = 0.2


def threshold_note(perf) -> str:
    """A sentence when a classifier ranks subjects well but classifies them poorly (AUROC −
    accuracy ≥ :data:`THRESHOLD_GAP`, e.g. AUROC 1.000 and accuracy 0.500): the decision
    threshold, not the ranking, is off (a logit offset, or classes balanced differently than in
    training). Localization is judged on the ranking's evidence, so the model stays usable."""
    auc, acc = getattr(perf, "auroc", None), getattr(perf, "accuracy", None)
    if auc is None or acc is None or auc - acc < THRESHOLD_GAP:
        return ""
    return (f"AUROC {auc:.3f} but accuracy {acc:.3f}: the model ranks the subjects well, but its decision "
            "threshold is off (e.g. a shifted logit, or class balance unlike training): the threshold, not "
            "the ranking, is wrong; AUROC, which the verdicts rely on, does not use the threshold")


def fmt_p(v) -> str:
    """A p-value to 3 decimals, ``< 0.001`` below that, ``—`` when missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def fmt_ci(x: MetricSummary) -> str:
    return f"{fmt(x.mean)} [{fmt(x.ci_low)}, {fmt(x.ci_high)}]"


def _p_used(cmp) -> float | None:
    """:attr:`Comparison.p_used`; None without a comparison."""
    return None if cmp is None else cmp.p_used


def canonical(results: Results | dict) -> tuple[Results, str]:
    """``results`` as read back from its canonical JSON, and that text (what ``results.json``
    holds). The report is built from this form, so results straight from the runner and the same
    results re-read from ``results.json`` (whatever the key order, whatever NumPy scalars were in
    the open parts) give byte-identical pages."""
    r = results if isinstance(results, Results) else validate_results(results)
    text = r.to_json()
    return Results.model_validate_json(text).with_table(r._table, r._base), text


def metric_order(results: Results) -> list[str]:
    """Metric names in the protocol's order, then any others alphabetically."""
    names = [m.get("label") or m.get("name") for m in results.protocol.spec.get("metrics", [])]
    rest = sorted({k for m in results.methods for k in m.metrics} - set(names))
    return [n for n in names if n] + rest


def _ordered_metrics(results: Results, metrics: dict[str, MetricSummary]) -> list[tuple[str, MetricSummary]]:
    return [(k, metrics[k]) for k in metric_order(results) if k in metrics]


# ---------------------------------------------------------------- tables


def summary_rows(results: Results) -> list[dict]:
    """One row per task × method × metric: mean, CI, chance, p values (raw and adjusted), verdict."""
    rows = []
    for m in results.methods:
        for met, x in _ordered_metrics(results, m.metrics):
            r, nm = x.comparisons.get("chance_map"), x.comparisons.get("null_model")
            rows.append({"task": m.task, "method": m.method, "metric": met, "mean": x.mean,
                         "ci_low": x.ci_low, "ci_high": x.ci_high, "chance": x.chance,
                         "normalized_mean": x.normalized_mean, "oracle_mean": x.oracle_mean,
                         "scaled_mean": x.scaled_mean, "scaled_ci_low": x.scaled_ci_low,
                         "scaled_ci_high": x.scaled_ci_high, "median": x.median, "n": x.n,
                         "p_vs_random": r.p if r else None, "p_vs_random_adjusted": r.p_adjusted if r else None,
                         "p_vs_null_model": nm.p if nm else None,
                         "p_vs_null_model_adjusted": nm.p_adjusted if nm else None, "verdict": m.verdict})
    return rows


def verdict_rows(results: Results) -> list[dict]:
    """Rows of the HTML verdict table (strings, already formatted), one per task × method."""
    out = []
    no_model = results.kind == "audit"
    for m in results.methods:
        met = results.main_metric(m)
        x = m.metrics.get(met)
        cmp = x.comparisons if x else {}
        s = m.sanity
        sc = "—" if x is None or x.scaled_mean is None else (
            f"{fmt(x.scaled_mean)} [{fmt(x.scaled_ci_low)}, {fmt(x.scaled_ci_high)}]")
        out.append({"task": m.task, "method": m.method, "verdict": m.verdict,
                    "metric": met, "mean_ci": fmt_ci(x) if x else "—", "chance": fmt(x.chance if x else None),
                    "scaled": sc, "ceiling": fmt(x.oracle_mean if x else None),
                    "p_random": fmt_p(_p_used(cmp.get("chance_map"))),
                    "p_null": "n/a (no model)" if no_model else fmt_p(_p_used(cmp.get("null_model"))),
                    "sanity": "n/a (no model)" if no_model else "—" if s is None else
                              f"{'pass' if s.passed else 'fail'} ({fmt(s.final_similarity)} vs {fmt(s.threshold)})",
                    "reason": m.verdict_reason, "baseline": m.is_baseline,
                    "role": ("under test" if not m.is_baseline else
                             f"baseline ({'ceiling' if m.role == 'ceiling' else 'floor'})")})
    return out


#: A text cell starting with one of these is a formula to a spreadsheet (CSV injection, OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v):
    """``v`` for a CSV cell: a text starting like a formula (``=HYPERLINK(...)`` as a subject id)
    gets a leading ``'`` so spreadsheets show it as text; numbers are left as they are."""
    if v is None:
        return ""
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def _csv(rows: list[dict], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: csv_cell(r.get(k)) for k in cols})
    return buf.getvalue()


def _number_cell(v):
    """A label, prediction, target or seed: an integral value as an integer (a class), else the
    number; NaN empty."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return int(v) if float(v).is_integer() else v


def write_scores_csv(table, path: Path) -> None:
    """The long score table as CSV, written a batch at a time (atomically): ``task, subject_id,
    method, metric, value`` then the table's per-subject columns."""
    cols = list(table.columns)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(cols)
            for b in table.batches():
                arrays = [b[c].to_numpy() for c in cols]
                for row in zip(*arrays):
                    w.writerow([csv_cell(str(v)) if c in _TEXT_COLUMNS else
                                ("" if math.isnan(v) else float(v)) if c == "value" else _number_cell(v)
                                for c, v in zip(cols, row)])

    atomic_write(path, write=write)


_TEXT_COLUMNS = ("task", "subject_id", "method", "metric")


def _flat(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    """``d`` flattened to ``("a.b", text)`` rows, keys sorted at every level."""
    out = []
    for k, v in sorted(d.items()):
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        elif isinstance(v, float):
            out.append((f"{prefix}{k}", f"{v:.3f}"))
        elif isinstance(v, (list, tuple)):
            out.append((f"{prefix}{k}", ", ".join(str(x) for x in v)))
        else:
            out.append((f"{prefix}{k}", "—" if v is None else str(v)))
    return out


def provenance_rows(results: Results) -> list[tuple[str, str]]:
    """Provenance flattened to ``(key, text)``: versions, commit, device, seeds, hashes, timings."""
    prov = results.provenance.model_dump(mode="python")
    if prov.get("protocol_hash") is None:
        prov["protocol_hash"] = results.protocol.hash
    if prov.get("manifest_hash") is None:
        prov["manifest_hash"] = results.data.manifest_hash
    return _flat(prov)


def _params(p: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


#: ``run.target`` → what each map explains, in words (the report and its methods paragraph)
EXPLAINED_OUTPUT = {
    "label": "the output of the subject's true class",
    "predicted": "the output of the class the model predicted for the subject",
    "positive": "the output of class 1 (the signal class), for every subject",
}


def explained_output_text(target: str) -> str:
    """One sentence saying which model output each map explains (``run.target``)."""
    what = EXPLAINED_OUTPUT.get(target, f"run.target {target!r}")
    return (f"Each map explains {what} (run.target: {target}; regression tasks: the single output; a "
            "single-logit binary model: its logit z for class 1, −z for class 0); scores.csv gives each "
            "subject's label, prediction and explained class.")


def methods_paragraph(results: Results) -> str:
    """A 'methods' paragraph generated from the protocol, for a paper or an audit file."""
    spec = results.protocol.spec
    d = results.data
    st = spec.get("statistics", {}) or {}
    model = spec.get("model", {}) or {}
    tasks = ", ".join(f"{t.id} ({t.type}, {t.kind})" for t in results.tasks) or "none"
    meths = "; ".join(f"{m['name']}" + (f" ({_params(m.get('params', {}))})" if m.get("params") else "")
                      for m in spec.get("methods", [])) or "none"
    metrics = ", ".join(m["name"] + (f" (as {m['label']})" if m.get("label") else "")
                        + (" under its own scoring" if m.get("scoring") else "")
                        for m in spec.get("metrics", [])) or "none"
    src = "a checkpoint" if model.get("checkpoint") else f"a {model.get('architecture', 'CNN')} trained for each task"
    parts = [
        f"Protocol {results.protocol.id} v{results.protocol.version} "
        f"(hash {results.protocol.hash[:12]}) was run on {d.n_subjects} subjects "
        f"from the {d.source} data (manifest hash {d.manifest_hash or '—'}).",
        f"Known-signal tasks: {tasks}. The model was {src}; a model trained on permuted labels served "
        f"as the null-model floor.",
        f"Explanation methods: {meths}. Each map was scored against each test subject's ground truth "
        f"with {metrics}.",
    ]
    if results.kind == "reference" and results.reference is not None:
        ref = results.reference
        src = ("a checkpoint" if model.get("checkpoint")
               else f"a {model.get('architecture', 'CNN')} trained on the label")
        parts[1:3] = [f"Task: {tasks}, the data's own label with no known signal location. The model was {src}.",
                      f"Explanation methods: {meths}. For each of {ref.n_subjects} test subjects, each method's "
                      f"ranking of the atlas regions (the {ref.percentile:g}th percentile of its map inside each "
                      f"region) was compared with the model's {ref.reference.split(':')[0]} by Spearman's ρ and "
                      f"rank-biased overlap (top {ref.rbo_depth}, p = {ref.rbo_p:g}); this is a causal reference, "
                      "not a ground truth."]
    if results.kind != "audit":
        what = explained_output_text((spec.get("run") or {}).get("target", "label"))
        if results.kind == "reference":  # no score table: the per-subject values are the stages' subjects.csv
            what = what.split("; scores.csv")[0] + "."
        parts.insert(3, what)
    if st and results.kind == "reference":
        parts.append(f"Means carry {fmt(st.get('ci_level', 0.95), 2)} bootstrap confidence intervals "
                     f"({st.get('ci_method', '?')}, {st.get('bootstrap', '?')} resamples over subjects).")
    elif st:
        parts.append(
            f"Means carry {fmt(st.get('ci_level', 0.95), 2)} bootstrap confidence intervals "
            f"({st.get('ci_method', '?')}, {st.get('bootstrap', '?')} resamples over subjects); "
            f"one-sided paired {st.get('test', '?')} tests compared each method with the random map "
            f"and with the null model, {_family_text(st)}.")
    acc = results.protocol.acceptance
    if acc:
        parts.append("A method passed if all of: " + "; ".join(acc) + ".")
    return " ".join(parts)


def _family_text(st: dict) -> str:
    """How the protocol corrected the acceptance tests for multiple comparisons, in words."""
    if st.get("correction", "none") == "none":
        return "uncorrected"
    if st.get("family", "task") == "method":
        return (f"{st['correction']}-corrected within each method's own acceptance tests (so a method's "
                f"verdict does not depend on the other methods or metrics in the run; tests of metrics no "
                f"criterion uses are descriptive and uncorrected)")
    return (f"{st['correction']}-corrected across the acceptance tests of every method under test on "
            f"the task (statistics.family: task, family-wise across methods)")


# ---------------------------------------------------------------- figures


def _figure_sections(results: Results, figures: FigureInputs) -> list[dict]:
    """``[{"task", "figures": [{"name", "alt", "caption", "png"}]}]``, bounded in number."""
    by_task: dict[str, list] = {}
    tfig = figures.tasks
    task_ids = [t.id for t in results.tasks]
    task_ids += [t for t in tfig if t not in task_ids]
    task_ids = task_ids[:MAX_FIGURE_TASKS]
    if len(results.tasks) > MAX_FIGURE_TASKS:
        log.info("report: figures for the first %d of %d tasks", MAX_FIGURE_TASKS, len(results.tasks))
    for tid in task_ids:
        out = by_task.setdefault(tid, [])
        t = tfig.get(tid) or TaskFigures()
        sp = t.spacing or (1.0, 1.0, 1.0)
        maps = dict(list(t.maps.items())[:MAX_FIGURE_METHODS])
        if t.image is not None and maps:
            out.append({"name": f"{tid}_mean_maps", "alt": f"cohort-mean attribution maps on {tid}",
                        "caption": "Cohort-mean maps (each subject's map scaled to unit positive mass; "
                                   "positive part, each scaled to its own maximum) over the mean image. "
                                   "Cyan contour: where the ground truth lies in at least half the "
                                   "subjects. Planes through the ground truth's centre of mass.",
                        "png": figs.overlays(t.image, t.mask, maps, f"{tid} — cohort mean", sp)})
        ex = t.example
        exmaps = dict(list(ex.maps.items())[:MAX_FIGURE_METHODS]) if ex is not None else {}
        if ex is not None and ex.image is not None and exmaps:
            sid = ex.subject_id
            out.append({"name": f"{tid}_example", "alt": f"attribution maps of subject {sid} on {tid}",
                        "caption": f"One test subject ({sid}): its image, its ground truth (cyan) and "
                                   "each method's map.",
                        "png": figs.overlays(ex.image, ex.mask, exmaps,
                                             f"{tid} — subject {sid}", sp)})
        tres = next((x for x in results.tasks if x.id == tid), None)
        if tres is not None and tres.validity is not None:
            out.append({"name": f"{tid}_validity", "alt": f"ground-truth validity check on {tid}",
                        "caption": "Does the model use the ground truth? Test performance when the "
                                   "ground truth is replaced by the training-mean image, when an "
                                   "equal-size region elsewhere is, and when only the ground truth is "
                                   "kept. Dashed: chance. No attribution is involved.",
                        "png": figs.validity_bars(tres.validity, f"{tid} — ground-truth validity")})
        prof = tres.distance_profile if tres is not None else None
        ceilings = {m.method for m in results.methods if m.task == tid and m.role == "ceiling"}
        if prof is not None and prof.methods and prof.volume_share:
            out.append({"name": f"{tid}_distance_profile", "alt": f"relevance by distance on {tid}",
                        "caption": "Where the relevance goes: the cohort-mean share of each method's "
                                   "positive relevance within d mm of the ground truth, against the "
                                   "share of the brain within d mm (dashed: what a map that ignores "
                                   "the ground truth gets). A near miss rises steeply a few mm out; a "
                                   "map that is elsewhere follows the dashed line. Reading d as a "
                                   "margin added to the ground truth shows the effect of any margin.",
                        "png": figs.distance_profiles(
                            prof.distances_mm,
                            {k: np.asarray([np.nan if x is None else x for x in v], float)
                             for k, v in list(prof.methods.items())[:MAX_FIGURE_METHODS]
                             if k not in ceilings},  # the ground truth as a map is 1 at every distance
                            np.asarray(prof.volume_share, float), f"{tid} — relevance by distance")})
        out += _distribution_figures(results, tid)
        curves = {m.method: m.sanity for m in results.methods if m.task == tid and m.sanity}
        if curves:
            out.append({"name": f"{tid}_randomization", "alt": f"model randomization curves on {tid}",
                        "caption": "Cascading model randomization (Adebayo et al. 2018): similarity of "
                                   "each method's maps to the trained model's maps as the layers are "
                                   "re-initialized from the output down. A method whose maps stay "
                                   "similar (above the dashed line) does not depend on what the model "
                                   "learned.",
                        "png": figs.randomization(dict(list(curves.items())[:MAX_FIGURE_METHODS]))})
    return [{"task": tid, "figures": f} for tid, f in by_task.items() if f]


def _distribution_figures(results: Results, tid: str) -> list[dict]:
    table = results.score_table()
    if table is None:
        return []
    methods = [m for m in results.methods if m.task == tid][:MAX_FIGURE_METHODS]
    metrics = [k for k in metric_order(results) if any(k in m.metrics for m in methods)]
    out = []
    for met in metrics[:MAX_FIGURE_METRICS]:
        vals, cis = {}, {}
        rows = table.frame(tid, [m.method for m in methods], met)
        for m in methods:
            v = rows.loc[rows["method"] == m.method, "value"].to_numpy(np.float64)
            vals[m.method] = v[np.isfinite(v)]
            x = m.metrics.get(met)
            if x:
                cis[m.method] = (x.mean, x.ci_low, x.ci_high)
        if not any(len(v) for v in vals.values()):
            continue
        chances = [m.metrics[met].chance for m in methods
                   if met in m.metrics and m.metrics[met].chance is not None]
        chance = float(np.mean(chances)) if chances else None
        out.append({"name": f"{tid}_{met}_distribution", "alt": f"{met} per subject on {tid}",
                    "caption": f"{met} per test subject and method (box: quartiles; dots: subjects; "
                               f"diamond: mean with its CI); dashed red: chance.",
                    "png": figs.distributions(vals, chance, met, cis)})
    return out


def inspect_rows(results: Results) -> list[dict]:
    """Per task × method, the best, median and worst test subject by the main metric (for a
    reviewer to open their maps): ``{"task", "method", "metric", "best", "median", "worst"}``, each
    ``"subject_id (value)"``, in each metric's registered direction."""
    table = results.score_table()
    if table is None:
        return []
    out = []
    for m in results.methods:
        met = results.main_metric(m)
        rows = table.frame(m.task, m.method, met)
        rows = rows[np.isfinite(rows["value"].to_numpy(np.float64))]
        if not len(rows):
            continue
        # stable order: by value (best first), ties by subject id
        sign = 1.0 if _lower_is_better(results, met) else -1.0
        order = sorted(zip(sign * rows["value"].to_numpy(np.float64), rows["subject_id"].astype(str),
                           rows["value"].to_numpy(np.float64)))
        pick = {"best": order[0], "median": order[(len(order) - 1) // 2], "worst": order[-1]}
        out.append({"task": m.task, "method": m.method, "metric": met,
                    **{k: f"{sid} ({fmt(v)})" for k, (_, sid, v) in pick.items()}})
    return out


# ---------------------------------------------------------------- writing


def render_html(results: Results, sections: list[dict]) -> str:
    """The report page from ``results`` and rendered figure sections (PNG bytes inlined)."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True,
                      undefined=StrictUndefined, keep_trailing_newline=True)
    for s in sections:
        for f in s["figures"]:
            f["src"] = "data:image/png;base64," + base64.b64encode(f["png"]).decode("ascii")
    spec = results.protocol.spec
    used = metric_order(results)
    help_rows = [(k, *_metric_help(results, k)) for k in used]
    at_chance = [t.id for t in results.tasks if t.model.at_chance]
    vals = [t.validity for t in results.tasks if t.validity is not None]
    n_placements = (vals[0].n_placements or "several") if vals else "several"
    return env.get_template("report.html.j2").render(
        r=results, rows=verdict_rows(results), sections=sections, fmt=fmt, fmt_p=fmt_p,
        prov=provenance_rows(results), meaning=(REFERENCE_MEANING if results.kind == "reference"
                                                else VERDICT_MEANING).get(results.overall.verdict, ""),
        methods_text=methods_paragraph(results), help_rows=help_rows, at_chance=at_chance,
        stats=spec.get("statistics", {}) or {}, main=results.main_metric(), n_placements=n_placements,
        ordered=lambda metrics: _ordered_metrics(results, metrics), inspect=inspect_rows(results),
        threshold_note=threshold_note)


def build_report(results: Results | dict, figures: FigureInputs | dict | None, out_dir: str | Path) -> Path:
    """Write the audit report into ``out_dir``; return the path of ``index.html``.

    ``results``: the run's :class:`~neuroxai.report.schema.Results`, or a dict as read from a
    ``results.json`` (checked against the schema first). ``figures``: the map figures' inputs
    (:class:`~neuroxai.report.figure_inputs.FigureInputs`, or its nested-dict form
    :meth:`~neuroxai.report.figure_inputs.FigureInputs.from_dict` reads; any part may be missing:
    that figure is skipped). Deterministic: the same inputs give byte-identical files.
    """
    out_dir = Path(out_dir)
    if (out_dir.parent / MARKER).is_file():  # RUN/report of a run neuroxai owns (maybe received):
        own_dir(out_dir.parent, out_dir.name)  # a symlink there is replaced, never written through
    out = claim_dir(out_dir, "report")  # stale figures are deleted below: only in our own folder
    results, text = canonical(results)  # checks the schema before anything is written
    fig_dir = own_dir(out, "figures")
    if not isinstance(figures, FigureInputs):
        figures = FigureInputs.from_dict(figures)
    sections = _figure_sections(results, figures)
    # figure names hold task ids (a protocol's, or a received results.json's): made file names
    safe = {k: v + ".png" for k, v in unique_names({f["name"]: safe_name(f["name"])
                                                    for s in sections for f in s["figures"]}).items()}
    names = set()
    for s in sections:
        for f in s["figures"]:
            atomic_write(inside(fig_dir, safe[f["name"]]), f["png"])
            names.add(safe[f["name"]])
    for stale in fig_dir.glob("*.png"):  # a rebuild must not leave figures of an older run
        if stale.name not in names:
            stale.unlink()
    table = place_score_table(results, out)
    if table is not None:
        text = results.to_json()
    atomic_write(out / "results.json", text)
    atomic_write(out / "results.schema.json", json.dumps(json_schema(), indent=1) + "\n")
    if results.reference is not None:  # kind: reference — the methods against the causal occlusion
        atomic_write(out / "reference.csv", _csv(reference_rows(results), REFERENCE_COLUMNS))
    atomic_write(out / "summary.csv", _csv(summary_rows(results), SUMMARY_COLUMNS))
    if table is not None:
        write_scores_csv(table, out / "scores.csv")
    else:
        (out / "scores.csv").unlink(missing_ok=True)
    html = render_html(results, sections)
    atomic_write(out / "index.html", html)
    log.info("report written to %s", out / "index.html")
    return out / "index.html"


def place_score_table(results: Results, out: Path):
    """Put the score table in ``out`` beside the results.json written there (a run's file copied
    byte for byte, a table held in memory written; nothing to do when it is there already) and
    point ``results.scores`` at it; a stale table there is removed when the results have none.
    Returns the table now in ``out`` (None without one)."""
    table = results.score_table()
    if table is None:
        (out / SCORES_FILE).unlink(missing_ok=True)
        results.scores = None
        return None
    dest = out / SCORES_FILE
    if table.path is not None and table.path.resolve() == dest.resolve():
        return table
    if table.path is not None and table.ref() is not None:
        atomic_write(dest, write=lambda tmp: shutil.copyfile(table.path, tmp))
        results.scores = table.ref().model_copy(update={"file": SCORES_FILE})
    else:
        results.scores = table.write(dest)
    return results.with_table(ScoreTable(dest), out).score_table()


def rebuild_report(run_dir: str | Path) -> Path:
    """Rebuild ``RUN_DIR/report/`` from ``RUN_DIR/results.json`` and, if present,
    ``RUN_DIR/figures.npz``; return the path of ``index.html``."""
    run = Path(run_dir)
    if not (run / "results.json").is_file():
        raise RunError("no results.json in the run directory", path=run,
                       expected="a finished run (RUN_DIR/results.json)", found="missing",
                       fix="finish the run first: neuroxai validate PROTOCOL --out RUN_DIR --resume")
    results = read_results(run / "results.json")
    figures = None
    if (run / "figures.npz").is_file():
        figures = FigureInputs.load(run / "figures.npz")
    return build_report(results, figures, run / "report")


__all__ = ["build_report", "rebuild_report", "summary_rows", "verdict_rows",
           "methods_paragraph", "fmt", "fmt_p", "SCORE_COLUMNS", "write_scores_csv"]
