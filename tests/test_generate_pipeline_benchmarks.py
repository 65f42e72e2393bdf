"""Smoke tests: both generation benchmarks run end to end on CPU with tiny settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fixtures_generation import single_thread_torch  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_generation_benchmark_runs_tiny_on_cpu(capsys):
    rows = load("gpu_generation").main(["--tiny", "--batch", "2"])
    (batch, ours, bound, ratio), = rows
    assert batch == 2 and ratio == pytest.approx(ours / bound)  # rates: ours/bound of the rates is bound/ours of the times
    assert "ours/bound" in capsys.readouterr().out.splitlines()[-2]


def test_generation_overhead_benchmark_reports_a_ratio(capsys):
    rows = dict(load("generation_overhead").main(["--batch", "4", "--steps", "2", "--repeats", "1", "--channels", "8", "16"]))
    assert list(rows) == ["loop ms/image", "bare UNet ms/image", "loop / bare"]
    assert "loop / bare" in capsys.readouterr().out
