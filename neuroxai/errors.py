"""The error hierarchy. Every error a user can cause names the file (or key), what was
expected, what was found, and what to do about it."""
from __future__ import annotations

from pathlib import Path


class NeuroXAIError(Exception):
    """Base class of every error neuroxai raises on purpose."""

    def __init__(self, message: str, *, path: str | Path | None = None, expected=None,
                 found=None, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.expected = expected
        self.found = found
        self.fix = fix
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}: ")
        parts.append(message)
        if expected is not None:
            parts.append(f"\n  expected: {expected}")
        if found is not None:
            parts.append(f"\n  found:    {found}")
        if fix:
            parts.append(f"\n  fix:      {fix}")
        super().__init__("".join(parts))


def named_error(exc: BaseException | None) -> NeuroXAIError | None:
    """The first :class:`NeuroXAIError` in ``exc``'s ``__cause__``/``__context__`` chain (libraries
    such as MONAI wrap ours in a ``RuntimeError``), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, NeuroXAIError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class VolumeFileError(NeuroXAIError):
    """A file that should be a NIfTI volume is missing, unreadable, corrupt or not NIfTI."""


class VolumeShapeError(NeuroXAIError):
    """A volume has the wrong dimensionality or its shape does not match its partner."""


class AffineMismatchError(NeuroXAIError):
    """Two volumes that must share a grid have affines that disagree beyond tolerance."""


class VolumeValueError(NeuroXAIError):
    """A volume holds NaN/Inf voxels or values outside what it should contain."""


class MaskError(NeuroXAIError):
    """A mask is empty, all-ones, not binary or otherwise unusable."""


class ManifestError(NeuroXAIError):
    """A manifest CSV or BIDS tree has one or more problems (all are listed at once)."""


class ConfigError(NeuroXAIError):
    """A configuration / protocol value or key is not allowed."""


class TaskError(NeuroXAIError):
    """A known-signal task cannot be built from the given cohort."""


class ModelError(NeuroXAIError):
    """A model cannot be built, loaded or does not fit the data."""


class CheckpointError(ModelError):
    """A checkpoint file is unsafe, corrupt or from an incompatible version."""


class AttributionError(NeuroXAIError):
    """An attribution method cannot run on the given model/input."""


class UnsupportedLayerError(AttributionError):
    """LRP met a layer type it has no rule for."""


class ScoringError(NeuroXAIError):
    """Maps and masks cannot be scored (shape, dtype, device, empty mask...)."""


class RunError(NeuroXAIError):
    """The protocol runner met an inconsistent run directory or stage failure."""


class WriteError(RunError, OSError):
    """A file could not be written (disk full, file-size limit, name too long, no permission).
    Also an ``OSError``, so code that handles a failed write keeps doing so."""
