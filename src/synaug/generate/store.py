"""A resumable folder of synthetic images: PNGs per class plus a Parquet manifest.

Layout of a store folder::

    STORE/
      store.json                        plan digest, generator id and settings, folder names, the plan
      manifest.parquet                  compacted manifest rows
      manifest.part-<writer>-<n>.parquet rows appended by running writers, merged by compaction
      store.lock                        lock file for compaction and reading
      filter.parquet                    optional: each image's filter scores and kept/rejected decision
      <class folder>/<index>.png        one folder per class (or <group>_<index>.png for group plans)

Only plain files sit at the top level, so the folder is an ordinary ImageFolder: every
subfolder is a class full of PNGs (a class planned no synthetic image has no folder, as an
ImageFolder cannot hold empty classes; :meth:`SyntheticStore.load` keeps every class). Folder names are the class names sanitised by
:func:`synaug.data.folders.sanitize_folder_name`; a class whose sanitised name is taken
already (or differs only in case) gets ``-<class id>`` appended.

Manifest rows exist only for finished images, and are written after the image file: an
image is first written to a hidden temp name in its class folder and renamed into place,
then its row goes into a new part file, itself written to a temp name and renamed. A
killed writer thus leaves at worst temp files and images without rows, which
:meth:`SyntheticStore.discard_unfinished` removes before they are generated again (identically,
since seeds are derived). Many writers may append to one store at once: each writes part
files under its own id, compaction merges them under an exclusive lock, and readers union
the compacted manifest and the parts, keeping one row per image (ok rows before failed
ones, then the lowest attempt). An image that stays non-finite or blank after its retry is
recorded as a row with status "failed" and no file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from synaug.data.dataset import LabeledImages
from synaug.data.folders import sanitize_folder_name
from synaug.errors import SynaugError
from synaug.plan.planner import PlanItem, SynthesisPlan

STORE_FORMAT = 1
INFO_FILE = "store.json"
MANIFEST_FILE = "manifest.parquet"
PART_PREFIX = "manifest.part-"
LOCK_FILE = "store.lock"
FILTER_FILE = "filter.parquet"  # written by synaug.filters; keyed by (class_id, group_key, index)
STALE_TEMP_SECONDS = 3600
STATUS_OK = "ok"
STATUS_FAILED = "failed"
MANIFEST_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("class_id", pa.int32()),
        ("class_name", pa.string()),
        ("group_id", pa.int32()),
        ("group_name", pa.string()),
        ("index", pa.int64()),
        ("prompt", pa.string()),
        ("seed", pa.int64()),
        ("attempt", pa.int8()),
        ("generator_id", pa.string()),
        ("settings", pa.string()),
        ("plan_digest", pa.string()),
        ("criterion", pa.float64()),
        ("status", pa.string()),
    ]
)
_NULLABLE_INTS = {pa.int8(): pd.Int8Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}


@dataclass
class ImageRecord:
    """The outcome of one plan item: a written file (relative to the store) or a failure.

    ``scores`` holds per-image values from hooks; "criterion" fills the criterion column,
    any other name a float column ``score_<name>``.
    """

    item: PlanItem
    seed: int
    attempt: int
    file: str | None
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return STATUS_OK if self.file is not None else STATUS_FAILED


class SyntheticStore:
    """A store folder (see the module doc). ``open`` binds it to a plan and a generator.

    Parameters
    ----------
    root : the store folder; created by :meth:`open` when missing.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.writer_id = uuid.uuid4().hex[:12]
        self._parts_written = 0
        self._info: dict | None = None

    # ---- binding -------------------------------------------------------------------
    def open(self, plan: SynthesisPlan, generator_id: str, settings: dict) -> "SyntheticStore":
        """Create the store for ``plan`` and the generator, or check an existing one was made by both.

        A store made by another plan or generator is refused (mixing them silently would
        corrupt the data set): use a new folder, or :meth:`clear` it first.
        """
        self._ensure_writable_folder()
        info = {
            "synaug_store": STORE_FORMAT,
            "plan_digest": plan.digest(),
            "generator_id": str(generator_id),
            "settings": json.loads(_canonical_json(settings)),
            "class_folders": _distinct_names(plan.class_names),
            "group_tags": None if plan.group_names is None else _distinct_names(plan.group_names),
            "plan": plan.to_dict(),
        }
        path = self.root / INFO_FILE
        if not path.exists():
            foreign = [p for p in self.root.iterdir() if p.name != LOCK_FILE and not _is_temp(p.name)]
            if foreign and not path.exists():
                raise SynaugError(f"output folder {self.root} is not empty and is not a synaug store; choose a new or empty --out folder.")
            _create_exclusive(path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        existing = self._read_info()
        _check_same_source(self.root, existing, info)
        self._info = existing
        self._remove_stale_temp_parts()
        return self

    def clear(self) -> None:
        """Delete the store's contents (only a synaug store or an empty folder can be cleared)."""
        if not self.root.exists():
            return
        if not (self.root / INFO_FILE).is_file() and any(self.root.iterdir()):
            raise SynaugError(f"refusing to overwrite {self.root}: it is not a synaug store; choose a new or empty --out folder.")
        try:
            shutil.rmtree(self.root)
        except OSError as exc:
            raise SynaugError(f"cannot clear {self.root} ({exc.strerror or exc}); remove it by hand or choose another --out folder.") from None
        self._info = None

    @property
    def info(self) -> dict:
        """The contents of store.json."""
        if self._info is None:
            self._info = self._read_info()
        return self._info

    @property
    def plan(self) -> SynthesisPlan:
        """The plan this store was made for."""
        return SynthesisPlan.from_dict(self.info["plan"], where=f"the plan in {self.root / INFO_FILE}")

    # ---- reading -------------------------------------------------------------------
    def manifest(self) -> pd.DataFrame:
        """One row per recorded image (finished or failed), sorted by class, group and index.

        Integer columns are pandas nullable integers (``group_id`` is null without groups);
        ``group_key`` is ``group_id`` with -1 for null, the key (class_id, group_key, index)
        is unique. A filtered store (:mod:`synaug.filters`) adds its filter columns: the scores,
        ``kept`` and ``rejected_by``.
        """
        with self._lock(exclusive=False):
            table = _read_tables(self._manifest_files())
        frame = _deduplicate(table).to_pandas(types_mapper=_NULLABLE_INTS.get)
        frame["group_key"] = frame["group_id"].fillna(-1).astype("int64")
        if (self.root / FILTER_FILE).is_file():
            decisions = pq.read_table(self.root / FILTER_FILE).to_pandas()
            frame = frame.merge(decisions.astype({"class_id": "int64", "index": "int64"}), how="left",
                                on=["class_id", "group_key", "index"], validate="one_to_one")
        return frame

    def finished_keys(self) -> set[tuple[int, int, int]]:
        """Keys (class_id, group_id or -1, index) of every recorded item, finished or failed."""
        frame = self.manifest()
        return set(zip(frame["class_id"].tolist(), frame["group_key"].tolist(), frame["index"].tolist()))

    def check_complete(self) -> None:
        """A one-line error unless every planned image is recorded (finished or failed).

        A store an interrupted `synaug generate` left holds only the images it reached, often
        of the first classes alone; used as the whole store it would skew the training set.
        """
        planned, recorded = self.plan.total, len(self.manifest())
        if recorded < planned:
            raise SynaugError(
                f"{self.root} holds {recorded} of {planned} planned images; re-run `synaug generate --plan <its plan> "
                f"--out {self.root}` to finish it."
            )

    def load(
        self,
        class_names: Sequence[str] | None = None,
        group_names: Sequence[str] | None = None,
        in_memory: bool = False,
        per_class: Sequence[int] | None = None,
    ) -> LabeledImages:
        """The finished images as a dataset with ``is_synthetic`` set (file-backed unless ``in_memory``).

        With ``class_names`` (and ``group_names``), labels follow that dataset's order, so
        the result concatenates with it; a class the dataset lacks is an error. ``per_class``
        (one count per plan class) keeps only each class's first images by plan index. A
        filtered store gives only the images its filter kept.
        """
        plan = self.plan
        classes = list(plan.class_names) if class_names is None else [str(n) for n in class_names]
        groups = plan.group_names if group_names is None or plan.group_names is None else [str(g) for g in group_names]
        plan.check_dataset(classes, groups)
        frame = self.manifest()
        frame = frame[frame["status"] == STATUS_OK]
        if "kept" in frame:
            frame = frame[frame["kept"].fillna(False).astype(bool)]
        if per_class is not None:
            limits = np.asarray(per_class, dtype=np.int64)
            position = frame.groupby("class_id").cumcount() if "kept" in frame else frame["index"]
            frame = frame[position.to_numpy(dtype=np.int64) < limits[frame["class_id"].to_numpy(dtype=np.int64)]]
        class_map = np.array([classes.index(n) for n in plan.class_names], dtype=np.int64)
        labels = class_map[frame["class_id"].to_numpy(dtype=np.int64)]
        group_labels = None
        if plan.group_names is not None:
            group_map = np.array([groups.index(g) for g in plan.group_names], dtype=np.int64)
            group_labels = group_map[frame["group_id"].to_numpy(dtype=np.int64)]
        data = LabeledImages(
            labels=labels,
            class_names=classes,
            files=[self.root / f for f in frame["file"]],
            size=plan.image_size,
            channels=plan.channels or 3,
            groups=group_labels,
            group_names=groups if plan.group_names is not None else None,
            is_synthetic=np.ones(len(labels), dtype=bool),
        )
        return data.materialize() if in_memory and len(data) else data

    # ---- writing -------------------------------------------------------------------
    def file_for(self, item: PlanItem) -> str:
        """Path of ``item``'s PNG relative to the store."""
        name = f"{item.index:06d}.png"
        if item.group_id is not None:
            name = f"{self.info['group_tags'][item.group_id]}_{name}"
        return f"{self.info['class_folders'][item.class_id]}/{name}"

    def discard_unfinished(self, items: Iterable[PlanItem]) -> int:
        """Remove image and temp files left by killed runs for ``items`` (items with no manifest row).

        Only files of the given items are touched, so writers working on other items of the
        same store are left alone. Returns the number of files removed.
        """
        wanted: dict[str, set[str]] = {}
        for item in items:
            folder, name = self.file_for(item).split("/")
            wanted.setdefault(folder, set()).add(name)
        removed = 0
        for folder, names in wanted.items():
            path = self.root / folder
            if not path.is_dir():
                continue
            for entry in os.scandir(path):
                target = entry.name
                if _is_temp(target):
                    target = target[1:-4].rsplit(".", 1)[0]
                if target in names:
                    Path(entry.path).unlink(missing_ok=True)
                    removed += 1
        return removed

    def write_image(self, item: PlanItem, image: torch.Tensor) -> str:
        """Write ``item``'s image (uint8 C x H x W, C = 1 or 3) as PNG, atomically; returns its relative path."""
        from PIL import Image

        relative = self.file_for(item)
        target = self.root / relative
        temp = target.with_name(f".{target.name}.{self.writer_id}.tmp")
        try:
            target.parent.mkdir(exist_ok=True)
            picture = Image.fromarray(_to_hwc(image))
            with open(temp, "wb") as out:
                picture.save(out, format="PNG")
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise SynaugError(
                f"could not write {target} ({exc.strerror or exc}); free disk space or fix permissions, then re-run the same command to resume."
            ) from None
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return relative

    def append(self, records: Sequence[ImageRecord]) -> None:
        """Add manifest rows for ``records`` as a new part file, written atomically."""
        if not records:
            return
        info = self.info
        settings = _canonical_json(info["settings"])
        rows = []
        for record in records:
            item = record.item
            row = {
                "file": record.file,
                "class_id": item.class_id,
                "class_name": item.class_name,
                "group_id": item.group_id,
                "group_name": item.group_name,
                "index": item.index,
                "prompt": item.prompt,
                "seed": record.seed,
                "attempt": record.attempt,
                "generator_id": info["generator_id"],
                "settings": settings,
                "plan_digest": info["plan_digest"],
                "criterion": record.scores.get("criterion"),
                "status": record.status,
            }
            row.update({f"score_{name}": float(value) for name, value in record.scores.items() if name != "criterion"})
            rows.append(row)
        extra = sorted({name for row in rows for name in row} - set(MANIFEST_SCHEMA.names))
        schema = pa.schema(list(MANIFEST_SCHEMA) + [(name, pa.float64()) for name in extra])
        table = pa.Table.from_pylist(rows, schema=schema)
        name = f"{PART_PREFIX}{self.writer_id}-{self._parts_written:08d}.parquet"
        _write_parquet_atomic(table, self.root / name)
        self._parts_written += 1

    def compact(self) -> None:
        """Merge the part files into manifest.parquet (safe while other writers append)."""
        with self._lock(exclusive=True):
            parts = self._part_files()
            if not parts:
                return
            table = _deduplicate(_read_tables(self._manifest_files()))
            _write_parquet_atomic(table, self.root / MANIFEST_FILE)
            for part in parts:
                part.unlink(missing_ok=True)

    # ---- helpers -------------------------------------------------------------------
    def _ensure_writable_folder(self) -> None:
        """Create the folder and prove a file can be written there."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".write-test-", suffix=".tmp", dir=self.root)
            os.close(handle)
            os.unlink(probe)
        except OSError as exc:
            raise SynaugError(f"cannot write to output folder {self.root} ({exc.strerror or exc}); choose a writable folder with --out.") from None

    def _read_info(self) -> dict:
        path = self.root / INFO_FILE
        if not path.is_file():
            raise SynaugError(f"{self.root} is not a synaug store (no {INFO_FILE}); fill it with `synaug generate --out {self.root}`.")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SynaugError(f"{path} is corrupt; re-run `synaug generate` with --overwrite or a new --out folder.") from None
        if not isinstance(info, dict) or info.get("synaug_store") != STORE_FORMAT:
            raise SynaugError(f"{path} is not a synaug store description (format {STORE_FORMAT}); use a new --out folder.")
        return info

    @contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        """An flock on store.lock: shared for readers, exclusive for compaction."""
        path = self.root / LOCK_FILE
        try:
            handle = open(path, "a+b")
        except OSError:
            if exclusive:
                raise
            yield  # a read-only store: nobody can be compacting it
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _part_files(self) -> list[Path]:
        return sorted(p for p in self.root.glob(f"{PART_PREFIX}*.parquet"))

    def _manifest_files(self) -> list[Path]:
        compacted = self.root / MANIFEST_FILE
        return ([compacted] if compacted.is_file() else []) + self._part_files()

    def _remove_stale_temp_parts(self) -> None:
        """Temp part files left by killed writers (older than an hour, so none is still being written)."""
        now = time.time()
        for temp in self.root.glob(f".{PART_PREFIX}*.tmp"):
            try:
                if now - temp.stat().st_mtime > STALE_TEMP_SECONDS:
                    temp.unlink()
            except FileNotFoundError:
                pass


def _distinct_names(names: Sequence[str]) -> list[str]:
    """Sanitised folder names, made distinct (also ignoring case) by appending ``-<position>``."""
    taken: set[str] = set()
    result = []
    for position, name in enumerate(names):
        folder = sanitize_folder_name(name)
        if folder.casefold() in taken:
            folder = f"{folder}-{position}"
            while folder.casefold() in taken:
                folder += "_"
        taken.add(folder.casefold())
        result.append(folder)
    return result


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def _canonical_json(value) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except TypeError as exc:
        raise SynaugError(f"generator settings are not JSON-safe ({exc}); report this backend bug.") from None


def _check_same_source(root: Path, existing: dict, wanted: dict) -> None:
    """Refuse a store made by another plan or generator."""
    fix = "use a new --out folder, or --overwrite to replace it"
    if existing["plan_digest"] != wanted["plan_digest"]:
        raise SynaugError(f"store {root} was made by a different plan (digest {existing['plan_digest']}, this plan {wanted['plan_digest']}); {fix}.")
    if existing["generator_id"] != wanted["generator_id"]:
        raise SynaugError(f"store {root} was made by generator '{existing['generator_id']}', not '{wanted['generator_id']}'; {fix}.")
    old, new = existing["settings"], wanted["settings"]
    if _canonical_json(old) != _canonical_json(new):
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differing[:3])
        raise SynaugError(f"store {root} was made with other generator settings ({shown}); {fix}.")


def _create_exclusive(path: Path, text: str) -> None:
    """Write ``path`` atomically unless it exists already (another writer won the race).

    The temp file is opened by name rather than by ``mkstemp``, so ``path`` gets the umask's
    permissions like every other file of the store (mkstemp's are 0600: unreadable to the
    other users of a shared store).
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "x", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.link(temp, path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SynaugError(f"cannot write {path} ({exc.strerror or exc}); choose a writable folder with --out.") from None
    finally:
        temp.unlink(missing_ok=True)


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "wb") as out:
            pq.write_table(table, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise SynaugError(f"could not write {path} ({exc.strerror or exc}); free disk space or fix permissions, then re-run to resume.") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _read_tables(paths: Sequence[Path]) -> pa.Table:
    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path))
        except FileNotFoundError:
            continue  # merged and removed by a compaction since it was listed
        except (pa.ArrowInvalid, OSError) as exc:
            raise SynaugError(f"manifest file {path} is unreadable ({exc}); delete it and re-run the same command to regenerate its images.") from None
    if not tables:
        return MANIFEST_SCHEMA.empty_table()
    return pa.concat_tables(tables, promote_options="default")


def _deduplicate(table: pa.Table) -> pa.Table:
    """One row per item key, sorted by key: ok before failed, then the lowest attempt, then the file name."""
    keys = pd.DataFrame(
        {
            "class_id": table["class_id"].to_numpy(zero_copy_only=False),
            "group_key": table["group_id"].fill_null(-1).to_numpy(zero_copy_only=False),
            "index": table["index"].to_numpy(zero_copy_only=False),
            "rank": (table["status"].to_numpy(zero_copy_only=False) != STATUS_OK),
            "attempt": table["attempt"].to_numpy(zero_copy_only=False),
            "file": table["file"].fill_null("").to_numpy(zero_copy_only=False),
        }
    )
    keys = keys.sort_values(["class_id", "group_key", "index", "rank", "attempt", "file"], kind="stable")
    first = keys.drop_duplicates(["class_id", "group_key", "index"], keep="first").index.to_numpy()
    return table.take(first)


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    """A uint8 C x H x W tensor as the H x W (gray) or H x W x 3 array PIL expects."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise SynaugError(f"generator returned an image of shape {tuple(image.shape)} and dtype {image.dtype}; expected uint8 1 x H x W or 3 x H x W.")
    array = image.detach().cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
