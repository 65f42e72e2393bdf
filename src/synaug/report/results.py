"""What a report is made of: one result per (recipe, seed), stage timings, and their summaries.

:func:`aggregate` turns the per-seed results into one row per recipe with the mean and the
sample standard deviation (ddof 1) over seeds; with one seed there is no deviation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

METRICS = ("top1", "balanced_accuracy", "many", "medium", "few")
METRIC_LABELS = {"top1": "overall", "balanced_accuracy": "balanced", "many": "many", "medium": "medium", "few": "few"}


@dataclass
class RunResult:
    """One trained (and possibly re-trained) model of a recipe at one seed, evaluated.

    ``metrics`` is a :func:`synaug.evaluate.evaluate` dict; ``sample_counts`` the real and
    synthetic images it trained on; ``synthetic_per_class`` the synthetic images per class;
    ``feedback`` the guidance of its synthetic images (FG rows: criterion, budget, ...), else None.
    """

    recipe: str
    label: str
    seed: int
    metrics: dict[str, Any]
    sample_counts: dict[str, int]
    synthetic_per_class: list[int] = field(default_factory=list)
    real_per_class: list[int] = field(default_factory=list)
    train_seconds: float | None = None
    feedback: dict[str, Any] | None = None


@dataclass
class StageTiming:
    """One stage execution: what it was, how long it took, and whether it came from the cache."""

    stage: str
    label: str
    seconds: float
    cached: bool = False
    folder: str | None = None


@dataclass
class RecipeSummary:
    """A recipe's results over its seeds."""

    recipe: str
    label: str
    seeds: list[int]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    sample_counts: dict[str, int]
    per_class_mean: list[float | None]
    feedback: dict[str, Any] | None = None

    def cell(self, metric: str) -> str:
        """``mean ± std`` (or just the mean with one seed), one decimal; "–" when undefined."""
        mean, std = self.mean.get(metric), self.std.get(metric)
        if mean is None:
            return "–"
        return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def aggregate(runs: Sequence[RunResult]) -> list[RecipeSummary]:
    """One summary per recipe, in the order recipes first appear in ``runs``."""
    order = list(dict.fromkeys(run.recipe for run in runs))
    summaries = []
    for recipe in order:
        members = [run for run in runs if run.recipe == recipe]
        mean: dict[str, float | None] = {}
        std: dict[str, float | None] = {}
        for metric in METRICS:
            values = [run.metrics.get(metric) for run in members]
            values = np.array([v for v in values if v is not None], dtype=np.float64)
            mean[metric] = float(values.mean()) if len(values) else None
            std[metric] = float(values.std(ddof=1)) if len(values) > 1 else None
        per_class = np.array(
            [[np.nan if c["accuracy"] is None else c["accuracy"] for c in run.metrics["classes"]] for run in members]
        )
        with np.errstate(invalid="ignore"):
            class_means = np.nanmean(per_class, axis=0) if np.isfinite(per_class).any() else per_class[0]
        summaries.append(
            RecipeSummary(
                recipe=recipe,
                label=members[0].label,
                seeds=[run.seed for run in members],
                mean=mean,
                std=std,
                sample_counts=dict(members[0].sample_counts),
                per_class_mean=[None if np.isnan(v) else float(v) for v in class_means],
                feedback=members[0].feedback,
            )
        )
    return summaries


def mean_metrics(summary: RecipeSummary, template: dict[str, Any]) -> dict[str, Any]:
    """An evaluate()-shaped dict carrying ``summary``'s per-class means (for the per-class plot)."""
    classes = [dict(entry, accuracy=accuracy) for entry, accuracy in zip(template["classes"], summary.per_class_mean)]
    return {**{k: v for k, v in template.items() if k != "classes"}, **summary.mean, "classes": classes}


def fidelity_checks(summaries: Sequence[RecipeSummary], baseline: str = "ce_crt", method: str = "synaug", oracle: str = "oracle") -> list[str]:
    """Plain-language verdicts on the SYNAuG targets: beats the baseline on overall and few-shot
    accuracy by more than 2 standard deviations, and closes at least half of the overall gap
    between the baseline and the oracle. Empty when a recipe is missing."""
    by_name = {s.recipe: s for s in summaries}
    if baseline not in by_name or method not in by_name:
        return []
    base, ours = by_name[baseline], by_name[method]
    lines = []
    for metric in ("top1", "few"):
        a, b = ours.mean[metric], base.mean[metric]
        if a is None or b is None:
            continue
        name = METRIC_LABELS[metric]
        stds = [s for s in (ours.std[metric], base.std[metric]) if s is not None]
        if len(ours.seeds) < 2 or len(base.seeds) < 2 or not stds:
            lines.append(f"{ours.label} vs {base.label}, {name}: {a - b:+.1f} points (one seed; the 2-std test needs several seeds).")
            continue
        margin = 2 * max(stds)
        verdict = "met" if a - b > margin else "NOT met"
        lines.append(f"{ours.label} vs {base.label}, {name}: {a - b:+.1f} points; 2 std = {margin:.1f}: target {verdict}.")
    if oracle in by_name and by_name[oracle].mean["top1"] is not None:
        gap = by_name[oracle].mean["top1"] - base.mean["top1"]
        if gap > 0:
            closed = (ours.mean["top1"] - base.mean["top1"]) / gap
            verdict = "met" if closed >= 0.5 else "NOT met"
            lines.append(f"share of the overall gap between {base.label} and the oracle closed: {100 * closed:.0f} % (target ≥ 50 %: {verdict}).")
    return lines
