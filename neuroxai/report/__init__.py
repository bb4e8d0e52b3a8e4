"""The audit report: HTML for a clinical reviewer, JSON/CSV for machines.

``build_report(results, figures, out_dir) -> Path`` writes ``index.html`` (self-contained),
``results.json``, ``results.schema.json``, ``summary.csv``, ``scores.csv`` and ``figures/*.png``;
``rebuild_report(run_dir) -> Path`` rebuilds ``run_dir/report`` from ``results.json`` and
``figures.npz``. :mod:`neuroxai.report.schema` holds the typed results every layer reads. The
report layer imports no model, attribution or protocol code.
"""
from .schema import SCHEMA_VERSION, Results, json_schema, read_results, validate_results

_BUILD = ("build_report", "rebuild_report", "summary_rows", "verdict_rows")


def __getattr__(name: str):
    # The page builder pulls in matplotlib and jinja2: load it when a report is built, not when a
    # stage only needs the results' types.
    if name in _BUILD:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_BUILD, "SCHEMA_VERSION", "Results", "json_schema", "read_results", "validate_results"]
