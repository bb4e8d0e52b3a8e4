"""The schema of ``results.json`` (version :data:`SCHEMA_VERSION`), as pydantic models.

``results.json`` is what :func:`neuroxai.protocol.verdict.assemble_results` returns and what the
report is built from. The schema is versioned: a change that removes or renames a key bumps the
major number; adding an optional key bumps the minor one. Open-ended parts (the protocol spec,
task summaries, provenance, model metrics beyond the documented ones) allow extra keys.

``validate_results(results)`` raises :class:`~neuroxai.errors.RunError` naming the first bad key
path, what was expected and what was found; ``json_schema()`` gives the JSON-Schema document that
is written next to every report as ``results.schema.json``.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import RunError

SCHEMA_VERSION = "1.2"  # 1.1: validity, distance profiles, oracle scale, reachability; 1.2: kind, audit
Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]
Num = Optional[float]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


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


class DataInfo(_Open):
    source: str
    n_subjects: int = Field(ge=0)
    manifest_hash: Optional[str] = None
    grid: Optional[dict[str, Any]] = None
    cohort: Optional[dict[str, Any]] = None
    credits: Optional[str] = None


class ModelPerf(_Open):
    """Test-split performance; classification keys shown, regression tasks add e.g. ``r2``."""

    auroc: Num = None
    auroc_ci_low: Num = None
    auroc_ci_high: Num = None
    accuracy: Num = None
    balanced_accuracy: Num = None
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
    pairwise: list[dict[str, Any]] = Field(default_factory=list, description="paired tests between the "
                                           "methods under test on the main metric (two-sided, Holm)")


class Comparison(_Closed):
    p: Num
    p_adjusted: Num = None
    n_pairs: int = 0
    baseline_mean: Num = None


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
    comparisons: dict[Literal["random", "null_model"], Comparison] = Field(default_factory=dict)


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


class Criterion(_Closed):
    kind: Literal["ci_above_chance", "scaled_ci_above", "beats_random", "beats_null_model",
                  "model_randomization"]
    text: str
    metric: Optional[str] = None
    observed: Num = None
    threshold: Num = None
    passed: Optional[bool] = None
    applicable: bool = True


class MethodResult(_Closed):
    task: str
    method: str = Field(description="the method's key (label or registry name)")
    name: str = Field(description="METHODS registry key")
    params: dict[str, Any] = Field(default_factory=dict)
    is_baseline: bool
    metrics: dict[str, MetricSummary]
    sanity: Optional[Sanity] = None
    criteria: list[Criterion]
    verdict: Verdict
    verdict_reason: str = ""


class Overall(_Closed):
    verdict: Verdict
    n_pass: int = Field(ge=0)
    n_fail: int = Field(ge=0)
    n_inconclusive: int = Field(ge=0)
    exit_code: Literal[0, 1, 2]
    criteria_reachable: Optional[bool] = Field(
        None, description="whether some method under test passed the positive control (None: no "
        "positive control in the protocol, or its model/validity failed)")
    reachability_note: str = ""


SCORE_COLUMNS = ("subject_id", "method", "metric", "value", "task")


class AuditInfo(_Open):
    """What an audit of saved maps read and found (``kind: audit``)."""

    maps_layout: str
    mask_kind: str
    flags: list[dict[str, Any]] = Field(default_factory=list, description="constant or all-zero maps")
    inputs_hash: str
    n_input_files: int = Field(ge=0)
    not_applicable: dict[str, str] = Field(default_factory=dict, description="checks that need a model")


class Results(_Closed):
    schema_version: str
    kind: Literal["validate", "audit"] = Field("validate", description="a validation run, or an audit of "
                                               "a prior study's saved maps (no model)")
    audit: Optional[AuditInfo] = None
    protocol: ProtocolInfo
    provenance: Provenance
    data: DataInfo
    tasks: list[TaskResult]
    methods: list[MethodResult]
    overall: Overall
    findings: list[dict[str, Any]] = Field(default_factory=list, description="agreement with the "
                                           "published findings (Siegel et al. 2025), when GradCAM, LRP "
                                           "and SmoothGrad ran")
    scores: dict[str, list[Union[str, float, int, None]]] = Field(
        default_factory=dict, description="long table, columns of equal length: subject_id, "
                                          "method, metric, value, task")

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
        if self.scores:
            missing = [c for c in SCORE_COLUMNS if c not in self.scores]
            if missing:
                raise ValueError(f"scores lacks columns {missing}")
            lens = {k: len(v) for k, v in self.scores.items()}
            if len(set(lens.values())) > 1:
                raise ValueError(f"scores columns differ in length: {lens}")
        return self


def json_schema() -> dict:
    """The JSON-Schema (draft 2020-12) document of ``results.json``."""
    s = Results.model_json_schema()
    s["title"] = f"neuroxai results.json v{SCHEMA_VERSION}"
    return s


def validate_results(results: dict, *, path: str = "results.json") -> Results:
    """Check ``results`` against the schema; return the parsed model.

    Raises :class:`RunError` naming the first bad key (``methods.0.verdict``), the expected and
    the found value.
    """
    if not isinstance(results, dict):
        raise RunError("results must be a JSON object", path=path, expected="dict",
                       found=type(results).__name__, fix="pass the dict from assemble_results")
    try:
        return Results.model_validate(results)
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
