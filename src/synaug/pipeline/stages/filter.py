"""The filter stage: the fill store's images scored and kept or rejected by the run's ``filter:`` section.

Without a filter this is the ``generate`` stage's store as it is. With one, an ``overgenerate``
factor first makes the plan over-generated (:func:`synaug.plan.overgenerate`, its own ``generate``
store), then ``filter`` (a cache stage of the ``generate`` group) writes the decisions of
:func:`synaug.filters.filter_store` to its own ``filter.parquet``, leaving the store untouched, so
runs with other filters share the images. Training loads the kept images (``StoreOutput.decisions``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from synaug.config import to_dict
from synaug.filters.reference import DEFAULT_CACHE
from synaug.generate.store import FILTER_FILE
from synaug.pipeline.context import RunContext
from synaug.pipeline.stages.data import DataOutput
from synaug.pipeline.stages.generate import StoreOutput, generate_stage
from synaug.pipeline.stages.plan import PlanOutput
from synaug.plan.planner import overgenerate

CODE = ("synaug.filters", "synaug.pipeline.stages.filter")


def filtered_store(ctx: RunContext, planned: PlanOutput, data: DataOutput) -> StoreOutput:
    """The fill store of ``planned``, over-generated and filtered as the run's ``filter:`` section says."""
    spec = ctx.config.filter
    if not spec.active:
        return generate_stage(ctx, "generate", planned, data)
    if spec.overgenerate > 1:
        planned = PlanOutput(planned.digest, overgenerate(planned.plan, spec.overgenerate))
    store = generate_stage(ctx, "generate", planned, data)
    if store.root is None:
        return store
    settings = {k: v for k, v in to_dict(spec).items() if k != "device"}
    shown = ", ".join(f"{k} {v}" for k, v in settings.items() if v not in (None, []) and not (k == "overgenerate" and v == 1))
    label = f"keep the best of {planned.plan.total:,} images ({shown})"

    def build(folder: Path, facts: dict[str, Any]) -> None:
        from synaug.filters import filter_store

        steps = spec.steps(DEFAULT_CACHE, ctx.config.data.root, progress=ctx.progress)
        result = filter_store(store.root, steps, out=folder / FILTER_FILE)
        facts.update(kept=result.kept, scored=result.scored)

    output = ctx.stage("filter", label, {"store": store.digest, "filter": settings}, build, CODE, group="generate")
    return replace(store, digest=output.digest, decisions=output.folder / FILTER_FILE)
