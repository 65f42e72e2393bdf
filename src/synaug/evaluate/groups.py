"""Group metrics (per-group, worst-group and mean accuracy) and fairness gaps, and their plot.

The run report shows them as tables (:mod:`synaug.report`).

Conventions (accuracies and gaps in %, i.e. percentage points):

- **groups** are whatever the caller evaluates over; for group-robustness benchmarks they
  are the (class, attribute) cells of :func:`synaug.data.groups.group_cells`.
- **worst-group accuracy**: the lowest accuracy among the groups that have test images.
- **mean (unweighted over groups)**: the plain mean of those group accuracies.
- **mean (weighted by train group sizes)**: group accuracies weighted by the *training*
  share of each group; this is the "mean accuracy" of the DFR and Group-DRO papers. On a
  spurious training set it is dominated by the majority groups, so the two means differ a lot.
- **fairness** (fairlearn) for a ``sensitive`` attribute: equalized-odds difference (the larger
  of the TPR and FPR gaps between sensitive groups) and demographic-parity difference (gap in
  selection rate). For a binary target the positive label is 1. For more classes each class is
  scored one-vs-rest (target "is class c", prediction "predicted c") and the report gives the
  max and the mean over classes. Sensitive groups without positives (or without negatives) for
  a class have no TPR (FPR); they are left out of that equalized-odds difference and listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.data.groups import group_cells
from synaug.errors import SynaugError
from synaug.evaluate.plots import plot_accuracy_bars

MEAN_UNWEIGHTED = "mean (unweighted over groups)"
MEAN_WEIGHTED = "mean (weighted by train group sizes, as DFR/Group-DRO papers report)"


def group_report(
    logits_or_predictions: torch.Tensor | np.ndarray,
    labels: np.ndarray | Sequence[int],
    groups: np.ndarray | Sequence[int],
    group_names: Sequence[str],
    train_group_counts: np.ndarray | Sequence[int],
    sensitive: np.ndarray | Sequence[int] | None = None,
    sensitive_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Group and fairness metrics of predictions (``logits.argmax(1)``, or given as labels).

    With predicted labels, pass ``num_classes`` unless the labels show every class.

    Returns a JSON-safe dict: ``num_samples``, ``accuracy`` (pooled), ``groups`` (name,
    train_count, test_count, accuracy per group), ``worst_group_accuracy``, ``worst_group``,
    ``mean_unweighted``, ``mean_weighted_by_train``, ``labels`` (how to caption the two means)
    and ``fairness`` (None without ``sensitive``; see the module doc).
    """
    predictions, num_classes = _predictions(logits_or_predictions, num_classes)
    labels = np.asarray(labels, dtype=np.int64)
    if num_classes is None:
        num_classes = int(max(labels.max(initial=1), predictions.max(initial=1))) + 1
    groups = np.asarray(groups, dtype=np.int64)
    train_counts = np.asarray(train_group_counts, dtype=np.int64)
    names = [str(n) for n in group_names]
    if not len(labels) or len(predictions) != len(labels) or len(groups) != len(labels):
        raise SynaugError(f"{len(predictions)} predictions, {len(labels)} labels and {len(groups)} groups; give one of each per test image.")
    if len(train_counts) != len(names):
        raise SynaugError(f"{len(train_counts)} training counts for {len(names)} groups; give one training count per group.")
    if groups.min() < 0 or groups.max() >= len(names):
        raise SynaugError(f"group index {groups.max() if groups.max() >= len(names) else groups.min()} is out of range for {len(names)} groups.")

    correct = predictions == labels
    test_counts = np.bincount(groups, minlength=len(names))
    hits = np.bincount(groups, weights=correct, minlength=len(names))
    present = test_counts > 0
    accuracy = np.full(len(names), np.nan)
    accuracy[present] = 100.0 * hits[present] / test_counts[present]
    worst = int(np.nanargmin(accuracy))
    weights = train_counts[present]
    report: dict[str, Any] = {
        "num_samples": int(len(labels)),
        "accuracy": float(100.0 * correct.mean()),
        "worst_group_accuracy": float(accuracy[worst]),
        "worst_group": names[worst],
        "mean_unweighted": float(accuracy[present].mean()),
        "mean_weighted_by_train": float(weights @ accuracy[present] / weights.sum()) if weights.sum() else None,
        "labels": {"mean_unweighted": MEAN_UNWEIGHTED, "mean_weighted_by_train": MEAN_WEIGHTED},
        "groups": [
            {
                "name": name,
                "train_count": int(train_counts[g]),
                "test_count": int(test_counts[g]),
                "accuracy": None if not present[g] else float(accuracy[g]),
            }
            for g, name in enumerate(names)
        ],
        "fairness": None,
    }
    if sensitive is not None:
        report["fairness"] = fairness_report(labels, predictions, sensitive, sensitive_names, num_classes)
    return report


def cell_report(logits: torch.Tensor | np.ndarray, test: LabeledImages, train: LabeledImages | np.ndarray) -> dict[str, Any]:
    """:func:`group_report` over the (class, group) cells of ``test``, the means weighted by the cells
    of ``train`` (the real training set, or its ``cell_counts()``), the group attribute as the sensitive feature."""
    cells, names = group_cells(test)
    train_counts = train.cell_counts() if isinstance(train, LabeledImages) else np.asarray(train)
    return group_report(
        logits, test.labels, cells, names, train_counts.ravel(), sensitive=test.groups,
        sensitive_names=test.group_names, num_classes=test.num_classes,
    )


def fairness_report(
    labels: np.ndarray,
    predictions: np.ndarray,
    sensitive: np.ndarray | Sequence[int],
    sensitive_names: Sequence[str] | None = None,
    num_classes: int = 2,
) -> dict[str, Any]:
    """Equalized-odds and demographic-parity differences (fairlearn) and a table by sensitive group."""
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    sensitive = np.asarray(sensitive, dtype=np.int64)
    if len(sensitive) != len(labels):
        raise SynaugError(f"{len(sensitive)} sensitive values for {len(labels)} test images; give one per image.")
    names = [str(n) for n in sensitive_names] if sensitive_names is not None else [str(v) for v in range(int(sensitive.max()) + 1)]
    if sensitive.min() < 0 or sensitive.max() >= len(names):
        raise SynaugError(f"sensitive value {int(sensitive.max())} has no name among {len(names)} sensitive groups; fix the names.")
    feature = np.array(names, dtype=object)[sensitive]
    if num_classes == 2:
        gaps = _gaps(labels == 1, predictions == 1, feature)
        frame = MetricFrame(
            metrics={"accuracy": accuracy_score, "selection_rate": selection_rate, "tpr": true_positive_rate,
                     "fpr": false_positive_rate, "count": count},
            y_true=labels, y_pred=predictions, sensitive_features=feature,
        )
        return {"method": "binary (positive label 1)", **gaps, "by_group": _rows(frame)}
    per_class = [{"class": c, **_gaps(labels == c, predictions == c, feature)} for c in range(num_classes)]
    eod = [row["equalized_odds_difference"] for row in per_class if row["equalized_odds_difference"] is not None]
    dpd = [row["demographic_parity_difference"] for row in per_class]
    frame = MetricFrame(
        metrics={"accuracy": accuracy_score, "mean_tpr": _macro_rate(num_classes, True),
                 "mean_fpr": _macro_rate(num_classes, False), "count": count},
        y_true=labels, y_pred=predictions, sensitive_features=feature,
    )
    return {
        "method": "one-vs-rest over classes",
        "equalized_odds_difference": max(eod) if eod else None,
        "equalized_odds_difference_mean": float(np.mean(eod)) if eod else None,
        "demographic_parity_difference": max(dpd),
        "demographic_parity_difference_mean": float(np.mean(dpd)),
        "per_class": per_class,
        "by_group": _rows(frame),
    }


def _gaps(positive: np.ndarray, predicted: np.ndarray, feature: np.ndarray) -> dict[str, Any]:
    """Both fairlearn gaps (in %) of one binary problem; groups lacking positives or negatives skip equalized odds."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    positive, predicted = positive.astype(np.int64), predicted.astype(np.int64)
    both = [g for g in np.unique(feature) if positive[feature == g].any() and not positive[feature == g].all()]
    keep = np.isin(feature, both)
    eod = None
    if len(both) >= 2:
        eod = 100.0 * float(equalized_odds_difference(positive[keep], predicted[keep], sensitive_features=feature[keep]))
    return {
        "equalized_odds_difference": eod,
        "demographic_parity_difference": 100.0 * float(demographic_parity_difference(positive, predicted, sensitive_features=feature)),
        "left_out_of_equalized_odds": sorted(str(g) for g in set(np.unique(feature)) - set(both)),
    }


def _macro_rate(num_classes: int, true_positive: bool):
    """Mean over classes of the one-vs-rest TPR (or FPR), over the classes where it is defined."""

    def rate(y_true, y_pred) -> float:
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        values = []
        for c in range(num_classes):
            condition = y_true == c if true_positive else y_true != c
            if condition.any():
                values.append(float((y_pred[condition] == c).mean()))
        return float(np.mean(values)) if values else float("nan")

    return rate


def _rows(frame) -> list[dict[str, Any]]:
    """MetricFrame.by_group as JSON rows; rates in %, counts as integers."""
    rows = []
    for group, values in frame.by_group.iterrows():
        row = {"group": str(group)}
        for key, value in values.items():
            row[key] = int(value) if key == "count" else (None if np.isnan(value) else 100.0 * float(value))
        rows.append(row)
    return rows


def _predictions(values: torch.Tensor | np.ndarray, num_classes: int | None) -> tuple[np.ndarray, int | None]:
    """Predicted labels, and the number of classes when logits tell it."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim == 2:
        if num_classes is not None and array.shape[1] != num_classes:
            raise SynaugError(f"logits have {array.shape[1]} columns for {num_classes} classes; evaluate with the model's class list.")
        return array.argmax(1), array.shape[1]
    if array.ndim != 1:
        raise SynaugError(f"give logits (N x classes) or predicted labels (N), not an array of shape {array.shape}.")
    return array.astype(np.int64), num_classes


# ---- the plot ------------------------------------------------------------------------------
def plot_group_accuracy(runs: dict[str, dict[str, Any]], path: str | Path, title: str = "Per-group accuracy") -> Path:
    """Grouped bars of per-group accuracy for one or more runs, groups ordered by training count
    (largest first); each run's worst-group accuracy is drawn as a dashed line in its colour."""
    if not runs:
        raise SynaugError("no runs to plot; pass at least one group report.")
    groups = next(iter(runs.values()))["groups"]
    return plot_accuracy_bars(
        [(g["name"], g["train_count"]) for g in groups], {name: [g["accuracy"] for g in r["groups"]] for name, r in runs.items()},
        path, title, axis_label="groups, by training count (dashed: worst-group accuracy)",
        lines={name: r["worst_group_accuracy"] for name, r in runs.items()},
    )
