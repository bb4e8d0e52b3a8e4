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



CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(int(sys.argv[3]))
    import neuroxai.protocol.runner as R
    import neuroxai.protocol.stages.attribute as A
    _save = A.atomic_savez
    def slow_save(path, **arrays):  # slow chunks so the parent can kill mid-stage
        out = _save(path, **arrays)
        if "attribute" in str(path):
            time.sleep(0.4)
        return out
    A.atomic_savez = slow_save
    R.run_protocol(sys.argv[1], sys.argv[2], report=False)
""")


def test_kill_during_attribution_then_resume_equals_uninterrupted(tiny_protocol, tmp_path, strip_results):
    ref = run_protocol(load_protocol(tiny_protocol), tmp_path / "ref", report=False)
    out = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_protocol), str(out),
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
    res = run_protocol(load_protocol(tiny_protocol), out, report=False)
    assert json.dumps(strip_results(res.results), sort_keys=True) == json.dumps(strip_results(ref.results), sort_keys=True)
    assert res.results.protocol.hash == ref.results.protocol.hash
    # nothing duplicated: one score row per subject × method × metric
    sc = res.results.score_table().frame()
    keys = list(zip(sc["task"], sc["subject_id"], sc["method"], sc["metric"]))
    assert len(keys) == len(set(keys))


def test_second_run_reuses_finished_stages(tiny_protocol, tmp_path):
    run_protocol(load_protocol(tiny_protocol), tmp_path / "r", report=False)
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("stages/*/*/DONE")}
    t = time.perf_counter()
    again = run_protocol(load_protocol(tiny_protocol), tmp_path / "r", report=True)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "r").glob("stages/*/*/DONE")} == stamp
    assert (again.report_dir / "index.html").is_file()
    assert again.exit_code in (0, 1, 3) and again.results.overall.exit_code == again.exit_code  # a verdict
    prov = again.results.provenance
    assert prov.protocol_hash == again.results.protocol.hash and prov.manifest_hash
