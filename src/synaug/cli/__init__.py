"""The ``synaug`` command: a thin layer over the stage modules.

Every command lives in a module of this package named after its stage; this file only
mounts them and turns a :class:`~synaug.errors.SynaugError` into one line on stderr.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from synaug.cli import data, demo, export, filters, generate, generator, run, train
from synaug.errors import SynaugError, SynaugWarning

INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C
PACKAGE_FOLDER = Path(__file__).resolve().parents[1]

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
filters.register(app)
export.register(app)
run.register(app)
demo.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", SynaugWarning)
            warnings.showwarning = _print_warning
            status = app(args=argv, prog_name="synaug", standalone_mode=False)
    except SynaugError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NoArgsIsHelpError as exc:  # a bare `synaug` or `synaug data`: the help, as asked
        exc.show()
        return 0
    except UsageError as exc:  # unknown option or command, a missing or malformed value
        hint = f"; see '{exc.ctx.command_path} --help'" if exc.ctx is not None else ""
        print(f"error: {exc.format_message().rstrip('.')}{hint}.", file=sys.stderr)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        status = INTERRUPTED
    if status == INTERRUPTED:  # typer returns Ctrl-C as this exit status
        print("error: interrupted; re-run the same command to resume.", file=sys.stderr)
    return status if isinstance(status, int) else 0


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning of synaug's as one ``warning: ...`` line on stderr; other warnings as Python shows them."""
    if issubclass(category, SynaugWarning) or Path(filename).resolve().is_relative_to(PACKAGE_FOLDER):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning


if __name__ == "__main__":
    sys.exit(main())
