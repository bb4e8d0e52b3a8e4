"""Does each task's model fit its task and the protocol's methods? Checked once after the models
are trained or loaded, before any attribution, so a mismatch is named as what it is:

- a classification model with another number of outputs than the task has classes (7 logits for a
  2-class task would otherwise be scored — and reported "at chance" — without a word);
  one logit for a 2-class task is left to the model loader's single-logit rule;
- NaN or Inf outputs on a real test subject (otherwise every map is NaN and the attribution
  method is blamed);
- LRP on a TorchScript model: LRP rewrites the model's layers (canonizers, rules), which a compiled
  ScriptModule does not allow (``requires_grad_ is not supported on ScriptModules``).
"""
from __future__ import annotations

import torch

from ..errors import AttributionError, ModelError

#: Methods that rewrite the model's modules, impossible on a TorchScript ScriptModule.
NEEDS_MODULES = ("lrp",)


def is_torchscript_file(path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``),
    read from its table of contents only: no code is loaded."""
    import zipfile
    from pathlib import Path

    p = Path(path)
    try:
        if not p.is_file() or p.suffix == ".pt2" or not zipfile.is_zipfile(p):
            return False
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def check_methods_fit_model_file(proto) -> None:
    """Before any data is read: LRP with a TorchScript model file (``--model model.ts``) is refused
    by name (the same check runs on the loaded model in :func:`check_models_fit`)."""
    ck = proto.model.checkpoint
    lrp = [m.key for m in proto.methods if m.name in NEEDS_MODULES]
    if ck and lrp and is_torchscript_file(ck):
        raise AttributionError(f"LRP cannot run on a TorchScript model (methods {lrp})", path=ck,
                               expected="an nn.Module whose layers LRP can rewrite",
                               found="a TorchScript archive (requires_grad_ is not supported on ScriptModules)",
                               fix="give the model as --model pkg.module:Class --weights state_dict.pt, or drop "
                                   "LRP from the protocol's methods")


def check_models_fit(ctx, tasks: dict, models: dict, store) -> None:
    """Raise a named error if a task's model does not fit its task or the protocol's methods."""
    from .stages.tasks import scored_subjects

    for tid, task in tasks.items():
        tm = models.get(tid)
        if tm is None:
            continue
        model, where = tm.model, str(tm.checkpoint)
        if isinstance(model, torch.jit.ScriptModule):
            lrp = [m.key for m in ctx.protocol.methods if m.name in NEEDS_MODULES]
            if lrp:
                raise AttributionError(
                    f"LRP cannot run on a TorchScript model (task {tid!r}, methods {lrp})", path=where,
                    expected="an nn.Module whose layers LRP can rewrite",
                    found="a torch.jit.ScriptModule (requires_grad_ is not supported on ScriptModules)",
                    fix="give the model as --model pkg.module:Class --weights state_dict.pt, or drop LRP from "
                        "the protocol's methods")
        ids = scored_subjects(ctx, task)[:1] or list(task.subject_ids[:1])
        if not ids:
            continue
        x = store.batch(ids, ctx.device)["image"]
        with torch.no_grad():
            out = model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            continue  # the shape check (models.byo.check_input_shape) names other outputs
        n = out.shape[1] if out.ndim == 2 else 1
        if task.kind == "classification" and n != task.n_classes and not (n == 1 and task.n_classes == 2):
            raise ModelError(f"the model has {n} outputs but task {tid!r} has {task.n_classes} classes", path=where,
                             expected=f"(B, {task.n_classes}) logits, one per class of the task",
                             found=f"output shape {tuple(out.shape)}",
                             fix=f"use a model built for {task.n_classes} classes (or the task it was trained for)")
        if task.kind == "regression" and n != 1:
            raise ModelError(f"the model has {n} outputs but task {tid!r} is a regression", path=where,
                             expected="(B, 1): one predicted value", found=f"output shape {tuple(out.shape)}",
                             fix="use a model with a single output for this task")
        if not torch.isfinite(out).all():
            raise ModelError(f"the model's outputs are not finite on test subject {ids[0]!r} (task {tid!r})",
                             path=where, expected="finite logits", found=f"{out.flatten()[:4].tolist()}",
                             fix="the model is broken (NaN/Inf weights, a diverged training): retrain it or "
                                 "check its weights; no attribution method can explain NaN outputs")


__all__ = ["check_models_fit", "check_methods_fit_model_file", "is_torchscript_file"]
