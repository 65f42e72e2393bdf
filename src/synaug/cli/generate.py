"""Top-level `synaug` commands of the generate stage."""

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
