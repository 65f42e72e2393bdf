"""`synaug demo`: SYNAuG on Fashion-MNIST-LT with the embedded generator (what `make demo` runs);
`synaug demo --groups`: group imbalance on the spurious Fashion-MNIST benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from synaug.cli.run import print_results
from synaug.pipeline.demo import DEFAULT_GROUPS_OUT, DEFAULT_OUT, run_demo


def register(app: typer.Typer) -> None:
    """Add `synaug demo` to the main app."""
    app.command("demo")(demo)


def demo(
    full: Annotated[bool, typer.Option("--full", help="Every recipe of the ablation set, FG with 3 criteria at 2 budgets, over seeds 0, 1, 2 (much longer).")] = False,
    fg: Annotated[bool, typer.Option("--fg", help="Add feedback-guided synthesis (entropy) at SYNAuG's budget and at half of it.")] = False,
    groups: Annotated[bool, typer.Option("--groups", help="Group imbalance instead: spurious Fashion-MNIST with the context generator; ERM, SYNAuG class-only / group-uniform, Group-DRO, DFR; seeds 0, 1, 2.")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help=f"Output folder (default: {DEFAULT_OUT}; with --groups {DEFAULT_GROUPS_OUT}).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="Run another config than the shipped one (Fashion-MNIST-LT, or spurious Fashion-MNIST with --groups).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """CE, CE + cRT, SYNAuG and the balanced oracle on Fashion-MNIST-LT (or, with --groups, the group recipes on spurious
    Fashion-MNIST); prints the table, writes the report."""
    result = run_demo(full=full, out=out, config=config, progress=progress, fg=fg, groups=groups)
    print_results(result)
    if full or groups:
        Console(highlight=False).print(f"`synaug demo {'--full' if full else '--groups'}` took {result.wall_seconds / 60:.1f} minutes.", markup=False)
