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
from synaug.plan.descriptions import read_descriptions
from synaug.plan.prompts import DEFAULT_GROUP_TEMPLATES, DEFAULT_TEMPLATES, MODIFIERS, TEMPLATE_SETS, parse_name_overrides, render_prompt, template_set

__all__ = [
    "DEFAULT_GROUP_TEMPLATES",
    "DEFAULT_TEMPLATES",
    "MODIFIERS",
    "STRATEGIES",
    "TEMPLATE_SETS",
    "PlanItem",
    "SynthesisPlan",
    "derive_seed",
    "make_plan",
    "parse_name_overrides",
    "plan_for_dataset",
    "read_descriptions",
    "render_prompt",
    "split_budget",
    "template_set",
]
