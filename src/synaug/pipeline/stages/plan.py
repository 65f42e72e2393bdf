"""The plan stages: how many synthetic images of each class (or class x group cell), with which prompts.

``plan``: the fill plan of one cells kind (class, or class-group on group data). ``plan-extra``:
the extra images the ``replace`` / ``substitute`` recipes swap for real ones. ``plan-feedback``:
the FG plan of one budget, a fraction of the fill plan split by shortfall. Each is cached as
``plan.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synaug.config import to_dict
from synaug.errors import SynaugError
from synaug.pipeline.ablations import Recipe, budget_text, extra_counts, replace_class_ids
from synaug.pipeline.context import RunContext
from synaug.pipeline.stages.data import DataOutput
from synaug.plan.descriptions import read_descriptions
from synaug.plan.planner import SynthesisPlan, make_plan, plan_for_dataset

CODE = ("synaug.plan", "synaug.pipeline.ablations", "synaug.pipeline.stages.plan")
FEEDBACK_CODE = (*CODE, "synaug.guidance.budgets")
PLAN_FILE = "plan.json"
EXTRA_SEED_OFFSET = 1_000_003  # the extra plan's run seed: the fill plan's plus this, so its images differ
GROUP_PLAN_KEYS = ("cells", "group_templates", "group_prompt_names")
PROMPT_SOURCE_KEYS = ("template_set", "descriptions")  # in the key only when set, so other runs keep their digests


@dataclass
class PlanOutput:
    """A plan and the digest of the stage that made it."""

    digest: str
    plan: SynthesisPlan


def plan_stage(ctx: RunContext, data: DataOutput, cells: str) -> PlanOutput:
    """The fill plan over ``cells``: classes, or the (class, group) cells of group data."""
    section = ctx.config.plan
    names = prompt_names(ctx, data.train.class_names)
    if not data.train.in_memory and data.train.size is None:
        height, width = data.train.load(0).shape[1:]
        raise SynaugError(
            f"{ctx.config_name}: synthetic images must match the real ones' size; set data.size for file-backed data "
            f"(its first image is {width} x {height}: data.size {max(height, width)} keeps that resolution)."
        )
    train = data.train if cells == "class-group" else replace(data.train, groups=None, group_names=None)
    grouped = train.groups is not None
    described = None if section.descriptions is None else read_descriptions(section.descriptions, train.class_names, train.group_names)
    settings = {**to_dict(section), "class_prompt_names": names, "descriptions": described}
    if data.train.groups is None:  # the group keys count only on group data, so class runs keep their digests
        settings = {k: v for k, v in settings.items() if k not in GROUP_PLAN_KEYS}
    settings = {k: v for k, v in settings.items() if k not in PROMPT_SOURCE_KEYS or v is not None}
    inputs = {"data": data.digest, "plan": settings, "seed": ctx.config.generator.seed}
    if data.train.groups is not None:
        inputs["cells"] = cells

    def build(folder: Path, facts: dict[str, Any]) -> None:
        plan = plan_for_dataset(
            train, section.strategy, target=section.target, budget=section.budget,
            templates=section.group_templates if grouped else section.templates, class_prompt_names=names,
            template_set=section.template_set, descriptions=described,
            group_prompt_names=section.group_prompt_names if grouped else None, negative_prompt=section.negative_prompt,
            seed=ctx.config.generator.seed,
        )
        plan.save(folder / PLAN_FILE)
        facts.update(images=plan.total, plan_digest=plan.digest())

    label = "synthesis plan" + (" per class x group cell" if grouped else " per class" if data.train.groups is not None else "")
    output = ctx.stage("plan", label, inputs, build, CODE)
    plan = SynthesisPlan.load(output.folder / PLAN_FILE)
    ctx.say("plan", f"{plan.strategy}: {plan.total:,} synthetic images (plan digest {plan.digest()})")
    return PlanOutput(output.digest, plan)


def extra_plan_stage(ctx: RunContext, data: DataOutput, fill: PlanOutput, recipes: Sequence[Recipe]) -> PlanOutput | None:
    """The extra images of ``replace`` / ``substitute`` (None when the recipes need none)."""
    counts = extra_counts(recipes, data.train.class_counts(), replace_ids(ctx, data), ctx.config.runs.substitute_fraction)
    if not counts.any():
        return None
    inputs = {"plan": fill.digest, "counts": counts.tolist()}
    plan = fill.plan

    def build(folder: Path, facts: dict[str, Any]) -> None:
        extra = make_plan(
            np.zeros(len(plan.class_names), dtype=np.int64), plan.class_names,
            {name: int(n) for name, n in zip(plan.class_names, counts) if n > 0},
            templates=None if plan.descriptions else plan.templates, descriptions=plan.descriptions,
            class_prompt_names=dict(zip(plan.class_names, plan.prompt_names)),
            negative_prompt=plan.negative_prompt, seed=plan.seed + EXTRA_SEED_OFFSET,
            image_size=plan.image_size, channels=plan.channels,
        )
        extra.save(folder / PLAN_FILE)
        facts.update(images=extra.total, plan_digest=extra.digest())

    output = ctx.stage("plan-extra", "extra images for replace / substitute", inputs, build, CODE)
    return PlanOutput(output.digest, SynthesisPlan.load(output.folder / PLAN_FILE))


def feedback_plan_stage(ctx: RunContext, fill: PlanOutput, budget: float) -> PlanOutput:
    """The FG plan of ``budget``: that fraction of the fill plan's images, split by shortfall."""
    inputs = {"plan": fill.digest, "budget": budget}

    def build(folder: Path, facts: dict[str, Any]) -> None:
        from synaug.guidance import budget_plan

        plan = budget_plan(fill.plan, budget)
        plan.save(folder / PLAN_FILE)
        facts.update(images=plan.total, plan_digest=plan.digest())

    output = ctx.stage("plan-feedback", f"FG plan, budget {budget_text(budget)} of the fill plan", inputs, build, FEEDBACK_CODE)
    return PlanOutput(output.digest, SynthesisPlan.load(output.folder / PLAN_FILE))


def prompt_names(ctx: RunContext, class_names: Sequence[str]) -> dict[str, str] | None:
    """plan.class_prompt_names as a mapping (read from its file when it names one)."""
    value = ctx.config.plan.class_prompt_names
    if value is None or isinstance(value, dict):
        return value
    path = Path(value)
    if not path.is_file():
        raise SynaugError(f"{ctx.config_name}: plan.class_prompt_names file {path} does not exist; give a file with one prompt name per class, in label order.")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) != len(class_names):
        raise SynaugError(f"plan.class_prompt_names file {path} has {len(lines)} names for {len(class_names)} classes; give one name per class, in label order.")
    return dict(zip(class_names, lines))


def replace_ids(ctx: RunContext, data: DataOutput) -> list[int]:
    """The classes the ``replace`` recipe gives synthetic images only (runs.replace_classes)."""
    thresholds = ctx.config.evaluate
    return replace_class_ids(
        ctx.config.runs.replace_classes, data.train.class_counts(), data.train.class_names,
        thresholds.many_threshold, thresholds.few_threshold,
    )
