"""The ``synaug`` command: a thin layer over the stage modules.

Every command lives in a module of this package named after its stage; this file only
mounts them and turns a :class:`~synaug.errors.SynaugError` into one line on stderr.
"""

from __future__ import annotations

import sys

import click
import typer

from synaug.cli import data, demo, generate, generator, run, train
from synaug.errors import SynaugError

app = typer.Typer(
    help="Fix class and group imbalance with synthetic images from diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(generator.app, name="generator")
train.register(app)
generate.register(app)
run.register(app)
demo.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    try:
        app(args=argv, prog_name="synaug", standalone_mode=False)
    except SynaugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except click.exceptions.Abort:
        print("error: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
