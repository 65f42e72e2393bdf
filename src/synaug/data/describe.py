"""Summaries of a dataset's class balance: counts, imbalance factor, shot groups, a histogram."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synaug.data.dataset import LabeledImages, check_image_files
from synaug.data.longtail import FEW_THRESHOLD, MANY_THRESHOLD, shot_groups
from synaug.data.registry import write_atomic
from synaug.errors import SynaugError

_LABELLED_BARS_UP_TO = 20


def describe(dataset: LabeledImages, many_threshold: int = MANY_THRESHOLD, few_threshold: int = FEW_THRESHOLD) -> dict[str, Any]:
    """Class counts, imbalance factor (largest / smallest non-empty class) and shot groups.

    Image files are checked to be complete images first (a damaged one is a one-line error).

    ``many``/``medium``/``few`` list class indices with > ``many_threshold``,
    in-between, and < ``few_threshold`` images.
    """
    if dataset.files is not None:
        check_image_files(dataset.files)
    counts = dataset.class_counts()
    nonzero = counts[counts > 0]
    if not len(nonzero):
        raise SynaugError("the dataset has no images; check the data folder, split or index file.")
    groups = shot_groups(counts, many_threshold, few_threshold)
    summary: dict[str, Any] = {
        "num_images": int(len(dataset)),
        "num_classes": dataset.num_classes,
        "num_synthetic": int(dataset.is_synthetic.sum()),
        "class_names": list(dataset.class_names),
        "class_counts": counts.tolist(),
        "imbalance_factor": float(nonzero.max() / nonzero.min()),
        "empty_classes": np.flatnonzero(counts == 0).tolist(),
        "thresholds": {"many": many_threshold, "few": few_threshold},
        **{name: members.tolist() for name, members in groups.items()},
    }
    if dataset.groups is not None:
        summary["group_names"] = list(dataset.group_names)
        summary["cell_counts"] = dataset.cell_counts().tolist()
    return summary


def plot_class_histogram(
    counts: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    title: str | None = None,
    counts_after: Sequence[int] | np.ndarray | None = None,
    legend: tuple[str, str] = ("before", "after"),
) -> Path:
    """Bar chart of images per class, written as PNG to ``path`` (atomically).

    With ``counts_after`` each class gets two bars, labelled by ``legend``.
    """
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; no global backend change

    counts = np.asarray(counts)
    if len(counts) != len(class_names) or (counts_after is not None and len(counts_after) != len(counts)):
        raise SynaugError("give one count per class name (and as many counts after as before) to plot a class histogram.")
    positions = np.arange(len(counts))
    figure = Figure(figsize=(max(6.0, min(0.35 * len(counts) + 2, 24.0)), 4.0), layout="constrained")
    axes = figure.add_subplot()
    if counts_after is None:
        bars = [axes.bar(positions, counts, color="tab:blue")]
    else:
        width = 0.42
        bars = [
            axes.bar(positions - width / 2, counts, width, color="tab:blue", label=legend[0]),
            axes.bar(positions + width / 2, np.asarray(counts_after), width, color="tab:orange", label=legend[1]),
        ]
        axes.legend()
    if len(counts) <= _LABELLED_BARS_UP_TO:
        for container in bars:
            axes.bar_label(container, fontsize=7)
    axes.set_xticks(positions, list(class_names), rotation=45 if len(counts) <= 50 else 90, ha="right", fontsize=8 if len(counts) <= 50 else 5)
    axes.set_ylabel("images")
    axes.set_xlim(-0.6, len(counts) - 0.4)
    if title:
        axes.set_title(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    path = Path(path)
    write_atomic(path, buffer.getvalue())
    return path
