"""`synaug run`: walk the stages of :mod:`synaug.pipeline.stages` over the stage cache.

data → plan → feedback classifier → generate → train → cRT / DFR → evaluate → report. Each
stage's output is taken from the cache when its key (inputs and code) matches, else made;
``run(stage=...)`` computes only that stage, the ones before it must be cached.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from synaug.outputs import check_writable_folder
from synaug.pipeline.ablations import Recipe, expand_recipes
from synaug.pipeline.config import RunConfig, dump_run_config
from synaug.pipeline.context import STAGES, RunContext
from synaug.pipeline.stages.data import DataOutput, data_stage
from synaug.pipeline.stages.evaluate import evaluate_stage
from synaug.pipeline.stages.feedback import feedback_classifier_stage
from synaug.pipeline.stages.filter import filtered_store
from synaug.pipeline.stages.generate import StoreOutput, generate_stage, guided_stores
from synaug.pipeline.stages.plan import PlanOutput, extra_plan_stage, feedback_plan_stage, plan_stage
from synaug.pipeline.stages.report import Provenance, report_stage, run_result
from synaug.pipeline.stages.retrain import crt_stage, dfr_stage
from synaug.pipeline.stages.train import train_stage
from synaug.report import RunResult, StageTiming, aggregate
from synaug.report.results import RecipeSummary
from synaug.train.backbones import is_backbone_name
from synaug.train.models import build_model

__all__ = ["STAGES", "Pipeline", "PipelineResult", "run_pipeline"]


@dataclass
class PipelineResult:
    """What `synaug run` did: per-run results, per-recipe summaries, stage timings and the report."""

    runs: list[RunResult]
    summaries: list[RecipeSummary]
    timings: list[StageTiming]
    wall_seconds: float
    report: Path | None = None
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plans:
    fill: dict[str, PlanOutput]
    extra: PlanOutput | None
    budgets: dict[float, PlanOutput]


class Pipeline:
    """One run of a checked :class:`RunConfig`, and how it was asked for (for the report).

    Parameters
    ----------
    config : the run config.
    config_name, config_text : the config file's name and verbatim text (default: the config as YAML).
    command : the command line that reproduces the run.
    overrides : what the command changed in the config file (e.g. "runs.seeds = [0, 1, 2]").
    progress : show progress bars.
    title : the report's title.
    rerun_command : the command running one stage, named when ``run(stage=...)`` misses an earlier stage.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        config_name: str = "run config",
        config_text: str | None = None,
        command: str = "",
        overrides: Sequence[str] = (),
        progress: bool = True,
        title: str | None = None,
        rerun_command: Callable[[str], str] | None = None,
    ):
        self.config = config
        self.provenance = Provenance(
            config_name, dump_run_config(config) if config_text is None else config_text, command, list(overrides), title
        )
        self.progress = progress
        self.rerun_command = rerun_command

    def run(self, stage: str | None = None) -> PipelineResult:
        """Run every stage (or only ``stage``, its inputs taken from the cache) and return the results."""
        ctx = RunContext(
            self.config, config_name=self.provenance.config_name, target=stage, progress=self.progress, rerun_command=self.rerun_command
        )
        started = time.perf_counter()
        environment = _environment(ctx)
        feedback = self.config.feedback
        recipes = expand_recipes(self.config.runs.recipes, feedback.criteria, feedback.budgets)
        done = STAGES.index(stage) if stage is not None else len(STAGES)

        def result(runs: list[RunResult]) -> PipelineResult:
            return PipelineResult(runs, aggregate(runs), ctx.timings, time.perf_counter() - started, None, environment)

        data = data_stage(ctx)
        if done <= STAGES.index("data"):
            return result([])
        _check_backbone(ctx, data)
        plans = _plan_stages(ctx, data, recipes)
        guided = [recipe.guidance for recipe in recipes if recipe.guidance is not None]
        needs_classifier = any(guidance.criterion is not None for guidance in guided)
        if done <= STAGES.index("plan"):
            return result([])
        classifier = feedback_classifier_stage(ctx, data) if needs_classifier else None
        if done <= STAGES.index("feedback"):
            return result([])
        stores, extra = _generate_stages(ctx, plans, recipes, data)
        guided_by = guided_stores(ctx, guided, plans.budgets, data, stores.get(self.config.plan.cells), classifier) if guided else {}
        if done <= STAGES.index("generate"):
            return result([])
        runs = [
            run for recipe in recipes
            for run in _model_stages(ctx, recipe, data, guided_by.get(recipe.guidance) if recipe.guidance else stores.get(_cells(ctx, recipe)), extra)
        ]
        if done < STAGES.index("report"):
            return result(runs)
        environment["load_average_end"] = os.getloadavg()[0]
        wall = time.perf_counter() - started
        outcome = result(runs)
        outcome.report = report_stage(ctx, runs, data, stores, list(guided_by.values()), self.provenance, wall, environment)
        return outcome


def run_pipeline(config: RunConfig, *, stage: str | None = None, **options: Any) -> PipelineResult:
    """Run ``config`` (see :class:`Pipeline` for the options) and return its results."""
    check_writable_folder(config.output, "`output:` in the config (synaug demo: --out)")
    return Pipeline(config, **options).run(stage)


def _cells(ctx: RunContext, recipe: Recipe) -> str:
    """The cells the recipe's fill plan fills: its own, else plan.cells."""
    return recipe.cells or ctx.config.plan.cells


def _plan_stages(ctx: RunContext, data: DataOutput, recipes: Sequence[Recipe]) -> _Plans:
    """One fill plan per cells kind, extra images for replace / substitute, one budget plan per FG budget."""
    fill = {cells: plan_stage(ctx, data, cells) for cells in dict.fromkeys(_cells(ctx, r) for r in recipes if r.uses_synthetic)}
    main = fill.get(ctx.config.plan.cells)
    extra = extra_plan_stage(ctx, data, main, recipes) if any(r.uses_extra for r in recipes) else None
    budgets = dict.fromkeys(r.guidance.budget for r in recipes if r.guidance is not None)
    return _Plans(fill, extra, {budget: feedback_plan_stage(ctx, main, budget) for budget in budgets})


def _check_backbone(ctx: RunContext, data: DataOutput) -> None:
    """A pretrained backbone that cannot take the data's images is an error now, before any generation."""
    train = ctx.config.train
    if is_backbone_name(train.model):
        size = data.train.size or tuple(data.train.load(0).shape[1:])
        build_model(train.model, data.train.num_classes, data.train.channels, image_size=size, resolution=train.resolution)


def _generate_stages(
    ctx: RunContext, plans: _Plans, recipes: Sequence[Recipe], data: DataOutput
) -> tuple[dict[str, StoreOutput], StoreOutput | None]:
    """The unguided stores (one per cells kind) and the extra images' store."""
    unguided = dict.fromkeys(
        _cells(ctx, r) for r in recipes if r.uses_synthetic and (r.guidance is None or r.guidance.criterion is None)
    )
    stores = {cells: filtered_store(ctx, plans.fill[cells], data) for cells in unguided}
    extra = generate_stage(ctx, "generate-extra", plans.extra, data) if plans.extra is not None else None
    return stores, extra


def _model_stages(
    ctx: RunContext, recipe: Recipe, data: DataOutput, synthetic: StoreOutput | None, extra: StoreOutput | None
) -> list[RunResult]:
    """Train, re-train the last layer (cRT or DFR) and evaluate ``recipe`` at every seed, as far as the target stage."""
    runs = []
    for seed in ctx.config.runs.seeds:
        model = train_stage(ctx, recipe, seed, data, synthetic, extra)
        if ctx.target == "train":
            continue
        if recipe.crt:
            model = crt_stage(ctx, recipe, seed, model, data, synthetic, extra)
        if recipe.dfr:
            model = dfr_stage(ctx, recipe, seed, model, data)
        if ctx.target == "crt":
            continue
        metrics = evaluate_stage(ctx, recipe, seed, model, data)
        runs.append(run_result(ctx, recipe, seed, model, metrics, synthetic))
    return runs


def _environment(ctx: RunContext) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(ctx.device()),
        "load_average_start": os.getloadavg()[0],
    }
