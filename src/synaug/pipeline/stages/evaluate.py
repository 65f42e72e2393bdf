"""The evaluate stage: a model's metrics on the test set, cached as ``metrics.json``.

Group runs add the group report (worst-group accuracy, means, fairness gaps) over the test
split's (class, group) cells. The key holds the model's stage and digest, the data and the
evaluate section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synaug.config import to_dict
from synaug.evaluate import evaluate
from synaug.evaluate.groups import cell_report
from synaug.pipeline.ablations import Recipe
from synaug.pipeline.context import RunContext
from synaug.pipeline.stages.data import DataOutput, target_labels
from synaug.pipeline.stages.train import ModelOutput

CODE = ("synaug.evaluate", "synaug.train", "synaug.pipeline.stages.evaluate")
METRICS_FILE = "metrics.json"


def evaluate_stage(ctx: RunContext, recipe: Recipe, seed: int, model: ModelOutput, data: DataOutput) -> dict[str, Any]:
    """The metrics of ``model`` (trained for ``recipe`` at ``seed``) on the test set."""
    section = ctx.config.evaluate
    inputs = {"model": {"stage": model.stage, "digest": model.digest}, "data": data.digest, "evaluate": to_dict(section)}
    label = f"{recipe.name}, seed {seed}, on {len(data.test):,} test images"

    def build(folder: Path, facts: dict[str, Any]) -> None:
        from synaug.train import infer, load_checkpoint

        classifier, normalizer, _ = load_checkpoint(model.checkpoint, ctx.device())
        workers = 0 if data.test.in_memory else ctx.config.train.num_workers
        logits = infer(classifier, data.test, normalizer, batch_size=section.batch_size, num_workers=workers)
        train = target_labels(ctx, data.train)
        metrics = evaluate(logits, data.test.labels, train.class_counts(), train.class_names, section.many_threshold, section.few_threshold)
        if data.test.groups is not None:
            metrics["group_report"] = cell_report(logits, data.test, train)
            facts.update(worst_group=metrics["group_report"]["worst_group_accuracy"])
        (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n")
        facts.update(top1=metrics["top1"], few=metrics["few"])

    output = ctx.stage("evaluate", label, inputs, build, CODE)
    return json.loads((output.folder / METRICS_FILE).read_text())
