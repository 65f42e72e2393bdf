"""Report stage: results aggregated over seeds, written as report.md, results.json and PNGs."""

from synaug.report.results import RecipeSummary, RunResult, StageTiming, aggregate, fidelity_checks, group_checks
from synaug.report.writer import GroupFacts, ReportInputs, group_results_table, results_table, write_report

__all__ = [
    "GroupFacts",
    "RecipeSummary",
    "ReportInputs",
    "RunResult",
    "StageTiming",
    "aggregate",
    "fidelity_checks",
    "group_checks",
    "group_results_table",
    "results_table",
    "write_report",
]
