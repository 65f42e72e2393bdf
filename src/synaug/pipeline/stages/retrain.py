"""The last-layer re-training stages, cached as ``checkpoint/``.

``crt``: cRT, the classifier re-trained class-balanced on the crt section's images. ``crt-dfr``:
DFR, the last layer re-fitted on the group-balanced validation split (``--stage crt`` runs both).
The key holds the trained model's digest, the section and the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synaug.config import to_dict
from synaug.pipeline.ablations import Recipe
from synaug.pipeline.context import RunContext
from synaug.pipeline.stages.data import DataOutput
from synaug.pipeline.stages.generate import StoreOutput
from synaug.pipeline.stages.train import CHECKPOINT, ModelOutput, training_set

CODE = ("synaug.train", "synaug.data", "synaug.pipeline.ablations", "synaug.pipeline.stages.retrain")


def crt_stage(
    ctx: RunContext, recipe: Recipe, seed: int, trained: ModelOutput, data: DataOutput, fill: StoreOutput | None, extra: StoreOutput | None,
    group: str = "crt",
) -> ModelOutput:
    """``trained`` with its classifier re-trained class-balanced; ``group``: the stage (of --stage) that may compute it."""
    section = ctx.config.crt
    inputs = {"model": trained.digest, "crt": to_dict(section), "seed": seed}
    label = f"re-train the classifier of {recipe.name} on {section.source} images (class-balanced), seed {seed}"

    def build(folder: Path, facts: dict[str, Any]) -> None:
        from synaug.train import load_checkpoint, retrain_classifier, save_checkpoint
        from synaug.train.checkpoint import result_from_checkpoint

        model, normalizer, meta = load_checkpoint(trained.checkpoint, ctx.device())
        train_set = training_set(ctx, recipe, seed, data, fill, extra)
        retrained = retrain_classifier(
            model, train_set, normalizer, epochs=section.epochs, batch_size=section.batch_size, lr=section.lr,
            weight_decay=section.weight_decay, seed=seed, source=section.source,
        )
        save_checkpoint(result_from_checkpoint(retrained, normalizer, meta), folder / CHECKPOINT, extra={"crt": to_dict(section)})

    output = ctx.stage("crt", label, inputs, build, CODE, group)
    record = {**trained.record, "crt_seconds": output.record["seconds"]}
    return ModelOutput("crt", output.digest, output.folder / CHECKPOINT, record)


def dfr_stage(ctx: RunContext, recipe: Recipe, seed: int, trained: ModelOutput, data: DataOutput) -> ModelOutput:
    """DFR: the last layer of ``trained`` re-fitted on the group-balanced validation split."""
    section = ctx.config.dfr
    inputs = {"model": trained.digest, "dfr": to_dict(section), "seed": seed, "data": data.digest}
    label = f"DFR: re-fit the last layer of {recipe.name} on {len(data.val):,} validation images (group-balanced), seed {seed}"

    def build(folder: Path, facts: dict[str, Any]) -> None:
        from synaug.train import load_checkpoint, save_checkpoint
        from synaug.train.checkpoint import result_from_checkpoint
        from synaug.train.dfr import dfr_retrain

        model, normalizer, meta = load_checkpoint(trained.checkpoint, ctx.device())
        retrained, report = dfr_retrain(model, data.val, normalizer, c_grid=section.c_grid, retrains=section.retrains, seed=seed)
        save_checkpoint(result_from_checkpoint(retrained, normalizer, meta), folder / CHECKPOINT, extra={"dfr": {**to_dict(section), **report}})
        facts.update(dfr=report)

    output = ctx.stage("crt-dfr", label, inputs, build, CODE)
    record = {**trained.record, "dfr_seconds": output.record["seconds"], "dfr": output.record.get("dfr")}
    return ModelOutput("crt-dfr", output.digest, output.folder / CHECKPOINT, record)
