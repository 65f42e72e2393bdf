"""Process-wide settings synaug applies once, when the package is imported.

glibc's ``malloc`` hands every block above its mmap threshold (128 KiB, rising at most to
32 MiB) straight back to the kernel when it is freed, and trims the heap's top above 128 KiB.
A sampler or training step allocates and frees the same activation-sized buffers (tens of
MB at batch 256) on every call, so each step maps fresh pages and the kernel zero-fills them
again: millions of minor page faults and about a seventh of the CPU time in the kernel.
:func:`keep_freed_memory` raises both thresholds, so freed buffers stay in the process and
are reused; the price is that the process keeps its peak heap instead of shrinking after it.

It runs on ``import synaug``, so every entry point gets it (the CLI, the library, pytest,
Ray workers, which import synaug to run their tasks) without environment variables. It does
nothing where the C library is not glibc, and leaves alone a process whose user chose the
allocator's settings (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``) or another allocator
(``LD_PRELOAD``).
"""

from __future__ import annotations

import ctypes
import os
import sys

KEEP_BELOW_BYTES = 1 << 30
"""Freed blocks up to this size stay in the process (mmap and trim thresholds)."""

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed blocks below :data:`KEEP_BELOW_BYTES` for reuse.

    Returns whether the settings are in effect (False off glibc, or where the user set the
    allocator up themselves). Safe to call more than once; only the first call acts.
    """
    global _applied
    if _applied is None:
        _applied = _apply_mallopt()
    return _applied


def _apply_mallopt() -> bool:
    if not sys.platform.startswith("linux") or any(os.environ.get(name) for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # present only in glibc (musl and others lack it)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BELOW_BYTES) and mallopt(_M_TRIM_THRESHOLD, KEEP_BELOW_BYTES))


keep_freed_memory()
