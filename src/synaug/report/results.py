"""What a report is made of: one result per (recipe, seed), stage timings, and their summaries.

:func:`aggregate` turns the per-seed results into one row per recipe with the mean and the
sample standard deviation (ddof 1) over seeds; with one seed there is no deviation. Runs on
group data also carry a group report (:func:`synaug.evaluate.groups.group_report`), whose
headline numbers are aggregated as :data:`GROUP_METRICS`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

METRICS = ("top1", "balanced_accuracy", "many", "medium", "few")
METRIC_LABELS = {"top1": "overall", "balanced_accuracy": "balanced", "many": "many", "medium": "medium", "few": "few"}
GROUP_METRICS = ("worst_group", "group_mean", "group_balanced", "eo_gap", "dp_gap")
GROUP_METRIC_LABELS = {
    "worst_group": "worst-group", "group_mean": "mean", "group_balanced": "balanced mean", "eo_gap": "EO gap", "dp_gap": "DP gap",
}


@dataclass
class RunResult:
    """One trained (and possibly re-trained) model of a recipe at one seed, evaluated.

    ``metrics`` is a :func:`synaug.evaluate.evaluate` dict (on group data with a ``group_report``); ``sample_counts`` the real and
    synthetic images it trained on; ``synthetic_per_class`` the synthetic images per class;
    ``feedback`` the guidance of its synthetic images (FG rows: criterion, budget, ...), else None;
    ``history`` the per-epoch training history of its model (see :attr:`synaug.train.TrainResult.history`).
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
    history: list[dict[str, Any]] = field(default_factory=list)


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
    per_group_mean: list[float | None] | None = None

    @property
    def grouped(self) -> bool:
        """Whether the recipe was scored per group (a group run)."""
        return self.per_group_mean is not None

    def cell(self, metric: str) -> str:
        """``mean ± std`` (or just the mean with one seed), one decimal; "–" when undefined."""
        mean, std = self.mean.get(metric), self.std.get(metric)
        if mean is None:
            return "–"
        return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def run_values(run: RunResult) -> dict[str, float | None]:
    """The run's :data:`METRICS` and, with a group report, its :data:`GROUP_METRICS`."""
    values = {metric: run.metrics.get(metric) for metric in METRICS}
    report = run.metrics.get("group_report")
    if report is not None:
        fairness = report.get("fairness") or {}
        values.update(
            worst_group=report["worst_group_accuracy"], group_mean=report["mean_weighted_by_train"], group_balanced=report["mean_unweighted"],
            eo_gap=fairness.get("equalized_odds_difference"), dp_gap=fairness.get("demographic_parity_difference"),
        )
    return values


def aggregate(runs: Sequence[RunResult]) -> list[RecipeSummary]:
    """One summary per recipe, in the order recipes first appear in ``runs``."""
    order = list(dict.fromkeys(run.recipe for run in runs))
    summaries = []
    for recipe in order:
        members = [run for run in runs if run.recipe == recipe]
        values_by_run = [run_values(run) for run in members]
        mean: dict[str, float | None] = {}
        std: dict[str, float | None] = {}
        for metric in values_by_run[0]:
            values = np.array([v[metric] for v in values_by_run if v[metric] is not None], dtype=np.float64)
            mean[metric] = float(values.mean()) if len(values) else None
            std[metric] = float(values.std(ddof=1)) if len(values) > 1 else None
        class_means = _nanmean([[c["accuracy"] for c in run.metrics["classes"]] for run in members])
        group_means = None
        if "group_report" in members[0].metrics:
            group_means = _nanmean([[g["accuracy"] for g in run.metrics["group_report"]["groups"]] for run in members])
        summaries.append(
            RecipeSummary(
                recipe=recipe,
                label=members[0].label,
                seeds=[run.seed for run in members],
                mean=mean,
                std=std,
                sample_counts=dict(members[0].sample_counts),
                per_class_mean=class_means,
                feedback=members[0].feedback,
                per_group_mean=group_means,
            )
        )
    return summaries


def _nanmean(rows: Sequence[Sequence[float | None]]) -> list[float | None]:
    """Column means over the rows that have a value (None where no row has one)."""
    table = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column no row has a value for is None, not a warning
        means = np.nanmean(table, axis=0)
    return [None if np.isnan(v) else float(v) for v in means]


def mean_group_report(summary: RecipeSummary, template: dict[str, Any]) -> dict[str, Any]:
    """A group_report()-shaped dict carrying ``summary``'s per-group means (for the per-group plot)."""
    groups = [dict(entry, accuracy=accuracy) for entry, accuracy in zip(template["groups"], summary.per_group_mean)]
    return {**template, "groups": groups, "worst_group_accuracy": summary.mean["worst_group"]}


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
    lines = [line for metric in ("top1", "few") if (line := _compare(ours, base, metric, METRIC_LABELS[metric]))]
    if oracle in by_name and by_name[oracle].mean["top1"] is not None:
        gap = by_name[oracle].mean["top1"] - base.mean["top1"]
        if gap > 0:
            closed = (ours.mean["top1"] - base.mean["top1"]) / gap
            verdict = "met" if closed >= 0.5 else "NOT met"
            lines.append(f"share of the overall gap between {base.label} and the oracle closed: {100 * closed:.0f} % (target ≥ 50 %: {verdict}).")
    return lines


GROUP_COMPARISONS = (("synaug_group", "erm"), ("synaug_group", "synaug_class"), ("synaug_dfr", "dfr"))


def group_checks(summaries: Sequence[RecipeSummary]) -> list[str]:
    """Worst-group verdicts of a group run: group-uniform SYNAuG against ERM and against class-only
    SYNAuG, and SYNAuG + DFR against DFR, each beating it by more than 2 standard deviations."""
    by_name = {s.recipe: s for s in summaries}
    pairs = [(by_name[a], by_name[b]) for a, b in GROUP_COMPARISONS if a in by_name and b in by_name]
    return [line for ours, base in pairs if (line := _compare(ours, base, "worst_group", GROUP_METRIC_LABELS["worst_group"]))]


def _compare(ours: RecipeSummary, base: RecipeSummary, metric: str, name: str) -> str | None:
    """One verdict line: the difference on ``metric`` against 2 standard deviations (or a one-seed note); None without values."""
    a, b = ours.mean.get(metric), base.mean.get(metric)
    if a is None or b is None:
        return None
    stds = [s for s in (ours.std[metric], base.std[metric]) if s is not None]
    if len(ours.seeds) < 2 or len(base.seeds) < 2 or not stds:
        return f"{ours.label} vs {base.label}, {name}: {a - b:+.1f} points (one seed; the 2-std test needs several seeds)."
    margin = 2 * max(stds)
    verdict = "met" if a - b > margin else "NOT met"
    return f"{ours.label} vs {base.label}, {name}: {a - b:+.1f} points; 2 std = {margin:.1f}: target {verdict}."
