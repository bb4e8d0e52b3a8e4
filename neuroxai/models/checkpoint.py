"""One-file checkpoints, loaded with ``torch.load(weights_only=True)`` only.

A checkpoint holds the state_dict, the architecture name and its config, and metadata (task,
metrics, manifest hash, seed, package versions). Nothing in it is executable, so a checkpoint
from someone else cannot run code on load.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .nets import MODELS


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (set, tuple)):
        return list(v)
    return str(v)


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write ``model``'s weights + ``meta`` (must hold ``architecture`` and ``config``) atomically."""
    import neuroxai

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for k in ("architecture", "config"):
        if k not in meta:
            raise CheckpointError(f"checkpoint metadata needs {k!r}", path=path, expected=["architecture", "config"],
                                  found=sorted(meta))
    obj = {"format": "neuroxai-checkpoint-1",
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
           "architecture": meta["architecture"], "config": json.loads(json.dumps(dict(meta["config"]), default=_plain)),
           # JSON round trip: metadata must be plain data (numpy scalars would need pickle).
           "meta": json.loads(json.dumps({k: v for k, v in meta.items() if k not in ("architecture", "config")},
                                         default=_plain)),
           "versions": {"torch": str(torch.__version__), "neuroxai": getattr(neuroxai, "__version__", "0"),
                        "python": platform.python_version()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, read safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path=path, expected="a .pt file", found="no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            "the checkpoint needs pickle to load (it stores Python objects, not just tensors); neuroxai "
            "loads weights only, so a file cannot run code", path=path,
            expected="a state_dict-only file", found=f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
            fix="in trusted code: m = torch.load(f, weights_only=False); then "
                "neuroxai.models.save_checkpoint(out, m, {'architecture': ..., 'config': {...}}) or "
                "torch.save(m.state_dict(), out) and load it with `--model module:Class`") from None
    if not isinstance(obj, dict):
        raise CheckpointError("unexpected checkpoint content", path=path, expected="a dict", found=type(obj).__name__)
    return obj


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a neuroxai checkpoint; returns ``(model in eval mode, metadata)``."""
    obj = read_checkpoint(path)
    if obj.get("format") != "neuroxai-checkpoint-1":
        raise CheckpointError("not a neuroxai checkpoint", path=path,
                              expected="keys format/state_dict/architecture/config", found=sorted(obj)[:8],
                              fix="for a bare state_dict use `--model package.module:Class --weights FILE`")
    model = MODELS[obj["architecture"]](**obj["config"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError("the weights do not fit the architecture", path=path,
                              expected=f"{obj['architecture']} with {obj['config']}",
                              found=str(exc).splitlines()[0]) from None
    meta = {**obj["meta"], "architecture": obj["architecture"], "config": obj["config"],
            "versions": obj.get("versions", {})}
    return model.to(device).eval(), meta
