"""The project's benchmark sets, built from the loaders and the long-tail builder.

Fashion-MNIST train is split once into two disjoint halves (``disjoint_split(60000, 0.5,
seed=0)``): the *reserved* half trains the embedded generator, and every long-tailed or
balanced Fashion-MNIST set is drawn from the other, the *pool*. The test set is always the
official 10,000 images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synaug.data.dataset import LabeledImages
from synaug.data.fashion_mnist import load_fashion_mnist
from synaug.data.longtail import balanced_subset, make_longtail
from synaug.data.splits import disjoint_split

GENERATOR_RESERVE = 0.5
SPLIT_SEED = 0


def default_reserve(kind: str, split: str) -> float:
    """The fraction of a dataset split that long tails are never drawn from, when none is given:
    GENERATOR_RESERVE for Fashion-MNIST train (the half the embedded generator trained on), else 0."""
    return GENERATOR_RESERVE if (kind, split) == ("fashion-mnist", "train") else 0.0


def draw_longtail(
    dataset: LabeledImages,
    imbalance_factor: float,
    *,
    kind: str,
    split: str,
    max_per_class: int | None = None,
    profile: str = "exp",
    seed: int = 0,
    reserve: float | None = None,
    step_fraction: float = 0.5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The long-tailed draw of `synaug data longtail`, `synaug train`, `synaug plan` and `synaug run`.

    ``dataset`` is split ``split`` of dataset kind ``kind``; ``reserve`` None takes
    :func:`default_reserve`; ``max_per_class`` None takes the smallest class of the pool. Returns the
    indices into ``dataset`` (see :func:`longtail_indices`) and the settings that drew them (for the
    index file).
    """
    reserve = default_reserve(kind, split) if reserve is None else float(reserve)
    if max_per_class is None:
        pool = pool_indices(len(dataset), reserve)
        max_per_class = int(np.bincount(dataset.labels[pool], minlength=dataset.num_classes).min())
    indices = longtail_indices(
        dataset.labels, imbalance_factor, max_per_class, profile, seed, reserve, dataset.num_classes, step_fraction,
        class_names=dataset.class_names,
    )
    settings: dict[str, Any] = {
        "imbalance_factor": imbalance_factor, "max_per_class": max_per_class, "profile": profile, "seed": seed,
        "reserve": reserve, "reserve_seed": SPLIT_SEED,
    }
    if profile == "step":
        settings["step_fraction"] = step_fraction
    return indices, settings


def longtail_indices(
    labels: np.ndarray,
    imbalance_factor: float,
    max_per_class: int,
    profile: str = "exp",
    seed: int = 0,
    reserve: float = 0.0,
    num_classes: int | None = None,
    step_fraction: float = 0.5,
    *,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Indices into ``labels`` of a long-tailed subset drawn from the part not reserved.

    ``reserve`` is the fraction set aside with ``disjoint_split(len(labels), reserve,
    seed=SPLIT_SEED)``; the LDAM-style draw then runs on the remaining pool. ``class_names``
    name the classes in errors.
    """
    pool = pool_indices(len(labels), reserve)
    chosen = make_longtail(
        np.asarray(labels)[pool], imbalance_factor, max_per_class, profile, seed, num_classes, step_fraction, class_names=class_names
    )
    return pool[chosen]


def longtail_from(
    dataset: LabeledImages,
    imbalance_factor: float,
    max_per_class: int,
    profile: str = "exp",
    seed: int = 0,
    reserve: float = 0.0,
    step_fraction: float = 0.5,
) -> LabeledImages:
    """A long-tailed subset of ``dataset`` (see :func:`longtail_indices`)."""
    indices = longtail_indices(
        dataset.labels, imbalance_factor, max_per_class, profile, seed, reserve, dataset.num_classes, step_fraction,
        class_names=dataset.class_names,
    )
    return dataset.subset(indices)


def fashion_mnist_lt(
    imbalance_factor: float = 100,
    max_per_class: int = 500,
    root: str | Path | None = None,
    seed: int = 0,
) -> tuple[LabeledImages, LabeledImages]:
    """(long-tailed train set from the pool half, official test set).

    At the defaults the classes keep 500/299/179/107/64/38/23/13/8/5 = 1,236 images.

    >>> train, test = synaug.fashion_mnist_lt(imbalance_factor=100)  # doctest: +SKIP
    >>> train.class_counts()[:3]  # doctest: +SKIP
    array([500, 299, 179])
    """
    train = load_fashion_mnist("train", root)
    lt = longtail_from(train, imbalance_factor, max_per_class, seed=seed, reserve=GENERATOR_RESERVE)
    return lt, load_fashion_mnist("test", root)


def fashion_mnist_balanced(per_class: int = 500, root: str | Path | None = None, seed: int = 0) -> LabeledImages:
    """The balanced oracle: ``per_class`` real images of every class from the pool half.

    With the same seed it contains :func:`fashion_mnist_lt`'s images (the draws are nested).
    """
    train = load_fashion_mnist("train", root)
    pool = pool_indices(len(train), GENERATOR_RESERVE)
    return train.subset(pool[balanced_subset(train.labels[pool], per_class, seed, train.num_classes, class_names=train.class_names)])


def fashion_mnist_reserved(root: str | Path | None = None) -> LabeledImages:
    """The reserved half of Fashion-MNIST train (30,000 images), for training the generator."""
    train = load_fashion_mnist("train", root)
    reserved, _ = disjoint_split(len(train), GENERATOR_RESERVE, seed=SPLIT_SEED)
    return train.subset(reserved)


def pool_indices(n: int, reserve: float) -> np.ndarray:
    """Indices of ``range(n)`` left after reserving a ``reserve`` fraction of them (all when 0)."""
    if not reserve:
        return np.arange(n)
    _, pool = disjoint_split(n, float(reserve), seed=SPLIT_SEED)
    return pool
