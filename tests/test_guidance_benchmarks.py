"""Smoke tests: both feedback-guidance benchmarks run end to end on CPU with tiny settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fixtures_generation import FASHION_CLASSES, build_tiny_embedded, single_thread_torch  # noqa: F401 (fixture)
from fixtures_guidance import tiny_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread_torch")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_feedback_benchmark_runs_tiny_on_cpu(capsys, tmp_path):
    rows = load("gpu_feedback").main(["--tiny", "--batch", "2", "--every", "1", "3", "--out", str(tmp_path / "rows.json")])
    assert [(r["path"], r["every"], r["guided_steps"]) for r in rows] == [("x0", 1, 3), ("x0", 3, 1), ("full", 1, 3), ("full", 3, 1)]
    assert all(r["batch"] == 2 and r["ratio"] > 0 and r["guided_step_cost"] > 0 for r in rows)
    assert "guided/unguided" in capsys.readouterr().out and (tmp_path / "rows.json").is_file()


def test_feedback_overhead_benchmark_reports_every_ratio(capsys, tmp_path):
    generator = build_tiny_embedded(tmp_path / "generator")
    checkpoint = tiny_checkpoint(tmp_path / "checkpoint", FASHION_CLASSES)
    ratios = load("feedback_overhead").main(["--generator", str(generator), "--checkpoint", str(checkpoint), "--images", "2",
                                             "--steps", "2", "--repeats", "1"])
    assert set(ratios) == {"unguided", "x0, every 5", "x0, every 1", "full, every 5", "full, every 1"}
    assert ratios["unguided"] == 1.0 and all(ratio > 0 for ratio in ratios.values())
    assert "default settings (x0, every 5th step)" in capsys.readouterr().out
