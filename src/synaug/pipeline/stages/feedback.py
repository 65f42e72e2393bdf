"""The feedback-classifier stage: the classifier whose feedback guides the ``fg`` rows' stores.

``feedback.classifier`` null or ``ce``: this run's CE model of the first seed (its ``train``
stage folder, shared with the ``ce`` row); ``ce_crt``: that model after cRT (shared with the
``ce_crt`` row); else a checkpoint folder of `synaug train`. It runs before the generate stage,
so ``--stage feedback`` trains it and ``--stage generate`` needs it cached.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from synaug.errors import SynaugError
from synaug.pipeline.ablations import RECIPES
from synaug.pipeline.context import RunContext
from synaug.pipeline.stages.data import DataOutput, absolute
from synaug.pipeline.stages.retrain import crt_stage
from synaug.pipeline.stages.train import train_stage
from synaug.train.checkpoint import WEIGHTS_FILE

STAGE = "feedback"


@dataclass
class FeedbackClassifierOutput:
    """The feedback classifier's checkpoint, the digest of its weights file and where it comes from."""

    checkpoint: Path
    digest: str
    source: str


def feedback_classifier_stage(ctx: RunContext, data: DataOutput) -> FeedbackClassifierOutput:
    """The feedback classifier of ``ctx.config.feedback.classifier`` (trained now when it is the run's own and not cached)."""
    path = ctx.config.feedback.classifier
    if path in (None, "ce", "ce_crt"):
        seed = ctx.config.runs.seeds[0]
        model = train_stage(ctx, RECIPES["ce"], seed, data, None, None, group=STAGE)
        folder, source = model.checkpoint, f"CE on the real long tail, seed {seed}"
        if path == "ce_crt":
            model = crt_stage(ctx, RECIPES["ce_crt"], seed, model, data, None, None, group=STAGE)
            folder, source = model.checkpoint, f"CE + cRT on the real long tail, seed {seed}"
    else:
        folder = Path(absolute(path))
        source = str(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise SynaugError(
            f"{ctx.config_name}: feedback.classifier {folder} holds no {WEIGHTS_FILE}; "
            "give the checkpoint folder `synaug train` wrote (OUT/checkpoint), or null for the run's CE model."
        )
    return FeedbackClassifierOutput(folder, hashlib.sha256(weights.read_bytes()).hexdigest()[:16], source)
