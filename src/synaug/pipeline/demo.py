"""`synaug demo`: SYNAuG on Fashion-MNIST-LT with the embedded generator, in minutes on a CPU.

The demo runs the config shipped inside the package (``synaug/configs/fashion-mnist-lt.yaml``,
a copy of ``configs/fashion-mnist-lt.yaml``): IF 100, at most 500 images per class drawn
from the half of Fashion-MNIST train the embedded generator never saw; rows CE, CE + cRT,
SYNAuG (fill + Mixup + cRT) and the balanced real oracle, seed 0. ``fg=True`` adds the
feedback-guided rows ``fg`` with the entropy criterion at SYNAuG's budget and at half of it.
``full=True`` runs every class recipe of :mod:`synaug.pipeline.ablations` over seeds 0, 1, 2, FG
with the criteria entropy, loss and hardness at both budgets; the synthetic images are made once
and shared by every seed.

``groups=True`` runs the group demo instead (``synaug/configs/spurious-fashion-mnist.yaml``, a
copy of ``configs/spurious-fashion-mnist.yaml``): the spurious-correlation benchmark (Fashion-MNIST
items on red / blue backgrounds, each class on its majority colour 95 % of the time, long-tailed
over classes) with the context-aware embedded generator ``embedded:colored-fashion-mnist``; rows
ERM, class-only SYNAuG, group-uniform SYNAuG, Group-DRO, ERM + DFR and group-uniform SYNAuG + DFR
over seeds 0, 1, 2, scored on the group-balanced test split (worst-group accuracy, means,
fairness gaps of the binary target).
"""

from __future__ import annotations

import importlib.resources
import shlex
from pathlib import Path

from synaug.config import load_yaml
from synaug.errors import SynaugError
from synaug.pipeline.ablations import RECIPES
from synaug.pipeline.config import RunConfig, parse_run_config
from synaug.pipeline.runner import PipelineResult, run_pipeline

DEMO_CONFIG = "fashion-mnist-lt.yaml"
GROUPS_CONFIG = "spurious-fashion-mnist.yaml"
FULL_RECIPES = [name for name, recipe in RECIPES.items() if not recipe.groups]
FULL_SEEDS = [0, 1, 2]
FULL_CRITERIA = ["entropy", "loss", "hardness"]
FG_CRITERIA = ["entropy"]
FG_BUDGETS = [1.0, 0.5]
DEFAULT_OUT = "synaug-demo"
DEFAULT_GROUPS_OUT = "synaug-demo-groups"


def packaged_config(name: str = DEMO_CONFIG) -> Path:
    """A demo's config file inside the installed package (the group demo's with ``GROUPS_CONFIG``)."""
    return Path(str(importlib.resources.files("synaug"))) / "configs" / name


def demo_config(
    full: bool = False, out: str | None = None, config: str | Path | None = None, fg: bool = False, groups: bool = False
) -> tuple[RunConfig, str, list[str]]:
    """(the run config, the config file's text, the overrides applied to it) of a demo run."""
    if groups and (full or fg):
        raise SynaugError("--groups runs the spurious-correlation demo, which --full and --fg do not extend; drop them or drop --groups.")
    path = Path(config) if config is not None else packaged_config(GROUPS_CONFIG if groups else DEMO_CONFIG)
    values = load_yaml(path)
    values["output"] = out or (DEFAULT_GROUPS_OUT if groups else DEFAULT_OUT)
    overrides = [f"output = {values['output']}"]
    runs, feedback = dict(values.get("runs") or {}), dict(values.get("feedback") or {})
    if full:
        runs.update(recipes=list(FULL_RECIPES), seeds=list(FULL_SEEDS))
        feedback.update(criteria=list(FULL_CRITERIA), budgets=list(FG_BUDGETS))
        overrides += [f"runs.recipes = {FULL_RECIPES}", f"runs.seeds = {FULL_SEEDS}", f"feedback.criteria = {FULL_CRITERIA}"]
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
    full: bool = False, out: str | None = None, config: str | Path | None = None, progress: bool = True, fg: bool = False,
    groups: bool = False,
) -> PipelineResult:
    """Run the demo (see the module doc) and write its report to ``OUT/report``."""
    run_config, text, overrides = demo_config(full, out, config, fg, groups)
    flags = (["--full"] if full else []) + (["--fg"] if fg else []) + (["--groups"] if groups else [])
    command = ["synaug", "demo", *flags] + (["--out", str(out)] if out else [])
    command += ["--config", str(config)] if config is not None else []
    if groups:
        title = "Group imbalance on spurious Fashion-MNIST (red / blue backgrounds) with the context-aware embedded generator"
    else:
        title = "SYNAuG on Fashion-MNIST-LT with the embedded generator"
        title += " (all recipes, 3 seeds)" if full else " (with feedback-guided synthesis)" if fg else ""
    name = str(config) if config is not None else f"synaug/configs/{GROUPS_CONFIG if groups else DEMO_CONFIG}"
    return run_pipeline(
        run_config, config_name=name, config_text=text, command=shlex.join(command), overrides=overrides, progress=progress, title=title,
    )
