"""Training and evaluation: seeded, resumable, classification or regression.

Determinism: on CPU the same seed gives bit-identical weights (seeded init, seeded DataLoader
order, no nondeterministic kernels). Resume: every epoch writes model + optimizer + scheduler +
RNG + early-stopping state atomically; resuming replays nothing and continues from the next epoch,
so an interrupted run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Training parameters (``model.training`` in a protocol; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["classification", "regression"] = "classification"
    device: str = "cpu"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    early_stopping: int = Field(0, ge=0, description="patience in epochs (0 = off)")
    seed: int = 0
    amp: Literal["auto", "bf16", "none"] = "auto"
    compile: bool = False
    augment: bool = False
    num_workers: int = Field(0, ge=0)

    def __init__(self, **kw):
        try:
            super().__init__(**kw)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"bad training parameter {key!r}: {err['msg']}", expected=sorted(
                TrainConfig.model_fields), found=err.get("input"),
                fix="fix model.training in the protocol") from None


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0


def _collate(items):
    return {"image": torch.stack([it["image"] for it in items]),
            "label": torch.stack([torch.as_tensor(it["label"]) for it in items])}


def _loss(kind: str):
    return nn.CrossEntropyLoss() if kind == "classification" else nn.MSELoss()


def _out(model, x, kind):
    y = model(x)
    return y if kind == "classification" else y.reshape(-1)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_model(model: nn.Module, train_ds, val_ds, cfg: TrainConfig, *,
                checkpoint_path: str | Path | None = None, resume: bool = True,
                progress: Callable | None = None) -> TrainResult:
    """Train ``model`` on ``train_ds`` (items ``{"image": (1,D,H,W), "label"}``) with AdamW.

    Early stopping (``cfg.early_stopping`` > 0) keeps the weights of the best validation loss.
    With ``checkpoint_path``, state is saved after every epoch and ``resume=True`` continues
    from it. ``progress(epoch, n_epochs, train_loss=..., val_loss=...)`` is called per epoch.
    """
    dev = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model.to(dev)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and dev.type == "cuda")
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                                         collate_fn=_collate, num_workers=cfg.num_workers,
                                         pin_memory=dev.type == "cuda", drop_last=len(train_ds) > cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, len(loader)) * cfg.epochs
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    fwd = torch.compile(model) if cfg.compile else model
    loss_fn = _loss(cfg.kind)
    start, history, best, best_state, bad = 0, [], math.inf, None, 0
    ck = Path(checkpoint_path) if checkpoint_path else None
    if ck is not None and resume and ck.is_file():
        st = torch.load(ck, weights_only=True, map_location="cpu")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        start, history, best, best_state, bad = st["epoch"], st["history"], st["best"], st["best_state"], st["bad"]
        log.info("resumed training from %s at epoch %d", ck, start)
    for epoch in range(start, cfg.epochs):
        model.train()
        tot, n = 0.0, 0
        for b in loader:
            x = b["image"].to(dev, non_blocking=True)
            y = b["label"].to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(_out(fwd, x, cfg.kind).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(x)
            n += len(x)
        val_loss = _val_loss(model, val_ds, cfg, dev) if val_ds is not None and len(val_ds) else float("nan")
        rec = {"epoch": epoch + 1, "train_loss": tot / max(n, 1), "val_loss": val_loss}
        history.append(rec)
        if cfg.early_stopping and not math.isnan(val_loss):
            if val_loss < best - 1e-6:
                best, bad = val_loss, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
        if ck is not None:
            _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(), "generator": gen.get_state(),
                          "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "history": history,
                          "best": best, "best_state": best_state, "bad": bad}, ck)
        if progress:
            progress(epoch + 1, cfg.epochs, **{k: v for k, v in rec.items() if k != "epoch"})
        if cfg.early_stopping and bad >= cfg.early_stopping:
            log.info("early stopping at epoch %d", epoch + 1)
            break
    best_epoch = len(history)
    if cfg.early_stopping and best_state is not None:
        model.load_state_dict(best_state)
        best_epoch = int(np.argmin([h["val_loss"] for h in history])) + 1
    model.eval()
    return TrainResult(model, history, best_epoch)


@torch.no_grad()
def _val_loss(model, ds, cfg, dev) -> float:
    model.eval()
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, collate_fn=_collate)
    loss_fn, tot, n = _loss(cfg.kind), 0.0, 0
    for b in loader:
        x, y = b["image"].to(dev), b["label"].to(dev)
        tot += float(loss_fn(_out(model, x, cfg.kind).float(), y)) * len(x)
        n += len(x)
    return tot / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, ds, kind: str, device: str = "cpu", batch_size: int = 16):
    """``(outputs, labels)`` as numpy: class-1 probability (binary), class probabilities, or values."""
    model.eval()
    dev = torch.device(device)
    outs, labs = [], []
    for b in torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=_collate):
        y = model(b["image"].to(dev)).float()
        outs.append(torch.softmax(y, 1).cpu() if kind == "classification" else y.reshape(-1).cpu())
        labs.append(b["label"])
    return torch.cat(outs).numpy(), torch.cat(labs).numpy()


def evaluate(model: nn.Module, ds, kind: str, device: str = "cpu", n_boot: int = 1000, seed: int = 0) -> dict:
    """Test-split performance with a percentile bootstrap CI over subjects.

    Classification: ``auroc`` (+CI), ``accuracy``, ``balanced_accuracy``; regression: ``mae``,
    ``r2`` (+CI). ``at_chance`` is True when the AUROC CI includes 0.5 (R² CI includes 0, or
    R² ≤ 0): explanations of such a model cannot be validated.
    """
    from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score

    out, lab = predict(model, ds, kind, device)
    n = len(lab)
    rng = np.random.default_rng(seed)
    res: dict = {"n_test": int(n)}
    if kind == "classification":
        pred = out.argmax(1)
        score_fn = (lambda l, o: roc_auc_score(l, o[:, 1])) if out.shape[1] == 2 else (
            lambda l, o: roc_auc_score(l, o, multi_class="ovr"))
        if n < 4 or len(np.unique(lab)) < 2:
            return {**res, "auroc": None, "auroc_ci_low": None, "auroc_ci_high": None, "at_chance": True,
                    "accuracy": float((pred == lab).mean()) if n else None, "balanced_accuracy": None}
        auc = float(score_fn(lab, out))
        boots = []
        for _ in range(n_boot):
            i = rng.integers(0, n, n)
            if len(np.unique(lab[i])) == len(np.unique(lab)):
                boots.append(score_fn(lab[i], out[i]))
        lo, hi = np.quantile(boots, [0.025, 0.975])
        res.update(auroc=auc, auroc_ci_low=float(lo), auroc_ci_high=float(hi),
                   accuracy=float((pred == lab).mean()), balanced_accuracy=float(balanced_accuracy_score(lab, pred)),
                   at_chance=bool(lo <= 0.5))
        return res
    if n < 4:
        return {**res, "mae": None, "r2": None, "r2_ci_low": None, "r2_ci_high": None, "at_chance": True}
    r2 = float(r2_score(lab, out))
    boots = [r2_score(lab[i], out[i]) for i in (rng.integers(0, n, n) for _ in range(n_boot))]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    res.update(mae=float(mean_absolute_error(lab, out)), r2=r2, r2_ci_low=float(lo), r2_ci_high=float(hi),
               at_chance=bool(r2 <= 0 or lo <= 0))
    return res
