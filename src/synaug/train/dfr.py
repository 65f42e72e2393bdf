"""Deep Feature Reweighting (DFR, Kirichenko et al., 2023): re-train the last layer on
group-balanced held-out data.

1. Features: ``model.features`` of the validation images (eval mode, no augmentation).
2. Tuning: the validation set is split in two halves, stratified by group (seeded). For each
   C in the grid, an L1 logistic regression (scikit-learn, liblinear) is fitted on a
   group-balanced subsample of the first half (every group cut to the smallest group's size),
   standardised with statistics of that subsample, and scored by worst-group accuracy on the
   second half. The best C wins (ties: the smaller C, the stronger penalty).
3. Final head: with that C, ``retrains`` fits on independent group-balanced subsamples of the
   *whole* validation set; each fit's standardisation is folded into its weights, and the
   weights and biases are averaged. The result replaces ``model.classifier``, so
   :func:`~synaug.train.infer` works unchanged.

More than two classes are fitted one-vs-rest (liblinear's scheme); two classes give one
weight vector ``w``, written as the logits ``(0, w.x + b)`` so the softmax is the fitted
probability. Groups default to the (class, attribute) cells of the validation set; groups
without validation images are skipped and listed in the report.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import sklearn
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from torch import nn

from synaug.data.dataset import LabeledImages
from synaug.data.groups import group_cells
from synaug.errors import SynaugError
from synaug.train.models import Normalizer
from synaug.train.inference import extract_features

DFR_C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
DFR_RETRAINS = 10


def dfr_retrain(
    model: nn.Module,
    val: LabeledImages,
    normalizer: Normalizer,
    groups: np.ndarray | None = None,
    group_names: Sequence[str] | None = None,
    c_grid: Sequence[float] = DFR_C_GRID,
    retrains: int = DFR_RETRAINS,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``model`` with a DFR last layer fitted on ``val``, and a report.

    Parameters
    ----------
    model : a trained classifier with ``features`` and ``classifier`` (left untouched).
    val : held-out real images with group labels (or pass ``groups``/``group_names``).
    normalizer : the normalisation the model was trained with.
    groups, group_names : group of each validation image; default: its (class, attribute) cell.
    c_grid : inverse L1 strengths to try; retrains : fits averaged for the final head.
    seed : seeds the half split and the subsamples.

    The report holds ``chosen_C``, ``worst_group_accuracy_by_C`` (%, on the second half),
    ``per_group_subsample`` (images per group in each final fit), ``retrains``, ``half_sizes``
    and ``groups_without_images``.
    """
    # 1. Check inputs
    groups, names, c_grid, counts = _checked_groups(model, val, groups, group_names, c_grid, retrains)

    # 2. Features, computed once; halves stratified by group
    features = extract_features(model, val, normalizer).double().numpy()
    labels = val.labels
    rng = np.random.RandomState(seed)
    present = np.unique(groups)
    first, second = _halves(groups, rng)

    # 3. Tune C on the first half, score worst-group accuracy on the second
    tuning = _balanced(first, groups, rng)
    worst_by_c = {}
    for c in c_grid:
        weight, bias = _fit(features[tuning], labels[tuning], c, val.num_classes)
        predicted = (features[second] @ weight.T + bias).argmax(1)
        worst_by_c[c] = _worst_group(predicted == labels[second], groups[second])
    chosen = max(sorted(c_grid), key=lambda c: worst_by_c[c])  # first maximum of the ascending grid: smaller C wins ties

    # 4. Average `retrains` fits on group-balanced subsamples of the whole validation set
    fits = [_fit(features[index], labels[index], chosen, val.num_classes)
            for index in (_balanced(np.arange(len(val)), groups, rng) for _ in range(retrains))]
    weight = np.mean([w for w, _ in fits], axis=0)
    bias = np.mean([b for _, b in fits], axis=0)

    retrained = copy.deepcopy(model)
    with torch.no_grad():
        retrained.classifier.weight.copy_(torch.from_numpy(weight))
        retrained.classifier.bias.copy_(torch.from_numpy(bias))
    report = {
        "chosen_C": chosen,
        "worst_group_accuracy_by_C": {str(c): worst_by_c[c] for c in c_grid},
        "per_group_subsample": int(counts[present].min()),
        "retrains": retrains,
        "half_sizes": [int(len(first)), int(len(second))],
        "groups_without_images": [names[g] for g in np.flatnonzero(counts == 0)],
    }
    return retrained, report


def _checked_groups(
    model: nn.Module, val: LabeledImages, groups: np.ndarray | None, group_names: Sequence[str] | None,
    c_grid: Sequence[float], retrains: int,
) -> tuple[np.ndarray, list[str], list[float], np.ndarray]:
    """Refuse inputs DFR cannot use; returns each image's group, the group names, the C grid and the images per group."""
    if groups is None:
        groups, group_names = group_cells(val)
    groups = np.asarray(groups, dtype=np.int64)
    names = [str(n) for n in group_names] if group_names is not None else [str(g) for g in range(int(groups.max()) + 1)]
    if len(groups) != len(val):
        raise SynaugError(f"{len(groups)} group labels for {len(val)} validation images; give one per image.")
    c_grid = [float(c) for c in c_grid]
    if not c_grid or min(c_grid) <= 0 or retrains < 1:
        raise SynaugError("DFR needs at least one C > 0 in the grid and retrains >= 1.")
    counts = np.bincount(groups, minlength=len(names))
    single = np.flatnonzero(counts == 1)
    if len(single):
        raise SynaugError(
            f"group '{names[single[0]]}' has one validation image; DFR splits each group in two halves, "
            "so give it at least 2 (or none)."
        )
    missing_classes = sorted(set(range(val.num_classes)) - set(val.labels.tolist()))
    if missing_classes:
        raise SynaugError(f"the validation set has no image of class '{val.class_names[missing_classes[0]]}'; DFR needs every class.")
    classifier = model.classifier
    if not isinstance(classifier, nn.Linear) or classifier.out_features != val.num_classes:
        raise SynaugError(f"model.classifier must be an nn.Linear with {val.num_classes} outputs to re-train it with DFR.")
    return groups, names, c_grid, counts


def _halves(groups: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the indices, each group split in two (the odd image to the first)."""
    first, second = [], []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        cut = (len(members) + 1) // 2
        first.append(members[:cut])
        second.append(members[cut:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def _balanced(candidates: np.ndarray, groups: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Every group present in ``candidates`` cut (at random) to the size of the smallest one."""
    members = [candidates[groups[candidates] == g] for g in np.unique(groups[candidates])]
    size = min(len(m) for m in members)
    return np.concatenate([rng.choice(m, size, replace=False) for m in members])


def _fit(features: np.ndarray, labels: np.ndarray, c: float, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardise, fit L1 logistic regression; return (weight (K, D), bias (K,)) on raw features."""
    if len(np.unique(labels)) < num_classes:
        raise SynaugError("a group-balanced subsample lacks a class; add validation images of every class to every group or half.")
    scaler = StandardScaler().fit(features)
    scaled = scaler.transform(features)
    if num_classes == 2:
        fitted = _l1_logistic(c).fit(scaled, labels)
        coef = np.vstack([np.zeros_like(fitted.coef_), fitted.coef_])
        intercept = np.array([0.0, fitted.intercept_[0]])
    else:
        fitted = OneVsRestClassifier(_l1_logistic(c)).fit(scaled, labels)
        coef = np.vstack([e.coef_ for e in fitted.estimators_])
        intercept = np.concatenate([e.intercept_ for e in fitted.estimators_])
    weight = coef / scaler.scale_  # fold (x - mean) / scale into the layer
    return weight, intercept - weight @ scaler.mean_


def _l1_logistic(c: float) -> LogisticRegression:
    """L1-penalised logistic regression on liblinear (scikit-learn 1.8 spells L1 as l1_ratio=1)."""
    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        return LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear", random_state=0)
    return LogisticRegression(C=c, penalty="l1", solver="liblinear", random_state=0)


def _worst_group(correct: np.ndarray, groups: np.ndarray) -> float:
    """Lowest accuracy (%) over the groups present."""
    return float(min(100.0 * correct[groups == g].mean() for g in np.unique(groups)))
