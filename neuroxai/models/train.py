"""Training and evaluation: seeded, resumable, classification or regression.

Determinism: every epoch reseeds its own random streams from ``(seed, epoch)`` — the DataLoader's
shuffling generator, dropout (the global torch RNG, forked so the caller's RNG is left as it was)
and augmentation. On CPU the same seed and the same model initialization therefore give
bit-identical weights, and a run resumed from the checkpoint of epoch k draws exactly what an
uninterrupted run draws in epochs k+1.. . (On CUDA, cuDNN autotuning and atomics make runs close
but not bit-identical.)

Across CPUs: the rounding of a CPU run depends on the number of intra-op threads (oneDNN's
convolution weight gradients and the reductions split their sums by thread) and on the instruction
set the kernels are chosen for (oneDNN and MKL pick AVX2 / AVX-512 / AMX code at run time). On CPU
training therefore runs with a fixed ``threads`` (1 by default; the caller's setting is restored
afterwards), so the weights are bit-identical on any core count of the same instruction set.
``torch.use_deterministic_algorithms`` changes nothing here (it concerns CUDA and scatter-type
kernels). Between instruction sets the last bits differ and training amplifies them (demo: test
AUROC within 0.011): see ``docs/reproducibility.md`` for the measurements and for the environment
(``ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2``) that makes AVX2 and AVX-512 machines agree bit for bit.

Resume: after every epoch the model, optimizer, scheduler, RNG and early-stopping state are
written atomically (:func:`neuroxai.atomic.atomic_write`) to ``checkpoint_path``; a killed run restarted
with ``resume=True`` continues from the last finished epoch and ends with the same weights.

Scale-out: with ``distributed=True`` under an initialized process group (``torchrun``), the model
is trained with ``DistributedDataParallel``. Every rank draws the same global permutation and
takes its slice of each global batch of ``batch_size`` subjects; each rank's loss is weighted by
its share of the global batch, so the averaged gradient is the gradient of the global batch's mean
loss and the loss curve equals a single process's with the same ``batch_size`` (within float
tolerance). BatchNorm layers become ``SyncBatchNorm`` on CUDA (statistics of the global batch);
PyTorch has no CPU SyncBatchNorm, so on CPU (gloo) they use each rank's slice — equivalent only for
models without BatchNorm. Dropout masks are drawn per rank. Rank 0 writes the checkpoints.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from .._memory import trim
from ..atomic import atomic_write
from ..errors import CheckpointError, ConfigError, ModelError

log = logging.getLogger(__name__)

_RESUME_FORMAT = "neuroxai-train-state-1"


class TrainConfig(BaseModel):
    """Training parameters (``model.training`` in a protocol, ``configs/training/*.yaml``).

    AdamW (Loshchilov & Hutter 2019) with a one-cycle (Smith & Topin 2019) or cosine schedule
    stepped per batch; ``early_stopping`` is the patience in epochs on the validation loss
    (0 = off; the best weights are kept). ``amp="auto"`` is bf16 autocast on CUDA and fp32 on CPU.
    ``augment`` adds random translations of up to ``augment_shift`` voxels (zero filled); there
    are no flips, because known-signal tasks can be lateralized and a flip would move the signal.
    ``threads`` fixes ``torch.set_num_threads`` while training on CPU (restored afterwards): the
    rounding of convolution gradients depends on it, so a fixed count gives bit-identical weights
    across core counts; ``None`` keeps the caller's setting (e.g. all cores: faster, but the
    weights then depend on the machine). Ignored on CUDA.
    Unknown keys are a ``ConfigError`` naming the key and the allowed ones.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["classification", "regression"] = "classification"
    device: str = "cpu"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    early_stopping: int = Field(5, ge=0, description="patience in epochs on validation loss (0 = off)")
    seed: int = 0
    amp: Literal["auto", "bf16", "none"] = "auto"
    compile: bool = False
    augment: bool = False
    augment_shift: int = Field(2, ge=0, description="max translation in voxels when augment is on")
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(1, ge=1, description="intra-op CPU threads while training on CPU; the "
                                "same number gives the same weights on any core count (None: "
                                "torch's current setting, faster but machine-dependent)")

    def __init__(self, **kw):
        bad = sorted(set(kw) - set(type(self).model_fields))
        if bad:
            allowed = sorted(type(self).model_fields)
            raise ConfigError(f"unknown training parameter(s) {bad}", expected=allowed, found=bad,
                              fix=f"use only {allowed} in model.training / the training config")
        try:
            super().__init__(**kw)
        except ValidationError as exc:
            msgs = [f"{'.'.join(str(x) for x in e['loc'])}={e.get('input')!r}: {e['msg']}" for e in exc.errors()]
            raise ConfigError(f"bad training parameter value(s): {'; '.join(msgs)}",
                              expected="see TrainConfig fields", found=msgs,
                              fix="fix model.training / the training config") from None

    def fingerprint(self) -> dict:
        """The fields that change the optimization (a resume checkpoint must match them)."""
        # threads, like device, changes the rounding, not the optimization
        return self.model_dump(exclude={"device", "num_workers", "compile", "threads"})


@dataclass
class TrainResult:
    """``model`` (eval mode, best weights when early stopping), per-epoch ``history`` records
    ``{epoch, train_loss, val_loss, val_metric, lr, seconds}`` and the 1-based ``best_epoch``."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0


def _collate(items):
    return {"image": torch.stack([torch.as_tensor(it["image"]) for it in items]),
            "label": torch.stack([torch.as_tensor(it["label"]) for it in items])}


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return (int(seed) * 1_000_003 + epoch * 101 + stream) % (2 ** 63)


def _target(y: torch.Tensor, kind: str) -> torch.Tensor:
    return y.long() if kind == "classification" else y.float().reshape(-1)


def _loss_fn(kind: str):
    return nn.CrossEntropyLoss() if kind == "classification" else nn.MSELoss()


def _outputs(model, x: torch.Tensor, kind: str) -> torch.Tensor:
    y = model(x)
    if kind == "classification":
        if y.ndim != 2 or y.shape[1] < 2:
            raise ModelError("a classification model must return (B, n_classes ≥ 2) logits",
                             expected="(B, ≥2)", found=tuple(y.shape),
                             fix="build the model with n_outputs = number of classes")
        return y
    return y.reshape(len(x), -1)[:, 0] if y.ndim > 1 and y.shape[-1] == 1 else y.reshape(-1)


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random integer translation per sample, zero filled: ``(B,C,D,H,W)`` -> same shape."""
    if max_shift <= 0:
        return x
    B, _, *sp = x.shape
    s = max_shift
    xp = nn.functional.pad(x, (s, s, s, s, s, s))
    off = torch.randint(0, 2 * s + 1, (B, 3), generator=gen).tolist()
    return torch.stack([xp[b, :, o[0]:o[0] + sp[0], o[1]:o[1] + sp[1], o[2]:o[2] + sp[2]]
                        for b, o in enumerate(off)])


def _dist() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialized default process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GlobalBatches:
    """Batch sampler: the global batches of a shuffled epoch (``torch.randperm`` from ``gen``,
    exactly as ``DataLoader(shuffle=True, generator=gen)``), of which this rank takes its
    contiguous slice (``torch.tensor_split`` into ``world`` parts). Yields ``(indices, share)``
    pairs via ``batches()``; as a sampler, the indices only.

    The last global batch is dropped when a rank would get fewer than 2 subjects of it (BatchNorm
    in training mode needs 2), i.e. when it holds fewer than ``2 × world`` and fewer than
    ``batch_size`` subjects; with one process that is the familiar "last batch of one" case."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator, rank: int = 0, world: int = 1):
        self.n, self.bs, self.gen, self.rank, self.world = n, batch_size, gen, rank, world

    def _global(self) -> list[list[int]]:
        perm = torch.randperm(self.n, generator=self.gen).tolist()
        out = [perm[i:i + self.bs] for i in range(0, self.n, self.bs)]
        if len(out) > 1 and len(out[-1]) < self.bs and len(out[-1]) < 2 * self.world:
            out.pop()
        return out

    def batches(self):
        for g in self._global():
            part = torch.tensor_split(torch.tensor(g), self.world)[self.rank].tolist()
            yield part, len(part) / len(g)

    def __iter__(self):
        return (b for b, _ in self.batches())

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.bs)
        keep_rest = rest and (rest >= 2 * self.world or full == 0)
        return full + (1 if keep_rest else 0)


def _read_resume(ck: Path, cfg: TrainConfig) -> dict:
    try:
        st = torch.load(ck, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError("cannot read the training-resume checkpoint", path=ck,
                              found=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                              fix="delete it to train from scratch, or pass resume=False") from None
    if not isinstance(st, dict) or st.get("format") != _RESUME_FORMAT:
        raise CheckpointError("not a neuroxai training-resume checkpoint", path=ck,
                              expected=f"format {_RESUME_FORMAT!r}",
                              found=st.get("format") if isinstance(st, dict) else type(st).__name__,
                              fix="point checkpoint_path at a fresh file or delete this one")
    if st["config"] != cfg.fingerprint():
        diff = sorted(k for k in set(st["config"]) | set(cfg.fingerprint())
                      if st["config"].get(k) != cfg.fingerprint().get(k))
        raise CheckpointError("the resume checkpoint was written with other training parameters", path=ck,
                              expected={k: cfg.fingerprint().get(k) for k in diff},
                              found={k: st["config"].get(k) for k in diff},
                              fix="delete it (or pass resume=False) to start again with the new parameters")
    return st


def train_model(model: nn.Module, train_ds, val_ds, cfg: TrainConfig, *,
                checkpoint_path: str | Path | None = None, resume: bool = True,
                progress: Callable | None = None, distributed: bool = False) -> TrainResult:
    """Train ``model`` with AdamW on ``train_ds``; validate on ``val_ds`` after every epoch.

    Datasets yield ``{"image": (1,D,H,W) float, "label": long scalar (classification) or float}``.
    Loss: cross-entropy on ``(B, n_classes)`` logits, or MSE on ``(B,)`` / ``(B,1)`` outputs.
    With ``checkpoint_path`` the full training state is written atomically after every epoch, and
    ``resume=True`` continues from it (a finished run returns at once). ``progress(epoch,
    n_epochs, train_loss=, val_loss=, val_metric=)`` is called after each epoch (``val_metric``:
    AUROC for binary classification, accuracy for multi-class, MAE for regression).
    ``distributed=True``: every rank of the initialized process group calls this together and
    trains with DDP (see the module doc); without it the process group, if any, is ignored.
    On CPU it runs with ``cfg.threads`` intra-op threads (see ``TrainConfig``).
    Returns a ``TrainResult`` with the model in eval mode.
    """
    threads = cfg.threads if torch.device(cfg.device).type == "cpu" else None
    with _intra_op_threads(threads):
        return _train(model, train_ds, val_ds, cfg, checkpoint_path=checkpoint_path, resume=resume,
                      progress=progress, distributed=distributed)


@contextmanager
def _intra_op_threads(n: int | None):
    """``torch.set_num_threads(n)`` inside the block, the previous count after it (``None``: no-op)."""
    if n is None:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _train(model: nn.Module, train_ds, val_ds, cfg: TrainConfig, *, checkpoint_path, resume,
           progress, distributed) -> TrainResult:
    dev = torch.device(cfg.device)
    model.to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and dev.type == "cuda")
    n_train = len(train_ds)
    if n_train == 0:
        raise ModelError("the training split is empty", expected="≥ 1 subject", found=0,
                         fix="check the task's train/val/test split fractions and the cohort size")
    gen = torch.Generator()
    rank, world = _dist() if distributed else (0, 1)
    sampler = _GlobalBatches(n_train, cfg.batch_size, gen, rank, world)
    if world > 1 and cfg.batch_size < 2 * world:
        raise ConfigError("the global batch is too small for this many ranks",
                          expected=f"batch_size ≥ {2 * world} (2 subjects per rank)", found=cfg.batch_size,
                          fix="raise model.training.batch_size or use fewer processes")
    batch_shares: list[float] = []
    loader = torch.utils.data.DataLoader(train_ds, batch_sampler=_ShareRecorder(sampler, batch_shares),
                                         collate_fn=_collate, num_workers=cfg.num_workers,
                                         pin_memory=dev.type == "cuda")
    ck = Path(checkpoint_path) if checkpoint_path else None
    st = _read_resume(ck, cfg) if (ck is not None and resume and ck.is_file()) else None
    if st is not None:
        model.load_state_dict(st["model"])
    train_net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        if dev.type == "cuda":
            # on a copy: the conversion replaces the BatchNorm modules of the model it is given
            train_net = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
        elif any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in model.modules()):
            log.warning("DDP on CPU: BatchNorm statistics are per rank (PyTorch has no CPU "
                        "SyncBatchNorm); the result differs from one process with the same batch")
        train_net = DDP(train_net, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.AdamW(train_net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, len(sampler)) * cfg.epochs
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    fwd = torch.compile(train_net) if cfg.compile else train_net
    loss_fn = _loss_fn(cfg.kind)
    start, history, best, best_state, best_epoch, bad, stopped = 0, [], math.inf, None, 0, 0, False
    if st is not None:
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start, history, best, best_state = st["epoch"], st["history"], st["best"], st["best_state"]
        best_epoch, bad, stopped = st["best_epoch"], st["bad"], st["stopped"]
        log.info("resumed training from %s after epoch %d", ck, start)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for epoch in range(start, cfg.epochs):
            if stopped:
                break
            t0 = time.perf_counter()
            gen.manual_seed(_epoch_seed(cfg.seed, epoch, 0))
            torch.manual_seed(_epoch_seed(cfg.seed, epoch, 1) + rank)  # dropout (CPU and CUDA streams)
            aug_gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, 2))
            train_net.train()
            tot, n = 0.0, 0
            batch_shares.clear()
            for i, b in enumerate(loader):
                x = b["image"].float()
                if cfg.augment:
                    x = _shift(x, cfg.augment_shift, aug_gen)
                x = x.to(dev, non_blocking=True)
                y = _target(b["label"], cfg.kind).to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                    out = _outputs(fwd, x, cfg.kind)
                loss = loss_fn(out.float(), y)
                opt.zero_grad(set_to_none=True)
                # DDP averages the ranks' gradients: weighting by the rank's share of the global
                # batch makes that the gradient of the global batch's mean loss (×1.0 alone).
                (loss * (batch_shares[i] * world) if world > 1 else loss).backward()
                opt.step()
                sched.step()
                tot += float(loss.detach()) * len(x)
                n += len(x)
                del x, y, out, loss, b
                trim()  # the peak must not creep up with the number of batches (see neuroxai._memory)
            if world > 1:
                import torch.distributed as dist

                agg = torch.tensor([tot, float(n)], dtype=torch.float64, device=dev)
                dist.all_reduce(agg)
                tot, n = float(agg[0]), int(agg[1])
            if train_net is not model and dev.type == "cuda":
                model.load_state_dict(train_net.module.state_dict())
            val_loss, val_metric = _validate(model, val_ds, cfg, dev, use_bf16)
            rec = {"epoch": epoch + 1, "train_loss": tot / max(n, 1), "val_loss": val_loss,
                   "val_metric": val_metric, "lr": float(sched.get_last_lr()[0]),
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            if cfg.early_stopping and not math.isnan(val_loss):
                if val_loss < best - 1e-6:
                    best, best_epoch, bad = val_loss, epoch + 1, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                else:
                    bad += 1
                stopped = bad >= cfg.early_stopping
            if ck is not None and rank == 0:
                state = {"format": _RESUME_FORMAT, "config": cfg.fingerprint(),
                         "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                         "generator": gen.get_state(), "epoch": epoch + 1, "history": history,
                         "best": best, "best_state": best_state, "best_epoch": best_epoch,
                         "bad": bad, "stopped": stopped}
                atomic_write(ck, write=lambda tmp: torch.save(state, tmp))
            if world > 1:
                import torch.distributed as dist

                dist.barrier()  # the checkpoint of this epoch is on disk before any rank goes on
            if progress:
                progress(epoch + 1, cfg.epochs, **{k: rec[k] for k in ("train_loss", "val_loss", "val_metric")})
            if stopped:
                log.info("early stopping after epoch %d (best %d)", epoch + 1, best_epoch)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    model.eval()
    return TrainResult(model, history, best_epoch)


class _ShareRecorder:
    """Wraps ``_GlobalBatches`` as a DataLoader batch sampler and records each batch's share of
    its global batch in ``shares`` (in batch order; the main process iterates the sampler even
    with workers)."""

    def __init__(self, sampler: _GlobalBatches, shares: list):
        self.sampler, self.shares = sampler, shares

    def __iter__(self):
        for idx, share in self.sampler.batches():
            self.shares.append(share)
            yield idx

    def __len__(self):
        return len(self.sampler)


@torch.no_grad()
def _validate(model, ds, cfg: TrainConfig, dev, use_bf16: bool) -> tuple[float, float]:
    if ds is None or len(ds) == 0:
        return float("nan"), float("nan")
    model.eval()
    outs, labs = [], []
    for b in torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, collate_fn=_collate):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            outs.append(_outputs(model, b["image"].float().to(dev), cfg.kind).float().cpu())
        labs.append(_target(b["label"], cfg.kind))
    out, lab = torch.cat(outs), torch.cat(labs)
    loss = float(_loss_fn(cfg.kind)(out, lab))
    if cfg.kind == "regression":
        return loss, float((out - lab).abs().mean())
    if out.shape[1] == 2 and len(torch.unique(lab)) == 2:
        return loss, float(_auroc(lab.numpy(), torch.softmax(out, 1)[:, 1].numpy()[None])[0])
    return loss, float((out.argmax(1) == lab).float().mean())


@torch.no_grad()
def predict(model: nn.Module, ds, kind: str, device: str = "cpu", batch_size: int = 16):
    """``(outputs, labels)`` as numpy: class probabilities ``(N, C)`` (sigmoid of the logit for a
    single-logit binary model, see :mod:`neuroxai.models.binary`) or values ``(N,)``."""
    from .binary import class_probabilities

    model.eval()
    dev = torch.device(device)
    outs, labs = [], []
    for b in torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=_collate):
        y = _outputs(model, b["image"].float().to(dev), kind).float()
        outs.append(class_probabilities(model, y).cpu() if kind == "classification" else y.cpu())
        labs.append(_target(b["label"], kind))
    return torch.cat(outs).numpy(), torch.cat(labs).numpy()


def _auroc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Binary AUROC of each row of ``scores: (R, n)`` against ``labels: (n,)`` or ``(R, n)``
    (Mann–Whitney U / (n₁n₀), ties count ½; Hanley & McNeil 1982). NaN where a row lacks a class."""
    from scipy.stats import rankdata

    labels = np.broadcast_to(np.asarray(labels), scores.shape).astype(bool)
    ranks = rankdata(scores, axis=1)
    n1 = labels.sum(1)
    n0 = labels.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * labels).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def evaluate(model: nn.Module, ds, kind: str, device: str = "cpu", n_boot: int = 1000, seed: int = 0) -> dict:
    """Held-out performance with a percentile bootstrap CI over subjects (Efron & Tibshirani 1993).

    Classification: ``auroc`` (binary: class-1 probability; multi-class: one-vs-rest macro) with
    ``auroc_ci_low/high``, ``accuracy``, ``balanced_accuracy``. Regression: ``mae``, ``r2`` with
    ``r2_ci_low/high``. ``at_chance`` is True when the AUROC CI includes 0.5, or R² ≤ 0 or its CI
    includes 0, or there are too few test subjects (< 4, or one class only): explanations of such a
    model cannot be validated. Bootstrap resamples lacking a class are dropped. Values are plain
    Python floats/ints/bools (``None`` where undefined), so the dict is JSON-serializable.
    """
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    out, lab = predict(model, ds, kind, device)
    n = len(lab)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_boot, n)) if n else np.zeros((0, 0), int)
    res: dict = {"n_test": int(n)}
    if kind == "classification":
        pred = out.argmax(1) if n else out
        acc = float((pred == lab).mean()) if n else None
        if n < 4 or len(np.unique(lab)) < 2:
            return {**res, "auroc": None, "auroc_ci_low": None, "auroc_ci_high": None, "accuracy": acc,
                    "balanced_accuracy": None, "at_chance": True}
        if out.shape[1] == 2:
            auc = float(_auroc(lab, out[None, :, 1])[0])
            boots = _auroc(lab[idx], out[idx, 1])
            boots = boots[np.isfinite(boots)]
        else:
            auc = float(roc_auc_score(lab, out, multi_class="ovr", labels=np.arange(out.shape[1])))
            boots = np.array([roc_auc_score(lab[i], out[i], multi_class="ovr", labels=np.arange(out.shape[1]))
                              for i in idx if len(np.unique(lab[i])) == out.shape[1]])
        lo, hi = (np.quantile(boots, [0.025, 0.975]) if len(boots) else (0.0, 1.0))
        res.update(auroc=auc, auroc_ci_low=float(lo), auroc_ci_high=float(hi), accuracy=acc,
                   balanced_accuracy=float(balanced_accuracy_score(lab, pred)), at_chance=bool(lo <= 0.5 <= hi))
        return res
    if n < 4:
        return {**res, "mae": None, "r2": None, "r2_ci_low": None, "r2_ci_high": None, "at_chance": True}
    out = out.astype(np.float64)
    lab = lab.astype(np.float64)

    def r2(y, p):
        ss_tot = ((y - y.mean(-1, keepdims=True)) ** 2).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1 - ((y - p) ** 2).sum(-1) / ss_tot

    r2_full = float(r2(lab, out))
    boots = r2(lab[idx], out[idx])
    boots = boots[np.isfinite(boots)]
    lo, hi = (float(v) for v in np.quantile(boots, [0.025, 0.975])) if len(boots) else (None, None)
    res.update(mae=float(np.abs(lab - out).mean()), r2=r2_full if math.isfinite(r2_full) else None,
               r2_ci_low=lo, r2_ci_high=hi,
               at_chance=bool(not math.isfinite(r2_full) or r2_full <= 0 or lo is None or lo <= 0))
    return res
