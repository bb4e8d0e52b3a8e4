"""The validation protocol: a versioned YAML file, validated by pydantic at load time.

A bad key or value is a :class:`~neuroxai.errors.ConfigError` naming the key path, the YAML line,
the allowed values and what was found. The protocol's content hash (of its canonical JSON form)
goes into every result.
"""
from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError

# Shipped inside the package, so a wheel carries them. neuroxai is always installed as files
# (wheel, editable or checkout), where `files()` is a real Path: glob and error paths need one.
PROTOCOL_DIR = Path(files("neuroxai") / "protocols")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class CohortSpec(_Strict):
    """Parameters of the embedded cohort (see ``neuroxai.data.cohort``)."""

    n: int = Field(200, ge=12)
    spacing_mm: float = Field(4.0, gt=0)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class DataSpec(_Strict):
    source: Literal["embedded", "manifest", "bids"] = "embedded"
    manifest: Optional[str] = None
    cohort: CohortSpec = Field(default_factory=CohortSpec)
    spacing_mm: Optional[float] = Field(None, gt=0, description="model grid spacing (mm)")
    shape: Optional[tuple[int, int, int]] = None
    normalize: Optional[Literal["zscore", "percentile"]] = "zscore"
    mask_threshold: float = Field(0.5, ge=0, description="voxels > this value of a mask file are in the mask "
                                  "(probabilistic masks: the probability cut; stated in the report)")

    @model_validator(mode="after")
    def _need_manifest(self):
        if self.source != "embedded" and not self.manifest:
            raise ValueError("data.manifest is required when data.source is 'manifest' or 'bids'")
        return self


class TaskSpec(_Strict):
    id: str
    type: str = Field(description="a TASKS registry key, e.g. region_volume, lesion")
    params: dict[str, Any] = Field(default_factory=dict)
    null_control: bool = Field(True, description="also train a random-label model (chance floor)")


class ModelSpec(_Strict):
    architecture: str = "small_cnn"
    params: dict[str, Any] = Field(default_factory=dict)
    config: Optional[str] = Field(None, description="YAML under configs/models/ merged under params")
    training: dict[str, Any] = Field(default_factory=dict)
    training_config: Optional[str] = None
    checkpoint: Optional[str] = Field(None, description="load this checkpoint instead of training")
    weights: Optional[str] = Field(None, description="state_dict file for checkpoint: 'pkg.module:Class'")
    kwargs: Optional[str] = Field(None, description="YAML of constructor kwargs for 'pkg.module:Class'")

    @property
    def seeds(self) -> list[int] | None:
        """``training.seeds``: train one model per seed and judge the methods over all of them (the
        CIs resample seeds and subjects; each seed's own verdict is reported); None for one model."""
        s = self.training.get("seeds")
        return None if s is None else [int(x) for x in s]

    def for_seed(self, seed: int) -> "ModelSpec":
        """This model with ``training.seed: seed`` in place of ``training.seeds`` (one run of the
        list: the stages of that seed key on it as on any single-seed protocol)."""
        tr = {k: v for k, v in self.training.items() if k != "seeds"}
        return self.model_copy(update={"training": {**tr, "seed": int(seed)}})


class MethodSpec(_Strict):
    name: str = Field(description="a METHODS registry key")
    label: Optional[str] = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.label or self.name


class ScoringSpec(_Strict):
    polarity: Literal["positive", "absolute", "negative"] = Field(
        "absolute", description="which sign of relevance is evidence: absolute = |map| (the published study's "
        "choice; a volume change is signed on both sides of a boundary, and a class-0 subject's map of its own "
        "logit is negative where the signal is); positive = max(map, 0); negative = max(−map, 0)")
    smooth_fwhm_mm: float = Field(0.0, ge=0)
    restrict_to_brain: bool = True
    pointing_tolerance_mm: float = Field(0.0, ge=0)
    profile_distances_mm: tuple[float, ...] = Field(
        (0.0, 4.0, 8.0, 12.0, 16.0, 24.0),
        description="distances (mm) of the relevance-by-distance profile, increasing from 0")
    # The steps of a published study's scoring (neuroxai.scoring.presets); each off unless set here
    # or by `preset`, whose values fill the keys not given.
    preset: Optional[Literal["siegel2025"]] = Field(None, description="a named set of the steps below")
    sign: Optional[Literal["abs", "square"]] = Field(None, description="replaces polarity when set")
    mask_maps: bool = Field(False, description="zero the map outside the brain before smoothing")
    smooth_fwhm_vox: float = Field(0.0, ge=0, description="Gaussian FWHM in voxels of the scoring grid")
    smooth_kernel: Literal["zero_pad", "nilearn"] = "zero_pad"
    percentile: Optional[float] = Field(None, ge=0, le=100, description="keep voxels ≥ this percentile")
    percentile_over: Literal["volume", "brain"] = "volume"
    post_smooth_fwhm_vox: float = Field(0.0, ge=0, description="smoothing after the percentile cutoff")
    gt_dilation: int = Field(0, ge=0, description="iterations of a 6-connected dilation of the ground truth")
    gt_dilation_mm: float = Field(0.0, ge=0, description="dilation of the ground truth in mm")
    contralateral: bool = Field(False, description="add the true regions' opposite-hemisphere counterparts")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        if isinstance(data, dict) and data.get("preset") is not None:
            from ..scoring.presets import PRESETS

            if data["preset"] in PRESETS:  # an unknown name fails the Literal with the allowed values
                given = dict(data)
                data = {**PRESETS[data["preset"]], **given}
                if given.get("smooth_fwhm_mm") and "smooth_fwhm_vox" not in given:
                    data["smooth_fwhm_vox"] = 0.0  # the mm form replaces the preset's voxel form
                if given.get("gt_dilation_mm") and "gt_dilation" not in given:
                    data["gt_dilation"] = 0
        return data

    def evidence(self, attr):
        """The map as the scoring reads its sign (``sign`` when set, else ``polarity``): the one
        convention for localization scores and for model randomization's similarity."""
        from ..scoring.preprocess import apply_polarity, apply_sign

        return apply_sign(attr, self.sign) if self.sign else apply_polarity(attr, self.polarity)

    def score_options(self) -> dict:
        """:func:`neuroxai.scoring.score`'s keyword arguments for these steps (the preset already
        applied)."""
        return {"polarity": self.polarity, "smooth_fwhm_mm": self.smooth_fwhm_mm, "sign": self.sign,
                "mask_maps": self.mask_maps, "smooth_fwhm_vox": self.smooth_fwhm_vox,
                "smooth_kernel": self.smooth_kernel, "percentile": self.percentile,
                "percentile_over": self.percentile_over, "post_smooth_fwhm_vox": self.post_smooth_fwhm_vox,
                "gt_dilation": self.gt_dilation, "gt_dilation_mm": self.gt_dilation_mm,
                "contralateral": self.contralateral}


class MetricSpec(_Strict):
    """One metric of the protocol. ``scoring`` scores this metric under its own scoring steps
    instead of the protocol's ``scoring:`` (a whole :class:`ScoringSpec`: keys not given take their
    defaults, not the protocol's), so one run can read a metric under a published study's preset
    and under ours; each map is preprocessed once per distinct scoring. ``label`` names the
    entry's rows (scores.csv's ``metric`` column, the summaries, acceptance criteria's ``metric``);
    two entries of the same metric need distinct labels."""

    name: str
    label: Optional[str] = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64,
                                 description="the name of this entry's rows (letters, digits, _); default: name")
    params: dict[str, Any] = Field(default_factory=dict)
    scoring: Optional[ScoringSpec] = Field(
        None, description="this metric's own scoring steps, replacing the protocol's `scoring:` for it "
        "(e.g. {polarity: absolute} beside a protocol scored with {preset: siegel2025}); its "
        "profile_distances_mm is not used (the distance profile is the run's)")

    @property
    def key(self) -> str:
        return self.label or self.name

    def scoring_of(self, protocol_scoring: ScoringSpec) -> ScoringSpec:
        """The scoring this metric is computed under."""
        return self.scoring if self.scoring is not None else protocol_scoring

    @model_validator(mode="after")
    def _own_scoring(self):
        if self.scoring is not None and "profile_distances_mm" in self.scoring.model_fields_set:
            raise ValueError("scoring.profile_distances_mm is the run's distance profile, not a metric's: "
                             "set it in the protocol's `scoring:`")
        return self


class StatisticsSpec(_Strict):
    bootstrap: int = Field(2000, ge=100)
    ci_level: float = Field(0.95, gt=0.5, lt=1)
    ci_method: Literal["percentile", "bca"] = "bca"
    test: Literal["wilcoxon", "permutation"] = "wilcoxon"
    correction: Literal["holm", "none"] = "holm"
    family: Literal["method", "task"] = Field(
        "method", description="the comparisons one correction runs over: 'method' = the acceptance "
        "comparisons of that method alone (its verdict depends on nothing else in the run); 'task' = those "
        "of every method under test on the task (family-wise across methods; stated in the report)")
    n_permutations: int = Field(10000, ge=100)
    stability_resamples: int = Field(
        200, ge=0, le=100000, description="bootstrap resamples of the subjects for each criterion's "
        "holds_share (how firm a verdict is); 0 = off")
    seed: int = 0


class RandomizationSpec(_Strict):
    enabled: bool = True
    mode: Literal["cascading", "independent"] = "cascading"
    n_subjects: int = Field(8, ge=1)
    similarity: Literal["spearman", "ssim", "topk_overlap"] = "spearman"
    max_similarity: float = Field(0.5, gt=-1, le=1, allow_inf_nan=False,
                                  description="fail if the fully randomized map is more similar (a "
                                  "similarity in (-1, 1]; -1 could never be undercut)")


class FPPerturbationSpec(_Strict):
    """The false-positive perturbation of Siegel et al. 2025 (2026 revision): is a method's
    off-target relevance used by the model? Its "false positives" (relevance outside the ground
    truth dilated by ``gt_dilation_mm``, above the ``percentile``-th percentile of the relevance
    inside it, after smoothing; dilated by ``fp_dilation_mm``) are set to the training images'
    mean brain intensity, and so, as the control, is the same set mirrored into the other
    hemisphere. If the model's output moves more for the false positives than for the control
    (one-sided paired test, p < ``alpha``), they carry information the model uses (suppressors),
    not artefacts. The study's values on its 1 mm grid: 20, 4, FWHM 4 mm, 99. Millimetres become
    iterations of a 6-connected dilation at the grid's finest spacing."""

    enabled: bool = False
    n_subjects: int = Field(32, ge=1, description="scored test subjects per task (the first ones)")
    methods: Optional[list[str]] = Field(None, description="method keys to check (default: every "
                                         "method under test)")
    gt_dilation_mm: float = Field(20.0, ge=0, allow_inf_nan=False)
    fp_dilation_mm: float = Field(4.0, ge=0, allow_inf_nan=False)
    smooth_fwhm_mm: float = Field(4.0, ge=0, allow_inf_nan=False)
    percentile: float = Field(99.0, ge=0, le=100)
    alpha: float = Field(0.01, gt=0, lt=1)


class SanitySpec(_Strict):
    model_randomization: RandomizationSpec = Field(default_factory=RandomizationSpec)
    fp_perturbation: FPPerturbationSpec = Field(default_factory=FPPerturbationSpec)


class ValiditySpec(_Strict):
    """Ground-truth validity (:mod:`neuroxai.protocol.validity`): does the model use the ground
    truth? Run for every task before any method is judged; if not, the task's verdicts are
    INCONCLUSIVE.

    Defaults: half of the model's above-chance performance must go when the ground truth is
    replaced by the training mean (``min_drop_share``) and half must stay when only the ground truth
    is kept (``min_kept_share``) — "most of the evidence is inside"; and the ground truth must move
    the model's score at least twice as much as an equal-size region elsewhere
    (``min_effect_ratio``). On the demo's hippocampus-volume model the region alone gives a drop
    share of ~0.02 (the evidence is at its boundary) and the signal support ~0.8.
    """

    enabled: bool = True
    fill: Literal["train_mean"] = "train_mean"
    n_placements: int = Field(5, ge=1, le=100)
    min_drop_share: float = Field(0.5, ge=0, le=1)
    min_kept_share: float = Field(0.5, ge=0, le=1)
    min_effect_ratio: float = Field(2.0, ge=0)
    seed: int = 0


class Criterion(_Strict):
    """One acceptance criterion; all must hold for PASS.

    kinds:
      * ``ci_above_chance``: the lower CI bound of ``metric`` ≥ its chance level + ``margin``.
      * ``scaled_ci_above``: the lower CI bound of ``metric`` on the chance → oracle scale
        (per subject ``(score − chance) / (oracle − chance)``: 0 = a map that ignores the mask,
        1 = the ground truth itself) ≥ ``threshold``.
      * ``beats_random``: ``metric`` is higher than for the ``random`` map, paired test p < alpha
        (after the protocol's multiple-comparison correction).
      * ``beats_null_model``: higher than the same method on the random-label (null) model.
      * ``model_randomization``: the maps change when the model's weights are randomized.
    """

    kind: Literal["ci_above_chance", "scaled_ci_above", "beats_random", "beats_null_model",
                  "model_randomization"]
    metric: Optional[str] = None
    margin: float = 0.0
    threshold: float = Field(0.1, description="scaled_ci_above: minimum lower CI bound on the "
                             "chance (0) → oracle (1) scale")
    alpha: float = Field(0.01, gt=0, lt=1)

    @model_validator(mode="after")
    def _metric_needed(self):
        if self.kind != "model_randomization" and not self.metric:
            raise ValueError(f"acceptance criterion {self.kind!r} needs a 'metric'")
        return self

    @model_validator(mode="after")
    def _can_pass(self):
        # A criterion that no map can meet would FAIL every method, the oracle included.
        import math

        for name in ("margin", "threshold", "alpha"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"acceptance criterion {self.kind!r}: {name} must be a finite number, "
                                 f"found {getattr(self, name)!r}")
        if self.kind == "scaled_ci_above" and self.threshold > 1:
            raise ValueError(f"acceptance criterion scaled_ci_above: threshold {self.threshold:g} can never "
                             "be met: the chance (0) → oracle (1) scale ends at 1, where only the ground "
                             "truth itself lies; use a threshold ≤ 1 (the shipped protocols use 0.1)")
        return self

    def describe(self) -> str:
        from ..scoring.localization import METRIC_INFO

        info = METRIC_INFO.get(self.metric or "")
        higher = info is None or info.higher_is_better  # the verdict reads the metric's direction too
        better = "higher" if higher else "lower (better)"
        if self.kind == "ci_above_chance":
            return (f"{self.metric}: lower CI bound ≥ chance + {self.margin:g}" if higher
                    else f"{self.metric}: upper CI bound ≤ chance − {self.margin:g} (lower is better)")
        if self.kind == "scaled_ci_above":
            return (f"{self.metric}: lower CI bound on the chance (0) → oracle (1) scale ≥ {self.threshold:g}")
        if self.kind == "beats_random":
            return f"{self.metric}: {better} than the random map (p < {self.alpha:g}, corrected)"
        if self.kind == "beats_null_model":
            return f"{self.metric}: {better} than on the null (random-label) model (p < {self.alpha:g}, corrected)"
        return "maps change under model-parameter randomization"


class ClaimSpec(_Strict):
    """A published claim "the model relies on region X" (``kind: reference``): checked against the
    causal effect of occluding X (:mod:`neuroxai.protocol.stages.occlusion_reference`)."""

    region: str | int = Field(description="an atlas region: a label name (the segmentation's dseg.tsv, "
                              "AAL3) or its number, e.g. Hippocampus_L")


class ReferenceSpec(_Strict):
    """``kind: reference``: a model trained on the data's own labels has no ground truth, so every
    method's ranking of the atlas regions is compared with the model's *causal* ranking, Siegel et
    al. 2025's AtlasOcclusion: each region set to the training mean image, the output change
    divided by the region's size. A method's regions are ranked by the ``percentile``-th
    percentile of its map (as the scoring reads it: ``scoring.polarity`` / ``sign``) inside each
    region, the study's ranking. Per subject: Spearman's ρ over all regions and rank-biased overlap
    of the top ``rbo_depth``; bootstrap CIs over subjects (``statistics``).

    Verdict per method: PASS when the lower CI bound of the mean RBO on the chance (0) → identical
    ranking (1) scale is ≥ ``min_rbo`` (and of the mean ρ ≥ ``min_spearman`` when set), FAIL when
    an upper bound is below its threshold, INCONCLUSIVE when an interval straddles it, with fewer
    than ``min_subjects`` subjects, when the model is at chance or when no occlusion moves its
    output. The methods are ranked by ``rank_by``. A claim is supported when the region ranks in
    the causal top ``top_k`` and the lower CI bound of its effect minus the subject's median
    regional effect is > 0."""

    n_subjects: Optional[int] = Field(None, ge=1, description="scored test subjects (the first ones; "
                                      "default: all, or run.n_test_subjects)")
    percentile: float = Field(99.0, ge=0, le=100, description="a method's region score: this percentile "
                              "of its map inside the region (the study's ranking)")
    rbo_depth: int = Field(10, ge=1, description="rank-biased overlap of the top this many regions")
    rbo_p: float = Field(1.0, gt=0, le=1, description="RBO persistence; 1 = the average overlap (the study's)")
    min_rbo: Optional[float] = Field(0.2, ge=0, le=1, allow_inf_nan=False,
                                     description="PASS needs the lower CI bound of the mean RBO on the chance (0) → "
                                     "identical ranking (1) scale ≥ this (null: not a criterion)")
    min_spearman: Optional[float] = Field(None, ge=-1, le=1, allow_inf_nan=False,
                                          description="and, when set, the lower CI bound of the mean Spearman ρ ≥ "
                                          "this (ρ over every region is dominated by the regions the model ignores: "
                                          "protocols/README.md section 11)")
    rank_by: Literal["rbo", "spearman"] = Field("rbo", description="the measure the methods are ranked by")
    min_subjects: int = Field(5, ge=2, description="fewer scored subjects: INCONCLUSIVE")
    top_k: int = Field(5, ge=1, description="a claimed region must rank in the causal top k")
    claims: list[ClaimSpec] = Field(default_factory=list, description="claims 'the model relies on region X'")
    batch_regions: Optional[int] = Field(None, ge=1, description="occluded copies per forward pass "
                                         "(default: the chunk planner)")

    @model_validator(mode="after")
    def _a_criterion(self):
        if self.min_rbo is None and self.min_spearman is None:
            raise ValueError("reference: min_rbo and min_spearman are both null: a method could never be judged; "
                             "set at least one (e.g. min_rbo: 0.2)")
        return self


class RunSpec(_Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(8, ge=1)
    n_test_subjects: Optional[int] = Field(None, ge=1, description="cap on scored test subjects")
    save_maps: Literal["npz16", "nifti", "none"] = Field(
        "npz16", description="keep the maps: 'npz16' inside the attribute chunks (float16), 'nifti' as one "
        "<subject>_desc-<method>_saliency.nii.gz per subject in the attribute stage's maps/ folder "
        "(model grid, float32), 'none' to keep only the scores")
    seed: int = 0
    target: Literal["label", "predicted", "positive"] = Field(
        "label", description="which output each map explains (classification tasks): 'label' = the "
        "subject's true class, 'predicted' = the class the model predicts for the subject, 'positive' = "
        "class 1 (the signal class) for every subject. Regression tasks explain their single output. "
        "A single-logit binary model (one output z) explains z for class 1 and −z for class 0. scores.csv "
        "records label, prediction and target per subject")
    distributed_training: Literal["auto", "ddp", "rank0"] = Field(
        "auto", description="under torchrun: 'ddp' trains with DistributedDataParallel on all ranks, "
        "'rank0' trains on rank 0 while the others wait; 'auto' = ddp on CUDA (SyncBatchNorm), rank0 on "
        "CPU (PyTorch has no CPU SyncBatchNorm, so CPU DDP changes BatchNorm models)")


class Protocol(_Strict):
    id: str
    version: str
    kind: Literal["validate", "audit", "reference"] = Field(
        "validate", description="'audit': criteria for `neuroxai audit` of saved maps (no data, tasks or model; "
        "methods = baselines); 'reference': a model of the data's own labels (no known signal), its methods "
        "compared with its causal atlas occlusion (see `reference:`)")
    title: str = ""
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    tasks: list[TaskSpec] = Field(default_factory=list)
    model: ModelSpec = Field(default_factory=ModelSpec)
    methods: list[MethodSpec] = Field(default_factory=list)
    metrics: list[MetricSpec] = Field(default_factory=list)  # required (≥ 1) unless kind: reference
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    statistics: StatisticsSpec = Field(default_factory=StatisticsSpec)
    sanity: SanitySpec = Field(default_factory=SanitySpec)
    validity: ValiditySpec = Field(default_factory=ValiditySpec)
    acceptance: list[Criterion] = Field(default_factory=list)  # required unless kind: reference
    reference: Optional[ReferenceSpec] = None  # kind: reference only
    run: RunSpec = Field(default_factory=RunSpec)

    @model_validator(mode="after")
    def _non_empty(self):
        # a reference protocol has no ground truth to score (protocol/settings.py refuses metrics there)
        if self.kind != "reference":
            for name in ("metrics", "acceptance"):
                if name not in self.model_fields_set:
                    raise ValueError(f"{name}: required in a {self.kind} protocol")
            if not self.metrics:
                raise ValueError("metrics: must list at least one entry")
        return self

    @model_validator(mode="after")
    def _validate_needs_tasks(self):
        if self.kind in ("validate", "reference"):
            for name in ("tasks", "methods"):
                if not getattr(self, name):
                    raise ValueError(f"{name}: must list at least one entry (a validation protocol)")
        elif self.tasks:
            raise ValueError("tasks: an audit protocol has no tasks (the audited maps and masks are the task)")
        return self

    @model_validator(mode="after")
    def _registry_names(self):
        # Registry names are checked here so a typo fails at load time, not mid-run.
        from .registries import known_names

        names = known_names()
        for i, t in enumerate(self.tasks):
            _check_name(names["tasks"], t.type, f"tasks.{i}.type")
        for section, items in (("methods", self.methods), ("metrics", self.metrics)):
            for i, m in enumerate(items):
                _check_name(names[section], m.name, f"{section}.{i}.name")
        # parameters (names, types, values): neuroxai.protocol.settings.check_settings, at load
        metric_names = [m.key for m in self.metrics]
        if len(set(metric_names)) != len(metric_names):
            raise ValueError(f"metric labels must be unique, found {metric_names}; give repeated metrics "
                             "a 'label' (e.g. the same metric under two scorings)")
        for i, c in enumerate(self.acceptance):
            if c.metric and c.metric not in metric_names:
                raise ValueError(f"acceptance.{i}.metric {c.metric!r} is not among the protocol's "
                                 f"metrics {sorted(metric_names)} (a labelled metric is named by its label)")
        if self.kind == "audit":
            own = [m.key for m in self.metrics if m.scoring is not None]
            if own:
                raise ValueError(f"metrics {own}: a metric's own `scoring` is for validation protocols; an "
                                 "audit scores every metric under the protocol's `scoring:`")
        keys = [m.key for m in self.methods]
        if len(set(keys)) != len(keys):
            raise ValueError(f"method labels must be unique, found {keys}; give repeated methods a 'label'")
        return self

    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the validated protocol (key order, defaults filled)."""
        d = self.model_dump(mode="json")
        if d.get("reference") is None:  # absent unless used: the hashes of protocols before it stay
            d.pop("reference", None)
        canon = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


def _check_name(allowed: list[str] | None, name: str, where: str) -> None:
    if allowed is not None and name not in allowed:
        raise ValueError(f"{where}: unknown name {name!r}; allowed: {allowed}")


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at pydantic error location ``loc``."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(part):
                    nxt, line = v, k.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    if node is not None:
        line = node.start_mark.line + 1
    return line


def load_protocol(path_or_name: str | Path) -> Protocol:
    """Load and validate a protocol from a path or a shipped name (``quick``, ``siegel2025``…)."""
    from ..safe_yaml import compose_yaml, load_yaml

    path = resolve_protocol_path(path_or_name)
    if path.is_dir():
        raise ConfigError("the protocol is a folder, not a YAML file", path=path,
                          expected="a .yaml file or a shipped name", found="a directory",
                          fix="`neuroxai protocols` lists the shipped protocols")
    raw = load_yaml(path, what="protocol")  # no alias bombs, no duplicate keys, no python tags
    tree = compose_yaml(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError("a protocol must be a YAML mapping", path=path,
                          expected="keys id, version, tasks, methods, metrics, acceptance",
                          found=type(raw).__name__)
    try:
        proto = Protocol.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(tree, loc)
            allowed = ""
            ctx = err.get("ctx") or {}
            if err["type"] == "literal_error" and "expected" in ctx:
                allowed = f"; allowed: {ctx['expected']}"
            if err["type"] == "extra_forbidden":
                parent = _model_at(Protocol, loc[:-1])
                if parent is not None:
                    allowed = f"; allowed keys: {sorted(parent.model_fields)}"
            # a whole-protocol check (loc ()) names its key in the message; its input is the whole file
            found = f"; found: {err.get('input')!r}" if err["type"] != "missing" and loc else ""
            lines.append(f"line {line}: {key}: {err['msg']}{allowed}{found}")
        raise ConfigError("the protocol has invalid keys or values:\n  " + "\n  ".join(lines),
                          path=path, fix="correct the keys/values listed above "
                          "(`neuroxai protocols` shows the shipped examples)") from None
    from .settings import check_settings

    check_settings(proto, path)  # every parameter, against its registration: before any data is read
    return proto


def _model_at(model: type[BaseModel], loc: tuple):
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in cur.model_fields:
            return None
        ann = cur.model_fields[part].annotation
        args = getattr(ann, "__args__", ()) or ()
        cands = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        for a in args:  # list[Model]
            cands += [b for b in getattr(a, "__args__", ()) if isinstance(b, type) and issubclass(b, BaseModel)]
        cur = cands[0] if cands else ann
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def resolve_protocol_path(path_or_name: str | Path) -> Path:
    from ..safepath import describe_special

    p = Path(path_or_name)
    special = describe_special(p)  # a FIFO, a device or a link loop: named before anything opens it
    if special is not None and special != "a folder":
        raise ConfigError(f"the protocol is {special}", path=p, expected="a protocol YAML file or a shipped name",
                          found=special, fix="point to the YAML file itself (`neuroxai protocols` lists "
                                             "the shipped ones)")
    if p.exists():
        return p
    for cand in (PROTOCOL_DIR / f"{p.name}.yaml", PROTOCOL_DIR / p.name):
        if cand.exists():
            return cand
    shipped = sorted(x.stem for x in PROTOCOL_DIR.glob("*.yaml"))
    raise ConfigError("protocol not found", path=p, expected=f"a YAML path or one of {shipped}",
                      found="no such file", fix="`neuroxai protocols` lists the shipped protocols")


def list_protocols() -> list[Protocol]:
    return [load_protocol(p) for p in sorted(PROTOCOL_DIR.glob("*.yaml"))]
