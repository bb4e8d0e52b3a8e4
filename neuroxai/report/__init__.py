"""The audit report: HTML for a reviewer, JSON/CSV for machines."""
from .build import build_report, rebuild_report, summary_rows

__all__ = ["build_report", "rebuild_report", "summary_rows"]
