"""Fashion-MNIST from its four IDX files (gzipped, or plain when unpacked).

The IDX format is a big-endian header ``0x00 0x00 <type> <ndim>`` followed by one
``uint32`` size per dimension and the raw values; Fashion-MNIST uses unsigned bytes
(type ``0x08``), 3 dimensions for images and 1 for labels.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "SYNAUG_FASHION_MNIST"
HOW_TO_GET = (
    f"install it with `apt-get install dataset-fashion-mnist` or set {ENV_VAR} "
    "to a folder holding the four IDX .gz files"
)

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_UBYTE = 0x08


def find_fashion_mnist(root: str | Path | None = None) -> Path:
    """The folder holding Fashion-MNIST: ``root``, else $SYNAUG_FASHION_MNIST, else the Debian default."""
    if root is not None:
        folder, origin = Path(root), "the given folder"
    elif os.environ.get(ENV_VAR):
        folder, origin = Path(os.environ[ENV_VAR]), ENV_VAR
    else:
        folder, origin = DEFAULT_ROOT, "the default location"
    if not folder.is_dir():
        raise SynaugError(f"Fashion-MNIST folder {folder} ({origin}) does not exist; {HOW_TO_GET}.")
    missing = [name for name in _expected_files() if _idx_file(folder, name) is None]
    if missing:
        raise SynaugError(f"Fashion-MNIST folder {folder} lacks {', '.join(m + '.gz' for m in missing)}; {HOW_TO_GET}.")
    return folder


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> LabeledImages:
    """The ``train`` (60,000) or ``test`` (10,000) split in memory, uint8 N x 1 x 28 x 28."""
    if split not in _SPLIT_PREFIX:
        raise SynaugError(f"Fashion-MNIST has no split '{split}'; use 'train' or 'test'.")
    folder = find_fashion_mnist(root)
    prefix = _SPLIT_PREFIX[split]
    images = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"), ndim=3)
    labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"), ndim=1)
    if len(images) != len(labels):
        raise SynaugError(
            f"Fashion-MNIST {split} has {len(images)} images but {len(labels)} labels in {folder}; {HOW_TO_GET}."
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise SynaugError(f"Fashion-MNIST {split} labels in {folder} go up to {labels.max()} (expected 0-9); {HOW_TO_GET}.")
    return LabeledImages(
        labels=labels.astype(np.int64),
        class_names=list(FASHION_MNIST_CLASSES),
        images=torch.from_numpy(images.copy()).unsqueeze(1),
    )


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The unsigned-byte array stored in IDX file ``path`` (``.gz`` is decompressed), checked to have ``ndim`` dims."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, OSError, zlib.error) as exc:
        raise SynaugError(f"IDX file {path} is truncated or not valid gzip ({exc}); {HOW_TO_GET}.") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0:2] != b"\x00\x00" or raw[2] != _UBYTE or raw[3] != ndim:
        magic = raw[:4].hex() if len(raw) >= 4 else "missing"
        raise SynaugError(
            f"IDX file {path} has magic number {magic}, expected 0000080{ndim} (unsigned bytes, {ndim} dims); {HOW_TO_GET}."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise SynaugError(
            f"IDX file {path} holds {len(raw)} bytes but its header {shape} needs {expected}; "
            f"the file is truncated or corrupt, {HOW_TO_GET}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _expected_files() -> list[str]:
    return [f"{prefix}-{kind}" for prefix in _SPLIT_PREFIX.values() for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def _idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name.gz``, else the unpacked ``folder/name``, else None."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None
