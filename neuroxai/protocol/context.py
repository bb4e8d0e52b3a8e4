"""What every stage of a run shares: the protocol, the run directory, the device, the rank, and
the results gathered so far (:class:`RunContext`); what a run returns (:class:`RunResult`)."""
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


@dataclass
class RunContext:
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
    models: dict = field(default_factory=dict)
    #: {task: {method: (relevance_share (N,K), volume_share (N,K))}}, read with the chunks' scores
    profiles: dict = field(default_factory=dict)
    #: {task: its training-split mean image (1,1,D,H,W)}: the ``baseline: train_mean`` of DeepLift
    #: and integrated gradients (``stages.attribute.train_mean_image``)
    train_means: dict = field(default_factory=dict)


def chunks(ids: list[str], size: int) -> list[list[str]]:
    """``ids`` in consecutive batches of ``size`` (the last one shorter)."""
    return [ids[i:i + size] for i in range(0, len(ids), size)]
