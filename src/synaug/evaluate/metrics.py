"""Turning logits into the long-tail metrics, and writing them as JSON and Markdown.

All accuracies are percentages. Conventions (those of the long-tail literature):

- **top-1**: share of test images whose arg-max logit is their label.
- **per-class accuracy**: top-1 among the test images of one class (recall); None for a
  class with no test images.
- **many / medium / few**: the *mean of the per-class accuracies* of the classes in each
  shot group, the groups being defined by *training* counts (> ``many_threshold``,
  ``few_threshold``..``many_threshold``, < ``few_threshold``; 100 and 20 by default). This is
  not the pooled accuracy over the group's test images (the two agree on balanced test sets).
- **balanced accuracy**: mean of the per-class accuracies over the classes present in the
  test set (scikit-learn's ``balanced_accuracy_score``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from synaug.data.longtail import FEW_THRESHOLD, MANY_THRESHOLD, shot_groups
from synaug.data.registry import write_atomic
from synaug.errors import SynaugError

GROUPS = ("many", "medium", "few")


def evaluate(
    logits: torch.Tensor | np.ndarray,
    labels: np.ndarray | Sequence[int],
    train_counts: np.ndarray | Sequence[int],
    class_names: Sequence[str],
    many_threshold: int = MANY_THRESHOLD,
    few_threshold: int = FEW_THRESHOLD,
) -> dict[str, Any]:
    """Metrics of predictions ``logits.argmax(1)`` against ``labels`` (see the module doc).

    Returns a JSON-safe dict: ``top1``, ``balanced_accuracy``, ``many``, ``medium``, ``few``
    (None for an empty group), ``num_samples``, ``thresholds``, ``classes`` (one entry per class:
    name, train_count, test_count, shot_group, accuracy), ``shot_groups`` (class names per
    group) and ``confusion_matrix`` (rows: true class, columns: predicted class).
    """
    scores = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    train_counts = np.asarray(train_counts, dtype=np.int64)
    num_classes = len(class_names)
    if scores.ndim != 2 or scores.shape[1] != num_classes or len(train_counts) != num_classes:
        raise SynaugError(
            f"logits of shape {tuple(scores.shape)} and {len(train_counts)} training counts do not match "
            f"{num_classes} classes; evaluate the model on a dataset with its own class list."
        )
    if len(labels) != len(scores) or len(labels) == 0:
        raise SynaugError(f"{len(scores)} predictions for {len(labels)} labels; give one label per image (at least one).")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise SynaugError(f"test label {labels.max()} is out of range for {num_classes} classes; use the model's class list.")

    predictions = scores.argmax(1)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    test_counts = confusion.sum(1)
    per_class = np.full(num_classes, np.nan)
    present = test_counts > 0
    per_class[present] = 100.0 * np.diag(confusion)[present] / test_counts[present]

    groups = shot_groups(train_counts, many_threshold, few_threshold)
    group_of = np.empty(num_classes, dtype=object)
    for group, members in groups.items():
        group_of[members] = group
    metrics: dict[str, Any] = {
        "num_samples": int(len(labels)),
        "top1": float(100.0 * (predictions == labels).mean()),
        "balanced_accuracy": float(np.nanmean(per_class)),
    }
    for group in GROUPS:
        members = per_class[groups[group]]
        members = members[~np.isnan(members)]
        metrics[group] = float(members.mean()) if len(members) else None
    metrics["thresholds"] = {"many": many_threshold, "few": few_threshold}
    metrics["classes"] = [
        {
            "name": str(class_names[c]),
            "train_count": int(train_counts[c]),
            "test_count": int(test_counts[c]),
            "shot_group": str(group_of[c]),
            "accuracy": None if np.isnan(per_class[c]) else float(per_class[c]),
        }
        for c in range(num_classes)
    ]
    metrics["shot_groups"] = {group: [str(class_names[c]) for c in groups[group]] for group in GROUPS}
    metrics["confusion_matrix"] = confusion.tolist()
    return metrics


def summary_table(runs: dict[str, dict[str, Any]]) -> str:
    """A Markdown table with one row per run: top-1, balanced, many, medium, few accuracy."""
    first = next(iter(runs.values()))
    sizes = {group: len(first["shot_groups"][group]) for group in GROUPS}
    header = "| run | top-1 | balanced | " + " | ".join(f"{g} ({sizes[g]} cl.)" for g in GROUPS) + " |"
    lines = [header, "|---" * (3 + len(GROUPS)) + "|"]
    for name, metrics in runs.items():
        cells = [metrics["top1"], metrics["balanced_accuracy"], *(metrics[g] for g in GROUPS)]
        lines.append(f"| {name} | " + " | ".join(_percent(v) for v in cells) + " |")
    return "\n".join(lines) + "\n"


def per_class_table(runs: dict[str, dict[str, Any]]) -> str:
    """A Markdown table with one row per class: training count, shot group and each run's accuracy."""
    first = next(iter(runs.values()))
    lines = [
        "| class | train images | group | test images | " + " | ".join(runs) + " |",
        "|---" * (4 + len(runs)) + "|",
    ]
    for index, entry in enumerate(first["classes"]):
        accuracies = " | ".join(_percent(run["classes"][index]["accuracy"]) for run in runs.values())
        lines.append(
            f"| {entry['name']} | {entry['train_count']} | {entry['shot_group']} | {entry['test_count']} | {accuracies} |"
        )
    return "\n".join(lines) + "\n"


def write_results(
    metrics: dict[str, Any] | dict[str, dict[str, Any]], folder: str | Path, title: str = "Results", split: str = "test"
) -> Path:
    """Write ``results.json`` and ``results.md`` (summary and per-class tables) into ``folder``.

    ``metrics`` is one :func:`evaluate` dict, or a mapping of run names to such dicts
    (e.g. ``{"CE": ..., "CE + cRT": ...}``) that the tables then compare; ``split`` names
    the images they were measured on.
    """
    folder = Path(folder)
    runs = {"model": metrics} if "top1" in metrics else dict(metrics)
    if not runs:
        raise SynaugError("there are no results to write; evaluate a model first.")
    first = next(iter(runs.values()))
    markdown = (
        f"# {title}\n\nAccuracy in % on {first['num_samples']} {split} images. Many / medium / few: mean per-class "
        f"accuracy of the classes with > {first['thresholds']['many']} / {first['thresholds']['few']}-"
        f"{first['thresholds']['many']} / < {first['thresholds']['few']} training images.\n\n"
        + summary_table(runs)
        + "\n## Per class\n\n"
        + per_class_table(runs)
    )
    write_atomic(folder / "results.json", json.dumps(metrics, indent=1) + "\n")
    write_atomic(folder / "results.md", markdown)
    return folder


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"
