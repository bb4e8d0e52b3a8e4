"""The results of a run, as typed objects: the schema of ``results.json`` (version
:data:`SCHEMA_VERSION`), as pydantic models.

:func:`neuroxai.protocol.verdict.assemble_results` builds a :class:`Results` from these types; the
runner and the audit write it (:meth:`Results.to_json`), and the CLI, the report and the tests read
its attributes (``results.methods[0].metrics["auroc"].ci_low``), never nested dicts by string key.
A ``results.json`` from disk is read back with :func:`read_results` / :func:`validate_results`.

The schema is versioned: a change that removes or renames a key bumps the major number; adding
an optional key bumps the minor one. Open-ended parts (the protocol spec, task summaries,
provenance, model metrics beyond the documented ones) allow extra keys.

``validate_results(results)`` raises :class:`~neuroxai.errors.RunError` naming the first bad key
path, what was expected and what was found; ``json_schema()`` gives the JSON-Schema document that
is written next to every report as ``results.schema.json``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticSerializationError

from ..errors import RunError
from .scores import ScoresRef, ScoreTable

# 1.1: validity, distance profiles, oracle scale, reachability; 1.2: kind, audit;
# 1.3: pairwise tests, findings, audit flags and atlas typed; every key written (null when missing)
# 1.4: correction families (Comparison.family_size), criterion margin / holds_share / decidable /
#      n_needed, overall exit code 3 (INCONCLUSIVE)
# 1.5: several model seeds (Results.seeds, MethodResult.seed_verdicts, TaskResult.models_by_seed);
#      the facts of the metrics a run used (Results.metric_facts), read by the report;
#      the false-positive perturbation (MethodResult.off_target)
# 1.6: each published finding read under the study's scoring and under ours (FindingReading;
#      FindingEvidence.method / study / ours / scorings_note, Finding.agree_study / level_study /
#      agree_ours / level_ours), all optional
# 2.0: the per-subject score table leaves results.json for scores.parquet beside it (Results.scores
#      is a ScoresRef; neuroxai.report.scores); the comparison with the chance map is keyed
#      "chance_map" (1.x: random). A 1.x results.json is read through neuroxai.compat.
#      Also new in 2.0: kind "reference" (Results.reference: the methods against the model's causal
#      atlas occlusion)
SCHEMA_VERSION = "2.0"
Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]
Num = Optional[float]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=True)


class ProtocolInfo(_Closed):
    id: str
    version: str
    title: str = ""
    description: str = ""
    hash: str = Field(description="sha256 of the protocol's canonical JSON form")
    acceptance: list[str] = Field(description="each acceptance criterion in words")
    spec: dict[str, Any] = Field(description="the validated protocol itself")


class Provenance(_Open):
    packages: dict[str, str] = Field(default_factory=dict, description="package → version")
    git_commit: Optional[str] = None
    device: dict[str, Any] = Field(default_factory=dict)
    protocol_hash: Optional[str] = None
    manifest_hash: Optional[str] = None
    seeds: dict[str, Any] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict, description="stage → seconds")
    command: Optional[str] = None
    started: Optional[str] = None
    finished: Optional[str] = None
    world_size: Optional[int] = Field(None, description="processes of a torchrun run (1: one process)")


class DataInfo(_Open):
    source: str
    n_subjects: int = Field(ge=0)
    manifest_hash: Optional[str] = None
    grid: Optional[dict[str, Any]] = None
    cohort: Optional[dict[str, Any]] = None
    credits: Optional[str] = None
    maps: Optional[str] = Field(None, description="audit: the folder of saved maps")
    masks: Optional[str] = Field(None, description="audit: the folder of ground-truth masks")
    brain_mask: Optional[str] = Field(None, description="audit: the brain mask(s), if given")
    restricted_to_brain: bool = Field(False, description="audit: scores within the brain mask only")


class ModelPerf(_Open):
    """Test-split performance; classification keys shown, regression tasks add e.g. ``r2``."""

    auroc: Num = None
    auroc_ci_low: Num = None
    auroc_ci_high: Num = None
    accuracy: Num = None
    balanced_accuracy: Num = None
    mae: Num = None
    r2: Num = None
    r2_ci_low: Num = None
    r2_ci_high: Num = None
    n_test: Optional[int] = None
    at_chance: bool = False


class ValidityCriterion(_Closed):
    name: str
    text: str
    observed: Num = None
    threshold: float
    passed: Optional[bool] = None


class Validity(_Open):
    """Ground-truth validity (:mod:`neuroxai.protocol.validity`): does the model use the ground truth?"""

    metric: str
    chance: float
    n_subjects: int = Field(ge=0)
    fill: str = "train_mean"
    n_placements: Optional[int] = Field(None, description="random equal-size regions removed elsewhere")
    gt_voxels_mean: Num = Field(None, description="ground-truth voxels per subject, mean")
    performance: dict[str, Any]
    mean_abs_delta: dict[str, Num]
    drop_share: Num = None
    kept_share: Num = None
    effect_ratio: Num = None
    criteria: list[ValidityCriterion]
    passed: Optional[bool] = Field(description="None: could not be evaluated (model at chance)")
    reason: str


class DistanceProfile(_Closed):
    """Cohort-mean share of positive relevance (per method) and of brain volume within d mm of the
    ground truth."""

    distances_mm: list[float]
    volume_share: list[float] = Field(default_factory=list)
    methods: dict[str, list[Num]] = Field(default_factory=dict)


class PairwiseTest(_Closed):
    """Two methods under test compared on one metric over the subjects both have."""

    a: str
    b: str
    metric: str
    mean_a: Num
    mean_b: Num
    mean_difference: Num = Field(description="mean of a − b over the paired subjects")
    n_pairs: int = Field(ge=0)
    p: Num = Field(description="two-sided: twice the smaller one-sided p of the protocol's paired test")
    p_adjusted: Num = None
    reading: str = ""


class ClassScores(_Closed):
    """A method's main metric on the subjects of each class (where an explanation's sign or target
    treats the classes differently, their scores part)."""

    method: str
    metric: str
    label: int
    n: int = Field(ge=0)
    mean: Num = None
    scaled_mean: Num = None
    p_classes_differ: Num = Field(None, description="two-sided Mann–Whitney p between the classes' "
                                  "scores on the chance → oracle scale (descriptive)")


class TaskResult(_Closed):
    id: str
    type: str
    kind: str
    ground_truth: str = Field("", description="what the ground-truth mask is, in words")
    summary: dict[str, Any] = Field(default_factory=dict)
    validity: Optional[Validity] = None
    distance_profile: Optional[DistanceProfile] = None
    n_subjects: int = Field(ge=0)
    n_scored: int = Field(ge=0)
    n_excluded_from_scoring: int = Field(ge=0)
    excluded_reason: str = ""
    confound: dict[str, Any] = Field(default_factory=dict)
    model: ModelPerf
    null_model: Optional[ModelPerf] = None
    pairwise: list[PairwiseTest] = Field(default_factory=list, description="paired tests between the "
                                         "methods under test on the main metric (two-sided, Holm)")
    by_class: list[ClassScores] = Field(default_factory=list, description="the main metric per class "
                                        "of a classification task (from the score table's label column)")
    models_by_seed: dict[str, ModelPerf] = Field(default_factory=dict, description="each model seed's "
                                                 "test performance (training.seeds); `model` then pools them")


class Comparison(_Closed):
    p: Num
    p_adjusted: Num = Field(None, description="the p corrected within its family (the acceptance "
                            "comparisons of one method, or of the task's methods with statistics.family: "
                            "task); None for a descriptive comparison, which decides nothing")
    n_pairs: int = 0
    baseline_mean: Num = None
    family_size: int = Field(0, ge=0, description="comparisons in its correction family (0: descriptive)")

    @property
    def p_used(self) -> Optional[float]:
        """The p a criterion is decided on and the verdict tables show: the adjusted one when the
        protocol corrects for multiple comparisons, else the raw one."""
        return self.p_adjusted if self.p_adjusted is not None else self.p


class MetricSummary(_Closed):
    mean: Num
    ci_low: Num
    ci_high: Num
    ci_method: Optional[str] = None
    ci_level: Num = None
    n: int = Field(ge=0)
    chance: Num = None
    normalized_mean: Num = None
    oracle_mean: Num = Field(None, description="the oracle map's mean (the ground truth as a map)")
    scaled_mean: Num = Field(None, description="mean of (score − chance) / (oracle − chance)")
    scaled_ci_low: Num = None
    scaled_ci_high: Num = None
    median: Num = None
    comparisons: dict[Literal["chance_map", "null_model"], Comparison] = Field(
        default_factory=dict, description="paired tests against the chance map (the method registered with "
                                          "role 'chance') and against the null model")


class Sanity(_Closed):
    """Cascading model randomization (Adebayo et al. 2018, "Sanity checks for saliency maps")."""

    layers: list[str]
    similarity: list[Num]
    final_similarity: Num
    threshold: float
    passed: bool
    measure: Optional[str] = None

    @model_validator(mode="after")
    def _same_length(self):
        if len(self.layers) != len(self.similarity):
            raise ValueError(f"sanity.layers has {len(self.layers)} entries but sanity.similarity "
                             f"has {len(self.similarity)}")
        return self


class OffTarget(_Closed):
    """The false-positive perturbation of one method on one task (Siegel et al. 2025, 2026
    revision): the model's output change when the map's off-target "false positives" are set to the
    mean intensity, against the same set mirrored into the other hemisphere."""

    n: int = Field(ge=0, description="subjects checked")
    n_with_fp: int = Field(ge=0, description="subjects whose map has any false positive")
    fp_voxels_mean: Num = None
    overlap_mean: Num = Field(None, description="share of the mirrored set inside the false positives")
    delta_fp_mean: Num = Field(None, description="mean |output change|, false positives replaced")
    delta_flip_mean: Num = Field(None, description="mean |output change|, mirrored control replaced")
    difference_mean: Num = None
    difference_ci_low: Num = None
    difference_ci_high: Num = None
    p: Num = Field(None, description="one-sided paired test: false positives move the output more")
    alpha: float = 0.01
    used: Optional[bool] = Field(None, description="True: the off-target relevance is used by the model "
                                 "(p < alpha); False: not shown; None: no false positives to test")
    reading: str = ""


class Criterion(_Closed):
    kind: Literal["ci_above_chance", "scaled_ci_above", "beats_random", "beats_null_model",
                  "model_randomization"]
    text: str
    metric: Optional[str] = None
    observed: Num = None
    threshold: Num = None
    passed: Optional[bool] = None
    applicable: bool = True
    margin: Num = Field(None, description="distance from the threshold, positive on the passing side")
    holds_share: Num = Field(None, description="share of bootstrap resamples of the subjects in which "
                             "the criterion's statistic is on the passing side")
    decidable: bool = Field(True, description="False when these data cannot decide it (too few "
                            "subjects, an interval straddling the threshold)")
    n_needed: Optional[int] = Field(None, description="subjects that would let the data decide")
    note: str = ""


class MethodResult(_Closed):
    task: str
    method: str = Field(description="the method's key (label or registry name)")
    name: str = Field(description="METHODS registry key")
    params: dict[str, Any] = Field(default_factory=dict)
    is_baseline: bool
    role: str = Field("", description="the method's registered role: under_test, or the baseline it is "
                      "(chance, floor, ceiling)")
    metrics: dict[str, MetricSummary]
    sanity: Optional[Sanity] = None
    criteria: list[Criterion]
    verdict: Verdict
    verdict_reason: str = ""
    off_target: Optional[OffTarget] = Field(None, description="false-positive perturbation (sanity.fp_perturbation)")
    seed_verdicts: dict[str, Verdict] = Field(default_factory=dict, description="the verdict on each "
                                              "model seed's maps alone (training.seeds); `verdict` judges "
                                              "them together")


class MetricFacts(_Closed):
    """A metric's facts as registered when the run was made (the report reads these, so an old
    run's report does not change when the code's registry does)."""

    higher_is_better: bool = True
    best: float = 1.0
    help: str = ""
    chance: str = ""


class Overall(_Closed):
    verdict: Verdict
    n_pass: int = Field(ge=0)
    n_fail: int = Field(ge=0)
    n_inconclusive: int = Field(ge=0)
    exit_code: Literal[0, 1, 2, 3] = Field(description="0 every method under test PASSes, 1 at least "
                                           "one FAILs, 3 none FAILs but not all PASS (INCONCLUSIVE); "
                                           "2 is an error (no results)")
    criteria_reachable: Optional[bool] = Field(
        None, description="whether some method under test passed the positive control (None: no "
        "positive control in the protocol, or its model/validity failed)")
    reachability_note: str = ""


class FindingReading(_Closed):
    """A published finding read on one task and method under one scoring: the statistic, its
    value, what it is compared with, and whether it agrees with the finding (None: these data
    cannot tell)."""

    scoring: Literal["study", "ours"]
    scoring_text: str = Field(description="the scoring in words, e.g. 'preset siegel2025'")
    metric: str = Field(description="the score key read (a metric name or a metric entry's label)")
    statistic: str = Field(description="what value is, e.g. 'mean on the chance (0) → oracle (1) scale'")
    value: Num = None
    ci_low: Num = None
    ci_high: Num = None
    reference: Num = Field(None, description="what value is compared with (a threshold, SmoothGrad's value)")
    reference_text: str = ""
    agrees: Optional[bool] = None
    extra: dict[str, Num] = Field(default_factory=dict, description="further read-outs of this scoring, e.g. "
                                  "region_match (the study's strong region-match rate)")


class FindingEvidence(_Closed):
    """One task's evidence on a published finding."""

    task: str
    method: Optional[str] = Field(None, description="the method's key (a protocol may run several LRP "
                                  "composites or Grad-CAM layers)")
    verdict: Verdict
    scaled_mean: Num = None
    scaled_ci_low: Num = None
    scaled_ci_high: Num = None
    far_share: Num = Field(None, description="share of positive relevance beyond the profile's last distance")
    far_share_smoothgrad: Num = None
    far_share_random: Num = None
    agrees: Optional[bool] = None
    note: str = ""
    off_target_used: Optional[bool] = Field(None, description="LRP: is its off-target relevance used by the "
                                            "model? (the false-positive perturbation; None: not run or "
                                            "nothing to test)")
    off_target_p: Num = None
    study: Optional[FindingReading] = Field(None, description="the finding under the study's scoring and metric")
    ours: Optional[FindingReading] = Field(None, description="the finding under our scoring and metric")
    scorings_note: str = Field("", description="where and why the two readings disagree")


class Finding(_Closed):
    """Whether the run agrees with one finding of Siegel et al. 2025."""

    method: str
    finding: str
    agree: Optional[bool]
    level: str = Field(description="yes / partly (k of n tasks) / no / cannot tell")
    n_tasks_judged: int = Field(ge=0)
    evidence: list[FindingEvidence]
    agree_study: Optional[bool] = Field(None, description="every reading under the study's scoring agrees")
    level_study: str = Field("", description="yes / partly (k of n) / no / cannot tell, under the study's "
                             "scoring ('' when the protocol has none)")
    agree_ours: Optional[bool] = None
    level_ours: str = ""


SCORE_COLUMNS = ("subject_id", "method", "metric", "value", "task")


class AuditFlag(_Closed):
    """An audit input that cannot be scored as intended, naming the subject and method: a saved map
    that is constant or all zero, negative everywhere, whose field of view covers little of the
    brain mask or whose relevance lies mostly outside it (a wrong affine), or a ground-truth mask
    without maps (``method`` = "all methods" when no method has one)."""

    subject_id: str
    method: str
    flag: str
    file: str = ""


class AtlasInfo(_Closed):
    path: str
    labels: Optional[str] = None
    true_region: str = Field(description="how the true region was chosen")
    true_regions: dict[str, int] = Field(default_factory=dict, description="true region → subjects")


class AuditInfo(_Closed):
    """What an audit of saved maps read and found (``kind: audit``)."""

    maps_layout: str
    mask_kind: str
    flags: list[AuditFlag] = Field(default_factory=list, description="maps and masks that cannot be scored "
                                   "as intended: constant, all-zero or negative-only maps, maps off the brain "
                                   "(field of view, wrong affine), masks without maps")
    inputs_hash: str
    n_input_files: int = Field(ge=0)
    not_applicable: dict[str, str] = Field(default_factory=dict, description="checks that need a model")
    figures_background: str = ""
    n_on_common_grid: Optional[int] = Field(None, description="subjects on the first subject's grid "
                                            "(the cohort-mean figures are drawn over these)")
    atlas: Optional[AtlasInfo] = None


# ---------------------------------------------------------------- kind: reference (1.7)


class Agreement(_Closed):
    """One method's agreement with the causal ranking, over the subjects: the mean of a per-subject
    measure with its bootstrap CI."""

    mean: Num = None
    ci_low: Num = None
    ci_high: Num = None
    n: int = Field(0, ge=0)
    chance: Num = Field(None, description="its value for a random ranking (Spearman: 0)")
    max: Num = Field(None, description="its value for the occlusion ranking itself")
    scaled_mean: Num = Field(None, description="mean of (value − chance) / (max − chance) per subject: 0 = a "
                             "random ranking, 1 = the occlusion ranking (Spearman: the value itself)")
    scaled_ci_low: Num = None
    scaled_ci_high: Num = None


class ReferenceMethod(_Closed):
    """A method of a ``kind: reference`` run: how its ranking of the atlas regions agrees with the
    model's causal atlas-occlusion ranking (per subject, then over the subjects)."""

    method: str = Field(description="the method's key (label or registry name)")
    name: str = Field(description="METHODS registry key")
    is_baseline: bool = False
    rank: int = Field(ge=1, description="1 = the closest agreement with the causal ranking (reference.rank_by)")
    spearman: Agreement
    rbo: Agreement
    verdict: Verdict
    verdict_reason: str = ""


class ReferenceRegion(_Closed):
    """An atlas region's causal effect: ``|Δ output| / |region|`` when it is set to the mean image."""

    region: str
    label: int
    causal_rank: Optional[int] = Field(None, description="rank of its cohort-mean effect among the regions "
                                       "(1 = largest)")
    effect_mean: Num = Field(None, description="output change per voxel of the region, mean over subjects")
    effect_ci_low: Num = None
    effect_ci_high: Num = None
    n: int = Field(0, ge=0)


class ReferenceClaim(ReferenceRegion):
    """A claim "the model relies on region X", read against the causal reference."""

    excess_mean: Num = Field(None, description="its effect minus the subject's median regional effect, mean")
    excess_ci_low: Num = None
    excess_ci_high: Num = None
    top_k: int = Field(1, ge=1)
    supported: Optional[bool] = Field(None, description="in the causal top k and the excess's lower CI bound > 0; "
                                      "None: cannot tell (too few subjects, region absent)")
    reading: str = ""


class ReferenceResult(_Closed):
    """``kind: reference``: the methods ranked by their agreement with the model's causal atlas
    occlusion (Siegel et al. 2025's AtlasOcclusion) — a causal reference, not a ground truth."""

    reference: str = Field(description="what the reference is, in words")
    task: str
    n_subjects: int = Field(ge=0)
    n_regions: int = Field(0, ge=0, description="atlas regions present, mean over the subjects")
    percentile: float
    rbo_depth: int
    rbo_p: float
    rank_by: str = "rbo"
    criteria: list[str] = Field(default_factory=list, description="the verdict rules in words")
    order: list[str] = Field(default_factory=list, description="method keys, closest agreement first")
    methods: list[ReferenceMethod] = Field(default_factory=list, description="in the order of `order`")
    top_regions: list[ReferenceRegion] = Field(default_factory=list, description="the causal top k regions")
    claims: list[ReferenceClaim] = Field(default_factory=list)
    reading: str = ""


class Results(_Closed):
    schema_version: str
    kind: Literal["validate", "audit", "reference"] = Field(
        "validate", description="a validation run, an audit of a prior study's saved maps (no model), or a "
        "reference run (a model of the data's own labels, judged against its causal atlas occlusion)")
    reference: Optional[ReferenceResult] = Field(None, description="kind: reference: agreement of each "
                                                 "method with the causal occlusion ranking")
    audit: Optional[AuditInfo] = None
    protocol: ProtocolInfo
    provenance: Provenance
    data: DataInfo
    tasks: list[TaskResult]
    methods: list[MethodResult]
    overall: Overall
    metric_facts: dict[str, MetricFacts] = Field(default_factory=dict, description="each metric's "
                                                 "direction, best score, help and chance level, as the run "
                                                 "registered them")
    seeds: list[int] = Field(default_factory=list, description="the model seeds judged together "
                             "(training.seeds); empty for one model")
    findings: list[Finding] = Field(default_factory=list, description="agreement with the "
                                    "published findings (Siegel et al. 2025), when GradCAM, LRP "
                                    "and SmoothGrad ran")
    scores: Optional[ScoresRef] = Field(None, description="the long per-subject score table (one row per "
                                        "task × subject × method × metric): a Parquet file beside results.json")
    _table: Any = PrivateAttr(None)  # the ScoreTable itself, when built or read with this object
    _base: Optional[Path] = PrivateAttr(None)  # the folder of the results.json it was read from

    @model_validator(mode="after")
    def _consistent(self):
        major = self.schema_version.split(".")[0]
        if major != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"schema_version {self.schema_version!r} is not readable by this "
                             f"neuroxai (reads {SCHEMA_VERSION.split('.')[0]}.x)")
        tids = {t.id for t in self.tasks}
        for i, m in enumerate(self.methods):
            if m.task not in tids:
                raise ValueError(f"methods[{i}].task {m.task!r} is not one of tasks[].id {sorted(tids)}")
        if self.scores is not None:
            missing = [c for c in SCORE_COLUMNS if c not in self.scores.columns]
            if missing:
                raise ValueError(f"scores lacks columns {missing}")
        return self

    def score_table(self, missing_ok: bool = True):
        """The per-subject score table (:class:`~neuroxai.report.scores.ScoreTable`), read a part at
        a time; None when the run has none. A results.json received without its ``scores.parquet``
        still gives its summaries (``missing_ok``: logged, None); a table of another run is an error."""
        if self._table is None and self.scores is not None and self._base is not None:
            from .scores import open_table

            self._table = open_table(self.scores, self._base, missing_ok=missing_ok)
        return self._table

    def with_table(self, table, base: Optional[Path] = None) -> "Results":
        """Attach the score table (in memory or a file) these results were built from; returns self."""
        self._table, self._base = table, base if base is not None else self._base
        return self

    # ------------------------------------------------------------ reading

    def main_metric(self, method: Optional[MethodResult] = None) -> str:
        """The metric the verdict tables (CLI and HTML) show: see :func:`main_metric`."""
        spec = self.protocol.spec
        return main_metric([a.get("metric") for a in spec.get("acceptance", [])],
                           [m.get("name") for m in spec.get("metrics", [])],
                           None if method is None else list(method.metrics))

    def facts(self, metric: str) -> MetricFacts | None:
        """The facts of ``metric`` as this run recorded them; for results written before 1.5, the
        registry's (None for a metric it does not know)."""
        if metric in self.metric_facts:
            return self.metric_facts[metric]
        from ..scoring.localization import METRIC_INFO

        info = METRIC_INFO.get(metric)
        return None if info is None else MetricFacts(higher_is_better=info.higher_is_better, best=info.best,
                                                     help=info.help, chance=info.chance)

    def task(self, task_id: str) -> TaskResult:
        """The task called ``task_id`` (KeyError naming the known ones if there is none)."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(f"no task {task_id!r} in these results (tasks: {[t.id for t in self.tasks]})")

    def method(self, task_id: str, key: str) -> MethodResult:
        """The result of method ``key`` on task ``task_id``."""
        for m in self.methods:
            if m.task == task_id and m.method == key:
                return m
        raise KeyError(f"no method {key!r} on task {task_id!r} "
                       f"(methods: {sorted({m.method for m in self.methods})})")

    def verdicts(self) -> dict[tuple[str, str], str]:
        """``{(task, method): verdict}``."""
        return {(m.task, m.method): m.verdict for m in self.methods}

    def to_dict(self) -> dict:
        """The canonical JSON form as Python objects (keys sorted, NaN → None)."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """Canonical text of ``results.json``: every key, sorted; NaN → null; NumPy → Python."""
        try:  # pydantic's own serializer (NaN → null): 2× faster on a study-size score table
            obj = json.loads(self.model_dump_json())
        except PydanticSerializationError:  # an open part holds e.g. a NumPy scalar
            return _canonical_json(self.model_dump(mode="python"))
        return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def main_metric(acceptance_metrics: Iterable[Optional[str]], metric_names: Iterable[Optional[str]],
                have: Optional[list[str]] = None) -> str:
    """The one rule for the "main metric" of a verdict table: the first acceptance criterion's
    metric (that the method has), else the protocol's first metric, else the method's first one."""
    cands = [c for c in (*acceptance_metrics, *metric_names) if c]
    for c in cands:
        if have is None or c in have:
            return c
    return have[0] if have else ""


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, BaseModel):
        return o.model_dump(mode="python")
    return str(o)


def _no_nan(o):
    # JSON has no NaN: missing numbers are null, as in the schema.
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _no_nan(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_no_nan(v) for v in o]
    return o


def _canonical_json(obj) -> str:
    return json.dumps(_no_nan(json.loads(json.dumps(obj, default=_jsonable))), indent=1,
                      sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


def json_schema() -> dict:
    """The JSON-Schema (draft 2020-12) document of ``results.json``."""
    s = Results.model_json_schema()
    s["title"] = f"neuroxai results.json v{SCHEMA_VERSION}"
    return s


def validate_results(results: Union[dict, Results], *, path: str = "results.json") -> Results:
    """Check ``results`` (a dict as read from ``results.json``, or a :class:`Results`) against the
    schema; return the parsed :class:`Results`.

    Raises :class:`RunError` naming the first bad key (``methods.0.verdict``), the expected and
    the found value.
    """
    table = base = None
    if isinstance(results, Results):
        table, base = results._table, results._base
        results = results.to_dict()
    if isinstance(results, dict) and str(results.get("schema_version", "")).split(".")[0] == "1":
        from ..compat import results_from_1x

        results, frame = results_from_1x(results)
        table = ScoreTable.from_frame(frame) if frame is not None else None
    if not isinstance(results, dict):
        raise RunError("results must be a JSON object", path=path, expected="dict",
                       found=type(results).__name__, fix="pass the Results from assemble_results, or a dict read from results.json")
    try:
        return Results.model_validate(results).with_table(table, base)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        found = err.get("input")
        found_s = repr(found)
        if len(found_s) > 200:
            found_s = found_s[:200] + "…"
        raise RunError(f"results do not match the results.json schema v{SCHEMA_VERSION} at "
                       f"'{loc}': {err['msg']}", path=path, expected=err["msg"], found=found_s,
                       fix="rebuild the results with the same neuroxai version "
                           "(neuroxai validate ... --resume), or fix the named key") from None


def read_results(path: Union[str, Path]) -> Results:
    """Read and check a ``results.json``; a missing file, bad JSON or a key that does not match
    the schema is a :class:`RunError` naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise RunError("no results.json here", path=path, expected="a finished run's results.json",
                       found="missing", fix="finish the run first: neuroxai validate PROTOCOL --out RUN_DIR --resume")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        found = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
        raise RunError("results.json is not valid JSON", path=path, expected="JSON", found=found,
                       fix="re-run the statistics stage: neuroxai validate ... --resume") from None
    res = validate_results(data, path=str(path))
    res._base = path.parent
    return res
