"""The checks of a run config (:mod:`synaug.pipeline.config`): every value in range and the
sections consistent with each other, each a one-line error naming the fix, before any work."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synaug.data.groups import NICO_LAYOUTS, UTKFACE_ATTRIBUTES, _check_age_bins
from synaug.data.longtail import PROFILES
from synaug.data.registry import DATASET_KINDS
from synaug.data.spurious import MIN_MAJORITY
from synaug.errors import SynaugError
from synaug.filters.reference import REFERENCE_NAME
from synaug.generate.backends.base import DTYPES
from synaug.guidance.criteria import CRITERIA
from synaug.guidance.feedback import DEFAULT_SCALE, GRADIENT_PATHS
from synaug.pipeline.ablations import CLASS_ONLY_RECIPES, GROUP_RECIPES, PLAN_CELLS, RECIPES, SHOT_GROUP_NAMES
from synaug.plan.planner import STRATEGIES, make_plan
from synaug.plan.prompts import GROUP_FIELDS, check_templates, template_fields
from synaug.train.crt import SOURCES
from synaug.train.dfr import DFR_C_GRID
from synaug.train.group_dro import DRO_STEP_SIZE, DRO_WEIGHT_DECAY

if TYPE_CHECKING:
    from synaug.pipeline.config import DataSection, FeedbackSection, RunConfig

FEEDBACK_CLASSIFIERS = ("ce", "ce_crt")  # the run's own models a feedback.classifier may name


def check_run_config(config: RunConfig, where: str = "config") -> None:
    """One-line errors for values out of range or inconsistent between sections."""
    _check_data(config.data, where)
    _check_plan(config, where)
    _check_generator(config, where)
    _check_training(config, where)
    _check_runs(config, where)
    if config.filter.classifier == REFERENCE_NAME and config.data.kind != "fashion-mnist":
        raise SynaugError(
            f"{where}: filter.classifier 'reference' is the Fashion-MNIST reference classifier; give a checkpoint "
            f"trained on {config.data.kind}'s classes instead."
        )


def _check_data(data: DataSection, where: str) -> None:
    """The data section: kind, long-tailed draw or index, group options."""
    longtail = data.longtail
    _choice(f"{where}: data.kind", data.kind, DATASET_KINDS)
    if data.index is not None and longtail is not None:
        raise SynaugError(f"{where}: give either data.index or data.longtail, not both; the index already names a subset.")
    if longtail is not None:
        _choice(f"{where}: data.longtail.profile", longtail.profile, PROFILES)
        if longtail.imbalance_factor < 1:
            raise SynaugError(f"{where}: data.longtail.imbalance_factor {longtail.imbalance_factor} is below 1; give the ratio of the largest to the smallest class, e.g. 100.")
        if longtail.reserve is not None and not 0 <= longtail.reserve < 1:
            raise SynaugError(f"{where}: data.longtail.reserve {longtail.reserve} must be a fraction in [0, 1).")
        if longtail.max_per_class is not None and longtail.max_per_class < 1:
            raise SynaugError(f"{where}: data.longtail.max_per_class must be at least 1.")
    if data.kind == "split-list" and data.list_file is None and data.index is None:
        raise SynaugError(f"{where}: data.kind split-list needs data.list_file (the `path label` file of the training images).")
    _check_group_data(data, where)


def _check_plan(config: RunConfig, where: str) -> None:
    """The plan section: strategy and its parameters, templates, cells."""
    plan = config.plan
    _choice(f"{where}: plan.strategy", plan.strategy, STRATEGIES)
    for key, strategy in (("target", "fill-to"), ("budget", "budget")):
        if plan.strategy == strategy and getattr(plan, key) is None:
            raise SynaugError(f"{where}: plan.strategy {strategy} needs plan.{key}; give it (e.g. {key}: 500).")
        if plan.strategy != strategy and getattr(plan, key) is not None:
            raise SynaugError(f"{where}: plan.{key} is used only by plan.strategy {strategy}; remove it or change the strategy.")
    try:  # the planner's own checks of strategy parameters and templates, on two dummy classes
        make_plan(np.array([2, 1]), ["a", "b"], plan.strategy, target=plan.target, budget=plan.budget, templates=plan.templates,
                  template_set=plan.template_set)
        if plan.group_templates:
            check_templates(plan.group_templates, with_groups=True)
    except SynaugError as exc:
        raise SynaugError(f"{where}: plan: {exc}") from None
    if plan.descriptions is not None and (plan.templates or plan.group_templates or plan.template_set):
        raise SynaugError(f"{where}: plan.descriptions are the prompts themselves; drop plan.templates, plan.group_templates and plan.template_set.")
    if plan.template_set is not None and plan.group_templates:
        raise SynaugError(f"{where}: plan.template_set gives the group prompts too; drop plan.group_templates or plan.template_set.")
    if plan.descriptions is not None and not Path(plan.descriptions).is_file():
        raise SynaugError(f"{where}: plan.descriptions file {plan.descriptions} does not exist; give a file of 'CLASS: prompt' lines.")
    _choice(f"{where}: plan.cells", plan.cells, PLAN_CELLS)
    for template in plan.group_templates:
        if not set(template_fields(template)) & set(GROUP_FIELDS):
            raise SynaugError(
                f"{where}: plan.group_templates '{template}' names no group; class x group prompts need {{context}}, "
                "e.g. 'a photo of a {class} on a {context} background'."
            )


def _check_generator(config: RunConfig, where: str) -> None:
    """The generator section: scheduler, dtype, sampler numbers, seed."""
    generator = config.generator
    from synaug.generate.schedulers import make_scheduler

    if generator.scheduler is not None:
        try:
            make_scheduler(generator.scheduler, {})
        except SynaugError as exc:
            raise SynaugError(f"{where}: generator.scheduler: {exc}") from None
    _choice(f"{where}: generator.dtype", generator.dtype, DTYPES)
    for name in ("steps", "guidance_steps", "batch_size"):
        value = getattr(generator, name)
        if value is not None and value < 1:
            raise SynaugError(f"{where}: generator.{name} must be at least 1, got {value}.")
    if generator.guidance is not None and generator.guidance < 0:
        raise SynaugError(f"{where}: generator.guidance must be 0 or more, got {generator.guidance}.")
    if generator.seed < 0:
        raise SynaugError(f"{where}: generator.seed must be a non-negative integer.")
    from synaug.generate.backends.embedded import embedded_spec

    embedding = [name for name in config.exemplars.generator_settings() if name != "strength"]
    if embedding and embedded_spec(generator.spec) is not None:
        raise SynaugError(
            f"{where}: exemplars.{embedding[0]} conditions a Stable Diffusion checkpoint on the exemplar's embedding, and "
            f"generator.spec {generator.spec} is an embedded generator (exemplars by img2img, exemplars.strength, only); "
            f"set generator.spec to a Stable Diffusion checkpoint or drop exemplars.{embedding[0]}."
        )


def _check_training(config: RunConfig, where: str) -> None:
    """The crt, group_dro, dfr and evaluate sections."""
    crt = config.crt
    _choice(f"{where}: crt.source", crt.source, SOURCES)
    if crt.epochs < 1 or crt.batch_size < 1 or crt.lr <= 0 or crt.weight_decay < 0:
        raise SynaugError(f"{where}: crt needs epochs >= 1, batch_size >= 1, lr > 0 and weight_decay >= 0.")

    dro, dfr = config.group_dro, config.dfr
    if dro.step_size < 0 or dro.adjustment < 0 or dro.weight_decay < 0:
        raise SynaugError(f"{where}: group_dro needs step_size, adjustment and weight_decay >= 0 (the defaults are {DRO_STEP_SIZE}, 0 and {DRO_WEIGHT_DECAY}).")
    if not dfr.c_grid or min(dfr.c_grid) <= 0 or dfr.retrains < 1:
        raise SynaugError(f"{where}: dfr needs a non-empty c_grid of values > 0 and retrains >= 1, e.g. c_grid: {list(DFR_C_GRID)}.")

    evaluate = config.evaluate
    if evaluate.few_threshold > evaluate.many_threshold:
        raise SynaugError(f"{where}: evaluate.few_threshold {evaluate.few_threshold} exceeds evaluate.many_threshold {evaluate.many_threshold}; swap them.")
    if evaluate.batch_size < 1:
        raise SynaugError(f"{where}: evaluate.batch_size must be at least 1.")


def _check_runs(config: RunConfig, where: str) -> None:
    """The runs section (recipes, seeds, replace / substitute), and what the recipes need of the other sections."""
    runs = config.runs
    if not runs.recipes:
        raise SynaugError(f"{where}: runs.recipes is empty; list at least one of {', '.join(RECIPES)}.")
    for name in runs.recipes:
        if name not in RECIPES:
            raise SynaugError(f"{where}: unknown recipe '{name}' in runs.recipes{nearest(name, RECIPES)}; choose from {', '.join(RECIPES)}.")
    if len(set(runs.recipes)) != len(runs.recipes):
        raise SynaugError(f"{where}: runs.recipes lists a recipe twice; list each once.")
    _check_group_recipes(config, where)
    if not runs.seeds or len(set(runs.seeds)) != len(runs.seeds) or min(runs.seeds) < 0:
        raise SynaugError(f"{where}: runs.seeds must list distinct non-negative integers, e.g. [0, 1, 2].")
    if not 0 < runs.substitute_fraction <= 1:
        raise SynaugError(f"{where}: runs.substitute_fraction {runs.substitute_fraction:g} must be a ratio in (0, 1]; 0.5 swaps half of each class's real images.")
    if isinstance(runs.replace_classes, str) and runs.replace_classes not in SHOT_GROUP_NAMES:
        raise SynaugError(f"{where}: runs.replace_classes '{runs.replace_classes}' must be one of {', '.join(SHOT_GROUP_NAMES)} or a list of class names.")
    if isinstance(runs.replace_classes, list) and not runs.replace_classes:
        raise SynaugError(f"{where}: runs.replace_classes is empty; name at least one class or use 'few'.")

    mixing = [name for name in runs.recipes if RECIPES[name].mixup]
    if mixing and config.train.mixup_alpha == 0 and config.train.cutmix_alpha == 0:
        raise SynaugError(
            f"{where}: recipe '{mixing[0]}' uses Mixup but train.mixup_alpha and train.cutmix_alpha are 0; set one (e.g. mixup_alpha: 1.0)."
        )
    if "oracle" in runs.recipes and config.data.longtail is None and config.data.index is None:
        raise SynaugError(
            f"{where}: recipe 'oracle' draws a balanced real set from the pool a long tail was drawn from; "
            "give data.longtail (or data.index), or remove 'oracle' from runs.recipes."
        )
    _check_feedback(config.feedback, any(RECIPES[name].guided for name in runs.recipes), where)
    if "fill_budget" in runs.recipes and not any(budget < 1 for budget in config.feedback.budgets):
        raise SynaugError(f"{where}: recipe 'fill_budget' needs a feedback budget below 1.0 (at 1.0 it is 'synaug'); add one, e.g. feedback.budgets: [1.0, 0.5].")


def _check_group_data(data: DataSection, where: str) -> None:
    """One-line errors for the group options of the data section."""
    for key, kind in (("spurious", "spurious-fashion-mnist"), ("utkface", "utkface"), ("nico", "nico")):
        if getattr(data, key) is not None and data.kind != kind:
            raise SynaugError(f"{where}: data.{key} holds options of data.kind {kind}, not {data.kind}; remove it or set data.kind: {kind}.")
    for key in ("groups_csv", "val_groups_csv", "test_groups_csv"):
        if getattr(data, key) is not None and data.kind != "imagefolder":
            raise SynaugError(f"{where}: data.{key} gives imagefolder images a group; {data.kind} data carries its own groups, so remove it.")
    if data.groups_csv is None and (data.val_groups_csv or data.test_groups_csv):
        raise SynaugError(f"{where}: data.val_groups_csv / test_groups_csv need data.groups_csv for the training split; give it too.")
    if data.kind == "imagefolder" and data.groups_csv is not None and data.test_groups_csv is None:
        raise SynaugError(f"{where}: imagefolder data with data.groups_csv needs data.test_groups_csv (the groups of the test images).")
    if data.kind == "imagefolder" and data.groups_csv is not None and data.val_split is not None and data.val_groups_csv is None:
        raise SynaugError(f"{where}: data.val_split {data.val_split} needs data.val_groups_csv (the groups of the validation images).")
    if data.val_split is not None and not data.grouped:
        raise SynaugError(f"{where}: data.val_split is the group-balanced split of DFR; {data.kind} data has no groups, so remove it.")
    if data.kind == "spurious-fashion-mnist":
        if data.longtail is not None or data.index is not None:
            raise SynaugError(f"{where}: spurious-fashion-mnist draws its own long tail; remove data.longtail / data.index and set data.spurious.imbalance_factor and max_per_class.")
        spurious = data.loader_options()
        if not MIN_MAJORITY <= spurious["majority"] <= 1:
            raise SynaugError(f"{where}: data.spurious.majority {spurious['majority']:g} must lie in [{MIN_MAJORITY}, 1], e.g. 0.95.")
        if spurious["imbalance_factor"] < 1 or min(spurious["max_per_class"], spurious["per_cell_val"], spurious["per_cell_test"]) < 1:
            raise SynaugError(f"{where}: data.spurious needs imbalance_factor >= 1 and max_per_class, per_cell_val, per_cell_test >= 1.")
    if data.utkface is not None:
        for role in ("target", "sensitive"):
            _choice(f"{where}: data.utkface.{role}", getattr(data.utkface, role), UTKFACE_ATTRIBUTES)
        if data.utkface.target == data.utkface.sensitive:
            raise SynaugError(f"{where}: data.utkface.target and sensitive are both '{data.utkface.target}'; choose two different attributes.")
        try:
            _check_age_bins(data.utkface.age_bins)
        except SynaugError as exc:
            raise SynaugError(f"{where}: data.utkface: {exc}") from None
    if data.nico is not None:
        _choice(f"{where}: data.nico.layout", data.nico.layout, NICO_LAYOUTS)


def _check_group_recipes(config: RunConfig, where: str) -> None:
    """Group recipes need group data (and DFR a validation split); some class recipes need class data."""
    data, runs = config.data, config.runs
    fix = "use a group-annotated data.kind (waterbirds, utkface, nico, spurious-fashion-mnist) or imagefolder with data.groups_csv"
    if config.plan.cells == "class-group" and not data.grouped:
        raise SynaugError(f"{where}: plan.cells class-group fills class x group cells, but {data.kind} data has no groups; set plan.cells: class or {fix}.")
    for name in runs.recipes:
        if name in GROUP_RECIPES and not data.grouped:
            raise SynaugError(f"{where}: recipe '{name}' needs group labels, and {data.kind} data has none; {fix}, or remove '{name}'.")
        if name in CLASS_ONLY_RECIPES and data.grouped:
            raise SynaugError(
                f"{where}: recipe '{name}' is for class-imbalance runs, not group data; "
                f"use {', '.join(GROUP_RECIPES)} (or ce, ce_crt, fill, fill_mixup, synaug)."
            )
        if RECIPES[name].dfr and data.val_split is None:
            raise SynaugError(f"{where}: recipe '{name}' re-trains the last layer on the group-balanced validation split; set data.val_split (e.g. val).")
    cells = {RECIPES[name].cells or config.plan.cells for name in runs.recipes if RECIPES[name].uses_synthetic}
    if config.generator.store is not None and len(cells) > 1:
        raise SynaugError(
            f"{where}: generator.store holds one plan's images, and these recipes fill both classes and class x group cells; "
            "remove generator.store (each plan gets a store in the output folder)."
        )


def _check_feedback(feedback: FeedbackSection, used: bool, where: str) -> None:
    """One-line errors for the feedback section (the classifier folder only when an FG recipe runs)."""
    if not feedback.criteria or len(set(feedback.criteria)) != len(feedback.criteria):
        raise SynaugError(f"{where}: feedback.criteria must list distinct criteria, e.g. [entropy, loss, hardness].")
    for name in feedback.criteria:
        _choice(f"{where}: feedback criterion", name, sorted(CRITERIA))
    if not 0 <= feedback.scale < float("inf"):
        raise SynaugError(f"{where}: feedback.scale {feedback.scale:g} must be a non-negative number; the paper uses {DEFAULT_SCALE}.")
    if feedback.every < 1:
        raise SynaugError(f"{where}: feedback.every must be at least 1 (1 guides every sampling step), got {feedback.every}.")
    _choice(f"{where}: feedback.path", feedback.path, GRADIENT_PATHS)
    if not feedback.budgets or len(set(feedback.budgets)) != len(feedback.budgets):
        raise SynaugError(f"{where}: feedback.budgets must list distinct fractions of SYNAuG's synthetic images, e.g. [1.0, 0.5].")
    for budget in feedback.budgets:
        if not 0 < budget <= 1:
            raise SynaugError(f"{where}: feedback budget {budget:g} must be a fraction in (0, 1]; 1.0 is SYNAuG's budget, 0.5 half of it.")
    if not 0 <= feedback.start < feedback.stop <= 1:
        raise SynaugError(
            f"{where}: feedback.start {feedback.start:g} and feedback.stop {feedback.stop:g} must satisfy 0 <= start < stop <= 1 "
            "(fractions of the sampling steps; 0 and 1 guide the whole run)."
        )
    named = feedback.classifier in (None, *FEEDBACK_CLASSIFIERS)
    if used and not named and not Path(feedback.classifier).expanduser().is_dir():
        raise SynaugError(
            f"{where}: feedback.classifier {feedback.classifier} is not a folder; give the checkpoint folder `synaug train` wrote "
            f"(OUT/checkpoint), or one of {', '.join(FEEDBACK_CLASSIFIERS)} for the run's own model."
        )


def _choice(where: str, value: str, options: tuple[str, ...] | list[str]) -> None:
    if value not in options:
        raise SynaugError(f"{where} '{value}' is unknown{nearest(value, options)}; choose one of {', '.join(options)}.")


def nearest(value: Any, options) -> str:
    """' (did you mean ...?)' naming the option closest to ``value``, or nothing."""
    near = difflib.get_close_matches(str(value), list(options), n=1)
    return f" (did you mean '{near[0]}'?)" if near else ""


