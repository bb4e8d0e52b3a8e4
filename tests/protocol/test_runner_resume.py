"""End to end on a tiny cohort: a run killed with SIGKILL during attribution and resumed gives the
same results as an uninterrupted run; a second run reuses every finished stage."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from neuroxai.protocol.runner import run_protocol
from neuroxai.protocol.schema import load_protocol

TINY = """
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

CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(int(sys.argv[3]))
    import neuroxai.protocol.runner as R
    _save = R.atomic_savez
    def slow_save(path, **arrays):  # slow chunks so the parent can kill mid-stage
        out = _save(path, **arrays)
        if "attribute" in str(path):
            time.sleep(0.4)
        return out
    R.atomic_savez = slow_save
    R.run_protocol(sys.argv[1], sys.argv[2], report=False)
""")


def _strip(results: dict) -> dict:
    return {"methods": results["methods"], "tasks": results["tasks"], "scores": results["scores"]}


@pytest.fixture(scope="module")
def protocol_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("proto") / "tiny.yaml"
    p.write_text(TINY)
    return p


def test_kill_during_attribution_then_resume_equals_uninterrupted(protocol_file, tmp_path):
    ref = run_protocol(load_protocol(protocol_file), tmp_path / "ref", report=False)
    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(protocol_file), str(out),
                              str(torch.get_num_threads())])
    deadline = time.time() + 240
    while time.time() < deadline:
        if list(out.glob("stages/attribute/*/chunk_00001.npz")):
            break
        if child.poll() is not None:
            pytest.fail("the child run finished before it could be killed")
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done_before = list(out.glob("stages/attribute/*/DONE"))
    chunks_before = list(out.glob("stages/attribute/*/chunk_*.npz"))
    assert chunks_before and len(done_before) < 5  # killed mid-way through attribution
    res = run_protocol(load_protocol(protocol_file), out, report=False)
    assert json.dumps(_strip(res.results), sort_keys=True) == json.dumps(_strip(ref.results), sort_keys=True)
    assert res.results["protocol"]["hash"] == ref.results["protocol"]["hash"]
    # nothing duplicated: one score row per subject × method × metric
    sc = res.results["scores"]
    keys = list(zip(sc["task"], sc["subject_id"], sc["method"], sc["metric"]))
    assert len(keys) == len(set(keys))


def test_second_run_reuses_finished_stages(protocol_file, tmp_path):
    run_protocol(load_protocol(protocol_file), tmp_path / "r", report=False)
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("stages/*/*/DONE")}
    t = time.perf_counter()
    again = run_protocol(load_protocol(protocol_file), tmp_path / "r", report=True)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("stages/*/*/DONE")} == stamp
    assert (again.report_dir / "index.html").is_file()
    assert again.exit_code in (0, 1) and again.results["overall"]["exit_code"] == again.exit_code
    prov = again.results["provenance"]
    assert prov["protocol_hash"] == again.results["protocol"]["hash"] and prov["manifest_hash"]
