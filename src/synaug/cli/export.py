"""`synaug export`: a synthetic store (optionally with its real images) as a Hugging Face image folder, class folders or WebDataset shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from synaug.cli.generate import _real_data
from synaug.errors import SynaugError
from synaug.export import DEFAULT_SHARD_SIZE, EXPORT_FORMATS, export_store


def register(app: typer.Typer) -> None:
    """Add `synaug export` to the main app."""
    app.command("export")(export)


def export(
    store: Annotated[Path, typer.Argument(help="Store folder written by `synaug generate`.")],
    format: Annotated[str, typer.Option("--format", help=f"{' | '.join(EXPORT_FORMATS)}: datasets image folder with metadata.jsonl, class folders with metadata.csv, or tar shards.")] = "hf",
    out: Annotated[Optional[Path], typer.Option("--out", help="New (or empty) folder to write the export to.")] = None,
    real_data: Annotated[Optional[str], typer.Option("--real-data", help="Also export the real images: index file (.json) of `synaug data longtail` or the options YAML given to `synaug plan`.")] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="webdataset: samples per tar shard.")] = DEFAULT_SHARD_SIZE,
    include_rejected: Annotated[bool, typer.Option("--include-rejected", help="A filtered store: also export the images its filter rejected (column kept).")] = False,
) -> None:
    """Export a store's images with label, prompt, seed, generator and scores; a `source` column tells real from synthetic."""
    if out is None:
        raise SynaugError(f"export needs --out FOLDER; e.g. `synaug export {store} --format {format} --out exported/`.")
    real = _real_data(real_data, "--real-data") if real_data is not None else None
    summary = export_store(store, out, format, real=real, shard_size=shard_size, include_rejected=include_rejected)
    what = f"{summary.files} shard{'s' if summary.files != 1 else ''}" if summary.format == "webdataset" else f"{summary.files} images"
    Console(highlight=False).print(
        f"exported {summary.synthetic} synthetic images" + (f" and {summary.real} real ones" if real is not None else "")
        + f" as {summary.format} ({what}) to {summary.out}",
        markup=False, soft_wrap=True,
    )
