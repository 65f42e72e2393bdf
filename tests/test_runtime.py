"""synaug.runtime: importing synaug keeps freed memory for reuse (glibc), unless the user chose otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's"
)

# Allocates, touches and frees a 64 MiB buffer 20 times, then prints whether the settings are
# in effect and the minor page faults of the loop: 16,384 pages per fresh buffer.
PROBE = """
import ctypes, resource, sys
{setup}
import synaug.runtime
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
print(synaug.runtime.keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_BUFFER = (64 << 20) // 4096


def run_probe(setup: str = "", **env: str) -> tuple[bool, int]:
    """(settings in effect, page faults of the loop) in a fresh interpreter."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    environment.pop("GLIBC_TUNABLES", None)
    environment.pop("LD_PRELOAD", None)
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)], env={**environment, **env},
        capture_output=True, text=True, check=True,
    )
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


def test_import_keeps_freed_buffers_mapped():
    applied, faults = run_probe()
    assert applied
    assert faults < 2 * PAGES_PER_BUFFER  # the first buffer's pages, then reuse


def test_without_the_settings_every_buffer_faults_again():
    # the same loop with the package's call undone shows what the settings save
    undo = "import ctypes; import synaug.runtime as r; m = ctypes.CDLL(None).mallopt; m(-3, 128 << 10); m(-1, 128 << 10)"
    _, faults = run_probe(setup=undo)
    assert faults > 10 * PAGES_PER_BUFFER


def test_user_allocator_settings_are_left_alone():
    applied, _ = run_probe(MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied
