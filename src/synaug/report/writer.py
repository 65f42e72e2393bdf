"""The report folder: ``report.md``, ``results.json`` and the PNGs it shows (drawn by :mod:`synaug.report.figures`).

::

    REPORT/report.md                 results table, fidelity checks, plots, counts, timings, how to reproduce
    REPORT/results.json              everything in the tables, per seed and aggregated, plus the config
    REPORT/results.png               overall / many / medium / few accuracy per recipe (error bars: std over seeds)
    REPORT/class_histogram.png       images per class before (real long tail) and after filling
    REPORT/per_class_accuracy.png    per-class accuracy, baseline vs SYNAuG (means over seeds)
    REPORT/confusion_matrix-<recipe>.png   baseline and SYNAuG, first seed (up to 30 classes)
    REPORT/samples.png               synthetic images of each class next to real ones
    REPORT/curves-<recipe>.png       training loss and accuracy per epoch, seeds overlaid (:mod:`synaug.report.curves`)

A group run's report (``ReportInputs.groups`` set) shows the group metrics instead of the
per-class section: its table has worst-group accuracy, the mean weighted by the training
groups, the group-balanced mean and the fairness gaps; ``results.png`` plots the three
accuracies per recipe, ``group_accuracy.png`` each group's accuracy per recipe (means over
seeds, :func:`synaug.evaluate.groups.plot_group_accuracy`), and a table gives the real and
synthetic images per (class, group) cell.

The folder is built next to its final place and swapped in when complete, so a report is
never half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synaug.data.dataset import LabeledImages
from synaug.data.longtail import FEW_THRESHOLD, MANY_THRESHOLD
from synaug.data.registry import write_atomic
from synaug.evaluate.plots import LABELLED_CLASSES_MAX
from synaug.report.figures import comparison_pair, draw_figures
from synaug.report.results import (
    GROUP_METRIC_LABELS,
    GROUP_METRICS,
    METRIC_LABELS,
    METRICS,
    RecipeSummary,
    RunResult,
    StageTiming,
    aggregate,
    fidelity_checks,
    group_checks,
)


@dataclass
class GroupFacts:
    """The group side of a group run's report.

    ``class_names`` x ``group_names`` are the cells plans fill (the item classes also when the
    models predict the spurious benchmark's binary target); ``real_cells`` counts the real
    training images per cell; ``filled_cells`` the synthetic images per cell of the class x group
    plan and ``filled_classes`` those per class of the class-only plan (None without that plan).
    """

    class_names: list[str]
    group_names: list[str]
    real_cells: list[list[int]]
    filled_cells: list[list[int]] | None = None
    filled_classes: list[int] | None = None


@dataclass
class ReportInputs:
    """Everything a report shows.

    ``config_text`` is the config file verbatim and ``overrides`` what the command changed in
    it; ``counts_after`` the real + synthetic images per class of the filled set (None without
    synthetic data); ``generated_samples``/``real_samples`` a few images per class for the grid;
    ``groups`` the group facts of a group run (None otherwise).
    """

    title: str
    command: str
    config_name: str
    config_text: str
    runs: list[RunResult]
    class_names: list[str]
    counts_before: list[int]
    timings: list[StageTiming]
    wall_seconds: float
    seeds: list[int]
    dataset: str = ""
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    generator: dict[str, Any] | None = None
    counts_after: list[int] | None = None
    generated_samples: LabeledImages | None = None
    real_samples: LabeledImages | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    groups: GroupFacts | None = None


def write_report(inputs: ReportInputs, folder: str | Path) -> Path:
    """Write the report folder (see the module doc) and return its path."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = folder.with_name(f".{folder.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    building.mkdir()
    try:
        _write_contents(inputs, building)
        _swap_in(building, folder)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return folder


def group_results_table(summaries: Sequence[RecipeSummary]) -> str:
    """The Markdown results table of a group run: worst-group, means and fairness gaps (mean ± std over seeds)."""
    return results_table(summaries, GROUP_METRICS, GROUP_METRIC_LABELS)


def results_table(summaries: Sequence[RecipeSummary], metrics: Sequence[str] = METRICS,
                  labels: dict[str, str] = METRIC_LABELS) -> str:
    """The Markdown results table: one row per recipe, accuracy in % (mean ± std over seeds)."""
    lines = [
        "| recipe | real images | synthetic images | " + " | ".join(labels[m] for m in metrics) + " | seeds |",
        "|---|---:|---:|" + "---:|" * len(metrics) + "---|",
    ]
    for summary in summaries:
        counts = summary.sample_counts
        cells = " | ".join(summary.cell(metric) for metric in metrics)
        seeds = ", ".join(str(s) for s in summary.seeds)
        lines.append(f"| {summary.label} | {counts.get('real', 0):,} | {counts.get('synthetic', 0):,} | {cells} | {seeds} |")
    return "\n".join(lines) + "\n"


# ---- contents ------------------------------------------------------------------------------
def _write_contents(inputs: ReportInputs, out: Path) -> None:
    summaries = aggregate(inputs.runs)
    first = {}
    for run in inputs.runs:
        first.setdefault(run.recipe, run)
    figures = draw_figures(inputs, summaries, first, out)
    write_atomic(out / "results.json", json.dumps(_results_json(inputs, summaries), indent=1, default=str) + "\n")
    write_atomic(out / "report.md", _markdown(inputs, summaries, figures))


def _results_json(inputs: ReportInputs, summaries: list[RecipeSummary]) -> dict[str, Any]:
    keep_confusion = len(inputs.class_names) <= LABELLED_CLASSES_MAX
    runs = []
    for run in inputs.runs:
        metrics = {k: v for k, v in run.metrics.items() if keep_confusion or k != "confusion_matrix"}
        runs.append({**asdict(run), "metrics": metrics})
    return {
        "title": inputs.title,
        "dataset": inputs.dataset,
        "command": inputs.command,
        "seeds": inputs.seeds,
        "generator": inputs.generator,
        "recipes": {
            s.recipe: {
                "label": s.label, "seeds": s.seeds, "mean": s.mean, "std": s.std,
                "sample_counts": s.sample_counts, "per_class_mean": s.per_class_mean, "feedback": s.feedback,
                "per_group_mean": s.per_group_mean,
            }
            for s in summaries
        },
        "fidelity": fidelity_checks(summaries) + group_checks(summaries),
        "class_names": inputs.class_names,
        "counts_before": list(inputs.counts_before),
        "counts_after": None if inputs.counts_after is None else list(inputs.counts_after),
        "groups": None if inputs.groups is None else asdict(inputs.groups),
        "runs": runs,
        "stage_timings": [asdict(t) for t in inputs.timings],
        "wall_seconds": inputs.wall_seconds,
        "environment": inputs.environment,
        "config_file": inputs.config_name,
        "config_text": inputs.config_text,
        "overrides": inputs.overrides,
        "config": inputs.config,
    }


def _markdown(inputs: ReportInputs, summaries: list[RecipeSummary], figures: dict[str, str]) -> str:
    seeds = ", ".join(str(s) for s in inputs.seeds)
    spread = f"mean ± std over seeds {seeds}" if len(inputs.seeds) > 1 else f"seed {seeds}"
    parts = [f"# {inputs.title}\n\n"]
    intro = []
    if inputs.dataset:
        intro.append(inputs.dataset + ".")
    if inputs.generator:
        intro.append(f"Generator `{inputs.generator.get('id')}`.")
    intro.append(f"Wall time {_duration(inputs.wall_seconds)}.")
    parts.append(" ".join(intro) + "\n\n")
    if inputs.groups is not None:
        parts.append(_group_sections(inputs, summaries, figures, spread))
    else:
        parts.append(_class_sections(inputs, summaries, figures, spread))
    if "samples" in figures:
        parts.append(f"\n## Synthetic next to real\n\nFor each class a row of synthetic images, then a row of real ones "
                     f"(black squares: fewer images than the row holds).\n\n![samples]({figures['samples']})\n")
    parts.append(_curves_section(summaries, figures))

    parts.append("\n## Stage timings\n\n" + _timings_table(inputs))
    parts.append(_reproduce(inputs))
    return "".join(parts)


def _curves_section(summaries: list[RecipeSummary], figures: dict[str, str]) -> str:
    """One training-curves figure per recipe (seeds overlaid), or nothing when no run kept a history."""
    shown = [(s.label, figures[f"curves:{s.recipe}"]) for s in summaries if f"curves:{s.recipe}" in figures]
    if not shown:
        return ""
    lines = ["\n## Training curves\n\nLoss and accuracy on the training batches per epoch (after augmentation), one line per seed.\n"]
    lines += [f"\n![{label}: training curves]({name})\n" for label, name in shown]
    return "".join(lines)


def _group_sections(inputs: ReportInputs, summaries: list[RecipeSummary], figures: dict[str, str], spread: str) -> str:
    """Results, per-group accuracy and the images per cell of a group run."""
    first = next((run.metrics["group_report"] for run in inputs.runs), None)
    fairness = (first or {}).get("fairness") or {}
    method = "binary target, positive label 1" if fairness.get("method", "").startswith("binary") else "one-vs-rest over the classes, the largest gap"
    parts = [
        f"## Results\n\nAccuracy in % on the test split ({spread}) over its groups, the (class, group) cells. Worst-group: the lowest "
        "group accuracy; mean: group accuracies weighted by each group's share of the real training images (the mean accuracy of "
        "the DFR and Group-DRO papers); balanced mean: the unweighted mean over groups. EO gap / DP gap: fairlearn's equalized-odds and "
        f"demographic-parity differences in percentage points with the group attribute ({', '.join(inputs.groups.group_names)}) as "
        f"the sensitive feature ({method}).\n\n",
        group_results_table(summaries),
    ]
    if "results" in figures:
        parts.append(f"\n![group accuracy by recipe]({figures['results']})\n")
    checks = group_checks(summaries)
    if checks:
        parts.append("\n### Worst-group comparisons\n\n" + "\n".join(f"- {line}" for line in checks) + "\n")
    if "groups" in figures:
        parts.append(f"\n## Per group\n\nGroups by real training images (in brackets), largest first.\n\n![per-group accuracy]({figures['groups']})\n\n")
        parts.append(_per_group_table(inputs, summaries))
    parts.append("\n## Images per cell\n\n" + _cells_table(inputs.groups))
    parts.append(f"\n![class histogram]({figures['histogram']})\n")
    return "".join(parts)


def _class_sections(inputs: ReportInputs, summaries: list[RecipeSummary], figures: dict[str, str], spread: str) -> str:
    """Results, class balance and per-class accuracy of a class-imbalance run."""
    parts = []
    parts.append(f"## Results\n\nTop-1 accuracy in % on the test set ({spread}). Many / medium / few: mean per-class accuracy "
                 "of the classes with > {many} / {few}–{many} / < {few} real training images in the long tail.\n\n"
                 .format(**_thresholds(inputs.runs)))
    parts.append(results_table(summaries))
    parts.append(_feedback_note(summaries))
    if "results" in figures:
        parts.append(f"\n![accuracy by recipe]({figures['results']})\n")
    checks = fidelity_checks(summaries)
    if checks:
        parts.append("\n### SYNAuG targets\n\n" + "\n".join(f"- {line}" for line in checks) + "\n")

    parts.append("\n## Class balance\n\n")
    if inputs.counts_after is not None:
        parts.append("Real images per class in the long tail, and real + synthetic after filling.\n\n")
    parts.append(f"![class histogram]({figures['histogram']})\n\n")
    parts.append(_counts_table(inputs))

    if "per_class" in figures:
        compared = comparison_pair(summaries)
        parts.append(f"\n## Per class\n\n{' vs '.join(s.label for s in compared)}.\n\n![per-class accuracy]({figures['per_class']})\n\n")
        parts.append(_per_class_table(inputs, summaries))
        confusions = [name for key, name in figures.items() if key.startswith("confusion:")]
        if confusions:
            parts.append("\n" + " ".join(f"![{name}]({name})" for name in confusions) + "\n")
    return "".join(parts)


def _feedback_note(summaries: Sequence[RecipeSummary]) -> str:
    """What the FG rows' synthetic images are (empty without FG rows)."""
    guided = [s for s in summaries if s.feedback]
    if not guided:
        return ""
    first = guided[0].feedback
    steps = "at every sampling step" if first["every"] == 1 else f"once every {first['every']} sampling steps"
    window = f" from {first['start']:g} to {first['stop']:g} of the run" if "start" in first else ""
    control = any(s.recipe.startswith("fill_budget-") for s in summaries)
    return (
        f"\nFG rows: SYNAuG's training (fill + Mixup + cRT) on feedback-guided synthetic images (guidance scale {first['scale']:g}, "
        f"{steps}{window}, gradient path {first['path']}; feedback classifier: {first['classifier_source']}). "
        "The budget is the fraction of the fill plan's synthetic images that the row's store holds (column 'synthetic images')."
        + (" 'SYNAuG unguided' rows are the same training on the same number of unguided images: the FG row's control.\n" if control else "\n")
    )


def _per_group_table(inputs: ReportInputs, summaries: Sequence[RecipeSummary]) -> str:
    """Per group: real training images, test images and each recipe's accuracy (mean over seeds)."""
    groups = next(run.metrics["group_report"]["groups"] for run in inputs.runs)
    lines = ["| group | train images | test images | " + " | ".join(s.label for s in summaries) + " |", "|---|---:|---:|" + "---:|" * len(summaries)]
    for index, entry in enumerate(groups):
        cells = " | ".join("–" if s.per_group_mean[index] is None else f"{s.per_group_mean[index]:.1f}" for s in summaries)
        lines.append(f"| {entry['name']} | {entry['train_count']:,} | {entry['test_count']:,} | {cells} |")
    return "\n".join(lines) + "\n"


def _cells_table(groups: GroupFacts) -> str:
    """Real images per (class, group) cell and the synthetic images each fill plan adds."""
    header = "| class | " + " | ".join(f"real {g}" for g in groups.group_names)
    divider = "|---|" + "---:|" * len(groups.group_names)
    if groups.filled_cells is not None:
        header += " | " + " | ".join(f"synthetic {g} (cells)" for g in groups.group_names)
        divider += "---:|" * len(groups.group_names)
    if groups.filled_classes is not None:
        header += " | synthetic (classes, no group)"
        divider += "---:|"
    lines = [header + " |", divider]
    for index, name in enumerate(groups.class_names):
        cells = [f"{n:,}" for n in groups.real_cells[index]]
        if groups.filled_cells is not None:
            cells += [f"{n:,}" for n in groups.filled_cells[index]]
        if groups.filled_classes is not None:
            cells.append(f"{groups.filled_classes[index]:,}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = ("Real training images per (class, group) cell; the group-uniform plan (cells) fills every cell to the largest one, "
            "the class-only plan (classes) every class to the largest class with prompts that name no group.\n\n")
    return note + "\n".join(lines) + "\n"


def _thresholds(runs: Sequence[RunResult]) -> dict[str, int]:
    thresholds = runs[0].metrics["thresholds"] if runs else {"many": MANY_THRESHOLD, "few": FEW_THRESHOLD}
    return {"many": thresholds["many"], "few": thresholds["few"]}


def _counts_table(inputs: ReportInputs) -> str:
    lines = ["| class | real | synthetic (fill) |", "|---|---:|---:|"]
    after = inputs.counts_after or inputs.counts_before
    if len(inputs.class_names) > LABELLED_CLASSES_MAX:
        total_real, total_after = int(np.sum(inputs.counts_before)), int(np.sum(after))
        return f"{len(inputs.class_names)} classes: {total_real:,} real images, {total_after - total_real:,} synthetic added by the fill plan.\n"
    for name, real, total in zip(inputs.class_names, inputs.counts_before, after):
        lines.append(f"| {name} | {real:,} | {total - real:,} |")
    return "\n".join(lines) + "\n"


def _per_class_table(inputs: ReportInputs, summaries: Sequence[RecipeSummary]) -> str:
    if len(inputs.class_names) > LABELLED_CLASSES_MAX:
        return ""
    lines = ["| class | real | " + " | ".join(s.label for s in summaries) + " |", "|---|---:|" + "---:|" * len(summaries)]
    for index, (name, count) in enumerate(zip(inputs.class_names, inputs.counts_before)):
        cells = " | ".join("–" if s.per_class_mean[index] is None else f"{s.per_class_mean[index]:.1f}" for s in summaries)
        lines.append(f"| {name} | {count:,} | {cells} |")
    return "\n".join(lines) + "\n"


def _timings_table(inputs: ReportInputs) -> str:
    lines = ["| stage | what | seconds | |", "|---|---|---:|---|"]
    computed = 0.0
    for timing in inputs.timings:
        note = "cached (time of the run that computed it)" if timing.cached else ""
        computed += 0.0 if timing.cached else timing.seconds
        lines.append(f"| {timing.stage} | {timing.label} | {timing.seconds:.1f} | {note} |")
    env = inputs.environment
    machine = []
    if env.get("cpu_count"):
        machine.append(f"{env['cpu_count']} CPU cores, {env.get('torch_threads')} torch threads")
    if env.get("device"):
        machine.append(f"device {env['device']}")
    if env.get("load_average_start") is not None:
        machine.append(f"load average {env['load_average_start']:.1f} at the start and {env.get('load_average_end', 0):.1f} at the end")
    text = "\n".join(lines) + f"\n\nComputed in this run: {computed:.0f} s of {inputs.wall_seconds:.0f} s wall time"
    if machine:
        text += " (" + "; ".join(machine) + ")"
    return text + ".\n"


def _reproduce(inputs: ReportInputs) -> str:
    lines = ["\n## Reproduce\n", f"```sh\n{inputs.command}\n```\n", f"Seeds: {', '.join(str(s) for s in inputs.seeds)} (training; data and generation seeds are in the config)."]
    if inputs.generator:
        settings = ", ".join(f"{k} {v}" for k, v in (inputs.generator.get("settings") or {}).items())
        lines.append(f"Generator: `{inputs.generator.get('id')}` ({settings}).")
    if inputs.overrides:
        lines.append("The command changed the config file as follows: " + "; ".join(f"`{o}`" for o in inputs.overrides) + ".")
    lines.append(f"\nConfig file `{inputs.config_name}`, verbatim:\n\n```yaml\n{inputs.config_text.rstrip()}\n```\n")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _swap_in(building: Path, folder: Path) -> None:
    """Replace ``folder`` by the finished ``building`` folder (the old one is moved aside first)."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(folder, old)
    os.rename(building, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
