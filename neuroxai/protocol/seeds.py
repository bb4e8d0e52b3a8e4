"""Several model seeds (``model.training.seeds``): one model per task and seed, judged together.

A method's maps are a product of the trained model as much as of the method, and a retrained
model differs. With ``training.seeds: [0, 1, 2]`` every stage runs once per seed (each keyed on
its own ``training.seed``), and :func:`assemble_seeded` builds the results:

- the **pooled verdict** judges the methods on all seeds together: the paired tests run on each
  subject's score averaged over the seeds (the subjects are the independent units), and every CI
  (and the share of resamples in which a criterion holds) resamples seeds and subjects
  (:func:`~neuroxai.scoring.stats.bootstrap_ci_seeds`);
- **each seed's verdict** is the one a single-seed run with that seed gives
  (``MethodResult.seed_verdicts``), so the report shows which verdicts survive retraining;
- the pooled model counts as at chance, and the pooled ground-truth validity as failed, when any
  seed's is (a seed whose model learnt nothing, or does not use the ground truth, leaves the
  pooled verdict INCONCLUSIVE); model randomization keeps each method's least favourable seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..report.schema import ModelPerf, Results, Sanity, Validity
from ..report.scores import ScoreTable
from .stages.attribute import Attributed
from .context import RunContext
from .schema import Protocol
from .verdict import assemble_results


@dataclass(frozen=True)
class SeedRun:
    """What the model stages of one seed hand over (``seed`` None: the protocol's one model)."""

    seed: int | None
    ctx: RunContext
    models: dict
    validity: dict
    attributed: Attributed  # the attribute stage's chunk folders and profiles
    sanity: dict
    off_target: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PooledModel:
    """The seeds' models of one task as the verdict reads a model: its test metrics."""

    metrics: dict = field(default_factory=dict)


def pooled_metrics(per_seed: list[dict]) -> dict:
    """One task's model metrics over the seeds: point values averaged, the interval from the
    lowest lower to the highest upper bound of the seeds' intervals, ``at_chance`` if any seed's
    model is at chance (its maps cannot be validated, so neither can the pool)."""
    out: dict = {}
    keys = dict.fromkeys(k for m in per_seed for k in m)
    for k in keys:
        vals = [m.get(k) for m in per_seed]
        nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)
                and v is not None and np.isfinite(v)]
        if k == "at_chance":
            out[k] = any(bool(v) for v in vals)
        elif k.endswith("_ci_low"):
            out[k] = min(nums) if nums else None
        elif k.endswith("_ci_high"):
            out[k] = max(nums) if nums else None
        elif k == "n_test":
            out[k] = vals[0]
        elif nums:
            out[k] = float(np.mean(nums))
    return out


def _pooled_validity(per_seed: list) -> Validity | None:
    """The first seed whose validity check did not pass, else the first seed's."""
    vals = [Validity.model_validate(v) for v in per_seed if v is not None]
    if not vals:
        return None
    return next((v for v in vals if v.passed is not True), vals[0])


def _pooled_sanity(per_seed: list[dict]) -> dict:
    """Per method, the seed whose randomized maps stay most similar (the least favourable)."""
    out: dict = {}
    for per in per_seed:
        for key, s in (per or {}).items():
            s = Sanity.model_validate(s)
            cur = out.get(key)
            if cur is None or (s.final_similarity or -np.inf) > (cur.final_similarity or -np.inf):
                out[key] = s
    return out


def assemble_seeded(proto: Protocol, prov: dict, tasks: dict, runs: list[SeedRun], scores: ScoreTable, *,
                    data_info: dict, profiles: dict | None = None) -> Results:
    """The results of a several-seed run: the pooled verdict, with each seed's own verdict and
    model beside it (module doc). ``scores``: the table of all seeds' rows (a ``seed`` column)."""
    per_seed = [assemble_results(r.ctx.protocol, prov, tasks, r.models, scores.for_seed(r.seed), r.sanity,
                                 data_info=data_info, validity=r.validity, profiles=profiles,
                                 off_target=r.off_target) for r in runs]
    task_ids = list(runs[0].attributed.chunks)
    models = {tid: PooledModel(pooled_metrics([r.models[tid].metrics for r in runs]))
              for tid in runs[0].models}
    validity = {tid: _pooled_validity([r.validity.get(tid) for r in runs]) for tid in runs[0].validity}
    sanity = {tid: _pooled_sanity([r.sanity.get(tid, {}) for r in runs]) for tid in task_ids}
    # the false-positive perturbation is shown for the first seed's model (its maps are the figures')
    res = assemble_results(proto, prov, tasks, models, scores, sanity, data_info=data_info, validity=validity,
                           profiles=profiles, off_target=runs[0].off_target)
    res.seeds = [int(r.seed) for r in runs]
    for m in res.methods:
        m.seed_verdicts = {str(r.seed): one.method(m.task, m.method).verdict for r, one in zip(runs, per_seed)}
    for t in res.tasks:
        t.models_by_seed = {str(r.seed): ModelPerf.model_validate(r.models[t.id].metrics) for r in runs}
    return res
