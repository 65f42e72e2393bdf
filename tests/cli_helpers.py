"""Running `synaug` in-process from tests: its exit status and output, and the one error line of a command that must fail."""

from __future__ import annotations

from synaug.cli import main


def run(argv, capsys) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``synaug ARGV``."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fails(argv, capsys) -> str:
    """The error of a command that must fail with status 2 and exactly one ``error: `` line, no traceback."""
    code, _, err = run(argv, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()
