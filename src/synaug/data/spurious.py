"""Fashion-MNIST items rendered on a coloured background: a context a generator can be prompted for.

Each grey item keeps its shape and shading; the dark background takes the context colour:
``rgb = g + (1 - g) * colour`` with ``g`` the grey level in [0, 1]. The reserved half of
Fashion-MNIST train, rendered with uniformly random contexts, trains the context-aware
embedded generator; the spurious-correlation benchmark (:func:`spurious_fashion_mnist`)
draws from the other half.

The benchmark: every class has a *majority* context, chosen so that easily confused classes
sit on different colours (red: T-shirt/top, Pullover, Dress, Sandal, Ankle boot; blue:
Trouser, Coat, Shirt, Sneaker, Bag). The training split is long-tailed over classes (LDAM's
exp profile) and, within each class, ``ceil(majority * n)`` images get the majority context
and the rest the other one; validation (pool half, disjoint from train) and test (official
test set) have the same number of images in every (class, context) cell. The binary variant
asks "is it a red-majority class?" (label 1) versus a blue-majority one (label 0): in training
the context predicts that label for a ``majority`` share of the images, in validation and test
for half of them. Its sensitive attribute for the fairness metrics is the context (the groups).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from synaug.data.benchmarks import GENERATOR_RESERVE, longtail_indices, pool_indices
from synaug.data.dataset import LabeledImages
from synaug.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from synaug.errors import SynaugError

CONTEXT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "blue": (40, 70, 210),
}


def render_on_background(gray: torch.Tensor, contexts: np.ndarray, palette: dict[str, tuple[int, int, int]] = CONTEXT_COLORS) -> torch.Tensor:
    """Composite uint8 ``N x 1 x H x W`` grey items onto the context colours (uint8 ``N x 3 x H x W``)."""
    if gray.ndim != 4 or gray.shape[1] != 1 or gray.dtype != torch.uint8:
        raise SynaugError("render_on_background needs grey uint8 images N x 1 x H x W.")
    colours = torch.tensor(list(palette.values()), dtype=torch.float32)
    contexts = torch.as_tensor(np.asarray(contexts), dtype=torch.long)
    if len(contexts) != len(gray) or (len(contexts) and (contexts.min() < 0 or contexts.max() >= len(colours))):
        raise SynaugError(f"need one context in 0..{len(colours) - 1} per image.")
    g = gray.float() / 255.0
    background = colours[contexts][:, :, None, None]
    rgb = g * 255.0 + (1.0 - g) * background
    return rgb.round().clamp(0, 255).to(torch.uint8)


def with_contexts(data: LabeledImages, contexts: np.ndarray, palette: dict[str, tuple[int, int, int]] = CONTEXT_COLORS) -> LabeledImages:
    """``data`` rendered on the given per-image contexts, with the contexts as groups."""
    if not data.in_memory:
        data = data.materialize()
    return LabeledImages(
        labels=data.labels,
        class_names=list(data.class_names),
        images=render_on_background(data.images, contexts, palette),
        groups=np.asarray(contexts),
        group_names=list(palette),
        is_synthetic=data.is_synthetic,
    )


def uniform_contexts(n: int, num_contexts: int = len(CONTEXT_COLORS), seed: int = 0) -> np.ndarray:
    """Independent uniformly random contexts (the generator's training data has no correlation)."""
    return np.random.RandomState(seed).randint(0, num_contexts, size=n)


# ---- the spurious-correlation benchmark ------------------------------------------------
RED, BLUE = 0, 1  # context indices, in CONTEXT_COLORS order
RED_MAJORITY_CLASSES = (0, 2, 3, 5, 9)  # T-shirt/top, Pullover, Dress, Sandal, Ankle boot
MAJORITY_CONTEXT = np.array([RED if c in RED_MAJORITY_CLASSES else BLUE for c in range(len(FASHION_MNIST_CLASSES))])
BINARY_CLASSES = ["blue-majority", "red-majority"]
MIN_MAJORITY = 0.9
SPLITS = ("train", "val", "test")


@dataclass
class SpuriousSplit:
    """Which Fashion-MNIST images a split uses (``indices`` into train, or into test for
    the test split) and the context each is rendered on."""

    indices: np.ndarray
    contexts: np.ndarray


def spurious_splits(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    imbalance_factor: float = 10,
    max_per_class: int = 500,
    majority: float = 0.95,
    per_cell_val: int = 50,
    per_cell_test: int = 500,
    seed: int = 0,
) -> dict[str, SpuriousSplit]:
    """The benchmark's image choice and contexts (see the module doc), from the labels alone.

    Train is LDAM's long-tailed draw from the pool half (``longtail_indices`` with the
    generator's half reserved); then one ``RandomState(seed)`` picks, class by class, the
    minority-context images of train, the validation images from the pool images train did
    not take, and the test images, ``per_cell_*`` per context with the first half red.
    """
    if not MIN_MAJORITY <= majority <= 1.0:
        raise SynaugError(f"majority {majority} must lie in [{MIN_MAJORITY}, 1]; the benchmark needs a strong spurious correlation.")
    if per_cell_val < 1 or per_cell_test < 1:
        raise SynaugError(f"per_cell_val and per_cell_test must be at least 1 (got {per_cell_val}, {per_cell_test}).")
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    num_classes = len(FASHION_MNIST_CLASSES)
    train = longtail_indices(train_labels, imbalance_factor, max_per_class, seed=seed, reserve=GENERATOR_RESERVE, num_classes=num_classes)
    rng = np.random.RandomState(seed)
    contexts = np.empty(len(train), dtype=np.int64)
    for cls in range(num_classes):
        members = np.flatnonzero(train_labels[train] == cls)
        in_majority = rng.permutation(len(members)) < math.ceil(majority * len(members) - 1e-9)
        contexts[members] = np.where(in_majority, MAJORITY_CONTEXT[cls], 1 - MAJORITY_CONTEXT[cls])
    unused = np.setdiff1d(pool_indices(len(train_labels), GENERATOR_RESERVE), train)
    val = _balanced_cells(unused, train_labels[unused], per_cell_val, rng, "the pool half left after the training draw")
    test = _balanced_cells(np.arange(len(test_labels)), test_labels, per_cell_test, rng, "the test set")
    return {"train": SpuriousSplit(train, contexts), "val": val, "test": test}


def _balanced_cells(candidates: np.ndarray, labels: np.ndarray, per_cell: int, rng: np.random.RandomState, source: str) -> SpuriousSplit:
    """``per_cell`` red and ``per_cell`` blue images of every class, drawn from ``candidates``."""
    indices, contexts = [], []
    for cls in range(len(FASHION_MNIST_CLASSES)):
        members = candidates[labels == cls]
        if len(members) < 2 * per_cell:
            raise SynaugError(
                f"class {cls} has only {len(members)} images in {source}, fewer than 2 x {per_cell} per cell; lower per_cell_val/per_cell_test."
            )
        indices.append(rng.permutation(members)[: 2 * per_cell])
        contexts.append(np.repeat([RED, BLUE], per_cell))
    return SpuriousSplit(np.concatenate(indices), np.concatenate(contexts))


def spurious_fashion_mnist(
    imbalance_factor: float = 10,
    max_per_class: int = 500,
    majority: float = 0.95,
    per_cell_val: int = 50,
    per_cell_test: int = 500,
    binary: bool = False,
    root: str | Path | None = None,
    seed: int = 0,
) -> dict[str, LabeledImages]:
    """The spurious-correlation benchmark: "train", "val" and "test", RGB 28 x 28, groups = context.

    At the defaults train holds 500/387/299/232/179/139/107/83/64/50 = 2,040 images (95 % on
    the majority context), val 50 and test 500 images per (class, context) cell (test is the
    whole official test set). ``binary=True`` relabels every split with :func:`binary_target`.
    """
    train_set, test_set = load_fashion_mnist("train", root), load_fashion_mnist("test", root)
    splits = spurious_splits(
        train_set.labels, test_set.labels, imbalance_factor, max_per_class, majority, per_cell_val, per_cell_test, seed
    )
    result = {}
    for name, split in splits.items():
        source = test_set if name == "test" else train_set
        rendered = with_contexts(source.subset(split.indices), split.contexts)
        result[name] = binary_target(rendered) if binary else rendered
    return result


def binary_target(data: LabeledImages) -> LabeledImages:
    """Fashion-MNIST-labelled ``data`` relabelled: 1 for a red-majority class, 0 for a blue-majority one.

    Plan and generate with the ten classes (prompts need the item), then relabel.
    """
    if list(data.class_names) != FASHION_MNIST_CLASSES:
        raise SynaugError("the binary target is defined on the ten Fashion-MNIST classes; relabel a Fashion-MNIST-labelled set.")
    return replace(data, labels=np.isin(data.labels, RED_MAJORITY_CLASSES).astype(np.int64), class_names=list(BINARY_CLASSES))
