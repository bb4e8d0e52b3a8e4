"""The tail every run ends with, a validation run's and an audit's alike: statistics and
verdicts (:func:`~neuroxai.protocol.verdict.assemble_results`) → ``results.json`` → the report."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..atomic import atomic_write
from ..report.figure_inputs import FigureInputs
from ..report.schema import Results
from .context import RunResult
from .verdict import assemble_results


def write_results(out: Path, results: Results, *, figures: Callable[[], FigureInputs], report: bool = True,
                  write: bool = True) -> RunResult:
    """Write what a run leaves: ``out/results.json``, its score table ``out/scores.parquet`` (already
    there when the runner streamed it) and, with ``report``, ``out/figures.npz`` (so ``neuroxai
    report`` can rebuild it) and ``out/report/`` from the figure inputs ``figures()`` returns
    (called only then).
    ``write=False`` (a torchrun rank other than 0) writes nothing and returns the results."""
    if not write:
        return RunResult(out, None, results, results.overall.exit_code)
    from ..report.build import place_score_table  # here: the report module loads matplotlib

    place_score_table(results, out)  # already there when the runner or the audit streamed it
    atomic_write(out / "results.json", results.to_json())
    report_dir = None
    if report:
        from ..report import build_report

        report_dir = out / "report"
        figs = figures()
        figs.save(out / "figures.npz")
        build_report(results, figs, report_dir)
    return RunResult(out, report_dir, results, results.overall.exit_code)


def conclude(out: Path, proto, prov: dict, tasks: dict, models: dict, scores: dict, sanity: dict | None = None, *,
             figures: Callable[[], FigureInputs], report: bool = True, write: bool = True, **assemble) -> RunResult:
    """Judge the scores and write the results and the report (:func:`write_results`).
    ``assemble``: :func:`~neuroxai.protocol.verdict.assemble_results`'s keyword arguments
    (``data_info``, ``validity``, ``profiles``, ``kind``, ``audit``)."""
    results = assemble_results(proto, prov, tasks, models, scores, sanity or {}, **assemble)
    return write_results(out, results, figures=figures, report=report, write=write)
