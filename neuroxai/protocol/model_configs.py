"""The model and training configs shipped in ``neuroxai/configs/<kind>/<name>.yaml``, read by the
protocol check at load time and by the train stage (a module of its own, below both)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from ..errors import ConfigError

CONFIG_DIR = Path(files("neuroxai") / "configs")  # shipped inside the package (see schema.PROTOCOL_DIR)


def config_yaml(kind: str, name: str | None) -> dict:
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
