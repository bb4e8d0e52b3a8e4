"""The results stage alone at study size, on synthetic scores: peak memory against the number of
subjects (issue 22: at most 1.2× from 4,500 to 45,000 subjects, ``results.json`` under 5 MB).

One process does what a run does after its attribute stage, for one task and ``--methods`` methods
(four under test, the random map and the oracle) × 3 metrics (each with its ``_chance`` and
``_norm`` rows): stream the per-subject scores chunk by chunk into ``scores.parquet``
(:func:`neuroxai.protocol.stages.attribute.write_scores` reads each attribute chunk the same way),
judge them (:func:`~neuroxai.protocol.verdict.assemble_results`: bootstrap CIs, paired tests,
pairwise tests, per-class scores), write ``results.json``, and build the report without figures
(``scores.csv`` streamed). Prints the phases' seconds and the files' sizes; peak RSS from outside::

    farm-bench -n 3 --timeout 1800 -- .venv/bin/python benchmarks/bench_results_stage.py --subjects 45000
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from neuroxai.protocol.conclude import write_results
from neuroxai.protocol.schema import Protocol
from neuroxai.protocol.verdict import assemble_results
from neuroxai.report.figure_inputs import FigureInputs
from neuroxai.report.scores import SCORES_FILE, ScoreTable, ScoreWriter

METHODS = {"gradcam": 0.05, "lrp": 0.10, "smoothgrad": 0.35, "gradient": 0.30, "random": 0.02, "oracle": 1.0}
METRICS = {"relevance_mass_accuracy": 0.02, "relevance_rank_accuracy": 0.02, "auroc": 0.5}
CHUNK = 512  # subjects per attribute chunk


def protocol(n_boot: int) -> Protocol:
    return Protocol.model_validate({
        "id": "bench-results", "version": "1",
        "data": {"source": "embedded"},
        "tasks": [{"id": "hippocampus_volume", "type": "region_volume", "params": {"region": "hippocampus"}}],
        "model": {"architecture": "small_cnn"},
        "methods": [{"name": "random", "params": {"seed": 0}} if m == "random" else {"name": m}
                    for m in METHODS],
        "metrics": [{"name": m} for m in METRICS],
        "statistics": {"bootstrap": n_boot, "ci_method": "percentile", "test": "wilcoxon", "correction": "holm"},
        "acceptance": [{"kind": "scaled_ci_above", "metric": "relevance_rank_accuracy", "threshold": 0.1},
                       {"kind": "beats_random", "metric": "relevance_rank_accuracy", "alpha": 0.01}],
    })


@dataclass(frozen=True)
class Task:
    """What the verdict reads of a task (the real one holds images; the results stage does not)."""

    subject_ids: list
    name: str = "region_volume"
    kind: str = "classification"
    confound: dict = field(default_factory=dict)
    info: dict = field(default_factory=lambda: {"ground_truth": "segmentation", "regions": ["Hippocampus_L"]})

    @property
    def scorable(self):
        return np.ones(len(self.subject_ids), bool)

    def summary(self) -> dict:
        return dict(self.info)


@dataclass(frozen=True)
class Model:
    metrics: dict


def chunk(rng, c0: int, n: int, method: str) -> pd.DataFrame:
    """One attribute chunk's rows, as write_scores reads them from a chunk file."""
    sids = [f"sub-{i:06d}" for i in range(c0, c0 + n)]
    label = (np.arange(c0, c0 + n) % 2).astype(np.float64)
    cols = {"subject_id": [], "metric": [], "value": []}
    for met, chance in METRICS.items():
        v = np.clip(METHODS[method] + 0.1 * rng.standard_normal(n), 0, 1) if method != "oracle" else np.ones(n)
        for name, val in ((met, v), (f"{met}_chance", np.full(n, chance)), (f"{met}_norm", (v - chance) / (1 - chance))):
            cols["subject_id"] += sids
            cols["metric"] += [name] * n
            cols["value"].append(val)
    k = 3 * len(METRICS)
    return pd.DataFrame({"task": "hippocampus_volume", "subject_id": cols["subject_id"], "method": method,
                         "metric": cols["metric"], "value": np.concatenate(cols["value"]),
                         "label": np.tile(label, k), "prediction": np.tile(label, k), "target": np.tile(label, k)})


def _peak() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subjects", type=int, default=45000)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    a = ap.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="bench-results-"))
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [f"sub-{i:06d}" for i in range(a.subjects)]
    t0 = time.perf_counter()
    with ScoreWriter(out / SCORES_FILE, ("label", "prediction", "target")) as w:
        for m in METHODS:
            for c0 in range(0, a.subjects, CHUNK):
                w.write(chunk(rng, c0, min(CHUNK, a.subjects - c0), m))
    t1 = time.perf_counter()
    peaks = [_peak()]

    perf = {"auroc": 0.9, "auroc_ci_low": 0.89, "auroc_ci_high": 0.91, "accuracy": 0.85, "at_chance": False,
            "n_test": a.subjects}
    res = assemble_results(protocol(a.bootstrap), {}, {"hippocampus_volume": Task(ids)},
                           {"hippocampus_volume": Model(perf)}, ScoreTable(out / SCORES_FILE), {},
                           data_info={"source": "bench", "n_subjects": a.subjects})
    t2 = time.perf_counter()
    peaks.append(_peak())
    write_results(out, res, figures=lambda: FigureInputs(tasks={}))
    t3 = time.perf_counter()
    peak = _peak()
    size = {p: (out / p).stat().st_size / 1e6 for p in ("results.json", SCORES_FILE, "report/scores.csv")}
    print(f"subjects {a.subjects:,} × {len(METHODS)} methods × {len(METRICS)} metrics "
          f"({w.ref.n_rows:,} rows): write table {t1 - t0:.1f} s, statistics + verdicts {t2 - t1:.1f} s, "
          f"results.json + report {t3 - t2:.1f} s; results.json {size['results.json']:.2f} MB, "
          f"scores.parquet {size[SCORES_FILE]:.1f} MB, scores.csv {size['report/scores.csv']:.1f} MB; "
          f"peak RSS {peak:.0f} MiB (after the table {peaks[0]:.0f}, after the statistics {peaks[1]:.0f}); verdicts {[(m.method, m.verdict) for m in res.methods]}")
    return res, out


if __name__ == "__main__":
    main()
