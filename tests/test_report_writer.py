"""The report folder: aggregation over seeds, the fidelity verdicts, the files and their atomic swap."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synaug.data.dataset import LabeledImages
from synaug.report import ReportInputs, RunResult, StageTiming, aggregate, fidelity_checks, write_report

CLASSES = ["a", "b", "c"]


def metrics(top1: float, few: float, per_class: list[float]) -> dict:
    """An evaluate()-shaped dict: class c has train count 200 / 50 / 5 (many / medium / few)."""
    groups = ["many", "medium", "few"]
    return {
        "num_samples": 30, "top1": top1, "balanced_accuracy": float(np.mean(per_class)), "many": per_class[0],
        "medium": per_class[1], "few": few, "thresholds": {"many": 100, "few": 20},
        "classes": [
            {"name": n, "train_count": t, "test_count": 10, "shot_group": g, "accuracy": a}
            for n, t, g, a in zip(CLASSES, [200, 50, 5], groups, per_class)
        ],
        "shot_groups": {g: [n] for g, n in zip(groups, CLASSES)},
        "confusion_matrix": np.eye(3, dtype=int).tolist(),
    }


def runs_for(recipe: str, label: str, top1s: list[float], fews: list[float], synthetic: int = 0) -> list[RunResult]:
    return [
        RunResult(recipe, label, seed, metrics(t, f, [90.0, 60.0, f]), {"real": 255, "synthetic": synthetic})
        for seed, (t, f) in enumerate(zip(top1s, fews))
    ]


def test_aggregate_gives_mean_and_sample_std_over_seeds():
    runs = runs_for("ce_crt", "CE + cRT", [70.0, 72.0, 74.0], [40.0, 44.0, 48.0])
    (summary,) = aggregate(runs)
    assert summary.seeds == [0, 1, 2]
    assert summary.mean["top1"] == pytest.approx(72.0)
    assert summary.std["top1"] == pytest.approx(2.0)  # sample std (ddof 1) of 70, 72, 74
    assert summary.std["few"] == pytest.approx(4.0)
    assert summary.per_class_mean == pytest.approx([90.0, 60.0, 44.0])
    assert summary.cell("top1") == "72.0 ± 2.0"
    (single,) = aggregate(runs[:1])
    assert single.std["top1"] is None and single.cell("top1") == "70.0"


def test_fidelity_checks_state_whether_the_targets_are_met():
    base = runs_for("ce_crt", "CE + cRT", [70.0, 71.0, 72.0], [40.0, 41.0, 42.0])
    oracle = runs_for("oracle", "oracle", [90.0, 90.0, 90.0], [95.0, 95.0, 95.0])
    strong = runs_for("synaug", "SYNAuG", [82.0, 83.0, 84.0], [60.0, 61.0, 62.0], synthetic=100)
    lines = fidelity_checks(aggregate(base + strong + oracle))
    assert "overall: +12.0 points; 2 std = 2.0: target met" in lines[0]
    assert "few: +20.0 points; 2 std = 2.0: target met" in lines[1]
    assert "closed: 63 %" in lines[2] and "met" in lines[2]  # (83 - 71) / (90 - 71)
    weak = runs_for("synaug", "SYNAuG", [71.0, 73.0, 75.0], [40.0, 44.0, 48.0], synthetic=100)
    lines = fidelity_checks(aggregate(base + weak + oracle))
    assert "target NOT met" in lines[0] and "target NOT met" in lines[1] and "NOT met" in lines[2]
    assert fidelity_checks(aggregate(base)) == []


def inputs(tmp_path, runs: list[RunResult]) -> ReportInputs:
    rng = np.random.default_rng(0)
    real = LabeledImages(labels=[0, 0, 1, 2], class_names=CLASSES, images=torch.from_numpy(rng.integers(0, 255, (4, 1, 8, 8), dtype=np.uint8)))
    generated = LabeledImages(
        labels=[1, 2, 2], class_names=CLASSES, images=torch.from_numpy(rng.integers(0, 255, (3, 1, 8, 8), dtype=np.uint8)),
        is_synthetic=np.ones(3, dtype=bool),
    )
    return ReportInputs(
        title="Test report", command="synaug run tiny.yaml", config_name="tiny.yaml", config_text="runs:\n  seeds: [0, 1, 2]\n",
        runs=runs, class_names=CLASSES, counts_before=[200, 50, 5], counts_after=[200, 200, 200],
        timings=[StageTiming("generate", "345 images", 12.5), StageTiming("train", "ce", 3.0, cached=True)],
        wall_seconds=20.0, seeds=[0, 1, 2], overrides=["output = out"], generator={"id": "embedded:x@123", "settings": {"steps": 20}},
        generated_samples=generated, real_samples=real, environment={"cpu_count": 2, "torch_threads": 2, "load_average_start": 3.0, "load_average_end": 4.0},
    )


def test_write_report_writes_markdown_json_and_plots(tmp_path):
    runs = runs_for("ce_crt", "CE + cRT", [70.0, 72.0, 74.0], [40.0, 44.0, 48.0]) + runs_for(
        "synaug", "SYNAuG", [80.0, 81.0, 82.0], [60.0, 61.0, 62.0], synthetic=345
    )
    folder = write_report(inputs(tmp_path, runs), tmp_path / "report")
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "report.md", "results.json", "results.png", "class_histogram.png", "per_class_accuracy.png",
        "confusion_matrix-ce-crt.png", "confusion_matrix-synaug.png", "samples.png",
    }
    markdown = (folder / "report.md").read_text()
    assert "| CE + cRT | 255 | 0 | 72.0 ± 2.0 |" in markdown
    assert "| SYNAuG | 255 | 345 | 81.0 ± 1.0 |" in markdown
    assert "synaug run tiny.yaml" in markdown and "runs:\n  seeds: [0, 1, 2]" in markdown
    assert "embedded:x@123" in markdown and "| generate | 345 images | 12.5 |" in markdown
    results = json.loads((folder / "results.json").read_text())
    assert results["recipes"]["synaug"]["mean"]["few"] == pytest.approx(61.0)
    assert results["recipes"]["ce_crt"]["std"]["top1"] == pytest.approx(2.0)
    assert len(results["runs"]) == 6 and results["stage_timings"][1]["cached"] is True
    assert results["config_text"].startswith("runs:")


def test_a_new_report_replaces_the_old_one_whole(tmp_path):
    first = runs_for("ce", "CE", [50.0], [10.0])
    write_report(inputs(tmp_path, first), tmp_path / "report")
    (tmp_path / "report" / "stale.png").write_bytes(b"old")
    write_report(inputs(tmp_path, runs_for("ce", "CE", [60.0], [20.0])), tmp_path / "report")
    assert not (tmp_path / "report" / "stale.png").exists()
    assert json.loads((tmp_path / "report" / "results.json").read_text())["recipes"]["ce"]["mean"]["top1"] == 60.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folder left


def test_column_means_skip_missing_values_without_warnings():
    import warnings

    from synaug.report.results import _nanmean

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _nanmean([[1.0, None, None], [3.0, 4.0, None]]) == [2.0, 4.0, None]
