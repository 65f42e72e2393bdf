"""Synthesis plans: how many synthetic images each class or (class, group) cell gets, and their prompts."""

from synaug.plan.planner import (
    STRATEGIES,
    PlanItem,
    SynthesisPlan,
    derive_seed,
    make_plan,
    plan_for_dataset,
    split_budget,
)
from synaug.plan.prompts import DEFAULT_GROUP_TEMPLATES, DEFAULT_TEMPLATES, parse_name_overrides, render_prompt

__all__ = [
    "DEFAULT_GROUP_TEMPLATES",
    "DEFAULT_TEMPLATES",
    "STRATEGIES",
    "PlanItem",
    "SynthesisPlan",
    "derive_seed",
    "make_plan",
    "parse_name_overrides",
    "plan_for_dataset",
    "render_prompt",
    "split_budget",
]
