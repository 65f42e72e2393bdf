"""Prompt sources in run configs: plan.template_set and plan.descriptions, their cache keys and their errors."""

from __future__ import annotations

import json

from pipeline_helpers import error_line, run_cli, stage_folders, tiny_config, tiny_fashion, write_config

from synaug.data.fashion_mnist import FASHION_MNIST_CLASSES
from synaug.plan import template_set


def plan_file(out, digest: str) -> dict:
    return json.loads((out / "stages" / f"plan-{digest}" / "plan.json").read_text())


def test_run_configs_take_a_template_set_or_a_descriptions_file(tmp_path, monkeypatch, capsys):
    tiny_fashion(tmp_path, monkeypatch)
    out = tmp_path / "out"
    config = write_config(tmp_path / "set.yaml", tiny_config(out, plan={"templates": [], "template_set": "modifier"}))
    assert run_cli(capsys, "run", config, "--stage", "data", "--no-progress")[0] == 0
    assert run_cli(capsys, "run", config, "--stage", "plan", "--no-progress")[0] == 0
    (first,) = stage_folders(out)["plan"]
    assert plan_file(out, first.removeprefix("plan-"))["templates"] == template_set("modifier")

    descriptions = tmp_path / "prompts.txt"
    descriptions.write_text("".join(f"{name}: a studio photo of one {name.lower()}\n" for name in FASHION_MNIST_CLASSES))
    config = write_config(tmp_path / "described.yaml", tiny_config(out, plan={"templates": [], "descriptions": str(descriptions)}))
    assert run_cli(capsys, "run", config, "--stage", "plan", "--no-progress")[0] == 0
    second = [f for f in stage_folders(out)["plan"] if f != first]
    assert len(second) == 1
    plan = plan_file(out, second[0].removeprefix("plan-"))
    assert plan["descriptions"]["Sandal"] == ["a studio photo of one sandal"]

    descriptions.write_text(descriptions.read_text().replace("one sandal", "one summer sandal"))  # an edited file: a new plan
    assert run_cli(capsys, "run", config, "--stage", "plan", "--no-progress")[0] == 0
    assert len(stage_folders(out)["plan"]) == 3

    descriptions.write_text(descriptions.read_text().replace("Sandal:", "Sandals:"))
    line = error_line(capsys, "run", config, "--stage", "plan", "--no-progress")
    assert "names class 'Sandals', which the dataset does not have; did you mean 'Sandal'?" in line


def test_conflicting_or_missing_prompt_sources_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        ({"template_set": "modifier"}, "give one source of prompts, not both templates and template_set"),
        ({"templates": [], "template_set": "fancy"}, "unknown template set 'fancy'"),
        ({"templates": [], "descriptions": str(tmp_path / "none.txt")}, "plan.descriptions file"),
        ({"descriptions": str(tmp_path)}, "plan.descriptions are the prompts themselves; drop plan.templates"),
    ]
    for plan, needle in cases:
        config = write_config(tmp_path / "bad.yaml", tiny_config(out, plan=plan))
        line = error_line(capsys, "run", config)
        assert line.startswith(f"error: {config}: ") and needle in line
    assert not out.exists()
