"""The protocol runner: the one place that knows the whole order of the pipeline.

Stages (one module each under :mod:`neuroxai.protocol.stages`): prepare data → build tasks →
store the subjects on the model grid → train/load models → ground-truth validity → attribute +
score (on the device) → model randomization → statistics and verdicts → report. Each stage writes
atomically into the run directory under a key that hashes its inputs (see
:mod:`neuroxai.protocol.rundir`); finished stages are skipped, an interrupted attribution stage
continues from its last complete chunk.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import ConfigError
from ..progress import Progress
from .context import RunContext, RunResult
from .distributed import init_distributed, rank0_first
from .provenance import now, provenance
from .rundir import RunDir, atomic_write_json, read_json
from .schema import Protocol, load_protocol
from ..report.figure_inputs import FigureInputs
from ..report.scores import SCORES_FILE, ScoreTable
from .stages.attribute import attribute_and_score, profiles, write_scores
from .stages.data import data_info, load_store, prepare_data
from .stages.ground_truth import validity_stage
from .stages.perturb import fp_perturbation_stage
from .stages.randomize import model_randomization
from .stages.tasks import build_tasks
from .stages.train import train_stage
from .fit import check_methods_fit_model_file, check_models_fit
from .seeds import SeedRun, assemble_seeded
from .conclude import write_results
from .figures_input import figure_inputs
from .verdict import assemble_results

# Re-exported: older code and the tests import these from the runner.
from .stages.attribute import BASELINE_METHODS, save_nifti_maps as _save_nifti_maps  # noqa: F401
from .stages.tasks import is_null, scored_subjects  # noqa: F401
from .stages.train import CONFIG_DIR, config_yaml as _config_yaml  # noqa: F401

log = logging.getLogger(__name__)


def _say_what_changed(run_json: Path, prov: dict) -> None:
    """On a resume, name the inputs that changed since the last run (their stages are recomputed:
    every stage key holds the content of its inputs, so nothing stale is ever mixed in)."""
    if not run_json.is_file():
        return
    try:
        before = read_json(run_json).get("provenance", {})
    except (ValueError, OSError):
        return
    changed = [name for key, name in (("protocol_hash", "the protocol"), ("manifest_hash", "the data (manifest or "
               "image contents)")) if before.get(key) and before.get(key) != prov.get(key)]
    if changed:
        log.warning("resuming %s: %s changed since the last run; the stages that depend on it are recomputed",
                    run_json.parent, " and ".join(changed))


def _check_trusted(proto: Protocol, trust_modules) -> None:
    """Refuse a protocol that names Python code to import unless a person opted in to its module."""
    from ..models.byo import class_spec_module

    mod = class_spec_module(proto.model.checkpoint) if proto.model.checkpoint else None
    if mod is None:
        return
    trusted = {str(m) for m in trust_modules}
    if mod not in trusted and not any(mod.startswith(t + ".") for t in trusted):
        raise ConfigError("the protocol names Python code to import; a protocol cannot run code",
                          expected="model.checkpoint: a model file (TorchScript, torch.export, neuroxai "
                                   "checkpoint) or a registry name",
                          found=f"model.checkpoint: {proto.model.checkpoint!r} (module {mod!r})",
                          fix=f"if you wrote or trust the module {mod!r}, opt in on the command line with "
                              f"--trust-module {mod} (Python API: trust_modules=[{mod!r}]), or pass "
                              f"--model {proto.model.checkpoint} yourself")


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is 'cuda' but no CUDA device is available",
                          expected="a machine with an NVIDIA GPU", found="none",
                          fix="use device: auto or cpu")
    return torch.device(spec)


def _models_to_scores(ctx: RunContext, tasks: dict, store, stop_after: str | None):
    """Train (or load) each task's model, check it, then the validity, attribution + scoring,
    model-randomization and false-positive perturbation stages: ``(models, validity, scores,
    sanity, off_target)``, or None when the run stops after ``train`` or ``attribute``."""
    models = {tid: train_stage(ctx, tid, t, store) for tid, t in tasks.items()}
    check_models_fit(ctx, tasks, models, store)  # outputs vs classes, NaN outputs, LRP on TorchScript: named now
    if stop_after == "train":
        return None
    validity = rank0_first(ctx, lambda: validity_stage(ctx, tasks, models, store))
    scores = attribute_and_score(ctx, tasks, models, store)
    if stop_after == "attribute":
        return None
    sanity = rank0_first(ctx, lambda: model_randomization(ctx, tasks, models, store))
    off_target = rank0_first(ctx, lambda: fp_perturbation_stage(ctx, tasks, models, store))
    return models, validity, scores, sanity, off_target


def _seed_runs(ctx: RunContext, tasks: dict, store, stop_after: str | None) -> list[SeedRun]:
    """The model stages once per model seed (``training.seeds``; once for a single model), each
    seed's stages keyed on its own ``training.seed``."""
    proto, runs = ctx.protocol, []
    for seed in proto.model.seeds or [None]:
        c = ctx if seed is None else replace(ctx, protocol=proto.model_copy(
            update={"model": proto.model.for_seed(seed)}))
        run = _models_to_scores(c, tasks, store, stop_after)
        if run is not None:
            runs.append(SeedRun(seed, c, *run))
    return runs


def _reference_run(ctx: RunContext, tasks: dict, store, prov: dict, t0: float, *, stop_after: str | None,
                   report: bool) -> RunResult:
    """``kind: reference``: train (or load) the model of the data's own label, then the causal
    atlas occlusion and each method's agreement with it (:mod:`.stages.occlusion_reference`), judged
    by :mod:`.causal_reference`. No ground truth, so no validity, randomization or null model."""
    from ..tasks.regions import label_table
    from .causal_reference import assemble_reference
    from .stages.occlusion_reference import reference_stage

    models = {tid: train_stage(ctx, tid, t, store) for tid, t in tasks.items()}
    check_models_fit(ctx, tasks, models, store)
    if stop_after == "train":
        return RunResult(ctx.rd.root, None, None, 0)
    ref = rank0_first(ctx, lambda: reference_stage(ctx, tasks, models, store))
    if stop_after == "attribute":
        return RunResult(ctx.rd.root, None, None, 0)
    ctx.timings["total_s"] = time.perf_counter() - t0
    prov["finished"] = now()
    prov["timings_s"] = ctx.timings
    results = assemble_reference(ctx.protocol, prov, tasks, models, ref, data_info=data_info(ctx),
                                 label_table=label_table(ctx.manifest))
    return write_results(ctx.rd.root, results, report=report, write=ctx.rank == 0, figures=FigureInputs)


def _conclude(ctx: RunContext, tasks: dict, store, runs: list[SeedRun], prov: dict, *, report: bool) -> RunResult:
    """Stream the score table from the attribute chunks beside results.json, judge it (the seeds
    pooled), and write the results and the report (the tail the audit shares), rank 0 writing."""
    first = runs[0]
    path = ctx.rd.root / SCORES_FILE
    table = rank0_first(ctx, lambda: write_scores(path, [(r.seed, r.attributed) for r in runs])
                        if ctx.rank == 0 else ScoreTable(path))
    profs = profiles(first.ctx, tasks, first.attributed)
    if len(runs) == 1:
        results = assemble_results(ctx.protocol, prov, tasks, first.models, table, first.sanity,
                                   data_info=data_info(ctx), validity=first.validity, profiles=profs,
                                   off_target=first.off_target)
    else:
        results = assemble_seeded(ctx.protocol, prov, tasks, runs, table, data_info=data_info(ctx), profiles=profs)
    return write_results(ctx.rd.root, results, report=report, write=ctx.rank == 0,
                         figures=lambda: figure_inputs(first.ctx, tasks, store, first.attributed))


def _validation_protocol(protocol: Protocol | str | Path) -> Protocol:
    """The protocol to validate with, its settings checked; an audit protocol is refused."""
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    if isinstance(protocol, Protocol):  # built in Python: its settings are checked here, before any data
        from .settings import check_settings

        check_settings(proto)
    if proto.kind == "audit":
        raise ConfigError(f"{proto.id!r} is an audit protocol (criteria for saved maps, no tasks)",
                          expected="a validation protocol", found=f"kind: {proto.kind}",
                          fix=f"use it with `neuroxai audit --protocol {proto.id} --maps ... --masks ...`")
    return proto


def _overridden(proto: Protocol, *, manifest, checkpoint, weights, model_kwargs, epochs,
                max_test_subjects) -> Protocol:
    """``proto`` with the command line's overrides (see :func:`run_protocol`)."""
    if epochs is not None:
        proto = proto.model_copy(update={"model": proto.model.model_copy(update={
            "training": {**proto.model.training, "epochs": int(epochs)}})})
    if max_test_subjects is not None:
        proto = proto.model_copy(update={"run": proto.run.model_copy(update={"n_test_subjects": int(max_test_subjects)})})
    if manifest:
        src = "bids" if Path(manifest).is_dir() else "manifest"
        proto = proto.model_copy(update={"data": proto.data.model_copy(update={"source": src, "manifest": str(manifest)})})
    if checkpoint:
        proto = proto.model_copy(update={"model": proto.model.model_copy(update={
            "checkpoint": str(checkpoint), "weights": weights, "kwargs": model_kwargs})})
    return proto


def run_protocol(protocol: Protocol | str | Path, out_dir: str | Path, *, manifest: str | None = None,
                 checkpoint: str | None = None, weights: str | None = None, model_kwargs: str | None = None,
                 device: str | None = None, trust_modules: tuple[str, ...] | list[str] = (),
                 progress: Progress | None = None, report: bool = True,
                 stop_after: str | None = None, export: str | Path | None = None,
                 epochs: int | None = None, max_test_subjects: int | None = None) -> RunResult:
    """Run a validation protocol end to end into ``out_dir`` (resumable; see module doc).

    Args:
        protocol: a :class:`Protocol`, a path or a shipped protocol name.
        out_dir: run directory (created). Re-running with the same directory resumes.
        manifest: overrides ``data`` with a manifest CSV or BIDS folder.
        checkpoint: overrides ``model.checkpoint`` (evaluate a given model instead of training);
            a ``"pkg.module:Class"`` given here is typed by the caller, so it is trusted.
        trust_modules: modules a protocol's own ``model.checkpoint: "pkg.module:Class"`` may import.
            A protocol is a shared document: it never makes neuroxai import code on its own.
        device: overrides ``run.device``.
        stop_after: stop after this stage (``data``, ``tasks``, ``store``, ``train``, ``attribute``):
            the CLI's ``--stop-after`` (e.g. the data stages of a study on a small machine); resume later.
        epochs: train for this many epochs instead of the protocol's (a cut-down run: the protocol
            in results.json and its hash say so).
        max_test_subjects: score at most this many test subjects per task (``run.n_test_subjects``).
        export: also write the maps and ground-truth masks as NIfTI in a prior study's layout
            (BIDS derivatives, :mod:`neuroxai.protocol.export`) into this folder, for ``neuroxai audit``.
    """
    proto = _validation_protocol(protocol)
    if proto.kind == "reference" and export is not None:
        raise ConfigError(f"{proto.id!r} is a reference protocol: it has no ground-truth masks to export",
                          expected="no --export", found=f"--export {export}",
                          fix="drop --export (the per-subject values are in "
                              "RUN/stages/reference_ranking/*/subjects.csv)")
    if not checkpoint:
        _check_trusted(proto, trust_modules)
    proto = _overridden(proto, manifest=manifest, checkpoint=checkpoint, weights=weights, model_kwargs=model_kwargs,
                        epochs=epochs, max_test_subjects=max_test_subjects)
    check_methods_fit_model_file(proto)  # LRP on a TorchScript file: named before any data is read
    dev = resolve_device(device or proto.run.device)
    rank, world = init_distributed(dev)
    ctx = RunContext(proto, RunDir(out_dir), dev, progress or Progress(), rank=rank, world=world)
    torch.manual_seed(proto.run.seed)
    t0 = time.perf_counter()
    ctx = prepare_data(ctx)
    if proto.kind == "reference":
        from .stages.occlusion_reference import check_claims

        check_claims(ctx)  # the data's own atlas names, before a model is trained
    prov = provenance(dev, protocol_hash=proto.content_hash(), manifest_hash=ctx.manifest_hash,
                      seeds={"run": proto.run.seed, "statistics": proto.statistics.seed,
                             "cohort": proto.data.cohort.seed})
    prov["world_size"] = world
    if rank == 0:
        _say_what_changed(ctx.rd.root / "run.json", prov)
        atomic_write_json(ctx.rd.root / "run.json", {"protocol": proto.model_dump(mode="json"),
                                                       "provenance": prov})
    if stop_after == "data":
        return RunResult(ctx.rd.root, None, None, 0)
    tasks = build_tasks(ctx)
    if stop_after == "tasks":
        return RunResult(ctx.rd.root, None, None, 0)
    store = rank0_first(ctx, lambda: load_store(ctx, tasks))
    if stop_after == "store":
        return RunResult(ctx.rd.root, None, None, 0)
    if proto.kind == "reference":
        return _reference_run(ctx, tasks, store, prov, t0, stop_after=stop_after, report=report)
    runs = _seed_runs(ctx, tasks, store, stop_after)
    if stop_after in ("train", "attribute"):
        return RunResult(ctx.rd.root, None, None, 0)
    ctx.timings["total_s"] = time.perf_counter() - t0
    prov["finished"] = now()
    prov["timings_s"] = ctx.timings
    res = _conclude(ctx, tasks, store, runs, prov, report=report)
    if export is not None and rank == 0:
        from .export import export_run

        export_run(runs[0].ctx, tasks, store, export, runs[0].attributed)
    return res
