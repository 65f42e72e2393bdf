"""Loading any supported dataset by kind, and index files that name a subset of one.

An index file (JSON) records how to load the full dataset (``source``), how the subset
was built (``settings``) and the chosen ``indices``, plus the class names and counts to
check that the dataset read back is the one it was built from. The data commands, the
training and the pipeline all read datasets through :func:`load_dataset`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synaug.data.cifar import load_cifar
from synaug.data.dataset import LabeledImages
from synaug.data.fashion_mnist import load_fashion_mnist
from synaug.data.folders import load_image_folder, load_split_list
from synaug.data.groups import load_image_folder_with_groups, load_nico, load_utkface, load_waterbirds
from synaug.data.spurious import SPLITS as SPURIOUS_SPLITS, spurious_fashion_mnist
from synaug.errors import SynaugError

DATASET_KINDS = (
    "fashion-mnist", "cifar10", "cifar100", "imagefolder", "split-list",
    "waterbirds", "utkface", "nico", "spurious-fashion-mnist",
)
LOADER_OPTIONS = {
    "utkface": ("target", "sensitive", "age_bins", "skip_malformed"),
    "nico": ("layout",),
    "spurious-fashion-mnist": ("imbalance_factor", "max_per_class", "majority", "per_cell_val", "per_cell_test", "seed"),
}
GROUP_KINDS = ("waterbirds", "utkface", "nico", "spurious-fashion-mnist")
FOLDER_KINDS = ("imagefolder", "utkface", "nico")
INDEX_FORMAT = "synaug-index/1"
_NATIVE_SHAPE = {"fashion-mnist": (1, 28), "cifar10": (3, 32), "cifar100": (3, 32), "spurious-fashion-mnist": (3, 28)}


def load_dataset(
    kind: str,
    root: str | Path | None = None,
    split: str = "train",
    list_file: str | Path | None = None,
    size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    groups_csv: str | Path | None = None,
    options: dict[str, Any] | None = None,
) -> LabeledImages:
    """The dataset of ``kind`` (one of :data:`DATASET_KINDS`).

    ``root``: the data folder (Fashion-MNIST falls back to $SYNAUG_FASHION_MNIST and its
    default location; for the folder kinds see :func:`split_folder`).
    ``list_file``: the split list for ``split-list`` (paths relative to ``root``).
    ``size``/``channels``: what file-backed images are decoded to; in-memory kinds keep
    their native shape and reject a different one.

    Group-annotated kinds (see :mod:`synaug.data.groups`) load with their defaults:
    ``waterbirds`` (split train/val/test from metadata.csv), ``utkface`` (target gender,
    sensitive attribute race) and ``nico`` (context/class folders), the last two from
    ``root/<split>`` when that folder exists; ``spurious-fashion-mnist`` is the benchmark of
    :func:`synaug.data.spurious.spurious_fashion_mnist` (split train/val/test, 10 classes).
    ``options`` go to those loaders (see :data:`LOADER_OPTIONS`); ``groups_csv`` gives
    ``imagefolder`` images a group (:func:`~synaug.data.groups.load_image_folder_with_groups`,
    paths relative to the folder the split is read from).

    >>> test = synaug.load_dataset("fashion-mnist", split="test")  # doctest: +SKIP
    """
    if kind not in DATASET_KINDS:
        raise SynaugError(f"unknown dataset '{kind}'; use one of {', '.join(DATASET_KINDS)}.")
    options = dict(options or {})
    unknown = sorted(set(options) - set(LOADER_OPTIONS.get(kind, ())))
    if unknown:
        accepted = ", ".join(LOADER_OPTIONS.get(kind, ())) or "none"
        raise SynaugError(f"dataset kind {kind} takes no option '{unknown[0]}' (its options: {accepted}); remove it.")
    if groups_csv is not None and kind != "imagefolder":
        raise SynaugError(f"a group CSV applies to imagefolder data, not {kind}; remove it (group-annotated kinds carry their own groups).")
    if kind in _NATIVE_SHAPE:
        _check_native_shape(kind, size, channels)
        if kind == "fashion-mnist":
            return load_fashion_mnist(split, root)
        if kind == "spurious-fashion-mnist":
            if split not in SPURIOUS_SPLITS:
                raise SynaugError(f"spurious-fashion-mnist has no split '{split}'; use one of {', '.join(SPURIOUS_SPLITS)}.")
            return spurious_fashion_mnist(root=root, **options)[split]
        if root is None:
            raise SynaugError(f"{kind} needs a root folder; pass the folder holding the extracted CIFAR python version.")
        return load_cifar(root, split, variant=kind)
    if root is None:
        raise SynaugError(f"{kind} needs a root folder; pass the folder the images are in.")
    channels = 3 if channels is None else channels
    folder = split_folder(root, split) if kind in FOLDER_KINDS else Path(root)
    if kind == "imagefolder":
        if groups_csv is not None:
            return load_image_folder_with_groups(folder, groups_csv, size=size, channels=channels)
        return load_image_folder(folder, size=size, channels=channels)
    if kind == "waterbirds":
        return load_waterbirds(root, split, size=size, channels=channels)
    if kind == "utkface":
        return load_utkface(folder, size=size, channels=channels, **options)
    if kind == "nico":
        return load_nico(folder, size=size, channels=channels, **options)
    if list_file is None:
        raise SynaugError("split-list needs a list file; pass the ImageNet-LT/Places-LT style `path label` file.")
    return load_split_list(list_file, root, size=size, channels=channels)


def split_folder(root: str | Path, split: str) -> Path:
    """The folder ``split`` is read from: ``root/<split>``, else ``root`` itself for the training split.

    A folder of class folders with no split folders below is the training split; any other
    split needs its own folder (``root/<split>``, or ``root`` when it is named ``split``), so
    the training images are never silently read as the test or validation split.
    """
    root = Path(root)
    if (root / split).is_dir():
        return root / split
    if split == "train" or root.name == split or not root.is_dir():  # a missing root is the loader's error
        return root
    if (root / "train").is_dir():
        splits = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise SynaugError(f"{root} has no '{split}' split (its splits: {', '.join(splits)}); use one of them or add {root / split}/<class>/.")
    raise SynaugError(
        f"image folder {root} has no '{split}' folder to read the {split} split from, and its class folders are the training "
        f"images; lay the data out as ROOT/train/<class>/ and ROOT/{split}/<class>/ and pass --root ROOT."
    )


@dataclass
class SubsetIndex:
    """A subset of a dataset, as stored in an index file."""

    indices: np.ndarray
    source: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    class_counts: list[int] = field(default_factory=list)
    source_size: int = 0

    def load(self, **overrides: Any) -> LabeledImages:
        """Load the source dataset (``overrides`` that are not None replace its settings) and take the subset."""
        source = {**self.source, **{k: v for k, v in overrides.items() if v is not None}}
        return self.apply(load_dataset(**source))

    def apply(self, dataset: LabeledImages) -> LabeledImages:
        """The subset of ``dataset``, checked to be the dataset the index was built from."""
        if len(dataset) != self.source_size or list(dataset.class_names) != list(self.class_names):
            raise SynaugError(
                f"the index was built from a dataset of {self.source_size} images and {len(self.class_names)} classes, "
                f"but this one has {len(dataset)} images and {dataset.num_classes} classes; load the dataset the index names."
            )
        subset = dataset.subset(self.indices)
        if subset.class_counts().tolist() != list(self.class_counts):
            raise SynaugError("the indexed images have other labels than when the index was built; load the dataset the index names.")
        return subset


def save_index(
    path: str | Path,
    indices: np.ndarray,
    dataset: LabeledImages,
    source: dict[str, Any],
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write the subset ``indices`` of ``dataset`` (loaded from ``source``) to ``path`` atomically."""
    indices = np.asarray(indices, dtype=np.int64)
    bad = indices[(indices < 0) | (indices >= len(dataset))]
    if len(bad):
        raise SynaugError(f"index {bad[0]} is out of range for a dataset of {len(dataset)} images; index within 0-{len(dataset) - 1}.")
    content = {
        "format": INDEX_FORMAT,
        "source": {k: str(v) if isinstance(v, Path) else v for k, v in source.items()},
        "settings": settings or {},
        "class_names": list(dataset.class_names),
        "class_counts": np.bincount(dataset.labels[indices], minlength=dataset.num_classes).tolist(),
        "source_size": len(dataset),
        "indices": indices.tolist(),
    }
    path = Path(path)
    lines = ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in content.items())
    write_atomic(path, "{\n" + lines + "\n}\n")
    return path


def load_index(path: str | Path) -> SubsetIndex:
    """The :class:`SubsetIndex` stored in index file ``path``."""
    path = Path(path)
    if not path.is_file():
        raise SynaugError(f"index file {path} does not exist; build one with `synaug data longtail --out {path}`.")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SynaugError(f"index file {path} is not valid JSON ({exc}); rebuild it with `synaug data longtail`.") from None
    if not isinstance(content, dict) or content.get("format") != INDEX_FORMAT:
        raise SynaugError(f"{path} is not a synaug index file ({INDEX_FORMAT}); rebuild it with `synaug data longtail`.")
    try:
        return SubsetIndex(
            indices=np.asarray(content["indices"], dtype=np.int64),
            source=dict(content["source"]),
            settings=dict(content.get("settings", {})),
            class_names=[str(n) for n in content["class_names"]],
            class_counts=[int(c) for c in content["class_counts"]],
            source_size=int(content["source_size"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SynaugError(f"index file {path} is incomplete or damaged ({exc}); rebuild it with `synaug data longtail`.") from None


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, so ``path`` is never half-written."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SynaugError(f"cannot write {path} ({exc.strerror or exc}); choose a writable location.") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_native_shape(kind: str, size: int | tuple[int, int] | None, channels: int | None) -> None:
    native_channels, native_size = _NATIVE_SHAPE[kind]
    sizes = {None, native_size, (native_size, native_size)}
    if channels not in (None, native_channels) or (tuple(size) if isinstance(size, list) else size) not in sizes:
        raise SynaugError(
            f"{kind} images are {native_channels} x {native_size} x {native_size}; drop the size/channels settings "
            "(they apply to imagefolder and split-list)."
        )
