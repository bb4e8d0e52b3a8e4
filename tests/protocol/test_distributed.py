"""torchrun with 2 CPU processes (gloo) shards attribution and scoring across ranks; the gathered
run directory holds exactly the results of a single-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from neuroxai.report.schema import Results, read_results


SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from neuroxai.protocol.runner import run_protocol
    run_protocol(sys.argv[1], sys.argv[2], report=False)
""")


def _single_and_two_ranks(tmp_path, proto, port: int) -> tuple[Results, Results]:
    """Run ``proto`` in one process and under ``torchrun`` with 2 CPU ranks; both results.json."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(script), str(proto), str(tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", str(port), str(script), str(proto), str(tmp_path / "dist")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert dist.returncode == 0, dist.stderr[-3000:]
    return read_results(tmp_path / "single" / "results.json"), read_results(tmp_path / "dist" / "results.json")


def test_torchrun_two_ranks_equals_single_process(tmp_path, tiny_protocol, strip_results):
    a, b = _single_and_two_ranks(tmp_path, tiny_protocol, 29533)
    assert json.dumps(strip_results(a), sort_keys=True) == json.dumps(strip_results(b), sort_keys=True)
    assert b.provenance.world_size == 2
    # both ranks wrote chunks: with batch 2 there are several chunks per method
    n_chunks = len(list((tmp_path / "dist").glob("stages/attribute/*/chunk_*.npz")))
    assert n_chunks >= 4


def _close(a, b, path="", rtol=1e-3, atol=1e-5):
    """Recursively: equal structure and strings, numbers within tolerance; returns mismatches."""
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [m for k in a for m in _close(a[k], b[k], f"{path}.{k}", rtol, atol)]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [m for i, (x, y) in enumerate(zip(a, b)) for m in _close(x, y, f"{path}[{i}]", rtol, atol)]
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or abs(a - b) > atol + rtol * abs(a):
            return [f"{path}: {a} != {b}"]
        return []
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_torchrun_ddp_training_matches_single_process_within_float_tolerance(tmp_path, tiny_protocol,
                                                                             strip_results):
    """With ``run.distributed_training: ddp`` both ranks train the model (DistributedDataParallel,
    gloo); for a model without BatchNorm and dropout the run equals one process up to float
    summation order."""
    proto = tmp_path / "ddp.yaml"
    text = tiny_protocol.read_text()
    text = text.replace("params: {channels: [4, 8]}", "params: {channels: [4, 8], batch_norm: false, dropout: 0.0}")
    text = text.replace("run: {device: cpu,", "run: {distributed_training: ddp, device: cpu,")
    assert "batch_norm: false" in text and "distributed_training: ddp" in text
    proto.write_text(text)
    a, b = _single_and_two_ranks(tmp_path, proto, 29537)
    assert _close(strip_results(a), strip_results(b)) == []
    ck = next((tmp_path / "dist").glob("stages/train/*/model.pt"))
    import torch

    assert torch.load(ck, weights_only=True)["meta"]["world_size"] == 2
