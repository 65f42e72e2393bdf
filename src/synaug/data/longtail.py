"""Long-tailed and balanced subsets, drawn the way LDAM-DRW draws CIFAR-LT.

LDAM-DRW (Cao et al., 2019) keeps ``n_i = int(n_max * IF**(-i / (C - 1)))`` images of
class ``i``, chosen by seeding numpy's global generator once and then, class by class,
shuffling that class's indices and keeping the first ``n_i``. :func:`make_longtail`
reproduces that sequence exactly with a ``RandomState(seed)``, so CIFAR-100 at imbalance
factor 100 / 50 / 10 gives the published 10,847 / 12,608 / 19,573 images and the very
same images.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from synaug.errors import SynaugError

PROFILES = ("exp", "step")
MANY_THRESHOLD = 100  # shot groups: many-shot classes have more real training images than this
FEW_THRESHOLD = 20  # and few-shot classes fewer than this


def longtail_counts(
    num_classes: int,
    max_per_class: int,
    imbalance_factor: float,
    profile: str = "exp",
    step_fraction: float = 0.5,
    *,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Images to keep per class, class 0 the largest (``class_names`` name the classes in errors).

    ``exp``: ``n_i = int(n_max * (1 / IF) ** (i / (C - 1)))``, written as LDAM-DRW computes
    it (its ``imb_factor`` is ``1 / IF``) so rounding matches to the image.
    ``step``: the first ``floor(step_fraction * C)`` classes keep ``n_max`` and the rest
    ``int(n_max / IF)``. With ``step_fraction = 0.5`` and an even ``C`` this is LDAM's step
    profile; for an odd ``C`` the middle class joins the tail (LDAM drops it).
    """
    if not imbalance_factor >= 1:  # NaN too
        problem = "is below 1" if imbalance_factor < 1 else "is not a number"
        raise SynaugError(f"imbalance factor {imbalance_factor} {problem}; give the ratio of the largest to the smallest class, e.g. 100.")
    if num_classes < 1 or max_per_class < 1:
        raise SynaugError(f"need at least one class and one image per class (got {num_classes} classes, max {max_per_class}).")
    if profile == "exp":
        exponents = np.arange(num_classes) / (num_classes - 1.0) if num_classes > 1 else np.zeros(1)
        counts = np.array([int(max_per_class * (1.0 / imbalance_factor) ** e) for e in exponents], dtype=np.int64)
    elif profile == "step":
        if not 0.0 <= step_fraction <= 1.0:
            raise SynaugError(f"step fraction {step_fraction} must lie in [0, 1]; it is the share of classes kept at the maximum size.")
        head = math.floor(step_fraction * num_classes)
        counts = np.full(num_classes, int(max_per_class * (1.0 / imbalance_factor)), dtype=np.int64)
        counts[:head] = max_per_class
    else:
        raise SynaugError(f"unknown long-tail profile '{profile}'; use one of {', '.join(PROFILES)}.")
    if counts.min() < 1:
        raise SynaugError(
            f"imbalance factor {imbalance_factor} with at most {max_per_class} per class leaves class "
            f"{_class(int(np.argmin(counts)), class_names)} with no images; lower the imbalance factor or raise the maximum class size."
        )
    return counts


def make_longtail(
    labels: np.ndarray,
    imbalance_factor: float,
    max_per_class: int,
    profile: str = "exp",
    seed: int = 0,
    num_classes: int | None = None,
    step_fraction: float = 0.5,
    *,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Indices into ``labels`` of a long-tailed subset (LDAM-DRW's draw, see the module doc).

    Indices come class by class, each class in its shuffled order, as LDAM-DRW stores them.
    ``class_names`` name the classes in errors.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = _num_classes(labels, num_classes)
    counts = longtail_counts(num_classes, max_per_class, imbalance_factor, profile, step_fraction, class_names=class_names)
    return _draw(labels, counts, seed, class_names)


def balanced_subset(
    labels: np.ndarray, per_class: int, seed: int = 0, num_classes: int | None = None, *, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """Indices of ``per_class`` images of every class, drawn like :func:`make_longtail`.

    With the same seed and labels, the first ``n_i`` images of each class here are exactly
    the long-tailed set's, so a long-tailed set is nested in the balanced one.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if per_class < 1:
        raise SynaugError(f"images per class must be at least 1 (got {per_class}).")
    return _draw(labels, np.full(_num_classes(labels, num_classes), per_class, dtype=np.int64), seed, class_names)


def shot_groups(train_counts: np.ndarray, many_threshold: int = MANY_THRESHOLD, few_threshold: int = FEW_THRESHOLD) -> dict[str, np.ndarray]:
    """Class indices by training count: "many" (> many_threshold), "medium", "few" (< few_threshold)."""
    if few_threshold > many_threshold:
        raise SynaugError(f"few-shot threshold {few_threshold} exceeds many-shot threshold {many_threshold}; swap them.")
    counts = np.asarray(train_counts)
    many = counts > many_threshold
    few = counts < few_threshold
    return {
        "many": np.flatnonzero(many),
        "medium": np.flatnonzero(~many & ~few),
        "few": np.flatnonzero(few),
    }


def _draw(labels: np.ndarray, counts: np.ndarray, seed: int, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Seed once, then per class in order: shuffle its indices and keep the first ``counts[c]``."""
    rng = np.random.RandomState(seed)
    chosen = []
    for cls, wanted in enumerate(counts):
        idx = np.flatnonzero(labels == cls)
        if len(idx) == 0:
            raise SynaugError(f"class {_class(cls, class_names)} has no images to draw from; check the labels or the number of classes.")
        if wanted > len(idx):
            raise SynaugError(
                f"class {_class(cls, class_names)} has only {len(idx)} images but {int(wanted)} are wanted; "
                "lower the maximum class size (or the images per class)."
            )
        rng.shuffle(idx)
        chosen.append(idx[:wanted])
    return np.concatenate(chosen)


def _class(index: int, class_names: Sequence[str] | None) -> str:
    """Class ``index`` for a message: its name when known, else its number."""
    return f"'{class_names[index]}'" if class_names is not None else str(index)


def _num_classes(labels: np.ndarray, num_classes: int | None) -> int:
    if num_classes is not None:
        if len(labels) and labels.max() >= num_classes:
            raise SynaugError(f"label {labels.max()} is out of range for {num_classes} classes; fix the labels or the class count.")
        return num_classes
    if not len(labels):
        raise SynaugError("cannot draw a subset from an empty dataset; check the data folder and split.")
    return int(labels.max()) + 1
