"""`synaug filter`: score every image of a finished store and record which ones training keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from synaug.filters import FilterSpec, filter_store
from synaug.filters.reference import DEFAULT_CACHE
from synaug.generate.store import SyntheticStore


def register(app: typer.Typer) -> None:
    """Add `synaug filter` to the main app."""
    app.command("filter")(filter_command)


def filter_command(
    store: Annotated[Path, typer.Argument(help="A finished store of `synaug generate`.")],
    clip: Annotated[Optional[str], typer.Option("--clip", help="CLIP checkpoint (folder or hub id) scoring image-prompt similarity.")] = None,
    clip_threshold: Annotated[Optional[float], typer.Option("--clip-threshold", help="Keep CLIP similarities >= this (e.g. 0.3).")] = None,
    clip_keep_best: Annotated[Optional[int], typer.Option("--clip-keep-best", help="Then keep the K most similar per class (cell).")] = None,
    negative_prompt: Annotated[Optional[list[str]], typer.Option("--negative-prompt", help="Reject images closer to this text than to their prompt (repeatable).")] = None,
    classifier: Annotated[Optional[str], typer.Option("--classifier", help="Classifier checkpoint scoring the intended class, or 'reference' (Fashion-MNIST, trained on the reserved half).")] = None,
    confidence_threshold: Annotated[Optional[float], typer.Option("--confidence-threshold", help="Keep intended-class probabilities >= this.")] = None,
    confidence_keep_best: Annotated[Optional[int], typer.Option("--confidence-keep-best", help="Then keep the K most confident per class (cell).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    cache: Annotated[Path, typer.Option("--cache", help="Where the reference classifier is trained once and kept.")] = DEFAULT_CACHE,
    root: Annotated[Optional[str], typer.Option("--root", help="Fashion-MNIST folder for the reference classifier.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Filter a store: record each image's scores and whether training keeps it (no image is deleted).

    An over-generated plan (`synaug plan --overgenerate F`) keeps its needed count of the best images.
    """
    spec = FilterSpec(
        clip=clip, clip_threshold=clip_threshold, clip_keep_best=clip_keep_best, negative_prompts=list(negative_prompt or []),
        classifier=classifier, confidence_threshold=confidence_threshold, confidence_keep_best=confidence_keep_best, device=device,
    )
    target = SyntheticStore(store)
    target.check_complete()  # a missing, foreign or unfinished store is an error before any model loads
    result = filter_store(target, spec.steps(cache, root, progress))
    table = Table("class", "group", "scored", "kept", "needed")
    for cell in result.cells:
        table.add_row(cell["class"], cell["group"] or "", str(cell["scored"]), str(cell["kept"]), "" if cell["needed"] is None else str(cell["needed"]))
    console = Console(highlight=False)
    console.print(table)
    console.print(f"kept {result.kept} of {result.scored} images; scores and decisions in {result.path}", markup=False, soft_wrap=True)
