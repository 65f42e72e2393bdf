"""Top-level `synaug` commands of the train stage."""

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
