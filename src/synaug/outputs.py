"""Output locations checked before any work, so a long run never fails only when it saves."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from synaug.errors import SynaugError


def check_writable_folder(folder: str | Path, option: str = "--out") -> Path:
    """``folder`` as a Path once a file has been written and removed there; else a one-line error.

    Folders that did not exist are created for the test and removed again, so a later
    error leaves nothing behind. Works as root too: the probe is a real write, not a
    permission lookup, so a file in the way or a read-only or virtual file system fails it.
    """
    folder = Path(folder)
    missing = [parent for parent in [folder, *folder.parents] if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", suffix=".tmp", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker is not None else (exc.strerror or str(exc))
        raise SynaugError(f"cannot write to {folder} ({reason}); choose a writable folder with {option}.") from None
    finally:
        for created in missing:  # deepest first
            if created.is_dir():
                try:
                    created.rmdir()
                except OSError:
                    break
    return folder
