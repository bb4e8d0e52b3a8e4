"""Sizes no machine running neuroxai can hold, refused before anything is allocated.

A protocol or a command line is a shared document: ``cohort.n: 1000000000`` or ``bootstrap: 10**9``
would otherwise start allocating (tens of MB a second, no progress) until the machine gives out.
Each limit is far above any study we know of (the largest, Siegel et al. 2025, has 45,000 subjects
at 1 mm) and is named in the error, so a real need for more is a one-line change here.
"""
from __future__ import annotations

import math

from .errors import ConfigError

#: Subjects the embedded cohort generator writes (each is ~5 NIfTI files).
MAX_COHORT_SUBJECTS = 100_000
#: Bootstrap resamples and permutations of one comparison (each is a pass over the subjects).
MAX_RESAMPLES = 1_000_000
#: Samples / steps / patches an attribution method draws per volume (smoothgrad, integrated gradients).
MAX_SAMPLES = 100_000
#: Channels of one layer of a registered architecture.
MAX_WIDTH = 4096
#: Parameters of a registered architecture built from a protocol (2 GB in float32).
MAX_MODEL_PARAMETERS = 500_000_000
#: Voxels along one side of a grid (a 0.25 mm brain is ~800).
MAX_GRID_SIDE = 2048
#: Models one protocol trains per task with model.training.seeds (each is a full training run).
MAX_SEEDS = 100
#: Largest seed: NumPy's legacy and PyTorch's generators both take it.
MAX_SEED = 2 ** 32 - 1
#: The embedded cohort's field of view (mm, MNI152 box) that a grid spacing divides.
COHORT_FOV_MM = (182.0, 218.0, 182.0)
#: Finest voxel size accepted (mm): finer than any MRI and 1,000× a 1 mm brain's voxel count.
MIN_SPACING_MM = 0.1


def grid_voxels_limit() -> int:
    """Voxels of one float32 volume under the NIfTI size cap (``$NEUROXAI_MAX_VOLUME_MB``)."""
    from .data.volume import max_volume_mb

    return int(max_volume_mb() * 2 ** 20 // 4)


def check_at_most(value, limit, key: str, *, path=None, fix: str | None = None, what: str = "") -> None:
    """A :class:`ConfigError` naming ``key``, the limit and the value if ``value > limit``."""
    if value is not None and value > limit:
        raise ConfigError(f"{key} is larger than neuroxai's limit{f' ({what})' if what else ''}", path=path,
                          expected=f"{key} ≤ {limit:,}", found=f"{value:,}",
                          fix=fix or f"use a smaller {key} (the limit is neuroxai.limits; raise it there if you "
                                     "truly need more)")


def check_seed(value, key: str, *, path=None) -> None:
    """A seed is an integer in ``[0, MAX_SEED]`` (NumPy refuses others, PyTorch overflows)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{key} is not a usable seed", path=path, expected=f"an integer in [0, {MAX_SEED}]",
                          found=repr(value), fix=f"use e.g. {key}: 0")


def check_spacing(value, key: str, *, path=None) -> None:
    """A voxel size in mm: finite, ≥ :data:`MIN_SPACING_MM`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < MIN_SPACING_MM:
        raise ConfigError(f"{key} is not a usable voxel size", path=path,
                          expected=f"a finite number of mm ≥ {MIN_SPACING_MM} (e.g. 1, 2 or 4)", found=repr(value),
                          fix=f"set {key} to the voxel size in mm, e.g. 2")


def check_grid(shape, key: str, *, path=None) -> None:
    """A grid ``(D, H, W)``: each side in ``[1, MAX_GRID_SIDE]`` and the voxel count under
    :func:`grid_voxels_limit` — checked before a volume of that grid is allocated."""
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape):
        raise ConfigError(f"{key} has an empty side", path=path, expected="every side ≥ 1 voxel",
                          found=shape, fix=f"give {key} as three positive sizes, e.g. 96,112,96")
    check_at_most(max(shape), MAX_GRID_SIDE, f"{key} (longest side)", path=path)
    n = math.prod(shape)
    check_at_most(n, grid_voxels_limit(), f"{key} (voxels)", path=path, what="one float32 volume within "
                  "$NEUROXAI_MAX_VOLUME_MB", fix=f"use a coarser grid or raise NEUROXAI_MAX_VOLUME_MB")


def cohort_grid(spacing_mm: float) -> tuple[int, int, int]:
    """The grid the embedded cohort gets at ``spacing_mm`` (the MNI152 box divided by it)."""
    return tuple(max(1, math.ceil(f / spacing_mm)) for f in COHORT_FOV_MM)


__all__ = ["MAX_COHORT_SUBJECTS", "MAX_RESAMPLES", "MAX_SAMPLES", "MAX_WIDTH", "MAX_MODEL_PARAMETERS",
           "MAX_GRID_SIDE", "MAX_SEED", "MIN_SPACING_MM", "grid_voxels_limit", "check_at_most", "check_seed",
           "check_spacing", "check_grid", "cohort_grid"]
