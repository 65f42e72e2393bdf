"""`synaug demo`: SYNAuG on Fashion-MNIST-LT with the embedded generator, in minutes on a CPU.

The demo runs the config shipped inside the package (``synaug/configs/fashion-mnist-lt.yaml``,
a copy of ``configs/fashion-mnist-lt.yaml``): IF 100, at most 500 images per class drawn
from the half of Fashion-MNIST train the embedded generator never saw; rows CE, CE + cRT,
SYNAuG (fill + Mixup + cRT) and the balanced real oracle, seed 0. ``fg=True`` adds the
feedback-guided rows ``fg`` with the entropy criterion at SYNAuG's budget and at half of it.
``full=True`` runs every recipe of :mod:`synaug.pipeline.ablations` over seeds 0, 1, 2, FG with
the criteria entropy, loss and hardness at both budgets; the synthetic images are made once
and shared by every seed.
"""

from __future__ import annotations

import importlib.resources
import shlex
from pathlib import Path

from synaug.config import load_yaml
from synaug.pipeline.ablations import RECIPES
from synaug.pipeline.config import RunConfig, parse_run_config
from synaug.pipeline.stages import PipelineResult, run_pipeline

DEMO_CONFIG = "fashion-mnist-lt.yaml"
FULL_SEEDS = [0, 1, 2]
FULL_CRITERIA = ["entropy", "loss", "hardness"]
FG_CRITERIA = ["entropy"]
FG_BUDGETS = [1.0, 0.5]
DEFAULT_OUT = "synaug-demo"


def packaged_config() -> Path:
    """The demo's config file inside the installed package."""
    return Path(str(importlib.resources.files("synaug"))) / "configs" / DEMO_CONFIG


def demo_config(
    full: bool = False, out: str | None = None, config: str | Path | None = None, fg: bool = False
) -> tuple[RunConfig, str, list[str]]:
    """(the run config, the config file's text, the overrides applied to it) of a demo run."""
    path = Path(config) if config is not None else packaged_config()
    values = load_yaml(path)
    overrides = [f"output = {out or DEFAULT_OUT}"]
    values["output"] = out or DEFAULT_OUT
    runs, feedback = dict(values.get("runs") or {}), dict(values.get("feedback") or {})
    if full:
        runs.update(recipes=list(RECIPES), seeds=list(FULL_SEEDS))
        feedback.update(criteria=list(FULL_CRITERIA), budgets=list(FG_BUDGETS))
        overrides += [f"runs.recipes = {list(RECIPES)}", f"runs.seeds = {FULL_SEEDS}", f"feedback.criteria = {FULL_CRITERIA}"]
    elif fg:
        recipes = [*runs.get("recipes", RunConfig().runs.recipes), "fg"]
        runs["recipes"] = list(dict.fromkeys(recipes))
        feedback.update(criteria=list(FG_CRITERIA), budgets=list(FG_BUDGETS))
        overrides += [f"runs.recipes = {runs['recipes']}", f"feedback.criteria = {FG_CRITERIA}"]
    if full or fg:
        values.update(runs=runs, feedback=feedback)
        overrides.append(f"feedback.budgets = {FG_BUDGETS}")
    return parse_run_config(values, where=str(path)), path.read_text(), overrides


def run_demo(
    full: bool = False, out: str | None = None, config: str | Path | None = None, progress: bool = True, fg: bool = False
) -> PipelineResult:
    """Run the demo (see the module doc) and write its report to ``OUT/report``."""
    run_config, text, overrides = demo_config(full, out, config, fg)
    command = ["synaug", "demo"] + (["--full"] if full else []) + (["--fg"] if fg else []) + (["--out", str(out)] if out else [])
    command += ["--config", str(config)] if config is not None else []
    title = "SYNAuG on Fashion-MNIST-LT with the embedded generator"
    title += " (all recipes, 3 seeds)" if full else " (with feedback-guided synthesis)" if fg else ""
    return run_pipeline(
        run_config, config_name=str(config) if config is not None else f"synaug/configs/{DEMO_CONFIG}", config_text=text,
        command=shlex.join(command), overrides=overrides, progress=progress, title=title,
    )
