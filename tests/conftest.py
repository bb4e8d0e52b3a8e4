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


# A tiny end-to-end protocol (40 subjects at 8 mm, 2 epochs): shared by runner, report and
# distributed tests.
TINY_PROTOCOL = """
id: tiny
version: "0.1"
title: tiny end-to-end protocol for tests
data:
  source: embedded
  cohort: {n: 40, spacing_mm: 8.0, seed: 0}
tasks:
  - id: hippo
    type: region_volume
    params: {regions: [Hippocampus_L, Hippocampus_R], split: [0.5, 0.1, 0.4]}
    null_control: true
model:
  architecture: small_cnn
  params: {channels: [4, 8]}
  training: {epochs: 2, batch_size: 8, lr: 0.003, seed: 0}
methods:
  - name: gradient
  - name: smoothgrad
    params: {n_samples: 4, sigma: 0.1, seed: 0}
  - name: random
    params: {seed: 0}
metrics:
  - name: relevance_mass_accuracy
  - name: auroc
statistics: {bootstrap: 200, seed: 0}
sanity:
  model_randomization: {enabled: true, n_subjects: 2}
acceptance:
  - {kind: ci_above_chance, metric: relevance_mass_accuracy, margin: 0.1}
  - {kind: beats_random, metric: relevance_mass_accuracy}
run: {device: cpu, batch_size: 2, save_maps: npz16, seed: 0}
"""


@pytest.fixture(scope="session")
def tiny_protocol(tmp_path_factory):
    p = tmp_path_factory.mktemp("proto") / "tiny.yaml"
    p.write_text(TINY_PROTOCOL)
    return p


@pytest.fixture
def small_results():
    """A factory of small valid :class:`~neuroxai.report.schema.Results`: one task ``t`` and the
    given methods ``{key: {metric: {mean, ci_low, ci_high, chance, ...}}}``, the protocol's
    ``acceptance`` metrics and ``metrics`` names, and an optional long ``scores`` table."""
    from neuroxai.report.schema import validate_results

    def make(methods: dict, *, acceptance: list, metrics: list, scores: dict | None = None):
        return validate_results({
            "schema_version": "1.3", "provenance": {}, "data": {"source": "test", "n_subjects": 1},
            "protocol": {"id": "p", "version": "1", "hash": "h", "acceptance": [],
                         "spec": {"acceptance": [{"metric": m} for m in acceptance],
                                  "metrics": [{"name": m} for m in metrics]}},
            "overall": {"verdict": "FAIL", "n_pass": 0, "n_fail": len(methods), "n_inconclusive": 0,
                        "exit_code": 1},
            "tasks": [{"id": "t", "type": "region_volume", "kind": "classification", "n_subjects": 1,
                       "n_scored": 1, "n_excluded_from_scoring": 0, "model": {}}],
            "methods": [{"task": "t", "method": k, "name": "gradient", "is_baseline": False, "criteria": [],
                         "verdict": "FAIL", "metrics": {met: {"mean": None, "ci_low": None, "ci_high": None,
                                                              "n": 1, **x} for met, x in v.items()}}
                        for k, v in methods.items()],
            "scores": scores or {}})

    return make


@pytest.fixture
def strip_results():
    """The parts of results.json that must not depend on how the run was executed."""
    def strip(r):
        table = r.score_table()
        return {**{k: v for k, v in r.to_dict().items() if k in ("methods", "tasks")},
                "scores": None if table is None else table.frame().to_dict(orient="list")}

    return strip
