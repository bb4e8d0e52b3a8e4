"""Typed results at study size: build a :class:`Results` whose long score table has ``--rows`` rows
(45,000 subjects × 6 methods × 3 metrics × 3 columns ≈ 2.4 M), then write its canonical
``results.json`` text (``--writer pydantic``: :meth:`Results.to_json`; ``--writer python``: the
model dumped to Python objects and serialized by the standard library, the path before) and read
it back with the schema. Prints the seconds of each phase; time whole runs with ``farm-bench``::

    farm-bench --vs '.venv/bin/python benchmarks/bench_results.py --writer python' \\
        -- .venv/bin/python benchmarks/bench_results.py --writer pydantic
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from neuroxai.report.schema import Results, _canonical_json, validate_results


def results(rows: int) -> Results:
    rng = np.random.default_rng(0)
    metric = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 45000}
    return validate_results({
        "schema_version": "1.3", "provenance": {}, "data": {"source": "bench", "n_subjects": 45000},
        "protocol": {"id": "bench", "version": "1", "hash": "h", "acceptance": [], "spec": {}},
        "overall": {"verdict": "FAIL", "n_pass": 0, "n_fail": 1, "n_inconclusive": 0, "exit_code": 1},
        "tasks": [{"id": "t", "type": "region_volume", "kind": "classification", "n_subjects": 45000,
                   "n_scored": 45000, "n_excluded_from_scoring": 0, "model": {}}],
        "methods": [{"task": "t", "method": "gradcam", "name": "gradcam", "is_baseline": False,
                     "criteria": [], "verdict": "FAIL", "metrics": {"auroc": metric}}],
        "scores": {"subject_id": [f"sub-{i % 45000:05d}" for i in range(rows)], "method": ["gradcam"] * rows,
                   "metric": ["auroc"] * rows, "value": rng.random(rows).tolist(), "task": ["t"] * rows}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--writer", choices=("pydantic", "python"), default="pydantic")
    a = ap.parse_args()
    t0 = time.perf_counter()
    r = results(a.rows)
    t1 = time.perf_counter()
    text = r.to_json() if a.writer == "pydantic" else _canonical_json(r.model_dump(mode="python"))
    t2 = time.perf_counter()
    back = Results.model_validate_json(text)
    t3 = time.perf_counter()
    assert len(back.scores["value"]) == a.rows
    print(f"rows {a.rows:,} writer {a.writer}: build+validate {t1 - t0:.2f} s, write {t2 - t1:.2f} s "
          f"({len(text) / 1e6:.0f} MB), read back {t3 - t2:.2f} s")


if __name__ == "__main__":
    main()
