"""The `synaug` entry point: usage errors are one line, Ctrl-C is exit status 130 with a resume hint."""

from __future__ import annotations

import pytest
from data_writers import write_fashion_mnist

import synaug.cli.data
from synaug.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["summarize"], "No such command 'summarize'; see 'synaug --help'."),
        (["plan", "--bogus"], "No such option: --bogus"),
        (["plan", "--seed", "abc"], "Invalid value for '--seed'"),
        (["evaluate"], "Missing argument 'checkpoints'; see 'synaug evaluate --help'."),
        (["demo", "--ful"], "No such option: --ful"),
        (["generator", "check"], "Missing option '--out'; see 'synaug generator check --help'."),
    ],
)
def test_a_usage_error_is_one_line_with_the_help_to_read(capsys, argv, message):
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err


@pytest.mark.parametrize("argv", [[], ["data"]])
def test_a_bare_command_group_prints_its_help(capsys, argv):
    assert main(argv) == 0
    assert "Usage: synaug" in capsys.readouterr().out


def test_ctrl_c_is_status_130_with_a_resume_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fm", train_per_class=3, test_per_class=1)))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synaug.cli.data, "describe_dataset", interrupted)
    status = main(["data", "describe"])
    assert status == 130
    assert capsys.readouterr().err == "error: interrupted; re-run the same command to resume.\n"
