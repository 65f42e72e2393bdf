"""The data stage: the real training set (a long-tailed draw, an index file's subset or the whole
split), the test set and, for group runs, the validation set.

Cached as ``train-index.json`` (the training subset); the key holds the dataset source, the
long-tail draw or the index file's hash, and a fingerprint of the files the data is read from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synaug.config import to_dict
from synaug.data.benchmarks import default_reserve, draw_longtail, pool_indices
from synaug.data.dataset import LabeledImages
from synaug.data.fashion_mnist import find_fashion_mnist
from synaug.data.longtail import balanced_subset
from synaug.data.registry import FOLDER_KINDS, SubsetIndex, load_index, save_index, split_folder
from synaug.data.spurious import binary_target
from synaug.errors import SynaugError
from synaug.pipeline.context import RunContext

CODE = ("synaug.data", "synaug.pipeline.stages.data")
INDEX_FILE = "train-index.json"


@dataclass
class DataOutput:
    """The real data: the long-tailed training set, the test set and where they come from.

    ``val`` is the validation split of group runs (None without ``data.val_split``). ``train``
    keeps the classes plans fill; ``test`` and ``val`` carry the target the models predict
    (the binary one of the spurious benchmark's binary variant). ``oracle_draw``: the reserve and
    seed of the long-tailed draw (None without one), from which the oracle draws its balanced set.
    """

    digest: str
    train: LabeledImages
    test: LabeledImages
    source: dict[str, Any]
    oracle_draw: dict[str, Any] | None
    description: str
    val: LabeledImages | None = None


def data_stage(ctx: RunContext) -> DataOutput:
    """The real training, test (and validation) sets of ``ctx.config.data``."""
    section = ctx.config.data
    index = load_index(section.index) if section.index is not None else None
    source = _source(ctx, index)
    test_source = _test_source(ctx, source)
    val_source = _split_source(ctx, source, section.val_split, section.val_groups_csv, "val_split") if section.val_split else None
    inputs: dict[str, Any] = {"source": source, "test": test_source}
    if val_source is not None:
        inputs["val"] = val_source
    inputs["files"] = [files_fingerprint(s) for s in (source, test_source, val_source) if s is not None]
    if section.binary:
        inputs["target"] = "binary"
    if index is not None:
        inputs["index"] = hashlib.sha256(Path(section.index).read_bytes()).hexdigest()[:16]
    elif section.longtail is not None:
        reserve = default_reserve(source["kind"], source["split"]) if section.longtail.reserve is None else section.longtail.reserve
        inputs["longtail"] = {**to_dict(section.longtail), "reserve": reserve}

    def build(folder: Path, facts: dict[str, Any]) -> None:
        full = ctx.load(source)
        indices, settings = _draw(ctx, full, source, index)
        save_index(folder / INDEX_FILE, indices, full, source, settings)
        counts = np.bincount(full.labels[indices], minlength=full.num_classes)
        facts.update(images=int(len(indices)), class_counts=counts.tolist(), settings=settings)

    test = ctx.load(test_source)
    val = ctx.load(val_source) if val_source is not None else None
    _check_splits(ctx, ctx.load(source), test, val)  # before the stage runs
    output = ctx.stage("data", "real training and test sets", inputs, build, CODE)
    train = load_index(output.folder / INDEX_FILE).apply(ctx.load(source))
    settings = output.record.get("settings", {})
    oracle = None
    if index is not None or section.longtail is not None:
        oracle = {"reserve": float(settings.get("reserve", 0.0)), "seed": int(settings.get("seed", 0))}
    description = describe_data(ctx, source, train, test, settings, val)
    ctx.say("data", description)
    return DataOutput(output.digest, train, target_labels(ctx, test), source, oracle, description, None if val is None else target_labels(ctx, val))


def target_labels(ctx: RunContext, data: LabeledImages) -> LabeledImages:
    """``data`` with the labels the models predict: the binary target of the spurious benchmark's binary variant."""
    return binary_target(data) if ctx.config.data.binary else data


def oracle_set(ctx: RunContext, data: DataOutput) -> LabeledImages:
    """The balanced real set: max(long-tail count) images of every class from the pool the long tail was drawn from."""
    if data.oracle_draw is None:
        raise SynaugError("the oracle recipe needs data.longtail or data.index; add one or remove 'oracle' from runs.recipes.")
    full = ctx.load(data.source)
    pool = pool_indices(len(full), data.oracle_draw["reserve"])
    per_class = int(data.train.class_counts().max())
    try:
        chosen = balanced_subset(full.labels[pool], per_class, data.oracle_draw["seed"], full.num_classes)
    except SynaugError as exc:
        raise SynaugError(f"the oracle needs {per_class} real images of every class in the pool: {exc}") from None
    return full.subset(pool[chosen])


def _check_splits(ctx: RunContext, train: LabeledImages, test: LabeledImages, val: LabeledImages | None) -> None:
    """The test and validation sets must have the training set's classes (and groups)."""
    for name, split in (("test", test), ("validation", val)):
        if split is not None and list(split.class_names) != list(train.class_names):
            missing = [c for c in split.class_names if c not in train.class_names]
            problem = f"has class '{missing[0]}', which the training set lacks" if missing else "classes differ from the training set's"
            raise SynaugError(
                f"the {name} set {problem}; check data.test_split / data.val_split and their files in {ctx.config_name}."
            )
        if split is not None and ctx.config.data.grouped and list(split.group_names or []) != list(train.group_names or []):
            raise SynaugError(
                f"the {name} set's groups differ from the training set's ({split.group_names} vs {train.group_names}); "
                f"give every split the same groups in {ctx.config_name}."
            )


def _source(ctx: RunContext, index: SubsetIndex | None) -> dict[str, Any]:
    """``load_dataset`` arguments of the full training dataset, paths made absolute."""
    section = ctx.config.data
    if index is not None:
        overrides = {k: absolute(v) for k, v in {"root": section.root, "list_file": section.list_file}.items() if v is not None}
        return {**index.source, **overrides}
    root = section.root
    if section.kind in ("fashion-mnist", "spurious-fashion-mnist"):
        root = str(find_fashion_mnist(root).resolve())
    source = {
        "kind": section.kind, "root": absolute(root), "split": section.split, "list_file": absolute(section.list_file),
        "size": section.size, "channels": section.channels,
    }
    if section.groups_csv is not None:
        source["groups_csv"] = absolute(section.groups_csv)
    if section.loader_options():
        source["options"] = section.loader_options()
    return source


def _test_source(ctx: RunContext, source: dict[str, Any]) -> dict[str, Any]:
    section = ctx.config.data
    test = _split_source(ctx, source, section.test_split, section.test_groups_csv, "test_split")
    if section.test_list_file is not None:
        test["list_file"] = absolute(section.test_list_file)
    elif source["kind"] == "split-list":
        raise SynaugError(f"{ctx.config_name}: split-list data needs data.test_list_file (the `path label` file of the test images).")
    return test


def _split_source(ctx: RunContext, source: dict[str, Any], split: str, groups_csv: str | None, key: str) -> dict[str, Any]:
    """``source`` for another split (the test or validation images), its folder checked."""
    other = {**source, "split": split}
    if groups_csv is not None:
        other["groups_csv"] = absolute(groups_csv)
    if source["kind"] in FOLDER_KINDS and not Path(source["root"]).is_dir():
        raise SynaugError(f"{ctx.config_name}: data.root {source['root']} does not exist; fix the path (a relative one starts in the working directory).")
    if source["kind"] in FOLDER_KINDS and not (Path(source["root"]) / split).is_dir():
        raise SynaugError(
            f"{ctx.config_name}: data.root {source['root']} has no '{split}' folder for the data.{key} images; "
            f"put them there or set data.{key} to their folder's name."
        )
    return other


def _draw(ctx: RunContext, full: LabeledImages, source: dict[str, Any], index: SubsetIndex | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Indices of the training subset and the settings that drew it."""
    longtail = ctx.config.data.longtail
    if index is not None:
        index.apply(full)  # checks the dataset is the one the index was built from
        return index.indices, dict(index.settings)
    if longtail is None:
        return np.arange(len(full)), {}
    return draw_longtail(
        full, longtail.imbalance_factor, kind=source["kind"], split=source["split"], max_per_class=longtail.max_per_class,
        profile=longtail.profile, seed=longtail.seed, reserve=longtail.reserve, step_fraction=longtail.step_fraction,
    )


def describe_data(
    ctx: RunContext, source: dict[str, Any], train: LabeledImages, test: LabeledImages, settings: dict[str, Any], val: LabeledImages | None = None
) -> str:
    """One sentence on the data: its name, long tail, image counts (and groups)."""
    counts = train.class_counts()
    name = source["kind"] + ("" if source.get("split") in (None, "train") else f" {source['split']}")
    options = source.get("options") or {}
    if source["kind"] == "spurious-fashion-mnist":
        name += (f" (IF {options['imbalance_factor']:g}, at most {options['max_per_class']} per class, "
                 f"{100 * options['majority']:g} % of each class on its majority context)")
    if settings.get("imbalance_factor") is not None:
        name += f"-LT (IF {settings['imbalance_factor']:g}, at most {settings.get('max_per_class')} per class"
        if settings.get("reserve"):
            name += f", drawn from the {100 * (1 - settings['reserve']):.0f} % not reserved for the generator"
        name += ")"
    text = (
        f"{name}: {len(train):,} real training images in {train.num_classes} classes "
        f"({int(counts.max())} to {int(counts.min())} per class), {len(test):,} test images"
    )
    if train.groups is not None:
        cells = train.cell_counts()
        text += (f" and {len(val):,} validation images" if val is not None else "") + (
            f"; groups {', '.join(train.group_names)}, {int(cells.max())} to {int(cells.min())} real training images per (class, group) cell"
        )
    if ctx.config.data.binary:
        text += "; the models predict the binary target (red-majority vs blue-majority class)"
    return text


def absolute(path: str | None) -> str | None:
    """``path`` made absolute (None stays None)."""
    return None if path is None else str(Path(path).expanduser().resolve())


def files_fingerprint(source: dict[str, Any]) -> str:
    """A hash of the names, sizes and modification times of the files ``source`` is read from.

    The data stage's cache key includes it, so an edited groups CSV or split list, or an image
    added to, removed from or changed in a class folder, makes the run start again from the data.
    Folder kinds are walked below their split's folder; other kinds stat the files in ``root``.
    """
    files = [Path(source[key]) for key in ("groups_csv", "list_file") if source.get(key)]
    root = Path(source["root"]) if source.get("root") else None
    if root is not None and source["kind"] in FOLDER_KINDS:
        folder = split_folder(root, source["split"])
        files += sorted(path for path in folder.rglob("*") if path.is_file())
    elif root is not None and root.is_dir():
        files += sorted(path for path in root.iterdir() if path.is_file())
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}\0{stat and stat.st_size}\0{stat and stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
