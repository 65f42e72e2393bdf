"""Stage outputs cached by a digest of their inputs and of the code that made them.

Each stage's output lives in ``ROOT/<stage>-<digest>/``; the digest hashes the stage's own
settings plus the digests of the stages it reads, so changing the training settings leaves
the data, plan and generate digests (and folders) untouched, while changing the plan
changes the digest of the plan and of everything downstream. It also hashes
:func:`code_digest` of the modules the stage runs (and synaug's version), so results made by
other code are never reused: after an edit of, say, :mod:`synaug.train`, the trainings and
everything after them are made again while the data, plans and synthetic stores stay cached.

A folder counts as finished only once its ``stage.json`` exists, and that file is written
last. Stages with small outputs are built in a hidden temporary folder that is renamed into
place when complete (:meth:`StageCache.build`); generation, which is long and resumable by
itself, writes into the final folder and is marked finished at the end
(:meth:`StageCache.resumable` / :meth:`StageCache.finish`). A killed run is simply re-run.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import synaug

from synaug.data.registry import write_atomic
from synaug.errors import SynaugError

RECORD_FILE = "stage.json"
CACHE_FORMAT = 1


def stage_digest(stage: str, inputs: Mapping[str, Any], code: str | None = None) -> str:
    """12 hex digits of the SHA-256 of the stage name, its inputs (canonical JSON) and ``code``
    (the :func:`code_digest` of the modules it runs)."""
    key: dict[str, Any] = {"format": CACHE_FORMAT, "stage": stage, "inputs": inputs}
    if code is not None:
        key["code"] = code
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def code_digest(modules: Sequence[str]) -> str:
    """16 hex digits of the SHA-256 of synaug's version and the source of ``modules`` (a tuple of
    module names; a package stands for every ``.py`` file below it), by relative file name and
    content, so the digest is the same wherever synaug is installed."""
    digest = hashlib.sha256(f"synaug {synaug.__version__}\n".encode())
    for name in sorted(set(modules)):
        for relative, path in _source_files(name):
            digest.update(f"{relative}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _source_files(module: str) -> list[tuple[str, Path]]:
    """(name relative to the module's parent folder, path) of every source file of ``module``."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"module {module} has no source files")
    origin = Path(spec.origin)
    if spec.submodule_search_locations is None:
        return [(f"{module}:{origin.name}", origin)]
    folder = origin.parent
    return [(f"{module}:{path.relative_to(folder).as_posix()}", path) for path in sorted(folder.rglob("*.py"))]


class StageCache:
    """The stage folders under ``root``.

    Parameters
    ----------
    root : the folder holding every ``<stage>-<digest>/`` folder.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, stage: str, digest: str) -> Path:
        return self.root / f"{stage}-{digest}"

    def record(self, stage: str, digest: str) -> dict[str, Any] | None:
        """The finished stage's record (its ``stage.json``), or None when it is not finished."""
        path = self.folder(stage, digest) / RECORD_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SynaugError(f"{path} is corrupt; delete the folder {path.parent} and re-run to rebuild it.") from None

    def finished(self, stage: str) -> list[dict[str, Any]]:
        """Records of every finished folder of ``stage`` (any digest), newest first."""
        records = []
        for folder in self.root.glob(f"{stage}-*"):
            path = folder / RECORD_FILE
            if folder.is_dir() and path.is_file():
                try:
                    records.append(json.loads(path.read_text(encoding="utf-8")))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
        return sorted(records, key=lambda r: r.get("finished_at", 0), reverse=True)

    @contextmanager
    def build(self, stage: str, digest: str, inputs: Mapping[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
        """A temporary folder to write the stage's outputs into, and a dict for facts to record.

        On success the record is written into it and the folder renamed to its final name;
        on failure it is removed, so the final folder is either complete or absent.
        """
        final = self.folder(stage, digest)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(f".{final.name}.*.tmp"):  # left by killed runs
            shutil.rmtree(stale, ignore_errors=True)
        temporary = self.root / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        temporary.mkdir()
        facts: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            yield temporary, facts
            _write_record(temporary, stage, digest, inputs, facts, time.perf_counter() - started)
            if final.exists():  # an unfinished leftover (finished folders are never rebuilt)
                shutil.rmtree(final)
            os.rename(temporary, final)
        finally:
            if temporary.exists():
                shutil.rmtree(temporary, ignore_errors=True)

    def resumable(self, stage: str, digest: str) -> Path:
        """The final folder of a stage that resumes in place (created when missing)."""
        folder = self.folder(stage, digest)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def finish(self, stage: str, digest: str, inputs: Mapping[str, Any], facts: Mapping[str, Any], seconds: float) -> dict[str, Any]:
        """Mark a resumable stage finished by writing its record; returns the record."""
        return _write_record(self.folder(stage, digest), stage, digest, inputs, facts, seconds)


def _write_record(folder: Path, stage: str, digest: str, inputs: Mapping[str, Any], facts: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    record = {
        "stage": stage,
        "digest": digest,
        "seconds": round(seconds, 3),
        "finished_at": time.time(),
        "inputs": dict(inputs),
        **dict(facts),
    }
    write_atomic(folder / RECORD_FILE, json.dumps(record, indent=1, default=str) + "\n")
    return record
