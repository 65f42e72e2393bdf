"""Group-annotated datasets: Waterbirds, UTKFace, NICO++ and image folders with a group CSV.

Every loader returns file-backed :class:`LabeledImages` whose ``groups`` hold the
*attribute* that is not the target (Waterbirds: the place, UTKFace: the sensitive
attribute, NICO++: the context). The groups of the group-robustness literature are the
(class, attribute) cells: :func:`group_cells` numbers them ``class * num_attributes +
attribute`` and names them ``"class/attribute"`` (Waterbirds: "landbird/land",
"landbird/water", "waterbird/land", "waterbird/water"). Keeping the attribute as the group
lets a synthesis plan fill (class, context) cells and prompt for "a waterbird, land".
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from synaug.data.dataset import LabeledImages
from synaug.data.folders import IMAGE_EXTENSIONS, _as_size, _check_channels, _image_files, load_image_folder
from synaug.errors import SynaugError

WATERBIRDS_CLASSES = ["landbird", "waterbird"]
WATERBIRDS_PLACES = ["land", "water"]
WATERBIRDS_SPLITS = {"train": 0, "val": 1, "test": 2}
WATERBIRDS_COLUMNS = ("img_filename", "y", "split", "place")

UTKFACE_ATTRIBUTES = ("age", "gender", "race")
UTKFACE_GENDERS = ["male", "female"]
UTKFACE_RACES = ["White", "Black", "Asian", "Indian", "Others"]
UTKFACE_AGE_BINS = (0, 20, 40, 60, 120)
_UTKFACE_NAME = re.compile(r"(\d+)_(\d+)_(\d+)_(\d+)\.jpg(\.chip\.jpg)?", re.IGNORECASE)

NICO_LAYOUTS = ("context/class", "class/context")


# ---- (class, group) cells ---------------------------------------------------------------
def group_cells(data: LabeledImages) -> tuple[np.ndarray, list[str]]:
    """The (class, group) cell of every image and the cell names ``"class/group"``, class-major.

    Cell ``c * G + g`` is class ``c`` with group ``g`` (G groups). These are the groups that
    worst-group accuracy, Group-DRO and DFR work on; ``data.cell_counts().ravel()`` counts
    the images per cell in the same order.
    """
    if data.groups is None:
        raise SynaugError("this dataset has no group labels; load it with a group-annotated loader or a group CSV.")
    num_groups = len(data.group_names)
    names = [f"{c}/{g}" for c in data.class_names for g in data.group_names]
    return data.labels * num_groups + data.groups, names


# ---- Waterbirds (WILDS layout) ----------------------------------------------------------
def load_waterbirds(
    root: str | Path, split: str = "train", size: int | tuple[int, int] | None = None, channels: int = 3
) -> LabeledImages:
    """Waterbirds from ``root/metadata.csv`` (``img_filename, y, split, place``), WILDS layout.

    ``split`` is train / val / test (0 / 1 / 2 in the CSV). Classes: landbird (y = 0),
    waterbird (y = 1); groups: the place, land (0) or water (1).
    """
    if split not in WATERBIRDS_SPLITS:
        raise SynaugError(f"Waterbirds has no split '{split}'; use one of {', '.join(WATERBIRDS_SPLITS)}.")
    root = Path(root)
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise SynaugError(f"{metadata} does not exist; pass the Waterbirds folder of the WILDS layout (it holds metadata.csv).")
    files: list[Path] = []
    labels: list[int] = []
    places: list[int] = []
    for line, row in _csv_rows(metadata, WATERBIRDS_COLUMNS):
        where = f"row {line} of {metadata}"
        y, row_split, place = (_small_int(row[k], k, limit, where) for k, limit in (("y", 2), ("split", 3), ("place", 2)))
        if row_split != WATERBIRDS_SPLITS[split]:
            continue
        path = _relative_file(root, row["img_filename"], where)
        files.append(path)
        labels.append(y)
        places.append(place)
    if not files:
        raise SynaugError(f"{metadata} has no rows with split {WATERBIRDS_SPLITS[split]} ({split}); check the file.")
    return LabeledImages(
        labels=np.array(labels), class_names=list(WATERBIRDS_CLASSES), files=files, size=_as_size(size),
        channels=_check_channels(channels), groups=np.array(places), group_names=list(WATERBIRDS_PLACES),
    )


# ---- UTKFace ----------------------------------------------------------------------------
def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """(age, gender, race) from ``age_gender_race_datetime.jpg[.chip.jpg]``, or None when malformed."""
    match = _UTKFACE_NAME.fullmatch(name)
    if match is None:
        return None
    age, gender, race = (int(match.group(i)) for i in (1, 2, 3))
    if gender >= len(UTKFACE_GENDERS) or race >= len(UTKFACE_RACES):
        return None
    return age, gender, race


def load_utkface(
    root: str | Path,
    target: str = "gender",
    sensitive: str = "race",
    age_bins: Sequence[int] = UTKFACE_AGE_BINS,
    skip_malformed: bool = False,
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
) -> LabeledImages:
    """UTKFace images under ``root`` (searched recursively), labelled from their file names.

    ``target`` and ``sensitive`` are two different attributes among age, gender (0 male,
    1 female) and race (0-4: White, Black, Asian, Indian, Others). Age is binned by the
    ``age_bins`` edges: ``[0, 20, 40, 60, 120]`` gives 0-19, 20-39, 40-59, 60-119. A file
    whose name does not parse is an error, or, with ``skip_malformed``, skipped with one
    warning that gives the count (the public archive holds a few names without a race).
    """
    for role, attribute in (("target", target), ("sensitive attribute", sensitive)):
        if attribute not in UTKFACE_ATTRIBUTES:
            raise SynaugError(f"UTKFace {role} '{attribute}' is unknown; choose one of {', '.join(UTKFACE_ATTRIBUTES)}.")
    if target == sensitive:
        raise SynaugError(f"the target and the sensitive attribute are both '{target}'; choose two different attributes.")
    edges = _check_age_bins(age_bins)
    root = Path(root)
    if not root.is_dir():
        raise SynaugError(f"UTKFace folder {root} does not exist; check the path.")
    files, values, malformed = [], [], []
    for path in _image_files(root):
        parsed = parse_utkface_name(path.name)
        if parsed is None:
            if not skip_malformed:
                raise SynaugError(
                    f"UTKFace file name '{path.name}' is not age_gender_race_datetime.jpg (gender 0-1, race 0-4); "
                    "rename or remove it, or pass skip_malformed=True to skip such files."
                )
            malformed.append(path.name)
            continue
        files.append(path)
        values.append(parsed)
    if malformed:
        warnings.warn(f"skipped {len(malformed)} UTKFace files with malformed names (first: {malformed[0]}).", stacklevel=2)
    if not files:
        raise SynaugError(f"no UTKFace images (age_gender_race_datetime.jpg) under {root}; check the path.")
    columns = dict(zip(UTKFACE_ATTRIBUTES, np.array(values).T))
    outside = (columns["age"] < edges[0]) | (columns["age"] >= edges[-1])
    if outside.any():
        bad = files[int(np.flatnonzero(outside)[0])]
        raise SynaugError(f"the age of '{bad.name}' lies outside the age bins {edges.tolist()}; widen the first or last edge.")
    columns["age"] = np.searchsorted(edges, columns["age"], side="right") - 1
    names = {"age": [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])], "gender": UTKFACE_GENDERS, "race": UTKFACE_RACES}
    return LabeledImages(
        labels=columns[target], class_names=list(names[target]), files=files, size=_as_size(size),
        channels=_check_channels(channels), groups=columns[sensitive], group_names=list(names[sensitive]),
    )


def _check_age_bins(age_bins: Sequence[int]) -> np.ndarray:
    edges = np.asarray(age_bins)
    if edges.ndim != 1 or len(edges) < 3 or not np.issubdtype(edges.dtype, np.integer) or (np.diff(edges) <= 0).any():
        raise SynaugError(f"age bins {list(age_bins)} must be at least 3 increasing whole-number edges, e.g. [0, 20, 40, 60, 120].")
    return edges


# ---- NICO++ -----------------------------------------------------------------------------
def load_nico(
    root: str | Path, layout: str = "context/class", size: int | tuple[int, int] | None = None, channels: int = 3
) -> LabeledImages:
    """NICO++ images in ``root/<context>/<class>/`` (or ``root/<class>/<context>/`` with
    ``layout="class/context"``); groups are the contexts. Classes and contexts are sorted
    by name; a class may be missing from some contexts (an empty cell)."""
    if layout not in NICO_LAYOUTS:
        raise SynaugError(f"unknown NICO++ layout '{layout}'; use one of {', '.join(NICO_LAYOUTS)}.")
    root = Path(root)
    if not root.is_dir():
        raise SynaugError(f"NICO++ folder {root} does not exist; check the path.")
    outer_name, inner_name = layout.split("/")
    found: list[tuple[str, str, Path]] = []  # (outer folder, inner folder, file)
    for outer in _subfolders(root):
        loose = [p for p in outer.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if loose:
            raise SynaugError(f"image {loose[0]} is not inside a {layout} folder; move it into {outer}/<{inner_name}>/.")
        found += [(outer.name, inner.name, f) for inner in _subfolders(outer) for f in _image_files(inner)]
    if not found:
        raise SynaugError(f"no images under {root}/<{outer_name}>/<{inner_name}>/ ({', '.join(IMAGE_EXTENSIONS)}); check the path and layout.")
    if layout == "class/context":
        found = [(context, cls, f) for cls, context, f in found]
    contexts = sorted({context for context, _, _ in found})
    classes = sorted({cls for _, cls, _ in found})
    return LabeledImages(
        labels=np.array([classes.index(cls) for _, cls, _ in found]),
        class_names=classes,
        files=[f for _, _, f in found],
        size=_as_size(size),
        channels=_check_channels(channels),
        groups=np.array([contexts.index(context) for context, _, _ in found]),
        group_names=contexts,
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


# ---- image folders with a group CSV -----------------------------------------------------
def load_image_folder_with_groups(
    root: str | Path,
    groups_csv: str | Path,
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
    class_names: Sequence[str] | None = None,
) -> LabeledImages:
    """:func:`~synaug.data.load_image_folder` plus one group per image from a CSV.

    ``groups_csv`` has a header ``path,group`` and one row per image, the path relative to
    ``root``; group names are sorted. Every image needs exactly one row, and every row an image.
    """
    data = load_image_folder(root, size=size, channels=channels, class_names=class_names)
    root, groups_csv = Path(root), Path(groups_csv)
    if not groups_csv.is_file():
        raise SynaugError(f"group CSV {groups_csv} does not exist; write one `path,group` row per image.")
    group_of: dict[str, str] = {}
    for line, row in _csv_rows(groups_csv, ("path", "group")):
        where = f"row {line} of {groups_csv}"
        key = _relative_file(root, row["path"], where).relative_to(root).as_posix()
        if not row["group"].strip():
            raise SynaugError(f"{where} has an empty group; give every image a group name.")
        if key in group_of:
            raise SynaugError(f"{where} lists {key} a second time; keep one row per image.")
        group_of[key] = row["group"].strip()
    keys = [f.relative_to(root).as_posix() for f in data.files]
    missing = [k for k in keys if k not in group_of]
    if missing:
        raise SynaugError(f"{len(missing)} images have no row in {groups_csv} (first: {missing[0]}); add a `path,group` row for each.")
    extra = sorted(set(group_of) - set(keys))
    if extra:
        raise SynaugError(f"{groups_csv} names {extra[0]}, which is not an image of a class folder under {root}; fix or drop the row.")
    names = sorted(set(group_of.values()))
    return replace(data, groups=np.array([names.index(group_of[k]) for k in keys]), group_names=names)


# ---- shared CSV helpers -----------------------------------------------------------------
def _csv_rows(path: Path, columns: Sequence[str]):
    """(line number, row dict) of a UTF-8 CSV with a header holding ``columns``."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        try:
            header = [c.strip() for c in reader.fieldnames or []]
            lacking = [c for c in columns if c not in header]
            if lacking:
                raise SynaugError(f"{path} lacks the column(s) {', '.join(lacking)}; its header must name {', '.join(columns)}.")
            reader.fieldnames = header
            for row in reader:
                if any(row.get(c) is None for c in columns):
                    raise SynaugError(f"row {reader.line_num} of {path} has too few fields; give {', '.join(columns)}.")
                yield reader.line_num, {c: row[c].strip() for c in columns}
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SynaugError(f"{path} is not a readable UTF-8 CSV (near line {reader.line_num}: {exc}); save it as UTF-8 CSV.") from None


def _small_int(text: str, column: str, limit: int, where: str) -> int:
    """``text`` as an integer in ``0..limit-1``, else a one-line error naming the row."""
    if not re.fullmatch(r"\d+(\.0*)?", text) or int(float(text)) >= limit:
        raise SynaugError(f"{where} has {column} '{text}', expected a whole number in 0-{limit - 1}; fix the row.")
    return int(float(text))


def _relative_file(root: Path, text: str, where: str) -> Path:
    """``root / text`` for a relative path inside ``root`` naming an existing file."""
    relative = PurePosixPath(os.path.normpath(text.replace("\\", "/")))
    if not text or relative.is_absolute() or relative.parts[:1] == ("..",):
        raise SynaugError(f"{where} has path '{text}', which is not relative to {root}; write paths relative to the data folder.")
    path = root / relative
    if not path.is_file():
        raise SynaugError(f"{where} names {relative}, which is not a file under {root}; fix the row or the data folder.")
    return path
