"""Faults for the Ray tests, injected by item and try, never by process or clock.

``make_generator`` (``--generator python:ray_faults:make_generator``) is the fake generator of
fake_generator.py; ``make_embedded`` the embedded generator in the folder the file names as
"generator" (feedback guidance and exemplars act on it). Before each batch they read the JSON
file $RAY_FAULTS (when it exists and names a seed):

    seed     a batch holding this item seed gets the fault
    kind     "raise" (a RuntimeError, as a device fault), "kill" (SIGKILL of its own process,
             as an out-of-memory kill) or "stall" (waits until another process starts a batch
             holding the seed, or the store "store" holds "release_rows" rows)
    times    how many tries of that batch get it, counted over all processes with files
             made exclusively in "folder"
    folder   where the tries are counted and every batch logs "start PID SEEDS" / "end PID"
             lines to events.log (the order in which batches ran, whatever the process)
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from fake_generator import FakeGenerator
from synaug.generate.backends.embedded import EmbeddedBackend
from synaug.generate.store import SyntheticStore

STALL_LIMIT_SECONDS = 300  # a stall that is never released fails the batch instead of hanging the suite


def with_fault(generate_batch, prompts, seeds, options):
    """``generate_batch(prompts, seeds, **options)`` with the fault of $RAY_FAULTS; see the module doc."""
    config = _config()
    if config is None or "seed" not in config:
        return generate_batch(prompts, seeds, **options)
    events = Path(config["folder"]) / "events.log"
    _log(events, f"start {os.getpid()} {' '.join(map(str, seeds))}")
    if config["seed"] in seeds and _take_try(Path(config["folder"]), config["times"]):
        if config["kind"] == "raise":
            raise RuntimeError("simulated device error")
        if config["kind"] == "kill":
            _log(events, f"end {os.getpid()}")  # the batch ends with the process
            os.kill(os.getpid(), signal.SIGKILL)
        _stall(config, events)
    output = generate_batch(prompts, seeds, **options)
    _log(events, f"end {os.getpid()}")
    return output


class FaultyGenerator(FakeGenerator):
    """The fake generator with the fault of $RAY_FAULTS."""

    def _generate_batch(self, prompts, seeds, **options):
        return with_fault(super()._generate_batch, prompts, seeds, options)


class FaultyEmbedded(EmbeddedBackend):
    """The embedded generator with the fault of $RAY_FAULTS."""

    def _generate_batch(self, prompts, seeds, **options):
        return with_fault(super()._generate_batch, prompts, seeds, options)


def make_generator(**options) -> FaultyGenerator:
    """Factory for ``python:ray_faults:make_generator``."""
    return FaultyGenerator(delay=float(os.environ.get("FAKE_GENERATOR_DELAY", "0")), batch_size=options.get("batch_size", 8))


def make_embedded(**options) -> FaultyEmbedded:
    """Factory for ``python:ray_faults:make_embedded``: the generator folder comes from $RAY_FAULTS."""
    return FaultyEmbedded.from_pretrained(_config()["generator"], **options)


def write_faults(path: Path, folder: Path, **config) -> None:
    """Set the fault of every FaultyGenerator reading ``path`` from now on."""
    folder.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".new")
    temp.write_text(json.dumps({"folder": str(folder), **config}))
    os.replace(temp, path)


def batches(folder: Path) -> list[tuple[int, list[int] | None]]:
    """The logged batches in order: (pid, seeds) at each start, (pid, None) at each end."""
    lines = (Path(folder) / "events.log").read_text().splitlines()
    return [(int(f[1]), [int(s) for s in f[2:]]) if f[0] == "start" else (int(f[1]), None) for f in map(str.split, lines)]


def overlapping_runs(folder: Path, seed: int) -> list[int]:
    """Processes that started a batch holding ``seed`` while another process was still in one."""
    running: set[int] = set()
    overlapping = []
    for pid, seeds in batches(folder):
        if seeds is None:
            running.discard(pid)
        elif seed in seeds:
            if running - {pid}:
                overlapping.append(pid)
            running.add(pid)
    return overlapping


def _config() -> dict | None:
    path = os.environ.get("RAY_FAULTS")
    try:
        return json.loads(Path(path).read_text()) if path else None
    except FileNotFoundError:
        return None


def _take_try(folder: Path, times: int) -> bool:
    """Whether this try still gets the fault: claims the next of ``times`` try files."""
    for number in range(times):
        try:
            os.close(os.open(folder / f"try-{number}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            continue
    return False


def _stall(config: dict, events: Path) -> None:
    """Wait until another process starts a batch holding the seed, or the store holds ``release_rows`` rows."""
    limit = time.monotonic() + STALL_LIMIT_SECONDS
    while time.monotonic() < limit:
        others = [pid for pid, seeds in batches(events.parent) if seeds and config["seed"] in seeds and pid != os.getpid()]
        if others or len(SyntheticStore(config["store"]).manifest()) >= config["release_rows"]:
            return
        time.sleep(0.05)
    raise RuntimeError("the stalled batch was never released")


def _log(events: Path, line: str) -> None:
    with open(events, "a") as out:
        out.write(line + "\n")
