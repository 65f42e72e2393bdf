"""Fashion-MNIST IDX loading and the Fashion-MNIST benchmark sets."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from data_writers import write_fashion_mnist, write_idx
from real_data import REAL_FASHION_MNIST, needs_real_fashion_mnist

from synaug.data import benchmarks
from synaug.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist, load_fashion_mnist
from synaug.data.splits import disjoint_split
from synaug.errors import SynaugError


def test_loads_idx_gz_in_memory(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm", train_per_class=4, test_per_class=2)
    train = load_fashion_mnist("train", folder)
    test = load_fashion_mnist("test", folder)
    assert train.images.shape == (40, 1, 28, 28) and train.images.dtype == torch.uint8
    assert len(test) == 20 and test.class_counts().tolist() == [2] * 10
    assert train.class_names == FASHION_MNIST_CLASSES
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as f:
        raw = f.read()
    assert bytes(train.images[0, 0].numpy().tobytes()) == raw[16 : 16 + 784]


def test_reads_unpacked_idx_files(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm", train_per_class=2, test_per_class=1)
    for gz in folder.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert len(load_fashion_mnist("train", folder)) == 20


def test_root_falls_back_to_environment(tmp_path, monkeypatch):
    folder = write_fashion_mnist(tmp_path / "fm")
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(folder))
    assert find_fashion_mnist() == folder
    assert find_fashion_mnist(tmp_path / "fm") == folder


def test_missing_folder_names_the_package_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNAUG_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(SynaugError) as error:
        load_fashion_mnist("train")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message and "SYNAUG_FASHION_MNIST" in message
    assert "\n" not in message


def test_folder_without_the_files_lists_what_is_missing(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SynaugError, match="t10k-labels-idx1-ubyte.gz"):
        find_fashion_mnist(folder)


def test_truncated_idx_is_reported(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(SynaugError, match="truncated"):
        load_fashion_mnist("train", folder)


def test_short_idx_payload_is_reported(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(SynaugError, match="needs"):
        load_fashion_mnist("train", folder)


def test_wrong_magic_number_is_reported(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros((200, 2), dtype=np.uint8))
    with pytest.raises(SynaugError, match="magic number 00000802"):
        load_fashion_mnist("train", folder)


def test_not_gzip_is_reported(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(SynaugError, match="not valid gzip"):
        load_fashion_mnist("test", folder)


def test_image_and_label_counts_must_agree(tmp_path):
    folder = write_fashion_mnist(tmp_path / "fm", train_per_class=3)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(29, dtype=np.uint8))
    with pytest.raises(SynaugError, match="30 images but 29 labels"):
        load_fashion_mnist("train", folder)


def test_unknown_split(tmp_path):
    with pytest.raises(SynaugError, match="'val'"):
        load_fashion_mnist("val", write_fashion_mnist(tmp_path / "fm"))


def test_benchmark_sets_on_a_small_copy(tmp_path, monkeypatch):
    folder = write_fashion_mnist(tmp_path / "fm", train_per_class=60, test_per_class=2)
    lt, test = benchmarks.fashion_mnist_lt(imbalance_factor=10, max_per_class=20, root=folder)
    assert lt.class_counts().tolist() == [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert len(test) == 20
    reserved = benchmarks.fashion_mnist_reserved(folder)
    assert len(reserved) == 300
    assert not set(map(bytes, reserved.images.numpy())) & set(map(bytes, lt.images.numpy()))


@needs_real_fashion_mnist
def test_real_fashion_mnist_lt_counts_and_disjointness():
    lt, test = benchmarks.fashion_mnist_lt(imbalance_factor=100, max_per_class=500, root=REAL_FASHION_MNIST)
    assert lt.class_counts().tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert len(lt) == 1236 and len(test) == 10_000
    reserved, pool = disjoint_split(60_000, 0.5, seed=0)
    indices = benchmarks.longtail_indices(load_fashion_mnist("train", REAL_FASHION_MNIST).labels, 100, 500, reserve=0.5)
    assert set(indices) <= set(pool) and not set(indices) & set(reserved)
    balanced = benchmarks.fashion_mnist_balanced(500, root=REAL_FASHION_MNIST)
    assert balanced.class_counts().tolist() == [500] * 10
    lt_rows = set(map(bytes, lt.images.numpy()))
    assert lt_rows <= set(map(bytes, balanced.images.numpy()))
