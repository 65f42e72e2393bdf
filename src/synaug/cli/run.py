"""`synaug run CONFIG.yaml`: the whole pipeline from one config file, each stage cached.

``synaug run CONFIG --stage STAGE`` runs one stage only (its inputs must be cached);
``--out`` replaces the config's output folder. The report lands in ``OUT/report/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from synaug.api.running import run as run_config
from synaug.pipeline import STAGES, PipelineResult
from synaug.report.results import GROUP_METRIC_LABELS, GROUP_METRICS, METRIC_LABELS

TABLE_METRICS = ("top1", "many", "medium", "few")


def register(app: typer.Typer) -> None:
    """Add `synaug run` to the main app."""
    app.command("run")(run)


def run(
    config: Annotated[Path, typer.Argument(help="Run config (YAML): data, plan, generator, train, crt, group_dro, dfr, evaluate, runs, feedback, output.")],
    stage: Annotated[Optional[str], typer.Option("--stage", help=f"Run only this stage ({', '.join(STAGES)}); earlier ones must be cached.")] = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Output folder (replaces the config's `output`).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Run the SYNAuG pipeline: data, plan, generate, train, cRT, evaluate, report."""
    print_results(run_config(config, stage=stage, out=out, progress=progress))


def print_results(result: PipelineResult, console: Console | None = None) -> None:
    """The results table (mean ± std over seeds; group runs: worst-group, means and fairness gaps), stage times and where the report is."""
    console = console or Console(highlight=False)
    if result.summaries:
        seeds = sorted({seed for summary in result.summaries for seed in summary.seeds})
        grouped = result.summaries[0].grouped
        metrics, labels = (GROUP_METRICS, GROUP_METRIC_LABELS) if grouped else (TABLE_METRICS, METRIC_LABELS)
        what = "accuracy % over the test groups, gaps in points" if grouped else "accuracy % on the test set"
        table = Table(title=Text(f"{what}, {'mean ± std over seeds ' if len(seeds) > 1 else 'seed '}{', '.join(map(str, seeds))}"))
        table.add_column("recipe", overflow="fold")
        if not grouped:  # group runs: five metric columns; the image counts are in the report
            table.add_column("real", justify="right")
            table.add_column("synthetic", justify="right")
        for metric in metrics:
            table.add_column(labels[metric], justify="right", overflow="fold")
        for summary in result.summaries:
            counts = summary.sample_counts
            sizes = [] if grouped else [f"{counts.get('real', 0):,}", f"{counts.get('synthetic', 0):,}"]
            table.add_row(Text(summary.label), *sizes, *(summary.cell(metric) for metric in metrics))
        console.print(table)
    totals: dict[str, list[float]] = {}
    for timing in result.timings:
        spent = totals.setdefault(timing.stage, [0.0, 0.0])
        spent[1 if timing.cached else 0] += timing.seconds
    parts = [f"{stage} {computed:.0f} s" + (f" (+{cached:.0f} s cached)" if cached else "") for stage, (computed, cached) in totals.items()]
    console.print(f"stages: {'; '.join(parts)}; wall time {result.wall_seconds:.0f} s", markup=False, soft_wrap=True)
    if result.report is not None:
        console.print(f"report: {result.report / 'report.md'}", markup=False, soft_wrap=True)
