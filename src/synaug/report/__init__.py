"""Report stage: results aggregated over seeds, written as report.md, results.json and PNGs."""

from synaug.report.results import RecipeSummary, RunResult, StageTiming, aggregate, fidelity_checks
from synaug.report.writer import ReportInputs, results_table, write_report

__all__ = [
    "RecipeSummary",
    "ReportInputs",
    "RunResult",
    "StageTiming",
    "aggregate",
    "fidelity_checks",
    "results_table",
    "write_report",
]
