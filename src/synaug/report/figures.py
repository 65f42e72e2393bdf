"""The report's PNGs: results bars, class histogram, per-class accuracy, confusion matrices,
the synthetic-next-to-real grid and the training curves (file names in :mod:`synaug.report.writer`)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from synaug.data.dataset import LabeledImages
from synaug.data.describe import plot_class_histogram
from synaug.data.registry import write_atomic
from synaug.evaluate.groups import plot_group_accuracy
from synaug.evaluate.plots import LABELLED_CLASSES_MAX, plot_confusion_matrix, plot_per_class_accuracy
from synaug.report.curves import plot_training_curves
from synaug.report.results import GROUP_METRIC_LABELS, GROUP_METRICS, METRIC_LABELS, RecipeSummary, RunResult, mean_group_report, mean_metrics

if TYPE_CHECKING:
    from synaug.report.writer import ReportInputs

SAMPLE_GRID_CLASSES = 20


def comparison_pair(summaries: Sequence[RecipeSummary]) -> list[RecipeSummary]:
    """The recipes the per-class plot compares: baseline (CE + cRT, else CE) and SYNAuG, else all."""
    by_name = {s.recipe: s for s in summaries}
    baseline = by_name.get("ce_crt") or by_name.get("ce")
    method = by_name.get("synaug") or by_name.get("fill_mixup") or by_name.get("fill")
    return [baseline, method] if baseline and method else list(summaries)


def draw_figures(inputs: ReportInputs, summaries: list[RecipeSummary], first: dict[str, RunResult], out: Path) -> dict[str, str]:
    """Draw every PNG; returns {figure kind: file name}."""
    figures: dict[str, str] = {}
    if summaries and inputs.groups is not None:
        _plot_results(summaries, out / "results.png", GROUP_METRICS[:3], GROUP_METRIC_LABELS, "Group accuracy by recipe")
        figures["results"] = "results.png"
        template = first[summaries[0].recipe].metrics["group_report"]
        plot_group_accuracy(
            {s.label: mean_group_report(s, template) for s in summaries}, out / "group_accuracy.png",
            title="Per-group accuracy" + (" (mean over seeds)" if len(inputs.seeds) > 1 else "") + "; dashed: worst-group",
        )
        figures["groups"] = "group_accuracy.png"
    elif summaries:
        _plot_results(summaries, out / "results.png", ("top1", "many", "medium", "few"), METRIC_LABELS, "Accuracy by recipe")
        figures["results"] = "results.png"
    plot_class_histogram(
        inputs.counts_before, inputs.class_names, out / "class_histogram.png",
        title="images per class" + (" before and after filling" if inputs.counts_after else " (real long tail)"),
        counts_after=inputs.counts_after, legend=("real", "real + synthetic"),
    )
    figures["histogram"] = "class_histogram.png"
    compared = comparison_pair(summaries) if inputs.groups is None else []
    if compared:
        template = first[compared[0].recipe].metrics
        plot_per_class_accuracy(
            {s.label: mean_metrics(s, template) for s in compared}, out / "per_class_accuracy.png",
            title="Per-class accuracy" + (" (mean over seeds)" if len(inputs.seeds) > 1 else ""),
        )
        figures["per_class"] = "per_class_accuracy.png"
        if len(inputs.class_names) <= LABELLED_CLASSES_MAX:
            for summary in compared[:2]:
                name = f"confusion_matrix-{_slug(summary.recipe)}.png"
                run = first[summary.recipe]
                plot_confusion_matrix(run.metrics, out / name, title=f"Confusion matrix: {summary.label} (seed {run.seed})")
                figures[f"confusion:{summary.recipe}"] = name
    if inputs.generated_samples is not None and inputs.real_samples is not None and len(inputs.generated_samples):
        from synaug.generators.check import sample_grid

        generated, real = _grid_classes(inputs.generated_samples, inputs.real_samples, inputs.counts_before)
        sample_grid(generated, real, out / "samples.png")
        figures["samples"] = "samples.png"
    figures.update({f"curves:{recipe}": name for recipe, name in plot_training_curves(inputs.runs, out).items()})
    return figures


def _plot_results(summaries: Sequence[RecipeSummary], path: Path, metrics: Sequence[str], labels: dict[str, str], title: str) -> None:
    """Grouped bars: ``metrics`` (e.g. overall, many, medium, few) per recipe, with std error bars when there are seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = 0.8 / len(summaries)
    figure = Figure(figsize=(max(8.0, 1.6 * len(metrics) + 0.4 * len(summaries) + 3.0), 4.2), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(metrics))
    for index, summary in enumerate(summaries):
        means = [np.nan if summary.mean[m] is None else summary.mean[m] for m in metrics]
        errors = [0.0 if summary.std[m] is None else summary.std[m] for m in metrics]
        axes.bar(positions - 0.4 + width * (index + 0.5), means, width, yerr=errors, capsize=2, label=summary.label)
    axes.set_xticks(positions, [labels[m] for m in metrics])
    axes.set(ylim=(0, 100), ylabel="accuracy (%)", title=title)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=120)
    write_atomic(path, buffer.getvalue())


def _grid_classes(generated: LabeledImages, real: LabeledImages, counts: Sequence[int]) -> tuple[LabeledImages, LabeledImages]:
    """The sample sets restricted to at most 20 classes, spread over the long tail, relabelled."""
    num_classes = len(real.class_names)
    if num_classes <= SAMPLE_GRID_CLASSES:
        return generated, real
    by_size = np.argsort(-np.asarray(counts), kind="stable")
    chosen = by_size[np.linspace(0, num_classes - 1, SAMPLE_GRID_CLASSES).round().astype(int)]
    mapping = {int(c): i for i, c in enumerate(chosen)}
    names = [real.class_names[int(c)] for c in chosen]

    def restrict(data: LabeledImages) -> LabeledImages:
        keep = np.flatnonzero(np.isin(data.labels, chosen))
        part = data.subset(keep)
        return LabeledImages(labels=[mapping[int(l)] for l in part.labels], class_names=names, images=part.images, is_synthetic=part.is_synthetic)

    return restrict(generated), restrict(real)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
