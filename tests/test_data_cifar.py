"""CIFAR pickles, and the CIFAR-100-LT counts of LDAM-DRW from a CIFAR-100-shaped file."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from data_writers import write_cifar10, write_cifar100

from synaug.data.cifar import load_cifar
from synaug.data.longtail import make_longtail, shot_groups
from synaug.errors import SynaugError


def test_cifar100_from_parent_or_extracted_folder(tmp_path):
    folder = write_cifar100(tmp_path, train_per_class=2, test_per_class=1)
    from_parent = load_cifar(tmp_path, "train")
    from_folder = load_cifar(folder, "train", variant="cifar100")
    assert from_parent.images.shape == (200, 3, 32, 32) and from_parent.images.dtype == torch.uint8
    assert torch.equal(from_parent.images, from_folder.images)
    assert from_parent.class_names[:2] == ["fine_0", "fine_1"] and from_parent.num_classes == 100
    assert len(load_cifar(tmp_path, "test")) == 100


def test_cifar_pixels_are_red_green_blue_planes(tmp_path):
    folder = write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    with (folder / "train").open("rb") as f:
        raw = pickle.load(f)
    data = load_cifar(tmp_path)
    row = raw["data"][0]
    assert data.labels[0] == raw["fine_labels"][0]
    assert data.images[0, 0].flatten().tolist() == row[:1024].tolist()
    assert data.images[0, 2, 31, 31] == row[3071]


def test_cifar10_joins_the_five_batches(tmp_path):
    write_cifar10(tmp_path, per_batch_per_class=2)
    train = load_cifar(tmp_path)
    assert len(train) == 100 and train.class_counts().tolist() == [10] * 10
    assert train.class_names[0] == "c10_0"
    assert len(load_cifar(tmp_path / "cifar-10-batches-py", "test")) == 20


def test_both_variants_need_a_choice(tmp_path):
    write_cifar10(tmp_path, per_batch_per_class=1)
    write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    with pytest.raises(SynaugError, match="choose one"):
        load_cifar(tmp_path)
    assert load_cifar(tmp_path, variant="cifar10").num_classes == 10


def test_missing_folder_and_missing_data(tmp_path):
    with pytest.raises(SynaugError, match="does not exist"):
        load_cifar(tmp_path / "absent")
    with pytest.raises(SynaugError, match="no CIFAR data"):
        load_cifar(tmp_path)


def test_truncated_pickle_is_one_line(tmp_path):
    folder = write_cifar100(tmp_path, train_per_class=2, test_per_class=1)
    path = folder / "train"
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(SynaugError) as error:
        load_cifar(tmp_path)
    assert "corrupt or truncated" in str(error.value) and "\n" not in str(error.value)


def test_garbage_pickle_is_reported(tmp_path):
    folder = write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    (folder / "meta").write_bytes(b"\x80\x02garbage that is not a pickle")
    with pytest.raises(SynaugError, match="corrupt"):
        load_cifar(tmp_path)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "train").write_bytes(pickle.dumps({"data": Payload()}, protocol=2))
    with pytest.raises(SynaugError, match="refusing to load"):
        load_cifar(tmp_path)
    assert not marker.exists()


def test_wrong_data_shape_and_label_count(tmp_path):
    folder = write_cifar100(tmp_path, train_per_class=1, test_per_class=1)
    with (folder / "train").open("wb") as f:
        pickle.dump({"data": np.zeros((4, 100), np.uint8), "fine_labels": [0] * 4}, f, protocol=2)
    with pytest.raises(SynaugError, match="N x 3072"):
        load_cifar(tmp_path)
    with (folder / "train").open("wb") as f:
        pickle.dump({"data": np.zeros((4, 3072), np.uint8), "fine_labels": [0] * 3}, f, protocol=2)
    with pytest.raises(SynaugError, match="4 images but 3"):
        load_cifar(tmp_path)


def ldam_reference(targets: np.ndarray, imbalance_factor: float, num_classes: int) -> np.ndarray:
    """The LDAM-DRW draw as its paper's code does it: global seed 0, per-class shuffle, first n_i."""
    state = np.random.get_state()
    try:
        img_max = len(targets) / num_classes
        ratio = 1.0 / imbalance_factor
        counts = [int(img_max * ratio ** (i / (num_classes - 1.0))) for i in range(num_classes)]
        np.random.seed(0)
        kept = []
        for cls, n in zip(np.unique(targets), counts):
            idx = np.where(targets == cls)[0]
            np.random.shuffle(idx)
            kept.append(idx[:n])
        return np.concatenate(kept)
    finally:
        np.random.set_state(state)


@pytest.fixture(scope="module")
def cifar100_full_size(tmp_path_factory):
    parent = tmp_path_factory.mktemp("cifar100")
    write_cifar100(parent, train_per_class=500, test_per_class=1, protocol=4)
    return load_cifar(parent, "train")


@pytest.mark.parametrize("imbalance_factor, total", [(100, 10_847), (50, 12_608), (10, 19_573)])
def test_cifar100_lt_counts_match_ldam(cifar100_full_size, imbalance_factor, total):
    train = cifar100_full_size
    assert len(train) == 50_000
    indices = make_longtail(train.labels, imbalance_factor, 500, seed=0)
    lt = train.subset(indices)
    assert len(lt) == total
    assert np.array_equal(indices, ldam_reference(train.labels, imbalance_factor, 100))
    assert lt.class_counts()[0] == 500 and lt.class_counts()[-1] == int(500 / imbalance_factor)
    if imbalance_factor == 100:
        groups = shot_groups(lt.class_counts())
        assert [len(groups[k]) for k in ("many", "medium", "few")] == [35, 35, 30]
