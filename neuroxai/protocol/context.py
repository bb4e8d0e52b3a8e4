"""What every stage of a run shares (:class:`RunContext`, immutable: a stage hands what it made
back as its return value, and the runner passes it on) and what a run returns (:class:`RunResult`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..progress import Progress
from ..report.schema import Results
from .rundir import RunDir
from .schema import Protocol


@dataclass
class RunResult:
    run_dir: Path
    report_dir: Path | None
    results: Results | None  # None when the run stopped early (``stop_after``)
    exit_code: int


@dataclass(frozen=True)
class RunContext:
    """The protocol, the run directory, the device and the rank; after the data stage (which
    returns a new context, :func:`~neuroxai.protocol.stages.data.prepare_data`) the manifest, its
    hash and the model grid. Its fields are never reassigned. Two members are written by design:
    ``timings`` (the run's clock: each stage adds its seconds, reported in the provenance) and
    ``train_means`` (a memo of each task's training-split mean image, the ``baseline:
    train_mean`` of DeepLift and integrated gradients: ``stages.attribute.train_mean_image``)."""

    protocol: Protocol
    rd: RunDir
    device: torch.device
    progress: Progress
    manifest: pd.DataFrame | None = None
    manifest_hash: str = ""
    grid: dict = field(default_factory=dict)
    rank: int = 0
    world: int = 1
    timings: dict = field(default_factory=dict)
    train_means: dict = field(default_factory=dict)


def chunks(ids: list[str], size: int) -> list[list[str]]:
    """``ids`` in consecutive batches of ``size`` (the last one shorter)."""
    return [ids[i:i + size] for i in range(0, len(ids), size)]
