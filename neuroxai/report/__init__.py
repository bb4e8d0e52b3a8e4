"""The audit report: HTML for a clinical reviewer, JSON/CSV for machines.

``build_report(results, figures, out_dir) -> Path`` writes ``index.html`` (self-contained),
``results.json``, ``results.schema.json``, ``summary.csv``, ``scores.csv`` and ``figures/*.png``;
``rebuild_report(run_dir) -> Path`` rebuilds ``run_dir/report`` from ``results.json`` and
``figures.npz``. The report layer imports no model, attribution or protocol code.
"""
from .build import build_report, rebuild_report, summary_rows, verdict_rows
from .schema import SCHEMA_VERSION, json_schema, validate_results

__all__ = ["build_report", "rebuild_report", "summary_rows", "verdict_rows", "SCHEMA_VERSION",
           "json_schema", "validate_results"]
