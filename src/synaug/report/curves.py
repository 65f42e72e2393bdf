"""Training curves: the per-epoch loss and accuracy of every run, one figure per recipe with its seeds overlaid.

The values are each run's training history (:attr:`synaug.train.TrainResult.history`, kept in
its checkpoint's ``config.json``): the mean cross-entropy and the accuracy against each
sample's own label over the epoch's training batches (after augmentation), so they show how
training went, not how well the model generalises. A run without a history (e.g. trained by
an older version) is left out; a recipe none of whose runs has one gets no figure.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Sequence

from synaug.data.registry import write_atomic
from synaug.report.results import RunResult

CURVE_PANELS = (("loss", "training loss"), ("accuracy", "training accuracy (%)"))


def curve_file(recipe: str) -> str:
    """The file name of ``recipe``'s curves: ``curves-<recipe>.png`` (characters other than letters, digits, ``_-`` become ``_``)."""
    return f"curves-{re.sub(r'[^A-Za-z0-9_-]', '_', recipe)}.png"


def plot_training_curves(runs: Sequence[RunResult], folder: str | Path) -> dict[str, str]:
    """Draw ``curves-<recipe>.png`` in ``folder`` for every recipe with a history; returns {recipe: file name}."""
    by_recipe: dict[str, list[RunResult]] = {}
    for run in runs:
        if run.history:
            by_recipe.setdefault(run.recipe, []).append(run)
    files = {}
    for recipe, recipe_runs in by_recipe.items():
        files[recipe] = curve_file(recipe)
        _plot_recipe(recipe_runs, Path(folder) / files[recipe])
    return files


def _plot_recipe(runs: Sequence[RunResult], path: Path) -> None:
    """Loss and accuracy against the epoch, one line per seed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 3.4), layout="constrained")
    panels = figure.subplots(1, len(CURVE_PANELS))
    for axes, (key, label) in zip(panels, CURVE_PANELS):
        for run in sorted(runs, key=lambda r: r.seed):
            epochs = [row["epoch"] for row in run.history]
            values = [row[key] * (100 if key == "accuracy" else 1) for row in run.history]
            axes.plot(epochs, values, marker="o" if len(epochs) < 12 else None, markersize=3, label=f"seed {run.seed}")
        axes.set(xlabel="epoch", ylabel=label)
        axes.grid(alpha=0.3)
    panels[-1].legend(fontsize=8)
    figure.suptitle(f"{runs[0].label}: training curves")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())
