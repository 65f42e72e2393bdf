"""A store's manifest files: Parquet rows that many writers append and merge without locks.

Files, all in the store's top folder::

    manifest.parquet                      the compacted rows
    manifest.part-<writer>-<n>.parquet    rows appended by a running writer
    manifest.claim-<writer>-<n>.parquet   rows a compaction took over (or could not put in place)

Each file is written under a temp name of its own writer (``.<name>.<writer>-<n>.tmp``),
fsynced, renamed into place, and the folder fsynced; no file is deleted before its rows are
in another file that is in place. Compaction takes no lock: it renames the compacted file
(and claims left by others) to claims of its own, which only one compaction can win, writes
the union of its claims and the parts it read, hard-links that into place as
``manifest.parquet`` (which fails when another compaction put one there meanwhile: it then
stays a claim, merged next time) and only then deletes what it merged. A reader reads every
compacted, claim and part file, and reads again when one vanished or a new compacted or
claim file appeared meanwhile. Only atomic rename, hard links and fsync are needed, so this
holds on a shared file system whose locks do not reach across nodes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from synaug.errors import SynaugError

MANIFEST_FILE = "manifest.parquet"
PART_PREFIX = "manifest.part-"
CLAIM_PREFIX = "manifest.claim-"
READ_TRIES = 100
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
        ("exemplar", pa.string()),
    ]
)
NULLABLE_INTS = {pa.int8(): pd.Int8Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}


def temp_name(name: str, tag: str) -> str:
    """The hidden temp name a writer tagged ``tag`` ("<writer id>-<n>" or "<writer id>") writes ``name`` under."""
    return f".{name}.{tag}.tmp"


def fsync_folder(path: Path) -> None:
    """Make the renames and deletions in folder ``path`` durable."""
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def rows_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Manifest rows as a table: the schema's columns plus a float column per extra name."""
    extra = sorted({name for row in rows for name in row} - set(MANIFEST_SCHEMA.names))
    return pa.Table.from_pylist(list(rows), schema=pa.schema(list(MANIFEST_SCHEMA) + [(name, pa.float64()) for name in extra]))


def write_part(root: Path, table: pa.Table, tag: str) -> None:
    """Add ``table`` as part file ``manifest.part-<tag>.parquet``, atomically."""
    name = f"{PART_PREFIX}{tag}.parquet"
    write_parquet_atomic(table, root / name, root / temp_name(name, tag))


def read_manifest(root: Path) -> pa.Table:
    """Every row in the store's manifest files, one per item key (see :func:`deduplicate`)."""
    for _ in range(READ_TRIES):
        names = _manifest_names(root)
        tables = _read_tables([root / name for name in names])
        if tables is None:
            continue  # a file was merged away since the folder was listed: its rows moved
        moved = {name for name in set(_manifest_names(root)) - set(names) if not name.startswith(PART_PREFIX)}
        if not moved:
            return deduplicate(_concat(tables))
    raise SynaugError(f"the manifest files of {root} kept changing while being read; re-run the command when fewer writers compact it.")


def compact(root: Path, tags: Iterator[str]) -> None:
    """Merge the part and claim files into manifest.parquet (see the module doc); ``tags`` gives unique file tags."""
    names = _manifest_names(root)
    parts = [root / name for name in names if name.startswith(PART_PREFIX)]
    leftover = [root / name for name in names if name.startswith(CLAIM_PREFIX)]
    if not parts and not leftover:
        return
    claims = []
    for source in [root / MANIFEST_FILE, *leftover]:
        claim = root / f"{CLAIM_PREFIX}{next(tags)}.parquet"
        try:
            os.rename(source, claim)
        except FileNotFoundError:
            continue  # taken by another compaction
        claims.append(claim)
    fsync_folder(root)
    tables = [table for path in claims + parts if (table := _read_or_none(path)) is not None]
    tag = next(tags)
    temp = root / temp_name(MANIFEST_FILE, tag)
    write_parquet_atomic(deduplicate(_concat(tables)), temp, None)
    try:
        os.link(temp, root / MANIFEST_FILE)
        os.unlink(temp)
    except FileExistsError:
        os.replace(temp, root / f"{CLAIM_PREFIX}{tag}.parquet")
    fsync_folder(root)
    for path in claims + parts:
        path.unlink(missing_ok=True)
    fsync_folder(root)


def write_parquet_atomic(table: pa.Table, path: Path, temp: Path | None) -> None:
    """Write ``table`` to ``temp`` and fsync it, then rename it to ``path`` (no rename when ``temp`` is None)."""
    written = temp if temp is not None else path
    try:
        with open(written, "wb") as out:
            pq.write_table(table, out)
            out.flush()
            os.fsync(out.fileno())
        if temp is not None:
            os.replace(temp, path)
            fsync_folder(path.parent)
    except OSError as exc:
        written.unlink(missing_ok=True)
        raise SynaugError(f"could not write {path} ({exc.strerror or exc}); free disk space or fix permissions, then re-run to resume.") from None
    except BaseException:
        written.unlink(missing_ok=True)
        raise


def deduplicate(table: pa.Table) -> pa.Table:
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


def _manifest_names(root: Path) -> list[str]:
    """The manifest files in ``root``: the compacted one, then claims, then parts, each sorted (so ties between rows break the same way everywhere)."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    kinds = [[n for n in names if n == MANIFEST_FILE]] + [sorted(n for n in names if n.startswith(p) and n.endswith(".parquet")) for p in (CLAIM_PREFIX, PART_PREFIX)]
    return [name for kind in kinds for name in kind]


def _read_or_none(path: Path) -> pa.Table | None:
    """The table in ``path``; None when it is gone (merged by another compaction); a corrupt file is an error."""
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        return None
    except (pa.ArrowInvalid, OSError) as exc:
        raise SynaugError(f"manifest file {path} is unreadable ({exc}); delete it and re-run the same command to regenerate its images.") from None


def _read_tables(paths: Sequence[Path]) -> list[pa.Table] | None:
    """The tables in ``paths``, or None when one of them is gone."""
    tables = []
    for path in paths:
        table = _read_or_none(path)
        if table is None:
            return None
        tables.append(table)
    return tables


def _concat(tables: Sequence[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default") if tables else MANIFEST_SCHEMA.empty_table()
