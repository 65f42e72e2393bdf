"""The offline spurious-correlation benchmark built from Fashion-MNIST's pool half."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_writers import write_fashion_mnist
from real_data import needs_real_fashion_mnist

from synaug.data import disjoint_split, load_fashion_mnist
from synaug.data.benchmarks import GENERATOR_RESERVE, SPLIT_SEED
from synaug.data.registry import load_dataset
from synaug.data.spurious import (
    BINARY_CLASSES,
    CONTEXT_COLORS,
    MAJORITY_CONTEXT,
    binary_target,
    render_on_background,
    spurious_fashion_mnist,
    spurious_splits,
)
from synaug.errors import SynaugError

SMALL = dict(imbalance_factor=10, max_per_class=40, per_cell_val=5, per_cell_test=4)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """A Fashion-MNIST-format folder: 120 train and 10 test images per class."""
    return write_fashion_mnist(tmp_path_factory.mktemp("fm"), train_per_class=120, test_per_class=10)


def test_majority_context_per_class_and_class_long_tail(fashion):
    train = load_fashion_mnist("train", fashion)
    splits = spurious_splits(train.labels, load_fashion_mnist("test", fashion).labels, majority=0.9, **SMALL)
    labels, contexts = train.labels[splits["train"].indices], splits["train"].contexts
    counts = np.bincount(labels, minlength=10)
    assert counts.tolist() == [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]  # int(40 * 0.1 ** (i / 9))
    for cls in range(10):
        share = np.mean(contexts[labels == cls] == MAJORITY_CONTEXT[cls])
        assert share >= 0.9 and share == np.ceil(0.9 * counts[cls] - 1e-9) / counts[cls]
    assert MAJORITY_CONTEXT.tolist() == [0, 1, 0, 0, 1, 0, 1, 1, 1, 0]  # red: 0 2 3 5 9


def test_val_and_test_are_group_balanced_and_disjoint_from_train_and_the_reserved_half(fashion):
    train = load_fashion_mnist("train", fashion)
    splits = spurious_splits(train.labels, load_fashion_mnist("test", fashion).labels, **SMALL)
    reserved, pool = disjoint_split(len(train), GENERATOR_RESERVE, seed=SPLIT_SEED)
    for name in ("train", "val"):
        assert not np.intersect1d(splits[name].indices, reserved).size and np.isin(splits[name].indices, pool).all()
    assert not np.intersect1d(splits["train"].indices, splits["val"].indices).size
    for name, per_cell, labels in (("val", 5, train.labels), ("test", 4, load_fashion_mnist("test", fashion).labels)):
        split = splits[name]
        assert len(np.unique(split.indices)) == len(split.indices)
        cells = np.zeros((10, 2), dtype=int)
        np.add.at(cells, (labels[split.indices], split.contexts), 1)
        assert (cells == per_cell).all()


def test_rendered_sets_deterministic_and_seeded(fashion):
    first = spurious_fashion_mnist(root=fashion, **SMALL)
    again = spurious_fashion_mnist(root=fashion, **SMALL)
    other = spurious_fashion_mnist(root=fashion, seed=1, **SMALL)
    for name in ("train", "val", "test"):
        assert torch.equal(first[name].images, again[name].images) and (first[name].groups == again[name].groups).all()
        assert first[name].images.shape[1:] == (3, 28, 28) and first[name].group_names == list(CONTEXT_COLORS)
    assert not torch.equal(first["train"].images, other["train"].images)
    # the pixels are the grey item rendered on its context
    train = load_fashion_mnist("train", fashion)
    split = spurious_splits(train.labels, load_fashion_mnist("test", fashion).labels, **SMALL)["train"]
    expected = render_on_background(train.images[torch.from_numpy(split.indices)], split.contexts)
    assert torch.equal(first["train"].images, expected)
    assert first["train"].cell_counts()[0].tolist() == [38, 2]  # T-shirt/top: 95 % on red, its majority context


def test_binary_variant_context_predicts_the_target_in_training_only(fashion):
    data = spurious_fashion_mnist(root=fashion, binary=True, **SMALL)
    assert data["train"].class_names == BINARY_CLASSES
    red_majority = data["train"].labels == 1
    agreement = np.mean((data["train"].groups == 0) == red_majority)  # context red <=> label 1
    assert agreement >= 0.9
    assert np.mean((data["test"].groups == 0) == (data["test"].labels == 1)) == 0.5
    with pytest.raises(SynaugError, match="ten Fashion-MNIST classes"):
        binary_target(data["train"])


def test_bad_settings(fashion):
    with pytest.raises(SynaugError, match="majority 0.8 must lie in"):
        spurious_fashion_mnist(root=fashion, majority=0.8, **SMALL)
    with pytest.raises(SynaugError, match="fewer than 2 x 500 per cell"):
        spurious_fashion_mnist(root=fashion, **{**SMALL, "per_cell_test": 500})
    with pytest.raises(SynaugError, match="no split 'dev'"):
        load_dataset("spurious-fashion-mnist", fashion, split="dev")


@needs_real_fashion_mnist
def test_defaults_on_the_real_fashion_mnist():
    data = spurious_fashion_mnist()
    assert [len(data[s]) for s in ("train", "val", "test")] == [2040, 1000, 10000]
    assert data["train"].class_counts().tolist() == [500, 387, 299, 232, 179, 139, 107, 83, 64, 50]
    cells = data["train"].cell_counts()
    assert (cells.max(1) / cells.sum(1) >= 0.95).all() and cells.min() >= 2
