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
    steps = rows[0]["guided_steps"]  # every 1 guides every step
    for r in rows:  # the cost of one guided step, in plain steps, follows from the measured ratio
        assert r["batch"] == 2 and r["guided_step_cost"] == pytest.approx(1 + (r["ratio"] - 1) * steps / r["guided_steps"])
    assert "guided/unguided" in capsys.readouterr().out and (tmp_path / "rows.json").is_file()


def test_feedback_overhead_benchmark_reports_every_ratio(capsys, tmp_path):
    generator = build_tiny_embedded(tmp_path / "generator")
    checkpoint = tiny_checkpoint(tmp_path / "checkpoint", FASHION_CLASSES)
    ratios = load("feedback_overhead").main(["--generator", str(generator), "--checkpoint", str(checkpoint), "--images", "2",
                                             "--steps", "2", "--repeats", "1"])
    assert set(ratios) == {"unguided", "x0, every 5", "x0, every 1", "full, every 5", "full, every 1"}
    assert ratios["unguided"] == 1.0  # each ratio is over the unguided run of the same round
    assert "default settings (x0, every 5th step)" in capsys.readouterr().out


def test_fg_diagnostics_describe_every_store_of_a_run(capsys, tmp_path, monkeypatch):
    from pipeline_helpers import tiny_config, tiny_fashion

    from synaug.pipeline import parse_run_config, run_pipeline

    tiny_fashion(tmp_path, monkeypatch)
    out = tmp_path / "run"
    config = tiny_config(
        out, generator={"spec": str(build_tiny_embedded(tmp_path / "generator")), "steps": 2, "dtype": "fp32"},
        runs={"recipes": ["ce", "synaug", "fill_budget", "fg"]}, feedback={"budgets": [0.5], "every": 1},
    )
    run_pipeline(parse_run_config(config), config_name="tiny.yaml", config_text="", command="synaug run tiny.yaml", progress=False)
    argv = [str(out), "--oracle-cache", str(tmp_path / "oracle"), "--oracle-per-class", "10", "--reference-per-class", "5"]
    figures = load("fg_diagnostics").main(argv)
    assert list(figures) == [
        "real (generator's half, 5 per class)", "SYNAuG fill (unguided)", "unguided, budget 0.5 (fill_budget)",
        "FG entropy, budget 0.5 (x0, every 1, scale 0.03, CE)",
    ]
    assert [figures[row]["all"]["images"] for row in figures] == [50, 54, 27, 27]
    for row in figures.values():
        assert 0 <= row["few"]["oracle_accuracy"] <= 100 and row["few"]["nn_distance"] > 0 and row["all"]["ce_entropy"] > 0
    assert "What guidance did" in capsys.readouterr().out


def test_exemplar_routes_cost_benchmark_times_every_route(capsys, tmp_path, monkeypatch):
    from data_writers import write_fashion_mnist
    from fixtures_exemplar_generator import build_tiny_exemplar_embedded

    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(write_fashion_mnist(tmp_path / "fashion", train_per_class=40, test_per_class=1)))
    argv = ["--generator", str(build_tiny_embedded(tmp_path / "g")), "--exemplar-generator", str(build_tiny_exemplar_embedded(tmp_path / "e")),
            "--checkpoint", str(tiny_checkpoint(tmp_path / "checkpoint", FASHION_CLASSES)), "--images", "2", "--steps", "2",
            "--repeats", "1", "--strengths", "0.5,1", "--max-per-class", "10", "--imbalance-factor", "2"]
    ratios = load("exemplar_routes_cost").main(argv)
    routes = ["plain", "img2img 0.5", "img2img 1", "exemplar-conditioned"]
    assert list(ratios) == routes + [f"{route} + FG" for route in routes]
    assert ratios["plain"] == 1.0  # each ratio is over the plain run of the same round
    out = capsys.readouterr().out
    assert "img2img 0.5 " in out and "exemplar-conditioned + FG" in out
