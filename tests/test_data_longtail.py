"""The long-tail builder: class sizes, the LDAM-DRW draw, shot groups, balanced subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synaug.data import LabeledImages
from synaug.data.benchmarks import longtail_from, longtail_indices
from synaug.data.longtail import balanced_subset, longtail_counts, make_longtail, shot_groups
from synaug.data.splits import disjoint_split
from synaug.errors import SynaugError


def shuffled_labels(num_classes: int, per_class: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def test_exponential_counts_follow_ldam():
    assert longtail_counts(10, 500, 100).tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert longtail_counts(10, 5000, 100).sum() == 12_406  # CIFAR-10-LT, IF 100
    assert [longtail_counts(100, 500, f).sum() for f in (100, 50, 10)] == [10_847, 12_608, 19_573]
    assert longtail_counts(4, 50, 1).tolist() == [50] * 4
    assert longtail_counts(1, 7, 10).tolist() == [7]


def test_step_counts():
    assert longtail_counts(10, 500, 10, profile="step").tolist() == [500] * 5 + [50] * 5
    assert longtail_counts(5, 100, 4, profile="step").tolist() == [100, 100, 25, 25, 25]
    assert longtail_counts(4, 100, 4, profile="step", step_fraction=0.75).tolist() == [100, 100, 100, 25]


@pytest.mark.parametrize(
    "args, message",
    [
        ((10, 500, 0.5), "below 1"),
        ((10, 50, 100), "leaves class 8 with no images"),
        ((10, 500, 10, "cosine"), "unknown long-tail profile 'cosine'"),
        ((10, 500, 10, "step", 1.5), "step fraction"),
    ],
)
def test_count_errors(args, message):
    with pytest.raises(SynaugError, match=message):
        longtail_counts(*args)


def test_draw_reproduces_the_global_seed_sequence():
    labels = shuffled_labels(5, 40)
    state = np.random.get_state()
    np.random.seed(3)
    expected = []
    for cls, n in enumerate(longtail_counts(5, 40, 8)):
        idx = np.where(labels == cls)[0]
        np.random.shuffle(idx)
        expected.append(idx[:n])
    np.random.set_state(state)
    assert np.array_equal(make_longtail(labels, 8, 40, seed=3), np.concatenate(expected))


def test_draw_is_deterministic_and_seed_dependent():
    labels = shuffled_labels(10, 60)
    first = make_longtail(labels, 10, 60, seed=0)
    assert np.array_equal(first, make_longtail(labels, 10, 60, seed=0))
    assert not np.array_equal(first, make_longtail(labels, 10, 60, seed=1))
    assert len(np.unique(first)) == len(first)
    assert np.bincount(labels[first]).tolist() == longtail_counts(10, 60, 10).tolist()


def test_draw_errors():
    labels = shuffled_labels(3, 10)
    with pytest.raises(SynaugError, match="class 0 has only 10 images but 20 are wanted"):
        make_longtail(labels, 2, 20)
    with pytest.raises(SynaugError, match="class 3 has no images"):
        make_longtail(labels, 2, 5, num_classes=4)
    with pytest.raises(SynaugError, match="class 'owl' has no images"):
        make_longtail(labels, 2, 5, num_classes=4, class_names=["cat", "dog", "eel", "owl"])
    with pytest.raises(SynaugError, match="leaves class 'dog' with no images"):
        make_longtail(labels, 100, 5, class_names=["cat", "dog", "eel"])
    with pytest.raises(SynaugError, match="below 1"):
        make_longtail(labels, 0.9, 5)
    with pytest.raises(SynaugError, match="empty dataset"):
        make_longtail(np.array([], dtype=np.int64), 2, 5)
    with pytest.raises(SynaugError, match="out of range"):
        make_longtail(labels, 2, 5, num_classes=2)


def test_shot_groups_thresholds():
    counts = np.array([500, 101, 100, 20, 19, 0])
    groups = shot_groups(counts)
    assert groups["many"].tolist() == [0, 1]
    assert groups["medium"].tolist() == [2, 3]
    assert groups["few"].tolist() == [4, 5]
    custom = shot_groups(counts, many_threshold=200, few_threshold=100)
    assert custom["many"].tolist() == [0] and custom["medium"].tolist() == [1, 2]
    with pytest.raises(SynaugError, match="swap"):
        shot_groups(counts, many_threshold=10, few_threshold=50)


def test_balanced_subset_contains_the_long_tail():
    labels = shuffled_labels(6, 50)
    balanced = balanced_subset(labels, 30, seed=0)
    assert np.bincount(labels[balanced]).tolist() == [30] * 6
    lt = make_longtail(labels, 10, 30, seed=0)
    assert set(lt) <= set(balanced)
    with pytest.raises(SynaugError, match="has only 50 images but 51"):
        balanced_subset(labels, 51)
    with pytest.raises(SynaugError, match="at least 1"):
        balanced_subset(labels, 0)


def test_longtail_from_a_reserved_pool():
    labels = shuffled_labels(4, 100)
    data = LabeledImages(labels=labels, class_names=list("abcd"), images=torch.zeros(400, 1, 2, 2, dtype=torch.uint8))
    indices = longtail_indices(labels, 5, 40, reserve=0.5)
    _, pool = disjoint_split(400, 0.5, seed=0)
    assert set(indices) <= set(pool)
    lt = longtail_from(data, 5, 40, reserve=0.5)
    assert lt.class_counts().tolist() == longtail_counts(4, 40, 5).tolist()
    assert np.array_equal(lt.labels, labels[indices])
    assert longtail_from(data, 5, 40, profile="step").class_counts().tolist() == [40, 40, 8, 8]
