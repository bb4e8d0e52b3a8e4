"""A run directory: every stage writes its outputs atomically under a key derived from its inputs.

Layout::

    RUN/
      run.json                    protocol id/hash, provenance, start/end times
      stages/<stage>/<key>/...    outputs of one stage for one input key
      stages/<stage>/<key>/DONE   written last: the stage is complete

The run directory is claimed with :func:`neuroxai.outdir.claim_dir`: it never overwrites or
deletes a file neuroxai did not create.

Re-running skips a stage whose ``DONE`` marker exists. A stage interrupted mid-way (even by
``kill -9``) leaves no ``DONE`` and only whole files (every file is written to a temporary name and
renamed), so ``--resume`` redoes or continues exactly the unfinished work.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..atomic import atomic_write
from ..outdir import MARKER, claim_dir  # noqa: F401  (re-exported)
from ..safepath import own_dir


def stable_hash(obj: Any, n: int = 16) -> str:
    """Short sha256 of the canonical JSON of ``obj`` (dicts sorted; numpy/paths converted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default,
                                     separators=(",", ":")).encode()).hexdigest()[:n]


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def atomic_savez(path: Path, **arrays) -> Path:
    return atomic_write(path, write=lambda tmp: np.savez_compressed(tmp, **arrays))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def finished_no_stage(root: str | Path) -> bool:
    """Whether ``root`` is a run folder (marked by neuroxai) in which no stage ever finished (no
    ``stages/*/*/DONE``): a run that failed early (a protocol error, a missing file) has nothing to
    resume or to protect, so its rerun may reuse the folder without ``--resume``."""
    root = Path(root)
    try:
        kind = json.loads((root / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return False
    return kind == "run" and not any((root / "stages").glob("*/*/DONE"))


class RunDir:
    """Stage bookkeeping for one run directory (claimed with :func:`claim_dir`)."""

    def __init__(self, root: str | Path):
        self.root = claim_dir(root, "run")

    def stage(self, name: str, key: str) -> Path:
        return own_dir(self.root, "stages", name, key)  # a received run's symlink is replaced, not followed

    def is_done(self, name: str, key: str) -> bool:
        return (self.root / "stages" / name / key / "DONE").exists()

    def mark_done(self, name: str, key: str, info: dict | None = None) -> None:
        atomic_write_json(self.stage(name, key) / "DONE", info or {})

    def cached(self, name: str, key: str, compute: Callable[[Path], Any],
               load: Callable[[Path], Any]) -> Any:
        """Run ``compute(stage_dir)`` unless the stage is done; then return ``load(stage_dir)``."""
        d = self.stage(name, key)
        if not self.is_done(name, key):
            compute(d)
            self.mark_done(name, key)
        return load(d)
