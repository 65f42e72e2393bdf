"""The one labelled-image dataset type every stage passes around.

A :class:`LabeledImages` holds class labels (and optionally group labels) for N images
that live either in memory as a ``uint8`` tensor ``N x C x H x W`` (small sets such as
Fashion-MNIST or CIFAR) or on disk as file paths decoded lazily (ImageNet-LT-sized sets).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from synaug.errors import SynaugError


@dataclass
class LabeledImages:
    """Images with class labels, optional group labels and an ``is_synthetic`` flag.

    Parameters
    ----------
    labels : int64 array of shape (N,), class index of each image.
    class_names : name of each class; ``len(class_names)`` is the number of classes.
    images : uint8 tensor ``N x C x H x W`` for in-memory data, else None.
    files : image paths for file-backed data, else None (exactly one of images/files).
    size : (H, W) file-backed images are resized to when decoded; None keeps their size.
    channels : channels file-backed images are converted to (1 or 3).
    groups : int64 array (N,) of group indices, or None.
    group_names : name of each group when ``groups`` is set.
    is_synthetic : bool array (N,); all False when not given.

    >>> data = LabeledImages(np.array([0, 1]), ["cat", "dog"], images=torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    >>> data.class_counts().tolist(), data.is_synthetic.tolist()
    ([1, 1], [False, False])
    """

    labels: np.ndarray
    class_names: list[str]
    images: torch.Tensor | None = None
    files: list[Path] | None = None
    size: tuple[int, int] | None = None
    channels: int = 3
    groups: np.ndarray | None = None
    group_names: list[str] | None = None
    is_synthetic: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.labels)
        if (self.images is None) == (self.files is None):
            raise SynaugError("LabeledImages needs exactly one of `images` (in memory) or `files` (on disk).")
        if self.images is not None:
            if self.images.dtype != torch.uint8 or self.images.ndim != 4:
                raise SynaugError("in-memory images must be a uint8 tensor N x C x H x W; convert with (x * 255).round().to(torch.uint8).")
            if len(self.images) != n:
                raise SynaugError(f"{len(self.images)} images but {n} labels; give one label per image.")
            self.channels = int(self.images.shape[1])
            self.size = (int(self.images.shape[2]), int(self.images.shape[3]))
        else:
            self.files = [Path(f) for f in self.files]
            if len(self.files) != n:
                raise SynaugError(f"{len(self.files)} files but {n} labels; give one label per file.")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            bad = int(self.labels.min() if self.labels.min() < 0 else self.labels.max())
            raise SynaugError(f"label {bad} is out of range for {len(self.class_names)} classes; fix the labels or the class list.")
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=np.int64)
            if len(self.groups) != n:
                raise SynaugError(f"{len(self.groups)} group labels but {n} images; give one group per image.")
            if self.group_names is None:
                self.group_names = [str(g) for g in range(int(self.groups.max()) + 1 if n else 0)]
            if n and (self.groups.min() < 0 or self.groups.max() >= len(self.group_names)):
                raise SynaugError(f"group label out of range for {len(self.group_names)} groups; fix the group column.")
        self.is_synthetic = (
            np.zeros(n, dtype=bool) if self.is_synthetic is None else np.asarray(self.is_synthetic, dtype=bool)
        )

    # ---- basic facts -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def class_counts(self) -> np.ndarray:
        """Number of images of each class, shape (num_classes,)."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def cell_counts(self) -> np.ndarray:
        """Images per (class, group) cell, shape (num_classes, num_groups)."""
        if self.groups is None:
            raise SynaugError("this dataset has no group labels; load it with a group column to use group cells.")
        counts = np.zeros((self.num_classes, len(self.group_names)), dtype=np.int64)
        np.add.at(counts, (self.labels, self.groups), 1)
        return counts

    # ---- selection and combination ----------------------------------------------
    def subset(self, indices: Sequence[int] | np.ndarray) -> "LabeledImages":
        """The images at ``indices`` (order kept), sharing names and settings."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            labels=self.labels[idx],
            images=None if self.images is None else self.images[torch.from_numpy(idx)],
            files=None if self.files is None else [self.files[i] for i in idx],
            groups=None if self.groups is None else self.groups[idx],
            is_synthetic=self.is_synthetic[idx],
        )

    def concat(self, other: "LabeledImages") -> "LabeledImages":
        """This set followed by ``other`` (same classes; both in memory or both on disk)."""
        if list(other.class_names) != list(self.class_names):
            raise SynaugError("cannot combine datasets with different class lists; build both from the same class names.")
        if self.in_memory != other.in_memory:
            raise SynaugError("cannot combine in-memory and file-backed datasets; call .materialize() on the file-backed one first.")
        if (self.groups is None) != (other.groups is None):
            raise SynaugError("cannot combine a dataset with group labels and one without; give both a group column.")
        images = None
        if self.in_memory:
            if self.images.shape[1:] != other.images.shape[1:]:
                raise SynaugError(
                    f"image shapes differ ({tuple(self.images.shape[1:])} vs {tuple(other.images.shape[1:])}); resize to the dataset's resolution first."
                )
            images = torch.cat([self.images, other.images])
        return replace(
            self,
            labels=np.concatenate([self.labels, other.labels]),
            images=images,
            files=None if self.files is None else self.files + other.files,
            groups=None if self.groups is None else np.concatenate([self.groups, other.groups]),
            is_synthetic=np.concatenate([self.is_synthetic, other.is_synthetic]),
        )

    def relabel_to(self, class_names: Sequence[str], what: str = "test split") -> "LabeledImages":
        """These images labelled in the order of ``class_names`` (e.g. a test split in its training
        classes' order); a class of these images that ``class_names`` lacks is a one-line error naming it."""
        names = [str(n) for n in class_names]
        if list(self.class_names) == names:
            return self
        used = [self.class_names[i] for i in np.unique(self.labels)]
        missing = [name for name in used if name not in names]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise SynaugError(
                f"the {what} has class '{missing[0]}'{more}, which the training data lacks; "
                f"add training images of it or remove it from the {what}."
            )
        mapping = np.array([names.index(n) if n in names else -1 for n in self.class_names], dtype=np.int64)
        return replace(self, labels=mapping[self.labels], class_names=names)

    # ---- pixels ------------------------------------------------------------------
    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` as a uint8 tensor C x H x W."""
        if self.images is not None:
            return self.images[index]
        return decode_image(self.files[index], self.channels, self.size)

    def materialize(self) -> "LabeledImages":
        """An in-memory copy (decodes every file; needs ``size`` when file sizes differ)."""
        if self.in_memory:
            return self
        if not len(self):
            raise SynaugError("cannot load an empty dataset into memory; check the data folder and split.")
        return replace(self, images=self.stack(range(len(self))), files=None)

    def stack(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Images ``indices`` as one uint8 tensor N x C x H x W; file images of different sizes are a one-line error."""
        return stack_images([self.load(int(i)) for i in indices], None if self.files is None else [self.files[int(i)] for i in indices])


def stack_images(images: Sequence[torch.Tensor], files: Sequence[Path] | None = None) -> torch.Tensor:
    """``images`` (decoded from ``files``, when given) stacked; different sizes are a one-line error naming the fix."""
    sizes = [_width_by_height(image.shape[1:]) for image in images]
    other = next((position for position, size in enumerate(sizes) if size != sizes[0]), None)
    if other is not None:
        where, names = "", ["", ""]
        if files is not None:
            folder = Path(os.path.commonpath([files[0].parent, files[other].parent]))
            where, names = f" in {folder}", [f" {files[i].relative_to(folder)}" for i in (0, other)]
        raise SynaugError(
            f"images{where} differ in size ({sizes[0]}{names[0]}, {sizes[other]}{names[1]}); "
            "pass --size N (data.size in a config) to resize them."
        )
    return torch.stack(list(images))


def _width_by_height(shape: Sequence[int]) -> str:
    """``(H, W)`` as ``"WxH"``, the way image sizes are usually written."""
    return f"{shape[1]}x{shape[0]}"


def check_image_files(files: Sequence[Path]) -> None:
    """A one-line error naming the first file that is missing or not a complete, readable image
    (PIL's header and checksum check; the pixels are not decoded)."""
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as img:
                img.verify()
        except FileNotFoundError:
            raise SynaugError(f"image file {path} does not exist; fix the path or the split list.") from None
        except Exception as exc:  # PIL raises many types for damaged files
            raise SynaugError(f"image file {path} is corrupt or truncated ({exc}); replace or remove it.") from None


def decode_image(path: Path, channels: int, size: tuple[int, int] | None) -> torch.Tensor:
    """Decode one image file to uint8 C x H x W, converted to ``channels`` and resized to ``size``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BICUBIC)
            array = np.array(img, dtype=np.uint8)  # a writable copy; torch warns on read-only arrays
    except FileNotFoundError:
        raise SynaugError(f"image file {path} does not exist; fix the path or the split list.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SynaugError(f"image file {path} is corrupt or truncated ({exc}); replace or remove it.") from None
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))
