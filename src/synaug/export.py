"""Export a synthetic store (optionally with the real images) for other tools.

Formats (:data:`EXPORT_FORMATS`):

``hf``
    A Hugging Face ``datasets`` image folder: ``<class folder>/<image>.png`` plus a
    ``metadata.jsonl`` at the top whose ``file_name`` column is each image's path relative to
    it, so ``datasets.load_dataset("imagefolder", data_dir=OUT)`` reads every image with its
    columns. (The loader reads a metadata file only at the top of the data folder or beside
    the images, and with one it no longer infers labels from folder names, so ``label`` is a
    column.)
``imagefolder``
    The same class folders, which torchvision's ``ImageFolder`` and ``synaug train --dataset
    imagefolder`` read, with the columns in a ``metadata.csv`` beside them.
``webdataset``
    Tar shards ``shard-000000.tar``, ... of at most ``shard_size`` samples, each sample a
    ``png`` image, its integer label as ``cls`` and its columns as ``json``; the
    ``webdataset`` package reads them back.

Columns: ``label`` (the class index in the store's plan), ``class_name``, ``source``
("synthetic" or "real"), ``group`` (group data only), ``prompt``, ``seed``, ``generator``
(the generator id), then every other column the store's manifest records that has a value
(the plan index, the attempt, the plan digest, the generator settings as JSON, the feedback
criterion, the filter scores such as ``filter_clip`` with ``kept`` and ``rejected_by``, the
exemplar, ...). Real images have no prompt, seed or generator. Only finished images are
exported, and of a filtered store (:mod:`synaug.filters`) only those its filter kept, as
training uses them, unless ``include_rejected``; synthetic rows come first.

Synthetic files keep their store name with a ``synthetic-`` prefix, real ones are
``real-<n>.png`` (``n`` their position in the real data), so the two never collide. The
export is written to a temporary folder beside ``out`` and renamed into place at the end:
an interrupted export leaves no half-written ``out``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from PIL import Image

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.generate.store import STATUS_OK, SyntheticStore

EXPORT_FORMATS = ("hf", "imagefolder", "webdataset")
METADATA_FILES = {"hf": "metadata.jsonl", "imagefolder": "metadata.csv"}
SHARD_PATTERN = "shard-%06d.tar"
DEFAULT_SHARD_SIZE = 1000
SOURCE_SYNTHETIC = "synthetic"
SOURCE_REAL = "real"
CORE_COLUMNS = ("label", "class_name", "source", "group", "prompt", "seed", "generator")
ALWAYS_COLUMNS = tuple(name for name in CORE_COLUMNS if name != "group")  # kept even when empty (all-real exports)
_RENAMED = {"generator_id": "generator", "settings": "generator_settings", "group_name": "group", "index": "plan_index"}
_DROPPED = ("file", "status", "class_id", "group_id", "group_key")


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: the folder, its format, the images of each source, and its files (images or shards)."""

    out: Path
    format: str
    synthetic: int
    real: int
    files: int


@dataclass(frozen=True)
class _Sample:
    """One exported image: its columns, and a PNG file to copy or a uint8 C x H x W image to encode."""

    columns: dict[str, Any]
    folder: str
    name: str
    png_file: Path | None = None
    pixels: Any = None

    def png_bytes(self) -> bytes:
        if self.png_file is not None:
            return self.png_file.read_bytes()
        array = np.asarray(self.pixels.cpu().numpy()).transpose(1, 2, 0)
        buffer = io.BytesIO()
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
        return buffer.getvalue()


def export_store(
    store: str | Path,
    out: str | Path,
    format: str = "hf",
    *,
    real: LabeledImages | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    include_rejected: bool = False,
) -> ExportSummary:
    """Write the finished images of ``store`` (and ``real``'s, when given) to ``out`` in ``format``.

    ``format`` is one of :data:`EXPORT_FORMATS` (see the module doc); ``real`` must have the
    store's classes (and groups); ``shard_size`` is the samples per WebDataset shard;
    ``include_rejected`` also exports the images a filter rejected (see ``kept``). ``out``
    must not exist or be an empty folder. Bad input is a one-line :class:`SynaugError`
    raised before anything is written.

    >>> synaug.export_store("synthetic/", "exported/", "hf", real=train)  # doctest: +SKIP
    """
    out = Path(out)
    _check_request(format, out, shard_size)
    source = SyntheticStore(store)
    samples = list(_synthetic_samples(source, include_rejected))
    synthetic = len(samples)
    if not synthetic:
        raise SynaugError(f"store {source.root} holds no finished image to export; fill it with `synaug generate --out {source.root}`.")
    if real is not None:
        samples += list(_real_samples(real, source))
    samples = _without_empty_columns(samples)
    temporary = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}.tmp"
    try:
        temporary.mkdir(parents=True)
        files = _write_shards(samples, temporary, shard_size) if format == "webdataset" else _write_folders(samples, temporary, format)
        if out.exists():
            out.rmdir()  # empty, as checked
        os.replace(temporary, out)
    except OSError as exc:
        raise SynaugError(f"cannot write the export to {out} ({exc.strerror or exc}); choose a writable --out folder.") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return ExportSummary(out=out, format=format, synthetic=synthetic, real=len(samples) - synthetic, files=files)


def _check_request(format: str, out: Path, shard_size: int) -> None:
    """One-line errors for an unknown format, a taken output folder or a bad shard size."""
    if format not in EXPORT_FORMATS:
        raise SynaugError(f"unknown export format '{format}'; use one of {', '.join(EXPORT_FORMATS)}.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynaugError(f"export target {out} exists and is not empty; choose a new folder for --out or empty it first.")
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) or shard_size < 1:
        raise SynaugError(f"shard size {shard_size!r} must be a whole number of samples of at least 1, e.g. 1000.")
    if format == "webdataset":
        try:
            import webdataset  # noqa: F401
        except ImportError:
            raise SynaugError("the webdataset format needs the webdataset package; install it with `pip install 'synaug[export]'`.") from None


def _synthetic_samples(store: SyntheticStore, include_rejected: bool) -> Iterator[_Sample]:
    """The store's finished (and, unless ``include_rejected``, kept) images with their manifest columns, renamed as the module doc says."""
    manifest = store.manifest()
    manifest = manifest[manifest["status"] == STATUS_OK]
    if "kept" in manifest and not include_rejected:
        manifest = manifest[manifest["kept"].fillna(False).astype(bool)]
    folders = store.info["class_folders"]
    extra = [c for c in manifest.columns if c not in _DROPPED and _RENAMED.get(c, c) not in CORE_COLUMNS]
    for row in manifest.to_dict("records"):
        columns = {
            "label": int(row["class_id"]), "class_name": row["class_name"], "source": SOURCE_SYNTHETIC,
            "group": _value(row["group_name"]), "prompt": row["prompt"], "seed": int(row["seed"]), "generator": row["generator_id"],
        }
        columns.update({_RENAMED.get(name, name): _value(row[name]) for name in extra})
        file = store.root / row["file"]
        yield _Sample(columns, folders[int(row["class_id"])], f"{SOURCE_SYNTHETIC}-{Path(row['file']).name}", png_file=file)


def _real_samples(real: LabeledImages, store: SyntheticStore) -> Iterator[_Sample]:
    """``real``'s images, labelled in the store plan's class order."""
    plan = store.plan
    missing = [name for name in real.class_names if name not in plan.class_names]
    if missing:
        raise SynaugError(
            f"the real data has class '{missing[0]}', which the store's plan lacks (its classes: {', '.join(plan.class_names)}); "
            "export real data of the dataset the store was planned for."
        )
    if (plan.group_names is None) != (real.groups is None):
        which = "has groups and the real data has none" if real.groups is None else "has no groups and the real data has some"
        raise SynaugError(f"the store's plan {which}; pass the real data the store was planned for.")
    labels = np.array([plan.class_names.index(n) for n in real.class_names], dtype=np.int64)[real.labels]
    folders = store.info["class_folders"]
    for position in range(len(real)):
        label = int(labels[position])
        group = None if real.groups is None else real.group_names[int(real.groups[position])]
        columns = {"label": label, "class_name": plan.class_names[label], "source": SOURCE_REAL, "group": group,
                   "prompt": None, "seed": None, "generator": None}
        yield _Sample(columns, folders[label], f"{SOURCE_REAL}-{position:06d}.png", pixels=real.load(position))


def _without_empty_columns(samples: list[_Sample]) -> list[_Sample]:
    """The samples without the optional columns that no sample has a value for (e.g. ``group`` without groups)."""
    names = list(dict.fromkeys(name for sample in samples for name in sample.columns))
    kept = [n for n in names if n in ALWAYS_COLUMNS or any(s.columns.get(n) is not None for s in samples)]
    return [_Sample({n: s.columns.get(n) for n in kept}, s.folder, s.name, s.png_file, s.pixels) for s in samples]


def _write_folders(samples: list[_Sample], root: Path, format: str) -> int:
    """Class folders of PNGs and the metadata file of ``format``; returns the number of images."""
    rows = []
    for sample in samples:
        relative = f"{sample.folder}/{sample.name}"
        (root / sample.folder).mkdir(exist_ok=True)
        if sample.png_file is not None:
            shutil.copyfile(sample.png_file, root / relative)
        else:
            (root / relative).write_bytes(sample.png_bytes())
        rows.append({"file_name": relative, **sample.columns})
    metadata = root / METADATA_FILES[format]
    if format == "hf":
        metadata.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    else:
        pd.DataFrame(rows, columns=["file_name", *(samples[0].columns if samples else ALWAYS_COLUMNS)]).to_csv(metadata, index=False)
    return len(rows)


def _write_shards(samples: list[_Sample], root: Path, shard_size: int) -> int:
    """WebDataset tar shards of ``shard_size`` samples; returns the number of shards."""
    import webdataset

    with webdataset.ShardWriter(str(root / SHARD_PATTERN), maxcount=shard_size, verbose=0) as writer:
        for position, sample in enumerate(samples):
            writer.write({"__key__": f"{position:08d}", "png": sample.png_bytes(), "cls": sample.columns["label"], "json": sample.columns})
    return len(list(root.glob("shard-*.tar")))


def _value(value: Any) -> Any:
    """A JSON-safe plain value: None for pandas' missing values, Python numbers for numpy/pandas ones."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
