"""The train stage: one classifier per recipe and seed, cached as ``checkpoint/``.

The key holds what decides the recipe's training set (data, synthetic stores, replaced classes
or substituted fraction) and the TrainConfig (with the Group-DRO settings of ``group_dro``), so
runs that differ only in cRT share their training (``ce`` / ``ce_crt``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from synaug.config import to_dict
from synaug.data.dataset import LabeledImages
from synaug.pipeline.ablations import Recipe, build_training_set
from synaug.pipeline.context import RunContext
from synaug.pipeline.stages.data import DataOutput, oracle_set, target_labels
from synaug.pipeline.stages.generate import StoreOutput, store_images
from synaug.pipeline.stages.plan import replace_ids

CODE = ("synaug.train", "synaug.data", "synaug.pipeline.ablations", "synaug.pipeline.stages.train")
CHECKPOINT = "checkpoint"


@dataclass
class ModelOutput:
    """A trained (or re-trained) classifier checkpoint and the facts of its training."""

    stage: str
    digest: str
    checkpoint: Path
    record: dict[str, Any]


def train_stage(
    ctx: RunContext, recipe: Recipe, seed: int, data: DataOutput, fill: StoreOutput | None, extra: StoreOutput | None, group: str = "train"
) -> ModelOutput:
    """The trained model of ``recipe`` at ``seed``; ``group``: the stage (of --stage) that may compute it."""
    config = ctx.config.train.train_config(seed, recipe.mixup)
    dro = ctx.config.group_dro
    if recipe.objective == "group_dro":
        config = replace(config, weight_decay=dro.weight_decay)
    if config.tensorboard is not None:  # one TensorBoard run per training; where it goes never changes the model
        config = replace(config, tensorboard=str(Path(config.tensorboard) / f"{recipe.name}-seed{seed}"))
    inputs = training_set_inputs(ctx, recipe, data, fill, extra)
    inputs["train"] = {k: v for k, v in to_dict(config).items() if k != "tensorboard"}
    if recipe.objective == "group_dro":  # only then, so the other trainings keep their digests
        inputs["group_dro"] = {"step_size": dro.step_size, "adjustment": dro.adjustment}
    label = f"{config.model} on the '{recipe.training_set}' set{' with Mixup' if recipe.mixup else ''}, seed {seed}"
    if data.train.groups is not None and recipe.uses_synthetic:
        label = label.replace("' set", f"' set ({recipe.cells or ctx.config.plan.cells} cells)")
    if recipe.objective == "group_dro":
        label += ", Group-DRO"
    if group == "feedback":
        label = f"the feedback classifier: {label}"

    def build(folder: Path, facts: dict[str, Any]) -> None:
        from synaug.train import save_checkpoint, train_classifier
        from synaug.train.group_dro import train_group_dro

        train_set = training_set(ctx, recipe, seed, data, fill, extra)
        real, synthetic = int((~train_set.is_synthetic).sum()), int(train_set.is_synthetic.sum())
        ctx.say("train", f"{recipe.name}: {real:,} real + {synthetic:,} synthetic images, {config.epochs} epoch{'s' if config.epochs != 1 else ''}")
        if recipe.objective == "group_dro":
            result, objective = train_group_dro(
                train_set, config, step_size=dro.step_size, adjustment=dro.adjustment, weight_decay=None, progress=ctx.progress
            )
            facts["group_dro_weights"] = dict(zip(objective.group_names, np.round(objective.weights, 4).tolist()))
        else:
            result = train_classifier(train_set, config, progress=ctx.progress)
        save_checkpoint(result, folder / CHECKPOINT, extra={"data": data.source, "training_set": recipe.training_set})
        facts.update(
            sample_counts=result.sample_counts, real_per_class=result.train_counts.tolist(),
            synthetic_per_class=result.synthetic_counts.tolist(), train_seconds=result.seconds, last_epoch=result.history[-1],
        )

    output = ctx.stage("train", label, inputs, build, CODE, group)
    return ModelOutput("train", output.digest, output.folder / CHECKPOINT, output.record)


def training_set_inputs(ctx: RunContext, recipe: Recipe, data: DataOutput, fill: StoreOutput | None, extra: StoreOutput | None) -> dict[str, Any]:
    """What decides a recipe's training set, for the train stage's key."""
    inputs: dict[str, Any] = {"training_set": recipe.training_set, "data": data.digest}
    if recipe.uses_synthetic:
        inputs["synthetic"] = fill.digest if fill else None
        if fill is not None and fill.per_class is not None:
            inputs["per_class"] = fill.per_class
    if recipe.training_set == "replace":
        inputs.update(extra=extra.digest if extra else None, replace=replace_ids(ctx, data))
    if recipe.training_set == "substitute":
        inputs.update(extra=extra.digest if extra else None, fraction=ctx.config.runs.substitute_fraction)
    return inputs


def training_set(ctx: RunContext, recipe: Recipe, seed: int, data: DataOutput, fill: StoreOutput | None, extra: StoreOutput | None) -> LabeledImages:
    """The recipe's training set (real, synthetic, oracle ...), with the labels the models predict; built once per run."""
    key = json.dumps(training_set_inputs(ctx, recipe, data, fill, extra), sort_keys=True)
    if key not in ctx.training_sets:
        in_memory = data.train.in_memory
        longtail = ctx.config.data.longtail
        ctx.training_sets[key] = target_labels(ctx, build_training_set(
            recipe.training_set,
            data.train,
            synthetic=store_images(fill, data, in_memory) if recipe.uses_synthetic else None,
            extra=store_images(extra, data, in_memory) if recipe.uses_extra and extra is not None else None,
            oracle=oracle_set(ctx, data) if recipe.training_set == "oracle" else None,
            replace_ids=replace_ids(ctx, data) if recipe.training_set == "replace" else (),
            fraction=ctx.config.runs.substitute_fraction,
            seed=int(longtail.seed if longtail else 0),
        ))
    return ctx.training_sets[key]
