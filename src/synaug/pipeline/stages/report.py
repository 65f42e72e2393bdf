"""The report stage: ``OUT/report/`` (report.md, results.json, plots), rewritten on every run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synaug.data.dataset import LabeledImages
from synaug.pipeline.ablations import Recipe, first_per_class
from synaug.pipeline.context import RunContext
from synaug.pipeline.stages.data import DataOutput
from synaug.pipeline.stages.generate import StoreOutput, store_images
from synaug.pipeline.stages.train import ModelOutput
from synaug.report import GroupFacts, ReportInputs, RunResult, StageTiming, write_report

GRID_PER_CLASS = 10


@dataclass
class Provenance:
    """How the run was asked for, as the report shows it: the config's name and text, the command
    that reproduces the run, what it changed in the config (e.g. "runs.seeds = [0, 1, 2]") and a title."""

    config_name: str
    config_text: str
    command: str
    overrides: list[str] = field(default_factory=list)
    title: str | None = None


def run_result(ctx: RunContext, recipe: Recipe, seed: int, model: ModelOutput, metrics: dict[str, Any], store: StoreOutput | None) -> RunResult:
    """One row of the results: the recipe at one seed, its metrics, the images it trained on and its training curves."""
    from synaug.train.checkpoint import read_history

    record = model.record
    return RunResult(
        recipe=recipe.name,
        label=recipe_label(ctx, recipe),
        seed=seed,
        metrics=metrics,
        sample_counts=dict(record.get("sample_counts", {})),
        synthetic_per_class=list(record.get("synthetic_per_class", [])),
        real_per_class=list(record.get("real_per_class", [])),
        train_seconds=record.get("train_seconds"),
        feedback=store.feedback if store is not None else None,
        history=read_history(model.checkpoint),
    )


def recipe_label(ctx: RunContext, recipe: Recipe) -> str:
    """The recipe's row label, with the settings of this run (replaced classes, substituted share, cRT images)."""
    runs = ctx.config.runs
    if recipe.name == "replace":
        spec = runs.replace_classes
        which = f"{spec}-shot classes" if isinstance(spec, str) else ", ".join(spec)
        return f"replace {which} by synthetic + Mixup"
    if recipe.name == "substitute":
        return f"substitute {100 * runs.substitute_fraction:.0f} % of real by synthetic + Mixup"
    if recipe.crt and ctx.config.crt.source != "real":
        return f"{recipe.label} (cRT on {ctx.config.crt.source})"
    return recipe.label


def report_stage(
    ctx: RunContext,
    runs: list[RunResult],
    data: DataOutput,
    stores: dict[str, StoreOutput],
    guided: list[StoreOutput],
    provenance: Provenance,
    wall_seconds: float,
    environment: dict[str, Any],
) -> Path:
    """Write the report and return its folder; the generator is named by the fill store (group runs:
    the class x group one), else by the first guided store."""
    ctx.say("report", "writing report.md, results.json and the plots")
    started = time.perf_counter()
    fill = stores.get("class-group") or stores.get(ctx.config.plan.cells)
    before = data.train.class_counts()
    after, generated, real = None, None, None
    if fill is not None and fill.root is not None:
        synthetic = store_images(fill, data, in_memory=False)
        after = (before + synthetic.class_counts()).tolist()
        if len(synthetic):
            generated, real = _grid_sample(synthetic), _grid_sample(data.train)
    generator = None
    named = next((store for store in [fill, *guided] if store is not None and store.generator_id), None)
    if named is not None:
        section = ctx.config.generator
        generator = {"id": named.generator_id, "settings": named.settings, "spec": section.spec, "seed": section.seed}
    inputs = ReportInputs(
        title=provenance.title or f"SYNAuG pipeline: {provenance.config_name}",
        command=provenance.command, config_name=provenance.config_name, config_text=provenance.config_text, runs=runs,
        class_names=list(data.train.class_names), counts_before=before.tolist(), timings=ctx.timings,
        wall_seconds=wall_seconds, seeds=list(ctx.config.runs.seeds), dataset=data.description,
        overrides=provenance.overrides, config=ctx.config.to_dict(), generator=generator, counts_after=after,
        generated_samples=generated, real_samples=real, environment=environment,
        groups=_group_facts(data, stores),
    )
    folder = write_report(inputs, ctx.out / "report")
    ctx.timings.append(StageTiming("report", "report.md, results.json, plots", time.perf_counter() - started))
    return folder


def _group_facts(data: DataOutput, stores: dict[str, StoreOutput]) -> GroupFacts | None:
    """Real and synthetic images per (class, group) cell of a group run (None for class data)."""
    if data.train.groups is None:
        return None
    filled = {cells: store_images(store, data, in_memory=False) for cells, store in stores.items()}
    return GroupFacts(
        class_names=list(data.train.class_names), group_names=list(data.train.group_names), real_cells=data.train.cell_counts().tolist(),
        filled_cells=filled["class-group"].cell_counts().tolist() if "class-group" in filled else None,
        filled_classes=filled["class"].class_counts().tolist() if "class" in filled else None,
    )


def _grid_sample(images: LabeledImages) -> LabeledImages:
    """The first GRID_PER_CLASS images of every class (of every (class, group) cell when there are groups), in memory."""
    cells = images.labels if images.groups is None else images.labels * len(images.group_names) + images.groups
    count = images.num_classes * (1 if images.groups is None else len(images.group_names))
    return images.subset(first_per_class(cells, np.full(count, GRID_PER_CLASS))).materialize()
