"""A real learning test: the small CNN learns the hippocampal-volume task of a tiny embedded cohort
(generated brains at 4 mm) to a held-out AUROC ≥ 0.8, and the random-label control stays at chance
and is flagged."""
from __future__ import annotations

import json

import torch

from neuroxai.protocol.runner import run_protocol

PROTOCOL = """
id: learns
version: "0.1"
data:
  source: embedded
  cohort: {n: 240, spacing_mm: 4.0, seed: 1}
tasks:
  - id: hippo
    type: region_volume
    params: {regions: [Hippocampus_L, Hippocampus_R], target: classification, split: [0.6, 0.1, 0.3]}
    null_control: true
model:
  architecture: small_cnn
  training: {epochs: 12, batch_size: 16, lr: 0.003, seed: 0, early_stopping: 0}
methods:
  - name: random
metrics:
  - name: relevance_mass_accuracy
acceptance:
  - {kind: ci_above_chance, metric: relevance_mass_accuracy}
run: {device: cpu, seed: 0}
"""


def test_small_cnn_learns_the_region_volume_task_and_the_null_model_is_flagged(tmp_path):
    p = tmp_path / "learns.yaml"
    p.write_text(PROTOCOL)
    run_protocol(p, tmp_path / "run", stop_after="train")
    got = {}
    for d in (tmp_path / "run" / "stages" / "train").iterdir():
        task = torch.load(d / "model.pt", weights_only=True)["meta"]["task"]
        got[task] = json.loads((d / "metrics.json").read_text())
    assert len(got) == 2 and "hippo" in got
    real = got.pop("hippo")
    (null,) = got.values()
    assert real["auroc"] >= 0.8 and not real["at_chance"], real
    assert null["at_chance"] and null["auroc_ci_low"] < 0.5 < null["auroc_ci_high"], null
