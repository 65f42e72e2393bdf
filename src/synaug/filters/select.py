"""Keep or reject each image of a finished store, per class (or class x group cell).

:func:`filter_store` runs one or more :class:`FilterStep` in order (ALIA-style: CLIP first,
then a classifier's confidence); each step scores the images still kept and rejects those
below its ``threshold`` (and, for CLIP with negative prompts, those closer to a negative
prompt than to their own), then keeps at most ``keep_best`` per cell. An over-generated plan
(:func:`synaug.plan.overgenerate`) finally keeps the ``keep_counts`` best of every cell by the
last step's score. Ties go to the lower plan index, so the result is deterministic.

Nothing is deleted: the scores of every image, ``kept`` and ``rejected_by`` (the step that
rejected it, or ``overgeneration``) go to the store's ``filter.parquet``, which
:meth:`SyntheticStore.manifest` joins and :meth:`SyntheticStore.load` applies. Filtering
again replaces that table (written atomically).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synaug.data.dataset import LabeledImages
from synaug.errors import SynaugError
from synaug.filters.scorers import Scorer
from synaug.generate.store import FILTER_FILE, STATUS_OK, SyntheticStore

KEYS = ["class_id", "group_key", "index"]
OVERGENERATION = "overgeneration"
SCORE_PREFIX = "filter_"


@dataclass
class FilterStep:
    """One scorer and its rule: keep scores >= ``threshold`` (when given), then the ``keep_best`` best per cell."""

    scorer: Scorer
    threshold: float | None = None
    keep_best: int | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not np.isfinite(float(self.threshold)):
            raise SynaugError(f"filter threshold {self.threshold} must be a finite number.")
        if self.keep_best is not None and (isinstance(self.keep_best, bool) or int(self.keep_best) < 1):
            raise SynaugError(f"keep_best {self.keep_best} must be at least 1 image per class (cell).")

    def describe(self) -> str:
        """The step as errors name it: "'clip' (threshold 0.3, keep_best 5)"."""
        rule = [f"threshold {self.threshold:g}"] if self.threshold is not None else []
        rule += [f"keep_best {self.keep_best}"] if self.keep_best is not None else []
        return f"'{self.scorer.name}'" + (f" ({', '.join(rule)})" if rule else "")


@dataclass
class FilterResult:
    """Per cell: images scored, kept, and needed (the plan's keep count, when over-generated)."""

    path: Path
    cells: list[dict] = field(default_factory=list)

    @property
    def kept(self) -> int:
        """Images kept over all cells."""
        return sum(cell["kept"] for cell in self.cells)

    @property
    def scored(self) -> int:
        """Images scored over all cells."""
        return sum(cell["scored"] for cell in self.cells)


def filter_store(store: SyntheticStore | str | Path, steps: list[FilterStep], out: str | Path | None = None) -> FilterResult:
    """Score every finished image of ``store`` with ``steps`` and record the decisions (see the module doc).

    ``out`` writes the decisions to another file than the store's own ``filter.parquet`` (a
    pipeline keeps one table per filter setting; pass it to :meth:`SyntheticStore.load` as ``decisions``).

    A step that leaves a planned class (cell) without any image is a one-line error naming
    it and how many images passed; nothing is written then.
    """
    store = store if isinstance(store, SyntheticStore) else SyntheticStore(store)
    if not steps:
        raise SynaugError("filtering needs at least one step (a CLIP or a classifier filter).")
    store.check_complete()
    plan = store.plan
    frame = _finished(store, out)
    data = _images(store, frame)
    prompts = frame["prompt"].astype(str).tolist()
    cell = _cell_ids(frame)
    alive = np.ones(len(frame), dtype=bool)
    rejected = np.full(len(frame), None, dtype=object)
    columns: dict[str, np.ndarray] = {}
    last = np.zeros(len(frame))
    for step in steps:
        index = np.flatnonzero(alive)
        scores = step.scorer.score(data.subset(index), [prompts[i] for i in index])
        for name, values in scores.items():
            columns.setdefault(SCORE_PREFIX + name, np.full(len(frame), np.nan))[index] = values
        last = columns[SCORE_PREFIX + step.scorer.name]
        passing = alive & _passes(step, columns)
        passing &= _best_per_cell(last, frame["index"].to_numpy(), cell, passing, step.keep_best)
        _check_cells_kept(plan, frame, cell, alive, passing, step)
        rejected[alive & ~passing] = step.scorer.name
        alive = passing
    if plan.keep_counts is not None:
        limits = np.asarray(plan.keep_counts).ravel()[_flat_cell(plan, frame)]
        best = _best_per_cell(last, frame["index"].to_numpy(), cell, alive, None, limits)
        rejected[alive & ~best] = OVERGENERATION
        alive = best
    table = frame[KEYS].astype("int64").assign(**columns, kept=alive, rejected_by=rejected)
    path = _write(Path(out) if out is not None else store.root / FILTER_FILE, table, [step.scorer.settings() | {"threshold": step.threshold, "keep_best": step.keep_best} for step in steps])
    return _summary(path, plan, frame, cell, alive)


# ---- rules ------------------------------------------------------------------------------------
def _passes(step: FilterStep, columns: dict[str, np.ndarray]) -> np.ndarray:
    """Scores at or above the threshold, and above the negative prompts' score when there is one."""
    score = columns[SCORE_PREFIX + step.scorer.name]
    passing = np.isfinite(score)
    if step.threshold is not None:
        passing &= score >= float(step.threshold)
    negative = columns.get(SCORE_PREFIX + step.scorer.name + "_negative")
    if negative is not None:
        passing &= score > negative
    return passing


def _best_per_cell(
    score: np.ndarray, plan_index: np.ndarray, cell: np.ndarray, candidates: np.ndarray, keep: int | None,
    limits: np.ndarray | None = None,
) -> np.ndarray:
    """Among ``candidates``, the ``keep`` (or each row's ``limits``) highest scores of each cell; ties to the lower index."""
    if keep is None and limits is None:
        return candidates.copy()
    order = np.lexsort((plan_index, -np.nan_to_num(score, nan=-np.inf), cell))
    order = order[candidates[order]]
    rank = pd.Series(cell[order]).groupby(cell[order]).cumcount().to_numpy()
    allowed = limits[order] if limits is not None else np.full(len(order), keep)
    chosen = np.zeros(len(score), dtype=bool)
    chosen[order[rank < allowed]] = True
    return chosen


def _check_cells_kept(plan, frame: pd.DataFrame, cell: np.ndarray, alive: np.ndarray, passing: np.ndarray, step: FilterStep) -> None:
    """A one-line error when the step leaves a cell that had images with none."""
    for value in np.unique(cell[alive]):
        members = cell == value
        if not (passing & members).any():
            row = frame[members].iloc[0]
            where = f"class '{row['class_name']}'" + ("" if pd.isna(row["group_name"]) else f" / group '{row['group_name']}'")
            raise SynaugError(
                f"filter {step.describe()} keeps no image of {where} (0 of {int((alive & members).sum())} passed); "
                "lower the threshold or use keep_best."
            )


# ---- data ------------------------------------------------------------------------------------
def _finished(store: SyntheticStore, out: str | Path | None) -> pd.DataFrame:
    """The store's finished rows, without the columns of an earlier filter."""
    frame = store.manifest(out)
    previous = Path(out) if out is not None else store.root / FILTER_FILE
    if previous.is_file():
        frame = frame.drop(columns=[c for c in pq.read_schema(previous).names if c not in KEYS])
    frame = frame[frame["status"] == STATUS_OK].reset_index(drop=True)
    if frame.empty:
        raise SynaugError(f"{store.root} holds no finished image to filter; generate into it first.")
    return frame


def _images(store: SyntheticStore, frame: pd.DataFrame) -> LabeledImages:
    plan = store.plan
    return LabeledImages(
        labels=frame["class_id"].to_numpy(dtype=np.int64),
        class_names=list(plan.class_names),
        files=[store.root / f for f in frame["file"]],
        size=plan.image_size,
        channels=plan.channels or 3,
        is_synthetic=np.ones(len(frame), dtype=bool),
    )


def _cell_ids(frame: pd.DataFrame) -> np.ndarray:
    keys = frame["class_id"].to_numpy(dtype=np.int64) * 1_000_003 + frame["group_key"].to_numpy(dtype=np.int64) + 1
    return np.unique(keys, return_inverse=True)[1]


def _flat_cell(plan, frame: pd.DataFrame) -> np.ndarray:
    """Each row's position in the plan's flattened count array."""
    classes = frame["class_id"].to_numpy(dtype=np.int64)
    if plan.group_names is None:
        return classes
    return classes * len(plan.group_names) + frame["group_key"].to_numpy(dtype=np.int64)


def _summary(path: Path, plan, frame: pd.DataFrame, cell: np.ndarray, kept: np.ndarray) -> FilterResult:
    result = FilterResult(path)
    needed = None if plan.keep_counts is None else np.asarray(plan.keep_counts).ravel()[_flat_cell(plan, frame)]
    for value in np.unique(cell):
        members = np.flatnonzero(cell == value)
        row = frame.iloc[members[0]]
        result.cells.append({
            "class": str(row["class_name"]),
            "group": None if pd.isna(row["group_name"]) else str(row["group_name"]),
            "scored": len(members),
            "kept": int(kept[members].sum()),
            "needed": None if needed is None else int(needed[members[0]]),
        })
    short = [c for c in result.cells if c["needed"] is not None and c["kept"] < c["needed"]]
    if short:
        first = short[0]
        warnings.warn(
            f"the filter kept fewer images than needed in {len(short)} classes (cells), e.g. {first['class']}: "
            f"{first['kept']} of {first['needed']}; over-generate more or loosen the threshold.",
            stacklevel=3,
        )
    return result


def _write(path: Path, table: pd.DataFrame, settings: list[dict]) -> Path:
    """The decisions as Parquet, written to a temp name and renamed into place."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({"synaug_filter": json.dumps(settings)})
    temp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(arrow, temp)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise SynaugError(f"could not write {path} ({exc.strerror or exc}); free disk space or fix permissions.") from None
    return path
