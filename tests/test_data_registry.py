"""load_dataset by kind, index files, atomic writes, and describe / the class histogram."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_writers import write_cifar10, write_cifar100, write_fashion_mnist, write_image
from PIL import Image

from synaug.data import LabeledImages, registry
from synaug.data.describe import describe, plot_class_histogram
from synaug.data.registry import load_dataset, load_index, save_index, write_atomic
from synaug.errors import SynaugError


def test_load_dataset_every_kind(tmp_path):
    fm = write_fashion_mnist(tmp_path / "fm", train_per_class=2, test_per_class=1)
    assert len(load_dataset("fashion-mnist", fm, split="test")) == 10
    assert load_dataset("fashion-mnist", fm, size=28, channels=1).channels == 1
    write_cifar10(tmp_path / "c10", per_batch_per_class=1)
    assert load_dataset("cifar10", tmp_path / "c10").num_classes == 10
    write_cifar100(tmp_path / "c100", train_per_class=1, test_per_class=1)
    assert load_dataset("cifar100", tmp_path / "c100", split="test").num_classes == 100
    write_image(tmp_path / "tree" / "train" / "a" / "0.png")
    write_image(tmp_path / "tree" / "val" / "a" / "0.png")
    write_image(tmp_path / "tree" / "val" / "b" / "0.png")
    assert load_dataset("imagefolder", tmp_path / "tree", split="val").class_names == ["a", "b"]
    assert load_dataset("imagefolder", tmp_path / "tree" / "val", split="train", size=4).size == (4, 4)
    (tmp_path / "list.txt").write_text("tree/val/a/0.png 0\ntree/val/b/0.png 1\n")
    listed = load_dataset("split-list", tmp_path, list_file=tmp_path / "list.txt", channels=1)
    assert listed.channels == 1 and len(listed) == 2


def test_a_flat_image_folder_is_the_training_split_only(tmp_path):
    write_image(tmp_path / "flat" / "a" / "0.png")
    write_image(tmp_path / "val" / "a" / "0.png")
    assert len(load_dataset("imagefolder", tmp_path / "flat")) == 1
    assert len(load_dataset("imagefolder", tmp_path / "val", split="val")) == 1  # the folder named after the split
    for kind in ("imagefolder", "utkface", "nico"):
        with pytest.raises(SynaugError, match=r"has no 'test' folder to read the test split from.*ROOT/train/<class>/ and ROOT/test/<class>/"):
            load_dataset(kind, tmp_path / "flat", split="test")
    write_image(tmp_path / "tree" / "train" / "a" / "0.png")
    write_image(tmp_path / "tree" / "test" / "a" / "0.png")
    with pytest.raises(SynaugError, match=r"tree has no 'val' split \(its splits: test, train\); use one of them or add .*tree/val/<class>/"):
        load_dataset("imagefolder", tmp_path / "tree", split="val")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "mnist"}, "unknown dataset 'mnist'"),
        ({"kind": "cifar10"}, "needs a root folder"),
        ({"kind": "imagefolder"}, "needs a root folder"),
        ({"kind": "split-list", "root": "."}, "needs a list file"),
        ({"kind": "fashion-mnist", "size": 32}, "drop the size/channels"),
        ({"kind": "cifar100", "root": ".", "channels": 1}, "drop the size/channels"),
    ],
)
def test_load_dataset_errors(kwargs, message):
    with pytest.raises(SynaugError, match=message):
        load_dataset(**kwargs)


def test_index_round_trip(tmp_path):
    fm = write_fashion_mnist(tmp_path / "fm", train_per_class=5)
    data = load_dataset("fashion-mnist", fm)
    source = {"kind": "fashion-mnist", "root": str(fm), "split": "train"}
    indices = np.array([3, 1, 4, 15, 9, 2, 6])
    path = save_index(tmp_path / "out" / "index.json", indices, data, source, {"imbalance_factor": 10})
    assert [p.name for p in path.parent.iterdir()] == ["index.json"]
    index = load_index(path)
    assert index.indices.tolist() == indices.tolist()
    assert index.settings == {"imbalance_factor": 10} and index.source_size == 50
    subset = index.load()
    assert torch.equal(subset.images, data.images[indices])
    assert index.load(root=None).labels.tolist() == data.labels[indices].tolist()


def test_index_detects_another_dataset(tmp_path):
    first = write_fashion_mnist(tmp_path / "a", train_per_class=5, seed=0)
    other = write_fashion_mnist(tmp_path / "b", train_per_class=5, seed=1)
    data = load_dataset("fashion-mnist", first)
    index = load_index(save_index(tmp_path / "i.json", np.arange(20), data, {"kind": "fashion-mnist", "root": str(first)}))
    with pytest.raises(SynaugError, match="other labels"):
        index.load(root=str(other))
    bigger = write_fashion_mnist(tmp_path / "c", train_per_class=6)
    with pytest.raises(SynaugError, match="built from a dataset of 50 images"):
        index.load(root=str(bigger))


def test_damaged_index_files(tmp_path):
    with pytest.raises(SynaugError, match="does not exist"):
        load_index(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SynaugError, match="not valid JSON"):
        load_index(bad)
    bad.write_text(json.dumps({"indices": [1]}))
    with pytest.raises(SynaugError, match="not a synaug index file"):
        load_index(bad)
    bad.write_text(json.dumps({"format": "synaug-index/1", "indices": [1]}))
    with pytest.raises(SynaugError, match="incomplete or damaged"):
        load_index(bad)


def test_save_index_rejects_out_of_range(tmp_path):
    data = LabeledImages(labels=[0, 1], class_names=["a", "b"], images=torch.zeros(2, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(SynaugError, match="index 2 is out of range"):
        save_index(tmp_path / "i.json", [0, 2], data, {"kind": "fashion-mnist"})
    assert not list(tmp_path.iterdir())


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "file.txt"
    write_atomic(target, "old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(registry.os, "replace", failing_replace)
    with pytest.raises(SynaugError, match=r"cannot write .*file.txt \(disk full\); choose a writable location"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_describe_counts_imbalance_and_groups():
    labels = np.repeat(np.arange(4), [150, 60, 10, 0])
    data = LabeledImages(labels=labels, class_names=list("abcd"), images=torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8))
    summary = describe(data)
    assert summary["class_counts"] == [150, 60, 10, 0]
    assert summary["imbalance_factor"] == 15.0
    assert summary["many"] == [0] and summary["medium"] == [1] and summary["few"] == [2, 3]
    assert summary["empty_classes"] == [3] and summary["num_images"] == 220
    assert describe(data, many_threshold=50, few_threshold=5)["few"] == [3]
    json.dumps(summary)


def test_describe_reports_group_cells():
    data = LabeledImages(
        labels=[0, 0, 1],
        class_names=["x", "y"],
        images=torch.zeros(3, 1, 2, 2, dtype=torch.uint8),
        groups=[0, 1, 1],
        group_names=["land", "water"],
    )
    assert describe(data)["cell_counts"] == [[1, 1], [0, 1]]


def test_describe_empty_dataset():
    data = LabeledImages(labels=[], class_names=["a"], images=torch.zeros(0, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(SynaugError, match="no images"):
        describe(data)


def test_class_histogram_png(tmp_path):
    path = plot_class_histogram([50, 20, 3], ["a", "b/c", "d"], tmp_path / "plots" / "hist.png", title="t")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300
    both = plot_class_histogram([50, 20, 3], ["a", "b", "c"], tmp_path / "both.png", counts_after=[50, 50, 50], legend=("real", "real + synthetic"))
    assert both.stat().st_size > 1000
    with pytest.raises(SynaugError, match="one count per class"):
        plot_class_histogram([1, 2], ["a"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
