"""PNG plots of evaluation results: confusion matrix and per-class (or per-group) accuracy.

Figures are drawn with matplotlib's object API on the Agg canvas (no display, no pyplot
state) and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from synaug.data.registry import write_atomic
from synaug.errors import SynaugError

GROUP_SHADES = {"many": "#f2f2f2", "medium": "#e0e0e0", "few": "#cccccc"}
LABELLED_CLASSES_MAX = 30


def plot_confusion_matrix(metrics: dict[str, Any], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Row-normalised confusion matrix (% of each true class), cells annotated for up to 30 classes."""
    confusion = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = [entry["name"] for entry in metrics["classes"]]
    rows = confusion.sum(1, keepdims=True)
    percent = np.divide(100.0 * confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    size = max(4.0, 0.45 * len(names) + 2.0)
    figure = Figure(figsize=(size + 1.0, size), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(image, ax=axes, label="% of the true class")
    axes.set(xlabel="predicted class", ylabel="true class", title=title)
    if len(names) <= LABELLED_CLASSES_MAX:
        ticks = np.arange(len(names))
        axes.set_xticks(ticks, names, rotation=60, ha="right", fontsize=8)
        axes.set_yticks(ticks, names, fontsize=8)
        for (row, column), value in np.ndenumerate(percent):
            if value >= 0.5:
                colour = "white" if value > 60 else "black"
                axes.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=7, color=colour)
    return _save(figure, path)


def plot_per_class_accuracy(runs: dict[str, dict[str, Any]], path: str | Path, title: str = "Per-class accuracy") -> Path:
    """Grouped bars of per-class accuracy for one or more runs (e.g. baseline vs SYNAuG).

    Classes are ordered by training count (largest first, from the first run) and the
    background is shaded by shot group.
    """
    if not runs:
        raise SynaugError("no runs to plot; pass at least one evaluation result.")
    classes = next(iter(runs.values()))["classes"]
    return plot_accuracy_bars(
        [(c["name"], c["train_count"]) for c in classes], {name: [c["accuracy"] for c in m["classes"]] for name, m in runs.items()},
        path, title, axis_label="classes, by training count (shading: many / medium / few)",
        shades=[GROUP_SHADES.get(c["shot_group"], "white") for c in classes],
    )


def plot_accuracy_bars(
    items: Sequence[tuple[str, int]], runs: dict[str, Sequence[float | None]], path: str | Path, title: str, *, axis_label: str,
    shades: Sequence[str] | None = None, lines: dict[str, float] | None = None,
) -> Path:
    """Grouped bars of accuracy per item (class or group) for one or more runs.

    ``items``: (name, training count) per item, drawn largest count first; ``runs``: each run's
    accuracy per item (None: no test image). ``shades``: a background colour per item;
    ``lines``: a dashed line per run (e.g. its worst-group accuracy) in the run's colour.
    """
    order = sorted(range(len(items)), key=lambda i: -items[i][1])
    width = 0.8 / len(runs)
    figure = Figure(figsize=(max(6.0, 0.35 * len(order) * max(1, len(runs) / 2) + 2.0), 4.5), layout="constrained")
    axes = figure.add_subplot()
    for position, i in enumerate(order if shades is not None else ()):
        axes.axvspan(position - 0.5, position + 0.5, color=shades[i], lw=0)
    for index, (name, accuracies) in enumerate(runs.items()):
        heights = [np.nan if accuracies[i] is None else accuracies[i] for i in order]
        bars = axes.bar(np.arange(len(order)) - 0.4 + width * (index + 0.5), heights, width=width, label=name)
        if lines is not None:
            axes.axhline(lines[name], color=bars.patches[0].get_facecolor(), linestyle="--", linewidth=1)
    axes.set(ylim=(0, 100), ylabel="accuracy (%)", xlim=(-0.5, len(order) - 0.5), title=title)
    if len(order) <= LABELLED_CLASSES_MAX:
        axes.set_xticks(np.arange(len(order)), [f"{items[i][0]}\n({items[i][1]})" for i in order], rotation=60, ha="right", fontsize=8)
    else:
        axes.set_xlabel(axis_label)
    if len(runs) > 1:
        axes.legend(loc="lower left", fontsize=8)
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=120)
    write_atomic(path, buffer.getvalue())
    return path
