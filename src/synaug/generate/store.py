"""A resumable folder of synthetic images: PNGs per class plus a Parquet manifest.

Layout of a store folder::

    STORE/
      store.json                        plan digest, generator id and settings, folder names, the plan
      manifest.parquet                  compacted manifest rows (and parts and claims: see synaug.generate.manifest)
      filter.parquet                    optional: each image's filter scores and kept/rejected decision
      <class folder>/<index>.png        one folder per class (or <group>_<index>.png for group plans)
      .writer-<id>.lock                 held (flock) by a writer while it runs

Only plain files sit at the top level, so the folder is an ordinary ImageFolder: every
subfolder is a class full of PNGs (a class planned no synthetic image has no folder, as an
ImageFolder cannot hold empty classes; :meth:`SyntheticStore.load` keeps every class). Folder names are the class names sanitised by
:func:`synaug.data.folders.sanitize_folder_name`; a class whose sanitised name is taken
already (or differs only in case) gets ``-<class id>`` appended.

Manifest rows exist only for finished images, and are written after the image file: an
image is written to a temp name of its writer, fsynced and renamed into place; its row goes
into a part file once its folder is fsynced. An image that stays non-finite or blank after
its retry is recorded as a row with status "failed" and no file. Readers keep one row per
image (ok rows before failed ones, then the lowest attempt). Images depend only on their
seed, so an image written twice is written with the same bytes.

What the store guarantees, also on a shared file system whose locks do not reach across
nodes (it needs atomic rename, hard links and fsync; :meth:`SyntheticStore.open` refuses a
folder without hard links or rename, and warns where file locks do not work): every row
points at a complete image; no row is lost, whatever writers and compactions run at once or
are killed; a killed writer leaves at worst temp files and images without rows, which a
re-run replaces (identically). A writer removes temp files only of its own or of writers whose
lock is free (dead); where locks do not work, those older than an hour. Generating one item
in two writers at once is safe (same bytes, one row kept) but wasted: the Ray driver avoids it.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.generate import manifest as files
from synaug.generate import store_info as info_file
from synaug.generate.manifest import NULLABLE_INTS, STATUS_FAILED, STATUS_OK, temp_name
from synaug.plan.planner import PlanItem, SynthesisPlan

STORE_FORMAT = 1
INFO_FILE = "store.json"
WRITER_LOCK = re.compile(r"\.writer-([0-9a-f]{12})\.lock")
TEMP = re.compile(r"\.(.+)\.([0-9a-f]{12})(-\d+)?\.tmp")
FILTER_FILE = "filter.parquet"  # written by synaug.filters; keyed by (class_id, group_key, index)
STALE_TEMP_SECONDS = 3600
__all__ = ["FILTER_FILE", "ImageRecord", "INFO_FILE", "STATUS_FAILED", "STATUS_OK", "SyntheticStore"]

@dataclass
class ImageRecord:
    """The outcome of one plan item: a written file (relative to the store) or a failure.

    ``scores`` holds per-image values from hooks; "criterion" fills the criterion column,
    any other name a float column ``score_<name>``. ``exemplar``: the real image the image was made
    from (its file, or its position in the real data), None for text-only images.
    """

    item: PlanItem
    seed: int
    attempt: int
    file: str | None
    scores: dict[str, float] = field(default_factory=dict)
    exemplar: str | None = None

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
        self._tags = (f"{self.writer_id}-{n:08d}" for n in itertools.count())  # unique names of this writer's files
        self._info: dict | None = None
        self._liveness: int | None = None  # the open lock file that tells others this writer runs

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
            "settings": json.loads(info_file.canonical_json(settings)),
            "class_folders": info_file.distinct_names(plan.class_names),
            "group_tags": None if plan.group_names is None else info_file.distinct_names(plan.group_names),
            "plan": plan.to_dict(),
        }
        path = self.root / INFO_FILE
        if not path.exists():
            foreign = [p for p in self.root.iterdir() if not (WRITER_LOCK.fullmatch(p.name) or TEMP.fullmatch(p.name))]
            if foreign and not path.exists():
                raise SynaugError(f"output folder {self.root} is not empty and is not a synaug store; choose a new or empty --out folder.")
            info_file.create_exclusive(path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        existing = self._read_info()
        info_file.check_same_source(self.root, existing, info)
        self._info = existing
        self._remove_abandoned(self.root, None)
        self._hold_liveness()
        return self

    def close(self) -> None:
        """End this writer: release and remove its lock file (writing again takes a new one)."""
        if self._liveness is not None:
            (self.root / f".writer-{self.writer_id}.lock").unlink(missing_ok=True)
            os.close(self._liveness)
            self._liveness = None

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
    def manifest(self, decisions: str | Path | None = None) -> pd.DataFrame:
        """One row per recorded image (finished or failed), sorted by class, group and index.

        Integer columns are pandas nullable integers (``group_id`` is null without groups);
        ``group_key`` is ``group_id`` with -1 for null, the key (class_id, group_key, index)
        is unique. A filtered store (:mod:`synaug.filters`) adds its filter columns: the scores,
        ``kept`` and ``rejected_by``; ``decisions`` names another filter table to join instead.
        """
        frame = files.read_manifest(self.root).to_pandas(types_mapper=NULLABLE_INTS.get)
        frame["group_key"] = frame["group_id"].fillna(-1).astype("int64")
        table = Path(decisions) if decisions is not None else self.root / FILTER_FILE
        if table.is_file():
            columns = pq.read_table(table).to_pandas().astype({"class_id": "int64", "index": "int64"})
            frame = frame.merge(columns, how="left", on=["class_id", "group_key", "index"], validate="one_to_one")
        return frame

    def finished_keys(self) -> set[tuple[int, int, int]]:
        """Keys (class_id, group_id or -1, index) of every recorded item, finished or failed."""
        frame = self.manifest()
        return set(zip(frame["class_id"].tolist(), frame["group_key"].tolist(), frame["index"].tolist()))

    def check_complete(self) -> None:
        """A one-line error unless every planned image is recorded (finished or failed) and one finished.

        A store an interrupted `synaug generate` left holds only the images it reached, often
        of the first classes alone; used as the whole store it would skew the training set.
        """
        manifest = self.manifest()
        planned, recorded = self.plan.total, len(manifest)
        if recorded < planned:
            raise SynaugError(
                f"{self.root} holds {recorded} of {planned} planned images; re-run `synaug generate --plan <its plan> "
                f"--out {self.root}` to finish it."
            )
        if planned and not (manifest["status"] == STATUS_OK).any():
            raise SynaugError(
                f"every image in {self.root} failed (non-finite or blank); re-run `synaug generate --plan <its plan> "
                f"--out {self.root} --overwrite` with other sampler settings (guidance, steps, dtype)."
            )

    def load(
        self,
        class_names: Sequence[str] | None = None,
        group_names: Sequence[str] | None = None,
        in_memory: bool = False,
        per_class: Sequence[int] | None = None,
        decisions: str | Path | None = None,
    ) -> LabeledImages:
        """The finished images as a dataset with ``is_synthetic`` set (file-backed unless ``in_memory``).

        With ``class_names`` (and ``group_names``), labels follow that dataset's order, so
        the result concatenates with it; a class the dataset lacks is an error. ``per_class``
        (one count per plan class) keeps only each class's first images by plan index. A
        filtered store gives only the images its filter kept (``decisions``: those of another filter table).
        """
        plan = self.plan
        classes = list(plan.class_names) if class_names is None else [str(n) for n in class_names]
        groups = plan.group_names if group_names is None or plan.group_names is None else [str(g) for g in group_names]
        plan.check_dataset(classes, groups)
        frame = self.manifest(decisions)
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
        """Remove the temp files that writers since killed left for ``items``; returns how many.

        Only temp files of ``items`` are touched, and only those of this writer or of writers
        that are no longer running, so writers working on the same store are left alone. Images
        without a row are kept: generating their item again replaces them with the same bytes.
        """
        wanted: dict[str, set[str]] = {}
        for item in items:
            folder, name = self.file_for(item).split("/")
            wanted.setdefault(folder, set()).add(name)
        return sum(self._remove_abandoned(self.root / folder, names) for folder, names in wanted.items())

    def discard_file(self, item: PlanItem) -> None:
        """Remove ``item``'s image, left by an earlier run, before recording the item as failed."""
        (self.root / self.file_for(item)).unlink(missing_ok=True)

    def write_image(self, item: PlanItem, image: torch.Tensor) -> str:
        """Write ``item``'s image (uint8 C x H x W, C = 1 or 3) as PNG, atomically; returns its relative path."""
        from PIL import Image

        self._hold_liveness()
        relative = self.file_for(item)
        target = self.root / relative
        temp = target.with_name(temp_name(target.name, self.writer_id))
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
        self._hold_liveness()
        info = self.info
        settings = info_file.canonical_json(info["settings"])
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
                "exemplar": record.exemplar,
            }
            row.update({f"score_{name}": float(value) for name, value in record.scores.items() if name != "criterion"})
            rows.append(row)
        for folder in sorted({record.file.split("/")[0] for record in records if record.file is not None}):
            files.fsync_folder(self.root / folder)  # the images' renames are durable before their rows
        files.write_part(self.root, files.rows_table(rows), next(self._tags))

    def compact(self) -> None:
        """Merge the part files into manifest.parquet (safe while other writers append or compact)."""
        self._hold_liveness()
        files.compact(self.root, self._tags)

    # ---- helpers -------------------------------------------------------------------
    def _ensure_writable_folder(self) -> None:
        """Create the folder, prove a file can be written there, and refuse a file system that cannot
        hard-link or rename files (the manifest needs both to stay consistent)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle, probe = tempfile.mkstemp(prefix=".write-test-", suffix=".tmp", dir=self.root)
            os.close(handle)
        except OSError as exc:
            raise SynaugError(f"cannot write to output folder {self.root} ({exc.strerror or exc}); choose a writable folder with --out.") from None
        linked = probe + ".link"
        try:
            os.link(probe, linked)
            os.replace(linked, probe)
        except OSError as exc:
            raise SynaugError(
                f"the file system of {self.root} cannot hard-link or rename files ({exc.strerror or exc}), which a store "
                "needs to stay consistent; choose an --out folder on a local disk, NFS or another POSIX file system."
            ) from None
        finally:
            for path in (linked, probe):
                Path(path).unlink(missing_ok=True)

    def _read_info(self) -> dict:
        path = self.root / INFO_FILE
        if not path.is_file():
            if self.root.is_dir() and any(self.root.iterdir()):  # someone's other data: never suggest writing into it
                raise SynaugError(f"{self.root} is not a synaug store (no {INFO_FILE}); give the --out folder `synaug generate` filled.")
            raise SynaugError(f"{self.root} is not a synaug store (no {INFO_FILE}); fill it with `synaug generate --out {self.root}`.")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SynaugError(f"{path} is corrupt; re-run `synaug generate` with --overwrite or a new --out folder.") from None
        if not isinstance(info, dict) or info.get("synaug_store") != STORE_FORMAT:
            raise SynaugError(f"{path} is not a synaug store description (format {STORE_FORMAT}); use a new --out folder.")
        return info

    def _hold_liveness(self) -> None:
        """Hold an flock on ``.writer-<id>.lock`` while this writer runs (see :meth:`_writer_alive`).

        The lock is taken before the file gets its name, so nobody sees the file unlocked.
        """
        if self._liveness is not None:
            return
        path = self.root / f".writer-{self.writer_id}.lock"
        fresh = path.with_name(path.name + ".new")
        handle = os.open(fresh, os.O_CREAT | os.O_WRONLY, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            warnings.warn(
                f"file locks do not work in {self.root} ({exc.strerror or exc}): writers there cannot tell a killed "
                f"writer's temp files from a running one's, so such files are removed after {STALE_TEMP_SECONDS // 60} minutes.",
                stacklevel=3,
            )
        os.replace(fresh, path)
        self._liveness = handle

    def _writer_alive(self, writer: str) -> bool | None:
        """Whether writer ``writer`` still runs (holds its lock file); None where file locks do not work."""
        if writer == self.writer_id:
            return True
        try:
            handle = os.open(self.root / f".writer-{writer}.lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        except OSError as exc:
            return True if exc.errno == errno.EWOULDBLOCK else None
        finally:
            os.close(handle)

    def _remove_abandoned(self, folder: Path, targets: set[str] | None) -> int:
        """Remove temp files in ``folder`` (those renamed to one of ``targets``, when given) and lock files of
        writers no longer running; where locks do not work, those older than an hour. Returns how many."""
        if not folder.is_dir():
            return 0
        removed, now = 0, time.time()
        for entry in os.scandir(folder):
            match = TEMP.fullmatch(entry.name) or WRITER_LOCK.fullmatch(entry.name)
            if match is None or (targets is not None and (match.re is WRITER_LOCK or match.group(1) not in targets)):
                continue
            writer = match.group(2) if match.re is TEMP else match.group(1)
            alive = self._writer_alive(writer)
            try:
                if alive is False or (alive is None and now - entry.stat().st_mtime > STALE_TEMP_SECONDS):
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    """A uint8 C x H x W tensor as the H x W (gray) or H x W x 3 array PIL expects."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
        raise SynaugError(f"generator returned an image of shape {tuple(image.shape)} and dtype {image.dtype}; expected uint8 1 x H x W or 3 x H x W.")
    array = image.detach().cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))
