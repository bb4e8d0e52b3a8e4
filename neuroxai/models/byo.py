"""Bring your own model: re-evaluate a prior study's network with neuroxai.

``load_user_model(spec)`` accepts

* a **TorchScript** archive (``torch.jit.save``; any suffix, recognized by content) — loaded
  with ``torch.jit.load``: TorchScript is a restricted language, not arbitrary Python;
* a **torch.export** archive (``*.pt2``, ``torch.export.save``) — its graph module has no
  layer objects, so layer-hook methods (Grad-CAM, LRP) cannot run on it, gradient methods can;
* a **neuroxai checkpoint** (``save_checkpoint``) — loaded with ``weights_only=True``;
* ``"package.module:ClassName"`` — the class is imported (your code: the runner imports it only
  when a person opted in with ``--trust-module``/``--model``, never because a protocol names it;
  it must be an ``nn.Module`` subclass, checked before it is called), built with the
  keyword arguments of ``kwargs_yaml`` and given the weights of ``state_dict`` (a file of tensors,
  read with ``weights_only=True``; a ``{"state_dict": ...}`` / ``{"model_state_dict": ...}``
  wrapper and a DDP ``module.`` prefix are unwrapped);
* a registry name (``"sfcn"``) — ``MODELS[name](**kwargs)`` plus ``state_dict``.

With ``input_shape`` the model is dry-run on zeros of that shape, so a mismatch between what the
model expects and the data is reported before any attribution runs.
"""
from __future__ import annotations

import importlib
import logging
import re
import zipfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, ModelError
from .checkpoint import load_checkpoint, read_checkpoint
from .nets import MODELS

log = logging.getLogger(__name__)


_CLASS_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder; ``torch.save`` files have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.startswith("code/") for n in z.namelist())


def _read_kwargs(kwargs_yaml) -> dict:
    if kwargs_yaml is None:
        return {}
    if isinstance(kwargs_yaml, dict):
        return dict(kwargs_yaml)
    from ..safe_yaml import load_yaml

    p = Path(kwargs_yaml)
    if not p.is_file():
        raise ConfigError("model kwargs file not found", path=p, expected="a YAML mapping of constructor arguments",
                          found="no such file", fix="check the path")
    data = load_yaml(p, what="model kwargs file") or {}
    if not isinstance(data, dict):
        raise ConfigError("model kwargs YAML must be a mapping", path=p, expected="key: value pairs",
                          found=type(data).__name__, fix="write the constructor arguments as `name: value` lines")
    return data


def _read_state_dict(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    obj = read_checkpoint(path)  # weights_only=True, clear errors for missing / pickled files
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("the weights file is not a state_dict", path=path,
                              expected="a dict of parameter name -> tensor", found=sorted(obj)[:8],
                              fix="save it with torch.save(model.state_dict(), path)")
    if all(k.startswith("module.") for k in obj):  # saved from a DDP / DataParallel wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _load_weights(model: nn.Module, path, who: str) -> None:
    sd = _read_state_dict(path)
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights do not fit {who}", path=path,
                              expected=f"{len(model.state_dict())} tensors of {who}",
                              found=" ".join(str(exc).split())[:800],
                              fix="use the constructor arguments (kwargs YAML) the weights were trained with") from None


def class_spec_module(spec: str) -> str | None:
    """The module of a ``"package.module:ClassName"`` spec, or None if ``spec`` is not one."""
    spec = str(spec)
    if Path(spec).is_file() or not _CLASS_SPEC.fullmatch(spec):
        return None
    return spec.partition(":")[0]


def _import_class(spec: str) -> type[nn.Module]:
    """Import the class named by ``spec``; it must be an ``nn.Module`` subclass, checked before
    anything is called (a function, even one returning a module, is refused: it could do anything)."""
    mod_name, _, cls_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"cannot import module {mod_name!r}", expected="an importable package.module",
                         found=f"{type(exc).__name__}: {exc}",
                         fix="install the package or add its folder to PYTHONPATH") from None
    obj = mod
    for part in cls_name.split("."):
        if not hasattr(obj, part):
            avail = sorted(n for n in dir(mod) if not n.startswith("_"))[:20]
            raise ModelError(f"{mod_name!r} has no {cls_name!r}", expected=avail, found=cls_name,
                             fix="spell it as package.module:ClassName")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelError(f"{spec!r} is not an nn.Module subclass; it was not called",
                         expected="a class deriving from torch.nn.Module",
                         found=f"{type(obj).__name__} {getattr(obj, '__qualname__', '')}".strip(),
                         fix="point at the model class itself (a factory function would have to be "
                             "wrapped in a small nn.Module subclass)")
    return obj


def load_user_model(spec: str, *, state_dict: str | Path | None = None, kwargs_yaml: str | Path | dict | None = None,
                    input_shape: Sequence[int] | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Load a user's model (see the module docstring for ``spec``); returns it in eval mode on
    ``device``. With ``input_shape`` (e.g. ``(1, 1, D, H, W)``) ``check_input_shape`` is run."""
    spec = str(spec)
    path = Path(spec)
    _refuse_special(path, "model file")
    if state_dict is not None:
        _refuse_special(Path(state_dict), "state_dict file")
    if path.is_file():
        if state_dict is not None or kwargs_yaml is not None:
            log.warning("%s is a complete model file; state_dict / kwargs_yaml are ignored", path)
        if path.suffix == ".pt2":  # torch.export archive (the successor of TorchScript)
            try:
                model = torch.export.load(str(path)).module()
            except Exception as exc:
                raise ModelError("cannot load the torch.export archive", path=path,
                                 found=f"{type(exc).__name__}: {exc}",
                                 fix="re-export it with torch.export.export(...) and torch.export.save") from None
        elif _is_torchscript(path):
            try:
                model = torch.jit.load(str(path), map_location=device)
            except Exception as exc:
                raise ModelError("cannot load the TorchScript file", path=path,
                                 found=f"{type(exc).__name__}: {exc}",
                                 fix="re-export it with torch.jit.script/trace and torch.jit.save") from None
        else:
            model, _ = load_checkpoint(path, device=device)
    elif path.suffix in (".pt", ".pth", ".ts", ".pt2", ".ckpt") or path.parent != Path("."):
        raise ModelError("model file not found", path=path, expected="an existing file", found="no such file",
                         fix="check the path")
    elif _CLASS_SPEC.fullmatch(spec):
        cls = _import_class(spec)
        model = cls(**_read_kwargs(kwargs_yaml))
        if not isinstance(model, nn.Module):  # a __new__ returning something else
            raise ModelError(f"{spec!r} did not return an nn.Module", found=type(model).__name__,
                             fix="point at an nn.Module subclass")
        if state_dict is not None:
            _load_weights(model, state_dict, spec)
        else:
            log.warning("%s built without a state_dict: its weights are random", spec)
    elif spec in MODELS:
        model = MODELS[spec](**_read_kwargs(kwargs_yaml))
        if state_dict is not None:
            _load_weights(model, state_dict, spec)
    else:
        raise ModelError("cannot tell what model this is", path=spec if path.suffix else None,
                         expected=f"an existing TorchScript / neuroxai checkpoint file, 'package.module:Class', "
                                  f"or one of {MODELS.names()}",
                         found=spec if path.suffix else f"{spec!r} (no such file)",
                         fix="check the path, or give the class as package.module:ClassName")
    model = model.to(device)
    _set_mode(model, False)
    if input_shape is not None:
        check_input_shape(model, input_shape)
    return model


def _set_mode(model: nn.Module, train: bool) -> None:
    try:
        model.train(train)
    except NotImplementedError:  # torch.export graph modules are frozen in the mode they were exported in
        pass


def _first_layer_hint(model: nn.Module) -> str:
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.Conv1d)):
            axes = {nn.Conv3d: "D, H, W", nn.Conv2d: "H, W", nn.Conv1d: "L"}[type(m)]
            return (f"(B, {m.in_channels}, {axes}) — first layer {name or 'model'}: "
                    f"{type(m).__name__}({m.in_channels}, {m.out_channels})")
        if isinstance(m, nn.Linear):
            return f"(B, {m.in_features}) after flattening — first layer {name}: Linear({m.in_features}, ...)"
    return "unknown (scripted or layer-free model): see the error below"


@torch.no_grad()
def check_input_shape(model: nn.Module, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Dry-run ``model`` on zeros of ``input_shape`` (``(B, 1, D, H, W)``); returns the output shape.

    Raises ``ModelError`` saying what the model expects and what the data is, with the original
    exception text, when the forward fails or the output is not ``(B, n_outputs)`` or ``(B,)``
    logits (one logit per subject: a single-output binary classifier, see
    :mod:`neuroxai.models.binary`).
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 5:
        raise ModelError("input_shape must be (B, C, D, H, W)", expected="5 numbers", found=shape,
                         fix="pass e.g. (1, 1, 40, 48, 40)")
    try:
        dev = next(model.parameters()).device
    except (StopIteration, AttributeError, RuntimeError):
        dev = torch.device("cpu")
    was_training = getattr(model, "training", False)
    _set_mode(model, False)
    try:
        out = model(torch.zeros(shape, device=dev))
    except Exception as exc:
        msg = " ".join(str(exc).split())
        if not _is_shape_error(exc):  # the user's forward raised for its own reasons: say so, not "shape"
            raise ModelError("the model's forward pass raised an error", expected="a forward pass that returns "
                             "(B, n_outputs) logits", found=f"{type(exc).__name__}: {msg[:1000]} (on zeros of "
                             f"shape {shape})", fix="fix the model's forward() (run it once on a tensor of "
                             "this shape to see the traceback)") from None
        raise ModelError("the model cannot take the data's input shape", expected=_first_layer_hint(model),
                         found=f"data {shape} (B, C, D, H, W); the forward pass failed with "
                               f"{type(exc).__name__}: {msg[:1000]}",
                         fix="resample/crop the data to the model's grid (protocol data.grid / "
                             "voxel size), or build the model for this grid and channel count") from None
    finally:
        _set_mode(model, was_training)
    if isinstance(out, (tuple, list)):
        out = out[0]
    # (B,) is one logit per subject (a BCEWithLogitsLoss binary classifier), as (B, 1)
    if not isinstance(out, torch.Tensor) or out.ndim not in (1, 2) or out.shape[0] != shape[0]:
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError("the model's output is not (B, n_outputs) logits", expected=f"({shape[0]}, n_outputs) "
                         f"or ({shape[0]},)",
                         found=f"{found} for input {shape}",
                         fix="wrap the model so that it returns one row of class logits / values per subject")
    return tuple(out.shape)


_SHAPE_WORDS = ("size", "shape", "dimension", "channels", "mat1 and mat2", "expected input", "expected 5d",
                "kernel", "must match", "too small")


def _is_shape_error(exc: BaseException) -> bool:
    """Whether a failed forward pass is about the input's shape (PyTorch's RuntimeError/ValueError
    naming sizes, shapes, dimensions or channels) rather than an error of the model's own code."""
    if not isinstance(exc, (RuntimeError, ValueError, IndexError)):
        return False
    text = str(exc).lower()
    return any(w in text for w in _SHAPE_WORDS)


def _refuse_special(path: Path, what: str) -> None:
    """A FIFO, a device or a link loop given as a model file would block or never end in
    ``torch.load``: named before anything opens it."""
    from ..safepath import describe_special

    special = describe_special(path)
    if special is not None and special != "a folder":
        raise ModelError(f"the {what} is {special}", path=path, expected=f"a regular {what}", found=special,
                         fix=f"point to the {what} itself")
