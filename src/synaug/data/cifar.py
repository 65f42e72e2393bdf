"""CIFAR-10 and CIFAR-100 from the "python version" pickles.

``cifar-10-batches-py/`` holds ``data_batch_1..5``, ``test_batch`` and ``batches.meta``;
``cifar-100-python/`` holds ``train``, ``test`` and ``meta``. Each data file is a pickled
dict with ``data`` (uint8, N x 3072, the red, green and blue 32 x 32 planes of each image)
and the labels (``labels`` or ``fine_labels``). The pickles are read with an unpickler that
only rebuilds numpy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError

HOW_TO_GET = "download the CIFAR python version from https://www.cs.toronto.edu/~kriz/cifar.html and extract it"


@dataclass(frozen=True)
class _Variant:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str


VARIANTS = {
    "cifar10": _Variant(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
    ),
    "cifar100": _Variant(
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
    ),
}


def load_cifar(root: str | Path, split: str = "train", variant: str | None = None) -> LabeledImages:
    """CIFAR-10/100 ``split`` in memory, uint8 N x 3 x 32 x 32.

    ``root`` is the extracted folder (``cifar-100-python``) or the folder containing it;
    ``variant`` ("cifar10" or "cifar100") is inferred from what ``root`` holds when None.
    """
    if split not in ("train", "test"):
        raise SynaugError(f"CIFAR has no split '{split}'; use 'train' or 'test'.")
    root = Path(root)
    if not root.is_dir():
        raise SynaugError(f"CIFAR folder {root} does not exist; {HOW_TO_GET}, then pass its folder.")
    variant, folder = _locate(root, variant)
    spec = VARIANTS[variant]
    names = _read_pickle(folder / spec.meta_file).get(spec.names_key)
    if not isinstance(names, list) or not names:
        raise SynaugError(f"CIFAR meta file {folder / spec.meta_file} lacks '{spec.names_key}'; {HOW_TO_GET} again.")
    arrays, labels = [], []
    for name in spec.train_files if split == "train" else spec.test_files:
        data, file_labels = _read_batch(folder / name, spec.label_key)
        arrays.append(data)
        labels.append(file_labels)
    images = np.concatenate(arrays).reshape(-1, 3, 32, 32)
    return LabeledImages(
        labels=np.concatenate(labels),
        class_names=[str(n) for n in names],
        images=torch.from_numpy(images),
    )


def _locate(root: Path, variant: str | None) -> tuple[str, Path]:
    """The variant and the folder holding its files, from ``root`` or its CIFAR subfolder."""
    if variant is not None and variant not in VARIANTS:
        raise SynaugError(f"unknown CIFAR variant '{variant}'; use 'cifar10' or 'cifar100'.")
    found: dict[str, Path] = {}
    for name in [variant] if variant else list(VARIANTS):
        spec = VARIANTS[name]
        for folder in (root, root / spec.folder):
            if (folder / spec.meta_file).is_file():
                found[name] = folder
                break
    if not found:
        wanted = VARIANTS[variant].folder if variant else "cifar-10-batches-py or cifar-100-python"
        raise SynaugError(f"no CIFAR data in {root} (expected {wanted}); {HOW_TO_GET}, then pass its folder.")
    if len(found) > 1:
        raise SynaugError(f"{root} holds both CIFAR-10 and CIFAR-100; choose one with variant 'cifar10' or 'cifar100'.")
    return next(iter(found.items()))


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """The (N x 3072 uint8 data, N labels) of one CIFAR data file, checked."""
    batch = _read_pickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        raise SynaugError(f"CIFAR file {path} has no uint8 'data' of shape N x 3072 (found {shape}); {HOW_TO_GET} again.")
    if labels is None or len(labels) != len(data):
        count = "no" if labels is None else len(labels)
        raise SynaugError(f"CIFAR file {path} has {len(data)} images but {count} '{label_key}'; {HOW_TO_GET} again.")
    return data, np.asarray(labels, dtype=np.int64)


def _read_pickle(path: Path) -> dict[str, Any]:
    """The dict pickled in ``path``; any corruption becomes a one-line SynaugError."""
    if not path.is_file():
        raise SynaugError(f"CIFAR file {path} is missing; {HOW_TO_GET} again.")
    try:
        with path.open("rb") as f:
            content = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # a corrupt pickle can fail in many ways; all mean "replace the file"
        raise SynaugError(f"CIFAR file {path} is corrupt or truncated ({type(exc).__name__}: {exc}); {HOW_TO_GET} again.") from None
    if not isinstance(content, dict):
        raise SynaugError(f"CIFAR file {path} does not hold a dict; {HOW_TO_GET} again.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}


def _numpy_core(module: str) -> Any:
    """``numpy._core.<module>`` (numpy 2) or ``numpy.core.<module>`` (numpy 1)."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{module}")


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else."""

    _ALLOWED = {
        ("multiarray", "_reconstruct"),
        ("multiarray", "scalar"),
        ("numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        prefix, _, leaf = module.rpartition(".")
        if prefix in ("numpy.core", "numpy._core") and (leaf, name) in self._ALLOWED:
            return getattr(_numpy_core(leaf), name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}, which a CIFAR file never needs")
