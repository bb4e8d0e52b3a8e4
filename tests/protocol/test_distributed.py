"""torchrun with 2 CPU processes (gloo) shards attribution and scoring across ranks; the gathered
run directory holds exactly the results of a single-process run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest


SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from neuroxai.protocol.runner import run_protocol
    run_protocol(sys.argv[1], sys.argv[2], report=False)
""")


def test_torchrun_two_ranks_equals_single_process(tmp_path, tiny_protocol, strip_results):
    proto = tiny_protocol
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(script), str(proto), str(tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29533", str(script), str(proto), str(tmp_path / "dist")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert dist.returncode == 0, dist.stderr[-3000:]
    a = json.loads((tmp_path / "single" / "results.json").read_text())
    b = json.loads((tmp_path / "dist" / "results.json").read_text())
    assert json.dumps(strip_results(a), sort_keys=True) == json.dumps(strip_results(b), sort_keys=True)
    assert b["provenance"]["world_size"] == 2
    # both ranks wrote chunks: with batch 2 there are several chunks per method
    n_chunks = len(list((tmp_path / "dist").glob("stages/attribute/*/chunk_*.npz")))
    assert n_chunks >= 4
