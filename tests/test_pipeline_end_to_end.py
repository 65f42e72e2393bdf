"""The whole pipeline through `synaug run` on a tiny config with a tiny embedded generator."""

from __future__ import annotations

import json

import pytest
import yaml
from fixtures_generation import build_tiny_embedded, single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import run_cli, stage_folders, tiny_config, tiny_fashion, write_config

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_synaug_run_produces_the_report(tmp_path, monkeypatch, capsys):
    tiny_fashion(tmp_path, monkeypatch)
    generator = build_tiny_embedded(tmp_path / "generator")
    out = tmp_path / "out"
    config = write_config(
        tmp_path / "tiny.yaml",
        tiny_config(
            out,
            generator={"spec": str(generator), "steps": 2, "dtype": "fp32"},
            runs={"recipes": ["ce", "ce_crt", "synaug", "oracle"], "seeds": [0, 1]},
            train={"tensorboard": str(tmp_path / "tb")},
        ),
    )
    code, stdout, err = run_cli(capsys, "run", config, "--no-progress")
    assert code == 0, err
    runs = sorted(p.name for p in (tmp_path / "tb").iterdir())  # one TensorBoard run per training (ce_crt reuses ce's)
    assert runs == ["ce-seed0", "ce-seed1", "oracle-seed0", "oracle-seed1", "synaug-seed0", "synaug-seed1"]
    assert all(len(list((tmp_path / "tb" / run).glob("events.out.tfevents.*"))) == 1 for run in runs)

    report = out / "report"
    assert {p.name for p in report.iterdir()} == {
        "report.md", "results.json", "results.png", "class_histogram.png", "per_class_accuracy.png",
        "confusion_matrix-ce-crt.png", "confusion_matrix-synaug.png", "samples.png",
        "curves-ce.png", "curves-ce_crt.png", "curves-synaug.png", "curves-oracle.png",
    }
    results = json.loads((report / "results.json").read_text())
    assert list(results["recipes"]) == ["ce", "ce_crt", "synaug", "oracle"]
    assert results["seeds"] == [0, 1] and len(results["runs"]) == 8
    assert results["generator"]["id"].startswith("embedded:generator@")
    assert results["counts_before"] == [10, 8, 6, 5, 4, 4, 3, 2, 2, 2] and results["counts_after"] == [10] * 10
    synaug = results["recipes"]["synaug"]
    assert synaug["sample_counts"] == {"real": 46, "synthetic": 54}
    assert results["recipes"]["oracle"]["sample_counts"] == {"real": 100, "synthetic": 0}
    assert synaug["std"]["top1"] is not None and len(synaug["per_class_mean"]) == 10
    assert {t["stage"] for t in results["stage_timings"]} == {"data", "plan", "generate", "train", "crt", "evaluate"}
    assert yaml.safe_load(results["config_text"]) == yaml.safe_load(config.read_text())

    markdown = (report / "report.md").read_text()
    assert f"synaug run {config}" in markdown and config.read_text().strip() in markdown
    assert "| CE + cRT | 46 | 0 |" in markdown and "| SYNAuG (fill + Mixup + cRT) | 46 | 54 |" in markdown
    assert "![samples](samples.png)" in markdown and "## Stage timings" in markdown
    assert "![SYNAuG (fill + Mixup + cRT): training curves](curves-synaug.png)" in markdown
    assert [len(run["history"]) for run in results["runs"]] == [1] * 8  # one epoch each, kept with the checkpoint
    for row in ("CE + cRT", "SYNAuG", "balanced real", "overall", "few"):
        assert row in stdout
    assert "report: " in stdout

    # one training per (training set, seed): ce and ce_crt share theirs
    folders = stage_folders(out)
    assert len(folders["train"]) == 6 and len(folders["crt"]) == 4 and len(folders["evaluate"]) == 8

    # the report alone is re-rendered from the cached stages
    code, stdout, err = run_cli(capsys, "run", config, "--stage", "report", "--no-progress")
    assert code == 0, err
    results = json.loads((report / "results.json").read_text())
    assert all(t["cached"] for t in results["stage_timings"]) and len(results["runs"]) == 8
