"""Image files on disk: class-per-folder trees, ImageNet-LT-style split lists, safe folder names.

Both loaders return file-backed :class:`LabeledImages`; pixels are decoded lazily, so a
corrupt image file raises its one-line error when it is first loaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_UNSAFE_CHARS = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
_MAX_NAME_BYTES = 255


def sanitize_folder_name(name: str) -> str:
    """A single, safe folder name for class ``name`` ("T-shirt/top" -> "T-shirt_top").

    Path separators and characters Windows forbids become "_", leading dots and
    surrounding spaces are dropped (so "..", "." and "../x" cannot leave the parent
    folder or hide), and a name with nothing left becomes "_".
    """
    safe = _UNSAFE_CHARS.sub("_", str(name)).strip().lstrip(".").rstrip(". ")
    safe = safe.encode("utf-8")[:_MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    return safe or "_"


def check_folder_name(name: str) -> str:
    """``name`` unchanged when it is a safe single folder name, else a one-line SynaugError."""
    if sanitize_folder_name(name) != name:
        raise SynaugError(
            f"'{name}' cannot be used as a folder name (it is empty, a dot name, or holds a path separator "
            f"or a forbidden character); use '{sanitize_folder_name(name)}' instead."
        )
    return name


def class_folder_names(class_names: Sequence[str]) -> list[str]:
    """One distinct sanitised folder name per class; two classes sharing a folder is an error."""
    folders = [sanitize_folder_name(n) for n in class_names]
    seen: dict[str, str] = {}
    for name, folder in zip(class_names, folders):
        if folder in seen:
            raise SynaugError(
                f"class names '{seen[folder]}' and '{name}' both map to the folder '{folder}'; rename one of them."
            )
        seen[folder] = name
    return folders


def load_image_folder(
    root: str | Path,
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
    class_names: Sequence[str] | None = None,
) -> LabeledImages:
    """Images under ``root/<class>/`` (searched recursively), file-backed.

    Without ``class_names`` the classes are the sorted subfolders of ``root``. With it,
    class ``i`` is read from the folder ``sanitize_folder_name(class_names[i])``, so a tree
    written by synaug's store loads with the original names.
    """
    root = Path(root)
    if not root.is_dir():
        raise SynaugError(f"image folder {root} does not exist; check the path.")
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        if not subfolders:
            raise SynaugError(f"image folder {root} has no class subfolders; put each class's images in {root}/<class name>/.")
        names, folders = list(subfolders), list(subfolders)
    else:
        names, folders = [str(n) for n in class_names], class_folder_names(class_names)
        unknown = sorted(set(subfolders) - set(folders))
        if unknown:
            raise SynaugError(f"folder {root / unknown[0]} matches no class name; rename it to a class or remove it.")
    files: list[Path] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        found = _image_files(root / folder)
        if not found:
            raise SynaugError(
                f"class '{names[label]}' has no images in {root / folder} ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the class."
            )
        files += found
        labels += [label] * len(found)
    return LabeledImages(labels=np.array(labels), class_names=names, files=files, size=_as_size(size), channels=_check_channels(channels))


def load_split_list(
    list_file: str | Path,
    root: str | Path,
    class_names: Sequence[str] | None = None,
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
) -> LabeledImages:
    """Images listed in an ImageNet-LT / Places-LT split file (``relative/path.jpg label`` per line).

    Paths are relative to ``root``. Without ``class_names`` the classes are 0..max label,
    named by their numbers. Every listed file must exist and every class must have an image.
    """
    list_file, root = Path(list_file), Path(root)
    if not list_file.is_file():
        raise SynaugError(f"split list {list_file} does not exist; check the path.")
    if not root.is_dir():
        raise SynaugError(f"image root {root} for split list {list_file.name} does not exist; pass the folder the listed paths are relative to.")
    files: list[Path] = []
    labels: list[int] = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        path, label = _parse_line(line, number, list_file, class_names)
        if not (root / path).is_file():
            raise SynaugError(f"line {number} of {list_file} names {path}, which is not a file under {root}; fix the line or the image root.")
        files.append(root / path)
        labels.append(label)
    if not labels:
        raise SynaugError(f"split list {list_file} lists no images; give one `relative/path.jpg label` per line.")
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(max(labels) + 1)]
    counts = np.bincount(labels, minlength=len(names))
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise SynaugError(
            f"class {empty[0]} ('{names[empty[0]]}') has no images in {list_file}; add lines for it or drop it from the class list."
        )
    return LabeledImages(labels=np.array(labels), class_names=names, files=files, size=_as_size(size), channels=_check_channels(channels))


def _parse_line(line: str, number: int, list_file: Path, class_names: Sequence[str] | None) -> tuple[str, int]:
    """(relative path, label) of one split-list line, checked."""
    parts = line.strip().rsplit(maxsplit=1)
    if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
        raise SynaugError(f"line {number} of {list_file} ('{line.strip()}') is not `relative/path.jpg label`; fix the line.")
    label = int(parts[1])
    limit = len(class_names) if class_names is not None else None
    if label < 0 or (limit is not None and label >= limit):
        allowed = f"0-{limit - 1}" if limit is not None else "0 or more"
        raise SynaugError(f"line {number} of {list_file} has label {label}, out of range ({allowed}); fix the label or the class list.")
    return parts[0], label


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden names skipped), sorted."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise SynaugError(f"image size {size} must be positive; give e.g. 32 or (224, 224).")
    return int(height), int(width)


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise SynaugError(f"channels must be 1 (grayscale) or 3 (RGB), not {channels}.")
    return channels
