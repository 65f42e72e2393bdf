"""The store's description file (store.json): written once, checked against each run's plan and generator."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Sequence

from synaug.data.folders import sanitize_folder_name
from synaug.errors import StoreMismatch, SynaugError


def distinct_names(names: Sequence[str]) -> list[str]:
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


def canonical_json(value) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    except TypeError as exc:
        raise SynaugError(f"generator settings are not JSON-safe ({exc}); report this backend bug.") from None


def check_same_source(root: Path, existing: dict, wanted: dict) -> None:
    """Refuse a store made by another plan or generator."""
    if existing["plan_digest"] != wanted["plan_digest"]:
        raise StoreMismatch(root, f"was made by a different plan (digest {existing['plan_digest']}, this plan {wanted['plan_digest']})")
    if existing["generator_id"] != wanted["generator_id"]:
        raise StoreMismatch(root, f"was made by generator '{existing['generator_id']}', not '{wanted['generator_id']}'")
    old, new = existing["settings"], wanted["settings"]
    if canonical_json(old) != canonical_json(new):
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differing[:3])
        raise StoreMismatch(root, f"was made with other generator settings ({shown})")


def create_exclusive(path: Path, text: str) -> None:
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
