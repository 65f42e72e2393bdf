"""Synthetic budgets for feedback guidance, derived from a SYNAuG plan.

The paper's claim is about images bought: FG with the *same* synthetic budget as SYNAuG and
with *half* of it. :func:`budget_plan` turns a SYNAuG (fill-to-max) plan into such a plan with
the same classes, prompts, seed, size and channels, so the only difference between the stores
is the count per class (and the guidance).
"""

from __future__ import annotations

from synaug.errors import SynaugError
from synaug.plan.planner import SynthesisPlan, make_plan


def budget_plan(reference: SynthesisPlan, fraction: float = 1.0) -> SynthesisPlan:
    """A ``budget`` plan of ``round(fraction · reference.total)`` images, split by each class's shortfall.

    At ``fraction=1`` a fill-to-max reference gives the same counts as the reference itself
    (the shortfalls sum to the total); at 0.5 every class gets about half its shortfall.
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise SynaugError(f"budget fraction {fraction} must lie in (0, 1]; use 1 for SYNAuG's budget, 0.5 for half.")
    return _like(reference, "budget", budget=int(round(float(fraction) * reference.total)))


def _like(reference: SynthesisPlan, strategy: str, **parameter: int) -> SynthesisPlan:
    """A plan from the reference's real counts with its classes, groups, prompts, seed and format."""
    return make_plan(
        reference.real_counts,
        reference.class_names,
        strategy,
        group_names=reference.group_names,
        templates=None if reference.descriptions else reference.templates,
        descriptions=reference.descriptions,
        class_prompt_names=dict(zip(reference.class_names, reference.prompt_names)),
        negative_prompt=reference.negative_prompt,
        seed=reference.seed,
        image_size=reference.image_size,
        channels=reference.channels,
        **parameter,
    )
