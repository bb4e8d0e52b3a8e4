"""Stage ``train``: one model per task, trained on the task's training split (or the user's model,
loaded and evaluated on the test split).

The key holds the task, the model and training parameters (with the ``configs/`` YAML they name),
the manifest's content hash and the grid. Every model, trained or loaded, carries a fingerprint
of its weights and source files: the later stages key on it, so a model file replaced at the same
path is never mixed with the old one's results. Training resumes from ``last.pt``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import ConfigError
from ..context import RunContext
from ..distributed import barrier, rank0_first, use_ddp
from ..rundir import atomic_write_json, read_json, stable_hash
from ..store import SubjectStore
from .tasks import is_null

from ..model_configs import CONFIG_DIR, config_yaml  # noqa: F401 (re-exported: the runner, the tests)


@dataclass
class TrainedModel:
    model: torch.nn.Module
    metrics: dict
    checkpoint: Path
    #: content hash of the weights and of every file the model came from: later stages key on
    #: it, so a model file replaced at the same path is never mixed with the old one's results
    fingerprint: str = ""


def train_stage(ctx: RunContext, task_id: str, task, store: SubjectStore) -> TrainedModel:
    """Train (or load) the task's model. Under torchrun with DDP every rank trains and rank 0
    writes the checkpoint; otherwise rank 0 trains and the others load its checkpoint."""
    if use_ddp(ctx) and not (ctx.protocol.model.checkpoint and not is_null(task_id)):
        barrier(ctx)  # every rank sees the same "done" state before anyone trains
        return _train_or_load(ctx, task_id, task, store)
    return rank0_first(ctx, lambda: _train_or_load(ctx, task_id, task, store))


def _train_or_load(ctx: RunContext, task_id: str, task, store: SubjectStore) -> TrainedModel:
    from ...models import MODELS, evaluate, load_checkpoint, save_checkpoint, train_model
    from ...models.train import TrainConfig

    m = ctx.protocol.model
    n_out = task.n_classes if task.kind == "classification" else 1
    if m.checkpoint and not is_null(task_id):
        from ...models.binary import SingleLogitBinary, adapt_classifier
        from ...models.byo import check_input_shape, load_user_model

        # A neuroxai checkpoint, a TorchScript/torch.export file, or 'pkg.module:Class' + weights.
        model = load_user_model(m.checkpoint, state_dict=m.weights, kwargs_yaml=m.kwargs, device=ctx.device)
        out_shape = check_input_shape(model, (1, *store.shape))
        fp = model_fingerprint(model, [f for f in (m.checkpoint, m.weights, m.kwargs) if f],
                               extra=[m.checkpoint])
        # one logit per subject on a binary task: class 1 explains z, class 0 explains −z
        model = adapt_classifier(model, out_shape, task.kind, task.n_classes)
        if isinstance(model, SingleLogitBinary):
            fp = stable_hash([fp, "single_logit"])[:16]
        model.eval()
        test = TaskDataset(store, task, "test")
        metrics = evaluate(model, test, task.kind, device=ctx.device)
        return TrainedModel(model, metrics, Path(m.checkpoint), fp)
    params = {**config_yaml("models", m.config), **m.params}
    train_cfg = {**config_yaml("training", m.training_config), **m.training}
    key = stable_hash([task_id, task.summary(), m.model_dump(), params, train_cfg, ctx.manifest_hash, ctx.grid])
    d = ctx.rd.stage("train", key)
    ckpt = d / "model.pt"
    if not ctx.rd.is_done("train", key):
        # Initial weights depend only on the seed and the task, not on what ran before.
        torch.manual_seed(int(stable_hash([train_cfg.get("seed", 0), task_id]), 16) % (2 ** 63))
        model = MODELS[m.architecture](in_channels=1, n_outputs=n_out, **params)
        cfg = TrainConfig(kind=task.kind, device=str(ctx.device), **train_cfg)
        train_ds, val_ds = TaskDataset(store, task, "train"), TaskDataset(store, task, "val")
        t = time.perf_counter()
        bar = ctx.progress.task(f"train {m.architecture} on {task_id}", cfg.epochs)
        res = train_model(model, train_ds, val_ds, cfg, checkpoint_path=d / "last.pt", resume=True,
                          progress=lambda *a, **k: bar.advance(), distributed=use_ddp(ctx))
        ctx.timings[f"train_{task_id}_s"] = time.perf_counter() - t
        model = res.model if hasattr(res, "model") else model
        model.eval()
        if ctx.rank == 0:  # with DDP all ranks trained; one writes
            metrics = evaluate(model, TaskDataset(store, task, "test"), task.kind, device=ctx.device)
            save_checkpoint(ckpt, model, {"architecture": m.architecture, "config": {"in_channels": 1,
                            "n_outputs": n_out, **params}, "task": task_id, "metrics": metrics,
                            "manifest_hash": ctx.manifest_hash, "seed": train_cfg.get("seed", 0),
                            "world_size": ctx.world if use_ddp(ctx) else 1})
            atomic_write_json(d / "metrics.json", metrics)
            ctx.rd.mark_done("train", key)
        if use_ddp(ctx):
            barrier(ctx)
    model, meta = load_checkpoint(ckpt, device=ctx.device)
    model.eval()
    # The weights (and the class's source) decide the outputs; the checkpoint file's bytes also hold
    # torch.save's archive name (the temporary file's, with a pid), which differs between runs.
    return TrainedModel(model, read_json(d / "metrics.json"), ckpt, model_fingerprint(model))


def model_fingerprint(model: torch.nn.Module, files=(), extra=()) -> str:
    """sha256 of the model's tensors (names, dtypes, shapes, bytes), its class's source file and
    ``files``' contents: what decides the model's outputs, not where it is stored."""
    import hashlib
    import inspect

    from ...data.manifest import file_digest

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


class TaskDataset(torch.utils.data.Dataset):
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
