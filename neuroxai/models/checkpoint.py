"""One-file model checkpoints, loaded with ``torch.load(weights_only=True)`` only.

A checkpoint is a dict of tensors and plain data::

    {"format": "neuroxai-checkpoint-1", "state_dict": {...}, "architecture": "sfcn",
     "config": {"in_channels": 1, "n_outputs": 2, ...},            # MODELS[architecture](**config)
     "meta": {"task": ..., "metrics": ..., "manifest_hash": ..., "seed": ...},
     "versions": {"torch": ..., "neuroxai": ..., "python": ...}}

Nothing in it is executable, so a checkpoint from someone else cannot run code when loaded.
Writes are atomic (:func:`neuroxai.atomic.atomic_write`: temp file beside it, then a rename): a crash never leaves a
half-written checkpoint under the final name.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write
from ..errors import CheckpointError, NeuroXAIError
from .nets import MODELS

FORMAT = "neuroxai-checkpoint-1"

_CONVERT = ("convert it once, in code you trust: obj = torch.load(path, weights_only=False); "
            "model = obj if isinstance(obj, torch.nn.Module) else <rebuild the model and load obj>; then "
            "neuroxai.models.save_checkpoint(out, model, {'architecture': NAME, 'config': {...}}) for a "
            "neuroxai architecture, or torch.save(model.state_dict(), out) and load it with "
            "neuroxai.models.byo.load_user_model('package.module:Class', state_dict=out)")


def _plain(v):
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (set, tuple)):
        return list(v)
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"{type(v).__name__} is not plain data")


def _as_plain(obj, what: str, path: Path):
    """JSON round trip: metadata must be plain data (numpy scalars or objects would need pickle)."""
    try:
        return json.loads(json.dumps(obj, default=_plain))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {what} must be plain data (numbers, strings, lists, dicts)",
                              path=path, found=str(exc), fix=f"convert the {what} values to plain Python") from None


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write ``model``'s weights and ``meta`` to one file, atomically; returns the path.

    ``meta`` must hold ``architecture`` (a ``MODELS`` key) and ``config`` (the factory kwargs,
    e.g. ``{"in_channels": 1, "n_outputs": 2, "channels": [8, 16, 32]}``); every other key
    (task, metrics, manifest_hash, seed, ...) is stored under ``"meta"``.
    """
    import neuroxai

    path = Path(path)
    missing = [k for k in ("architecture", "config") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata needs {missing}", path=path,
                              expected=["architecture", "config"], found=sorted(meta),
                              fix="pass meta={'architecture': NAME, 'config': FACTORY_KWARGS, ...}")
    if meta["architecture"] not in MODELS:
        raise CheckpointError(f"unknown architecture {meta['architecture']!r}", path=path,
                              expected=MODELS.names(), found=meta["architecture"],
                              fix="a model outside the registry: save its state_dict and use byo.load_user_model")
    obj = {"format": FORMAT,
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
           "architecture": str(meta["architecture"]),
           "config": _as_plain(dict(meta["config"]), "config", path),
           "meta": _as_plain({k: v for k, v in meta.items() if k not in ("architecture", "config")}, "meta", path),
           "versions": {"torch": str(torch.__version__), "neuroxai": str(getattr(neuroxai, "__version__", "0")),
                        "python": platform.python_version()}}
    return atomic_write(path, write=lambda tmp: torch.save(obj, tmp))


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, read with ``weights_only=True`` (no code can run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path=path, expected="an existing .pt file",
                              found=_what_is(path),
                              fix="check the path (a trained run keeps it at <run>/train/<key>/model.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            "the checkpoint cannot be loaded with torch.load(weights_only=True): it stores pickled Python "
            "objects (e.g. a whole nn.Module), which could run arbitrary code, or it is not a torch file. "
            "neuroxai never loads with weights_only=False", path=path,
            expected="tensors and plain data only", found=f"{type(exc).__name__}: {first}", fix=_CONVERT) from None
    if not isinstance(obj, dict):
        raise CheckpointError("unexpected checkpoint content", path=path, expected="a dict",
                              found=type(obj).__name__, fix=_CONVERT)
    return obj


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a neuroxai checkpoint's model; returns ``(model on device in eval mode, meta)``.

    ``meta`` is the stored metadata plus ``architecture``, ``config`` and ``versions``.
    """
    obj = read_checkpoint(path)
    need = ("format", "state_dict", "architecture", "config")
    if obj.get("format") != FORMAT or any(k not in obj for k in need):
        bare = obj and all(isinstance(v, torch.Tensor) for v in obj.values())
        raise CheckpointError(
            "not a neuroxai checkpoint" + (" (it looks like a bare state_dict)" if bare else ""), path=path,
            expected=f"keys {list(need)} with format {FORMAT!r}", found=sorted(obj)[:8],
            fix="load a bare state_dict with neuroxai.models.byo.load_user_model('package.module:Class', "
                "state_dict=PATH), or re-save the model with neuroxai.models.save_checkpoint")
    try:
        model = MODELS[obj["architecture"]](**obj["config"])
    except NeuroXAIError as exc:
        raise CheckpointError(f"cannot rebuild architecture {obj['architecture']!r} from the checkpoint config",
                              path=path, expected=MODELS.names(), found=f"{obj['architecture']} {obj['config']}: {exc}",
                              fix="was it written by a newer neuroxai? upgrade, or re-save it") from None
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError("the weights do not fit the architecture", path=path,
                              expected=f"{obj['architecture']} with {obj['config']}",
                              found=str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                              fix="save the checkpoint again with the config the model was built with") from None
    meta = {**obj.get("meta", {}), "architecture": obj["architecture"], "config": obj["config"],
            "versions": obj.get("versions", {})}
    return model.to(device).eval(), meta


def _what_is(path: Path) -> str:
    from ..safepath import describe_special

    return describe_special(path) or "no such file"
