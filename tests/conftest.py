"""Shared fixtures. Tests are small (≤ 32³ volumes) and CPU-only."""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

# zennit/quantus import torchvision at import time; there is no CPU torchvision build here.
# A test-only stub (tests/_stubs/torchvision) provides the placeholders they need.
_STUBS = Path(__file__).parent / "_stubs"
try:  # pragma: no cover - depends on the environment
    import torchvision  # noqa: F401
except Exception:
    sys.path.insert(0, str(_STUBS))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def write_nifti(tmp_path):
    """write_nifti(array, affine=None, name='x.nii.gz') -> Path"""

    def _write(arr, affine=None, name="x.nii.gz"):
        aff = np.eye(4) if affine is None else np.asarray(affine, float)
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(arr), aff), str(p))
        return p

    return _write
