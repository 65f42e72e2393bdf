"""`synaug demo`: the shipped config, what --full changes, and a run on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_generation import single_thread_torch  # noqa: F401  (fixture)
from pipeline_helpers import run_cli, tiny_config, tiny_fashion, write_config

from synaug.pipeline.ablations import GROUP_RECIPES, RECIPES
from synaug.pipeline.demo import demo_config, packaged_config

REPO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fashion-mnist-lt.yaml"


def test_the_packaged_config_is_the_repository_one():
    assert packaged_config().read_text() == REPO_CONFIG.read_text()


def test_demo_settings_and_what_full_changes():
    config, text, overrides = demo_config()
    assert config.runs.recipes == ["ce", "ce_crt", "synaug", "oracle"] and config.runs.seeds == [0]
    assert config.data.longtail.imbalance_factor == 100 and config.data.longtail.max_per_class == 500
    assert config.data.longtail.reserve == 0.5 and config.generator.spec == "embedded"
    assert (config.generator.scheduler, config.generator.steps, config.generator.guidance, config.generator.guidance_steps) == ("dpm++", 7, 1.5, 3)
    assert config.output == "synaug-demo" and overrides == ["output = synaug-demo"] and text == REPO_CONFIG.read_text()
    full, _, overrides = demo_config(full=True, out="elsewhere")
    assert full.runs.recipes == [name for name in RECIPES if name not in GROUP_RECIPES] and "fg" in full.runs.recipes
    assert full.runs.seeds == [0, 1, 2] and full.output == "elsewhere"
    assert (full.feedback.criteria, full.feedback.budgets) == (["entropy", "loss", "hardness"], [1.0, 0.5])
    assert "runs.seeds = [0, 1, 2]" in overrides


def test_fg_adds_the_entropy_rows_at_both_budgets():
    fg, _, overrides = demo_config(fg=True)
    assert fg.runs.recipes == ["ce", "ce_crt", "synaug", "oracle", "fg"] and fg.runs.seeds == [0]
    assert (fg.feedback.criteria, fg.feedback.budgets) == (["entropy"], [1.0, 0.5])
    assert overrides[1:] == ["runs.recipes = ['ce', 'ce_crt', 'synaug', 'oracle', 'fg']", "feedback.criteria = ['entropy']", "feedback.budgets = [1.0, 0.5]"]


@pytest.mark.usefixtures("single_thread_torch")
def test_demo_command_prints_the_table_and_writes_the_report(tmp_path, monkeypatch, capsys):
    tiny_fashion(tmp_path, monkeypatch)
    config = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "ignored", runs={"recipes": ["ce", "ce_crt", "synaug", "oracle"]}))
    out = tmp_path / "demo"
    code, stdout, err = run_cli(capsys, "demo", "--fg", "--out", out, "--config", config, "--no-progress")
    assert code == 0, err
    for row in ("CE", "CE + cRT", "SYNAuG", "balanced real", "FG entropy (budget 1.0)", "FG entropy (budget 0.5)", "overall", "few", "wall time"):
        assert row in stdout
    results = json.loads((out / "report" / "results.json").read_text())
    assert results["command"] == f"synaug demo --fg --out {out} --config {config}"
    assert results["overrides"][0] == f"output = {out}" and not (tmp_path / "ignored").exists()
    assert results["recipes"]["fg-entropy-0.5"]["sample_counts"] == {"real": 46, "synthetic": 27}
    assert "SYNAuG on Fashion-MNIST-LT" in (out / "report" / "report.md").read_text()
