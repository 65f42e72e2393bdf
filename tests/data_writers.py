"""Writers of small datasets in the real on-disk formats, for the data-layer tests."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray) -> Path:
    """``array`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian sizes, raw bytes."""
    array = np.asarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_fashion_mnist(folder: Path, train_per_class: int = 20, test_per_class: int = 3, seed: int = 0) -> Path:
    """A Fashion-MNIST-shaped folder: the four IDX .gz files, shuffled labels, random 28 x 28 images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def write_cifar100(
    parent: Path, train_per_class: int = 5, test_per_class: int = 2, num_classes: int = 100, seed: int = 0, protocol: int = 2
) -> Path:
    """``parent/cifar-100-python/{train,test,meta}`` pickled with the keys of the real files.

    The real files are Python 2 pickles (protocol 2); protocol 4 writes large test files faster.
    """
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
        batch = {
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": f"{name}ing batch 1 of 1",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": _pixels(rng, len(labels)),
        }
        _dump(folder / name, batch, protocol)
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(num_classes)],
        "coarse_label_names": [f"coarse_{i}" for i in range(num_classes // 5)],
    }
    _dump(folder / "meta", meta)
    return folder


def write_cifar10(parent: Path, per_batch_per_class: int = 2, seed: int = 0) -> Path:
    """``parent/cifar-10-batches-py/`` with five train batches, a test batch and batches.meta."""
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.permutation(np.repeat(np.arange(10), per_batch_per_class))
        batch = {
            "batch_label": name,
            "labels": labels.tolist(),
            "data": _pixels(rng, len(labels)),
            "filenames": [f"{name}_{i}.png" for i in range(len(labels))],
        }
        _dump(folder / name, batch)
    _dump(folder / "batches.meta", {"label_names": [f"c10_{i}" for i in range(10)], "num_cases_per_batch": 10 * per_batch_per_class, "num_vis": 3072})
    return folder


def write_image(path: Path, size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 30, 90)) -> Path:
    """A small solid-colour RGB image; the format follows the suffix (png, jpg, bmp, webp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _pixels(rng: np.random.Generator, rows: int) -> np.ndarray:
    """``rows`` x 3072 random uint8 pixels (a random block of at most 997 rows, repeated, for speed)."""
    block = rng.integers(0, 256, size=(min(rows, 997), 3072), dtype=np.uint8)
    return np.resize(block, (rows, 3072))


def _dump(path: Path, content: dict, protocol: int = 2) -> None:
    with path.open("wb") as f:
        pickle.dump(content, f, protocol=protocol)
